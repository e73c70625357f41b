"""SimCLR view augmentations and masking, batched on tensors on the training device.

Every random draw goes through one ``torch.Generator``, so views are a pure function of
(images, config, seed). The same code serves training and the GUI preview.

Input: uint8 or float images [B, 3, H, W]; output: float views in [0, 1], [B, 3, S, S].
Order follows the paper: crop → flip → colour jitter → grayscale → blur, then masking
(box erase, then blend X' = (1-α)·X + α·M).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from simclr_studio.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL and torchvision use for grayscale


def _uniform(g: torch.Generator, n: int, lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _coin(g: torch.Generator, n: int, p: float, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


def _log_uniform(g: torch.Generator, shape, lo: float, hi: float, device) -> torch.Tensor:
    u = torch.rand(shape, generator=g, device=device)
    return torch.exp(u * (math.log(hi) - math.log(lo)) + math.log(lo))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


# ---- crop + flip ----------------------------------------------------------------------------
MAX_SUPERSAMPLE = 4  # a crop shrunk by k× is averaged over k×k samples per output pixel, k at most 4


def _sample_boxes(x: torch.Tensor, size: int, cw, ch, cx, cy, flip, valid_h, valid_w) -> torch.Tensor:
    """Resample the boxes (centre cx, cy and extent cw, ch as fractions of each image's valid region)
    to size × size, antialiased: a box k times larger than the output is sampled at k·size and
    area-averaged (bilinear grid_sample alone would alias, which would act as a sharpening
    augmentation nobody asked for). Images are grouped by k, so small images take one plain pass."""
    b, c, h, w = x.shape
    fx, fy = valid_w / w, valid_h / h  # the valid region as a fraction of the stored tensor
    theta = torch.zeros((b, 2, 3), device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = cw * fx * flip
    theta[:, 0, 2] = 2 * cx * fx - 1
    theta[:, 1, 1] = ch * fy
    theta[:, 1, 2] = 2 * cy * fy - 1
    shrink = torch.maximum(cw * valid_w, ch * valid_h) / size
    # Rounded, not ceiled: below 1.5× bilinear's 2×2 footprint still covers the gaps between samples,
    # and the supersampled pass costs k² times the sampling.
    k = shrink.round().clamp(1, MAX_SUPERSAMPLE).to(torch.long)
    levels = torch.unique(k).tolist()
    if len(levels) == 1:  # one pass for the whole batch (always the case for small images)
        level = int(levels[0])
        grid = F.affine_grid(theta, [b, c, size * level, size * level], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return F.avg_pool2d(out, level) if level > 1 else out
    out = x.new_empty((b, c, size, size))
    for level in levels:
        sel = (k == level).nonzero().squeeze(1)
        grid = F.affine_grid(theta[sel], [len(sel), c, size * level, size * level], align_corners=False)
        part = F.grid_sample(x[sel], grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[sel] = F.avg_pool2d(part, level) if level > 1 else part
    return out


def _valid_sizes(x: torch.Tensor, extents: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (height, width) in pixels of the part of the tensor that holds the image."""
    b, _, h, w = x.shape
    if extents is None:
        return (torch.full((b,), float(h), device=x.device), torch.full((b,), float(w), device=x.device))
    ext = extents.to(x.device, torch.float32)
    return ext[:, 0], ext[:, 1]


def random_resized_crop(
    x: torch.Tensor, size: int, scale, ratio, flip_p: float, g: torch.Generator,
    extents: torch.Tensor | None = None,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop (10 tries, then a centre crop) and a horizontal flip, batched.

    ``extents`` [B, 2] (height, width) says which top-left part of each stored image is the image
    (the cache keeps whole images of several aspect ratios in one tensor); None: all of it.
    """
    b = x.shape[0]
    dev = x.device
    vh, vw = _valid_sizes(x, extents)
    tries = 10
    area = torch.rand((b, tries), generator=g, device=dev) * (scale[1] - scale[0]) + scale[0]
    aspect = _log_uniform(g, (b, tries), ratio[0], ratio[1], dev)
    in_ratio = (vw / vh).unsqueeze(1)
    cw = torch.sqrt(area * aspect / in_ratio)  # crop width as a fraction of the image width
    ch = torch.sqrt(area / aspect * in_ratio)
    ok = (cw <= 1) & (ch <= 1)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1, device=dev))
    idx = first.clamp(min=0).unsqueeze(1)
    cw = cw.gather(1, idx).squeeze(1)
    ch = ch.gather(1, idx).squeeze(1)
    # Fallback as torchvision: the whole image cropped to the nearest allowed aspect ratio.
    r = in_ratio.squeeze(1)
    fb_w = torch.where(r > ratio[1], (ratio[1] / r).clamp(max=1.0), torch.ones_like(r))
    fb_h = torch.where(r < ratio[0], (r / ratio[0]).clamp(max=1.0), torch.ones_like(r))
    failed = first < 0
    cw = torch.where(failed, fb_w, cw)
    ch = torch.where(failed, fb_h, ch)
    cx = torch.rand(b, generator=g, device=dev) * (1 - cw) + cw / 2
    cy = torch.rand(b, generator=g, device=dev) * (1 - ch) + ch / 2
    cx = torch.where(failed, torch.full_like(cx, 0.5), cx)
    cy = torch.where(failed, torch.full_like(cy, 0.5), cy)
    flip = torch.where(_coin(g, b, flip_p, dev), -1.0, 1.0)
    return _sample_boxes(x, size, cw.to(x.dtype), ch.to(x.dtype), cx.to(x.dtype), cy.to(x.dtype), flip.to(x.dtype),
                         vh.to(x.dtype), vw.to(x.dtype))


def centre_view(x: torch.Tensor, size: int, extents: torch.Tensor | None = None) -> torch.Tensor:
    """The evaluation view: the centre square of each image resized to size × size (antialiased),
    float in [0, 1]. What ``data.decode_image(path, size)`` gives, from a cached batch."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    b = x.shape[0]
    vh, vw = _valid_sizes(x, extents)
    side = torch.minimum(vh, vw)
    half = torch.full((b,), 0.5, device=x.device)
    out = _sample_boxes(x, size, (side / vw).to(x.dtype), (side / vh).to(x.dtype), half.to(x.dtype),
                        half.to(x.dtype), torch.ones_like(half).to(x.dtype), vh.to(x.dtype), vw.to(x.dtype))
    return out.clamp_(0, 1)


# ---- colour ---------------------------------------------------------------------------------
def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-8), torch.zeros_like(maxc))
    safe = delta.clamp(min=1e-8)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = torch.stack(
        (torch.stack((v, t, p), 1), torch.stack((q, v, p), 1), torch.stack((p, v, t), 1),
         torch.stack((p, q, v), 1), torch.stack((t, p, v), 1), torch.stack((v, p, q), 1)), 0)
    index = i.unsqueeze(0).unsqueeze(2).expand(1, -1, 3, -1, -1)
    return choices.gather(0, index).squeeze(0)


