"""App responsiveness: event-loop stalls while the window scans and trains, and what the window costs.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_latency.py \\
        [--epochs 10] [--repeats 6] [--out benchmarks/results/gui_latency.json]

A 5 ms QTimer runs on the GUI thread while the window scans, opens a large folder, and trains (in
separate runs); every gap between its ticks beyond the interval is a stall (the event loop could not
run). The same training config runs through the command line (`simclr-studio train`, window hidden) and
inside the window (which trains in the same kind of child process), in pairs without the timer; the
median paired throughput ratio is the UI's cost, and the GUI thread's own CPU time is reported beside it.
Training: the bundled demo folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np


class StallMeter:
    def __init__(self, interval_ms: int = 5):
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.gaps: list[float] = []
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)

    def start(self):
        self.last = time.perf_counter()
        self.gaps.clear()
        self.timer.start()

    def stop(self):
        self.timer.stop()

    def tick(self):
        now = time.perf_counter()
        self.gaps.append(max(0.0, now - self.last - self.interval))
        self.last = now

    def summary(self) -> dict:
        gaps = np.asarray(self.gaps) * 1000
        return {"max_ms": float(gaps.max()) if gaps.size else 0.0,
                "p99_ms": float(np.percentile(gaps, 99)) if gaps.size else 0.0, "ticks": int(gaps.size)}


def steady_throughput(steps: list, batch: int) -> float:
    """Images/s over the second half of the steps (after warm-up), from step-event timestamps."""
    times = np.array([e.time for e in steps])
    half = len(times) // 2
    return float((len(times) - 1 - half) * batch / (times[-1] - times[half]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="small-cnn")
    parser.add_argument("--big-folder", type=int, default=20000, metavar="N",
                        help="also open a generated folder of N small images (0: skip)")
    parser.add_argument("--repeats", type=int, default=6, help="window/headless run pairs (medians reported)")
    parser.add_argument("--stall-runs", type=int, default=2, help="window runs with the stall timer")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gui_latency.json")
    args = parser.parse_args()

    from PySide6.QtCore import QSettings

    from simclr_studio.config import RunConfig
    from simclr_studio.events import read_events
    from simclr_studio.gui.app import build_window, create_app
    from simclr_studio.paths import resource

    demo = resource("demo")
    tmp = Path(tempfile.mkdtemp(prefix="gui-latency-"))
    cfg_args = dict(data_dir=str(demo), backbone=args.backbone, image_size=28, batch_size=args.batch_size,
                    epochs=args.epochs, device="cpu", optimizer="lars", eval_every=1, seed=0)

    app = create_app()
    window = build_window(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    window.show()
    meter = StallMeter()

    from PySide6.QtCore import QTimer

    def run_until(done, timeout_s: float) -> None:
        """Run the real event loop (as the app does) until ``done()`` holds."""
        poll = QTimer()
        poll.setInterval(20)
        deadline = time.time() + timeout_s
        poll.timeout.connect(lambda: app.exit(0) if done() or time.time() > deadline else None)
        poll.start()
        app.exec()
        poll.stop()

    # Scanning + thumbnails + preview (all loading in the background), after the window is up.
    run_until(lambda: True, 1.0)
    meter.start()
    window.open_path(demo)
    settle = time.time() + 2.0
    run_until(lambda: window.scan is not None and time.time() > settle, 60)
    meter.stop()
    scan_stalls = meter.summary()

    big_stalls, big_seconds = None, None
    if args.big_folder:
        # A large folder: the scan runs on a worker thread and thumbnails load lazily, so the
        # window must stay responsive however many files there are.
        import shutil

        big = tmp / "big"
        sources = sorted(demo.rglob("*.png"))
        for i in range(args.big_folder):
            folder = big / f"class_{i % 10}"
            if i < 10:
                folder.mkdir(parents=True)
            shutil.copyfile(sources[i % len(sources)], folder / f"{i:07d}.png")
        meter.start()
        start = time.perf_counter()
        window.open_path(big)
        run_until(lambda: window.scan is not None and window.scan.root == str(big), 3600)
        big_seconds = time.perf_counter() - start
        settle = time.time() + 1.0
        window.data_panel.grid.scrollToBottom()  # thumbnails for the last rows load on demand
        run_until(lambda: time.time() > settle, 10)
        meter.stop()
        big_stalls = meter.summary()

    # Training inside the window, on the Train tab with live plots.
    panel = window.train_panel
    window.tabs.setCurrentWidget(panel)
    if window.scan is None or window.scan.root != str(demo):  # train on the demo folder, whatever came after
        window.open_path(demo)
        run_until(lambda: window.scan is not None and window.scan.root == str(demo), 60)
    panel.form.load_config(RunConfig(**cfg_args))
    panel.form.run_dir_edit.setText(str(tmp / "gui"))
    run_until(lambda: True, 0.5)  # the Train tab's first paint is not part of training
    runs, gui_rates, headless_rates = [], [], []
    gui_cpu, headless_cpu = [], []  # main-thread CPU seconds per second of training

    def window_run(name: str, metered: bool) -> None:
        panel.new_run()
        panel.form.run_dir_edit.setText(str(tmp / name))
        if metered:
            meter.start()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        panel.start()
        if not panel.session.is_running():  # refused (the reason is on the tab): say so, never wait forever
            raise SystemExit(f"the window did not start training: {panel.error_banner.text() or 'no reason shown'}")
        run_until(lambda: panel.session.history.finished is not None and not panel.session.is_running(), 3600)
        if metered:
            meter.stop()
            runs.append(meter.summary())
            return
        gui_cpu.append((time.thread_time() - cpu0) / (time.perf_counter() - wall0))
        gui_steps = [e for e in read_events(tmp / name / "events.jsonl") if e.kind == "step"]
        gui_rates.append(steady_throughput(gui_steps, args.batch_size))

    def headless_run(name: str, cfg: dict) -> float:
        # The same config through the command line, with the window hidden: the baseline the app must
        # match (the app itself trains in the same kind of child process).
        import subprocess

        window.hide()
        cfg_file = tmp / f"{name}.json"
        RunConfig(**cfg).save(cfg_file)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "simclr_studio", "train", cfg["data_dir"], "--config",
                                 str(cfg_file), "--out", str(tmp / name), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run_until(lambda: proc.poll() is not None, 3600)
        headless_cpu.append((time.thread_time() - cpu0) / (time.perf_counter() - wall0))
        window.show()
        run_until(lambda: True, 0.5)
        steps = [e for e in read_events(tmp / name / "events.jsonl") if e.kind == "step"]
        return steady_throughput(steps, args.batch_size)

    # Warm-up (allocator, thread pools, first kernels), not counted.
    headless_run("warmup", cfg_args | {"epochs": 1})
    headless_cpu.clear()
    # Throughput: window and headless runs in pairs, the order alternating (ABBA) so that drift in the
    # machine's speed hits both alike; the UI's cost is the median of the paired ratios. No stall timer
    # runs here: its 200 wake-ups a second are measuring apparatus, and they would slow training too.
    for attempt in range(args.repeats):
        if attempt % 2 == 0:
            window_run(f"gui{attempt}", metered=False)
            headless_rates.append(headless_run(f"headless{attempt}", cfg_args))
        else:
            headless_rates.append(headless_run(f"headless{attempt}", cfg_args))
            window_run(f"gui{attempt}", metered=False)
    # Stalls: separate window runs with the 5 ms timer.
    for attempt in range(args.stall_runs):
        window_run(f"stall{attempt}", metered=True)
    train_stalls = {"runs": runs, "max_ms": max(r["max_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs)}
    paired = [g / h for g, h in zip(gui_rates, headless_rates, strict=True)]
    in_window = float(np.median(gui_rates))
    headless = float(np.median(headless_rates))
    window.close()

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "config": cfg_args | {"data_dir": "resources/demo"},
        "scan_and_thumbnails_stall": scan_stalls,
        "big_folder": {"images": args.big_folder, "open_seconds": big_seconds, "stall": big_stalls},
        "training_stall": train_stalls,
        "headless_images_per_s": headless,
        "in_window_images_per_s": in_window,
        "headless_runs_images_per_s": headless_rates,
        "in_window_runs_images_per_s": gui_rates,
        "ui_overhead_percent": 100 * (1 - float(np.median(paired))),
        "ui_overhead_percent_per_pair": [100 * (1 - r) for r in paired],
        # The main (GUI) thread's own CPU use, as a share of one core: with the window, and with only
        # the event loop running (headless). Steadier than the throughput ratio.
        "main_thread_cpu_percent_in_window": 100 * float(np.median(gui_cpu)),
        "main_thread_cpu_percent_headless": 100 * float(np.median(headless_cpu)),
    }
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)  # tens of thousands of files: leaving them slows later runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'measure':<38}{'value':>12}")
    print(f"{'scan + thumbnails: longest stall (ms)':<38}{scan_stalls['max_ms']:>12.1f}")
    print(f"{'scan + thumbnails: p99 stall (ms)':<38}{scan_stalls['p99_ms']:>12.1f}")
    if big_stalls is not None:
        print(f"{f'{args.big_folder:,}-image folder: open (s)':<38}{big_seconds:>12.1f}")
        print(f"{f'{args.big_folder:,}-image folder: longest stall (ms)':<38}{big_stalls['max_ms']:>12.1f}")
    print(f"{'training: longest stall (ms)':<38}{train_stalls['max_ms']:>12.1f}")
    print(f"{'training: p99 stall (ms)':<38}{train_stalls['p99_ms']:>12.1f}")
    print(f"{'command line images/s':<38}{headless:>12.1f}")
    print(f"{'in the app images/s':<38}{in_window:>12.1f}")
    print(f"{'UI overhead (%)':<38}{result['ui_overhead_percent']:>12.1f}")
    print(f"{'GUI thread CPU, window (% of a core)':<38}{result['main_thread_cpu_percent_in_window']:>12.1f}")
    print(f"{'GUI thread CPU, headless (% of a core)':<38}{result['main_thread_cpu_percent_headless']:>12.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
