"""The Train tab's time budget and suggested recipe, the kNN plot's baseline and k, and the Augment
tab's masking-only note (offscreen Qt; events are fed to the panel directly, so no test trains long)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
from conftest import make_image_folder
from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QMessageBox

from simclr_studio.config import RunConfig
from simclr_studio.events import BaselineEvent, EvalEvent, EventLog, PlanEvent, RunFinished, RunStarted, StepEvent
from simclr_studio.run_folder import RunFolder


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    from simclr_studio.gui.app import build_window, create_app

    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    # A test that fails mid-run leaves a run training when qtbot closes the window: answer the
    # "stop it and quit?" question instead of waiting forever on a dialog nobody sees.
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    create_app()
    win = build_window(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.show()
    yield win
    if win.train_panel.is_running():
        win.train_panel.stop_and_wait()


def load(win, qtbot, folder: Path) -> None:
    win.open_path(folder)
    qtbot.waitUntil(lambda: win.scan is not None and win.scan.root == str(folder), timeout=10_000)


def started(total_steps=6, steps_per_epoch=3, labeled=True, start_global_step=0) -> RunStarted:
    return RunStarted(run_dir="r", device="cpu", backbone="small-cnn", n_images=24, steps_per_epoch=steps_per_epoch,
                      total_steps=total_steps, start_epoch=0, start_global_step=start_global_step, cached=True,
                      labeled=labeled)


def step(n, total, eta=30.0) -> StepEvent:
    return StepEvent(epoch=(n - 1) // 3, step=(n - 1) % 3, global_step=n, total_steps=total, loss=5.0 - 0.01 * n,
                     lr=0.1, images_per_s=100.0, eta_s=eta)


def write_run(run: Path, cfg: RunConfig, events: list, checkpoint: bool) -> Path:
    """A run folder as the trainer leaves it (the checkpoint's content does not matter to the form)."""
    run.mkdir(parents=True)
    cfg.save(run / "config.json")
    log = EventLog(run / "events.jsonl")
    for event in events:
        log.write(event)
    log.close()
    if checkpoint:
        RunFolder(run).last_checkpoint.parent.mkdir()
        RunFolder(run).last_checkpoint.write_bytes(b"placeholder")
    return run


# ---- Train tab: the time budget ------------------------------------------------------------------
def test_minutes_mode_round_trips_through_the_form(window, qtbot, tmp_path):
    from simclr_studio.device import available_devices
    from simclr_studio.gui.run_length import default_minutes
    from simclr_studio.recipe import FolderFacts, suggest

    panel = window.train_panel
    load(window, qtbot, make_image_folder(tmp_path / "imgs", classes=2, per_class=20, size=20))
    device = available_devices()[0].split(":")[0]
    # A new folder gets the recipe with the default budget for this machine, in minutes mode.
    assert panel.length.is_minutes() and panel.minutes.isVisibleTo(panel) and not panel.epochs.isVisibleTo(panel)
    recipe = suggest(FolderFacts(40, 20, False), device, default_minutes(device))
    cfg = panel.config()
    assert cfg.minutes == default_minutes(device)
    for name in ("backbone", "image_size", "batch_size", "optimizer", "lr", "weight_decay", "temperature"):
        assert getattr(cfg, name) == pytest.approx(getattr(recipe.config, name)), name
    # The recipe's reasons are the fields' tool tips; the epochs field gets the epochs recipe's.
    assert panel.image_size.toolTip() == f"Suggested: {recipe.reasons['image_size']}"
    assert panel.minutes.toolTip() == f"Suggested: {recipe.reasons['length']}"
    assert "epochs" in panel.epochs.toolTip()
    assert panel.epochs.value() == suggest(FolderFacts(40, 20), device).config.epochs
    # The recipe's augmentations reach the Augment tab as its own preset.
    assert window.augment_panel.preset.currentText() == "Suggested for this folder"
    assert cfg.augment.crop_scale == pytest.approx(recipe.config.augment.crop_scale, abs=1e-3)

    panel.minutes.setValue(2.5)
    assert panel.config().minutes == 2.5
    panel.length.set_minutes_mode(False)
    panel.epochs.setValue(7)
    assert panel.config().minutes is None and panel.config().epochs == 7
    assert panel.epochs.isVisibleTo(panel) and not panel.minutes.isVisibleTo(panel)
    # load_config shows either mode.
    panel.load_config(RunConfig(minutes=7.5, epochs=3))
    assert panel.length.is_minutes() and panel.config().minutes == 7.5
    panel.load_config(RunConfig(epochs=4))
    assert not panel.length.is_minutes() and panel.config().minutes is None and panel.config().epochs == 4


def test_what_the_user_chose_survives_a_new_folder(window, qtbot, tmp_path):
    panel = window.train_panel
    load(window, qtbot, make_image_folder(tmp_path / "a", classes=2, per_class=4))
    panel.minutes.setValue(3.0)  # typed by the user
    load(window, qtbot, make_image_folder(tmp_path / "b", classes=2, per_class=5))
    assert panel.length.is_minutes() and panel.minutes.value() == 3.0
    assert panel.minutes.toolTip().startswith("Suggested: 3 minutes")
    panel.length.mode.setCurrentText("Epochs")
    panel.length.mode.activated.emit(1)  # as a click on the choice delivers it
    load(window, qtbot, make_image_folder(tmp_path / "c", classes=2, per_class=6))
    assert not panel.length.is_minutes() and panel.config().minutes is None


def test_length_locks_while_running_and_a_resumed_budget_keeps_its_plan(window, qtbot, tmp_path):
    panel = window.train_panel
    load(window, qtbot, make_image_folder(tmp_path / "imgs", classes=2, per_class=8))
    panel.image_size.setValue(16)
    panel.batch_size.setValue(8)
    panel.device.setCurrentText("cpu")
    panel.minutes.setValue(0.5)
    panel.epochs.setValue(500)  # ignored in minutes mode; long enough to still run when checked
    panel.start_button.click()
    assert panel.is_running()
    assert not panel.length.mode.isEnabled() and not panel.minutes.isEnabled() and not panel.epochs.isEnabled()
    assert panel.job.cfg.minutes == 0.5  # what the training process is asked to run
    qtbot.waitUntil(lambda: len(panel.history.steps) >= 1, timeout=30_000)
    panel.stop_and_wait()
    qtbot.waitUntil(lambda: panel.start_button.text() == "Resume training", timeout=30_000)
    # Open to resume: the budget and the mode are the saved run's.
    assert panel.start_button.isEnabled()
    assert not panel.length.mode.isEnabled() and not panel.minutes.isEnabled()
    panel.new_button.click()
    assert panel.length.mode.isEnabled() and panel.minutes.isEnabled()


class FakeJob(QObject):
    """Stands in for TrainJob: records what it was asked to run."""

    events = Signal(list)
    done = Signal(str)
    made: list = []

    def __init__(self, cfg, run_dir, resume=False, parent=None, nproc=1):
        super().__init__(parent)
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        FakeJob.made.append(self)

    def start(self):
        pass

    def is_running(self):
        return False


def test_resume_rule_for_budgeted_and_epoch_runs(window, tmp_path, monkeypatch):
    import simclr_studio.gui.train_panel as train_panel

    monkeypatch.setattr(train_panel, "TrainJob", FakeJob)
    FakeJob.made = []
    panel = window.train_panel
    base = dict(data_dir=str(tmp_path / "missing"), backbone="small-cnn", image_size=16, batch_size=8, device="cpu")
    stopped = [started(120), PlanEvent(total_steps=120, warmup_steps=12, seconds_per_step=0.5, budget_s=60),
               step(30, 120), RunFinished(status="stopped", epoch=9, global_step=30)]
    # A stopped budgeted run: resumable, but its budget (and so its plan) is fixed.
    window.open_path(write_run(tmp_path / "budget", RunConfig(minutes=1.0, epochs=1, **base), stopped, True))
    assert panel.length.is_minutes() and panel.minutes.value() == 1.0
    assert panel.start_button.isEnabled() and panel.start_button.text() == "Resume training"
    assert not panel.minutes.isEnabled() and not panel.length.mode.isEnabled() and not panel.epochs.isEnabled()
    panel.epochs.setValue(40)  # not the run's to change
    panel.start()
    assert FakeJob.made[-1].resume and FakeJob.made[-1].cfg.minutes == 1.0 and FakeJob.made[-1].cfg.epochs == 1
    # A finished budget has nothing left to resume.
    panel.new_run()
    done = stopped[:-1] + [RunFinished(status="completed", epoch=40, global_step=120)]
    window.open_path(write_run(tmp_path / "spent", RunConfig(minutes=1.0, epochs=1, **base), done, True))
    assert not panel.start_button.isEnabled() and "budget is spent" in panel.log.toPlainText()
    # An epochs run may still be lengthened when resumed.
    panel.new_run()
    window.open_path(write_run(tmp_path / "epochs", RunConfig(epochs=2, **base),
                               [started(6), step(3, 6), RunFinished(status="stopped", epoch=1, global_step=3)], True))
    assert not panel.length.is_minutes() and panel.epochs.isEnabled() and not panel.length.mode.isEnabled()
    panel.epochs.setValue(5)
    panel.start()
    assert FakeJob.made[-1].cfg.epochs == 5 and FakeJob.made[-1].cfg.minutes is None


def test_progress_follows_the_planned_total(window):
    panel = window.train_panel
    panel.load_config(RunConfig(minutes=10.0, epochs=1))
    panel.on_events([started(total_steps=3), step(1, 3)])
    # Before the plan: measuring, a busy bar, no made-up total.
    assert panel.progress_label.text().startswith("Measuring speed to plan the 10 min budget")
    assert panel.progress.maximum() == 0
    panel.on_events([PlanEvent(total_steps=1200, warmup_steps=120, seconds_per_step=0.5, budget_s=600),
                     step(2, 1200, eta=599.0)])
    text = panel.progress_label.text()
    assert "step 2 of 1,200" in text and "10 min budget" in text and "9:59 left" in text and "Epoch 1 of 400" in text
    assert panel.progress.maximum() == 1200 and panel.progress.value() == 2
    panel.on_events([step(3, 1200), PlanEvent(total_steps=1190, warmup_steps=119, seconds_per_step=0.5, budget_s=600)])
    assert panel.progress.maximum() == 1190  # re-planned at an epoch end
    assert panel.log.toPlainText().count("Planned ") == 1  # logged once, not at every re-plan
    assert "Planned 1,200 steps (120 warm-up)" in panel.log.toPlainText()
    panel._update_plots()
    assert panel.loss_plot.getViewBox().viewRange()[0][1] >= 1200  # the step axis spans the planned run
    # An epochs run keeps its ETA wording.
    panel.new_run()
    panel.load_config(RunConfig(epochs=2))
    panel.on_events([started(total_steps=6), step(4, 6, eta=65.0)])
    assert panel.progress_label.text() == "Epoch 2 of 2 · step 4 of 6 · 100 images/s · ETA 1:05"
    panel._update_plots()
    assert panel.loss_plot.getViewBox().viewRange()[0][1] < 100  # the new run's axis, not the old one's


# ---- Train tab: the kNN plot ---------------------------------------------------------------------
def test_knn_plot_shows_k_and_the_raw_pixel_baseline(window):
    panel = window.train_panel
    assert panel.knn_plot.titleLabel.text == "kNN accuracy (leave-one-out)" and not panel.knn_baseline.isVisible()
    panel.on_events([started(), BaselineEvent(features="raw pixels", knn_accuracy=0.68, n_images=24, k=23),
                     step(3, 6), EvalEvent(epoch=0, knn_accuracy=0.75, n_images=24, k=23)])
    panel._update_plots()
    assert panel.knn_plot.titleLabel.text == "kNN accuracy (leave-one-out, k=23)"
    assert panel.knn_baseline.isVisible() and panel.knn_baseline.value() == pytest.approx(0.68)
    assert panel.knn_baseline.label.textItem.toPlainText() == "raw pixels 0.680"
    assert list(panel.knn_curve.getData()[1]) == [0.75]
    log = panel.log.toPlainText()
    assert "Baseline: raw pixels kNN 0.680 (k=23, 24 images)" in log
    assert "Epoch 1: kNN accuracy 0.750 (raw pixels 0.680)" in log
    # A new run starts with a clean plot.
    panel.new_run()
    assert panel.knn_plot.titleLabel.text == "kNN accuracy (leave-one-out)" and not panel.knn_baseline.isVisible()
    assert len(panel.knn_curve.getData()[0] if panel.knn_curve.getData()[0] is not None else []) == 0


def test_a_reopened_run_shows_its_baseline(window, tmp_path):
    panel = window.train_panel
    cfg = RunConfig(data_dir=str(tmp_path / "missing"), backbone="small-cnn", image_size=16, batch_size=8, epochs=2)
    events = [started(), BaselineEvent(features="raw pixels", knn_accuracy=0.5, n_images=24, k=23), step(6, 6),
              EvalEvent(epoch=1, knn_accuracy=0.9, n_images=24, k=23),
              RunFinished(status="completed", epoch=1, global_step=6)]
    window.open_path(write_run(tmp_path / "run", cfg, events, checkpoint=False))
    assert panel.opened_run == tmp_path / "run"
    assert panel.knn_baseline.isVisible() and panel.knn_baseline.value() == pytest.approx(0.5)
    assert panel.knn_plot.titleLabel.text.endswith("k=23)")


# ---- Augment tab ---------------------------------------------------------------------------------
def test_masking_only_says_it_learns_weaker_features(window):
    aug = window.augment_panel
    assert not aug.masking_note.isVisibleTo(aug)
    aug.preset.setCurrentText("Masking only")
    assert aug.masking_note.isVisibleTo(aug) and "much weaker features" in aug.masking_note.text()
    aug.controls["flip_p"].setValue(0.5)  # no longer masking only: the preset reads Custom
    assert aug.preset.currentText() == "Custom" and not aug.masking_note.isVisibleTo(aug)
    aug.preset.setCurrentText("Masking only")
    aug.preset.setCurrentText("Paper defaults, large images")
    assert not aug.masking_note.isVisibleTo(aug)
    from simclr_studio.config import AugmentConfig

    aug.set_augment_config(AugmentConfig.masking_only())  # an opened run's settings
    assert aug.masking_note.isVisibleTo(aug)


def test_a_grey_folder_gets_the_grey_recipe(window, qtbot, tmp_path):
    import numpy as np
    from PIL import Image

    load(window, qtbot, make_image_folder(tmp_path / "colour", classes=2, per_class=4))
    assert window.augment_panel.augment_config().grayscale_p > 0
    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "grey" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (20, 20), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "grey" / f"c{c}" / f"{i}.png")
    load(window, qtbot, tmp_path / "grey")
    assert window.augment_panel.augment_config().grayscale_p == 0  # a no-op on grey images (the scan saw it)
    assert window.train_panel.config().augment.grayscale_p == 0


def test_a_budgeted_run_resumes_without_an_epochs_override(qapp, tmp_path):
    from simclr_studio.gui.train_job import TrainJob

    budgeted = TrainJob(RunConfig(minutes=5.0, epochs=1, device="cpu"), tmp_path, resume=True).command()
    assert "--resume" in budgeted and "--epochs" not in budgeted  # --epochs would turn it into an epochs run
    by_epochs = TrainJob(RunConfig(epochs=9, device="cpu"), tmp_path, resume=True).command()
    assert by_epochs[by_epochs.index("--epochs") + 1] == "9"
