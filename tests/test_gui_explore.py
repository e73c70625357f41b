"""The Explore tab, driven as a person would (offscreen Qt): embed, click a point, search, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent


def test_embedding_fills_the_scatter(explorer):
    win, panel = explorer
    emb = panel.session.embeddings
    assert len(emb) == 24 and panel.map.point_count() == 24
    assert set(emb.maps) >= {"pca", "tsne"}  # t-SNE replaced the PCA preview
    assert panel.map_name == "tsne"
    np.testing.assert_array_equal(panel.map.coords, emb.maps["tsne"])
    # Coloured by folder label, one legend entry per class.
    assert sorted(item.name() for item in panel.map.groups) == ["class_0", "class_1", "class_2"]
    # The checkpoint is named with its run ("last.pt" alone says too little).
    assert panel.checkpoint.currentText() == f"{panel.session.run_dir.name} · last.pt"
    # Quality: the checkpoint, a random encoder and raw pixels were all measured.
    quality, table = panel.session.quality, panel.quality_table
    assert quality is not None
    for key in ("trained", "random", "raw"):
        scores = quality.row(key)
        assert 0.0 <= scores.knn_accuracy <= 1.0 and 0.0 <= scores.linear_accuracy <= 1.0
        assert table.labels[(key, "knn")].text() == f"{scores.knn_accuracy:.3f}"
        assert table.labels[(key, "linear")].text() == f"{scores.linear_accuracy:.3f}"
    assert "k=23, same as the Train tab" in table.note.text()  # 24 images: k = min(200, 24 - 1)


def test_quality_uses_the_train_tabs_knn_protocol(explorer):
    """The kNN column is the online kNN's: leave-one-out on the same class-balanced sample, same k."""
    from simclr_studio.evaluate import knn_sample, leave_one_out_knn, raw_pixel_features
    from simclr_studio.image_cache import decode_all

    win, panel = explorer
    emb, quality = panel.session.embeddings, panel.session.quality
    classes = len(emb.classes)
    sample = knn_sample(emb.labels)
    knn, k = leave_one_out_knn(emb.features[sample], emb.labels[sample], classes)
    assert (quality.trained.knn_accuracy, quality.trained.k) == (pytest.approx(knn), k)
    images, failed = decode_all([emb.paths[i] for i in sample], panel.session.trained.config.image_size)
    assert not failed
    raw, _ = leave_one_out_knn(raw_pixel_features(images), emb.labels[sample], classes)
    assert quality.raw.knn_accuracy == pytest.approx(raw)
    assert quality.n == len(sample) == 24


def test_raw_pixels_are_reduced_as_the_trainers_baseline(explore_run, tmp_path):
    """Above 64 px the baseline's raw pixels are the 64 px centre view, as the trainer takes them."""
    import torch

    from simclr_studio.augment import centre_view
    from simclr_studio.evaluate import BASELINE_MAX_SIDE, raw_pixel_features
    from simclr_studio.image_cache import decode_all
    from simclr_studio.session.quality import raw_pixels

    data, _ = explore_run
    paths = sorted(str(p) for p in data.rglob("*.png"))[:5] + [str(tmp_path / "missing.png")]
    features, keep = raw_pixels(paths, 80)
    assert list(keep) == [0, 1, 2, 3, 4] and features.shape == (5, 3 * BASELINE_MAX_SIDE ** 2)
    images, _ = decode_all(paths[:5], 80)
    expected = raw_pixel_features((centre_view(images, BASELINE_MAX_SIDE) * 255).round_().to(torch.uint8))
    np.testing.assert_array_equal(features, expected)


def test_clicking_a_point_lists_its_true_neighbours(explorer, qtbot):
    win, panel = explorer
    row = 5
    # A click at the point's position, through the view box, as the mouse would deliver it.
    x, y = panel.map.coords[row]
    with qtbot.waitSignal(panel.map.point_clicked, timeout=2000) as clicked:
        panel.map.view.clicked.emit(float(x), float(y))
    assert clicked.args == [row]
    emb = panel.session.embeddings
    shown = list(panel.session.results.rows)
    feats = emb.features / np.linalg.norm(emb.features, axis=1, keepdims=True)
    sims = feats @ feats[row]
    sims[row] = -np.inf
    expected = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:len(shown)]
    # The true neighbours in order; rows whose similarities tie within float32 rounding may swap.
    np.testing.assert_allclose(sims[shown], sims[expected], atol=1e-5)
    assert len(set(shown)) == len(expected) and row not in shown
    expected = shown
    assert panel.results_model.rowCount() == len(expected)
    caption = panel.results_model.labels[0]
    assert f"{sims[expected[0]]:.3f}" in caption and emb.classes[emb.labels[expected[0]]] in caption
    # The focused point and its neighbours are marked on the map.
    np.testing.assert_allclose(panel.map.focus_item.getData()[0], [x])
    assert len(panel.map.neighbour_item.getData()[0]) == len(expected)
    # Clicking a neighbour moves the focus to it.
    panel.results.activated.emit(0)
    assert panel.session.focus == expected[0]
    np.testing.assert_allclose(panel.map.focus_item.getData()[0], [panel.map.coords[expected[0], 0]])


