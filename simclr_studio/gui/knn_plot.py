"""What the Train tab's kNN plot shows: accuracy per epoch, the raw-pixel baseline under the same
protocol as a dashed line, and the protocol's k in the title."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt

from simclr_studio.history import RunHistory

KNN_TITLE = "kNN accuracy (leave-one-out{})"
BASELINE_GREY = (128, 128, 128)  # readable on the light and the dark background


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
        self._shown: tuple = ((), ())
        self._baseline_shown: float | None = None

    def update(self, h: RunHistory) -> None:
        """Redraws only what changed (once an epoch at most): leave that plot's paint cache alone otherwise."""
        knn = (tuple(h.knn_epochs), tuple(h.knn_accuracy))
        if knn != self._shown:
            self._shown = knn
            self.curve.setData(np.asarray(knn[0], dtype=np.float64), np.asarray(knn[1], dtype=np.float64))
        baseline = h.baseline.knn_accuracy if h.baseline is not None else None
        if baseline != self._baseline_shown:
            self._baseline_shown = baseline
            self.baseline.setVisible(baseline is not None)
            if baseline is not None:  # after showing it: a hidden line's label does not follow its value
                self.baseline.setValue(baseline)
        title = KNN_TITLE.format(f", k={h.knn_k}" if h.knn_k else "")
        if title != self.plot.titleLabel.text:
            self.plot.setTitle(title)
