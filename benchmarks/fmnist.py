"""Quality on a real dataset: SimCLR's defaults on Fashion-MNIST against raw pixels and a random encoder.

    python benchmarks/fmnist.py                      # preset "default": the recipe, 20-minute budget, CPU
    python benchmarks/fmnist.py --preset gpu         # the recipe on a GPU, 20-minute budget (needs CUDA)

The official 60k training images are written once as an unlabeled folder of PNGs and the real
training engine (``Trainer``, as the app and CLI run it) pretrains on them without labels, with the
config the default recipe (``simclr_studio.recipe``) chooses for that folder and machine: nothing
here is tuned for Fashion-MNIST. Scored on the official 10k test images by ``quality.py``'s protocol.
Data: Debian's ``dataset-fashion-mnist``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from quality import PROTOCOL, describe_run, print_times, report, score, train, write

PRESETS = {"default": {"device": "cpu", "minutes": 20.0}, "gpu": {"device": "cuda", "minutes": 20.0}}
TARGETS = {"default": {"knn": 0.85, "linear": 0.89}}


def write_png_folder(images: np.ndarray, folder: Path, size: int | None = None) -> Path:
    """Write images as numbered grayscale PNGs, resized to ``size`` when given (once: a marker
    records a complete folder)."""
    from PIL import Image

    marker = folder / ".complete"
    if marker.exists() and marker.read_text().strip() == str(len(images)):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        im = Image.fromarray(image, mode="L")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        im.save(folder / f"{i:05d}.png", optimize=False, compress_level=1)
    marker.write_text(f"{len(images)}\n")
    return folder


def image_paths(folder: Path, n: int) -> list[str]:
    return [str(folder / f"{i:05d}.png") for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--minutes", type=float, help="override the preset's time budget")
    parser.add_argument("--device", help="override the preset's device")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override one config value after the recipe (ablations), e.g. --set augment.mask_p=0.5")
    parser.add_argument("--limit-train", type=int, default=0, help="use only the first N training images (smoke tests)")
    parser.add_argument("--limit-test", type=int, default=0, help="use only the first N test images (smoke tests)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "simclr-studio-bench-fmnist",
                        help="where the PNG folders and the run go")
    parser.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/fmnist-PRESET.json)")
    args = parser.parse_args()
    wall_start = time.perf_counter()

    from fashion_mnist import DEFAULT_DIR, INSTALL_HINT, load_split

    from simclr_studio.device import amp_dtype, resolve_device
    from simclr_studio.recipe import FolderFacts, apply_overrides, suggest

    try:
        train_x, train_y = load_split("train")
        test_x, test_y = load_split("test")
    except FileNotFoundError:
        raise SystemExit(f"Fashion-MNIST not found in {DEFAULT_DIR}; {INSTALL_HINT}") from None
    if args.limit_train:
        train_x, train_y = train_x[: args.limit_train], train_y[: args.limit_train]
    if args.limit_test:
        test_x, test_y = test_x[: args.limit_test], test_y[: args.limit_test]
    train_y, test_y = train_y.astype(np.int64), test_y.astype(np.int64)

    # 1. The unlabeled training folder (and the test images, decoded by the same code for evaluation).
    tag = f"{len(train_x)}-{len(test_x)}"
    start = time.perf_counter()
    train_dir = write_png_folder(train_x, args.work / f"train-{tag}")
    test_dir = write_png_folder(test_x, args.work / f"test-{tag}")
    prepare_s = time.perf_counter() - start
    print(f"Fashion-MNIST: {len(train_x):,} training images (unlabeled folder {train_dir}), "
          f"{len(test_x):,} test images; prepared in {prepare_s:.0f} s", flush=True)

    # 2. The default recipe for that folder, as the app and `simclr-studio train` choose it.
    preset = dict(PRESETS[args.preset], **{k: v for k, v in (("minutes", args.minutes), ("device", args.device)) if v})
    device = resolve_device(preset["device"])
    recipe = suggest(FolderFacts(len(train_x), 28, grayscale=True), device.type, preset["minutes"])
    cfg = apply_overrides(recipe.config, args.set)
    cfg.device, cfg.data_dir = preset["device"], str(train_dir)
    for why in recipe.reasons.values():
        print(f"  recipe: {why}")
    run_dir = args.work / f"run-{args.preset}-{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
    train_s, facts = train(cfg, run_dir)

    # 3. Frozen features and the protocol, for the trained encoder and both baselines.
    start = time.perf_counter()
    rows = score(cfg, run_dir, image_paths(train_dir, len(train_x)), train_y, image_paths(test_dir, len(test_x)),
                 test_y, 10)
    eval_s = time.perf_counter() - start
    total_s = time.perf_counter() - wall_start

    smoke = bool(args.limit_train or args.limit_test or args.minutes or args.set)
    targets = {} if smoke else TARGETS.get(args.preset, {})
    title = (f"Fashion-MNIST, official split, preset {args.preset}: "
             + describe_run(cfg, preset["minutes"], facts["epochs"], device))
    margins, missed = report(title, rows, targets)
    print_times(prepare_s, train_s, preset["minutes"] * 60, eval_s, total_s)
    write(args.out or Path(__file__).parent / "results" / f"fmnist-{args.preset}.json",
          preset=args.preset, overrides=args.set, device=str(device),
          autocast=str(amp_dtype(device) if cfg.amp else None),
          config=cfg.to_dict(), n_train=len(train_x), n_test=len(test_x),
          protocol=PROTOCOL,
          results=rows, margin_over_best_baseline=margins, targets=targets, missed=missed, training=facts,
          seconds={"prepare": prepare_s, "train": train_s, "budget": preset["minutes"] * 60, "evaluate": eval_s,
                   "total": total_s}, run_dir=str(run_dir))


if __name__ == "__main__":
    main()
