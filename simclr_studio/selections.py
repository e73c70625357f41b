"""Selections that do something: named selections and tags saved with the run, and what a selection
does with its images (a CSV, a copy into a new folder, tags as class folders).

Selections and tags live in ``RUN_DIR/selections.json`` (``RunFolder.selections_file``) by image PATH,
so they survive a re-scan or a changed folder. The user's image files are never changed: copies go to
a new or empty folder and never replace a file; a move happens only when the caller says the user
confirmed it (the app asks with the list of files first); nothing is ever deleted.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simclr_studio.atomic import atomic_write_text
from simclr_studio.run_folder import RunFolder

FORMAT_VERSION = 1
MAX_NAME = 100  # characters in a selection's name or a tag's label
# How a selection was made (informative; the app names one of these).
KINDS = ("lasso", "rectangle", "click-through", "duplicates", "outliers", "mislabels", "class", "search", "tags",
         "manual")


class SelectionsError(ValueError):
    """A refused or failed selection operation, told in one line."""


@dataclass(frozen=True)
class Selection:
    name: str
    kind: str  # how it was made: one of KINDS
    created: str  # local time, ISO 8601 to the second
    paths: tuple[str, ...]


# ---- selections and tags saved with the run ------------------------------------------------------------
def valid_name(name: str, what: str = "selection name") -> str:
    """The name without surrounding spaces; SelectionsError when empty, too long or with control characters."""
    name = str(name).strip()
    if not name:
        raise SelectionsError(f"a {what} cannot be empty")
    if len(name) > MAX_NAME:
        raise SelectionsError(f"a {what} has at most {MAX_NAME} characters, not {len(name)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise SelectionsError(f"a {what} cannot contain control characters (such as a line break)")
    return name


class SelectionStore:
    """The named selections and tags of one run folder. Every call reads the file afresh and every
    change is written atomically, so two windows on one run see each other's changes (of two changes
    at the same instant, the last written wins).

    A file that cannot be read (not JSON, or not this format) is moved aside to
    ``selections.json.unreadable-DATE-TIME`` (never deleted) and SelectionsError says so; the store then
    starts empty. A file from a newer version is left alone and refused."""

    def __init__(self, run_dir: str | Path):
        self.file = RunFolder(run_dir).selections_file

    # -- selections
    def names(self) -> list[str]:
        return sorted(self._read()["selections"], key=str.casefold)

    def get(self, name: str) -> Selection:
        entry = self._read()["selections"].get(name)
        if entry is None:
            raise SelectionsError(f"no selection named {name!r}")
        return Selection(name, entry["kind"], entry["created"], tuple(entry["paths"]))

    def save(self, name: str, paths: Iterable[str], kind: str, replace: bool = False) -> Selection:
        """Save a selection (paths in order, repeats dropped); an existing name only with ``replace``."""
        name = valid_name(name)
        kind = valid_name(kind, "selection kind")
        unique = tuple(dict.fromkeys(str(p) for p in paths))
        if not unique:
            raise SelectionsError("an empty selection is not saved: select some images first")
        data = self._read()
        if name in data["selections"] and not replace:
            raise SelectionsError(f"a selection named {name!r} already exists: replace it, or choose another name")
        created = time.strftime("%Y-%m-%dT%H:%M:%S")
        data["selections"][name] = {"kind": kind, "created": created, "paths": list(unique)}
        self._write(data)
        return Selection(name, kind, created, unique)

    def delete(self, name: str) -> None:
        data = self._read()
        if data["selections"].pop(name, None) is None:
            raise SelectionsError(f"no selection named {name!r}")
        self._write(data)

    # -- tags
    def tags(self) -> dict[str, str]:
        """{image path: label}."""
        return dict(self._read()["tags"])

    def tag(self, paths: Iterable[str], label: str) -> None:
        label = valid_name(label, "tag label")
        data = self._read()
        data["tags"].update({str(p): label for p in paths})
        self._write(data)

    def untag(self, paths: Iterable[str]) -> int:
        """Remove the tags of ``paths``; returns how many were tagged."""
        data = self._read()
        removed = sum(data["tags"].pop(str(p), None) is not None for p in paths)
        if removed:
            self._write(data)
        return removed

    # -- the file
    def _read(self) -> dict[str, Any]:
        try:
            raw = self.file.read_bytes()
        except FileNotFoundError:
            return {"version": FORMAT_VERSION, "selections": {}, "tags": {}}
        data: Any = None
        try:
            data = json.loads(raw.decode("utf-8"))
            problem = _format_problem(data)
        except (ValueError, RecursionError) as exc:
            problem = f"not JSON ({exc})"
        if problem is None:
            return data
        if isinstance(data, dict) and isinstance(data.get("version"), int) and data["version"] > FORMAT_VERSION:
            raise SelectionsError(f"{self.file} was written by a newer SIMCLR Studio (format {data['version']}): "
                                  "update to use its selections; it was left as it is")
        moved = self._move_aside()
        raise SelectionsError(f"{self.file.name} was unreadable ({problem}): it was moved aside to {moved.name} "
                              "and the run's selections start empty")

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, n = self.file.with_name(f"{self.file.name}.unreadable-{stamp}"), 1
        while target.exists():
            n += 1
            target = self.file.with_name(f"{self.file.name}.unreadable-{stamp}-{n}")
        os.rename(self.file, target)
        return target

    def _write(self, data: dict[str, Any]) -> None:
        # ASCII JSON: names that are not UTF-8 (escaped by the OS layer as surrogates) round-trip too.
        atomic_write_text(self.file, json.dumps(data, indent=1, ensure_ascii=True) + "\n")


def _format_problem(data: Any) -> str | None:
    """What is wrong with a parsed selections file, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("version"), int):
        return "no format version"
    if data["version"] > FORMAT_VERSION:
        return f"format {data['version']} is newer than {FORMAT_VERSION}"
    selections, tags = data.get("selections"), data.get("tags")
    if not isinstance(selections, dict) or not isinstance(tags, dict):
        return "no selections or tags table"
    for name, entry in selections.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("kind"), str)
                and isinstance(entry.get("created"), str) and isinstance(entry.get("paths"), list)
                and all(isinstance(p, str) for p in entry["paths"])):
            return f"selection {name!r} is malformed"
    if not all(isinstance(label, str) for label in tags.values()):
        return "a tag is not text"
    return None


