"""The Train tab's live curves: loss (raw and smoothed), learning rate, throughput and kNN accuracy.

Training runs in another process; these plots share the window's thread with everything else, so
every choice below keeps a redraw cheap (measured with benchmarks/gui_latency.py).
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QGraphicsItem, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from simclr_studio.gui.knn_plot import KnnPlot
from simclr_studio.history import RunHistory, smooth_ema

# Text and progress follow events at ~15 Hz; the curves redraw at most 10 times a second.
PLOT_INTERVAL_S = 0.1
LEFT_AXIS_WIDTH = 56  # px: room for tick labels such as "0.0003" or "1.2e+03"


class TrainPlots(QWidget):
    """Draws a RunHistory: :meth:`show_history` at every change (throttled), :meth:`draw` at once."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.history = RunHistory()
        self._last_draw = 0.0
        self._x_total = 0  # the step axes' span: the run's (planned) total steps
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.draw)

        pg.setConfigOptions(antialias=False)  # antialiased curves cost ~10× more to draw (raster engine)
        self.plots = pg.GraphicsLayoutWidget()
        self.loss_plot = self.plots.addPlot(row=0, col=0, title="Loss")
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
        self.knn_plot.setYRange(0, 1)
        # One-pixel opaque pens: Qt's raster engine draws them on its fast line path; wider or
        # translucent pens cost several times more per redraw. The raw loss colour is set per theme.
        self.loss_raw = self.loss_plot.plot(name="raw")
        self.loss_smooth = self.loss_plot.plot(pen=pg.mkPen((40, 110, 220), width=1), name="smoothed")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen((230, 126, 34), width=1))
        self.speed_curve = self.speed_plot.plot(pen=pg.mkPen((39, 174, 96), width=1))
        self.knn = KnnPlot(self.knn_plot)  # its curve, the raw-pixel baseline and k in the title
        self.knn_curve, self.knn_baseline = self.knn.curve, self.knn.baseline

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
        bar.addStretch()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.plots, 1)

    def apply_theme(self, dark: bool) -> None:
        self.plots.setBackground("#1e1f22" if dark else "w")
        axis_pen = pg.mkPen("#c8c8c8" if dark else "#444")
        self.loss_raw.setPen(pg.mkPen((58, 78, 110) if dark else (180, 200, 238), width=1))  # faint, not see-through
        for plot in (*self.step_plots, self.knn_plot):
            for name in ("left", "bottom"):
                plot.getAxis(name).setPen(axis_pen)
                plot.getAxis(name).setTextPen(axis_pen)
            plot.titleLabel.setText(plot.titleLabel.text, color="#e0e0e0" if dark else "#222")

    def reset(self) -> None:
        """A new run: the step axes follow its data again until it plans its length."""
        for plot in self.step_plots:
            plot.enableAutoRange(x=True)
        self._x_total = 0

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
        self.loss_smooth.setData(steps, smooth_ema(loss, weight))
        self.lr_curve.setData(steps, lr)
        self.speed_curve.setData(steps, speed)
        if h.total_steps and h.total_steps != self._x_total:
            # The step axis spans the whole (planned) run: it stays put (and cached) until the plan changes.
            self._x_total = h.total_steps
            for plot in self.step_plots:
                plot.enableAutoRange(x=False)
                plot.setXRange(0, max(1, h.total_steps), padding=0.02)
        for plot, values in ((self.loss_plot, loss), (self.lr_plot, lr), (self.speed_plot, speed)):
            fit_y(plot, values)
        self.knn.update(h)

    def _set_log_y(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self.draw()


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
