"""The Explore tab's curation views: near-duplicate groups (a threshold slider; the number of groups
follows it live), outliers (a ranked grid) and likely mislabeled images (a ranked grid, per-class
agreement and the confusion matrix). Views of the panel's ``Curation``: the work runs through the
panel's ``run``; clicking an image focuses it, a group or a class becomes the selection."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QThreadPool, QTimer
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DuplicateGroup
from simclr_studio.gui.explore_results import ResultsList
from simclr_studio.gui.thumbnails import load_qimage
from simclr_studio.gui.workers import Throttle, Workers, plain
from simclr_studio.session.curation import OUTLIER_COUNT

STRIPS_PER_TURN = 8
STRIP_THUMB = 64  # a duplicate group's images, side by side
STRIP_IMAGES = 6  # shown per group (the rest: "+N")
GROUPS_SHOWN = 40  # groups listed at once (the report has them all): each strip is ~8 widgets to build
COLLAPSED_SHARE = 0.2  # a group holding more of the folder than this is a warning, not a finding
SLIDER_STEPS = 1000  # the threshold slider moves in steps of 0.001 (or finer near 1)


def save_report(host, parent: QWidget) -> None:
    """Write what was found so far as the CSV ``simclr-studio curate`` writes (kind,group,path,score)."""
    from simclr_studio.curate import write_findings_csv

    threshold = host.duplicates.threshold() if host.curation.duplicates is not None else None
    findings = host.curation.findings(threshold)
    if not findings:
        host.say("Nothing found yet: find duplicates, outliers or mislabeled images first.", error=True)
        return
    path, _ = QFileDialog.getSaveFileName(parent, "Save the findings", str(host.session.run_dir or ""),
                                          "CSV (*.csv)")
    if path:
        try:
            written = write_findings_csv(path, findings, overwrite=True)  # the save dialog asked already
        except (OSError, ValueError) as exc:
            host.say(f"Cannot write the report: {exc}", error=True)
            return
        host.say(f"Wrote {len(findings):,} findings to {written}")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def header(button: QPushButton, *more: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(button)
    for widget in more:
        row.addWidget(widget)
    row.addStretch()
    return row


class GroupStrip(QWidget):
    """One duplicate group: its images side by side, each with its similarity to the first."""

    def __init__(self, number: int, group: DuplicateGroup, paths: list[str], loads: Workers):
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        title = QLabel(f"<b>{number}</b><br><small>{len(group.rows)} images</small>")
        title.setFixedWidth(72)
        layout.addWidget(title)
        for k, (row, score) in enumerate(zip(group.rows[:STRIP_IMAGES], group.scores, strict=False)):
            cell = QLabel()
            cell.setFixedSize(STRIP_THUMB + 4, STRIP_THUMB + 4)
            cell.setAlignment(Qt.AlignmentFlag.AlignCenter)
            cell.setToolTip(f"{paths[row]}\nsimilarity to the first: {score:.4f}")
            layout.addWidget(cell)
            loads.start((number, k), plain(lambda p=paths[row]: load_qimage(p, STRIP_THUMB)),
                        on_result=lambda image, c=cell: c.setPixmap(QPixmap.fromImage(image)))
        if len(group.rows) > STRIP_IMAGES:
            layout.addWidget(QLabel(f"+{len(group.rows) - STRIP_IMAGES}"))
        layout.addStretch()


class DuplicatesView(QWidget):
    def __init__(self, host):
        super().__init__()
        self.host = host
        self.find = QPushButton("Find duplicates")
        self.find.clicked.connect(self.search)
        self.report = QPushButton("Save report…")
        self.report.clicked.connect(lambda: save_report(self.host, self))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.valueChanged.connect(lambda _: self._threshold_moved())
        self.summary = QLabel()
        self.summary.setObjectName("muted")
        self.summary.setWordWrap(True)
        self.groups = QListWidget()
        self.groups.itemClicked.connect(self._group_clicked)
        self._groups: list[DuplicateGroup] = []
        self._drawing = 0  # which drawing of the strips is current
        self._loads = Workers(self, QThreadPool.globalInstance())
        self._regroup = Throttle(self._show_groups, interval_ms=150, debounce=True, parent=self)
        layout = QVBoxLayout(self)
        layout.addLayout(header(self.find, self.report))
        row = QHBoxLayout()
        similarity = QLabel("Similarity ≥")
        similarity.setToolTip("A pair's similarity is the highest of three: the cosine of the encoder's features; "
                              "that of the images' pixel signatures (low frequencies of a grey thumbnail), which "
                              "catch re-encoded and resized copies; and, among each image's 20 nearest, how well "
                              "one matches the best crop of the other, which catches cropped copies.")
        row.addWidget(similarity)
        row.addWidget(self.slider, 1)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addWidget(self.groups, 1)
        self.refresh()

    def refresh(self) -> None:
        found = self.host.curation.duplicates
        current = found is not None and found.of is self.host.session.embedded
        self.find.setEnabled(self.host.session.embedded is not None)
        self.slider.setEnabled(current)
        if not current:
            self._loads.cancel_all()
            self.groups.clear()
            self._groups = []
            self.summary.setText("Groups of images that look nearly the same to the encoder, or pixel for pixel: "
                                 "copies, re-encodings, resized versions.")

    def search(self) -> None:
        self.host.run("duplicates", self.host.curation.find_duplicates, self._found, "Finding near-duplicates")

    def _found(self, found) -> None:
        if not self.host.curation.apply(found):
            return
        floor = found.pairs.floor
        self.slider.blockSignals(True)
        self.slider.setValue(self._to_step(max(floor, DEFAULT_DUPLICATE_THRESHOLD)))
        self.slider.blockSignals(False)
        self.refresh()
        self._threshold_moved()

    def _to_step(self, threshold: float) -> int:
        floor = self.host.curation.duplicates.pairs.floor
        return round((threshold - floor) / max(1e-9, 1.0 - floor) * SLIDER_STEPS)

    def threshold(self) -> float:
        floor = self.host.curation.duplicates.pairs.floor
        return floor + (1.0 - floor) * self.slider.value() / SLIDER_STEPS

    def _threshold_moved(self) -> None:
        """The count follows the slider at once; the groups are drawn once it rests."""
        found = self.host.curation.duplicates
        if found is None:
            return
        t = self.threshold()
        self.summary.setText(f"≥ {t:.3f}: {plural(found.pairs.count(t), 'group')}")
        self._regroup()

    def _show_groups(self) -> None:
        found = self.host.curation.duplicates
        if found is None or found.of is not self.host.session.embedded:
            return
        t = self.threshold()
        self._groups = found.pairs.groups(t)
        images = sum(len(g.rows) for g in self._groups)
        shown = "" if len(self._groups) <= GROUPS_SHOWN else f" (the first {GROUPS_SHOWN} listed; the report has all)"
        text = f"≥ {t:.3f}: {plural(len(self._groups), 'group')}, {images:,} images{shown}. Click a group to select it."
        largest = max((len(g.rows) for g in self._groups), default=0)
        if largest > COLLAPSED_SHARE * found.pairs.n:  # not duplicates: the features barely tell images apart
            text += (f" One group holds {largest / found.pairs.n:.0%} of the images: at this threshold the features "
                     "do not tell them apart (an early checkpoint?). Raise the threshold, or train longer.")
        self.summary.setText(text)
        self._loads.cancel_all()
        self.groups.clear()
        self._drawing += 1
        self._add_strips(self._drawing, 0)

    def _add_strips(self, drawing: int, start: int) -> None:
        """A few group strips per turn of the event loop (40 at once took the window ~60 ms), until
        GROUPS_SHOWN; a newer threshold's drawing makes this one stop."""
        found = self.host.curation.duplicates
        if drawing != self._drawing or found is None:
            return
        paths = found.of.embeddings.paths
        end = min(start + STRIPS_PER_TURN, len(self._groups), GROUPS_SHOWN)
        for index in range(start, end):
            strip = GroupStrip(index + 1, self._groups[index], paths, self._loads)
            item = QListWidgetItem(self.groups)
            item.setSizeHint(QSize(strip.sizeHint().width(), STRIP_THUMB + 16))
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.groups.setItemWidget(item, strip)
        if end < min(len(self._groups), GROUPS_SHOWN):
            QTimer.singleShot(0, lambda: self._add_strips(drawing, end))

    def _group_clicked(self, item: QListWidgetItem) -> None:
        index = item.data(Qt.ItemDataRole.UserRole)
        group = self._groups[index]
        self.host.show_selection(list(group.rows), f"duplicate group {index + 1}")


