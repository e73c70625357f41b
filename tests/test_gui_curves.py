"""The Train tab's curves as TensorBoard users expect them: hover values, zoom and its reset,
CSV/PNG export, labelled log scale, and clean axes after New run."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from simclr_studio.events import EpochEvent, EvalEvent, RunStarted, StepEvent
from simclr_studio.gui.train_plots import TrainPlots
from simclr_studio.history import RunHistory


def history(steps=30, steps_per_epoch=10, total=60, loss=lambda n: 5.0 - 0.02 * n) -> RunHistory:
    h = RunHistory()
    h.add(RunStarted(run_dir="r", device="cpu", backbone="tiny-cnn", n_images=24, steps_per_epoch=steps_per_epoch,
                     total_steps=total, start_epoch=0, start_global_step=0, cached=True, labeled=True))
    for n in range(1, steps + 1):
        h.add(StepEvent(epoch=(n - 1) // steps_per_epoch, step=(n - 1) % steps_per_epoch, global_step=n,
                        total_steps=total, loss=loss(n), lr=0.001 * n, images_per_s=100.0 + n, eta_s=1.0))
        if n % steps_per_epoch == 0:
            e = n // steps_per_epoch - 1
            h.add(EpochEvent(epoch=e, loss=loss(n), seconds=1.0, images_per_s=100.0))
            h.add(EvalEvent(epoch=e, knn_accuracy=0.3 + 0.1 * e, n_images=24, k=5))
    return h


@pytest.fixture
def plots(qtbot):
    widget = TrainPlots()
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def scene_point(plot, x, y):
    return plot.getViewBox().mapViewToScene(QPointF(x, y))


def view_point(plots, plot, x, y) -> QPoint:
    return plots.plots.mapFromScene(scene_point(plot, x, y))


def y_labels(axis) -> list[str]:
    lo, hi = axis.range
    out = []
    for spacing, values in axis.tickValues(lo, hi, axis.geometry().height()):
        out += axis.tickStrings(values, axis.autoSIPrefixScale, spacing)
    return out


# ---- 1. hover --------------------------------------------------------------------------------------
def test_hover_shows_the_values_under_the_cursor(plots):
    plots.show_history(history(), now=True)
    scene = plots.plots.scene()
    y = plots.loss_plot.viewRange()[1][0] + 0.01
    scene.sigMouseMoved.emit(scene_point(plots.loss_plot, 12.2, y))
    text = plots.readout.text()
    assert "step 12" in text and "epoch 2" in text and "loss 4.7600" in text and "lr 0.012" in text
    assert "smoothed" in text and "112 images/s" in text
    assert all(line.isVisible() and line.value() == 12 for line in plots.cursor_lines[:3])
    scene.sigMouseMoved.emit(scene_point(plots.knn_plot, 2.1, 0.5))
    assert plots.readout.text() == "epoch 2 · kNN accuracy 0.4000"
    scene.sigMouseMoved.emit(QPointF(-100, -100))  # off the plots
    assert plots.readout.text().strip() == "" and not any(line.isVisible() for line in plots.cursor_lines)


# ---- 2. zoom -----------------------------------------------------------------------------------------
def wheel(plots, plot, x, y, delta=480):
    pos = QPointF(view_point(plots, plot, x, y))
    viewport = plots.plots.viewport()
    event = QWheelEvent(pos, QPointF(viewport.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, delta),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(viewport, event)


def test_wheel_zoom_survives_new_data_and_double_click_resets_it(plots, qtbot):
    plots.show_history(history(steps=30), now=True)
    full_x, full_y = plots.loss_plot.viewRange()
    wheel(plots, plots.loss_plot, 15, 4.7)
    zoomed = plots.loss_plot.viewRange()
    assert zoomed[0][1] - zoomed[0][0] < 0.8 * (full_x[1] - full_x[0])
    plots.show_history(history(steps=40), now=True)  # training goes on: the user's zoom stays
    assert sum(plots.loss_plot.viewRange(), []) == pytest.approx(sum(zoomed, []))
    pos = view_point(plots, plots.loss_plot, 15, 4.7)
    qtbot.mouseDClick(plots.plots.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(plots.plots.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    x, y = plots.loss_plot.viewRange()
    assert x[0] <= 0 and x[1] >= 60  # the whole planned run again
    assert y[0] < 5.0 - 0.02 * 40 and y[1] > 5.0 - 0.02 and y[1] - y[0] < 1.5  # fitted to the data


def test_reset_zoom_button(plots):
    plots.show_history(history(), now=True)
    knn_y = plots.knn_plot.viewRange()[1]
    wheel(plots, plots.knn_plot, 2, 0.5)
    wheel(plots, plots.lr_plot, 15, 0.015)
    plots.show_history(history(), now=True)
    assert plots.knn_plot.viewRange()[1] != pytest.approx(knn_y)
    plots.reset_zoom_button.click()
    assert plots.knn_plot.viewRange()[1] == pytest.approx(knn_y) == [-0.04, 1.04]
    assert plots.knn_plot.viewRange()[0] == pytest.approx([0.5, 6.5])
    assert plots.lr_plot.viewRange()[0][1] >= 60


# ---- 3. export -------------------------------------------------------------------------------------
def test_csv_export_has_a_row_per_step_and_knn_per_epoch(plots, tmp_path, monkeypatch):
    plots.show_history(history(steps=20), now=True)
    path = tmp_path / "curves"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    plots.csv_button.click()
    rows = list(csv.DictReader(open(tmp_path / "curves.csv", encoding="utf-8")))
    assert len(rows) == 20
    assert list(rows[0]) == ["step", "epoch", "loss", "loss_smoothed", "lr", "images_per_s", "knn_accuracy"]
    assert rows[0]["step"] == "1" and rows[0]["epoch"] == "1" and float(rows[0]["loss"]) == pytest.approx(4.98)
    assert float(rows[0]["loss_smoothed"]) == pytest.approx(4.98)  # debiased EMA starts at the first value
    assert float(rows[11]["lr"]) == pytest.approx(0.012) and rows[11]["epoch"] == "2"
    assert [r["knn_accuracy"] for r in rows if r["knn_accuracy"]] == ["0.3", "0.4"]
    assert rows[9]["knn_accuracy"] == "0.3" and rows[19]["knn_accuracy"] == "0.4"


def test_png_export_asks_before_overwriting(plots, tmp_path, monkeypatch):
    plots.show_history(history(), now=True)
    path = tmp_path / "curves.png"
    path.write_bytes(b"keep me")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No)
    plots.png_button.click()
    assert asked and path.read_bytes() == b"keep me"
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    plots.png_button.click()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fresh = tmp_path / "new.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(fresh), ""))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: pytest.fail("asked about a new file"))
    plots.png_button.click()
    assert fresh.read_bytes()[:4] == b"\x89PNG"


# ---- 4. log scale ------------------------------------------------------------------------------------
def test_log_scale_keeps_y_labels_within_a_decade(plots):
    plots.show_history(history(loss=lambda n: 4.9 - 0.02 * n), now=True)  # 4.3 … 4.9: no 1…9 × 10ⁿ inside
    axis = plots.loss_plot.getAxis("left")
    plots.log_y.setChecked(True)
    labels = y_labels(axis)
    assert len(labels) >= 2
    assert all(4.2 <= float(text) <= 5.0 for text in labels)
    lo, hi = axis.range
    assert 10**lo < 4.3 and 10**hi > 4.88  # the range in log10 units, the data in view
    plots.show_history(history(loss=lambda n: 100.0 / n), now=True)  # 100 … 3.3: 1…9 × 10ⁿ ticks
    assert {"10", "20", "50"} <= set(y_labels(axis))


# ---- 5. new run --------------------------------------------------------------------------------------
def test_new_run_resets_every_axis(plots):
    old = history(steps=50, steps_per_epoch=10, total=50, loss=lambda n: 2.0 + 6.0 * (n % 2))  # loss 2 … 8
    plots.show_history(old, now=True)
    plots.reset()
    new = history(steps=4, steps_per_epoch=4, total=8, loss=lambda n: 3.0 + n % 2 * 3.0)  # loss 3 … 6, 2 epochs
    new.knn_epochs.clear()
    new.knn_accuracy.clear()
    plots.show_history(new, now=True)
    x, y = plots.loss_plot.viewRange()
    assert x[1] < 10
    assert y[0] > 2.5 and y[1] < 6.5  # fitted to the new run, not the old run's 2 … 8
    kx = plots.knn_plot.viewRange()[0]
    assert kx[0] >= 0 and kx[1] <= 3  # no negative epochs, the new run's two
