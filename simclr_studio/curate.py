"""Curation findings from the features of an embedded folder: near-duplicate groups, outliers and likely
mislabeled images, and the CSV report that lists them.

Everything uses cosine similarity of the features (rows L2-normalised once, as ``neighbours`` does) and
is exact; similarities are computed tile by tile (at most ``TILE_ROWS`` × ``TILE_COLS`` at a time),
never as an N × N matrix. ``progress(done, total)`` and ``should_stop()`` follow the engine's
convention: when ``should_stop()`` holds, InterruptedError is raised.

Near-duplicates are searched once at ``DUPLICATE_FLOOR`` (``duplicate_pairs``); the pairs then group
at any threshold above it without searching again (``DuplicatePairs.groups``), so a slider can move
live. The search partitions the unit vectors with k-means and compares each cluster with itself and
with the "border" points of other clusters that could be within reach (see ``_Partition``); when the
borders make that no cheaper (e.g. uniform random features) it compares all pairs, tile by tile.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from simclr_studio.neighbours import normalize_rows

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

DUPLICATE_FLOOR = 0.90
"""The lowest threshold pairs are searched at: the duplicate slider's minimum (raised for a folder with
too many similar pairs, see MAX_DUPLICATE_PAIRS)."""

DEFAULT_DUPLICATE_THRESHOLD = 0.999
"""Images at least this similar are grouped as near-duplicates by default: the lowest threshold at which
distinct images are rarely grouped. Measured by benchmarks/duplicates.py (results/duplicates.json) with
encoders trained 4 CPU-minutes by the default recipe (tiny-cnn), on images they never trained on:

    share found / grouped at T        0.99         0.995        0.998        0.999
    (exact copies: 1.00 at every T, on both sets)
    Fashion-MNIST (10,000 distinct test images; copies of 500 of them)
      JPEG quality 75 / 50            0.97 / 0.81  0.89 / 0.67  0.72 / 0.43  0.58 / 0.28
      resized to 75 % / 200 %         0.48 / 0.81  0.21 / 0.52  0.04 / 0.13  0.00 / 0.03
      cropped to 90 % (centre/corner) 0.63 / 0.31  0.16 / 0.03  0.00 / 0.00  0.00 / 0.00
      distinct images grouped         0.71         0.38         0.10         0.024  (largest group 17)
    emoji (1,517 distinct test images, 32 px colour; copies of 500)
      JPEG quality 75 / 50            0.96 / 0.88  0.82 / 0.69  0.49 / 0.32  0.27 / 0.14
      resized to 75 % / 200 %         0.98 / 1.00  0.92 / 1.00  0.63 / 0.98  0.35 / 0.92
      cropped to 90 % (centre/corner) 0.40 / 0.14  0.09 / 0.03  0.01 / 0.01  0.00 / 0.01
      distinct images grouped         0.16         0.062        0.016        0.011  (largest group 4)

