"""Image folders: scanning and robust decoding of single images.

A scan never crashes on bad files: every skipped file is listed with its reason.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from simclr_studio.image_endings import ends_whole

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Refuse images larger than this many pixels (decompression bombs, and decodes that cost GBs of RAM:
# a PNG is decoded at full size, 4 bytes a pixel with alpha). 64 MP passes every 61 MP camera photo;
# RunConfig.max_image_pixels raises (or lowers) it for a run. Read at call time, so tests may patch it.
MAX_IMAGE_PIXELS = 64_000_000
# PIL's own check warns through the process-wide warnings filters, which threads race on; every open
# in this module checks the size itself (``_pixel_limit_reason``) right after reading the header.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, reported, not silently padded
# Full-size decoded pixels that the threads of one process may hold at once (decode_cache's pool,
# the app's thumbnails); one image larger than this decodes alone.
DECODE_BUDGET_BYTES = 512 << 20

# Whole images keep at most this aspect (the widest crop's); longer sides are cut, centred.
MAX_CACHE_ASPECT = 4 / 3

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


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _walk(root: Path) -> Iterator[tuple[Path, str | None]]:
    """Yield (file, None) under root in sorted order, following symlinks but never the same folder twice,
    and (folder, reason) for each folder that cannot be listed.

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
            key = (st.st_dev, st.st_ino)
            if key in seen:  # a symlink loop or a second link to a folder already walked
                continue
            seen.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield folder, f"unreadable folder ({_reason(exc)})"
            continue
        subdirs: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    (linked if entry.is_symlink() else subdirs).append(Path(entry.path))
                    continue
            except OSError:
                pass  # cannot even be stat'ed: reported as a file by the caller
            yield Path(entry.path), None
        stack.extend(reversed(subdirs))


def _pixel_limit_reason(im: Image.Image, max_pixels: int | None) -> str | None:
    """Why an opened image is refused for its size, or None; ``max_pixels`` None: MAX_IMAGE_PIXELS."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    w, h = im.size
    if w * h > limit:
        return (f"image too large ({w}×{h} pixels, over the limit of {limit:,};"
                " max_image_pixels in the run's config sets it)")
    return None


def _truncation_reason(im: ImageFile.ImageFile, path: Path, size: int, max_pixels: int | None) -> str | None:
    """Why a JPEG or PNG whose header is fine is cut off, or None. Training's full decode rejects a file
    that ends before its image data (LOAD_TRUNCATED_IMAGES is False); this reads the file's last KiB."""
    whole = ends_whole(im, size)
    if whole is not None:
        return None if whole else "truncated: the file ends before its image data (no JPEG end marker)"
    try:  # PIL decodes a PNG cut just after its pixel data (no IEND): only a decode can tell (rare files)
        decode_image(path, 32, max_pixels=max_pixels)
    except DataError as exc:
        return f"truncated: {exc}"
    return None


def _check_header(path: Path, max_pixels: int | None = None) -> str | None:
    """Return why ``path`` is not a usable image, or None. Reads the header and the file's last KiB
    (fast): JPEGs and PNGs cut short are found here, not dropped later by training's decode."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({_reason(exc)})"
    if size == 0:
        return "empty file"
    try:
        with Image.open(path) as im:
            return _pixel_limit_reason(im, max_pixels) or _truncation_reason(im, path, size, max_pixels)
    except Image.DecompressionBombError:  # PIL's own limit, should someone set Image.MAX_IMAGE_PIXELS
        return "image too large (decompression bomb limit)"
    except UnidentifiedImageError:
        return "not an image (unrecognised content)"
    except OSError as exc:
        return f"unreadable ({exc})"
    except Exception as exc:  # PIL raises assorted errors on hostile headers
        return f"unreadable ({type(exc).__name__}: {exc})"


def _not_an_image_reason(path: Path) -> str:
    try:
        if not path.exists():
            return "broken link"
    except OSError as exc:  # e.g. Permission denied on a folder without search permission
        return f"unreadable ({_reason(exc)})"
    return f"not an image file type ({path.suffix or 'no extension'})"


def scan_folder(
    root: str | Path,
    check_headers: bool = True,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_pixels: int | None = None,
) -> ScanResult:
    """Find images under ``root`` recursively; labels from first-level subfolders when there are two or more.

    Unreadable files and folders are skipped and listed; ``max_pixels`` (default MAX_IMAGE_PIXELS)
    refuses larger images, and JPEGs and PNGs cut short are skipped as training's decode would, when
    ``check_headers``."""
    root = Path(root).expanduser()
    try:
        if not root.exists():
            raise DataError(f"folder not found: {root}")
        if not root.is_dir():
            raise DataError(f"not a folder: {root}")
    except OSError as exc:
        raise DataError(f"cannot read folder {root}: {_reason(exc)}") from None
    result = ScanResult(root=str(root))
    found: list[tuple[str, str]] = []  # (path, first-level folder or "")
    for index, (path, folder_reason) in enumerate(_walk(root)):
        if should_stop is not None and should_stop():
            raise InterruptedError("stopped while scanning")
        if progress is not None and index % 256 == 0:
            progress(index, 0)
        if folder_reason is not None:
            result.skipped.append(SkippedFile(str(path), folder_reason))
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            result.skipped.append(SkippedFile(str(path), _not_an_image_reason(path)))
            continue
        reason = _check_header(path, max_pixels) if check_headers else None
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
class _DecodeBudget:
    """A byte budget shared by the decoding threads of a process: a decode waits until its full-size
    pixels fit beside those being decoded (one larger than the whole budget waits to run alone)."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        nbytes = min(nbytes, self.total)
        with self._cond:
            while self.used + nbytes > self.total:
                self._cond.wait()
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


