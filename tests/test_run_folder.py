"""The run folder's names and states, and the one resume rule."""

from __future__ import annotations

import os
import time

import pytest

from simclr_studio.config import RunConfig
from simclr_studio.events import EventLog, LogEvent, RunFinished, RunStarted
from simclr_studio.run_folder import LIVE_WINDOW_S, RunFolder, ignored_on_resume, resume_config


def _started() -> RunStarted:
    return RunStarted(run_dir="r", device="cpu", backbone="tiny-cnn", n_images=10, steps_per_epoch=1, total_steps=5,
                      start_epoch=0, start_global_step=0, cached=True, labeled=False)


def _write_events(folder: RunFolder, *events) -> None:
    log = EventLog(folder.events_file)
    for event in events:
        log.write(event)
    log.close()


def test_an_empty_folder_is_new(tmp_path):
    folder = RunFolder(tmp_path / "nothing")
    assert folder.state() == "new" and not folder.is_run() and folder.checkpoints() == []
    assert folder.last_status() is None


def test_a_folder_being_written_is_live_until_it_goes_quiet(tmp_path):
    folder = RunFolder(tmp_path)
    RunConfig().save(folder.config_file)
    _write_events(folder, _started(), LogEvent(message="training"))
    assert folder.state() == "live"
    assert folder.state(now=time.time() + LIVE_WINDOW_S + 1) == "finished"
    # Quiet for longer than the live window, with no checkpoint: a run that died before saving.
    old = time.time() - LIVE_WINDOW_S - 10
    os.utime(folder.events_file, (old, old))
    assert folder.is_run() and folder.state() == "finished"


def test_a_folder_with_a_checkpoint_is_resumable_and_a_finished_one_says_how_it_ended(tmp_path):
    folder = RunFolder(tmp_path)
    RunConfig().save(folder.config_file)
    _write_events(folder, _started(), RunFinished(status="stopped", epoch=0, global_step=3))
    assert folder.state() == "finished" and folder.last_status() == "stopped"
    folder.checkpoint_dir.mkdir()
    folder.last_checkpoint.write_bytes(b"x")
    folder.epoch_checkpoint(1).write_bytes(b"x")
    folder.epoch_checkpoint(2).write_bytes(b"x")
    assert folder.state() == "resumable" and folder.can_resume()
    # last.pt first, then the per-epoch checkpoints newest first
    assert [p.name for p in folder.checkpoints()] == ["last.pt", "epoch_0002.pt", "epoch_0001.pt"]
    assert [p.name for p in folder.epoch_checkpoints()] == ["epoch_0001.pt", "epoch_0002.pt"]


def test_the_run_folder_of_a_checkpoint(tmp_path):
    assert RunFolder.of_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0003.pt").path == tmp_path / "run"
    assert RunFolder.of_checkpoint(tmp_path / "loose" / "weights.pt").path == tmp_path / "loose"


def test_names_on_disk_do_not_change(tmp_path):
    """Run folders written by earlier versions must still open: these names are a file format."""
    folder = RunFolder(tmp_path)
    assert folder.config_file.name == "config.json" and folder.events_file.name == "events.jsonl"
    assert folder.last_checkpoint.relative_to(tmp_path).as_posix() == "checkpoints/last.pt"
    assert folder.epoch_checkpoint(7).name == "epoch_0007.pt"
    assert folder.process_log.name == "train.log" and folder.embeddings_dir.name == "embeddings"


def test_a_resume_may_change_only_the_length_in_epochs_and_the_device():
    saved = RunConfig(epochs=4, minutes=None, device="cpu", batch_size=32, lr=0.5)
    same = resume_config(saved)
    assert same == saved and same is not saved and same.augment is not saved.augment
    longer = resume_config(saved, epochs=9, device="cuda")
    assert (longer.epochs, longer.device, longer.batch_size, longer.lr) == (9, "cuda", 32, 0.5)
    assert saved.epochs == 4 and saved.device == "cpu"  # the saved config is not touched


def test_epochs_given_on_resume_turn_a_time_budget_into_an_epochs_run():
    budgeted = RunConfig(minutes=5.0, epochs=100)
    assert resume_config(budgeted).minutes == 5.0  # a budgeted run keeps its plan
    extended = resume_config(budgeted, epochs=12)
    assert extended.minutes is None and extended.epochs == 12


def test_settings_a_resume_ignores_are_named():
    given = {"epochs": 3, "device": "cpu", "batch_size": 64, "lr": None, "backbone": "resnet18"}
    assert ignored_on_resume(given) == ["batch_size", "backbone"]


@pytest.mark.parametrize("bad", ["", "{", "[]"])
def test_a_broken_config_file_is_a_config_error(tmp_path, bad):
    from simclr_studio.config import ConfigError

    folder = RunFolder(tmp_path)
    folder.config_file.write_text(bad)
    with pytest.raises(ConfigError):
        folder.load_config()
