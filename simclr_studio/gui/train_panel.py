"""The Train tab: the run's settings, Start / Pause / Stop, live curves, progress and a log.

All training happens in a TrainJob (a child process); this widget only renders its events, at most
~15 times a second. A run folder written by another process is followed through its events file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGraphicsItem,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.config import BACKBONES, OPTIMIZERS, ConfigError, RunConfig
from simclr_studio.device import available_devices, device_choices
from simclr_studio.events import (
    BaselineEvent,
    CheckpointEvent,
    EpochEvent,
    ErrorEvent,
    EvalEvent,
    LogEvent,
    PlanEvent,
    PrepareProgress,
    RunFinished,
    RunStarted,
    StateEvent,
    read_events,
)
from simclr_studio.gui.knn_plot import KnnPlot
from simclr_studio.gui.run_length import RunLength, default_minutes
from simclr_studio.gui.train_job import RunFollower, TrainJob
from simclr_studio.history import RunHistory, smooth_ema
from simclr_studio.run_folder import CONFIG_FILE, EVENTS_FILE, LIVE_WINDOW_S, RunFolder
from simclr_studio.session.wording import format_minutes, progress_text

# Text and progress follow events at ~15 Hz; the curves redraw at most 10 times a second.
PLOT_INTERVAL_S = 0.1
LEFT_AXIS_WIDTH = 56  # px: room for tick labels such as "0.0003" or "1.2e+03"


class TrainPanel(QWidget):
    run_state_changed = Signal(bool)  # True while a run is training in this window
    settings_locked = Signal(bool)  # True while the run's settings cannot change (training, or resuming a run)
    augment_config_loaded = Signal(object)  # AugmentConfig of an opened run folder
    augment_suggested = Signal(object, str)  # the recipe's AugmentConfig for a new folder, and why

    def __init__(self, runs_root: Path, parent=None):
        super().__init__(parent)
        self.runs_root = Path(runs_root)
        self.data_dir: str | None = None
        self.job: TrainJob | None = None
        self.follower: RunFollower | None = None
        self.history = RunHistory()
        self.opened_run: Path | None = None  # a run folder opened to resume or follow
        self.augment_source = None  # callable returning the AugmentConfig to train with
        self._last_plot = 0.0
        self._x_total = 0  # the step axes' span: the run's (planned) total steps
        self._weight_decay: tuple[str, float | None] = ("", None)  # (optimizer, wd) of the loaded config
        self._plot_timer = QTimer(self)
        self._plot_timer.setSingleShot(True)
        self._plot_timer.timeout.connect(self._update_plots)
        self._build()
        self._set_running(False)

    # ---- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        form_box = QGroupBox("Run settings")
        form = QFormLayout(form_box)
        self.run_dir = QLineEdit()
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_run_dir)
        row = QHBoxLayout()
        row.addWidget(self.run_dir)
        row.addWidget(browse)
        form.addRow("Run folder", row)
        self.backbone = QComboBox()
        self.backbone.addItems(list(BACKBONES))
        form.addRow("Backbone", self.backbone)
        self.image_size = QSpinBox()
        self.image_size.setRange(16, 1024)
        self.image_size.setSuffix(" px")
        form.addRow("Image size", self.image_size)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(2, 65536)
        form.addRow("Batch size", self.batch_size)
        self.length = RunLength()
        self.epochs, self.minutes = self.length.epochs, self.length.minutes
        form.addRow("Train for", self.length)
        self.optimizer = QComboBox()
        self.optimizer.addItems(list(OPTIMIZERS))
        form.addRow("Optimizer", self.optimizer)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(0.0, 100.0)
        self.lr.setSingleStep(0.01)
        self.lr.setSpecialValueText("auto (base × batch / 256)")
        form.addRow("Learning rate", self.lr)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.01, 10.0)
        self.temperature.setSingleStep(0.05)
        form.addRow("Temperature τ", self.temperature)
        self.device = QComboBox()
        for label, device, processes in device_choices():
            self.device.addItem(label, (device, processes))
        self.device.setToolTip("Where training runs. With several GPUs, \"all N GPUs\" trains data-parallel in one\n"
                               "process per GPU (torchrun): the effective batch is N × the batch size.")
        form.addRow("Device", self.device)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        form.addRow("Seed", self.seed)
        self.settings_widgets = [self.run_dir, browse, self.backbone, self.image_size, self.batch_size, self.optimizer,
                                 self.lr, self.temperature, self.device, self.seed]

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

        self.error_banner = QLabel()
        self.error_banner.setObjectName("error")
        self.error_banner.setWordWrap(True)
        self.error_banner.hide()
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress_label = QLabel("Not started")
        self.progress_label.setObjectName("muted")

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(form_box)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.new_button)
        left_layout.addWidget(self.error_banner)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.progress_label)
        left_layout.addStretch()
        # A fixed width: the progress text changes length every update, and a column that followed it
        # would resize the plots beside it, which redraws every axis from scratch.
        left.setFixedWidth(360)
        self.progress_label.setWordWrap(True)

        # ---- plots ----
        pg.setConfigOptions(antialias=False)  # antialiased curves cost ~10× more to draw (raster engine)
        self.plots = pg.GraphicsLayoutWidget()
        self.loss_plot = self.plots.addPlot(row=0, col=0, title="Loss")
        self.lr_plot = self.plots.addPlot(row=0, col=1, title="Learning rate")
        self.speed_plot = self.plots.addPlot(row=1, col=0, title="Throughput (images/s)")
        self.knn_plot = self.plots.addPlot(row=1, col=1, title="kNN accuracy")
        for plot in (self.loss_plot, self.lr_plot, self.speed_plot):
            plot.setClipToView(True)
            plot.setDownsampling(auto=True, mode="peak")
            # No grid on the curves that redraw every step: a grid is a plot-sized translucent layer,
            # and Qt blends such large images on its own thread pool, waking threads that then take
            # the CPU from training (3× the context switches, measured). The kNN plot keeps its grid.
            plot.setLabel("bottom", "step")
        self.knn_plot.showGrid(x=True, y=True, alpha=0.15)
        for plot in (self.loss_plot, self.lr_plot, self.speed_plot, self.knn_plot):
            for name in ("left", "bottom"):
                # Axes (tick labels and grid) are the costly part of a redraw: cache them as pixmaps,
                # redrawn only when their range changes (8× cheaper redraws during training).
                plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            # A fixed tick-label width: otherwise a y range whose labels are wider or narrower re-lays
            # out all four plots, which throws away every cached axis.
            plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        self.knn_plot.setLabel("bottom", "epoch")
        self.knn_plot.setYRange(0, 1)
        # One-pixel opaque pens: Qt's raster engine draws them on its fast line path; wider or
        # translucent pens cost several times more per redraw. The raw loss colour is set per theme.
        self.loss_raw = self.loss_plot.plot(name="raw")
        self.loss_smooth = self.loss_plot.plot(pen=pg.mkPen((40, 110, 220), width=1), name="smoothed")
        self.lr_curve = self.lr_plot.plot(pen=pg.mkPen((230, 126, 34), width=1))
        self.speed_curve = self.speed_plot.plot(pen=pg.mkPen((39, 174, 96), width=1))
        self.knn = KnnPlot(self.knn_plot)  # its curve, the raw-pixel baseline and k in the title
        self.knn_curve, self.knn_baseline = self.knn.curve, self.knn.baseline
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setValue(80)
        self.smoothing.setMaximumWidth(200)
        self.smoothing.valueChanged.connect(self._update_plots)
        self.smoothing_label = QLabel("0.80")
        self.log_y = QCheckBox("Log scale")
        self.log_y.toggled.connect(lambda on: (self.loss_plot.setLogMode(y=on), self._update_plots()))
        plot_bar = QHBoxLayout()
        plot_bar.addWidget(QLabel("Loss smoothing"))
        plot_bar.addWidget(self.smoothing)
        plot_bar.addWidget(self.smoothing_label)
        plot_bar.addSpacing(16)
        plot_bar.addWidget(self.log_y)
        plot_bar.addStretch()

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("Training log")
        right_top = QWidget()
        rt = QVBoxLayout(right_top)
        rt.setContentsMargins(0, 0, 0, 0)
        rt.addLayout(plot_bar)
        rt.addWidget(self.plots, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(right_top)
        right.addWidget(self.log)
        right.setStretchFactor(0, 4)
        right.setStretchFactor(1, 1)

        layout = QHBoxLayout(self)
        layout.addWidget(left)
        layout.addWidget(right, 1)
        self.load_config(RunConfig.suggested(1000, 32, "cpu", minutes=default_minutes("cpu")))
        self.epochs.setValue(RunConfig.suggested(1000, 32, "cpu").epochs)

    def apply_theme(self, dark: bool) -> None:
        self.plots.setBackground("#1e1f22" if dark else "w")
        axis_pen = pg.mkPen("#c8c8c8" if dark else "#444")
        self.loss_raw.setPen(pg.mkPen((58, 78, 110) if dark else (180, 200, 238), width=1))  # faint, not see-through
        for plot in (self.loss_plot, self.lr_plot, self.speed_plot, self.knn_plot):
            for name in ("left", "bottom"):
                plot.getAxis(name).setPen(axis_pen)
                plot.getAxis(name).setTextPen(axis_pen)
            plot.titleLabel.setText(plot.titleLabel.text, color="#e0e0e0" if dark else "#222")

    # ---- config <-> form ----------------------------------------------------------------------
    def load_config(self, cfg: RunConfig, reasons: dict[str, str] | None = None) -> None:
        """Show a config; ``reasons`` (the recipe's, by setting) become the fields' tool tips."""
        self.backbone.setCurrentText(cfg.backbone if cfg.backbone in BACKBONES else "small-cnn")
        self.image_size.setValue(cfg.image_size)
        self.batch_size.setValue(cfg.batch_size)
        self.length.load(cfg)
        self.optimizer.setCurrentText(cfg.optimizer)
        self.lr.setValue(cfg.lr or 0.0)
        self.temperature.setValue(cfg.temperature)
        single = [i for i in range(self.device.count()) if self.device.itemData(i)[1] == 1]
        match = [i for i in single if self.device.itemData(i)[0] == cfg.device]
        self.device.setCurrentIndex(match[0] if match else single[0])
        self.seed.setValue(cfg.seed)
        self._weight_decay = (cfg.optimizer, cfg.weight_decay)  # not on the form, but part of the recipe
        reasons = reasons or {}
        for key, widget in (("backbone", self.backbone), ("image_size", self.image_size), ("optimizer", self.lr),
                            ("batch_size", self.batch_size), ("optimizer", self.optimizer), ("epochs", self.epochs),
                            ("temperature", self.temperature), ("length", self.minutes)):
            widget.setToolTip(f"Suggested: {reasons[key]}" if reasons.get(key) else "")

    def config(self) -> RunConfig:
        optimizer = self.optimizer.currentText()
        cfg = RunConfig(data_dir=self.data_dir or "", backbone=self.backbone.currentText(),
                        image_size=self.image_size.value(), batch_size=self.batch_size.value(),
                        epochs=self.epochs.value(), minutes=self.length.budget(), optimizer=optimizer,
                        lr=self.lr.value() or None, temperature=self.temperature.value(),
                        # The loaded weight decay belongs to its optimizer; another one gets its own default.
                        weight_decay=self._weight_decay[1] if optimizer == self._weight_decay[0] else None,
                        device=self.device.currentData()[0], seed=self.seed.value())
        if self.augment_source is not None:
            cfg.augment = self.augment_source()
        return cfg

    def set_data(self, data_dir: str, n_images: int, typical_side: int, grayscale: bool = False) -> None:
        """A newly imported folder: the default recipe for it, this machine and the time the user gives."""
        from simclr_studio.recipe import FolderFacts, suggest

        if self.is_running():
            return
        self.new_run(keep_form=False)
        self.data_dir = data_dir
        device = available_devices()[0].split(":")[0]
        facts = FolderFacts(n_images, typical_side, grayscale)
        budgeted = suggest(facts, device, self.length.user_minutes or default_minutes(device))
        by_epochs = suggest(facts, device, None)  # the epochs shown when the user picks "Epochs"
        self.load_config(budgeted.config, {**budgeted.reasons, "epochs": by_epochs.reasons.get("length", "")})
        self.epochs.setValue(by_epochs.config.epochs)
        self.length.set_minutes_mode((self.length.user_mode or "Minutes") == "Minutes")
        self.augment_suggested.emit(budgeted.config.augment, budgeted.reasons.get("augment", ""))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir.setText(str(self.runs_root / f"{Path(data_dir).name}-{stamp}"))
        self.start_button.setEnabled(True)

    def clear_data(self) -> None:
        """No usable folder is open (e.g. it had no images): nothing to train on."""
        if self.is_running():
            return
        self.data_dir = None
        self.new_run()

    def _browse_run_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder", str(self.runs_root))
        if folder:
            self.run_dir.setText(folder)

    # ---- run control --------------------------------------------------------------------------
    def current_run_dir(self) -> Path | None:
        """The run this panel shows (training, followed or opened), or None before one exists."""
        if self.job is not None:
            return self.job.run_dir
        if self.opened_run is not None:
            return self.opened_run
        text = self.run_dir.text().strip()
        return Path(text).expanduser() if text and (Path(text).expanduser() / CONFIG_FILE).is_file() else None

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    def set_runs_root(self, root: Path) -> None:
        """Where new runs go; a suggested (not yet used) run folder moves with it."""
        old_root, self.runs_root = self.runs_root, Path(root)
        text = self.run_dir.text().strip()
        if text and Path(text).parent == old_root and not self.is_running() and self.opened_run is None:
            self.run_dir.setText(str(self.runs_root / Path(text).name))

    def start(self) -> None:
        if self.is_running():
            return
        self.error_banner.hide()
        resume = self.opened_run is not None and RunFolder(self.opened_run).last_checkpoint.exists()
        try:
            if resume:
                cfg = RunConfig.load(self.opened_run / CONFIG_FILE)
                if cfg.minutes is None:  # the settings a resumed run may change: epochs and device;
                    cfg.epochs = self.epochs.value()  # a time-budgeted run keeps its saved plan
                cfg.device = self.device.currentData()[0]
                run_dir = self.opened_run
            else:
                if not self.data_dir:
                    raise ConfigError("open an image folder first")
                cfg = self.config()
                cfg.validate()
                if not self.run_dir.text().strip() or not Path(self.run_dir.text()).expanduser().is_absolute():
                    raise ConfigError("choose a run folder (a full path) for this run's checkpoints and logs")
                run_dir = Path(self.run_dir.text()).expanduser()
                if RunFolder(run_dir).last_checkpoint.exists():
                    raise ConfigError(f"{run_dir} already holds a run: choose another run folder")
        except ConfigError as exc:
            self.show_error(str(exc))
            return
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        if not resume:
            self.history = RunHistory()
            self.log.clear()
        self.opened_run = Path(run_dir)
        self.job = TrainJob(cfg, run_dir, resume=resume, parent=self, nproc=self.device.currentData()[1])
        self.job.events.connect(self.on_events)
        self.job.done.connect(self._on_done)
        self.job.start()
        self._set_running(True)
        self.append_log(f"{'Resuming' if resume else 'Starting'} run in {run_dir}")

    def toggle_pause(self) -> None:
        if not self.is_running():
            return
        if self.history.paused or self.pause_button.text() == "Resume":
            self.job.unpause()
            self.pause_button.setText("Pause")
        else:
            self.job.pause()
            self.pause_button.setText("Resume")

    def stop(self) -> None:
        if self.is_running():
            self.job.stop()
            self.pause_button.setText("Pause")
            self.progress_label.setText("Stopping: saving a checkpoint…")

    def stop_and_wait(self, timeout: float = 60.0) -> bool:
        """Stop and wait (processing events) until the worker has saved its checkpoint and ended."""
        from PySide6.QtWidgets import QApplication

        if not self.is_running():
            return True
        self.job.stop()
        deadline = time.time() + timeout
        while self.job.is_running() and time.time() < deadline:
            QApplication.processEvents()
            self.job.wait(0.05)
        QApplication.processEvents()
        return not self.job.is_running()

    def new_run(self, keep_form: bool = True) -> None:
        if self.is_running():
            return
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        self.job = None
        self.opened_run = None
        self.history = RunHistory()
        self.log.clear()
        self.error_banner.hide()
        self.progress.setValue(0)
        self.progress_label.setText("Not started")
        for plot in (self.loss_plot, self.lr_plot, self.speed_plot):
            plot.enableAutoRange(x=True)
        self._x_total = 0
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = Path(self.data_dir).name if self.data_dir else "run"
        self.run_dir.setText(str(self.runs_root / f"{name}-{stamp}"))
        self._update_plots()
        self._set_running(False)

    @Slot(str)
    def _on_done(self, status: str) -> None:
        self._set_running(False)
        self._update_progress()  # replaces "Stopping…" and other transient text
        self.append_log(f"Run {status}." + (" Press Resume to continue it, or New run to start another."
                                             if status != "completed" and self.opened_run is not None
                                             and RunFolder(self.opened_run).last_checkpoint.exists() else ""))

    def _set_running(self, running: bool) -> None:
        resume_mode = self.opened_run is not None and RunFolder(self.opened_run).last_checkpoint.exists() and not running
        spent = (resume_mode and self.length.is_minutes() and self.history.finished is not None
                 and self.history.finished.status == "completed")  # a finished budget: nothing to resume
        self.start_button.setEnabled(not running and not spent and (bool(self.data_dir) or resume_mode))
        self.start_button.setText("Resume training" if resume_mode else "Start training")
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.new_button.setEnabled(not running)
        for widget in self.settings_widgets:
            widget.setEnabled(not running and not resume_mode)
        self.length.set_locked(running, resume_mode)
        self.device.setEnabled(not running)  # a checkpoint resumes on any device and number of GPUs
        self.run_state_changed.emit(running)
        self.settings_locked.emit(running or resume_mode)

    # ---- opening an existing run --------------------------------------------------------------
    def open_run(self, run_dir: str | Path) -> str:
        """Show a run folder's config and curves; follow it live if another process is writing it.

        Returns "live", "resumable" or "finished".
        """
        if self.is_running():
            raise RuntimeError("a run is training in this window")
        run_dir = Path(run_dir)
        cfg = RunConfig.load(run_dir / CONFIG_FILE)
        self.new_run()
        self.opened_run = run_dir
        self.data_dir = cfg.data_dir
        self.load_config(cfg)
        self.run_dir.setText(str(run_dir))
        self.augment_config_loaded.emit(cfg.augment)
        events_path = run_dir / EVENTS_FILE
        events = read_events(events_path) if events_path.exists() else []
        finished = bool(events) and events[-1].kind == "finished"
        live = (not finished and events_path.exists()
                and time.time() - events_path.stat().st_mtime < LIVE_WINDOW_S)
        if live:
            self.follower = RunFollower(run_dir, parent=self)
            self.follower.events.connect(self.on_events)
            self.follower.reset.connect(self._restart_following)
            self.follower.start()  # replays the file from the start, then follows it
            self.append_log(f"Following a run written by another process: {run_dir}")
            state = "live"
        else:
            self.on_events(events)
            self._update_plots()  # the whole history at once, not throttled
            state = "resumable" if RunFolder(run_dir).last_checkpoint.exists() else "finished"
            if RunFolder(run_dir).last_checkpoint.exists():
                done = self.history.finished is not None and self.history.finished.status == "completed"
                self.append_log("Press Resume to continue this run from its last checkpoint." if not done else
                                "Run complete: raise Epochs and press Resume to train longer." if cfg.minutes is None
                                else f"Run complete: its {format_minutes(cfg.minutes)} min budget is spent.")
        self._set_running(False)
        if live:
            self.start_button.setEnabled(False)
        return state

    def _restart_following(self) -> None:
        self.history = RunHistory()
        self.log.clear()

    def _followed_run_ended(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
            self.append_log("The followed run has finished.")
            self._set_running(False)

    # ---- events → widgets ---------------------------------------------------------------------
    @Slot(list)
    def on_events(self, events: list) -> None:
        planned = self.history.plan is not None  # a plan already logged for this session of the run
        self.history.extend(events)
        for event in events:
            if isinstance(event, RunStarted):
                planned = False
                self.append_log(f"Training {event.backbone} on {event.device}: {event.n_images} images, "
                                f"{event.steps_per_epoch} steps per epoch"
                                + (", images cached in RAM" if event.cached else ", streaming from disk"))
            elif isinstance(event, EpochEvent):
                self.append_log(f"Epoch {event.epoch + 1}: loss {event.loss:.4f} · {event.seconds:.1f} s · "
                                f"{event.images_per_s:.0f} images/s")
            elif isinstance(event, EvalEvent):
                base = self.history.baseline
                self.append_log(f"Epoch {event.epoch + 1}: kNN accuracy {event.knn_accuracy:.3f}"
                                + (f" (raw pixels {base.knn_accuracy:.3f})" if base is not None else ""))
            elif isinstance(event, BaselineEvent):
                self.append_log(f"Baseline: {event.features} kNN {event.knn_accuracy:.3f} "
                                f"(k={event.k}, {event.n_images:,} images)")
            elif isinstance(event, PlanEvent) and not planned:  # it re-plans every epoch: log the first
                planned = True
                self.append_log(f"Planned {event.total_steps:,} steps ({event.warmup_steps:,} warm-up) for the "
                                f"{format_minutes(event.budget_s / 60)} min budget at {event.seconds_per_step:.3f} s "
                                "per step")
            elif isinstance(event, CheckpointEvent) and event.reason == "stop":
                self.append_log(f"Checkpoint saved: {event.path}")
            elif isinstance(event, LogEvent):
                self.append_log(event.message)
            elif isinstance(event, ErrorEvent):
                self.show_error(event.message)
            elif isinstance(event, StateEvent):
                self.pause_button.setText("Resume" if event.state == "paused" else "Pause")
                self.progress_label.setText("Paused" if event.state == "paused" else self.progress_label.text())
            elif isinstance(event, RunFinished):
                self.append_log(f"Finished: {event.status} at step {event.global_step}")
            elif isinstance(event, PrepareProgress) and event.total and self.history.last_step is None:
                what = "Decoding images" if event.stage == "decode" else "Scanning"
                self.progress_label.setText(f"{what}… {event.done:,} of {event.total:,}")
        labeled = self.history.started is None or self.history.started.labeled
        if self.knn_plot.isVisible() != labeled:  # only on change: it re-lays out every plot
            self.knn_plot.setVisible(labeled)  # kNN needs class folders
        self._update_progress()
        self._schedule_plots(now=self.history.finished is not None)
        if self.follower is not None and self.history.finished is not None:
            self._followed_run_ended()

    def _update_progress(self) -> None:
        step = self.history.last_step
        if step is None:
            return
        text, maximum = progress_text(self.history, self.length.budget(), self.epochs.value())
        self.progress.setRange(0, maximum)
        self.progress.setValue(step.global_step)
        self.progress_label.setText(text)

    def _schedule_plots(self, now: bool = False) -> None:
        wait = PLOT_INTERVAL_S - (time.monotonic() - self._last_plot)
        if now or wait <= 0:
            self._update_plots()
        elif not self._plot_timer.isActive():
            self._plot_timer.start(int(wait * 1000) + 1)

    def _update_plots(self) -> None:
        self._plot_timer.stop()
        self._last_plot = time.monotonic()
        h = self.history
        weight = self.smoothing.value() / 100
        self.smoothing_label.setText(f"{weight:.2f}")
        steps = np.asarray(h.steps, dtype=np.float64)
        loss = np.asarray(h.loss, dtype=np.float64)
        lr = np.asarray(h.lr, dtype=np.float64)
        speed = np.asarray(h.throughput, dtype=np.float64)
        self.loss_raw.setData(steps, loss)
        self.loss_smooth.setData(steps, smooth_ema(loss, weight))
        self.lr_curve.setData(steps, lr)
        self.speed_curve.setData(steps, speed)
        if h.total_steps and h.total_steps != self._x_total:
            # The step axis spans the whole (planned) run: it stays put (and cached) until the plan changes.
            self._x_total = h.total_steps
            for plot in (self.loss_plot, self.lr_plot, self.speed_plot):
                plot.enableAutoRange(x=False)
                plot.setXRange(0, max(1, h.total_steps), padding=0.02)
        for plot, values in ((self.loss_plot, loss), (self.lr_plot, lr), (self.speed_plot, speed)):
            self._fit_y(plot, values)
        self.knn.update(h)

    @staticmethod
    def _fit_y(plot, values: np.ndarray) -> None:
        """Y range with hysteresis: it changes only when the data leaves it or fills under a third of it,
        so the (cached) axis is not redrawn on every update, as plain auto-range would."""
        log = plot.getAxis("left").logMode
        finite = values[np.isfinite(values) & ((values > 0) if log else True)]
        if finite.size == 0:
            plot.enableAutoRange(y=True)
            return
        data = np.log10(finite) if log else finite
        lo, hi = float(data.min()), float(data.max())
        span = max(hi - lo, abs(hi) * 1e-3, 1e-12)
        (cur_lo, cur_hi) = plot.getViewBox().viewRange()[1]
        if plot.getViewBox().autoRangeEnabled()[1] or lo < cur_lo or hi > cur_hi or (cur_hi - cur_lo) > 3 * span:
            plot.enableAutoRange(y=False)
            plot.setYRange(lo - 0.15 * span, hi + 0.15 * span, padding=0)

    def append_log(self, message: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {message}")

    def show_error(self, message: str) -> None:
        self.error_banner.setText(message)
        self.error_banner.show()
        self.append_log(f"Error: {message}")
