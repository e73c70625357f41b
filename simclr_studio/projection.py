"""2-D maps of the feature space (PCA at once, then t-SNE, shown while it optimises), how well a map
keeps neighbourhoods, clusters for unlabeled folders, and picking points inside a drawn selection."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from simclr_studio.neighbours import normalize_rows
from simclr_studio.tsne_gradient import ShouldStop, Snapshot, TsneGradient

# t-SNE works on the cosine geometry of the features (the one kNN and the loss use): rows are
# L2-normalised, then reduced to at most this many principal components, the usual speed-up.
TSNE_PCA_DIMS = 50
# The usual schedule (scikit-learn's and openTSNE's): exaggerated attraction first, so clusters form,
# then plain t-SNE for ``max_iter`` iterations.
EARLY_EXAGGERATION_ITER = 250
# Defaults (the app's, `embed --map tsne`'s): perplexity 30 is the usual one; 500 iterations after the
# exaggerated ones are openTSNE's own default. Measured (benchmarks/explore.py features, neighbourhood_recall):
# 500 keeps 0.347 at 10k and 0.264 at 50k points against 0.349 and 0.269 for 750, in two thirds of the time.
TSNE_PERPLEXITY = 30.0
NEIGHBOURS_PER_PERPLEXITY = 3  # openTSNE's and scikit-learn's neighbourhood size
TSNE_ITERATIONS = 500
EARLY_EXAGGERATION = 12.0
MOMENTUM = 0.8  # openTSNE's, both phases
# Threads only pay for themselves on bigger maps (tsne_gradient.FFT_MIN_POINTS: where FFT takes over).
THREADS_MIN_POINTS = 5_000
# The FFT's interpolation grid: intervals of INTERVAL_WIDTH map units (3 nodes each), at least
# MIN_INTERVALS per side. Its FFTs grow with the map's area and dominate the late iterations of big maps.
# Measured at 50k points (neighbourhood_recall; scikit-learn 0.272): 1.5 units 0.269 in 78 s, 1.25 units
# 0.272 in 110 s, 2 units 0.260 in 61 s; FIt-SNE's 1 unit 0.276 for 2.25x 1.5's grid. The early phase's
# small map needs no 50 intervals (FIt-SNE's minimum); 20 lost nothing and saves seconds.
INTERVAL_WIDTH = 1.5
MIN_INTERVALS = 20
# Nearest neighbours: exact (blocked matrix products) up to this many points; above, searched by cluster.
EXACT_KNN_MAX = 20_000
CLUSTERS_PER_SQRT_N = 2.0  # 100k points: 632 k-means clusters of ~160
PROBE_CLUSTERS = 30
KMEANS_SAMPLE = 50_000
KMEANS_STEPS = 10

TsneMethod = Literal["auto", "opentsne", "sklearn"]


def pca_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first two principal components of the normalised features, float32 [N, 2]."""
    x = normalize_rows(features)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2), np.float32)
    return _pca(x, 2, seed).astype(np.float32)


def _pca(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """The first ``dims`` principal components of the rows, from the D × D covariance (numpy's matmul
    and eigh let go of the GIL: scikit-learn's full SVD held it for seconds, and the app's window
    froze while a map was being made). Signs as scikit-learn's: each axis's largest loading positive.
    ``seed`` is unused (the result is exact), kept for the callers."""
    dims = min(dims, x.shape[0], x.shape[1])
    x64 = x.astype(np.float64)
    centred = x64 - x64.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, ::-1][:, :dims]  # largest variance first
    axes *= np.sign(axes[np.abs(axes).argmax(0), np.arange(dims)])
    out = centred @ axes
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def tsne_method(method: TsneMethod = "auto") -> str:
    """What ``tsne_2d(method=...)`` runs, in a few words (for the app and the benchmark)."""
    if method != "sklearn" and _has_opentsne():
        import openTSNE

        return f"openTSNE {openTSNE.__version__} (FFT)"
    import sklearn

    return f"scikit-learn {sklearn.__version__} (Barnes-Hut)"


