"""Build resources/demo/: 60 images per Fashion-MNIST class as PNGs in class-named folders.

    python packaging/make_demo.py [--per-class 60] [--root /usr/share/datasets/fashion-mnist]

Images come from the official training split, the first N of each class in file order,
so the folder is reproducible byte for byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # the Fashion-MNIST reader lives with its other users


def main() -> None:
    from fashion_mnist import CLASS_NAMES, DEFAULT_DIR, load_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--root", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--out", type=Path, default=REPO / "resources" / "demo")
    args = parser.parse_args()

    images, labels = load_split("train", args.root)
    counts = {c: 0 for c in range(len(CLASS_NAMES))}
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        label = int(label)
        if counts[label] >= args.per_class:
            continue
        folder = args.out / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:05d}.png", optimize=True)
        counts[label] += 1
        if all(n >= args.per_class for n in counts.values()):
            break
    print(f"wrote {sum(counts.values())} images to {args.out}")


if __name__ == "__main__":
    main()
