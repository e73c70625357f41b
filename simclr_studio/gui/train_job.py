"""The Train tab's background links: a training process it started, or a run another process writes.

Both deliver batches of events on the GUI thread at a few updates per second, however fast the
run makes steps.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from simclr_studio.config import RunConfig
from simclr_studio.events import EventsFollower
from simclr_studio.gui.workers import UI_INTERVAL_MS
from simclr_studio.run_folder import RunFolder
from simclr_studio.training_link import ChildRun


class TrainJob(QObject):
    """A training process (see ``training_link.ChildRun``) whose events reach the GUI thread in
    batches, at most ~15 times a second, through ``events``; ``done`` follows the last batch."""

    events = Signal(list)  # list[Event]
    done = Signal(str)  # final status

    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, parent: QObject | None = None,
                 nproc: int = 1):
        """``nproc`` > 1: data-parallel in that many processes (torchrun, one per GPU); rank 0 speaks."""
        super().__init__(parent)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resuming = resume
        # A time-budgeted run resumes with its saved plan; an epochs run may have been lengthened.
        self.child = (ChildRun.resume(run_dir, cfg.epochs if cfg.minutes is None else None, cfg.device, nproc)
                      if resume else ChildRun.new_run(cfg, run_dir, nproc))
        self._timer = QTimer(self)
        self._timer.setInterval(UI_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)
        self._done_emitted = False

    def command(self) -> list[str]:
        return self.child.command

    @property
    def status(self) -> str | None:
        return self.child.status

    def start(self) -> None:
        self.child.start()
        self._timer.start()

    def pause(self) -> None:
        self.child.pause()

    def unpause(self) -> None:
        self.child.unpause()

    def stop(self) -> None:
        self.child.stop()

    def is_running(self) -> bool:
        """True from start() until ``done`` is emitted (after the last event reached the window)."""
        return self._timer.isActive() and not self._done_emitted

    def wait(self, timeout: float | None = None) -> bool:
        return self.child.wait(timeout)

    @Slot()
    def _drain(self) -> None:
        batch = self.child.drain()
        if batch:
            self.events.emit(batch)
        if not self.child.is_running():
            self._timer.stop()
            self._done_emitted = True
            self.done.emit(self.child.status or "failed")


class RunFollower(QObject):
    """Follows a run's events.jsonl written by another process (CLI, another machine on a shared folder)."""

    events = Signal(list)
    reset = Signal()  # the file was truncated or replaced: followers must start over

    def __init__(self, run_dir: str | Path, interval_ms: int = 250, parent: QObject | None = None):
        super().__init__(parent)
        self.follower = EventsFollower(RunFolder(run_dir).events_file)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)

    def start(self) -> None:
        self.poll()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @Slot()
    def poll(self) -> None:
        batch, reset = self.follower.poll()
        if reset:
            self.reset.emit()
        if batch:
            self.events.emit(batch)
