"""Background work for the window: scanning, training, previews, following a run's events file.

Engine callbacks run on worker threads; they only append to thread-safe queues. A QTimer on the
GUI thread drains the queues at ~15 Hz and hands batches of events to the widgets, so a run that
makes thousands of steps per second still costs the interface a handful of updates per second.
"""

from __future__ import annotations

import collections
import threading
import traceback
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal, Slot

from simclr_studio.config import RunConfig
from simclr_studio.data import DataError, ScanResult, scan_folder
from simclr_studio.events import EVENTS_FILE, Event, follow_events
from simclr_studio.train import Trainer

UI_INTERVAL_MS = 66  # ~15 Hz


def lower_thread_priority(niceness: int = 5) -> None:
    """Let the window win the CPU when both want it: on Linux a thread has its own nice value, and
    the threads torch starts from this one inherit it. Elsewhere this does nothing."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


class ScanJob(QObject):
    """Scans a folder on a worker thread; reports progress, the result or a one-line error."""

    progress = Signal(int)
    finished = Signal(object)  # ScanResult
    failed = Signal(str)

    def __init__(self, folder: str | Path, parent: QObject | None = None):
        super().__init__(parent)
        self.folder = str(folder)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._latest: tuple[str, object] | None = None
        self._count = 0
        self._thread = threading.Thread(target=self._work, name="scan", daemon=True)
        self._timer = QTimer(self)
        self._timer.setInterval(UI_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)

    def start(self) -> None:
        self._timer.start()
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        def on_progress(done: int, total: int) -> None:
            self._count = done

        try:
            result = scan_folder(self.folder, progress=on_progress, should_stop=self._cancel.is_set)
            outcome = ("ok", result)
        except InterruptedError:
            outcome = ("cancelled", None)
        except (DataError, OSError) as exc:
            outcome = ("error", str(exc))
        except Exception as exc:  # never a silent dead thread
            outcome = ("error", f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._latest = outcome

    @Slot()
    def _drain(self) -> None:
        self.progress.emit(self._count)
        with self._lock:
            outcome, self._latest = self._latest, None
        if outcome is None:
            return
        self._timer.stop()
        if self._cancel.is_set():  # superseded by a newer scan: deliver nothing
            return
        kind, value = outcome
        if kind == "ok":
            self.finished.emit(value)
        elif kind == "error":
            self.failed.emit(value)


class TrainJob(QObject):
    """Runs a Trainer on a worker thread; its events arrive on the GUI thread in batches."""

    events = Signal(list)  # list[Event], at most ~15 times a second
    done = Signal(str)  # final status

    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, parent: QObject | None = None):
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self._queue: collections.deque[Event] = collections.deque()
        self.trainer = Trainer(cfg, run_dir, on_event=self._queue.append, resume=resume)
        self._thread = threading.Thread(target=self._work, name="train", daemon=True)
        self._timer = QTimer(self)
        self._timer.setInterval(UI_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)
        self.status: str | None = None

    def start(self) -> None:
        self._timer.start()
        self._thread.start()

    def pause(self) -> None:
        self.trainer.pause()

    def resume(self) -> None:
        self.trainer.resume_training()

    def stop(self) -> None:
        self.trainer.stop()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        lower_thread_priority()
        try:
            self.status = self.trainer.run()
        except Exception:  # the trainer has already reported it as an ErrorEvent and a "failed" finish
            traceback.print_exc()
            self.status = "failed"

    @Slot()
    def _drain(self) -> None:
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        if batch:
            self.events.emit(batch)
        if self.status is not None and not self._thread.is_alive() and not self._queue:
            self._timer.stop()
            self.done.emit(self.status)


class RunFollower(QObject):
    """Follows a run's events.jsonl written by another process (CLI, another machine on a shared folder)."""

    events = Signal(list)
    reset = Signal()  # the file was truncated or replaced: followers must start over

    def __init__(self, run_dir: str | Path, interval_ms: int = 250, parent: QObject | None = None):
        super().__init__(parent)
        self.path = Path(run_dir) / EVENTS_FILE
        self.offset = 0
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
        try:
            if self.offset and self.path.stat().st_size < self.offset:
                self.offset = 0
                self.reset.emit()
            new, self.offset = follow_events(self.path, self.offset)
        except (OSError, ValueError):
            return
        batch = list(new)
        if batch:
            self.events.emit(batch)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], object], done: Callable[[object, str | None], None]):
        super().__init__()
        self.fn, self.done = fn, done

    def run(self) -> None:
        try:
            result, error = self.fn(), None
        except Exception as exc:
            result, error = None, f"{type(exc).__name__}: {exc}"
        try:
            self.done(result, error)
        except RuntimeError:  # the receiver (its window) was closed while this ran: nobody to tell
            pass


class TaskRunner(QObject):
    """Runs short functions on the global thread pool; the result comes back on the GUI thread.

    Only the newest request of a given name delivers its result (older ones are dropped), which is
    what a preview that changes with every slider move needs.
    """

    result = Signal(str, object, object)  # name, result, error
    _deliver = Signal(str, int, object, object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._generation: dict[str, int] = {}
        self._deliver.connect(self._on_deliver)
        self.pool = QThreadPool.globalInstance()

    def submit(self, name: str, fn: Callable[[], object]) -> None:
        gen = self._generation.get(name, 0) + 1
        self._generation[name] = gen
        self.pool.start(_Task(fn, lambda res, err, name=name, gen=gen: self._deliver.emit(name, gen, res, err)))

    @Slot(str, int, object, object)
    def _on_deliver(self, name: str, gen: int, result: object, error: object) -> None:
        if self._generation.get(name) == gen:
            self.result.emit(name, result, error)
