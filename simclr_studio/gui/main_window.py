"""The main window: Data, Augment, Train, Explore and Runs tabs, menus, drag-and-drop, recent folders."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox, QProgressDialog, QTabWidget

from simclr_studio.data import ScanResult
from simclr_studio.gui.augment_panel import AugmentPanel
from simclr_studio.gui.data_panel import DataPanel, counted
from simclr_studio.gui.explore_panel import ExplorePanel
from simclr_studio.gui.preferences import Preferences, PreferencesDialog
from simclr_studio.gui.runs_panel import RunsPanel
from simclr_studio.gui.theme import apply_theme
from simclr_studio.gui.train_panel import TrainPanel
from simclr_studio.gui.workers import ScanJob
from simclr_studio.run_folder import RunFolder
from simclr_studio.session.train import TrainError, TrainSession

MAX_RECENT = 8


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings, runs_root: Path, demo_folder: Path | None = None):
        super().__init__()
        self.settings = settings
        self.demo_folder = demo_folder
        self.scan_job: ScanJob | None = None
        self.scan: ScanResult | None = None
        self.setWindowTitle("SIMCLR Studio")
        self.setAcceptDrops(True)
        self.resize(1280, 820)
        geometry = settings.value("window_geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)

        self.data_panel = DataPanel()
        self.augment_panel = AugmentPanel()
        self.train_session = TrainSession()
        self.train_panel = TrainPanel(self.train_session, runs_root)
        self.train_panel.augment_source = self.augment_panel.augment_config
        self.train_panel.augment_config_loaded.connect(self.augment_panel.set_augment_config)
        self.train_panel.augment_suggested.connect(self.augment_panel.set_suggested)
        self.train_panel.form.image_size.valueChanged.connect(self.augment_panel.set_image_size)
        self.train_panel.run_state_changed.connect(self._on_run_state)
        self.train_panel.settings_locked.connect(self.augment_panel.set_locked)
        self.data_panel.open_folder_requested.connect(self.choose_folder)
        self.data_panel.open_demo_requested.connect(self.open_demo)
        self.data_panel.recent_requested.connect(self.open_path)
        self.data_panel.cancel_scan_requested.connect(self.cancel_scan)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.data_panel, "1 · Data")
        self.tabs.addTab(self.augment_panel, "2 · Augment")
        self.tabs.addTab(self.train_panel, "3 · Train")
        self.explore_panel = ExplorePanel()
        self.tabs.addTab(self.explore_panel, "4 · Explore")
        self.runs_panel = RunsPanel(lambda: self.train_panel.runs_root, settings)  # follows the Preferences
        self.runs_panel.open_run_requested.connect(self.open_run)
        self.runs_panel.in_use = self.train_panel.current_run_dir
        self.tabs.addTab(self.runs_panel, "5 · Runs")
        self.tabs.currentChanged.connect(self._on_tab)
        self.setCentralWidget(self.tabs)
        self._build_menus()
        self.statusBar().showMessage("Drop a folder of images onto the window to begin.")

    # ---- menus --------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        open_folder = QAction("Open &Folder…", self, shortcut=QKeySequence.StandardKey.Open)
        open_folder.triggered.connect(self.choose_folder)
        open_run = QAction("Open &Run…", self, shortcut=QKeySequence("Ctrl+R"))
        open_run.triggered.connect(self.choose_run)
        open_demo = QAction("Open &Demo Images", self)
        open_demo.triggered.connect(self.open_demo)
        self.recent_menu = file_menu.addMenu("Recent Folders")
        file_menu.insertAction(self.recent_menu.menuAction(), open_folder)
        file_menu.insertAction(self.recent_menu.menuAction(), open_run)
        file_menu.insertAction(self.recent_menu.menuAction(), open_demo)
        file_menu.addSeparator()
        self.export_action = QAction("&Export…", self, shortcut=QKeySequence("Ctrl+E"))
        self.export_action.triggered.connect(self.show_export)
        self.export_action.setToolTip("Export a checkpoint's weights; its features and map once embedded")
        file_menu.addAction(self.export_action)
        file_menu.addSeparator()
        preferences = QAction("&Preferences…", self, shortcut=QKeySequence("Ctrl+,"))
        preferences.setMenuRole(QAction.MenuRole.PreferencesRole)
        preferences.triggered.connect(self.show_preferences)
        file_menu.addAction(preferences)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        self._refresh_recent()

        view_menu = self.menuBar().addMenu("&View")
        theme_menu = view_menu.addMenu("Theme")
        group = QActionGroup(self)
        current = self.settings.value("theme", "light")
        self.theme_actions = {}
        for name in ("light", "dark"):
            action = QAction(name.capitalize(), self, checkable=True, checked=name == current)
            action.triggered.connect(lambda _=False, n=name: self.set_theme(n))
            group.addAction(action)
            theme_menu.addAction(action)
            self.theme_actions[name] = action

        help_menu = self.menuBar().addMenu("&Help")
        guide = QAction("&User Guide", self, shortcut=QKeySequence.StandardKey.HelpContents)
        guide.triggered.connect(self.show_user_guide)
        help_menu.addAction(guide)
        shortcuts = QAction("&Keyboard Shortcuts", self)
        shortcuts.triggered.connect(self.show_shortcuts)
        help_menu.addAction(shortcuts)
        help_menu.addSeparator()
        about = QAction("&About SIMCLR Studio", self)
        about.triggered.connect(self.show_about)
        help_menu.addAction(about)

    def show_user_guide(self) -> None:
        from simclr_studio.gui.help_dialogs import UserGuide

        self.user_guide = UserGuide(self)
        self.user_guide.show()

    def show_shortcuts(self) -> None:
        from simclr_studio.gui.help_dialogs import ShortcutsDialog

        self.shortcuts_dialog = ShortcutsDialog(self)
        self.shortcuts_dialog.show()

    def set_theme(self, name: str) -> None:
        self.settings.setValue("theme", name)
        apply_theme(name)
        self.train_panel.apply_theme(name == "dark")
        self.explore_panel.apply_theme(name == "dark")
        self.runs_panel.apply_theme(name == "dark")
        if name in self.theme_actions:
            self.theme_actions[name].setChecked(True)

    def apply_preferences(self, prefs: Preferences) -> None:
        self.train_panel.set_runs_root(prefs.runs_root)
        self.data_panel.model.cache_size = prefs.thumbnail_cache
        self.explore_panel.results_model.cache_size = max(100, prefs.thumbnail_cache // 2)
        self.set_theme(prefs.theme)

    def show_preferences(self) -> None:
        dialog = PreferencesDialog(Preferences.load(self.settings), self)
        if dialog.exec():
            prefs = dialog.preferences()
            prefs.save(self.settings)
            self.apply_preferences(prefs)

    def about_text(self) -> str:
        from simclr_studio.gui.help_dialogs import about_html

        return about_html(self.train_panel.form.device.currentData())

    def show_about(self) -> None:
        QMessageBox.about(self, "About SIMCLR Studio", self.about_text())

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_folders()
        for folder in recent:
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _=False, f=folder: self.open_path(f))
        self.recent_menu.setEnabled(bool(recent))
        self.data_panel.set_recent(recent)  # the welcome page lists them too

    def recent_folders(self) -> list[str]:
        value = self.settings.value("recent_folders", [])
        if isinstance(value, str):  # QSettings returns a lone string for one-element lists
            value = [value]
        return [v for v in (value or []) if v]

    def _remember(self, folder: str) -> None:
        recent = [folder] + [f for f in self.recent_folders() if f != folder]
        self.settings.setValue("recent_folders", recent[:MAX_RECENT])
        self._refresh_recent()

    # ---- opening things ---------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open image folder")
        if folder:
            self.open_path(folder)

    def choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open run folder")
        if folder:
            self.open_path(folder)

    def open_demo(self) -> None:
        if self.demo_folder is not None:
            self.open_path(str(self.demo_folder))

    def open_path(self, path: str | Path) -> None:
        """An image folder is scanned; a run folder restores its config and curves."""
        path = Path(path).expanduser()
        if not path.is_dir():
            self.statusBar().showMessage(f"Not a folder: {path}")  # what is open stays open
            return
        if RunFolder(path).is_run():
            self.open_run(path)
        else:
            self.open_folder(path)

    def open_folder(self, folder: Path) -> None:
        if self.train_session.is_running():
            self.statusBar().showMessage("A run is training: stop it before opening another folder.")
            return
        self.data_panel.show_scanning(str(folder))
        self.tabs.setCurrentWidget(self.data_panel)
        job = self._new_scan_job(folder)
        job.progress.connect(self.data_panel.scan_progress)
        job.finished.connect(lambda scan: self._on_scanned(scan, job.facts))
        job.failed.connect(self._on_scan_failed)
        job.start()

    def _new_scan_job(self, folder: Path) -> ScanJob:
        """A scan that supersedes any scan still running (whose result is then dropped)."""
        if self.scan_job is not None:
            self.scan_job.cancel()
        self.scan_job = ScanJob(folder, self)
        return self.scan_job

    def cancel_scan(self) -> None:
        if self.scan_job is not None:
            self.scan_job.cancel()
        if self.scan is not None:
            self.data_panel.show_scan(self.scan)  # back to what was open before
        else:
            self.data_panel.show_empty()
        self.statusBar().showMessage("Scan cancelled")

    def _on_scanned(self, scan: ScanResult, facts: tuple[int, bool] = (64, False)) -> None:
        """``facts``: (typical side, grayscale) of the images, measured by the scan for the recipe."""
        self.scan = scan
        self.data_panel.show_scan(scan)
        self._remember(scan.root)
        if len(scan) == 0:
            self.train_panel.clear_data()
            self.statusBar().showMessage(f"No images found in {scan.root}")
            return
        self.train_panel.set_data(scan.root, len(scan), *facts)
        self.augment_panel.set_image_size(self.train_panel.form.image_size.value())
        self.augment_panel.set_images(scan.paths)
        message = counted(len(scan), "image")
        if scan.labeled:
            message += f" in {len(scan.classes)} classes"
        if scan.skipped:
            message += f", {counted(len(scan.skipped), 'file')} skipped"
        self.statusBar().showMessage(message)

    def _on_scan_failed(self, message: str) -> None:
        self.data_panel.show_scan_failed(message)  # not a stale "Scanning…"
        self.statusBar().showMessage(message)
        QMessageBox.warning(self, "Cannot open folder", message)

    def open_run(self, run_dir: Path) -> None:
        if self.scan_job is not None:
            self.scan_job.cancel()  # a folder scan finishing later must not reset the opened run
        try:
            state = self.train_panel.open_run(run_dir)
        except TrainError as exc:
            self.statusBar().showMessage(f"Cannot open run {run_dir}: {exc}")
            return
        self._remember(str(run_dir))
        self.tabs.setCurrentWidget(self.train_panel)
        data_dir = self.train_session.data_dir
        if data_dir and Path(data_dir).is_dir():
            self.open_data_for_run(Path(data_dir))
        if state == "live":
            message = "Training elsewhere: following it live (another process writes this run)"
        elif self.train_session.can_resume():
            message = "Run opened: Resume training continues it from its last checkpoint"
        else:
            message = "Run opened"
        self.statusBar().showMessage(f"{message} · {run_dir}")

    def open_data_for_run(self, folder: Path) -> None:
        """Show the run's images without resetting the opened run's settings."""
        job = self._new_scan_job(folder)
        job.finished.connect(lambda scan: (setattr(self, "scan", scan), self.data_panel.show_scan(scan),
                                           self.augment_panel.set_images(scan.paths),
                                           self.augment_panel.set_image_size(
                                               self.train_panel.form.image_size.value())))
        job.failed.connect(lambda message: self.statusBar().showMessage(f"Cannot read the run's images: {message}"))
        job.start()

    # ---- explore and export -------------------------------------------------------------------
    def _on_tab(self, index: int) -> None:
        if self.tabs.widget(index) is self.explore_panel:
            self.show_explorer()

    def show_explorer(self) -> None:
        """The explorer works on the run shown in the Train tab and the folder shown in the Data tab."""
        self.explore_panel.set_sources(self.train_panel.current_run_dir(), self.scan)
        if self.tabs.currentWidget() is not self.explore_panel:
            self.tabs.setCurrentWidget(self.explore_panel)

    def show_export(self) -> None:
        from simclr_studio.gui.export_dialog import ExportDialog

        self.explore_panel.set_sources(self.train_panel.current_run_dir(), self.scan)  # the run the Train tab shows
        source = self.explore_panel.export_source()
        if source is None:
            QMessageBox.information(self, "Nothing to export yet",
                                    "Export needs a checkpoint: train at least one epoch, or open a run folder.")
            return
        self.export_dialog = ExportDialog(source, source.run_dir / "export", self)
        self.export_dialog.show()

    # ---- drag and drop ------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and Path(urls[0].toLocalFile()).is_dir():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            self.open_path(urls[0].toLocalFile())
            event.acceptProposedAction()

    # ---- lifetime -----------------------------------------------------------------------------
    def _on_run_state(self, running: bool) -> None:
        if running:
            self.tabs.setCurrentWidget(self.train_panel)

    def closeEvent(self, event) -> None:
        if self.train_session.is_running():
            answer = QMessageBox.question(
                self, "Training in progress",
                "A run is training. Stop it (a checkpoint is saved so it can be resumed) and quit?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            if not self.stop_training_for_exit():
                QMessageBox.warning(self, "Training did not stop",
                                    "The run did not stop within a minute; its last epoch checkpoint is kept.")
        if self.scan_job is not None:
            self.scan_job.cancel()
        self.explore_panel.cancel()
        self.runs_panel.cancel()
        self.remember_session()
        event.accept()

    def stop_training_for_exit(self) -> bool:
        """Stop the run (it saves a checkpoint: seconds) with a dialog saying so; Pause and Stop are
        disabled meanwhile, so nothing else is asked of the run as it ends."""
        self.statusBar().showMessage("Stopping training: saving a checkpoint…")
        for button in (self.train_panel.pause_button, self.train_panel.stop_button):
            button.setEnabled(False)
        dialog = QProgressDialog("Stopping training: saving a checkpoint so that it can be resumed…", "", 0, 0, self)
        dialog.setWindowTitle("Quitting")
        dialog.setCancelButton(None)
        dialog.setMinimumDuration(0)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        self.stopping_dialog = dialog
        dialog.show()
        try:
            return self.train_panel.stop_and_wait()
        finally:
            dialog.close()

    # ---- the next start ----------------------------------------------------------------------
    def remember_session(self) -> None:
        """Window size and place, the folder and the run shown: the next start opens them again."""
        self.settings.setValue("window_geometry", self.saveGeometry())
        if self.scan is not None:
            self.settings.setValue("last_folder", str(self.scan.root))
        run_dir = self.train_panel.current_run_dir()
        if run_dir is not None and RunFolder(run_dir).is_run():
            self.settings.setValue("last_run", str(run_dir))

    def reopen_last(self) -> str | None:
        """Open the run (with its folder) or else the folder shown when the app last closed; returns
        what was opened, or None when there is nothing (left) to open."""
        run, folder = self.settings.value("last_run", ""), self.settings.value("last_folder", "")
        if run and RunFolder(str(run)).is_run():
            self.open_run(Path(str(run)))
            return str(run)
        if folder and Path(str(folder)).is_dir():
            self.open_folder(Path(str(folder)))
            return str(folder)
        return None
