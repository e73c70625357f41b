"""The Train tab's time budget and suggested recipe, the kNN plot's baseline and k, and the Augment
tab's masking-only note (offscreen Qt; events are fed to the panel directly, so no test trains long)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PySide6")
from conftest import FakeChild, make_image_folder, write_run
from conftest import run_started as started

from simclr_studio.config import RunConfig
from simclr_studio.events import BaselineEvent, EvalEvent, PlanEvent, RunFinished, StepEvent


def load(win, qtbot, folder: Path) -> None:
    win.open_path(folder)
    qtbot.waitUntil(lambda: win.scan is not None and win.scan.root == str(folder), timeout=10_000)


def feed(panel, events: list) -> None:
    """Events as the training process would send them, shown at the next tick of the panel's timer."""
    panel.session.feed(events)
    panel.refresh()


def step(n, total, eta=30.0) -> StepEvent:
    return StepEvent(epoch=(n - 1) // 3, step=(n - 1) % 3, global_step=n, total_steps=total, loss=5.0 - 0.01 * n,
                     lr=0.1, images_per_s=100.0, eta_s=eta)


# ---- Train tab: the time budget ------------------------------------------------------------------
def test_minutes_mode_round_trips_through_the_form(window, qtbot, tmp_path):
    from simclr_studio.device import available_devices
    from simclr_studio.gui.run_length import default_minutes
    from simclr_studio.recipe import FolderFacts, suggest

    panel = window.train_panel
    load(window, qtbot, make_image_folder(tmp_path / "imgs", classes=2, per_class=20, size=20))
    device = available_devices()[0].split(":")[0]
    # A new folder gets the recipe with the default budget for this machine, in minutes mode.
    form = panel.form
    assert form.length.is_minutes() and form.minutes.isVisibleTo(panel) and not form.epochs.isVisibleTo(panel)
    recipe = suggest(FolderFacts(40, 20, False), device, default_minutes(device))
    cfg = panel.config()
    assert cfg.minutes == default_minutes(device)
    for name in ("backbone", "image_size", "batch_size", "optimizer", "lr", "weight_decay", "temperature"):
        assert getattr(cfg, name) == pytest.approx(getattr(recipe.config, name)), name
    # The recipe's reasons are the fields' tool tips; the epochs field gets the epochs recipe's.
    assert panel.form.image_size.toolTip() == f"Suggested: {recipe.reasons['image_size']}"
    assert panel.form.minutes.toolTip() == f"Suggested: {recipe.reasons['length']}"
    assert "epochs" in panel.form.epochs.toolTip()
    assert panel.form.epochs.value() == suggest(FolderFacts(40, 20), device).config.epochs
    # The recipe's augmentations reach the Augment tab as its own preset.
    assert window.augment_panel.preset.currentText() == "Suggested for this folder"
    assert cfg.augment.crop_scale == pytest.approx(recipe.config.augment.crop_scale, abs=1e-3)

    panel.form.minutes.setValue(2.5)
    assert panel.config().minutes == 2.5
    panel.form.length.set_minutes_mode(False)
    panel.form.epochs.setValue(7)
    assert panel.config().minutes is None and panel.config().epochs == 7
    assert panel.form.epochs.isVisibleTo(panel) and not panel.form.minutes.isVisibleTo(panel)
    # load_config shows either mode.
    panel.form.load_config(RunConfig(minutes=7.5, epochs=3))
    assert panel.form.length.is_minutes() and panel.config().minutes == 7.5
    panel.form.load_config(RunConfig(epochs=4))
    assert not panel.form.length.is_minutes() and panel.config().minutes is None and panel.config().epochs == 4


def test_what_the_user_chose_survives_a_new_folder(window, qtbot, tmp_path):
    panel = window.train_panel
    load(window, qtbot, make_image_folder(tmp_path / "a", classes=2, per_class=4))
    panel.form.minutes.setValue(3.0)  # typed by the user
    load(window, qtbot, make_image_folder(tmp_path / "b", classes=2, per_class=5))
    assert panel.form.length.is_minutes() and panel.form.minutes.value() == 3.0
    assert panel.form.minutes.toolTip().startswith("Suggested: 3 minutes")
    panel.form.length.mode.setCurrentText("Epochs")
    panel.form.length.mode.activated.emit(1)  # as a click on the choice delivers it
    load(window, qtbot, make_image_folder(tmp_path / "c", classes=2, per_class=6))
    assert not panel.form.length.is_minutes() and panel.config().minutes is None


