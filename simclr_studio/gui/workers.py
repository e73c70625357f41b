"""Background work for the window: scanning, training, previews, following a run's events file.

Training runs in a child process (the command line, linked by pipes); scans, embeddings and previews
run on worker threads. Either way results only go into thread-safe queues, and a QTimer on the GUI
thread drains them at ~15 Hz and hands batches of events to the widgets, so a run that makes
thousands of steps per second still costs the interface a handful of updates per second.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal, Slot

from simclr_studio.config import RunConfig
from simclr_studio.data import DataError, ScanResult, looks_grayscale, scan_folder, typical_side
from simclr_studio.events import EVENTS_FILE, ErrorEvent, Event, RunFinished, event_from_dict, follow_events

UI_INTERVAL_MS = 66  # ~15 Hz
PROCESS_LOG = "train.log"  # the training process's own messages, in the run folder


def lower_thread_priority(niceness: int = 5) -> None:
    """Let the window win the CPU when both want it: on Linux a thread has its own nice value, and
    the threads torch starts from this one inherit it. Elsewhere this does nothing."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def train_command() -> list[str]:
    """How to start the command line from the app (a frozen bundle is its own interpreter)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "simclr_studio"]


class TrainJob(QObject):
    """Runs a training run as a child process (``simclr-studio train --pipe``): its events arrive as
    JSON lines on a pipe and reach the GUI thread in batches; pause, resume and stop go down stdin.

    A separate process trains exactly as fast as the command line does: the window's drawing never
    holds the trainer's interpreter lock, and a crash in training cannot take the window with it.
    """

    events = Signal(list)  # list[Event], at most ~15 times a second
    done = Signal(str)  # final status

    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, parent: QObject | None = None,
                 nproc: int = 1):
        """``nproc`` > 1: data-parallel in that many processes (torchrun, one per GPU); rank 0 speaks."""
        super().__init__(parent)
        self.cfg = cfg
        self.nproc = nproc
        self.run_dir = Path(run_dir)
        self.resuming = resume
        self._queue: collections.deque[Event] = collections.deque()
        self._proc: subprocess.Popen | None = None
        self._request: Path | None = None
        self._reader = threading.Thread(target=self._read, name="train-events", daemon=True)
        self._timer = QTimer(self)
        self._timer.setInterval(UI_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)
        self.status: str | None = None
        self._done_emitted = False

    def command(self) -> list[str]:
        args = ["train", "--out", str(self.run_dir), "--quiet", "--pipe"]
        if self.nproc > 1:
            args += ["--nproc", str(self.nproc)]
        if self.resuming:
            # A time-budgeted run resumes with its saved plan; an epochs run may have been lengthened.
            length = ["--epochs", str(self.cfg.epochs)] if self.cfg.minutes is None else []
            return train_command() + args + ["--resume", *length, "--device", self.cfg.device]
        fd, request = tempfile.mkstemp(prefix="simclr-studio-run-", suffix=".json")
        os.close(fd)
        self._request = Path(request)
        self.cfg.save(self._request)
        return train_command() + args + [self.cfg.data_dir, "--config", str(self._request)]

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        # The child's messages for people (and any crash report) go to a log beside the run.
        log = open(self.run_dir / PROCESS_LOG, "ab")
        try:
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except OSError as exc:
            self._queue.append(ErrorEvent(message=f"cannot start training: {exc}", category="error"))
            self._queue.append(RunFinished(status="failed", epoch=0, global_step=0))
            self._proc = None
        finally:
            log.close()
        self._timer.start()
        self._reader.start()

    def _send(self, command: str) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.write(f"{command}\n".encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._send("stop")

    def is_running(self) -> bool:
        """True from start() until ``done`` is emitted (after the last event reached the window)."""
        return self._reader.ident is not None and not self._done_emitted

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the process to end (its last events still arrive through the event loop)."""
        if self._reader.ident is not None:
            self._reader.join(timeout)
        return not self._reader.is_alive()

    def _read(self) -> None:
        finished = None
        try:
            finished = self._follow()
        finally:  # whatever happens here, the window must hear that the run ended
            self.status = finished.status if finished is not None else "failed"

    def _follow(self) -> RunFinished | None:
        finished = None
        if self._proc is not None:
            for raw in self._proc.stdout:
                try:
                    event = event_from_dict(json.loads(raw))
                except (ValueError, TypeError):
                    continue  # not an event line
                if event is not None:
                    finished = event if isinstance(event, RunFinished) else finished
                    self._queue.append(event)
            code = self._proc.wait()
            if finished is None:  # the process died without reporting: say why, as well as we can
                self._queue.append(ErrorEvent(category="error", message=(
                    f"the training process exited unexpectedly (code {code}): {self._log_tail()}")))
                finished = RunFinished(status="failed", epoch=0, global_step=0)
                self._queue.append(finished)
            for pipe in (self._proc.stdin, self._proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
        if self._request is not None:
            try:
                self._request.unlink(missing_ok=True)
            except OSError:
                pass
        return finished

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = (self.run_dir / PROCESS_LOG).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " / ".join(text[-lines:]) or "no output"

    @Slot()
    def _drain(self) -> None:
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        if batch:
            self.events.emit(batch)
        if self.status is not None and not self._reader.is_alive() and not self._queue:
            self._timer.stop()
            self._done_emitted = True
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
