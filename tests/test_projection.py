"""2-D maps (engine side): PCA, t-SNE (openTSNE live, scikit-learn as the fallback), map quality, k-means."""

import sys
import time

import numpy as np
import pytest

from simclr_studio import projection, tsne_gradient
from simclr_studio.neighbours import normalize_rows
from simclr_studio.projection import kmeans_labels, neighbourhood_recall, pca_2d, tsne_2d, tsne_method


def clustered(n_per: int, clusters: int = 3, dims: int = 64, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dims)) * 5
    labels = np.repeat(np.arange(clusters), n_per)
    return (centres[labels] + rng.normal(size=(len(labels), dims))).astype(np.float32), labels


def nearest_on_map_shares_cluster(coords: np.ndarray, labels: np.ndarray) -> float:
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(1)] == labels).mean())


@pytest.fixture
def short_exaggeration(monkeypatch):
    """A shorter early-exaggeration phase: the tests look at behaviour, not at converged maps."""
    monkeypatch.setattr(projection, "EARLY_EXAGGERATION_ITER", 60)


@pytest.mark.parametrize("method", ["opentsne", "sklearn"])
def test_maps_have_one_row_per_point_and_separate_clusters(method):
    feats, labels = clustered(40)
    for coords in (pca_2d(feats), tsne_2d(feats, perplexity=15, max_iter=300, method=method)):
        assert coords.shape == (120, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
        assert nearest_on_map_shares_cluster(coords, labels) > 0.9  # a point's map neighbour shares its cluster
    np.testing.assert_array_equal(pca_2d(feats), pca_2d(feats))  # deterministic
    clusters = kmeans_labels(feats, 3)
    # k-means recovers the three groups (up to renaming).
    assert all(len(np.unique(clusters[labels == c])) == 1 for c in range(3))
    assert tsne_2d(feats[:3], method=method).shape == (3, 2)  # too few points for t-SNE: falls back to PCA


def test_snapshots_arrive_while_optimising_as_copies(short_exaggeration):
    feats, _ = clustered(1000)
    snapshots = []
    coords = tsne_2d(feats, max_iter=100, snapshot_every_s=0.05,
                     snapshot=lambda iteration, total, xy: snapshots.append((iteration, total, xy)))
    assert len(snapshots) > 3
    iterations = [s[0] for s in snapshots]
    assert iterations == sorted(set(iterations)) and 0 < iterations[0] and iterations[-1] <= 160
    assert {s[1] for s in snapshots} == {160}  # exaggeration + max_iter
    for _, _, xy in snapshots:
        assert xy.shape == coords.shape and xy.dtype == np.float32 and np.isfinite(xy).all()
        assert not np.shares_memory(xy, coords)
    assert not np.shares_memory(snapshots[0][2], snapshots[1][2])
    assert not np.array_equal(snapshots[0][2], snapshots[-1][2])  # the map moved between them


def test_snapshots_are_throttled(short_exaggeration):
    feats, _ = clustered(300)
    snapshots = []
    start = time.monotonic()
    tsne_2d(feats, max_iter=100, snapshot_every_s=3600, snapshot=lambda *args: snapshots.append(args))
    assert time.monotonic() - start < 3600 and snapshots == []  # none due within an hour


def test_stop_raises_promptly(short_exaggeration):
    feats, _ = clustered(1000)
    asked_at = []  # stopping is asked for at the first snapshot

    with pytest.raises(InterruptedError):
        tsne_2d(feats, max_iter=10_000, snapshot_every_s=0.05, should_stop=lambda: bool(asked_at),
                snapshot=lambda *_: asked_at.append(time.monotonic()))
    assert len(asked_at) == 1 and time.monotonic() - asked_at[0] < 1.0  # at the next iteration, not 10,000 later
    with pytest.raises(InterruptedError):  # asked before it starts: nothing is computed
        tsne_2d(feats, method="sklearn", should_stop=lambda: True)


def test_same_seed_same_map(short_exaggeration, monkeypatch):
    feats, _ = clustered(200)
    first = tsne_2d(feats, max_iter=100, seed=3)
    np.testing.assert_array_equal(first, tsne_2d(feats, max_iter=100, seed=3))
    assert not np.array_equal(first, tsne_2d(feats, max_iter=100, seed=4))
    # The big maps' way (FFT, neighbours searched by cluster, two threads), on a small one.
    monkeypatch.setattr(tsne_gradient, "FFT_MIN_POINTS", 0)
    monkeypatch.setattr(projection, "THREADS_MIN_POINTS", 0)
    monkeypatch.setattr(projection, "EXACT_KNN_MAX", 0)
    feats, labels = clustered(200, clusters=4)
    first = tsne_2d(feats, max_iter=50, seed=3, n_jobs=2)
    np.testing.assert_array_equal(first, tsne_2d(feats, max_iter=50, seed=3, n_jobs=2))
    # The attraction's rows are split between two threads by their timing: the map does not depend on it.
    np.testing.assert_array_equal(first, tsne_2d(feats, max_iter=50, seed=3, n_jobs=1))
    assert nearest_on_map_shares_cluster(first, labels) > 0.9


def test_sklearn_is_the_fallback_without_opentsne(monkeypatch):
    assert tsne_method().startswith("openTSNE")
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # import openTSNE now raises ImportError
    assert tsne_method().startswith("scikit-learn")
    feats, labels = clustered(40)
    snapshots = []
    coords = tsne_2d(feats, perplexity=15, max_iter=300, snapshot=lambda *args: snapshots.append(args))
    assert coords.shape == (120, 2) and nearest_on_map_shares_cluster(coords, labels) > 0.9
    assert snapshots == []  # scikit-learn has no live layout to hand out
    with pytest.raises(ValueError, match="method"):
        tsne_2d(feats, method="umap")


def test_approximate_neighbours_match_exact_ones(monkeypatch):
    feats, _ = clustered(500, clusters=4, dims=16)
    x = normalize_rows(feats)
    exact_rows, exact_dist = projection.nearest_neighbours(x, 15)
    monkeypatch.setattr(projection, "EXACT_KNN_MAX", 0)  # searched by cluster at any size
    rows, dist = projection.nearest_neighbours(x, 15, seed=1)
    assert rows.shape == exact_rows.shape == (2000, 15) and dist.dtype == np.float64
    assert not (rows == np.arange(2000)[:, None]).any()  # nobody is their own neighbour
    assert np.all(np.diff(dist, axis=1) >= 0)  # nearest first
    found = np.mean([len(np.intersect1d(a, b)) / 15 for a, b in zip(rows, exact_rows, strict=True)])
    assert found > 0.95
    assert np.mean(np.isclose(dist[:, 0], exact_dist[:, 0], rtol=1e-3, atol=1e-4)) > 0.99  # same nearest distance
    again, _ = projection.nearest_neighbours(x, 15, seed=1)
    np.testing.assert_array_equal(rows, again)  # reproducible


def test_neighbourhood_recall():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3000, 2)).astype(np.float32)
    # Unit vectors: distances on the map order neighbours as cosine does in feature space.
    assert neighbourhood_recall(feats, normalize_rows(feats), k=10, sample=500) == 1.0
    assert neighbourhood_recall(feats, rng.normal(size=(3000, 2)), k=10, sample=500) < 0.05
    assert neighbourhood_recall(feats[:1], feats[:1]) == 1.0  # nobody to miss


