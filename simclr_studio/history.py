"""A run's curves, rebuilt from its events (live or from events.jsonl), and loss smoothing.

No Qt here: the GUI plots these arrays, tests check them directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter  # imported here, not on first use: a first import stalls the GUI ~0.3 s

from simclr_studio.events import (
    BaselineEvent,
    EpochEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    PlanEvent,
    RunFinished,
    RunStarted,
    StateEvent,
    StepEvent,
)


def smooth_ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased so early points are not pulled to 0."""
    values = np.asarray(values, dtype=np.float64)
    if weight <= 0 or values.size == 0:
        return values.copy()
    # acc_i = w·acc_{i-1} + (1-w)·v_i as a linear filter (vectorised: fast enough at 60 Hz for 1e5 points),
    # divided by the weight mass 1 - w^(i+1) that a zero-initialised average has accumulated.
    acc = lfilter([1 - weight], [1, -weight], values)
    return acc / (1 - weight ** np.arange(1, values.size + 1))


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` points (same length as the input)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values.copy()
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


@dataclass
class RunHistory:
    """Curves and state of one run, fed event by event."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    epoch_end_steps: list[int] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    knn_epochs: list[int] = field(default_factory=list)
    knn_accuracy: list[float] = field(default_factory=list)
    knn_k: int = 0  # neighbours of the latest kNN measurement (0: not recorded)
    baseline: BaselineEvent | None = None  # raw pixels under the same kNN protocol
    plan: PlanEvent | None = None  # a time-budgeted run's schedule, once its speed is measured
    total_steps: int = 0
    last_step: StepEvent | None = None
    started: RunStarted | None = None
    finished: RunFinished | None = None
    errors: list[str] = field(default_factory=list)
    paused: bool = False

    def add(self, event: Event) -> None:
        if isinstance(event, StepEvent):
            if self.steps and event.global_step <= self.steps[-1]:
                # A resumed run repeats steps after its last checkpoint: keep the newest values.
                cut = int(np.searchsorted(self.steps, event.global_step))
                for series in (self.steps, self.loss, self.lr, self.throughput):
                    del series[cut:]
            self.steps.append(event.global_step)
            self.loss.append(event.loss)
            self.lr.append(event.lr)
            self.throughput.append(event.images_per_s)
            self.total_steps = event.total_steps
            self.last_step = event
        elif isinstance(event, EpochEvent):
            self.epoch_end_steps.append(self.steps[-1] if self.steps else 0)
            self.epoch_loss.append(event.loss)
        elif isinstance(event, EvalEvent):
            self.knn_epochs.append(event.epoch + 1)
            self.knn_accuracy.append(event.knn_accuracy)
            self.knn_k = event.k or self.knn_k
        elif isinstance(event, BaselineEvent):
            self.baseline = event
            self.knn_k = self.knn_k or event.k  # the same protocol: its k until an epoch's kNN reports one
        elif isinstance(event, PlanEvent):
            self.plan = event
            self.total_steps = event.total_steps
        elif isinstance(event, RunStarted):
            self.started = event
            self.finished = None
            self.total_steps = event.total_steps
        elif isinstance(event, RunFinished):
            self.finished = event
            self.paused = False
        elif isinstance(event, ErrorEvent):
            self.errors.append(event.message)
        elif isinstance(event, StateEvent):
            self.paused = event.state == "paused"

    def extend(self, events: Iterable[Event]) -> None:
        for event in events:
            self.add(event)

    @property
    def running(self) -> bool:
        return self.started is not None and self.finished is None
