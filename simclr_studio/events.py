"""Typed progress events reported by the trainer, and the ``events.jsonl`` log that records them.

Whoever drives training (CLI, GUI worker, a test) receives these objects through a callback;
the same events are appended to ``RUN_DIR/events.jsonl`` (one JSON object per line, flushed at
once) so another process can follow a run live.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from simclr_studio.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclass
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_dir: str
    device: str
    backbone: str
    n_images: int
    steps_per_epoch: int
    total_steps: int
    start_epoch: int
    start_global_step: int
    cached: bool
    labeled: bool


@dataclass
class PrepareProgress(Event):
    """Scanning or decoding the folder before the first step."""

    kind: ClassVar[str] = "prepare"
    stage: str
    done: int
    total: int


@dataclass
class StepEvent(Event):
    kind: ClassVar[str] = "step"
    epoch: int
    step: int  # within the epoch
    global_step: int  # steps done so far, this one included
    total_steps: int
    loss: float
    lr: float
    images_per_s: float
    eta_s: float


@dataclass
class EpochEvent(Event):
    kind: ClassVar[str] = "epoch"
    epoch: int
    loss: float  # mean over the epoch's steps
    seconds: float
    images_per_s: float


@dataclass
class EvalEvent(Event):
    """Online weighted kNN (cosine, τ=0.1, leave-one-out) of the encoder on unaugmented images."""

    kind: ClassVar[str] = "eval"
    epoch: int
    knn_accuracy: float
    n_images: int
    k: int = 0  # neighbours that voted (0 in logs written before k was recorded)


@dataclass
class BaselineEvent(Event):
    """The same kNN protocol as EvalEvent on features that need no training (raw pixels), measured
    once at the start of a labelled run so every later kNN number has its baseline beside it."""

    kind: ClassVar[str] = "baseline"
    features: str  # "raw pixels"
    knn_accuracy: float
    n_images: int
    k: int


@dataclass
class PlanEvent(Event):
    """A time-budgeted run has measured its speed and laid its schedule over the budget."""

    kind: ClassVar[str] = "plan"
    total_steps: int
    warmup_steps: int
    seconds_per_step: float
    budget_s: float


@dataclass
class CheckpointEvent(Event):
    kind: ClassVar[str] = "checkpoint"
    path: str
    epoch: int
    global_step: int
    reason: str  # "epoch" or "stop"


@dataclass
class StateEvent(Event):
    kind: ClassVar[str] = "state"
    state: str  # "paused" or "running"


@dataclass
class LogEvent(Event):
    kind: ClassVar[str] = "log"
    message: str


@dataclass
class ErrorEvent(Event):
    kind: ClassVar[str] = "error"
    message: str
    category: str  # "nan", "oom", "data", "config", "error"


@dataclass
class RunFinished(Event):
    kind: ClassVar[str] = "finished"
    status: str  # "completed", "stopped" or "failed"
    epoch: int
    global_step: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (RunStarted, PrepareProgress, StepEvent, EpochEvent, EvalEvent, BaselineEvent, PlanEvent,
                CheckpointEvent, StateEvent, LogEvent, ErrorEvent, RunFinished)
}

def event_from_dict(data: dict[str, Any]) -> Event | None:
    """Rebuild an event from its JSON form; unknown kinds (from a newer version) give None."""
    data = dict(data)
    cls = EVENT_TYPES.get(data.pop("event", ""))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


class EventLog:
    """Appends events to events.jsonl; each line is flushed so followers see it at once. A half-written
    last line left by a killed writer is cut off first (``repair_last_line``)."""

    def __init__(self, path: Path, tensorboard: bool = False):
        """``tensorboard``: the same progress also as TensorBoard scalars in the run folder's tensorboard/."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_last_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tensorboard = TensorBoardLog(self.path.parent / TENSORBOARD_DIR) if tensorboard else None

    def write(self, event: Event) -> None:
        if event.kind == "prepare":  # transient progress: not worth keeping
            return
        self._file.write(json.dumps(event.to_dict()) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            self._tensorboard.write(event)

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def repair_last_line(path: Path) -> bool:
    """Cut a half-written last line (a writer killed mid-line) off an events file, so the next event
    appended is a whole line of its own; True when something was cut. Every complete line is kept."""
    try:
        f = open(path, "rb+")
    except FileNotFoundError:
        return False
    with f:
        size = f.seek(0, 2)
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        keep = 0
        block = 1 << 16
        pos = size
        while pos > 0:  # back from the end to the last newline (the partial line is short)
            start = max(0, pos - block)
            f.seek(start)
            found = f.read(pos - start).rfind(b"\n")
            if found >= 0:
                keep = start + found + 1
                break
            pos = start
        f.truncate(keep)
    return True


def read_events(path: Path) -> list[Event]:
    """All complete events in a log (a half-written last line, from a live run, is ignored)."""
    return list(follow_events(path, 0)[0])


def follow_events(path: Path, offset: int) -> tuple[Iterator[Event], int]:
    """Events appended since byte ``offset``; returns (events, new offset). For following a live run."""
    path = Path(path)
    if not path.exists():
        return iter(()), offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return iter(()), offset
    return iter(parse_lines(chunk[: end + 1].splitlines())), offset + end + 1


def parse_lines(lines: Iterable[bytes]) -> list[Event]:
    """The events of complete lines of an events file; a damaged line (bad JSON or bad UTF-8) is skipped."""
    events = []
    for line in lines:
        try:
            event = event_from_dict(json.loads(line))
        except (ValueError, TypeError):
            continue
        if event is not None:
            events.append(event)
    return events


class EventsFollower:
    """Follows an events file that another process writes (a run started from the command line,
    or on another machine sharing the folder): each :meth:`poll` returns what was appended."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0

    def poll(self) -> tuple[list[Event], bool]:
        """(new events, reset): reset is True when the file was truncated or replaced, and the
        events then start again from its beginning (whoever shows them must start over)."""
        reset = False
        try:
            if self.offset and self.path.stat().st_size < self.offset:
                self.offset, reset = 0, True
            new, self.offset = follow_events(self.path, self.offset)
        except (OSError, ValueError):
            return [], reset
        return list(new), reset
