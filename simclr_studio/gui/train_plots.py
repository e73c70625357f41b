"""The Train tab's live curves: loss (raw and smoothed), learning rate, throughput and kNN accuracy.

Training runs in another process; these plots share the window's thread with everything else, so
every choice below keeps a redraw cheap (measured with benchmarks/gui_latency.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.export import write_csv
from simclr_studio.gui.knn_plot import KnnPlot
from simclr_studio.gui.plot_style import style_plots
from simclr_studio.history import RunHistory, smooth_ema

# Text and progress follow events at ~15 Hz; the curves redraw at most 10 times a second.
PLOT_INTERVAL_S = 0.1
LEFT_AXIS_WIDTH = 56  # px: room for tick labels such as "0.0003" or "1.2e+03"


class LogAxis(pg.AxisItem):
    """pyqtgraph's log axis labels only 1…9 × 10ⁿ: a loss spanning less than that (4.1 to 4.9) got no
    label at all. Within a decade this one labels round linear values, placed at their log10."""

    def logTickValues(self, minVal, maxVal, size, stdTicks):  # noqa: N802, N803 (pyqtgraph's names)
        if maxVal - minVal >= 1:  # a decade or more: pyqtgraph's 10ⁿ ticks read well
            return super().logTickValues(minVal, maxVal, size, stdTicks)
        lo, hi = 10.0 ** minVal, 10.0 ** maxVal
        raw = (hi - lo) / max(2, int(size / 40))  # about one label per 40 px
        scale = 10.0 ** math.floor(math.log10(raw))
        step = next(m * scale for m in (1, 2, 5, 10) if m * scale >= raw)
        values = np.arange(math.ceil(lo / step) * step, hi, step)
        return [(None, list(np.log10(values[values > 0])))]

    def logTickStrings(self, values, scale, spacing):  # noqa: N802
        return [f"{10.0 ** v * scale:.4g}" for v in values]


class TrainPlots(QWidget):
    """Draws a RunHistory: :meth:`show_history` at every change (throttled), :meth:`draw` at once."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.history = RunHistory()
        self._last_draw = 0.0
        self._smoothed = np.zeros(0)
        self._x_total = 0  # the step axes' span: the run's (planned) total steps
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.draw)

        pg.setConfigOptions(antialias=False)  # antialiased curves cost ~10× more to draw (raster engine)
        self.plots = pg.GraphicsLayoutWidget()
        self.loss_plot = self.plots.addPlot(row=0, col=0, title="Loss", axisItems={"left": LogAxis("left")})
        self.lr_plot = self.plots.addPlot(row=0, col=1, title="Learning rate")
        self.speed_plot = self.plots.addPlot(row=1, col=0, title="Throughput (images/s)")
        self.knn_plot = self.plots.addPlot(row=1, col=1, title="kNN accuracy")
        self.step_plots = (self.loss_plot, self.lr_plot, self.speed_plot)
        for plot in self.step_plots:
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
            # No grid on the curves that redraw every step: a grid is a plot-sized translucent layer,
            # and Qt blends such large images on its own thread pool, waking threads that then take
            # the CPU from training (3× the context switches, measured). The kNN plot keeps its grid.
            plot.setLabel("bottom", "step")
        self.knn_plot.showGrid(x=True, y=True, alpha=0.15)
        for plot in (*self.step_plots, self.knn_plot):
            for name in ("left", "bottom"):
                # Axes (tick labels and grid) are the costly part of a redraw: cache them as pixmaps,
                # redrawn only when their range changes (8× cheaper redraws during training).
                plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            # A fixed tick-label width: otherwise a y range whose labels are wider or narrower re-lays
            # out all four plots, which throws away every cached axis.
            plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        self.knn_plot.setLabel("bottom", "epoch")
        # One-pixel opaque pens: Qt's raster engine draws them on its fast line path; wider or
        # translucent pens cost several times more per redraw. The raw loss colour is set per theme.
        self.loss_raw = self.loss_plot.plot(name="raw")
        self.loss_smooth = self.loss_plot.plot(pen=pg.mkPen((40, 110, 220), width=1), name="smoothed")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen((230, 126, 34), width=1))
        self.speed_curve = self.speed_plot.plot(pen=pg.mkPen((39, 174, 96), width=1))
        self.knn = KnnPlot(self.knn_plot)  # its curve, the raw-pixel baseline and k in the title
        self.knn_curve, self.knn_baseline = self.knn.curve, self.knn.baseline
        self._zoomed: set[pg.PlotItem] = set()  # zoomed or panned by hand: draw() leaves their ranges alone
        # Hover: one vertical line at the step under the cursor in every step plot, its values in words.
        self.cursor_lines = []
        for plot in (*self.step_plots, self.knn_plot):
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((128, 128, 128), width=1))
            line.hide()
            plot.addItem(line, ignoreBounds=True)
            self.cursor_lines.append(line)
            plot.getViewBox().sigRangeChangedManually.connect(lambda _mask, p=plot: self._zoomed.add(p))
        scene = self.plots.scene()
        scene.sigMouseMoved.connect(self._hover)
        scene.sigMouseClicked.connect(self._clicked)

        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setValue(80)
        self.smoothing.setMaximumWidth(200)
        self.smoothing.valueChanged.connect(self.draw)
        self.smoothing_label = QLabel("0.80")
        self.log_y = QCheckBox("Log scale")
        self.log_y.toggled.connect(self._set_log_y)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Loss smoothing"))
        bar.addWidget(self.smoothing)
        bar.addWidget(self.smoothing_label)
        bar.addSpacing(16)
        bar.addWidget(self.log_y)
        bar.addSpacing(16)
        self.reset_zoom_button = QPushButton("Reset zoom")
        self.reset_zoom_button.setToolTip("Back to the whole run (or double-click a plot)")
        self.reset_zoom_button.clicked.connect(lambda: self.reset_zoom())
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self._export("CSV", "CSV files (*.csv)", ".csv", self.write_csv))
        self.png_button = QPushButton("Save PNG…")
        self.png_button.clicked.connect(lambda: self._export("PNG", "PNG images (*.png)", ".png", self.write_png))
        for button in (self.reset_zoom_button, self.csv_button, self.png_button):
            bar.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        # The hover readout, one line under the bar; Ignored width so its text never re-lays out the plots.
        self.readout = QLabel(" ")
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        layout.addWidget(self.readout)
        layout.addWidget(self.plots, 1)

    def apply_theme(self, dark: bool) -> None:
        style_plots(self.plots, (*self.step_plots, self.knn_plot), dark)
        self.loss_raw.setPen(pg.mkPen((58, 78, 110) if dark else (180, 200, 238), width=1))  # faint, not see-through

    def reset(self) -> None:
        """A new run: every axis follows its data again (the step axes until it plans its length)."""
        self._zoomed.clear()
        for plot in self.step_plots:
            plot.enableAutoRange(x=True, y=True)
        self.knn.reset()
        self._x_total = 0
        self._hide_cursor()

    def reset_zoom(self, plots: tuple | None = None) -> None:
        """Undo the user's zoom and pan (all plots, or ``plots``): back to the ranges draw() keeps."""
        for plot in plots or (*self.step_plots, self.knn_plot):
            self._zoomed.discard(plot)
            if plot is self.knn_plot:
                self.knn.reset()
            else:
                plot.enableAutoRange(y=True)
                if self._x_total:
                    plot.setXRange(0, max(1, self._x_total), padding=0.02)
                else:
                    plot.enableAutoRange(x=True)
        self.draw()

    def show_history(self, history: RunHistory, now: bool = False) -> None:
        """Draw ``history`` within PLOT_INTERVAL_S (``now``: at once, e.g. a run's last events)."""
        self.history = history
        labeled = history.started is None or history.started.labeled
        if self.knn_plot.isVisible() != labeled:  # only on change: it re-lays out every plot
            self.knn_plot.setVisible(labeled)  # kNN needs class folders
        wait = PLOT_INTERVAL_S - (time.monotonic() - self._last_draw)
        if now or wait <= 0:
            self.draw()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def draw(self) -> None:
        self._timer.stop()
        self._last_draw = time.monotonic()
        h = self.history
        weight = self.smoothing.value() / 100
        self.smoothing_label.setText(f"{weight:.2f}")
        steps = np.asarray(h.steps, dtype=np.float64)
        loss = np.asarray(h.loss, dtype=np.float64)
        lr = np.asarray(h.lr, dtype=np.float64)
        speed = np.asarray(h.throughput, dtype=np.float64)
        self.loss_raw.setData(steps, loss)
        self._smoothed = smooth_ema(loss, weight)  # kept for the hover readout
        self.loss_smooth.setData(steps, self._smoothed)
        self.lr_curve.setData(steps, lr)
        self.speed_curve.setData(steps, speed)
        if h.total_steps and h.total_steps != self._x_total:
            # The step axis spans the whole (planned) run: it stays put (and cached) until the plan changes.
            self._x_total = h.total_steps
            for plot in self.step_plots:
                if plot not in self._zoomed:
                    plot.enableAutoRange(x=False)
                    plot.setXRange(0, max(1, h.total_steps), padding=0.02)
        for plot, values in ((self.loss_plot, loss), (self.lr_plot, lr), (self.speed_plot, speed)):
            if plot not in self._zoomed:
                fit_y(plot, values)
        self.knn.zoomed = self.knn_plot in self._zoomed
        self.knn.update(h)

    def _set_log_y(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self._zoomed.discard(self.loss_plot)  # a zoomed range in the other scale's units means nothing
        self.draw()

    # ---- hover, double-click ----------------------------------------------------------------------
    def _plot_at(self, pos: QPointF) -> pg.PlotItem | None:
        for plot in (*self.step_plots, self.knn_plot):
            if plot.isVisible() and plot.getViewBox().sceneBoundingRect().contains(pos):
                return plot
        return None

    def _hide_cursor(self) -> None:
        for line in self.cursor_lines:
            line.hide()
        self.readout.setText(" ")

    def _hover(self, pos: QPointF) -> None:
        """The values under the cursor: a line at the nearest step (or epoch) and its values in words."""
        plot = self._plot_at(pos)
        h = self.history
        if plot is None:
            self._hide_cursor()
            return
        x = plot.getViewBox().mapSceneToView(pos).x()
        if plot is self.knn_plot:
            text = self.knn.readout(h, x)
            at = h.knn_epochs[int(np.argmin(np.abs(np.asarray(h.knn_epochs) - x)))] if text else None
            lines = self.cursor_lines[-1:]
        else:
            i = nearest_index(h.steps, x)
            smoothed = float(self._smoothed[i]) if i is not None and i < self._smoothed.size else math.nan
            text, at = (step_readout(h, i, smoothed), h.steps[i]) if i is not None else ("", None)
            lines = self.cursor_lines[:-1]
        for line in self.cursor_lines:
            line.setVisible(line in lines and at is not None)
        if at is not None:
            for line in lines:
                line.setValue(at)
        self.readout.setText(text or " ")

    def _clicked(self, event) -> None:
        plot = self._plot_at(event.scenePos())
        if event.double() and plot is not None:
            self.reset_zoom((plot,))

    # ---- export ---------------------------------------------------------------------------------------
    def _export(self, what: str, filters: str, suffix: str, write) -> str | None:
        """Ask where; an existing file is replaced only when the user says so (our question, not the dialog's)."""
        path, _ = QFileDialog.getSaveFileName(self, f"Export the curves as {what}", "", filters,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return None
        if not path.lower().endswith(suffix):
            path += suffix
        if Path(path).exists():
            answer = QMessageBox.question(self, "Replace file?", f"{path} already exists. Replace it?",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return None
        try:
            write(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"Cannot write {path}: {exc}")
            return None
        return path

    def write_csv(self, path: str | Path) -> None:
        write_history_csv(self.history, path, self.smoothing.value() / 100)

    def write_png(self, path: str | Path) -> None:
        if not self.plots.grab().save(str(path), "PNG"):
            raise OSError("the image could not be written")


def fit_y(plot: pg.PlotItem, values: np.ndarray) -> None:
    """Y range with hysteresis: it changes only when the data leaves it or fills under a third of it,
    so the (cached) axis is not redrawn on every update, as plain auto-range would."""
    log = plot.getAxis("left").logMode
    finite = values[np.isfinite(values) & ((values > 0) if log else True)]
    if finite.size == 0:
        plot.enableAutoRange(y=True)
        return
    data = np.log10(finite) if log else finite
    lo, hi = float(data.min()), float(data.max())
    span = max(hi - lo, abs(hi) * 1e-3, 1e-12)
    (cur_lo, cur_hi) = plot.getViewBox().viewRange()[1]
    if plot.getViewBox().autoRangeEnabled()[1] or lo < cur_lo or hi > cur_hi or (cur_hi - cur_lo) > 3 * span:
        plot.enableAutoRange(y=False)
        plot.setYRange(lo - 0.15 * span, hi + 0.15 * span, padding=0)


def nearest_index(steps: list[int], x: float) -> int | None:
    """Index of the step nearest ``x`` (steps ascend), None when there are none."""
    if not steps:
        return None
    i = int(np.searchsorted(steps, x))
    if i == len(steps) or (i > 0 and x - steps[i - 1] < steps[i] - x):
        i -= 1
    return i


def step_epoch(h: RunHistory, step: int) -> int | None:
    """The epoch (1-based) of a global step, from the run's steps per epoch; None when unknown."""
    spe = h.started.steps_per_epoch if h.started is not None else 0
    return (step - 1) // spe + 1 if spe > 0 else None


def step_epochs(h: RunHistory) -> list[int | None]:
    return [step_epoch(h, s) for s in h.steps]


def step_readout(h: RunHistory, i: int, smoothed: float) -> str:
    epoch = step_epoch(h, h.steps[i])
    return (f"step {h.steps[i]:,}" + (f" · epoch {epoch}" if epoch else "") + f" · loss {h.loss[i]:.4f}"
            f" · smoothed {smoothed:.4f} · lr {h.lr[i]:.3g} · {h.throughput[i]:,.0f} images/s")


def write_history_csv(h: RunHistory, path: str | Path, weight: float) -> None:
    """One row per step; an epoch's kNN accuracy on its last step's row (blank elsewhere)."""
    epochs = step_epochs(h)
    knn = dict(zip(h.knn_epochs, h.knn_accuracy, strict=False))
    last_of_epoch = {e: i for i, e in enumerate(epochs)}  # later rows overwrite: each epoch's last row
    knn_rows = {last_of_epoch[e]: acc for e, acc in knn.items() if e in last_of_epoch}
    smoothed = smooth_ema(np.asarray(h.loss, dtype=np.float64), weight)
    rows = ([step, "" if epochs[i] is None else epochs[i], repr(h.loss[i]), repr(float(smoothed[i])), repr(h.lr[i]),
             repr(h.throughput[i]), repr(knn_rows[i]) if i in knn_rows else ""] for i, step in enumerate(h.steps))
    # The user already agreed to replace an existing file (TrainPlots._export asks).
    write_csv(path, ["step", "epoch", "loss", "loss_smoothed", "lr", "images_per_s", "knn_accuracy"], rows,
              overwrite=True)
