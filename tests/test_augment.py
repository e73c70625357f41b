"""Tests for simclr_studio.augment: determinism, each op against a reference, masking statistics, presets."""

from __future__ import annotations

import colorsys
import dataclasses
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from simclr_studio import augment as A
from simclr_studio.config import AugmentConfig, ConfigError

LUMA = (0.299, 0.587, 0.114)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(b: int, h: int = 16, w: int | None = None, seed: int = 0, lo: float = 0.0, hi: float = 1.0):
    g = gen(seed)
    return torch.rand((b, 3, h, w or h), generator=g) * (hi - lo) + lo


def smooth_images(b: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    """Coloured gradients plus noise: every pixel distinct, channels distinct."""
    g = gen(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack((xx, yy, 1 - xx * yy), 0).unsqueeze(0)
    return (0.7 * base + 0.3 * torch.rand((b, 3, size, size), generator=g)).clamp(0, 1)


def full_cfg(**kw) -> AugmentConfig:
    """Every op on, masking and blending included, so determinism covers the whole pipeline."""
    base = dict(blur_p=0.5, mask_p=0.5, blend_p=0.5, mask_fill="noise")
    base.update(kw)
    return AugmentConfig(**base)


# ---- determinism ----------------------------------------------------------------------------
def test_make_views_is_a_pure_function_of_seed_and_step():
    x = (smooth_images(6, 24) * 255).to(torch.uint8)
    cfg = full_cfg()
    a1, a2 = A.make_views(x, cfg, 16, A.step_generator(7, 3))
    b1, b2 = A.make_views(x, cfg, 16, A.step_generator(7, 3))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    for seed, step in ((7, 4), (8, 3), (0, 0)):
        c1, c2 = A.make_views(x, cfg, 16, A.step_generator(seed, step))
        assert not torch.allclose(a1, c1, atol=1e-3), (seed, step)
        assert not torch.allclose(a2, c2, atol=1e-3), (seed, step)


def test_two_views_of_one_call_differ_per_image():
    x = smooth_images(8, 24)
    v1, v2 = A.make_views(x, AugmentConfig(), 16, A.step_generator(0, 0))
    per_image = (v1 - v2).abs().flatten(1).amax(1)
    assert (per_image > 1e-3).all()


def test_step_generator_is_distinct_per_step_and_seed():
    draws = {
        (s, t): tuple(torch.rand(4, generator=A.step_generator(s, t)).tolist())
        for s in range(3) for t in range(50)
    }
    assert len(set(draws.values())) == len(draws)
    assert draws[(1, 5)] == tuple(torch.rand(4, generator=A.step_generator(1, 5)).tolist())


def test_input_is_not_modified():
    x = smooth_images(4, 16)
    keep = x.clone()
    A.make_views(x, full_cfg(mask_p=1.0, blend_p=1.0, jitter_p=1.0, blur_p=1.0), 16, gen(1))
    assert torch.equal(x, keep)


# ---- output ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("in_hw,size", [((16, 16), 16), ((24, 24), 16), ((12, 12), 20), ((20, 28), 16)])
def test_output_range_shape_and_dtype(dtype, in_hw, size):
    x = rand_images(5, in_hw[0], in_hw[1], seed=2)
    if dtype == torch.uint8:
        x = (x * 255).round().to(torch.uint8)
    v1, v2 = A.make_views(x, full_cfg(mask_p=1.0, blend_p=1.0), size, gen(3))
    for v in (v1, v2):
        assert v.shape == (5, 3, size, size)
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all()
        assert v.min() >= 0 and v.max() <= 1


def test_uint8_input_is_scaled_to_unit_range():
    # With every op off the pipeline is the identity crop, so a uint8 input comes back as x / 255.
    xf = rand_images(3, 16, seed=4)
    x8 = (xf * 255).round().to(torch.uint8)
    cfg = AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    out = A.augment(x8, cfg, 16, gen(0))
    assert torch.allclose(out, x8.float() / 255, atol=1e-5)


def test_normalize_uses_imagenet_statistics():
    x = rand_images(2, 4, seed=29)
    out = A.normalize(x)
    expect = TF.normalize(x, list(A.IMAGENET_MEAN), list(A.IMAGENET_STD))
    assert torch.allclose(out, expect, atol=1e-6)
    assert A.IMAGENET_MEAN == (0.485, 0.456, 0.406) and A.IMAGENET_STD == (0.229, 0.224, 0.225)


# ---- random_resized_crop --------------------------------------------------------------------
def ramp_images(b: int, h: int, w: int) -> torch.Tensor:
    """Channel 0: x of each pixel centre in [0, 1]; channel 1: y; channel 2: constant."""
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    img = torch.stack((xs.view(1, -1).expand(h, w), ys.view(-1, 1).expand(h, w),
                       torch.full((h, w), 0.5, dtype=torch.float64)))
    return img.unsqueeze(0).expand(b, -1, -1, -1).contiguous()


def crop_extent(out: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed crop width and height (fractions of the input side) from a cropped ramp, from interior samples."""
    cw = (out[:, 0, s // 2, s - 2] - out[:, 0, s // 2, 1]) / (s - 3) * s
    ch = (out[:, 1, s - 2, s // 2] - out[:, 1, 1, s // 2]) / (s - 3) * s
    return cw, ch


def crop_centre(out: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop's centre (fractions of the input side): the mean of the ramp's two middle samples."""
    mid = slice(s // 2 - 1, s // 2 + 1)
    return out[:, 0, s // 2, mid].mean(1), out[:, 1, mid, s // 2].mean(1)


def test_full_crop_without_flip_is_identity():
    x = rand_images(4, 16, seed=5)
    out = A.random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), 0.0, gen(0))
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-5)


def test_full_crop_with_flip_p1_is_exact_horizontal_flip():
    x = rand_images(4, 16, seed=6)
    out = A.random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), 1.0, gen(0))
    assert torch.allclose(out, x.flip(-1), atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-2)


