"""A time budget for a training run: "train for M minutes" instead of "train for E epochs".

The run measures its own speed in its first steps and lays the warm-up + cosine schedule over the
time that is left, so the learning rate reaches its floor when the budget is spent. It plans again
at every epoch end, when the cost of the epoch ends (online kNN, checkpoints) is known too. Only
active time counts: data preparation does, pauses do not, and a resumed run continues from the time
its checkpoint says was used.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

CALIBRATION_STEPS = 8  # steps timed before the first real plan (the very first step is not timed)
WARMUP_FRACTION = 0.1  # as the epoch schedule's default: a tenth of the run warms up
# Until the first plan (after the first step) the run must not end nor leave its warm-up.
PROVISIONAL_PLAN = (10**6, 10**5)  # (steps beyond the current one, warm-up steps)


class StepTimes:
    """The durations of this session's steps, pauses and epoch ends left out: the run's speed."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._tick = time.perf_counter()

    def restart(self) -> None:
        """At an epoch start: the epoch end before it is not step time."""
        self._tick = time.perf_counter()

    def skip_pause(self) -> float:
        """After a pause: its seconds (since the last step or the epoch start), which no step counts."""
        now = time.perf_counter()
        paused, self._tick = now - self._tick, now
        return paused

    def lap(self) -> None:
        """A step ended."""
        now = time.perf_counter()
        self.durations.append(now - self._tick)
        self._tick = now

    def recent_mean(self) -> float:
        """Seconds per step over the last 20 steps (speed and ETA as shown)."""
        recent = self.durations[-20:]
        return sum(recent) / len(recent)

    def timed(self) -> list[float]:
        """The steps a plan may trust: all but the session's first, which allocates (unless it is alone)."""
        return self.durations[1:] if len(self.durations) > 1 else self.durations


class TimeBudget:
    def __init__(self, minutes: float, used_s: float = 0.0) -> None:
        self.budget_s = minutes * 60.0
        self.used_before_s = used_s  # active time of earlier sessions of this run
        self._started = time.perf_counter()
        self._paused_s = 0.0
        self._epoch_end_s: list[float] = []  # measured cost of each epoch end
        self.calibrated = False

    # ---- active time ------------------------------------------------------------------------
    def used_s(self) -> float:
        return self.used_before_s + time.perf_counter() - self._started - self._paused_s

    def add_pause(self, seconds: float) -> None:
        self._paused_s += seconds

    def add_epoch_end(self, seconds: float) -> None:
        self._epoch_end_s.append(seconds)

    def to_state(self) -> dict[str, Any]:
        return {"budget_s": self.budget_s, "used_s": self.used_s(), "calibrated": self.calibrated}

    def first_plan(self, saved: dict[str, Any], global_step: int) -> tuple[int, int]:
        """(total steps, warm-up steps) to start with, from a checkpoint's schedule (``{}`` for a new
        run): its plan when it was calibrated for this same budget; else a provisional one, which the
        first step replaces. Also takes over the active time the checkpoint says was used."""
        self.used_before_s = float(saved.get("used_s", 0.0)) if saved.get("budget_s") else 0.0
        if saved.get("calibrated") and saved.get("budget_s") == self.budget_s:
            self.calibrated = True
            return int(saved["total_steps"]), int(saved["warmup_steps"])
        more, warmup = PROVISIONAL_PLAN
        return global_step + more, warmup

    # ---- planning ------------------------------------------------------------------------------
    def pace(self, times: StepTimes) -> float | None:
        """Seconds per step to plan with: the median of the recent timed steps. None while the first
        calibration is still timing its steps (the very first step alone gives a rough first plan)."""
        timed = times.timed()
        if len(times.durations) > 1 and len(timed) < CALIBRATION_STEPS and not self.calibrated:
            return None
        return float(np.median(timed[-50:]))

    def plan(self, global_step: int, seconds_per_step: float, steps_per_epoch: int) -> tuple[int, int]:
        """(total steps, warm-up steps) that end the run when the budget is spent, given the speed."""
        seconds_per_step = max(seconds_per_step, 1e-6)
        epoch_end = max(self._epoch_end_s[-3:]) if self._epoch_end_s else 0.0
        left = self.budget_s - self.used_s() - epoch_end  # the final epoch end (kNN, checkpoint) included

        def cost(steps: int) -> float:  # the steps, and the epoch ends they cross (kNN, checkpoint)
            ends = (global_step + steps) // steps_per_epoch - global_step // steps_per_epoch
            return steps * seconds_per_step + ends * epoch_end

        # The most steps whose cost fits what is left (cost grows with steps: a binary search).
        lo, hi = 0, max(0, int(left / seconds_per_step))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost(mid) <= left else (lo, mid - 1)
        total = global_step + max(1, lo)
        return total, int(math.ceil(WARMUP_FRACTION * total))