def click_on_point(qtbot, view, row: int) -> None:
    """A real left click (press and release through Qt) on the centre of point ``row``'s dot."""
    from PySide6.QtCore import QPoint

    scene = view.view.mapViewToScene(QPointF(*map(float, view.coords[row])))
    pos = view.mapFromScene(scene)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))


def test_a_click_on_a_dots_centre_focuses_it(explorer, qtbot):
    win, panel = explorer
    qtbot.waitExposed(win)
    coords = panel.map.coords
    rows = [r for r in range(len(coords)) if panel.map.nearest(*coords[r]) == r]  # not hidden under another dot
    assert rows
    click_on_point(qtbot, panel.map, rows[0])
    assert panel.session.focus == rows[0]
    # A second dot, then the first again: its red focus ring is drawn on top and must not swallow the click.
    click_on_point(qtbot, panel.map, rows[-1])
    assert panel.session.focus == rows[-1]
    click_on_point(qtbot, panel.map, rows[-1])
    assert panel.session.focus == rows[-1] and panel.focus_card.caption.text().count("<b>") == 1


def test_empty_space_click_and_nearest_point(explorer):
    win, panel = explorer
    coords = panel.map.coords
    far_x = coords[:, 0].max() + 10 * (np.ptp(coords[:, 0]) + 1)
    assert panel.map.nearest(far_x, coords[0, 1]) == -1
    assert panel.map.nearest(*coords[3]) == 3


def test_dropping_an_outside_image_finds_its_duplicate(explorer, qtbot, tmp_path):
    win, panel = explorer
    source = Path(panel.session.embeddings.paths[9])
    outside = tmp_path / "elsewhere" / "query.png"
    outside.parent.mkdir()
    shutil.copyfile(source, outside)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(outside))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    panel.dropEvent(event)
    qtbot.waitUntil(lambda: panel.results.title.text().startswith("<b>Search"), timeout=20_000)
    assert panel.session.results.rows[0] == 9
    assert panel.results_model.labels[0].startswith("1.000")
    assert len(panel.map.neighbour_item.getData()[0]) == len(panel.session.results.rows)


def test_rectangle_selection_shows_the_images_inside(explorer):
    win, panel = explorer
    coords = panel.map.coords
    x0, y0 = np.percentile(coords, 25, axis=0)
    x1, y1 = np.percentile(coords, 75, axis=0)
    panel.map.view.rect_selected.emit(float(x0), float(y0), float(x1), float(y1))
    inside = [i for i, (x, y) in enumerate(coords) if x0 <= x <= x1 and y0 <= y <= y1]
    assert inside and list(panel.session.results.rows) == inside == list(panel.session.selection)
    assert panel.results.title.text().startswith("<b>Selection")
    assert len(panel.map.selection_item.getData()[0]) == len(inside)


