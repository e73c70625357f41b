"""The Explore tab's right-hand side: what training bought (a table), the image in focus, and the
results list (an image's neighbours, a search, a selection)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QThreadPool, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QGridLayout, QGroupBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from simclr_studio.gui.thumbnails import ThumbnailModel, ThumbnailView, load_qimage
from simclr_studio.gui.workers import Workers, plain
from simclr_studio.session.explore_values import Results
from simclr_studio.session.quality import ROWS, Quality

FOCUS_SIZE = 180
METRICS = (("knn", "kNN"), ("linear", "Linear probe"))


class QualityTable(QGroupBox):
    """kNN and linear-probe accuracy of the checkpoint, a random encoder and raw pixels."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("What training bought", parent)
        grid = QGridLayout(self)
        for c, (_, head) in enumerate(METRICS, start=1):
            grid.addWidget(QLabel(f"<b>{head}</b>"), 0, c)
        self.labels: dict[tuple[str, str], QLabel] = {}  # (row, metric) → its value
        for r, (key, name) in enumerate(ROWS, start=1):
            grid.addWidget(QLabel(name), r, 0)
            for c, (metric, _) in enumerate(METRICS, start=1):
                self.labels[(key, metric)] = label = QLabel("–")
                grid.addWidget(label, r, c)
        self.note = QLabel()
        self.note.setObjectName("muted")
        self.note.setWordWrap(True)
        grid.addWidget(self.note, len(ROWS) + 1, 0, 1, 3)

    def set_quality(self, quality: Quality | None) -> None:
        for (key, metric), label in self.labels.items():
            value = None if quality is None else getattr(quality.row(key), f"{metric}_accuracy")
            label.setText("–" if value is None else f"{value:.3f}")
        if quality is None:
            self.note.setText("")
            return
        n, total = quality.n, quality.total
        sample = f"a class-balanced sample of {n:,} of {total:,}" if n < total else f"{n:,}"
        self.note.setText(
            f"On {sample} labeled images. kNN: leave-one-out, k={quality.trained.k}, same as the Train tab. "
            f"Linear probe: top-1 on a held-out 20 %. The checkpoint's kNN is {quality.gain:+.3f} over the better "
            "of the random encoder and raw pixels.")


EMPTY_TITLE = "<b>Neighbours</b> (click a point of the map, or search with an image)"


def results_title(results: Results) -> str:
    """The results list's title: what it shows."""
    n = len(results.rows)
    if results.kind == "neighbours":
        return f"<b>{n} nearest neighbours</b> (cosine similarity of features)"
    if results.kind == "search":
        return f"<b>Search</b>: {Path(results.query or '').name}"
    how = f" ({results.how})" if results.how and results.how != "selection" else ""
    return f"<b>Selection</b>{how}: {n:,} images"


class FocusCard(QWidget):
    """The image in focus, large, with its name, what it is and its path."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.image = QLabel()
        self.image.setFixedSize(FOCUS_SIZE, FOCUS_SIZE)
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setObjectName("focus")
        self.caption = QLabel("Nothing selected")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.image)
        layout.addWidget(self.caption, 1)
        self._loads = Workers(self, QThreadPool.globalInstance())

    def set_image(self, path: str, caption: str) -> None:
        self.caption.setText(f"<b>{Path(path).name}</b><br>{caption}<br><small>{path}</small>")
        self.image.setPixmap(QPixmap())
        # An unreadable image just shows nothing.
        self._loads.start("image", plain(lambda: load_qimage(path, FOCUS_SIZE)),
                          on_result=lambda image: self.image.setPixmap(QPixmap.fromImage(image)))

    def set_summary(self, title: str, text: str) -> None:
        """No image in focus (a selection is shown): what there is instead."""
        self._loads.cancel_all()  # an image still loading must not replace the summary
        self.image.clear()
        self.caption.setText(f"<b>{title}</b><br>{text}")

    def clear(self) -> None:
        self._loads.cancel_all()
        self.image.clear()
        self.caption.setText("Nothing selected")


class ResultsList(QWidget):
    """A title over a grid of captioned thumbnails; ``activated`` says which was clicked (its position)."""

    activated = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel(EMPTY_TITLE)
        self.model = ThumbnailModel(self, cache_size=2000, captions=True)
        self.view = ThumbnailView(caption_lines=2)
        self.view.setModel(self.model)
        self.view.setSelectionMode(ThumbnailView.SelectionMode.SingleSelection)
        self.view.clicked.connect(lambda index: self.activated.emit(index.row()))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)

    def set_results(self, title: str, paths: list[str], captions: list[str]) -> None:
        self.title.setText(title)
        self.model.set_images(paths, captions)

    def clear(self) -> None:
        """Nothing shown: no heading of earlier results either."""
        self.title.setText(EMPTY_TITLE)
        self.model.set_images([])
