"""The Train tab sees the machine and the time (offscreen Qt): the run's estimated time and RAM cache
before Start, following the settings and measured off the GUI thread; CPU and RAM while a tiny run
trains; and a desktop notification when a run completes or fails."""

from __future__ import annotations

import re
import threading

import pytest

pytest.importorskip("PySide6")
from conftest import FakeChild, make_image_folder
from PySide6.QtWidgets import QMainWindow

import simclr_studio.gui.run_length as run_length
from simclr_studio.gui import notifications
from simclr_studio.gui.train_panel import TrainPanel
from simclr_studio.session.estimate import StepSpeed, speed_key
from simclr_studio.session.train import TrainSession


@pytest.fixture
def panel(qtbot, tmp_path):
    window = QMainWindow()
    tab = TrainPanel(TrainSession(), tmp_path / "runs")
    window.setCentralWidget(tab)
    qtbot.addWidget(window)
    window.show()
    yield tab
    tab.estimate.clear()
    tab.machine.follow(False)


def tiny(panel, epochs=2, batch=8):
    form = panel.form
    form.backbone.setCurrentText("tiny-cnn")
    form.image_size.setValue(16)
    form.batch_size.setValue(batch)
    form.optimizer.setCurrentText("adamw")
    form.length.set_minutes_mode(False)
    form.epochs.setValue(epochs)
    form.device.setCurrentIndex(form.device.findText("cpu"))


def test_the_estimate_is_measured_in_the_background_and_follows_the_settings(panel, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=3, per_class=8)  # 24 images
    assert panel.estimate.isHidden()  # no folder: nothing to estimate
    panel.set_data(str(folder), 24, 20)
    tiny(panel, epochs=2)
    estimate = panel.estimate
    assert estimate.isVisibleTo(panel) and "6 steps (2 epochs)" in estimate.text()  # 24 images / 8, twice
    assert "decoded once into RAM" in estimate.text()
    key = speed_key(panel.config())
    qtbot.waitUntil(lambda: key in estimate.speeds, timeout=60_000)  # the engine's own step, timed for real
    assert isinstance(estimate.speeds[key], StepSpeed) and "Takes " in estimate.text()
    assert "measuring" not in estimate.text()
    # The length changes the estimate at once, without measuring again.
    panel.form.epochs.setValue(4)
    assert "12 steps (4 epochs)" in estimate.text() and not estimate.measuring()
    panel.form.length.set_minutes_mode(True)
    panel.form.minutes.setValue(5)
    assert re.match(r"Takes 5 min \(the time budget\): (about|roughly) [\d,]+ steps", estimate.text())


def test_settings_that_change_the_speed_measure_again_off_the_gui_thread(panel, qtbot, tmp_path, monkeypatch):
    measured = []

    def fake(cfg, should_stop=None, **kw):
        measured.append((cfg.image_size, threading.current_thread() is threading.main_thread()))
        return StepSpeed(0.25, cfg.batch_size, False)

    monkeypatch.setattr(run_length, "measure_step_seconds", fake)
    folder = make_image_folder(tmp_path / "imgs", classes=3, per_class=8)
    panel.set_data(str(folder), 24, 20)
    tiny(panel, epochs=2)
    for size in (20, 24, 28):  # typed in quick succession: only the last settings are measured
        panel.form.image_size.setValue(size)
    assert "measuring" in panel.estimate.text()
    qtbot.waitUntil(lambda: "Takes about" in panel.estimate.text(), timeout=10_000)
    assert measured == [(28, False)]
    assert panel.estimate.text().startswith("Takes about 2 s: 6 steps (2 epochs)")  # 6 × 0.25 s
    panel.form.image_size.setValue(20)
    qtbot.waitUntil(lambda: len(measured) == 2, timeout=10_000)
    panel.form.image_size.setValue(28)  # measured before: shown at once
    assert panel.estimate.text().startswith("Takes about") and len(measured) == 2


@pytest.mark.slow  # trains a tiny run in a child process
def test_the_machine_line_shows_cpu_and_ram_while_a_run_trains_and_it_notifies(panel, qtbot, tmp_path, monkeypatch):
    told = []
    monkeypatch.setattr(notifications, "notify", lambda title, message, error=False: told.append((title, error)))
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=4)  # 8 images
    panel.set_data(str(folder), 8, 20)
    tiny(panel, epochs=3, batch=4)
    assert panel.machine.isHidden()
    panel.start_button.click()
    assert panel.session.is_running() and panel.estimate.isHidden() and panel.machine.isVisibleTo(panel)
    qtbot.waitUntil(lambda: panel.machine.last is not None and panel.machine.last.process_rss is not None,
                    timeout=60_000)
    text = panel.machine.text()
    assert text.startswith("CPU ") and " % · RAM " in text and "training " in text
    qtbot.waitUntil(lambda: not panel.session.is_running(), timeout=120_000)
    assert panel.session.history.finished is not None and panel.session.history.finished.status == "completed"
    assert panel.machine.isHidden() and not panel.machine.is_following()
    assert told == [(f"Training complete: {panel.session.run_dir.name}", False)]


@pytest.mark.parametrize("status, expected", [("completed", [False]), ("failed", [True]), ("stopped", [])])
def test_a_notification_is_asked_for_when_a_run_completes_or_fails(panel, tmp_path, monkeypatch, status, expected):
    import simclr_studio.session.train as train_session

    told = []
    monkeypatch.setattr(notifications, "notify", lambda title, message, error=False: told.append(error))
    monkeypatch.setattr(train_session, "ChildRun", FakeChild)
    monkeypatch.setattr(FakeChild, "status", status, raising=False)
    monkeypatch.setattr(FakeChild, "__init__", lambda self, kind, run_dir, *args: setattr(self, "kind", kind))
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=4)
    panel.set_data(str(folder), 8, 20)
    tiny(panel, batch=4)
    panel.start_button.click()  # FakeChild ends at once: the next poll says how
    assert told == expected


def test_without_a_system_tray_a_notification_does_nothing(qtbot, monkeypatch):
    from PySide6.QtWidgets import QSystemTrayIcon

    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: False))
    monkeypatch.setattr(notifications, "_tray", None)
    assert notifications.notify("Training complete", "done") is False and notifications._tray is None
    shown = []
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))
    monkeypatch.setattr(QSystemTrayIcon, "showMessage", lambda self, *args: shown.append(args[:2]))
    assert notifications.notify("Training complete", "done") is True and shown == [("Training complete", "done")]
    notifications._tray.hide()
