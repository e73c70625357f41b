import subprocess
import sys


def _qt_free_modules() -> list[str]:
    """Every module of the package but the app's and the launcher (found, not a hand-kept list)."""
    import pkgutil

    import simclr_studio

    names = [m.name for m in pkgutil.walk_packages(simclr_studio.__path__, "simclr_studio.")]
    return [n for n in names if not n.startswith(("simclr_studio.gui", "simclr_studio.__main__",
                                                  "simclr_studio.resources"))]


def test_engine_sessions_and_command_line_never_import_qt():
    """Compute stays apart from the interface: importing every module below the app loads no Qt
    (import-linter checks the static imports; this also catches imports made at run time)."""
    modules = _qt_free_modules()
    assert {"simclr_studio.train", "simclr_studio.cli", "simclr_studio.session.train"} <= set(modules)
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
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
