"""The training checkpoint format: what a checkpoint holds, how it is written and safely read.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``: no arbitrary code is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from simclr_studio.atomic import atomic_torch_save

CHECKPOINT_FORMAT = "simclr-studio-checkpoint"  # the "format" tag of every training checkpoint
REQUIRED_KEYS = ("format", "model", "optimizer", "epoch", "step_in_epoch", "global_step", "config")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or not one of ours."""


class DiskFullError(CheckpointError):
    """A checkpoint could not be written for want of space (the previous one is kept)."""


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
    problem = invalid_field(state)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return state


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def invalid_field(state: dict[str, Any]) -> str | None:
    """What is wrong with a training checkpoint's fields (wrong type, out of range), or None."""
    for key in ("epoch", "step_in_epoch", "global_step"):
        if not _count(state[key], 0):
            return f"field {key!r} must be a whole number >= 0, not {state[key]!r}"
    if "world_size" in state and not _count(state["world_size"], 1):
        return f"field 'world_size' must be a whole number >= 1, not {state['world_size']!r}"
    if state["step_in_epoch"] > state["global_step"]:
        return (f"field 'step_in_epoch' ({state['step_in_epoch']}) is more than "
                f"'global_step' ({state['global_step']})")
    for key in ("model", "optimizer"):
        if not isinstance(state[key], dict):
            return f"field {key!r} must be a dict of tensors, not {type(state[key]).__name__}"
    try:
        config = json.loads(state["config"]) if isinstance(state["config"], str) else None
    except ValueError:
        config = None
    if not isinstance(config, dict):
        return "field 'config' must be the run's config as a JSON object"
    return None
