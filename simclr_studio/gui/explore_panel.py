"""Explore tab: embed a folder with a checkpoint, map it (PCA at once, then t-SNE moving as it
optimises), click through nearest neighbours (Back / Forward), select regions, search by an image
(dropped, picked or pasted), filter by file name, find duplicates, outliers and likely mislabeled
images, and act on what is selected (save, export, copy, tag).

A view of an ``ExploreSession``: the session holds the state and does the work; this panel runs the
slow operations through its ``JobBoard``, applies their results to the session on the GUI thread and
shows what the session holds. The curation tabs and the selection's actions are views of their own
(``curate_views``, ``selection_actions``) bound to the same session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.data import ScanResult
from simclr_studio.gui.curate_views import DuplicatesView, MislabelsView, OutliersView
from simclr_studio.gui.explore_results import results_title
from simclr_studio.gui.export_dialog import MAP_PNG_WIDTH, ExportSource, map_title, titled
from simclr_studio.gui.job_board import JobBoard
from simclr_studio.gui.map_view import MapView
from simclr_studio.gui.neighbours_tab import NeighboursTab, dropped_image, spin
from simclr_studio.gui.selection_actions import SavedSelectionsView
from simclr_studio.gui.workers import Throttle
from simclr_studio.session.curation import Curation
from simclr_studio.session.explore import TSNE_ITERATIONS, TSNE_PERPLEXITY, ExploreSession
from simclr_studio.session.explore_values import Clusters, Embedded, Measured, Projection, Results

MAPS = {"t-SNE": "tsne", "PCA": "pca"}
BY_CLUSTER = 1  # the colour choice "k-means clusters"


class ExplorePanel(QWidget):
    def __init__(self, parent: QWidget | None = None, session: ExploreSession | None = None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.session = session if session is not None else ExploreSession()
        self.curation = Curation(self.session)  # duplicates, outliers, mislabels; what selections become
        self.map_name = ""  # the map shown: "pca" or "tsne"
        # The slow work, by name, and the line that says what runs; Cancel stops it all.
        self.jobs = JobBoard(self, lambda: self.session.prompt() if self.session.embedded is not None else None)
        self.run, self.say, self.cancel = self.jobs.run, self.jobs.say, self.jobs.stop_all
        self.state_label, self.progress, self.cancel_button = self.jobs.line, self.jobs.bar, self.jobs.cancel_button
        self._build()
        self.say(self.session.prompt())

    # ---- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.checkpoint = QComboBox()
        self.checkpoint.setMinimumWidth(200)
        self.checkpoint.currentIndexChanged.connect(lambda _: self._checkpoint_changed())
        other = QPushButton("Other checkpoint…")
        other.clicked.connect(self.choose_checkpoint)
        self.embed_button = QPushButton("Embed")
        self.embed_button.setObjectName("primary")
        self.embed_button.clicked.connect(self.embed)
        self.map_choice = QComboBox()
        self.map_choice.addItems(list(MAPS))
        self.map_choice.currentIndexChanged.connect(lambda _: self._show_map())
        self.perplexity = spin(5, 100, int(TSNE_PERPLEXITY), "t-SNE perplexity: about how many neighbours "
                               "each point keeps close (larger: more global structure)")
        self.iterations = spin(250, 5000, TSNE_ITERATIONS, "t-SNE iterations after early exaggeration")
        self.iterations.setSingleStep(250)
        self.rerun = QPushButton("Run t-SNE")
        self.rerun.setToolTip("Compute the t-SNE map again with this perplexity and these iterations")
        self.rerun.clicked.connect(lambda: self._compute_map("tsne"))
        self.colour_choice = QComboBox()
        self.colour_choice.addItems(["Folder label", "k-means clusters"])
        self.colour_choice.currentIndexChanged.connect(lambda _: self._show_map())
        bar = QHBoxLayout()
        for widget in (QLabel("Checkpoint"), self.checkpoint, other, self.embed_button, self.cancel_button,
                       self.progress):
            bar.addWidget(widget)
        bar.addStretch()
        maps = QHBoxLayout()
        for widget in (QLabel("Map"), self.map_choice, QLabel("Perplexity"), self.perplexity, QLabel("Iterations"),
                       self.iterations, self.rerun, QLabel("Colour"), self.colour_choice):
            maps.addWidget(widget)
        maps.addStretch()

        self.map = MapView()
        self.map.point_clicked.connect(self.select_point)
        self.map.selection_made.connect(self.show_selection)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter file names…")
        self.filter.setClearButtonEnabled(True)
        self._filter_later = Throttle(self._apply_filter, interval_ms=250, debounce=True, parent=self)
        self.filter.textChanged.connect(lambda text: self._filter_later(text))
        hint = QLabel("Click a point for its neighbours · Shift+drag: rectangle · Ctrl+drag: lasso · wheel: zoom · "
                      "click a legend entry to hide its class · drop or paste (Ctrl+V) an image to search")
        hint.setObjectName("muted")
        hint.setWordWrap(True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.map, 1)
        ll.addWidget(self.filter)
        ll.addWidget(hint)

        self.tabs = QTabWidget()
        self.neighbours = NeighboursTab(self)
        tab = self.neighbours  # the names the rest of the panel (and its tests) use
        self.quality_table, self.focus_card, self.results = tab.quality, tab.focus, tab.results
        self.actions = tab.actions
        self.back, self.forward, self.k, self.results_model = tab.back, tab.forward, tab.k, tab.results.model
        self.paste, self.choose_search_image = tab.paste, tab.choose_search_image
        self.results.activated.connect(self._result_activated)
        self.tabs.addTab(tab, "Neighbours")
        self.duplicates = DuplicatesView(self)
        self.outliers = OutliersView(self)
        self.mislabels = MislabelsView(self)
        self.saved = SavedSelectionsView(self)
        for view, name in ((self.duplicates, "Duplicates"), (self.outliers, "Outliers"),
                           (self.mislabels, "Mislabeled"), (self.saved, "Selections")):
            self.tabs.addTab(view, name)
        self.tabs.setMinimumWidth(380)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addLayout(maps)
        layout.addWidget(self.state_label)
        layout.addWidget(split, 1)
        QShortcut(QKeySequence.StandardKey.Paste, self, self.paste)
        QShortcut(QKeySequence.StandardKey.Back, self, lambda: self.go(-1))
        QShortcut(QKeySequence.StandardKey.Forward, self, lambda: self.go(1))
        self.jobs.refresh()

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
        for path in self.session.checkpoints():  # named with their run: "last.pt" alone says too little
            run = path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name
            self.checkpoint.addItem(f"{run} · {path.name}", str(path))
            self.checkpoint.setItemData(self.checkpoint.count() - 1, str(path), Qt.ItemDataRole.ToolTipRole)
        self.checkpoint.setCurrentIndex(max(self.checkpoint.findData(str(self.session.sources.checkpoint)), 0))
        self.checkpoint.blockSignals(False)

    def _checkpoint_changed(self) -> None:
        if self.session.set_checkpoint(self.checkpoint.currentData()):
            self._reset_view()
        self._refresh_state()

    def _refresh_state(self) -> None:
        if self.session.embedded is None:
            self.say(self.session.prompt())
            self.embed_button.setEnabled(self.session.can_embed())

    def clear(self) -> None:
        """Forget the embeddings (the sources stay)."""
        self.session.clear()
        self._reset_view()

    def _reset_view(self) -> None:
        self.jobs.forget()
        self.map_name = ""
        self.map.set_points(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), [])
        self.results.clear()
        self.focus_card.clear()
        self.quality_table.set_quality(None)
        for view in (self.duplicates, self.outliers, self.mislabels, self.saved):
            view.refresh()

    # ---- embedding, maps, quality ---------------------------------------------------------------
    def embed(self) -> None:
        if not self.session.can_embed():
            self._refresh_state()
            return
        count = len(self.session.sources.scan)
        self.clear()
        self.run("embed", self.session.embed, self._on_embedded, f"Embedding {count:,} images")

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
        for view in (self.duplicates, self.outliers, self.mislabels, self.saved):
            view.refresh()
        if labeled:
            self.compute_quality()

    def _show_map(self) -> None:
        """Show the chosen map, computing t-SNE (or the k-means colours) in the background first."""
        emb = self.session.embeddings
        if emb is None:
            return
        want = MAPS[self.map_choice.currentText()]
        if self.session.map(want) is None:
            if want not in self.jobs:
                self._compute_map(want)
            want = "pca"  # PCA at once; t-SNE moves it while it optimises, then replaces it
        by_cluster = self.colour_choice.currentIndex() == BY_CLUSTER or not emb.labeled
        if by_cluster and self.session.cluster_labels() is None:
            self._compute_clusters()  # coloured by folder (or not at all) meanwhile
        groups, names = self.session.groups(by_cluster)
        self.map_name = want
        self.map.set_points(self.session.map(want), groups, names, emb.paths)
        self._mark()

    def _compute_map(self, kind: str) -> None:
        """t-SNE with the chosen perplexity and iterations; its snapshots move the map as they come."""
        if self.session.embedded is None:
            return
        perplexity, iterations = float(self.perplexity.value()), self.iterations.value()
        latest: list[np.ndarray] = []  # the newest snapshot, handed from the worker thread

        def job(progress, should_stop):
            def snapshot(iteration: int, total: int, coords: np.ndarray) -> None:
                latest[:] = [coords]
                progress(iteration, total)
            return self.session.projection(kind, perplexity, iterations, snapshot, should_stop)

        def moved(iteration: int, total: int) -> None:
            self.jobs.describe(kind, f"iteration {iteration:,} of {total:,}")
            if latest and self.map_name != "tsne" and MAPS[self.map_choice.currentText()] == "tsne":
                self.map.move_points(latest[0])

        self.run(kind, job, self._on_map, f"t-SNE of {len(self.session.embeddings):,} points "
                 f"(perplexity {perplexity:g})", on_progress=moved)

    def _on_map(self, projection: Projection) -> None:
        if self.session.apply_projection(projection):
            self._save()
            self._show_map()

    def _compute_clusters(self) -> None:
        if "clusters" in self.jobs:
            return
        k = self.session.cluster_count()
        self.run("clusters", lambda progress, should_stop: self.session.clusters(k), self._on_clusters,
                 f"k-means ({k} clusters)")

    def _on_clusters(self, clusters: Clusters) -> None:
        if self.session.apply_clusters(clusters):
            self._save()
            self._show_map()

    def _save(self) -> None:
        """The session writes its cache file (next time the maps are instant)."""
        self.run("save", lambda progress, should_stop: self.session.save(), lambda _: None, "Saving the maps",
                 quiet=True)

    def compute_quality(self) -> None:
        emb = self.session.embeddings
        if emb is None or not emb.labeled:
            return
        self.run("quality", self.session.measure_quality, self._on_quality, "Measuring kNN and linear-probe accuracy")

    def _on_quality(self, measured: Measured) -> None:
        if self.session.apply_quality(measured):
            self.quality_table.set_quality(self.session.quality)

    # ---- neighbours, selection, search --------------------------------------------------------
    def select_point(self, row: int) -> None:
        """Focus one image: show it large with its nearest neighbours in feature space."""
        emb = self.session.embeddings
        if emb is None or not 0 <= row < len(emb):
            return
        results = self.session.neighbours(row, self.k.value())
        if self.session.show(results):
            self.show_results(results)

    def requery(self) -> None:
        results = self.session.results
        if results is not None and results.kind == "neighbours" and results.focus is not None:
            self.select_point(results.focus)
        elif results is not None and results.kind == "search" and results.query:
            self.search_image(results.query)

    def show_selection(self, rows, how: str = "selection") -> None:
        if self.session.embedded is None:
            return
        self.session.select(rows, how)
        self.show_results(self.session.results)

    def _apply_filter(self, text: str) -> None:
        if self.session.embedded is None or not text.strip():
            return
        self.session.filter_names(text)
        self.show_results(self.session.results)

    def go(self, step: int) -> None:
        results = self.session.go(step)
        if results is not None:
            self.show_results(results)

    def search_image(self, path: str) -> None:
        """Embed any image file and show its neighbours in the folder (marked on the map)."""
        if self.session.embedded is None:
            self.say("Embed the folder first, then search with an image.", error=True)
            return
        k = self.k.value()
        self.run("search", lambda progress, should_stop: self.session.search(path, k), self._on_search,
                 f"Embedding {Path(path).name}")

    def _on_search(self, results: Results) -> None:
        if self.session.show(results):
            self.show_results(results)
            self.say(f"Searched with {Path(results.query or self.session.paths([results.focus])[0]).name}"
                             if results.query or results.focus is not None else "Searched")

    def show_results(self, results: Results | None) -> None:
        """Show what the session shows: the results list, the image in focus, the marks on the map."""
        self.back.setEnabled(self.session.history.can_go(-1))
        self.forward.setEnabled(self.session.history.can_go(1))
        if results is None:
            return
        self.results.set_results(results_title(results), self.session.paths(results.rows),
                                 self.session.captions(results))
        if results.focus is not None:
            self.focus_card.set_image(self.session.paths([results.focus])[0], self.session.label_of(results.focus))
        elif results.query is not None:
            self.focus_card.set_image(results.query, "searched image (not part of the map)")
        else:
            self.focus_card.set_summary(f"{len(results.rows):,} images selected",
                                        "Click one for its neighbours, or act on them below.")
        self.tabs.setCurrentIndex(0)
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
