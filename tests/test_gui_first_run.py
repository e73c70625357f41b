"""First-run experience: the welcome page, preferences that persist, Help ▸ About."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QLabel, QPushButton


def make_window(qtbot, settings):
    from simclr_studio.gui.app import build_window, create_app

    create_app()
    win = build_window(settings)
    qtbot.addWidget(win)
    win.show()
    return win


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMCLR_STUDIO_RUNS", raising=False)
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def test_welcome_page_explains_the_steps_and_opens_the_demo(qtbot, settings):
    win = make_window(qtbot, settings)
    texts = " ".join(label.text() for label in win.data_panel.findChildren(QLabel))
    for step in ("1 · Drop a folder", "2 · Preview &amp; train", "3 · Explore &amp; export"):
        assert step in texts
    demo = next(b for b in win.data_panel.findChildren(QPushButton) if b.text() == "Try it on the demo images")
    demo.click()
    qtbot.waitUntil(lambda: win.scan is not None and len(win.scan) == 600, timeout=20_000)


def test_preferences_apply_and_persist(qtbot, settings, tmp_path):
    from simclr_studio.gui.preferences import Preferences, default_runs_root

    win = make_window(qtbot, settings)
    assert win.train_panel.runs_root == default_runs_root()  # nothing saved yet
    prefs = Preferences(tmp_path / "my-runs", "dark", 1234)
    prefs.save(settings)
    win.apply_preferences(prefs)
    assert win.train_panel.runs_root == tmp_path / "my-runs"
    assert win.data_panel.model.cache_size == 1234 and win.explore_panel.results_model.cache_size == 617
    assert win.theme_actions["dark"].isChecked()
    assert QApplication.instance().palette().window().color().lightness() < 100  # the dark palette is on

    # A new session starts with them.
    again = make_window(qtbot, QSettings(settings.fileName(), QSettings.Format.IniFormat))
    assert again.train_panel.runs_root == tmp_path / "my-runs"
    assert again.data_panel.model.cache_size == 1234
    assert Preferences.load(settings).theme == "dark"
    again.set_theme("light")


def test_preferences_dialog_round_trip(qtbot, settings, tmp_path):
    from simclr_studio.gui.preferences import Preferences, PreferencesDialog

    dialog = PreferencesDialog(Preferences(tmp_path / "a", "light", 4000))
    qtbot.addWidget(dialog)
    dialog.runs_root.setText(str(tmp_path / "b"))
    dialog.theme.setCurrentText("dark")
    dialog.thumbnails.setValue(9000)
    assert dialog.preferences() == Preferences(tmp_path / "b", "dark", 9000)


def test_about_names_versions_and_the_device(qtbot, settings):
    import torch

    from simclr_studio import __version__

    win = make_window(qtbot, settings)
    text = win.about_text()
    assert __version__ in text and torch.__version__ in text and "Python" in text
    assert "Training device:</b> cpu" in text  # this machine has no GPU; the menu's choice is shown


def test_the_maps_imports_load_behind_the_splash(monkeypatch):
    """openTSNE's compiled module holds the GIL ~150 ms as it loads: the start-up imports (done while the
    splash shows) include it, so it never freezes the window later."""
    from simclr_studio import projection
    from simclr_studio.gui import app

    called = []
    monkeypatch.setattr(projection, "preload", lambda: called.append(True))
    app._load_heavy_modules()
    assert called == [True]
