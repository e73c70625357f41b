"""Shared fixtures: tiny image folders and tiny configs, so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "resources" / "demo"


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 20, seed: int = 0) -> Path:
    """Class subfolders of small synthetic images: each class a distinct pattern with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.stack([(xx * (c + 1) * 13) % 256, (yy * (c + 2) * 7) % 256, np.full_like(xx, 80 * c)], -1)
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"img_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def tiny_config(image_folder: Path):
    from simclr_studio.config import RunConfig

    return RunConfig(data_dir=str(image_folder), backbone="small-cnn", image_size=16, batch_size=8, epochs=2,
                     device="cpu", optimizer="sgd", eval_every=1, seed=3)