def _view(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def _brightness(x, f):
    return (x * _view(f)).clamp(0, 1)


def _contrast(x, f):
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * _view(f) + mean).clamp(0, 1)


def _saturation(x, f):
    gray = grayscale(x)
    return ((x - gray) * _view(f) + gray).clamp(0, 1)


def _hue(x, f):
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + f.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(hsv).clamp(0, 1)


def color_jitter(x: torch.Tensor, p: float, strength: float, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation (0.8·s) and hue (0.2·s) in a random order per image, with probability p."""
    b, dev = x.shape[0], x.device
    apply = _coin(g, b, p, dev)
    bcs = 0.8 * strength
    hue = min(0.5, 0.2 * strength)
    factors = (
        _uniform(g, b, max(0.0, 1 - bcs), 1 + bcs, dev),
        _uniform(g, b, max(0.0, 1 - bcs), 1 + bcs, dev),
        _uniform(g, b, max(0.0, 1 - bcs), 1 + bcs, dev),
        _uniform(g, b, -hue, hue, dev),
    )
    ops = (_brightness, _contrast, _saturation, _hue)
    order = torch.argsort(torch.rand((b, 4), generator=g, device=dev), dim=1)
    if not bool(apply.any()) or strength == 0:
        return x
    # Saturation and hue leave a grey image (R = G = B) as it is, and the hue round trip through
    # HSV is the costliest op: skip both for grey images (all of them in a grayscale dataset).
    coloured = (x.amax(1) - x.amin(1)).flatten(1).amax(1) > 0
    x = x.clone()
    for step in range(4):
        for k, op in enumerate(ops):
            sel = apply & (order[:, step] == k)
            if k >= 2:
                sel = sel & coloured
            if bool(sel.any()):
                x[sel] = op(x[sel], factors[k][sel])
    return x


def random_grayscale(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    sel = _coin(g, x.shape[0], p, x.device)
    return torch.where(_view(sel), grayscale(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, p: float, sigma_range, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur with σ ~ U(sigma_range) per image, kernel ≈ 10% of the side (paper), with probability p."""
    b, c, h, w = x.shape
    dev = x.device
    sel = _coin(g, b, p, dev)
    sigma = _uniform(g, b, sigma_range[0], sigma_range[1], dev)
    if not bool(sel.any()):
        return x
    k = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    half = k // 2
    xs = x[sel]
    n = xs.shape[0]
    coords = torch.arange(k, device=dev, dtype=x.dtype) - half
    kern = torch.exp(-(coords.view(1, -1) ** 2) / (2 * sigma[sel].view(-1, 1).to(x.dtype) ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # [n, k]
    kern = kern.repeat_interleave(c, 0)  # one kernel per (image, channel)
    flat = xs.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (half, half, 0, 0), mode="reflect"), kern.view(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, half, half), mode="reflect"), kern.view(n * c, 1, k, 1), groups=n * c)
    out = x.clone()
    out[sel] = flat.view(n, c, h, w)
    return out