class OutliersView(QWidget):
    def __init__(self, host):
        super().__init__()
        self.host = host
        self.count = QSpinBox()
        self.count.setRange(1, 100_000)
        self.count.setValue(OUTLIER_COUNT)
        self.find = QPushButton("Find outliers")
        self.find.clicked.connect(self.search)
        select_all = QPushButton("Select all")
        select_all.clicked.connect(self._select_all)
        report = QPushButton("Save report…")
        report.clicked.connect(lambda: save_report(self.host, self))
        self.list = ResultsList()
        self.list.activated.connect(self._activated)
        layout = QVBoxLayout(self)
        layout.addLayout(header(self.find, self.count, select_all, report))
        layout.addWidget(self.list, 1)
        self.refresh()

    def refresh(self) -> None:
        self.find.setEnabled(self.host.session.embedded is not None)
        found = self.host.curation.outliers
        if found is None or found.of is not self.host.session.embedded:
            self.list.set_results("The images least like their nearest neighbours, most unusual first.", [], [])

    def search(self) -> None:
        count = self.count.value()
        self.host.run("outliers", lambda progress, stop: self.host.curation.find_outliers(count, progress, stop),
                      self._found, "Finding outliers")

    def _found(self, found) -> None:
        if not self.host.curation.apply(found):
            return
        paths = self.host.session.paths(found.rows)
        captions = [f"#{i + 1}\n{s:.3f}" for i, s in enumerate(found.scores)]
        self.list.set_results(f"<b>{len(paths):,} outliers</b>, most unusual first (score: 1 − mean similarity "
                              "to the 10 nearest)", paths, captions)

    def _activated(self, i: int) -> None:
        found = self.host.curation.outliers
        if found is not None and i < len(found.rows):
            self.host.select_point(int(found.rows[i]))

    def _select_all(self) -> None:
        found = self.host.curation.outliers
        if found is not None:
            self.host.show_selection(found.rows.tolist(), f"{len(found.rows)} outliers")


