"""Time to window: from starting the app's process to its first window, and to the main window.

    python benchmarks/startup.py                                   # the installed app (python -m simclr_studio)
    python benchmarks/startup.py --exe dist/simclr-studio/simclr-studio   # a PyInstaller bundle

The app, started with SIMCLR_STUDIO_STARTUP_PROBE=1, prints a line when its splash has painted and
when the main window is shown, then quits; times are taken here, from process start, as a person
would see them (interpreter start-up included). One untimed warm-up run fills the disk cache.
Runs offscreen unless DISPLAY is set and --display is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one_run(command: list[str], env: dict) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen: dict[str, float] = {}
    for line in proc.stdout:
        try:
            stage = json.loads(line)["stage"]
        except (ValueError, KeyError, TypeError):
            continue
        seen[stage] = time.perf_counter() - start
    proc.wait(timeout=120)
    if proc.returncode != 0 or set(seen) != {"splash", "window"}:
        raise SystemExit(f"the app did not report its start-up (exit {proc.returncode}, saw {sorted(seen)})")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exe", help="a bundle's executable instead of this Python's simclr_studio")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--display", action="store_true", help="use $DISPLAY (e.g. Xvfb) instead of offscreen Qt")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "startup.json")
    args = parser.parse_args()
    command = [args.exe] if args.exe else [sys.executable, "-m", "simclr_studio"]
    env = {**os.environ, "SIMCLR_STUDIO_STARTUP_PROBE": "1"}
    if not (args.display and os.environ.get("DISPLAY")):
        env["QT_QPA_PLATFORM"] = "offscreen"
    one_run(command, env)  # warm-up: the disk cache
    runs = [one_run(command, env) for _ in range(args.runs)]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "command": command, "platform": env.get("QT_QPA_PLATFORM", "display"),
        "splash_s": {"median": statistics.median(r["splash"] for r in runs), "runs": [r["splash"] for r in runs]},
        "window_s": {"median": statistics.median(r["window"] for r in runs), "runs": [r["window"] for r in runs]},
    }
    print(f"{' '.join(command)} ({result['platform']}), median of {args.runs}:")
    print(f"  first window (splash) after {result['splash_s']['median']:.2f} s")
    print(f"  main window after          {result['window_s']['median']:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
