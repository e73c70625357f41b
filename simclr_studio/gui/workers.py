"""Background work for the window: the one way the app runs something off the GUI thread.

    Worker    one call ``fn(progress, should_stop)`` on a background thread (its own, or a pool's);
              progress (done, total) arrives on the GUI thread at most ~15 times a second, then the
              result (``finished``) or a one-line error (``failed``). A cancelled worker delivers nothing.
    Workers   workers by name: starting a name again cancels the older call, so only the newest
              request of a name delivers (a preview that follows a slider, the thumbnail of a row).
    Throttle  the one throttle: calls a function with the newest arguments at most once per interval
              (or, debouncing, once the calls stop).

superqt's ``thread_worker`` and ``qthrottled`` are the model. Work runs with a lowered thread priority,
so the window wins the CPU when both want it. Training does not run here: it runs in a child process
(``training_link``), which the Train tab follows at the same ~15 Hz (``UI_INTERVAL_MS``).
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal, Slot
from shiboken6 import isValid

from simclr_studio.data import DataError, ScanResult, looks_grayscale, scan_folder, typical_side

UI_INTERVAL_MS = 66  # ~15 Hz: how often background work may update the window

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]
Job = Callable[[Progress, ShouldStop], Any]


def lower_thread_priority(niceness: int = 5) -> None:
    """Let the window win the CPU when both want it: on Linux a thread has its own nice value, and
    the threads torch starts from this one inherit it. Elsewhere this does nothing."""

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def plain(fn: Callable[[], Any]) -> Job:
    """A job from a function that neither reports progress nor stops early."""
    return lambda progress, should_stop: fn()


class Throttle(QObject):
    """Calls ``fn`` with the newest arguments it was called with, on the GUI thread.

    Throttling (the default): the first call goes through at once, later ones at most once per
    ``interval_ms``, and the last call of a burst is always delivered. Debouncing: once the calls have
    stopped for ``interval_ms``.
    """

    def __init__(self, fn: Callable[..., Any], interval_ms: int = UI_INTERVAL_MS, debounce: bool = False,
                 parent: QObject | None = None):
        super().__init__(parent)
        self._fn = fn
        self._debounce = debounce
        self._args: tuple | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._fire)

    def __call__(self, *args: Any) -> None:
        self._args = args
        if self._debounce:
            self._timer.start()  # (re)starts the quiet period
        elif not self._timer.isActive():
            self._fire()

    def cancel(self) -> None:
        """Forget a waiting call."""
        self._timer.stop()
        self._args = None

    @Slot()
    def _fire(self) -> None:
        if self._args is None:
            return  # nothing new during the interval: quiet until the next call
        args, self._args = self._args, None
        if not self._debounce:
            self._timer.start()  # the next call waits for the end of this interval
        self._fn(*args)


class _Runnable(QRunnable):
    def __init__(self, worker: Worker):
        super().__init__()
        self.setAutoDelete(False)  # the worker owns it (it may take it back from the pool's queue)
        self.worker = worker

    def run(self) -> None:
        self.worker._work()


class _Courier(QObject):
    """Carries the workers' news from their threads to the GUI thread, where it lives: one object and
    one connection for all workers (a connection per worker costs more than a thumbnail's decode)."""

    post = Signal(object, bool)  # worker, done (else: a progress report is waiting)

    def __init__(self) -> None:
        super().__init__()
        self.post.connect(self._deliver)

    @Slot(object, bool)
    def _deliver(self, worker: Worker, done: bool) -> None:
        if not isValid(worker):
            return  # the worker went away with its window: nobody to tell
        if done:
            worker._on_done()
        else:
            worker._on_progress()


_courier: _Courier | None = None


class Worker(QObject):
    """Runs ``fn(progress, should_stop)`` off the GUI thread: on a thread of its own (long work), or on
    ``pool`` with ``priority`` (short work). Then, on the GUI thread, ``finished`` (the result) or
    ``failed`` (a one-line error), then ``ended``; a cancelled worker only says ``ended``. Progress
    arrives throttled to ~15 Hz. ``fn`` stops early by raising InterruptedError when ``should_stop()``.
    The ``on_*`` callbacks, if given, are called just before the signals of the same news."""

    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str)
    ended = Signal()  # the worker is over: after finished or failed, or once a cancelled call returned

    def __init__(self, fn: Job, name: str = "work", parent: QObject | None = None, pool: QThreadPool | None = None,
                 priority: int = 0, on_result: Callable[[Any], Any] | None = None,
                 on_error: Callable[[str], Any] | None = None, on_progress: Callable[[int, int], Any] | None = None,
                 on_ended: Callable[[], Any] | None = None):
        global _courier
        super().__init__(parent)
        if _courier is None:
            _courier = _Courier()  # on the GUI thread, where workers are made
        self.name = name
        self._fn = fn
        self._pool, self._priority = pool, priority
        self._on_result, self._on_error, self._on_report, self._on_ended = on_result, on_error, on_progress, on_ended
        self._runnable: _Runnable | None = None
        self._cancelled = False
        self._running = threading.Lock()  # held from start until the call returned
        self._lock = threading.Lock()
        self._latest: tuple[int, int] | None = None  # newest progress, not yet picked up
        self._outcome: tuple[str, Any] = ("cancelled", None)
        self._throttle: Throttle | None = None

    def start(self) -> None:
        self._running.acquire()
        if self._pool is None:
            threading.Thread(target=self._work, name=self.name, daemon=True).start()
        else:
            self._runnable = _Runnable(self)
            self._pool.start(self._runnable, self._priority)

    def cancel(self) -> None:
        """Deliver nothing; ``should_stop()`` turns true. A call still waiting in a pool's queue never runs."""
        self._cancelled = True
        if self._runnable is not None and self._pool is not None and self._pool.tryTake(self._runnable):
            self._running.release()
            self._end()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def is_running(self) -> bool:
        return self._running.locked()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the call returned (True) or ``timeout`` seconds passed (False)."""
        if not self._running.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._running.release()
        return True

    # ---- on the worker's thread ------------------------------------------------------------------
    def _should_stop(self) -> bool:
        return self._cancelled

    def _work(self) -> None:
        lower_thread_priority()  # background work yields the CPU to the window
        outcome: tuple[str, Any] = ("cancelled", None)
        try:
            if not self._cancelled:
                outcome = ("ok", self._fn(self._report, self._should_stop))
        except InterruptedError:
            pass
        except (DataError, OSError, ValueError, RuntimeError) as exc:
            outcome = ("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # never a silent dead thread
            traceback.print_exc()
            outcome = ("error", f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._outcome = outcome
        self._running.release()
        self._post(True)

    def _report(self, done: int, total: int) -> None:
        with self._lock:
            waiting = self._latest is not None
            self._latest = (done, total)
        if not waiting:  # one wake-up in flight at a time, however often the work reports
            self._post(False)

    def _post(self, done: bool) -> None:
        try:
            assert _courier is not None
            _courier.post.emit(self, done)
        except RuntimeError:  # the application is gone: nobody to tell
            pass

    # ---- on the GUI thread -------------------------------------------------------------------------
    def _on_progress(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is None or self._cancelled:
            return
        if self._throttle is None:
            self._throttle = Throttle(self._tell_progress, parent=self)
        self._throttle(*latest)

    def _tell_progress(self, done: int, total: int) -> None:
        if self._on_report is not None:
            self._on_report(done, total)
        self.progress.emit(done, total)

    def _on_done(self) -> None:
        if self._throttle is not None:
            self._throttle.cancel()  # the result supersedes any progress still waiting
        with self._lock:
            kind, value = self._outcome
        if not self._cancelled:
            if kind == "ok":
                if self._on_result is not None:
                    self._on_result(value)
                self.finished.emit(value)
            elif kind == "error":
                if self._on_error is not None:
                    self._on_error(value)
                self.failed.emit(value)
        self._end()

    def _end(self) -> None:
        if self._on_ended is not None:
            self._on_ended()
        self.ended.emit()


class Workers(QObject):
    """Background calls by name (any hashable): starting a name again cancels the call of that name
    still running, so only the newest request delivers. Workers run on their own threads, or on
    ``pool``. ``bool(workers)`` is whether any call is running; ``name in workers`` whether that one is."""

    def __init__(self, parent: QObject | None = None, pool: QThreadPool | None = None):
        super().__init__(parent)
        self.pool = pool
        self._running: dict[Hashable, Worker] = {}

    def start(self, name: Hashable, fn: Job, on_result: Callable[[Any], Any] | None = None,
              on_error: Callable[[str], Any] | None = None, on_progress: Callable[[int, int], Any] | None = None,
              priority: int = 0) -> Worker:
        self.cancel(name)

        def retire() -> None:  # before the callbacks run, so that they see this call as over
            if self._running.get(name) is worker:
                del self._running[name]

        def result(value: Any) -> None:
            retire()
            if on_result is not None:
                on_result(value)

        def error(message: str) -> None:
            retire()
            if on_error is not None:
                on_error(message)

        def ended() -> None:
            retire()
            worker.deleteLater()

        worker = Worker(fn, str(name), self, self.pool, priority, result, error, on_progress, ended)
        self._running[name] = worker
        worker.start()
        return worker

    def cancel(self, name: Hashable) -> None:
        worker = self._running.pop(name, None)
        if worker is not None:
            worker.cancel()

    def cancel_all(self) -> None:
        workers, self._running = list(self._running.values()), {}
        for worker in workers:
            worker.cancel()

    def __contains__(self, name: Hashable) -> bool:
        return name in self._running

    def __len__(self) -> int:
        return len(self._running)


class ScanJob(Worker):
    """Scans a folder on a worker thread: progress (files so far, 0), the ScanResult or a one-line error.
    Cancelling a scan (or starting a newer one) drops its result."""

    def __init__(self, folder: str | Path, parent: QObject | None = None):
        self.folder = str(folder)
        self.facts = (64, False)  # (typical side, grayscale) of the images: what the default recipe needs
        super().__init__(self._scan, "scan", parent)

    def _scan(self, progress: Progress, should_stop: ShouldStop) -> ScanResult:
        scan = scan_folder(self.folder, progress=progress, should_stop=should_stop)
        if len(scan):  # a few header reads and small decodes, here rather than on the GUI thread
            self.facts = (typical_side(scan.paths), looks_grayscale(scan.paths))
        return scan

