"""How a run's events are told to people: the same words on the command line and in the app's log."""

from __future__ import annotations

import math
import re

from simclr_studio.events import (
    BaselineEvent,
    CheckpointEvent,
    EpochEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    LogEvent,
    PlanEvent,
    PrepareProgress,
    RunFinished,
    RunStarted,
    StateEvent,
)
from simclr_studio.history import RunHistory


def format_minutes(minutes: float) -> str:
    return f"{minutes:.0f}" if minutes >= 10 else f"{minutes:.2g}"


def format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class EventWording:
    """Turns events into log lines. It remembers what later lines need: the raw-pixel baseline
    (told beside every kNN accuracy) and whether this session of the run has told its plan (a
    time-budgeted run re-plans every epoch; only the first plan is worth a line)."""

    def __init__(self) -> None:
        self.baseline: BaselineEvent | None = None
        self._planned = False

    def line(self, event: Event) -> str | None:
        """The log line for ``event``, or None when it is not worth one (steps, progress)."""
        if isinstance(event, RunStarted):
            self._planned = False
            return (f"Training {event.backbone} on {event.device}: {event.n_images:,} images, "
                    f"{event.steps_per_epoch:,} steps per epoch, "
                    + ("images cached in RAM" if event.cached else "streaming from disk")
                    + (f", resuming at step {event.start_global_step:,}" if event.start_global_step else ""))
        if isinstance(event, EpochEvent):
            return (f"Epoch {event.epoch + 1}: loss {event.loss:.4f} · {event.seconds:.1f} s · "
                    f"{event.images_per_s:.0f} images/s")
        if isinstance(event, EvalEvent):
            base = self.baseline
            return (f"Epoch {event.epoch + 1}: kNN accuracy {event.knn_accuracy:.4f} "
                    f"(leave-one-out, k={event.k}, {event.n_images:,} images)"
                    + (f"; raw pixels {base.knn_accuracy:.4f}" if base is not None else ""))
        if isinstance(event, BaselineEvent):
            self.baseline = event
            return (f"Baseline: {event.features} kNN accuracy {event.knn_accuracy:.4f} "
                    f"(leave-one-out, k={event.k}, {event.n_images:,} images)")
        if isinstance(event, PlanEvent):
            if self._planned:
                return None
            self._planned = True
            return (f"Planned {event.total_steps:,} steps ({event.warmup_steps:,} warm-up) for the "
                    f"{format_minutes(event.budget_s / 60)} min budget at {event.seconds_per_step:.3f} s per step")
        if isinstance(event, CheckpointEvent):
            return f"Checkpoint saved: {event.path}" if event.reason == "stop" else None
        if isinstance(event, LogEvent):
            return event.message
        if isinstance(event, ErrorEvent):
            return f"Error: {event.message}"
        if isinstance(event, StateEvent):
            return "Paused" if event.state == "paused" else "Training again"
        if isinstance(event, RunFinished):
            return f"Finished: {event.status} at step {event.global_step:,}"
        return None


# The engine words its refusals for the command line; the app names its own controls instead.
_APP_WORDS = [
    (re.compile(r"use --batch-size (\d+) or fewer"), r"set Batch size to \1 or fewer"),
    (re.compile(r"try --device cpu"), "choose the CPU in Device"),
]


def for_app(message: str) -> str:
    """A message of the engine with its command-line flags put as the app's controls."""
    for pattern, words in _APP_WORDS:
        message = pattern.sub(words, message)
    return message


def preparing_text(event: PrepareProgress) -> str:
    what = "Decoding images" if event.stage == "decode" else "Scanning"
    return f"{what}… {event.done:,} of {event.total:,}" if event.total else f"{what}…"


def progress_text(h: RunHistory, minutes: float | None, epochs: int) -> tuple[str, int]:
    """The progress line and the bar's maximum (0: a busy bar, while a budgeted run measures its speed).

    ``minutes`` is the run's budget (None for an epochs run); a planned run's own budget wins.
    ``epochs`` is shown when the run's steps per epoch are not known.
    """
    step = h.last_step
    total = h.total_steps or 1
    if step is None:
        return "Not started", total
    if h.paused:
        return "Paused", total
    if h.finished is not None:
        return f"{h.finished.status.capitalize()} · step {step.global_step:,} of {total:,}", total
    budget = h.plan.budget_s / 60 if h.plan is not None else minutes
    speed = f"{step.images_per_s:,.0f} images/s"
    if budget is not None and h.plan is None:
        return (f"Measuring speed to plan the {format_minutes(budget)} min budget · step {step.global_step:,} · "
                f"{speed}"), 0
    per_epoch = h.started.steps_per_epoch if h.started is not None else 0
    if per_epoch:
        epochs = math.ceil(total / per_epoch)
    where = f"Epoch {step.epoch + 1} of {epochs} · step {step.global_step:,} of {total:,} · "
    if budget is not None:
        return where + f"{format_minutes(budget)} min budget · {speed} · {format_seconds(step.eta_s)} left", total
    return where + f"{speed} · ETA {format_seconds(step.eta_s)}", total
