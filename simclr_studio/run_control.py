"""Pause, unpause and stop a training run: asked from any thread, honoured between steps."""

from __future__ import annotations

import threading
from collections.abc import Callable

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
