"""What a selection can become: saved with the run under a name, exported as CSV (path, label, x, y),
copied into a new folder, moved (only after a dialog that lists the files), tagged with a label; and
the Selections tab, which lists the saved selections and the tags (exported as CSV or as a folder per
tag, of copies). The user's folder is never changed without that confirmation."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.selections import SelectionsError, copy_files, move_files

LISTED_IN_CONFIRMATION = 200  # files named in the move dialog's details (all of them are moved)


def confirm_move(parent: QWidget, plan) -> bool:
    """Ask before moving the user's files, listing them."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Move files out of the image folder?")
    box.setText(f"Move {len(plan):,} images into {plan[0][1].parent if plan else ''}?\n"
                "They will no longer be in the image folder. Copying leaves them where they are.")
    listed = [str(src) for src, _ in plan[:LISTED_IN_CONFIRMATION]]
    more = len(plan) - len(listed)
    box.setDetailedText("\n".join(listed) + (f"\n… and {more:,} more" if more > 0 else ""))
    move = box.addButton("Move", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is move


def transfer(host, parent: QWidget, plan, move: bool = False) -> None:
    """Copy (or, confirmed, move) the planned files in the background; the panel reports how it went."""
    if not plan:
        host.say("Nothing to copy.", error=True)
        return
    if move and not confirm_move(parent, plan):
        host.say("Nothing was moved.")
        return
    dest = plan[0][1].parent

    def job(progress, should_stop):
        return move_files(plan, confirmed=True) if move else copy_files(plan, progress, should_stop)

    verb = "moved" if move else "copied"
    host.run("copy", job, lambda report: host.say(f"{report.summary(verb)} into {dest}", error=bool(report.failed)),
             f"{verb.capitalize()[:-1]}ing {len(plan):,} images")


class SelectionActions(QWidget):
    """Buttons under the results list: they act on the images it shows."""

    def __init__(self, host):
        super().__init__()
        self.host = host
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for text, tip, slot in (
                ("Save…", "Save these images as a named selection of the run", self.save),
                ("Export CSV…", "path, label, x, y of these images", self.export_csv),
                ("Copy to…", "Copy these images into a new folder (the originals stay)", self.copy),
                ("Move to…", "Move these images into a new folder (asks first, listing them)", self.move),
                ("Tag…", "Give these images a label; tags export as CSV or class folders", self.tag)):
            button = QPushButton(text)
            button.setObjectName("compact")  # five in a row under the results: less padding, never clipped
            button.setToolTip(tip)
            button.clicked.connect(slot)
            button.setMinimumWidth(button.sizeHint().width())
            layout.addWidget(button)
        layout.addStretch()

    def _rows(self) -> list[int]:
        results = self.host.session.results
        if results is None or not results.rows:
            self.host.say("Nothing shown: click a point, select a region or pick a finding first.", error=True)
            return []
        return list(results.rows)

    def save(self) -> None:
        rows = self._rows()
        if not rows:
            return
        results = self.host.session.results
        default = results.how if results.kind == "selection" else results.kind
        name, ok = QInputDialog.getText(self, "Save selection", f"Name for these {len(rows):,} images:",
                                        text=default)
        if not ok:
            return
        try:
            try:
                self.host.curation.save(name, rows, results.how or results.kind)
            except SelectionsError as exc:
                if "already exists" not in str(exc):
                    raise
                answer = QMessageBox.question(self, "Replace selection?", f"{exc}. Replace it?")
                if answer != QMessageBox.StandardButton.Yes:
                    return
                self.host.curation.save(name, rows, results.how or results.kind, replace=True)
        except (SelectionsError, OSError) as exc:
            self.host.say(str(exc), error=True)
            return
        self.host.say(f"Saved {len(rows):,} images as '{name.strip()}' with the run")
        self.host.saved.refresh()

    def export_csv(self) -> None:
        rows = self._rows()
        if not rows:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export the images as CSV", str(self.host.session.run_dir or ""),
                                              "CSV (*.csv)")
        if path:
            try:
                written = self.host.curation.export_csv(path, rows, self.host.map_name, overwrite=True)
            except (SelectionsError, OSError) as exc:
                self.host.say(str(exc), error=True)
                return
            self.host.say(f"Wrote {len(rows):,} rows to {written}")

    def _plan(self, rows: list[int], title: str):
        dest = QFileDialog.getExistingDirectory(self, title)
        if not dest:
            return None
        try:
            return self.host.curation.copy_plan(rows, dest)
        except SelectionsError as exc:
            self.host.say(str(exc), error=True)
            return None

    def copy(self) -> None:
        rows = self._rows()
        plan = self._plan(rows, "Copy into a new or empty folder") if rows else None
        if plan is not None:
            transfer(self.host, self, plan)

    def move(self) -> None:
        rows = self._rows()
        plan = self._plan(rows, "Move into a new or empty folder") if rows else None
        if plan is not None:
            transfer(self.host, self, plan, move=True)

    def tag(self) -> None:
        rows = self._rows()
        if not rows:
            return
        try:
            labels = sorted(set(self.host.curation.store().tags().values()))
        except (SelectionsError, OSError, ValueError) as exc:
            self.host.say(str(exc), error=True)
            return
        label, ok = QInputDialog.getItem(self, "Tag images", f"Label for these {len(rows):,} images:", labels, 0,
                                         True)
        if not ok:
            return
        try:
            self.host.curation.tag(rows, label)
        except (SelectionsError, OSError) as exc:
            self.host.say(str(exc), error=True)
            return
        self.host.say(f"Tagged {len(rows):,} images '{label.strip()}'")
        self.host.saved.refresh()


