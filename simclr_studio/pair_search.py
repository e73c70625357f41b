"""Every pair of unit vectors whose cosine similarity reaches a floor, exactly, in bounded memory: the
search behind ``duplicates``.

The vectors are partitioned with k-means and each cluster is compared with itself and with the "border"
points of other clusters that could be within reach (see ``_Partition``); when the borders make that no
cheaper (e.g. uniform random vectors) every pair is compared, tile by tile (at most ``TILE_ROWS`` ×
``TILE_COLS`` similarities at a time), never as an N × N matrix. Pairs near the floor (or 1) are
computed again in float64, so the result does not depend on how tiles were cut.

Wide vectors (more than 2 × ``FIRST_STAGE_DIMS``) are searched in two stages (see ``_project``): the
tiles and the partition use their first principal coordinates plus the norm of the rest, which bound
every similarity from above, and only the candidates this leaves are measured in full.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

TILE_ROWS, TILE_COLS = 1024, 4096  # the largest similarity tile computed (16 MB of float32)
_PARTITION_MIN_ROWS = 8192  # below this, all pairs are cheap
_PARTITION_MAX_COST = 0.6  # use the partition only when it computes at most this share of all pairs
# The first stage's principal coordinates. On 100k × 512 crowded features (benchmarks/explore.py's
# duplicates) 160 leave ~4 candidates per pair found and the search takes 12.0 s (128: 13.6 s, 192:
# 13.0 s; one stage: 21–28 s): fewer coordinates cost more candidates to measure, more cost more products.
FIRST_STAGE_DIMS = 160
_PROJECT_MIN_ROWS = 8192  # below this, the rotation costs more than it saves
_MEASURE_CHUNK = 1024  # candidates measured at a time: their rows stay in cache (~3× faster than 65536)

def _margin(dim: int) -> float:
    """Slack for the float32 rounding of a dot product of unit vectors (a tile's similarities, centroid
    distances): a bound of D · 2⁻²² is far above the typical error, so no pair is lost."""
    return max(1e-4, dim * 2.0**-22)


def count_at_least(descending: np.ndarray, threshold: float) -> int:
    return int(np.searchsorted(-descending, -np.float32(threshold), side="right"))


def cap_pairs(i: np.ndarray, j: np.ndarray, sim: np.ndarray,
              max_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """The max_pairs most similar of pairs sorted most similar first, and the floor raised just above the
    best one dropped (None when nothing is dropped). Pairs tied with a dropped one go too, so the kept
    ones are exactly those at or above the floor."""
    if len(sim) <= max_pairs:
        return i, j, sim, None
    floor = float(np.nextafter(sim[max_pairs], np.float32(2)))
    keep = count_at_least(sim, floor)  # sorted: the kept pairs are a prefix
    return i[:keep], j[:keep], sim[:keep], floor


def squared_norms64(unit: np.ndarray) -> np.ndarray:
    """Each row's squared norm, accumulated in float64 (a chunk of rows at a time)."""
    chunks = (unit[s : s + 8192].astype(np.float64) for s in range(0, len(unit), 8192))
    return np.concatenate([np.einsum("ij,ij->i", c, c) for c in chunks] or [np.zeros(0)])


def cosine64(a: np.ndarray, b: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """Cosine similarity of float32 rows, accumulated in float64 (``aa``, ``bb``: their squared norms
    from ``_squared_norms64``): the same value whichever tile found the pair (BLAS tiles round
    differently by shape), exactly 1 for identical rows; float32 out."""
    dots = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    scale = np.sqrt(aa * bb)
    return np.clip(np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0), -1.0, 1.0).astype(np.float32)

def _project(unit: np.ndarray, dims: int, sample: int = 20_000, seed: int = 0) -> np.ndarray:
    """The rows' first ``dims`` coordinates on the principal axes of a sample's second moments (not
    centred: cosine is measured from the origin), then the norm of the rest. For rows x, y (x_p, x_r:
    their coordinates on the first axes and on the others), first_x · first_y = x_p · y_p + |x_r| |y_r|
    ≥ x · y (Cauchy–Schwarz), |first_x| = |x| and |first_x − first_y| ≤ |x − y|: the tiles'
    candidates and the partition's borders found on them lose no pair. Rotated in float64."""
    n = len(unit)
    pick = np.random.default_rng(seed).permutation(n)[:sample]
    sample_rows = torch.from_numpy(unit[pick]).double()
    axes = torch.linalg.eigh(sample_rows.T @ sample_rows)[1].flip(1)[:, :dims]  # largest second moment first
    first = np.empty((n, dims + 1), np.float32)
    for s in range(0, n, 8192):
        rows = torch.from_numpy(unit[s : s + 8192]).double()
        head = rows @ axes
        rest = (rows * rows).sum(1) - (head * head).sum(1)
        first[s : s + 8192, :dims] = head.numpy()
        first[s : s + 8192, dims] = rest.clamp_min(0).sqrt().numpy()
    return first


