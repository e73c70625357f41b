"""Scale of exploration: feature extraction, 2-D maps, neighbour queries, folder scans, map redraws.

    python benchmarks/explore.py [--quick] [--out benchmarks/results/explore.json]

Every measurement runs in its own process, so its peak memory (max RSS, and the rise over the
process's state after imports) is its own. Features are real: Fashion-MNIST images (Debian package
``dataset-fashion-mnist``) embedded by the small CNN; the 1M-row neighbour index tiles them with noise.
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


def fmnist_features(n: int, cache: Path) -> np.ndarray:
    """n × 256 small-CNN features of Fashion-MNIST training images (random init, fixed seed), cached on disk."""
    path = cache / f"features_{n}.npy"
    if path.exists():
        return np.load(path)
    import torch
    from fashion_mnist import load_split

    from simclr_studio.evaluate import extract_features, iter_batches
    from simclr_studio.model import build_backbone

    images, _ = load_split("train")
    images = np.resize(images, (n, 28, 28)) if n > len(images) else images[:n]
    x = torch.from_numpy(np.ascontiguousarray(images))[:, None].expand(-1, 3, -1, -1).contiguous()
    torch.manual_seed(0)
    backbone, _ = build_backbone("small-cnn")
    feats = extract_features(backbone, iter_batches(x, 512))
    np.save(path, feats)
    return feats


def case(name: str, n: int, cache: Path) -> dict:
    """One measurement, in this process: returns seconds (or ms) and memory."""
    result: dict = {"case": name, "n": n}
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
    elif name == "features":  # not a measurement: makes the cached features the others load
        fmnist_features(n, cache)
        base = rss_mb()
    elif name in ("pca", "tsne"):
        from simclr_studio.projection import pca_2d, tsne_2d

        feats = fmnist_features(n, cache)
        (pca_2d if name == "pca" else tsne_2d)(feats[:50])  # imports and first-call set-up, not timed
        base = rss_mb()
        start = time.perf_counter()
        (pca_2d if name == "pca" else tsne_2d)(feats)
        result["seconds"] = time.perf_counter() - start
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
    else:
        raise SystemExit(f"unknown case {name}")
    result |= {"peak_rss_mb": rss_mb(), "peak_rise_mb": rss_mb() - base}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test, seconds)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "explore.json")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "simclr-studio-bench-explore")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(case(args.one[0], int(args.one[1]), args.cache)))
        return

    from fashion_mnist import DEFAULT_DIR, INSTALL_HINT

    if not DEFAULT_DIR.exists():
        raise SystemExit(f"Fashion-MNIST not found in {DEFAULT_DIR}; {INSTALL_HINT}")
    if args.quick:
        plan = [("extract", 1000), ("pca", 500), ("tsne", 500), ("neighbours", 2000), ("scan", 300),
                ("map_redraw", 2000)]
    else:
        plan = [("extract", 20000), ("pca", 2000), ("pca", 10000), ("pca", 50000), ("tsne", 2000), ("tsne", 10000),
                ("tsne", 50000), ("neighbours", 10000), ("neighbours", 100000), ("neighbours", 1000000),
                ("scan", 100000), ("map_redraw", 50000)]
    results = []
    sizes = sorted({n for name, n in plan if name in ("pca", "tsne", "map_redraw")}
                   | {min(n, 60000) for name, n in plan if name == "neighbours"})
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--cache", str(args.cache), "--one", "features", str(n)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"features {n} failed:\n{proc.stderr[-3000:]}")
    for name, n in plan:
        proc = subprocess.run([sys.executable, __file__, "--cache", str(args.cache), "--one", name, str(n)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} {n} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        value = (f"{r['images_per_s']:.0f} images/s" if name == "extract" else
                 f"{r['query_ms_median']:.2f} ms (max {r['query_ms_max']:.2f})" if name == "neighbours" else
                 f"{r['redraw_ms_median']:.0f} ms redraw, {r['pick_ms_median']:.2f} ms pick"
                 if name == "map_redraw" else
                 f"{r['seconds']:.2f} s")
        print(f"{name:<11}{n:>10,}  {value:<34} peak RSS {r['peak_rss_mb']:>7.0f} MB (+{r['peak_rise_mb']:.0f})",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
                                    "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
