"""Curation findings from the features of an embedded folder: outliers and likely mislabeled images
(from the kNN graph), near-duplicate groups (searched by ``duplicates``), and the CSV report that
lists them all.

Everything uses cosine similarity of the features (rows L2-normalised once, as ``neighbours`` does) and
is exact; similarities are computed tile by tile, never as an N × N matrix. ``progress(done, total)``
and ``should_stop()`` follow the engine's convention: when ``should_stop()`` holds, InterruptedError is raised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simclr_studio.duplicates import CROP_NEIGHBOURS, DuplicateGroup
from simclr_studio.neighbours import normalize_rows
from simclr_studio.pair_search import TILE_COLS, kmeans, squared_distances

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

KNN_BLOCK = 2048  # the kNN graph's tiles are KNN_BLOCK × KNN_BLOCK
OUTLIER_K = 10
MISLABEL_K = 20
GRAPH_K = max(OUTLIER_K, MISLABEL_K, CROP_NEIGHBOURS)  # one kNN graph serves outliers, mislabels and crops
MISLABEL_TEMPERATURE = 0.1  # evaluate.knn_predict's weighting: exp(similarity / τ)
MISLABEL_MIN_CONFIDENCE = 0.5  # the weighted vote's majority names another class than the folder's


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
    centroids = kmeans(x, max(2, min(2048, int(math.sqrt(x.shape[0])))), seed)
    c2 = (centroids * centroids).sum(1).numpy()
    assign = np.concatenate([squared_distances(x[s : s + TILE_COLS], centroids, c2).argmin(1)
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
    """The findings as CSV (columns FINDINGS_COLUMNS, ``export.write_csv``'s format): an existing file is
    kept unless ``overwrite`` (FileExistsError, one line)."""
    from simclr_studio.export import csv_cell, write_csv

    rows = ([f.kind, csv_cell(f.group), csv_cell(str(f.path)), f"{f.score:.6f}"] for f in findings)
    return write_csv(path, FINDINGS_COLUMNS, rows, overwrite)
