"""The Augment tab: a control for every augmentation parameter and a live preview of view pairs.

The preview calls ``augment.preview_views`` on images decoded exactly as training decodes them,
so what you see is what training will use.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.augment import preview_views
from simclr_studio.config import AugmentConfig
from simclr_studio.data import IMAGE_EXTENSIONS, decode_image
from simclr_studio.gui.augment_controls import AugmentControls, describe_error
from simclr_studio.gui.thumbnails import array_to_qimage
from simclr_studio.gui.workers import Throttle, Workers, plain

PAPER = "Paper defaults for this image size"
MASKING_ONLY = "Masking only"
# Each preset is made for the current image size (the paper's colour strength and blur depend on it).
PRESETS = {
    PAPER: AugmentConfig.for_image_size,
    MASKING_ONLY: lambda size: AugmentConfig.masking_only(),
}
SUGGESTED = "Suggested for this folder"  # the recipe's values, offered once a folder is open
CUSTOM = "Custom"
SIZED = (PAPER, SUGGESTED)  # presets made again when the image size changes
PRESET_TIPS = {
    PAPER: "The SimCLR paper's augmentations; at 64 px and below colour strength 0.5 and no blur "
           "(the paper's CIFAR setting), above that strength 1.0 and blur half the time.",
    MASKING_ONLY: "Only the mask box and the blend, to study masking.",
    CUSTOM: "The controls' own values.",
}
MASKING_ONLY_NOTE = ("Masking only learns much weaker features than the full SimCLR set (crops, colour, blur): "
                     "it is here to study masking. The mask box and the blend are best used on top of a full "
                     "preset.")
PREVIEW_ROWS = 4
CELL = 120


def at_image_size(cfg: AugmentConfig, old: int, new: int) -> AugmentConfig:
    """``cfg`` made for ``old`` px images, moved to ``new`` px: every value the paper's defaults
    change with the size (colour strength, blur) follows them where ``cfg`` kept the old default."""
    before, after = AugmentConfig.for_image_size(old), AugmentConfig.for_image_size(new)
    changes = {f.name: getattr(after, f.name) for f in dataclasses.fields(cfg)
               if getattr(before, f.name) != getattr(after, f.name) and getattr(cfg, f.name) == getattr(before, f.name)}
    return dataclasses.replace(cfg, **changes)


def matching_preset(cfg: AugmentConfig, image_size: int, suggested: AugmentConfig | None = None) -> str:
    """The preset whose values the controls show (to the spin boxes' precision), else "Custom"."""
    def close(a, b) -> bool:
        if isinstance(a, tuple):
            return all(close(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, float):
            return abs(a - b) < 1e-3
        return a == b

    presets = {SUGGESTED: lambda size: suggested} if suggested is not None else {}
    for name, make in {**presets, **PRESETS}.items():
        preset = make(image_size)
        if all(close(getattr(preset, f.name), getattr(cfg, f.name)) for f in dataclasses.fields(cfg)):
            return name
    return CUSTOM


class AugmentPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.folder_paths: list[str] = []  # the open folder's images, to pick previews from
        self.paths: list[str] = []  # the images previewed
        self.image_size = 32
        self.seed = 0
        self.shuffles = 0  # times "Other images" was pressed: its draws are reproducible
        self._updating = False
        self.previews = Workers(self, QThreadPool.globalInstance())  # the newest preview wins
        self._schedule = Throttle(self.refresh_preview, 80, debounce=True, parent=self)  # once the controls rest
        self._decoded: dict[tuple[str, int], np.ndarray] = {}  # images decoded for the preview, kept
        self.preview_count = 0  # previews shown so far
        self.suggested: AugmentConfig | None = None  # the recipe's values for the open folder, at image_size

        # ---- controls ----
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS) + [CUSTOM])
        for name, tip in PRESET_TIPS.items():
            self.preset.setItemData(self.preset.findText(name), tip, Qt.ItemDataRole.ToolTipRole)
        self.preset.setToolTip("Sets every control at once; the paper's and the suggested values follow the "
                               "image size set on the Train tab.")
        self.preset.currentTextChanged.connect(self._apply_preset)
        controls = QWidget()
        controls_layout = QVBoxLayout(controls)
        preset_form = QFormLayout()
        preset_form.addRow("Preset", self.preset)
        controls_layout.addLayout(preset_form)
        # Shown, not only a tool tip: users pick this preset expecting the product's best results.
        self.masking_note = QLabel(MASKING_ONLY_NOTE)
        self.masking_note.setObjectName("muted")
        self.masking_note.setWordWrap(True)
        self.masking_note.hide()
        controls_layout.addWidget(self.masking_note)
        self.control_grid = AugmentControls()
        self.control_grid.changed.connect(self._on_control)
        self.controls = self.control_grid.controls
        controls_layout.addWidget(self.control_grid)
        controls_layout.addStretch()
        self.controls_widget = controls
        self.locked_note = QLabel("These settings belong to the run in progress or opened to resume; "
                                  "start a new run to change them.")
        self.locked_note.setWordWrap(True)
        self.locked_note.setObjectName("muted")
        self.locked_note.hide()
        controls_layout.insertWidget(0, self.locked_note)
        scroll = QScrollArea()
        scroll.setWidget(controls)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(380)
        scroll.setMaximumWidth(460)

        # ---- preview ----
        self.reroll = QPushButton("Re-roll views")
        self.reroll.setToolTip("Draws new random views of the same images.")
        self.reroll.clicked.connect(self.reroll_views)
        self.shuffle_button = QPushButton("Other images")
        self.shuffle_button.setToolTip("Previews other images of the folder, drawn at random.")
        self.shuffle_button.clicked.connect(self.shuffle_images)
        self.choose_button = QPushButton("Choose images…")
        self.choose_button.setToolTip(f"Pick up to {PREVIEW_ROWS} images to preview.")
        self.choose_button.clicked.connect(self.choose_images)
        for button in (self.shuffle_button, self.choose_button):
            button.setEnabled(False)  # until a folder is open
        self.status = QLabel("Open a folder to preview its images.")
        self.status.setObjectName("muted")
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # messages may hold "<": never read as HTML
        self.status.setWordWrap(True)
        grid_widget = QWidget()
        self.grid = QGridLayout(grid_widget)
        self.grid.setSpacing(8)
        for col, title in enumerate(("Original", "View 1", "View 2")):
            header = QLabel(f"<b>{title}</b>")
            header.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.grid.addWidget(header, 0, col)
        self.cells: list[list[QLabel]] = []
        for row in range(PREVIEW_ROWS):
            cells = []
            for col in range(3):
                cell = QLabel()
                cell.setFixedSize(CELL, CELL)
                cell.setAlignment(Qt.AlignmentFlag.AlignCenter)
                cell.setObjectName("cell")
                self.grid.addWidget(cell, row + 1, col)
                cells.append(cell)
            self.cells.append(cells)
        top = QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.shuffle_button)
        top.addWidget(self.choose_button)
        top.addWidget(self.reroll)
        preview = QWidget()
        preview_layout = QVBoxLayout(preview)
        preview_layout.addLayout(top)
        preview_layout.addWidget(grid_widget, 0, Qt.AlignmentFlag.AlignHCenter)
        preview_layout.addStretch()
        preview.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

        layout = QHBoxLayout(self)
        layout.addWidget(scroll)
        layout.addWidget(preview, 1)
        self.set_augment_config(AugmentConfig.for_image_size(self.image_size))

    def set_locked(self, locked: bool) -> None:
        """While a run owns the settings, the controls are read-only (the preview still works)."""
        for widget in self.control_grid.widgets():
            widget.setEnabled(not locked)
        self.preset.setEnabled(not locked)
        self.locked_note.setVisible(locked)

    # ---- config <-> controls ----
    def augment_config(self) -> AugmentConfig:
        return self.control_grid.config()

    def set_augment_config(self, cfg: AugmentConfig) -> None:
        self._updating = True
        try:
            self.control_grid.set_config(cfg)
            self._show_matching_preset()
        finally:
            self._updating = False
        self._schedule()

    def set_suggested(self, cfg: AugmentConfig, reason: str = "") -> None:
        """The recipe's augmentations for a newly opened folder (made for the current image size):
        offered as a preset and applied."""
        self.suggested = dataclasses.replace(cfg)
        if self.preset.findText(SUGGESTED) < 0:
            self.preset.blockSignals(True)
            self.preset.insertItem(0, SUGGESTED)
            self.preset.blockSignals(False)
        self.preset.setItemData(0, f"Suggested: {reason}" if reason else None, Qt.ItemDataRole.ToolTipRole)
        self.set_augment_config(cfg)

    def _show_matching_preset(self) -> None:
        self.preset.blockSignals(True)
        self.preset.setCurrentText(matching_preset(self.augment_config(), self.image_size, self.suggested))
        self.preset.blockSignals(False)
        self.masking_note.setVisible(self.preset.currentText() == MASKING_ONLY)

    def _apply_preset(self, name: str) -> None:
        if not self._updating and (name in PRESETS or (name == SUGGESTED and self.suggested is not None)):
            self.set_augment_config(self.suggested if name == SUGGESTED else PRESETS[name](self.image_size))
        self.masking_note.setVisible(self.preset.currentText() == MASKING_ONLY)

    def _on_control(self, *_):
        if self._updating:
            return
        self._show_matching_preset()
        self._schedule()

    # ---- preview ----
    def set_images(self, paths: list[str]) -> None:
        """The folder's images: preview a few spread over it (so several classes show)."""
        self.folder_paths = list(paths)
        if len(paths) > PREVIEW_ROWS:
            picks = np.linspace(0, len(paths) - 1, PREVIEW_ROWS).round().astype(int)
            paths = [paths[i] for i in picks]
        for button in (self.shuffle_button, self.choose_button):
            button.setEnabled(bool(self.folder_paths))
        self.set_preview_paths(paths)

    def set_preview_paths(self, paths: list[str]) -> None:
        self.paths = list(paths[:PREVIEW_ROWS])
        self._schedule()

    def shuffle_images(self) -> None:
        """Preview other images of the folder, drawn at random (none of the ones shown while there are others)."""
        self.shuffles += 1
        rng = np.random.default_rng(self.shuffles)
        others = [p for p in self.folder_paths if p not in self.paths]
        pool = others if len(others) >= min(PREVIEW_ROWS, len(self.folder_paths)) else self.folder_paths
        picks = rng.choice(len(pool), size=min(PREVIEW_ROWS, len(pool)), replace=False)
        self.set_preview_paths([pool[i] for i in sorted(picks)])

    def choose_images(self) -> None:
        start = os.path.dirname(self.paths[0]) if self.paths else ""
        extensions = " ".join(f"*{ext}" for ext in sorted(IMAGE_EXTENSIONS))
        paths, _ = QFileDialog.getOpenFileNames(self, f"Preview up to {PREVIEW_ROWS} images", start,
                                                f"Images ({extensions})")
        if paths:
            self.set_preview_paths(paths)

    def set_image_size(self, size: int) -> None:
        """The Train tab's image size: the preview follows it, and so do the size-dependent presets
        (the paper's and the suggested values) while one of them is chosen and nothing is locked."""
        if size == self.image_size:
            return
        old, self.image_size = self.image_size, size
        if self.suggested is not None:
            self.suggested = at_image_size(self.suggested, old, size)
        if self.preset.currentText() in SIZED and self.preset.isEnabled():
            self._apply_preset(self.preset.currentText())
        else:
            self._show_matching_preset()
        self._schedule()

    def reroll_views(self) -> None:
        self.seed += 1
        self.refresh_preview()

    def refresh_preview(self) -> None:
        try:
            cfg = self.augment_config()
            cfg.validate()
        except ValueError as exc:
            # Red, as plain text; the message names the controls as they are labelled.
            self.status.setStyleSheet("color: #c0392b")
            self.status.setText(describe_error(str(exc)))
            return
        self.status.setStyleSheet("")
        if not self.paths:
            self.status.setText("Open a folder to preview its images.")
            return
        paths, size, seed, decoded = list(self.paths), self.image_size, self.seed, dict(self._decoded)

        def work():
            images = [decoded[(p, size)] if (p, size) in decoded else decode_image(p, size) for p in paths]
            return {(p, size): image for p, image in zip(paths, images, strict=True)}, \
                preview_views(images, cfg, size, seed=seed)

        self.status.setText(f"Training views at {size}×{size} px, seed {seed}")
        self.previews.start("preview", plain(work), on_result=self._show_preview,
                            on_error=lambda message: self.status.setText(f"Preview failed: {message}"))

    def _show_preview(self, result) -> None:
        decoded, rows = result
        self._decoded.update(decoded)
        for r, triple in enumerate(rows):
            for c, array in enumerate(triple):
                pixmap = QPixmap.fromImage(array_to_qimage(array))
                mode = (Qt.TransformationMode.FastTransformation if array.shape[0] * 2 <= CELL
                        else Qt.TransformationMode.SmoothTransformation)  # crisp pixels for tiny images
                self.cells[r][c].setPixmap(pixmap.scaled(CELL, CELL, Qt.AspectRatioMode.KeepAspectRatio, mode))
        for r in range(len(rows), PREVIEW_ROWS):
            for c in range(3):
                self.cells[r][c].clear()
        self.preview_count += 1
