"""The trainer's phases alone: the position and schedule a checkpoint restores, the time budget's
first plan and pace, the online kNN's timing, and pause/stop between steps."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from simclr_studio import budget as budget_module
from simclr_studio.budget import CALIBRATION_STEPS, PROVISIONAL_PLAN, StepTimes, TimeBudget
from simclr_studio.checkpoint import REQUIRED_KEYS, load_training_checkpoint
from simclr_studio.config import RunConfig
from simclr_studio.events import Event, LogEvent, RunStarted, StepEvent
from simclr_studio.online_knn import WAIT_FACTOR, OnlineKnn
from simclr_studio.optim import build_optimizer
from simclr_studio.run_control import RunControl
from simclr_studio.run_folder import RunFolder
from simclr_studio.train import Trainer
from simclr_studio.training_state import (
    Position,
    Schedule,
    checkpoint_state,
    restore_training_state,
    resume_position,
    write_checkpoint,
)

# The keys of every checkpoint, in their order: older run folders must go on resuming.
CHECKPOINT_KEYS = ["model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step_in_epoch", "global_step",
                   "world_size", "config"]


def saved(epoch: int, step_in_epoch: int, global_step: int, world_size: int | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step}
    if world_size is not None:
        state["world_size"] = world_size
    return state


# ---- restore: the position -------------------------------------------------------------------
def test_a_checkpoint_resumes_where_it_was_saved() -> None:
    assert resume_position(saved(1, 2, 5, world_size=1), 1, steps_per_epoch=3) == Position(1, 2, 5)
    assert resume_position(saved(2, 0, 6), 1, steps_per_epoch=3) == Position(2, 0, 6)  # no world_size: one process


def test_a_stop_after_an_epochs_last_step_resumes_at_the_next_epoch() -> None:
    assert resume_position(saved(1, 3, 6, world_size=1), 1, steps_per_epoch=3) == Position(2, 0, 6)


def test_fewer_processes_resume_after_the_same_images_in_steps_of_the_smaller_global_batch() -> None:
    # 64 images, 8 per process: 4 steps per epoch on 2 processes, 8 on one. Three steps of 2 × 8
    # images are six of 8: epoch 1 resumes at its step 6, global step 8 + 6.
    assert resume_position(saved(1, 3, 7, world_size=2), 1, steps_per_epoch=8) == Position(1, 6, 14)
    # All four steps of the epoch done on 2 processes: the next epoch, at global step 8 of the new size.
    assert resume_position(saved(0, 4, 4, world_size=2), 1, steps_per_epoch=8) == Position(1, 0, 8)


def test_more_processes_resume_after_the_whole_steps_of_the_larger_global_batch_done() -> None:
    # Five steps of 8 images on one process: two whole steps of 2 × 8 (the odd step repeats).
    assert resume_position(saved(1, 5, 13, world_size=1), 2, steps_per_epoch=4) == Position(1, 2, 6)
    assert resume_position(saved(2, 0, 24, world_size=1), 4, steps_per_epoch=2) == Position(2, 0, 4)


def test_a_different_world_size_is_announced_and_resumes_at_the_same_images(tiny_config: RunConfig,
                                                                               tmp_path: Path) -> None:
    """A checkpoint said to come from 2 processes, resumed on one: 24 images, 8 per step."""
    events: list[Event] = []
    trainer = Trainer(tiny_config, tmp_path / "run", on_event=lambda e: trainer.stop()
                      if isinstance(e, StepEvent) and e.global_step == 4 else None)
    assert trainer.run() == "stopped"
    path = RunFolder(tmp_path / "run").last_checkpoint
    state = torch.load(path, weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 4)
    state["world_size"] = 2  # one step of epoch 1 done on 2 processes: 16 of its images
    torch.save(state, path)
    cfg = RunConfig.load(tmp_path / "run" / "config.json")
    assert Trainer(cfg, tmp_path / "run", on_event=events.append, resume=True).run() == "completed"
    messages = [e.message for e in events if isinstance(e, LogEvent)]
    assert any("checkpoint of a 2-process run resumed on 1: global batch 16 → 8" in m for m in messages)
    assert any(m.endswith("at epoch 2, step 2") for m in messages)
    started = next(e for e in events if isinstance(e, RunStarted))
    assert (started.start_epoch, started.start_global_step) == (1, 5)  # 3 steps of epoch 0, 2 of epoch 1
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert (steps[0].epoch, steps[0].step, steps[0].global_step) == (1, 2, 6)


# ---- restore: optimiser, RNG; the checkpoint's contents --------------------------------------
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_a_checkpoint_holds_every_key_and_restores_optimiser_and_rng(tmp_path: Path) -> None:
    model = tiny_model()
    optimizer = build_optimizer(model, "lars", 0.1, 1e-6)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    schedule = Schedule(base_lr=0.1, steps_per_epoch=3, total_steps=30, warmup_steps=3)
    cfg = RunConfig(seed=7)
    state = checkpoint_state(model, optimizer, None, schedule, None, Position(2, 1, 7), 1, cfg)
    assert list(state) == CHECKPOINT_KEYS and set(REQUIRED_KEYS) - {"format"} <= set(state)
    assert state["scheduler"] == {"kind": "warmup-cosine", "base_lr": 0.1, "warmup_steps": 3, "total_steps": 30}
    assert (state["epoch"], state["step_in_epoch"], state["global_step"], state["world_size"]) == (2, 1, 7, 1)
    assert json.loads(state["config"])["seed"] == 7
    write_checkpoint(RunFolder(tmp_path), state, epoch_end=False, keep=3)
    state = load_training_checkpoint(RunFolder(tmp_path).last_checkpoint)
    expected = torch.rand(3)  # what the RNG draws next after the checkpoint

    fresh = build_optimizer(tiny_model(), "lars", 0.5, 1e-6)
    torch.rand(10)  # the RNG moved on since
    position = restore_training_state(state, fresh, None, world_size=1, steps_per_epoch=3)
    assert position == Position(2, 1, 7)
    assert torch.equal(torch.rand(3), expected)
    assert fresh.param_groups[0]["lr"] == 0.1
    momentum = [fresh.state[p]["momentum_buffer"] for p in fresh.param_groups[0]["params"]]
    assert momentum and all(m.abs().sum() > 0 for m in momentum)


def test_a_time_budget_is_saved_with_the_schedule() -> None:
    budget = TimeBudget(minutes=2.0, used_s=30.0)
    budget.calibrated = True
    schedule = Schedule(base_lr=0.1, steps_per_epoch=3, total_steps=300, warmup_steps=30)
    model = tiny_model()
    state = checkpoint_state(model, build_optimizer(model, "sgd", 0.1, 0.0), None, schedule, budget, Position(),
                             1, RunConfig())
    scheduler = state["scheduler"]
    assert list(scheduler) == ["kind", "base_lr", "warmup_steps", "total_steps", "budget_s", "used_s", "calibrated"]
    assert scheduler["budget_s"] == 120.0 and scheduler["calibrated"] and 30.0 <= scheduler["used_s"] < 35.0


def test_epoch_end_checkpoints_keep_the_newest_copies(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    model = tiny_model()
    optimizer = build_optimizer(model, "sgd", 0.1, 0.0)
    schedule = Schedule(base_lr=0.1, steps_per_epoch=3, total_steps=30, warmup_steps=3)
    for epoch in range(1, 5):
        state = checkpoint_state(model, optimizer, None, schedule, None, Position(epoch, 0, 3 * epoch), 1,
                                 RunConfig())
        write_checkpoint(folder, state, epoch_end=True, keep=2)
    stop = checkpoint_state(model, optimizer, None, schedule, None, Position(4, 1, 13), 1, RunConfig())
    write_checkpoint(folder, stop, epoch_end=False, keep=2)
    assert [p.name for p in folder.epoch_checkpoints()] == ["epoch_0003.pt", "epoch_0004.pt"]
    assert load_training_checkpoint(folder.epoch_checkpoint(4))["global_step"] == 12
    assert load_training_checkpoint(folder.last_checkpoint)["global_step"] == 13


def test_the_epoch_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = RunConfig(epochs=20, batch_size=256, optimizer="sgd", lr=0.4)
    schedule = Schedule.for_epochs(cfg, world_size=1, steps_per_epoch=10)
    assert (schedule.total_steps, schedule.warmup_steps, schedule.base_lr) == (200, 20, 0.4)  # a tenth warms up
    assert schedule.lr(0) == pytest.approx(0.4 / 20) and schedule.lr(19) == pytest.approx(0.4)
    assert schedule.lr(199) < 1e-4 and schedule.lr(100) < schedule.lr(50)
    assert Schedule.for_epochs(RunConfig(batch_size=256, optimizer="sgd"), 4, 10).base_lr == 4 * Schedule.for_epochs(
        RunConfig(batch_size=256, optimizer="sgd"), 1, 10).base_lr  # the global batch sets the peak lr


# ---- restore: the time budget's first plan ---------------------------------------------------
def test_a_new_budgeted_run_starts_with_a_provisional_plan() -> None:
    budget = TimeBudget(minutes=1.0)
    more, warmup = PROVISIONAL_PLAN
    assert budget.first_plan({}, global_step=0) == (more, warmup)
    assert budget.used_before_s == 0.0 and not budget.calibrated


def test_a_calibrated_plan_for_the_same_budget_is_taken_over() -> None:
    budget = TimeBudget(minutes=1.0)
    scheduler = {"total_steps": 500, "warmup_steps": 50, "budget_s": 60.0, "used_s": 20.0, "calibrated": True}
    assert budget.first_plan(scheduler, global_step=100) == (500, 50)
    assert budget.calibrated and budget.used_before_s == 20.0


def test_another_budget_keeps_the_used_time_but_plans_anew() -> None:
    budget = TimeBudget(minutes=2.0)
    scheduler = {"total_steps": 500, "warmup_steps": 50, "budget_s": 60.0, "used_s": 20.0, "calibrated": True}
    assert budget.first_plan(scheduler, global_step=100) == (100 + PROVISIONAL_PLAN[0], PROVISIONAL_PLAN[1])
    assert not budget.calibrated and budget.used_before_s == 20.0


def test_a_run_trained_by_epochs_starts_its_budget_from_nothing() -> None:
    budget = TimeBudget(minutes=2.0)
    scheduler = {"kind": "warmup-cosine", "base_lr": 0.1, "total_steps": 30, "warmup_steps": 3}
    assert budget.first_plan(scheduler, global_step=12) == (12 + PROVISIONAL_PLAN[0], PROVISIONAL_PLAN[1])
    assert budget.used_before_s == 0.0


# ---- one epoch: timing and the budget's pace -------------------------------------------------
@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """budget's perf_counter, moved by hand."""
    now = [100.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: now[0])
    yield now


