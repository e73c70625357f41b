"""The Augment tab: a control for every augmentation parameter and a live preview of view pairs.

The preview calls ``augment.preview_views`` on images decoded exactly as training decodes them,
so what you see is what training will use.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PySide6.QtCore import Qt, QThreadPool
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from simclr_studio.augment import preview_views
from simclr_studio.config import BLEND_SOURCES, MASK_FILLS, AugmentConfig
from simclr_studio.data import decode_image
from simclr_studio.gui.thumbnails import array_to_qimage
from simclr_studio.gui.workers import Throttle, Workers, plain

PRESETS = {
    "Paper defaults, small images (≤ 64 px)": lambda: AugmentConfig.for_image_size(32),
    "Paper defaults, large images": lambda: AugmentConfig.for_image_size(224),
    "Masking only": AugmentConfig.masking_only,
}
SUGGESTED = "Suggested for this folder"  # the recipe's values, offered once a folder is open
CUSTOM = "Custom"
MASKING_ONLY_NOTE = ("Masking only learns much weaker features than the full SimCLR set (crops, colour, blur): "
                     "it is here to study masking. The mask box and the blend are best used on top of a full "
                     "preset.")
PREVIEW_ROWS = 4
CELL = 120

# (field, label, kind, low, high, step); kind: "p" probability, "v" value, "range" a [low, high] pair.
GROUPS = [
    ("Crop and flip", [("crop_scale", "Crop area (fraction)", "range", 0.01, 1.0, 0.01),
                       ("crop_ratio", "Crop aspect ratio", "range", 0.1, 10.0, 0.05),
                       ("flip_p", "Horizontal flip", "p", 0, 1, 0.05)]),
    ("Colour", [("jitter_p", "Colour jitter", "p", 0, 1, 0.05),
                ("jitter_strength", "Jitter strength s", "v", 0.0, 2.0, 0.05),
                ("grayscale_p", "Grayscale", "p", 0, 1, 0.05)]),
    ("Blur", [("blur_p", "Gaussian blur", "p", 0, 1, 0.05),
              ("blur_sigma", "Blur σ (pixels)", "range", 0.01, 10.0, 0.1)]),
    ("Mask box", [("mask_p", "Mask box", "p", 0, 1, 0.05),
                  ("mask_scale", "Box area (fraction)", "range", 0.001, 1.0, 0.01),
                  ("mask_ratio", "Box aspect ratio", "range", 0.1, 10.0, 0.1),
                  ("mask_fill", "Fill", "choice", MASK_FILLS, None, None)]),
    ("Blend  X' = (1-α)·X + α·M", [("blend_p", "Blend", "p", 0, 1, 0.05),
                                    ("blend_alpha", "α", "range", 0.0, 1.0, 0.05),
                                    ("blend_source", "Mask image M", "choice", BLEND_SOURCES, None, None)]),
]


def matching_preset(cfg: AugmentConfig, suggested: AugmentConfig | None = None) -> str:
    """The preset whose values the controls show (to the spin boxes' precision), else "Custom"."""
    def close(a, b) -> bool:
        if isinstance(a, tuple):
            return all(close(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, float):
            return abs(a - b) < 1e-3
        return a == b

    presets = {SUGGESTED: lambda: suggested} if suggested is not None else {}
    for name, make in {**presets, **PRESETS}.items():
        preset = make()
        if all(close(getattr(preset, f.name), getattr(cfg, f.name)) for f in dataclasses.fields(cfg)):
            return name
    return CUSTOM


def _spin(low, high, step, decimals=3) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(decimals)
    box.setKeyboardTracking(False)  # update when typing is done, not on every digit
    return box


class AugmentPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.paths: list[str] = []
        self.image_size = 32
        self.seed = 0
        self._updating = False
        self.controls: dict[str, object] = {}
        self.previews = Workers(self, QThreadPool.globalInstance())  # the newest preview wins
        self._schedule = Throttle(self.refresh_preview, 80, debounce=True, parent=self)  # once the controls rest
        self._decoded: dict[tuple[str, int], np.ndarray] = {}  # images decoded for the preview, kept
        self.preview_count = 0  # previews shown so far
        self.suggested: AugmentConfig | None = None  # the recipe's values for the open folder

        # ---- controls ----
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS) + [CUSTOM])
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
        for title, specs in GROUPS:
            box = QGroupBox(title)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for name, label, kind, low, high, step in specs:
                if kind == "range":
                    lo, hi = _spin(low, high, step), _spin(low, high, step)
                    row = QHBoxLayout()
                    row.addWidget(lo)
                    row.addWidget(QLabel("to"))
                    row.addWidget(hi)
                    lo.valueChanged.connect(self._on_control)
                    hi.valueChanged.connect(self._on_control)
                    self.controls[name] = (lo, hi)
                    form.addRow(label, row)
                elif kind == "choice":
                    combo = QComboBox()
                    combo.addItems(list(low))
                    combo.currentTextChanged.connect(self._on_control)
                    self.controls[name] = combo
                    form.addRow(label, combo)
                else:
                    spin = _spin(low, high, step, 2)
                    if kind == "p":
                        spin.setSuffix("  probability")
                    spin.valueChanged.connect(self._on_control)
                    self.controls[name] = spin
                    form.addRow(label, spin)
            controls_layout.addWidget(box)
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
        self.reroll.clicked.connect(self.reroll_views)
        self.status = QLabel("Open a folder to preview its images.")
        self.status.setObjectName("muted")
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
        self.set_augment_config(AugmentConfig.for_image_size(32))

    def set_locked(self, locked: bool) -> None:
        """While a run owns the settings, the controls are read-only (the preview still works)."""
        for control in self.controls.values():
            for widget in control if isinstance(control, tuple) else (control,):
                widget.setEnabled(not locked)
        self.preset.setEnabled(not locked)
        self.locked_note.setVisible(locked)

    # ---- config <-> controls ----
    def augment_config(self) -> AugmentConfig:
        values = {}
        for name, control in self.controls.items():
            if isinstance(control, tuple):
                values[name] = (control[0].value(), control[1].value())
            elif isinstance(control, QComboBox):
                values[name] = control.currentText()
            else:
                values[name] = control.value()
        return AugmentConfig(**values)

    def set_augment_config(self, cfg: AugmentConfig) -> None:
        self._updating = True
        try:
            for name, control in self.controls.items():
                value = getattr(cfg, name)
                if isinstance(control, tuple):
                    control[0].setValue(value[0])
                    control[1].setValue(value[1])
                elif isinstance(control, QComboBox):
                    control.setCurrentText(value)
                else:
                    control.setValue(value)
            self._show_matching_preset()
        finally:
            self._updating = False
        self._schedule()

    def set_suggested(self, cfg: AugmentConfig, reason: str = "") -> None:
        """The recipe's augmentations for a newly opened folder: offered as a preset and applied."""
        self.suggested = dataclasses.replace(cfg)
        if self.preset.findText(SUGGESTED) < 0:
            self.preset.blockSignals(True)
            self.preset.insertItem(0, SUGGESTED)
            self.preset.blockSignals(False)
        self.preset.setItemData(0, f"Suggested: {reason}" if reason else None, Qt.ItemDataRole.ToolTipRole)
        self.set_augment_config(cfg)

    def _show_matching_preset(self) -> None:
        self.preset.blockSignals(True)
        self.preset.setCurrentText(matching_preset(self.augment_config(), self.suggested))
        self.preset.blockSignals(False)
        self.masking_note.setVisible(self.preset.currentText() == "Masking only")

    def _apply_preset(self, name: str) -> None:
        if not self._updating and (name in PRESETS or (name == SUGGESTED and self.suggested is not None)):
            self.set_augment_config(self.suggested if name == SUGGESTED else PRESETS[name]())
        self.masking_note.setVisible(self.preset.currentText() == "Masking only")

    def _on_control(self, *_):
        if self._updating:
            return
        self._show_matching_preset()
        self._schedule()

    # ---- preview ----
    def set_images(self, paths: list[str]) -> None:
        """Preview a few images spread over the folder (so several classes show)."""
        if len(paths) > PREVIEW_ROWS:
            picks = np.linspace(0, len(paths) - 1, PREVIEW_ROWS).round().astype(int)
            paths = [paths[i] for i in picks]
        self.paths = list(paths)
        self._schedule()

    def set_image_size(self, size: int) -> None:
        if size != self.image_size:
            self.image_size = size
            self._schedule()

    def reroll_views(self) -> None:
        self.seed += 1
        self.refresh_preview()

    def refresh_preview(self) -> None:
        if not self.paths:
            return
        try:
            cfg = self.augment_config()
            cfg.validate()
        except ValueError as exc:
            self.status.setText(f"<span style='color:#c0392b'>{exc}</span>")
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
