"""Starting the desktop app: QApplication, theme, icon, settings, and what to open first."""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import threading
import time

from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from simclr_studio.gui.theme import apply_theme
from simclr_studio.paths import resource


def create_app(argv: list[str] | None = None) -> QApplication:
    # Worker threads (scans, thumbnails, previews, embedding) hold the GIL in Python-heavy stretches; a
    # shorter switch interval hands it to the GUI thread sooner, so the event loop does not stall behind
    # them. (Training runs in a child process, see training_link.)
    sys.setswitchinterval(0.001)
    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    app.setApplicationName("SIMCLR Studio")
    app.setOrganizationName("SIMCLR Studio")
    app.setApplicationDisplayName("SIMCLR Studio")
    icon = resource("icons", "simclr-studio.svg")
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    return app


def build_window(settings: QSettings | None = None):
    from simclr_studio.gui.main_window import MainWindow
    from simclr_studio.gui.preferences import Preferences

    settings = settings or QSettings()
    prefs = Preferences.load(settings)
    demo = resource("demo")
    window = MainWindow(settings, prefs.runs_root, demo if demo.is_dir() else None)
    window.apply_preferences(prefs)
    # Move everything alive after start-up (torch, Qt, numpy: ~300k objects) out of the cyclic GC's
    # reach. Otherwise a full collection, triggered by a worker's allocations, walks them all while
    # holding the GIL and freezes the window for ~0.25 s.
    gc.collect()
    gc.freeze()
    return window


def _load_heavy_modules() -> None:
    """PyTorch, the engine and the panels: seconds of imports, done while the splash is on screen. The
    t-SNE's too (openTSNE, scikit-learn, SciPy; ~0.4 s): openTSNE's compiled module holds the GIL ~150 ms
    while it loads, a freeze if the window were already up (benchmarks/explore_latency.py)."""
    importlib.import_module("simclr_studio.gui.main_window")
    from simclr_studio.projection import preload

    preload()


def run_app(path: str | None = None, demo: bool = False) -> int:
    started = time.perf_counter()
    app = create_app()
    settings = QSettings()
    apply_theme(str(settings.value("theme", "light")))
    from simclr_studio.gui.splash import SplashWindow

    splash = SplashWindow()
    splash.show_centered()
    deadline = time.monotonic() + 1.0
    while not splash.painted and time.monotonic() < deadline:  # on screen before the long imports
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
    _probe("splash", started)
    # Import in a thread so the splash keeps repainting (moves, exposes) while the modules load.
    loader = threading.Thread(target=_load_heavy_modules, name="startup-imports", daemon=True)
    loader.start()
    while loader.is_alive():
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
        loader.join(0.02)
    try:
        window = build_window(settings)
    except ImportError as exc:  # a broken installation (e.g. PyTorch missing): say so in a window
        from PySide6.QtWidgets import QMessageBox

        splash.close()
        QMessageBox.critical(None, "SIMCLR Studio cannot start",
                             f"A required package could not be loaded:\n\n{exc}\n\nReinstall SIMCLR Studio "
                             "(pip install simclr-studio) and try again.")
        return 1
    screen = splash.screen().availableGeometry()
    if window.width() < screen.width() and window.height() < screen.height():
        window.move(screen.center() - window.rect().center())  # where the splash was, not a corner
    window.show()
    splash.close()
    if demo:
        window.open_demo()
    elif path:
        window.open_path(path)
    elif not os.environ.get(STARTUP_PROBE):  # the start-up benchmark times a bare start
        window.reopen_last()
    _probe("window", started)
    if os.environ.get(STARTUP_PROBE):
        QTimer.singleShot(0, app.quit)
    return app.exec()


STARTUP_PROBE = "SIMCLR_STUDIO_STARTUP_PROBE"  # benchmarks/startup.py: report the times and quit


def _probe(stage: str, started: float) -> None:
    if os.environ.get(STARTUP_PROBE):
        print(json.dumps({"stage": stage, "seconds": time.perf_counter() - started}), flush=True)