def times_of(durations: list[float]) -> StepTimes:
    times = StepTimes()
    times.durations = list(durations)
    return times


def test_step_times_leave_out_pauses_and_epoch_ends(clock: list[float]) -> None:
    times = StepTimes()
    clock[0] += 0.5
    times.lap()
    clock[0] += 3.0  # an epoch end
    times.restart()
    clock[0] += 0.25
    times.lap()
    clock[0] += 10.0  # paused
    assert times.skip_pause() == 10.0
    clock[0] += 0.25
    times.lap()
    assert times.durations == [0.5, 0.25, 0.25] and times.recent_mean() == pytest.approx(1 / 3)
    assert times.timed() == [0.25, 0.25]  # the first step allocates: no plan trusts it


def test_the_pace_is_rough_after_the_first_step_then_waits_for_the_calibration_steps() -> None:
    budget = TimeBudget(minutes=1.0)
    assert budget.pace(times_of([2.0])) == 2.0  # the first plan, from the one step there is
    for n in range(2, CALIBRATION_STEPS + 1):
        assert budget.pace(times_of([2.0] + [0.1] * (n - 1))) is None, n
    assert budget.pace(times_of([2.0] + [0.1] * (CALIBRATION_STEPS - 1) + [0.3])) == pytest.approx(0.1)
    budget.calibrated = True  # e.g. resumed with its plan: every epoch end re-plans from what there is
    assert budget.pace(times_of([2.0, 0.2, 0.4])) == pytest.approx(0.3)
    assert budget.pace(times_of([5.0] * 10 + [0.1] * 50)) == pytest.approx(0.1)  # the last 50 only


