"""Stopping a run from outside: signals, and the launcher of several processes.

    run_until_stopped    SIGINT, SIGTERM or SIGHUP stops the run with a checkpoint; later ones wait for it
    launch_torchrun      ``--nproc K``: torchrun in a session of its own, each stop passed on to it once
    close_events         the run's events end with a final state, however it ended

POSIX signals: SIGHUP does not exist on Windows, where Ctrl-C and SIGTERM do the same.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from simclr_studio.cli import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from simclr_studio.cli.train import ProgressPrinter
    from simclr_studio.train import Trainer

FINAL_STATUSES = ("completed", "stopped", "failed")


def stop_signals() -> list[signal.Signals]:
    """The signals that stop a run with a checkpoint: Ctrl-C, SIGTERM, and the terminal closing."""
    sigs = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        sigs.append(signal.SIGHUP)
    return sigs


def tell(line: str) -> None:
    """A line for the user on stderr, which may be gone (the terminal closed: SIGHUP)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def close_events(run_dir: Path) -> bool:
    """End the run's events with a final state (``stopped``) when its writer did not (killed, or
    aborted mid-checkpoint); True when one was added. Call it once the writer has ended."""
    from simclr_studio.events import EventLog, RunFinished
    from simclr_studio.run_folder import RunFolder

    folder = RunFolder(run_dir)
    if not folder.events_file.exists() or folder.writer() is not None:
        return False
    events = folder.events()
    if not events or (isinstance(events[-1], RunFinished) and events[-1].status in FINAL_STATUSES):
        return False
    at = next((e for e in reversed(events) if hasattr(e, "global_step") and hasattr(e, "epoch")), None)
    log = EventLog(folder.events_file)  # cuts a half-written last line first
    try:
        log.write(RunFinished(status="stopped", epoch=int(getattr(at, "epoch", 0)),
                              global_step=int(getattr(at, "global_step", 0))))
    finally:
        log.close()
    return True


def run_until_stopped(trainer: Trainer, main_rank: bool, printer: ProgressPrinter | None = None) -> str:
    """Train; SIGINT, SIGTERM (torchrun and service managers stop workers with it) or SIGHUP (the
    terminal or SSH session closed) stops the run with a checkpoint. Later signals wait for that
    checkpoint (a forwarded signal must not cut its write); only a third Ctrl-C aborts without it.
    However it ends, the run's events end with a final state."""
    asked: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        asked.append(signum)
        if signum != signal.SIGINT and printer is not None and getattr(signal, "SIGHUP", None) == signum:
            printer.detach()  # the terminal is gone: printing to it would fail the run
        if len(asked) == 1:
            trainer.stop()
            if main_rank:
                tell("\nstopping: saving a checkpoint (Ctrl-C twice more to abort without it)")
        elif asked.count(signal.SIGINT) >= 3:
            raise KeyboardInterrupt
        elif main_rank:
            tell("still stopping: saving the checkpoint, then the run ends")

    previous = {sig: signal.signal(sig, on_signal) for sig in stop_signals()}
    try:
        return trainer.run()
    except KeyboardInterrupt:
        if main_rank:
            close_events(trainer.folder.path)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def launch_torchrun(nproc: int, argv: list[str], out: Path) -> int:
    """``--nproc K``: the same command under torchrun on this machine (K processes, one per GPU)."""
    import subprocess

    from simclr_studio.distributed import describe_command, torchrun_command

    cmd = torchrun_command(nproc, without_nproc(argv))
    print(f"launching: {describe_command(cmd)}", file=sys.stderr)
    # torchrun runs in a session of its own, so that each stop reaches it once, from here: Ctrl-C,
    # a SIGTERM or SIGHUP sent to this process alone, or the terminal closing. torchrun passes it on
    # to the workers, which stop with a checkpoint; the third Ctrl-C kills them all.
    posix = os.name == "posix"
    proc = subprocess.Popen(cmd, start_new_session=posix)
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        if len(stopping) == 1:
            tell("\nstopping: the workers save a checkpoint (Ctrl-C twice more to abort without it)")
            proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        elif posix and stopping.count(signal.SIGINT) >= 3:
            tell("aborting: the workers are killed without a checkpoint")
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            tell("still stopping: the workers are saving a checkpoint")

    previous = {sig: signal.signal(sig, on_signal) for sig in stop_signals()}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        close_events(out)  # killed workers leave no final event
    # A signalled torchrun reports failure even when its workers stopped cleanly with a checkpoint.
    return EXIT_INTERRUPTED if stopping else code


def without_nproc(argv: list[str]) -> list[str]:
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    return rest
