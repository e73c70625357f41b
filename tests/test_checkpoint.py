import os
import pickle

import pytest
import torch

from simclr_studio.atomic import atomic_torch_save, atomic_write_text
from simclr_studio.checkpoint import CheckpointError, load_training_checkpoint, safe_load


class Payload:
    """A class that must never be unpickled from a checkpoint."""

    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp files left


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"x": torch.ones(2)}, path)
    # A local lambda cannot be pickled: AttributeError up to Python 3.13, PicklingError from 3.14.
    with pytest.raises((AttributeError, pickle.PicklingError)):
        atomic_torch_save({"bad": lambda: 0}, path)
    assert torch.equal(safe_load(path)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_arbitrary_objects_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": Payload()}, path)
    with pytest.raises(CheckpointError):
        safe_load(path)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot load"):
        safe_load(bad)
    with pytest.raises(CheckpointError, match="not found"):
        safe_load(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="not a SIMCLR Studio"):
        load_training_checkpoint(other)
