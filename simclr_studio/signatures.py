"""Pixel signatures: what an image looks like at a glance, as a short vector whose cosine similarity
finds near-exact copies that an encoder's features miss.

SimCLR trains the encoder to ignore what copies differ by (scale, crops, colour), but also makes it
see distinct look-alikes as nearly the same: with briefly trained encoders, resized copies score no
higher than an image's nearest distinct neighbour. A signature keeps the layout instead: the image in
grey, resampled to ``SIDE`` × ``SIDE``, its 2-D DCT-II, and the lowest ``FREQUENCIES`` × ``FREQUENCIES``
frequencies without the constant term (pHash's recipe, kept as numbers rather than bits). Resizing and
re-encoding hardly move these (benchmarks/duplicates.py: every JPEG quality-75 and resized copy of
Fashion-MNIST ≥ 0.998 similar to its original), and brightness offsets not at all.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SIDE = 32
FREQUENCIES = 8
DIMS = FREQUENCIES * FREQUENCIES - 1


@lru_cache(maxsize=1)
def _dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix: row k holds cos(π (2i + 1) k / 2n), scaled."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    m[0] /= 2**0.5
    return m.float()


def image_signatures(images: torch.Tensor) -> np.ndarray:
    """float32 [N, DIMS] signatures of uint8 images [N, 3, H, W] (any size; rows are not normalised)."""
    if images.shape[0] == 0:
        return np.zeros((0, DIMS), np.float32)
    grey = images.float().mean(1, keepdim=True)
    small = torch.nn.functional.interpolate(grey, size=(SIDE, SIDE), mode="bilinear", antialias=True,
                                            align_corners=False)[:, 0]
    dct = _dct_matrix(SIDE)
    low = (dct @ small @ dct.T)[:, :FREQUENCIES, :FREQUENCIES]
    return low.reshape(len(low), -1)[:, 1:].numpy().astype(np.float32)
