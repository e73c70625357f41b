"""The Runs tab: the table, rename, note, delete (its dialog and its refusal), overlaid curves, the
config differences, and a double-click opening a run in the Train tab."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_run
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QInputDialog, QMessageBox
from test_session_runs import synthetic_events, tiny_cfg

from simclr_studio.history import smooth_ema
from simclr_studio.run_lock import RunLock
from simclr_studio.session.runs import run_curves

NAME, STATUS, NOTE = 0, 9, 10  # columns


@pytest.fixture
def runs_root(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_run(root / "alpha", tiny_cfg(), synthetic_events(epochs=2, steps_per_epoch=5), checkpoint=True, age_s=600)
    write_run(root / "beta", tiny_cfg(batch_size=16, temperature=0.2),
              synthetic_events(epochs=3, steps_per_epoch=4, status="stopped", loss0=6.0), checkpoint=True, age_s=600)
    return root


@pytest.fixture
def panel(qtbot, tmp_path, runs_root):
    from simclr_studio.gui.app import create_app
    from simclr_studio.gui.runs_panel import RunsPanel

    create_app()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    widget = RunsPanel(lambda: runs_root, settings)
    qtbot.addWidget(widget)
    widget.show()  # showing it reads the runs
    wait_read(qtbot, widget)
    yield widget
    widget.cancel()


def wait_read(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: not panel.is_loading() and not panel.compare.is_loading(), timeout=10_000)


def cell(panel, name: str, column: int) -> str:
    for row in range(panel.table.rowCount()):
        if panel.table.item(row, NAME).text() == name:
            return panel.table.item(row, column).text()
    raise KeyError(name)


def names(panel) -> set[str]:
    return {panel.table.item(row, NAME).text() for row in range(panel.table.rowCount())}


def test_the_table_lists_the_runs_with_their_summaries(panel, runs_root):
    assert names(panel) == {"alpha", "beta"}
    assert cell(panel, "alpha", STATUS) == "finished" and cell(panel, "beta", STATUS) == "stopped"
    assert cell(panel, "beta", 5) == "3" and cell(panel, "alpha", 3) == "tiny-cnn" and cell(panel, "alpha", 4) == "16"
    assert cell(panel, "alpha", 6) == f"{5.0 - 0.1 * 10:.4f}" and cell(panel, "alpha", 7) == "0.400"


def test_add_run_folder(panel, qtbot, tmp_path, monkeypatch):
    other = write_run(tmp_path / "elsewhere" / "gamma", tiny_cfg(), synthetic_events(), checkpoint=False, age_s=600)
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warnings.append(a[2]))
    assert not panel.add_run_folder(tmp_path / "elsewhere")  # not a run
    assert warnings and "holds no run" in warnings[0]
    assert panel.add_run_folder(other)
    wait_read(qtbot, panel)
    assert names(panel) == {"alpha", "beta", "gamma"}
    assert panel.added_folders() == [str(other)]  # kept in the settings for the next start


def test_rename(panel, qtbot, runs_root, monkeypatch):
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warnings.append(a[2]))
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("beta", True))
    panel.select_run(runs_root / "alpha")
    panel.rename_button.click()
    assert warnings and "already exists" in warnings[0]
    assert (runs_root / "alpha").is_dir()
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("alpha-lr-0.1", True))
    panel.rename_button.click()
    wait_read(qtbot, panel)
    assert names(panel) == {"alpha-lr-0.1", "beta"}
    assert (runs_root / "alpha-lr-0.1" / "config.json").is_file() and not (runs_root / "alpha").exists()


def test_rename_refuses_a_training_run(panel, runs_root, monkeypatch):
    warnings = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warnings.append(a[2]))
    with RunLock(runs_root / "beta"):
        assert panel.rename(runs_root / "beta", "gamma") is None
    assert warnings and "is training" in warnings[0] and (runs_root / "beta").is_dir()


def test_note(panel, qtbot, runs_root, monkeypatch):
    monkeypatch.setattr(QInputDialog, "getMultiLineText", lambda *a, **k: ("warm-up too short\nretry", True))
    panel.select_run(runs_root / "beta")
    panel.note_button.click()
    wait_read(qtbot, panel)
    assert (runs_root / "beta" / "note.txt").read_text() == "warm-up too short\nretry\n"
    assert cell(panel, "beta", NOTE) == "warm-up too short · retry"


def test_delete_says_what_goes_and_asks_first(panel, qtbot, runs_root, monkeypatch):
    run = runs_root / "alpha"
    (run / "checkpoints" / "epoch_0002.pt").write_bytes(b"x" * 2000)
    asked = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or answer[0])
    panel.select_run(run)
    panel.delete_button.click()
    assert run.is_dir()  # "No": nothing goes
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    text = asked[0]
    assert str(run) in text and "4 files" in text and f"{size / 1024:.1f} KB" in text
    assert "2 checkpoints: last.pt, epoch_0002.pt" in text
    answer[0] = QMessageBox.StandardButton.Yes
    panel.delete_button.click()
    wait_read(qtbot, panel)
    assert not run.exists() and names(panel) == {"beta"}


def test_delete_refuses_a_training_run(panel, runs_root, monkeypatch):
    warnings, asked = [], []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warnings.append(a[2]))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.Yes)
    with RunLock(runs_root / "beta"):
        assert not panel.ask_delete(runs_root / "beta")
    assert warnings and "is training" in warnings[0] and not asked
    assert (runs_root / "beta" / "checkpoints" / "last.pt").is_file()


def test_a_training_run_shows_as_training(panel, qtbot, runs_root):
    with RunLock(runs_root / "beta"):
        panel.refresh()
        wait_read(qtbot, panel)
        assert cell(panel, "beta", STATUS) == "training"


def test_ticked_runs_overlay_their_curves(panel, qtbot, runs_root):
    alpha, beta = runs_root / "alpha", runs_root / "beta"
    panel.tick(alpha)
    panel.tick(beta)
    wait_read(qtbot, panel)
    compare = panel.compare
    loss = compare.drawn_curves(compare.loss_plot)
    assert set(loss) == {"alpha", "beta"}
    for path in (alpha, beta):
        curves = run_curves(path)
        x, y = loss[path.name]
        assert np.allclose(x, curves.x["step"]) and np.allclose(y, smooth_ema(curves.loss, 0.8))  # the Train tab's
    assert set(compare.drawn_curves(compare.knn_plot)) == {"alpha", "beta"}
    assert np.allclose(compare.drawn_curves(compare.lr_plot)["beta"][1], run_curves(beta).lr)

    compare.smoothing.setValue(0)
    assert np.allclose(compare.drawn_curves(compare.loss_plot)["alpha"][1], run_curves(alpha).loss)
    compare.x_axis.setCurrentIndex(compare.x_axis.findData("epoch"))
    x, _ = compare.drawn_curves(compare.loss_plot)["beta"]
    assert x[-1] == pytest.approx(3.0) and compare.loss_plot.getAxis("bottom").labelText == "epoch"
    compare.x_axis.setCurrentIndex(compare.x_axis.findData("images"))
    assert compare.drawn_curves(compare.loss_plot)["beta"][0][-1] == 12 * 16  # 12 steps of 16 images

    panel.tick(alpha, False)
    assert set(compare.drawn_curves(compare.loss_plot)) == {"beta"}


def test_the_settings_that_differ(panel, qtbot, runs_root):
    panel.tick(runs_root / "alpha")
    table = panel.compare.diff_table
    assert table.rowCount() == 0 and "tick two" in panel.compare.diff_label.text()
    panel.tick(runs_root / "beta")
    rows = {table.verticalHeaderItem(r).text(): [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())}
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())] == ["alpha", "beta"]
    assert rows == {"batch_size": ["8", "16"], "temperature": ["0.5", "0.2"]}


def test_double_click_opens_the_run_in_the_train_tab(qtbot, tmp_path, monkeypatch, explore_run):
    from simclr_studio.gui.app import build_window, create_app

    _, trained = explore_run
    root = tmp_path / "runs"
    shutil.copytree(trained, root / "trained", ignore=shutil.ignore_patterns("embeddings"))
    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(root))
    create_app()
    win = build_window(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.show()
    assert win.tabs.tabText(4) == "5 · Runs"
    win.tabs.setCurrentWidget(win.runs_panel)
    panel = win.runs_panel
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1 and not panel.is_loading(), timeout=10_000)
    assert cell(panel, "trained", STATUS) == "finished" and cell(panel, "trained", 5) == "1"
    rect = panel.table.visualItemRect(panel.table.item(0, 1))
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # a double click's press
    qtbot.mouseDClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert win.tabs.currentWidget() is win.train_panel
    assert win.train_panel.current_run_dir() == root / "trained"
    panel.cancel()
