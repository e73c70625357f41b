"""What a run will cost before it starts, without Qt: how long it trains and whether its images fit
the RAM cache.

The time comes from the time budget when the run has one; otherwise from a measured speed: a few
steps of the run's own training step (``Trainer.train_step``: augmentation, model, loss, backward; a
plain update stands in for the optimiser, see ``_PlainUpdate``) on random images of the chosen size,
batch and device, times the steps the run will take. The measure is cheap (about ``PROBE_BUDGET_S``
of compute): a large batch is timed at a smaller one and scaled. Whether the images are cached in
RAM is the engine's own decision (``image_cache``'s layout planning and budget check, as
``training_data.prepare_training_data`` makes it).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from simclr_studio.config import RunConfig
from simclr_studio.image_cache import cache_bytes, fits_in_ram, plan_cache_layout
from simclr_studio.session.wording import format_minutes, format_seconds
from simclr_studio.sizes import GB, format_size

PROBE_BUDGET_S = 2.5  # the most compute a measure should take (a single step may run past it)
PROBE_BATCH = 16  # the batch timed first; a larger one is timed too only when it fits the budget
TIMED_STEPS = 3  # at most, after one untimed step that allocates (the engine's StepTimes skips it too)


@dataclass(frozen=True)
class StepSpeed:
    """Seconds per training step of a config's batch, and how it was found."""

    seconds_per_step: float
    measured_batch: int  # the batch that was timed
    extrapolated: bool  # a rougher figure: timed at a smaller batch and scaled, or only the first step


def speed_key(cfg: RunConfig, nproc: int = 1) -> tuple:
    """What a measured speed depends on: a new measure only when one of these changed."""
    return (cfg.backbone, cfg.small_stem, cfg.image_size, cfg.batch_size, cfg.device, nproc, cfg.amp,
            cfg.channels_last, cfg.proj_hidden_dim, cfg.proj_out_dim)


def measure_step_seconds(cfg: RunConfig, budget_s: float = PROBE_BUDGET_S,
                         should_stop: Callable[[], bool] | None = None) -> StepSpeed:
    """Time the training step of ``cfg`` (backbone, image size, batch, device, precision) on random
    images. Raises InterruptedError when ``should_stop()`` turns true between steps, and the config's
    or device's errors (ConfigError, RuntimeError) as they are."""
    import torch  # only when measuring: the session layer loads without it

    from simclr_studio.device import resolve_device
    from simclr_studio.training_state import resolve_config

    cfg = copy.deepcopy(cfg)
    device = resolve_device(cfg.device)
    resolve_config(cfg, device)
    try:
        return _time_steps(cfg, device, budget_s, should_stop)
    finally:
        if device.type == "cuda":  # the model and batches are gone: give their memory back to training
            torch.cuda.empty_cache()


def _time_steps(cfg: RunConfig, device, budget_s: float, should_stop: Callable[[], bool] | None) -> StepSpeed:
    import torch

    from simclr_studio.device import amp_dtype
    from simclr_studio.model import build_model
    from simclr_studio.train import Trainer

    # The engine's own step, of a trainer that never runs (nothing is written to its folder).
    trainer = Trainer(cfg, Path(tempfile.gettempdir()) / "simclr-studio-estimate")
    model = build_model(cfg, load_weights=False).to(device)
    channels_last = cfg.channels_last and device.type in ("cuda", "cpu")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Duck-typed: what train_step calls (zero_grad, step, param_groups), without torch.optim's imports.
    optimizer = cast(torch.optim.Optimizer, _PlainUpdate([p for p in model.parameters() if p.requires_grad]))
    dtype = amp_dtype(device) if cfg.amp else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    g = torch.Generator().manual_seed(0)
    started = time.perf_counter()  # the budget is for steps (the model's set-up is not counted)

    def timed_step(batch: torch.Tensor, step: int) -> float:
        if should_stop is not None and should_stop():
            raise InterruptedError("estimate cancelled")
        tick = time.perf_counter()
        trainer.train_step(model, optimizer, scaler, batch, device, step, dtype, channels_last)  # synchronises
        return time.perf_counter() - tick

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g)

    probe = min(cfg.batch_size, PROBE_BATCH)
    batch = images(probe)
    first = timed_step(batch, 0)  # allocates: timed only to stop early when even it was long
    if first > budget_s / 2:  # a slow model on this device: its first step must do
        return StepSpeed(first * cfg.batch_size / probe, probe, True)
    times = [timed_step(batch, 1)]
    if probe < cfg.batch_size:
        full = times[0] * cfg.batch_size / probe
        if time.perf_counter() - started + 2 * full > budget_s:
            return StepSpeed(full, probe, True)
        batch = images(cfg.batch_size)
        timed_step(batch, 2)  # allocates for the larger batch
        times = [timed_step(batch, 3)]
    while len(times) < TIMED_STEPS and time.perf_counter() - started + statistics.median(times) < budget_s:
        times.append(timed_step(batch, 4 + len(times)))
    return StepSpeed(statistics.median(times), cfg.batch_size, False)


