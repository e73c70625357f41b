"""pyqtgraph plots in the window's theme: background, axes and titles (the Train and Runs tabs' curves)."""

from __future__ import annotations

from collections.abc import Iterable

import pyqtgraph as pg

from simclr_studio.gui.theme import canvas_colour


def style_plots(canvas: pg.GraphicsLayoutWidget, plots: Iterable[pg.PlotItem], dark: bool) -> None:
    canvas.setBackground(canvas_colour(dark))
    axis_pen = pg.mkPen("#c8c8c8" if dark else "#444")
    for plot in plots:
        for name in ("left", "bottom"):
            plot.getAxis(name).setPen(axis_pen)
            plot.getAxis(name).setTextPen(axis_pen)
        plot.titleLabel.setText(plot.titleLabel.text, color="#e0e0e0" if dark else "#222")