@pytest.mark.slow  # trains end to end through the window
def test_length_locks_while_running_and_a_resumed_budget_keeps_its_plan(window, qtbot, tmp_path):
    panel = window.train_panel
    load(window, qtbot, make_image_folder(tmp_path / "imgs", classes=2, per_class=8))
    panel.form.image_size.setValue(16)
    panel.form.batch_size.setValue(8)
    panel.form.device.setCurrentText("cpu")
    panel.form.minutes.setValue(0.5)
    panel.form.epochs.setValue(500)  # ignored in minutes mode; long enough to still run when checked
    panel.start_button.click()
    assert panel.session.is_running()
    form = panel.form
    assert not form.length.mode.isEnabled() and not form.minutes.isEnabled() and not form.epochs.isEnabled()
    assert panel.session.config.minutes == 0.5  # what the training process is asked to run
    qtbot.waitUntil(lambda: len(panel.session.history.steps) >= 1, timeout=30_000)
    panel.stop_and_wait()
    qtbot.waitUntil(lambda: panel.start_button.text() == "Resume training", timeout=30_000)
    # Open to resume: the budget and the mode are the saved run's.
    assert panel.start_button.isEnabled()
    assert not panel.form.length.mode.isEnabled() and not panel.form.minutes.isEnabled()
    panel.new_button.click()
    assert panel.form.length.mode.isEnabled() and panel.form.minutes.isEnabled()


def test_resume_rule_for_budgeted_and_epoch_runs(window, tmp_path, monkeypatch):
    import simclr_studio.session.train as train_session

    monkeypatch.setattr(train_session, "ChildRun", FakeChild)
    FakeChild.made = []
    panel = window.train_panel
    base = dict(data_dir=str(tmp_path / "missing"), backbone="small-cnn", image_size=16, batch_size=8, device="cpu")
    stopped = [started(120), PlanEvent(total_steps=120, warmup_steps=12, seconds_per_step=0.5, budget_s=60),
               step(30, 120), RunFinished(status="stopped", epoch=9, global_step=30)]
    # A stopped budgeted run: resumable, but its budget (and so its plan) is fixed.
    window.open_path(write_run(tmp_path / "budget", RunConfig(minutes=1.0, epochs=1, **base), stopped, True))
    assert panel.form.length.is_minutes() and panel.form.minutes.value() == 1.0
    assert panel.start_button.isEnabled() and panel.start_button.text() == "Resume training"
    assert not panel.form.minutes.isEnabled() and not panel.form.length.mode.isEnabled()
    assert not panel.form.epochs.isEnabled()
    assert "Press Resume training to continue" in panel.log.toPlainText()
    panel.form.epochs.setValue(40)  # not the run's to change
    panel.start()
    assert FakeChild.made[-1].kind == "resume" and FakeChild.made[-1].epochs is None  # no --epochs: the plan stays
    assert panel.session.config.minutes == 1.0 and panel.session.config.epochs == 1
    # A finished budget has nothing left to resume.
    panel.new_run()
    done = stopped[:-1] + [RunFinished(status="completed", epoch=40, global_step=120)]
    window.open_path(write_run(tmp_path / "spent", RunConfig(minutes=1.0, epochs=1, **base), done, True))
    assert not panel.start_button.isEnabled() and "budget is spent" in panel.log.toPlainText()
    assert not window.statusBar().currentMessage().startswith("Run opened: Resume")
    # An epochs run may still be lengthened when resumed.
    panel.new_run()
    window.open_path(write_run(tmp_path / "epochs", RunConfig(epochs=2, **base),
                               [started(6), step(3, 6), RunFinished(status="stopped", epoch=1, global_step=3)], True))
    assert window.statusBar().currentMessage().startswith("Run opened: Resume training continues it")
    assert not panel.form.length.is_minutes() and panel.form.epochs.isEnabled()
    assert not panel.form.length.mode.isEnabled()
    panel.form.epochs.setValue(5)
    panel.start()
    assert FakeChild.made[-1].epochs == 5 and panel.session.config.epochs == 5
    assert panel.session.config.minutes is None


