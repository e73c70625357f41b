"""The Explore tab's first page: what training bought, the image in focus, Back / Forward through what
was shown, how many neighbours (k), searching with an image (picked or pasted; dropping one on the tab
works too), the results list and what its images can become (``SelectionActions``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QSpinBox, QToolButton, QVBoxLayout, QWidget

from simclr_studio.data import IMAGE_EXTENSIONS
from simclr_studio.gui.explore_results import FocusCard, QualityTable, ResultsList
from simclr_studio.gui.selection_actions import SelectionActions
from simclr_studio.session.explore import K_NEIGHBOURS


def dropped_image(mime) -> str | None:
    """The first local image file named by drag-and-drop or clipboard data."""
    for url in mime.urls():
        if url.isLocalFile() and Path(url.toLocalFile()).suffix.lower() in IMAGE_EXTENSIONS \
                and Path(url.toLocalFile()).is_file():
            return url.toLocalFile()
    return None


def spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def tool_button(text: str, tip: str, slot) -> QToolButton:
    button = QToolButton()
    button.setText(text)
    button.setToolTip(tip)
    button.clicked.connect(slot)
    return button


class NeighboursTab(QWidget):
    def __init__(self, host):
        super().__init__()
        self.host = host
        self._pasted = tempfile.TemporaryDirectory(prefix="simclr-studio-paste-")  # pasted images, while open
        self.quality = QualityTable()
        self.focus = FocusCard()
        self.back = tool_button("◀", "Back (Alt+Left)", lambda: host.go(-1))
        self.forward = tool_button("▶", "Forward (Alt+Right)", lambda: host.go(1))
        self.k = spin(1, 500, K_NEIGHBOURS, "How many neighbours to show")
        self.k.valueChanged.connect(lambda _: host.requery())
        search = QPushButton("Search image…")
        search.setToolTip("Pick an image file: its nearest images in the folder")
        search.clicked.connect(self.choose_search_image)
        paste = QPushButton("Paste")
        paste.setToolTip("Search with the image (or image file) on the clipboard (Ctrl+V)")
        paste.clicked.connect(self.paste)
        nav = QHBoxLayout()
        for widget in (self.back, self.forward, QLabel("k"), self.k):
            nav.addWidget(widget)
        nav.addStretch()
        nav.addWidget(search)
        nav.addWidget(paste)
        self.results = ResultsList()
        self.actions = SelectionActions(host)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.quality)
        layout.addWidget(self.focus)
        layout.addLayout(nav)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.actions)

    def choose_search_image(self) -> None:
        patterns = " ".join(f"*{ext}" for ext in sorted(IMAGE_EXTENSIONS))
        path, _ = QFileDialog.getOpenFileName(self, "Search with an image", str(Path.home()), f"Images ({patterns})")
        if path:
            self.host.search_image(path)

    def paste(self) -> None:
        """Search with what the clipboard holds: an image file (copied in a file manager) or an image."""
        mime = QGuiApplication.clipboard().mimeData()
        path = dropped_image(mime) if mime is not None else None
        if path is None and mime is not None and mime.hasImage():
            image = QGuiApplication.clipboard().image()
            folder = Path(self._pasted.name)
            target = folder / f"pasted-{len(list(folder.iterdir())) + 1}.png"
            if not image.isNull() and image.save(str(target), "PNG"):
                path = str(target)
        if path is None:
            self.host.say("The clipboard holds no image or image file.", error=True)
            return
        self.host.search_image(path)
