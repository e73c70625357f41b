"""Near-duplicate search: every pair of rows whose similarity reaches a floor, and the groups those
pairs form at any threshold above it.

A pair's similarity is the cosine of the encoder's features, or, given grey thumbnails
(``signatures.py``), the highest of that, the cosine of their pixel signatures and, given each row's
nearest neighbours by features, their crop similarity (``crops.py``, from ``CROP_FLOOR`` up): features
group what the encoder sees as the same, signatures the near-exact copies (re-encoded, resized) a
briefly trained encoder does not tell from look-alikes, crops the cropped copies neither finds (see
DEFAULT_DUPLICATE_THRESHOLD). Each is searched on its own: features and signatures over all pairs,
crops among each row's ``CROP_NEIGHBOURS`` nearest.

Pairs are searched once at ``DUPLICATE_FLOOR`` (``duplicate_pairs``, exact, in bounded memory: see
``pair_search``); they then group at any threshold above it without searching again
(``DuplicatePairs.groups``), so a slider can move live. ``progress(done, total)`` and ``should_stop()``
follow the engine's convention: when ``should_stop()`` holds, InterruptedError is raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from simclr_studio import crops
from simclr_studio.neighbours import normalize_rows
from simclr_studio.pair_search import cap_pairs, cosine64, count_at_least, search_pairs, squared_norms64
from simclr_studio.signatures import thumbnail_signatures

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

DUPLICATE_FLOOR = 0.90
"""The lowest threshold pairs are searched at: the duplicate slider's minimum (raised for a folder with
too many similar pairs, see MAX_DUPLICATE_PAIRS)."""

DEFAULT_DUPLICATE_THRESHOLD = 0.999
"""Images at least this similar (the highest of the feature, pixel-signature and crop similarities) are
grouped by default: the lowest threshold at which distinct images are rarely grouped. Measured by
benchmarks/duplicates.py (results/duplicates.json; encoders trained 4 CPU-minutes by the default
recipe, images they never saw; copies of 500 of them), share found / grouped at 0.999:

                                   Fashion-MNIST (10,000)              emoji (1,517, 32 px colour)
                                   features  + signatures  + crops     features  + signatures  + crops
    exact copies                   1.00      1.00          1.00        1.00      1.00          1.00
    JPEG quality 75 / 50           0.58/0.28 1.00/0.96     1.00/0.96   0.27/0.14 0.75/0.44     0.76/0.46
    resized to 75 % / 200 %        0.00/0.03 0.98/1.00     0.99/1.00   0.35/0.92 1.00/1.00     1.00/1.00
    cropped to 95 % (centre)       0.00      0.00          0.93        0.01      0.01          1.00
    cropped to 90 % (centre/corner) 0.00/0.00 0.00/0.00    0.74/0.73   0.00/0.01 0.00/0.01     1.00/1.00
    distinct images grouped        0.024     0.024         0.024       0.011     0.018         0.018