class MislabelsView(QWidget):
    def __init__(self, host):
        super().__init__()
        self.host = host
        self.find = QPushButton("Check labels")
        self.find.clicked.connect(self.search)
        report = QPushButton("Save report…")
        report.clicked.connect(lambda: save_report(self.host, self))
        self.summary = QLabel("Images whose nearest neighbours vote for another class than their folder's.")
        self.summary.setObjectName("muted")
        self.summary.setWordWrap(True)
        self.list = ResultsList()
        self.list.activated.connect(self._activated)
        self.classes = QTableWidget()
        self.classes.setMaximumHeight(220)
        self.classes.cellClicked.connect(self._class_clicked)
        layout = QVBoxLayout(self)
        layout.addLayout(header(self.find, report))
        layout.addWidget(self.summary)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.classes)
        self.refresh()

    def refresh(self) -> None:
        emb = self.host.session.embeddings
        self.find.setEnabled(emb is not None and emb.labeled)
        found = self.host.curation.mislabels
        if found is None or found.of is not self.host.session.embedded:
            self.list.set_results("", [], [])
            self.classes.clear()
            self.classes.setRowCount(0)
            self.classes.setColumnCount(0)
            if emb is not None and not emb.labeled:
                self.summary.setText("This folder has no class subfolders: there are no labels to check.")

    def search(self) -> None:
        self.host.run("mislabels", self.host.curation.find_mislabels, self._found, "Checking the folder's labels")

    def _found(self, found) -> None:
        if not self.host.curation.apply(found):
            return
        emb = found.of.embeddings
        names = emb.classes
        rows = [m.row for m in found.found]
        captions = [f"{names[m.label]}→{names[m.vote]}\n{m.confidence:.2f}" for m in found.found]
        self.list.set_results(f"<b>{len(rows):,} likely mislabeled</b> (folder→neighbours' vote, confidence)",
                              self.host.session.paths(rows), captions)
        report = found.report
        self.summary.setText(f"The {report.k} nearest neighbours' vote agrees with the folder for "
                             f"{report.accuracy:.1%} of the labelled images. Below: per class, then the confusion "
                             "(row: folder, column: vote). Click a class to select its images.")
        self._show_confusion(names, report)

    def _show_confusion(self, names: list[str], report) -> None:
        c = len(names)
        table = self.classes
        table.clear()
        table.setRowCount(c)
        table.setColumnCount(c + 1)
        table.setHorizontalHeaderLabels(["agrees", *names])
        table.setVerticalHeaderLabels(names)
        peak = max(1, int(report.confusion.max()))
        for i in range(c):
            share = report.per_class[i]
            table.setItem(i, 0, QTableWidgetItem("–" if share != share else f"{share:.0%}"))
            for j in range(c):
                n = int(report.confusion[i, j])
                item = QTableWidgetItem(str(n) if n else "")
                if n and i != j:
                    item.setBackground(QColor(214, 39, 40, 40 + int(160 * n / peak)))
                table.setItem(i, j + 1, item)
        table.resizeColumnsToContents()

    def _activated(self, i: int) -> None:
        found = self.host.curation.mislabels
        if found is not None and i < len(found.found):
            self.host.select_point(found.found[i].row)

    def _class_clicked(self, row: int, _column: int) -> None:
        emb = self.host.session.embeddings
        if emb is not None and emb.labeled and row < len(emb.classes):
            rows = [r for r, label in enumerate(emb.labels) if label == row]
            self.host.show_selection(rows, f"class {emb.classes[row]}")