A briefly trained encoder is invariant to what SimCLR trains it to ignore (crops, resizing): a 90 %
crop of an image is no more similar to it than its nearest distinct look-alike, and no threshold finds
crops without grouping most distinct images. 0.999 always finds exact copies and about half of the
JPEG re-encodes; lower it (the app's slider, ``curate --duplicates``) to find more, at the price above."""

MAX_DUPLICATE_PAIRS = 2_000_000
"""At most this many pairs are kept (20 bytes each). When more pairs reach the floor, the floor is
raised: first where a sample of the rows says about half this many pairs would reach it, then, if the
search still finds more, just above the most similar pair it drops. ``DuplicatePairs.floor`` is the
floor actually searched (the slider's minimum), and every pair at or above it is kept: still exact,
over a narrower range."""

TILE_ROWS, TILE_COLS = 1024, 4096  # the largest similarity tile computed (16 MB of float32)
KNN_BLOCK = 2048  # the kNN graph's tiles are KNN_BLOCK × KNN_BLOCK
OUTLIER_K = 10
MISLABEL_K = 20
MISLABEL_TEMPERATURE = 0.1  # evaluate.knn_predict's weighting: exp(similarity / τ)
MISLABEL_MIN_CONFIDENCE = 0.5  # the weighted vote's majority names another class than the folder's

_PARTITION_MIN_ROWS = 8192  # below this, all pairs are cheap
_PARTITION_MAX_COST = 0.6  # use the partition only when it computes at most this share of all pairs


def _margin(dim: int) -> float:
    """Slack for the float32 rounding of a dot product of unit vectors (a tile's similarities, centroid
    distances): a bound of D · 2⁻²² is far above the typical error, so no pair is lost."""
    return max(1e-4, dim * 2.0**-22)


# ---- near-duplicates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DuplicateGroup:
    rows: tuple[int, ...]  # first = the group's reference image (lowest row), then by similarity to it, descending
    scores: tuple[float, ...]  # cosine similarity of each row to the first (the first's is 1.0)


@dataclass(frozen=True)
class DuplicatePairs:
    """Every pair of rows with cosine similarity ≥ ``floor`` (most similar first), grouped on demand."""

    i: np.ndarray  # int64 [P], i < j
    j: np.ndarray  # int64 [P]
    similarity: np.ndarray  # float32 [P], descending
    floor: float  # the threshold searched at (raised from the one asked when MAX_DUPLICATE_PAIRS was reached)
    n: int  # rows in the features
    unit: np.ndarray = field(repr=False, compare=False)  # the normalised features: scores within a group

    def _check(self, threshold: float) -> None:
        if threshold < self.floor:
            raise ValueError(f"threshold {threshold:g} is below {self.floor:g}, the floor the pairs were searched at")

    @cached_property
    def _forest(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The maximum spanning forest of the pairs (u, v, similarity; most similar first): pairs ≥ t
        and its edges ≥ t connect the same rows, and a forest's components are counted in O(log)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import minimum_spanning_tree

        if len(self.i) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        weight = 2.0 - self.similarity.astype(np.float64)  # > 0 (zero means no edge); 2 − w gives s back exactly
        tree = minimum_spanning_tree(coo_matrix((weight, (self.i, self.j)), shape=(self.n, self.n)).tocsr()).tocoo()
        sim = (2.0 - tree.data).astype(np.float32)
        order = np.argsort(-sim, kind="stable")
        return tree.row[order].astype(np.int64), tree.col[order].astype(np.int64), sim[order]

    @cached_property
    def _touched(self) -> np.ndarray:
        """The similarity of each row's most similar forest edge (rows in some pair), descending."""
        u, v, sim = self._forest
        best = np.full(self.n, -np.inf, np.float32)
        np.maximum.at(best, np.concatenate([u, v]), np.concatenate([sim, sim]))
        return np.sort(best[np.isfinite(best)])[::-1]

    def count(self, threshold: float) -> int:
        """How many groups ``groups(threshold)`` has: rows touched minus forest edges (a forest's components)."""
        self._check(threshold)
        edges = _count_at_least(self._forest[2], threshold)
        return _count_at_least(self._touched, threshold) - edges

    def groups(self, threshold: float) -> list[DuplicateGroup]:
        """Connected components of the pairs ≥ ``threshold`` (at least two rows each), largest first."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        self._check(threshold)
        u, v, sim = self._forest
        m = _count_at_least(sim, threshold)
        if m == 0:
            return []
        graph = coo_matrix((np.ones(m, np.int8), (u[:m], v[:m])), shape=(self.n, self.n))
        _, component = connected_components(graph, directed=False)
        rows = np.unique(np.concatenate([u[:m], v[:m]]))
        rows = rows[np.argsort(component[rows], kind="stable")]  # by component, then by row number
        starts = np.flatnonzero(np.r_[True, np.diff(component[rows]) != 0])
        found = [self._group(members) for members in np.split(rows, starts[1:])]
        return sorted(found, key=lambda g: (-len(g.rows), g.rows[0]))

    def _group(self, members: np.ndarray) -> DuplicateGroup:
        first, others = int(members[0]), members[1:]
        a, b = self.unit[others], self.unit[[first]]
        scores = _cosine64(a, np.broadcast_to(b, a.shape), _squared_norms64(a), _squared_norms64(b))
        order = np.lexsort((others, -scores))
        return DuplicateGroup((first, *others[order].tolist()), (1.0, *scores[order].tolist()))


def _count_at_least(descending: np.ndarray, threshold: float) -> int:
    return int(np.searchsorted(-descending, -np.float32(threshold), side="right"))


def _squared_norms64(unit: np.ndarray) -> np.ndarray:
    """Each row's squared norm, accumulated in float64 (a chunk of rows at a time)."""
    chunks = (unit[s : s + 8192].astype(np.float64) for s in range(0, len(unit), 8192))
    return np.concatenate([np.einsum("ij,ij->i", c, c) for c in chunks] or [np.zeros(0)])


def _cosine64(a: np.ndarray, b: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """Cosine similarity of float32 rows, accumulated in float64 (``aa``, ``bb``: their squared norms
    from ``_squared_norms64``): the same value whichever tile found the pair (BLAS tiles round
    differently by shape), exactly 1 for identical rows; float32 out."""
    dots = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    scale = np.sqrt(aa * bb)
    return np.clip(np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0), -1.0, 1.0).astype(np.float32)


def duplicate_pairs(features: np.ndarray, floor: float = DUPLICATE_FLOOR, progress: ProgressFn | None = None,
                    should_stop: StopFn | None = None, max_pairs: int = MAX_DUPLICATE_PAIRS) -> DuplicatePairs:
    """Every pair of rows whose cosine similarity is ≥ ``floor``, exact (see MAX_DUPLICATE_PAIRS for the cap)."""
    if not 0.01 <= floor <= 1.0:
        raise ValueError(f"the duplicate floor must be between 0.01 and 1, got {floor}")
    unit = np.ascontiguousarray(normalize_rows(features))
    floor = _starting_floor(torch.from_numpy(unit), floor, max_pairs)
    search = _PairSearch(unit, floor, max_pairs, progress, should_stop)
    partition = _Partition.fit(search.x, floor) if len(unit) >= _PARTITION_MIN_ROWS else None
    if partition is None:
        search.all_pairs()
    else:
        search.by_cluster(partition)
    i, j, sim = search.pairs()
    pairs = DuplicatePairs(i, j, sim, search.floor, len(unit), unit)
    pairs.count(pairs.floor)  # builds the forest here, in the search's thread: a slider's first count is instant
    return pairs


def near_duplicates(features: np.ndarray, threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                    progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                    max_pairs: int = MAX_DUPLICATE_PAIRS) -> list[DuplicateGroup]:
    """Groups of near-duplicate rows at ``threshold`` (searched at that threshold: no slider)."""
    pairs = duplicate_pairs(features, threshold, progress, should_stop, max_pairs)
    return pairs.groups(max(threshold, pairs.floor))


def _starting_floor(x: torch.Tensor, floor: float, max_pairs: int, sample: int = 4096, seed: int = 0) -> float:
    """``floor``, or higher when a sample of the rows says that far more than max_pairs pairs reach it:
    then the floor where about half of max_pairs would (the search itself caps exactly; starting
    nearer the final floor keeps the clusters' borders narrow and the candidates few)."""
    n = x.shape[0]
    total = n * (n - 1) / 2
    if total <= max_pairs:
        return floor
    rows = x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample]]
    m = rows.shape[0]
    sims = (rows @ rows.T)[torch.ones(m, m, dtype=torch.bool).triu_(1)]
    if float((sims >= floor).float().mean()) * total <= max_pairs:
        return floor
    keep = max(1, int(len(sims) * max_pairs / 2 / total))
    return max(floor, float(sims.topk(keep).values[-1]))


