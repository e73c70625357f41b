"""Data-parallel training on CPU with gloo and 2 processes: the maths, the runs, the failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO
from PIL import Image

from simclr_studio.config import RunConfig
from simclr_studio.distributed import torchrun_command
from simclr_studio.loss import nt_xent
from simclr_studio.model import build_model

BATCH = 6  # per process
TEMPERATURE = 0.5


def _freeze_bn(model: torch.nn.Module) -> None:
    # PyTorch has no SyncBatchNorm on CPU, so per-process batch statistics would (rightly) differ
    # from those of the one big batch; with running statistics the forward pass is batch-independent.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.rand((2 * BATCH, 3, 16, 16), generator=g), torch.rand((2 * BATCH, 3, 16, 16), generator=g)


def _model():
    torch.manual_seed(0)
    model = build_model(RunConfig(backbone="small-cnn", image_size=16))
    _freeze_bn(model)
    return model


def _rank_main(rank: int, world: int, init_file: str, out: str, use_gather: bool) -> None:
    import torch.distributed as dist

    from simclr_studio.distributed import gather_with_grad, wrap_model

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x1, x2 = _inputs()
    rows = slice(rank * BATCH, (rank + 1) * BATCH)
    model = _model()
    ddp = wrap_model(model, torch.device("cpu"), sync_bn=True)
    _freeze_bn(ddp)
    _, z = ddp(torch.cat((x1[rows], x2[rows])))
    z1, z2 = z.chunk(2)
    loss = nt_xent(z1, z2, TEMPERATURE, gather_with_grad if use_gather else None)
    loss.backward()  # DDP averages the parameter gradients over the processes
    total = loss.detach().clone()
    dist.all_reduce(total)
    if rank == 0:
        torch.save({"loss": total / world, "grads": {n: p.grad for n, p in model.named_parameters()}}, out)
    dist.destroy_process_group()


def _two_process(tmp_path: Path, use_gather: bool) -> dict:
    out = tmp_path / f"rank0-{use_gather}.pt"
    mp.spawn(_rank_main, args=(2, str(tmp_path / f"init-{use_gather}"), str(out), use_gather), nprocs=2, join=True)
    return torch.load(out)


@pytest.mark.slow  # several processes, each importing torch
def test_two_processes_train_exactly_like_one_double_batch(tmp_path):
    x1, x2 = _inputs()
    model = _model()
    _, z = model(torch.cat((x1, x2)))
    reference = nt_xent(*z.chunk(2), TEMPERATURE)
    reference.backward()

    got = _two_process(tmp_path, use_gather=True)
    assert float(got["loss"]) == pytest.approx(float(reference.detach()), abs=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(got["grads"][name], p.grad, atol=1e-5), name

    # Without the gather each process only sees its own negatives: a different loss. (The check
    # above can fail.)
    local = _two_process(tmp_path, use_gather=False)
    assert abs(float(local["loss"]) - float(reference.detach())) > 1e-3


# ---- whole runs through torchrun ------------------------------------------------------------
def _image_folder(root: Path, n: int = 64) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = root / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(cls / f"{i:03d}.png")
    return root


def _env() -> dict:
    # One thread per process (2 processes on a 2-core machine), the repository importable.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _train(data: Path, run: Path, *extra: str, nproc: int = 1, timeout: int = 240) -> subprocess.CompletedProcess:
    args = ["train", *([str(data)] if data else []), "--out", str(run), "--batch-size", "8", "--image-size", "16",
            "--device", "cpu", "--quiet", *extra]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    return subprocess.run([sys.executable, "-m", "simclr_studio", *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow  # several processes, each importing torch
def test_checkpoints_move_between_process_counts(tmp_path):
    data = _image_folder(tmp_path / "data")
    run = tmp_path / "run"

    result = _train(data, run, "--epochs", "1", nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    events = _events(run)
    # Only rank 0 writes: one start, one step event per global step (64 images / 2 processes / 8).
    assert [e["event"] for e in events].count("run_started") == 1
    assert [e["global_step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0001.pt", "last.pt"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == 4

    result = _train(None, run, "--resume", "--epochs", "2")  # 2 processes → 1
    assert result.returncode == 0, result.stderr[-3000:]
    events = _events(run)
    assert any("checkpoint of a 2-process run resumed on 1" in e.get("message", "") for e in events)
    steps = [e for e in events if e["event"] == "step"]
    assert [e["global_step"] for e in steps if e["epoch"] == 1] == list(range(9, 17))  # 8 steps of 8 per epoch

    result = _train(None, run, "--resume", "--epochs", "3", nproc=2)  # and 1 → 2
    assert result.returncode == 0, result.stderr[-3000:]
    events = _events(run)
    assert any("checkpoint of a 1-process run resumed on 2" in e.get("message", "") for e in events)
    # Steps are counted in units of the new global batch: epoch 3 is steps 9–12 of 12.
    assert [e["global_step"] for e in events if e["event"] == "step" and e["epoch"] == 2] == [9, 10, 11, 12]
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "completed"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["world_size"] == 2


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.slow  # several processes, each importing torch
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_killing_one_rank_ends_the_run_with_an_error(tmp_path):
    data = _image_folder(tmp_path / "data")
    run = tmp_path / "run"
    cmd = torchrun_command(2, ["train", str(data), "--out", str(run), "--epochs", "500", "--batch-size", "8",
                               "--image-size", "16", "--device", "cpu", "--quiet"])
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until training is under way
            if (run / "events.jsonl").exists() and sum(e["event"] == "step" for e in _events(run)) >= 3:
                break
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("training did not start")
        workers = [pid for pid in _children(proc.pid) if _rank_of(pid) is not None]
        victim = next(pid for pid in workers if _rank_of(pid) == 1)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=120)
        waited = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    assert code != 0, output[-3000:]
    print(f"run ended {waited:.1f} s after rank 1 was killed")
    assert waited < 90, f"the surviving rank took {waited:.0f} s to give up"
    assert not any(e["event"] == "finished" and e["status"] == "completed" for e in _events(run))


@pytest.mark.slow  # several processes, each importing torch
def test_sigterm_to_the_launcher_stops_every_rank_with_a_checkpoint(tmp_path):
    data = _image_folder(tmp_path / "data")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "simclr_studio", "train", str(data), "--out", str(run), "--epochs", "500",
           "--batch-size", "8", "--image-size", "16", "--device", "cpu", "--quiet", "--nproc", "2"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (run / "events.jsonl").exists() and sum(e["event"] == "step" for e in _events(run)) >= 3:
                break
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # to the launcher only: it hands the signal on to torchrun
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    assert code == 130, output[-3000:]  # stopped, as with Ctrl-C on one process
    events = _events(run)
    assert any(e["event"] == "checkpoint" and e["reason"] == "stop" for e in events)
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "stopped"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["world_size"] == 2
