"""Training a run, without Qt: the state of the run a user works on, and what may happen next.

A :class:`TrainSession` starts a training process (``training_link.ChildRun``), resumes a run
folder from its checkpoint, follows a run that another process writes (``events.EventsFollower``)
or replays a finished one. Whoever shows it (the app's Train tab, a test) calls :meth:`TrainSession.poll`
a few times a second and renders what changed: the events, their log lines (``session.wording``)
and the run's curves (:attr:`TrainSession.history`).

    empty ──suggest()──▶ ready ──start()──▶ training ⇄ paused      (pause() / unpause())
                                              │ stop()
                                              ▼
    open() ──▶ following ──┐              stopping
        │                  ▼                  ▼ the process ends (poll)
        └───────────▶ resumable / finished ◀──┘ ──resume()──▶ training
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from simclr_studio.checkpoint import CheckpointError
from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.events import ErrorEvent, Event, EventsFollower, StateEvent
from simclr_studio.history import RunHistory
from simclr_studio.recipe import FolderFacts, suggest
from simclr_studio.run_folder import LIVE_WINDOW_S, RunFolder, RunState, resume_config
from simclr_studio.run_lock import RunBusyError, refuse_if_busy
from simclr_studio.session.wording import EventWording, for_app, format_minutes
from simclr_studio.training_link import ChildRun

SessionState = Literal["empty", "ready", "training", "paused", "stopping", "following", "resumable", "finished"]
RUNNING: tuple[SessionState, ...] = ("training", "paused", "stopping")  # a training process of this session
ACTIVE: tuple[SessionState, ...] = RUNNING + ("following",)  # something to poll
FOLLOW_INTERVAL_S = 0.25  # how often a followed events file is read (another process writes it)
STALE_CHECK_S = 5.0  # how often a followed run that sends nothing is checked for having gone quiet


class TrainError(Exception):
    """A one-line reason why a run cannot start, resume or be opened now."""


@dataclass
class Suggestion:
    """The recipe for a newly opened folder: a config within the time budget, the reasons by setting
    (``reasons["epochs"]``: why the epochs recipe's length), and that length in epochs."""

    config: RunConfig
    reasons: dict[str, str]
    epochs: int


@dataclass
class Update:
    """What changed since the last :meth:`TrainSession.poll`."""

    events: list[Event] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # for the log: the events' wording and the session's own
    errors: list[str] = field(default_factory=list)  # the errors among the events (a banner shows the last)
    reset: bool = False  # the history started over (a new run, an opened one, a rewritten events file)
    ended: str | None = None  # how the run ended ("completed", "stopped", "failed"), if it ended in this poll
    state: SessionState = "empty"  # the session's state after the update

    def __bool__(self) -> bool:
        return bool(self.events or self.lines or self.errors or self.reset or self.ended)


def new_run_dir(runs_root: str | Path, data_dir: str | None) -> Path:
    """A fresh run folder under ``runs_root``, named after the data folder and the time."""
    name = Path(data_dir).name if data_dir else "run"
    return Path(runs_root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


class TrainSession:
    """The run a user works on: none yet, one training in a child process, or a run folder opened
    to follow, resume or look at. Not thread-safe: call it from one thread."""

    def __init__(self) -> None:
        self.data_dir: str | None = None  # the image folder a new run trains on
        self.n_images: int | None = None  # how many images it holds (known once suggest() was told)
        self.run_dir: Path | None = None  # the run shown: started, resumed, followed or opened
        self.config: RunConfig | None = None  # that run's config (the saved one, as resumed)
        self.history = RunHistory()
        self._wording = EventWording()
        self._child: ChildRun | None = None
        self._follower: EventsFollower | None = None
        self._folder_state: RunState | None = None  # of run_dir, when nothing trains or follows it
        self._paused = False
        self._stopping = False
        self._followed_at = 0.0  # when the followed file was last read (monotonic)
        self._heard_at = 0.0  # when the followed run last sent something (monotonic)
        self._pending = Update()

    # ---- state ------------------------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        if self._child is not None:
            return "stopping" if self._stopping else "paused" if self._paused else "training"
        if self._follower is not None:
            return "following"
        if self._folder_state in ("resumable", "finished"):
            return self._folder_state
        return "ready" if self.data_dir else "empty"

    def is_running(self) -> bool:
        """A training process of this session has not ended yet (or its last events wait for poll)."""
        return self._child is not None

    def child_pid(self) -> int | None:
        """The training process's id while one runs (the app shows its CPU and memory), else None."""
        return None if self._child is None else self._child.pid

    def can_resume(self) -> bool:
        """The run shown has a checkpoint to continue from, and time left: a completed time-budgeted
        run keeps its plan, so it has nothing to resume (an epochs run may be lengthened)."""
        return self.state == "resumable" and not self.budget_spent()

    def budget_spent(self) -> bool:
        """The run shown had a time budget and completed it."""
        return self.config is not None and self._spent(self.config)

    def completed_epochs(self) -> int | None:
        """The epochs of the run shown when it trained all of them (an epochs run that completed):
        resuming it trains only with more epochs than that. None otherwise."""
        finished = self.history.finished
        if self.config is None or self.config.minutes is not None or finished is None:
            return None
        return self.config.epochs if finished.status == "completed" else None

    def batch_problem(self, batch_size: int, nproc: int = 1) -> str | None:
        """Why training would refuse ``batch_size`` on the open folder (the engine's own check, in the
        app's words), or None; None too when the folder's size is not known."""
        if not self.n_images:
            return None
        from simclr_studio.batches import BatchSource  # torch: only when asked
        from simclr_studio.data import DataError

        try:
            BatchSource.check_batch_size(self.n_images, batch_size, nproc)
        except DataError as exc:
            return for_app(str(exc))
        return None

    def _spent(self, cfg: RunConfig) -> bool:
        finished = self.history.finished
        return cfg.minutes is not None and finished is not None and finished.status == "completed"

    def status(self) -> str | None:
        """One line on the run shown, for a status bar: it follows the state (None: no run to tell of)."""
        state, where = self.state, f" · {self.run_dir}" if self.run_dir is not None else ""
        if state in ("empty", "ready"):
            return None
        if state in ("training", "paused", "stopping"):
            return {"training": "Training", "paused": "Paused",
                    "stopping": "Stopping: saving a checkpoint…"}[state] + where
        if state == "following":
            return "Training elsewhere: following it live" + where
        return (self.next_step() or "Run finished: nothing to resume") + where

    def next_step(self) -> str | None:
        """What the user can do with a run that has ended and can be resumed, if anything."""
        if self.state != "resumable":
            return None
        if self.budget_spent() and self.config is not None:
            return (f"Run complete: its {format_minutes(self.config.minutes or 0)} min budget is spent; "
                    "press New run to train another")
        done = self.completed_epochs()
        if done is not None:
            return f"Run complete ({done} epochs): raise Epochs above {done} and press Resume training to train longer"
        return "Press Resume training to continue this run from its last checkpoint, or New run to start another"

    # ---- a new run --------------------------------------------------------------------------------
    def suggest(self, data_dir: str, n_images: int, typical_side: int, grayscale: bool, device_type: str,
                minutes: float | None) -> Suggestion:
        """A newly opened image folder: the run shown is put aside, new runs train on ``data_dir``,
        and the recipe for it on ``device_type`` ("cpu", "cuda", "mps") within ``minutes``."""
        self.new_run()
        self.data_dir, self.n_images = data_dir, n_images
        facts = FolderFacts(n_images, typical_side, grayscale)
        budgeted = suggest(facts, device_type, minutes)
        by_epochs = suggest(facts, device_type, None)  # for a user who trains by epochs instead
        budgeted.config.data_dir = data_dir
        reasons = {**budgeted.reasons, "epochs": by_epochs.reasons.get("length", "")}
        return Suggestion(budgeted.config, reasons, by_epochs.config.epochs)

    def clear_data(self) -> None:
        """No usable image folder is open: nothing to train on."""
        self.new_run()
        self.data_dir = self.n_images = None

    def new_run(self) -> None:
        """Put the run shown aside (stop following it): the next start() begins a new one."""
        self._refuse_while_running()
        self._follower = None
        self.run_dir = self.config = self._folder_state = None
        self._restart_history()

    def start(self, cfg: RunConfig, run_dir: str | Path, nproc: int = 1) -> None:
        """Train ``cfg`` (its data folder included) in a new run folder ``run_dir``, in ``nproc``
        processes (data-parallel, one per GPU, when more than one)."""
        self._refuse_while_running()
        if self._follower is not None:
            raise TrainError("following a run of another process: put it aside (new run) first")
        if not cfg.data_dir:
            raise TrainError("open an image folder first")
        try:
            cfg.validate()
        except ConfigError as exc:
            raise TrainError(str(exc)) from exc
        if cfg.data_dir == self.data_dir:  # a folder of known size: refuse a batch training would refuse
            problem = self.batch_problem(cfg.batch_size, nproc)
            if problem:
                raise TrainError(problem)
        if not str(run_dir).strip() or not Path(run_dir).expanduser().is_absolute():
            raise TrainError("choose a run folder (a full path) for this run's checkpoints and logs")
        folder = RunFolder(run_dir)
        self._refuse_if_written_elsewhere(folder)
        if folder.holds_run():
            if folder.events_file.exists() and folder.state() == "live":
                raise TrainError(f"another process is writing {folder.path}: choose another run folder")
            raise TrainError(f"{folder.path} already holds a run: open it to resume it, or choose another run folder")
        if not folder.is_empty():
            raise TrainError(f"{folder.path} is not empty and not a run folder: choose a new or empty folder")
        self._restart_history()
        if cfg.data_dir != self.data_dir:
            self.data_dir, self.n_images = cfg.data_dir, None
        self._launch(ChildRun.new_run(cfg, folder.path, nproc), folder.path, cfg, f"Starting run in {folder.path}")

    def resume(self, epochs: int | None = None, device: str | None = None, nproc: int = 1) -> None:
        """Continue the run shown from its last checkpoint (``run_folder.resume_config``'s rule):
        ``epochs`` lengthens an epochs run, a time-budgeted run keeps its plan; ``device`` and
        ``nproc`` say where it trains now."""
        self._refuse_while_running()
        if self.run_dir is None or not RunFolder(self.run_dir).can_resume():
            raise TrainError("nothing to resume: open a run folder with a checkpoint")
        self._refuse_if_written_elsewhere(RunFolder(self.run_dir))
        try:
            saved = RunFolder(self.run_dir).saved_config()
        except (ConfigError, CheckpointError) as exc:
            raise TrainError(str(exc)) from exc
        if self._spent(saved):
            raise TrainError(f"the run's {format_minutes(saved.minutes or 0)} min budget is spent: "
                             "start a new run to train longer")
        keep_plan = saved.minutes is not None
        epochs = None if keep_plan else epochs
        done = self.completed_epochs()
        if done is not None and (epochs or saved.epochs) <= done:  # it would end at once, having trained nothing
            raise TrainError(f"the run has completed its {done} epochs: raise Epochs above {done} to train longer")
        cfg = resume_config(saved, epochs, device)
        self._launch(ChildRun.resume(self.run_dir, epochs, device, nproc), self.run_dir, cfg,
                     f"Resuming run in {self.run_dir}")

    def _launch(self, child: ChildRun, run_dir: Path, cfg: RunConfig, note: str) -> None:
        self.run_dir, self.config, self._folder_state = run_dir, cfg, None
        self._paused = self._stopping = False
        self._child = child
        self._pending.lines.append(note)
        child.start()

    def _refuse_while_running(self) -> None:
        if self._child is not None:
            raise TrainError("a run is training: stop it first")

    @staticmethod
    def _refuse_if_written_elsewhere(folder: RunFolder) -> None:
        """One writer per run folder: another process holding its lock is named in one line."""
        try:
            refuse_if_busy(folder.path)
        except RunBusyError as exc:
            raise TrainError(str(exc)) from exc

    # ---- control ----------------------------------------------------------------------------------
    def pause(self) -> None:
        if self._child is not None and not self._stopping:
            self._child.pause()
            self._paused = True

    def unpause(self) -> None:
        if self._child is not None and not self._stopping:
            self._child.unpause()
            self._paused = False

    def stop(self) -> None:
        """Ask the run to save a checkpoint and end (it ends in a later poll); asking again does nothing."""
        if self._child is not None and not self._stopping:
            self._child.stop()
            self._stopping = True

    def stop_and_wait(self, timeout: float = 60.0) -> bool:
        """Stop, then wait up to ``timeout`` seconds for the process to save its checkpoint and end.
        True when it ended; its last events wait for the next poll."""
        if self._child is None:
            return True
        self.stop()
        return self._child.wait(timeout)

    # ---- opening a run folder ---------------------------------------------------------------------
    def open(self, run_dir: str | Path) -> RunState:
        """Show a run folder: follow it while another process writes it ("live"), else replay its
        events ("resumable": a checkpoint to continue from; "finished"; "new": nothing written).
        Raises TrainError for a folder without a readable config."""
        self._refuse_while_running()
        folder = RunFolder(run_dir)
        try:
            cfg = folder.saved_config()  # config.json, or a lost one's copy in the checkpoint
            events = folder.events()
            state = folder.state(events)
        except (ConfigError, CheckpointError, OSError) as exc:
            raise TrainError(str(exc)) from exc
        self.new_run()
        self.run_dir, self.config, self.data_dir, self.n_images = folder.path, cfg, cfg.data_dir, None
        if state == "live":
            self._follower = EventsFollower(folder.events_file)  # replays the file, then follows it
            self._followed_at = 0.0
            self._heard_at = time.monotonic()
            writer = folder.writer()
            by = f" by {writer.describe()}" if writer is not None else ""
            self._pending.lines.append(f"Training elsewhere{by}: following it live in {folder.path}")
        else:
            self._folder_state = state
            self.feed(events)
        return state

    # ---- events -----------------------------------------------------------------------------------
    def feed(self, events: Iterable[Event]) -> None:
        """Take events as the run sent them (poll feeds what it drains; a replay or a test feeds
        them directly); the next poll returns them with their log lines."""
        pending = self._pending
        for event in events:
            self.history.add(event)
            pending.events.append(event)
            line = self._wording.line(event)
            if line is not None:
                pending.lines.append(for_app(line))
            if isinstance(event, ErrorEvent):
                pending.errors.append(for_app(event.message))
            elif isinstance(event, StateEvent) and self._child is not None:
                self._paused = event.state == "paused"

    def poll(self) -> Update:
        """Take what the training process or the followed file sent since the last call; returns
        everything that changed. Never blocks."""
        if self._child is not None:
            self._poll_child(self._child)
        elif self._follower is not None:
            self._poll_follower(self._follower)
        update, self._pending = self._pending, Update()
        update.state = self.state
        return update

    def _poll_child(self, child: ChildRun) -> None:
        self.feed(child.drain())
        if child.is_running():  # until the process ended and its last event was drained
            return
        status = child.status or "failed"
        self._child = None
        self._paused = self._stopping = False
        self._pending.ended = status
        self._pending.lines.append(f"Run {status}.")
        self._settle()

    def _poll_follower(self, follower: EventsFollower) -> None:
        now = time.monotonic()
        if now - self._followed_at < FOLLOW_INTERVAL_S:
            return
        self._followed_at = now
        events, reset = follower.poll()
        if reset:  # the file was replaced (a new run in the folder): start over
            self._restart_history()
        self.feed(events)
        if events:
            self._heard_at = now
        if self.history.finished is not None:
            self._end_following(self.history.finished.status, "The followed run has finished.")
        elif now - self._heard_at > STALE_CHECK_S and self.run_dir is not None:
            self._heard_at = now
            if RunFolder(self.run_dir).state([]) != "live":
                self._end_following("failed", f"The followed run has written nothing for {LIVE_WINDOW_S} s: "
                                              "it no longer runs.")

    def _end_following(self, status: str, note: str) -> None:
        self._follower = None
        self._pending.ended = status
        self._pending.lines.append(note)
        self._settle()

    def _settle(self) -> None:
        """Nothing trains or follows the run any more: what its folder now holds."""
        if self.run_dir is not None:
            self._folder_state = "resumable" if RunFolder(self.run_dir).can_resume() else "finished"

    def _restart_history(self) -> None:
        self.history = RunHistory()
        self._wording = EventWording()
        self._pending = Update(reset=True)
        self._paused = False

