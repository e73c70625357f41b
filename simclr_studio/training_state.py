"""Where a training run stands and what its schedule is, and how a checkpoint saves and restores both.

Every checkpoint holds the same keys (older run folders must go on resuming): the weights, the
optimiser and loss-scaler states, the schedule, the RNG, the position (epoch, steps done in it,
global step), the number of processes and the config. ``checkpoint.save_training_checkpoint``
adds the format tag.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from simclr_studio.atomic import atomic_copy
from simclr_studio.budget import TimeBudget
from simclr_studio.checkpoint import CheckpointError, DiskFullError, save_training_checkpoint
from simclr_studio.config import RunConfig
from simclr_studio.optim import lr_at
from simclr_studio.run_folder import RunFolder
from simclr_studio.sizes import format_size

if TYPE_CHECKING:
    from simclr_studio.batches import BatchSource
    from simclr_studio.data import ScanResult
    from simclr_studio.model import SimCLRModel


def resolve_config(cfg: RunConfig, device: torch.device) -> RunConfig:
    """Fill in the 'auto' choices, so the saved config says what actually ran."""
    if cfg.backbone == "auto":
        cfg.backbone = "resnet18" if device.type == "cuda" else "small-cnn"
    if cfg.small_stem is None:
        cfg.small_stem = cfg.resolved_small_stem()
    return cfg


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


@dataclass
class Setup:
    """What set-up builds for the run: the data, the model, the optimiser and the precision."""

    device: torch.device
    scan: ScanResult
    source: BatchSource
    model: SimCLRModel  # what checkpoints and the online kNN read
    train_model: torch.nn.Module  # what the steps call: the model, or DistributedDataParallel around it
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # float16 only
    dtype: torch.dtype | None  # autocast's; None: full precision
    channels_last: bool


@dataclass
class EpochResult:
    losses: list[float]  # of the steps this session ran in the epoch
    seconds: float
    ended: str | None = None  # "stopped" or "failed": the run ends within the epoch


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
    ``keep`` stay. Raises DiskFullError, before writing when the space is plainly short, with the
    previous checkpoint kept."""
    path = folder.last_checkpoint
    kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint has been written yet"
    size = path.stat().st_size if path.exists() else tensor_bytes(state)
    _write_or_explain(path, lambda: save_training_checkpoint(state, path), int(size * 1.2), kept)
    if epoch_end:
        copy = folder.epoch_checkpoint(state["epoch"])
        _write_or_explain(copy, lambda: atomic_copy(path, copy), int(path.stat().st_size * 1.2),
                          f"{path.name} was saved")
        old = folder.epoch_checkpoints()
        for stale in old[: max(0, len(old) - keep)]:
            stale.unlink(missing_ok=True)
    return path


def tensor_bytes(obj: object) -> int:
    """The bytes of all tensors in a nest of dicts, lists and tuples (a checkpoint's size, about)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


_WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed", "unexpected pos")


def _write_or_explain(path: Path, write: Callable[[], None], needed: int, kept: str) -> None:
    """``write()``, after checking ``needed`` bytes are free beside ``path``; a full disk (the OS's
    ENOSPC/EDQUOT, or torch's writer error, which loses the errno) becomes a one-line DiskFullError."""
    free = _free_bytes(path.parent)
    if free is not None and free < needed:
        raise DiskFullError(_disk_full(path, free, needed, kept))
    try:
        write()
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}; {kept}") from exc
        raise DiskFullError(_disk_full(path, _free_bytes(path.parent), needed, kept)) from exc
    except RuntimeError as exc:
        if not any(marker in str(exc) for marker in _WRITER_FAILURES):
            raise
        raise DiskFullError(_disk_full(path, _free_bytes(path.parent), needed, kept)) from exc


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(path: Path, free: int | None, needed: int, kept: str) -> str:
    free_text = f"{format_size(free)} free, " if free is not None else ""
    return f"disk full: cannot write {path} ({free_text}about {format_size(needed)} needed); {kept}"


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
                           scaler: torch.amp.GradScaler | None, world_size: int, steps_per_epoch: int,
                           optimizer_name: str = "?") -> Position:
    """Where the checkpoint's run goes on, with the optimiser's and loss scaler's states and the RNG
    as it left them (the weights are loaded when the model is built, before it is wrapped).
    ``optimizer_name``: config.json's, named when the optimiser state does not fit."""
    try:
        saved = json.loads(state["config"]).get("optimizer", optimizer_name)
        if saved != optimizer_name and optimizer_name != "?":  # another optimiser's state fails steps later
            raise ValueError(f"it is {saved}'s")
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(mismatch("optimizer state", state, {"optimizer": optimizer_name}, exc)) from exc
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    return resume_position(state, world_size, steps_per_epoch)


MODEL_SETTINGS = ("backbone", "small_stem", "proj_hidden_dim", "proj_out_dim")


def mismatch(what: str, state: dict[str, Any], current: dict[str, Any], exc: BaseException) -> str:
    """One line: the checkpoint's ``what`` does not fit config.json, naming the ``current`` settings
    (config.json's) that differ from the checkpoint's own config."""
    try:
        saved = json.loads(state["config"])
    except (ValueError, TypeError, KeyError):
        saved = {}
    differ = [f"{key} {current[key]} in config.json vs {saved[key]} in the checkpoint"
              for key in current if key in saved and saved[key] != current[key]]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    if len(lines) > 1 and lines[0].endswith(":"):  # load_state_dict's "Error(s) in loading ...:" header
        lines = lines[1:]
    reason = lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
    verb = "do" if what.endswith("s") else "does"
    return f"the checkpoint's {what} {verb} not match config.json ({'; '.join(differ) or 'same settings'}): {reason}"


def load_model_weights(model: torch.nn.Module, state: dict[str, Any], cfg: RunConfig) -> None:
    """The checkpoint's weights into ``model``; a one-line CheckpointError when they do not fit."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        current = {key: getattr(cfg, key) for key in MODEL_SETTINGS}
        raise CheckpointError(mismatch("weights", state, current, exc)) from exc