_budget = _DecodeBudget(DECODE_BUDGET_BYTES)
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def decoded_bytes(im: Image.Image) -> int:
    """The memory of an opened image's full-size decoded pixels (after any JPEG draft)."""
    per_band = 2 if "16" in im.mode else 4 if im.mode in ("I", "F") else 1
    return im.size[0] * im.size[1] * len(im.getbands()) * per_band


def _to_rgb(im: Image.Image, extrema: tuple[float, float] | None = None) -> Image.Image:
    """Any PIL mode to RGB: alpha over white, 16-bit and float rescaled to 8 bits (over ``extrema``, the
    whole image's, when converting a band of it), CMYK converted."""
    if im.mode in _DEEP_MODES:
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = extrema if extrema is not None else (float(arr.min()), float(arr.max()))
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(arr.round().astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB") if im.mode != "RGB" else im


def _reduced_rgb(im: Image.Image, factor: int) -> Image.Image:
    """A loaded image as RGB, shrunk ``factor`` times by box averaging, converted band by band: no
    full-size copy beside the decoded pixels (a 10,900² RGBA PNG: 0.5 GB, not 2.7 GB)."""
    if factor <= 1:
        return _to_rgb(im)
    w, h = im.size
    extrema = None
    if im.mode in _DEEP_MODES:
        lo, hi = im.getextrema()
        extrema = (float(lo), float(hi))  # type: ignore[arg-type]
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    rows = max(1, (16 << 20) // (4 * w * factor)) * factor  # bands of about 16 MB
    for top in range(0, h, rows):
        band = _to_rgb(im.crop((0, top, w, min(h, top + rows))), extrema).reduce(factor)
        out.paste(band, (0, top // factor))
    return out


def decode_image(path: str | Path, size: int | None, short_side: int | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode to uint8 RGB [H, W, 3]; with ``size``, shorter side resized to ``size`` and centre-cropped square;
    with ``short_side``, the whole image with its shorter side at ``short_side`` (longer side cut to 4:3).
    Images over ``max_pixels`` (default MAX_IMAGE_PIXELS) are refused; large ones decode under the
    process's DECODE_BUDGET_BYTES and are shrunk before any copy is made.

    Raises ``DataError`` with a short reason when the file cannot be decoded.
    """
    try:
        with Image.open(path) as opened:
            too_large = _pixel_limit_reason(opened, max_pixels)
            if too_large is not None:
                raise DataError(too_large)
            target = size or short_side
            if target is not None and opened.format == "JPEG":
                opened.draft("RGB", (target, target))  # let libjpeg downscale while decoding: much faster
            opened.seek(0)
            with _budget.reserve(decoded_bytes(opened)):
                opened.load()
                orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
                # Shrink to no less than 3× the target first (as resize's reducing_gap=3 would), so
                # the conversions below work on the small image.
                factor = min(opened.size) // (3 * target) if target else 1
                im = _reduced_rgb(opened, factor)
                if im is not opened:
                    opened.close()  # its full-size pixels go before the budget is released
            if orientation in _TRANSPOSE:
                im = im.transpose(_TRANSPOSE[orientation])
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
    except Image.DecompressionBombError:
        raise DataError("image too large (decompression bomb limit)") from None
    except UnidentifiedImageError:
        raise DataError("not an image (unrecognised content)") from None
    except DataError:
        raise
    except MemoryError:
        raise DataError("cannot decode (out of memory)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"cannot decode ({str(exc) or type(exc).__name__})") from None
    except Exception as exc:  # PIL raises assorted errors (struct.error, IndexError, ...) on hostile data
        raise DataError(f"cannot decode ({type(exc).__name__}: {exc})") from None


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
