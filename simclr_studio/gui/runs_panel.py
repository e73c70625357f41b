"""The Runs tab: every run of the runs folder and the run folders the user added, in a table read in
the background; rename, note, delete (after a dialog saying what goes); tick runs to compare them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.gui.runs_compare import RunsCompare
from simclr_studio.gui.workers import Worker, plain
from simclr_studio.run_folder import RunFolder
from simclr_studio.session.runs import (
    RunsError,
    RunSummary,
    delete_run,
    list_runs,
    plan_delete,
    rename_run,
    summarize_run,
    write_note,
)

COLUMNS = ("Name", "Date", "Data folder", "Backbone", "Image size", "Epochs", "Final loss", "kNN", "Linear",
           "Status", "Note")
ADDED_KEY = "runs_added"  # QSettings: the run folders added with "Add run folder…"
REFRESH_MS = 5000  # while the tab is shown, statuses (training → finished) follow at this pace
PATH_ROLE = Qt.ItemDataRole.UserRole


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


class RunsPanel(QWidget):
    """``runs_root``: a callable giving the app's runs folder now (it follows the Preferences)."""

    open_run_requested = Signal(Path)

    def __init__(self, runs_root: Callable[[], Path], settings: QSettings | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.runs_root = runs_root
        self.settings = settings
        self.in_use: Callable[[], Path | None] = lambda: None  # the run the Train tab shows (the window sets it)
        self.summaries: list[RunSummary] = []
        self.ticked: list[Path] = []  # in the order they were ticked: the comparison's colours stay put
        self.worker: Worker | None = None
        self._again = False  # a refresh was asked for while one was reading: read again after it
        self._filling = False

        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.add_button = QPushButton("Add run folder…")
        self.add_button.clicked.connect(self.choose_run_folder)
        self.open_button = QPushButton("Open in Train tab")
        self.open_button.clicked.connect(lambda: self._with_selected(self.open_run_requested.emit))
        self.rename_button = QPushButton("Rename…")
        self.rename_button.clicked.connect(lambda: self._with_selected(self.ask_rename))
        self.note_button = QPushButton("Note…")
        self.note_button.clicked.connect(lambda: self._with_selected(self.ask_note))
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(lambda: self._with_selected(self.ask_delete))
        self.status = QLabel("")
        bar = QHBoxLayout()
        for button in (self.refresh_button, self.add_button, self.open_button, self.rename_button,
                       self.note_button, self.delete_button):
            bar.addWidget(button)
        bar.addWidget(self.status, 1)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setToolTip("Tick runs to compare them below; double-click a run to open it in the Train tab")
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.cellDoubleClicked.connect(lambda row, _col: self._open_row(row))
        self.table.itemSelectionChanged.connect(self._update_buttons)

        self.compare = RunsCompare()
        split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(bar)
        top_layout.addWidget(self.table, 1)
        split.addWidget(top)
        split.addWidget(self.compare)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 2)
        split.setSizes([300, 500])  # the table shows several runs; the plots keep the most room
        layout = QVBoxLayout(self)
        layout.addWidget(split)

        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self._update_buttons()

    # ---- reading the runs (in the background) -------------------------------------------------------
    def added_folders(self) -> list[str]:
        value = self.settings.value(ADDED_KEY, []) if self.settings is not None else []
        if isinstance(value, str):  # QSettings returns a lone string for one-element lists
            value = [value]
        return [v for v in (value or []) if v]

    def _set_added(self, folders: list[str]) -> None:
        if self.settings is not None:
            self.settings.setValue(ADDED_KEY, folders)

    def refresh(self) -> None:
        """Read every run's summary off the window's thread; the table follows when it is done."""
        if self.worker is not None:
            self._again = True  # what it reads may predate a change just made
            return
        root, added = self.runs_root(), self.added_folders()
        self.worker = Worker(plain(lambda: [summarize_run(p) for p in list_runs(root, added)]), "runs: list", self,
                             on_result=self.show_summaries, on_error=self._on_error, on_ended=self._on_read)
        self.worker.start()

    def _on_read(self) -> None:
        self.worker = None
        if self._again:
            self._again = False
            self.refresh()

    def is_loading(self) -> bool:
        return self.worker is not None

    def _on_error(self, message: str) -> None:
        self.status.setText(f"Cannot read the runs: {message}")

    def show_summaries(self, summaries: list[RunSummary]) -> None:
        if summaries == self.summaries and self.table.rowCount() == len(summaries):
            return  # nothing changed: the table (its scroll, the tool tip under the mouse) stays put
        selected = self.selected_run()
        self.summaries = summaries
        paths = {s.path for s in summaries}
        self.ticked = [p for p in self.ticked if p in paths]
        self._filling = True
        self.table.setRowCount(len(summaries))
        for row, s in enumerate(summaries):
            date = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.started)) if s.started else "—"
            texts = (s.name, date, s.data_dir, s.backbone, str(s.image_size or "—"), str(s.epochs_done),
                     _number(s.final_loss, 4), _number(s.knn_accuracy, 3), _number(s.linear_accuracy, 3),
                     s.status, s.note.strip().replace("\n", " · "))
            for col, text in enumerate(texts):
                item = _cell(text)
                if col == 0:
                    item.setData(PATH_ROLE, s.path)
                    item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                    item.setCheckState(Qt.CheckState.Checked if s.path in self.ticked else Qt.CheckState.Unchecked)
                    item.setToolTip(str(s.path) + (f"\n{s.problem}" if s.problem else ""))
                elif col == 2:
                    item.setToolTip(text)
                elif col == 10 and s.note:
                    item.setToolTip(s.note)
                self.table.setItem(row, col, item)
            if selected == s.path:
                self.table.selectRow(row)
        self._filling = False
        self.table.resizeColumnsToContents()
        self.status.setText(f"{len(summaries)} run{'' if len(summaries) == 1 else 's'} in {self.runs_root()}"
                            + (f" and {len(self.added_folders())} added" if self.added_folders() else ""))
        self.compare.set_runs(self.ticked)
        self._update_buttons()

    # ---- rows -----------------------------------------------------------------------------------------
    def row_of(self, path: Path) -> int:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(PATH_ROLE) == path:
                return row
        return -1

    def _path_at(self, row: int) -> Path | None:
        item = self.table.item(row, 0)
        return item.data(PATH_ROLE) if item is not None else None

    def selected_run(self) -> Path | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self._path_at(rows[0].row()) if rows else None

    def select_run(self, path: Path) -> None:
        self.table.selectRow(self.row_of(path))

    def tick(self, path: Path, on: bool = True) -> None:
        item = self.table.item(self.row_of(path), 0)
        if item is not None:
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 0:
            return
        path = item.data(PATH_ROLE)
        on = item.checkState() == Qt.CheckState.Checked
        if on and path not in self.ticked:
            self.ticked.append(path)
        elif not on and path in self.ticked:
            self.ticked.remove(path)
        self.compare.set_runs(self.ticked)

    def _open_row(self, row: int) -> None:
        path = self._path_at(row)
        if path is not None:
            self.open_run_requested.emit(path)

    def _with_selected(self, action: Callable[[Path], object]) -> None:
        path = self.selected_run()
        if path is not None:
            action(path)

    def _update_buttons(self) -> None:
        chosen = self.selected_run() is not None
        for button in (self.open_button, self.rename_button, self.note_button, self.delete_button):
            button.setEnabled(chosen)

    # ---- what the user does -------------------------------------------------------------------------------
    def choose_run_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add run folder", str(self.runs_root()))
        if folder:
            self.add_run_folder(Path(folder))

    def add_run_folder(self, folder: Path) -> bool:
        if not RunFolder(folder).is_run():
            QMessageBox.warning(self, "Not a run folder",
                                f"{folder} holds no run (a run folder has config.json and events or checkpoints).")
            return False
        added = self.added_folders()
        if str(folder) not in added:
            self._set_added(added + [str(folder)])
        self.refresh()
        return True

    def ask_rename(self, path: Path) -> None:
        name, ok = QInputDialog.getText(self, "Rename run", f"New name for {path.name}:", text=path.name)
        if ok and name.strip() and name.strip() != path.name:
            self.rename(path, name)

    def _refuse_in_use(self, path: Path, action: str) -> bool:
        """A run the Train tab shows is not renamed or deleted under it: it would keep the old path."""
        shown = self.in_use()
        if shown is None or Path(shown).resolve() != Path(path).resolve():
            return False
        QMessageBox.warning(self, f"Cannot {action}", f"{path.name} is open in the Train tab: open another run "
                            f"there (or New run) before you {action} it.")
        return True

    def rename(self, path: Path, name: str) -> Path | None:
        if self._refuse_in_use(path, "rename"):
            return None
        try:
            new = rename_run(path, name)
        except (RunsError, OSError) as exc:
            QMessageBox.warning(self, "Cannot rename", str(exc))
            return None
        self.ticked = [new if p == path else p for p in self.ticked]
        self._set_added([str(new) if Path(a) == path else a for a in self.added_folders()])
        self.status.setText(f"Renamed {path.name} to {new.name}")
        self.refresh()
        return new

    def ask_note(self, path: Path) -> None:
        current = next((s.note for s in self.summaries if s.path == path), "")
        text, ok = QInputDialog.getMultiLineText(self, "Note", f"Note on {path.name}:", current.rstrip("\n"))
        if ok:
            self.set_note(path, text)

    def set_note(self, path: Path, text: str) -> None:
        try:
            write_note(path, text)
        except OSError as exc:
            QMessageBox.warning(self, "Cannot save the note", str(exc))
            return
        self.refresh()

    def ask_delete(self, path: Path) -> bool:
        """Delete the run after a dialog that says what goes; a training run is refused."""
        if self._refuse_in_use(path, "delete"):
            return False
        try:
            plan = plan_delete(path)
        except (RunsError, OSError) as exc:
            QMessageBox.warning(self, "Cannot delete", str(exc))
            return False
        if plan.training:
            QMessageBox.warning(self, "Cannot delete", f"{path.name} is training: stop it before you delete it.")
            return False
        answer = QMessageBox.question(
            self, "Delete run", f"Delete this run for good? This removes:\n\n{plan.describe()}\n\nIt cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        try:
            delete_run(plan)
        except (RunsError, OSError) as exc:
            QMessageBox.warning(self, "Cannot delete", str(exc))
            self.refresh()
            return False
        self.ticked = [p for p in self.ticked if p != path]
        self._set_added([a for a in self.added_folders() if Path(a) != path])
        self.status.setText(f"Deleted {path.name}")
        self.refresh()
        return True

    # ---- lifetime -------------------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()
        self.timer.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.timer.stop()

    def apply_theme(self, dark: bool) -> None:
        self.compare.apply_theme(dark)

    def cancel(self) -> None:
        self.timer.stop()
        if self.worker is not None:
            self.worker.cancel()
        self.compare.cancel()