# ---- CSV exports -------------------------------------------------------------------------------------
def export_selection_csv(out: str | Path, paths: Sequence[str], labels: Sequence[str],
                         coords: np.ndarray | None = None, overwrite: bool = False) -> Path:
    """Columns path,label,x,y: label is the image's class (or tag; "" for none), x/y its map position
    (empty without a map)."""
    from simclr_studio.export import csv_cell, write_csv

    def xy(i: int) -> list[str]:
        return [f"{coords[i, 0]:.6g}", f"{coords[i, 1]:.6g}"] if coords is not None else ["", ""]

    rows = ([csv_cell(str(p)), csv_cell(str(labels[i]))] + xy(i) for i, p in enumerate(paths))
    return write_csv(out, ("path", "label", "x", "y"), rows, overwrite)


def export_tags_csv(out: str | Path, tags: Mapping[str, str], overwrite: bool = False) -> Path:
    """Columns path,label: one row per tagged image."""
    from simclr_studio.export import csv_cell, write_csv

    rows = ([csv_cell(path), csv_cell(label)] for path, label in tags.items())
    return write_csv(out, ("path", "label"), rows, overwrite)


# ---- copies into a new folder --------------------------------------------------------------------------
CopyPlan = list[tuple[Path, Path]]  # (source, destination) per file


@dataclass
class CopyReport:
    done: list[Path] = field(default_factory=list)  # destinations written
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (source, reason)

    def summary(self, verb: str = "copied") -> str:
        text = f"{verb} {len(self.done)} file(s)"
        return text + (f"; {len(self.failed)} failed (first: {self.failed[0][0]}: {self.failed[0][1]})"
                       if self.failed else "")