# ---- end of epoch: when the online kNN is due ------------------------------------------------
def knn(cost_s: float = 0.0, ended_at: float = 0.0) -> OnlineKnn:
    return OnlineKnn(np.zeros(10), torch.zeros(10, 3, 4, 4, dtype=torch.uint8), 2, cost_s, ended_at)


def test_the_online_knn_follows_eval_every_without_a_budget() -> None:
    assert [knn().due(epoch, 1, budgeted=False, last=False, now=0.0) for epoch in range(3)] == [True] * 3
    assert [knn().due(epoch, 2, budgeted=False, last=False, now=0.0) for epoch in range(4)] == [False, True] * 2
    assert not knn().due(2, 2, budgeted=True, last=True, now=0.0)  # not even at the end when not its epoch
    assert knn(cost_s=5.0, ended_at=99.0).due(0, 1, budgeted=False, last=False, now=100.0)


def test_under_a_budget_the_online_knn_takes_at_most_a_twentieth_of_the_time() -> None:
    assert WAIT_FACTOR == 19  # 1 part measuring, 19 parts training
    assert knn().due(0, 1, budgeted=True, last=False, now=0.0)  # the first: its cost is not known yet
    done = knn(cost_s=2.0, ended_at=100.0)
    assert not done.due(5, 1, budgeted=True, last=False, now=100.0 + 19 * 2.0 - 0.01)
    assert done.due(5, 1, budgeted=True, last=False, now=100.0 + 19 * 2.0)
    assert done.due(5, 1, budgeted=True, last=True, now=100.5)  # always at the run's last epoch end


