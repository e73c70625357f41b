"""Scale of exploration: feature extraction, 2-D maps, neighbour queries, folder scans, map redraws,
near-duplicate search.

    python benchmarks/explore.py [--quick] [--sklearn-100k] [--only CASE,...] [--out benchmarks/results/explore.json]

Every measurement runs in its own process, so its peak memory (max RSS, and the rise over the
process's state after imports) is its own; each row also records the 1-minute load average before it
started (other work on the machine slows it down). Features are real: Fashion-MNIST images (Debian
package ``dataset-fashion-mnist``) embedded by the small CNN (random initialisation, fixed seed, 256-d).
Up to 60,000 points they are the training images; above, the 10,000 test images and then mirrored
training images follow (distinct images, so t-SNE at 100k has no exact duplicates to collapse). The
1M-row neighbour index tiles them with noise.

t-SNE runs as the app runs it (the Explore session's perplexity and iterations, a snapshot callback
counting the live updates), with openTSNE and with scikit-learn (the fallback); each map's quality is
``neighbourhood_recall`` (of each of 2,000 sampled points' 10 nearest neighbours in feature space, the
share that are among its 10 nearest on the map), computed after the memory is read. Memory: the peak
RSS includes the imports (torch alone is ~500 MB); the rise is what the t-SNE itself added. scikit-learn
at 100k points takes many minutes: only with ``--sklearn-100k``.

``duplicates`` times ``duplicates.duplicate_pairs`` on 100,000 × 512 features: the 256-d features above
side by side with those of a second random small CNN (seed 1), so both halves are real image features
(not a noisy copy); the mirrored images give it some true near-duplicates to find.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def fmnist_images(n: int) -> np.ndarray:
    """n distinct Fashion-MNIST images [n, 28, 28]: the training split, then the test split, then mirrored
    training images."""
    from fashion_mnist import load_split

    train, _ = load_split("train")
    if n <= len(train):
        return train[:n]
    test, _ = load_split("test")
    images = np.concatenate([train, test, train[:, :, ::-1]])
    if n > len(images):
        raise SystemExit(f"at most {len(images):,} distinct images")
    return images[:n]


def fmnist_features(n: int, cache: Path, dims: int = 256) -> np.ndarray:
    """n × 256 small-CNN features of Fashion-MNIST images (random init, seed 0), cached on disk; 512-d: those
    and a second random small CNN's (seed 1) side by side."""
    path = cache / (f"features_{n}.npy" if dims == 256 else f"features_{n}_{dims}.npy")
    if path.exists():
        return np.load(path)
    if dims == 512:
        feats = np.concatenate([fmnist_features(n, cache), _small_cnn_features(fmnist_images(n), seed=1)], axis=1)
    elif dims == 256:
        feats = _small_cnn_features(fmnist_images(n), seed=0)
    else:
        raise SystemExit(f"features of {dims} dimensions are not made here")
    np.save(path, feats)
    return feats


def _small_cnn_features(images: np.ndarray, seed: int) -> np.ndarray:
    import torch

    from simclr_studio.evaluate import extract_features, iter_batches
    from simclr_studio.model import build_backbone

    x = torch.from_numpy(np.ascontiguousarray(images))[:, None].expand(-1, 3, -1, -1).contiguous()
    torch.manual_seed(seed)
    backbone, _ = build_backbone("small-cnn")
    return extract_features(backbone, iter_batches(x, 512))


