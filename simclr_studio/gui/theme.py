"""The app's look: the Fusion style with a light or dark palette, and the style sheet."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from simclr_studio.paths import resource

THEMES = ("light", "dark")
DARK = {
    QPalette.ColorRole.Window: "#2b2d31", QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1e1f22", QPalette.ColorRole.AlternateBase: "#2b2d31",
    QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#3a3c41",
    QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#2b6fd9",
    QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#3a3c41",
    QPalette.ColorRole.ToolTipText: "#e6e6e6", QPalette.ColorRole.PlaceholderText: "#9a9a9a",
    QPalette.ColorRole.Mid: "#4a4c52", QPalette.ColorRole.Link: "#6aa0ff",
}


def apply_theme(name: str) -> None:
    """Style the whole application: "dark", or anything else for the light theme."""
    app = QApplication.instance()
    app.setStyle("Fusion")
    if name == "dark":
        palette = QPalette()
        for role, color in DARK.items():
            palette.setColor(role, QColor(color))
        for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
            palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#777777"))
    else:
        palette = app.style().standardPalette()
        palette.setColor(QPalette.ColorRole.Highlight, QColor("#2b6fd9"))
    app.setPalette(palette)
    qss = resource("style.qss")
    app.setStyleSheet(qss.read_text() if qss.exists() else "")
