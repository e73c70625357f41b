"""A labelled colour image set from a package registry: emoji artwork, 32x32, 9 categories.

    python benchmarks/colour_data.py --work /tmp/simclr-colour                 # full set: ~5 s (+~4 s npm pack)
    python benchmarks/colour_data.py --work /tmp/colour-test --limit-train 500 --limit-test 100

Source: the npm package ``emoji-datasource`` 16.0.0 (25 MB tarball, fetched with ``npm pack`` into
WORK/cache and checked against its sha512). It ships ``emoji.json`` (name, Unicode category, sheet
position) and 32x32 RGBA sprite sheets ``img/{apple,google,twitter,facebook}/sheets/32.png`` (cells on a
34 px grid with 1 px padding). Every emoji drawn natively by a vendor (``has_img_<vendor>``, skin-tone
variants left out) is one image, composited on white to RGB; its label is its Unicode category:
activities, animals_nature, flags, food_drink, objects, people_body, smileys_emotion, symbols,
travel_places (the 5-image "Component" category is dropped). With all four vendors that is 7,570
images, 340 (activities) to 1,521 (people_body) per class.

Split: there is no official one, so a fixed stratified split by emoji: per category a seeded 20% of
the emoji go to test, with every vendor's drawing of them, so no emoji is in both splits (6,053 train
/ 1,517 test). ``--limit-train/--limit-test N`` keep a seeded, class-proportional subset.

Licences: the package code is MIT; the images are the vendors': Google/Noto Apache-2.0, Twitter
(Twemoji) CC-BY-4.0, Apple (c) Apple Inc. (not licensed for commercial use), Facebook (c) Meta (no
clear licence). Use ``--styles google,twitter`` for openly licensed images only (3,048 / 764).

Output: WORK/train/<class>/<NNNNN>.png and WORK/test/<class>/<NNNNN>.png, written once; WORK/.complete
records the parameters, so a rerun with the same ones returns at once. Needs ``npm``, numpy, Pillow.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE = "emoji-datasource@16.0.0"
TARBALL = "emoji-datasource-16.0.0.tgz"
SHA512 = "/qHKqK5Nr3+8zhgO6kHmF43Fm5C8HNn0AaFRIpgw8HF3+uF0Vfc8jgLI1ZQS5ba1vBzksS8NBCjHejwLb2D/Sg=="
STYLES = ("apple", "google", "twitter", "facebook")
CELL, GRID = 32, 34  # image size and grid pitch (1 px padding on each side) in the 32 px sheets
TEST_FRACTION, SEED = 0.2, 0


def slug(category: str) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in category.lower()).split())


def fetch(cache: Path) -> Path:
    """The package tarball, fetched once with ``npm pack`` and checked against its sha512."""
    tgz = cache / TARBALL
    if not tgz.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", PACKAGE, "--silent", "--pack-destination", str(cache)], check=True,
                       stdout=subprocess.DEVNULL)
    digest = base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
    if digest != SHA512:
        tgz.unlink()
        raise RuntimeError(f"{TARBALL}: sha512 mismatch, deleted; run again")
    return tgz


def load(tgz: Path, styles: tuple[str, ...]) -> list[tuple[str, str, np.ndarray]]:
    """(emoji id, class, 32x32x3 uint8 RGB) for every emoji each style draws natively."""
    with tarfile.open(tgz) as tar:
        emoji = json.load(tar.extractfile("package/emoji.json"))
        sheets = {s: Image.open(io.BytesIO(tar.extractfile(f"package/img/{s}/sheets/32.png").read())).convert("RGBA")
                  for s in styles}
    items = []
    for style in styles:
        white = Image.new("RGBA", sheets[style].size, (255, 255, 255, 255))
        sheet = np.asarray(Image.alpha_composite(white, sheets[style]).convert("RGB"))
        for e in emoji:
            if e["category"] == "Component" or not e.get(f"has_img_{style}"):
                continue
            x, y = e["sheet_x"] * GRID + 1, e["sheet_y"] * GRID + 1
            items.append((e["unified"], slug(e["category"]), sheet[y:y + CELL, x:x + CELL].copy()))
    return items


def split(items: list, test_fraction: float = TEST_FRACTION) -> tuple[list, list]:
    """Stratified by class, grouped by emoji: a seeded share of each class's emoji goes to test."""
    rng = random.Random(SEED)
    test_ids: set[str] = set()
    for cls in sorted({c for _, c, _ in items}):
        ids = sorted({i for i, c, _ in items if c == cls})
        rng.shuffle(ids)
        test_ids.update(ids[: round(len(ids) * test_fraction)])
    return [t for t in items if t[0] not in test_ids], [t for t in items if t[0] in test_ids]


