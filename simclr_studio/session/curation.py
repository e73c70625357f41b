"""Curating the embedded folder, without Qt: near-duplicate groups, outliers and likely mislabeled images
found from an ``ExploreSession``'s embeddings, and what a selection can become (saved with the run,
exported as CSV, copied into a folder, tagged).

As in ``ExploreSession``, slow operations (``find_*``, ``copy``) read and return values naming the
embeddings they came from; ``apply_*`` keeps them on the caller's thread unless the session moved on.
The user's folder is never changed here: copies only (moving needs ``confirmed=True``, which the app
sets only after a dialog that lists the files).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simclr_studio import curate, duplicates, selections
from simclr_studio.session.explore_values import Embedded

if TYPE_CHECKING:
    from simclr_studio.session.explore import ExploreSession

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]
OUTLIER_COUNT = 100  # outliers listed by default


@dataclass(frozen=True, eq=False)
class DuplicatesFound:
    of: Embedded
    pairs: duplicates.DuplicatePairs  # searched once at the floor; grouped at any threshold above it
    graph: curate.Graph | None  # the kNN graph crops were searched in (outliers and mislabels reuse it)


@dataclass(frozen=True, eq=False)
class OutliersFound:
    of: Embedded
    rows: np.ndarray  # int64, most unusual first
    scores: np.ndarray  # float32, 1 − mean similarity to the nearest neighbours
    graph: curate.Graph  # the kNN graph they came from (mislabels reuse it)


@dataclass(frozen=True, eq=False)
class MislabelsFound:
    of: Embedded
    found: list[curate.Mislabel]  # most confident first
    report: curate.ClassReport
    graph: curate.Graph


class Curation:
    """Findings about the explore session's embeddings, and actions on its images."""

    def __init__(self, explore: ExploreSession) -> None:
        self.explore = explore
        self.duplicates: DuplicatesFound | None = None
        self.outliers: OutliersFound | None = None
        self.mislabels: MislabelsFound | None = None

    def _current(self) -> Embedded:
        embedded = self.explore.embedded
        if embedded is None:
            raise ValueError("embed the folder first")
        return embedded

    def _fresh(self) -> None:
        """Findings about embeddings no longer shown are dropped."""
        embedded = self.explore.embedded
        for name in ("duplicates", "outliers", "mislabels"):
            found = getattr(self, name)
            if found is not None and found.of is not embedded:
                setattr(self, name, None)

    def _graph(self, embedded: Embedded, progress: Progress | None, should_stop: ShouldStop | None) -> curate.Graph:
        for found in (self.duplicates, self.outliers, self.mislabels):
            if found is not None and found.of is embedded and found.graph is not None:
                return found.graph
        return curate.knn_graph(embedded.embeddings.features, curate.GRAPH_K, progress, should_stop)

    # ---- findings ---------------------------------------------------------------------------------
    def find_duplicates(self, progress: Progress | None = None, should_stop: ShouldStop | None = None
                        ) -> DuplicatesFound:
        embedded = self._current()
        emb = embedded.embeddings
        graph = None if emb.thumbnails is None else self._graph(embedded, progress, should_stop)
        pairs = duplicates.duplicate_pairs(emb.features, progress=progress, should_stop=should_stop,
                                           thumbnails=emb.thumbnails, neighbours=None if graph is None else graph[0])
        return DuplicatesFound(embedded, pairs, graph)

    def find_outliers(self, count: int = OUTLIER_COUNT, progress: Progress | None = None,
                      should_stop: ShouldStop | None = None) -> OutliersFound:
        embedded = self._current()
        graph = self._graph(embedded, progress, should_stop)
        rows, scores = curate.outliers(graph, count)
        return OutliersFound(embedded, rows, scores, graph)

    def find_mislabels(self, progress: Progress | None = None, should_stop: ShouldStop | None = None
                       ) -> MislabelsFound:
        embedded = self._current()
        emb = embedded.embeddings
        if not emb.labeled:
            raise ValueError("this folder has no class subfolders: there are no labels to check")
        graph = self._graph(embedded, progress, should_stop)
        found, report = curate.likely_mislabeled(graph, emb.labels, len(emb.classes))
        return MislabelsFound(embedded, found, report, graph)

    def apply(self, found: DuplicatesFound | OutliersFound | MislabelsFound) -> bool:
        self._fresh()
        if found.of is not self.explore.embedded:
            return False
        name = {DuplicatesFound: "duplicates", OutliersFound: "outliers", MislabelsFound: "mislabels"}[type(found)]
        setattr(self, name, found)
        return True

    def findings(self, threshold: float | None = None) -> list[curate.Finding]:
        """What was found so far, as the rows of the report ``simclr-studio curate`` writes."""
        self._fresh()
        emb = self._current().embeddings
        rows: list[curate.Finding] = []
        if self.duplicates is not None:
            pairs = self.duplicates.pairs  # the pair cap may have raised its floor above the default
            groups = pairs.groups(max(threshold or duplicates.DEFAULT_DUPLICATE_THRESHOLD, pairs.floor))
            rows += curate.duplicate_findings(groups, emb.paths)
        if self.outliers is not None:
            rows += curate.outlier_findings(self.outliers.rows, self.outliers.scores, emb.paths)
        if self.mislabels is not None:
            rows += curate.mislabel_findings(self.mislabels.found, emb.paths, emb.classes)
        return rows

    # ---- selections: saved with the run, exported, copied, tagged -----------------------------------
    def store(self) -> selections.SelectionStore:
        run_dir = self.explore.run_dir
        if run_dir is None:
            raise ValueError("no run: selections are saved with a run")
        return selections.SelectionStore(run_dir)

    def save(self, name: str, rows: Sequence[int], how: str, replace: bool = False) -> None:
        self.store().save(name, self.explore.paths(rows), how, replace=replace)

    def rows_of(self, paths: Sequence[str]) -> tuple[list[int], int]:
        """(rows of the paths that are in the map, how many are not)."""
        emb = self._current().embeddings
        where = {p: r for r, p in enumerate(emb.paths)}
        rows = [where[p] for p in paths if p in where]
        return rows, len(paths) - len(rows)

    def export_csv(self, out: str | Path, rows: Sequence[int], map_name: str, overwrite: bool = False) -> Path:
        """path, label, x, y of each row (x, y on the map shown; empty without one)."""
        emb = self._current().embeddings
        coords = emb.maps.get(map_name)
        picked = np.asarray(rows, dtype=np.int64)
        return selections.export_selection_csv(out, self.explore.paths(rows),
                                               [self.explore.label_of(int(r)) for r in picked],
                                               coords[picked] if coords is not None else None, overwrite=overwrite)

    def data_dir(self) -> str | None:
        scan = self.explore.sources.scan
        return scan.root if scan is not None else None

    def copy_plan(self, rows: Sequence[int], dest: str | Path) -> selections.CopyPlan:
        """Where each image would go in ``dest`` (a new or empty folder outside the image folder)."""
        return selections.plan_copy(self.explore.paths(rows), dest, self.data_dir())

    def class_folders_plan(self, dest: str | Path) -> selections.CopyPlan:
        """The tagged images into ``dest/<tag>/``: a class-folder layout of copies."""
        return selections.plan_class_folders(self.store().tags(), dest, self.data_dir())

    def tag(self, rows: Sequence[int], label: str) -> None:
        self.store().tag(self.explore.paths(rows), label)

    def untag(self, rows: Sequence[int]) -> None:
        self.store().untag(self.explore.paths(rows))