def test_maps_and_snapshots_come_back_in_the_callers_order(short_exaggeration):
    """openTSNE runs on the points sorted by their first principal component (for speed); the map and
    every snapshot are handed back row for row as given."""
    feats, labels = clustered(60, clusters=4)
    shuffle = np.random.default_rng(0).permutation(len(labels))
    feats, labels = feats[shuffle], labels[shuffle]
    snapshots = []
    coords = tsne_2d(feats, perplexity=15, max_iter=150, snapshot_every_s=0.0,
                     snapshot=lambda iteration, total, xy: snapshots.append(xy))
    assert nearest_on_map_shares_cluster(coords, labels) > 0.9
    assert nearest_on_map_shares_cluster(snapshots[-1], labels) > 0.9
    assert np.abs(snapshots[-1] - coords).max() < 0.2 * np.ptp(coords)  # the last snapshot is nearly the map


def test_locality_order_puts_neighbours_near_each_other():
    """t-SNE runs on the points in this order (for speed): a permutation in which a shuffled chain's
    neighbours lie next to each other again."""
    n = 2000
    shuffle = np.random.default_rng(0).permutation(n)  # the chain's point p is row shuffle[p]
    before, after = np.arange(n) - 1, np.arange(n) + 1
    before[0], after[-1] = 1, n - 2  # the ends: their one neighbour twice
    chain = np.empty((n, 2), np.int64)  # each row's neighbours along the chain
    chain[shuffle] = np.stack([shuffle[before], shuffle[after]], 1)
    order = projection.locality_order(chain)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(n))
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    assert np.abs(position[chain] - position[:, None]).max() == 1  # neighbours are next to each other
    assert np.median(np.abs(chain - np.arange(n)[:, None])) > 100  # in the rows' own order they were not
