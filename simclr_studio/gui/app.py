"""Starting the desktop app: QApplication, theme, icon, settings, and what to open first."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from simclr_studio.paths import resource


def default_runs_root() -> Path:
    return Path(os.environ.get("SIMCLR_STUDIO_RUNS", Path.home() / "simclr-studio-runs"))


def apply_theme(name: str) -> None:
    app = QApplication.instance()
    app.setStyle("Fusion")
    palette = QPalette()
    if name == "dark":
        colors = {
            QPalette.ColorRole.Window: "#2b2d31", QPalette.ColorRole.WindowText: "#e6e6e6",
            QPalette.ColorRole.Base: "#1e1f22", QPalette.ColorRole.AlternateBase: "#2b2d31",
            QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#3a3c41",
            QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#2b6fd9",
            QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#3a3c41",
            QPalette.ColorRole.ToolTipText: "#e6e6e6", QPalette.ColorRole.PlaceholderText: "#9a9a9a",
            QPalette.ColorRole.Mid: "#4a4c52", QPalette.ColorRole.Link: "#6aa0ff",
        }
        for role, color in colors.items():
            palette.setColor(role, QColor(color))
        for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
            palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#777777"))
    else:
        palette = app.style().standardPalette()
        palette.setColor(QPalette.ColorRole.Highlight, QColor("#2b6fd9"))
    app.setPalette(palette)
    qss = resource("style.qss")
    app.setStyleSheet(qss.read_text() if qss.exists() else "")


def create_app(argv: list[str] | None = None) -> QApplication:
    # Worker threads (decoding, training) hold the GIL in Python-heavy stretches; a shorter switch
    # interval hands it to the GUI thread sooner, so the event loop does not stall behind them.
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

    settings = settings or QSettings()
    demo = resource("demo")
    window = MainWindow(settings, default_runs_root(), demo if demo.is_dir() else None)
    theme = str(settings.value("theme", "light"))
    apply_theme(theme)
    window.train_panel.apply_theme(theme == "dark")
    window.explore_panel.apply_theme(theme == "dark")
    # Move everything alive after start-up (torch, Qt, numpy: ~300k objects) out of the cyclic GC's
    # reach. Otherwise a full collection, triggered by a worker's allocations, walks them all while
    # holding the GIL and freezes the window for ~0.25 s.
    gc.collect()
    gc.freeze()
    return window


def run_app(path: str | None = None, demo: bool = False) -> int:
    app = create_app()
    window = build_window()
    window.show()
    if demo:
        window.open_demo()
    elif path:
        window.open_path(path)
    return app.exec()
