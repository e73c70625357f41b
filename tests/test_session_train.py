"""TrainSession without Qt: real tiny training processes started, paused, stopped and resumed; run
folders opened live, resumable and finished; the errors a user can run into."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import FakeChild, make_image_folder, write_run
from conftest import run_started as started
from conftest import step_event as step

from simclr_studio.config import RunConfig
from simclr_studio.events import (
    BaselineEvent,
    EvalEvent,
    EventLog,
    LogEvent,
    PlanEvent,
    RunFinished,
    read_events,
)
from simclr_studio.run_folder import RunFolder
from simclr_studio.session.train import TrainError, TrainSession, Update, new_run_dir
from simclr_studio.training_link import ChildRun


def tiny(data: Path, epochs: int = 1, **kw) -> RunConfig:
    settings = dict(data_dir=str(data), backbone="small-cnn", image_size=16, batch_size=8, epochs=epochs,
                    device="cpu", optimizer="sgd", eval_every=0, seed=3)
    return RunConfig(**{**settings, **kw})


def poll_until(session: TrainSession, done, timeout: float = 90.0) -> list[Update]:
    """Poll as the app's timer does (~15 Hz) until ``done(updates)`` holds."""
    updates: list[Update] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = session.poll()
        if update:
            updates.append(update)
        if done(updates):
            return updates
        time.sleep(0.066)
    raise AssertionError(f"timed out in state {session.state}: {[line for u in updates for line in u.lines]}")


def ended(updates: list[Update]) -> bool:
    return any(u.ended for u in updates)


def lines(updates: list[Update]) -> str:
    return "\n".join(line for u in updates for line in u.lines)


# ---- real training processes -----------------------------------------------------------------------
@pytest.mark.slow  # two real training processes in a row
def test_a_run_trains_to_the_end_then_resumes_longer(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=3, per_class=8)
    session = TrainSession()
    assert session.state == "empty"
    session.data_dir = str(data)
    assert session.state == "ready"
    run = tmp_path / "run"
    session.start(tiny(data, epochs=1), run)
    assert session.is_running() and session.state == "training" and session.run_dir == run
    updates = poll_until(session, ended)
    assert updates[0].reset and updates[0].lines[0] == f"Starting run in {run}"
    assert updates[-1].ended == "completed" and not session.is_running()
    assert session.history.steps == [1, 2, 3] and session.history.finished.status == "completed"
    text = lines(updates)
    assert "Epoch 1: loss" in text and "Finished: completed at step 3" in text and "Run completed." in text
    assert session.state == "resumable" and session.can_resume()  # an epochs run can be lengthened

    session.resume(epochs=2, device="cpu")
    assert session.config.epochs == 2 and session.state == "training"
    updates = poll_until(session, ended)
    assert not any(u.reset for u in updates)  # the curves go on from the checkpoint
    assert f"Resuming run in {run}" in lines(updates) and "resuming at step 3" in lines(updates)
    assert session.history.steps == [1, 2, 3, 4, 5, 6] and updates[-1].ended == "completed"


def test_pause_unpause_and_stop_with_a_checkpoint(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=2, per_class=8)
    session = TrainSession()
    run = tmp_path / "run"
    session.start(tiny(data, epochs=500), run)
    poll_until(session, lambda _: len(session.history.steps) >= 2)
    session.pause()
    assert session.state == "paused"  # at once: the process confirms a step later
    told = poll_until(session, lambda _: session.history.paused)
    steps = len(session.history.steps)
    time.sleep(0.4)
    assert session.poll().state == "paused" and len(session.history.steps) == steps
    session.unpause()
    assert session.state == "training"
    told += poll_until(session, lambda _: len(session.history.steps) > steps)
    assert "Paused" in lines(told) and "Training again" in lines(told)
    session.stop()
    assert session.state == "stopping"
    session.pause()  # too late: a stopping run only ends
    assert session.state == "stopping"
    updates = poll_until(session, ended)
    assert updates[-1].ended == "stopped" and "Checkpoint saved" in lines(updates)
    assert session.state == "resumable" and RunFolder(run).can_resume()
    stops = [e for e in read_events(run / "events.jsonl") if e.kind == "checkpoint" and e.reason == "stop"]
    assert len(stops) == 1


def test_stop_and_wait_ends_the_process(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=2, per_class=8)
    session = TrainSession()
    session.start(tiny(data, epochs=500), tmp_path / "run")
    poll_until(session, lambda _: len(session.history.steps) >= 1)
    assert session.stop_and_wait(60)
    assert session.is_running()  # until its last events are polled
    update = session.poll()
    assert update.ended == "stopped" and not session.is_running() and session.state == "resumable"
    assert session.stop_and_wait() and session.poll().ended is None  # nothing left to stop