def test_flip_p_half_flips_about_half():
    x = ramp_images(400, 16, 16).float()
    out = A.random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), 0.5, gen(1))
    flipped = out[:, 0, 8, 0] > out[:, 0, 8, -1]
    assert torch.allclose(out[flipped], x[flipped].flip(-1), atol=1e-5)
    assert torch.allclose(out[~flipped], x[~flipped], atol=1e-5)
    assert 0.4 < flipped.float().mean().item() < 0.6


def test_non_square_input_falls_back_to_the_centre_crop():
    # A 16×32 image cannot hold a full-area square crop: torchvision's fallback is the centre 16×16.
    x = rand_images(3, 16, 32, seed=7)
    out = A.random_resized_crop(x, 16, (1.0, 1.0), (1.0, 1.0), 0.0, gen(0))
    assert torch.allclose(out, x[..., 8:24], atol=1e-5)
    tall = rand_images(3, 32, 16, seed=8)
    out = A.random_resized_crop(tall, 16, (1.0, 1.0), (1.0, 1.0), 0.0, gen(0))
    assert torch.allclose(out, tall[..., 8:24, :], atol=1e-5)


def test_crop_areas_and_aspects_follow_scale_and_ratio():
    h = w = 64
    s = 24
    lo, hi = 0.1, 0.5  # with ratio ≤ 4/3 no try is rejected, so the area is exactly U(lo, hi)
    rlo, rhi = 3 / 4, 4 / 3
    x = ramp_images(1500, h, w)
    out = A.random_resized_crop(x, s, (lo, hi), (rlo, rhi), 0.5, gen(2))
    cw, ch = crop_extent(out, s)
    area = cw.abs() * ch
    aspect = cw.abs() / ch
    assert (ch > 0).all()
    assert area.min() >= lo - 1e-3 and area.max() <= hi + 1e-3
    assert aspect.min() >= rlo - 1e-3 and aspect.max() <= rhi + 1e-3
    # Uniform area: mean and spread of U(0.1, 0.5).
    assert abs(area.mean().item() - (lo + hi) / 2) < 0.012
    assert area.min() < lo + 0.02 and area.max() > hi - 0.02
    # Log-uniform aspect: log-aspect mean 0 (the range is symmetric in log space).
    assert abs(aspect.log().mean().item()) < 0.02
    assert aspect.min() < rlo + 0.03 and aspect.max() > rhi - 0.03
    # The crop lies inside the image. (Its samples say nothing there: sampling clamps to the border
    # pixels.) Its edges, from the centre and the extent measured inside, lie within [0, 1].
    cx, cy = crop_centre(out, s)
    assert (cx - cw.abs() / 2).min() >= -1e-4 and (cx + cw.abs() / 2).max() <= 1 + 1e-4
    assert (cy - ch / 2).min() >= -1e-4 and (cy + ch / 2).max() <= 1 + 1e-4
    # and reaches its edges: the crop positions are uniform over the room there is.
    assert (cx - cw.abs() / 2).min() < 0.01 and (cx + cw.abs() / 2).max() > 0.99
    # Flip about half (negative width = decreasing ramp).
    assert 0.45 < (cw < 0).float().mean().item() < 0.55


