"""One writer per run folder: an OS lock on ``RUN_DIR/writer.lock``, held for the whole run.

The operating system releases the lock when the process ends, however it ends (a killed run
never leaves a stale lock). The file also says who holds it (pid, host, start time), so a
second writer's error names the holder. Limits: on local disks the lock is exact; on network
folders it holds as far as the file system passes locks on (NFSv4 and SMB do; some FUSE and
old NFSv3 setups without a lock manager do not).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LOCK_FILE = "writer.lock"


@dataclass(frozen=True)
class Writer:
    """Who holds a run folder's lock."""

    pid: int
    host: str
    started: float  # time.time() when it took the lock

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"process {self.pid} on {self.host}, since {when}"

    @classmethod
    def from_text(cls, text: str) -> Writer | None:
        try:
            data: Any = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), float(data["started"]))
        except (ValueError, TypeError, KeyError):
            return None


class RunBusyError(RuntimeError):
    """Another process is writing this run folder."""

    def __init__(self, run_dir: Path, writer: Writer | None):
        self.run_dir, self.writer = run_dir, writer
        holder = writer.describe() if writer is not None else "another process"
        super().__init__(f"{run_dir} is being written by {holder}: a run folder has one writer "
                         "(open it in the app to follow it, or wait for it to end)")


def _try_lock(f: IO[bytes]) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


ACQUIRE_TRIES, ACQUIRE_RETRY_S = 5, 0.05


def _lock_with_retries(f: IO[bytes]) -> bool:
    """A reader asking who writes the folder (current_writer) holds the lock for an instant: a few
    quick retries tell that apart from a real writer."""
    for attempt in range(ACQUIRE_TRIES):
        if _try_lock(f):
            return True
        if attempt < ACQUIRE_TRIES - 1:
            time.sleep(ACQUIRE_RETRY_S)
    return False


class RunLock:
    """``with RunLock(run_dir):`` — this process is the run folder's one writer until the block ends."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise RunBusyError naming the holder. Creates the run folder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+b")
        if not _lock_with_retries(f):
            f.seek(0)
            writer = Writer.from_text(f.read().decode("utf-8", "replace"))
            f.close()
            raise RunBusyError(self.path.parent, writer)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        f.seek(0)
        f.truncate()
        f.write(json.dumps(me).encode())
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def current_writer(run_dir: str | Path) -> Writer | None:
    """The process writing ``run_dir`` now, or None when nobody holds its lock."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return None
    try:
        f = open(path, "rb")
    except OSError:
        return None
    with f:
        if _try_lock(f):
            return None  # free (closing the file gives the lock back)
        f.seek(0)
        return Writer.from_text(f.read().decode("utf-8", "replace")) or Writer(0, "unknown host", 0.0)


def refuse_if_busy(run_dir: str | Path) -> None:
    """Raise RunBusyError, naming the holder, when another process writes ``run_dir``."""
    writer = current_writer(run_dir)
    if writer is not None:
        raise RunBusyError(Path(run_dir), writer)
