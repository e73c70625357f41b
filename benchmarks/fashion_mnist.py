"""Reader for the Fashion-MNIST IDX files shipped by Debian's ``dataset-fashion-mnist`` package.

Used by the benchmarks and by packaging/make_demo.py (the bundled demo folder); not part of the
package: training itself reads image folders.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]
INSTALL_HINT = "install it with: sudo apt-get install dataset-fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"Fashion-MNIST file {stem} not found in {root}; {INSTALL_HINT}")


def load_split(split: str = "train", root: Path = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 28, 28], labels uint8 [N]) of the official train or test split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(_find(Path(root), f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(Path(root), f"{prefix}-labels-idx1-ubyte"))
    return images, labels
