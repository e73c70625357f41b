"""Background work for the window: scanning, training, previews, following a run's events file.

Training runs in a child process (the command line, linked by pipes); scans, embeddings and previews
run on worker threads. Either way results only go into thread-safe queues, and a QTimer on the GUI
thread drains them at ~15 Hz and hands batches of events to the widgets, so a run that makes
thousands of steps per second still costs the interface a handful of updates per second.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal, Slot

from simclr_studio.data import DataError, ScanResult, looks_grayscale, scan_folder, typical_side

UI_INTERVAL_MS = 66  # ~15 Hz


def lower_thread_priority(niceness: int = 5) -> None:
    """Let the window win the CPU when both want it: on Linux a thread has its own nice value, and
    the threads torch starts from this one inherit it. Elsewhere this does nothing."""

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


class ProgressJob(QObject):
    """Runs ``fn(progress, should_stop)`` on a worker thread: progress (done, total) arrives throttled
    on the GUI thread, then the result or a one-line error. A cancelled job delivers nothing."""

    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[Callable[[int, int], None], Callable[[], bool]], object], name: str = "job",
                 parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._progress: tuple[int, int] | None = None
        self._outcome: tuple[str, object] | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._timer = QTimer(self)
        self._timer.setInterval(UI_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)

    def start(self) -> None:
        self._timer.start()
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        def on_progress(done: int, total: int) -> None:
            self._progress = (done, total)

        lower_thread_priority()
        try:
            outcome = ("ok", self._fn(on_progress, self._cancel.is_set))
        except InterruptedError:
            outcome = ("cancelled", None)
        except (DataError, OSError, ValueError, RuntimeError) as exc:
            outcome = ("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # never a silent dead thread
            traceback.print_exc()
            outcome = ("error", f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._outcome = outcome

    @Slot()
    def _drain(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None and not self._cancel.is_set():
            self.progress.emit(*progress)
        with self._lock:
            outcome, self._outcome = self._outcome, None
        if outcome is None:
            return
        self._timer.stop()
        if self._cancel.is_set():
            return
        kind, value = outcome
        if kind == "ok":
            self.finished.emit(value)
        elif kind == "error":
            self.failed.emit(value)


class ScanJob(ProgressJob):
    """Scans a folder on a worker thread: progress (files so far, 0), the ScanResult or a one-line error.
    Cancelling a scan (or starting a newer one) drops its result."""

    def __init__(self, folder: str | Path, parent: QObject | None = None):
        self.folder = str(folder)
        self.facts = (64, False)  # (typical side, grayscale) of the images: what the default recipe needs
        super().__init__(self._scan, "scan", parent)

    def _scan(self, progress, should_stop) -> ScanResult:
        scan = scan_folder(self.folder, progress=progress, should_stop=should_stop)
        if len(scan):  # a few header reads and small decodes, here rather than on the GUI thread
            self.facts = (typical_side(scan.paths), looks_grayscale(scan.paths))
        return scan


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], object], done: Callable[[object, str | None], None]):
        super().__init__()
        self.fn, self.done = fn, done

    def run(self) -> None:
        lower_thread_priority()  # background work yields the CPU to the window
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

    def cancel(self, name: str) -> None:
        """Drop the result of the pending request of this name (it still runs to its end)."""
        self._generation[name] = self._generation.get(name, 0) + 1

    def submit(self, name: str, fn: Callable[[], object]) -> None:
        gen = self._generation.get(name, 0) + 1
        self._generation[name] = gen
        self.pool.start(_Task(fn, lambda res, err, name=name, gen=gen: self._deliver.emit(name, gen, res, err)))

    @Slot(str, int, object, object)
    def _on_deliver(self, name: str, gen: int, result: object, error: object) -> None:
        if self._generation.get(name) == gen:
            self.result.emit(name, result, error)