def case(name: str, n: int, cache: Path, variant: str = "auto") -> dict:
    """One measurement, in this process: returns seconds (or ms) and memory. ``variant``: t-SNE's method."""
    result: dict = {"case": name, "n": n, "load_1min": os.getloadavg()[0]}
    if name == "extract":
        import torch
        from fashion_mnist import load_split

        from simclr_studio.evaluate import extract_features, iter_batches
        from simclr_studio.model import build_backbone

        images, _ = load_split("train")
        x = torch.from_numpy(np.ascontiguousarray(images[:n]))[:, None].expand(-1, 3, -1, -1).contiguous()
        backbone, _ = build_backbone("small-cnn")
        extract_features(backbone, iter_batches(x[:512], 512))  # warm-up
        base = rss_mb()
        start = time.perf_counter()
        extract_features(backbone, iter_batches(x, 512))
        seconds = time.perf_counter() - start
        result |= {"seconds": seconds, "images_per_s": n / seconds, "backbone": "small-cnn", "image_size": 28}
    elif name == "features":  # not a measurement: makes the cached features (``variant`` dimensions) the others load
        fmnist_features(n, cache, int(variant))
        base = rss_mb()
    elif name == "pca":
        from simclr_studio.projection import neighbourhood_recall, pca_2d

        feats = fmnist_features(n, cache)
        pca_2d(feats[:50])  # imports and first-call set-up, not timed
        base = rss_mb()
        start = time.perf_counter()
        coords = pca_2d(feats)
        result["seconds"] = time.perf_counter() - start
        result |= {"peak_rss_mb": rss_mb(), "peak_rise_mb": rss_mb() - base}  # before the recall's own memory
        result["recall"] = neighbourhood_recall(feats, coords)
    elif name == "tsne":
        from simclr_studio.projection import (
            EARLY_EXAGGERATION_ITER,
            TSNE_ITERATIONS,
            TSNE_PERPLEXITY,
            neighbourhood_recall,
            tsne_2d,
            tsne_method,
        )

        feats = fmnist_features(n, cache)
        method = variant
        tsne_2d(feats[:50], method=method)  # imports and first-call set-up, not timed
        snapshots: list[float] = []
        base = rss_mb()
        start = time.perf_counter()
        coords = tsne_2d(feats, perplexity=TSNE_PERPLEXITY, max_iter=TSNE_ITERATIONS, method=method,
                         snapshot=lambda *_: snapshots.append(time.perf_counter() - start))
        result["seconds"] = time.perf_counter() - start
        result |= {"peak_rss_mb": rss_mb(), "peak_rise_mb": rss_mb() - base}  # before the recall's own memory
        result |= {"method": tsne_method(method), "iterations": EARLY_EXAGGERATION_ITER + TSNE_ITERATIONS,
                   "perplexity": TSNE_PERPLEXITY, "snapshots": len(snapshots),
                   "first_snapshot_s": snapshots[0] if snapshots else None,
                   "recall": neighbourhood_recall(feats, coords)}
    elif name == "neighbours":
        from simclr_studio.neighbours import NeighbourIndex

        real = fmnist_features(min(n, 60000), cache)
        rng = np.random.default_rng(0)
        reps = -(-n // len(real))
        feats = np.concatenate([real + 0.05 * rng.standard_normal(real.shape, dtype=np.float32) * (r > 0)
                                for r in range(reps)])[:n]
        base = rss_mb()
        index = NeighbourIndex(feats)
        del feats
        rows = rng.integers(0, n, 50)
        index.query_row(int(rows[0]), 12)  # warm-up
        times = []
        for row in rows:
            start = time.perf_counter()
            index.query_row(int(row), 12)
            times.append(time.perf_counter() - start)
        result |= {"query_ms_median": 1000 * float(np.median(times)), "query_ms_max": 1000 * float(np.max(times)),
                   "k": 12, "dims": int(index.unit.shape[1])}
    elif name == "scan":
        import shutil

        from simclr_studio.data import scan_folder
        from simclr_studio.paths import resource as res

        folder = cache / f"scan_{n}"
        if not folder.exists():
            sources = sorted(res("demo").rglob("*.png"))
            tmp = cache / f"scan_{n}.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            for i in range(n):
                sub = tmp / f"class_{i % 10}"
                if i < 10:
                    sub.mkdir(parents=True)
                os.link(sources[i % len(sources)], sub / f"{i:07d}.png")  # hard links: fast, no disk space
            tmp.rename(folder)
        base = rss_mb()
        start = time.perf_counter()
        scan = scan_folder(folder)
        result |= {"seconds": time.perf_counter() - start, "images": len(scan)}
    elif name == "map_redraw":
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PySide6.QtWidgets import QApplication

        from simclr_studio.gui.map_view import MapView
        from simclr_studio.projection import pca_2d

        app = QApplication.instance() or QApplication([])
        coords = pca_2d(fmnist_features(n, cache))
        groups = np.arange(n) % 10
        view = MapView()
        view.resize(1000, 700)
        view.show()
        base = rss_mb()
        view.set_points(coords, groups, [f"class {i}" for i in range(10)])
        app.processEvents()
        times = []
        for _step in range(20):  # pan across the map: every frame redraws all points
            view.view.translateBy(x=0.01 * np.ptp(coords[:, 0]))
            start = time.perf_counter()
            view.viewport().repaint()
            times.append(time.perf_counter() - start)
        hover = []
        for row in range(0, n, max(1, n // 50)):
            start = time.perf_counter()
            view.nearest(*coords[row])
            hover.append(time.perf_counter() - start)
        result |= {"redraw_ms_median": 1000 * float(np.median(times)), "redraw_ms_max": 1000 * float(np.max(times)),
                   "pick_ms_median": 1000 * float(np.median(hover))}
        view.close()
    elif name == "duplicates":
        feats = fmnist_features(n, cache, dims=512)
        try:
            from simclr_studio.duplicates import duplicate_pairs
        except ImportError as e:  # curate is younger than this benchmark
            return result | {"available": False, "why": f"{type(e).__name__}: {e}"}
        from simclr_studio.duplicates import DEFAULT_DUPLICATE_THRESHOLD

        duplicate_pairs(feats[:500])  # imports and first-call set-up, not timed
        base = rss_mb()
        start = time.perf_counter()
        pairs = duplicate_pairs(feats)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        groups = pairs.groups(DEFAULT_DUPLICATE_THRESHOLD)
        result |= {"available": True, "seconds": seconds, "dims": int(feats.shape[1]), "floor": float(pairs.floor),
                   "pairs": len(pairs.similarity), "threshold": DEFAULT_DUPLICATE_THRESHOLD, "groups": len(groups),
                   "grouping_ms": 1000 * (time.perf_counter() - start)}
    else:
        raise SystemExit(f"unknown case {name}")
    if "peak_rss_mb" not in result:  # cases that measure more afterwards read their memory before
        result |= {"peak_rss_mb": rss_mb(), "peak_rise_mb": rss_mb() - base}
    return result


def describe(r: dict) -> str:
    name = r["case"]
    if name == "duplicates" and not r["available"]:
        return f"not available ({r['why']})"
    return (f"{r['images_per_s']:.0f} images/s" if name == "extract" else
            f"{r['query_ms_median']:.2f} ms (max {r['query_ms_max']:.2f})" if name == "neighbours" else
            f"{r['redraw_ms_median']:.0f} ms redraw, {r['pick_ms_median']:.2f} ms pick" if name == "map_redraw" else
            f"{r['seconds']:.2f} s, recall {r['recall']:.3f}" if name in ("pca", "tsne") else
            f"{r['seconds']:.2f} s, {r['pairs']:,} pairs, {r['groups']:,} groups" if name == "duplicates" else
            f"{r['seconds']:.2f} s")


def tsne_table(results: list[dict], skipped: list[tuple[str, int]]) -> str:
    """openTSNE and scikit-learn side by side, one line per size."""
    rows = {(r["method"].split()[0], r["n"]): r for r in results if r["case"] == "tsne"}
    lines = [f"{'t-SNE':>9}  {'openTSNE':^34}  {'scikit-learn':^34}",
             f"{'points':>9}  " + "  ".join([f"{'seconds':>8} {'peak MB (+rise)':>16} {'recall':>8}"] * 2)]
    for n in sorted({n for _, n in rows} | {n for _, n in skipped}):
        cells = []
        for impl in ("openTSNE", "scikit-learn"):
            r = rows.get((impl, n))
            memory = f"{r['peak_rss_mb']:.0f} (+{r['peak_rise_mb']:.0f})" if r else ""
            cells.append(f"{r['seconds']:>8.1f} {memory:>16} {r['recall']:>8.3f}" if r else
                         f"{'skipped (--sklearn-100k)' if (impl, n) in skipped else '-':>34}")
        lines.append(f"{n:>9,}  " + "  ".join(cells))
    return "\n".join(lines)


def result_key(r: dict) -> tuple:
    """What one result row measures: its case, size and (t-SNE) implementation."""
    return r["case"], r["n"], (r.get("method") or "").split(" ")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test, seconds)")
    parser.add_argument("--sklearn-100k", action="store_true", help="also scikit-learn's t-SNE of 100k points (slow)")
    parser.add_argument("--only", help="comma-separated cases to run (e.g. tsne,duplicates); all by default")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "explore.json")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "simclr-studio-bench-explore")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "N", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(case(args.one[0], int(args.one[1]), args.cache, args.one[2])))
        return

    from fashion_mnist import DEFAULT_DIR, INSTALL_HINT

    if not DEFAULT_DIR.exists():
        raise SystemExit(f"Fashion-MNIST not found in {DEFAULT_DIR}; {INSTALL_HINT}")
    if args.quick:
        plan = [("extract", 1000, "auto"), ("pca", 500, "auto"), ("tsne", 500, "opentsne"), ("tsne", 500, "sklearn"),
                ("neighbours", 2000, "auto"), ("scan", 300, "auto"), ("map_redraw", 2000, "auto")]
    else:
        tsne_sizes = [2000, 10000, 50000, 100000]
        plan = [("extract", 20000, "auto"), ("pca", 2000, "auto"), ("pca", 10000, "auto"), ("pca", 50000, "auto"),
                ("pca", 100000, "auto")]
        plan += [("tsne", n, method) for n in tsne_sizes for method in ("opentsne", "sklearn")
                 if method == "opentsne" or n < 100000 or args.sklearn_100k]
        plan += [("neighbours", 10000, "auto"), ("neighbours", 100000, "auto"), ("neighbours", 1000000, "auto"),
                 ("scan", 100000, "auto"), ("map_redraw", 50000, "auto"), ("duplicates", 100000, "auto")]
    skipped = [] if args.quick or args.sklearn_100k else [("scikit-learn", 100000)]
    if args.only:
        plan = [step for step in plan if step[0] in args.only.split(",")]
    results = []
    features = sorted({(n, 256) for name, n, _ in plan if name in ("pca", "tsne", "map_redraw")}
                      | {(min(n, 60000), 256) for name, n, _ in plan if name == "neighbours"}
                      | {(n, 512) for name, n, _ in plan if name == "duplicates"})
    for n, dims in features:
        proc = subprocess.run([sys.executable, __file__, "--cache", str(args.cache), "--one", "features", str(n),
                               str(dims)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"features {n} × {dims} failed:\n{proc.stderr[-3000:]}")
    for name, n, method in plan:
        proc = subprocess.run([sys.executable, __file__, "--cache", str(args.cache), "--one", name, str(n), method],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} {n} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        label = f"{name} ({r['method'].split()[0]})" if name == "tsne" else name
        memory = f"peak RSS {r['peak_rss_mb']:>7.0f} MB (+{r['peak_rise_mb']:.0f})" if "peak_rss_mb" in r else ""
        print(f"{label:<20}{n:>10,}  {describe(r):<44} {memory}  load {r['load_1min']:.1f}", flush=True)
    if any(r["case"] == "tsne" for r in results):
        print(tsne_table(results, skipped))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from simclr_studio.projection import tsne_method

    if args.only and args.out.exists():  # the other cases' last results stay, in their place
        earlier = json.loads(args.out.read_text())
        fresh = {result_key(r): r for r in results}
        rerun = args.only.split(",")
        kept = [fresh.pop(result_key(r), r) for r in earlier["results"]
                if r["case"] not in rerun or result_key(r) in fresh]
        results = kept + list(fresh.values())
        skipped = [tuple(s) for s in earlier.get("skipped", [])]

    args.out.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
                                    "tsne_method": tsne_method(), "skipped": [list(s) for s in skipped],
                                    "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
