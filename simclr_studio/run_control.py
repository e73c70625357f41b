"""Pause, unpause and stop a training run: asked from any thread, honoured between steps; and how
a run that fails in an expected way ends: with a one-line ErrorEvent (:func:`failure_event`)."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

import torch

from simclr_studio.checkpoint import CheckpointError, DiskFullError
from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.data import DataError
from simclr_studio.events import ErrorEvent

# Distributed: (stop, pause) → whether any rank wants to stop, whether any wants to pause.
Agreement = Callable[[bool, bool], tuple[bool, bool]]


def _alone(stop: bool, pause: bool) -> tuple[bool, bool]:
    return stop, pause


class RunControl:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    # ---- asked (thread-safe; from the GUI thread or a signal handler) -------------------------
    def pause(self) -> None:
        self._running.clear()

    def unpause(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused loop so it can stop

    @property
    def stop_asked(self) -> bool:
        return self._stop.is_set()

    @property
    def pause_asked(self) -> bool:
        return not self._running.is_set()

    # ---- honoured (by the training loop) ------------------------------------------------------
    def between_steps(self, agree: Agreement | None, on_state: Callable[[str], None]) -> tuple[bool, bool]:
        """(stop now, was paused); waits out a pause, telling ``on_state`` "paused" and "running".
        Distributed, every rank agrees on both, so all stop at the same step and a paused run
        holds no rank in a collective."""
        ask = agree or _alone
        stop, pause = ask(self.stop_asked, self.pause_asked)
        if not pause or stop:
            return stop, False
        on_state("paused")
        while pause and not stop:
            if agree is None:
                self._running.wait()
            else:
                self._running.wait(0.2)  # all ranks poll together while rank 0 waits for the user
            stop, pause = ask(self.stop_asked, self.pause_asked)
        if not stop:
            on_state("running")
        return stop, True


# ---- expected failures --------------------------------------------------------------------------
_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory", "MPS backend out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, Python's MemoryError, or the RuntimeError of torch's CPU/MPS allocators."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in _OUT_OF_MEMORY)


def failure_event(exc: BaseException, cfg: RunConfig) -> ErrorEvent | None:
    """The one-line ErrorEvent of an expected failure; None for a bug (which is reported with its traceback)."""
    if isinstance(exc, DiskFullError):
        return ErrorEvent(message=str(exc), category="disk")
    for kind, category in ((DataError, "data"), (ConfigError, "config"), (CheckpointError, "checkpoint")):
        if isinstance(exc, kind):
            return ErrorEvent(message=str(exc), category=category)
    if is_out_of_memory(exc):
        return ErrorEvent(category="oom", message=(
            f"out of memory at batch size {cfg.batch_size} and image size {cfg.image_size}; try a batch size of "
            f"{max(2, cfg.batch_size // 2)}, a smaller image size or a smaller backbone"))
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return ErrorEvent(category="disk", message=f"disk full{where}: {exc.strerror or exc}")
    return None
