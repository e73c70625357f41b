"""The Explore tab's curation and navigation, driven as a person would (offscreen Qt): t-SNE moving
while it runs, Back/Forward, k, search by picker and clipboard, the file-name filter, legend toggles,
duplicates, outliers, mislabels, and what a selection becomes (saved, exported, copied, moved, tagged)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QFileDialog, QInputDialog

from simclr_studio import curate, duplicates
from simclr_studio.selections import SelectionStore
from simclr_studio.session.explore_values import Projection


def test_tsne_snapshots_move_the_map_while_it_runs(explorer, qtbot):
    win, panel = explorer
    n = len(panel.session.embeddings)
    frames = [np.full((n, 2), float(i), np.float32) + np.arange(2 * n, dtype=np.float32).reshape(n, 2)
              for i in range(1, 4)]
    seen: dict = {}

    def fake(kind, perplexity, iterations, snapshot=None, should_stop=None):
        seen["args"] = (kind, perplexity, iterations)
        for i, frame in enumerate(frames):
            snapshot(100 * (i + 1), 300, frame)
            time.sleep(0.3)
            if should_stop():
                raise InterruptedError
        return Projection(panel.session.embedded, "tsne", frames[-1])

    panel.session.projection = fake
    panel.perplexity.setValue(12)
    panel.session.embedded.embeddings.maps.pop("tsne")
    panel.map_choice.setCurrentText("t-SNE")
    panel._show_map()
    qtbot.waitUntil(lambda: "iteration" in panel.state_label.text(), timeout=5000)
    assert seen["args"] == ("tsne", 12.0, panel.iterations.value())
    assert "perplexity 12" in panel.state_label.text()
    qtbot.waitUntil(lambda: any(np.array_equal(panel.map.coords, f) for f in frames), timeout=5000)
    assert panel.map.point_count() == n  # the same points moved, none lost
    qtbot.waitUntil(lambda: not panel.jobs, timeout=10_000)
    assert "iteration" not in panel.state_label.text()


def test_a_cancelled_tsne_stops_and_keeps_the_window_usable(explorer, qtbot):
    win, panel = explorer
    n = len(panel.session.embeddings)
    stopped = []

    def slow(kind, perplexity, iterations, snapshot=None, should_stop=None):
        for i in range(200):
            snapshot(i, 200, np.random.default_rng(i).random((n, 2), dtype=np.float32))
            time.sleep(0.05)
            if should_stop():
                stopped.append(i)
                raise InterruptedError
        raise AssertionError("never cancelled")

    panel.session.projection = slow
    panel._compute_map("tsne")
    qtbot.waitUntil(lambda: "iteration" in panel.state_label.text(), timeout=5000)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: bool(stopped), timeout=5000)
    assert panel.state_label.text() == "Cancelled" and not panel.cancel_button.isVisible()


def test_back_forward_and_k(explorer):
    win, panel = explorer
    panel.k.setValue(5)
    panel.select_point(2)
    panel.select_point(7)
    assert len(panel.session.results.rows) == 5 and panel.back.isEnabled() and not panel.forward.isEnabled()
    panel.go(-1)
    assert panel.session.focus == 2 and panel.forward.isEnabled()
    panel.go(1)
    assert panel.session.focus == 7
    panel.k.setValue(9)  # the shown neighbours follow k
    assert len(panel.session.results.rows) == 9 and panel.session.focus == 7
    assert panel.results_model.rowCount() == 9


@pytest.fixture
def clipboard(explorer):
    """The application's clipboard, emptied afterwards: data left on the offscreen clipboard crashes
    Qt as the test process exits (even when the test failed)."""
    yield QGuiApplication.clipboard()
    QGuiApplication.clipboard().clear()


def test_search_from_a_picked_file_and_from_the_clipboard(explorer, clipboard, qtbot, monkeypatch, tmp_path):
    win, panel = explorer
    source = panel.session.embeddings.paths[4]
    outside = tmp_path / "copy.png"
    outside.write_bytes(Path(source).read_bytes())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(outside), ""))
    panel.choose_search_image()
    qtbot.waitUntil(lambda: panel.session.results is not None and panel.session.results.kind == "search",
                    timeout=20_000)
    assert panel.session.results.rows[0] == 4
    # An image (pixels, as a screenshot tool copies them) on the clipboard.
    clipboard.setImage(QImage(source))
    panel.session.show(panel.session.neighbours(0))
    panel.paste()
    qtbot.waitUntil(lambda: panel.session.results.kind == "search", timeout=20_000)
    assert panel.session.results.rows[0] == 4
    # A file of the map on the clipboard (copied in a file manager): its neighbours, as for a click.
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(source)])
    clipboard.setMimeData(mime)
    panel.paste()
    qtbot.waitUntil(lambda: panel.session.results.kind == "neighbours", timeout=20_000)
    assert panel.session.focus == 4 and "not part of the map" not in panel.focus_card.caption.text()




def test_a_selection_replaces_the_focused_image(explorer):
    win, panel = explorer
    panel.select_point(3)
    assert Path(panel.session.paths([3])[0]).name in panel.focus_card.caption.text()
    panel.show_selection([1, 2, 5], "rectangle")
    assert "3 images selected" in panel.focus_card.caption.text()
    assert panel.focus_card.image.pixmap().isNull()
    # An emptied tab keeps no heading of what it showed before.
    panel.clear()
    from simclr_studio.gui.explore_results import EMPTY_TITLE

    assert panel.results.title.text() == EMPTY_TITLE and panel.focus_card.caption.text() == "Nothing selected"


def test_file_name_filter_selects_matching_images(explorer, qtbot):
    win, panel = explorer
    panel.filter.setText("IMG_001")
    qtbot.waitUntil(lambda: panel.session.results is not None and panel.session.results.kind == "selection",
                    timeout=3000)
    expected = [r for r, p in enumerate(panel.session.embeddings.paths) if "img_001" in Path(p).name]
    assert list(panel.session.selection) == expected and len(expected) == 3


def test_hidden_classes_cannot_be_clicked_or_selected(explorer):
    win, panel = explorer
    item = panel.map.groups[0]
    sample = panel.map.legend.items[0][0]  # the legend's swatch of class 0: a click toggles the class

    class Click:
        def button(self):
            from PySide6.QtCore import Qt

            return Qt.MouseButton.LeftButton

        def accept(self):
            pass

    sample.mouseClickEvent(Click())
    assert not item.isVisible()
    hidden = int(item.rows[0])
    assert panel.map.nearest(*panel.map.coords[hidden]) != hidden
    coords = panel.map.coords
    panel.map._on_rect(coords[:, 0].min() - 1, coords[:, 1].min() - 1, coords[:, 0].max() + 1, coords[:, 1].max() + 1)
    assert set(panel.session.selection) == set(range(len(coords))) - set(item.rows.tolist())
    sample.mouseClickEvent(Click())
    assert item.isVisible() and panel.map.nearest(*panel.map.coords[hidden]) == hidden


def test_duplicates_slider_counts_live_and_a_group_becomes_the_selection(explorer, qtbot):
    win, panel = explorer
    view = panel.duplicates
    view.find.click()
    qtbot.waitUntil(lambda: panel.curation.duplicates is not None, timeout=20_000)
    emb = panel.session.embeddings
    assert emb.thumbnails is not None
    graph = curate.knn_graph(emb.features, duplicates.CROP_NEIGHBOURS)[0]
    pairs = duplicates.duplicate_pairs(emb.features, thumbnails=emb.thumbnails, neighbours=graph)
    for step in (0, 500, 1000):
        view.slider.setValue(step)
        assert f": {pairs.count(view.threshold()):,} group" in view.summary.text()
    view.slider.setValue(0)  # the floor: the most groups
    qtbot.waitUntil(lambda: view.groups.count() == len(pairs.groups(pairs.floor)), timeout=3000)
    if view.groups.count():
        view._group_clicked(view.groups.item(0))
        assert list(panel.session.selection) == sorted(pairs.groups(pairs.floor)[0].rows)
        assert panel.session.results.how == "duplicate group 1"


def test_outliers_and_mislabels_views_show_the_engines_findings(explorer, qtbot):
    win, panel = explorer
    emb = panel.session.embeddings
    panel.outliers.count.setValue(5)
    panel.outliers.search()
    qtbot.waitUntil(lambda: panel.curation.outliers is not None, timeout=20_000)
    rows, _ = curate.outliers(emb.features, 5)
    assert panel.curation.outliers.rows.tolist() == rows.tolist()
    assert panel.outliers.list.model.paths == [emb.paths[r] for r in rows]
    panel.outliers._activated(0)
    assert panel.session.focus == rows[0]
    panel.mislabels.search()
    qtbot.waitUntil(lambda: panel.curation.mislabels is not None, timeout=20_000)
    found, report = curate.likely_mislabeled(curate.knn_graph(emb.features, 20), emb.labels, len(emb.classes))
    assert [m.row for m in panel.curation.mislabels.found] == [m.row for m in found]
    table = panel.mislabels.classes
    assert table.rowCount() == len(emb.classes) and table.columnCount() == len(emb.classes) + 1
    assert int(table.item(0, 1).text() or 0) == report.confusion[0, 0]
    panel.mislabels._class_clicked(1, 0)
    assert list(panel.session.selection) == [r for r, label in enumerate(emb.labels) if label == 1]


def test_a_selection_is_saved_exported_copied_tagged_and_never_moved_unasked(explorer, qtbot, monkeypatch, tmp_path):
    from simclr_studio.gui import selection_actions

    win, panel = explorer
    emb = panel.session.embeddings
    panel.show_selection([0, 3, 6], "lasso")
    actions = panel.actions
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("my picks", True))
    actions.save()
    store = SelectionStore(panel.session.run_dir)
    assert store.get("my picks").paths == tuple(emb.paths[r] for r in (0, 3, 6))
    assert panel.saved.list.count() >= 1
    # Shown again from the Selections tab.
    panel.show_selection([1], "rectangle")
    panel.saved.list.setCurrentRow(0)
    panel.saved.show_chosen()
    assert list(panel.session.selection) == [0, 3, 6]
    # CSV: path,label,x,y.
    out = tmp_path / "sel.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    actions.export_csv()
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["path", "label", "x", "y"] and [r[0] for r in rows[1:]] == [emb.paths[r] for r in (0, 3, 6)]
    assert rows[1][1] == panel.session.label_of(0)
    assert float(rows[1][2]) == pytest.approx(panel.map.coords[0, 0], rel=1e-5)
    # Copies: the originals stay.
    dest = tmp_path / "copies"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(dest))
    before = {p: Path(p).read_bytes() for p in emb.paths}
    actions.copy()
    qtbot.waitUntil(lambda: "copied 3" in panel.state_label.text(), timeout=10_000)
    assert sorted(p.name for p in dest.iterdir()) == sorted({Path(emb.paths[r]).name for r in (0, 3, 6)}
                                                            ) or len(list(dest.iterdir())) == 3
    assert all(Path(p).read_bytes() == b for p, b in before.items())
    # Moving asks first: declined, nothing moves.
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "moved"))
    monkeypatch.setattr(selection_actions, "confirm_move", lambda parent, plan: False)
    actions.move()
    assert all(Path(p).is_file() for p in emb.paths) and not any((tmp_path / "moved").glob("*"))
    # Tags, and a class-folder layout of copies.
    monkeypatch.setattr(QInputDialog, "getItem", lambda *a, **k: ("keep", True))
    actions.tag()
    assert store.tags() == {emb.paths[r]: "keep" for r in (0, 3, 6)}
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "layout"))
    panel.saved.class_folders()
    qtbot.waitUntil(lambda: (tmp_path / "layout" / "keep").is_dir() and len(list((tmp_path / "layout" / "keep")
                                                                                .iterdir())) == 3, timeout=10_000)
