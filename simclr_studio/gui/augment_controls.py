"""The Augment tab's controls: one per ``AugmentConfig`` field, in aligned grids, each with a tool tip.

Validation messages name config keys (``augment.crop_scale``), the wording of the command line;
``describe_error`` puts the controls' labels in their place for the app.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QGridLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from simclr_studio.config import BLEND_SOURCES, MASK_FILLS, AugmentConfig

# (field, label, kind, low, high, step, tool tip); kind: "p" probability, "v" value, "range" a
# [low, high] pair, "choice" one of ``low``.
GROUPS = [
    ("Crop and flip", [
        ("crop_scale", "Crop area (fraction)", "range", 0.01, 1.0, 0.01,
         "Each view is a random crop covering this fraction of the image's area, resized to the image size. "
         "Smaller crops make the views of one image share less."),
        ("crop_ratio", "Crop aspect ratio", "range", 0.1, 10.0, 0.05,
         "The crop's width-to-height ratio is drawn between these two values."),
        ("flip_p", "Flip probability", "p", 0, 1, 0.05,
         "The chance that a view is mirrored left to right."),
    ]),
    ("Colour", [
        ("jitter_p", "Jitter probability", "p", 0, 1, 0.05,
         "The chance that a view's brightness, contrast, saturation and hue are changed, in a random order."),
        ("jitter_strength", "Jitter strength s", "v", 0.0, 2.0, 0.05,
         "How strong the colour jitter is: brightness, contrast and saturation vary by up to 0.8·s, "
         "hue by up to 0.2·s."),
        ("grayscale_p", "Grayscale probability", "p", 0, 1, 0.05,
         "The chance that a view is turned grey, so that colour alone cannot tell the images apart."),
    ]),
    ("Blur", [
        ("blur_p", "Blur probability", "p", 0, 1, 0.05,
         "The chance that a view is blurred with a Gaussian kernel about a tenth of the image's side."),
        ("blur_sigma", "Blur σ (pixels)", "range", 0.01, 10.0, 0.1,
         "The blur's standard deviation, in pixels, is drawn between these two values."),
    ]),
    ("Mask box", [
        ("mask_p", "Box probability", "p", 0, 1, 0.05,
         "The chance that a random box of the view is erased. Off by default: it lowered accuracy in our trials."),
        ("mask_scale", "Box area (fraction)", "range", 0.001, 1.0, 0.01,
         "The erased box covers this fraction of the view's area, drawn between these two values."),
        ("mask_ratio", "Box aspect ratio", "range", 0.1, 10.0, 0.1,
         "The box's width-to-height ratio is drawn between these two values."),
        ("mask_fill", "Fill", "choice", MASK_FILLS, None, None,
         "What fills the erased box: zero (black), uniform noise, or the image's mean colour."),
    ]),
    ("Blend  X' = (1-α)·X + α·M", [
        ("blend_p", "Blend probability", "p", 0, 1, 0.05,
         "The chance that a view is blended with a mask image M: X' = (1-α)·X + α·M."),
        ("blend_alpha", "α", "range", 0.0, 1.0, 0.05,
         "The weight α of the mask image, drawn between these two values; 0 leaves the view as it is."),
        ("blend_source", "Mask image M", "choice", BLEND_SOURCES, None, None,
         "What M is: uniform noise, or another image of the batch (without its own mask box)."),
    ]),
]
LABELS = {spec[0]: spec[1] for _, specs in GROUPS for spec in specs}


def describe_error(message: str) -> str:
    """A validation message with each ``augment.<field>`` replaced by the label of its control."""
    return re.sub(r"\baugment\.(\w+)", lambda m: LABELS.get(m.group(1), m.group(0)), message)


def _spin(low, high, step, decimals) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(decimals)
    box.setKeyboardTracking(False)  # update when typing is done, not on every digit
    return box


class AugmentControls(QWidget):
    """The controls, grouped; ``changed`` fires when the user changes any of them."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.controls: dict[str, object] = {}
        self.labels: dict[str, QLabel] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        grids, spins = [], []
        for title, specs in GROUPS:
            box = QGroupBox(title)
            grid = QGridLayout(box)  # label | low | "to" | high: one column per part, in every group
            grids.append(grid)
            for row, (name, label, kind, low, high, step, tip) in enumerate(specs):
                text = QLabel(label)
                text.setToolTip(tip)
                self.labels[name] = text
                grid.addWidget(text, row, 0)
                if kind == "range":
                    lo, hi = _spin(low, high, step, 3), _spin(low, high, step, 3)
                    grid.addWidget(lo, row, 1)
                    grid.addWidget(QLabel("to"), row, 2)
                    grid.addWidget(hi, row, 3)
                    widgets: tuple = (lo, hi)
                    spins += [lo, hi]
                elif kind == "choice":
                    combo = QComboBox()
                    combo.addItems(list(low))
                    combo.currentTextChanged.connect(self.changed)
                    grid.addWidget(combo, row, 1, 1, 3)
                    widgets = (combo,)
                else:
                    spin = _spin(low, high, step, 2)
                    grid.addWidget(spin, row, 1)
                    widgets = (spin,)
                    spins.append(spin)
                for widget in widgets:
                    widget.setToolTip(tip)
                    if isinstance(widget, QDoubleSpinBox):
                        widget.valueChanged.connect(self.changed)
                self.controls[name] = widgets if len(widgets) > 1 else widgets[0]
            layout.addWidget(box)
        # Each group box lays out on its own: the same column widths everywhere line the boxes up.
        spin_width = max(spin.sizeHint().width() for spin in spins)
        for spin in spins:
            spin.setFixedWidth(spin_width)
        label_width = max(label.sizeHint().width() for label in self.labels.values())
        for grid in grids:
            grid.setColumnMinimumWidth(0, label_width)
            grid.setColumnStretch(4, 1)  # spare width goes to the right, not between the columns

    def widgets(self):
        for control in self.controls.values():
            yield from control if isinstance(control, tuple) else (control,)

    def config(self) -> AugmentConfig:
        values = {}
        for name, control in self.controls.items():
            if isinstance(control, tuple):
                values[name] = (control[0].value(), control[1].value())
            elif isinstance(control, QComboBox):
                values[name] = control.currentText()
            else:
                values[name] = control.value()
        return AugmentConfig(**values)

    def set_config(self, cfg: AugmentConfig) -> None:
        """Show ``cfg`` without firing ``changed``."""
        self.blockSignals(True)
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
        finally:
            self.blockSignals(False)
