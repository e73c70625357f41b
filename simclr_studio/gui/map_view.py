"""The feature map: a pyqtgraph scatter (one item per class, so 50,000 points stay fast), with
click, hover (the hovered image shows in a corner), rectangle (Shift+drag) and lasso (Ctrl+drag)
selection in view coordinates. A click on a legend entry hides or shows its class: hidden points
cannot be clicked or selected. While t-SNE runs, ``move_points`` moves the points in place."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QColor, QImage, QPainterPath, QPixmap
from PySide6.QtWidgets import QGraphicsPathItem, QLabel

from simclr_studio.gui.map_raster import RASTER_MIN_POINTS, PointRaster
from simclr_studio.gui.theme import canvas_colour
from simclr_studio.gui.thumbnails import load_qimage
from simclr_studio.gui.workers import Workers, plain

# Ten well-separated colours (the usual categorical palette); more classes get evenly spaced hues.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
PICK_RADIUS_PX = 8
HOVER_SIZE = 112  # the hovered image, in the map's top-right corner
SAMPLE_SIZE = 11  # a legend entry's disc, pixels


def class_colour(i: int, n: int) -> tuple[int, int, int]:
    if n <= len(PALETTE):
        return PALETTE[i]
    c = pg.intColor(i, hues=n, values=1, maxValue=230, minValue=150)
    return c.red(), c.green(), c.blue()


class ClassSample(pg.ItemSample):
    """A legend entry's sample: its class's colour as a disc of ``SAMPLE_SIZE`` pixels, whatever the
    size of the map's dots (big maps' 5-pixel dots made specks of the samples). Hidden: pyqtgraph's eye."""

    def paint(self, p, *args) -> None:  # type: ignore[no-untyped-def]
        if not self.item.isVisible():
            super().paint(p, *args)
            return
        p.setRenderHint(p.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(pg.mkBrush(self.item.opts["brush"]))
        p.drawEllipse(QPointF(10, 10), SAMPLE_SIZE / 2, SAMPLE_SIZE / 2)


class MapPoints(pg.ScatterPlotItem):
    """A scatter layer that leaves clicks to the map: pyqtgraph's scatter accepts a click on a dot
    before the view box sees it, so a click exactly on a dot did nothing. The map picks the nearest
    point in screen distance instead (``MapView.nearest``), the same for dots and the space between."""

    drawn_elsewhere = False  # a big map's class layers are drawn by its PointRaster

    def mouseClickEvent(self, ev) -> None:
        ev.ignore()

    def paint(self, painter, *args) -> None:
        if not self.drawn_elsewhere:
            super().paint(painter, *args)

    @classmethod
    def uniform(cls, x: np.ndarray, y: np.ndarray, **style) -> MapPoints:
        """Points that share one style. ``setData`` works out each point's style and symbol in Python
        (~200 ms for 50,000 points: a stall whenever a map was shown); here it is worked out for one
        point and that point's record copied to the rest."""
        item = cls(x=x[:1], y=y[:1], **style)
        if len(x) > 1:
            item.data = np.repeat(item.data, len(x))
            item.data["item"] = None  # pyqtgraph's per-point handles, made on demand
            item.move_to(x, y)
        return item

    def move_to(self, x: np.ndarray, y: np.ndarray) -> None:
        """New positions for the same points, written in place: ``setData`` rebuilds every point's
        style too (~200 ms for 50,000 points, a stall at every t-SNE snapshot); this is a few ms."""
        if len(x) != len(self.data):
            self.setData(x=x, y=y)
            return
        self.data["x"] = x
        self.data["y"] = y
        self.prepareGeometryChange()
        self.informViewBoundsChanged()
        self.bounds = [None, None]
        self.invalidate()


class SelectViewBox(pg.ViewBox):
    """Left-drag pans, wheel zooms; Shift+drag selects a rectangle, Ctrl+drag draws a lasso."""

    clicked = Signal(float, float)
    rect_selected = Signal(float, float, float, float)
    lasso_selected = Signal(object)  # np.ndarray [M, 2] in view coordinates

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._drag: list[QPointF] = []
        self._mode = ""
        self._outline = QGraphicsPathItem()
        self._outline.setPen(pg.mkPen((30, 30, 30), width=1, style=Qt.PenStyle.DashLine))
        self._outline.setZValue(1000)
        self._outline.hide()
        self.addItem(self._outline, ignoreBounds=True)

    def outline_pen(self, pen) -> None:
        self._outline.setPen(pen)

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            p = self.mapToView(ev.pos())
            self.clicked.emit(p.x(), p.y())
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None) -> None:
        mods = ev.modifiers()
        selecting = mods & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier)
        if ev.button() != Qt.MouseButton.LeftButton or (not selecting and not self._mode):
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        p = self.mapToView(ev.pos())
        if ev.isStart() or not self._mode:
            self._mode = "rect" if mods & Qt.KeyboardModifier.ShiftModifier else "lasso"
            self._drag = [self.mapToView(ev.buttonDownPos())]
        self._drag.append(p)
        path = QPainterPath()
        if self._mode == "rect":
            path.addRect(pg.QtCore.QRectF(self._drag[0], p).normalized())
        else:
            path.moveTo(self._drag[0])
            for q in self._drag[1:]:
                path.lineTo(q)
            path.closeSubpath()
        self._outline.setPath(path)
        self._outline.show()
        if ev.isFinish():
            self._outline.hide()
            start, mode, points = self._drag[0], self._mode, self._drag
            self._mode, self._drag = "", []
            if mode == "rect":
                self.rect_selected.emit(start.x(), start.y(), p.x(), p.y())
            else:
                self.lasso_selected.emit(np.array([[q.x(), q.y()] for q in points]))


