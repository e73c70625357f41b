"""The Runs tab's comparison: the ticked runs' curves overlaid (loss smoothed as on the Train tab, kNN,
learning rate) against a chosen x-axis, and a table of the settings that differ between them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.gui.plot_style import style_plots
from simclr_studio.gui.workers import Worker, plain
from simclr_studio.history import smooth_ema
from simclr_studio.run_folder import RunFolder
from simclr_studio.session.runs import X_AXES, RunCurves, config_differences, run_curves

# Distinct, readable on light and dark backgrounds (Tableau 10).
RUN_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
DEFAULT_SMOOTHING = 80  # the Train tab's default, in hundredths


def _file_stamp(path: Path) -> tuple[float, int]:
    try:
        st = os.stat(RunFolder(path).events_file)
    except OSError:
        return (0.0, 0)
    return (st.st_mtime, st.st_size)


class RunsCompare(QWidget):
    """Shows :meth:`set_runs`' runs: their curves are read in the background (kept until their events
    file changes), the config differences at once (configs are small)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.paths: list[Path] = []
        self.curves: dict[Path, RunCurves] = {}
        self._stamps: dict[Path, tuple[float, int]] = {}
        self.worker: Worker | None = None

        self.x_axis = QComboBox()
        for key, label in X_AXES.items():
            self.x_axis.addItem(label, key)
        self.x_axis.currentIndexChanged.connect(self.draw)
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setValue(DEFAULT_SMOOTHING)
        self.smoothing.setMaximumWidth(200)
        self.smoothing.valueChanged.connect(self.draw)
        self.smoothing_label = QLabel(f"{DEFAULT_SMOOTHING / 100:.2f}")
        self.status = QLabel("Tick runs in the table to compare them.")
        bar = QHBoxLayout()
        bar.addWidget(QLabel("X axis"))
        bar.addWidget(self.x_axis)
        bar.addSpacing(16)
        bar.addWidget(QLabel("Loss smoothing"))
        bar.addWidget(self.smoothing)
        bar.addWidget(self.smoothing_label)
        bar.addSpacing(16)
        bar.addWidget(self.status, 1)

        self.plots = pg.GraphicsLayoutWidget()
        self.loss_plot = self.plots.addPlot(row=0, col=0, title="Loss (smoothed)")
        self.knn_plot = self.plots.addPlot(row=0, col=1, title="kNN accuracy")
        self.lr_plot = self.plots.addPlot(row=0, col=2, title="Learning rate")
        self.loss_plot.addLegend(offset=(-10, 10))
        for plot in (self.loss_plot, self.knn_plot, self.lr_plot):
            plot.showGrid(x=True, y=True, alpha=0.15)
        self.knn_plot.setYRange(0, 1)

        self.diff_table = QTableWidget(0, 0)
        self.diff_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        diff_box = QWidget()
        diff_layout = QVBoxLayout(diff_box)
        diff_layout.setContentsMargins(0, 0, 0, 0)
        self.diff_label = QLabel("Settings that differ")
        diff_layout.addWidget(self.diff_label)
        diff_layout.addWidget(self.diff_table, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plots)
        split.addWidget(diff_box)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([900, 320])  # room for a few runs' values beside the plots
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(split, 1)

    # ---- what is compared ------------------------------------------------------------------------
    def set_runs(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.show_differences()
        stale = [p for p in self.paths if p not in self.curves or self._stamps.get(p) != _file_stamp(p)]
        if self.worker is not None:
            self.worker.cancel()
            self.worker = None
        if not stale:
            self.draw()
            return
        self.status.setText(f"Reading the curves of {len(stale)} run{'' if len(stale) == 1 else 's'}…")
        stamps = {p: _file_stamp(p) for p in stale}  # taken before reading: a later write reads again
        self.worker = Worker(plain(lambda: {p: run_curves(p) for p in stale}), "runs: curves", self,
                             on_result=lambda curves: self._on_curves(curves, stamps),
                             on_error=lambda message: self.status.setText(f"Cannot read the curves: {message}"))
        self.worker.start()

    def _on_curves(self, curves: dict[Path, RunCurves], stamps: dict[Path, tuple[float, int]]) -> None:
        self.curves.update(curves)
        self._stamps.update(stamps)
        self.worker = None
        self.draw()

    def is_loading(self) -> bool:
        return self.worker is not None

    # ---- drawing ----------------------------------------------------------------------------------
    def draw(self) -> None:
        weight = self.smoothing.value() / 100
        self.smoothing_label.setText(f"{weight:.2f}")
        axis = self.x_axis.currentData()
        for plot in (self.loss_plot, self.knn_plot, self.lr_plot):
            plot.clear()
            plot.setLabel("bottom", X_AXES[axis])
        shown = [p for p in self.paths if p in self.curves]
        for i, path in enumerate(shown):
            c = self.curves[path]
            pen = pg.mkPen(RUN_COLOURS[i % len(RUN_COLOURS)], width=1)
            self.loss_plot.plot(c.x[axis], smooth_ema(c.loss, weight), pen=pen, name=path.name)
            self.lr_plot.plot(c.x[axis], c.lr, pen=pen, name=path.name)
            if c.knn.size:
                self.knn_plot.plot(c.knn_x[axis], c.knn, pen=pen, symbol="o", symbolSize=5,
                                   symbolBrush=RUN_COLOURS[i % len(RUN_COLOURS)], name=path.name)
        if not self.paths:
            self.status.setText("Tick runs in the table to compare them.")
        elif self.worker is None:
            self.status.setText(f"{len(shown)} run{'' if len(shown) == 1 else 's'} overlaid")

    def drawn_curves(self, plot: pg.PlotItem) -> dict[str, tuple[Any, Any]]:
        """The curves a plot shows now, by run name: (x, y)."""
        return {item.name(): item.getData() for item in plot.listDataItems()}

    def show_differences(self) -> None:
        rows = config_differences(self.paths) if len(self.paths) >= 2 else []
        table = self.diff_table
        table.clear()
        table.setColumnCount(len(self.paths))
        table.setRowCount(len(rows))
        table.setHorizontalHeaderLabels([p.name for p in self.paths])
        table.setVerticalHeaderLabels([name for name, _ in rows])
        for r, (_, values) in enumerate(rows):
            for c, value in enumerate(values):
                table.setItem(r, c, QTableWidgetItem("—" if value is None else str(value)))
        if len(self.paths) < 2:
            self.diff_label.setText("Settings that differ: tick two runs or more")
        else:
            self.diff_label.setText(f"Settings that differ: {len(rows)}" if rows else "The settings are the same")
        table.resizeColumnsToContents()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.apply_theme(self.palette().window().color().lightness() < 128)  # the window's theme, light or dark

    def apply_theme(self, dark: bool) -> None:
        style_plots(self.plots, (self.loss_plot, self.knn_plot, self.lr_plot), dark)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.worker = None
