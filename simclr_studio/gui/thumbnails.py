"""A virtualised thumbnail grid: the view asks only for visible items; each thumbnail is decoded once
on a thread pool and kept in a bounded LRU cache, so a 100,000-image folder opens instantly."""

from __future__ import annotations

from collections import OrderedDict

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import QListView

from simclr_studio.data import decode_image

THUMB = 72


def array_to_qimage(array) -> QImage:
    """uint8 HWC RGB array → QImage (copied, so it owns its memory and can cross threads)."""
    h, w, _ = array.shape
    return QImage(array.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class _Loaded(QObject):
    done = Signal(int, int, QImage)  # generation, row, image


class _LoadThumb(QRunnable):
    def __init__(self, generation: int, row: int, path: str, size: int, signal: _Loaded):
        super().__init__()
        self.generation, self.row, self.path, self.size, self.signal = generation, row, path, size, signal

    def run(self) -> None:
        try:
            image = array_to_qimage(decode_image(self.path, self.size))
        except Exception:  # DataError or anything unexpected: a placeholder, never a row stuck "pending"
            image = QImage()
        try:
            self.signal.done.emit(self.generation, self.row, image)
        except RuntimeError:  # the model went away with its window
            pass


class ThumbnailModel(QAbstractListModel):
    """Rows are image paths; DecorationRole is the thumbnail (a placeholder until it is loaded)."""

    def __init__(self, parent: QObject | None = None, cache_size: int = 4000):
        super().__init__(parent)
        self.paths: list[str] = []
        self.labels: list[str] = []
        self.cache: OrderedDict[int, QPixmap] = OrderedDict()
        self.cache_size = cache_size
        self.pending: set[int] = set()
        self.generation = 0  # bumped on every new folder, so late loads of the old one are dropped
        self._requests = 0
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._loaded = _Loaded()
        self._loaded.done.connect(self._on_loaded)
        self.placeholder = QPixmap(THUMB, THUMB)
        self.placeholder.fill(QColor(128, 128, 128, 40))

    def set_images(self, paths: list[str], labels: list[str] | None = None) -> None:
        self.beginResetModel()
        self.pool.clear()
        self.generation += 1
        self.paths = list(paths)
        self.labels = list(labels) if labels else [""] * len(self.paths)
        self.cache.clear()
        self.pending.clear()
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.paths)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        row = index.row()
        if not index.isValid() or row >= len(self.paths):
            return None
        if role == Qt.ItemDataRole.DecorationRole:
            pixmap = self.cache.get(row)
            if pixmap is not None:
                self.cache.move_to_end(row)
                return pixmap
            if row not in self.pending:
                self.pending.add(row)
                # Newest request first: after a long scroll the rows on screen load before those passed by.
                self._requests += 1
                self.pool.start(_LoadThumb(self.generation, row, self.paths[row], THUMB, self._loaded),
                                self._requests % (1 << 30))
            return self.placeholder
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.paths[row] + (f"\n{self.labels[row]}" if self.labels[row] else "")
        return None

    def _on_loaded(self, generation: int, row: int, image: QImage) -> None:
        if generation != self.generation or row >= len(self.paths):
            return  # a thumbnail of a folder that is no longer shown
        self.pending.discard(row)
        pixmap = QPixmap.fromImage(image) if not image.isNull() else self.placeholder
        self.cache[row] = pixmap
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        idx = self.index(row)
        self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class ThumbnailView(QListView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setUniformItemSizes(True)  # lets Qt lay out 100k items without asking each for its size
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(500)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setGridSize(QSize(THUMB + 10, THUMB + 10))
        self.setSpacing(2)
        self.setSelectionMode(QListView.SelectionMode.ExtendedSelection)
