"""The Runs view without Qt: which runs there are, a one-line summary of each, rename, note, delete
(planned, confirmed, then done), the config values that differ between runs, and their curves.

A summary reads only the ends of ``events.jsonl`` (its first line and a tail that grows until it holds
what the summary needs), so listing many runs with big event files stays cheap.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from simclr_studio.atomic import atomic_write_text
from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.events import (
    EpochEvent,
    EvalEvent,
    Event,
    RunFinished,
    RunStarted,
    StepEvent,
    parse_lines,
    read_events,
)
from simclr_studio.run_folder import RunFolder
from simclr_studio.sizes import format_size

TAIL_BYTES = 64 * 1024  # the first tail read; it grows while the summary misses something
KNN_SEARCH_BYTES = 16 * 1024 * 1024  # how far back a kNN measurement is looked for (unlabelled runs have none)

RunStatus = Literal["training", "stopped", "finished", "failed"]
STATUS_OF_END: dict[str, RunStatus] = {"completed": "finished", "stopped": "stopped", "failed": "failed"}


class RunsError(ValueError):
    """An operation on a run was refused; the message says why."""


# ---- reading the ends of an events file ----------------------------------------------------------------
def first_event(path: Path) -> Event | None:
    """The first event of an events file (it says when the run started)."""
    try:
        with open(path, "rb") as f:
            head = f.read(TAIL_BYTES)
    except OSError:
        return None
    end = head.find(b"\n")
    events = parse_lines([head[:end]]) if end >= 0 else []
    return events[0] if events else None


def tail_events(path: Path, max_bytes: int) -> tuple[list[Event], bool]:
    """The complete events in the last ``max_bytes`` of a file, and whether that was the whole file.
    The first line of the tail is dropped (it may be cut), as is a half-written last line."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            start = max(0, size - max_bytes)
            f.seek(start)
            chunk = f.read(size - start)
    except OSError:
        return [], True
    end = chunk.rfind(b"\n")
    chunk = chunk[: end + 1] if end >= 0 else b""
    if start > 0:
        chunk = chunk[chunk.find(b"\n") + 1:] if b"\n" in chunk else b""
    return parse_lines(chunk.splitlines()), start == 0


# ---- summaries --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSummary:
    """One row of the Runs table."""

    path: Path
    started: float | None  # time of the run's first event (None: no events yet)
    data_dir: str
    backbone: str
    image_size: int | None
    epochs_done: int
    final_loss: float | None  # the mean loss of the last epoch (else the last step's)
    knn_accuracy: float | None  # the last online kNN measurement
    linear_accuracy: float | None  # from eval.json, when `eval` wrote one into the run folder
    status: RunStatus
    note: str = ""
    problem: str | None = None  # the config could not be read

    @property
    def name(self) -> str:
        return self.path.name


def _ended_status(folder: RunFolder, tail: list[Event]) -> RunStatus:
    """How the newest session of the run ended. The writer lock (or, where no lock is seen, recent
    events) says "training", as the Train tab's "Training elsewhere" does (RunFolder.state)."""
    if folder.state(tail) == "live":
        return "training"
    if tail and isinstance(tail[-1], RunFinished):  # the trainer's last word in every session
        return STATUS_OF_END.get(tail[-1].status, "failed")
    return "stopped"  # a session that ended without a final event (killed): resumable like a stop


def summarize_run(path: str | Path) -> RunSummary:
    folder = RunFolder(path)
    problem = None
    try:
        cfg: RunConfig | None = folder.load_config()
    except ConfigError as exc:
        cfg, problem = None, str(exc)
    budget = TAIL_BYTES
    while True:  # grow the tail until it holds an epoch's end and, up to a point, a kNN measurement
        tail, whole = tail_events(folder.events_file, budget)
        kinds = {type(e) for e in tail}
        wants_knn = cfg is not None and cfg.eval_every > 0 and budget < KNN_SEARCH_BYTES
        if whole or (EpochEvent in kinds and (EvalEvent in kinds or not wants_knn)):
            break
        budget *= 4
    epoch = next((e for e in reversed(tail) if isinstance(e, EpochEvent)), None)
    step = next((e for e in reversed(tail) if isinstance(e, StepEvent)), None)
    knn = next((e for e in reversed(tail) if isinstance(e, EvalEvent)), None)
    first = first_event(folder.events_file)
    loss = epoch.loss if epoch is not None else step.loss if step is not None else None
    return RunSummary(
        path=folder.path, started=first.time if first is not None else None,
        data_dir=cfg.data_dir if cfg else "", backbone=cfg.backbone if cfg else "",
        image_size=cfg.image_size if cfg else None, epochs_done=epoch.epoch + 1 if epoch is not None else 0,
        final_loss=loss, knn_accuracy=knn.knn_accuracy if knn is not None else None,
        linear_accuracy=_linear_accuracy(folder.path), status=_ended_status(folder, tail),
        note=read_note(folder.path), problem=problem)


