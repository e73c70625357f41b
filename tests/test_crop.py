"""Crops from whole images: the cache layout, crops that stay inside each image, antialiasing, and
the evaluation view."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from simclr_studio.augment import centre_view, random_resized_crop, step_generator
from simclr_studio.data import decode_image
from simclr_studio.image_cache import CacheLayout, decode_cache, decode_whole, plan_cache_layout


def test_layout_keeps_small_images_as_they_were():
    assert plan_cache_layout(28, 28) == CacheLayout(28, 28, False)
    assert plan_cache_layout(32, 20) == CacheLayout(32, 32, False)


def test_layout_caches_larger_images_whole_within_the_ram_budget():
    layout = plan_cache_layout(64, 500)
    assert layout == CacheLayout(96, 128, True)
    assert plan_cache_layout(64, 80).side == 80  # never above the images' own size
    small_budget = plan_cache_layout(64, 500, budget_bytes=1000 * 3 * 100 * 100, n_images=1000)
    assert 64 < small_budget.side < 96 and 1000 * small_budget.bytes_per_image() <= 1000 * 3 * 100 * 100
    assert plan_cache_layout(64, 500, budget_bytes=1, n_images=1000) == CacheLayout(64, 64, False)


def test_decode_whole_keeps_the_image_up_to_4_3_and_cuts_wider_ones(tmp_path):
    layout = CacheLayout(30, 40, True)
    Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(tmp_path / "4x3.png")
    Image.fromarray(np.full((50, 200, 3), 100, np.uint8)).save(tmp_path / "4x1.png")
    Image.fromarray(np.full((80, 60, 3), 50, np.uint8)).save(tmp_path / "3x4.png")
    image, hw = decode_whole(tmp_path / "4x3.png", layout)
    assert image.shape == (40, 40, 3) and hw == (30, 40) and (image[:30, :40] == 200).all() and (image[30:] == 0).all()
    assert decode_whole(tmp_path / "4x1.png", layout)[1] == (30, 40)
    assert decode_whole(tmp_path / "3x4.png", layout)[1] == (40, 30)
    pixels, extents, failures = decode_cache([str(tmp_path / n) for n in ("4x3.png", "3x4.png")], layout, threads=1)
    assert pixels.shape == (2, 3, 40, 40) and extents.tolist() == [[30, 40], [40, 30]] and not failures


def test_crops_stay_inside_each_image():
    x = torch.zeros(16, 3, 40, 40)
    extents = torch.tensor([[30, 40], [40, 30]] * 8, dtype=torch.int16)
    for i, (h, w) in enumerate(extents.tolist()):
        x[i, :, :h, :w] = 0.8  # the image; zeros outside it
    g = step_generator(0, 0)
    out = random_resized_crop(x, 16, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, g, extents)
    assert out.shape == (16, 3, 16, 16)
    assert out.min() > 0.79  # not a single sample from outside an image
    without = random_resized_crop(x, 16, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, step_generator(0, 0))
    assert without.min() < 0.1  # the test can fail: ignoring the extents reaches the zeros


def test_full_extents_give_the_same_crops_as_none():
    x = torch.rand(8, 3, 24, 24)
    full = torch.full((8, 2), 24, dtype=torch.int16)
    a = random_resized_crop(x, 24, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, step_generator(1, 2))
    b = random_resized_crop(x, 24, (0.08, 1.0), (3 / 4, 4 / 3), 0.5, step_generator(1, 2), full)
    assert torch.allclose(a, b, atol=1e-6)


def test_shrinking_crops_are_antialiased():
    # A one-pixel checkerboard shrunk 3.2×: a plain bilinear sample aliases it into a pattern of
    # light and dark; averaged, every output pixel is mid-grey.
    board = ((torch.arange(64).view(1, -1) + torch.arange(64).view(-1, 1)) % 2).float()
    x = board.expand(4, 3, 64, 64).contiguous()
    out = random_resized_crop(x, 20, (1.0, 1.0), (1.0, 1.0), 0.0, step_generator(0, 0))
    assert (out - 0.5).abs().max() < 0.05
    plain = torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    assert (plain - 0.5).abs().max() > 0.25  # what the test guards against


def test_centre_view_matches_the_evaluation_decode(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (12, 16, 3)), np.ones((10, 10, 1))).astype(np.uint8)  # 120×160
    Image.fromarray(smooth).save(tmp_path / "photo.png")
    layout = CacheLayout(48, 64, True)
    image, hw = decode_whole(tmp_path / "photo.png", layout)
    cached = torch.from_numpy(image).permute(2, 0, 1)[None]
    view = centre_view(cached, 32, torch.tensor([hw], dtype=torch.int16))[0].permute(1, 2, 0).numpy() * 255
    direct = decode_image(tmp_path / "photo.png", 32).astype(np.float32)
    assert view.shape == direct.shape == (32, 32, 3)
    assert np.abs(view - direct).mean() < 12  # same content and framing; resamplers differ slightly
    shifted = np.roll(direct, 8, axis=1)
    assert np.abs(view - shifted).mean() > 2 * np.abs(view - direct).mean()  # framing matters
