"""The Train tab's settings form: where the run goes, what it trains and for how long, and where."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

from simclr_studio.config import BACKBONES, OPTIMIZERS, AugmentConfig, RunConfig
from simclr_studio.device import device_choices
from simclr_studio.gui.run_length import RunLength


class TrainForm(QGroupBox):
    """Shows a RunConfig and builds one from what the user set. ``runs_root`` is where the run
    folder browser opens. ``settings_changed`` says that a field that changes what the run costs changed."""

    settings_changed = Signal()

    def __init__(self, runs_root: Path, parent: QWidget | None = None):
        super().__init__("Run settings", parent)
        self.runs_root = runs_root
        form = QFormLayout(self)
        self.run_dir_edit = QLineEdit()
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_run_dir)
        row = QHBoxLayout()
        row.addWidget(self.run_dir_edit)
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
        # Why training would refuse the batch size, shown under it before Start (empty: nothing wrong).
        self.batch_note = QLabel()
        self.batch_note.setObjectName("error")
        self.batch_note.setWordWrap(True)
        self.batch_note.hide()
        form.addRow("", self.batch_note)
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
        self.tensorboard = QCheckBox("Also write TensorBoard logs")
        self.tensorboard.setToolTip("Writes RUN_DIR/tensorboard/ beside events.jsonl (loss, learning rate, images/s, "
                                    "kNN accuracy),\nso the run can also be watched with: tensorboard --logdir RUN_DIR")
        form.addRow("Logs", self.tensorboard)
        # What a resumed run may not change (the length and the device have their own rules).
        self._fixed = [self.run_dir_edit, browse, self.backbone, self.image_size, self.batch_size, self.optimizer,
                       self.lr, self.temperature, self.seed, self.tensorboard]
        self._weight_decay: tuple[str, float | None] = ("", None)  # (optimizer, wd) of the loaded config
        self._lr: float | None = None  # the loaded config's lr, of which the field shows 5 decimals
        for signal in (self.backbone.currentTextChanged, self.image_size.valueChanged, self.batch_size.valueChanged,
                       self.length.mode.currentTextChanged, self.minutes.valueChanged, self.epochs.valueChanged,
                       self.optimizer.currentTextChanged, self.device.currentIndexChanged):
            signal.connect(self.settings_changed)

    def load_config(self, cfg: RunConfig, reasons: dict[str, str] | None = None) -> None:
        """Show a config; ``reasons`` (the recipe's, by setting) become the fields' tool tips."""
        self.backbone.setCurrentText(cfg.backbone if cfg.backbone in BACKBONES else "small-cnn")
        self.image_size.setValue(cfg.image_size)
        self.batch_size.setValue(cfg.batch_size)
        self.length.load(cfg)
        self.optimizer.setCurrentText(cfg.optimizer)
        self.lr.setValue(cfg.lr or 0.0)
        self._lr = cfg.lr
        self.temperature.setValue(cfg.temperature)
        single = [i for i in range(self.device.count()) if self.device.itemData(i)[1] == 1]
        match = [i for i in single if self.device.itemData(i)[0] == cfg.device]
        self.device.setCurrentIndex(match[0] if match else single[0])
        self.seed.setValue(cfg.seed)
        self.tensorboard.setChecked(cfg.tensorboard)
        self._weight_decay = (cfg.optimizer, cfg.weight_decay)  # not on the form, but part of the recipe
        reasons = reasons or {}
        for key, widget in (("backbone", self.backbone), ("image_size", self.image_size), ("optimizer", self.lr),
                            ("batch_size", self.batch_size), ("optimizer", self.optimizer), ("epochs", self.epochs),
                            ("temperature", self.temperature), ("length", self.minutes)):
            widget.setToolTip(f"Suggested: {reasons[key]}" if reasons.get(key) else "")

    def config(self, data_dir: str, augment: AugmentConfig | None = None) -> RunConfig:
        """The config the form shows, training on ``data_dir`` with ``augment`` (else the default)."""
        optimizer = self.optimizer.currentText()
        lr = self.lr.value() or None
        if lr is not None and self._lr is not None and round(self._lr, self.lr.decimals()) == lr:
            lr = self._lr  # untouched: the recipe's exact value, as the command line trains with
        cfg = RunConfig(data_dir=data_dir, backbone=self.backbone.currentText(),
                        image_size=self.image_size.value(), batch_size=self.batch_size.value(),
                        epochs=self.epochs.value(), minutes=self.length.budget(), optimizer=optimizer,
                        lr=lr, temperature=self.temperature.value(),
                        # The loaded weight decay belongs to its optimizer; another one gets its own default.
                        weight_decay=self._weight_decay[1] if optimizer == self._weight_decay[0] else None,
                        device=self.device_choice()[0], seed=self.seed.value(),
                        tensorboard=self.tensorboard.isChecked())
        if augment is not None:
            cfg.augment = augment
        return cfg

    def show_batch_problem(self, problem: str | None) -> None:
        self.batch_note.setText(problem or "")
        self.batch_note.setVisible(bool(problem))

    def device_choice(self) -> tuple[str, int]:
        """(device, number of processes) chosen in the device menu."""
        device, processes = self.device.currentData()
        return str(device), int(processes)

    def run_dir(self) -> str:
        """The run folder typed or chosen (may be empty or relative: the session says what is wrong)."""
        text = self.run_dir_edit.text().strip()
        return str(Path(text).expanduser()) if text else ""

    def set_locked(self, locked: bool, resuming: bool) -> None:
        """Nothing changes while a run trains or is followed. A run opened to resume keeps its saved
        settings but its length (by its own rule) and the device: a checkpoint resumes anywhere."""
        for widget in self._fixed:
            widget.setEnabled(not locked and not resuming)
        self.length.set_locked(locked, resuming)
        self.device.setEnabled(not locked)

    def _browse_run_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run folder", str(self.runs_root))
        if folder:
            self.run_dir_edit.setText(folder)