def test_crop_positions_cover_the_image():
    x = ramp_images(800, 64, 64)
    out = A.random_resized_crop(x, 16, (0.1, 0.1), (1.0, 1.0), 0.0, gen(3))
    cx = out[:, 0, 8, :].mean(1)  # centre of the crop (ramp is linear)
    half = math.sqrt(0.1) / 2
    assert cx.min() >= half - 0.01 and cx.max() <= 1 - half + 0.01
    assert cx.min() < half + 0.05 and cx.max() > 1 - half - 0.05
    assert abs(cx.mean().item() - 0.5) < 0.02


# ---- colour ---------------------------------------------------------------------------------
REFS = {
    "brightness": (A._brightness, TF.adjust_brightness),
    "contrast": (A._contrast, TF.adjust_contrast),
    "saturation": (A._saturation, TF.adjust_saturation),
    "hue": (A._hue, TF.adjust_hue),
}
# torchvision's grayscale (used by contrast and saturation) weighs red 0.2989, this module 0.299 (ITU-R 601):
# a difference of at most 1e-4·|1 - factor|, so 2e-4 covers it.
TOL = 2e-4


@pytest.mark.parametrize("name", list(REFS))
def test_colour_ops_match_torchvision_per_sample(name):
    ours, ref = REFS[name]
    x = smooth_images(6, 12, seed=9)
    x[0] = 0.5  # a gray image
    x[1, :, :4] = 1.0  # saturated white band
    if name == "hue":
        factors = torch.tensor([-0.5, -0.3, -0.05, 0.0, 0.2, 0.45])
    else:
        factors = torch.tensor([0.0, 0.2, 0.7, 1.0, 1.5, 1.8])
    out = ours(x.clone(), factors)
    expect = torch.stack([ref(x[i], float(factors[i])) for i in range(len(factors))])
    assert torch.allclose(out, expect, atol=TOL), (out - expect).abs().max()
    # Different factors really give different images (the factors are per sample).
    assert not torch.allclose(out[2], ours(x[2:3].clone(), factors[5:6])[0], atol=1e-3)


def test_hsv_matches_colorsys_and_round_trips():
    x = rand_images(3, 8, seed=10)
    x[0, :, 0, 0] = torch.tensor([0.3, 0.3, 0.3])  # gray: hue and saturation 0
    x[0, :, 0, 1] = 0.0  # black
    x[0, :, 0, 2] = torch.tensor([1.0, 0.0, 0.0])
    x[0, :, 0, 3] = torch.tensor([0.2, 0.9, 0.9])  # tie between g and b
    hsv = A._rgb_to_hsv(x)
    flat_rgb = x.permute(0, 2, 3, 1).reshape(-1, 3).tolist()
    flat_hsv = hsv.permute(0, 2, 3, 1).reshape(-1, 3)
    expect = torch.tensor([colorsys.rgb_to_hsv(*p) for p in flat_rgb], dtype=torch.float32)
    # Hue is circular: compare on the circle.
    dh = (flat_hsv[:, 0] - expect[:, 0]).abs()
    assert (torch.minimum(dh, 1 - dh) < 1e-5).all()
    assert torch.allclose(flat_hsv[:, 1:], expect[:, 1:], atol=1e-5)
    assert torch.allclose(A._hsv_to_rgb(hsv), x, atol=1e-5)
    rgb = A._hsv_to_rgb(hsv)
    back = torch.tensor([colorsys.hsv_to_rgb(*p) for p in flat_hsv.tolist()], dtype=torch.float32)
    assert torch.allclose(rgb.permute(0, 2, 3, 1).reshape(-1, 3), back, atol=1e-5)


def test_color_jitter_p0_and_strength0_are_identity():
    # Against a copy: both return their input itself, which would equal ``x`` even if changed in place.
    x = smooth_images(5, 12, seed=11)
    keep = x.clone()
    assert torch.equal(A.color_jitter(x, 0.0, 1.0, gen(0)), keep)
    assert torch.equal(A.color_jitter(x, 1.0, 0.0, gen(0)), keep)


def test_color_jitter_p1_changes_every_image():
    x = smooth_images(16, 12, seed=12)
    out = A.color_jitter(x, 1.0, 1.0, gen(1))
    assert ((out - x).abs().flatten(1).amax(1) > 1e-3).all()
    assert out.min() >= 0 and out.max() <= 1


def test_color_jitter_p_half_changes_about_half():
    x = smooth_images(400, 4, seed=13)
    out = A.color_jitter(x, 0.5, 1.0, gen(2))
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert 0.4 < changed.float().mean().item() < 0.6


