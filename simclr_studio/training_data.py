"""A training run's data: the folder scanned, decoded into the RAM cache when it fits, and batched."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from simclr_studio.batches import BatchSource
from simclr_studio.config import RunConfig
from simclr_studio.data import DataError, ScanResult, scan_folder, typical_side
from simclr_studio.events import Event, LogEvent, PrepareProgress
from simclr_studio.image_cache import decode_cache, fits_in_ram, plan_cache_layout, without_failures


def prepare_training_data(cfg: RunConfig, device: torch.device, rank: int, world_size: int,
                          emit: Callable[[Event], None],
                          should_stop: Callable[[], bool]) -> tuple[ScanResult, BatchSource]:
    """The images of ``cfg.data_dir`` (those that fail to decode left out and reported) and this
    process's batches of them. Raises DataError when there is nothing to train on."""
    scan = scan_folder(cfg.data_dir, should_stop=should_stop, max_pixels=cfg.max_image_pixels,
                       progress=lambda d, t: emit(PrepareProgress(stage="scan", done=d, total=t)))
    if len(scan) == 0:
        skipped = f" ({len(scan.skipped)} files skipped)" if scan.skipped else ""
        raise DataError(f"no images found in {cfg.data_dir}{skipped}")
    BatchSource.check_batch_size(len(scan), cfg.batch_size, world_size)  # fail before a long decode
    # Every process keeps its own cache: the budget is shared by the processes on this machine.
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if world_size > 1 else 1
    budget_gb = cfg.cache_ram_gb / local_procs
    side = typical_side(scan.paths)
    layout = plan_cache_layout(cfg.image_size, side, budget_gb * (1 << 30), len(scan))
    cache = extents = None
    if fits_in_ram(len(scan), layout.stored, budget_gb):
        cache, extents, failures = decode_cache(
            scan.paths, layout, should_stop=should_stop, max_pixels=cfg.max_image_pixels,
            progress=lambda d, t: emit(PrepareProgress(stage="decode", done=d, total=t)))
        if failures:
            cache = without_failures(cache, failures)
            extents = without_failures(extents, failures) if extents is not None else None
            scan = scan.drop(failures)
    else:  # streamed: whole images too, at the training size's cache scale
        layout = plan_cache_layout(cfg.image_size, side)
    if layout.whole:
        emit(LogEvent(message=f"crops are cut from whole images with their shorter side at {layout.side} px"))
    for skipped_file in scan.skipped:
        emit(LogEvent(message=f"skipped {skipped_file.path}: {skipped_file.reason}"))
    if len(scan) == 0:
        raise DataError(f"no readable images in {cfg.data_dir}")
    source = BatchSource(scan.paths, cfg.image_size, cfg.batch_size, cfg.seed, cache=cache,
                         num_workers=cfg.num_workers, rank=rank, world_size=world_size,
                         pin_memory=device.type == "cuda", layout=layout, extents=extents,
                         max_pixels=cfg.max_image_pixels)
    return scan, source
