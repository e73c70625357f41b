import numpy as np
import pytest

from simclr_studio.events import (
    BaselineEvent,
    EpochEvent,
    EvalEvent,
    EventLog,
    PlanEvent,
    RunFinished,
    RunStarted,
    StateEvent,
    StepEvent,
    read_events,
)
from simclr_studio.history import RunHistory, moving_average, smooth_ema


def ema_loop(values, weight):
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc = acc * weight + (1 - weight) * v
        norm = norm * weight + (1 - weight)
        out.append(acc / norm)
    return np.array(out)


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.9, 0.99])
def test_debiased_ema_matches_tensorboards_definition(weight):
    values = np.random.default_rng(0).normal(size=200)
    assert np.allclose(smooth_ema(values, weight), ema_loop(values, weight))
    assert smooth_ema(values, weight)[0] == pytest.approx(values[0])  # debiased: no pull towards 0


def test_moving_average():
    assert moving_average(np.array([1.0, 2, 3, 4]), 2).tolist() == [1.0, 1.5, 2.5, 3.5]


def step(n, loss):
    return StepEvent(epoch=0, step=n - 1, global_step=n, total_steps=10, loss=loss, lr=0.1, images_per_s=5.0,
                     eta_s=1.0)


def test_history_follows_a_run_and_a_resume():
    h = RunHistory()
    h.add(RunStarted(run_dir="r", device="cpu", backbone="small-cnn", n_images=8, steps_per_epoch=2, total_steps=10,
                     start_epoch=0, start_global_step=0, cached=True, labeled=True))
    for n in range(1, 6):
        h.add(step(n, 10.0 - n))
    h.add(EpochEvent(epoch=0, loss=7.0, seconds=1.0, images_per_s=8.0))
    h.add(EvalEvent(epoch=0, knn_accuracy=0.5, n_images=8))
    h.add(StateEvent(state="paused"))
    assert h.running and h.paused and h.steps == [1, 2, 3, 4, 5] and h.knn_epochs == [1]
    h.add(RunFinished(status="stopped", epoch=0, global_step=5))
    assert not h.running and not h.paused
    # A resumed run restarts at the last checkpoint (step 3) and repeats steps 4 and 5: newest values win.
    h.add(RunStarted(run_dir="r", device="cpu", backbone="small-cnn", n_images=8, steps_per_epoch=2, total_steps=10,
                     start_epoch=1, start_global_step=3, cached=True, labeled=True))
    h.add(step(4, 0.4))
    h.add(step(5, 0.5))
    assert h.steps == [1, 2, 3, 4, 5] and h.loss[-2:] == [0.4, 0.5] and h.running


def test_history_records_the_baseline_k_and_plan_from_the_events_file(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    for event in (RunStarted(run_dir="r", device="cpu", backbone="small-cnn", n_images=24, steps_per_epoch=3,
                             total_steps=3, start_epoch=0, start_global_step=0, cached=True, labeled=True),
                  BaselineEvent(features="raw pixels", knn_accuracy=0.68, n_images=24, k=23),
                  PlanEvent(total_steps=90, warmup_steps=9, seconds_per_step=0.2, budget_s=18.0),
                  step(1, 1.0), EvalEvent(epoch=0, knn_accuracy=0.7, n_images=24, k=23)):
        log.write(event)
    log.close()
    h = RunHistory()
    h.extend(read_events(tmp_path / "events.jsonl"))  # as when a finished run is reopened
    assert h.baseline is not None and h.baseline.knn_accuracy == 0.68 and h.baseline.features == "raw pixels"
    assert h.knn_k == 23 and h.knn_accuracy == [0.7]
    assert h.plan.budget_s == 18.0


def test_the_plan_sets_the_total_and_k_follows_the_latest_eval():
    h = RunHistory()
    h.add(RunStarted(run_dir="r", device="cpu", backbone="small-cnn", n_images=8, steps_per_epoch=2, total_steps=4,
                     start_epoch=0, start_global_step=0, cached=True, labeled=True))
    assert h.total_steps == 4 and h.plan is None and h.baseline is None and h.knn_k == 0
    h.add(BaselineEvent(features="raw pixels", knn_accuracy=0.5, n_images=8, k=7))
    assert h.knn_k == 7  # the same protocol: its k until an epoch reports one
    h.add(PlanEvent(total_steps=500, warmup_steps=50, seconds_per_step=0.1, budget_s=60.0))
    assert h.total_steps == 500
    h.add(EvalEvent(epoch=0, knn_accuracy=0.6, n_images=8, k=5))
    h.add(EvalEvent(epoch=1, knn_accuracy=0.6, n_images=8))  # an old log without k keeps the last known one
    assert h.knn_k == 5
