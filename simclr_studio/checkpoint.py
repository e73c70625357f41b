"""The training checkpoint format: what a checkpoint holds, how it is written and safely read.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``: no arbitrary code is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from simclr_studio.atomic import atomic_torch_save

CHECKPOINT_FORMAT = "simclr-studio-checkpoint"  # the "format" tag of every training checkpoint
REQUIRED_KEYS = ("format", "model", "optimizer", "epoch", "step_in_epoch", "global_step", "config")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or not one of ours."""


def is_training_checkpoint(state: object) -> bool:
    return isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT


def save_training_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a training checkpoint atomically, tagged with the format."""
    atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, Path(path))


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a torch file without unpickling code; raise CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, foreign pickle...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {reason}") from exc


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one of our training checkpoints and check it has what resuming needs."""
    state = safe_load(path)
    if not is_training_checkpoint(state):
        raise CheckpointError(f"{path} is not a SIMCLR Studio training checkpoint")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return state
