"""Big maps' dots drawn as one image: Qt draws a scatter as one pixmap fragment per point, ~40–60 ms
for 50,000 points on the development machine and up to ~110 ms while t-SNE's threads hold both cores:
a stall at every live snapshot. Here each visible class layer's dots are stamped into one
premultiplied ARGB array with numpy (a disc of the layer's size, its brush colour; later layers over
earlier ones, as the scatter draws them) and drawn with one ``drawImage``. The layers keep
everything else (data, bounds, legend entries, visibility) and skip their own painting."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QImage

RASTER_MIN_POINTS = 5_000  # smaller maps keep pyqtgraph's antialiased symbols (their 7-pixel dots)


def disc(diameter: float) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) pixel offsets of a disc of ``diameter`` pixels centred on a pixel."""
    r = diameter / 2
    span = np.arange(-int(np.ceil(r)), int(np.ceil(r)) + 1)
    dy, dx = np.meshgrid(span, span, indexing="ij")
    inside = (dx + 0.5 * (diameter % 2 == 0)) ** 2 + (dy + 0.5 * (diameter % 2 == 0)) ** 2 <= r * r
    return dy[inside], dx[inside]


def premultiplied(brush) -> np.uint32:
    """A brush's colour as one ARGB32_Premultiplied pixel."""
    c = pg.mkBrush(brush).color()
    a = c.alpha()
    return np.uint32((a << 24) | (c.red() * a // 255 << 16) | (c.green() * a // 255 << 8) | (c.blue() * a // 255))


class PointRaster(pg.GraphicsObject):
    """Paints the dots of ``layers()`` (class layers whose own painting is off) in one image."""

    def __init__(self, layers: Callable[[], Sequence[pg.ScatterPlotItem]]) -> None:
        super().__init__()
        self.layers = layers

    def boundingRect(self) -> QRectF:
        view = self.getViewBox()
        return QRectF() if view is None else view.viewRect()  # the whole view: dots may be anywhere in it

    def viewRangeChanged(self) -> None:
        self.prepareGeometryChange()  # the bounding rect follows the view: the scene must re-index it

    def dataBounds(self, axis, frac=1.0, orthoRange=None):
        return None  # the layers give the map's bounds

    def paint(self, painter, *args) -> None:
        device = painter.device()
        ratio = device.devicePixelRatioF()
        width, height = round(device.width() * ratio), round(device.height() * ratio)
        if width <= 0 or height <= 0:
            return
        t = painter.transform()  # this item's coordinates → the device's (logical pixels)
        image = np.zeros((height, width), np.uint32)
        for layer in self.layers():
            if not layer.isVisible() or len(layer.data) == 0:
                continue
            x, y = layer.data["x"], layer.data["y"]
            px = np.rint((t.m11() * x + t.m21() * y + t.dx()) * ratio).astype(np.int64)
            py = np.rint((t.m12() * x + t.m22() * y + t.dy()) * ratio).astype(np.int64)
            dy, dx = disc(layer.opts["size"] * ratio)
            cols, rows = px[:, None] + dx[None], py[:, None] + dy[None]
            inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
            image.reshape(-1)[(rows * width + cols)[inside]] = premultiplied(layer.opts["brush"])
        frame = QImage(image.data, width, height, QImage.Format.Format_ARGB32_Premultiplied)
        frame.setDevicePixelRatio(ratio)
        painter.save()
        painter.resetTransform()
        painter.drawImage(QPointF(0, 0), frame)
        painter.restore()
