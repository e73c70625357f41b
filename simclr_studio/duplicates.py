"""Near-duplicate search: every pair of rows whose cosine similarity reaches a floor, exact, and the
groups those pairs form at any threshold above it.

A pair's similarity is the cosine of the encoder's features, or, given pixel signatures
(``signatures.py``), the higher of that and the cosine of the signatures: features group what the
encoder sees as the same, signatures the near-exact copies (re-encoded, resized) a briefly trained
encoder does not tell from look-alikes (see DEFAULT_DUPLICATE_THRESHOLD). Each is searched on its own.

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

from simclr_studio.neighbours import normalize_rows
from simclr_studio.pair_search import cap_pairs, cosine64, count_at_least, search_pairs, squared_norms64

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

DUPLICATE_FLOOR = 0.90
"""The lowest threshold pairs are searched at: the duplicate slider's minimum (raised for a folder with
too many similar pairs, see MAX_DUPLICATE_PAIRS)."""

DEFAULT_DUPLICATE_THRESHOLD = 0.999
"""Images at least this similar (the higher of the feature and pixel-signature cosines) are grouped by
default: the lowest threshold at which distinct images are rarely grouped. Measured by
benchmarks/duplicates.py (results/duplicates.json; encoders trained 4 CPU-minutes by the default
recipe, images they never saw; copies of 500 of them), share found / grouped at 0.999:

                                   Fashion-MNIST (10,000)       emoji (1,517, 32 px colour)
                                   features   with signatures   features   with signatures
    exact copies                   1.00       1.00              1.00       1.00
    JPEG quality 75 / 50           0.58/0.28  1.00/0.96         0.27/0.14  0.75/0.44
    resized to 75 % / 200 %        0.00/0.03  0.98/1.00         0.35/0.92  1.00/1.00
    cropped to 95 % / 90 %         0.00/0.00  0.00/0.00         0.01/0.00  0.01/0.00
    distinct images grouped        0.024      0.024             0.011      0.018

Crops are not found at any threshold that keeps distinct images apart: the encoder is trained to
ignore them, and on these small centred images a 5 % crop moves the layout more than a look-alike
differs. Lower the threshold (the app's slider, ``curate --duplicates``) to find more."""

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
        """The similarity of each row to its group's reference: the pairs' own measure, the higher of the
        channels' cosines (computed in float64 a chunk at a time, as the search verifies pairs)."""
        scores = np.full(len(rows), -1.0, np.float32)
        for start in range(0, len(rows), chunk):
            part = slice(start, start + chunk)
            for unit in self.units:
                a, b = unit[rows[part]], unit[firsts[part]]
                scores[part] = np.maximum(scores[part], cosine64(a, b, squared_norms64(a), squared_norms64(b)))
        return scores


def duplicate_pairs(features: np.ndarray, floor: float = DUPLICATE_FLOOR, progress: ProgressFn | None = None,
                    should_stop: StopFn | None = None, max_pairs: int = MAX_DUPLICATE_PAIRS,
                    signatures: np.ndarray | None = None) -> DuplicatePairs:
    """Every pair of rows whose cosine similarity is ≥ ``floor``, exact (see MAX_DUPLICATE_PAIRS for the cap).
    With ``signatures`` (one row per feature row), a pair's similarity is the higher of the two cosines."""
    if not 0.01 <= floor <= 1.0:
        raise ValueError(f"the duplicate floor must be between 0.01 and 1, got {floor}")
    channels = [features] if signatures is None else [features, signatures]
    if signatures is not None and len(signatures) != len(features):
        raise ValueError(f"{len(signatures)} signatures for {len(features)} feature rows")
    found = []
    for c, vectors in enumerate(channels):
        part = None if progress is None else _part_of(progress, c, len(channels))
        found.append(search_pairs(np.ascontiguousarray(normalize_rows(vectors)), floor, part, should_stop,
                                   max_pairs))
    i, j, sim, floor = found[0][1:] if len(found) == 1 else _merge(found, max_pairs)
    pairs = DuplicatePairs(i, j, sim, floor, len(features), tuple(unit for unit, *_ in found))
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
                    max_pairs: int = MAX_DUPLICATE_PAIRS, signatures: np.ndarray | None = None) -> list[DuplicateGroup]:
    """Groups of near-duplicate rows at ``threshold`` (searched at that threshold: no slider)."""
    pairs = duplicate_pairs(features, threshold, progress, should_stop, max_pairs, signatures)
    return pairs.groups(max(threshold, pairs.floor))