def tsne_2d(features: np.ndarray, perplexity: float = TSNE_PERPLEXITY, seed: int = 0, n_jobs: int | None = None,
            max_iter: int = TSNE_ITERATIONS, snapshot: Snapshot | None = None, should_stop: ShouldStop | None = None,
            snapshot_every_s: float = 0.5, method: TsneMethod = "auto") -> np.ndarray:
    """t-SNE of the normalised features, PCA-initialised, float32 [N, 2].

    ``max_iter`` iterations follow the early-exaggeration phase (``EARLY_EXAGGERATION_ITER``), so a run
    is ``EARLY_EXAGGERATION_ITER + max_iter`` iterations with either implementation. openTSNE (FFT,
    the default) hands ``snapshot(iteration, total, coords)`` a copy of the layout about every
    ``snapshot_every_s`` seconds, from the computing thread; ``should_stop()`` is checked as often and
    raises InterruptedError. scikit-learn (the fallback, or ``method="sklearn"``) only checks
    ``should_stop`` before it starts and hands out no snapshots. The same seed gives the same map.
    """
    if method not in ("auto", "opentsne", "sklearn"):
        raise ValueError(f"unknown t-SNE method {method!r}")
    x = normalize_rows(features)
    n = x.shape[0]
    if n < 4:
        return pca_2d(features, seed)
    reduced = x.shape[1] > TSNE_PCA_DIMS
    x = _pca(x, TSNE_PCA_DIMS, seed).astype(np.float32) if reduced else x
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))  # t-SNE needs perplexity < N
    n_jobs = n_jobs or os.cpu_count() or 1
    stop = should_stop or (lambda: False)
    if stop():
        raise InterruptedError("t-SNE stopped")
    if method == "auto":
        method = "opentsne" if _has_opentsne() else "sklearn"
    if method == "sklearn":
        return _tsne_sklearn(x, perplexity, seed, n_jobs, max_iter)
    start = x[:, :2] if reduced else _pca(x, 2, seed)  # the PCA layout t-SNE starts from
    return _tsne_opentsne(x, start, perplexity, seed, n_jobs, max_iter, snapshot, stop, snapshot_every_s)


def preload() -> None:
    """Import what a t-SNE needs, on the calling thread. openTSNE brings scikit-learn and SciPy, and its
    compiled module holds the GIL ~150 ms while it loads: the app does this behind its splash
    (``gui/app.py``), the Explore session again while a folder is embedded (then a no-op), so no map
    waits for it and no window freezes for it."""
    if _has_opentsne():
        import openTSNE.tsne  # noqa: F401
    else:
        import sklearn.manifold  # noqa: F401


def _has_opentsne() -> bool:
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return False
    return True


def _tsne_sklearn(x: np.ndarray, perplexity: float, seed: int, n_jobs: int, max_iter: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    # scikit-learn counts its 250 exaggerated iterations inside max_iter.
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                n_jobs=n_jobs, max_iter=EARLY_EXAGGERATION_ITER + max_iter, method="barnes_hut")
    return tsne.fit_transform(x).astype(np.float32)


def _tsne_opentsne(x: np.ndarray, start: np.ndarray, perplexity: float, seed: int, n_jobs: int, max_iter: int,
                   snapshot: Snapshot | None, stop: ShouldStop, snapshot_every_s: float) -> np.ndarray:
    from openTSNE import TSNEEmbedding, affinity, initialization
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    n = x.shape[0]
    n_jobs = n_jobs if n >= THREADS_MIN_POINTS else 1
    k = min(n - 1, int(NEIGHBOURS_PER_PERPLEXITY * perplexity))

    def check() -> None:
        if stop():
            raise InterruptedError("t-SNE stopped")

    indices, distances = nearest_neighbours(x, k, seed, check)
    # openTSNE works on the points in an order where each one's neighbours lie near it in memory (the map
    # and snapshots come back in the caller's order): its attraction, most of an iteration's work, then
    # takes ~20 % less time than in the order of the first principal component, the order before.
    order = locality_order(indices)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    indices, distances, start = inverse[indices[order]], distances[order], start[order]
    affinities = affinity.PerplexityBasedNN(knn_index=PrecomputedNeighbors(indices, distances), perplexity=perplexity,
                                            n_jobs=n_jobs)
    del indices, distances
    check()
    handout = None if snapshot is None else lambda done, total, coords: snapshot(done, total, coords[inverse])
    gradient = TsneGradient(handout, stop, snapshot_every_s, EARLY_EXAGGERATION_ITER + max_iter)
    # The PCA layout, scaled down as t-SNE wants it; the jitter separates identical points.
    init = initialization.jitter(initialization.rescale(start.astype(np.float64)), random_state=seed)
    embedding = TSNEEmbedding(init, affinities, negative_gradient_method=gradient, learning_rate="auto",
                              ints_in_interval=INTERVAL_WIDTH, min_num_intervals=MIN_INTERVALS, n_jobs=n_jobs,
                              random_state=seed)
    try:
        for iterations, exaggeration in ((EARLY_EXAGGERATION_ITER, EARLY_EXAGGERATION), (max_iter, None)):
            if iterations > 0:
                gradient.run_phase(iterations)
                embedding.optimize(n_iter=iterations, exaggeration=exaggeration, momentum=MOMENTUM, inplace=True)
    finally:
        gradient.close()
    return np.asarray(embedding, dtype=np.float32)[inverse]


