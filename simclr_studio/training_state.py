"""Where a training run stands and what its schedule is, and how a checkpoint saves and restores both.

Every checkpoint holds the same keys (older run folders must go on resuming): the weights, the
optimiser and loss-scaler states, the schedule, the RNG, the position (epoch, steps done in it,
global step), the number of processes and the config. ``checkpoint.save_training_checkpoint``
adds the format tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from simclr_studio.atomic import atomic_copy
from simclr_studio.budget import TimeBudget
from simclr_studio.checkpoint import save_training_checkpoint
from simclr_studio.config import RunConfig
from simclr_studio.optim import lr_at
from simclr_studio.run_folder import RunFolder


@dataclass
class Position:
    """The epoch being trained, the steps done within it, and the steps done in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0

    def step_done(self) -> None:
        self.step_in_epoch += 1
        self.global_step += 1

    def next_epoch(self) -> Position:
        """The position at the start of the next epoch (a checkpoint's at an epoch end)."""
        return Position(self.epoch + 1, 0, self.global_step)


@dataclass
class Schedule:
    """The warm-up + cosine learning-rate schedule over ``total_steps`` (a time budget re-plans it)."""

    base_lr: float
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def for_epochs(cls, cfg: RunConfig, world_size: int, steps_per_epoch: int) -> Schedule:
        return cls(base_lr=cfg.resolved_lr(world_size), steps_per_epoch=steps_per_epoch,
                   total_steps=steps_per_epoch * cfg.epochs,
                   warmup_steps=int(round(cfg.resolved_warmup_epochs() * steps_per_epoch)))

    def lr(self, global_step: int) -> float:
        return lr_at(global_step, self.total_steps, self.warmup_steps, self.base_lr)

    def to_state(self) -> dict[str, Any]:
        return {"kind": "warmup-cosine", "base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def checkpoint_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                     schedule: Schedule, budget: TimeBudget | None, position: Position, world_size: int,
                     cfg: RunConfig) -> dict[str, Any]:
    """Everything resuming needs; ``model`` is the model itself, not a DistributedDataParallel around it."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {**schedule.to_state(), **(budget.to_state() if budget else {})},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []},
        "epoch": position.epoch,
        "step_in_epoch": position.step_in_epoch,
        "global_step": position.global_step,
        "world_size": world_size,
        "config": cfg.to_json(),
    }


def write_checkpoint(folder: RunFolder, state: dict[str, Any], epoch_end: bool, keep: int) -> Path:
    """``last.pt``, atomically; at an epoch end also a copy for the epoch, of which the newest
    ``keep`` stay."""
    path = folder.last_checkpoint
    save_training_checkpoint(state, path)
    if epoch_end:
        atomic_copy(path, folder.epoch_checkpoint(state["epoch"]))
        old = folder.epoch_checkpoints()
        for stale in old[: max(0, len(old) - keep)]:
            stale.unlink(missing_ok=True)
    return path


def saved_world_size(state: dict[str, Any]) -> int:
    return int(state.get("world_size", 1))  # checkpoints from before distributed training: one process


def resume_position(state: dict[str, Any], world_size: int, steps_per_epoch: int) -> Position:
    """Where a checkpoint's run goes on. With another number of processes a step is another number
    of images: the same epoch, the same images done within it, counted in steps of the new size."""
    epoch, step, global_step = int(state["epoch"]), int(state["step_in_epoch"]), int(state["global_step"])
    saved_world = saved_world_size(state)
    if saved_world != world_size:
        step = step * saved_world // world_size
        global_step = epoch * steps_per_epoch + step
    if step >= steps_per_epoch:  # stopped after the last step of an epoch
        epoch, step = epoch + 1, 0
    return Position(epoch, step, global_step)


def restore_training_state(state: dict[str, Any], optimizer: torch.optim.Optimizer,
                           scaler: torch.amp.GradScaler | None, world_size: int, steps_per_epoch: int) -> Position:
    """Where the checkpoint's run goes on, with the optimiser's and loss scaler's states and the RNG
    as it left them (the weights are loaded when the model is built, before it is wrapped)."""
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    return resume_position(state, world_size, steps_per_epoch)
