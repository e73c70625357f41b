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

CALIBRATION_STEPS = 8  # steps timed before the first real plan (the very first step is not timed)
WARMUP_FRACTION = 0.1  # as the epoch schedule's default: a tenth of the run warms up


class TimeBudget:
    def __init__(self, minutes: float, used_s: float = 0.0):
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

    def to_state(self) -> dict:
        return {"budget_s": self.budget_s, "used_s": self.used_s(), "calibrated": self.calibrated}

    # ---- planning ------------------------------------------------------------------------------
    def plan(self, global_step: int, seconds_per_step: float, steps_per_epoch: int) -> tuple[int, int]:
        """(total steps, warm-up steps) that end the run when the budget is spent, given the speed."""
        seconds_per_step = max(seconds_per_step, 1e-6)
        epoch_end = max(self._epoch_end_s[-3:]) if self._epoch_end_s else 0.0
        left = self.budget_s - self.used_s() - epoch_end  # the final epoch end (kNN, checkpoint) included
        steps_left = max(0, int(left / seconds_per_step))
        for _ in range(3):  # epoch ends between here and the end also cost time
            ends = (global_step + steps_left) // steps_per_epoch - global_step // steps_per_epoch
            steps_left = max(0, int((left - ends * epoch_end) / seconds_per_step))
        total = global_step + max(1, steps_left)
        return total, int(math.ceil(WARMUP_FRACTION * total))