def test_color_jitter_matches_torchvision_with_per_image_order():
    """Replays the module's draws (apply coin, 4 factors, per-image permutation) and applies torchvision's ops."""
    b, strength, p = 24, 1.0, 0.75
    x = smooth_images(b, 10, seed=14)
    out = A.color_jitter(x, p, strength, gen(5))
    g = gen(5)
    apply = torch.rand(b, generator=g) < p
    bcs, hue = 0.8 * strength, min(0.5, 0.2 * strength)
    f = [torch.rand(b, generator=g) * (2 * bcs) + (1 - bcs) for _ in range(3)]
    f.append(torch.rand(b, generator=g) * (2 * hue) - hue)
    order = torch.argsort(torch.rand((b, 4), generator=g), dim=1)
    refs = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    # The orders really differ between images, and some images are left alone.
    assert len({tuple(o) for o in order[apply].tolist()}) >= 6
    assert 0 < int(apply.sum()) < b
    for i in range(b):
        img = x[i]
        if apply[i]:
            for k in order[i].tolist():
                img = refs[k](img, float(f[k][i]))
        assert torch.allclose(out[i], img, atol=3 * TOL), (i, (out[i] - img).abs().max())


def test_color_jitter_ranges_follow_strength():
    # Brightness alone would scale a gray image by U(1-0.8s, 1+0.8s); with contrast/saturation/hue being
    # no-ops on a flat gray image, the output's value is 0.5·brightness.
    x = torch.full((2000, 3, 2, 2), 0.5)
    for s in (0.5, 1.0):
        out = A.color_jitter(x, 1.0, s, gen(6))
        v = out[:, 0, 0, 0] / 0.5
        assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out), atol=1e-6)
        assert v.min() >= 1 - 0.8 * s - 1e-5 and v.max() <= min(2.0, 1 + 0.8 * s) + 1e-5
        assert v.min() < 1 - 0.8 * s + 0.02 and v.max() > min(2.0, 1 + 0.8 * s) - 0.02


# ---- grayscale ------------------------------------------------------------------------------
def test_random_grayscale_p1_is_itu601_luma():
    x = rand_images(4, 8, seed=15)
    out = A.random_grayscale(x, 1.0, gen(0))
    luma = LUMA[0] * x[:, 0] + LUMA[1] * x[:, 1] + LUMA[2] * x[:, 2]
    for c in range(3):
        assert torch.allclose(out[:, c], luma, atol=1e-6)


def test_random_grayscale_p0_identity_and_p_half():
    x = rand_images(400, 4, seed=16)
    keep = x.clone()
    assert torch.equal(A.random_grayscale(x, 0.0, gen(0)), keep)
    out = A.random_grayscale(x, 0.5, gen(1))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert torch.equal(out[~gray], x[~gray])
    assert 0.4 < gray.float().mean().item() < 0.6


# ---- blur -----------------------------------------------------------------------------------
def test_blur_preserves_constant_image():
    x = torch.rand(5, 3, 1, 1, generator=gen(17)).expand(5, 3, 20, 20).contiguous()
    out = A.gaussian_blur(x, 1.0, (0.1, 2.0), gen(0))
    assert torch.allclose(out, x, atol=1e-6)


def test_blur_reduces_noise_variance_and_keeps_mean():
    x = rand_images(6, 32, seed=18)
    out = A.gaussian_blur(x, 1.0, (1.0, 2.0), gen(1))
    assert (out.var(dim=(2, 3)) < 0.6 * x.var(dim=(2, 3))).all()
    assert torch.allclose(out.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)


def test_blur_p0_identity_and_p_half():
    x = rand_images(200, 16, seed=19)
    keep = x.clone()
    assert torch.equal(A.gaussian_blur(x, 0.0, (0.1, 2.0), gen(0)), keep)
    out = A.gaussian_blur(x, 0.5, (1.0, 2.0), gen(2))
    same = (out == x).flatten(1).all(1)
    assert 0.38 < same.float().mean().item() < 0.62
    assert ((out[~same] - x[~same]).abs().flatten(1).amax(1) > 1e-3).all()


@pytest.mark.parametrize("size,kernel", [(16, 3), (32, 3), (64, 7), (100, 11)])
def test_blur_matches_torchvision_with_ten_percent_kernel(size, kernel):
    # σ range (σ, σ) fixes the draw; torchvision uses the same kernel formula and reflect padding.
    x = rand_images(2, size, seed=20)
    sigma = 1.3
    out = A.gaussian_blur(x, 1.0, (sigma, sigma), gen(0))
    expect = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    assert torch.allclose(out, expect, atol=1e-5)


