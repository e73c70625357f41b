"""A trained encoder read back from a run folder's checkpoint (what embedding, evaluation and export use)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from simclr_studio.checkpoint import CheckpointError, load_training_checkpoint
from simclr_studio.config import RunConfig
from simclr_studio.model import SimCLRModel, build_backbone
from simclr_studio.run_folder import RunFolder


@dataclass
class TrainedModel:
    run_dir: Path
    config: RunConfig
    model: SimCLRModel
    checkpoint: Path
    epoch: int
    global_step: int
    identity: tuple | None = None  # (size, mtime_ns, inode) of the checkpoint file whose weights were read
    note: str | None = None  # why the latest checkpoint was not last.pt (it did not load), or None


def load_trained(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> TrainedModel:
    """Rebuild the trained model of a run folder from a checkpoint (default: the latest)."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise CheckpointError(f"run folder not found: {folder.path}")
    note = None
    if checkpoint:
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"checkpoint not found: {path}")
        state, identity = _read_still(path)
    else:  # the latest: last.pt, or the newest per-epoch checkpoint that loads when last.pt does not
        if not folder.checkpoints():
            raise CheckpointError(f"no checkpoint in {folder.path} (expected {folder.last_checkpoint}); "
                                  "has this run trained an epoch?")
        before = _identity(folder.last_checkpoint)
        path, state, note = folder.checkpoint_to_resume()
        identity = _identity(path)
        if path == folder.last_checkpoint and identity != before:  # replaced while we read it
            state, identity = _read_still(path)
    try:
        cfg = RunConfig.from_dict(json.loads(state["config"]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable config ({exc})") from exc
    if not folder.has_config():
        cfg.save(folder.config_file)
    backbone, dim = build_backbone(cfg.backbone, cfg.resolved_small_stem())
    model = SimCLRModel(backbone, dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the saved config ({str(exc).splitlines()[0]})") from exc
    model.eval().to(torch.device(device))
    return TrainedModel(folder.path, cfg, model, path, int(state["epoch"]), int(state["global_step"]), identity,
                        note)


def _read_still(path: Path) -> tuple[dict[str, Any], tuple[int, int, int] | None]:
    """A checkpoint's state and the identity of the file it came from: a trainer may replace last.pt
    while we read it, so read until the file held still."""
    identity = None
    for _ in range(3):
        before = _identity(path)
        state = load_training_checkpoint(path)
        identity = _identity(path)
        if identity == before:
            break
    return state, identity


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        return file_identity(path)
    except OSError:  # replaced or pruned between two looks
        return None


def file_identity(path: str | Path) -> tuple[int, int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns, st.st_ino
