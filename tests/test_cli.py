import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import DEMO, REPO

from simclr_studio.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    lines = [l for l in err.strip().splitlines() if l.strip()]
    return len(lines) == 1 and lines[0].startswith("simclr-studio: error:") and "Traceback" not in err


def test_end_to_end_on_the_demo_folder(capsys, tmp_path):
    """train --demo → eval → embed → export (all three formats), as a user would."""
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--demo", "--out", run, "--epochs", "1", "--batch-size", "200",
                             "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "completed" in out and "epoch 1: loss" in out and "kNN accuracy" in out
    assert (run / "config.json").exists() and (run / "checkpoints" / "last.pt").exists()

    code, out, err = run_cli(capsys, "eval", run, DEMO, "--quiet", "--json", tmp_path / "eval.json")
    assert code == 0, err
    assert "kNN (k=200" in out and "linear probe" in out and "480 / test 120" in out
    assert (tmp_path / "eval.json").exists()

    code, out, err = run_cli(capsys, "embed", run, DEMO, "--out", tmp_path / "f.npz", "--quiet")
    assert code == 0, err
    data = np.load(tmp_path / "f.npz")
    assert data["features"].shape == (600, 128) and len(set(data["labels"].tolist())) == 10
    code, out, err = run_cli(capsys, "embed", run, DEMO, "--out", tmp_path / "f.csv", "--map", "pca", "--quiet")
    assert code == 0 and "pca map" in out, err
    header = (tmp_path / "f.csv").read_text().splitlines()[0]
    assert header.startswith("path,label,class,x,y,f0")

    for fmt in ("pt", "safetensors", "onnx"):
        code, out, err = run_cli(capsys, "export", run, "--format", fmt, "--out", tmp_path / f"enc.{fmt}")
        assert code == 0, err
        assert (tmp_path / f"enc.{fmt}").stat().st_size > 100_000 and (tmp_path / f"enc.{fmt}.json").exists()


def test_eval_with_a_separate_test_folder(capsys, tmp_path, tiny_config, image_folder):
    from conftest import make_image_folder

    from simclr_studio.train import Trainer

    tiny_config.epochs = 1
    Trainer(tiny_config, tmp_path / "run").run()
    test_dir = make_image_folder(tmp_path / "test", per_class=3, seed=9)
    code, out, err = run_cli(capsys, "eval", tmp_path / "run", image_folder, "--test-dir", test_dir, "--quiet")
    assert code == 0, err
    assert "train 24 / test 9 images (test folder)" in out