def test_blur_uses_a_sigma_per_image():
    x = rand_images(1, 32, seed=21).expand(64, -1, -1, -1).contiguous()
    out = A.gaussian_blur(x, 1.0, (0.3, 3.0), gen(3))
    variances = out.var(dim=(1, 2, 3))
    assert variances.max() > 1.5 * variances.min()


# ---- masking: box ---------------------------------------------------------------------------
def box_of(mask: torch.Tensor):
    """(is one filled axis-aligned rectangle, area) for a boolean [H, W] mask."""
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    if len(rows) == 0:
        return False, 0
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    rect = bool(mask[r0:r1, c0:c1].all()) and int(mask.sum()) == (r1 - r0) * (c1 - c0)
    return rect, int(mask.sum())


def test_mask_box_area_statistics_and_shape():
    b, h, w = 2000, 32, 32
    lo, hi = 0.02, 0.25
    rlo, rhi = 0.3, 3.3
    x = torch.ones(b, 3, h, w)
    out = A.random_mask_box(x, 1.0, (lo, hi), (rlo, rhi), "zero", gen(4))
    zero = out[:, 0] == 0
    # The same box in every channel, and only zeros and ones.
    assert torch.equal(zero, out[:, 1] == 0) and torch.equal(zero, out[:, 2] == 0)
    assert ((out == 0) | (out == 1)).all()
    frac = zero.flatten(1).float().mean(1)
    # Each side holds the box length ± 1 pixel: bound the discretisation error per image.
    side_max = math.sqrt(hi * max(rhi, 1 / rlo))
    tol = 2 * side_max / w + 1 / (h * w)
    assert frac.min() >= lo - tol and frac.max() <= hi + tol
    assert (frac > 0).all()
    # The box covers U(lo, hi) of the image on average (uniform position keeps the pixel count unbiased).
    assert abs(frac.mean().item() - (lo + hi) / 2) < 0.006
    assert frac.min() < lo + 0.02 and frac.max() > hi - 0.03
    for i in range(0, b, 7):
        rect, _ = box_of(zero[i])
        assert rect, i
    # Box shapes vary (aspect ratio is random), not always square.
    widths = zero.any(1).sum(1).float()
    heights = zero.any(2).sum(1).float()
    assert (widths / heights).max() > 2 and (widths / heights).min() < 0.5


def test_mask_box_position_is_uniform():
    b, h, w = 1000, 32, 32
    zero = reference_box(b, h, w, (0.05, 0.05), (1.0, 1.0), 13)
    side = math.sqrt(0.05)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    n = zero.flatten(1).sum(1)
    cx = (zero * xs).flatten(1).sum(1) / n / w
    cy = (zero * ys).flatten(1).sum(1) / n / h
    for c in (cx, cy):
        # The box stays inside the image and its centre is uniform over [side/2, 1 - side/2].
        assert c.min() >= side / 2 - 1 / w and c.max() <= 1 - side / 2 + 1 / w
        assert c.min() < side / 2 + 0.03 and c.max() > 1 - side / 2 - 0.03
        assert abs(c.mean().item() - 0.5) < 0.02


def test_mask_box_p0_identity_and_p_half():
    x = rand_images(2000, 16, seed=22, lo=0.1)
    keep = x.clone()
    assert torch.equal(A.random_mask_box(x, 0.0, (0.1, 0.3), (0.3, 3.3), "zero", gen(0)), keep)
    out = A.random_mask_box(x, 0.5, (0.1, 0.3), (0.3, 3.3), "zero", gen(1))
    masked = (out == 0).flatten(1).any(1)
    assert torch.equal(out[~masked], x[~masked])
    assert 0.46 < masked.float().mean().item() < 0.54


def reference_box(b, h, w, scale, ratio, seed):
    ones = torch.ones(b, 3, h, w)
    return A.random_mask_box(ones, 1.0, scale, ratio, "zero", gen(seed))[:, 0] == 0


def test_mask_fill_mean_is_the_per_channel_image_mean():
    x = rand_images(8, 20, seed=23, lo=0.2, hi=0.9)
    x[:, 1] *= 0.5  # distinct channel means
    out = A.random_mask_box(x, 1.0, (0.1, 0.3), (0.5, 2.0), "mean", gen(5))
    box = reference_box(8, 20, 20, (0.1, 0.3), (0.5, 2.0), 5)  # the box draws do not depend on the fill
    assert (box.flatten(1).sum(1) > 0).all()
    mean = x.mean(dim=(2, 3))
    for i in range(8):
        inside = out[i][:, box[i]]
        assert torch.allclose(inside, mean[i].view(3, 1).expand_as(inside), atol=1e-6)
        assert torch.equal(out[i][:, ~box[i]], x[i][:, ~box[i]])


