"""What the Train tab's kNN plot shows: accuracy per epoch, the raw-pixel baseline under the same
protocol as a dashed line, and the protocol's k in the title."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from simclr_studio.history import RunHistory

KNN_TITLE = "kNN accuracy (leave-one-out{})"
BASELINE_GREY = (128, 128, 128)  # readable on the light and the dark background


def planned_epochs(h: RunHistory) -> int:
    """The run's epochs as planned so far (0 before it starts)."""
    if h.started is None or h.started.steps_per_epoch <= 0:
        return 0
    return math.ceil(h.total_steps / h.started.steps_per_epoch)


class KnnPlot:
    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        plot.setTitle(KNN_TITLE.format(""))
        self.curve = plot.plot(pen=pg.mkPen((142, 68, 173), width=2), symbol="o", symbolSize=6,
                               symbolBrush=(142, 68, 173))
        # The number every epoch's kNN has to beat; it does not take part in the plot's auto-range.
        self.baseline = pg.InfiniteLine(angle=0, movable=False, label="raw pixels {value:.3f}",
                                        pen=pg.mkPen(BASELINE_GREY, width=1, style=Qt.PenStyle.DashLine),
                                        labelOpts={"position": 0.02, "anchors": [(0, 1), (0, 1)],
                                                   "color": BASELINE_GREY})
        plot.addItem(self.baseline, ignoreBounds=True)
        self.baseline.hide()
        self.zoomed = False  # the user zoomed or panned: the axes stay where they put them
        self._shown: tuple = ((), ())
        self._baseline_shown: float | None = None
        self._x_span = 0
        self.reset()

    def reset(self) -> None:
        """Epoch 1 and accuracy 0..1 until a run says more (auto-range on no data keeps the old run's)."""
        self.zoomed = False
        self._x_span = 0
        self.plot.enableAutoRange(x=False, y=False)
        self.plot.setYRange(0, 1, padding=0.04)  # a fixed padding: the default one depends on the size
        self._fit_x(1)

    def _fit_x(self, span: int) -> None:
        # The epoch axis spans the planned run, like the step axes: set once per plan, not per point.
        if span != self._x_span:
            self._x_span = span
            self.plot.setXRange(0.5, span + 0.5, padding=0)  # epochs count from 1: no negative ones

    def update(self, h: RunHistory) -> None:
        """Redraws only what changed (once an epoch at most): leave that plot's paint cache alone otherwise."""
        knn = (tuple(h.knn_epochs), tuple(h.knn_accuracy))
        if knn != self._shown:
            self._shown = knn
            self.curve.setData(np.asarray(knn[0], dtype=np.float64), np.asarray(knn[1], dtype=np.float64))
        if not self.zoomed:
            self._fit_x(max(1, planned_epochs(h), *h.knn_epochs))
        baseline = h.baseline.knn_accuracy if h.baseline is not None else None
        if baseline != self._baseline_shown:
            self._baseline_shown = baseline
            self.baseline.setVisible(baseline is not None)
            if baseline is not None:  # after showing it: a hidden line's label does not follow its value
                self.baseline.setValue(baseline)
        title = KNN_TITLE.format(f", k={h.knn_k}" if h.knn_k else "")
        if title != self.plot.titleLabel.text:
            self.plot.setTitle(title)

    def readout(self, h: RunHistory, epoch: float) -> str:
        """The measurement nearest ``epoch``, in words (empty before the first)."""
        if not h.knn_epochs:
            return ""
        i = int(np.argmin(np.abs(np.asarray(h.knn_epochs, dtype=np.float64) - epoch)))
        text = f"epoch {h.knn_epochs[i]} · kNN accuracy {h.knn_accuracy[i]:.4f}"
        if h.baseline is not None:
            text += f" (raw pixels {h.baseline.knn_accuracy:.4f})"
        return text
