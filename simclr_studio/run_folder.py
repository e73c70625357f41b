"""A run folder: the one place that names what a run keeps on disk, and says what state it is in.

    RUN_DIR/config.json          the run's RunConfig (what it learns and how)
    RUN_DIR/checkpoints/last.pt  the newest checkpoint (resuming starts here)
    RUN_DIR/checkpoints/epoch_NNNN.pt  the newest few per-epoch checkpoints
    RUN_DIR/events.jsonl         every event of every session of the run (followers read it live)
    RUN_DIR/train.log            what the training process printed when the app started it
    RUN_DIR/embeddings/          cached features of folders embedded with the run's checkpoints
    RUN_DIR/selections.json      the named selections and tags of the run's images (see selections)
    RUN_DIR/eval.json            the latest checkpoint's measured accuracy (eval --json, the Explore tab)
    RUN_DIR/writer.lock          held by the one process writing the run (see run_lock)
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from simclr_studio.checkpoint import CheckpointError, load_training_checkpoint
from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.events import Event, RunFinished, read_events
from simclr_studio.run_lock import LOCK_FILE, Writer, current_writer

CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
NOTE_FILE = "note.txt"
EVENTS_FILE = "events.jsonl"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
PROCESS_LOG = "train.log"
EMBEDDINGS_DIR = "embeddings"
SELECTIONS_FILE = "selections.json"
LIVE_WINDOW_S = 120  # an events file touched this recently, without a "finished" event, is a live run

RunState = Literal["new", "live", "resumable", "finished"]


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path).expanduser())

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder:
        """The run folder a checkpoint file belongs to (the one above ``checkpoints/``)."""
        parent = Path(checkpoint).parent
        return cls(parent.parent if parent.name == CHECKPOINT_DIR else parent)

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def events_file(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / LAST_CHECKPOINT

    @property
    def process_log(self) -> Path:
        return self.path / PROCESS_LOG

    @property
    def embeddings_dir(self) -> Path:
        return self.path / EMBEDDINGS_DIR

    @property
    def selections_file(self) -> Path:
        return self.path / SELECTIONS_FILE

    @property
    def eval_file(self) -> Path:
        """The latest checkpoint's measured accuracy (``eval --json`` or the Explore tab write it)."""
        return self.path / EVAL_FILE

    @property
    def note_file(self) -> Path:
        """The user's note on the run (the Runs tab writes it)."""
        return self.path / NOTE_FILE

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch_{epoch:04d}.pt"

    # ---- what is there ----------------------------------------------------------------------------
    def is_run(self) -> bool:
        """A folder a run has written (its config, and events or checkpoints)."""
        return self.config_file.is_file() and (self.events_file.exists() or self.checkpoint_dir.is_dir())

    def has_config(self) -> bool:
        return self.config_file.is_file()

    def can_resume(self) -> bool:
        """A checkpoint to continue from: last.pt, or a per-epoch one when last.pt is lost (a new run
        must not be started here). Existence only: checkpoint_to_resume says which one loads."""
        return self.last_checkpoint.exists() or any(self.checkpoint_dir.glob("epoch_*.pt"))

    def holds_run(self) -> bool:
        """Anything a run writes is here (its config, events or checkpoints): a new run may not
        start here unless the old one is moved aside (``move_aside``)."""
        return self.config_file.exists() or self.events_file.exists() or self.checkpoint_dir.exists()

    def is_empty(self) -> bool:
        """A new path, or a folder holding nothing (but perhaps a free writer lock, or the log of the
        app's training process, which it opens just before the process starts)."""
        if not self.path.exists():
            return True
        return self.path.is_dir() and all(p.name in (LOCK_FILE, PROCESS_LOG) for p in self.path.iterdir())

    def new_run_problem(self) -> str | None:
        """Why a new run may not be written here (one line), or None: only a new path or an empty
        folder may be. A run folder is kept (resume it, or move it aside); any other folder is the
        user's, and nothing in it is touched."""
        if self.path.exists() and not self.path.is_dir():
            return f"{self.path} is a file, not a run folder"
        if self.is_empty():
            return None
        if self.holds_run():
            return (f"{self.path} already holds a run: --resume continues it, --overwrite moves it aside "
                    "and starts a new one, or choose another --out")
        return f"{self.path} is not empty and not a run folder: choose a new or empty folder for the run"

    def move_aside(self) -> Path:
        """Rename the run folder to ``NAME.old-YYYYmmdd-HHMMSS`` beside it (never deletes); returns
        the new path."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.old-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.old-{stamp}-{n}")
        os.rename(self.path, target)
        return target

    def checkpoints(self) -> list[Path]:
        """last.pt first, then the kept per-epoch checkpoints, newest first."""
        found = [self.last_checkpoint] if self.last_checkpoint.exists() else []
        return found + sorted(self.checkpoint_dir.glob("epoch_*.pt"), reverse=True)

    def epoch_checkpoints(self) -> list[Path]:
        """The kept per-epoch checkpoints, oldest first."""
        return sorted(self.checkpoint_dir.glob("epoch_*.pt"))

    def load_config(self) -> RunConfig:
        return RunConfig.load(self.config_file)

    def saved_config(self) -> RunConfig:
        """The run's config: config.json, or when it is missing the copy every checkpoint holds."""
        if self.config_file.exists() or not self.can_resume():
            return self.load_config()
        _, state, _ = self.checkpoint_to_resume()
        try:
            return RunConfig.from_dict(json.loads(state["config"]))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"config.json is missing and the checkpoint's copy is unreadable: {exc}") from exc

    def restore_config(self) -> str | None:
        """Write config.json back from the checkpoint when it is missing; returns a note saying so."""
        if self.config_file.exists():
            return None
        self.saved_config().save(self.config_file)
        return f"config.json was missing: rebuilt from the checkpoint in {self.checkpoint_dir}"

    def events(self) -> list[Event]:
        return read_events(self.events_file) if self.events_file.exists() else []

    def state(self, events: list[Event] | None = None, now: float | None = None) -> RunState:
        """live: another process is writing it; resumable: a checkpoint to continue from (a
        completed run can be lengthened too); finished: ended with nothing to resume; new: empty."""
        if self.writer() is not None:
            return "live"
        events = self.events() if events is None else events
        finished = bool(events) and isinstance(events[-1], RunFinished)
        # A writer whose lock this machine cannot see (an older version, another machine on a
        # shared folder without lock support) still shows by its recent events; a writer of this
        # machine that took the lock and no longer holds it has ended, however recent its events.
        if not finished and self.events_file.exists() and not self._ended_here():
            now = time.time() if now is None else now
            if now - self.events_file.stat().st_mtime < LIVE_WINDOW_S:
                return "live"
        if self.can_resume():
            return "resumable"
        return "finished" if self.is_run() else "new"

    def writer(self) -> Writer | None:
        """The process training this run now (it holds the writer lock), or None."""
        return current_writer(self.path)

    def _ended_here(self) -> bool:
        """The last writer ran on this machine and its lock is free (checked just before): it ended."""
        try:
            last = Writer.from_text(self.lock_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return False
        return last is not None and last.host == socket.gethostname()

    def checkpoint_to_resume(self) -> tuple[Path, dict[str, Any], str | None]:
        """(path, state, note) of the checkpoint a resume starts from: last.pt when it loads, else
        the newest per-epoch checkpoint that does, with a note saying which and why."""
        reasons = []
        for path in [self.last_checkpoint] + sorted(self.epoch_checkpoints(), reverse=True):
            if not path.exists():
                reasons.append(f"{path.name} is missing")
                continue
            try:
                state = load_training_checkpoint(path)
            except CheckpointError as exc:
                reasons.append(str(exc))
                continue
            note = None if path == self.last_checkpoint else f"using {path.name}: {'; '.join(reasons)}"
            return path, state, note
        raise CheckpointError(f"no usable checkpoint in {self.checkpoint_dir}: " + "; ".join(reasons))

    def last_status(self, events: list[Event] | None = None) -> str | None:
        """How the run's last session ended ("completed", "stopped", "failed"), or None."""
        events = self.events() if events is None else events
        ends = [e for e in events if isinstance(e, RunFinished)]
        return ends[-1].status if ends else None


# ---- the one resume rule ----------------------------------------------------------------------------
RESUMABLE_SETTINGS = ("epochs", "device")  # all a resumed run may change: how long and where


def resume_config(saved: RunConfig, epochs: int | None = None, device: str | None = None) -> RunConfig:
    """The config a resumed run trains with: the saved one, except its length in epochs (which
    turns a time-budgeted run into an epochs run) and the device. Nothing else may change, because
    the checkpoint's weights, optimizer state and schedule belong to the saved config."""
    cfg = RunConfig.from_dict(saved.to_dict())
    if epochs is not None:
        cfg.epochs = epochs
        cfg.minutes = None
    if device is not None:
        cfg.device = device
    return cfg


def ignored_on_resume(given: dict[str, object]) -> list[str]:
    """Of the settings given for a resumed run, those that the resume rule ignores."""
    return [name for name, value in given.items() if value is not None and name not in RESUMABLE_SETTINGS]
