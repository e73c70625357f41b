"""The link between the app and a training process it starts: both ends, in one place.

The app runs ``simclr-studio train --link ...`` as a child process (:class:`ChildRun`), so training
is exactly as fast as on the command line and a crash in training cannot take the window with it.

    parent → child   stdin: one command per line, "pause", "unpause" or "stop"; end of input
                     (the app closed or crashed) stops the run with a checkpoint
    child → parent   stdout: one event per line, as JSON (``Event.to_dict``); everything printed
                     for people goes to stderr, which the parent keeps in the run's train.log

The child's side is :func:`open_event_pipe` and :func:`serve_commands`; the parent's side is
:class:`ChildRun`, which whoever shows the run (a session) drains a few times a second.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from simclr_studio.config import RunConfig
from simclr_studio.events import ErrorEvent, Event, RunFinished, event_from_dict
from simclr_studio.run_folder import RunFolder

COMMANDS = ("pause", "unpause", "stop")
LINK_FLAG = "--link"  # the hidden flag of `simclr-studio train` that turns the link on


# ---- the wire format --------------------------------------------------------------------------------
def encode_event(event: Event) -> str:
    return json.dumps(event.to_dict()) + "\n"


def decode_event(line: str | bytes) -> Event | None:
    """An event from one line; None for anything else (a stray print, a half line, a newer kind)."""
    try:
        data = json.loads(line)
    except (ValueError, TypeError):
        return None
    return event_from_dict(data) if isinstance(data, dict) else None


def encode_command(command: str) -> bytes:
    if command not in COMMANDS:
        raise ValueError(f"unknown training command {command!r}")
    return f"{command}\n".encode()


def decode_commands(pending: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """Split what arrived on stdin into whole known commands, and the unfinished rest."""
    *lines, rest = (pending + chunk).split(b"\n")
    commands = [line.decode(errors="replace").strip() for line in lines]
    return [c for c in commands if c in COMMANDS], rest


def child_command(run_dir: str | Path, *, config_file: str | Path | None = None, resume: bool = False,
                  epochs: int | None = None, device: str | None = None, nproc: int = 1) -> list[str]:
    """The command line that trains ``run_dir`` under the link: a new run from ``config_file`` (which
    names the data folder), or ``resume`` with the only settings a resume may change."""
    args = ["train", "--out", str(run_dir), "--quiet", LINK_FLAG]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    if resume:
        args += ["--resume"]
        args += ["--epochs", str(epochs)] if epochs is not None else []
        args += ["--device", device] if device is not None else []
    elif config_file is not None:
        args += ["--config", str(config_file)]
    else:
        raise ValueError("a new run needs its config file")
    return _interpreter() + args


def _interpreter() -> list[str]:
    """How to start the command line (a frozen bundle is its own interpreter)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "simclr_studio"]


# ---- the child's end ------------------------------------------------------------------------------
def open_event_pipe() -> IO[str]:
    """Take stdout for events: returns the event stream, and sends everything else printed (by
    Python, native code or a loader worker writing to fd 1) to stderr, so nothing interleaves."""
    sys.stdout.flush()
    pipe = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return pipe


class Controllable(Protocol):
    def pause(self) -> None: ...
    def unpause(self) -> None: ...
    def stop(self) -> None: ...


def serve_commands(target: Controllable, fd: int = 0) -> threading.Thread:
    """Apply the commands arriving on ``fd`` to ``target`` on a daemon thread; end of input stops it."""

    def read() -> None:
        actions: dict[str, Callable[[], None]] = {
            "pause": target.pause, "unpause": target.unpause, "stop": target.stop}
        # Raw reads: iterating sys.stdin would hold its lock while blocked, and a DataLoader worker
        # forked at that moment would hang for ever closing its copy of stdin.
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            commands, pending = decode_commands(pending, chunk)
            for command in commands:
                actions[command]()
        target.stop()

    thread = threading.Thread(target=read, name="link-commands", daemon=True)
    thread.start()
    return thread


