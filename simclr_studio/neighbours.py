"""Nearest neighbours in feature space: cosine similarity, exact, brute force.

Features are L2-normalised once; a query is one matrix-vector product plus a partial sort, which
answers in milliseconds at 100,000 images on a CPU and needs no index to build or tune.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def normalize_rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


@dataclass
class Neighbours:
    indices: np.ndarray  # [k] row numbers, most similar first
    similarities: np.ndarray  # [k] cosine similarities in [-1, 1]


class NeighbourIndex:
    def __init__(self, features: np.ndarray):
        self.unit = np.ascontiguousarray(normalize_rows(features))

    def __len__(self) -> int:
        return self.unit.shape[0]

    def query_vector(self, vector: np.ndarray, k: int = 12, exclude: int | None = None) -> Neighbours:
        """The k rows most similar to ``vector`` (any length-D feature).

        ``exclude`` drops one row (the query itself)."""
        q = normalize_rows(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        if q.shape[0] != self.unit.shape[1]:
            raise ValueError(f"query has {q.shape[0]} features, the index {self.unit.shape[1]}")
        sims = self.unit @ q
        if exclude is not None:
            sims[exclude] = -np.inf
        n_valid = len(sims) - (1 if exclude is not None else 0)
        k = max(0, min(k, n_valid))
        if k == 0:
            return Neighbours(np.zeros(0, np.int64), np.zeros(0, np.float32))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        # Ties broken by row number, so results are reproducible and comparable to a plain sort.
        order = np.lexsort((top, -sims[top]))
        top = top[order][:k]
        return Neighbours(top.astype(np.int64), sims[top].astype(np.float32))

    def query_row(self, row: int, k: int = 12) -> Neighbours:
        """Neighbours of an indexed image, itself excluded."""
        return self.query_vector(self.unit[row], k, exclude=row)