Crops are found by crop similarity (``crops.py``) only: the encoder is trained to ignore them, and on
these small centred images a 5 % crop moves the whole layout more than a look-alike differs. Of the
Fashion-MNIST 90 % crops (centre / corner), 8 % / 15 % are missed because neither the copy nor its
original is among the other's 20 nearest by features, and 19 % / 13 % because their best box scores
under 0.999 (a 25-pixel crop of a 28-pixel image, resampled twice, loses detail). Lower the threshold
(the app's slider, ``curate --duplicates``) to find more."""

CROP_NEIGHBOURS = 20
"""Crop similarity is measured between each row and its this many nearest rows by features (and back),
the kNN graph that outliers and mislabels use too. benchmarks/duplicates.py (``crop_candidates``): with
the 4-CPU-minute encoder, a Fashion-MNIST copy cropped to 95 % / 90 % (centre) / 90 % (corner) or its
original is among the other's 20 nearest for 94 % / 92 % / 85 % of them."""

CROP_FLOOR = 0.99
"""Crop pairs less similar than this are not kept: below it, a box of one image matches many look-alikes."""

MAX_DUPLICATE_PAIRS = 2_000_000
"""At most this many pairs are kept (20 bytes each). When more pairs reach the floor, the floor is
raised: first where a sample of the rows says about half this many pairs would reach it, then, if the
search still finds more, just above the most similar pair it drops. ``DuplicatePairs.floor`` is the
floor actually searched (the slider's minimum), and every pair at or above it is kept: still exact,
over a narrower range."""
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
    units: tuple[np.ndarray, ...] = field(repr=False, compare=False)  # normalised features (and signatures)
    # When crops were searched: the thumbnails and their normalised signatures (crop similarity's inputs).
    crop_inputs: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

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
        edges = count_at_least(self._forest[2], threshold)
        return count_at_least(self._touched, threshold) - edges

    def groups(self, threshold: float) -> list[DuplicateGroup]:
        """Connected components of the pairs ≥ ``threshold`` (at least two rows each), largest first."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        self._check(threshold)
        u, v, sim = self._forest
        m = count_at_least(sim, threshold)
        if m == 0:
            return []
        graph = coo_matrix((np.ones(m, np.int8), (u[:m], v[:m])), shape=(self.n, self.n))
        _, component = connected_components(graph, directed=False)
        rows = np.unique(np.concatenate([u[:m], v[:m]]))
        rows = rows[np.argsort(component[rows], kind="stable")]  # by component, then by row number
        starts = np.flatnonzero(np.r_[True, np.diff(component[rows]) != 0])
        sizes = np.diff(np.r_[starts, len(rows)])
        firsts = np.repeat(rows[starts], sizes)  # each group's reference: its lowest row
        scores = self._scores(rows, firsts)
        is_first = rows == firsts
        scores[is_first] = 1.0
        # Within each group: the reference, then by similarity to it, descending (then by row).
        order = np.lexsort((rows, -scores, ~is_first, np.repeat(np.arange(len(starts)), sizes)))
        rows, scores = rows[order], scores[order]
        found = [DuplicateGroup(tuple(r.tolist()), tuple(s.tolist()))
                 for r, s in zip(np.split(rows, starts[1:]), np.split(scores, starts[1:]), strict=True)]
        return sorted(found, key=lambda g: (-len(g.rows), g.rows[0]))

    def _scores(self, rows: np.ndarray, firsts: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """The similarity of each row to its group's reference: the pairs' own measure, the highest of the
        channels' (cosines computed in float64 a chunk at a time, as the search verifies pairs)."""
        scores = np.full(len(rows), -1.0, np.float32)
        for start in range(0, len(rows), chunk):
            part = slice(start, start + chunk)
            for unit in self.units:
                a, b = unit[rows[part]], unit[firsts[part]]
                scores[part] = np.maximum(scores[part], cosine64(a, b, squared_norms64(a), squared_norms64(b)))
        if self.crop_inputs is not None and len(rows):
            thumbnails, signatures = self.crop_inputs
            crop = crops.pair_crop_similarity(thumbnails, rows, firsts, signatures)
            scores = np.maximum(scores, np.where(crop >= np.float32(CROP_FLOOR), crop, -1.0).astype(np.float32))
        return scores


def duplicate_pairs(features: np.ndarray, floor: float = DUPLICATE_FLOOR, progress: ProgressFn | None = None,
                    should_stop: StopFn | None = None, max_pairs: int = MAX_DUPLICATE_PAIRS,
                    thumbnails: np.ndarray | None = None, neighbours: np.ndarray | None = None) -> DuplicatePairs:
    """Every pair of rows whose similarity is ≥ ``floor`` (see MAX_DUPLICATE_PAIRS for the cap): the
    features' cosine; with ``thumbnails`` (uint8 [N, SIDE, SIDE], one per row) the higher of that and
    the signatures'; with ``neighbours`` too (int64 [N, ≥ k]: each row's nearest by features, e.g.
    ``curate.knn_graph``), crop similarity among them as well."""
    if not 0.01 <= floor <= 1.0:
        raise ValueError(f"the duplicate floor must be between 0.01 and 1, got {floor}")
    for name, rows in (("thumbnails", thumbnails), ("neighbour lists", neighbours)):
        if rows is not None and len(rows) != len(features):
            raise ValueError(f"{len(rows)} {name} for {len(features)} feature rows")
    if neighbours is not None and thumbnails is None:
        raise ValueError("crops are searched with thumbnails: none were given")
    channels = [features] if thumbnails is None else [features, thumbnail_signatures(thumbnails)]
    parts = len(channels) + (neighbours is not None)
    found = []
    for c, vectors in enumerate(channels):
        part = None if progress is None else _part_of(progress, c, parts)
        found.append(search_pairs(np.ascontiguousarray(normalize_rows(vectors)), floor, part, should_stop,
                                   max_pairs))
    if neighbours is not None and thumbnails is not None:
        part = None if progress is None else _part_of(progress, parts - 1, parts)
        i, j, sim = crops.crop_pairs(thumbnails, neighbours[:, :CROP_NEIGHBOURS], max(floor, CROP_FLOOR), part,
                                     should_stop, whole=channels[1])
        found.append((channels[1], i, j, sim, floor))
    i, j, sim, floor = found[0][1:] if len(found) == 1 else _merge(found, max_pairs)
    units = tuple(unit for unit, *_ in found[:len(channels)])
    crop_inputs = None if neighbours is None or thumbnails is None else (thumbnails, units[1])
    pairs = DuplicatePairs(i, j, sim, floor, len(features), units, crop_inputs)
    pairs.count(pairs.floor)  # builds the forest here, in the search's thread: a slider's first count is instant
    return pairs


def _part_of(progress: ProgressFn, part: int, parts: int) -> ProgressFn:
    """Progress of one of ``parts`` searches, as a share of all of them (in thousandths)."""
    return lambda done, total: progress(part * 1000 + (1000 * done // total if total else 1000), parts * 1000)

def _merge(found: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]],
           max_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One list of pairs from each channel's: a pair found by both keeps its higher similarity. The floor
    is the highest one reached (below it a capped channel's pairs are incomplete); the cap applies again."""
    floor = max(f for *_, f in found)
    n = max(len(unit) for unit, *_ in found)
    i = np.concatenate([c[1] for c in found])
    j = np.concatenate([c[2] for c in found])
    sim = np.concatenate([c[3] for c in found])
    keep = sim >= np.float32(floor)
    i, j, sim = i[keep], j[keep], sim[keep]
    order = np.lexsort((-sim, j, i))  # by pair, the most similar first: np.unique keeps that one
    key = i[order] * n + j[order]
    _, first = np.unique(key, return_index=True)
    pick = order[first]
    i, j, sim = i[pick], j[pick], sim[pick]
    order = np.lexsort((j, i, -sim))
    i, j, sim, raised = cap_pairs(i[order], j[order], sim[order], max_pairs)
    return i, j, sim, floor if raised is None else raised


def near_duplicates(features: np.ndarray, threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
                    progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                    max_pairs: int = MAX_DUPLICATE_PAIRS, thumbnails: np.ndarray | None = None,
                    neighbours: np.ndarray | None = None) -> list[DuplicateGroup]:
    """Groups of near-duplicate rows at ``threshold`` (searched at that threshold: no slider)."""
    pairs = duplicate_pairs(features, threshold, progress, should_stop, max_pairs, thumbnails, neighbours)
    return pairs.groups(max(threshold, pairs.floor))
