"""2-D maps of the feature space (PCA at once, then t-SNE), clusters for unlabeled folders, and
picking points inside a drawn selection."""

from __future__ import annotations

import os

import numpy as np

from simclr_studio.neighbours import normalize_rows

# t-SNE works on the cosine geometry of the features (the one kNN and the loss use): rows are
# L2-normalised, then reduced to at most this many principal components, the usual speed-up.
TSNE_PCA_DIMS = 50


def pca_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first two principal components of the normalised features, float32 [N, 2]."""
    x = normalize_rows(features)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2), np.float32)
    return _pca(x, 2, seed).astype(np.float32)


def _pca(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[0], x.shape[1])
    solver = "randomized" if min(x.shape) > 200 else "full"
    out = PCA(n_components=dims, random_state=seed, svd_solver=solver).fit_transform(x)
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def tsne_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0, n_jobs: int | None = None,
            max_iter: int = 750) -> np.ndarray:
    """t-SNE (scikit-learn, Barnes-Hut) of the normalised features, PCA-initialised, float32 [N, 2]."""
    from sklearn.manifold import TSNE

    x = normalize_rows(features)
    n = x.shape[0]
    if n < 4:
        return pca_2d(features, seed)
    x = _pca(x, TSNE_PCA_DIMS, seed) if x.shape[1] > TSNE_PCA_DIMS else x
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))  # t-SNE needs perplexity < N
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                n_jobs=n_jobs or os.cpu_count(), max_iter=max_iter, method="barnes_hut")
    return tsne.fit_transform(x.astype(np.float32)).astype(np.float32)


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
