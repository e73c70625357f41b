"""Faults around the trainer's run folder and checkpoints: each test reproduces a probe that used to
end in a traceback, a silent overwrite or a lost run, and checks it now ends in one line, with
nothing lost."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch

from simclr_studio.checkpoint import CheckpointError, load_training_checkpoint, safe_load
from simclr_studio.config import RunConfig
from simclr_studio.events import LogEvent, read_events
from simclr_studio.run_folder import RunFolder
from simclr_studio.run_lock import RunLock, current_writer
from simclr_studio.train import Trainer
from simclr_studio.trained import load_trained
from simclr_studio.training_state import tensor_bytes

TORCH_ENOSPC = "[enforce fail at inline_container.cc:603] . unexpected pos 3211456 vs 3211344"


def run(cfg: RunConfig, run_dir: Path, resume: bool = False, rank: int = 0) -> tuple[str, list[Any]]:
    events: list[Any] = []
    status = Trainer(RunConfig.from_dict(cfg.to_dict()), run_dir, on_event=events.append, resume=resume,
                     rank=rank).run()
    return status, events


def errors(events: list[Any]) -> list[Any]:
    return [e for e in events if e.kind == "error"]


def one_epoch_run(cfg: RunConfig, run_dir: Path) -> RunFolder:
    """A run folder whose last.pt and epoch_0001.pt hold the end of epoch 1 (of 2)."""
    cfg.epochs = 1
    assert run(cfg, run_dir)[0] == "completed"
    cfg.epochs = 2
    return RunFolder(run_dir)


# ---- 1. one writer ----------------------------------------------------------------------------------
def test_a_second_writer_fails_in_one_line_and_writes_nothing(tiny_config: RunConfig, tmp_path: Path) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    config_before = folder.config_file.read_bytes()
    events_before = folder.events_file.read_bytes()
    checkpoint_before = folder.last_checkpoint.read_bytes()
    with RunLock(folder.path):  # another process's lock (flock: two open files conflict even in one process)
        status, events = run(tiny_config, folder.path, resume=True)
    assert status == "failed"
    [error] = errors(events)
    assert error.category == "busy" and f"process {os.getpid()}" in error.message and "\n" not in error.message
    assert events[-1].kind == "finished" and events[-1].status == "failed"
    assert folder.config_file.read_bytes() == config_before
    assert folder.events_file.read_bytes() == events_before
    assert folder.last_checkpoint.read_bytes() == checkpoint_before


def test_the_writer_holds_the_lock_for_the_whole_run(tiny_config: RunConfig, tmp_path: Path) -> None:
    seen: list[Any] = []

    def on_event(event: Any) -> None:
        if event.kind in ("run_started", "step", "checkpoint"):
            seen.append(current_writer(tmp_path / "run"))

    assert Trainer(tiny_config, tmp_path / "run", on_event=on_event).run() == "completed"
    assert seen and all(w is not None and w.pid == os.getpid() for w in seen)
    assert current_writer(tmp_path / "run") is None  # released at the end


def test_other_ranks_never_touch_the_lock(tiny_config: RunConfig, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run"):  # rank 0 holds it
        status, events = run(tiny_config, tmp_path / "run", rank=1)
    assert status == "completed" and not errors(events)


# ---- 2. a full disk ---------------------------------------------------------------------------------
def fake_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10**12, 10**12 - free, free))


def test_too_little_space_is_said_before_writing_and_the_checkpoint_is_kept(
        tiny_config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    before = folder.last_checkpoint.read_bytes()
    size_mb = folder.last_checkpoint.stat().st_size * 1.2 / 2**20
    fake_free(monkeypatch, 1000)
    saves: list[Path] = []
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: saves.append(Path(f)))
    status, events = run(tiny_config, folder.path, resume=True)
    assert status == "failed" and saves == []  # nothing was even tried
    [error] = errors(events)
    assert error.category == "disk"
    said = re.fullmatch(rf"disk full: cannot write {re.escape(str(folder.last_checkpoint))} \(1000 bytes free, "
                        r"about ([\d.]+) (KB|MB) needed\); the previous checkpoint is kept", error.message)
    assert said is not None, error.message
    needed_mb = float(said[1]) / (1024 if said[2] == "KB" else 1)
    assert 0.8 * size_mb < needed_mb < 1.2 * size_mb  # the checkpoint's size and a margin
    assert folder.last_checkpoint.read_bytes() == before


@pytest.mark.parametrize("failure", [RuntimeError(TORCH_ENOSPC), OSError(errno.ENOSPC, "No space left on device")])
def test_a_write_that_runs_out_of_space_keeps_the_previous_checkpoint(
        tiny_config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    before = folder.last_checkpoint.read_bytes()
    real_save = torch.save

    def full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save(obj, f, *args, **kwargs)  # half a file on disk, as a full disk leaves it
        Path(f).write_bytes(Path(f).read_bytes()[:100])
        raise failure

    monkeypatch.setattr(torch, "save", full)
    status, events = run(tiny_config, folder.path, resume=True)
    assert status == "failed"
    [error] = errors(events)
    assert error.category == "disk" and "\n" not in error.message
    assert error.message.startswith(f"disk full: cannot write {folder.last_checkpoint} (")
    assert error.message.endswith("MB needed); the previous checkpoint is kept")
    assert folder.last_checkpoint.read_bytes() == before
    assert load_training_checkpoint(folder.last_checkpoint)["epoch"] == 1
    assert not [p for p in folder.checkpoint_dir.iterdir() if p.name.endswith(".tmp")]  # atomic_write cleaned up


def test_a_full_disk_before_the_first_checkpoint_says_there_is_none(
        tiny_config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(TORCH_ENOSPC)

    monkeypatch.setattr(torch, "save", full)
    status, events = run(tiny_config, tmp_path / "run")
    [error] = errors(events)
    assert status == "failed" and error.category == "disk"
    assert error.message.endswith("no checkpoint has been written yet")
    assert not RunFolder(tmp_path / "run").last_checkpoint.exists()


def test_other_torch_errors_while_saving_stay_bugs(tiny_config: RunConfig, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("something else entirely")

    monkeypatch.setattr(torch, "save", broken)
    events: list[Any] = []
    with pytest.raises(RuntimeError, match="something else"):
        Trainer(tiny_config, tmp_path / "run", on_event=events.append).run()
    assert errors(events)[0].category == "error"


def test_the_space_needed_for_a_first_checkpoint_is_its_tensors() -> None:
    state = {"model": {"w": torch.zeros(10, 10)}, "rng": [torch.zeros(5, dtype=torch.uint8)], "epoch": 3}
    assert tensor_bytes(state) == 400 + 5


def test_temp_files_of_a_killed_write_are_removed_at_the_next_start(tiny_config: RunConfig, tmp_path: Path) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    leftovers = [folder.checkpoint_dir / ".last.pt.k2j4h1x9.tmp", folder.path / ".config.json.a8d7f6g5.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    users = [folder.path / "notes.tmp", folder.checkpoint_dir / "keep.tmp"]  # not ours: never touched
    for path in users:
        path.write_bytes(b"mine")
    status, events = run(tiny_config, folder.path, resume=True)
    assert status == "completed"
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in users)
    assert any(e.kind == "log" and "2 unfinished temp file(s)" in e.message for e in events)


# ---- 3. tracebacks become one line ----------------------------------------------------------------------
@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 1200000000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_cpu_out_of_memory_is_the_oom_error(tiny_config: RunConfig, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    def oom(self: Trainer, *args: Any, **kwargs: Any) -> float:
        raise failure

    monkeypatch.setattr(Trainer, "train_step", oom)
    status, events = run(tiny_config, tmp_path / "run")
    [error] = errors(events)
    assert status == "failed" and error.category == "oom"
    assert "batch size of 4" in error.message and "smaller image size" in error.message


def test_a_config_that_does_not_match_the_checkpoint_is_one_line(tiny_config: RunConfig, tmp_path: Path) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    edited = folder.load_config()
    edited.proj_out_dim = 32
    edited.save(folder.config_file)
    status, events = run(folder.load_config(), folder.path, resume=True)
    [error] = errors(events)
    assert status == "failed" and error.category == "checkpoint" and "\n" not in error.message
    assert error.message.startswith("the checkpoint's weights do not match config.json "
                                    f"(proj_out_dim 32 in config.json vs {tiny_config.proj_out_dim} in the checkpoint)")
    assert "): size mismatch for " in error.message and len(error.message) < 400


def test_another_optimiser_in_config_is_one_line(tiny_config: RunConfig, tmp_path: Path) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    edited = folder.load_config()
    edited.optimizer = "adamw"
    edited.save(folder.config_file)
    status, events = run(folder.load_config(), folder.path, resume=True)
    [error] = errors(events)
    assert status == "failed" and error.category == "checkpoint"
    assert error.message.startswith("the checkpoint's optimizer state does not match config.json "
                                    "(optimizer adamw in config.json vs sgd in the checkpoint)")


@pytest.mark.parametrize("field,value,says", [
    ("epoch", -3, "field 'epoch' must be a whole number >= 0, not -3"),
    ("epoch", "3", "field 'epoch' must be a whole number >= 0, not '3'"),
    ("global_step", 2.5, "field 'global_step' must be a whole number >= 0, not 2.5"),
    ("step_in_epoch", True, "field 'step_in_epoch' must be a whole number >= 0, not True"),
    ("world_size", 0, "field 'world_size' must be a whole number >= 1, not 0"),
    ("config", "{not json", "field 'config' must be the run's config as a JSON object"),
    ("config", 7, "field 'config' must be the run's config as a JSON object"),
    ("model", [1, 2], "field 'model' must be a dict of tensors, not list"),
])
def test_hand_edited_checkpoint_fields_are_named(tiny_config: RunConfig, tmp_path: Path, field: str, value: Any,
                                                 says: str) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    state = safe_load(folder.last_checkpoint)
    state[field] = value
    torch.save(state, folder.last_checkpoint)
    with pytest.raises(CheckpointError) as caught:
        load_training_checkpoint(folder.last_checkpoint)
    assert str(caught.value) == f"{folder.last_checkpoint}: {says}"


def test_a_negative_epoch_is_never_trained(tiny_config: RunConfig, tmp_path: Path) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    for path in folder.checkpoints():  # every checkpoint hand-edited: nothing to fall back on
        state = safe_load(path)
        state["epoch"] = -3
        torch.save(state, path)
    status, events = run(tiny_config, folder.path, resume=True)
    [error] = errors(events)
    assert status == "failed" and error.category == "checkpoint" and "'epoch'" in error.message
    assert not [e for e in events if e.kind == "step"]


def test_nan_before_any_checkpoint_does_not_claim_one_was_kept(tiny_config: RunConfig, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Trainer, "train_step", lambda self, *a, **k: float("nan"))
    status, events = run(tiny_config, tmp_path / "run")
    [error] = errors(events)
    assert status == "failed" and error.category == "nan"
    assert "no checkpoint had been saved yet" in error.message and "was kept" not in error.message


# ---- 4. recovery ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_resume_falls_back_to_the_newest_good_epoch_checkpoint(tiny_config: RunConfig, tmp_path: Path,
                                                               damage: str) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    if damage == "missing":
        folder.last_checkpoint.unlink()
    else:
        folder.last_checkpoint.write_bytes(folder.last_checkpoint.read_bytes()[:200])
    status, events = run(tiny_config, folder.path, resume=True)
    assert status == "completed"
    notes = [e.message for e in events if e.kind == "log" and "using epoch_0001.pt" in e.message]
    assert len(notes) == 1 and ("last.pt is missing" in notes[0] or "cannot load" in notes[0])
    started = next(e for e in events if e.kind == "run_started")
    assert started.start_epoch == 1 and started.start_global_step == 3
    assert [e.global_step for e in events if e.kind == "step"] == [4, 5, 6]
    assert load_training_checkpoint(folder.last_checkpoint)["epoch"] == 2  # last.pt whole again
    logged = [e.message for e in read_events(folder.events_file) if isinstance(e, LogEvent)]
    assert any("using epoch_0001.pt" in message for message in logged)


def test_explore_reads_the_newest_good_checkpoint_when_last_is_damaged(tiny_config: RunConfig,
                                                                       tmp_path: Path) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    folder.last_checkpoint.write_bytes(b"garbage")
    trained = load_trained(folder.path)
    assert trained.checkpoint == folder.epoch_checkpoint(1) and trained.epoch == 1
    assert trained.note is not None and "using epoch_0001.pt" in trained.note
    folder.epoch_checkpoint(1).write_bytes(b"garbage too")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_trained(folder.path)


def test_explore_of_a_healthy_run_reads_last(tiny_config: RunConfig, tmp_path: Path) -> None:
    folder = one_epoch_run(tiny_config, tmp_path / "run")
    trained = load_trained(folder.path)
    assert trained.checkpoint == folder.last_checkpoint and trained.note is None and trained.identity is not None
    assert json.loads(safe_load(folder.last_checkpoint)["config"])["seed"] == trained.config.seed
