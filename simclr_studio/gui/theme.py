"""The app's look: the Fusion style with a light or dark palette, and the style sheet."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette, QPen
from PySide6.QtWidgets import QApplication, QProxyStyle, QStyle

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


def canvas_colour(dark: bool) -> str:
    """The background of plots, the map and the exported map: the dark theme's Base, or white."""
    return DARK[QPalette.ColorRole.Base] if dark else "#ffffff"


class StudioStyle(QProxyStyle):
    """Fusion, with check boxes and radio buttons outlined in the text's colour: Fusion outlines them a
    shade darker than the window, which on the dark theme left unchecked boxes nearly invisible."""

    def __init__(self) -> None:
        super().__init__("Fusion")

    def drawPrimitive(self, element, option, painter, widget=None) -> None:
        super().drawPrimitive(element, option, painter, widget)
        if element in (QStyle.PrimitiveElement.PE_IndicatorCheckBox, QStyle.PrimitiveElement.PE_IndicatorRadioButton):
            colour = QColor(option.palette.color(QPalette.ColorRole.PlaceholderText))
            painter.save()
            painter.setRenderHint(painter.RenderHint.Antialiasing, True)
            painter.setPen(QPen(colour, 1))
            painter.setBrush(QColor(0, 0, 0, 0))
            box = option.rect.adjusted(1, 1, -2, -2)
            if element == QStyle.PrimitiveElement.PE_IndicatorRadioButton:
                painter.drawEllipse(box)
            else:
                painter.drawRoundedRect(box, 2, 2)
            painter.restore()


def apply_theme(name: str) -> None:
    """Style the whole application: "dark", or anything else for the light theme."""
    app = QApplication.instance()
    if not isinstance(app.style(), StudioStyle):
        app.setStyle(StudioStyle())
    if name == "dark":
        palette = QPalette()
        for role, color in DARK.items():
            palette.setColor(role, QColor(color))
        for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
            palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#777777"))
    else:
        palette = app.style().standardPalette()
        palette.setColor(QPalette.ColorRole.Highlight, QColor("#2b6fd9"))
    # Each set re-polishes every widget alive (~0.5 s with a window open): only when something changes.
    if app.palette() != palette:
        app.setPalette(palette)
    qss = resource("style.qss")
    sheet = qss.read_text() if qss.exists() else ""
    if app.styleSheet() != sheet:
        app.setStyleSheet(sheet)
