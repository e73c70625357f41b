"""Pixel signatures: what an image looks like at a glance, as a short vector whose cosine similarity
finds near-exact copies that an encoder's features miss.

SimCLR trains the encoder to ignore what copies differ by (scale, crops, colour), but also makes it
see distinct look-alikes as nearly the same: with briefly trained encoders, resized copies score no
higher than an image's nearest distinct neighbour. A signature keeps the layout instead: the image's
grey thumbnail (``SIDE`` × ``SIDE``, kept with the embeddings), its 2-D DCT-II, and the lowest
``FREQUENCIES`` × ``FREQUENCIES`` frequencies without the constant term (pHash's recipe, kept as
numbers rather than bits). Resizing and re-encoding hardly move these (benchmarks/duplicates.py: every
JPEG quality-75 and resized copy of Fashion-MNIST ≥ 0.998 similar to its original), and brightness
offsets not at all. Crops do move them: ``crops.py`` matches a signature against boxes of a thumbnail.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SIDE = 32
FREQUENCIES = 8
DIMS = FREQUENCIES * FREQUENCIES - 1


@lru_cache(maxsize=1)
def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix: row k holds cos(π (2i + 1) k / 2n), scaled."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    m[0] /= 2**0.5
    return m.float()


def grey_thumbnails(images: torch.Tensor) -> np.ndarray:
    """uint8 [N, SIDE, SIDE]: uint8 images [N, 3, H, W] (any size) in grey, resampled (1 KB each)."""
    if images.shape[0] == 0:
        return np.zeros((0, SIDE, SIDE), np.uint8)
    grey = images.float().mean(1, keepdim=True)
    small = torch.nn.functional.interpolate(grey, size=(SIDE, SIDE), mode="bilinear", antialias=True,
                                            align_corners=False)[:, 0]
    return small.round().clamp(0, 255).to(torch.uint8).numpy()


def unit_signatures(low: torch.Tensor) -> torch.Tensor:
    """Unit-length signatures from DCT coefficients [..., FREQUENCIES, FREQUENCIES] (constant term dropped)."""
    flat = low.reshape(*low.shape[:-2], -1)[..., 1:]
    return torch.nn.functional.normalize(flat, dim=-1)


def thumbnail_signatures(thumbnails: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """float32 [N, DIMS] unit signatures of grey thumbnails (uint8 [N, SIDE, SIDE])."""
    dct = dct_matrix(SIDE)[:FREQUENCIES]
    parts = [unit_signatures(dct @ torch.from_numpy(thumbnails[s : s + chunk]).float() @ dct.T).numpy()
             for s in range(0, len(thumbnails), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, DIMS), np.float32)


def image_signatures(images: torch.Tensor) -> np.ndarray:
    """float32 [N, DIMS] unit signatures of uint8 images [N, 3, H, W]."""
    return thumbnail_signatures(grey_thumbnails(images))
