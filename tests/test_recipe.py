"""The default recipe, the time budget, and the online kNN's sample and protocol."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from simclr_studio.budget import TimeBudget
from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.evaluate import knn_sample, leave_one_out_knn, raw_pixel_features
from simclr_studio.recipe import FolderFacts, apply_overrides, suggest


# ---- recipe ---------------------------------------------------------------------------------
def test_small_grey_folder_on_a_cpu_gets_the_short_run_recipe():
    recipe = suggest(FolderFacts(60_000, 28, grayscale=True), "cpu", minutes=20)
    cfg = recipe.config
    cfg.validate()
    assert cfg.image_size == 28 and cfg.backbone == "tiny-cnn" and cfg.minutes == 20
    assert cfg.optimizer == "adamw" and cfg.augment.grayscale_p == 0  # grey: no grayscale draws
    assert cfg.augment.blur_p == 0 and cfg.augment.jitter_strength == 0.5  # small images
    assert set(recipe.reasons) >= {"image_size", "backbone", "batch_size", "optimizer", "temperature", "augment"}


def test_gpu_recipe_uses_lars_with_square_root_scaling():
    cfg = suggest(FolderFacts(50_000, 32), "cuda").config
    assert cfg.backbone == "resnet18" and cfg.optimizer == "lars"
    assert cfg.lr == pytest.approx(0.075 * math.sqrt(cfg.batch_size))
    assert cfg.minutes is None and cfg.epochs >= 10


def test_large_photos_train_at_64_px_on_a_cpu_with_blur_and_full_colour():
    cfg = suggest(FolderFacts(5_000, 480), "cpu").config
    assert cfg.image_size == 64 and cfg.augment.blur_p == 0 or cfg.image_size > 64
    assert suggest(FolderFacts(5_000, 480), "cuda").config.image_size == 224


def test_small_folders_get_batches_that_leave_several_steps():
    cfg = suggest(FolderFacts(100, 32), "cpu").config
    assert cfg.batch_size <= 25 and cfg.batch_size >= 16


def test_folders_under_sixteen_images_get_a_batch_training_accepts():
    from simclr_studio.batches import BatchSource

    for n in (2, 6, 15):
        cfg = suggest(FolderFacts(n, 32), "cpu").config
        assert cfg.batch_size == n
        BatchSource.check_batch_size(n, cfg.batch_size)  # raises when training would refuse it
    assert suggest(FolderFacts(16, 32), "cpu").config.batch_size == 16


def test_an_explicit_image_size_wins():
    assert suggest(FolderFacts(1000, 200), "cpu", image_size=48).config.image_size == 48


def test_run_config_suggested_is_the_recipe():
    a = RunConfig.suggested(1000, 28, "cpu", grayscale=True, minutes=3)
    b = suggest(FolderFacts(1000, 28, True), "cpu", 3).config
    assert a.to_dict() == b.to_dict()


def test_overrides_apply_and_are_checked():
    cfg = suggest(FolderFacts(1000, 28), "cpu").config
    changed = apply_overrides(cfg, ["lr=0.002", "augment.mask_p=0.5"])
    assert changed.lr == 0.002 and changed.augment.mask_p == 0.5 and cfg.augment.mask_p == 0
    with pytest.raises(ValueError):
        apply_overrides(cfg, ["nonsense=1"])
    with pytest.raises(ConfigError):
        apply_overrides(cfg, ["augment.mask_p=\"high\""])


@pytest.mark.parametrize("minutes", [0, -1, float("nan"), float("inf")])
def test_a_bad_time_budget_is_rejected(minutes):
    with pytest.raises(ConfigError, match="minutes"):
        RunConfig(minutes=minutes).validate()


# ---- time budget ----------------------------------------------------------------------------
def test_plan_fills_the_budget_left_at_the_measured_speed():
    budget = TimeBudget(minutes=1.0)
    total, warmup = budget.plan(global_step=0, seconds_per_step=0.5, steps_per_epoch=1000)
    assert 110 <= total <= 120 and warmup == math.ceil(0.1 * total)
    budget.used_before_s = 30.0  # half the budget already used (e.g. by a first session)
    total, _ = budget.plan(global_step=50, seconds_per_step=0.5, steps_per_epoch=1000)
    assert 50 + 55 <= total <= 50 + 60


def test_plan_reserves_time_for_epoch_ends_and_never_plans_zero_steps():
    budget = TimeBudget(minutes=1.0)
    budget.add_epoch_end(5.0)  # each epoch end (kNN, checkpoint) costs 5 s
    total, _ = budget.plan(global_step=0, seconds_per_step=0.1, steps_per_epoch=100)
    assert total * 0.1 + (total // 100 + 1) * 5.0 <= 60.0 + 1e-6
    assert total >= 300
    budget.used_before_s = 1000.0  # over budget: one more step ends the run
    assert budget.plan(global_step=7, seconds_per_step=0.1, steps_per_epoch=100)[0] == 8


def test_plan_when_an_epoch_end_costs_more_than_its_steps():
    """Slow epoch ends (a checkpoint on a busy disk) must shorten the plan, not collapse it: with
    2.4 s left, 0.05 s a step, 3 steps an epoch and 0.2 s an epoch end, 20 steps fit (21 cost 2.45 s)."""
    budget = TimeBudget(minutes=1.0)
    budget.used_before_s = 60.0 - 2.4 - 0.2  # 2.4 s left once the final epoch end is set aside
    budget.add_epoch_end(0.2)
    total, _ = budget.plan(global_step=0, seconds_per_step=0.05, steps_per_epoch=3)
    assert total in (19, 20)  # the clock ran on a little between setting used time and planning


def test_pauses_do_not_count_as_used_time():
    budget = TimeBudget(minutes=1.0, used_s=10.0)
    time.sleep(0.05)
    budget.add_pause(0.05)
    assert 10.0 <= budget.used_s() < 10.04
    assert budget.to_state()["budget_s"] == 60.0


# ---- online kNN -----------------------------------------------------------------------------
def test_knn_sample_is_class_balanced_and_keeps_small_classes_whole():
    labels = np.array([0] * 5 + [1] * 1000 + [2] * 1000 + [-1] * 50)
    idx = knn_sample(labels, max_images=205)
    counts = np.bincount(labels[idx])
    assert len(idx) == 205 and counts[0] == 5 and abs(counts[1] - counts[2]) <= 1
    assert (labels[idx] >= 0).all() and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, knn_sample(labels, max_images=205))  # deterministic
    assert len(knn_sample(labels, max_images=10_000)) == 2005  # everything labelled when it fits


def test_leave_one_out_knn_uses_k_up_to_200_not_the_smallest_class():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [3, 150, 150])
    features = rng.normal(size=(len(labels), 8)) + np.eye(8)[labels] * 4.0  # a direction per class
    acc, k = leave_one_out_knn(features, labels, 3)
    assert k == 200 and acc > 0.9
    acc, k = leave_one_out_knn(features[:50], labels[:50], 3)
    assert k == 49


def test_raw_pixel_features_are_flat_unit_range():
    import torch

    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    feats = raw_pixel_features(images)
    assert feats.shape == (2, 48) and feats.max() == 1.0
