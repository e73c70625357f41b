"""Selections saved with the run, their CSV exports, and copies that never touch the user's files."""

import csv
import json
import os

import numpy as np
import pytest

from simclr_studio.run_folder import RunFolder
from simclr_studio.selections import (
    SelectionsError,
    SelectionStore,
    copy_files,
    export_selection_csv,
    export_tags_csv,
    folder_name,
    move_files,
    plan_copy,
    tags_to_class_folders,
)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture
def images(tmp_path):
    """Six small files in two folders, two of them sharing a name."""
    paths = []
    for folder, names in (("a", ["x.png", "y.png", "Same.png"]), ("b", ["same.png", "z.png", "w.jpg"])):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name in names:
            path = tmp_path / "data" / folder / name
            path.write_bytes(f"{folder}/{name}".encode() * 10)
            paths.append(str(path))
    return paths


def snapshot(paths):
    return {p: (open(p, "rb").read(), os.stat(p).st_mtime_ns) for p in paths}


def test_selections_are_saved_with_the_run_by_path(tmp_path, images):
    store = SelectionStore(tmp_path / "run")
    assert store.names() == [] and store.tags() == {}
    saved = store.save(" shirts ", [images[0], images[1], images[0]], "lasso")
    assert saved.name == "shirts" and saved.paths == (images[0], images[1]) and saved.kind == "lasso"
    assert RunFolder(tmp_path / "run").selections_file == tmp_path / "run" / "selections.json"
    # Another store (another window, a later session) reads the same file.
    again = SelectionStore(tmp_path / "run")
    assert again.names() == ["shirts"] and again.get("shirts") == saved
    assert len(saved.created) == 19 and saved.created[10] == "T"

    with pytest.raises(SelectionsError, match="already exists"):
        store.save("shirts", [images[2]], "rectangle")
    assert store.get("shirts").paths == (images[0], images[1])  # refused: unchanged
    store.save("shirts", [images[2]], "rectangle", replace=True)
    assert store.get("shirts").paths == (images[2],) and store.get("shirts").kind == "rectangle"
    store.save("Odd", images[3:], "outliers")
    assert store.names() == ["Odd", "shirts"]
    store.delete("shirts")
    assert store.names() == ["Odd"]
    with pytest.raises(SelectionsError, match="no selection named"):
        store.get("shirts")
    with pytest.raises(SelectionsError, match="no selection named"):
        store.delete("shirts")


@pytest.mark.parametrize("name,message", [("", "cannot be empty"), ("   ", "cannot be empty"),
                                          ("a" * 101, "at most 100"), ("two\nlines", "control characters")])
def test_selection_names_are_checked(tmp_path, images, name, message):
    with pytest.raises(SelectionsError, match=message):
        SelectionStore(tmp_path / "run").save(name, images, "lasso")
    assert not (tmp_path / "run" / "selections.json").exists()


def test_an_empty_selection_is_refused(tmp_path):
    with pytest.raises(SelectionsError, match="empty selection"):
        SelectionStore(tmp_path / "run").save("none", [], "lasso")


def test_tags(tmp_path, images):
    store = SelectionStore(tmp_path / "run")
    store.tag(images[:2], "cat")
    store.tag(images[1:3], "dog")  # a path has one tag: the newest
    assert store.tags() == {images[0]: "cat", images[1]: "dog", images[2]: "dog"}
    assert store.untag([images[0], images[5]]) == 1
    assert store.tags() == {images[1]: "dog", images[2]: "dog"}
    with pytest.raises(SelectionsError, match="tag label"):
        store.tag(images, "")


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"version": 1, "selections": [], "tags": {}}',
                                     b'{"version": 1, "selections": {"a": {"kind": "lasso"}}, "tags": {}}',
                                     b"\xff\xfe\x00"])