class _PlainUpdate:
    """Stands in for the run's optimiser: one fused update of every parameter, about as costly as
    SGD's (an optimiser's step is a small part of a step). torch.optim's first optimiser imports
    torch._dynamo (~2 s), whose module initialisation holds the GIL long enough to stall the window."""

    def __init__(self, params: list) -> None:
        self.param_groups = [{"params": params}]  # what GradScaler reads (fp16 on older GPUs)
        self.params = params

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        import torch

        with torch.no_grad():
            pairs = [(p, p.grad) for p in self.params if p.grad is not None]
            if pairs:
                torch._foreach_add_([p for p, _ in pairs], [g for _, g in pairs], alpha=-1e-4)


@dataclass(frozen=True)
class CachePlan:
    """Whether training decodes the images once into RAM (``fits``) or streams them from disk."""

    fits: bool
    bytes: int  # the cache of all the run's processes (or what it would take)
    budget_bytes: float  # the config's cache budget (cache_ram_gb)
    available_bytes: int | None = None  # the machine's free memory now, when known

    def text(self) -> str:
        need, budget = format_size(self.bytes), format_size(self.budget_bytes)
        if not self.fits:
            return f"Images: streamed from disk each epoch ({need} would exceed the {budget} RAM cache budget)"
        text = f"Images: decoded once into RAM ({need} of the {budget} cache budget)"
        if self.available_bytes is not None and self.bytes > self.available_bytes:
            text += f"; only {format_size(self.available_bytes)} of memory is free now"
        return text


def cache_plan(cfg: RunConfig, n_images: int, typical_side: int, nproc: int = 1,
               available_bytes: int | None = None) -> CachePlan:
    """The engine's caching decision for ``n_images`` of ``typical_side`` px under ``cfg`` (the budget is
    shared by the ``nproc`` processes of this machine, each holding its own cache)."""
    budget_gb = cfg.cache_ram_gb / max(1, nproc)
    layout = plan_cache_layout(cfg.image_size, typical_side, budget_gb * GB, n_images)
    fits = fits_in_ram(n_images, layout.stored, budget_gb)
    return CachePlan(fits, cache_bytes(n_images, layout.stored) * max(1, nproc), cfg.cache_ram_gb * GB,
                     available_bytes)


@dataclass(frozen=True)
class RunEstimate:
    """How long a run trains: ``seconds`` (None until a speed is measured, for an epochs run), its steps and
    epochs when known, whether the time is the budget's, and the speed it was reckoned with."""

    seconds: float | None
    steps: int | None
    epochs: float | None
    from_budget: bool
    speed: StepSpeed | None = None

    def text(self) -> str:
        rough = "roughly " if self.speed is not None and self.speed.extrapolated else "about "
        if self.from_budget:
            head = f"Takes {format_minutes((self.seconds or 0) / 60)} min (the time budget)"
            if self.steps is None or self.epochs is None:
                return head
            return f"{head}: {rough}{self.steps:,} steps, {_epochs(self.epochs)} at this speed"
        epochs = _epochs(self.epochs or 0)
        if self.seconds is None:
            return f"{self.steps:,} steps ({epochs}): measuring the speed…"
        return f"Takes {rough}{_duration(self.seconds)}: {self.steps:,} steps ({epochs})"


def estimate_run(cfg: RunConfig, n_images: int, nproc: int = 1, speed: StepSpeed | None = None) -> RunEstimate:
    """The run ``cfg`` on ``n_images`` in ``nproc`` processes: its time budget, or its steps times the
    measured ``speed`` (the data preparation and epoch ends are not counted)."""
    steps_per_epoch = max(1, n_images // max(1, nproc) // max(1, cfg.batch_size))  # as BatchSource (full batches)
    per_step = speed.seconds_per_step if speed is not None else None
    if cfg.minutes is not None:
        seconds = cfg.minutes * 60.0
        steps = max(1, int(seconds / per_step)) if per_step else None
        return RunEstimate(seconds, steps, steps / steps_per_epoch if steps else None, True, speed)
    steps = steps_per_epoch * cfg.epochs
    return RunEstimate(steps * per_step if per_step is not None else None, steps, float(cfg.epochs), False, speed)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{format_seconds(seconds)[:-3]} h"  # h:mm


def _epochs(epochs: float) -> str:
    n = f"{epochs:.1f}" if epochs < 10 and epochs != int(epochs) else f"{epochs:,.0f}"
    return f"{n} epoch" if n == "1" else f"{n} epochs"
