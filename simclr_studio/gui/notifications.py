"""Desktop notifications: a message from the system tray when a run finishes or fails, so the user can
work elsewhere while it trains. Where the desktop has no system tray, nothing happens.

The tray icon is made on the first notification (none sits in the tray before), and kept.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QApplication, QStyle, QSystemTrayIcon

from simclr_studio.history import RunHistory

SHOW_MS = 10_000
_tray: QSystemTrayIcon | None = None


def notify(title: str, message: str, error: bool = False) -> bool:
    """Show a desktop notification; False where there is no system tray (nothing shown)."""
    tray = _tray_icon()
    if tray is None:
        return False
    icon = QSystemTrayIcon.MessageIcon.Critical if error else QSystemTrayIcon.MessageIcon.Information
    tray.showMessage(title, message, icon, SHOW_MS)
    return True


def run_ended(status: str, run_dir: Path | None, history: RunHistory, error: str | None = None) -> bool:
    """Tell that a run completed or failed (a run the user stopped needs no telling)."""
    if status not in ("completed", "failed"):
        return False
    name = run_dir.name if run_dir is not None else "the run"
    step = history.last_step
    if status == "completed":
        detail = f"{step.epoch + 1} epochs, {step.global_step} steps, loss {step.loss:.3f}" if step else "done"
        return notify(f"Training complete: {name}", detail)
    return notify(f"Training failed: {name}", error or "see the Train tab's log", error=True)


def _tray_icon() -> QSystemTrayIcon | None:
    global _tray
    app = QApplication.instance()
    if _tray is None and isinstance(app, QApplication) and QSystemTrayIcon.isSystemTrayAvailable():
        icon = app.windowIcon()
        if icon.isNull():
            icon = app.style().standardIcon(QStyle.StandardPixmap.SP_ComputerIcon)
        _tray = QSystemTrayIcon(icon, app)
        _tray.setToolTip("SimCLR Studio")
        _tray.show()  # a message needs the icon in the tray
    return _tray