def _linear_accuracy(run_dir: Path) -> float | None:
    try:
        value = json.loads(RunFolder(run_dir).eval_file.read_text(encoding="utf-8")).get("linear_accuracy")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def list_runs(root: str | Path | None, added: Iterable[str | Path] = ()) -> list[Path]:
    """The run folders directly under ``root`` (the app's runs folder) and those the user added, each
    once, newest config first."""
    found: dict[Path, None] = {}
    candidates: list[Path] = []
    if root is not None and Path(root).is_dir():
        try:
            candidates = [p for p in Path(root).iterdir() if p.is_dir()]
        except OSError:
            candidates = []
    for path in [*candidates, *(Path(p).expanduser() for p in added)]:
        if RunFolder(path).is_run():
            found[path.resolve()] = None

    def newest(p: Path) -> float:
        try:
            return RunFolder(p).config_file.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=newest, reverse=True)


# ---- rename, note, delete -------------------------------------------------------------------------------
def is_training(path: str | Path) -> bool:
    """Another process writes the run (its lock, or recent events without an end: RunFolder.state),
    told from the last events alone."""
    folder = RunFolder(path)
    return folder.state(tail_events(folder.events_file, TAIL_BYTES)[0]) == "live"


def refuse_if_training(path: str | Path, action: str) -> None:
    if is_training(path):
        raise RunsError(f"{Path(path).name} is training: stop it before you {action} it")


def rename_run(path: str | Path, new_name: str) -> Path:
    """Rename the run's folder within its parent; returns the new path. Refused while it trains, when
    the name is not a plain folder name, or when something of that name exists."""
    path = Path(path)
    new_name = new_name.strip()
    if not new_name or new_name in (".", "..") or any(sep in new_name for sep in ("/", "\\", os.sep)):
        raise RunsError(f"{new_name!r} is not a folder name")
    target = path.with_name(new_name)
    if target == path:
        return path
    if target.exists():
        raise RunsError(f"{target} already exists: choose another name")
    refuse_if_training(path, "rename")
    os.rename(path, target)
    return target


def read_note(path: str | Path) -> str:
    try:
        return RunFolder(path).note_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def write_note(path: str | Path, text: str) -> None:
    """The run's note, written atomically (an empty note removes the file)."""
    note = RunFolder(path).note_file
    if text.strip():
        atomic_write_text(note, text if text.endswith("\n") else text + "\n")
    else:
        note.unlink(missing_ok=True)


@dataclass(frozen=True)
class DeletePlan:
    """What deleting a run removes: shown to the user, then checked again just before deleting."""

    path: Path
    size_bytes: int
    n_files: int
    checkpoints: tuple[str, ...]  # their names, last.pt first
    training: bool

    def describe(self) -> str:
        lines = [f"The folder {self.path}", f"{format_size(self.size_bytes)} in {self.n_files} files",
                 f"{len(self.checkpoints)} checkpoint{'' if len(self.checkpoints) == 1 else 's'}"
                 + (f": {', '.join(self.checkpoints)}" if self.checkpoints else "")]
        return "\n".join(lines)


def plan_delete(path: str | Path) -> DeletePlan:
    """What deleting the run would remove (symbolic links count as themselves: never followed)."""
    folder = RunFolder(path)
    if not folder.path.is_dir() or not folder.is_run():
        raise RunsError(f"{folder.path} is not a run folder")
    size = n_files = 0
    for root, dirs, files in os.walk(folder.path):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
            n_files += 1
    return DeletePlan(folder.path, size, n_files, tuple(p.name for p in folder.checkpoints()),
                      is_training(folder.path))


