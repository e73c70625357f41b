"""Export dialog: encoder weights (.pt / .safetensors / ONNX), embeddings (.npz / CSV with paths,
labels and map coordinates) and the map as PNG, written in the background; it lists what it wrote."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QToolButton,
    QVBoxLayout,
)

from simclr_studio.gui.workers import Worker

MAP_PNG_WIDTH = 1600


def save_qimage_atomic(image: QImage, path: Path) -> None:
    """QImage.save writes in place; a temporary file then a rename keeps a half-written PNG from existing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        if not image.save(tmp, "PNG"):
            raise OSError(f"could not write {path}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_exports(model, emb, map_name: str, map_image: QImage | None, folder: Path,
                  choices: dict[str, bool]) -> list[Path]:
    """Write every chosen export of ``model`` (a TrainedModel) and ``emb`` (its embeddings of a
    folder) into ``folder``; returns the files written. Runs on a worker thread."""
    from simclr_studio.export import export_weights, save_embeddings

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{model.run_dir.name}-{Path(model.checkpoint).stem}"
    written: list[Path] = []
    for fmt in ("pt", "safetensors", "onnx"):
        if choices.get(fmt):
            written += export_weights(model, fmt, folder / f"{stem}.{fmt}")
    coords = emb.maps.get(map_name) if emb is not None else None
    for fmt in ("npz", "csv"):
        if choices.get(fmt) and emb is not None:
            written.append(save_embeddings(folder / f"{stem}-embeddings.{fmt}", emb.features, emb.paths, emb.labels,
                                           emb.classes, coords))
    if choices.get("png") and map_image is not None:
        path = folder / f"{stem}-map-{map_name or 'pca'}.png"
        save_qimage_atomic(map_image, path)
        written.append(path)
    return written


class ExportDialog(QDialog):
    def __init__(self, explorer, default_folder: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.explorer = explorer
        # What is exported is what was shown when the dialog opened, even if the explorer moves on.
        self.model, self.emb, self.map_name = explorer.session.trained, explorer.session.embeddings, explorer.map_name
        self.map_snapshot = self.map_image() if self.emb is not None else None
        self.job: Worker | None = None
        self.written: list[Path] = []
        has_emb = self.emb is not None
        self.boxes = {
            "pt": QCheckBox("PyTorch state_dict (.pt)"),
            "safetensors": QCheckBox("safetensors (.safetensors)"),
            "onnx": QCheckBox("ONNX (.onnx)"),
            "npz": QCheckBox("Embeddings, NumPy (.npz)"),
            "csv": QCheckBox("Embeddings, CSV with paths, labels and map x/y"),
            "png": QCheckBox("Map as PNG"),
        }
        for key in ("pt", "npz", "png"):
            self.boxes[key].setChecked(True)
        for key in ("npz", "csv", "png"):
            self.boxes[key].setEnabled(has_emb)
        self.folder = QLineEdit(str(default_folder))
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        form = QFormLayout()
        weights = QVBoxLayout()
        for key in ("pt", "safetensors", "onnx"):
            weights.addWidget(self.boxes[key])
        form.addRow("Encoder weights", weights)
        data = QVBoxLayout()
        for key in ("npz", "csv", "png"):
            data.addWidget(self.boxes[key])
        form.addRow("Features", data)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        form.addRow("Folder", row)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setPlaceholderText("The files written will be listed here.")
        self.report.setMaximumHeight(140)
        self.status = QLabel()
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setObjectName("primary")
        self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.export_button.clicked.connect(self.export)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(self.report)
        layout.addWidget(self.buttons)
        self.resize(560, 420)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def choices(self) -> dict[str, bool]:
        return {k: b.isChecked() and b.isEnabled() for k, b in self.boxes.items()}

    def map_image(self) -> QImage | None:
        """The map rendered at a fixed width (on the GUI thread: scene rendering is not thread-safe)."""
        import pyqtgraph.exporters as exporters

        exporter = exporters.ImageExporter(self.explorer.map.plotItem)
        exporter.parameters()["width"] = MAP_PNG_WIDTH
        image = exporter.export(toBytes=True)
        return image if isinstance(image, QImage) and not image.isNull() else None

    def export(self) -> None:
        choices = self.choices()
        if not any(choices.values()):
            self.status.setText("Choose at least one thing to export.")
            return
        folder = Path(self.folder.text()).expanduser()
        if choices["onnx"] and importlib.util.find_spec("onnx") is None:
            self.status.setText("ONNX export needs the onnx extra: pip install 'simclr-studio[onnx]'")
            return
        image = self.map_snapshot if choices["png"] else None
        model, emb, map_name = self.model, self.emb, self.map_name
        self.export_button.setEnabled(False)
        self.status.setText("Exporting…")
        self.job = Worker(lambda progress, stop: write_exports(model, emb, map_name, image, folder, choices),
                          "export", self)
        self.job.finished.connect(self._done)
        self.job.failed.connect(self._failed)
        self.job.start()

    def _done(self, written: list[Path]) -> None:
        self.written = written
        self.export_button.setEnabled(True)
        self.status.setText(f"Wrote {len(written)} files to {self.folder.text()}")
        self.report.setPlainText("\n".join(str(p) for p in written))

    def _failed(self, message: str) -> None:
        self.export_button.setEnabled(True)
        self.status.setText(f"Export failed: {message}")
