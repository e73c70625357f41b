"""Shared fixtures: tiny image folders and tiny configs, so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "resources" / "demo"


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 20, seed: int = 0) -> Path:
    """Class subfolders of small synthetic images: each class a distinct pattern with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.stack([(xx * (c + 1) * 13) % 256, (yy * (c + 2) * 7) % 256, np.full_like(xx, 80 * c)], -1)
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"img_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def tiny_config(image_folder: Path):
    from simclr_studio.config import RunConfig

    return RunConfig(data_dir=str(image_folder), backbone="small-cnn", image_size=16, batch_size=8, epochs=2,
                     device="cpu", optimizer="sgd", eval_every=1, seed=3)


class FakeChild:
    """Stands in for the training process (training_link.ChildRun) where only how it was asked to
    run is under test: records how it was made (``args`` as passed) and ends at once."""

    made: list = []
    pid = None  # no process behind it

    def __init__(self, kind, run_dir, *args):
        self.kind, self.run_dir, self.args = kind, Path(run_dir), args
        self.status = "stopped"
        FakeChild.made.append(self)

    @property
    def epochs(self):
        return self.args[0] if self.kind == "resume" else None

    @classmethod
    def new_run(cls, cfg, run_dir, nproc=1):
        return cls("new", run_dir, cfg, nproc)

    @classmethod
    def resume(cls, run_dir, epochs=None, device=None, nproc=1):
        return cls("resume", run_dir, epochs, device, nproc)

    def start(self):
        pass

    def drain(self):
        return []

    def is_running(self):
        return False


def write_run(run: Path, cfg, events: list, checkpoint: bool, age_s: float = 0.0) -> Path:
    """A run folder as a trainer leaves it (the checkpoint a placeholder); ``age_s``: how long ago its
    events file was written."""
    from simclr_studio.events import EventLog
    from simclr_studio.run_folder import RunFolder

    run.mkdir(parents=True)
    cfg.save(run / "config.json")
    log = EventLog(run / "events.jsonl")
    for event in events:
        log.write(event)
    log.close()
    if age_s:
        then = time.time() - age_s
        os.utime(run / "events.jsonl", (then, then))
    if checkpoint:
        RunFolder(run).last_checkpoint.parent.mkdir()
        RunFolder(run).last_checkpoint.write_bytes(b"placeholder")
    return run


# ---- the Explore tab: a tiny labelled folder, a one-epoch run on it, the window embedding it ----------
@pytest.fixture(scope="module")
def explore_run(tmp_path_factory):
    """A tiny labeled folder and a one-epoch run on it."""
    from simclr_studio.config import RunConfig
    from simclr_studio.train import Trainer

    root = tmp_path_factory.mktemp("gui-explore")
    data = make_image_folder(root / "data", classes=3, per_class=8, size=16, seed=5)
    cfg = RunConfig(data_dir=str(data), backbone="small-cnn", image_size=16, batch_size=8, epochs=1, device="cpu",
                    optimizer="sgd", eval_every=0, seed=1)
    assert Trainer(cfg, root / "run").run() == "completed"
    return data, root / "run"


@pytest.fixture
def explorer(qtbot, tmp_path, monkeypatch, explore_run):
    """The window with the run opened and its folder scanned, on the Explore tab, embedded."""
    import shutil

    from PySide6.QtCore import QSettings

    from simclr_studio.gui.app import build_window, create_app

    data, run = explore_run
    shutil.rmtree(run / "embeddings", ignore_errors=True)  # each test embeds afresh
    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    create_app()
    win = build_window(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.show()
    win.open_path(run)
    qtbot.waitUntil(lambda: win.scan is not None and win.scan.root == str(data), timeout=10_000)
    win.show_explorer()
    panel = win.explore_panel
    assert panel.checkpoint.count() >= 1 and panel.embed_button.isEnabled()
    panel.embed()
    qtbot.waitUntil(lambda: panel.session.embedded is not None and not panel.jobs, timeout=60_000)
    yield win, panel
    panel.cancel()


# ---- what the training process reports, made up for tests of the windows and sessions --------------
def run_started(total_steps=6, steps_per_epoch=3, labeled=True, start_global_step=0):
    from simclr_studio.events import RunStarted

    return RunStarted(run_dir="r", device="cpu", backbone="small-cnn", n_images=24, steps_per_epoch=steps_per_epoch,
                      total_steps=total_steps, start_epoch=0, start_global_step=start_global_step, cached=True,
                      labeled=labeled)


def step_event(n, total, eta=1.0):
    from simclr_studio.events import StepEvent

    return StepEvent(epoch=(n - 1) // 3, step=(n - 1) % 3, global_step=n, total_steps=total, loss=5.0 - 0.01 * n,
                     lr=0.1, images_per_s=100.0, eta_s=eta)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """The main window with its own settings file and runs folder."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMessageBox

    from simclr_studio.gui.app import build_window, create_app

    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    # A test that fails mid-run leaves a run training when qtbot closes the window: answer the
    # "stop it and quit?" question instead of waiting forever on a dialog nobody sees.
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    create_app()
    win = build_window(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.show()
    yield win
    if win.train_panel.session.is_running():
        win.train_panel.stop_and_wait()


def smooth_image(seed: int, side: int = 96):
    """A photo-like RGB image (PIL): a few soft colour blobs on a gradient."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.stack([x * rng.uniform(0, 255), y * rng.uniform(0, 255), np.full_like(x, rng.uniform(0, 255))], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.25)]
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - blob) + blob * rng.uniform(0, 255, 3)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
