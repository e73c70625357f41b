"""The first thing on screen: a light window shown while PyTorch and the app load behind it.

It imports nothing but Qt, so it appears in a fraction of a second; the main window replaces it
once the heavy modules are in memory (see ``app.run_app``).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from simclr_studio import __version__
from simclr_studio.paths import resource

STEPS = ("Drop a folder of your images", "Preview the views, then train", "Explore what it learned, export the encoder")


class SplashWindow(QWidget):
    def __init__(self):
        super().__init__(None, Qt.WindowType.SplashScreen | Qt.WindowType.FramelessWindowHint)
        self.setObjectName("splash")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)  # draws the style sheet's border
        self.setFixedSize(460, 300)
        self.painted = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(32, 28, 32, 24)
        icon = QLabel()
        icon.setPixmap(QIcon(str(resource("icons", "simclr-studio.svg"))).pixmap(72, 72))
        icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title = QLabel(f"<span style='font-size:20pt; font-weight:600'>SIMCLR Studio</span> "
                       f"<span style='color:#888'>{__version__}</span>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        steps = QLabel("<br>".join(f"<b>{i}</b>&nbsp; {text}" for i, text in enumerate(STEPS, 1)))
        steps.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.status = QLabel("Loading PyTorch…")
        self.status.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.status.setStyleSheet("color: #888")
        for widget in (icon, title, steps):
            layout.addWidget(widget)
        layout.addStretch(1)
        layout.addWidget(self.status)

    def show_centered(self) -> None:
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is not None:
            self.move(screen.availableGeometry().center() - self.rect().center())
        self.show()

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        self.painted = True
