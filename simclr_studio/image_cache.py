"""The RAM cache of a folder's images: its layout (centre squares, or whole images for crops of the
real image), its size, and decoding a folder into it on threads."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simclr_studio.data import MAX_CACHE_ASPECT, DataError, ProgressFn, decode_image

# Whole images are cached with the shorter side at CACHE_SCALE × the training size, so a random crop
# of a large photo is cut from real pixels, not upsampled from a shrunk centre square (README: "Crops").
CACHE_SCALE = 1.5


@dataclass(frozen=True)
class CacheLayout:
    """How training images are held. ``whole=False``: centre squares at ``side`` (images no larger than
    the training size: nothing to gain). ``whole=True``: each whole image (aspect up to 4:3) with its
    shorter side at ``side``, in the top-left of a ``stored`` × ``stored`` tensor, its (h, w) in extents."""

    side: int
    stored: int
    whole: bool

    def bytes_per_image(self) -> int:
        return cache_bytes(1, self.stored)


def plan_cache_layout(image_size: int, typical_side: int, budget_bytes: float | None = None,
                      n_images: int = 0, scale: float = CACHE_SCALE) -> CacheLayout:
    """The largest layout up to ``scale`` × ``image_size`` (never above the images' typical side) that
    fits ``budget_bytes`` for ``n_images``; the plain training-size layout when none does."""
    plain = CacheLayout(image_size, image_size, False)
    if typical_side <= image_size:
        return plain
    side = min(int(round(scale * image_size)), typical_side)
    while side > image_size:
        layout = CacheLayout(side, int(np.ceil(side * MAX_CACHE_ASPECT)), True)
        if budget_bytes is None or n_images * layout.bytes_per_image() <= budget_bytes:
            return layout
        side = max(image_size, int(side * 0.9))
    return plain


def decode_whole(path: str | Path, layout: CacheLayout,
                 max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode for a whole-image layout: uint8 [stored, stored, 3] with the image in the top-left and
    its (height, width); the shorter side is ``layout.side``, a longer side beyond 4:3 is cut centred."""
    image = decode_image(path, None, short_side=layout.side, max_pixels=max_pixels)
    h, w = image.shape[:2]
    out = np.zeros((layout.stored, layout.stored, 3), dtype=np.uint8)
    out[:h, :w] = image
    return out, (h, w)


def cache_bytes(n_images: int, size: int) -> int:
    return n_images * 3 * size * size


def decode_all(
    paths: Sequence[str],
    size: int,
    threads: int = 0,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_pixels: int | None = None,
) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode every path into one uint8 tensor [N, 3, size, size] (centre squares); failures come back
    as {index: reason}. Rows of failed images are left zero; callers drop them."""
    pixels, _, failures = decode_cache(paths, CacheLayout(size, size, False), threads, progress, should_stop,
                                       max_pixels)
    return pixels, failures


def decode_cache(
    paths: Sequence[str],
    layout: CacheLayout,
    threads: int = 0,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_pixels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[int, str]]:
    """Decode every path in ``layout``: (uint8 pixels [N, 3, stored, stored], int16 extents [N, 2] of a
    whole-image layout or None, {index: reason} of failures). PIL releases the GIL while decoding,
    so a thread pool scales with cores; images over ``max_pixels`` (default data.MAX_IMAGE_PIXELS) fail,
    and large ones wait for data.DECODE_BUDGET_BYTES, so a few huge files never decode at once."""
    # A numpy buffer: the pool's threads must not call into PyTorch, or each would start its own
    # OpenMP thread team, and those teams linger and compete with training for the cores.
    out = np.zeros((len(paths), 3, layout.stored, layout.stored), dtype=np.uint8)
    extents = np.zeros((len(paths), 2), dtype=np.int16) if layout.whole else None
    failures: dict[int, str] = {}
    threads = threads or min(8, os.cpu_count() or 1)

    def work(i: int) -> None:
        try:
            if extents is None:
                out[i] = decode_image(paths[i], layout.side, max_pixels=max_pixels).transpose(2, 0, 1)
            else:
                image, extents[i] = decode_whole(paths[i], layout, max_pixels)
                out[i] = image.transpose(2, 0, 1)
        except DataError as exc:
            failures[i] = str(exc)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        chunk = 256
        for start in range(0, len(paths), chunk):
            if should_stop is not None and should_stop():
                raise InterruptedError("stopped while decoding images")
            list(pool.map(work, range(start, min(start + chunk, len(paths)))))
            if progress is not None:
                progress(min(start + chunk, len(paths)), len(paths))
    return torch.from_numpy(out), (torch.from_numpy(extents) if extents is not None else None), failures


def without_failures(images: torch.Tensor, failures: dict[int, str]) -> torch.Tensor:
    """The rows of a ``decode_all`` result whose images decoded (failed rows are only zeros)."""
    if not failures:
        return images
    keep = torch.tensor([i for i in range(images.shape[0]) if i not in failures], dtype=torch.long)
    return images.index_select(0, keep)


def fits_in_ram(n_images: int, size: int, budget_gb: float) -> bool:
    return cache_bytes(n_images, size) <= budget_gb * (1 << 30)