def test_mask_fill_noise_varies_inside_the_box():
    x = torch.full((8, 3, 20, 20), 0.5)
    out = A.random_mask_box(x, 1.0, (0.1, 0.3), (0.5, 2.0), "noise", gen(6))
    box = reference_box(8, 20, 20, (0.1, 0.3), (0.5, 2.0), 6)
    for i in range(8):
        inside = out[i][:, box[i]]
        assert inside.numel() > 0
        assert inside.std() > 0.15  # U(0, 1) has std 0.29
        assert inside.min() >= 0 and inside.max() <= 1
        assert (out[i][:, ~box[i]] == 0.5).all()
        rect, _ = box_of((out[i] != 0.5).any(0))
        assert rect


# ---- masking: blend -------------------------------------------------------------------------
def test_blend_with_image_source_mixes_with_another_image():
    b, a = 7, 0.3
    x = rand_images(b, 8, seed=24)
    out = A.random_blend(x, 1.0, (a, a), "image", gen(7))
    partners = []
    for i in range(b):
        errs = [((out[i] - ((1 - a) * x[i] + a * x[j])).abs().max().item(), j) for j in range(b)]
        err, j = min(errs)
        assert err < 1e-6, i
        assert j != i
        partners.append(j)
    # One roll of the batch: a constant shift, so every image is used once.
    shifts = {(i - j) % b for i, j in enumerate(partners)}
    assert len(shifts) == 1 and shifts != {0}
    assert sorted(partners) == list(range(b))


def test_blend_image_source_shift_varies_with_the_generator():
    x = rand_images(6, 4, seed=25)
    shifts = set()
    for seed in range(30):
        out = A.random_blend(x, 1.0, (0.5, 0.5), "image", gen(seed))
        j = min(range(6), key=lambda j: (out[0] - 0.5 * x[0] - 0.5 * x[j]).abs().max().item())
        shifts.add(j)
    assert 0 not in shifts and len(shifts) >= 3


def test_blend_alpha_follows_the_range():
    # Constant images c_i: out_i = (1-α)·c_i + α·c_j, so α = (out_i - c_i) / (c_j - c_i) for the partner j.
    b = 400
    c = torch.linspace(0, 1, b)[torch.randperm(b, generator=gen(8))]
    x = c.view(b, 1, 1, 1).expand(b, 3, 2, 2).contiguous()
    lo, hi = 0.1, 0.4
    g = gen(9)
    out = A.random_blend(x, 1.0, (lo, hi), "image", g)
    # Recover the shift: the one roll for which every α lands in [0, 1].
    for shift in range(1, b):
        m = x.roll(shift, 0)[:, 0, 0, 0]
        alpha = (out[:, 0, 0, 0] - c) / (m - c)
        if alpha.min() > -1e-3 and alpha.max() < 1 + 1e-3:
            break
    else:
        pytest.fail("no roll explains the blend")
    assert alpha.min() >= lo - 1e-3 and alpha.max() <= hi + 1e-3
    assert abs(alpha.mean().item() - (lo + hi) / 2) < 0.02


def test_blend_with_noise_source():
    a = 0.4
    x = rand_images(6, 16, seed=26)
    out = A.random_blend(x, 1.0, (a, a), "noise", gen(10))
    m = (out - (1 - a) * x) / a  # the noise image M
    assert m.min() >= -1e-5 and m.max() <= 1 + 1e-5
    assert abs(m.mean().item() - 0.5) < 0.03 and abs(m.std().item() - 1 / math.sqrt(12)) < 0.02
    assert ((out - x).abs().flatten(1).amax(1) > 0.1).all()
    assert out.min() >= 0 and out.max() <= 1


def test_blend_p0_identity_and_p_half():
    x = rand_images(400, 4, seed=27)
    assert torch.equal(A.random_blend(x, 0.0, (0.1, 0.4), "noise", gen(0)), x)
    assert torch.equal(A.random_blend(x, 0.0, (0.1, 0.4), "image", gen(0)), x)
    out = A.random_blend(x, 0.5, (0.2, 0.4), "noise", gen(1))
    chosen = torch.rand(400, generator=gen(1)) < 0.5  # the coin is the generator's first draw
    assert 0.4 < chosen.float().mean().item() < 0.6
    assert torch.equal(out[~chosen], x[~chosen])  # α = 0: untouched
    assert ((out[chosen] - x[chosen]).abs().flatten(1).amax(1) > 0.01).all()  # α ≥ 0.2 of the noise


def test_blend_image_source_with_one_image_falls_back_to_noise():
    x = torch.full((1, 3, 8, 8), 0.5)
    out = A.random_blend(x, 1.0, (0.5, 0.5), "image", gen(11))
    assert out.std() > 0.05


