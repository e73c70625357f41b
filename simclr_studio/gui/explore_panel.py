"""Explore tab: embed a folder with a checkpoint, map it (PCA, then t-SNE), click through nearest
neighbours, select regions, search by a dropped image, and compare against a random encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.data import IMAGE_EXTENSIONS, ScanResult
from simclr_studio.gui.map_view import MapView
from simclr_studio.session.quality import ROWS as QUALITY_ROWS
from simclr_studio.gui.thumbnails import ThumbnailModel, ThumbnailView, array_to_qimage
from simclr_studio.gui.workers import ProgressJob, TaskRunner

K_NEIGHBOURS = 12
FOCUS_SIZE = 180


def dropped_image(mime) -> str | None:
    for url in mime.urls():
        if url.isLocalFile() and Path(url.toLocalFile()).suffix.lower() in IMAGE_EXTENSIONS \
                and Path(url.toLocalFile()).is_file():
            return url.toLocalFile()
    return None


class ExplorePanel(QWidget):
    embeddings_ready = Signal(bool)  # True when a run and its embeddings are loaded (export possible)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.run_dir: Path | None = None  # the run whose checkpoints are listed
        self._train_run: Path | None = None  # the run the Train tab shows
        self._chosen_run: Path | None = None  # a run picked through "Other checkpoint…"
        self.scan: ScanResult | None = None
        self.run = None  # TrainedModel of the embedded checkpoint
        self.emb = None  # Embeddings
        self.cache_file: Path | None = None
        self.index = None  # NeighbourIndex
        self.map_name = ""  # "pca" or "tsne": what the map shows
        self.focus: int | None = None
        self.result_rows: list[int] = []  # rows shown in the results grid
        self.result_mode = ""  # what they are: "neighbours", "selection" or "search"
        self.quality: dict | None = None
        self.from_cache = False
        self._summary = ""
        self.jobs: dict[str, ProgressJob] = {}
        self._map_jobs: dict[str, tuple] = {}  # name → (embeddings, job) of the latest t-SNE / k-means
        self.tasks = TaskRunner(self)
        self.tasks.result.connect(self._on_task)
        self._build()
        self._show_state("Train a run (or open a run folder), then embed its images here.")

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
        self.map_choice.addItems(["t-SNE", "PCA"])
        self.map_choice.currentIndexChanged.connect(lambda _: self._show_map())
        self.colour_choice = QComboBox()
        self.colour_choice.addItems(["Folder label", "k-means clusters"])
        self.colour_choice.currentIndexChanged.connect(lambda _: self._show_map())
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Checkpoint"))
        bar.addWidget(self.checkpoint)
        bar.addWidget(other)
        bar.addWidget(self.embed_button)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.progress)
        bar.addSpacing(16)
        bar.addWidget(QLabel("Map"))
        bar.addWidget(self.map_choice)
        bar.addWidget(QLabel("Colour"))
        bar.addWidget(self.colour_choice)
        bar.addStretch()
        self.state_label = QLabel()
        self.state_label.setObjectName("muted")

        self.map = MapView()
        self.map.point_clicked.connect(self.select_point)
        self.map.point_hovered.connect(self._on_hover)
        self.map.selection_made.connect(self.show_selection)
        self.hover = QLabel(self.map)  # the hovered image, in the map's top-right corner
        self.hover.setObjectName("hover")
        self.hover.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hover.hide()
        hint = QLabel("Click a point for its neighbours · Shift+drag: rectangle · Ctrl+drag: lasso · "
                      "wheel: zoom · drop an image file here to search")
        hint.setObjectName("muted")
        hint.setWordWrap(True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.map, 1)
        ll.addWidget(hint)

        self.quality_box = QGroupBox("What training bought")
        self.quality_grid = QGridLayout(self.quality_box)
        self.quality_labels: dict[tuple[str, str], QLabel] = {}
        for c, head in enumerate(["", "kNN", "Linear probe"]):
            label = QLabel(f"<b>{head}</b>")
            self.quality_grid.addWidget(label, 0, c)
        for r, (key, name) in enumerate(QUALITY_ROWS, start=1):
            self.quality_grid.addWidget(QLabel(name), r, 0)
            for c, metric in enumerate(("knn", "linear"), start=1):
                label = QLabel("–")
                self.quality_labels[(key, metric)] = label
                self.quality_grid.addWidget(label, r, c)
        self.quality_note = QLabel()
        self.quality_note.setObjectName("muted")
        self.quality_note.setWordWrap(True)
        self.quality_grid.addWidget(self.quality_note, len(QUALITY_ROWS) + 1, 0, 1, 3)

        self.focus_image = QLabel()
        self.focus_image.setFixedSize(FOCUS_SIZE, FOCUS_SIZE)
        self.focus_image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.focus_image.setObjectName("focus")
        self.focus_caption = QLabel("Nothing selected")
        self.focus_caption.setWordWrap(True)
        self.focus_caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        focus_row = QHBoxLayout()
        focus_row.addWidget(self.focus_image)
        focus_row.addWidget(self.focus_caption, 1)
        self.results_title = QLabel("<b>Neighbours</b>")
        self.results_model = ThumbnailModel(self, cache_size=2000, captions=True)
        self.results = ThumbnailView(caption_lines=2)
        self.results.setModel(self.results_model)
        self.results.setSelectionMode(ThumbnailView.SelectionMode.SingleSelection)
        self.results.clicked.connect(lambda index: self._result_clicked(index.row()))

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.quality_box)
        rl.addLayout(focus_row)
        rl.addWidget(self.results_title)
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

    # ---- sources ------------------------------------------------------------------------------
    def set_sources(self, run_dir: Path | None, scan: ScanResult | None) -> None:
        """The run whose checkpoints embed ``scan``'s images; called whenever the tab is shown."""
        from simclr_studio.run_folder import RunFolder

        if run_dir != self._train_run:  # the Train tab moved to another run: it wins again
            self._train_run, self._chosen_run = run_dir, None
        if self._chosen_run is not None:  # picked with "Other checkpoint…"
            run_dir = self._chosen_run
        scan_changed = scan is not self.scan and (scan is None or self.scan is None or scan.paths != self.scan.paths)
        run_changed = run_dir != self.run_dir
        self.scan, self.run_dir = scan, run_dir
        self.checkpoint.blockSignals(True)  # refilled (new epochs add checkpoints) without losing the choice
        current = self.checkpoint.currentData()
        self.checkpoint.clear()
        for path in (RunFolder(run_dir).checkpoints() if run_dir is not None else []):
            self.checkpoint.addItem(path.name, str(path))
        if current and self.checkpoint.findData(current) < 0 and Path(current).is_file() and not run_changed:
            self.checkpoint.addItem(Path(current).name, current)
        self.checkpoint.setCurrentIndex(max(self.checkpoint.findData(current), 0))
        self.checkpoint.blockSignals(False)
        if run_changed or scan_changed or (self.emb is not None and self.checkpoint.currentData() != current):
            self.clear()
        self._refresh_state()
        if self.emb is None and not self.jobs and self._cache_exists():
            self.embed()  # cached: reopening is instant

    def _cache_exists(self) -> bool:
        from simclr_studio.embeddings import cache_path
        from simclr_studio.run_folder import RunFolder

        if self.run_dir is None or self.scan is None or not self.checkpoint.currentData():
            return False
        try:
            size = RunFolder(self.run_dir).load_config().image_size
            return cache_path(self.run_dir, self.checkpoint.currentData(), size, self.scan.paths).is_file()
        except (OSError, ValueError):
            return False

    def _refresh_state(self) -> None:
        if self.emb is not None:
            return
        if self.run_dir is None:
            self._show_state("Train a run (or open a run folder), then embed its images here.")
        elif self.checkpoint.count() == 0:
            self._show_state(f"{self.run_dir.name} has no checkpoint yet: train at least one epoch.")
        elif self.scan is None or len(self.scan) == 0:
            self._show_state("Open the image folder to explore (File ▸ Open Folder).")
        else:
            self._show_state(f"Press Embed to compute features of {len(self.scan):,} images with "
                             f"{self.checkpoint.currentText()}.")
        self.embed_button.setEnabled(self.checkpoint.count() > 0 and self.scan is not None and len(self.scan) > 0)

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open checkpoint", str(self.run_dir or Path.home()),
                                              "Checkpoints (*.pt)")
        if path:
            self.use_checkpoint(Path(path))

    def use_checkpoint(self, path: Path) -> None:
        """Any saved checkpoint: its run folder is the one above ``checkpoints/``."""
        from simclr_studio.run_folder import RunFolder

        run_dir = RunFolder.of_checkpoint(path).path
        self._chosen_run = run_dir
        self.set_sources(self._train_run, self.scan)
        at = self.checkpoint.findData(str(path))
        if at < 0:
            self.checkpoint.addItem(path.name, str(path))
            at = self.checkpoint.count() - 1
        self.checkpoint.setCurrentIndex(at)

    def _checkpoint_changed(self) -> None:
        self.clear()
        self._refresh_state()

    def clear(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        self.jobs.clear()
        self.run = self.emb = self.index = self.cache_file = None
        self.map_name = ""
        self.focus = None
        self.quality = None
        self.map.set_points(np.zeros((0, 2)), np.zeros(0, int), [])
        self.results_model.set_images([])
        self.result_rows, self.result_mode = [], ""
        self.tasks.cancel("focus")
        self.tasks.cancel("hover")
        self.hover.hide()
        self.focus_image.clear()
        self.focus_caption.setText("Nothing selected")
        for label in self.quality_labels.values():
            label.setText("–")
        self.quality_note.setText("")
        self._set_busy(None)
        self.embeddings_ready.emit(False)

    # ---- background work ------------------------------------------------------------------------
    def _start(self, name: str, fn, on_done, label: str) -> None:
        old = self.jobs.pop(name, None)
        if old is not None:
            old.cancel()
        job = ProgressJob(fn, name, self)
        job.progress.connect(lambda done, total: self._on_progress(done, total))
        job.finished.connect(lambda result: (self.jobs.pop(name, None), on_done(result), self._set_busy(None)))
        job.failed.connect(lambda message: (self.jobs.pop(name, None), self._set_busy(None),
                                            self._show_state(f"{label} failed: {message}", error=True)))
        self.jobs[name] = job
        self._set_busy(label)
        job.start()

    def _set_busy(self, label: str | None) -> None:
        busy = bool(self.jobs)
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        if label:
            self.progress.setRange(0, 0)  # busy until the first progress report
            self._show_state(label + "…")
        elif not busy and self.emb is not None:
            self._show_state(self._summary)  # back to what is shown once the background work is done

    def _on_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def cancel(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        self.jobs.clear()
        self._set_busy(None)
        self._show_state("Cancelled")

    def _show_state(self, text: str, error: bool = False) -> None:
        self.state_label.setText(text)
        self.state_label.setObjectName("error" if error else "muted")
        self.state_label.style().unpolish(self.state_label)
        self.state_label.style().polish(self.state_label)

    # ---- embedding --------------------------------------------------------------------------
    def embed(self) -> None:
        from simclr_studio.device import available_devices
        from simclr_studio.embeddings import embed_cached
        from simclr_studio.projection import pca_2d
        from simclr_studio.trained import load_trained

        if self.run_dir is None or self.scan is None or self.checkpoint.count() == 0:
            self._refresh_state()
            return
        checkpoint, scan, run_dir = self.checkpoint.currentData(), self.scan, self.run_dir
        device = available_devices()[0]
        self.clear()

        def work(progress, should_stop):
            run = load_trained(run_dir, checkpoint)
            emb, path, cached = embed_cached(run, scan, device, progress=progress, should_stop=should_stop)
            if len(emb) == 0:
                raise ValueError("no image of the folder could be decoded")
            if "pca" not in emb.maps:
                emb.maps["pca"] = pca_2d(emb.features)
            return run, emb, path, cached

        self._start("embed", work, self._on_embedded, f"Embedding {len(scan):,} images")

    def _on_embedded(self, result) -> None:
        from simclr_studio.neighbours import NeighbourIndex

        self.run, self.emb, self.cache_file, cached = result
        self.index = NeighbourIndex(self.emb.features)
        self.colour_choice.setEnabled(True)
        if not self.emb.labeled:
            self.colour_choice.setCurrentIndex(1)
        self._show_map()
        self.from_cache = cached
        skipped = f", {len(self.emb.skipped)} could not be decoded" if self.emb.skipped else ""
        self._summary = (f"{len(self.emb):,} images · {self.emb.features.shape[1]} features · "
                         f"{Path(self.emb.checkpoint).name}" + (" (from cache)" if cached else "") + skipped)
        self._show_state(self._summary)
        self.embeddings_ready.emit(True)
        if self.emb.labeled:
            self.compute_quality()

    def _show_map(self) -> None:
        """Show the chosen map, computing t-SNE (or the k-means colours) in the background first."""
        if self.emb is None:
            return
        want = "tsne" if self.map_choice.currentText() == "t-SNE" else "pca"
        if want not in self.emb.maps:
            self._compute_tsne()
            want = "pca"  # PCA at once; t-SNE replaces it when ready
        by_cluster = self.colour_choice.currentIndex() == 1 or not self.emb.labeled
        if by_cluster and "clusters" not in self.emb.maps:
            self._compute_clusters()
            by_cluster = False
        if by_cluster:
            groups = self.emb.maps["clusters"][:, 0].astype(np.int64)
            names = [f"cluster {i + 1}" for i in range(int(groups.max()) + 1)] if len(groups) else []
        elif self.emb.labeled:
            names = list(self.emb.classes)
            groups = self.emb.labels.copy()
            if (groups < 0).any():  # images beside the class folders: drawn too, as their own group
                groups[groups < 0] = len(names)
                names.append("unlabeled")
        else:
            groups, names = np.zeros(len(self.emb), np.int64), ["images"]
        self.map_name = want
        self.map.set_points(self.emb.maps[want], groups, names)
        self._mark()

    def _map_job_running(self, name: str) -> bool:
        """t-SNE and k-means cannot be interrupted: while one runs for these embeddings (even after
        Cancel), it is not started again; its result is kept in the embeddings when it lands."""
        job = self._map_jobs.get(name)
        return name in self.jobs or (job is not None and job[0] is self.emb and job[1].is_running())

    def _compute_tsne(self) -> None:
        from simclr_studio.embeddings import save
        from simclr_studio.projection import tsne_2d

        if self._map_job_running("tsne"):
            return
        emb, path = self.emb, self.cache_file

        def work(progress, should_stop):
            coords = tsne_2d(emb.features)
            emb.maps["tsne"] = coords
            if path is not None:
                save(emb, path)  # next time the map is instant
            return coords

        self._start("tsne", work, lambda _: self._show_map() if self.emb is emb else None,
                    f"t-SNE of {len(emb):,} points (PCA shown meanwhile)")
        self._map_jobs["tsne"] = (emb, self.jobs["tsne"])

    def _compute_clusters(self) -> None:
        from simclr_studio.embeddings import save
        from simclr_studio.projection import kmeans_labels

        if self._map_job_running("clusters"):
            return
        emb, path = self.emb, self.cache_file
        k = len(emb.classes) if emb.labeled else 10

        def work(progress, should_stop):
            # Stored as an [N, 2] map so it shares the cache file (second column unused).
            clusters = kmeans_labels(emb.features, k)
            emb.maps["clusters"] = np.stack([clusters, clusters], 1).astype(np.float32)
            if path is not None:
                save(emb, path)
            return clusters

        self._start("clusters", work, lambda _: self._show_map() if self.emb is emb else None,
                    f"k-means ({k} clusters)")
        self._map_jobs["clusters"] = (emb, self.jobs["clusters"])

    # ---- quality --------------------------------------------------------------------------------
    def compute_quality(self) -> None:
        from simclr_studio.device import available_devices
        from simclr_studio.session.quality import measure_quality

        emb, run, scan = self.emb, self.run, self.scan
        if emb is None or not emb.labeled or scan is None:
            return
        device = available_devices()[0]
        self._start("quality", lambda progress, should_stop: measure_quality(emb, run, scan, device, progress,
                                                                             should_stop),
                    self._on_quality, "Measuring kNN and linear-probe accuracy")

    def _on_quality(self, result: dict) -> None:
        self.quality = result
        for key, _ in QUALITY_ROWS:
            for metric in ("knn", "linear"):
                value = getattr(result.row(key), f"{metric}_accuracy")
                self.quality_labels[(key, metric)].setText("–" if value is None else f"{value:.3f}")
        n, total = result.n, result.total
        sample = f"a class-balanced sample of {n:,} of {total:,}" if n < total else f"{n:,}"
        gain = result.gain
        self.quality_note.setText(
            f"On {sample} labeled images. kNN: leave-one-out, k={result.trained.k}, same as the Train tab. "
            f"Linear probe: top-1 on a held-out 20 %. The checkpoint's kNN is {gain:+.3f} over the better of "
            "the random encoder and raw pixels.")

    # ---- neighbours, selection, search --------------------------------------------------------
    def select_point(self, row: int) -> None:
        """Focus one image: show it large with its nearest neighbours in feature space."""
        if self.index is None or row < 0 or row >= len(self.emb):
            return
        self.focus = row
        found = self.index.query_row(row, K_NEIGHBOURS)
        self._show_results("neighbours", f"<b>{K_NEIGHBOURS} nearest neighbours</b> (cosine similarity of features)",
                           list(found.indices), [f"{s:.3f}" for s in found.similarities])
        self._show_focus(self.emb.paths[row], self._label_of(row))
        self._mark()

    def _label_of(self, row: int) -> str:
        label = int(self.emb.labels[row])
        return self.emb.classes[label] if 0 <= label < len(self.emb.classes) else ""

    def _show_results(self, mode: str, title: str, rows: list[int], scores: list[str]) -> None:
        self.result_mode = mode
        self.result_rows = [int(r) for r in rows]
        self.results_title.setText(title)
        captions = [" · ".join(t for t in (s, self._label_of(r)) if t) for r, s in zip(self.result_rows, scores, strict=True)]
        self.results_model.set_images([self.emb.paths[r] for r in self.result_rows], captions)

    def _show_focus(self, path: str, caption: str) -> None:
        self.focus_caption.setText(f"<b>{Path(path).name}</b><br>{caption}<br><small>{path}</small>")
        self.focus_image.setPixmap(QPixmap())
        self.tasks.submit("focus", lambda: self._load_image(path, FOCUS_SIZE))

    def _mark(self) -> None:
        """Highlight on the map what the results grid shows: neighbours (and their image) or a selection."""
        rows = self.result_rows
        self.map.mark(self.focus, rows if self.result_mode in ("neighbours", "search") else [],
                      rows if self.result_mode == "selection" else [])

    def _result_clicked(self, i: int) -> None:
        if 0 <= i < len(self.result_rows):
            self.select_point(self.result_rows[i])  # the selection moves; the map highlights it

    def show_selection(self, rows) -> None:
        if self.emb is None:
            return
        rows = list(np.asarray(rows, dtype=np.int64))
        self.focus = None
        self._show_results("selection", f"<b>Selection</b>: {len(rows):,} images", rows, [""] * len(rows))
        self._mark()

    def search_image(self, path: str) -> None:
        """Embed any image file and show its neighbours in the folder (marked on the map)."""
        from simclr_studio.data import decode_image, to_chw_tensor
        from simclr_studio.evaluate import extract_features

        if self.run is None or self.index is None:
            self._show_state("Embed the folder first, then drop an image to search it.", error=True)
            return
        run, index = self.run, self.index

        def work(progress, should_stop):
            image = to_chw_tensor(decode_image(path, run.config.image_size))[None]
            device = next(run.model.backbone.parameters()).device
            feature = extract_features(run.model.backbone, [image], device)[0]
            return index.query_vector(feature, K_NEIGHBOURS)

        def done(found) -> None:
            if index is not self.index:
                return
            self.focus = None
            self._show_results("search", f"<b>Search</b>: {Path(path).name}", list(found.indices),
                               [f"{s:.3f}" for s in found.similarities])
            self._show_focus(path, "dropped image (not part of the map)")
            self._mark()
            self._show_state(f"Searched with {path}")

        self._start("search", work, done, f"Embedding {Path(path).name}")

    def _on_hover(self, row: int) -> None:
        if row < 0 or self.emb is None:
            self.tasks.cancel("hover")  # a thumbnail still loading must not pop up after the mouse left
            self.hover.hide()
            return
        path, label = self.emb.paths[row], self._label_of(row)
        self.hover.setToolTip(path)
        self.tasks.submit("hover", lambda: (self._load_image(path, 112), label))

    @staticmethod
    def _load_image(path: str, size: int):
        """Decoded on a pool thread; a QImage may cross threads (a QPixmap may not)."""
        from simclr_studio.data import decode_image

        return array_to_qimage(decode_image(path, size))

    def _on_task(self, name: str, result, error) -> None:
        if error is not None:
            return  # an unreadable image just shows nothing
        if name == "focus":
            self.focus_image.setPixmap(QPixmap.fromImage(result))
        elif name == "hover":
            image, label = result
            self.hover.setPixmap(QPixmap.fromImage(image))
            self.hover.setFixedSize(QSize(image.width() + 8, image.height() + 8))
            self.hover.move(self.map.width() - self.hover.width() - 8, 8)
            self.hover.show()
            self.hover.raise_()

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
