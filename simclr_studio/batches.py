"""Batch sources that feed training: one epoch's batches from the RAM cache or streamed from disk,
in an order that is a pure function of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch

from simclr_studio.data import DataError, decode_image, to_chw_tensor
from simclr_studio.image_cache import CacheLayout, decode_whole


class ImageFileDataset(torch.utils.data.Dataset):
    """Decodes one file per item (the streaming path, for folders too large to cache in RAM).

    Items are (pixels, extents, index); extents is (h, w) of a whole-image layout, else the stored side twice.
    """

    def __init__(self, paths: Sequence[str], size: int, layout: CacheLayout | None = None,
                 max_pixels: int | None = None):
        self.paths = list(paths)
        self.size = size
        self.layout = layout or CacheLayout(size, size, False)
        self.max_pixels = max_pixels  # None: data.MAX_IMAGE_PIXELS

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        layout = self.layout
        try:
            if layout.whole:
                image, hw = decode_whole(self.paths[index], layout, self.max_pixels)
                return to_chw_tensor(image), torch.tensor(hw, dtype=torch.int16), index
            image = decode_image(self.paths[index], layout.side, max_pixels=self.max_pixels)
            return to_chw_tensor(image), torch.tensor((layout.stored, layout.stored), dtype=torch.int16), index
        except DataError as exc:
            # A file that passed the header check but fails to decode: use a grey image and
            # flag it with index -1 so the trainer can report it; training keeps going.
            warnings.warn(f"skipping {self.paths[index]}: {exc}", stacklevel=2)
            grey = torch.full((3, layout.stored, layout.stored), 128, dtype=torch.uint8)
            return grey, torch.tensor((layout.stored, layout.stored), dtype=torch.int16), -1


def _ignore_sigint(worker_id: int) -> None:
    """Loader workers leave Ctrl-C and SIGTERM (torchrun signals whole process groups) to the main
    process, which stops training cleanly with a checkpoint."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a pure function of (seed, epoch), so resumed runs see the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class BatchSource:
    """Yields uint8 image batches [B, 3, S, S] for training, from a RAM cache or from files, and with
    ``batches_with_extents`` the (pixels, extents) pairs of a whole-image layout (``CacheLayout``).

    Every rank takes a strided share of the same epoch permutation (like DistributedSampler),
    and the last incomplete batch is dropped (every step sees a full batch of negatives).
    """

    def __init__(
        self,
        paths: Sequence[str],
        size: int,
        batch_size: int,
        seed: int,
        cache: torch.Tensor | None = None,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        layout: CacheLayout | None = None,
        extents: torch.Tensor | None = None,
        max_pixels: int | None = None,
    ):
        self.paths = list(paths)
        self.layout = layout or CacheLayout(size, size, False)
        self.extents = extents  # of the cached images, for a whole-image layout
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.cache = cache
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory
        self.max_pixels = max_pixels  # streamed images over this many pixels fail (None: data.MAX_IMAGE_PIXELS)
        self.decode_failures = 0  # streamed files that failed to decode (replaced by grey images)
        self.check_batch_size(len(self.paths), batch_size, world_size)
        self.steps_per_epoch = len(self.paths) // world_size // batch_size

    @staticmethod
    def check_batch_size(n_images: int, batch_size: int, world_size: int = 1) -> None:
        """Raise DataError unless every process gets at least one full batch."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        per_rank = n_images // world_size
        if per_rank < 2 and per_rank < batch_size:
            raise DataError(
                f"only {per_rank} image(s) available" + (" per process" if world_size > 1 else "")
                + f" for batch size {batch_size}; training needs at least 2 images per batch: add images"
                + (" or use fewer processes" if world_size > 1 else "")
            )
        if per_rank < batch_size:
            raise DataError(
                f"batch size {batch_size} is larger than the {per_rank} images available"
                + (" per process" if world_size > 1 else "")
                + f"; use --batch-size {per_rank} or fewer"
            )

    @property
    def cached(self) -> bool:
        return self.cache is not None

    def indices(self, epoch: int) -> torch.Tensor:
        perm = epoch_permutation(len(self.paths), self.seed, epoch)
        per_rank = len(self.paths) // self.world_size
        return perm[self.rank :: self.world_size][:per_rank]

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[torch.Tensor]:
        for pixels, _ in self.batches_with_extents(epoch, start_step):
            yield pixels

    def batches_with_extents(self, epoch: int,
                             start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(pixels, extents) per step; extents is None unless the layout keeps whole images."""
        order = self.indices(epoch)[: self.steps_per_epoch * self.batch_size]
        order = order[start_step * self.batch_size :]
        whole = self.layout.whole
        if self.cache is not None:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                extents = self.extents.index_select(0, rows) if whole and self.extents is not None else None
                yield self.cache.index_select(0, rows), extents
            return
        loader = torch.utils.data.DataLoader(
            ImageFileDataset(self.paths, self.size, self.layout, self.max_pixels),
            batch_size=self.batch_size,
            sampler=order.tolist(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=_ignore_sigint,
            persistent_workers=False,
            drop_last=True,
        )
        for images, extents, index in loader:
            self.decode_failures += int((index < 0).sum())
            yield images, (extents if whole else None)