# ---- the parent's end -----------------------------------------------------------------------------
class ChildRun:
    """A training process started with :func:`child_command`: its events queue up on a reader
    thread until :meth:`drain` takes them; :meth:`pause`, :meth:`unpause` and :meth:`stop` go down
    its stdin. Qt-free: the app's view drains it from a timer, a test from a loop."""

    def __init__(self, run_dir: str | Path, command: list[str], request_file: Path | None = None):
        self.folder = RunFolder(run_dir)
        self.command = command
        self._request_file = request_file  # a temp config to delete when the process ends
        self._queue: collections.deque[Event] = collections.deque()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader = threading.Thread(target=self._read, name="link-events", daemon=True)
        self.status: str | None = None  # the final status, once the process ended and said so

    @property
    def pid(self) -> int | None:
        """The training process's id while it is started, else None."""
        proc = self._proc
        return None if proc is None else proc.pid

    @classmethod
    def new_run(cls, cfg: RunConfig, run_dir: str | Path, nproc: int = 1) -> ChildRun:
        """A new run of ``cfg`` (its data folder included) in ``run_dir``."""
        fd, name = tempfile.mkstemp(prefix="simclr-studio-run-", suffix=".json")
        os.close(fd)
        cfg.save(name)
        return cls(run_dir, child_command(run_dir, config_file=name, nproc=nproc), Path(name))

    @classmethod
    def resume(cls, run_dir: str | Path, epochs: int | None = None, device: str | None = None,
               nproc: int = 1) -> ChildRun:
        """Continue ``run_dir`` from its last checkpoint (see ``run_folder.resume_config``)."""
        return cls(run_dir, child_command(run_dir, resume=True, epochs=epochs, device=device, nproc=nproc))

    def start(self) -> None:
        self.folder.path.mkdir(parents=True, exist_ok=True)
        # The child's messages for people (and any crash report) go to a log beside the run.
        with open(self.folder.process_log, "ab") as log:
            try:
                self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            except OSError as exc:
                self._queue.append(ErrorEvent(message=f"cannot start training: {exc}", category="error"))
                self._queue.append(RunFinished(status="failed", epoch=0, global_step=0))
                self._proc = None
        self._reader.start()

    def send(self, command: str) -> None:
        data = encode_command(command)
        proc = self._proc
        if proc is not None and proc.stdin is not None and proc.poll() is None:
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # it is ending anyway: its last events still arrive

    def pause(self) -> None:
        self.send("pause")

    def unpause(self) -> None:
        self.send("unpause")

    def stop(self) -> None:
        self.send("stop")

    def drain(self) -> list[Event]:
        """The events that arrived since the last call (thread-safe; never blocks)."""
        batch = []
        while self._queue:
            batch.append(self._queue.popleft())
        return batch

    def is_running(self) -> bool:
        """True from start() until the process ended and every event was drained."""
        return self._reader.ident is not None and (self._reader.is_alive() or bool(self._queue))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the process to end (its last events stay queued for drain)."""
        if self._reader.ident is not None:
            self._reader.join(timeout)
        return not self._reader.is_alive()

    def _read(self) -> None:
        finished: RunFinished | None = None
        try:
            finished = self._follow()
        finally:  # whatever happens here, whoever drains must hear that the run ended
            if finished is None:
                self._queue.append(RunFinished(status="failed", epoch=0, global_step=0))
            self.status = finished.status if finished is not None else "failed"
            if self._request_file is not None:
                self._request_file.unlink(missing_ok=True)

    def _follow(self) -> RunFinished | None:
        finished = None
        proc = self._proc
        if proc is None or proc.stdout is None:
            return RunFinished(status="failed", epoch=0, global_step=0)  # already queued by start()
        for raw in proc.stdout:
            event = decode_event(raw)
            if event is not None:
                finished = event if isinstance(event, RunFinished) else finished
                self._queue.append(event)
        code = proc.wait()
        if finished is None:  # the process died without reporting: say why, as well as we can
            self._queue.append(ErrorEvent(category="error", message=(
                f"the training process exited unexpectedly (code {code}): {self.log_tail()}")))
            finished = RunFinished(status="failed", epoch=0, global_step=0)
            self._queue.append(finished)
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        return finished

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.folder.process_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " / ".join(text[-lines:]) or "no output"
