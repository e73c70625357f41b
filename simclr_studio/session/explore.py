"""Exploring what a checkpoint learned, without Qt: which checkpoint embeds which folder, the embeddings
and what is built on them (a neighbour index, maps, clusters, quality), and what the user looks at
(the results of a click or a search, and the selection).

Operations that take time (``embed``, ``projection``, ``clusters``, ``measure_quality``, ``search``)
read the session when they start, never write it, and return a value that names what it was computed
from. The caller applies it (``apply_*``, ``show``) on its own thread, and applying does nothing once
the session has moved on (other sources, cleared). The app runs the operations on worker threads and
applies on the GUI thread; tests call both in a row. ``save`` writes the cache file, maps included.

The selection is a value (``Selection``): commands that act on a selection take one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from simclr_studio.data import ScanResult
from simclr_studio.embeddings import Embeddings, cache_path, embed_cached, save
from simclr_studio.neighbours import NeighbourIndex
from simclr_studio.projection import TSNE_ITERATIONS, TSNE_PERPLEXITY, kmeans_labels, pca_2d, preload, tsne_2d
from simclr_studio.run_folder import RunFolder
from simclr_studio.session.explore_values import (
    Clusters,
    Embedded,
    MapKind,
    Measured,
    Projection,
    Results,
    ResultsHistory,
    Selection,
    Sources,
)
from simclr_studio.session.quality import Quality, measure_quality
from simclr_studio.trained import TrainedModel, load_trained

K_NEIGHBOURS = 12
UNLABELED_CLUSTERS = 10  # k of k-means for a folder without class subfolders

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]
Snapshot = Callable[[int, int, np.ndarray], None]  # iteration, total, coordinates [N, 2] so far


def _same_scan(a: ScanResult | None, b: ScanResult | None) -> bool:
    return a is b or (a is not None and b is not None and a.paths == b.paths)


class ExploreSession:
    def __init__(self, device: str | None = None) -> None:
        """``device``: where images are embedded (default: the best available)."""
        self.device = device
        self.sources = Sources()
        self._train_run: Path | None = None  # the run the Train tab shows
        self._chosen_run: Path | None = None  # the run of a checkpoint picked elsewhere, until the Train tab moves
        self.embedded: Embedded | None = None
        self.quality: Quality | None = None
        self.results: Results | None = None
        self.selection = Selection()
        self.history = ResultsHistory()  # what was shown, for Back and Forward

    # ---- what is loaded ---------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path | None:
        return self.sources.run_dir

    @property
    def trained(self) -> TrainedModel | None:
        return self.embedded.trained if self.embedded is not None else None

    @property
    def embeddings(self) -> Embeddings | None:
        return self.embedded.embeddings if self.embedded is not None else None

    @property
    def focus(self) -> int | None:
        return self.results.focus if self.results is not None else None

    # ---- sources ------------------------------------------------------------------------------------
    def set_sources(self, train_run: Path | None, scan: ScanResult | None) -> bool:
        """The Train tab's run and the Data tab's scan. A checkpoint chosen from another run
        (``use_checkpoint``) stays until the Train tab moves to another run. The chosen checkpoint
        stays while the run has it; else the run's newest. True when the sources changed (and the
        session was cleared)."""
        if train_run != self._train_run:
            self._train_run, self._chosen_run = train_run, None
        run_dir = self._chosen_run if self._chosen_run is not None else train_run
        listed = RunFolder(run_dir).checkpoints() if run_dir is not None else []
        current = self.sources.checkpoint
        keep = current is not None and (current in listed or (run_dir == self.run_dir and current.is_file()))
        return self._change(run_dir, current if keep else (listed[0] if listed else None), scan)

    def use_checkpoint(self, path: str | Path) -> bool:
        """Any saved checkpoint: its run folder is the one above ``checkpoints/``."""
        path = Path(path)
        self._chosen_run = RunFolder.of_checkpoint(path).path
        return self._change(self._chosen_run, path, self.sources.scan)

    def set_checkpoint(self, path: str | Path | None) -> bool:
        return self._change(self.run_dir, Path(path) if path is not None else None, self.sources.scan)

    def checkpoints(self) -> list[Path]:
        """The run folder's checkpoints (``last.pt`` first, then the newest epochs), and the chosen one."""
        found = RunFolder(self.run_dir).checkpoints() if self.run_dir is not None else []
        if self.sources.checkpoint is not None and self.sources.checkpoint not in found:
            found.append(self.sources.checkpoint)
        return found

    def _change(self, run_dir: Path | None, checkpoint: Path | None, scan: ScanResult | None) -> bool:
        old = self.sources
        if run_dir == old.run_dir and checkpoint == old.checkpoint and _same_scan(scan, old.scan):
            return False
        self.sources = Sources(run_dir, checkpoint, scan)
        self._drop()
        return True

    def clear(self) -> None:
        """Forget the embeddings and all built on them; results still being computed will not apply."""
        s = self.sources
        self.sources = Sources(s.run_dir, s.checkpoint, s.scan)
        self._drop()

    def _drop(self) -> None:
        self.embedded = None
        self.quality = None
        self.results = None
        self.selection = Selection()
        self.history.clear()

    def can_embed(self) -> bool:
        return self.sources.can_embed()

    def cached(self) -> bool:
        """Whether the sources' embeddings are in the cache (then embedding is a quick read)."""
        s = self.sources
        if not s.can_embed():
            return False
        assert s.run_dir is not None and s.checkpoint is not None and s.scan is not None
        try:
            size = RunFolder(s.run_dir).load_config().image_size
            return cache_path(s.run_dir, s.checkpoint, size, s.scan.paths).is_file()
        except (OSError, ValueError):
            return False

    def prompt(self) -> str:
        """What there is to see, or what to do first."""
        if self.embedded is not None:
            return self.embedded.summary()
        s = self.sources
        if s.run_dir is None:
            return "Train a run (or open a run folder), then embed its images here."
        if s.checkpoint is None:
            return f"{s.run_dir.name} has no checkpoint yet: train at least one epoch."
        if s.scan is None or len(s.scan) == 0:
            return "Open the image folder to explore (File ▸ Open Folder)."
        return f"Press Embed to compute features of {len(s.scan):,} images with {s.checkpoint.name}."

    def _device(self) -> str:
        if self.device is None:
            from simclr_studio.device import available_devices

            return available_devices()[0]
        return self.device

    # ---- embedding ------------------------------------------------------------------------------------
    def embed(self, progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Embedded:
        """Embed the sources' images (or read them from the cache), with a PCA map to show at once."""
        sources = self.sources
        if not sources.can_embed():
            raise ValueError("nothing to embed: choose a checkpoint and open a folder of images")
        assert sources.run_dir is not None and sources.scan is not None
        trained = load_trained(sources.run_dir, sources.checkpoint)
        emb, path, cached = embed_cached(trained, sources.scan, self._device(), progress=progress,
                                         should_stop=should_stop)
        preload()  # the maps' imports, here rather than when the first map starts
        if len(emb) == 0:
            raise ValueError("no image of the folder could be decoded")
        if "pca" not in emb.maps:  # not shared yet: filled in here
            emb.maps["pca"] = pca_2d(emb.features)
        return Embedded(sources, trained, emb, path, cached, NeighbourIndex(emb.features))

    def apply_embedded(self, embedded: Embedded) -> bool:
        if embedded.sources is not self.sources:
            return False
        self._drop()
        self.embedded = embedded
        return True

    def save(self) -> Path | None:
        """Write the embeddings and their maps to the cache file, so that reopening is instant."""
        embedded = self.embedded
        if embedded is None:
            return None
        return save(embedded.embeddings, embedded.cache_file)

    def _current(self) -> Embedded:
        if self.embedded is None:
            raise ValueError("embed the folder first")
        return self.embedded

    # ---- maps and clusters -------------------------------------------------------------------------
    def map(self, kind: MapKind) -> np.ndarray | None:
        """The map's coordinates [N, 2], if computed."""
        emb = self.embeddings
        return emb.maps.get(kind) if emb is not None else None

    def projection(self, kind: MapKind, perplexity: float = TSNE_PERPLEXITY, iterations: int = TSNE_ITERATIONS,
                   snapshot: Snapshot | None = None, should_stop: ShouldStop | None = None) -> Projection:
        """The map of the embeddings. t-SNE hands ``snapshot`` its layout while it optimises (about
        twice a second) and stops with InterruptedError when ``should_stop()``."""
        embedded = self._current()
        features = embedded.embeddings.features
        if kind != "tsne":
            return Projection(embedded, kind, pca_2d(features))
        coords = tsne_2d(features, perplexity=perplexity, max_iter=iterations, snapshot=snapshot,
                         should_stop=should_stop)
        return Projection(embedded, kind, coords)

    def apply_projection(self, projection: Projection) -> bool:
        if projection.of is not self.embedded:
            return False
        projection.of.embeddings.maps[projection.kind] = projection.coords
        return True

    def cluster_labels(self) -> np.ndarray | None:
        emb = self.embeddings
        if emb is None or "clusters" not in emb.maps:
            return None
        return emb.maps["clusters"][:, 0].astype(np.int64)

    def cluster_count(self) -> int:
        """k of k-means: the number of classes of a labelled folder, else ``UNLABELED_CLUSTERS``."""
        emb = self._current().embeddings
        return len(emb.classes) if emb.labeled else UNLABELED_CLUSTERS

    def clusters(self, k: int | None = None) -> Clusters:
        embedded = self._current()
        return Clusters(embedded, kmeans_labels(embedded.embeddings.features, k or self.cluster_count()))

    def apply_clusters(self, clusters: Clusters) -> bool:
        if clusters.of is not self.embedded:
            return False
        # Stored as an [N, 2] map so that it shares the cache file (second column unused).
        labels = clusters.labels
        clusters.of.embeddings.maps["clusters"] = np.stack([labels, labels], 1).astype(np.float32)
        return True

    def groups(self, by_cluster: bool) -> tuple[np.ndarray, list[str]]:
        """(group of each image [N], group names) to colour the map: k-means clusters (when asked for
        and computed), else the folder's classes (images outside them as "unlabeled"), else one group."""
        emb = self._current().embeddings
        clusters = self.cluster_labels() if by_cluster else None
        if clusters is not None:
            return clusters, [f"cluster {i + 1}" for i in range(int(clusters.max()) + 1)] if len(clusters) else []
        if emb.labeled:
            names = list(emb.classes)
            groups = emb.labels.copy()
            if (groups < 0).any():  # images beside the class folders: drawn too, as their own group
                groups[groups < 0] = len(names)
                names.append("unlabeled")
            return groups, names
        return np.zeros(len(emb), np.int64), ["images"]

    # ---- quality ----------------------------------------------------------------------------------------
    def measure_quality(self, progress: Progress | None = None, should_stop: ShouldStop | None = None) -> Measured:
        """kNN and linear-probe accuracy against a random encoder and raw pixels (a labelled folder)."""
        embedded = self._current()
        if not embedded.embeddings.labeled or embedded.sources.scan is None:
            raise ValueError("quality is measured against the folder's classes: this folder has none")
        quality = measure_quality(embedded.embeddings, embedded.trained, embedded.sources.scan, self._device(),
                                  progress, should_stop)
        _record_quality(embedded, quality)
        return Measured(embedded, quality)

    def apply_quality(self, measured: Measured) -> bool:
        if measured.of is not self.embedded:
            return False
        self.quality = measured.quality
        return True

    # ---- neighbours, search, selection ------------------------------------------------------------------
    def neighbours(self, row: int, k: int = K_NEIGHBOURS) -> Results:
        """The k images most like image ``row`` (cosine similarity of features), itself excluded."""
        embedded = self._current()
        if not 0 <= row < len(embedded.embeddings):
            raise IndexError(f"no image {row} in {len(embedded.embeddings)}")
        return Results.found("neighbours", embedded.index.query_row(row, k), embedded, focus=row)

    def row_of(self, image_path: str | Path) -> int | None:
        """The row of an image file of the map (the same file, however its path is written), or None."""
        import os.path

        emb = self._current().embeddings
        wanted = {os.path.abspath(image_path), os.path.realpath(image_path)}
        for row, path in enumerate(emb.paths):  # string comparisons only: no file-system call per image
            if os.path.abspath(path) in wanted:
                return row
        return None

    def search(self, image_path: str | Path, k: int = K_NEIGHBOURS) -> Results:
        """The k images most like any image file (embedded here with the checkpoint). A file of the map
        is not embedded again: its neighbours are shown, as for a click on it."""
        from simclr_studio.data import decode_image, to_chw_tensor
        from simclr_studio.evaluate import extract_features

        embedded = self._current()
        row = self.row_of(image_path)
        if row is not None:
            return self.neighbours(row, k)
        backbone = embedded.trained.model.backbone
        image = to_chw_tensor(decode_image(image_path, embedded.trained.config.image_size))[None]
        feature = extract_features(backbone, [image], next(backbone.parameters()).device)[0]
        return Results.found("search", embedded.index.query_vector(feature, k), embedded, query=str(image_path))

    def show(self, results: Results, remember: bool = True) -> bool:
        """Make ``results`` what is shown (and, with ``remember``, the newest entry of the history). A
        selection's rows are the selection, which the map marks; other results drop the selection."""
        if results.of is None or results.of is not self.embedded:
            return False
        self.results = results
        self.selection = Selection(results.rows) if results.kind == "selection" else Selection()
        if remember:
            self.history.push(results)
        return True

    def select(self, rows: Iterable[int], how: str = "selection") -> Selection:
        """Select images (rows outside the embeddings are ignored); they become what is shown."""
        embedded = self._current()
        n = len(embedded.embeddings)
        selection = Selection.of(r for r in rows if 0 <= int(r) < n)
        self.show(Results("selection", selection.rows, of=embedded, how=how))
        return self.selection

    def go(self, step: int) -> Results | None:
        """Back (-1) or forward (+1) through what was shown; the entry, now shown, or None."""
        results = self.history.go(step)
        if results is not None:
            self.show(results, remember=False)
        return results

    def filter_names(self, text: str) -> Selection:
        """The images whose file name contains ``text`` (any case) become the selection."""
        emb = self._current().embeddings
        needle = text.strip().lower()
        rows = [r for r, path in enumerate(emb.paths) if needle and needle in Path(path).name.lower()]
        return self.select(rows, how=f"file names with '{text.strip()}'")

    # ---- words ------------------------------------------------------------------------------------------
    def label_of(self, row: int) -> str:
        """The class name of image ``row``, or "" (unlabeled)."""
        emb = self._current().embeddings
        label = int(emb.labels[row])
        return emb.classes[label] if 0 <= label < len(emb.classes) else ""

    def paths(self, rows: Iterable[int]) -> list[str]:
        emb = self._current().embeddings
        return [emb.paths[r] for r in rows]

    def captions(self, results: Results) -> list[str]:
        """Per row: the similarity (3 decimals) and the class name, where there are any, one per line."""
        sims: Iterable[float | None] = results.similarities or [None] * len(results.rows)
        return ["\n".join(t for t in ("" if s is None else f"{s:.3f}", self.label_of(r)) if t)
                for r, s in zip(results.rows, sims, strict=True)]


def _record_quality(embedded: Embedded, quality: Quality) -> None:
    """The run's latest checkpoint's accuracy, kept in the run folder (``eval.json``, as
    ``simclr-studio eval --json`` writes it) for the Runs tab; an older checkpoint's is not kept there."""
    import json

    from simclr_studio.atomic import atomic_write_text

    folder = RunFolder(embedded.sources.run_dir) if embedded.sources.run_dir is not None else None
    checkpoint = embedded.sources.checkpoint
    if folder is None or checkpoint is None or Path(checkpoint).resolve() != folder.last_checkpoint.resolve():
        return
    scores = quality.trained
    record = {"knn_accuracy": scores.knn_accuracy, "linear_accuracy": scores.linear_accuracy, "k": scores.k,
              "n_images": quality.n, "checkpoint": str(checkpoint), "measured_by": "Explore tab",
              "protocol": "the Train tab's kNN sample: leave-one-out kNN, linear probe on a stratified 80/20 split"}
    try:
        atomic_write_text(folder.eval_file, json.dumps(record, indent=2) + "\n")
    except OSError:  # a read-only run folder: the measurement is still shown
        pass
