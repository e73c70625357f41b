"""App responsiveness: event-loop stalls while the window scans and trains, and what the window costs.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_latency.py [--epochs 6] [--out benchmarks/results/gui_latency.json]

A 5 ms QTimer runs on the GUI thread; every gap between its ticks beyond the interval is a stall
(the event loop could not run). The same training config then runs headless (Trainer alone) and
inside the window; the throughput ratio is the UI's cost. Training: the bundled demo folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


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
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="small-cnn")
    parser.add_argument("--big-folder", type=int, default=20000, metavar="N",
                        help="also open a generated folder of N small images (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="window/headless run pairs (medians reported)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gui_latency.json")
    args = parser.parse_args()

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from simclr_studio.config import RunConfig
    from simclr_studio.gui.app import build_window, create_app
    from simclr_studio.paths import resource
    from simclr_studio.events import read_events
    from simclr_studio.train import Trainer

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
    panel.load_config(RunConfig(**cfg_args))
    panel.data_dir = str(demo)  # train on the demo folder, whatever was opened last
    panel.run_dir.setText(str(tmp / "gui"))
    run_until(lambda: True, 0.5)  # the Train tab's first paint is not part of training
    runs, gui_rates, headless_rates = [], [], []
    for attempt in range(args.repeats):
        # Alternate window and headless runs so that machine noise hits both alike; medians are reported.
        panel.new_run()
        panel.run_dir.setText(str(tmp / f"gui{attempt}"))
        meter.start()
        panel.start()
        run_until(lambda: panel.history.finished is not None and not panel.is_running(), 3600)
        meter.stop()
        runs.append(meter.summary())
        gui_steps = [e for e in read_events(tmp / f"gui{attempt}" / "events.jsonl") if e.kind == "step"]
        gui_rates.append(steady_throughput(gui_steps, args.batch_size))
        # Headless: the same trainer on a worker thread, with the same event loop and stall timer
        # running on the main thread, but no window: the difference is what drawing the window costs.
        events = []
        window.hide()
        worker = threading.Thread(target=Trainer(RunConfig(**cfg_args), tmp / f"headless{attempt}",
                                                 on_event=events.append).run)
        meter.start()
        worker.start()
        run_until(lambda: not worker.is_alive(), 3600)
        meter.stop()
        window.show()
        run_until(lambda: True, 0.5)
        headless_rates.append(steady_throughput([e for e in events if e.kind == "step"], args.batch_size))
    train_stalls = {"runs": runs, "max_ms": max(r["max_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs)}
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
        "ui_overhead_percent": 100 * (1 - in_window / headless),
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
    print(f"{'headless images/s':<38}{headless:>12.1f}")
    print(f"{'in-window images/s':<38}{in_window:>12.1f}")
    print(f"{'UI overhead (%)':<38}{result['ui_overhead_percent']:>12.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
