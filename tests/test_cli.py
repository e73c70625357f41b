import json
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
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("simclr-studio: error:") and "Traceback" not in err


def test_end_to_end_on_the_demo_folder(capsys, tmp_path):
    """train --demo → eval → embed → export (all three formats), as a user would."""
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--demo", "--out", run, "--epochs", "1", "--batch-size", "200",
                             "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "completed" in out and "Epoch 1: loss" in out and "kNN accuracy" in out  # session.wording's words
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


@pytest.mark.slow  # signals to a training process, then a resume
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
    assert "Checkpoint saved" in err and "--resume" in out and "Traceback" not in err
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert 3 <= state["global_step"] < 400 * 3
    stopped_at = state["global_step"]
    resume = subprocess.run([sys.executable, "-m", "simclr_studio", "train", "--out", str(run), "--resume",
                             "--epochs", str(stopped_at // 3 + 2), "--quiet"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr
    assert f"resuming at step {stopped_at:,}" in resume.stderr
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


@pytest.mark.slow  # a training process with loader workers
def test_pipe_mode_with_streaming_loader_workers_does_not_hang(tmp_path, image_folder):
    # The stdin reader must not hold a lock that a forked DataLoader worker would wait on for ever.
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


# ---- the parser: groups, and a config file's values as the flags' defaults -------------------------
def train_parser():
    from simclr_studio.cli.parser import build_parser

    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices["train"]


def test_train_flags_come_in_groups():
    groups = {g.title: {a.dest for a in g._group_actions} for g in train_parser()._action_groups}
    assert groups["data"] == {"data_dir", "demo"}
    assert groups["config file"] == {"config"}
    assert groups["run length"] == {"minutes", "epochs"}
    assert groups["model"] == {"backbone", "image_size", "weights"}
    assert groups["optimisation"] == {"batch_size", "optimizer", "lr", "temperature", "seed"}
    assert groups["augmentation"] == {"mask"}
    assert groups["device and processes"] == {"device", "num_workers", "nproc"}
    assert groups["output"] == {"out", "resume", "overwrite", "quiet", "link"}
    flags = {s for a in train_parser()._actions for s in a.option_strings}
    assert {"--out", "--demo", "--config", "--resume", "--minutes", "--epochs", "--batch-size", "--backbone",
            "--image-size", "--device", "--optimizer", "--lr", "--temperature", "--weights", "--mask",
            "--num-workers", "--seed", "--nproc", "--quiet", "--link"} <= flags


def saved_config(path, **changes):
    from simclr_studio.config import RunConfig

    cfg = RunConfig(backbone="small-cnn", image_size=16, batch_size=8, epochs=5, minutes=3.0, device="cpu",
                    optimizer="sgd", seed=4, **changes)
    cfg.save(path)
    return path


def test_a_config_file_sets_the_defaults_and_typed_flags_win(tmp_path):
    from simclr_studio.cli.parser import parse_args

    config = saved_config(tmp_path / "c.json")
    args = parse_args(["train", "--out", str(tmp_path / "r"), "--config", str(config), "--batch-size", "4"])
    assert (args.batch_size, args.backbone, args.image_size, args.epochs, args.minutes) == (4, "small-cnn", 16, 5, 3.0)
    assert args.given == {"config", "batch_size"}
    plain = parse_args(["train", "--out", str(tmp_path / "r"), "--batch-size", "4"])
    assert plain.backbone is None and plain.epochs is None and plain.given == {"batch_size"}
    resumed = parse_args(["train", "--out", str(tmp_path / "r"), "--config", str(config), "--resume"])
    assert resumed.batch_size is None  # a resume keeps its saved config: the file is not read


def test_run_config_from_a_config_file(tmp_path, image_folder):
    """The file names the data folder; --epochs alone drops its time budget; --image-size rescales the
    augmentations unless the file has its own; --mask sets the mask-box probability."""
    from dataclasses import replace

    from simclr_studio.cli.parser import parse_args
    from simclr_studio.cli.train import run_config
    from simclr_studio.config import AugmentConfig

    def config_for(*flags, config=None):
        config = config or saved_config(tmp_path / "c.json", data_dir=str(image_folder))
        return run_config(parse_args(["train", "--out", str(tmp_path / "r"), "--config", str(config), *flags]),
                          tmp_path / "r")[0]

    cfg = config_for()
    assert cfg.data_dir == str(image_folder.resolve()) and (cfg.epochs, cfg.minutes, cfg.batch_size) == (5, 3.0, 8)
    cfg = config_for("--epochs", "2")
    assert (cfg.epochs, cfg.minutes) == (2, None)
    cfg = config_for("--epochs", "2", "--minutes", "1.5")
    assert (cfg.epochs, cfg.minutes) == (2, 1.5)
    cfg = config_for("--image-size", "96", "--mask", "0.25")  # a saved config holds its augmentations: kept
    assert cfg.image_size == 96 and cfg.augment == replace(AugmentConfig.for_image_size(16), mask_p=0.25)
    (tmp_path / "bare.json").write_text(json.dumps({"image_size": 16, "data_dir": str(image_folder)}))
    cfg = config_for("--image-size", "96", config=tmp_path / "bare.json")
    assert cfg.augment == AugmentConfig.for_image_size(96) != AugmentConfig.for_image_size(16)


def test_resume_names_the_flags_it_ignores(capsys, tmp_path):
    from simclr_studio.cli.parser import parse_args
    from simclr_studio.cli.train import resumed_config
    from simclr_studio.run_folder import RunFolder

    folder = RunFolder(tmp_path / "r")
    saved_config(folder.config_file)
    folder.last_checkpoint.parent.mkdir(parents=True)
    folder.last_checkpoint.write_bytes(b"")  # only its presence matters here
    args = parse_args(["train", "--out", str(folder.path), "--resume", "--epochs", "9", "--lr", "0.1", "--mask", "0.5"])
    cfg, _ = resumed_config(args, folder.path, main_rank=True)
    assert (cfg.epochs, cfg.minutes, cfg.lr, cfg.batch_size) == (9, None, None, 8)
    err = capsys.readouterr().err
    assert "ignoring --lr, --mask" in err and "--epochs" not in err


def test_progress_lines_are_the_app_log_s_words(capsys):
    from simclr_studio.cli.train import ProgressPrinter
    from simclr_studio.events import BaselineEvent, EpochEvent, ErrorEvent, EvalEvent, LogEvent, RunFinished
    from simclr_studio.session.wording import EventWording

    events = [BaselineEvent(features="raw pixels", knn_accuracy=0.5, n_images=30, k=5),
              EpochEvent(epoch=0, loss=1.5, seconds=2.0, images_per_s=100.0),
              EvalEvent(epoch=0, knn_accuracy=0.75, n_images=30, k=5)]
    printer = ProgressPrinter(quiet=True, notes=["a note"])
    for event in [*events, LogEvent(message="hidden when quiet"), ErrorEvent(message="boom", category="error"),
                  RunFinished(status="failed", epoch=0, global_step=3)]:
        printer(event)
    out, err = capsys.readouterr()
    wording = EventWording()
    assert out.splitlines() == [wording.line(e) for e in events] and err == ""
    assert printer.error == "boom"


# ---- the launcher ----------------------------------------------------------------------------------
def test_the_launcher_hands_commands_to_the_command_line(capsys, monkeypatch):
    import simclr_studio.__main__ as launcher
    from simclr_studio import cli

    calls = []
    monkeypatch.setattr(cli, "main", lambda argv: calls.append(argv) or 0)
    for argv in (["train", "--help"], ["--version"], ["torchrun", "--help"], ["eval", "x", "y"]):
        assert launcher.main(argv) == 0
    assert [c[0] for c in calls] == ["train", "--version", "torchrun", "eval"]
    assert launcher.main(["/no/such/folder"]) == 2 and "not a folder" in capsys.readouterr().err


def test_the_command_line_never_loads_the_app():
    code = ("import sys\nimport simclr_studio.__main__\nfrom simclr_studio.cli.parser import parse_args\n"
            "parse_args(['train', '--out', 'r'])\nimport simclr_studio.cli.train, simclr_studio.cli.features\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('simclr_studio.gui', 'PySide6', 'pyqtgraph')))\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tensorboard_flag_and_config_field(tmp_path, image_folder):
    """--tensorboard turns the option on; a config file's "tensorboard": true does too without the flag."""
    from simclr_studio.cli.parser import parse_args
    from simclr_studio.cli.train import run_config

    out = tmp_path / "r"
    args = parse_args(["train", str(image_folder), "--out", str(out), "--epochs", "1", "--tensorboard"])
    assert args.tensorboard is True and "tensorboard" in args.given
    assert run_config(args, out)[0].tensorboard is True
    plain = parse_args(["train", str(image_folder), "--out", str(out), "--epochs", "1"])
    assert plain.tensorboard is None and run_config(plain, out)[0].tensorboard is False
    config = saved_config(tmp_path / "c.json", data_dir=str(image_folder), tensorboard=True)
    from_file = parse_args(["train", "--out", str(out), "--config", str(config)])
    assert run_config(from_file, out)[0].tensorboard is True
    assert "--tensorboard" in {s for a in train_parser()._actions for s in a.option_strings}
