"""The Augment tab on its own (offscreen Qt): error messages, which images the preview shows, presets
that follow the image size, aligned controls and their tool tips."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("PySide6")
from conftest import make_image_folder
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFileDialog

from simclr_studio.config import AugmentConfig
from simclr_studio.gui import augment_panel as ap


@pytest.fixture
def panel(qtbot):
    widget = ap.AugmentPanel()
    qtbot.addWidget(widget)
    widget.resize(1100, 800)
    widget.show()
    return widget


@pytest.fixture
def folder_paths(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=3, per_class=6, size=20)
    return sorted(str(p) for p in root.rglob("*.png"))


def shown(panel, qtbot, count):
    qtbot.waitUntil(lambda: panel.preview_count > count, timeout=10_000)


def test_an_invalid_setting_is_shown_whole_as_plain_text_naming_the_control(panel, qtbot, folder_paths):
    panel.set_images(folder_paths)
    lo, hi = panel.controls["crop_scale"]
    lo.setValue(0.9)
    hi.setValue(0.5)
    qtbot.waitUntil(lambda: "must be" in panel.status.text(), timeout=5_000)
    text = panel.status.text()
    # "<" in "0 < low <= high" would start an HTML tag in rich text and eat the rest.
    assert panel.status.textFormat() == Qt.TextFormat.PlainText
    assert text.startswith("Crop area (fraction) must be a range 0 < low <= high, got (0.9, 0.5)")
    assert "augment." not in text and "crop_scale" not in text
    # The engine keeps the config key for the command line.
    with pytest.raises(ValueError, match=r"augment\.crop_scale"):
        panel.augment_config().validate()
    hi.setValue(1.0)  # fixed: the preview comes back
    qtbot.waitUntil(lambda: "Training views" in panel.status.text(), timeout=5_000)


def test_the_preview_shows_other_or_chosen_images(panel, qtbot, folder_paths, monkeypatch):
    assert not panel.shuffle_button.isEnabled() and not panel.choose_button.isEnabled()
    panel.set_images(folder_paths)
    assert panel.shuffle_button.isEnabled() and panel.choose_button.isEnabled()
    first = list(panel.paths)
    assert len(first) == ap.PREVIEW_ROWS
    count = panel.preview_count
    shown(panel, qtbot, count)
    before = panel.cells[0][0].pixmap().toImage()
    count = panel.preview_count
    panel.shuffle_button.click()
    assert len(panel.paths) == ap.PREVIEW_ROWS and set(panel.paths) <= set(folder_paths)
    assert not set(panel.paths) & set(first)  # all new ones while the folder has enough
    shown(panel, qtbot, count)
    assert panel.cells[0][0].pixmap().toImage() != before

    picked = [folder_paths[5], folder_paths[11]]
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: (picked, ""))
    count = panel.preview_count
    panel.choose_button.click()
    assert panel.paths == picked
    shown(panel, qtbot, count)
    assert not panel.cells[0][0].pixmap().isNull() and panel.cells[2][0].pixmap().isNull()
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([], ""))  # cancelled
    panel.choose_button.click()
    assert panel.paths == picked


def test_presets_follow_the_image_size(panel):
    panel.set_image_size(32)
    panel.preset.setCurrentText(ap.PAPER)
    cfg = panel.augment_config()
    assert (cfg.blur_p, cfg.jitter_strength) == (0.0, 0.5)  # the paper's CIFAR setting
    panel.set_image_size(224)
    cfg = panel.augment_config()
    assert (cfg.blur_p, cfg.jitter_strength) == (0.5, 1.0) and panel.preset.currentText() == ap.PAPER
    panel.preset.setCurrentText(ap.MASKING_ONLY)
    panel.preset.setCurrentText(ap.PAPER)  # chosen at 224 px: the large-image values
    assert panel.augment_config().blur_p == 0.5

    # A suggestion for a grey folder at 28 px (the recipe's kind) keeps its own choices at another size.
    panel.set_image_size(28)
    suggested = AugmentConfig.for_image_size(28, crop_scale=(0.3, 1.0), grayscale_p=0.0)
    panel.set_suggested(suggested, "why")
    panel.set_image_size(96)
    cfg = panel.augment_config()
    assert panel.preset.currentText() == ap.SUGGESTED
    assert (cfg.blur_p, cfg.jitter_strength) == (0.5, 1.0)
    assert cfg.crop_scale == pytest.approx((0.3, 1.0)) and cfg.grayscale_p == 0.0

    # Custom values are the user's: a new size leaves them alone.
    panel.controls["flip_p"].setValue(0.3)
    assert panel.preset.currentText() == ap.CUSTOM
    custom = panel.augment_config()
    panel.set_image_size(32)
    assert panel.augment_config() == custom and panel.preset.currentText() == ap.CUSTOM

    # A run's settings are its own while it owns them.
    panel.preset.setCurrentText(ap.PAPER)
    panel.set_locked(True)
    locked = panel.augment_config()
    panel.set_image_size(224)
    assert panel.augment_config() == locked


def test_at_image_size_moves_only_the_size_defaults_still_at_their_old_value():
    cfg = AugmentConfig.for_image_size(32, crop_scale=(0.3, 1.0), jitter_strength=0.7)
    moved = ap.at_image_size(cfg, 32, 224)
    assert moved == dataclasses.replace(cfg, blur_p=0.5)  # the user's strength 0.7 stays


def test_the_controls_line_up(panel, qtbot):
    qtbot.waitExposed(panel)
    spins = [c for c in panel.controls.values() if isinstance(c, QDoubleSpinBox)]
    ranges = [c for c in panel.controls.values() if isinstance(c, tuple)]
    combos = [c for c in panel.controls.values() if isinstance(c, QComboBox)]

    def left(widget):
        return widget.mapTo(panel, widget.rect().topLeft()).x()

    first_column = [*spins, *(lo for lo, _ in ranges), *combos]
    assert len({left(w) for w in first_column}) == 1, [left(w) for w in first_column]
    assert len({left(hi) for _, hi in ranges}) == 1
    assert len({w.width() for w in [*spins, *(s for pair in ranges for s in pair)]}) == 1


def test_every_control_says_what_it_does(panel):
    for name, control in panel.controls.items():
        for widget in control if isinstance(control, tuple) else (control,):
            tip = widget.toolTip()
            assert len(tip) > 20 and tip.endswith("."), name
        assert panel.control_grid.labels[name].toolTip() == tip
    assert panel.preset.toolTip()
    for i in range(panel.preset.count()):
        assert panel.preset.itemData(i, Qt.ItemDataRole.ToolTipRole), panel.preset.itemText(i)
