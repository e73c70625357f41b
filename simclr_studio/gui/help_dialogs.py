"""Help ▸ Keyboard Shortcuts and Help ▸ User Guide (the README, rendered in a window)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QTextBrowser, QVBoxLayout

# (where, keys, what): one table, shown as the Help menu's list. Standard keys are written as this
# platform names them (Ctrl on Linux and Windows, ⌘ on macOS).
SHORTCUTS: list[tuple[str, QKeySequence | str, str]] = [
    ("Anywhere", QKeySequence(QKeySequence.StandardKey.Open), "open a folder of images"),
    ("Anywhere", QKeySequence("Ctrl+R"), "open a run folder"),
    ("Anywhere", QKeySequence("Ctrl+E"), "export a checkpoint's weights, features and map"),
    ("Anywhere", QKeySequence("Ctrl+,"), "preferences"),
    ("Anywhere", QKeySequence(QKeySequence.StandardKey.Quit), "quit (a training run saves a checkpoint first)"),
    ("Explore", QKeySequence(QKeySequence.StandardKey.Back), "back to what was shown before"),
    ("Explore", QKeySequence(QKeySequence.StandardKey.Forward), "forward again"),
    ("Explore", QKeySequence(QKeySequence.StandardKey.Paste), "search with the image (or file) on the clipboard"),
    ("Explore map", "Click", "a point: its image and its nearest neighbours"),
    ("Explore map", "Shift+drag", "select the points in a rectangle"),
    ("Explore map", "Ctrl+drag", "select the points inside a lasso"),
    ("Explore map", "Drag / wheel", "pan / zoom"),
]


def shortcut_text(keys: QKeySequence | str) -> str:
    return keys.toString(QKeySequence.SequenceFormat.NativeText) if isinstance(keys, QKeySequence) else keys


def shortcuts_html() -> str:
    rows = "".join(f"<tr><td>{where}</td><td><b>{shortcut_text(keys)}</b></td><td>{what}</td></tr>"
                   for where, keys, what in SHORTCUTS)
    head = "<tr><th align=left>Where</th><th align=left>Keys</th><th align=left>Does</th></tr>"
    return f"<table cellspacing=6>{head}{rows}</table>"


class ShortcutsDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard Shortcuts")
        label = QLabel(shortcuts_html())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(label)
        layout.addWidget(buttons)


def about_html(device: tuple[str, int] | None) -> str:
    """Help ▸ About: the version, the training device chosen in the Train tab (``device``: its
    (name, process count) choice) and the versions of what the app runs on."""
    import platform

    import PySide6
    import sklearn
    import torch

    from simclr_studio import __version__
    from simclr_studio.device import available_devices, describe, resolve_device

    in_use = describe(resolve_device(device[0])) if device else describe(resolve_device("auto"))
    if device and device[1] > 1:
        in_use = f"{device[1]} GPUs (torchrun)"
    return (f"<h3>SIMCLR Studio {__version__}</h3><p>SimCLR self-supervised training on your own images.</p>"
            f"<p><b>Training device:</b> {in_use}<br><b>Devices found:</b> {', '.join(available_devices())}</p>"
            f"<p>PyTorch {torch.__version__} · Qt {PySide6.QtCore.qVersion()} (PySide6 {PySide6.__version__}) · "
            f"scikit-learn {sklearn.__version__} · Python {platform.python_version()}</p>")


def readme_text() -> str:
    """The README: the checkout's file beside the package, else the installed package's description
    (pip stores the README there). Empty when neither is found."""
    beside = Path(__file__).resolve().parents[2] / "README.md"
    if beside.is_file():
        return beside.read_text(encoding="utf-8")
    try:
        from importlib.metadata import metadata

        return metadata("simclr-studio").get_payload() or ""  # type: ignore[attr-defined]
    except Exception:  # not installed as a distribution (e.g. a frozen bundle without metadata)
        return ""


class UserGuide(QDialog):
    """The README in a window, headings, tables and code as Markdown renders them."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("SIMCLR Studio — User Guide")
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        text = readme_text()
        self.browser.setMarkdown(text or "The README was not found with this installation.")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        self.resize(900, 700)