def test_a_failing_run_reports_its_error(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=2, per_class=3)
    session = TrainSession()
    session.start(tiny(data, batch_size=64), tmp_path / "run")  # more than the 6 images
    updates = poll_until(session, ended)
    errors = [e for u in updates for e in u.errors]
    assert errors and "batch size 64" in errors[-1] and updates[-1].ended == "failed"
    assert "Error: " in lines(updates)
    assert session.state == "finished"  # no checkpoint: a new run may start in the same folder


# ---- the resume rule (no process) ------------------------------------------------------------------
def test_resume_keeps_a_budgeted_plan_and_lengthens_an_epochs_run(tmp_path, monkeypatch):
    import simclr_studio.session.train as train_session

    monkeypatch.setattr(train_session, "ChildRun", FakeChild)
    FakeChild.made = []
    base = dict(data_dir=str(tmp_path / "missing"), backbone="small-cnn", image_size=16, batch_size=8, device="cpu")
    stopped = [started(120), PlanEvent(total_steps=120, warmup_steps=12, seconds_per_step=0.5, budget_s=60),
               step(30, 120), RunFinished(status="stopped", epoch=9, global_step=30)]
    session = TrainSession()
    assert session.open(write_run(tmp_path / "budget", RunConfig(minutes=1.0, epochs=1, **base), stopped, True,
                                  age_s=600)) == "resumable"
    assert session.can_resume() and session.history.steps == [30]
    session.resume(epochs=40, device="cpu", nproc=2)
    child = FakeChild.made[-1]
    assert child.kind == "resume" and child.args == (None, "cpu", 2)  # no --epochs: the plan stays
    assert session.config.minutes == 1.0 and session.config.epochs == 1
    assert session.poll().ended == "stopped" and session.state == "resumable"

    # A completed budget has nothing left to resume.
    done = stopped[:-1] + [RunFinished(status="completed", epoch=40, global_step=120)]
    session.open(write_run(tmp_path / "spent", RunConfig(minutes=1.0, epochs=1, **base), done, True, age_s=600))
    assert session.state == "resumable" and session.budget_spent() and not session.can_resume()
    with pytest.raises(TrainError, match="1 min budget is spent"):
        session.resume(epochs=5)

    # An epochs run resumes lengthened, on the device asked for.
    epochs_run = write_run(tmp_path / "epochs", RunConfig(epochs=2, **base),
                           [started(6), step(3, 6), RunFinished(status="stopped", epoch=1, global_step=3)], True,
                           age_s=600)
    session.open(epochs_run)
    session.resume(epochs=5, device="cuda")
    assert FakeChild.made[-1].args == (5, "cuda", 1)
    assert session.config.epochs == 5 and session.config.minutes is None and session.config.device == "cuda"


