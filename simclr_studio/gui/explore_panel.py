"""Explore tab: embed a folder with a checkpoint, map it (PCA, then t-SNE), click through nearest
neighbours, select regions, search by a dropped image, and compare against a random encoder.

A view of an ``ExploreSession``: the session holds the state and does the work; this panel runs the
slow operations through ``gui.workers``, applies their results to the session on the GUI thread and
shows what the session holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.data import IMAGE_EXTENSIONS, ScanResult
from simclr_studio.gui.explore_results import FocusCard, QualityTable, ResultsList
from simclr_studio.gui.export_dialog import MAP_PNG_WIDTH, ExportSource, map_title, titled
from simclr_studio.gui.map_view import MapView
from simclr_studio.gui.workers import Job, Workers
from simclr_studio.session.explore import ExploreSession
from simclr_studio.session.explore_values import Clusters, Embedded, Measured, Projection, Results

MAPS = {"t-SNE": "tsne", "PCA": "pca"}
BY_CLUSTER = 1  # the colour choice "k-means clusters"


def dropped_image(mime) -> str | None:
    for url in mime.urls():
        if url.isLocalFile() and Path(url.toLocalFile()).suffix.lower() in IMAGE_EXTENSIONS \
                and Path(url.toLocalFile()).is_file():
            return url.toLocalFile()
    return None


class ExplorePanel(QWidget):
    def __init__(self, parent: QWidget | None = None, session: ExploreSession | None = None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.session = session if session is not None else ExploreSession()
        self.map_name = ""  # the map shown: "pca" or "tsne"
        self.jobs = Workers(self)  # the slow work the progress bar shows, by name; Cancel stops it all
        self._build()
        self._show_state(self.session.prompt())

    # The names the main window and the export dialog read.
    # ---- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.checkpoint = QComboBox()
        self.checkpoint.setMinimumWidth(220)
        self.checkpoint.currentIndexChanged.connect(lambda _: self._checkpoint_changed())
        other = QPushButton("Other checkpoint…")
        other.clicked.connect(self.choose_checkpoint)
        self.embed_button = QPushButton("Embed")
        self.embed_button.setObjectName("primary")
        self.embed_button.clicked.connect(self.embed)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.map_choice = QComboBox()
        self.map_choice.addItems(list(MAPS))
        self.map_choice.currentIndexChanged.connect(lambda _: self._show_map())
        self.colour_choice = QComboBox()
        self.colour_choice.addItems(["Folder label", "k-means clusters"])
        self.colour_choice.currentIndexChanged.connect(lambda _: self._show_map())
        bar = QHBoxLayout()
        for widget in (QLabel("Checkpoint"), self.checkpoint, other, self.embed_button, self.cancel_button,
                       self.progress):
            bar.addWidget(widget)
        bar.addSpacing(16)
        for widget in (QLabel("Map"), self.map_choice, QLabel("Colour"), self.colour_choice):
            bar.addWidget(widget)
        bar.addStretch()
        self.state_label = QLabel()
        self.state_label.setObjectName("muted")

        self.map = MapView()
        self.map.point_clicked.connect(self.select_point)
        self.map.selection_made.connect(self.show_selection)
        hint = QLabel("Click a point for its neighbours · Shift+drag: rectangle · Ctrl+drag: lasso · "
                      "wheel: zoom · drop an image file here to search")
        hint.setObjectName("muted")
        hint.setWordWrap(True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.map, 1)
        ll.addWidget(hint)

        self.quality_table = QualityTable()
        self.focus_card = FocusCard()
        self.results = ResultsList()
        self.results.activated.connect(self._result_activated)
        self.results_model = self.results.model
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.quality_table)
        rl.addWidget(self.focus_card)
        rl.addWidget(self.results, 1)
        right.setMinimumWidth(360)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.state_label)
        layout.addWidget(split, 1)
        self._set_busy(None)

    def apply_theme(self, dark: bool) -> None:
        self.map.apply_theme(dark)

    def export_source(self) -> ExportSource | None:
        """The chosen checkpoint, with the embeddings and the map when the folder is embedded by it;
        None without a checkpoint."""
        s = self.session.sources
        if s.run_dir is None or s.checkpoint is None:
            return None
        embedded = self.session.embedded
        if embedded is None:
            return ExportSource(s.run_dir, s.checkpoint)
        image = self.map.render_image(MAP_PNG_WIDTH)
        title = map_title(s.run_dir, s.checkpoint, self.map_name)
        return ExportSource(s.run_dir, s.checkpoint, embedded.trained, embedded.embeddings, self.map_name,
                            titled(image, title, self.map.dark) if image is not None else None)

    # ---- sources ------------------------------------------------------------------------------
    def set_sources(self, run_dir: Path | None, scan: ScanResult | None) -> None:
        """The run whose checkpoints embed ``scan``'s images; called whenever the tab is shown."""
        if self.session.set_sources(run_dir, scan):
            self._reset_view()
        self._show_checkpoints()
        self._refresh_state()
        if self.session.embedded is None and not self.jobs and self.session.cached():
            self.embed()  # cached: reopening is instant

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open checkpoint", str(self.session.run_dir or Path.home()),
                                              "Checkpoints (*.pt)")
        if path:
            self.use_checkpoint(Path(path))

    def use_checkpoint(self, path: Path) -> None:
        """Any saved checkpoint: its run folder is the one above ``checkpoints/``."""
        if self.session.use_checkpoint(path):
            self._reset_view()
        self._show_checkpoints()
        self._refresh_state()

    def _show_checkpoints(self) -> None:
        self.checkpoint.blockSignals(True)  # refilled (new epochs add checkpoints) without losing the choice
        self.checkpoint.clear()
        for path in self.session.checkpoints():
            self.checkpoint.addItem(path.name, str(path))
        self.checkpoint.setCurrentIndex(max(self.checkpoint.findData(str(self.session.sources.checkpoint)), 0))
        self.checkpoint.blockSignals(False)

    def _checkpoint_changed(self) -> None:
        if self.session.set_checkpoint(self.checkpoint.currentData()):
            self._reset_view()
        self._refresh_state()

    def _refresh_state(self) -> None:
        if self.session.embedded is None:
            self._show_state(self.session.prompt())
            self.embed_button.setEnabled(self.session.can_embed())

    def clear(self) -> None:
        """Forget the embeddings (the sources stay)."""
        self.session.clear()
        self._reset_view()

    def _reset_view(self) -> None:
        self.jobs.cancel_all()
        self.map_name = ""
        self.map.set_points(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), [])
        self.results.clear()
        self.focus_card.clear()
        self.quality_table.set_quality(None)
        self._set_busy(None)

    # ---- background work ------------------------------------------------------------------------
    def _start(self, name: str, fn: Job, on_result, label: str, quiet: bool = False) -> None:
        """Run ``fn`` in the background (replacing a call of the same name); ``label`` says what it does."""
        def done(result) -> None:
            self._set_busy(None)
            on_result(result)

        def failed(message: str) -> None:
            self._set_busy(None)
            self._show_state(f"{label} failed: {message}", error=True)

        self.jobs.start(name, fn, on_result=done, on_error=failed, on_progress=self._on_progress)
        self._set_busy(None if quiet else label)

    def _set_busy(self, label: str | None) -> None:
        busy = bool(self.jobs)
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if label:
            self.progress.setRange(0, 0)  # busy until the first progress report
            self._show_state(label + "…")
        elif not busy and self.session.embedded is not None:
            self._show_state(self.session.prompt())  # back to the summary once the background work is done

    def _on_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def cancel(self) -> None:
        self.jobs.cancel_all()
        self._set_busy(None)
        self._show_state("Cancelled")

    def _show_state(self, text: str, error: bool = False) -> None:
        self.state_label.setText(text)
        self.state_label.setObjectName("error" if error else "muted")
        self.state_label.style().unpolish(self.state_label)
        self.state_label.style().polish(self.state_label)

    # ---- embedding, maps, quality ---------------------------------------------------------------
    def embed(self) -> None:
        if not self.session.can_embed():
            self._refresh_state()
            return
        count = len(self.session.sources.scan)
        self.clear()
        self._start("embed", self.session.embed, self._on_embedded, f"Embedding {count:,} images")

    def _on_embedded(self, embedded: Embedded) -> None:
        if not self.session.apply_embedded(embedded):
            return
        labeled = embedded.embeddings.labeled
        self.colour_choice.blockSignals(True)
        self.colour_choice.setEnabled(True)
        if not labeled:
            self.colour_choice.setCurrentIndex(BY_CLUSTER)
        self.colour_choice.blockSignals(False)
        self._show_map()
        self._show_state(self.session.prompt())
        if labeled:
            self.compute_quality()

    def _show_map(self) -> None:
        """Show the chosen map, computing t-SNE (or the k-means colours) in the background first."""
        emb = self.session.embeddings
        if emb is None:
            return
        want = MAPS[self.map_choice.currentText()]
        if self.session.map(want) is None:
            self._compute_map(want)
            want = "pca"  # PCA at once; t-SNE replaces it when ready
        by_cluster = self.colour_choice.currentIndex() == BY_CLUSTER or not emb.labeled
        if by_cluster and self.session.cluster_labels() is None:
            self._compute_clusters()  # coloured by folder (or not at all) meanwhile
        groups, names = self.session.groups(by_cluster)
        self.map_name = want
        self.map.set_points(self.session.map(want), groups, names, emb.paths)
        self._mark()

    def _compute_map(self, kind: str) -> None:
        if kind in self.jobs:  # t-SNE cannot be interrupted: never started twice for the same embeddings
            return
        self._start(kind, lambda progress, should_stop: self.session.projection(kind), self._on_map,
                    f"t-SNE of {len(self.session.embeddings):,} points (PCA shown meanwhile)")

    def _on_map(self, projection: Projection) -> None:
        if self.session.apply_projection(projection):
            self._save()
            self._show_map()

    def _compute_clusters(self) -> None:
        if "clusters" in self.jobs:
            return
        k = self.session.cluster_count()
        self._start("clusters", lambda progress, should_stop: self.session.clusters(k), self._on_clusters,
                    f"k-means ({k} clusters)")

    def _on_clusters(self, clusters: Clusters) -> None:
        if self.session.apply_clusters(clusters):
            self._save()
            self._show_map()

    def _save(self) -> None:
        """The session writes its cache file (next time the maps are instant)."""
        self._start("save", lambda progress, should_stop: self.session.save(), lambda _: None,
                    "Saving the maps", quiet=True)

    def compute_quality(self) -> None:
        emb = self.session.embeddings
        if emb is None or not emb.labeled:
            return
        self._start("quality", self.session.measure_quality, self._on_quality,
                    "Measuring kNN and linear-probe accuracy")

    def _on_quality(self, measured: Measured) -> None:
        if self.session.apply_quality(measured):
            self.quality_table.set_quality(self.session.quality)

    # ---- neighbours, selection, search --------------------------------------------------------
    def select_point(self, row: int) -> None:
        """Focus one image: show it large with its nearest neighbours in feature space."""
        emb = self.session.embeddings
        if emb is None or not 0 <= row < len(emb):
            return
        results = self.session.neighbours(row)
        if self.session.show(results):
            self._show_results(results)

    def show_selection(self, rows) -> None:
        if self.session.embedded is None:
            return
        self.session.select(rows)
        self._show_results(self.session.results)

    def search_image(self, path: str) -> None:
        """Embed any image file and show its neighbours in the folder (marked on the map)."""
        if self.session.embedded is None:
            self._show_state("Embed the folder first, then drop an image to search it.", error=True)
            return
        self._start("search", lambda progress, should_stop: self.session.search(path), self._on_search,
                    f"Embedding {Path(path).name}")

    def _on_search(self, results: Results) -> None:
        if self.session.show(results):
            self._show_results(results)
            self._show_state(f"Searched with {results.query}")

    def _show_results(self, results: Results) -> None:
        rows = list(results.rows)
        if results.kind == "neighbours":
            title = f"<b>{len(rows)} nearest neighbours</b> (cosine similarity of features)"
        elif results.kind == "search":
            title = f"<b>Search</b>: {Path(results.query or '').name}"
        else:
            title = f"<b>Selection</b>: {len(rows):,} images"
        self.results.set_results(title, self.session.paths(rows), self.session.captions(results))
        if results.focus is not None:
            self.focus_card.set_image(self.session.paths([results.focus])[0], self.session.label_of(results.focus))
        elif results.query is not None:
            self.focus_card.set_image(results.query, "dropped image (not part of the map)")
        self._mark()

    def _mark(self) -> None:
        """Highlight on the map what the results list shows: neighbours (and their image) or a selection."""
        results = self.session.results
        rows = list(results.rows) if results is not None else []
        kind = results.kind if results is not None else ""
        self.map.mark(self.session.focus, rows if kind in ("neighbours", "search") else [],
                      rows if kind == "selection" else [])

    def _result_activated(self, i: int) -> None:
        results = self.session.results
        if results is not None and 0 <= i < len(results.rows):
            self.select_point(results.rows[i])  # the focus moves; the map highlights it

    # ---- drag and drop ------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if dropped_image(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()  # folders go to the main window

    def dropEvent(self, event) -> None:
        path = dropped_image(event.mimeData())
        if path:
            event.acceptProposedAction()
            self.search_image(path)
        else:
            event.ignore()
