"""The Train tab's rough edges (offscreen Qt, no real training: FakeChild stands in for the process):
the batch size checked before Start in the app's words, lengthening a completed run, the status that
follows the run, settings locked while following, the log's height, and one default for a folder."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
from conftest import DEMO, FakeChild, make_image_folder, write_run
from conftest import run_started as started
from conftest import step_event as step
from PySide6.QtWidgets import QMainWindow

from simclr_studio.config import RunConfig
from simclr_studio.events import RunFinished
from simclr_studio.gui.train_panel import LOG_LINES, TrainPanel
from simclr_studio.session.train import TrainSession


@pytest.fixture
def panel(qtbot, tmp_path, monkeypatch):
    """The Train tab alone, in a main window (for its status bar), training through FakeChild."""
    import simclr_studio.session.train as train_session

    monkeypatch.setattr(train_session, "ChildRun", FakeChild)
    FakeChild.made = []
    window = QMainWindow()
    tab = TrainPanel(TrainSession(), tmp_path / "runs")
    window.setCentralWidget(tab)
    window.resize(1280, 820)  # the app's default size
    qtbot.addWidget(window)
    window.show()
    yield tab  # the window stays referenced (and alive) for the test


def base(tmp_path, **kw) -> RunConfig:
    settings = dict(data_dir=str(tmp_path / "imgs"), backbone="small-cnn", image_size=16, batch_size=8, device="cpu")
    return RunConfig(**{**settings, **kw})


def test_the_batch_size_is_checked_before_start_in_the_apps_words(panel, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=3)  # 6 images
    panel.set_data(str(folder), 6, 20)
    form = panel.form
    form.batch_size.setValue(8)
    assert form.batch_note.isVisibleTo(panel) and not panel.start_button.isEnabled()
    note = form.batch_note.text()
    assert "batch size 8 is larger than the 6 images" in note and "Batch size to 6 or fewer" in note
    assert "--" not in note  # no command-line flags in the app
    form.batch_size.setValue(6)
    assert not form.batch_note.isVisibleTo(panel) and panel.start_button.isEnabled()
    # The session refuses it too, should anything start it with the form's check bypassed.
    form.batch_size.setValue(7)
    panel.start()
    assert not FakeChild.made and "Batch size to 6 or fewer" in panel.error_banner.text()


def test_resuming_a_completed_run_offers_more_epochs(panel, tmp_path, monkeypatch):
    done = [started(6), step(6, 6), RunFinished(status="completed", epoch=1, global_step=6)]
    panel.open_run(write_run(tmp_path / "run", base(tmp_path, epochs=2), done, True, age_s=600))
    assert panel.start_button.isEnabled() and panel.start_button.text() == "Resume training"
    assert "raise Epochs above 2" in panel.next_label.text() and panel.next_label.isVisibleTo(panel)
    # Declined: nothing starts, and the tab says what would.
    monkeypatch.setattr(panel, "ask_more_epochs", lambda done: None)
    panel.start_button.click()
    assert not FakeChild.made and "raise Epochs above 2" in panel.next_label.text()
    # Accepted: the run resumes with the epochs added.
    asked = []
    monkeypatch.setattr(panel, "ask_more_epochs", lambda done: asked.append(done) or 3)
    panel.start_button.click()
    assert asked == [2] and FakeChild.made[-1].kind == "resume" and FakeChild.made[-1].epochs == 5
    assert panel.form.epochs.value() == 5


def test_the_status_follows_the_run(panel, tmp_path, monkeypatch):
    stopped = [started(6), step(3, 6), RunFinished(status="stopped", epoch=0, global_step=3)]
    panel.open_run(write_run(tmp_path / "run", base(tmp_path, epochs=2), stopped, True, age_s=600))
    bar = panel.window().statusBar()
    bar.showMessage("Run opened: Resume training continues it from its last checkpoint")  # as the window says
    monkeypatch.setattr(FakeChild, "is_running", lambda self: True)
    monkeypatch.setattr(FakeChild, "pause", lambda self: None, raising=False)
    panel.start_button.click()
    assert bar.currentMessage().startswith("Training") and "Run opened" not in bar.currentMessage()
    panel.pause_button.click()
    assert bar.currentMessage().startswith("Paused")
    monkeypatch.setattr(FakeChild, "is_running", lambda self: False)  # the process ends
    panel.refresh()
    assert bar.currentMessage().startswith("Press Resume training to continue")
    panel.new_run()
    assert bar.currentMessage() == ""  # no run shown: nothing stale left


def test_settings_are_locked_while_following_and_free_after(panel, tmp_path):
    from simclr_studio.events import EventLog

    run = write_run(tmp_path / "live", base(tmp_path, epochs=2), [started(6), step(1, 6)], False)
    assert panel.open_run(run) == "live"
    form = panel.form
    fields = [*form._fixed, form.length.mode, form.length.minutes, form.epochs, form.device]
    assert not any(w.isEnabled() for w in fields) and not panel.start_button.isEnabled()
    assert panel.window().statusBar().currentMessage().startswith("Training elsewhere")
    log = EventLog(run / "events.jsonl")
    log.write(RunFinished(status="stopped", epoch=0, global_step=1))
    log.close()
    panel.session._followed_at = 0.0  # read the file now, not at the next interval
    panel.refresh()
    assert panel.session.state == "finished"
    assert all(w.isEnabled() for w in fields if w is not form.length.minutes or form.length.is_minutes())


def test_the_log_is_tall_and_resizable(panel, qtbot):
    qtbot.waitUntil(lambda: panel.log.height() > 0)
    lines = panel.log.height() / panel.log.fontMetrics().lineSpacing()
    assert lines >= LOG_LINES and panel.splitter.indexOf(panel.log) == 1
    assert panel.plots.height() > panel.log.height()  # the curves keep most of the room
    top, bottom = panel.splitter.sizes()
    panel.splitter.setSizes([top - 100, bottom + 100])
    assert panel.splitter.sizes()[1] > bottom


@pytest.mark.parametrize("folder", ["demo", "small"])
def test_the_command_line_and_the_app_suggest_the_same_run(panel, tmp_path, folder):
    """One recipe and one measurement of the folder: the same image size (and the rest) both ways."""
    from simclr_studio.cli.parser import parse_args
    from simclr_studio.cli.train import run_config
    from simclr_studio.data import looks_grayscale, scan_folder, typical_side

    data = DEMO if folder == "demo" else make_image_folder(tmp_path / "imgs", classes=2, per_class=20, size=20)
    cli, _ = run_config(parse_args(["train", str(data), "--out", str(tmp_path / "out"), "--device", "cpu"]),
                        tmp_path / "out")
    scan = scan_folder(data)  # as the app's scan measures the folder (gui.workers.ScanJob)
    panel.set_data(str(data), len(scan), typical_side(scan.paths), looks_grayscale(scan.paths))
    app = panel.config()
    for name in ("image_size", "batch_size", "backbone", "optimizer", "lr", "temperature"):
        assert getattr(app, name) == pytest.approx(getattr(cli, name)), name


def test_the_tensorboard_option_is_on_the_form(qtbot):
    from pathlib import Path

    from simclr_studio.gui.train_form import TrainForm

    form = TrainForm(Path("/tmp/runs"))
    qtbot.addWidget(form)
    assert form.config("/data").tensorboard is False
    form.tensorboard.setChecked(True)
    assert form.config("/data").tensorboard is True
    form.load_config(RunConfig(tensorboard=False))
    assert not form.tensorboard.isChecked()
    form.set_locked(False, resuming=True)  # a resumed run keeps its saved logging
    assert not form.tensorboard.isEnabled()


def test_an_invalid_augment_setting_is_named_as_its_control(panel, tmp_path):
    from simclr_studio.config import AugmentConfig

    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=4)
    panel.set_data(str(folder), 8, 20)
    panel.form.batch_size.setValue(4)
    panel.augment_source = lambda: AugmentConfig(crop_scale=(0.9, 0.5))  # low above high
    panel.start_button.click()
    text = panel.error_banner.text()
    assert "Crop area" in text and "augment.crop_scale" not in text, text
