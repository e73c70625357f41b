"""The app's multi-GPU path: the device menu offers every GPU at once and launches torchrun."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("PySide6")

from conftest import make_image_folder
from PySide6.QtCore import QSettings

from simclr_studio.events import StepEvent
from simclr_studio.run_folder import RunFolder


@pytest.fixture
def two_gpu_window(qtbot, tmp_path, monkeypatch):
    import simclr_studio.device as device
    from simclr_studio.gui.app import build_window, create_app

    monkeypatch.setattr(device, "gpu_count", lambda: 2)
    monkeypatch.setattr(device, "available_devices", lambda: ["cuda:0", "cuda:1", "cpu"])
    monkeypatch.setenv("SIMCLR_STUDIO_RUNS", str(tmp_path / "runs"))
    create_app()
    win = build_window(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.show()
    return win


def test_all_gpus_launches_torchrun(two_gpu_window, qtbot, tmp_path, monkeypatch):
    import simclr_studio.training_link as training_link

    panel = two_gpu_window.train_panel
    labels = [panel.form.device.itemText(i) for i in range(panel.form.device.count())]
    assert labels == ["cuda:0", "cuda:1", "all 2 GPUs", "cpu"]

    folder = make_image_folder(tmp_path / "imgs", classes=2, per_class=16)  # a full batch for each of 2 processes
    two_gpu_window.open_path(folder)
    qtbot.waitUntil(lambda: panel.session.data_dir == str(folder), timeout=10_000)
    panel.form.device.setCurrentText("all 2 GPUs")
    assert panel.config().device == "cuda"

    launched = []

    def no_launch(command, **kwargs):  # this machine has no GPUs: record what would run
        launched.append(command)
        config = Path(command[command.index("--config") + 1])
        launched.append(json.loads(config.read_text()))
        raise OSError("not launched in this test")

    monkeypatch.setattr(training_link.subprocess, "Popen", no_launch)
    panel.start_button.click()
    qtbot.waitUntil(lambda: not panel.session.is_running(), timeout=10_000)
    command, config = launched
    assert command[command.index("--nproc") + 1] == "2" and "--link" in command
    assert config["device"] == "cuda"
    assert "not launched in this test" in panel.error_banner.text()


@pytest.mark.slow  # two processes under torchrun
def test_a_two_process_run_reports_through_the_app(tmp_path, tiny_config):
    # The same path on CPU (gloo): torchrun's rank 0 speaks on the pipe, the app's session follows it.
    from simclr_studio.session.train import TrainSession

    tiny_config.data_dir = str(make_image_folder(tmp_path / "imgs", classes=2, per_class=16))
    tiny_config.eval_every = 0
    run = tmp_path / "run"
    session = TrainSession()
    session.start(tiny_config, run, nproc=2)
    received, ended = [], None
    deadline = time.monotonic() + 180
    while ended is None and time.monotonic() < deadline:
        update = session.poll()
        received += update.events
        ended = update.ended
        time.sleep(0.066)
    assert ended == "completed", (run / "train.log").read_text()[-3000:]
    steps = [e for e in received if isinstance(e, StepEvent)]
    assert [e.global_step for e in steps] == [1, 2, 3, 4]  # 32 images / 2 processes / batch 8, 2 epochs
    assert torch.load(RunFolder(run).last_checkpoint, weights_only=True)["world_size"] == 2
