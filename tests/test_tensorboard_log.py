"""TensorBoard event files written without TensorBoard, read back by TensorBoard's own reader."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import pytest

from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.events import EpochEvent, EvalEvent, StepEvent, read_events
from simclr_studio.run_folder import RunFolder
from simclr_studio.tensorboard_log import EventFileWriter, crc32c, frame, masked_crc
from simclr_studio.train import Trainer

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def accumulate(log_dir: Path):
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return acc


def test_crc32c_and_framing():
    assert crc32c(b"123456789") == 0xE3069283  # the Castagnoli check value
    assert crc32c(b"") == 0
    record = frame(b"abc")
    assert struct.unpack("<Q", record[:8])[0] == 3 and record[12:15] == b"abc"
    assert struct.unpack("<I", record[8:12])[0] == masked_crc(record[:8])
    assert struct.unpack("<I", record[15:])[0] == masked_crc(b"abc")


def test_scalars_read_back_without_a_run(tmp_path):
    writer = EventFileWriter(tmp_path)
    for step in (1, 2, 3):
        writer.add_scalars(step, {"a/b": step * 0.5, "c": -1.0 * step})
    writer.add_scalars(2**40, {"big": 1.0})  # int64 steps beyond 32 bits
    writer.close()
    acc = accumulate(tmp_path)
    assert acc.file_version == 2.0  # parsed from "brain.Event:2"
    assert [(s.step, s.value) for s in acc.Scalars("a/b")] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert [s.value for s in acc.Scalars("c")] == [-1.0, -2.0, -3.0]
    assert acc.Scalars("big")[0].step == 2**40


def test_a_tiny_run_is_readable_in_tensorboard(tiny_config, tmp_path):
    cfg = replace(tiny_config, backbone="tiny-cnn", image_size=16, epochs=2, tensorboard=True)
    run_dir = tmp_path / "run"
    assert Trainer(cfg, run_dir).run() == "completed"
    log_dir = run_dir / "tensorboard"
    assert log_dir.is_dir() and len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    events = read_events(RunFolder(run_dir).events_file)
    steps = [e for e in events if isinstance(e, StepEvent)]
    evals = [e for e in events if isinstance(e, EvalEvent)]
    epochs = [e for e in events if isinstance(e, EpochEvent)]
    assert steps and len(evals) == 2 and len(epochs) == 2

    acc = accumulate(log_dir)
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "epoch/loss", "epoch/knn_accuracy",
            "epoch/knn_accuracy_raw_pixels"} <= tags
    loss = acc.Scalars("train/loss")
    assert [s.step for s in loss] == [e.global_step for e in steps] == list(range(1, len(steps) + 1))
    assert [s.value for s in loss] == pytest.approx([e.loss for e in steps], rel=1e-6)  # raw, float32
    assert [s.value for s in acc.Scalars("train/lr")] == pytest.approx([e.lr for e in steps], rel=1e-6)
    assert [s.value for s in acc.Scalars("train/images_per_s")] == pytest.approx([e.images_per_s for e in steps],
                                                                                 rel=1e-6)
    knn = acc.Scalars("epoch/knn_accuracy")
    assert [s.step for s in knn] == [1, 2]  # per epoch, counted from 1 as the app shows them
    assert [s.value for s in knn] == pytest.approx([e.knn_accuracy for e in evals], rel=1e-6)
    assert [s.wall_time for s in knn] == pytest.approx([e.time for e in evals])


def test_off_by_default(tiny_config, tmp_path):
    assert RunConfig().tensorboard is False
    cfg = replace(tiny_config, backbone="tiny-cnn", epochs=1, eval_every=0)
    assert Trainer(cfg, tmp_path / "run").run() == "completed"
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_config_round_trip(tmp_path):
    cfg = RunConfig(tensorboard=True)
    cfg.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json").tensorboard is True
    assert '"tensorboard": true' in (tmp_path / "config.json").read_text()
    assert RunConfig.from_dict({"tensorboard": False}).tensorboard is False
    with pytest.raises(ConfigError, match="tensorboard"):
        RunConfig.from_dict({"tensorboard": "yes"})
