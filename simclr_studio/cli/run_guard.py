"""What a run may write where: nothing of the user's or of another run is ever lost.

    check_before_launch   the cheap checks, before ``--nproc`` starts torchrun (one line, not a worker failure)
    claim_run_folder      one writer per run folder; a new run only in a new or empty folder, or over an
                          old run with --overwrite (moved aside, never deleted); a resume rebuilds a lost
                          config.json from its checkpoint

Only rank 0 claims the folder: the other ranks of a torchrun run must not test its lock against rank 0.
The trainer itself holds the lock for the whole run (run_lock); these checks make the refusal one line
before anything is read or written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from simclr_studio.cli import CliError

if TYPE_CHECKING:
    from simclr_studio.run_folder import RunFolder


def check_before_launch(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before any process starts, what ``claim_run_folder`` would refuse; changes nothing."""
    from simclr_studio.run_folder import RunFolder

    _refusal(RunFolder(out), resume, overwrite)


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for this run's writer, or refuse in one line with nothing touched."""
    from simclr_studio.run_folder import RunFolder

    folder = RunFolder(out)
    old_run = _refusal(folder, resume, overwrite)
    if resume:
        note = folder.restore_config()
        if note is not None:
            print(f"note: {note}", file=sys.stderr)
    elif old_run:
        moved = folder.move_aside()
        print(f"note: the old run in {folder.path} was moved aside to {moved}", file=sys.stderr)


def _refusal(folder: RunFolder, resume: bool, overwrite: bool) -> bool:
    """Raise what this run may not do in ``folder``; True when --overwrite lets a new run replace an old one."""
    from simclr_studio.run_lock import refuse_if_busy

    refuse_if_busy(folder.path)
    if resume:
        if not folder.can_resume():
            raise CliError(f"nothing to resume: no checkpoint in {folder.checkpoint_dir}")
        return False
    problem = folder.new_run_problem()
    if problem is None:
        return False
    if not (overwrite and folder.holds_run() and folder.path.is_dir()):
        raise CliError(problem)
    return True
