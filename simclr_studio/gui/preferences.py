"""Preferences that persist between sessions (QSettings): where new runs go, the theme, and how
many thumbnails stay decoded in memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from simclr_studio.gui.theme import THEMES

DEFAULT_THUMBNAILS = 4000


def default_runs_root() -> Path:
    return Path.home() / "simclr-studio-runs"


@dataclass
class Preferences:
    runs_root: Path
    theme: str = "light"
    thumbnail_cache: int = DEFAULT_THUMBNAILS  # thumbnails kept decoded (≈ 40 KB each at 96 px)

    @classmethod
    def load(cls, settings: QSettings) -> Preferences:
        theme = str(settings.value("theme", "light"))
        try:
            cache = int(settings.value("thumbnail_cache", DEFAULT_THUMBNAILS))
        except (TypeError, ValueError):
            cache = DEFAULT_THUMBNAILS
        root = settings.value("runs_root", "") or str(default_runs_root())
        # The environment wins (scripted setups, tests): SIMCLR_STUDIO_RUNS=/scratch/runs
        root = os.environ.get("SIMCLR_STUDIO_RUNS", root)
        return cls(Path(str(root)).expanduser(), theme if theme in THEMES else "light", max(100, cache))

    def save(self, settings: QSettings) -> None:
        settings.setValue("runs_root", str(self.runs_root))
        settings.setValue("theme", self.theme)
        settings.setValue("thumbnail_cache", int(self.thumbnail_cache))
        settings.sync()


class PreferencesDialog(QDialog):
    def __init__(self, prefs: Preferences, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.setMinimumWidth(520)
        form = QFormLayout(self)
        self.runs_root = QLineEdit(str(prefs.runs_root))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.runs_root, 1)
        row.addWidget(browse)
        form.addRow("New runs go in", row)
        self.theme = QComboBox()
        self.theme.addItems(THEMES)
        self.theme.setCurrentText(prefs.theme)
        form.addRow("Theme", self.theme)
        self.thumbnails = QSpinBox()
        self.thumbnails.setRange(100, 200_000)
        self.thumbnails.setSingleStep(1000)
        self.thumbnails.setSuffix(" thumbnails")
        self.thumbnails.setValue(prefs.thumbnail_cache)
        self.thumbnails.setToolTip("Decoded thumbnails kept in memory (about 40 KB each); more scrolls back faster")
        form.addRow("Thumbnail cache", self.thumbnails)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for new runs", self.runs_root.text())
        if folder:
            self.runs_root.setText(folder)

    def preferences(self) -> Preferences:
        return Preferences(Path(self.runs_root.text().strip() or str(default_runs_root())).expanduser(),
                           self.theme.currentText(), self.thumbnails.value())