def check_destination(dest: str | Path, data_dir: str | Path | None = None) -> Path:
    """``dest`` if files may be put there: a new path or an empty folder, not inside the image folder
    (copies there would be scanned as images of it next time). SelectionsError otherwise."""
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise SelectionsError(f"{dest} is a file: choose a new or empty folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise SelectionsError(f"{dest} is not empty: choose a new or empty folder, so that no file is replaced")
    if data_dir is not None:
        root, target = Path(data_dir).resolve(), dest.resolve()
        if target == root or root in target.parents:
            raise SelectionsError(f"{dest} is inside the image folder {data_dir}: choose a folder outside it")
    return dest


def plan_copy(paths: Iterable[str | Path], dest: str | Path, data_dir: str | Path | None = None) -> CopyPlan:
    """Each image into ``dest`` (flat), keeping its name; a name two sources share gets -2, -3, ...
    (names compared case-insensitively, for the file systems that ignore case)."""
    dest = check_destination(dest, data_dir)
    return _flat_plan((Path(p) for p in dict.fromkeys(str(p) for p in paths)), dest)


def _flat_plan(sources: Iterable[Path], folder: Path) -> CopyPlan:
    used: set[str] = set()
    plan = []
    for src in sources:
        name, n = src.name, 1
        while name.casefold() in used:
            n += 1
            name = f"{src.stem}-{n}{src.suffix}"
        used.add(name.casefold())
        plan.append((src, folder / name))
    return plan


def copy_files(plan: CopyPlan, progress: Callable[[int, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> CopyReport:
    """Copy each source to its destination (contents and dates). A destination that exists is never
    replaced (that file fails instead); the sources are only read. ``should_stop`` → InterruptedError
    (what was copied stays)."""
    report = CopyReport()
    for k, (src, dst) in enumerate(plan):
        if should_stop is not None and should_stop():
            raise InterruptedError("stopped while copying")
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            _copy_new(src, dst)
            report.done.append(dst)
        except OSError as exc:
            report.failed.append((src, exc.strerror or str(exc)))
        if progress is not None:
            progress(k + 1, len(plan))
    return report


def _copy_new(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin:
        with open(dst, "xb") as fout:  # exclusive: fails when dst exists, whatever appeared since the plan
            try:
                shutil.copyfileobj(fin, fout, 1 << 20)
            except BaseException:
                fout.close()
                dst.unlink(missing_ok=True)  # our own half-written copy
                raise
    shutil.copystat(src, dst)


def move_files(plan: CopyPlan, confirmed: bool) -> CopyReport:
    """Move each source to its destination, only when the user confirmed it (``confirmed``): the app
    lists the files and asks first. Never replaces a file, never copies-and-deletes: a file on another
    drive fails (copy it instead)."""
    if not confirmed:
        raise SelectionsError("moving the user's images needs their confirmation: nothing was moved")
    report = CopyReport()
    for src, dst in plan:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            _rename_new(src, dst)
            report.done.append(dst)
        except OSError as exc:
            reason = "on another drive: copy it instead" if exc.errno == errno.EXDEV else exc.strerror
            report.failed.append((src, reason or str(exc)))
    return report


def _rename_new(src: Path, dst: Path) -> None:
    """Rename without replacing: a hard link fails when dst exists; then the old name goes."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno == errno.EXDEV:
            raise
        if dst.exists():  # no hard links here (FAT, some network drives): check, then rename
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


# ---- tags as class folders -----------------------------------------------------------------------------
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def folder_name(label: str) -> str:
    """A label as a folder name every common file system accepts: no separators or characters Windows
    forbids, no trailing dots or spaces, no reserved device names, at most MAX_NAME characters."""
    name = _UNSAFE.sub("_", label).strip().rstrip(". ")[:MAX_NAME] or "_"
    return "_" + name if name.split(".")[0].casefold() in _RESERVED or name in (".", "..") else name


def plan_class_folders(tags: Mapping[str, str], dest: str | Path, data_dir: str | Path | None = None) -> CopyPlan:
    """Each tagged image into ``dest/<label>/`` (labels made folder-safe; two labels that come out the
    same get -2, -3, ...)."""
    dest = check_destination(dest, data_dir)
    by_label: dict[str, list[Path]] = {}
    for path, label in tags.items():
        by_label.setdefault(label, []).append(Path(path))
    folders = {label: folder for label, (_, folder) in
               zip(by_label, _flat_plan((Path(folder_name(label)) for label in by_label), dest), strict=True)}
    return [pair for label, sources in by_label.items() for pair in _flat_plan(sources, folders[label])]


def tags_to_class_folders(tags: Mapping[str, str], dest: str | Path, data_dir: str | Path | None = None,
                          progress: Callable[[int, int], None] | None = None,
                          should_stop: Callable[[], bool] | None = None) -> CopyReport:
    """Copy the tagged images into one folder per label under ``dest`` (a new or empty folder): a
    labelled image folder this app (or any ImageFolder reader) can train and evaluate on."""
    return copy_files(plan_class_folders(tags, dest, data_dir), progress, should_stop)
