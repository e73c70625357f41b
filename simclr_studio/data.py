"""Image folders: scanning, robust decoding, and the batch sources that feed training.

A scan never crashes on bad files: every skipped file is listed with its reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Refuse images larger than this many pixels (decompression bombs); a 10,000² photo still passes.
MAX_IMAGE_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, reported, not silently padded

ProgressFn = Callable[[int, int], None]  # (done, total); total may be 0 when unknown


class DataError(RuntimeError):
    """The data cannot be used for the requested work; the message says why."""


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class ScanResult:
    """What a folder holds: image paths, their labels (-1 = unlabeled) and what was skipped."""

    root: str
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def labeled(self) -> bool:
        return len(self.classes) >= 2

    def __len__(self) -> int:
        return len(self.paths)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount([label for label in self.labels if label >= 0], minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def drop(self, bad: dict[int, str]) -> ScanResult:
        """A copy without the given indices, which are added to ``skipped`` with their reasons."""
        keep = [i for i in range(len(self.paths)) if i not in bad]
        return ScanResult(
            root=self.root,
            paths=[self.paths[i] for i in keep],
            labels=[self.labels[i] for i in keep],
            classes=list(self.classes),
            skipped=self.skipped + [SkippedFile(self.paths[i], r) for i, r in sorted(bad.items())],
        )

    def report(self) -> str:
        lines = [f"{len(self.paths)} images in {self.root}"]
        if self.labeled:
            lines.append("classes: " + ", ".join(f"{k} ({v})" for k, v in self.class_counts().items()))
        else:
            lines.append("no class subfolders: unlabeled")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)


def _walk(root: Path) -> Iterator[Path]:
    """Yield files under root in sorted order, following symlinks but never the same folder twice.

    Symlinked folders are walked only after every real folder, so a link such as ``cats/more -> ../dogs``
    never claims (and mislabels) the files of a real folder that the walk has not reached yet.
    """
    seen: set[tuple[int, int]] = set()
    stack = [root]
    linked: list[Path] = []  # symlinked folders, in the order found
    while stack or linked:
        folder = stack.pop() if stack else linked.pop(0)
        try:
            st = folder.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:  # a symlink loop or a second link to a folder already walked
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    (linked if entry.is_symlink() else subdirs).append(Path(entry.path))
                elif entry.is_file(follow_symlinks=True):
                    yield Path(entry.path)
                else:
                    yield Path(entry.path)  # broken symlink: reported by the caller
            except OSError:
                yield Path(entry.path)
        stack.extend(reversed(subdirs))


def _check_header(path: Path) -> str | None:
    """Return why ``path`` is not a usable image, or None. Reads the header only (fast)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size == 0:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            return f"image too large ({w}×{h} pixels)"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image too large (decompression bomb limit)"
    except UnidentifiedImageError:
        return "not an image (unrecognised content)"
    except OSError as exc:
        return f"unreadable ({exc})"
    except Exception as exc:  # PIL raises assorted errors on hostile headers
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


