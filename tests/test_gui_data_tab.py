"""The Data tab (offscreen Qt): the skipped-files table, the class filter, the image preview, counts
in words, and what the tab says when a scan fails."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
from conftest import make_image_folder
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QMessageBox

from simclr_studio.data import DataError, ScanResult, SkippedFile, scan_folder
from simclr_studio.gui import workers
from simclr_studio.gui.data_panel import DataPanel
from simclr_studio.gui.thumbnails import THUMB


@pytest.fixture
def panel(qtbot):
    widget = DataPanel()
    qtbot.addWidget(widget)
    widget.resize(1100, 700)
    widget.show()
    return widget


def test_skipped_files_are_readable(panel, qtbot, tmp_path):
    root = str(tmp_path / "photos")
    path = f"{root}/holidays/2023/a rather long folder name/IMG_20230812_142311_really_long_name.jpg"
    reason = ("image too large (12000×9000 pixels, over the limit of 64,000,000; max_image_pixels in the run's"
              " config sets it)")
    panel.show_scan(ScanResult(root, [f"{root}/ok.png"], [-1], [], [SkippedFile(path, reason)]))
    table = panel.skipped
    qtbot.waitUntil(lambda: table.viewport().width() > 200)
    header = table.horizontalHeader()
    # The path column gets a real share of the width (it was ~25 px beside a column sized to the reasons).
    assert table.columnWidth(0) >= 120 and table.columnWidth(0) >= table.viewport().width() // 3
    assert header.sectionResizeMode(0) == QHeaderView.ResizeMode.Interactive  # the user may drag both
    assert header.sectionResizeMode(1) == QHeaderView.ResizeMode.Interactive
    assert table.textElideMode() == Qt.TextElideMode.ElideMiddle  # the file name stays visible
    assert table.item(0, 0).text() == "holidays/2023/a rather long folder name/IMG_20230812_142311_really_long_name.jpg"
    assert table.item(0, 1).text() == reason  # the whole reason, never cut in the model
    for column in (0, 1):
        assert path in table.item(0, column).toolTip() and reason in table.item(0, column).toolTip()
    # A width the user chose survives the panel being resized.
    header.resizeSection(0, 333)
    panel.resize(900, 700)
    qtbot.wait(50)
    assert table.columnWidth(0) == 333


def test_clicking_a_class_filters_the_grid_and_show_all_brings_all_back(panel, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=3, per_class=4)
    panel.show_scan(scan_folder(folder))
    assert panel.model.rowCount() == 12 and not panel.show_all_button.isVisible()
    rect = panel.classes.visualItemRect(panel.classes.item(1, 0))
    qtbot.mouseClick(panel.classes.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert panel.model.rowCount() == 4
    assert all(Path(p).parent.name == "class_1" for p in panel.model.paths)
    assert panel.show_all_button.isVisible() and "class_1" in panel.filter_label.text()
    qtbot.mouseClick(panel.show_all_button, Qt.MouseButton.LeftButton)
    assert panel.model.rowCount() == 12 and not panel.show_all_button.isVisible()
    # A new folder opens unfiltered.
    qtbot.mouseClick(panel.classes.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    panel.show_scan(scan_folder(folder))
    assert panel.model.rowCount() == 12 and not panel.classes.selectedItems()


def test_double_clicking_a_thumbnail_opens_a_larger_preview(panel, qtbot, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=3, size=20)
    panel.show_scan(scan_folder(folder))
    index = panel.model.index(2)
    qtbot.waitUntil(lambda: panel.grid.visualRect(index).isValid())
    viewport, at = panel.grid.viewport(), panel.grid.visualRect(index).center()
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=at)  # a double click's first press, as a mouse does
    qtbot.mouseDClick(viewport, Qt.MouseButton.LeftButton, pos=at)
    preview = panel.preview
    assert preview is not None and preview.isVisible()
    assert panel.model.paths[2] in preview.caption.text()
    qtbot.waitUntil(lambda: preview.image.pixmap() is not None and not preview.image.pixmap().isNull(),
                    timeout=10_000)
    assert preview.image.pixmap().width() > THUMB  # larger than its thumbnail
    assert "20 × 20 pixels" in preview.caption.text()


def test_counts_are_written_in_words(panel, tmp_path):
    root = str(tmp_path)
    panel.show_scan(ScanResult(root, [f"{root}/a.png"], [-1], [], [SkippedFile(f"{root}/b.txt", "not an image")]))
    text = panel.summary.text()
    assert "1 image<" in text and "1 file skipped" in text
    assert "1 images" not in text and "1 files" not in text
    panel.scan_progress(1)
    assert panel.scan_label.text() == "Scanning… 1 file"
    panel.scan_progress(2)
    assert panel.scan_label.text() == "Scanning… 2 files"


def test_a_failed_scan_says_so_on_the_tab(window, qtbot, tmp_path, monkeypatch):
    warned = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warned.append(a))

    def failing_scan(folder, progress=None, should_stop=None, **_):
        progress(48, 48)  # the walk finished ...
        time.sleep(0.2)
        raise DataError("cannot read folder: Permission denied")  # ... then it failed

    monkeypatch.setattr(workers, "scan_folder", failing_scan)
    panel = window.data_panel
    window.open_path(make_image_folder(tmp_path / "imgs", classes=2, per_class=2))
    qtbot.waitUntil(lambda: bool(warned), timeout=10_000)
    assert panel.stack.currentIndex() == 1 and panel.scan_label.isVisible()
    text = panel.scan_label.text()
    assert "failed" in text and "Permission denied" in text and "Scanning" not in text
    assert not panel.scan_bar.isVisible() and not panel.cancel_button.isVisible()
    panel.back_button.click()  # nothing was open before: the welcome page
    assert panel.stack.currentIndex() == 0
    # The next scan shows its progress again.
    monkeypatch.setattr(workers, "scan_folder", scan_folder)
    folder = make_image_folder(tmp_path / "ok", classes=2, per_class=2)
    window.open_path(folder)
    assert panel.scan_bar.isVisible() and panel.cancel_button.isVisible() and not panel.back_button.isVisible()
    qtbot.waitUntil(lambda: window.scan is not None, timeout=10_000)
    assert panel.stack.currentIndex() == 2


def test_the_welcome_page_lists_recent_folders_and_runs(panel, qtbot):
    paths = ["/data/holiday photos", "/runs/run #2 (50%)", "/a", "/b", "/c", "/d"]
    assert not panel.recent.isVisibleTo(panel)  # nothing yet: no empty heading
    panel.set_recent(paths)
    assert panel.recent.isVisibleTo(panel)
    text = panel.recent.text()
    assert "holiday photos" in text and "href='/d'" not in text  # the five newest
    with qtbot.waitSignal(panel.recent_requested) as asked:
        panel.recent.linkActivated.emit(text.split("href='")[2].split("'")[0])
    assert asked.args == ["/runs/run #2 (50%)"]  # names with spaces, '#', '%' come back whole
    panel.set_recent([])
    assert not panel.recent.isVisibleTo(panel)
