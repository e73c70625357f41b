"""The Train tab: a view of a TrainSession — the run's settings with the run's estimated time, Start /
Pause / Stop, live curves, progress, the machine's load and a log; a desktop notification when a run ends.

The session holds the run and its state; this widget shows them. A timer polls the session ~15 times
a second while it trains or follows a run, and renders what changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.config import AugmentConfig, RunConfig
from simclr_studio.device import available_devices
from simclr_studio.events import PrepareProgress
from simclr_studio.gui import notifications
from simclr_studio.gui.machine_monitor import MachineMonitor
from simclr_studio.gui.run_length import MINUTES, RunEstimate, default_minutes
from simclr_studio.gui.train_form import TrainForm
from simclr_studio.gui.train_plots import TrainPlots
from simclr_studio.gui.workers import UI_INTERVAL_MS
from simclr_studio.run_folder import RunFolder, RunState
from simclr_studio.session.train import ACTIVE, RUNNING, TrainError, TrainSession, Update, new_run_dir
from simclr_studio.session.wording import preparing_text, progress_text

STOPPING_TEXT = "Stopping: saving a checkpoint…"
LOG_LINES = 8  # the log's least height, in lines: enough to read the last few events in context


class TrainPanel(QWidget):
    run_state_changed = Signal(bool)  # True while a run is training in this window
    settings_locked = Signal(bool)  # True while the run's settings cannot change (training, following, resuming)
    augment_config_loaded = Signal(object)  # AugmentConfig of an opened run folder
    augment_suggested = Signal(object, str)  # the recipe's AugmentConfig for a new folder, and why

    def __init__(self, session: TrainSession, runs_root: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.runs_root = Path(runs_root)
        self.augment_source: Callable[[], AugmentConfig] | None = None  # the AugmentConfig to train with
        self._shown: tuple[str, bool, bool, str | None] | None = None  # (state, can resume, has data, batch problem)
        self._posted: str | None = None  # the last status this panel put in the window's status bar
        self._shown_running: bool | None = None
        self._shown_locked: bool | None = None
        self._typical_side = 64  # of the open folder's images (the RAM cache's layout depends on it)
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(UI_INTERVAL_MS)  # text and progress follow the run, however fast it steps
        self._poll_timer.timeout.connect(self.refresh)
        self._build()
        self._render_state()

    def _build(self) -> None:
        self.form = TrainForm(self.runs_root)
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.new_button = QPushButton("New run")
        self.new_button.clicked.connect(self.new_run)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(b)
        # What a run that ended allows (resume, lengthen, or only a new run), in sight of the buttons.
        self.next_label = QLabel()
        self.next_label.setObjectName("muted")
        self.next_label.setWordWrap(True)
        self.next_label.hide()

        self.error_banner = QLabel()
        self.error_banner.setObjectName("error")
        self.error_banner.setWordWrap(True)
        self.error_banner.hide()
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress_label = QLabel("Not started")
        self.progress_label.setObjectName("muted")
        self.progress_label.setWordWrap(True)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.estimate = RunEstimate()  # before Start: how long the settings take, and the RAM cache
        self.machine = MachineMonitor()  # while training: CPU, RAM (and GPU) of the machine and the run
        left_layout.addWidget(self.form)
        left_layout.addWidget(self.estimate)
        left_layout.addLayout(buttons)
        for widget in (self.next_label, self.new_button, self.error_banner, self.progress, self.progress_label,
                       self.machine):
            left_layout.addWidget(widget)
        left_layout.addStretch()
        # A fixed width: the progress text changes length every update, and a column that followed it
        # would resize the plots beside it, which redraws every axis from scratch.
        left.setFixedWidth(360)

        self.plots = TrainPlots()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("Training log")
        self.log.setMinimumHeight(self.log.fontMetrics().lineSpacing() * LOG_LINES)
        # Plots above, the log below; the handle between them resizes both (neither collapses).
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.plots)
        right.addWidget(self.log)
        right.setChildrenCollapsible(False)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 1)
        self.splitter = right

        layout = QHBoxLayout(self)
        layout.addWidget(left)
        layout.addWidget(right, 1)
        self.form.load_config(RunConfig.suggested(1000, 32, "cpu", minutes=default_minutes("cpu")))
        self.form.epochs.setValue(RunConfig.suggested(1000, 32, "cpu").epochs)
        self.form.batch_size.valueChanged.connect(self._render_state)
        self.form.device.currentIndexChanged.connect(self._render_state)
        self.form.settings_changed.connect(self._update_estimate)

    def apply_theme(self, dark: bool) -> None:
        self.plots.apply_theme(dark)

    # ---- the form ---------------------------------------------------------------------------------
    def config(self) -> RunConfig:
        """The run the form describes, on the open folder, with the Augment tab's settings."""
        augment = self.augment_source() if self.augment_source is not None else None
        return self.form.config(self.session.data_dir or "", augment)

    def set_data(self, data_dir: str, n_images: int, typical_side: int, grayscale: bool = False) -> None:
        """A newly opened folder: the recipe for it, this machine and the time the user gives."""
        if self.session.is_running():
            return
        length = self.form.length
        self._typical_side = typical_side
        device = available_devices()[0].split(":")[0]
        suggestion = self.session.suggest(data_dir, n_images, typical_side, grayscale, device,
                                          length.user_minutes or default_minutes(device))
        self.form.load_config(suggestion.config, suggestion.reasons)
        self.form.epochs.setValue(suggestion.epochs)  # shown when the user picks "Epochs"
        length.set_minutes_mode((length.user_mode or MINUTES) == MINUTES)
        self.augment_suggested.emit(suggestion.config.augment, suggestion.reasons.get("augment", ""))
        self._show_new_run()

    def clear_data(self) -> None:
        """No usable folder is open (e.g. it had no images): nothing to train on."""
        if not self.session.is_running():
            self.session.clear_data()
            self._show_new_run()

    def set_runs_root(self, root: Path) -> None:
        """Where new runs go; a suggested (not yet used) run folder moves with it."""
        old_root, self.runs_root = self.runs_root, Path(root)
        self.form.runs_root = self.runs_root
        text = self.form.run_dir()
        if text and Path(text).parent == old_root and self.session.run_dir is None:
            self.form.run_dir_edit.setText(str(self.runs_root / Path(text).name))

    def current_run_dir(self) -> Path | None:
        """The run this panel shows (training, followed or opened), or None before one exists."""
        if self.session.run_dir is not None:
            return self.session.run_dir
        text = self.form.run_dir()
        return Path(text) if text and RunFolder(text).has_config() else None

    # ---- the buttons ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a new run, or resume the run opened from its last checkpoint."""
        self.error_banner.hide()
        device, nproc = self.form.device_choice()
        try:
            if self.session.state == "resumable":
                epochs = self._resume_epochs()
                if epochs is None:
                    return
                self.session.resume(epochs, device, nproc)
            else:
                self.session.start(self.config(), self.form.run_dir(), nproc)
        except TrainError as exc:
            self.show_error(str(exc))
            return
        self._poll_timer.start()
        self.refresh()

    def _resume_epochs(self) -> int | None:
        """The epochs to resume with: a run that completed its epochs trains only with more, so the user is
        offered to add some (None: they declined, and the next step is told again)."""
        done = self.session.completed_epochs()
        if done is None or self.form.epochs.value() > done:
            return self.form.epochs.value()
        more = self.ask_more_epochs(done)
        if more is None:
            self.next_label.setText(self.session.next_step() or "")
            return None
        self.form.epochs.setValue(done + more)
        return done + more

    def ask_more_epochs(self, done: int) -> int | None:
        """How many epochs to add to a run that completed ``done`` (None: cancelled)."""
        more, ok = QInputDialog.getInt(self, "Train longer",
                                       f"This run has completed its {done} epochs.\nAdd how many epochs?",
                                       max(1, done), 1, 100_000)
        return more if ok else None

    def toggle_pause(self) -> None:
        if self.session.state == "paused":
            self.session.unpause()
        else:
            self.session.pause()
        self._render_state()

    def stop(self) -> None:
        self.session.stop()
        self._render_state()

    def stop_and_wait(self, timeout: float = 60.0) -> bool:
        """Stop, and wait (the window still painting) until the run has saved its checkpoint and ended."""
        deadline = time.monotonic() + timeout
        self.stop()
        while self.session.is_running() and time.monotonic() < deadline:
            if self.session.stop_and_wait(0.05):
                self.refresh()  # its last events
            QApplication.processEvents()
        return not self.session.is_running()

    def new_run(self) -> None:
        """Put the run shown aside; the form keeps its settings for the next one."""
        if not self.session.is_running():
            self.session.new_run()
            self._show_new_run()

    def _show_new_run(self) -> None:
        self.form.run_dir_edit.setText(str(new_run_dir(self.runs_root, self.session.data_dir)))
        self.refresh()
        self._update_estimate()

    def _update_estimate(self, *_) -> None:
        """Before Start, on a folder of known size: the run's time and RAM cache for the settings shown."""
        session = self.session
        if session.state in ("ready", "finished") and session.n_images and session.data_dir:
            self.estimate.show_for(self.config(), session.n_images, self._typical_side, self.form.device_choice()[1])
        else:
            self.estimate.clear()

    # ---- opening a run folder -----------------------------------------------------------------------
    def open_run(self, run_dir: str | Path) -> RunState:
        """Show a run folder's config and curves; follow it live if another process is writing it.
        Raises TrainError when it cannot be opened (a run trains here, or no readable config)."""
        state = self.session.open(run_dir)
        cfg = self.session.config or RunConfig()
        self.form.load_config(cfg)
        self.form.run_dir_edit.setText(str(self.session.run_dir))
        self.augment_config_loaded.emit(cfg.augment)
        if state == "live":
            self._poll_timer.start()
        self.refresh()
        hint = self.session.next_step()
        if hint:
            self.append_log(hint)
        return state

    # ---- the session → widgets ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Show what changed in the session (the poll timer's tick)."""
        update = self.session.poll()
        if update.reset:
            self.log.clear()
            self.error_banner.hide()
            self.plots.reset()
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress_label.setText("Not started")
        for line in update.lines:
            self.append_log(line)
        if update.errors:
            self._show_banner(update.errors[-1])
        if update.ended:
            notifications.run_ended(update.ended, self.session.run_dir, self.session.history,
                                    self.error_banner.text() if not self.error_banner.isHidden() else None)
            hint = self.session.next_step()
            if hint:
                self.append_log(hint)
        if update:
            history = self.session.history
            self._show_progress(update)
            self.plots.show_history(history, now=update.reset or history.finished is not None)
        self._render_state()
        if update.state not in ACTIVE:
            self._poll_timer.stop()

    def _show_progress(self, update: Update) -> None:
        history = self.session.history
        step = history.last_step
        if step is None:
            prepared = [e for e in update.events if isinstance(e, PrepareProgress)]
            if update.ended:
                self.progress_label.setText(update.ended.capitalize())
            elif prepared and self.session.state != "stopping":
                self.progress_label.setText(preparing_text(prepared[-1]))
            return
        text, maximum = progress_text(history, self.form.length.budget(), self.form.epochs.value())
        self.progress.setRange(0, maximum)
        self.progress.setValue(step.global_step)
        self.progress_label.setText(STOPPING_TEXT if self.session.state == "stopping" else text)

    def _render_state(self, *_) -> None:
        """Buttons, locks and texts for the session's state (only when it changed)."""
        session = self.session
        state = session.state
        # Training would refuse this batch on this folder: say so under the field, before Start.
        problem = (session.batch_problem(self.form.batch_size.value(), self.form.device_choice()[1])
                   if state in ("ready", "finished") else None)
        shown = (state, session.can_resume(), bool(session.data_dir), problem)
        self.machine.follow(state in ACTIVE, session.child_pid())
        if shown == self._shown:
            return
        self._shown = shown
        self._update_estimate()
        self.form.show_batch_problem(problem)
        hint = session.next_step()
        self.next_label.setText(hint or "")
        self.next_label.setVisible(bool(hint))
        self._post_status()
        running = state in RUNNING
        resuming = state == "resumable"
        locked = running or state == "following"
        # A run another process writes is followed, never started or resumed a second time here.
        self.start_button.setText("Training elsewhere" if state == "following"
                                  else "Resume training" if resuming else "Start training")
        self.start_button.setEnabled(session.can_resume() if resuming
                                     else state in ("ready", "finished") and bool(session.data_dir) and not problem)
        self.pause_button.setText("Continue" if state == "paused" else "Pause")
        self.pause_button.setEnabled(state in ("training", "paused"))
        self.stop_button.setEnabled(state in ("training", "paused"))
        self.new_button.setEnabled(not running)
        self.form.set_locked(locked, resuming)
        if state == "stopping":
            self.progress_label.setText(STOPPING_TEXT)
        if running != self._shown_running:
            self._shown_running = running
            self.run_state_changed.emit(running)
        if (locked or resuming) != self._shown_locked:
            self._shown_locked = locked or resuming
            self.settings_locked.emit(locked or resuming)

    def _post_status(self) -> None:
        """The window's status bar follows the run's state: what the window said on opening a run (press
        Resume…) would otherwise stay there while it trains and after it ended."""
        window = self.window()
        if not isinstance(window, QMainWindow):
            return
        bar, text = window.statusBar(), self.session.status()
        if text:
            bar.showMessage(text)
        elif self._posted and bar.currentMessage() == self._posted:
            bar.clearMessage()  # ours, about a run no longer shown
        self._posted = text

    def append_log(self, message: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {message}")

    def show_error(self, message: str) -> None:
        from simclr_studio.gui.augment_controls import describe_error

        message = describe_error(message)  # "augment.crop_scale" as the Augment tab labels it
        self._show_banner(message)
        self.append_log(f"Error: {message}")

    def _show_banner(self, message: str) -> None:
        self.error_banner.setText(message)
        self.error_banner.show()