class MapView(pg.PlotWidget):
    """Scatter of 2-D coordinates coloured by group, with highlight layers for the focused point,
    its neighbours and a selection. Given the points' image files, it shows the hovered one."""

    point_clicked = Signal(int)  # row, or -1 for a click on empty space
    point_hovered = Signal(int)  # row under the cursor, or -1
    selection_made = Signal(object, str)  # np.ndarray of rows, how: "rectangle" or "lasso"

    def __init__(self, parent=None):
        self.view = SelectViewBox()
        super().__init__(parent, viewBox=self.view)
        self.dark = False
        self.setBackground("w")
        self.plotItem.hideAxis("left")
        self.plotItem.hideAxis("bottom")
        self.plotItem.setMenuEnabled(False)
        self.legend = self.plotItem.addLegend(offset=(8, 8), labelTextSize="9pt", sampleType=ClassSample)
        self.legend.setZValue(1000)  # above every point layer: the points were drawn over the entries
        self.coords = np.zeros((0, 2), np.float32)
        self._marks: tuple = (None, (), ())  # what mark() was last told, kept when the points move
        self.groups: list[MapPoints] = []
        self.raster = PointRaster(lambda: [g for g in self.groups if g.drawn_elsewhere])
        self.plotItem.addItem(self.raster, ignoreBounds=True)
        self.selection_item = MapPoints(size=8, pen=pg.mkPen((20, 20, 20), width=1), brush=None)
        self.neighbour_item = MapPoints(size=12, pen=pg.mkPen((255, 140, 0), width=2), brush=None)
        self.focus_item = MapPoints(size=18, pen=pg.mkPen((220, 20, 60), width=3), brush=None)
        for z, item in enumerate((self.selection_item, self.neighbour_item, self.focus_item)):
            item.setZValue(100 + z)
            self.plotItem.addItem(item, ignoreBounds=True)
        self.view.clicked.connect(self._on_click)
        self.view.rect_selected.connect(self._on_rect)
        self.view.lasso_selected.connect(self._on_lasso)
        self.scene().sigMouseMoved.connect(self._on_move)
        self._hovered = -1
        self.paths: list[str] = []
        self.hover = QLabel(self)
        self.hover.setObjectName("hover")
        self.hover.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hover.hide()
        self._loads = Workers(self, QThreadPool.globalInstance())
        self.point_hovered.connect(self._preview)
        self.apply_theme(False)

    def apply_theme(self, dark: bool) -> None:
        self.dark = dark
        self.setBackground(canvas_colour(dark))
        # The legend on a near-opaque card of the background, in full-contrast text (it was pale grey).
        card = QColor(canvas_colour(dark))
        card.setAlpha(230)
        self.legend.setBrush(pg.mkBrush(card))
        self.legend.setPen(pg.mkPen((90, 92, 98) if dark else (200, 200, 200)))
        self.legend.setLabelTextColor((235, 235, 235) if dark else (20, 20, 20))
        ink = (235, 235, 235) if dark else (20, 20, 20)  # outlines that stand out from the background
        self.selection_item.setPen(pg.mkPen(ink, width=1))
        self.view.outline_pen(pg.mkPen(ink, width=1, style=Qt.PenStyle.DashLine))

    def set_points(self, coords: np.ndarray, groups: np.ndarray, names: list[str], paths: Sequence[str] = ()) -> None:
        """coords [N, 2]; groups [N] ints indexing ``names`` (colour and legend entry per group);
        ``paths``: the image file of each point, shown on hover."""
        self.paths = list(paths)
        self._hovered = -1
        self._preview(-1)
        for item in self.groups:
            self.plotItem.removeItem(item)
        self.legend.clear()
        self.groups = []
        self.coords = np.asarray(coords, dtype=np.float32)
        groups = np.asarray(groups)
        size = 5 if len(coords) > 5000 else 7
        for g, name in enumerate(names):
            rows = np.flatnonzero(groups == g)
            if rows.size == 0:
                continue
            item = MapPoints.uniform(self.coords[rows, 0], self.coords[rows, 1], size=size, pen=None,
                                     brush=pg.mkBrush(*class_colour(g, len(names)), 200), name=name)
            item.rows = rows
            item.drawn_elsewhere = len(coords) >= RASTER_MIN_POINTS
            self.plotItem.addItem(item)
            self.groups.append(item)
        self._marks: tuple = (None, (), ())
        self.mark()
        self._frame_all()
        self.raster.update()

    def move_points(self, coords: np.ndarray) -> None:
        """New coordinates for the same points (a t-SNE snapshot): groups, hidden classes and marks stay."""
        coords = np.asarray(coords, dtype=np.float32)
        if coords.shape != self.coords.shape:
            return
        self.coords = coords
        for item in self.groups:
            item.move_to(coords[item.rows, 0], coords[item.rows, 1])
        self.mark(*self._marks)
        self._frame_all()
        self.raster.update()

    def _frame_all(self) -> None:
        """Every point in view, hidden classes' too (the view box's autoRange skips hidden items, so a
        class hidden while t-SNE moved the points came back off-screen)."""
        if len(self.coords) == 0:
            return
        lo, hi = self.coords.min(0), self.coords.max(0)
        self.view.setRange(xRange=(float(lo[0]), float(hi[0])), yRange=(float(lo[1]), float(hi[1])), padding=0.05)

    def visible(self) -> np.ndarray:
        """Which points are shown (bool [N]): those of classes not hidden through the legend."""
        shown = np.zeros(len(self.coords), dtype=bool)
        for item in self.groups:
            if item.isVisible():
                shown[item.rows] = True
        return shown

    def render_image(self, width: int) -> QImage | None:
        """The map as shown, rendered at ``width`` pixels (on the GUI thread: scene rendering is not
        thread-safe)."""
        import pyqtgraph.exporters as exporters

        if len(self.coords) == 0:
            return None
        exporter = exporters.ImageExporter(self.plotItem)
        exporter.parameters()["width"] = width
        image = exporter.export(toBytes=True)
        return image if isinstance(image, QImage) and not image.isNull() else None

    def point_count(self) -> int:
        return sum(len(item.rows) for item in self.groups)

    def mark(self, focus: int | None = None, neighbours=(), selection=()) -> None:
        self._marks = (focus, neighbours, selection)

        def at(rows):
            rows = np.asarray(list(rows), dtype=np.int64)
            rows = rows[(rows >= 0) & (rows < len(self.coords))]
            return {"x": self.coords[rows, 0], "y": self.coords[rows, 1]}

        self.focus_item.setData(**at([] if focus is None or focus < 0 else [focus]))
        self.neighbour_item.setData(**at(neighbours))
        self.selection_item.setData(**at(selection))

    def nearest(self, x: float, y: float, radius_px: float = PICK_RADIUS_PX) -> int:
        """The point nearest to (x, y) in screen distance, if within ``radius_px``; else -1."""
        if len(self.coords) == 0:
            return -1
        px, py = self.view.viewPixelSize()
        d2 = ((self.coords[:, 0] - x) / px) ** 2 + ((self.coords[:, 1] - y) / py) ** 2
        d2[~self.visible()] = np.inf
        row = int(np.argmin(d2))
        return row if d2[row] <= radius_px**2 else -1

    def _on_click(self, x: float, y: float) -> None:
        self.point_clicked.emit(self.nearest(x, y))

    def _on_move(self, scene_pos) -> None:
        if not self.view.sceneBoundingRect().contains(scene_pos):
            row = -1
        else:
            p = self.view.mapSceneToView(scene_pos)
            row = self.nearest(p.x(), p.y())
        if row != self._hovered:
            self._hovered = row
            self.point_hovered.emit(row)

    def _preview(self, row: int) -> None:
        if not 0 <= row < len(self.paths):
            self._loads.cancel("hover")  # a thumbnail still loading must not pop up after the mouse left
            self.hover.hide()
            return
        path = self.paths[row]
        self.hover.setToolTip(path)
        self._loads.start("hover", plain(lambda: load_qimage(path, HOVER_SIZE)), on_result=self._show_hover)

    def _show_hover(self, image: QImage) -> None:
        self.hover.setPixmap(QPixmap.fromImage(image))
        self.hover.setFixedSize(QSize(image.width() + 8, image.height() + 8))
        self.hover.move(self.width() - self.hover.width() - 8, 8)
        self.hover.show()
        self.hover.raise_()

    def _on_rect(self, x0: float, y0: float, x1: float, y1: float) -> None:
        from simclr_studio.projection import points_in_rect

        rows = points_in_rect(self.coords, x0, y0, x1, y1)
        self.selection_made.emit(rows[self.visible()[rows]], "rectangle")

    def _on_lasso(self, polygon: np.ndarray) -> None:
        from simclr_studio.projection import points_in_polygon

        rows = points_in_polygon(self.coords, polygon)
        self.selection_made.emit(rows[self.visible()[rows]], "lasso")