def test_progress_follows_the_planned_total(window):
    panel = window.train_panel
    panel.form.load_config(RunConfig(minutes=10.0, epochs=1))
    feed(panel, [started(total_steps=3), step(1, 3)])
    # Before the plan: measuring, a busy bar, no made-up total.
    assert panel.progress_label.text().startswith("Measuring speed to plan the 10 min budget")
    assert panel.progress.maximum() == 0
    feed(panel, [PlanEvent(total_steps=1200, warmup_steps=120, seconds_per_step=0.5, budget_s=600),
                 step(2, 1200, eta=599.0)])
    text = panel.progress_label.text()
    assert "step 2 of 1,200" in text and "10 min budget" in text and "9:59 left" in text and "Epoch 1 of 400" in text
    assert panel.progress.maximum() == 1200 and panel.progress.value() == 2
    feed(panel, [step(3, 1200), PlanEvent(total_steps=1190, warmup_steps=119, seconds_per_step=0.5, budget_s=600)])
    assert panel.progress.maximum() == 1190  # re-planned at an epoch end
    assert panel.log.toPlainText().count("Planned ") == 1  # logged once, not at every re-plan
    assert "Planned 1,200 steps (120 warm-up)" in panel.log.toPlainText()
    panel.plots.draw()
    assert panel.plots.loss_plot.getViewBox().viewRange()[0][1] >= 1200  # the step axis spans the planned run
    # An epochs run keeps its ETA wording.
    panel.new_run()
    panel.form.load_config(RunConfig(epochs=2))
    feed(panel, [started(total_steps=6), step(4, 6, eta=65.0)])
    assert panel.progress_label.text() == "Epoch 2 of 2 · step 4 of 6 · 100 images/s · ETA 1:05"
    panel.plots.draw()
    assert panel.plots.loss_plot.getViewBox().viewRange()[0][1] < 100  # the new run's axis, not the old one's


# ---- Train tab: the kNN plot ---------------------------------------------------------------------
def test_knn_plot_shows_k_and_the_raw_pixel_baseline(window):
    panel = window.train_panel
    plots = panel.plots
    assert plots.knn_plot.titleLabel.text == "kNN accuracy (leave-one-out)" and not plots.knn_baseline.isVisible()
    feed(panel, [started(), BaselineEvent(features="raw pixels", knn_accuracy=0.68, n_images=24, k=23),
                 step(3, 6), EvalEvent(epoch=0, knn_accuracy=0.75, n_images=24, k=23)])
    panel.plots.draw()
    assert panel.plots.knn_plot.titleLabel.text == "kNN accuracy (leave-one-out, k=23)"
    assert panel.plots.knn_baseline.isVisible() and panel.plots.knn_baseline.value() == pytest.approx(0.68)
    assert panel.plots.knn_baseline.label.textItem.toPlainText() == "raw pixels 0.680"
    assert list(panel.plots.knn_curve.getData()[1]) == [0.75]
    log = panel.log.toPlainText()
    assert "Baseline: raw pixels kNN accuracy 0.6800 (leave-one-out, k=23, 24 images)" in log
    assert "Epoch 1: kNN accuracy 0.7500 (leave-one-out, k=23, 24 images); raw pixels 0.6800" in log
    # A new run starts with a clean plot.
    panel.new_run()
    assert plots.knn_plot.titleLabel.text == "kNN accuracy (leave-one-out)" and not plots.knn_baseline.isVisible()
    assert len(panel.plots.knn_curve.getData()[0] if panel.plots.knn_curve.getData()[0] is not None else []) == 0


def test_a_reopened_run_shows_its_baseline(window, tmp_path):
    panel = window.train_panel
    cfg = RunConfig(data_dir=str(tmp_path / "missing"), backbone="small-cnn", image_size=16, batch_size=8, epochs=2)
    events = [started(), BaselineEvent(features="raw pixels", knn_accuracy=0.5, n_images=24, k=23), step(6, 6),
              EvalEvent(epoch=1, knn_accuracy=0.9, n_images=24, k=23),
              RunFinished(status="completed", epoch=1, global_step=6)]
    window.open_path(write_run(tmp_path / "run", cfg, events, checkpoint=False))
    assert panel.session.run_dir == tmp_path / "run"
    assert panel.plots.knn_baseline.isVisible() and panel.plots.knn_baseline.value() == pytest.approx(0.5)
    assert panel.plots.knn_plot.titleLabel.text.endswith("k=23)")


# ---- Augment tab ---------------------------------------------------------------------------------
def test_masking_only_says_it_learns_weaker_features(window):
    aug = window.augment_panel
    assert not aug.masking_note.isVisibleTo(aug)
    aug.preset.setCurrentText("Masking only")
    assert aug.masking_note.isVisibleTo(aug) and "much weaker features" in aug.masking_note.text()
    aug.controls["flip_p"].setValue(0.5)  # no longer masking only: the preset reads Custom
    assert aug.preset.currentText() == "Custom" and not aug.masking_note.isVisibleTo(aug)
    aug.preset.setCurrentText("Masking only")
    aug.preset.setCurrentText("Paper defaults for this image size")
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
