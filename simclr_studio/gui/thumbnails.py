"""A virtualised thumbnail grid: the view asks only for visible items; each thumbnail is decoded once
on a thread pool and kept in a bounded LRU cache, so a 100,000-image folder opens instantly."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QRect, QSize, Qt, QThreadPool
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import QDialog, QLabel, QListView, QStyle, QStyledItemDelegate, QVBoxLayout

from simclr_studio.data import decode_image
from simclr_studio.gui.workers import Throttle, Workers, plain

THUMB = 72
_ROOT = QModelIndex()  # the invalid index: the list's (only) parent


def array_to_qimage(array: np.ndarray) -> QImage:
    """uint8 HWC RGB array → QImage (copied, so it owns its memory and can cross threads)."""
    h, w, _ = array.shape
    return QImage(array.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def load_qimage(path: str, size: int, max_pixels: int | None = None) -> QImage:
    """An image decoded for display (a QImage may cross threads, a QPixmap may not). The same guard as
    training's: images over ``max_pixels`` (default data.MAX_IMAGE_PIXELS) raise DataError, and big
    decodes wait for the process's byte budget (data.DECODE_BUDGET_BYTES) and are shrunk first."""
    return array_to_qimage(decode_image(path, size, max_pixels=max_pixels))


class ThumbnailModel(QAbstractListModel):
    """Rows are image paths; DecorationRole is the thumbnail (a placeholder until it is loaded).

    Thumbnails load on two background threads, the newest request first (after a long scroll the rows
    on screen load before those passed by), and the view hears of them in batches at ~15 Hz."""

    def __init__(self, parent: QObject | None = None, cache_size: int = 4000, captions: bool = False):
        super().__init__(parent)
        self.captions = captions  # labels shown under each thumbnail (else only in the tooltip)
        self.paths: list[str] = []
        self.labels: list[str] = []
        self.cache: OrderedDict[int, QPixmap] = OrderedDict()
        self.cache_size = cache_size
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self.loads = Workers(self, self.pool)  # by row: the thumbnails being decoded
        self._requests = 0
        self._changed: set[int] = set()  # rows loaded since the view last heard
        self._tell_view = Throttle(self._emit_changed, parent=self)
        self.placeholder = QPixmap(THUMB, THUMB)
        self.placeholder.fill(QColor(128, 128, 128, 40))

    def set_images(self, paths: list[str], labels: list[str] | None = None) -> None:
        self.beginResetModel()
        self.loads.cancel_all()  # thumbnails of the old list are dropped, queued ones never decoded
        self._tell_view.cancel()
        self._changed.clear()
        self.paths = list(paths)
        self.labels = list(labels) if labels else [""] * len(self.paths)
        self.cache.clear()
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = _ROOT) -> int:
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
            if row not in self.loads:
                self._requests += 1
                path = self.paths[row]
                self.loads.start(row, plain(lambda: load_qimage(path, THUMB)),
                                 on_result=lambda image, row=row: self._on_loaded(row, image),
                                 on_error=lambda _, row=row: self._on_loaded(row, QImage()),
                                 priority=self._requests % (1 << 30))
            return self.placeholder
        if role == Qt.ItemDataRole.DisplayRole and self.captions:
            return self.labels[row]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.paths[row] + (f"\n{self.labels[row]}" if self.labels[row] else "")
        return None

    def _on_loaded(self, row: int, image: QImage) -> None:
        """An unreadable image gets the placeholder, never a row stuck loading."""
        self.cache[row] = QPixmap.fromImage(image) if not image.isNull() else self.placeholder
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        self._changed.add(row)
        self._tell_view()

    def _emit_changed(self) -> None:
        rows = [row for row in self._changed if row < len(self.paths)]
        self._changed.clear()
        if rows:  # one signal for the batch: the view repaints what of it is on screen
            self.dataChanged.emit(self.index(min(rows)), self.index(max(rows)), [Qt.ItemDataRole.DecorationRole])


