"""Image folders: scanning and robust decoding of single images.

A scan never crashes on bad files: every skipped file is listed with its reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
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