# ---- the whole pipeline ---------------------------------------------------------------------
def test_masking_only_preset_keeps_the_image_outside_the_box():
    cfg = dataclasses.replace(AugmentConfig.masking_only(), blend_p=0.0)
    x = rand_images(6, 16, seed=28, lo=0.2)
    out = A.augment(x, cfg, 16, gen(12))
    for i in range(6):
        zero = (out[i] < 1e-6).all(0)
        rect, area = box_of(zero)
        assert rect and area > 0
        assert torch.allclose(out[i][:, ~zero], x[i][:, ~zero], atol=1e-5)


def test_pipeline_applies_masking_when_enabled():
    x = torch.ones(64, 3, 16, 16)
    base = AugmentConfig(crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    assert torch.equal(A.augment(x, base, 16, gen(0)), x)
    masked = A.augment(x, dataclasses.replace(base, mask_p=1.0), 16, gen(0))
    assert ((masked == 0).flatten(1).any(1)).all()
    blended = A.augment(x, dataclasses.replace(base, blend_p=1.0), 16, gen(0))
    assert ((blended < 1 - 1e-3).flatten(1).any(1)).all()


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 32, 64])
def test_small_images_get_no_blur_and_half_strength(size):
    cfg = AugmentConfig.for_image_size(size)
    assert cfg.blur_p == 0.0 and cfg.jitter_strength == 0.5
    cfg.validate()


@pytest.mark.parametrize("size", [65, 96, 224])
def test_large_images_get_blur_and_full_strength(size):
    cfg = AugmentConfig.for_image_size(size)
    assert cfg.blur_p == 0.5 and cfg.jitter_strength == 1.0
    cfg.validate()


def test_for_image_size_overrides():
    cfg = AugmentConfig.for_image_size(32, blur_p=0.3, mask_p=0.2)
    assert cfg.blur_p == 0.3 and cfg.mask_p == 0.2 and cfg.jitter_strength == 0.5


def test_masking_only_preset():
    cfg = AugmentConfig.masking_only()
    cfg.validate()
    assert cfg.crop_scale == (1.0, 1.0) and cfg.crop_ratio == (1.0, 1.0) and cfg.flip_p == 0.0
    assert cfg.jitter_p == 0.0 and cfg.grayscale_p == 0.0 and cfg.blur_p == 0.0
    assert cfg.mask_p == 1.0 and cfg.blend_p > 0


@pytest.mark.parametrize(
    "change",
    [
        {"flip_p": -0.1}, {"jitter_p": 1.5}, {"grayscale_p": 2.0}, {"blur_p": -1.0}, {"mask_p": 1.01},
        {"blend_p": -0.5}, {"crop_scale": (0.5, 0.1)}, {"crop_scale": (0.0, 1.0)}, {"crop_scale": (0.5, 1.5)},
        {"crop_ratio": (2.0, 1.0)}, {"blur_sigma": (0.0, 1.0)}, {"mask_scale": (0.3, 0.2)},
        {"mask_scale": (0.1, 1.2)}, {"mask_ratio": (-1.0, 2.0)}, {"blend_alpha": (0.5, 0.2)},
        {"blend_alpha": (0.1, 1.5)}, {"blend_alpha": (-0.1, 0.5)}, {"jitter_strength": -0.5},
        {"mask_fill": "black"}, {"blend_source": "images"},
    ],
)
def test_validate_rejects_bad_values(change):
    with pytest.raises(ConfigError):
        dataclasses.replace(AugmentConfig(), **change).validate()


@pytest.mark.parametrize(
    "change",
    [{}, {"blend_alpha": (0.0, 0.3)}, {"mask_fill": "mean"}, {"mask_fill": "noise"}, {"blend_source": "image"},
     {"jitter_strength": 0.0}, {"flip_p": 1.0, "mask_p": 0.0}],
)
def test_validate_accepts_good_values(change):
    dataclasses.replace(AugmentConfig(), **change).validate()


# ---- preview --------------------------------------------------------------------------------
def preview_inputs(n: int = 3, size: int = 24):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_preview_views_shapes_and_original():
    imgs = preview_inputs()
    cfg = AugmentConfig.for_image_size(16)
    res = A.preview_views(imgs, cfg, 16, seed=3)
    assert isinstance(res, list) and len(res) == 3
    for (orig, v1, v2), img in zip(res, imgs, strict=True):
        assert orig.dtype == v1.dtype == v2.dtype == np.uint8
        assert orig.shape == (24, 24, 3) and v1.shape == v2.shape == (16, 16, 3)
        assert np.array_equal(orig, img)
        assert not np.array_equal(v1, v2)


