"""A trained encoder read back from a run folder's checkpoint (what embedding, evaluation and export use)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def load_trained(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> TrainedModel:
    """Rebuild the trained model of a run folder from a checkpoint (default: the latest)."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise CheckpointError(f"run folder not found: {folder.path}")
    path = Path(checkpoint) if checkpoint else folder.last_checkpoint
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {folder.path} (expected {path}); has this run trained an epoch?")
    identity = None
    for _ in range(3):  # a trainer may replace last.pt while we read it: read until the file held still
        before = file_identity(path)
        state = load_training_checkpoint(path)
        identity = file_identity(path)
        if identity == before:
            break
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
    return TrainedModel(folder.path, cfg, model, path, int(state["epoch"]), int(state["global_step"]), identity)


def file_identity(path: str | Path) -> tuple[int, int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns, st.st_ino
