"""The Data tab: what the imported folder holds, its classes, what was skipped, and a thumbnail grid."""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote, unquote

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.data import ScanResult
from simclr_studio.gui.thumbnails import ImagePreview, ThumbnailModel, ThumbnailView

RECENT_SHOWN = 5  # recent folders and runs on the welcome page
SKIPPED_SHOWN = 5000  # the full list is in the scan report; a table of millions helps nobody


def counted(n: int, word: str) -> str:
    """"1 file", "2 files": a count with its noun."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


class SkippedTable(QTableWidget):
    """Skipped files and why. Both columns can be dragged; until the user does, the path column keeps
    at least half the width (elided in the middle, so the folder's start and the file name both show),
    more when the reasons are short. Each cell's tool tip holds the full path and the full reason."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["Skipped file", "Reason"])
        self.verticalHeader().hide()
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(60)
        self.user_sized = False
        self._fitting = False
        self._reason_width = 0  # what the longest reason needs
        header.sectionResized.connect(self._on_section_resized)

    def set_files(self, root: str, skipped: list) -> None:
        self.setRowCount(len(skipped))
        for row, item in enumerate(skipped):
            shown = os.path.relpath(item.path, root) if item.path.startswith(root) else item.path
            tip = f"{item.path}\n{item.reason}"
            for column, text in enumerate((shown, item.reason)):
                cell = QTableWidgetItem(text)
                cell.setToolTip(tip)
                self.setItem(row, column, cell)
        self._reason_width = self.sizeHintForColumn(1)
        self._fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self.user_sized:
            return
        self._fitting = True
        width = self.viewport().width()
        self.setColumnWidth(0, max(120, width // 2, width - self._reason_width))
        self._fitting = False

    def _on_section_resized(self, index: int, old: int, new: int) -> None:
        if index == 0 and not self._fitting:
            self.user_sized = True  # the user's width stays


class DataPanel(QWidget):
    open_folder_requested = Signal()
    open_demo_requested = Signal()
    recent_requested = Signal(str)  # a recent folder or run folder, to open again
    cancel_scan_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scan: ScanResult | None = None
        self.stack = QStackedWidget()

        # Empty state: what to do first.
        empty = QWidget()
        hint = QLabel("<h2>Welcome to SIMCLR Studio</h2>"
                      "<p>Teach a network what your images have in common, without labels.</p>")
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setObjectName("hint")
        steps = QHBoxLayout()
        steps.addStretch()
        for number, title, text in (
            (1, "Drop a folder",
             "Any folder of images; subfolders are read as<br>classes, used only to measure quality."),
            (2, "Preview &amp; train", "See the two augmented views of each image,<br>then train on your GPU or CPU."),
            (3, "Explore &amp; export", "Click through the map of what it learned;<br>export the encoder's weights."),
        ):
            card = QLabel(f"<p style='font-size:15pt; font-weight:600'>{number} · {title}</p><p>{text}</p>")
            card.setObjectName("welcomeStep")
            card.setAlignment(Qt.AlignmentFlag.AlignCenter)
            card.setMinimumWidth(260)
            steps.addWidget(card)
        steps.addStretch()
        buttons = QHBoxLayout()
        open_button = QPushButton("Open Folder…")
        open_button.clicked.connect(self.open_folder_requested)
        demo_button = QPushButton("Try it on the demo images")
        demo_button.setObjectName("primary")
        demo_button.clicked.connect(self.open_demo_requested)
        buttons.addStretch()
        buttons.addWidget(open_button)
        buttons.addWidget(demo_button)
        buttons.addStretch()
        # Recent folders and runs (File ▸ Recent Folders' list), one click away.
        self.recent = QLabel()
        self.recent.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.recent.setTextFormat(Qt.TextFormat.RichText)
        self.recent.linkActivated.connect(lambda link: self.recent_requested.emit(unquote(link)))
        self.recent.hide()
        empty_layout = QVBoxLayout(empty)
        empty_layout.addStretch()
        empty_layout.addWidget(hint)
        empty_layout.addLayout(steps)
        empty_layout.addSpacing(12)
        empty_layout.addLayout(buttons)
        empty_layout.addSpacing(12)
        empty_layout.addWidget(self.recent)
        empty_layout.addStretch()

        # Scanning state.
        scanning = QWidget()
        self.scan_label = QLabel("Scanning…")
        self.scan_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.scan_bar = QProgressBar()
        self.scan_bar.setRange(0, 0)  # busy: the total is unknown while walking
        self.scan_bar.setMaximumWidth(420)
        scan_layout = QVBoxLayout(scanning)
        scan_layout.addStretch()
        scan_layout.addWidget(self.scan_label)
        scan_layout.addWidget(self.scan_bar, alignment=Qt.AlignmentFlag.AlignCenter)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_scan_requested)
        scan_layout.addWidget(self.cancel_button, alignment=Qt.AlignmentFlag.AlignCenter)
        self.back_button = QPushButton("Back")  # after a failed scan: to what was open before
        self.back_button.clicked.connect(self.show_previous)
        self.back_button.hide()
        scan_layout.addWidget(self.back_button, alignment=Qt.AlignmentFlag.AlignCenter)
        scan_layout.addStretch()

        # Loaded state.
        loaded = QWidget()
        self.summary = QLabel()
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setWordWrap(True)
        self.classes = QTableWidget(0, 2)
        self.classes.setHorizontalHeaderLabels(["Class", "Images"])
        self.classes.verticalHeader().hide()
        self.classes.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.classes.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        # A click on a class shows only its images; "Show all" brings the rest back.
        self.classes.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.classes.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.classes.itemSelectionChanged.connect(self._on_class_selected)
        self.classes.setToolTip("Click a class to show only its images")
        self.filter_label = QLabel()
        self.show_all_button = QPushButton("Show all")
        self.show_all_button.clicked.connect(self.classes.clearSelection)
        filter_row = QHBoxLayout()
        filter_row.addWidget(self.filter_label, 1)
        filter_row.addWidget(self.show_all_button)
        self.filter_label.hide()
        self.show_all_button.hide()
        self.skipped = SkippedTable()
        self.classes_box = QGroupBox("Classes")
        classes_layout = QVBoxLayout(self.classes_box)
        classes_layout.addWidget(self.classes)
        classes_layout.addLayout(filter_row)
        self.skipped_box = QGroupBox("Skipped files")
        QVBoxLayout(self.skipped_box).addWidget(self.skipped)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.summary)
        side_layout.addWidget(self.classes_box, 2)
        side_layout.addWidget(self.skipped_box, 1)
        self.model = ThumbnailModel(self)
        self.grid = ThumbnailView()
        self.grid.setModel(self.model)
        self.grid.doubleClicked.connect(self.open_preview)
        self.preview: ImagePreview | None = None
        self._names: list[str] = []  # each image's class name ("" unlabeled), for the class filter
        splitter = QSplitter()
        splitter.addWidget(side)
        splitter.addWidget(self.grid)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([380, 720])  # room for the skipped files' two columns
        QVBoxLayout(loaded).addWidget(splitter)

        for page in (empty, scanning, loaded):
            self.stack.addWidget(page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)

    def set_recent(self, paths: list[str]) -> None:
        """The welcome page's list of recent folders and runs (the newest first; at most RECENT_SHOWN)."""
        links = [f"<a href='{quote(p)}'>{html.escape(Path(p).name or p)}</a>"
                 f" <span style='color:gray'>{html.escape(str(Path(p).parent))}</span>"
                 for p in paths[:RECENT_SHOWN]]
        self.recent.setText("<p><b>Recent</b></p>" + "<br>".join(links))
        self.recent.setVisible(bool(links))

    def show_scanning(self, folder: str) -> None:
        self.scan_label.setText(f"Scanning {folder}…")
        self.scan_bar.show()
        self.cancel_button.show()
        self.back_button.hide()
        self.stack.setCurrentIndex(1)

    def scan_progress(self, count: int, total: int = 0) -> None:
        # The walk reports files seen; its last report (total > 0) the images found, then a sample is read.
        text = f"Found {counted(total, 'image')}; reading a few…" if total else f"Scanning… {counted(count, 'file')}"
        self.scan_label.setText(text)

    def show_scan_failed(self, message: str) -> None:
        """The scan ended in an error: say so where its progress was, and offer the way back."""
        self.scan_label.setText(f"<b>The scan failed</b><br>{message}")
        self.scan_bar.hide()
        self.cancel_button.hide()
        self.back_button.show()
        self.stack.setCurrentIndex(1)

    def show_previous(self) -> None:
        if self.scan is not None:
            self.stack.setCurrentIndex(2)
        else:
            self.show_empty()

    def show_empty(self) -> None:
        self.stack.setCurrentIndex(0)

    def show_scan(self, scan: ScanResult) -> None:
        self.scan = scan
        labeled = scan.labeled
        text = f"<b>{counted(len(scan), 'image')}</b> in <code>{scan.root}</code><br>"
        text += (f"{len(scan.classes):,} classes from subfolders" if labeled  # labeled: two or more
                 else "no class subfolders: unlabeled")
        if scan.skipped:
            text += f"<br>{counted(len(scan.skipped), 'file')} skipped"
        self.summary.setText(text)
        counts = scan.class_counts() if labeled else {}
        self.classes.blockSignals(True)  # a new folder shows all its images
        self.classes.clearSelection()
        self.classes.setRowCount(len(counts))
        for row, (name, count) in enumerate(counts.items()):
            self.classes.setItem(row, 0, QTableWidgetItem(name))
            item = QTableWidgetItem(f"{count:,}")
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.classes.setItem(row, 1, item)
        self.classes.blockSignals(False)
        self.classes_box.setVisible(labeled)
        self.skipped.set_files(scan.root, scan.skipped[:SKIPPED_SHOWN])
        self.skipped_box.setTitle("Skipped files" if len(scan.skipped) <= SKIPPED_SHOWN
                                  else f"Skipped files (the first {SKIPPED_SHOWN:,})")
        self.skipped_box.setVisible(bool(scan.skipped))
        self._names = [scan.classes[label] if label >= 0 else "" for label in scan.labels] if labeled else []
        self._show_class(None)
        self.stack.setCurrentIndex(2)

    def _on_class_selected(self) -> None:
        rows = self.classes.selectionModel().selectedRows()
        self._show_class(self.classes.item(rows[0].row(), 0).text() if rows else None)

    def _show_class(self, name: str | None) -> None:
        """The grid shows the images of class ``name``, or all of them."""
        scan = self.scan
        if scan is None:
            return
        if name is None:
            self.model.set_images(scan.paths, self._names or None)
        else:
            keep = [i for i, label in enumerate(self._names) if label == name]
            self.model.set_images([scan.paths[i] for i in keep], [name] * len(keep))
            self.filter_label.setText(f"Showing {name}: {counted(len(keep), 'image')} of {len(scan):,}")
        self.filter_label.setVisible(name is not None)
        self.show_all_button.setVisible(name is not None)

    def open_preview(self, index) -> None:
        """A larger view of a thumbnail that was double-clicked."""
        row = index.row()
        if not index.isValid() or row >= len(self.model.paths):
            return
        if self.preview is not None:
            self.preview.close()
        self.preview = ImagePreview(self.model.paths[row], self.model.labels[row], self)
        self.preview.show()