# ---- masking --------------------------------------------------------------------------------
def random_mask_box(x: torch.Tensor, p: float, scale, ratio, fill: str, g: torch.Generator) -> torch.Tensor:
    """Erase one box per image (area fraction ~ U(scale), log-uniform aspect, uniform position)."""
    b, c, h, w = x.shape
    dev = x.device
    sel = _coin(g, b, p, dev)
    area = _uniform(g, b, scale[0], scale[1], dev)
    aspect = _log_uniform(g, (b,), ratio[0], ratio[1], dev)
    bw = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the side
    bh = torch.sqrt(area / aspect).clamp(max=1.0)
    x0 = torch.rand(b, generator=g, device=dev) * (1 - bw)
    y0 = torch.rand(b, generator=g, device=dev) * (1 - bh)
    noise = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype) if fill == "noise" else None
    if not bool(sel.any()):
        return x
    xs = (torch.arange(w, device=dev, dtype=x.dtype) + 0.5) / w
    ys = (torch.arange(h, device=dev, dtype=x.dtype) + 0.5) / h
    in_x = (xs.view(1, -1) >= x0.view(-1, 1)) & (xs.view(1, -1) < (x0 + bw).view(-1, 1))
    in_y = (ys.view(1, -1) >= y0.view(-1, 1)) & (ys.view(1, -1) < (y0 + bh).view(-1, 1))
    box = (in_y.unsqueeze(2) & in_x.unsqueeze(1)) & sel.view(-1, 1, 1)
    box = box.unsqueeze(1)
    if fill == "zero":
        value = torch.zeros_like(x)
    elif noise is not None:  # fill == "noise"
        value = noise
    else:  # per-image, per-channel mean
        value = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return torch.where(box, value, x)


def random_blend(x: torch.Tensor, p: float, alpha_range, source: str, g: torch.Generator,
                 others: torch.Tensor | None = None) -> torch.Tensor:
    """X' = (1-α)·X + α·M with α ~ U(alpha_range); M is uniform noise or another image of the batch,
    taken from ``others`` (same shape as ``x``; default ``x``) so that M can be that image without its mask box."""
    b = x.shape[0]
    dev = x.device
    sel = _coin(g, b, p, dev)
    alpha = _uniform(g, b, alpha_range[0], alpha_range[1], dev) * sel
    if source == "noise" or b < 2:
        m = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype)
    else:
        shift = 1 + int(torch.randint(0, b - 1, (1,), generator=g, device=dev))
        m = (x if others is None else others).roll(shift, dims=0)  # a different image for every sample
    a = _view(alpha.to(x.dtype))
    return (1 - a) * x + a * m


# ---- the pipeline ---------------------------------------------------------------------------
def augment(x: torch.Tensor, cfg: AugmentConfig, size: int, g: torch.Generator,
            extents: torch.Tensor | None = None) -> torch.Tensor:
    """One augmented view of every image. ``x`` uint8 or float in [0, 1], on the generator's device;
    ``extents``: see ``random_resized_crop``."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    x = random_resized_crop(x, size, cfg.crop_scale, cfg.crop_ratio, cfg.flip_p, g, extents)
    x = color_jitter(x, cfg.jitter_p, cfg.jitter_strength, g)
    x = random_grayscale(x, cfg.grayscale_p, g)
    if cfg.blur_p > 0:
        x = gaussian_blur(x, cfg.blur_p, cfg.blur_sigma, g)
    unmasked = x  # the blend's M: another image as it was before its own mask box
    if cfg.mask_p > 0:
        x = random_mask_box(x, cfg.mask_p, cfg.mask_scale, cfg.mask_ratio, cfg.mask_fill, g)
    if cfg.blend_p > 0:
        x = random_blend(x, cfg.blend_p, cfg.blend_alpha, cfg.blend_source, g, others=unmasked)
    return x.clamp_(0, 1)


def make_views(x: torch.Tensor, cfg: AugmentConfig, size: int, g: torch.Generator,
               extents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of every image."""
    return augment(x, cfg, size, g, extents), augment(x, cfg, size, g, extents)


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator for one training step: a pure function of (seed, step), so resume is exact."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 7_919 + 17) % (2**63))


def preview_views(images: list[np.ndarray] | torch.Tensor, cfg: AugmentConfig, size: int, seed: int = 0):
    """(original, view 1, view 2) as uint8 HWC arrays for a few images: what the GUI's preview shows."""
    if isinstance(images, torch.Tensor):
        batch = images
    else:
        batch = torch.stack([torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1) for a in images])
    g = step_generator(seed, 0)
    v1, v2 = make_views(batch, cfg, size, g)

    def to_hwc(t: torch.Tensor) -> np.ndarray:
        if t.dtype != torch.uint8:
            t = (t * 255).round().clamp(0, 255).to(torch.uint8)
        return t.permute(1, 2, 0).cpu().numpy()

    return [(to_hwc(batch[i]), to_hwc(v1[i]), to_hwc(v2[i])) for i in range(batch.shape[0])]