def test_export_writes_loadable_files(explorer, qtbot, tmp_path, monkeypatch):
    import torch

    from simclr_studio.checkpoint import safe_load
    from simclr_studio.gui.export_dialog import ExportDialog

    win, panel = explorer
    dialog = ExportDialog(panel.export_source(), tmp_path / "out", win)
    for key in ("pt", "safetensors", "npz", "csv", "png"):
        dialog.boxes[key].setChecked(True)
    dialog.boxes["onnx"].setChecked(False)  # covered by the engine's export tests
    dialog.export()
    qtbot.waitUntil(lambda: bool(dialog.written), timeout=30_000)
    names = sorted(p.name for p in dialog.written)
    assert any(n.endswith(".pt") for n in names) and any(n.endswith(".safetensors") for n in names)
    assert str(tmp_path / "out") in dialog.status.text()
    pt = next(p for p in dialog.written if p.suffix == ".pt")
    state = safe_load(pt)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    from safetensors.numpy import load_file

    assert set(load_file(next(p for p in dialog.written if p.suffix == ".safetensors"))) == set(state)
    npz = next(p for p in dialog.written if p.suffix == ".npz")
    with np.load(npz, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["features"], panel.session.embeddings.features)
        np.testing.assert_array_equal(z["coords"], panel.session.map(panel.map_name))
    csv_text = next(p for p in dialog.written if p.suffix == ".csv").read_text().splitlines()
    assert csv_text[0].startswith("path,label,class,x,y,f0") and len(csv_text) == 25
    from PySide6.QtGui import QImage

    png = next(p for p in dialog.written if p.suffix == ".png")
    image = QImage(str(png))
    assert not image.isNull() and image.width() >= 800
    # The title band above the map: the run, checkpoint and projection are written there (dark ink).
    from simclr_studio.gui.export_dialog import TITLE_HEIGHT, map_title

    title = map_title(panel.session.run_dir, panel.session.sources.checkpoint, panel.map_name)
    assert panel.session.run_dir.name in title and "t-SNE" in title
    band = [image.pixelColor(x, y).lightness() for x in range(0, 400, 2) for y in range(0, TITLE_HEIGHT, 2)]
    assert min(band) < 100 and max(band) > 200
    # Files get the usual permissions (umask), not a temporary file's 0600; the dialog names the
    # checkpoint, and its folder opens once something is written.
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in dialog.written)
    from PySide6.QtWidgets import QLabel

    labels = [w.text() for w in dialog.findChildren(QLabel)]
    checkpoint = panel.session.sources.checkpoint
    assert f"{checkpoint.name} of run {panel.session.run_dir.name}" in labels
    opened = []
    monkeypatch.setattr("simclr_studio.gui.export_dialog.QDesktopServices.openUrl", lambda url: opened.append(url))
    assert dialog.open_button.isEnabled()
    dialog.open_button.click()
    assert [u.toLocalFile() for u in opened] == [str(tmp_path / "out")]


def test_weights_export_needs_no_embedding(explore_run, qtbot, tmp_path, monkeypatch):
    """Export is there as soon as a run has a checkpoint; only features and the map wait for Embed."""
    from simclr_studio.gui.app import build_window, create_app

    data, run = explore_run
    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    create_app()
    win = build_window(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.open_path(run)
    qtbot.waitUntil(lambda: win.scan is not None, timeout=10_000)
    assert win.export_action.isEnabled() and win.explore_panel.session.embedded is None
    win.show_export()
    dialog = win.export_dialog
    assert dialog.boxes["pt"].isChecked() and not dialog.boxes["npz"].isEnabled()
    dialog.folder.setText(str(tmp_path / "weights"))
    dialog.export()
    qtbot.waitUntil(lambda: bool(dialog.written), timeout=30_000)
    suffixes = {p.suffix for p in dialog.written}
    assert ".pt" in suffixes and not suffixes & {".npz", ".csv", ".png"}


def test_embeddings_are_reused_when_the_tab_is_reopened(explorer, qtbot):
    win, panel = explorer
    win.tabs.setCurrentWidget(win.data_panel)
    panel.clear()
    win.show_explorer()  # the cache exists: loads without pressing Embed
    qtbot.waitUntil(lambda: panel.session.embedded is not None and not panel.jobs, timeout=20_000)
    assert panel.session.embedded.from_cache and "(from cache)" in panel.state_label.text()
    assert panel.session.map("tsne") is not None  # the map was cached too


def test_a_checkpoint_from_another_run_stays_chosen(explorer, qtbot, tmp_path):
    win, panel = explorer
    other = tmp_path / "other-run"
    shutil.copytree(panel.session.run_dir, other, ignore=shutil.ignore_patterns("embeddings"))
    panel.use_checkpoint(other / "checkpoints" / "last.pt")
    assert panel.session.run_dir == other and panel.session.embedded is None
    win.tabs.setCurrentWidget(win.data_panel)
    win.show_explorer()  # coming back to the tab keeps the run the user picked
    assert panel.session.run_dir == other
    assert panel.checkpoint.currentData() == str(other / "checkpoints" / "last.pt")


def test_uniform_points_are_what_set_data_makes(qtbot):
    """The map's fast way to build a layer (one point's style copied to all) gives pyqtgraph the same
    records as its own ``setData``, so drawing, hovering and the legend behave the same."""
    import pyqtgraph as pg

    from simclr_studio.gui.map_view import MapPoints

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(500), rng.standard_normal(500)
    style = dict(size=5, pen=None, brush=pg.mkBrush(10, 120, 200, 200), name="class")
    fast, plain = MapPoints.uniform(x, y, **style), pg.ScatterPlotItem(x=x, y=y, **style)
    for field in ("x", "y", "size", "visible", "sourceRect", "symbol"):
        np.testing.assert_array_equal(fast.data[field], plain.data[field])
    assert fast.name() == "class" and fast.boundingRect() == plain.boundingRect()
    assert len(fast.points()) == 500 and fast.points()[7].pos() == plain.points()[7].pos()
    assert len(MapPoints.uniform(x[:1], y[:1], **style).data) == 1
