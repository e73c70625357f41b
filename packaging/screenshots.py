"""Screenshots of the app as a person sees it: a real window on an X display (Xvfb), captured with
ImageMagick's ``import -window root``.

    Xvfb :99 -screen 0 1400x900x24 &  DISPLAY=:99 python packaging/screenshots.py [--out resources/screenshots]

Opens the demo folder, shows each tab, trains for a few seconds so the curves have points, and
writes one PNG per view. Needs Debian's xvfb and imagemagick (see the README's Linux notes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "resources" / "screenshots")
    parser.add_argument("--train-seconds", type=float, default=25)
    parser.add_argument("--theme", default="light", choices=("light", "dark"))
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        sys.exit("screenshots need an X display: run under Xvfb (see the docstring)")
    os.environ.setdefault("SIMCLR_STUDIO_RUNS", tempfile.mkdtemp(prefix="shots-runs-"))

    from PySide6.QtCore import QSettings, QTimer

    from simclr_studio.gui.app import build_window, create_app

    app = create_app()
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("theme", args.theme)
    window = build_window(settings)
    window.resize(1360, 860)
    window.move(0, 0)
    window.show()
    args.out.mkdir(parents=True, exist_ok=True)

    def wait(seconds: float, until=None) -> None:
        deadline = time.time() + seconds
        timer = QTimer()
        timer.setInterval(50)
        timer.timeout.connect(lambda: app.exit(0) if time.time() > deadline or (until and until()) else None)
        timer.start()
        app.exec()
        timer.stop()

    def shot(name: str) -> None:
        wait(1.0)
        path = args.out / f"{name}{'' if args.theme == 'light' else '-dark'}.png"
        subprocess.run(["import", "-window", "root", "-crop", "1360x860+0+0", str(path)], check=True)
        print(f"wrote {path}")

    wait(1.0)
    shot("welcome")
    window.open_demo()
    wait(30, until=lambda: window.scan is not None)
    shot("data")
    window.tabs.setCurrentWidget(window.augment_panel)
    window.augment_panel.controls["mask_p"].setValue(0.5)
    window.augment_panel.controls["mask_fill"].setCurrentText("noise")
    shot("augment")
    window.tabs.setCurrentWidget(window.train_panel)
    window.train_panel.form.length.set_minutes_mode(False)  # a 30-epoch run in the screenshot
    window.train_panel.form.epochs.setValue(30)
    window.train_panel.start()
    wait(args.train_seconds)
    shot("train")
    window.train_panel.stop_and_wait()
    # Explore: embed with the checkpoint the stop saved, wait for t-SNE and the quality table, click a point.
    window.show_explorer()
    explorer = window.explore_panel
    explorer.embed()
    wait(300, until=lambda: explorer.session.embeddings is not None and not explorer.jobs)
    n = len(explorer.session.embeddings)
    explorer.select_point(n // 3)
    explorer.map.point_hovered.emit(n // 2)
    shot("explore")
    # Curation: near-duplicate groups at the default threshold, then the labels checked.
    explorer.tabs.setCurrentWidget(explorer.duplicates)
    explorer.duplicates.search()
    wait(120, until=lambda: explorer.curation.duplicates is not None and not explorer.jobs)
    shot("explore-duplicates")
    explorer.tabs.setCurrentWidget(explorer.mislabels)
    explorer.mislabels.search()
    wait(120, until=lambda: explorer.curation.mislabels is not None and not explorer.jobs)
    shot("explore-mislabeled")
    # Runs: a second, shorter run with masking on, then both ticked to compare their curves.
    window.tabs.setCurrentWidget(window.augment_panel)
    window.augment_panel.controls["mask_p"].setValue(0.8)
    window.tabs.setCurrentWidget(window.train_panel)
    window.train_panel.new_run()
    window.train_panel.start()
    wait(args.train_seconds / 2)
    window.train_panel.stop_and_wait()
    runs = window.runs_panel
    window.tabs.setCurrentWidget(runs)
    wait(30, until=lambda: len(runs.summaries) >= 2)
    for summary in runs.summaries[:2]:
        runs.tick(summary.path)
    wait(30, until=lambda: len(runs.compare.drawn_curves(runs.compare.loss_plot)) >= 2)
    shot("runs")
    window.close()


if __name__ == "__main__":
    main()
