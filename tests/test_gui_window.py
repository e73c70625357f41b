"""The main window between sessions (size, folder and run remembered) and its Help menu."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
from conftest import make_image_folder
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QLabel


def new_window(qtbot, settings_file):
    from simclr_studio.gui.app import build_window, create_app

    create_app()
    win = build_window(QSettings(str(settings_file), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    return win


def test_the_next_start_reopens_size_folder_and_run(qtbot, tmp_path, monkeypatch):
    from simclr_studio.config import RunConfig
    from simclr_studio.train import Trainer

    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=4, size=16)
    settings = tmp_path / "settings.ini"
    win = new_window(qtbot, settings)
    assert win.reopen_last() is None  # a first start: nothing to reopen
    win.show()
    win.resize(900, 640)
    win.open_folder(folder)
    qtbot.waitUntil(lambda: win.scan is not None, timeout=10_000)
    saved = win.saveGeometry()
    win.close()
    # The size and place are given back to Qt (which fits them to the screen: offscreen, 800 x 600).
    restored = []
    from simclr_studio.gui.main_window import MainWindow

    monkeypatch.setattr(MainWindow, "restoreGeometry", lambda self, geometry: restored.append(bytes(geometry)))
    again = new_window(qtbot, settings)
    assert restored == [bytes(saved)]
    assert again.reopen_last() == str(folder)
    qtbot.waitUntil(lambda: again.scan is not None and again.scan.root == str(folder), timeout=10_000)
    # A run shown when the window closed comes back with its folder.
    run = tmp_path / "run"
    cfg = RunConfig(data_dir=str(folder), backbone="tiny-cnn", image_size=16, batch_size=4, epochs=1, device="cpu",
                    eval_every=0)
    assert Trainer(cfg, run).run() == "completed"
    again.open_run(run)
    again.close()
    third = new_window(qtbot, settings)
    assert third.reopen_last() == str(run)
    assert third.train_panel.current_run_dir() == run
    qtbot.waitUntil(lambda: third.scan is not None and third.scan.root == str(folder), timeout=10_000)
    # A run folder deleted since is skipped: the folder is opened instead.
    import shutil

    third.close()
    shutil.rmtree(run)
    fourth = new_window(qtbot, settings)
    assert fourth.reopen_last() == str(folder)


def test_help_lists_the_shortcuts_and_shows_the_user_guide(qtbot, tmp_path):
    from PySide6.QtGui import QKeySequence

    win = new_window(qtbot, tmp_path / "settings.ini")
    help_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Help")
    names = [a.text() for a in help_menu.actions()]
    assert "&User Guide" in names and "&Keyboard Shortcuts" in names
    win.show_shortcuts()
    table = win.shortcuts_dialog.findChild(QLabel).text()
    for keys in ("Ctrl+E", "Ctrl+R", "Shift+drag", "Ctrl+drag"):
        assert keys in table
    assert QKeySequence(QKeySequence.StandardKey.Back).toString(QKeySequence.SequenceFormat.NativeText) in table
    win.show_user_guide()
    text = win.user_guide.browser.toPlainText()
    assert "SIMCLR Studio" in text and "Keyboard" not in text[:0] and "Quick start" in text
    assert "```" not in text  # rendered as Markdown, not shown as source


def test_dark_theme_check_boxes_and_current_tab_are_visible(qtbot):
    """Unchecked boxes were nearly invisible on the dark theme (Fusion outlines them a shade darker
    than the window): their outline must stand out from the background."""
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QApplication, QCheckBox

    from simclr_studio.gui.app import create_app
    from simclr_studio.gui.theme import apply_theme

    create_app()
    try:
        apply_theme("dark")
        box = QCheckBox("a choice")
        qtbot.addWidget(box)
        box.resize(120, 24)
        image = box.grab().toImage()
        window = QApplication.palette().color(QPalette.ColorRole.Window).lightness()
        indicator = [QColor(image.pixel(x, y)).lightness() for x in range(0, 20) for y in range(0, image.height())]
        assert max(indicator) - window > 60, (window, max(indicator))
        sheet = QApplication.instance().styleSheet()
        assert "QTabBar::tab:selected" in sheet and "border-bottom: 3px solid #2b6fd9" in sheet
    finally:
        apply_theme("light")


def test_the_map_legend_is_above_the_points_and_readable(qtbot):
    from simclr_studio.gui.map_view import MapView

    view = MapView()
    qtbot.addWidget(view)
    assert view.legend.zValue() > max(item.zValue() for item in (view.focus_item, view.neighbour_item))
    assert view.legend.opts["labelTextColor"].lightness() < 60  # dark ink on the light theme
    view.apply_theme(True)
    assert view.legend.opts["labelTextColor"].lightness() > 200


def test_legend_samples_are_readable_discs_on_big_maps(qtbot):
    """A big map's dots are 5 pixels; its legend samples stay discs of SAMPLE_SIZE in the class colour."""
    import numpy as np
    from PySide6.QtGui import QColor, QImage, QPainter

    from simclr_studio.gui.map_view import SAMPLE_SIZE, MapView, class_colour

    view = MapView()
    qtbot.addWidget(view)
    coords = np.random.default_rng(0).normal(size=(6000, 2)).astype(np.float32)
    view.set_points(coords, np.arange(6000) % 2, ["a", "b"])
    assert view.groups[0].opts["size"] == 5
    for g, (sample, _) in enumerate(view.legend.items):
        image = QImage(20, 20, QImage.Format.Format_ARGB32)
        image.fill(0)
        painter = QPainter(image)
        sample.paint(painter)
        painter.end()
        colour = class_colour(g, 2)
        pixels = [QColor(image.pixel(x, y)) for x in range(20) for y in range(20)]
        close = [max(abs(a - b) for a, b in zip(c.getRgb()[:3], colour, strict=True)) <= 3 for c in pixels]
        coloured = sum(c.alpha() > 150 and near for c, near in zip(pixels, close, strict=True))
        assert coloured > 0.6 * np.pi * (SAMPLE_SIZE / 2) ** 2, coloured  # a disc's area (its edge anti-aliased)


def test_the_welcome_page_reopens_a_recent_folder(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    folder = make_image_folder(tmp_path / "my images", classes=2, per_class=3, size=16)
    settings = tmp_path / "settings.ini"
    win = new_window(qtbot, settings)
    win.open_folder(folder)
    qtbot.waitUntil(lambda: win.scan is not None, timeout=10_000)
    win.close()
    again = new_window(qtbot, settings)
    link = again.data_panel.recent.text().split("href='")[1].split("'")[0]
    assert "my images" in again.data_panel.recent.text()
    again.data_panel.recent.linkActivated.emit(link)
    qtbot.waitUntil(lambda: again.scan is not None and again.scan.root == str(folder), timeout=10_000)


def test_the_run_shown_in_the_train_tab_is_not_renamed_or_deleted(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from simclr_studio.config import RunConfig
    from simclr_studio.train import Trainer

    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=4, size=16)
    run = tmp_path / "runs" / "shown"
    cfg = RunConfig(data_dir=str(folder), backbone="tiny-cnn", image_size=16, batch_size=4, epochs=1, device="cpu",
                    eval_every=0)
    assert Trainer(cfg, run).run() == "completed"
    win = new_window(qtbot, tmp_path / "settings.ini")
    win.open_run(run)
    warned = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warned.append(a[2]))
    assert win.runs_panel.rename(run, "other") is None and run.is_dir()
    assert not win.runs_panel.ask_delete(run) and run.is_dir()
    assert len(warned) == 2 and all("open in the Train tab" in w for w in warned)