@dataclass
class _Partition:
    """Rows by k-means cluster, and each cluster's border: the rows of later clusters that may be within
    ε = sqrt(2 − 2·floor) of one of its members (cos ≥ floor ⇔ |x − y| ≤ ε on unit vectors).

    A row y of cluster B is nearer B's centroid than A's, so it is on B's side of their bisecting
    hyperplane, and every member of A is on A's side: y can be within ε of a member of A only if its
    distance to that hyperplane, (|y − cA|² − |y − cB|²) / (2|cA − cB|), is at most ε. Each pair across
    clusters A < B is compared once, from A. (A test on A's radius as well pruned < 2 % more.)"""

    members: list[np.ndarray]  # per cluster: its row numbers
    borders: list[np.ndarray]  # per cluster: row numbers of its border (in later clusters)
    cost: int  # similarities computed

    @classmethod
    def fit(cls, x: torch.Tensor, floor: float, seed: int = 0) -> _Partition | None:
        """The partition, or None when it would compute more than _PARTITION_MAX_COST of all pairs."""
        n = x.shape[0]
        centroids = _kmeans(x, max(2, min(2048, int(math.sqrt(n)))), seed)
        c = centroids.shape[0]
        c2 = (centroids * centroids).sum(1).numpy()
        gap = torch.cdist(centroids, centroids).numpy()
        margin = _margin(x.shape[1])
        eps = math.sqrt(max(0.0, 2.0 - 2.0 * floor)) + margin
        assign = torch.empty(n, dtype=torch.int64)
        # Border entries beyond this many (with clusters of the mean size) already cost more than allowed.
        limit = _PARTITION_MAX_COST * n * c / 2
        found: list[np.ndarray] = []
        entries = 0
        for s in range(0, n, TILE_COLS):
            d2 = _squared_distances(x[s : s + TILE_COLS], centroids, c2)
            mine = d2.argmin(1)
            assign[s : s + TILE_COLS] = torch.from_numpy(mine)
            d2 -= d2[np.arange(len(mine)), mine][:, None]
            near = (d2 <= gap[mine] * (2 * eps) + margin) & (np.arange(c)[None, :] < mine[:, None])
            rows, clusters = np.nonzero(near)
            entries += len(rows)
            if entries > limit:
                return None
            found.append(np.stack([clusters, rows + s], 1).astype(np.int32))
        sizes = torch.bincount(assign, minlength=c)
        pairs = np.concatenate(found)
        cost = int((sizes * (sizes - 1) // 2).sum()) + int(sizes[torch.from_numpy(pairs[:, 0]).long()].sum())
        if cost > _PARTITION_MAX_COST * n * (n - 1) / 2:
            return None
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        cuts = np.searchsorted(pairs[:, 0], np.arange(c + 1))
        order = np.argsort(assign.numpy(), kind="stable")
        starts = np.r_[0, np.cumsum(sizes.numpy())]
        return cls([order[starts[a] : starts[a + 1]] for a in range(c)],
                   [pairs[cuts[a] : cuts[a + 1], 1].astype(np.int64) for a in range(c)], cost)


def _squared_distances(x: torch.Tensor, centroids: torch.Tensor, c2: np.ndarray) -> np.ndarray:
    """|x − c|² of every row and centroid: one product, the rest in numpy (see _PairSearch._tile)."""
    d2 = (x @ centroids.T).numpy()
    d2 *= -2
    rows = x.numpy()
    d2 += np.einsum("ij,ij->i", rows, rows)[:, None] + c2[None, :]
    return np.maximum(d2, 0, out=d2)


def _kmeans(x: torch.Tensor, k: int, seed: int, steps: int = 6) -> torch.Tensor:
    """A few Lloyd steps on a sample (the partition only needs compact clusters, not the best ones)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(x.shape[0], generator=gen)[: max(10_000, 30 * k)]
    data = x[pick]
    centroids = data[torch.randperm(data.shape[0], generator=gen)[:k]].clone()
    d2 = (data * data).sum(1, keepdim=True)
    for _ in range(steps):
        assign = (d2 - 2 * data @ centroids.T + (centroids * centroids).sum(1)[None, :]).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0  # an empty cluster is re-seeded at a random sample point
        centroids = sums / counts.clamp_min(1)[:, None]
        centroids[empty] = data[torch.randint(data.shape[0], (int(empty.sum()),), generator=gen)]
    return centroids


class _PairSearch:
    """Similarity tiles → candidate pairs (a little below the floor, for the tiles' rounding) → each
    candidate verified exactly in float64 → kept (at most max_pairs, see MAX_DUPLICATE_PAIRS)."""

    def __init__(self, unit: np.ndarray, floor: float, max_pairs: int, progress: ProgressFn | None,
                 should_stop: StopFn | None):
        self.unit, self.x, self.norms = unit, torch.from_numpy(unit), _squared_norms64(unit)
        self.margin = _margin(unit.shape[1])
        self.floor, self.max_pairs = float(floor), max_pairs
        self.progress, self.should_stop = progress, should_stop
        self.done = self.total = 0
        self.kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_kept = 0

    def all_pairs(self) -> None:
        n = self.x.shape[0]
        self.total = n * (n - 1) // 2
        self._triangle(self.x, np.arange(n), n)

    def by_cluster(self, part: _Partition) -> None:
        self.total = part.cost
        for members, border in zip(part.members, part.borders, strict=True):
            if len(members):
                ids = np.concatenate([members, border])
                self._triangle(torch.from_numpy(self.unit[ids]), ids, len(members))

    def _triangle(self, x: torch.Tensor, ids: np.ndarray, n_rows: int) -> None:
        """Every pair (p, q), p < q, of the rows ``x`` (row numbers ``ids``) whose p is one of the first
        ``n_rows``: a cluster's members with each other and with its border, in upper-triangle tiles."""
        for r0 in range(0, n_rows, TILE_ROWS):
            r1 = min(r0 + TILE_ROWS, n_rows)
            for c0 in range(r0, len(ids), TILE_COLS):
                self._tile(x[r0:r1], ids[r0:r1], x[c0 : c0 + TILE_COLS], ids[c0 : c0 + TILE_COLS], c0 == r0)

    def _tile(self, rows: torch.Tensor, row_ids: np.ndarray, cols: torch.Tensor, col_ids: np.ndarray,
              diagonal: bool) -> None:
        """Candidates of one tile; ``diagonal``: rows are the first columns (keep column > row only)."""
        if self.should_stop is not None and self.should_stop():
            raise InterruptedError("stopped while searching for duplicates")
        # The product is the one parallel operation per tile; the rest is numpy, single-threaded: many
        # small parallel operations stall when other processes keep the cores busy (thread barriers).
        sims = (rows @ cols.T).numpy()
        cut = np.float32(self.floor - self.margin)
        hit = np.flatnonzero(sims.max(1) >= cut)  # row maxima first: cheaper than searching the whole tile
        if diagonal:  # every row meets itself: search the whole tile, keep the pairs above the diagonal
            r, c = np.nonzero(sims >= cut)
            r, c = r[c > r], c[c > r]
        elif len(hit):
            block = sims[hit]
            r, c = np.nonzero(block >= cut)
            r = hit[r]
        if diagonal or len(hit):
            self._keep(row_ids[r], col_ids[c], sims[r, c])
        self.done += rows.shape[0] * cols.shape[0] - (rows.shape[0] * (rows.shape[0] + 1) // 2 if diagonal else 0)
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def _keep(self, a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> None:
        """Keep the candidates at or above the floor: a tile's value decides unless it is within the
        margin of the floor (or of 1, so exact copies score exactly 1), where the pair is computed again
        on its own, in float64."""
        i, j = np.minimum(a, b), np.maximum(a, b)
        near = np.flatnonzero((sims < self.floor + self.margin) | (sims > 1.0 - self.margin))
        if len(near):
            sims[near] = _cosine64(self.unit[i[near]], self.unit[j[near]], self.norms[i[near]], self.norms[j[near]])
        sims = np.minimum(sims, np.float32(1.0))
        ok = sims >= np.float32(self.floor)
        self.kept.append((i[ok], j[ok], sims[ok]))
        self.n_kept += int(ok.sum())
        if self.n_kept > 2 * self.max_pairs:
            self._cap()

    def _cap(self) -> None:
        """Keep the max_pairs most similar pairs; the floor rises just above the best one dropped."""
        i, j, sim = self._merged()
        if len(sim) > self.max_pairs:
            self.floor = float(np.nextafter(sim[self.max_pairs], np.float32(2)))
            keep = _count_at_least(sim, self.floor)  # sorted: the kept pairs are a prefix
            i, j, sim = i[:keep], j[:keep], sim[:keep]
        self.kept, self.n_kept = [(i, j, sim)], len(sim)

    def _merged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept pairs in one array each, most similar first (then by row numbers)."""
        if not self.kept:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        i, j, sim = (np.concatenate(parts) for parts in zip(*self.kept, strict=True))
        order = np.lexsort((j, i, -sim))
        return i[order].astype(np.int64), j[order].astype(np.int64), sim[order]

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._cap()
        return self.kept[0]


# ---- the kNN graph, outliers and likely mislabels ---------------------------------------------------
def knn_graph(features: np.ndarray, k: int = MISLABEL_K, progress: ProgressFn | None = None,
              should_stop: StopFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k nearest neighbours of every row, itself excluded: (indices int64 [N, k],
    similarities float32 [N, k]), most similar first. k is capped at N − 1.

    Each tile of the upper triangle serves its rows and, transposed, its columns (half the products
    of a plain search). Rows are ordered by k-means cluster first, so each row meets its neighbours in
    the first tiles; later tiles then fail a cheap row-maximum test and skip the costly top-k."""
    x = torch.from_numpy(np.ascontiguousarray(normalize_rows(features)))
    n = x.shape[0]
    k = max(0, min(k, n - 1))
    order = _cluster_order(x) if n > 2 * KNN_BLOCK else torch.arange(n)
    x = x[order]
    best_sim = torch.full((n, k), -torch.inf)
    best_idx = torch.zeros((n, k), dtype=torch.int64)
    blocks = range(0, n, KNN_BLOCK)
    total, done = len(blocks) * (len(blocks) + 1) // 2, 0
    for r0 in blocks if k else ():
        for c0 in range(r0, n, KNN_BLOCK):
            if should_stop is not None and should_stop():
                raise InterruptedError("stopped while finding neighbours")
            sims = x[r0 : r0 + KNN_BLOCK] @ x[c0 : c0 + KNN_BLOCK].T
            if c0 == r0:
                sims.fill_diagonal_(-torch.inf)
            _fold(best_sim, best_idx, r0, sims, c0)
            if c0 != r0:
                _fold(best_sim, best_idx, c0, sims.T, r0)
            done += 1
            if progress is not None:
                progress(done, total)
    indices, similarities = torch.empty_like(best_idx), torch.empty_like(best_sim)
    indices[order], similarities[order] = order[best_idx], best_sim  # back to the callers' row numbers
    return indices.numpy(), similarities.numpy()


def _cluster_order(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Row numbers sorted by nearest k-means centroid."""
    centroids = _kmeans(x, max(2, min(2048, int(math.sqrt(x.shape[0])))), seed)
    c2 = (centroids * centroids).sum(1).numpy()
    assign = np.concatenate([_squared_distances(x[s : s + TILE_COLS], centroids, c2).argmin(1)
                             for s in range(0, x.shape[0], TILE_COLS)])
    return torch.from_numpy(np.argsort(assign, kind="stable"))


def _fold(best_sim: torch.Tensor, best_idx: torch.Tensor, r0: int, sims: torch.Tensor, c0: int) -> None:
    """Fold a tile (rows r0.., columns c0..) into the running top k of its rows: only the rows whose
    tile maximum beats their current k-th best."""
    rows = torch.arange(r0, r0 + sims.shape[0])
    need = (sims.amax(1) > best_sim[rows, -1]).nonzero()[:, 0]
    if len(need) == 0:
        return
    rows = rows[need]
    top_sim, top_idx = sims[need].topk(min(best_sim.shape[1], sims.shape[1]), dim=1)
    both_sim = torch.cat([best_sim[rows], top_sim], 1)
    both_idx = torch.cat([best_idx[rows], top_idx + c0], 1)
    keep_sim, pos = both_sim.topk(best_sim.shape[1], dim=1)
    best_sim[rows], best_idx[rows] = keep_sim, both_idx.gather(1, pos)


Graph = tuple[np.ndarray, np.ndarray]  # knn_graph's (indices, similarities)


def _graph(features_or_graph: np.ndarray | Graph, k: int) -> Graph:
    if isinstance(features_or_graph, tuple):
        indices, sims = features_or_graph
        if indices.shape[1] < k and indices.shape[1] < indices.shape[0] - 1:
            raise ValueError(f"the graph has {indices.shape[1]} neighbours per row, {k} are needed")
        return indices[:, :k], sims[:, :k]
    return knn_graph(features_or_graph, k)


def outlier_scores(features_or_graph: np.ndarray | Graph, k: int = OUTLIER_K) -> np.ndarray:
    """How unusual each row is: 1 − its mean cosine similarity to its k nearest neighbours (float32 [N],
    in [0, 2]; higher = more unusual). A single row scores 0."""
    _, sims = _graph(features_or_graph, k)
    if sims.shape[1] == 0:
        return np.zeros(sims.shape[0], np.float32)
    return (1.0 - sims.mean(1)).astype(np.float32)


def outliers(features_or_graph: np.ndarray | Graph, count: int, k: int = OUTLIER_K) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` most unusual rows, most unusual first (ties by row): (rows int64, scores float32)."""
    scores = outlier_scores(features_or_graph, k)
    order = np.lexsort((np.arange(len(scores)), -scores))[: max(0, count)]
    return order.astype(np.int64), scores[order]


@dataclass(frozen=True)
class Mislabel:
    row: int
    label: int  # the folder's class
    vote: int  # the class its neighbours vote for
    confidence: float  # the vote's share of the neighbours' weight, in (0, 1]


@dataclass(frozen=True)
class ClassReport:
    """The leave-one-out kNN vote against the folder labels, over the labelled rows."""

    confusion: np.ndarray  # int64 [C, C]: row = folder label, column = vote
    k: int

    @property
    def accuracy(self) -> float:
        total = int(self.confusion.sum())
        return float(np.trace(self.confusion) / total) if total else float("nan")

    @property
    def per_class(self) -> np.ndarray:
        """float64 [C]: the share of each class's images whose vote is their folder's (NaN: no images)."""
        counts = self.confusion.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / counts


def knn_votes(graph: Graph, labels: np.ndarray, num_classes: int, k: int = MISLABEL_K,
              temperature: float = MISLABEL_TEMPERATURE) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out weighted kNN vote of every row, as ``evaluate.knn_predict`` (cosine, weight
    exp(sim/τ), ties to the lower class): (vote int64 [N], confidence float32 [N]). Unlabelled neighbours
    (−1) do not vote; a row none votes for gets vote −1, confidence 0."""
    indices, sims = graph[0][:, :k], graph[1][:, :k]
    labels = np.asarray(labels, dtype=np.int64)
    neighbour_labels = labels[indices] if indices.size else np.zeros(indices.shape, np.int64)
    weights = np.exp((sims.astype(np.float64) - 1.0) / temperature)  # shifted by 1: the same shares, no overflow
    weights = np.where(neighbour_labels >= 0, weights, 0.0)
    votes = np.zeros((len(labels), num_classes))
    np.add.at(votes, (np.repeat(np.arange(len(labels)), indices.shape[1]), neighbour_labels.clip(0).ravel()),
              weights.ravel())
    total = votes.sum(1)
    vote = np.where(total > 0, votes.argmax(1), -1)
    confidence = np.where(total > 0, votes.max(1) / np.where(total > 0, total, 1.0), 0.0)
    return vote.astype(np.int64), confidence.astype(np.float32)


def likely_mislabeled(graph: Graph, labels: np.ndarray, num_classes: int, k: int = MISLABEL_K,
                      min_confidence: float = MISLABEL_MIN_CONFIDENCE) -> tuple[list[Mislabel], ClassReport]:
    """Labelled rows whose neighbours' vote names another class with at least ``min_confidence`` of the
    vote, most confident first; and the vote's per-class report (all labelled rows)."""
    labels = np.asarray(labels, dtype=np.int64)
    vote, confidence = knn_votes(graph, labels, num_classes, k)
    judged = (labels >= 0) & (vote >= 0)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels[judged], vote[judged]), 1)
    wrong = np.flatnonzero(judged & (vote != labels) & (confidence >= min_confidence))
    wrong = wrong[np.lexsort((wrong, -confidence[wrong]))]
    found = [Mislabel(int(r), int(labels[r]), int(vote[r]), float(confidence[r])) for r in wrong]
    return found, ClassReport(confusion, min(k, graph[0].shape[1]))


# ---- the findings report ------------------------------------------------------------------------------
FINDINGS_COLUMNS = ("kind", "group", "path", "score")


@dataclass(frozen=True)
class Finding:
    """One row of the report. kind "duplicate": ``group`` numbers the group ("1", "2", ...; largest
    first), score = similarity to the group's first image (its reference, score 1); "outlier": group =
    rank ("1" = most unusual), score = outlier score (higher = more unusual); "mislabel": group =
    "folder label→vote", score = the vote's confidence."""

    kind: str
    group: str
    path: str
    score: float


def duplicate_findings(groups: Sequence[DuplicateGroup], paths: Sequence[str]) -> list[Finding]:
    return [Finding("duplicate", str(g), paths[row], score)
            for g, group in enumerate(groups, 1) for row, score in zip(group.rows, group.scores, strict=True)]


def outlier_findings(rows: np.ndarray, scores: np.ndarray, paths: Sequence[str]) -> list[Finding]:
    return [Finding("outlier", str(rank), paths[row], float(s))
            for rank, (row, s) in enumerate(zip(rows, scores, strict=True), 1)]


def mislabel_findings(found: Sequence[Mislabel], paths: Sequence[str], classes: Sequence[str]) -> list[Finding]:
    return [Finding("mislabel", f"{classes[m.label]}→{classes[m.vote]}", paths[m.row], m.confidence) for m in found]


def write_findings_csv(path: str | Path, findings: Sequence[Finding], overwrite: bool = False) -> Path:
    """The findings as CSV (columns FINDINGS_COLUMNS; CRLF lines and ``export.csv_cell`` cells, as the
    embeddings CSV). An existing file is kept unless ``overwrite`` (FileExistsError, one line)."""
    from simclr_studio.atomic import atomic_write_text
    from simclr_studio.export import csv_cell

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: choose another file, or overwrite it")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(FINDINGS_COLUMNS)
    for f in findings:
        writer.writerow([f.kind, csv_cell(f.group), csv_cell(str(f.path)), f"{f.score:.6f}"])
    atomic_write_text(path, buf.getvalue())
    return path
