"""Quality on colour images: SimCLR's defaults on an emoji set (9 Unicode categories, 32 px) against raw
pixels and a random encoder.

    python benchmarks/colour.py                      # the recipe with a 10-minute budget on the CPU

The set is built by ``colour_data.py`` from the npm package ``emoji-datasource`` (7,570 drawings by four
vendors; no emoji is in both splits). The engine trains on the labelled training folder exactly as a
user's folder (the labels only feed its online kNN), with the config the default recipe chooses;
scored on the test folder by ``quality.py``'s protocol. Target: kNN ≥ 5 points above the better baseline.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from colour_data import build
from quality import PROTOCOL, describe_run, print_times, report, score, train, write

TARGETS = {"knn_margin": 0.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="the time budget")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override one config value after the recipe (ablations), e.g. --set augment.mask_p=0.5")
    parser.add_argument("--limit-train", type=int, default=0, help="a class-proportional subset (smoke tests)")
    parser.add_argument("--limit-test", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "simclr-studio-bench-colour")
    parser.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/colour-default.json)")
    args = parser.parse_args()
    wall_start = time.perf_counter()

    from simclr_studio.data import looks_grayscale, scan_folder, typical_side
    from simclr_studio.device import resolve_device
    from simclr_studio.recipe import FolderFacts, apply_overrides, suggest

    start = time.perf_counter()
    train_dir, test_dir, classes = build(args.work / "data", args.limit_train, args.limit_test)
    train_scan, test_scan = scan_folder(train_dir), scan_folder(test_dir)
    if train_scan.classes != test_scan.classes:
        raise SystemExit("the train and test folders have different classes")
    prepare_s = time.perf_counter() - start
    print(f"emoji: {len(train_scan):,} training and {len(test_scan):,} test images, {len(classes)} classes; "
          f"prepared in {prepare_s:.0f} s", flush=True)

    device = resolve_device(args.device)
    facts = FolderFacts(len(train_scan), typical_side(train_scan.paths), looks_grayscale(train_scan.paths))
    recipe = suggest(facts, device.type, args.minutes)
    cfg = apply_overrides(recipe.config, args.set)
    cfg.device, cfg.data_dir = args.device, str(train_dir)
    for why in recipe.reasons.values():
        print(f"  recipe: {why}")
    run_dir = args.work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    train_s, run_facts = train(cfg, run_dir)

    start = time.perf_counter()
    rows = score(cfg, run_dir, train_scan.paths, np.asarray(train_scan.labels), test_scan.paths,
                 np.asarray(test_scan.labels), len(classes))
    eval_s = time.perf_counter() - start
    total_s = time.perf_counter() - wall_start

    smoke = bool(args.limit_train or args.limit_test or args.set or args.minutes != 10.0)
    targets = {} if smoke else TARGETS
    title = "Emoji (9 categories), " + describe_run(cfg, args.minutes, run_facts["epochs"], device)
    margins, missed = report(title, rows, targets)
    print_times(prepare_s, train_s, args.minutes * 60, eval_s, total_s)
    write(args.out or Path(__file__).parent / "results" / "colour-default.json",
          dataset="emoji-datasource 16.0.0, 9 Unicode categories, 32 px", overrides=args.set, device=str(device),
          config=cfg.to_dict(), n_train=len(train_scan), n_test=len(test_scan),
          protocol=PROTOCOL,
          results=rows, margin_over_best_baseline=margins, targets=targets, missed=missed, training=run_facts,
          seconds={"prepare": prepare_s, "train": train_s, "budget": args.minutes * 60, "evaluate": eval_s,
                   "total": total_s}, run_dir=str(run_dir))


if __name__ == "__main__":
    main()