def scan_folder(
    root: str | Path,
    check_headers: bool = True,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScanResult:
    """Find images under ``root`` recursively; labels from first-level subfolders when there are two or more."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    result = ScanResult(root=str(root))
    found: list[tuple[str, str]] = []  # (path, first-level folder or "")
    for index, path in enumerate(_walk(root)):
        if should_stop is not None and should_stop():
            raise InterruptedError("stopped while scanning")
        if progress is not None and index % 256 == 0:
            progress(index, 0)
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            if not path.exists():
                result.skipped.append(SkippedFile(str(path), "broken link"))
            else:
                result.skipped.append(
                    SkippedFile(str(path), f"not an image file type ({path.suffix or 'no extension'})"))
            continue
        reason = _check_header(path) if check_headers else None
        if reason is not None:
            result.skipped.append(SkippedFile(str(path), reason))
            continue
        rel = path.relative_to(root)
        found.append((str(path), rel.parts[0] if len(rel.parts) > 1 else ""))
    classes = sorted({top for _, top in found if top})
    if len(classes) >= 2:
        index_of = {name: i for i, name in enumerate(classes)}
        result.classes = classes
        result.labels = [index_of.get(top, -1) for _, top in found]
    else:
        result.labels = [-1] * len(found)
    result.paths = [p for p, _ in found]
    if progress is not None:
        progress(len(found), len(found))
    return result


# ---- decoding -------------------------------------------------------------------------------
def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: alpha over white, 16-bit and float rescaled to 8 bits, CMYK converted."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(arr.round().astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB") if im.mode != "RGB" else im


def decode_image(path: str | Path, size: int | None, short_side: int | None = None) -> np.ndarray:
    """Decode to uint8 RGB [H, W, 3]; with ``size``, shorter side resized to ``size`` and centre-cropped square;
    with ``short_side``, the whole image with its shorter side at ``short_side`` (longer side cut to 4:3).

    Raises ``DataError`` with a short reason when the file cannot be decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                # The same limit as the scan's header check, enforced here too: PIL's own check warns
                # through the process-wide warnings filters, which threads (decode_all) may race on.
                if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                    raise DataError(f"image too large ({im.size[0]}×{im.size[1]} pixels)")
                target = size or short_side
                if target is not None and im.format == "JPEG":
                    im.draft("RGB", (target, target))  # let libjpeg downscale while decoding: much faster
                im.seek(0)
                im = ImageOps.exif_transpose(im)
                im = _to_rgb(im)
                if size is not None:
                    w, h = im.size
                    side = min(w, h)  # centre square of the shorter side, resized in one pass
                    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
                    im = im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
                elif short_side is not None:
                    w, h = im.size
                    keep_w, keep_h = min(w, h * MAX_CACHE_ASPECT), min(h, w * MAX_CACHE_ASPECT)
                    box = ((w - keep_w) / 2, (h - keep_h) / 2, (w + keep_w) / 2, (h + keep_h) / 2)
                    scale = short_side / min(keep_w, keep_h)
                    out = (max(1, round(keep_w * scale)), max(1, round(keep_h * scale)))
                    im = im.resize(out, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
                return np.asarray(im, dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError("image too large (decompression bomb limit)") from None
    except UnidentifiedImageError:
        raise DataError("not an image (unrecognised content)") from None
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"cannot decode ({str(exc) or type(exc).__name__})") from None
    except Exception as exc:  # PIL raises assorted errors (struct.error, IndexError, ...) on hostile data
        raise DataError(f"cannot decode ({type(exc).__name__}: {exc})") from None


# Whole images are cached with the shorter side at CACHE_SCALE × the training size, so a random crop
# of a large photo is cut from real pixels, not upsampled from a shrunk centre square (README: "Crops").
CACHE_SCALE = 1.5
MAX_CACHE_ASPECT = 4 / 3  # longer sides are cut to this aspect (the widest crop's), centred


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


def decode_whole(path: str | Path, layout: CacheLayout) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode for a whole-image layout: uint8 [stored, stored, 3] with the image in the top-left and
    its (height, width); the shorter side is ``layout.side``, a longer side beyond 4:3 is cut centred."""
    image = decode_image(path, None, short_side=layout.side)
    h, w = image.shape[:2]
    out = np.zeros((layout.stored, layout.stored, 3), dtype=np.uint8)
    out[:h, :w] = image
    return out, (h, w)


def typical_side(paths: Sequence[str], sample: int = 16) -> int:
    """The median shorter side of a few images (header reads only)."""
    sides = []
    step = max(1, len(paths) // sample)
    for path in list(paths)[::step][:sample]:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
        except Exception:  # a bad file is the scan's business, not this estimate's
            continue
    return int(sorted(sides)[len(sides) // 2]) if sides else 64


def looks_grayscale(paths: Sequence[str], sample: int = 16) -> bool:
    """True when a sample of the images is all grey (R = G = B): colour jitter's saturation and hue
    and random grayscale do nothing there."""
    step = max(1, len(paths) // sample)
    seen = 0
    for path in list(paths)[::step][:sample]:
        try:
            image = decode_image(path, 32)
        except DataError:
            continue
        seen += 1
        if np.ptp(image, axis=2).any():
            return False
    return seen > 0


def to_chw_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def cache_bytes(n_images: int, size: int) -> int:
    return n_images * 3 * size * size


def decode_all(
    paths: Sequence[str],
    size: int,
    threads: int = 0,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode every path into one uint8 tensor [N, 3, size, size] (centre squares); failures come back
    as {index: reason}. Rows of failed images are left zero; callers drop them."""
    pixels, _, failures = decode_cache(paths, CacheLayout(size, size, False), threads, progress, should_stop)
    return pixels, failures


def decode_cache(
    paths: Sequence[str],
    layout: CacheLayout,
    threads: int = 0,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[int, str]]:
    """Decode every path in ``layout``: (uint8 pixels [N, 3, stored, stored], int16 extents [N, 2] of a
    whole-image layout or None, {index: reason} of failures). PIL releases the GIL while decoding,
    so a thread pool scales with cores."""
    # A numpy buffer: the pool's threads must not call into PyTorch, or each would start its own
    # OpenMP thread team, and those teams linger and compete with training for the cores.
    out = np.zeros((len(paths), 3, layout.stored, layout.stored), dtype=np.uint8)
    extents = np.zeros((len(paths), 2), dtype=np.int16) if layout.whole else None
    failures: dict[int, str] = {}
    threads = threads or min(8, os.cpu_count() or 1)

    def work(i: int) -> None:
        try:
            if extents is None:
                out[i] = decode_image(paths[i], layout.side).transpose(2, 0, 1)
            else:
                image, extents[i] = decode_whole(paths[i], layout)
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


class ImageFileDataset(torch.utils.data.Dataset):
    """Decodes one file per item (the streaming path, for folders too large to cache in RAM).

    Items are (pixels, extents, index); extents is (h, w) of a whole-image layout, else the stored side twice.
    """

    def __init__(self, paths: Sequence[str], size: int, layout: CacheLayout | None = None):
        self.paths = list(paths)
        self.size = size
        self.layout = layout or CacheLayout(size, size, False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        layout = self.layout
        try:
            if layout.whole:
                image, hw = decode_whole(self.paths[index], layout)
                return to_chw_tensor(image), torch.tensor(hw, dtype=torch.int16), index
            image = decode_image(self.paths[index], layout.side)
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
            ImageFileDataset(self.paths, self.size, self.layout),
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


def fits_in_ram(n_images: int, size: int, budget_gb: float) -> bool:
    return cache_bytes(n_images, size) <= budget_gb * (1 << 30)