def test_preview_views_deterministic_per_seed():
    imgs = preview_inputs()
    cfg = AugmentConfig.for_image_size(16, mask_p=0.5)
    a = A.preview_views(imgs, cfg, 16, seed=1)
    b = A.preview_views(imgs, cfg, 16, seed=1)
    c = A.preview_views(imgs, cfg, 16, seed=2)
    assert all(np.array_equal(p, q) for ra, rb in zip(a, b, strict=True) for p, q in zip(ra, rb, strict=True))
    assert any(not np.array_equal(ra[1], rc[1]) for ra, rc in zip(a, c, strict=True))


def test_preview_views_accepts_a_tensor_batch():
    imgs = preview_inputs(2, 20)
    batch = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in imgs])
    from_tensor = A.preview_views(batch, AugmentConfig(), 16, seed=4)
    from_list = A.preview_views(imgs, AugmentConfig(), 16, seed=4)
    for ra, rb in zip(from_tensor, from_list, strict=True):
        for p, q in zip(ra, rb, strict=True):
            assert np.array_equal(p, q)
    assert np.array_equal(from_tensor[0][0], imgs[0])


# ---- CUDA -----------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pipeline_runs_on_cuda():
    x = (smooth_images(8, 24) * 255).to(torch.uint8).cuda()
    cfg = full_cfg(mask_p=1.0, blend_p=1.0, blend_source="image", jitter_p=1.0, blur_p=1.0)
    v1, v2 = A.make_views(x, cfg, 16, A.step_generator(1, 2, device="cuda"))
    w1, _ = A.make_views(x, cfg, 16, A.step_generator(1, 2, device="cuda"))
    for v in (v1, v2):
        assert v.is_cuda and v.shape == (8, 3, 16, 16) and v.dtype == torch.float32
        assert torch.isfinite(v).all() and v.min() >= 0 and v.max() <= 1
    assert torch.equal(v1, w1)
    assert not torch.allclose(v1, v2, atol=1e-3)
    for fill in ("zero", "mean", "noise"):
        A.augment(x, dataclasses.replace(cfg, mask_fill=fill, blend_source="noise"), 16,
                  A.step_generator(0, 0, device="cuda"))


def test_colour_jitter_takes_a_shortcut_for_grey_images_without_changing_results():
    from simclr_studio.augment import color_jitter, step_generator

    g0 = torch.Generator().manual_seed(0)
    grey = torch.rand((4, 1, 12, 12), generator=g0).expand(-1, 3, -1, -1).contiguous()
    coloured = torch.rand((4, 3, 12, 12), generator=g0)
    # Grey stays grey, and equals the full path (hue and saturation through HSV) on a copy with a
    # colour cast too small to matter, which takes that path.
    out = color_jitter(grey, 1.0, 1.0, step_generator(1, 0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    cast = grey.clone()
    cast[:, 0] += 1e-6
    full = color_jitter(cast, 1.0, 1.0, step_generator(1, 0))
    assert torch.allclose(out, full, atol=1e-4)
    # The shortcut draws the same random numbers: the coloured images of a mixed batch come out
    # exactly as in an all-colour batch.
    mixed = torch.cat((grey[:2], coloured[2:]))
    a = color_jitter(mixed, 1.0, 1.0, step_generator(2, 0))
    b = color_jitter(coloured, 1.0, 1.0, step_generator(2, 0))
    assert torch.equal(a[2:], b[2:])


def test_blend_with_another_image_leaves_out_that_images_mask_box():
    # Constant images c_i, every view boxed (fill zero) then blended with α = 0.5 and M another
    # image of the batch: a pixel is 0.5·(c_i + c_j) outside its own box and 0.5·c_j inside it.
    # Had M brought its own box along, 0.5·c_i (the other's box) and 0 (both boxes) would show too.
    b = 6
    c = torch.linspace(0.3, 0.9, b)
    x = c.view(b, 1, 1, 1).expand(b, 3, 16, 16).contiguous()
    cfg = AugmentConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, mask_p=1.0, mask_scale=(0.1, 0.3),
                        mask_fill="zero", blend_p=1.0, blend_alpha=(0.5, 0.5), blend_source="image")
    for seed in range(5):
        out = A.augment(x, cfg, 16, gen(seed))
        for i in range(b):
            values = out[i].flatten()
            fits = [j for j in range(b) if j != i and bool(
                ((values - 0.5 * (c[i] + c[j])).abs() < 1e-5).logical_or((values - 0.5 * c[j]).abs() < 1e-5).all())]
            assert fits, (seed, i, sorted(set(values.tolist())))
