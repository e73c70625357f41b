import subprocess
import sys

ENGINE = ["config", "data", "augment", "model", "loss", "optim", "train", "events", "checkpoint", "evaluate",
          "export", "trained", "run_folder", "atomic", "training_link", "recipe", "budget", "cli", "history", "device", "paths", "fashion_mnist"]


def test_engine_never_imports_qt():
    """Compute stays apart from the interface: importing (and running) the engine loads no Qt."""
    code = ("import sys\n" + "".join(f"import simclr_studio.{m}\n" for m in ENGINE)
            + "from simclr_studio.cli import main\n"
            + "bad = sorted(m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'shiboken')))\n"
            + "print(bad)\nsys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_qt_binding_keeps_none_alive():
    """PySide6 6.12.0's processEvents() dropped a reference to None on every call, which crashed
    Python 3.11 after some ten thousand calls; pyproject excludes it. This keeps that honest."""
    code = ("import os, sys\nos.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
            "from PySide6.QtWidgets import QApplication\napp = QApplication([])\n"
            "before = sys.getrefcount(None)\nfor _ in range(20000):\n    app.processEvents()\n"
            "sys.exit(0 if sys.getrefcount(None) - before > -100 else 3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"Qt binding leaks references to None (exit {result.returncode})"
