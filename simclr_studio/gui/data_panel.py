"""The Data tab: what the imported folder holds, its classes, what was skipped, and a thumbnail grid."""

from __future__ import annotations

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
from simclr_studio.gui.thumbnails import ThumbnailModel, ThumbnailView


class DataPanel(QWidget):
    open_folder_requested = Signal()
    open_demo_requested = Signal()
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
        empty_layout = QVBoxLayout(empty)
        empty_layout.addStretch()
        empty_layout.addWidget(hint)
        empty_layout.addLayout(steps)
        empty_layout.addSpacing(12)
        empty_layout.addLayout(buttons)
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
        self.skipped = QTableWidget(0, 2)
        self.skipped.setHorizontalHeaderLabels(["Skipped file", "Reason"])
        self.skipped.verticalHeader().hide()
        self.skipped.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.skipped.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.skipped.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.classes_box = QGroupBox("Classes")
        QVBoxLayout(self.classes_box).addWidget(self.classes)
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
        splitter = QSplitter()
        splitter.addWidget(side)
        splitter.addWidget(self.grid)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([300, 800])
        QVBoxLayout(loaded).addWidget(splitter)

        for page in (empty, scanning, loaded):
            self.stack.addWidget(page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)

    def show_scanning(self, folder: str) -> None:
        self.scan_label.setText(f"Scanning {folder}…")
        self.stack.setCurrentIndex(1)

    def scan_progress(self, count: int, total: int = 0) -> None:
        self.scan_label.setText(f"Scanning… {count:,} files")

    def show_empty(self) -> None:
        self.stack.setCurrentIndex(0)

    def show_scan(self, scan: ScanResult) -> None:
        self.scan = scan
        labeled = scan.labeled
        text = f"<b>{len(scan):,} images</b> in <code>{scan.root}</code><br>"
        text += (f"{len(scan.classes)} classes from subfolders" if labeled else "no class subfolders: unlabeled")
        if scan.skipped:
            text += f"<br>{len(scan.skipped):,} files skipped"
        self.summary.setText(text)
        counts = scan.class_counts() if labeled else {}
        self.classes.setRowCount(len(counts))
        for row, (name, count) in enumerate(counts.items()):
            self.classes.setItem(row, 0, QTableWidgetItem(name))
            item = QTableWidgetItem(f"{count:,}")
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.classes.setItem(row, 1, item)
        self.classes_box.setVisible(labeled)
        shown = scan.skipped[:5000]  # the full list is in the scan report; a table of millions helps nobody
        self.skipped.setRowCount(len(shown))
        for row, skipped in enumerate(shown):
            self.skipped.setItem(row, 0, QTableWidgetItem(skipped.path))
            self.skipped.setItem(row, 1, QTableWidgetItem(skipped.reason))
        self.skipped_box.setVisible(bool(scan.skipped))
        names = [scan.classes[label] if label >= 0 else "" for label in scan.labels] if labeled else None
        self.model.set_images(scan.paths, names)
        self.stack.setCurrentIndex(2)
