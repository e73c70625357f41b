"""Export dialog: encoder weights (.pt / .safetensors / ONNX), embeddings (.npz / CSV with paths,
labels and map coordinates) and the map as PNG (titled with the run, checkpoint, map and date),
written in the background; it lists what it wrote. Weights need only a checkpoint: the features and
the map need the folder embedded in the Explore tab."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QRect, Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QFont, QImage, QPainter
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

from simclr_studio.gui.theme import canvas_colour
from simclr_studio.gui.workers import Worker

MAP_PNG_WIDTH = 1600
TITLE_HEIGHT = 64  # pixels above the map in the PNG for its title


@dataclass(frozen=True)
class ExportSource:
    """What is exported: a checkpoint of a run (loaded on the worker thread when not loaded yet) and,
    when the folder is embedded, its embeddings and the map as shown."""

    run_dir: Path
    checkpoint: Path
    trained: object | None = None  # TrainedModel of ``checkpoint``, if loaded
    embeddings: object | None = None  # Embeddings of the folder by ``checkpoint``
    map_name: str = ""
    map_image: QImage | None = None  # the map rendered on the GUI thread, titled


def map_title(run_dir: Path, checkpoint: Path, map_name: str, when: datetime | None = None) -> str:
    projection = {"tsne": "t-SNE", "pca": "PCA"}.get(map_name, map_name or "PCA")
    return f"{run_dir.name} · {checkpoint.name} · {projection} · {(when or datetime.now()):%Y-%m-%d %H:%M}"


def titled(image: QImage, title: str, dark: bool = False) -> QImage:
    """``image`` with ``title`` written in a band above it (what the PNG shows, once out of the app)."""
    out = QImage(image.width(), image.height() + TITLE_HEIGHT, QImage.Format.Format_ARGB32)
    out.fill(QColor(canvas_colour(dark)))
    painter = QPainter(out)
    painter.drawImage(0, TITLE_HEIGHT, image)
    font = QFont()
    font.setPixelSize(TITLE_HEIGHT // 2)
    painter.setFont(font)
    painter.setPen(QColor("#ebebeb" if dark else "#141414"))
    painter.drawText(QRect(16, 0, image.width() - 32, TITLE_HEIGHT),
                     Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, title)
    painter.end()
    return out


def save_qimage_atomic(image: QImage, path: Path) -> None:
    """QImage.save writes in place; ``atomic_write``'s temporary file then a rename keeps a half-written
    PNG from existing, and gives the file the usual permissions (not a temporary file's 0600)."""
    from simclr_studio.atomic import atomic_write

    def write(tmp: Path) -> None:
        if not image.save(str(tmp), "PNG"):
            raise OSError(f"could not write {path}")

    atomic_write(path, write)


def write_exports(source: ExportSource, folder: Path, choices: dict[str, bool]) -> list[Path]:
    """Write every chosen export of ``source`` into ``folder``; returns the files written. Runs on a
    worker thread."""
    from simclr_studio.export import export_weights, save_embeddings
    from simclr_studio.trained import load_trained

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{source.run_dir.name}-{source.checkpoint.stem}"
    emb, map_name, map_image = source.embeddings, source.map_name, source.map_image
    written: list[Path] = []
    weights = [fmt for fmt in ("pt", "safetensors", "onnx") if choices.get(fmt)]
    model = source.trained if source.trained is not None or not weights else load_trained(source.run_dir,
                                                                                             source.checkpoint)
    for fmt in weights:
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
    def __init__(self, source: ExportSource, default_folder: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Export {source.run_dir.name} · {source.checkpoint.name}")
        # What is exported is what was shown when the dialog opened, even if the explorer moves on.
        self.source = source
        self.job: Worker | None = None
        self.written: list[Path] = []
        self.written_to = Path(default_folder)
        has_emb = source.embeddings is not None
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
            self.boxes[key].setEnabled(has_emb and (key != "png" or source.map_image is not None))
            if not has_emb:
                self.boxes[key].setToolTip("Embed the folder in the Explore tab first")
        self.folder = QLineEdit(str(default_folder))
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        form = QFormLayout()
        checkpoint = QLabel(f"{source.checkpoint.name} of run {source.run_dir.name}")
        checkpoint.setToolTip(str(source.checkpoint))
        form.addRow("Checkpoint", checkpoint)
        weights = QVBoxLayout()
        for key in ("pt", "safetensors", "onnx"):
            weights.addWidget(self.boxes[key])
        form.addRow("Encoder weights", weights)
        data = QVBoxLayout()
        for key in ("npz", "csv", "png"):
            data.addWidget(self.boxes[key])
        if not has_emb:
            hint = QLabel("To export features and the map, embed the folder in the Explore tab.")
            hint.setObjectName("muted")
            hint.setWordWrap(True)
            data.addWidget(hint)
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
        self.open_button = self.buttons.addButton("Open folder", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button.setEnabled(False)  # until something is written
        self.open_button.clicked.connect(self.open_folder)
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

    def export(self) -> None:
        choices = self.choices()
        if not any(choices.values()):
            self.status.setText("Choose at least one thing to export.")
            return
        folder = Path(self.folder.text()).expanduser()
        if choices["onnx"] and importlib.util.find_spec("onnx") is None:
            self.status.setText("ONNX export needs the onnx extra: pip install 'simclr-studio[onnx]'")
            return
        source = self.source
        self.export_button.setEnabled(False)
        self.status.setText("Exporting…")
        self.job = Worker(lambda progress, stop: write_exports(source, folder, choices), "export", self)
        self.job.finished.connect(self._done)
        self.job.failed.connect(self._failed)
        self.job.start()

    def open_folder(self) -> None:
        """The export folder in the system's file manager."""
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.written_to)))

    def _done(self, written: list[Path]) -> None:
        self.written = written
        self.written_to = Path(self.folder.text()).expanduser()
        self.open_button.setEnabled(bool(written))
        self.export_button.setEnabled(True)
        self.status.setText(f"Wrote {len(written)} files to {self.folder.text()}")
        self.report.setPlainText("\n".join(str(p) for p in written))

    def _failed(self, message: str) -> None:
        self.export_button.setEnabled(True)
        self.status.setText(f"Export failed: {message}")
