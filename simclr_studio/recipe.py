"""The default recipe: one function turns what is known about a folder, the machine and the time the
user gives into a complete RunConfig. The app's Train tab and the command line both call it.

The paper's hyper-parameters belong to batch 4096 on ImageNet for hundreds of epochs; this product
mostly runs small batches, small images and minutes-long CPU runs. Every choice below names the
measurement behind it: the tables are in the README ("Default recipe") and the raw trials in
``benchmarks/results/recipe-trials.json`` (``benchmarks/recipe_trials.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simclr_studio.config import AugmentConfig, RunConfig

# Steps a run without a time budget aims for (the epochs follow from the folder's size).
TARGET_STEPS = {"cpu": 2_000, "gpu": 20_000}


@dataclass
class FolderFacts:
    """What the recipe needs to know about the images (from a scan and a few decoded headers)."""

    n_images: int
    typical_side: int  # the median shorter side, in pixels
    grayscale: bool = False  # every sampled image has R = G = B


def folder_facts(paths: list[str]) -> FolderFacts:
    """The facts of a scanned folder's images (a few header reads and small decodes), measured as the
    app's scan does (gui.workers.ScanJob), so the command line and the app suggest alike."""
    from simclr_studio.data import looks_grayscale, typical_side

    return FolderFacts(len(paths), typical_side(paths), looks_grayscale(paths))


@dataclass
class Recipe:
    """A RunConfig and, for each choice, the reason (shown as tool tips and printed by the CLI)."""

    config: RunConfig
    reasons: dict[str, str] = field(default_factory=dict)


def training_size(typical_side: int, gpu: bool) -> int:
    """Small images stay at their own size; larger ones are trained at 64 px on a CPU (the budget
    buys more steps) and 96/224 px on a GPU."""
    if typical_side <= 40:
        return max(16, min(32, typical_side))
    if typical_side <= 80 or not gpu:
        return 64
    return 224 if typical_side >= 200 else 96


def suggest(facts: FolderFacts, device_type: str = "cpu", minutes: float | None = None,
            image_size: int | None = None) -> Recipe:
    """The recipe for ``facts`` on ``device_type`` ("cpu", "cuda" or "mps"), optionally within ``minutes``
    and at a given ``image_size`` (else chosen from the images' size)."""
    gpu = device_type in ("cuda", "mps")
    reasons: dict[str, str] = {}
    size = image_size or training_size(facts.typical_side, gpu)
    reasons["image_size"] = (f"{size} px: " + ("as asked" if image_size else
                                               f"from the images' typical side of {facts.typical_side} px"))

    backbone = "resnet18" if gpu else "tiny-cnn"
    reasons["backbone"] = ("ResNet-18 with a 3×3 stem below 64 px" if gpu else
                           "tiny-cnn: on a CPU its 2.5× more images per minute beat the small CNN's width "
                           "in the same time (recipe trials)")

    batch = 256
    while batch > 16 and batch > facts.n_images // 4:
        batch //= 2  # at least a few steps per epoch on small folders
    reasons["batch_size"] = (f"batch {batch}" + (": halved from 256 until the folder gives four steps per epoch"
                                                  if batch < 256 else ""))
    if 2 <= facts.n_images < batch:  # a folder of fewer than 16 images: one batch of all of them
        batch = facts.n_images
        reasons["batch_size"] = f"batch {batch}: every image of the folder in one batch"

    if gpu:
        optimizer, lr, weight_decay = "lars", 0.075 * math.sqrt(batch), 1e-6
        reasons["optimizer"] = f"LARS with the official square-root rule: lr = 0.075·√{batch} = {lr:.2f}"
    else:
        # Measured at batch 256; smaller batches take the square-root rule, as LARS does.
        optimizer, lr, weight_decay = "adamw", 2e-3 * math.sqrt(batch / 256), 1e-4
        reasons["optimizer"] = (f"AdamW, lr {lr:.2g}: learns faster than LARS in short CPU runs, and 2e-3 "
                                "faster than 1e-3 at batch 256 (recipe trials)")
    if gpu:
        temperature = 0.2
        reasons["temperature"] = "τ = 0.2: solo-learn's CIFAR setting for ResNet-18 (not measured here: no GPU)"
    else:
        temperature = 0.1
        reasons["temperature"] = "τ = 0.1: better kNN than 0.2 in short CPU runs at batch 256 (recipe trials)"

    small = size <= 64
    augment = AugmentConfig.for_image_size(size, crop_scale=(0.3, 1.0))
    if facts.grayscale:
        augment.grayscale_p = 0.0  # a no-op on grey images: do not spend the draws
    reasons["augment"] = ("crops of 30–100 % of the image" + ("; colour strength 0.5, no blur (small images)"
                                                              if small else "; colour strength 1.0, blur p 0.5"))

    if minutes is not None:
        epochs = 1  # ignored: the time budget sets the length
        reasons["length"] = f"{minutes:g} minutes: the schedule is laid over the measured speed"
    else:
        steps_per_epoch = max(1, facts.n_images // batch)
        target = TARGET_STEPS["gpu" if gpu else "cpu"]
        epochs = int(min(800 if gpu else 200, max(10, round(target / steps_per_epoch))))
        reasons["length"] = f"{epochs} epochs: about {target:,} steps"
    cfg = RunConfig(backbone=backbone, image_size=size, batch_size=batch, epochs=epochs, minutes=minutes,
                    optimizer=optimizer, lr=lr, weight_decay=weight_decay, temperature=temperature,
                    warmup_epochs=None, augment=augment)
    return Recipe(cfg, reasons)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``["lr=0.002", "augment.mask_p=0.5"]`` applied to a copy of ``cfg`` (JSON values), checked as a
    saved config is: for ablations on top of the recipe."""
    import json

    data = cfg.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        target, name = (data["augment"], key[len("augment."):]) if key.startswith("augment.") else (data, key)
        if name not in target:
            raise ValueError(f"unknown config key {key!r}")
        target[name] = json.loads(text)
    return RunConfig.from_dict(data)
