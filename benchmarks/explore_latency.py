"""The Explore tab stays responsive at scale: event-loop stalls while t-SNE moves the map, while the
duplicate slider moves, and while curation work runs, in the real panel.

    QT_QPA_PLATFORM=offscreen python benchmarks/explore_latency.py [--n 50000] \\
        [--out benchmarks/results/explore_latency.json]

A 5 ms QTimer runs on the GUI thread (gui_latency.StallMeter); every gap beyond the interval is a stall.
The panel gets N labelled points (Gaussian blobs in 128-d, ten classes, 1 % exact copies, made-up
grey thumbnails) as if embedded, so what is measured is the panel's own work: t-SNE snapshots drawn
every ~0.5 s (openTSNE in a worker thread; its imports done first, as the app does behind its
splash, and timed apart), the duplicate search (the kNN graph, then features, pixel signatures and
crops), then the slider dragged across its range (the count
follows every step, the groups are redrawn when it rests), outliers and mislabels.
The target is no stall over 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np


def blobs(n: int, dims: int = 128, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dims)).astype(np.float32) * 2
    features = centres[labels] + rng.standard_normal((n, dims), dtype=np.float32)
    copies = rng.choice(n, n // 100, replace=False)
    features[copies] = features[rng.choice(n, len(copies))]  # exact duplicates to find
    return features, labels


def thumbnails(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Made-up grey thumbnails: a smooth pattern per class plus each image's own (look-alikes, so the
    duplicate search's crop stage has pairs to refine, as on real folders)."""
    import torch

    from simclr_studio.signatures import SIDE

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (labels.max() + 1, 1, 4, 4))[labels] + rng.normal(0, 25, (len(labels), 1, 4, 4))
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse).float(), size=(SIDE, SIDE), mode="bicubic")
    return smooth[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--out", default="benchmarks/results/explore_latency.json")
    args = parser.parse_args()

    from gui_latency import StallMeter
    from PySide6.QtWidgets import QApplication

    from simclr_studio.embeddings import Embeddings
    from simclr_studio.gui.explore_panel import ExplorePanel
    from simclr_studio.neighbours import NeighbourIndex
    from simclr_studio.projection import pca_2d
    from simclr_studio.session.explore_values import Embedded, Sources

    app = QApplication.instance() or QApplication([])
    # The imports a t-SNE needs (projection.preload): the app does them behind its splash, before any
    # window is up; timed here as start-up, not as a stall.
    from simclr_studio.projection import preload

    start = time.perf_counter()
    preload()
    startup_imports_s = time.perf_counter() - start
    features, labels = blobs(args.n)
    emb = Embeddings(features, [f"/nonexistent/img_{i:07d}.png" for i in range(args.n)], labels,
                     [f"class {c}" for c in range(10)], "benchmark.pt", maps={"pca": pca_2d(features)},
                     thumbnails=thumbnails(labels))
    panel = ExplorePanel()
    panel.resize(1400, 900)
    panel.show()
    session = panel.session
    session.sources = Sources(Path("/nonexistent/run"), Path("/nonexistent/run/checkpoints/last.pt"), None)
    trained = SimpleNamespace(note="")  # no checkpoint behind made-up embeddings
    session.embedded = Embedded(session.sources, trained, emb, Path("/nonexistent/cache.npz"), False,
                                NeighbourIndex(features))
    panel.compute_quality = lambda: None  # needs a checkpoint (random encoder, raw pixels): not what is timed here
    panel._save = lambda: None  # no cache file for made-up embeddings
    meter = StallMeter()
    results: dict = {"n": args.n, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                     "startup_imports_s": startup_imports_s}

    def run_until(done, timeout_s: float) -> float:
        start = time.perf_counter()
        while not done() and time.perf_counter() - start < timeout_s:
            app.processEvents()
            time.sleep(0.001)
        return time.perf_counter() - start

    def measure(name: str, action, done, timeout_s: float = 600) -> None:
        meter.start()
        action()
        seconds = run_until(done, timeout_s)
        meter.stop()
        results[name] = {"seconds": seconds, **meter.summary()}
        print(f"{name:<22} {seconds:7.1f} s   max stall {results[name]['max_ms']:6.1f} ms   "
              f"p99 {results[name]['p99_ms']:5.1f} ms", flush=True)

    moves = []
    original = panel.map.move_points
    panel.map.move_points = lambda coords: (moves.append(time.perf_counter()), original(coords))
    measure("tsne_live", lambda: (panel.map_choice.setCurrentText("t-SNE"), panel._on_embedded(session.embedded)),
            lambda: session.map("tsne") is not None and not panel.jobs)
    results["tsne_live"]["snapshots_drawn"] = len(moves)
    measure("duplicates_search", panel.duplicates.search, lambda: panel.curation.duplicates is not None)

    steps_ms: list[float] = []

    def drag() -> None:  # each step's count is computed at once, on the GUI thread: time the steps themselves
        for step in range(0, 1001, 25):
            start = time.perf_counter()
            panel.duplicates.slider.setValue(step)
            app.processEvents()
            steps_ms.append((time.perf_counter() - start) * 1000)
    measure("duplicates_slider", drag, lambda: True)
    results["duplicates_slider"] |= {"steps": len(steps_ms), "max_ms": max(results["duplicates_slider"]["max_ms"],
                                                                          max(steps_ms))}
    measure("duplicates_groups_drawn", lambda: panel.duplicates.slider.setValue(0), lambda: False, timeout_s=1.5)
    results["duplicates_slider"]["groups_at_floor"] = panel.duplicates.groups.count()
    measure("outliers", panel.outliers.search, lambda: panel.curation.outliers is not None)
    measure("mislabels", panel.mislabels.search, lambda: panel.curation.mislabels is not None)
    worst = max(v["max_ms"] for v in results.values() if isinstance(v, dict) and "max_ms" in v)
    results["max_stall_ms"] = worst
    print(f"worst stall {worst:.1f} ms (target ≤ 100 ms)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
