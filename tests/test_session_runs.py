"""The Runs view's logic without Qt: listing, summaries, rename, note, delete, config diff, curves."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_image_folder, write_run

from simclr_studio.config import RunConfig
from simclr_studio.events import EpochEvent, EvalEvent, LogEvent, RunFinished, RunStarted, StepEvent
from simclr_studio.history import RunHistory
from simclr_studio.run_folder import RunFolder
from simclr_studio.run_lock import RunLock
from simclr_studio.session import runs
from simclr_studio.session.runs import RunsError
from simclr_studio.sizes import format_size


def synthetic_events(epochs: int = 2, steps_per_epoch: int = 3, status: str | None = "completed", t0: float = 1000.0,
                     n_images: int = 24, loss0: float = 5.0) -> list:
    """A run's events as the trainer writes them: start, steps, epoch ends with kNN, and its end."""
    events: list = [RunStarted(run_dir="x", device="cpu", backbone="tiny-cnn", n_images=n_images,
                               steps_per_epoch=steps_per_epoch, total_steps=epochs * steps_per_epoch, start_epoch=0,
                               start_global_step=0, cached=True, labeled=True, time=t0)]
    g = 0
    for epoch in range(epochs):
        for step in range(steps_per_epoch):
            g += 1
            events.append(StepEvent(epoch=epoch, step=step, global_step=g, total_steps=epochs * steps_per_epoch,
                                    loss=loss0 - 0.1 * g, lr=0.01 * g, images_per_s=10.0, eta_s=1.0, time=t0 + g))
        events.append(EpochEvent(epoch=epoch, loss=loss0 - 0.1 * g, seconds=3.0, images_per_s=10.0, time=t0 + g))
        events.append(EvalEvent(epoch=epoch, knn_accuracy=0.3 + 0.1 * epoch, n_images=n_images, k=5, time=t0 + g))
    if status is not None:
        events.append(RunFinished(status=status, epoch=epochs, global_step=g, time=t0 + g + 1))
    return events


def tiny_cfg(data_dir: str = "/data/a", **overrides) -> RunConfig:
    values = dict(data_dir=data_dir, backbone="tiny-cnn", image_size=16, batch_size=8, epochs=2, device="cpu",
                  optimizer="sgd", seed=1)
    values.update(overrides)
    return RunConfig(**values)


def test_summary_of_a_finished_run(tmp_path):
    run = write_run(tmp_path / "runs" / "a", tiny_cfg(), synthetic_events(), checkpoint=True, age_s=600)
    s = runs.summarize_run(run)
    assert (s.name, s.data_dir, s.backbone, s.image_size) == ("a", "/data/a", "tiny-cnn", 16)
    assert s.epochs_done == 2 and s.final_loss == pytest.approx(5.0 - 0.6)
    assert s.knn_accuracy == pytest.approx(0.4) and s.linear_accuracy is None
    assert s.status == "finished" and s.started == pytest.approx(1000.0)


@pytest.mark.parametrize(("status", "expected"), [("stopped", "stopped"), ("failed", "failed"), (None, "stopped")])
def test_status_from_the_last_event(tmp_path, status, expected):
    run = write_run(tmp_path / "r", tiny_cfg(), synthetic_events(status=status), checkpoint=True, age_s=600)
    assert runs.summarize_run(run).status == expected


def test_a_run_holding_its_writer_lock_is_training(tmp_path):
    run = write_run(tmp_path / "r", tiny_cfg(), synthetic_events(status=None), checkpoint=True, age_s=600)
    with RunLock(run):  # another writer (flock: two open files conflict even in one process)
        assert runs.summarize_run(run).status == "training"
    assert runs.summarize_run(run).status == "stopped"


def test_a_summary_reads_only_the_tail_of_a_big_events_file(tmp_path, monkeypatch):
    run = write_run(tmp_path / "r", tiny_cfg(), synthetic_events(epochs=200, steps_per_epoch=50), checkpoint=True,
                    age_s=600)
    assert run.joinpath("events.jsonl").stat().st_size > 20 * runs.TAIL_BYTES
    import simclr_studio.events

    monkeypatch.setattr(simclr_studio.events, "follow_events", lambda *a: pytest.fail("the whole file was read"))
    s = runs.summarize_run(run)
    assert s.epochs_done == 200 and s.knn_accuracy == pytest.approx(0.3 + 0.1 * 199) and s.status == "finished"


