"""Opening a finished (or running) run folder: its config, its checkpoints and its trained encoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from simclr_studio.checkpoint import CheckpointError, load_training_checkpoint
from simclr_studio.config import RunConfig
from simclr_studio.model import SimCLRModel, build_backbone
from simclr_studio.train import CHECKPOINT_DIR, CONFIG_FILE, last_checkpoint


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: SimCLRModel
    checkpoint: Path
    epoch: int
    global_step: int
    identity: tuple | None = None  # (size, mtime_ns, inode) of the checkpoint file whose weights were read


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """last.pt first, then the kept per-epoch checkpoints, newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [folder / "last.pt"] if (folder / "last.pt").exists() else []
    return found + sorted(folder.glob("epoch_*.pt"), reverse=True)


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> LoadedRun:
    """Rebuild the trained model of a run folder from a checkpoint (default: the latest)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    path = Path(checkpoint) if checkpoint else last_checkpoint(run_dir)
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {run_dir} (expected {path}); has this run trained an epoch?")
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
    if (run_dir / CONFIG_FILE).exists() is False:
        cfg.save(run_dir / CONFIG_FILE)
    backbone, dim = build_backbone(cfg.backbone, cfg.resolved_small_stem())
    model = SimCLRModel(backbone, dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the saved config ({str(exc).splitlines()[0]})") from exc
    model.eval().to(torch.device(device))
    return LoadedRun(run_dir, cfg, model, path, int(state["epoch"]), int(state["global_step"]), identity)


def file_identity(path: str | Path) -> tuple[int, int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns, st.st_ino