def test_an_unreadable_file_is_moved_aside_not_lost(tmp_path, images, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "selections.json").write_bytes(content)
    store = SelectionStore(run)
    with pytest.raises(SelectionsError, match="unreadable .* moved aside to selections.json.unreadable-"):
        store.names()
    aside = list(run.glob("selections.json.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content  # the user's data is kept as it was
    assert store.names() == []  # then the store starts empty
    store.save("fresh", images[:1], "search")
    assert store.names() == ["fresh"] and aside[0].read_bytes() == content


def test_a_newer_file_is_left_alone(tmp_path, images):
    run = tmp_path / "run"
    run.mkdir()
    newer = json.dumps({"version": 99, "selections": {}, "tags": {}, "future": True})
    (run / "selections.json").write_text(newer)
    store = SelectionStore(run)
    for action in (store.names, lambda: store.save("x", images, "lasso")):
        with pytest.raises(SelectionsError, match="newer"):
            action()
    assert (run / "selections.json").read_text() == newer and not list(run.glob("*.unreadable-*"))


def test_undecodable_names_round_trip(tmp_path):
    name = os.fsdecode(b"/data/caf\xe9.png")  # not UTF-8: a surrogate escape
    store = SelectionStore(tmp_path / "run")
    store.save("latin-1", [name], "click-through")
    assert SelectionStore(tmp_path / "run").get("latin-1").paths == (name,)


def test_selection_csv(tmp_path, images):
    coords = np.array([[0.5, -1.25], [2.0, 3.0]], np.float32)
    out = export_selection_csv(tmp_path / "sel.csv", images[:2], ["shirt", "=cmd"], coords)
    rows = read_csv(out)
    assert rows[0] == ["path", "label", "x", "y"]
    assert rows[1] == [images[0], "shirt", "0.5", "-1.25"] and rows[2][1] == "'=cmd"  # never a formula
    assert open(out, "rb").read().count(b"\r\n") == 3
    with pytest.raises(FileExistsError, match="already exists"):
        export_selection_csv(out, images[:1], [""], None)
    export_selection_csv(out, images[:1], [""], None, overwrite=True)
    assert read_csv(out)[1] == [images[0], "", "", ""]


def test_tags_csv(tmp_path, images):
    out = export_tags_csv(tmp_path / "tags.csv", {images[0]: "cat", images[1]: "dog"})
    assert read_csv(out) == [["path", "label"], [images[0], "cat"], [images[1], "dog"]]
    with pytest.raises(FileExistsError):
        export_tags_csv(out, {})


def test_copy_never_overwrites_or_changes_the_sources(tmp_path, images):
    before = snapshot(images)
    dest = tmp_path / "picked"
    plan = plan_copy(images, dest)
    names = [dst.name for _, dst in plan]
    assert names == ["x.png", "y.png", "Same.png", "same-2.png", "z.png", "w.jpg"]  # case-insensitive clash
    assert all(dst.parent == dest for _, dst in plan)
    report = copy_files(plan)
    assert len(report.done) == 6 and not report.failed
    assert [(dest / n).read_bytes() for n in names] == [before[p][0] for p in images]
    assert snapshot(images) == before

    # Not into a folder that holds anything, nor inside the image folder, nor onto a file.
    with pytest.raises(SelectionsError, match="not empty"):
        plan_copy(images, dest)
    with pytest.raises(SelectionsError, match="inside the image folder"):
        plan_copy(images, tmp_path / "data" / "new", data_dir=tmp_path / "data")
    with pytest.raises(SelectionsError, match="is a file"):
        plan_copy(images, images[0])

    # A file that appears after planning is not replaced: that copy fails, the rest goes on.
    plan = plan_copy(images[:2], tmp_path / "late")
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "y.png").write_bytes(b"someone else's")
    report = copy_files(plan)
    assert len(report.done) == 1 and report.failed[0][0] == plan[1][0]
    assert (tmp_path / "late" / "y.png").read_bytes() == b"someone else's"
    assert "failed" in report.summary() and snapshot(images) == before


def test_copy_can_be_stopped(tmp_path, images):
    calls = []
    with pytest.raises(InterruptedError):
        copy_files(plan_copy(images, tmp_path / "out"), progress=lambda d, t: calls.append(d),
                   should_stop=lambda: len(calls) >= 2)
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_move_needs_confirmation(tmp_path, images):
    before = snapshot(images)
    plan = plan_copy(images[:2], tmp_path / "moved")
    with pytest.raises(SelectionsError, match="confirmation"):
        move_files(plan, confirmed=False)
    assert snapshot(images) == before and not (tmp_path / "moved").exists()
    report = move_files(plan, confirmed=True)
    assert len(report.done) == 2 and not os.path.exists(images[0])
    assert (tmp_path / "moved" / "x.png").read_bytes() == before[images[0]][0]


def test_move_never_replaces(tmp_path, images):
    plan = plan_copy(images[:1], tmp_path / "moved")
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "x.png").write_bytes(b"keep me")
    report = move_files(plan, confirmed=True)
    assert report.failed and os.path.exists(images[0])
    assert (tmp_path / "moved" / "x.png").read_bytes() == b"keep me"


def test_tags_become_class_folders(tmp_path, images):
    before = snapshot(images)
    tags = {images[0]: "cat", images[2]: "cat", images[3]: "cat", images[1]: "a/b: c?", images[4]: "CON",
            images[5]: "Cat"}
    report = tags_to_class_folders(tags, tmp_path / "classes")
    assert not report.failed
    found = sorted(str(p.relative_to(tmp_path / "classes")) for p in (tmp_path / "classes").rglob("*") if p.is_file())
    assert found == ["Cat-2/w.jpg", "_CON/z.png", "a_b_ c_/y.png", "cat/Same.png", "cat/same-2.png", "cat/x.png"]
    assert snapshot(images) == before
    with pytest.raises(SelectionsError, match="not empty"):
        tags_to_class_folders(tags, tmp_path / "classes")


@pytest.mark.parametrize("label,name", [("shirt", "shirt"), ("a/b", "a_b"), ("..", "_"), ("x. ", "x"),
                                        ("nul.txt", "_nul.txt"), ("tab\there", "tab_here"), ("", "_")])
def test_folder_names(label, name):
    assert folder_name(label) == name