def test_the_online_knn_remembers_its_cost() -> None:
    timed = knn()
    timed.measured(started_at=10.0, ended_at=12.5)
    assert (timed.cost_s, timed.ended_at) == (2.5, 12.5)


# ---- between steps: pause and stop -------------------------------------------------------------
def test_nothing_asked_goes_on() -> None:
    states: list[str] = []
    assert RunControl().between_steps(None, states.append) == (False, False) and states == []


def test_a_stop_stops_at_once() -> None:
    control = RunControl()
    states: list[str] = []
    control.stop()
    assert control.between_steps(None, states.append) == (True, False) and states == []


def test_a_pause_waits_until_unpaused_from_another_thread() -> None:
    control = RunControl()
    states: list[str] = []
    control.pause()
    timer = threading.Timer(0.2, control.unpause)
    timer.start()
    start = time.perf_counter()
    assert control.between_steps(None, states.append) == (False, True)
    assert time.perf_counter() - start >= 0.15 and states == ["paused", "running"]
    timer.join()


def test_a_stop_while_paused_stops() -> None:
    control = RunControl()
    states: list[str] = []
    control.pause()
    timer = threading.Timer(0.1, control.stop)
    timer.start()
    assert control.between_steps(None, states.append) == (True, True) and states == ["paused"]
    timer.join()


def test_a_pause_asked_on_another_rank_pauses_this_one_too() -> None:
    answers = iter([(False, True), (False, True), (False, False)])  # any rank: (stop, pause)
    asked: list[tuple[bool, bool]] = []

    def agree(stop: bool, pause: bool) -> tuple[bool, bool]:
        asked.append((stop, pause))
        return next(answers)

    states: list[str] = []
    assert RunControl().between_steps(agree, states.append) == (False, True)
    assert states == ["paused", "running"] and asked == [(False, False)] * 3  # polled, not waited on forever