class SavedSelectionsView(QWidget):
    """The run's saved selections (click one to show it) and its tags."""

    def __init__(self, host):
        super().__init__()
        self.host = host
        self.list = QListWidget()
        self.list.itemActivated.connect(lambda _: self.show_chosen())
        self.list.itemClicked.connect(lambda _: self.show_chosen())
        delete = QPushButton("Delete…")
        delete.clicked.connect(self.delete)
        self.tags = QLabel()
        self.tags.setWordWrap(True)
        export_tags = QPushButton("Export tags CSV…")
        export_tags.clicked.connect(self.export_tags)
        folders = QPushButton("Copy as class folders…")
        folders.setToolTip("A folder per tag, with copies of its images: a labelled folder to train or evaluate on")
        folders.clicked.connect(self.class_folders)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Saved selections</b> (with the run; click one to show it)"))
        layout.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(delete)
        row.addStretch()
        layout.addLayout(row)
        layout.addWidget(QLabel("<b>Tags</b>"))
        layout.addWidget(self.tags)
        row = QHBoxLayout()
        row.addWidget(export_tags)
        row.addWidget(folders)
        row.addStretch()
        layout.addLayout(row)
        self.refresh()

    def refresh(self) -> None:
        self.list.clear()
        self.tags.setText("None yet: tag the images shown with the Tag… button.")
        if self.host.session.run_dir is None:
            return
        try:
            store = self.host.curation.store()
            for name in store.names():
                saved = store.get(name)
                item = QListWidgetItem(f"{name} · {len(saved.paths):,} images · {saved.kind} · {saved.created}")
                item.setData(256, name)  # Qt.UserRole
                self.list.addItem(item)
            tags = store.tags()
        except (SelectionsError, OSError) as exc:
            self.tags.setText(str(exc))
            return
        counts: dict[str, int] = {}
        for label in tags.values():
            counts[label] = counts.get(label, 0) + 1
        if counts:
            self.tags.setText(" · ".join(f"{label}: {n:,}" for label, n in sorted(counts.items())))

    def _chosen(self) -> str | None:
        item = self.list.currentItem()
        return item.data(256) if item is not None else None

    def show_chosen(self) -> None:
        name = self._chosen()
        if name is None or self.host.session.embedded is None:
            return
        saved = self.host.curation.store().get(name)
        rows, missing = self.host.curation.rows_of(saved.paths)
        self.host.show_selection(rows, name)
        if missing:
            self.host.say(f"{missing:,} images of '{name}' are not in this map (moved, or another folder)")

    def delete(self) -> None:
        name = self._chosen()
        if name is None:
            return
        if QMessageBox.question(self, "Delete selection?", f"Delete the saved selection '{name}'? "
                                "(Only the list is deleted, never an image.)") != QMessageBox.StandardButton.Yes:
            return
        self.host.curation.store().delete(name)
        self.refresh()

    def export_tags(self) -> None:
        from simclr_studio.selections import export_tags_csv

        tags = self.host.curation.store().tags() if self.host.session.run_dir is not None else {}
        if not tags:
            self.host.say("No tags yet.", error=True)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export the tags", str(self.host.session.run_dir), "CSV (*.csv)")
        if path:
            self.host.say(f"Wrote {len(tags):,} tags to {export_tags_csv(path, tags, overwrite=True)}")

    def class_folders(self) -> None:
        if self.host.session.run_dir is None or not self.host.curation.store().tags():
            self.host.say("No tags yet.", error=True)
            return
        dest = QFileDialog.getExistingDirectory(self, "Copy the tagged images into a new or empty folder")
        if not dest:
            return
        try:
            plan = self.host.curation.class_folders_plan(dest)
        except SelectionsError as exc:
            self.host.say(str(exc), error=True)
            return
        transfer(self.host, self, plan)