def limit(items: list, n: int) -> list:
    """A seeded subset of ``n`` items with each class in proportion (largest remainders)."""
    if not n or n >= len(items):
        return items
    by_class: dict[str, list] = {}
    for t in items:
        by_class.setdefault(t[1], []).append(t)
    quota = {c: n * len(v) / len(items) for c, v in by_class.items()}
    take = {c: int(q) for c, q in quota.items()}
    for c in sorted(quota, key=lambda c: (take[c] - quota[c], c))[: n - sum(take.values())]:
        take[c] += 1
    rng, kept = random.Random(SEED), []
    for c in sorted(by_class):
        kept += rng.sample(by_class[c], take[c])
    return kept


def write(items: list, folder: Path) -> None:
    for index, (_, cls, pixels) in enumerate(items):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / cls / f"{index:05d}.png")


def build(work: Path, limit_train: int = 0, limit_test: int = 0,
          styles: tuple[str, ...] = STYLES) -> tuple[Path, Path, list[str]]:
    """Write (once) and return (train_dir, test_dir, sorted class names)."""
    work = Path(work)
    train_dir, test_dir, marker = work / "train", work / "test", work / ".complete"
    params = {"package": PACKAGE, "styles": list(styles), "limit_train": limit_train, "limit_test": limit_test}
    if marker.exists() and json.loads(marker.read_text()).get("params") == params:
        return train_dir, test_dir, json.loads(marker.read_text())["classes"]
    items = load(fetch(work / "cache"), tuple(styles))
    train, test = split(items)
    train, test = limit(train, limit_train), limit(test, limit_test)
    for folder in (train_dir, test_dir):
        shutil.rmtree(folder, ignore_errors=True)
    write(train, train_dir)
    write(test, test_dir)
    classes = sorted({c for _, c, _ in items})
    marker.write_text(json.dumps({"params": params, "classes": classes, "train": len(train), "test": len(test)}))
    return train_dir, test_dir, classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="output folder (cache/, train/, test/)")
    parser.add_argument("--limit-train", type=int, default=0, help="keep a stratified subset of N training images")
    parser.add_argument("--limit-test", type=int, default=0, help="keep a stratified subset of N test images")
    parser.add_argument("--styles", default=",".join(STYLES), help="comma-separated vendors (default: all four)")
    args = parser.parse_args()
    start = time.perf_counter()
    train_dir, test_dir, classes = build(args.work, args.limit_train, args.limit_test,
                                         tuple(s for s in args.styles.split(",") if s))
    counts = {c: (len(list((train_dir / c).glob("*.png"))), len(list((test_dir / c).glob("*.png")))) for c in classes}
    for c, (n_train, n_test) in counts.items():
        print(f"{c:16s} train {n_train:5d}  test {n_test:5d}")
    print(f"{sum(a for a, _ in counts.values())} train / {sum(b for _, b in counts.values())} test images, "
          f"{len(classes)} classes, in {time.perf_counter() - start:.1f} s: {train_dir}, {test_dir}")


if __name__ == "__main__":
    main()