def test_a_budgeted_run_resumes_without_an_epochs_override(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(ChildRun, "start", lambda self: commands.append(self.command))
    base = dict(data_dir=str(tmp_path / "missing"), device="cpu")
    events = [started(6), RunFinished(status="stopped", epoch=0, global_step=3)]
    session = TrainSession()
    session.open(write_run(tmp_path / "budget", RunConfig(minutes=5.0, epochs=1, **base), events, True, age_s=600))
    session.resume(epochs=9, device="cpu")
    assert "--resume" in commands[-1] and "--epochs" not in commands[-1]  # it would turn it into an epochs run
    session.poll()  # the process never started: the session hears it ended
    session.open(write_run(tmp_path / "epochs", RunConfig(epochs=2, **base), events, True, age_s=600))
    session.resume(epochs=9, device="cpu")
    assert commands[-1][commands[-1].index("--epochs") + 1] == "9"


def test_start_sends_the_config_and_the_process_count(tmp_path, monkeypatch):
    import simclr_studio.session.train as train_session

    monkeypatch.setattr(train_session, "ChildRun", FakeChild)
    data = make_image_folder(tmp_path / "imgs", classes=2, per_class=2)
    session = TrainSession()
    session.start(tiny(data), tmp_path / "run", nproc=2)
    child = FakeChild.made[-1]
    assert child.kind == "new" and child.args[0].data_dir == str(data) and child.args[1] == 2
    assert session.data_dir == str(data) and session.config is child.args[0]


# ---- errors -----------------------------------------------------------------------------------------
def test_what_cannot_start_says_why(tmp_path, monkeypatch):
    import simclr_studio.session.train as train_session

    data = make_image_folder(tmp_path / "imgs", classes=2, per_class=2)
    session = TrainSession()
    with pytest.raises(TrainError, match="open an image folder first"):
        session.start(RunConfig(), tmp_path / "run")
    with pytest.raises(TrainError, match="unknown backbone"):
        session.start(tiny(data, backbone="nope"), tmp_path / "run")
    for where in ("", "relative/run"):
        with pytest.raises(TrainError, match="a full path"):
            session.start(tiny(data), where)
    held = write_run(tmp_path / "held", tiny(data), [started(), RunFinished(status="stopped", epoch=0,
                                                                            global_step=3)], True, age_s=600)
    with pytest.raises(TrainError, match="already holds a run"):
        session.start(tiny(data), held)
    live = write_run(tmp_path / "live", tiny(data), [started(), step(1, 6)], False)
    with pytest.raises(TrainError, match="another process is writing"):
        session.start(tiny(data), live)
    with pytest.raises(TrainError, match="nothing to resume"):
        session.resume()
    assert session.state == "empty" and session.run_dir is None  # nothing was changed by the refusals

    monkeypatch.setattr(train_session, "ChildRun", FakeChild)
    monkeypatch.setattr(FakeChild, "is_running", lambda self: True)  # a run that goes on
    session.start(tiny(data), tmp_path / "run")
    for refused in (lambda: session.start(tiny(data), tmp_path / "other"), lambda: session.open(held),
                    lambda: session.resume(), session.new_run, session.clear_data,
                    lambda: session.suggest(str(data), 4, 20, False, "cpu", 1.0)):
        with pytest.raises(TrainError, match="a run is training"):
            refused()
    with pytest.raises(TrainError, match="cannot read config"):
        TrainSession().open(tmp_path / "no-such-run")


# ---- opening run folders ----------------------------------------------------------------------------
def test_opening_a_resumable_and_a_finished_run_replays_it(tmp_path):
    cfg = RunConfig(data_dir=str(tmp_path / "imgs"), epochs=2)
    events = [started(), BaselineEvent(features="raw pixels", knn_accuracy=0.5, n_images=24, k=23), step(3, 6),
              EvalEvent(epoch=0, knn_accuracy=0.9, n_images=24, k=23),
              RunFinished(status="stopped", epoch=0, global_step=3)]
    session = TrainSession()
    assert session.open(write_run(tmp_path / "stopped", cfg, events, True, age_s=600)) == "resumable"
    assert session.state == "resumable" and session.data_dir == cfg.data_dir and session.config == cfg
    update = session.poll()
    assert update.reset and len(update.events) == 5 and update.ended is None
    assert "Epoch 1: kNN accuracy 0.9000 (leave-one-out, k=23, 24 images); raw pixels 0.5000" in update.lines
    assert session.history.steps == [3] and session.history.baseline.knn_accuracy == 0.5

    assert session.open(write_run(tmp_path / "done", cfg, events, False, age_s=600)) == "finished"
    assert session.state == "finished" and session.poll().reset and not session.can_resume()
    session.new_run()
    assert session.state == "ready" and session.run_dir is None and session.history.steps == []
    session.clear_data()
    assert session.state == "empty"


def test_following_a_live_run_until_it_finishes(tmp_path):
    run = write_run(tmp_path / "live", RunConfig(data_dir=str(tmp_path / "imgs"), epochs=2),
                    [started(), step(1, 6), step(2, 6)], True)
    session = TrainSession()
    assert session.open(run) == "live" and session.state == "following" and not session.is_running()
    update = session.poll()
    assert update.reset and "Training elsewhere" in update.lines[0]
    assert session.history.steps == [1, 2]
    with pytest.raises(TrainError, match="following a run of another process"):
        session.start(tiny(tmp_path / "imgs"), tmp_path / "new")
    log = EventLog(run / "events.jsonl")
    log.write(step(3, 6))
    log.write(RunFinished(status="stopped", epoch=0, global_step=3))
    log.close()
    updates = poll_until(session, ended, timeout=5)
    assert session.history.steps == [1, 2, 3] and updates[-1].ended == "stopped"
    assert "The followed run has finished." in lines(updates)
    assert session.state == "resumable" and session.can_resume()


def test_a_followed_run_that_goes_quiet_is_no_longer_followed(tmp_path, monkeypatch):
    import simclr_studio.session.train as train_session

    run = write_run(tmp_path / "live", RunConfig(data_dir=str(tmp_path / "imgs")), [started(), step(1, 6)], False)
    session = TrainSession()
    assert session.open(run) == "live"
    session.poll()
    monkeypatch.setattr(train_session, "STALE_CHECK_S", 0.0)
    then = time.time() - 600  # the writer died ten minutes ago without a word
    os.utime(run / "events.jsonl", (then, then))
    updates = poll_until(session, ended, timeout=5)
    assert updates[-1].ended == "failed" and "no longer runs" in lines(updates) and session.state == "finished"


def test_following_starts_over_when_the_events_file_is_rewritten(tmp_path):
    run = tmp_path / "run"
    write_run(run, RunConfig(data_dir=str(tmp_path / "imgs")), [LogEvent(message=f"line {i} " + "x" * 50)
                                                                for i in range(5)], False)
    session = TrainSession()
    assert session.open(run) == "live"
    assert len(session.poll().events) == 5
    (run / "events.jsonl").write_text("")  # a new run replaced the file
    log = EventLog(run / "events.jsonl")
    log.write(LogEvent(message="fresh"))
    log.close()
    update = poll_until(session, lambda us: any(u.events for u in us), timeout=5)[-1]
    assert update.reset and update.lines == ["fresh"]
    with open(run / "events.jsonl", "ab") as f:
        f.write(b"\xff\xfe not json\n")  # a damaged line is skipped, following goes on
    log = EventLog(run / "events.jsonl")
    log.write(LogEvent(message="after damage"))
    log.close()
    update = poll_until(session, lambda us: any(u.events for u in us), timeout=5)[-1]
    assert update.lines == ["after damage"] and not update.reset


# ---- a new folder -----------------------------------------------------------------------------------
def test_suggest_gives_the_recipe_and_puts_the_shown_run_aside(tmp_path):
    from simclr_studio.recipe import FolderFacts, suggest

    session = TrainSession()
    session.open(write_run(tmp_path / "old", RunConfig(data_dir="elsewhere"), [started()], True, age_s=600))
    got = session.suggest("/data/birds", 40, 20, True, "cpu", 3.0)
    recipe = suggest(FolderFacts(40, 20, True), "cpu", 3.0)
    assert got.config.data_dir == "/data/birds" and got.config.minutes == 3.0
    assert got.config.image_size == recipe.config.image_size
    assert got.reasons["image_size"] == recipe.reasons["image_size"]
    assert got.epochs == suggest(FolderFacts(40, 20, True), "cpu").config.epochs and "epochs" in got.reasons
    assert session.state == "ready" and session.run_dir is None and session.data_dir == "/data/birds"
    assert session.poll().reset


def test_new_run_dir_is_named_after_the_folder(tmp_path):
    assert new_run_dir(tmp_path, "/data/birds").parent == tmp_path
    assert new_run_dir(tmp_path, "/data/birds").name.startswith("birds-")
    assert new_run_dir(tmp_path, None).name.startswith("run-")


# ---- the Train tab's words and refusals (no process) -----------------------------------------------
def test_a_completed_epochs_run_resumes_only_with_more_epochs(tmp_path, monkeypatch):
    import simclr_studio.session.train as train_session

    monkeypatch.setattr(train_session, "ChildRun", FakeChild)
    FakeChild.made = []
    done = [started(6), step(6, 6), RunFinished(status="completed", epoch=1, global_step=6)]
    session = TrainSession()
    session.open(write_run(tmp_path / "run", tiny(tmp_path, epochs=2), done, True, age_s=600))
    assert session.can_resume() and session.completed_epochs() == 2
    assert "raise Epochs above 2" in session.next_step() and "raise Epochs above 2" in session.status()
    for epochs in (None, 2):  # it would end at once, having trained nothing
        with pytest.raises(TrainError, match="raise Epochs above 2"):
            session.resume(epochs)
    assert not FakeChild.made
    session.resume(3)
    assert FakeChild.made[-1].epochs == 3 and session.status().startswith("Training")


def test_batch_size_refusals_are_worded_for_the_app(tmp_path):
    from simclr_studio.events import ErrorEvent

    session = TrainSession()
    assert session.batch_problem(64) is None  # no folder: nothing known to check against
    session.suggest(str(tmp_path), 6, 20, False, "cpu", 1.0)
    assert session.batch_problem(6) is None
    assert session.batch_problem(8) == ("batch size 8 is larger than the 6 images available; "
                                        "set Batch size to 6 or fewer")
    with pytest.raises(TrainError, match="set Batch size to 6 or fewer"):
        session.start(tiny(tmp_path, batch_size=8), tmp_path / "run")
    # The training process words it for the command line; the app's log and banner name the control.
    session.feed([ErrorEvent(message="batch size 8 is larger than the 6 images available; use --batch-size 6 "
                                     "or fewer", category="data")])
    update = session.poll()
    assert update.errors == ["batch size 8 is larger than the 6 images available; set Batch size to 6 or fewer"]
    assert not any("--batch-size" in line for line in update.lines)