def delete_run(plan: DeletePlan) -> None:
    """Delete the run the user confirmed ``plan`` for; refused while it trains, or when the folder
    changed since (it would remove more, or other, than what was confirmed)."""
    if plan.training:
        raise RunsError(f"{plan.path.name} is training: stop it before you delete it")
    now = plan_delete(plan.path)
    if now.training:
        raise RunsError(f"{plan.path.name} started training: stop it before you delete it")
    if now != plan:
        raise RunsError(f"{plan.path.name} changed since you confirmed: look at what it holds now, then delete again")
    shutil.rmtree(plan.path)


# ---- comparing runs ---------------------------------------------------------------------------------
def flat_config(path: str | Path) -> dict[str, Any]:
    """The run's config as ``name: value`` (the augment section as ``augment.name``); {} when unreadable."""
    try:
        data = RunFolder(path).load_config().to_dict()
    except ConfigError:
        return {}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def config_differences(paths: list[Path]) -> list[tuple[str, list[Any]]]:
    """(setting, its value in each run) for every setting whose values differ (None: not in that config)."""
    configs = [flat_config(p) for p in paths]
    keys = sorted(set().union(*configs)) if configs else []
    rows = []
    for key in keys:
        values = [c.get(key) for c in configs]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


XAxis = Literal["step", "epoch", "images", "time"]
X_AXES: dict[XAxis, str] = {"step": "step", "epoch": "epoch", "images": "images seen", "time": "training time (s)"}


@dataclass
class RunCurves:
    """A run's curves against every x-axis the Runs view offers; kNN at the end of its epochs."""

    name: str
    x: dict[str, np.ndarray] = field(default_factory=dict)  # per step, by XAxis
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    knn_x: dict[str, np.ndarray] = field(default_factory=dict)  # per kNN measurement, by XAxis
    knn: np.ndarray = field(default_factory=lambda: np.zeros(0))


def run_curves(path: str | Path, events: list[Event] | None = None) -> RunCurves:
    """Every step's loss and lr with its step, epoch (fractional), images seen and training time (from a
    session's start to its steps, added to the time of the step it resumed from: gaps do not count).
    Steps repeated by a resume replace the older ones, as on the Train tab."""
    folder = RunFolder(path)
    events = read_events(folder.events_file) if events is None and folder.events_file.exists() else events or []
    try:
        batch = folder.load_config().batch_size
    except ConfigError:
        batch = 0
    rows: list[tuple[float, float, float, float, float, float]] = []  # step, epoch, images, time, loss, lr
    knn: list[tuple[float, float, float, float, float]] = []
    steps_per_epoch, per_step, session_start = 1, batch, None
    for e in events:
        if isinstance(e, RunStarted):
            steps_per_epoch = max(1, e.steps_per_epoch)
            world = max(1, round(e.n_images / (steps_per_epoch * batch))) if batch else 1
            per_step = batch * world
            # The clock goes on from the step the session resumes from (steps after it are redone).
            kept = [r[3] for r in rows if r[0] <= e.start_global_step]
            session_start = e.time - (kept[-1] if kept else 0.0)
        elif isinstance(e, StepEvent):
            if session_start is None:
                session_start = e.time
            while rows and rows[-1][0] >= e.global_step:
                rows.pop()
            rows.append((e.global_step, e.epoch + (e.step + 1) / steps_per_epoch, e.global_step * per_step,
                         e.time - session_start, e.loss, e.lr))
        elif isinstance(e, EvalEvent):
            while knn and knn[-1][1] >= e.epoch + 1:
                knn.pop()
            last = rows[-1] if rows else (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            knn.append((last[0], e.epoch + 1, last[2], last[3], e.knn_accuracy))
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    knn_table = np.asarray(knn, dtype=np.float64).reshape(-1, 5)
    axes = list(X_AXES)
    return RunCurves(folder.path.name, {a: table[:, i] for i, a in enumerate(axes)}, table[:, 4], table[:, 5],
                     {a: knn_table[:, i] for i, a in enumerate(axes)}, knn_table[:, 4])
