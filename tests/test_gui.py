"""The desktop app, driven as a person would (offscreen Qt): drop a folder, tweak the preview, train."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
from conftest import make_image_folder
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from simclr_studio.config import RunConfig
from simclr_studio.run_folder import RunFolder
from simclr_studio.train import Trainer


def drop_folder(win, folder: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    win.dropEvent(event)


def load(win, qtbot, folder: Path) -> None:
    drop_folder(win, folder)
    qtbot.waitUntil(lambda: win.scan is not None and win.scan.root == str(folder), timeout=10_000)


def ended(panel) -> bool:
    """The run has ended and the window has shown its last events."""
    return not panel.session.is_running() and panel.session.history.finished is not None


def small_settings(panel, epochs=2):
    panel.form.image_size.setValue(16)
    panel.form.batch_size.setValue(8)
    panel.form.length.set_minutes_mode(False)  # a fixed number of epochs, not the default time budget
    panel.form.epochs.setValue(epochs)
    panel.form.backbone.setCurrentText("small-cnn")
    panel.form.optimizer.setCurrentText("sgd")
    panel.form.device.setCurrentText("cpu")


def test_dropping_a_folder_loads_it(window, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=3, per_class=5)
    (folder / "class_0" / "broken.png").write_bytes(b"not really a png")
    load(window, qtbot, folder)
    panel = window.data_panel
    assert panel.stack.currentIndex() == 2
    assert "15 images" in panel.summary.text() and "3 classes" in panel.summary.text()
    assert panel.classes.rowCount() == 3 and panel.classes.item(0, 0).text() == "class_0"
    assert panel.skipped.rowCount() == 1 and "broken.png" in panel.skipped.item(0, 0).text()
    assert panel.model.rowCount() == 15
    # Thumbnails load lazily in the background and replace the placeholder.
    index = panel.model.index(0)
    panel.model.data(index, Qt.ItemDataRole.DecorationRole)
    qtbot.waitUntil(lambda: 0 in panel.model.cache, timeout=10_000)
    assert panel.model.cache[0].width() > 0
    # The train form now points at this folder with suggested settings and a fresh run folder.
    assert window.train_session.data_dir == str(folder) and window.train_panel.start_button.isEnabled()
    assert str(folder) in window.recent_folders()


def test_dropping_a_file_or_missing_folder_is_harmless(window, qtbot, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    window.open_path(tmp_path / "file.txt")
    window.open_path(tmp_path / "missing")
    assert window.scan is None and "Not a folder" in window.statusBar().currentMessage()


def test_changing_a_control_updates_the_preview(window, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=4, size=32)
    load(window, qtbot, folder)
    aug = window.augment_panel
    qtbot.waitUntil(lambda: getattr(aug, "preview_count", 0) >= 1, timeout=10_000)
    before = aug.cells[0][1].pixmap().toImage()
    count = aug.preview_count
    # Masking only: the first view must now show an erased box, and the preset follows.
    aug.preset.setCurrentText("Masking only")
    qtbot.waitUntil(lambda: aug.preview_count > count, timeout=10_000)
    assert aug.augment_config().mask_p == 1.0 and aug.augment_config().jitter_p == 0.0
    after = aug.cells[0][1].pixmap().toImage()
    assert after != before
    # A single control change marks the preset as custom and re-renders.
    count = aug.preview_count
    aug.controls["flip_p"].setValue(0.3)
    qtbot.waitUntil(lambda: aug.preview_count > count, timeout=10_000)
    assert aug.preset.currentText() == "Custom"
    # Re-roll draws new views.
    count = aug.preview_count
    before_reroll = aug.cells[0][1].pixmap().toImage()
    aug.reroll.click()
    qtbot.waitUntil(lambda: aug.preview_count > count, timeout=10_000)
    assert aug.seed == 1 and aug.cells[0][1].pixmap().toImage() != before_reroll
    # Training uses exactly what the panel shows.
    assert window.train_panel.config().augment == aug.augment_config()


@pytest.mark.slow  # trains end to end through the window
def test_training_streams_points_into_the_loss_plot_and_reopens(window, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=3, per_class=8)
    load(window, qtbot, folder)
    panel = window.train_panel
    small_settings(panel, epochs=2)
    panel.start_button.click()
    assert panel.session.is_running() and not panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: ended(panel), timeout=60_000)
    xs, ys = panel.plots.loss_raw.getData()
    assert len(xs) == 6 and np.all(np.isfinite(ys))  # 2 epochs × 3 steps
    assert len(panel.plots.knn_curve.getData()[0]) == 2
    assert panel.progress.value() == panel.progress.maximum() == 6
    assert "Epoch 2: loss" in panel.log.toPlainText()
    run_dir = Path(panel.form.run_dir_edit.text())
    assert RunFolder(run_dir).last_checkpoint.exists()

    # Reopening the run folder (as after a restart) restores config and curves, and offers to resume.
    panel.new_run()
    assert len(panel.plots.loss_raw.getData()[0] or []) == 0
    window.open_path(run_dir)
    assert panel.session.run_dir == run_dir and panel.start_button.text() == "Resume training"
    restored_x, restored_y = panel.plots.loss_raw.getData()
    assert np.array_equal(restored_x, xs) and np.allclose(restored_y, ys)
    assert panel.form.image_size.value() == 16 and panel.form.batch_size.value() == 8
    # Raising the epochs and resuming continues from the checkpoint.
    panel.form.epochs.setValue(3)
    panel.start_button.click()
    qtbot.waitUntil(lambda: not panel.session.is_running() and panel.session.history.finished is not None
                    and panel.session.history.finished.global_step == 9, timeout=60_000)
    assert list(panel.plots.loss_raw.getData()[0]) == list(range(1, 10))


@pytest.mark.slow  # trains end to end through the window
def test_pause_continue_and_stop(window, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=8)
    load(window, qtbot, folder)
    panel = window.train_panel
    small_settings(panel, epochs=500)
    panel.start_button.click()
    # Points reach the plot while the run is still going, not only at the end.
    qtbot.waitUntil(lambda: len(panel.plots.loss_raw.getData()[0] if panel.plots.loss_raw.getData()[0] is not None
                                else []) >= 2, timeout=30_000)
    assert panel.session.is_running()
    panel.pause_button.click()
    qtbot.waitUntil(lambda: panel.session.history.paused, timeout=30_000)
    assert panel.pause_button.text() == "Continue"
    steps = len(panel.session.history.steps)
    qtbot.wait(400)
    assert len(panel.session.history.steps) == steps  # nothing trains while paused
    panel.pause_button.click()
    qtbot.waitUntil(lambda: len(panel.session.history.steps) > steps, timeout=30_000)
    assert not panel.session.history.paused and panel.pause_button.text() == "Pause"
    panel.stop_button.click()
    qtbot.waitUntil(lambda: ended(panel), timeout=30_000)
    assert panel.session.history.finished.status == "stopped"
    assert "Checkpoint saved" in panel.log.toPlainText()
    assert panel.start_button.isEnabled()


def test_errors_show_in_the_window(window, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=3)
    load(window, qtbot, folder)
    panel = window.train_panel
    small_settings(panel)
    panel.form.batch_size.setValue(64)  # more than the 6 images: said under the field, Start waits
    assert panel.form.batch_note.isVisibleTo(panel) and not panel.start_button.isEnabled()
    panel.session.batch_problem = lambda *a: None  # past the form's check: the training process refuses it
    panel.form.batch_size.setValue(63)
    panel.start_button.click()
    qtbot.waitUntil(lambda: ended(panel), timeout=30_000)
    assert panel.error_banner.isVisible() and "batch size 63" in panel.error_banner.text()
    assert "set Batch size to 6 or fewer" in panel.error_banner.text()  # the app's words, not a flag
    assert panel.session.history.finished.status == "failed" and panel.start_button.isEnabled()


def test_following_a_run_written_by_another_process(window, qtbot, tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=2, per_class=8)
    cfg = RunConfig(data_dir=str(data), backbone="small-cnn", image_size=16, batch_size=8, epochs=400,
                    device="cpu", eval_every=0)
    trainer = Trainer(cfg, tmp_path / "cli-run")
    worker = threading.Thread(target=trainer.run)  # stands in for `simclr-studio train` elsewhere
    worker.start()
    try:
        deadline = time.time() + 30
        while not (tmp_path / "cli-run" / "config.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        window.open_path(tmp_path / "cli-run")
        panel = window.train_panel
        assert panel.session.state == "following" and not panel.start_button.isEnabled()
        assert panel.start_button.text() == "Training elsewhere"
        assert window.statusBar().currentMessage().startswith("Training elsewhere")
        qtbot.waitUntil(lambda: len(panel.session.history.steps) >= 3, timeout=30_000)
        seen = len(panel.session.history.steps)
        qtbot.waitUntil(lambda: len(panel.session.history.steps) > seen, timeout=30_000)  # it keeps following
        # The curve catches up with the history (redraws are throttled to 10 a second).
        qtbot.waitUntil(lambda: len(panel.plots.loss_raw.getData()[0]) >= seen + 1, timeout=5_000)
        trainer.stop()
        worker.join(60)
        # The finished event arrives: following ends and the run can be resumed from the window.
        qtbot.waitUntil(lambda: panel.session.state != "following", timeout=30_000)
        assert panel.start_button.isEnabled() and panel.start_button.text() == "Resume training"
    finally:
        trainer.stop()
        worker.join(60)


@pytest.mark.slow  # trains end to end through the window
def test_closing_during_training_asks_then_stops_cleanly(window, qtbot, tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=8)
    load(window, qtbot, folder)
    panel = window.train_panel
    small_settings(panel, epochs=500)
    panel.start_button.click()
    qtbot.waitUntil(lambda: len(panel.session.history.steps) >= 1, timeout=30_000)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No)
    assert not window.close()  # "No": the window stays and training goes on
    assert asked and panel.session.is_running()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    waiting = []  # while the run saves its checkpoint: a dialog says so, Pause and Stop are off
    stop_and_wait = panel.stop_and_wait
    monkeypatch.setattr(panel, "stop_and_wait", lambda: (waiting.append(
        (window.stopping_dialog.isVisible(), panel.pause_button.isEnabled(), panel.stop_button.isEnabled())),
        stop_and_wait())[1])
    assert window.close()
    assert waiting == [(True, False, False)] and not window.stopping_dialog.isVisible()
    assert not panel.session.is_running()
    from simclr_studio.events import read_events

    events = read_events(Path(panel.form.run_dir_edit.text()) / "events.jsonl")
    stops = [e for e in events if e.kind == "checkpoint" and e.reason == "stop"]
    assert len(stops) == 1 and events[-1].kind == "finished" and events[-1].status == "stopped"
    state = __import__("torch").load(RunFolder(panel.form.run_dir_edit.text()).last_checkpoint, weights_only=True)
    assert state["global_step"] == stops[0].global_step >= 1


def test_demo_and_recent_folders(window, qtbot, tmp_path):
    window.open_demo()
    qtbot.waitUntil(lambda: window.scan is not None, timeout=10_000)
    assert len(window.scan) == 600 and len(window.scan.classes) == 10
    assert window.recent_menu.isEnabled() and window.recent_menu.actions()[0].text().endswith("demo")


def test_a_newer_folder_wins_over_a_slower_scan(window, qtbot, tmp_path):
    first = make_image_folder(tmp_path / "first", classes=2, per_class=30)
    second = make_image_folder(tmp_path / "second", classes=2, per_class=3)
    window.open_path(first)
    window.open_path(second)  # before the first scan has reported
    qtbot.waitUntil(lambda: window.scan is not None, timeout=10_000)
    qtbot.wait(300)  # a late result of the first scan would arrive now
    assert window.scan.root == str(second) and window.data_panel.model.rowCount() == 6
    assert window.train_session.data_dir == str(second)


@pytest.mark.slow  # trains end to end through the window
def test_augment_settings_lock_while_a_run_owns_them(window, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=8)
    load(window, qtbot, folder)
    aug, panel = window.augment_panel, window.train_panel
    assert aug.controls["mask_p"].isEnabled() and not aug.locked_note.isVisibleTo(aug)
    small_settings(panel, epochs=500)
    panel.start_button.click()
    assert not aug.controls["mask_p"].isEnabled() and aug.locked_note.isVisibleTo(aug)
    qtbot.waitUntil(lambda: len(panel.session.history.steps) >= 1, timeout=30_000)  # past data preparation
    panel.stop_and_wait()
    qtbot.waitUntil(lambda: panel.start_button.text() == "Resume training", timeout=30_000)
    assert not aug.controls["mask_p"].isEnabled()  # the stopped run is open to resume
    panel.new_button.click()
    assert aug.controls["mask_p"].isEnabled() and not aug.locked_note.isVisibleTo(aug)


def test_cancelling_a_scan_keeps_what_was_open(window, qtbot, tmp_path):
    first = make_image_folder(tmp_path / "first", classes=2, per_class=3)
    load(window, qtbot, first)
    window.open_path(make_image_folder(tmp_path / "second", classes=2, per_class=40))
    assert window.data_panel.stack.currentIndex() == 1  # scanning
    window.data_panel.cancel_button.click()
    qtbot.wait(300)
    assert window.scan.root == str(first) and window.data_panel.stack.currentIndex() == 2
    assert window.data_panel.model.rowCount() == 6
