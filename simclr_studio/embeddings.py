"""Features of a whole folder under one checkpoint, cached in the run folder so reopening is instant.

The cache file is keyed by the checkpoint (path, size, modification time), the image size and the
list of image paths: a newer ``last.pt`` or a changed folder is embedded again, anything else is
read back. Maps (PCA, t-SNE) computed later are stored in the same file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simclr_studio.data import ScanResult
from simclr_studio.run_folder import RunFolder
from simclr_studio.trained import TrainedModel, file_identity

RANDOM_INIT = "random-init"  # the checkpoint name of a randomly initialised encoder


@dataclass
class Embeddings:
    features: np.ndarray  # float32 [N, D], encoder outputs (not the projection head)
    paths: list[str]
    labels: np.ndarray  # int64 [N], -1 where the folder has no class subfolders
    classes: list[str]
    checkpoint: str  # the checkpoint file, or RANDOM_INIT
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of images that failed to decode
    thumbnails: np.ndarray | None = None  # uint8 [N, SIDE, SIDE] grey thumbnails (signatures.py): near-exact copies
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # "pca" / "tsne" → float32 [N, 2]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labeled(self) -> bool:
        return len(self.classes) >= 2 and bool((self.labels >= 0).any())


def cache_key(checkpoint: str | Path, image_size: int, paths: list[str], identity: tuple | None = None) -> str:
    """The checkpoint's identity (path, size, date, inode: as it was when its weights were read, when
    given), the image size and the image list."""
    h = hashlib.sha1()
    if str(checkpoint).startswith(RANDOM_INIT):
        h.update(str(checkpoint).encode())
    else:
        identity = identity or file_identity(checkpoint)
        h.update(f"{Path(checkpoint).resolve()}|{identity}".encode())
    h.update(f"|{image_size}|{len(paths)}|".encode())
    h.update("\n".join(paths).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def cache_path(run_dir: str | Path, checkpoint: str | Path, image_size: int, paths: list[str],
               identity: tuple | None = None) -> Path:
    stem = Path(checkpoint).stem if not str(checkpoint).startswith(RANDOM_INIT) else str(checkpoint)
    return RunFolder(run_dir).embeddings_dir / f"{stem}-{cache_key(checkpoint, image_size, paths, identity)}.npz"


_save_lock = threading.Lock()  # saves of the same file may overlap (each after a new map)


def save(emb: Embeddings, path: str | Path) -> Path:
    """Atomic .npz (no pickles: strings are stored as fixed-width unicode arrays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _save_lock:
        _save(emb, path)
    return path


def _save(emb: Embeddings, path: Path) -> None:
    from simclr_studio.atomic import atomic_write

    arrays: dict[str, Any] = dict(features=emb.features.astype(np.float32), paths=np.asarray(emb.paths, dtype=str),
                  labels=emb.labels.astype(np.int64), classes=np.asarray(emb.classes, dtype=str),
                  meta=np.asarray(json.dumps({"checkpoint": emb.checkpoint, "skipped": emb.skipped})))
    if emb.thumbnails is not None:
        arrays["thumbnails"] = emb.thumbnails.astype(np.uint8)
    for name, coords in dict(emb.maps).items():  # a snapshot: another thread may be adding a map
        arrays[f"map_{name}"] = coords.astype(np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load(path: str | Path) -> Embeddings:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        maps = {k[4:]: z[k] for k in z.files if k.startswith("map_")}
        return Embeddings(features=z["features"], paths=[str(p) for p in z["paths"]], labels=z["labels"],
                          classes=[str(c) for c in z["classes"]], checkpoint=meta["checkpoint"],
                          skipped=[tuple(s) for s in meta["skipped"]], maps=maps,
                          thumbnails=z["thumbnails"] if "thumbnails" in z.files else None)


def load_cached(path: Path) -> Embeddings | None:
    """The cached embeddings, or None when there are none, the file is unreadable or it predates grey
    thumbnails (then recomputed)."""
    try:
        cached = load(path) if path.is_file() else None
    except Exception:  # truncated or foreign file (BadZipFile, EOFError, ...): embed again, overwrite it
        return None
    return cached if cached is not None and cached.thumbnails is not None else None


def random_encoder(trained: TrainedModel, seed: int = 0) -> torch.nn.Module:
    """The trained model's architecture, randomly initialised: the baseline that shows what training bought."""
    from simclr_studio.model import build_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, _ = build_backbone(trained.config.backbone, trained.config.resolved_small_stem())
    return backbone.eval()


def embed_folder(
    trained: TrainedModel,
    scan: ScanResult,
    device: str | torch.device = "cpu",
    encoder: torch.nn.Module | None = None,
    checkpoint: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int = 256,
) -> Embeddings:
    """Embed every image of ``scan`` with the checkpoint's encoder (or ``encoder``), in bounded memory."""
    encoder = encoder if encoder is not None else trained.model.backbone
    feats, thumbs, failures = embed_paths(encoder, scan.paths, trained.config.image_size, device, batch_size,
                                        progress=progress, should_stop=should_stop,
                                        max_pixels=trained.config.max_image_pixels)
    kept = scan.drop(failures) if failures else scan
    return Embeddings(features=feats, paths=list(kept.paths), labels=np.asarray(kept.labels, dtype=np.int64),
                      classes=list(kept.classes), checkpoint=checkpoint or str(trained.checkpoint),
                      skipped=[(s.path, s.reason) for s in kept.skipped[len(scan.skipped):]], thumbnails=thumbs)


def embed_paths(encoder: torch.nn.Module, paths: list[str], size: int, device: str | torch.device = "cpu",
                batch_size: int = 256, chunk: int = 512, progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None, max_pixels: int | None = None,
                thumbnails: bool = True) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Decode the files a chunk at a time (bounded memory): (features, grey thumbnails (uint8 [N, SIDE,
    SIDE], ``signatures.grey_thumbnails``), {index: reason} of the files that failed), the rows of both
    in the order of the files that decoded. Without ``thumbnails`` (only duplicate search uses them)
    their array is empty."""
    from simclr_studio.evaluate import extract_features, files_to_features, iter_batches
    from simclr_studio.signatures import SIDE, grey_thumbnails

    encoder.to(torch.device(device))
    thumbs: list[np.ndarray] = []

    def featurize(images: torch.Tensor) -> np.ndarray:
        if thumbnails:
            thumbs.append(grey_thumbnails(images))  # chunks come in order: rows match the features'
        return extract_features(encoder, iter_batches(images, batch_size), device)

    feats, failures = files_to_features(paths, size, featurize, chunk, progress, should_stop, max_pixels)
    grey = np.concatenate(thumbs) if thumbs else np.zeros((0, SIDE, SIDE), np.uint8)
    return feats, grey, failures


def embed_cached(trained: TrainedModel, scan: ScanResult, device: str | torch.device = "cpu", random_init: bool = False,
                 seed: int = 0, progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> tuple[Embeddings, Path, bool]:
    """Cached embeddings of ``scan`` for the checkpoint (or a random encoder): (embeddings, file, from cache)."""
    name = f"{RANDOM_INIT}-seed{seed}" if random_init else str(trained.checkpoint)
    identity = None if random_init else trained.identity
    path = cache_path(trained.run_dir, name, trained.config.image_size, scan.paths, identity)
    cached = load_cached(path)
    if cached is not None:
        return cached, path, True
    encoder = random_encoder(trained, seed) if random_init else None
    emb = embed_folder(trained, scan, device, encoder=encoder, checkpoint=name, progress=progress,
                       should_stop=should_stop)
    save(emb, path)
    return emb, path, False