@pytest.mark.parametrize("argv,message", [
    (["train", "{tmp}/nowhere", "--out", "{tmp}/r"], "data folder not found"),
    (["train", "{tmp}/empty", "--out", "{tmp}/r", "--device", "cpu"], "no images found"),
    (["train", "{data}", "--out", "{tmp}/r", "--batch-size", "500", "--device", "cpu"], "larger than the"),
    (["train", "{data}", "--out", "{tmp}/r", "--backbone", "vgg"], "unknown backbone"),
    (["train", "--out", "{tmp}/r"], "DATA_DIR is required"),
    (["train", "--out", "{tmp}/r", "--resume"], "nothing to resume"),
    (["eval", "{tmp}/corrupt", "{data}"], "cannot load checkpoint"),
    (["export", "{tmp}/nowhere", "--format", "pt", "--out", "{tmp}/x.pt"], "run folder not found"),
])
def test_bad_input_gives_one_line_errors(capsys, tmp_path, image_folder, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt" / "checkpoints").mkdir(parents=True)
    (tmp_path / "corrupt" / "checkpoints" / "last.pt").write_bytes(b"\x00garbage" * 10)
    argv = [a.format(tmp=tmp_path, data=image_folder) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    assert one_line_error(err), err
    assert message in err


def test_refuses_to_overwrite_a_run(capsys, tmp_path, tiny_config, image_folder):
    from simclr_studio.train import Trainer

    tiny_config.epochs = 1
    Trainer(tiny_config, tmp_path / "run").run()
    code, _, err = run_cli(capsys, "train", image_folder, "--out", tmp_path / "run")
    assert code == 2 and "--resume" in err and one_line_error(err)


def test_help_everywhere(capsys):
    for argv in (["--help"], ["train", "--help"], ["embed", "--help"], ["eval", "--help"], ["export", "--help"]):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        out, _ = capsys.readouterr()
        assert code == 0 and "usage: simclr-studio" in out


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, image_folder):
    """SIGINT during training → checkpoint at the next step, exit 130; --resume then completes."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "simclr_studio", "train", str(image_folder), "--out", str(run), "--epochs", "400",
           "--batch-size", "8", "--image-size", "16", "--backbone", "small-cnn", "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "last.pt").exists():
        time.sleep(0.1)  # wait until the first epoch is done, so training is surely in its loop
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume" in out and "Traceback" not in err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert 3 <= state["global_step"] < 400 * 3
    stopped_at = state["global_step"]
    resume = subprocess.run([sys.executable, "-m", "simclr_studio", "train", "--out", str(run), "--resume",
                             "--epochs", str(stopped_at // 3 + 2), "--quiet"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr
    assert f"resuming at step {stopped_at}" in resume.stderr
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["global_step"] == (stopped_at // 3 + 2) * 3


@pytest.mark.parametrize("content,message", [
    ('[1, 2]', "must be a JSON object"),
    ('{"epochs": "ten"}', "epochs must be int"),
    ('{"augment": {"crop_scale": 5}}', "augment.crop_scale must be a [low, high] pair"),
    ('{"augment": [1]}', "augment must be a JSON object"),
    ('{"lr": -1}', "lr must be positive"),
    ('{"colour": 1}', "unknown config keys: colour"),
    ('{not json', "cannot read config"),
])
def test_malformed_config_files(capsys, tmp_path, image_folder, content, message):
    (tmp_path / "c.json").write_text(content)
    code, _, err = run_cli(capsys, "train", image_folder, "--out", tmp_path / "r", "--config", tmp_path / "c.json")
    assert code == 2 and one_line_error(err) and message in err, err


def test_filesystem_errors_are_one_line(capsys, tmp_path, tiny_config):
    from simclr_studio.train import Trainer

    tiny_config.epochs = 1
    Trainer(tiny_config, tmp_path / "run").run()
    (tmp_path / "folder.pt").mkdir()
    code, _, err = run_cli(capsys, "export", tmp_path / "run", "--format", "pt", "--out", tmp_path / "folder.pt")
    assert code == 2 and one_line_error(err), err
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "train", tiny_config.data_dir, "--out", tmp_path / "afile", "--quiet")
    assert code == 2 and one_line_error(err), err


def test_config_file_and_flags(capsys, tmp_path, image_folder):
    """--config starts from a saved config; flags override it; --mask 0 turns masking off."""
    from simclr_studio.config import RunConfig

    base = RunConfig(backbone="small-cnn", image_size=16, batch_size=8, epochs=1, device="cpu", eval_every=0)
    base.augment.mask_p = 0.7
    base.save(tmp_path / "c.json")
    code, _, err = run_cli(capsys, "train", image_folder, "--out", tmp_path / "r", "--config", tmp_path / "c.json",
                           "--mask", "0", "--seed", "11", "--quiet")
    assert code == 0, err
    saved = RunConfig.load(tmp_path / "r" / "config.json")
    assert saved.augment.mask_p == 0.0 and saved.seed == 11 and saved.batch_size == 8 and saved.image_size == 16


def test_pipe_mode_with_streaming_loader_workers_does_not_hang(tmp_path, image_folder):
    # The stdin reader must not hold a lock that a forked DataLoader worker would wait on for ever.
    import json

    from simclr_studio.config import RunConfig

    cfg = RunConfig(backbone="small-cnn", image_size=16, batch_size=8, epochs=1, device="cpu", optimizer="sgd",
                    cache_ram_gb=0, num_workers=1, eval_every=0)
    cfg.save(tmp_path / "cfg.json")
    proc = subprocess.Popen([sys.executable, "-m", "simclr_studio", "train", str(image_folder), "--out",
                             str(tmp_path / "run"), "--config", str(tmp_path / "cfg.json"), "--link", "--quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        code = proc.wait(timeout=120)  # stdin stays open, as the app keeps it
    finally:
        if proc.poll() is None:
            proc.kill()
    events = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    assert code == 0, proc.stderr.read()[-2000:]
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "completed"