def test_a_summary_grows_its_tail_to_find_the_last_epoch(tmp_path):
    events = synthetic_events(epochs=1, status=None)
    events += [LogEvent(message="x" * 500) for _ in range(400)]  # 200 KB after the epoch's end
    run = write_run(tmp_path / "r", tiny_cfg(), events, checkpoint=True, age_s=600)
    assert runs.summarize_run(run).epochs_done == 1


def test_linear_accuracy_from_eval_json(tmp_path):
    run = write_run(tmp_path / "r", tiny_cfg(), synthetic_events(), checkpoint=True, age_s=600)
    (run / "eval.json").write_text(json.dumps({"knn_accuracy": 0.5, "linear_accuracy": 0.625}))
    assert runs.summarize_run(run).linear_accuracy == 0.625


def test_list_runs_finds_runs_under_the_root_and_added_ones(tmp_path):
    root = tmp_path / "runs"
    a = write_run(root / "a", tiny_cfg(), synthetic_events(), checkpoint=False)
    (root / "not-a-run").mkdir()
    elsewhere = write_run(tmp_path / "elsewhere" / "b", tiny_cfg(), synthetic_events(), checkpoint=False)
    found = runs.list_runs(root, [elsewhere, a, tmp_path / "missing"])
    assert sorted(p.name for p in found) == ["a", "b"]
    assert runs.list_runs(tmp_path / "no-such-root") == []


def test_rename(tmp_path):
    run = write_run(tmp_path / "a", tiny_cfg(), synthetic_events(), checkpoint=True, age_s=600)
    write_run(tmp_path / "taken", tiny_cfg(), synthetic_events(), checkpoint=False, age_s=600)
    with pytest.raises(RunsError, match="already exists"):
        runs.rename_run(run, "taken")
    for bad in ("", "..", "x/y"):
        with pytest.raises(RunsError, match="not a folder name"):
            runs.rename_run(run, bad)
    new = runs.rename_run(run, "baseline")
    assert new == tmp_path / "baseline" and not run.exists() and runs.summarize_run(new).epochs_done == 2


def test_rename_and_delete_refuse_a_training_run(tmp_path):
    run = write_run(tmp_path / "a", tiny_cfg(), synthetic_events(status=None), checkpoint=True, age_s=600)
    with RunLock(run):
        with pytest.raises(RunsError, match="is training"):
            runs.rename_run(run, "b")
        plan = runs.plan_delete(run)
        assert plan.training
        with pytest.raises(RunsError, match="is training"):
            runs.delete_run(plan)
    assert run.is_dir() and not (tmp_path / "b").exists()


def test_note_is_kept_in_the_run_folder(tmp_path):
    run = write_run(tmp_path / "a", tiny_cfg(), synthetic_events(), checkpoint=False)
    assert runs.read_note(run) == ""
    runs.write_note(run, "lr too high")
    assert RunFolder(run).note_file.read_text() == "lr too high\n"
    assert runs.summarize_run(run).note.strip() == "lr too high"
    assert not list(run.glob(".*.tmp"))  # written atomically: no temp file left
    runs.write_note(run, "  ")
    assert not RunFolder(run).note_file.exists()


def test_delete_plan_says_what_goes_and_delete_removes_it(tmp_path):
    run = write_run(tmp_path / "a", tiny_cfg(), synthetic_events(), checkpoint=True, age_s=600)
    (run / "checkpoints" / "epoch_0001.pt").write_bytes(b"x" * 1000)
    plan = runs.plan_delete(run)
    assert plan.checkpoints == ("last.pt", "epoch_0001.pt") and not plan.training
    assert plan.n_files == 4  # config, events, two checkpoints
    assert plan.size_bytes == sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    text = plan.describe()
    assert str(run) in text and "2 checkpoints" in text and "4 files" in text
    assert format_size(plan.size_bytes) in text
    runs.delete_run(plan)
    assert not run.exists()


def test_delete_refuses_a_folder_that_changed_since_the_plan(tmp_path):
    run = write_run(tmp_path / "a", tiny_cfg(), synthetic_events(), checkpoint=True, age_s=600)
    plan = runs.plan_delete(run)
    (run / "checkpoints" / "epoch_0002.pt").write_bytes(b"new")
    with pytest.raises(RunsError, match="changed since"):
        runs.delete_run(plan)
    assert run.is_dir()


