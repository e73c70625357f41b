"""The machine while a run trains: one compact line on the Train tab (CPU, RAM, the training process's
own CPU and memory, and the GPU's utilisation and memory when there is one), about once a second.

Each sample is taken on a background thread (``session.machine``), so a slow /proc or NVML call never
stalls the window; a tick that finds the previous sample still running skips.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QWidget

from simclr_studio.gui.workers import Workers
from simclr_studio.session.machine import MachineSample, MachineSampler, cuda_sampler

SAMPLE_MS = 1000


class MachineMonitor(QLabel):
    """Follows the machine (and the process ``pid``) while :meth:`follow` says a run is active."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("muted")
        self.setWordWrap(True)
        self.setToolTip("This machine while the run trains: CPU (all cores), memory in use, the training\n"
                        "process's own CPU (100 % = one core) and memory, and the GPU's utilisation and memory.")
        self.hide()
        self.last: MachineSample | None = None
        self._sampler: MachineSampler | None = None  # made on the first sample, off the GUI thread
        self._pid: int | None = None
        self._workers = Workers(self)
        self._timer = QTimer(self)
        self._timer.setInterval(SAMPLE_MS)
        self._timer.timeout.connect(self._tick)

    def follow(self, active: bool, pid: int | None = None) -> None:
        """Sample while ``active`` (a run trains or is followed); ``pid``: the training process, if ours."""
        self._pid = pid if active else None
        if active and not self._timer.isActive():
            self.setText("Measuring the machine…")
            self.show()
            self._timer.start()
            self._tick()
        elif not active and self._timer.isActive():
            self._timer.stop()
            self._workers.cancel_all()
            self.hide()

    def is_following(self) -> bool:
        return self._timer.isActive()

    def _tick(self) -> None:
        if "sample" in self._workers:
            return  # the last one is still being taken: skip a beat rather than queue
        pid = self._pid
        self._workers.start("sample", lambda progress, should_stop: self._sample(pid), on_result=self._show)

    def _sample(self, pid: int | None) -> MachineSample:
        if self._sampler is None:
            self._sampler = MachineSampler(cuda_sampler())
        self._sampler.watch(pid)
        return self._sampler.sample()

    def _show(self, sample: MachineSample) -> None:
        if not self._timer.isActive():
            return  # the run ended while it was taken
        self.last = sample
        self.setText(sample.text())