class ThumbnailDelegate(QStyledItemDelegate):
    """Draws a thumbnail (and its caption) in one Python call per item. The default delegate asks the
    model for a dozen roles per item, each a call into Python that must take the GIL from busy
    worker threads: with thumbnails loading, that made a repaint of the grid stall for tens of ms."""

    def __init__(self, view: ThumbnailView):
        super().__init__(view)
        self.view = view

    def paint(self, painter, option, index) -> None:
        model = index.model()
        row = index.row()
        rect = option.rect
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(rect, option.palette.highlight())
        pixmap = model.data(index, Qt.ItemDataRole.DecorationRole)
        if pixmap is not None:
            w, h = pixmap.width(), pixmap.height()
            painter.drawPixmap(rect.x() + (rect.width() - w) // 2, rect.y() + 3 + (THUMB - h) // 2, pixmap)
        if model.captions and row < len(model.labels) and model.labels[row]:
            painter.setPen(option.palette.color(option.palette.ColorRole.HighlightedText
                                                if option.state & QStyle.StateFlag.State_Selected
                                                else option.palette.ColorRole.Text))
            # One caption line per line of the label, each elided to the cell (the tooltip has it all):
            # wrapped words were cut off at the cell's edge.
            metrics = option.fontMetrics
            line_height = metrics.height() + 1
            y = rect.y() + THUMB + 5
            for line in model.labels[row].split("\n")[:self.view.caption_lines]:
                text = metrics.elidedText(line, Qt.TextElideMode.ElideRight, rect.width() - 4)
                painter.drawText(QRect(rect.x() + 2, y, rect.width() - 4, line_height),
                                 Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, text)
                y += line_height

    def sizeHint(self, option, index) -> QSize:
        return self.view.gridSize() - QSize(4, 4)


class ThumbnailView(QListView):
    def __init__(self, parent=None, caption_lines: int = 0):
        super().__init__(parent)
        self.caption_lines = caption_lines
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setUniformItemSizes(True)  # lets Qt lay out 100k items without asking each for its size
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(500)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(THUMB, THUMB))
        caption = caption_lines * (self.fontMetrics().height() + 1)
        self.setGridSize(QSize(THUMB + 10 + (24 if caption_lines else 0), THUMB + 10 + caption))
        if caption_lines:
            self.setWordWrap(True)
        self.setItemDelegate(ThumbnailDelegate(self))
        self.setSpacing(2)
        self.setSelectionMode(QListView.SelectionMode.ExtendedSelection)


PREVIEW = 640  # the preview's longer side: small images are enlarged with sharp pixels, large ones shrunk


class ImagePreview(QDialog):
    """One image, larger, with its path and class: the whole image, decoded in the background by the
    same guarded decode as training (a huge file does not freeze the window)."""

    def __init__(self, path: str, label: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle(path.rsplit("/", 1)[-1])
        self.image = QLabel("Loading…")
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(PREVIEW // 2, PREVIEW // 2)
        self.caption = QLabel(path + (f"\n{label}" if label else ""))
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.caption.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.caption)
        self.loads = Workers(self)
        self.loads.start("image", plain(lambda: array_to_qimage(decode_image(path, None))),
                         on_result=self._on_loaded, on_error=lambda message: self.image.setText(message))

    def _on_loaded(self, image: QImage) -> None:
        w, h = image.width(), image.height()
        room = self.screen().availableGeometry()  # adjustSize keeps a window within 2/3 of the screen
        scale = min(PREVIEW, room.width() * 0.6, room.height() * 0.6 - 60) / max(w, h)
        mode = Qt.TransformationMode.FastTransformation if scale > 1 else Qt.TransformationMode.SmoothTransformation
        self.image.setPixmap(QPixmap.fromImage(image.scaled(max(1, round(w * scale)), max(1, round(h * scale)),
                                                            Qt.AspectRatioMode.KeepAspectRatio, mode)))
        self.caption.setText(f"{self.caption.text()}\n{w} × {h} pixels")
        self.adjustSize()  # grow around the image (the dialog opened at the placeholder's size)

    def closeEvent(self, event) -> None:
        self.loads.cancel_all()
        super().closeEvent(event)