def test_delete_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(RunsError, match="not a run folder"):
        runs.plan_delete(tmp_path / "photos")


def test_config_differences(tmp_path):
    a = write_run(tmp_path / "a", tiny_cfg(), [], checkpoint=False)
    b = write_run(tmp_path / "b", tiny_cfg(batch_size=16, temperature=0.2), [], checkpoint=False)
    c = write_run(tmp_path / "c", tiny_cfg(batch_size=16), [], checkpoint=False)
    diff = dict(runs.config_differences([a, b, c]))
    assert diff == {"batch_size": [8, 16, 16], "temperature": [0.5, 0.2, 0.5]}
    assert runs.config_differences([a, a]) == []
    cfg = tiny_cfg()
    cfg.augment.flip_p = 0.0
    d = write_run(tmp_path / "d", cfg, [], checkpoint=False)
    assert dict(runs.config_differences([a, d])) == {"augment.flip_p": [0.5, 0.0]}


def test_curves_against_every_x_axis(tmp_path):
    run = write_run(tmp_path / "a", tiny_cfg(), synthetic_events(epochs=2, steps_per_epoch=3, n_images=24),
                    checkpoint=False)
    c = runs.run_curves(run)
    assert list(c.x["step"]) == [1, 2, 3, 4, 5, 6]
    assert list(c.x["epoch"]) == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert list(c.x["images"]) == [8, 16, 24, 32, 40, 48]  # batch 8, one process
    assert list(c.x["time"]) == [1, 2, 3, 4, 5, 6]
    assert list(c.loss) == pytest.approx([4.9, 4.8, 4.7, 4.6, 4.5, 4.4]) and c.lr[-1] == pytest.approx(0.06)
    assert list(c.knn) == pytest.approx([0.3, 0.4]) and list(c.knn_x["epoch"]) == [1, 2]
    assert list(c.knn_x["step"]) == [3, 6]


def test_curves_of_a_resumed_run_keep_the_newest_steps_and_skip_the_gap(tmp_path):
    first = synthetic_events(epochs=1, steps_per_epoch=4, status="stopped")[:3]  # start, steps 1 and 2
    resumed = [RunStarted(run_dir="x", device="cpu", backbone="tiny-cnn", n_images=32, steps_per_epoch=4,
                          total_steps=4, start_epoch=0, start_global_step=1, cached=True, labeled=True, time=5000.0)]
    resumed += [StepEvent(epoch=0, step=s, global_step=s + 1, total_steps=4, loss=1.0, lr=0.1, images_per_s=1.0,
                          eta_s=0.0, time=5000.0 + s) for s in (1, 2, 3)]
    run = write_run(tmp_path / "a", tiny_cfg(), first + resumed, checkpoint=False)
    c = runs.run_curves(run)
    assert list(c.x["step"]) == [1, 2, 3, 4] and list(c.loss) == [4.9, 1.0, 1.0, 1.0]
    assert list(c.x["time"]) == [1, 2, 3, 4]  # the hours between the sessions do not count
    history = RunHistory()
    history.extend(first + resumed)
    assert history.steps == list(c.x["step"]) and np.allclose(history.loss, c.loss)  # as the Train tab shows it


def test_a_real_tiny_run(tmp_path):
    from simclr_studio.train import Trainer

    data = make_image_folder(tmp_path / "data", classes=3, per_class=4, size=16)  # kNN needs 10 images
    cfg = RunConfig(data_dir=str(data), backbone="tiny-cnn", image_size=16, batch_size=4, epochs=2, device="cpu",
                    optimizer="sgd", eval_every=1, seed=1)
    assert Trainer(cfg, tmp_path / "runs" / "real").run() == "completed"
    s = runs.summarize_run(tmp_path / "runs" / "real")
    assert (s.status, s.epochs_done, s.backbone, s.data_dir) == ("finished", 2, "tiny-cnn", str(data))
    assert s.final_loss is not None and s.knn_accuracy is not None
    c = runs.run_curves(tmp_path / "runs" / "real")
    assert len(c.loss) == 6 and list(c.x["images"]) == [4, 8, 12, 16, 20, 24] and len(c.knn) == 2
    plan = runs.plan_delete(tmp_path / "runs" / "real")
    assert "last.pt" in plan.checkpoints and not plan.training
