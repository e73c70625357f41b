"""The values an ExploreSession hands out and takes back: what is embedded (Sources), the embedding
(Embedded) and what is computed from it (Projection, Clusters, Measured), what the results list
shows (Results) and the selection (Selection). Each names what it was computed from, so a result
that arrives after the session moved on is recognised and dropped."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from simclr_studio.data import ScanResult
from simclr_studio.embeddings import Embeddings
from simclr_studio.neighbours import NeighbourIndex, Neighbours
from simclr_studio.session.quality import Quality
from simclr_studio.trained import TrainedModel

MapKind = Literal["pca", "tsne"]
ResultKind = Literal["neighbours", "search", "selection"]


@dataclass(frozen=True, eq=False)
class Sources:
    """What is embedded: a checkpoint of a run folder, and a scanned folder of images. A new value
    (a new object) whenever they change: results name the sources they were computed from."""

    run_dir: Path | None = None
    checkpoint: Path | None = None
    scan: ScanResult | None = None

    def can_embed(self) -> bool:
        return self.run_dir is not None and self.checkpoint is not None and self.scan is not None and len(self.scan) > 0


@dataclass(frozen=True, eq=False)
class Embedded:
    """The sources' images embedded by their checkpoint, with the index their neighbours come from."""

    sources: Sources
    trained: TrainedModel
    embeddings: Embeddings
    cache_file: Path
    from_cache: bool
    index: NeighbourIndex

    def summary(self) -> str:
        emb = self.embeddings
        skipped = f", {len(emb.skipped)} could not be decoded" if emb.skipped else ""
        fallback = f" ({self.trained.note})" if self.trained.note else ""  # last.pt did not load
        return (f"{len(emb):,} images · {emb.features.shape[1]} features · {Path(emb.checkpoint).name}"
                + (" (from cache)" if self.from_cache else "") + skipped + fallback)


@dataclass(frozen=True, eq=False)
class Projection:
    of: Embedded
    kind: MapKind
    coords: np.ndarray  # float32 [N, 2]


@dataclass(frozen=True, eq=False)
class Clusters:
    of: Embedded
    labels: np.ndarray  # int64 [N], cluster of each image


@dataclass(frozen=True, eq=False)
class Measured:
    of: Embedded
    quality: Quality


@dataclass(frozen=True, eq=False)
class Results:
    """What the results list shows: neighbours of an image of the folder, of a searched image file,
    or the images of a selection."""

    kind: ResultKind
    rows: tuple[int, ...]
    similarities: tuple[float, ...] = ()  # cosine similarity of each row to the query (not for a selection)
    focus: int | None = None  # the image whose neighbours these are
    query: str | None = None  # the image file searched with
    of: Embedded | None = None
    how: str = ""  # how a selection was made: "rectangle", "lasso", "filter", "duplicates", "outliers", …

    @classmethod
    def found(cls, kind: ResultKind, neighbours: Neighbours, of: Embedded, focus: int | None = None,
              query: str | None = None) -> Results:
        return cls(kind, tuple(int(r) for r in neighbours.indices),
                   tuple(float(s) for s in neighbours.similarities), focus, query, of)


@dataclass(frozen=True)
class Selection:
    """Images picked on the map (a rectangle, a lasso): rows of the embeddings, ascending, no repeats."""

    rows: tuple[int, ...] = ()

    @classmethod
    def of(cls, rows: Iterable[int]) -> Selection:
        return cls(tuple(sorted({int(r) for r in rows})))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[int]:
        return iter(self.rows)

    def __contains__(self, row: object) -> bool:
        return row in self.rows

    def paths(self, embeddings: Embeddings) -> list[str]:
        return [embeddings.paths[r] for r in self.rows]


class ResultsHistory:
    """What was shown, in order, for Back and Forward (a browser's history): showing something new
    drops what was ahead. Bounded: the oldest entries go first."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._entries: list[Results] = []
        self._at = -1

    def push(self, results: Results) -> None:
        del self._entries[self._at + 1:]
        self._entries.append(results)
        del self._entries[:-self.limit]
        self._at = len(self._entries) - 1

    def can_go(self, step: int) -> bool:
        return 0 <= self._at + step < len(self._entries)

    def go(self, step: int) -> Results | None:
        """The entry ``step`` places away (-1: back, +1: forward), which becomes the current one."""
        if not self.can_go(step):
            return None
        self._at += step
        return self._entries[self._at]

    def clear(self) -> None:
        self._entries, self._at = [], -1
