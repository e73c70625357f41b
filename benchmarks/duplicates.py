"""The near-duplicate threshold: how similar are copies of an image, and how similar are distinct images?

    python benchmarks/duplicates.py [--dataset fmnist|emoji] [--run RUN_DIR] [--minutes 4]
                                    [--work /tmp/simclr-duplicates] [--out benchmarks/results/duplicates.json]
    python benchmarks/duplicates.py --speed [--threads N]    # the search's time at 100,000 × 512

A briefly trained encoder (the default recipe, ``--minutes`` on the CPU, on 10,000 Fashion-MNIST
training images or the emoji set's training split; or ``--run`` to use one) embeds, through the real
decoding path, images it never trained on:

- the test images (Fashion-MNIST: the official 10,000; emoji: 1,517 from ``colour_data.py``, fetched
  once with ``npm pack``): each one's nearest other test image is a *distinct* image (both sets hold
  look-alikes of their own, e.g. one flag drawn alike by several vendors: the rate is an upper bound);
- near-exact copies of a seeded sample of 500 of them, written as files: an exact copy, JPEG
  re-encoded at quality 75 and 50, resized to 75 % and to 200 %, cropped to 95 % and 90 % of each side
  (centred; 90 % also at a corner), and, a harder case, cropped to 80 %.

Three measures of similarity: the encoder's features alone; the higher of that and the pixel
signatures' cosine (``signatures.py``); and the app's, which also takes crop similarity (``crops.py``)
among each image's nearest by features. For each threshold T it prints the share of each kind of
copy at least T similar to its original (found), the share of distinct images whose nearest neighbour
is at least T similar (falsely grouped), and the groups ``duplicates.duplicate_pairs`` forms among the
distinct images (how many, the largest).
``--speed`` instead times ``duplicates.duplicate_pairs`` at DUPLICATE_FLOOR on 100,000 × 512 random and
clustered features and on all 70,000 Fashion-MNIST images through the trained encoder, and the app's
whole search (kNN graph, features, signatures and crops) on the latter; each run is
appended with its load average (the development machine is shared). Writes JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

THRESHOLDS = [0.90, 0.95, 0.97, 0.98, 0.985, 0.99, 0.993, 0.995, 0.996, 0.997, 0.998, 0.999]
N_TRAIN, N_COPIED = 10_000, 500
COPIES = ["exact", "jpeg-q75", "jpeg-q50", "resize-75%", "resize-200%", "crop-95%-centre", "crop-90%-centre",
          "crop-90%-corner", "crop-80%-centre"]


def copy_of(path: str, kind: str) -> tuple[bytes, str]:
    """The file bytes and extension of a near-exact copy of an image file."""
    from PIL import Image

    if kind == "exact":
        return Path(path).read_bytes(), Path(path).suffix
    im = Image.open(path)
    im.load()
    side = im.size[0]
    if kind.startswith("resize"):
        scale = int(kind.split("-")[1].rstrip("%")) / 100
        im = im.resize((round(side * scale),) * 2, Image.BICUBIC)
    elif kind.startswith("crop"):
        keep = round(side * int(kind.split("-")[1].rstrip("%")) / 100)
        off = (side - keep) // 2 if kind.endswith("centre") else 0
        im = im.crop((off, off, off + keep, off + keep))
    buf = io.BytesIO()
    if kind.startswith("jpeg"):
        im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).save(buf, "JPEG", quality=int(kind.split("q")[1]))
        return buf.getvalue(), ".jpg"
    im.save(buf, "PNG")
    return buf.getvalue(), ".png"


def dataset(name: str, work: Path, quick: bool) -> tuple[Path, list[str]]:
    """(training folder, the distinct images' files) of Fashion-MNIST or the emoji set."""
    if name == "emoji":
        from colour_data import build

        root = work / "emoji"
        build(root, limit_train=1000 if quick else 0, limit_test=300 if quick else 0)
        return root / "train", sorted(str(p) for p in (root / "test").rglob("*.png"))
    from fashion_mnist import load_split
    from fmnist import write_png_folder

    train_images, _ = load_split("train")
    test_images, _ = load_split("test")
    n_test = 2000 if quick else len(test_images)
    train_dir = write_png_folder(train_images[: 2000 if quick else N_TRAIN], work / "fmnist" / "train")
    test_dir = write_png_folder(test_images[:n_test], work / "fmnist" / "test")
    return train_dir, [str(test_dir / f"{i:05d}.png") for i in range(n_test)]


def write_copies(distinct: list[str], folder: Path, n_copied: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """(rows of the copied images in ``distinct``, each kind of copy's files): a seeded sample."""
    rows = np.sort(np.random.default_rng(0).choice(len(distinct), min(n_copied, len(distinct)), replace=False))
    copies: dict[str, list[str]] = {}
    for kind in COPIES:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        copies[kind] = []
        for row in rows:
            data, ext = copy_of(distinct[row], kind)
            path = folder / kind / f"{row:05d}{ext}"
            if not path.exists():
                path.write_bytes(data)
            copies[kind].append(str(path))
    return rows, copies


def trained_run(work: Path, train_dir: Path, minutes: float) -> Path:
    from simclr_studio.cli import main as cli

    run = work / "run"
    if not (run / "checkpoints" / "last.pt").exists():
        code = cli(["train", str(train_dir), "--out", str(run), "--minutes", str(minutes), "--device", "cpu",
                    "--quiet"])
        if code != 0:
            raise SystemExit(f"training failed ({code})")
    return run


def embed(run: Path, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(features, grey thumbnails) through the app's own decoding and embedding path."""
    from simclr_studio.embeddings import embed_paths
    from simclr_studio.trained import load_trained

    trained = load_trained(run)
    feats, thumbs, failures = embed_paths(trained.model.backbone, paths, trained.config.image_size)
    assert not failures, failures
    return feats, thumbs


# The encoder's cosine alone; the higher of it and the pixel signatures'; the app's: also crop similarity
# (from duplicates.CROP_FLOOR, among each image's duplicates.CROP_NEIGHBOURS nearest by features).
MEASURES = ("features", "features or pixels", "features, pixels or crops")


def measure(run: Path, distinct: list[str], rows: np.ndarray, copies: dict[str, list[str]]) -> dict:
    """Per measure: copies' similarity to their originals, distinct images' to their nearest other, and
    the share found / grouped at each threshold (with the groups ``duplicate_pairs`` forms). Crops are
    measured as the app does: a copy's crop similarity counts only when it or its original is among
    the other's nearest by features, in a folder of the distinct images and that kind of copy."""
    from simclr_studio.crops import crop_pairs, pair_crop_similarity
    from simclr_studio.curate import knn_graph
    from simclr_studio.duplicates import CROP_FLOOR, CROP_NEIGHBOURS, duplicate_pairs
    from simclr_studio.neighbours import normalize_rows
    from simclr_studio.signatures import thumbnail_signatures

    base, base_thumbs = embed(run, distinct)
    base_sigs = thumbnail_signatures(base_thumbs)
    graph = knn_graph(base, CROP_NEIGHBOURS)[0]
    # The nearest other image under the higher of two similarities is the higher of the two nearest.
    nearest_f = knn_graph(base, 1)[1][:, 0]
    nearest_p = np.maximum(nearest_f, knn_graph(base_sigs, 1)[1][:, 0])
    nearest_c = nearest_p.copy()
    i, j, sim = crop_pairs(base_thumbs, graph, CROP_FLOOR)
    np.maximum.at(nearest_c, np.r_[i, j], np.r_[sim, sim])
    nearest = dict(zip(MEASURES, (nearest_f, nearest_p, nearest_c), strict=True))
    unit, unit_sigs = normalize_rows(base)[rows], base_sigs[rows]
    copy_sims: dict[str, dict[str, np.ndarray]] = {m: {} for m in MEASURES}
    candidates: dict[str, float] = {}  # share of copies among their original's nearest, or it among theirs
    n = len(distinct)
    for kind, paths in copies.items():
        feats, thumbs = embed(run, paths)
        f = (normalize_rows(feats) * unit).sum(1)
        p = np.maximum(f, (thumbnail_signatures(thumbs) * unit_sigs).sum(1))
        folder = knn_graph(np.concatenate([base, feats]), CROP_NEIGHBOURS)[0]
        copy_rows = n + np.arange(len(rows))
        candidate = (folder[rows] == copy_rows[:, None]).any(1) | (folder[copy_rows] == rows[:, None]).any(1)
        crop = pair_crop_similarity(np.concatenate([base_thumbs, thumbs]), rows, copy_rows)
        candidates[kind] = float(candidate.mean())
        copy_sims[MEASURES[0]][kind] = f
        copy_sims[MEASURES[1]][kind] = p
        copy_sims[MEASURES[2]][kind] = np.where(candidate & (crop >= CROP_FLOOR), np.maximum(p, crop), p)
    result: dict = {"n_distinct": len(distinct), "n_copied": len(rows), "crop_candidates": candidates}
    for m in MEASURES:
        pairs = duplicate_pairs(base, floor=min(THRESHOLDS), thumbnails=base_thumbs if m != MEASURES[0] else None,
                                neighbours=graph if m == MEASURES[2] else None)
        table = []
        for t in THRESHOLDS:
            groups = pairs.groups(t) if t >= pairs.floor else None
            row = {"threshold": t, "distinct_grouped": float((nearest[m] >= t).mean()),
                   "groups_among_distinct": len(groups) if groups is not None else None,
                   "largest_group": max((len(g.rows) for g in groups), default=0) if groups is not None else None}
            row.update({kind: float((sims >= t).mean()) for kind, sims in copy_sims[m].items()})
            table.append(row)
        result[m] = {
            "distinct_nearest_similarity": {f"p{int(q * 100)}": float(np.quantile(nearest[m], 1 - q))
                                            for q in (0.01, 0.05, 0.5)} | {"max": float(nearest[m].max())},
            "copy_similarity": {kind: {"min": float(s.min()), "p5": float(np.quantile(s, 0.05)),
                                       "median": float(np.median(s))} for kind, s in copy_sims[m].items()},
            "table": table,
        }
    return result


def search_speed(n: int, dim: int, features: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Seconds of ``duplicate_pairs`` at DUPLICATE_FLOOR: uniform random features (no structure: all pairs),
    a Gaussian mixture (clusters, as trained features have) and any real features given."""
    import torch

    from simclr_studio.duplicates import DUPLICATE_FLOOR, duplicate_pairs
    from simclr_studio.neighbours import normalize_rows
    from simclr_studio.pair_search import _Partition

    rng = np.random.default_rng(0)
    cases = {f"random {n:,} × {dim}": rng.standard_normal((n, dim), dtype=np.float32)}
    centres = rng.standard_normal((200, dim), dtype=np.float32)
    mixture = centres[rng.integers(0, 200, n)] + 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    cases[f"200 Gaussian clusters {n:,} × {dim}"] = mixture
    cases.update(features or {})
    rows = []
    for name, feats in cases.items():
        start = time.perf_counter()
        pairs = duplicate_pairs(feats, DUPLICATE_FLOOR)
        seconds = time.perf_counter() - start
        part = _Partition.fit(torch.from_numpy(normalize_rows(feats)), pairs.floor)
        share = None if part is None else part.cost / (len(feats) * (len(feats) - 1) / 2)
        rows.append({"case": name, "seconds": round(seconds, 2), "pairs": len(pairs.i), "floor": pairs.floor,
                     "searched_share": share, "threads": torch.get_num_threads()})
        print(f"{name:44s} {seconds:6.1f} s  {len(pairs.i):>9,} pairs ≥ {pairs.floor:.4f}  "
              + ("all pairs" if share is None else f"clusters: {share:.1%} of all pairs compared"))
    return rows


def all_fmnist_features(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The trained encoder's features and the grey thumbnails of all 70,000 Fashion-MNIST images (train
    and test)."""
    import torch
    from fashion_mnist import load_split

    from simclr_studio.evaluate import extract_features, iter_batches
    from simclr_studio.signatures import grey_thumbnails
    from simclr_studio.trained import load_trained

    trained = load_trained(run)
    images = np.concatenate([load_split("train")[0], load_split("test")[0]])
    x = torch.from_numpy(images)[:, None].expand(-1, 3, -1, -1)
    if trained.config.image_size != 28:
        x = torch.nn.functional.interpolate(x.float(), size=trained.config.image_size, mode="bilinear").round().byte()
    x = x.contiguous()
    return extract_features(trained.model.backbone, iter_batches(x, 1024)), grey_thumbnails(x)


def app_search_speed(name: str, feats: np.ndarray, thumbs: np.ndarray) -> dict:
    """Seconds of the app's whole duplicate search: the kNN graph (which outliers and mislabels share),
    then features, pixel signatures and crops (``duplicate_pairs`` with thumbnails and neighbours)."""
    import torch

    from simclr_studio.curate import knn_graph
    from simclr_studio.duplicates import CROP_NEIGHBOURS, DUPLICATE_FLOOR, duplicate_pairs

    start = time.perf_counter()
    graph = knn_graph(feats, CROP_NEIGHBOURS)[0]
    graph_s = time.perf_counter() - start
    plain = duplicate_pairs(feats, DUPLICATE_FLOOR, thumbnails=thumbs)
    pixels_s = time.perf_counter() - start - graph_s
    pairs = duplicate_pairs(feats, DUPLICATE_FLOOR, thumbnails=thumbs, neighbours=graph)
    all_s = time.perf_counter() - start - graph_s - pixels_s
    row = {"case": name + ", the app's search", "graph_seconds": round(graph_s, 2),
           "features_and_pixels_seconds": round(pixels_s, 2), "with_crops_seconds": round(all_s, 2),
           "pairs": len(pairs.i), "pairs_without_crops": len(plain.i), "floor": pairs.floor,
           "threads": torch.get_num_threads()}
    print(f"{row['case']}: kNN graph {graph_s:.1f} s; features and pixels {pixels_s:.1f} s; "
          f"with crops {all_s:.1f} s ({len(plain.i):,} → {len(pairs.i):,} pairs)")
    return row


def print_table(result: dict) -> None:
    print(f"copies of {result['n_copied']} unseen images vs {result['n_distinct']} distinct images")
    print("crop candidates (copy or original among the other's nearest by features): "
          + ", ".join(f"{kind} {share:.3f}" for kind, share in result["crop_candidates"].items()))
    for m in MEASURES:
        r = result[m]
        kinds = list(r["copy_similarity"])
        print(f"\n== similarity: {m} ==\ncopy similarity to its original (min / 5th percentile / median):")
        for kind, s in r["copy_similarity"].items():
            print(f"  {kind:16s} {s['min']:.4f} / {s['p5']:.4f} / {s['median']:.4f}")
        d = r["distinct_nearest_similarity"]
        print(f"distinct images, similarity to the nearest other: median {d['p50']:.4f}, top 5 % ≥ {d['p5']:.4f}, "
              f"top 1 % ≥ {d['p1']:.4f}, max {d['max']:.4f}")
        print("share found at threshold T (copies) and share of distinct images grouped:")
        print("T      " + " ".join(f"{k[:11]:>11s}" for k in kinds) + "  distinct  groups  largest")
        for row in r["table"]:
            print(f"{row['threshold']:<6g} " + " ".join(f"{row[k]:11.3f}" for k in kinds)
                  + f"  {row['distinct_grouped']:8.4f}  {row['groups_among_distinct'] or '-':>6}"
                  + f"  {row['largest_group'] or '-':>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("fmnist", "emoji"), default="fmnist",
                        help="emoji: the colour set of benchmarks/colour_data.py (npm pack, once)")
    parser.add_argument("--run", type=Path, help="a trained run to use (default: train one in WORK/run)")
    parser.add_argument("--minutes", type=float, help="training time when no --run is given (4; --quick: 0.5)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/simclr-duplicates"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "duplicates.json")
    parser.add_argument("--quick", action="store_true", help="fewer images and a 0.5-minute run (a smoke test)")
    parser.add_argument("--speed", action="store_true",
                        help="instead, time the duplicate search at 100,000 × 512 (random, clustered) and on all "
                             "of Fashion-MNIST through the trained encoder")
    parser.add_argument("--threads", type=int, help="torch threads for --speed (default: torch's)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    start = time.time()
    if args.speed:
        import os

        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        load_before = os.getloadavg()[0]
        fmnist_run = args.run or trained_run(args.work / "fmnist", dataset("fmnist", args.work, False)[0],
                                             args.minutes or 4.0)
        real, thumbs = all_fmnist_features(fmnist_run)
        n = 20_000 if args.quick else 100_000
        name = f"Fashion-MNIST {len(real):,} × {real.shape[1]} (trained tiny-cnn)"
        rows = search_speed(n, 512, {name: real})
        rows.append(app_search_speed(name, real, thumbs))
        run = {"when": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "load_average": [load_before, os.getloadavg()[0]], "machine": platform.processor() or platform.machine(),
               "cases": rows}
        return write(args.out, "speed", run, append=True)
    train_dir, distinct = dataset(args.dataset, args.work, args.quick)
    rows, copies = write_copies(distinct, args.work / args.dataset / "copies", 200 if args.quick else N_COPIED)
    run = args.run or trained_run(args.work / args.dataset, train_dir, args.minutes or (0.5 if args.quick else 4.0))
    result = measure(run, distinct, rows, copies)
    from simclr_studio.trained import load_trained

    trained = load_trained(run)
    result.update(dataset=args.dataset, run=str(run), backbone=trained.config.backbone, epoch=trained.epoch,
                  image_size=trained.config.image_size, seconds=round(time.time() - start, 1),
                  machine=platform.processor() or platform.machine())
    print_table(result)
    write(args.out, args.dataset, result)


def write(out: Path, key: str, result: dict, append: bool = False) -> None:
    """One entry per data set in the results file; speed runs are appended (the load of a shared
    machine varies: every run is kept, with its load average)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    everything = json.loads(out.read_text()) if out.exists() else {}
    everything[key] = everything.get(key, []) + [result] if append else result
    out.write_text(json.dumps(everything, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