def search_pairs(unit: np.ndarray, floor: float, progress: ProgressFn | None, should_stop: StopFn | None,
                  max_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """(the unit rows, i, j, similarity, the floor reached) of one set of vectors."""
    floor = _starting_floor(torch.from_numpy(unit), floor, max_pairs)
    search = _PairSearch(unit, floor, max_pairs, progress, should_stop)
    partition = _Partition.fit(search.x, floor) if len(unit) >= _PARTITION_MIN_ROWS else None
    if partition is None:
        search.all_pairs()
    else:
        search.by_cluster(partition)
    i, j, sim = search.pairs()
    return unit, i, j, sim, search.floor

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
        centroids = kmeans(x, max(2, min(2048, int(math.sqrt(n)))), seed)
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
            d2 = squared_distances(x[s : s + TILE_COLS], centroids, c2)
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
        pairs = pairs[np.argsort(pairs[:, 0].astype(np.int16), kind="stable")]  # int16: a radix sort (k ≤ 2048)
        cuts = np.searchsorted(pairs[:, 0], np.arange(c + 1))
        order = np.argsort(assign.numpy().astype(np.int16), kind="stable")
        starts = np.r_[0, np.cumsum(sizes.numpy())]
        return cls([order[starts[a] : starts[a + 1]] for a in range(c)],
                   [pairs[cuts[a] : cuts[a + 1], 1].astype(np.int64) for a in range(c)], cost)


def squared_distances(x: torch.Tensor, centroids: torch.Tensor, c2: np.ndarray) -> np.ndarray:
    """|x − c|² of every row and centroid: one product, the rest in numpy (see _PairSearch._tile)."""
    d2 = (x @ centroids.T).numpy()
    d2 *= -2
    rows = x.numpy()
    d2 += np.einsum("ij,ij->i", rows, rows)[:, None] + c2[None, :]
    return np.maximum(d2, 0, out=d2)


def kmeans(x: torch.Tensor, k: int, seed: int, steps: int = 6) -> torch.Tensor:
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
        self.unit, self.norms = unit, squared_norms64(unit)
        self.first, self.bounds = unit, False  # what the tiles multiply; whether they give bounds
        if unit.shape[1] > 2 * FIRST_STAGE_DIMS and len(unit) >= _PROJECT_MIN_ROWS:
            self.first, self.bounds = _project(unit, FIRST_STAGE_DIMS), True
        self.x = torch.from_numpy(self.first)
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
                self._triangle(self.x.index_select(0, torch.from_numpy(ids)), ids, len(members))

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
        # One flat search: numpy's 2-D nonzero costs ~6× more per entry than flatnonzero and a divmod.
        r, c = np.divmod(np.flatnonzero(sims >= np.float32(self.floor - self.margin)), sims.shape[1])
        if diagonal:  # every row meets itself: keep the pairs above the diagonal
            r, c = r[c > r], c[c > r]
        if len(r):
            self._keep(row_ids[r], col_ids[c], sims[r, c])
        self.done += rows.shape[0] * cols.shape[0] - (rows.shape[0] * (rows.shape[0] + 1) // 2 if diagonal else 0)
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def _keep(self, a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> None:
        """Keep the candidates at or above the floor. From tiles of bounds each candidate is measured
        first (most fall well below the floor). A float32 value decides unless it is within the margin
        of the floor (or of 1, so exact copies score exactly 1): then the pair is computed again on its
        own, in float64."""
        i, j = np.minimum(a, b), np.maximum(a, b)
        if self.bounds:
            sims = self._measure(i, j)
        else:
            self._settle(i, j, sims)
        sims = np.minimum(sims, np.float32(1.0))
        ok = sims >= np.float32(self.floor)
        self.kept.append((i[ok], j[ok], sims[ok]))
        self.n_kept += int(ok.sum())
        if self.n_kept > 2 * self.max_pairs:
            self._cap()

    def _measure(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The similarities of candidate pairs, a few rows at a time (they stay in cache)."""
        sims = np.empty(len(i), np.float32)
        for s in range(0, len(i), _MEASURE_CHUNK):
            part = slice(s, s + _MEASURE_CHUNK)
            a, b = self.unit[i[part]], self.unit[j[part]]
            sims[part] = np.einsum("ij,ij->i", a, b)
            self._settle(i[part], j[part], sims[part], a, b)
        return sims

    def _settle(self, i: np.ndarray, j: np.ndarray, sims: np.ndarray, a: np.ndarray | None = None,
                b: np.ndarray | None = None) -> None:
        """Compute again in float64, in place, the similarities within the margin of the floor or of 1
        (``a``, ``b``: the pairs' rows when already gathered)."""
        near = np.flatnonzero((sims < self.floor + self.margin) & (sims >= self.floor - self.margin)
                              | (sims > 1.0 - self.margin))
        if len(near):
            i, j = i[near], j[near]
            a, b = (self.unit[i], self.unit[j]) if a is None or b is None else (a[near], b[near])
            sims[near] = cosine64(a, b, self.norms[i], self.norms[j])

    def _cap(self) -> None:
        """Keep the max_pairs most similar pairs; the floor rises just above the best one dropped."""
        i, j, sim, raised = cap_pairs(*self._merged(), self.max_pairs)
        self.floor = self.floor if raised is None else raised
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
