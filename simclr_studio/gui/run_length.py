"""How long a run trains: a time budget in minutes or a number of epochs; and, before Start, how long
the chosen settings will take and whether the images fit the RAM cache (``session.estimate``)."""

from __future__ import annotations

import atexit
import weakref

import psutil
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from simclr_studio.config import RunConfig
from simclr_studio.gui.workers import Throttle, Workers
from simclr_studio.session.estimate import StepSpeed, cache_plan, estimate_run, measure_step_seconds, speed_key

MINUTES, EPOCHS = "Minutes", "Epochs"
# The budget offered for a new folder until the user types one: a coffee break on a CPU, longer on a GPU.
DEFAULT_MINUTES = {"cpu": 10.0, "gpu": 30.0}


def default_minutes(device_type: str) -> float:
    return DEFAULT_MINUTES["gpu" if device_type in ("cuda", "mps") else "cpu"]


class RunLength(QWidget):
    """A choice between "train for N minutes" and "train for N epochs", with one spin box for each."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mode = QComboBox()
        self.mode.addItems([MINUTES, EPOCHS])
        self.mode.setToolTip("Minutes: the run measures its speed in its first steps, then lays the warm-up and\n"
                             "the cosine schedule over the budget so that it finishes when the time is up.\n"
                             "Epochs: a fixed number of passes over the folder.")
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.1, 100_000)
        self.minutes.setDecimals(1)
        self.minutes.setSuffix(" min")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100_000)
        self.epochs.setSuffix(" epochs")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.mode, self.minutes, self.epochs):
            layout.addWidget(widget)
        # What the user chose themselves is kept when a new folder's settings are suggested.
        self.user_mode: str | None = None
        self.user_minutes: float | None = None
        self._loading = False
        self.mode.activated.connect(lambda _: setattr(self, "user_mode", self.mode.currentText()))
        self.mode.currentTextChanged.connect(self._sync)
        self.minutes.valueChanged.connect(self._minutes_typed)
        self._sync()

    def _minutes_typed(self, value: float) -> None:
        if not self._loading:
            self.user_minutes = value

    def _sync(self, *_) -> None:
        self.minutes.setVisible(self.is_minutes())
        self.epochs.setVisible(not self.is_minutes())

    def is_minutes(self) -> bool:
        return self.mode.currentText() == MINUTES

    def set_minutes_mode(self, on: bool) -> None:
        self.mode.setCurrentText(MINUTES if on else EPOCHS)

    def budget(self) -> float | None:
        """The time budget in minutes, or None when training for a number of epochs."""
        return self.minutes.value() if self.is_minutes() else None

    def load(self, cfg: RunConfig) -> None:
        """Show a config's length: its budget when it has one, else its epochs."""
        self._loading = True
        try:
            if cfg.minutes is not None:
                self.minutes.setValue(cfg.minutes)
            self.epochs.setValue(cfg.epochs)
            self.set_minutes_mode(cfg.minutes is not None)
        finally:
            self._loading = False

    def set_locked(self, locked: bool, resuming: bool) -> None:
        """Nothing changes while a run trains or is followed. A run opened to resume keeps its saved
        plan: its budget and the choice of mode are fixed; an epochs run may still be lengthened."""
        self.mode.setEnabled(not locked and not resuming)
        self.minutes.setEnabled(not locked and not resuming)
        self.epochs.setEnabled(not locked and not (resuming and self.is_minutes()))


_measuring: weakref.WeakSet = weakref.WeakSet()  # measures still running, stopped before Python exits


@atexit.register
def _stop_measures(timeout_s: float = 5.0) -> None:
    """A measure ends between two steps: a thread left inside torch while the interpreter exits aborts it."""
    for worker in list(_measuring):
        worker.cancel()
        worker.wait(timeout_s)


class RunEstimate(QLabel):
    """The run's time and its images' place (RAM cache or disk) for the settings shown. The speed of a
    config is measured once, in the background (a newer request cancels an older one), and kept."""

    SETTLE_MS = 400  # a measure starts once the settings stopped changing for this long

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("muted")
        self.setWordWrap(True)
        self.hide()
        self.speeds: dict[tuple, StepSpeed | str] = {}  # by speed_key: a measured speed, or why none
        self._workers = Workers(self)
        self._request: tuple[RunConfig, int, int, int] | None = None  # (config, images, typical side, processes)
        self._measure_later = Throttle(self._measure, self.SETTLE_MS, debounce=True, parent=self)

    def show_for(self, cfg: RunConfig, n_images: int, typical_side: int, nproc: int = 1) -> None:
        """Estimate ``cfg`` on ``n_images`` (of ``typical_side`` px) in ``nproc`` processes: at once from
        what is known, then again when the speed has been measured."""
        self._request = (cfg, n_images, typical_side, nproc)
        key = speed_key(cfg, nproc)
        if key not in self.speeds:
            self._workers.cancel("speed")
            self._measure_later(key)
        self._render()
        self.show()

    def clear(self) -> None:
        """Nothing to estimate (no folder, or a run shown): hide, and measure nothing."""
        self._request = None
        self._measure_later.cancel()
        self._workers.cancel_all()
        self.hide()

    def measuring(self) -> bool:
        return "speed" in self._workers

    def _measure(self, key: tuple) -> None:
        if self._request is None or speed_key(self._request[0], self._request[3]) != key:
            return  # the settings moved on
        cfg = self._request[0]

        def done(value: StepSpeed | str) -> None:
            self.speeds[key] = value
            self._render()

        def measure(progress, should_stop) -> StepSpeed:
            return measure_step_seconds(cfg, should_stop=should_stop)

        worker = self._workers.start("speed", measure, on_result=done,
                                     on_error=lambda message: done(f"speed not measured: {message}"))
        _measuring.add(worker)

    def _render(self) -> None:
        if self._request is None:
            return
        cfg, n_images, side, nproc = self._request
        speed = self.speeds.get(speed_key(cfg, nproc))
        estimate = estimate_run(cfg, n_images, nproc, speed if isinstance(speed, StepSpeed) else None)
        text = estimate.text()
        if isinstance(speed, str):
            text = text.replace(": measuring the speed…", f" ({speed})")
        cache = cache_plan(cfg, n_images, side, nproc, psutil.virtual_memory().available)
        self.setText(f"{text}\n{cache.text()}")