def locality_order(indices: np.ndarray) -> np.ndarray:
    """An order of the points (int64 [N]) in which each one's neighbours (``indices``, [N, k]) lie near it:
    reverse Cuthill-McKee on the neighbour graph taken both ways, which is the pattern of t-SNE's P."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n, k = indices.shape
    graph = csr_matrix((np.ones(n * k, np.int8), indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))
    return reverse_cuthill_mckee(graph, symmetric_mode=False).astype(np.int64)


def nearest_neighbours(x: np.ndarray, k: int, seed: int = 0,
                       check: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows (euclidean): indices int64 [N, k] and distances float64 [N, k],
    nearest first. Exact up to ``EXACT_KNN_MAX`` rows; above, each k-means cluster of rows is searched
    among the ``PROBE_CLUSTERS`` clusters nearest to it (approximate: a few neighbours lying beyond them
    are missed). ``check()`` runs between blocks (it raises to stop)."""
    import torch  # matrix products and top-k on all cores (numpy's argpartition is ~10x slower here)

    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    indices = np.empty((len(data), k), np.int64)
    distances = np.empty((len(data), k), np.float64)
    with torch.no_grad():
        if len(data) <= EXACT_KNN_MAX:
            everyone = torch.arange(len(data))
            block = max(1, 2**24 // len(data))  # ~64 MB of distances at a time
            for start in range(0, len(data), block):
                _search(data, everyone[start:start + block], everyone, k, indices, distances, self_at=start)
                if check is not None:
                    check()
        else:
            _clustered_search(data, k, seed, indices, distances, check)
    return indices, distances


def _search(data: Any, queries: Any, candidates: Any, k: int, indices: np.ndarray, distances: np.ndarray,
            self_at: int | None = None) -> None:
    """The k nearest of ``candidates`` (row numbers, a tensor) to each of ``queries`` (row numbers, all among
    the candidates), written into the queries' rows of ``indices`` and ``distances``. ``self_at``: where
    the queries stand among the candidates, in order, if they do (else they are looked for)."""
    import torch

    q, c = data[queries], data[candidates]
    d2 = torch.addmm((q * q).sum(1, keepdim=True) + (c * c).sum(1)[None, :], q, c.T, alpha=-2.0)
    if self_at is None:  # nobody is their own neighbour
        d2[queries[:, None] == candidates[None, :]] = torch.inf
    else:
        d2.diagonal(self_at).fill_(torch.inf)
    values, found = torch.topk(d2, k, dim=1, largest=False, sorted=True)
    indices[queries.numpy()] = candidates[found].numpy()
    distances[queries.numpy()] = values.clamp_(min=0).sqrt_().numpy()


def _clustered_search(data: Any, k: int, seed: int, indices: np.ndarray, distances: np.ndarray,
                      check: Callable[[], None] | None) -> None:
    import torch

    n = len(data)
    generator = torch.Generator().manual_seed(seed)
    sample = data[torch.randperm(n, generator=generator)[:KMEANS_SAMPLE]]
    centroids = sample[torch.randperm(len(sample), generator=generator)[:int(CLUSTERS_PER_SQRT_N * n**0.5)]]
    for _ in range(KMEANS_STEPS):  # Lloyd's steps on a sample: clusters only need to be compact, not optimal
        nearest = _nearest_centroid(sample, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, sample)
        counts = torch.bincount(nearest, minlength=len(centroids))
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    cluster = _nearest_centroid(data, centroids)
    sizes = torch.bincount(cluster, minlength=len(centroids)).tolist()
    members = torch.split(torch.argsort(cluster, stable=True), sizes)
    probes = torch.topk(torch.cdist(centroids, centroids), min(PROBE_CLUSTERS, len(centroids)), largest=False).indices
    for c, queries in enumerate(members):
        if len(queries) == 0:
            continue
        # The cluster itself first, then those nearest to it.
        candidates = torch.cat([queries] + [members[p] for p in probes[c].tolist() if p != c])
        if len(candidates) <= k:  # too few nearby (tiny clusters): all rows
            _search(data, queries, torch.arange(n), k, indices, distances)
        else:
            _search(data, queries, candidates, k, indices, distances, self_at=0)
        if check is not None and c % 16 == 0:
            check()


def _nearest_centroid(x: Any, centroids: Any) -> Any:
    import torch

    squared = (centroids * centroids).sum(1)
    return torch.cat([torch.addmm(squared[None, :], block, centroids.T, alpha=-2.0).argmin(1)
                      for block in torch.split(x, 16384)])


def neighbourhood_recall(features: np.ndarray, coords: np.ndarray, k: int = 10, sample: int = 2000,
                         seed: int = 0) -> float:
    """How well a map keeps neighbourhoods: for a random sample of points, the fraction of each one's k
    nearest neighbours in feature space (cosine) that are among its k nearest on the map (1.0: all)."""
    unit = normalize_rows(features)
    coords = np.asarray(coords, dtype=np.float32)
    n = unit.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return 1.0
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    hits = 0
    for start in range(0, len(rows), 64):  # bounded memory: 64 rows of N distances at a time
        block = rows[start:start + 64]
        near_features = _k_smallest(-(unit[block] @ unit.T), block, k)
        near_map = _k_smallest(((coords[block, None, :] - coords[None, :, :]) ** 2).sum(-1), block, k)
        hits += sum(len(np.intersect1d(a, b)) for a, b in zip(near_features, near_map, strict=True))
    return hits / (len(rows) * k)


def _k_smallest(distances: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The k columns with the smallest values in each row, leaving out the row's own point."""
    distances[np.arange(len(rows)), rows] = np.inf
    return np.argpartition(distances, k - 1, axis=1)[:, :k]


def kmeans_labels(features: np.ndarray, n_clusters: int = 10, seed: int = 0) -> np.ndarray:
    """Cluster ids (k-means on the normalised features) to colour a map that has no folder labels."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = normalize_rows(features)
    n_clusters = max(1, min(n_clusters, x.shape[0]))
    algo = MiniBatchKMeans if x.shape[0] > 20000 else KMeans
    return algo(n_clusters=n_clusters, random_state=seed, n_init=3).fit_predict(x).astype(np.int64)


def points_in_rect(coords: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Row numbers of the points inside the rectangle (corners in any order)."""
    lo_x, hi_x = sorted((x0, x1))
    lo_y, hi_y = sorted((y0, y1))
    inside = (coords[:, 0] >= lo_x) & (coords[:, 0] <= hi_x) & (coords[:, 1] >= lo_y) & (coords[:, 1] <= hi_y)
    return np.flatnonzero(inside)


def points_in_polygon(coords: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Row numbers of the points inside a closed polygon [M, 2] (even-odd rule, vectorised over points)."""
    polygon = np.asarray(polygon, dtype=np.float64)
    if len(polygon) < 3 or len(coords) == 0:
        return np.zeros(0, np.int64)
    x, y = coords[:, 0].astype(np.float64), coords[:, 1].astype(np.float64)
    inside = np.zeros(len(coords), dtype=bool)
    # Candidate points only: those inside the polygon's bounding box.
    lo, hi = polygon.min(0), polygon.max(0)
    cand = np.flatnonzero((x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]))
    if cand.size == 0:
        return cand
    cx, cy = x[cand], y[cand]
    flags = np.zeros(cand.size, dtype=bool)
    px, py = polygon[:, 0], polygon[:, 1]
    qx, qy = np.roll(px, 1), np.roll(py, 1)
    for ax, ay, bx, by in zip(px, py, qx, qy, strict=True):
        crosses = (ay > cy) != (by > cy)
        if not crosses.any():
            continue
        x_at = ax + (cy - ay) * (bx - ax) / np.where(by != ay, by - ay, 1e-300)
        flags ^= crosses & (cx < x_at)
    inside[cand] = flags
    return np.flatnonzero(inside)
