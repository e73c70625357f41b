"""Nothing lost, whatever happens to a run folder: one writer, no data of the user's or of an old run
overwritten, signals that end with a checkpoint and a final event, and resuming what a crash left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, FakeChild, write_run

from simclr_studio.cli import main
from simclr_studio.events import EventLog, LogEvent, RunFinished, StepEvent, read_events
from simclr_studio.run_folder import RunFolder
from simclr_studio.run_lock import RunLock

TINY = ["--epochs", "1", "--batch-size", "8", "--image-size", "16", "--backbone", "small-cnn", "--device", "cpu",
        "--quiet"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def step(global_step: int) -> StepEvent:
    return StepEvent(epoch=0, step=global_step, global_step=global_step, total_steps=9, loss=1.0, lr=0.1,
                     images_per_s=1.0, eta_s=1.0)


# ---- 1. one writer per run folder ---------------------------------------------------------------------
def test_a_folder_another_writer_holds_is_refused_in_one_line(capsys, tmp_path, image_folder, tiny_config):
    run = write_run(tmp_path / "run", tiny_config, [step(1)], checkpoint=True, age_s=600)
    before = snapshot(run)
    with RunLock(run):  # another writer (this process, through another open file)
        for argv in (["train", image_folder, "--out", run, *TINY], ["train", "--out", run, "--resume"],
                     ["train", image_folder, "--out", run, "--overwrite", *TINY]):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2 and f"process {os.getpid()}" in one_line(err)
        assert snapshot(run) == {**before, "writer.lock": (run / "writer.lock").read_bytes()}


def test_the_app_follows_a_run_written_elsewhere_and_never_writes_it(tmp_path, tiny_config, monkeypatch):
    from simclr_studio.session import train as session_train
    from simclr_studio.session.train import TrainError, TrainSession

    monkeypatch.setattr(session_train, "ChildRun", FakeChild)
    run = write_run(tmp_path / "run", tiny_config, [step(1)], checkpoint=True, age_s=600)
    with RunLock(run):
        session = TrainSession()
        assert session.open(run) == "live" and session.state == "following"
        assert any("Training elsewhere" in line and str(os.getpid()) in line for line in session.poll().lines)
        session._follower = None  # as if the user put the followed run aside, the writer still there
        session._folder_state = "resumable"
        with pytest.raises(TrainError, match=f"process {os.getpid()}"):
            session.resume()
        with pytest.raises(TrainError, match=f"process {os.getpid()}"):
            TrainSession().start(tiny_config, run)
    FakeChild.made.clear()
    session = TrainSession()
    assert session.open(run) == "resumable"  # the writer has gone: free at once, no stale lock
    session.resume()
    assert FakeChild.made[-1].kind == "resume"


def test_a_killed_local_writer_is_not_live_however_recent_its_events(tmp_path, tiny_config):
    run = write_run(tmp_path / "run", tiny_config, [step(1)], checkpoint=True)  # events written just now
    assert RunFolder(run).state() == "live"  # no lock file: an old version's writer, judged by its events
    RunFolder(run).lock_file.write_text(  # as a writer of this machine killed with SIGKILL leaves it
        json.dumps({"pid": 999999, "host": socket.gethostname(), "started": time.time()}))
    assert RunFolder(run).state() == "resumable"  # its lock is free on this machine: it has ended


# ---- 2. nothing of the user's or of an old run is overwritten -------------------------------------------
def test_a_new_run_never_writes_into_a_folder_that_is_not_new_or_empty(capsys, tmp_path, image_folder,
                                                                     tiny_config):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    (user / "config.json.bak").write_text("{}")
    old = write_run(tmp_path / "old", tiny_config, [step(3), RunFinished(status="completed", epoch=1,
                                                                         global_step=3)], checkpoint=True)
    RunFolder(old).epoch_checkpoint(1).write_bytes(b"old epoch 1")
    for folder, words in ((user, "not empty and not a run folder"), (old, "--overwrite")):
        before = snapshot(folder)
        code, _, err = run_cli(capsys, "train", image_folder, "--out", folder, *TINY)
        assert code == 2 and words in one_line(err)
        assert snapshot(folder) == before  # nothing touched
    code, _, err = run_cli(capsys, "train", image_folder, "--out", user, "--overwrite", *TINY)
    assert code == 2 and snapshot(user) == {"notes.txt": b"my notes", "config.json.bak": b"{}"}


def test_overwrite_moves_the_old_run_aside_and_never_deletes_it(capsys, tmp_path, image_folder, tiny_config):
    old = write_run(tmp_path / "old", tiny_config, [RunFinished(status="completed", epoch=1, global_step=3)],
                    checkpoint=True)
    before = snapshot(old)
    code, _, err = run_cli(capsys, "train", image_folder, "--out", old, "--overwrite", *TINY)
    assert code == 0, err
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("old.old-")]
    assert len(moved) == 1 and f"moved aside to {moved[0]}" in err
    assert {k: v for k, v in snapshot(moved[0]).items() if k != "writer.lock"} == before
    assert RunFolder(old).last_status() == "completed" and len(read_events(old / "events.jsonl")) > 1


def test_the_app_starts_a_run_only_in_a_new_or_empty_folder(tmp_path, tiny_config, monkeypatch):
    from simclr_studio.session import train as session_train
    from simclr_studio.session.train import TrainError, TrainSession

    monkeypatch.setattr(session_train, "ChildRun", FakeChild)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("x")
    finished = write_run(tmp_path / "done", tiny_config, [RunFinished(status="failed", epoch=0, global_step=0)],
                         checkpoint=False, age_s=600)
    for folder, words in ((user, "not empty and not a run folder"), (finished, "already holds a run")):
        with pytest.raises(TrainError, match=words):
            TrainSession().start(tiny_config, folder)
    (tmp_path / "empty").mkdir()
    TrainSession().start(tiny_config, tmp_path / "empty")
    TrainSession().start(tiny_config, tmp_path / "new")
    assert [c.run_dir.name for c in FakeChild.made[-2:]] == ["empty", "new"]


# ---- 3. signals ---------------------------------------------------------------------------------------
class SignalledTrainer:
    """Stands in for a Trainer whose run is signalled: ``signals`` arrive one by one while it runs."""

    def __init__(self, run_dir: Path, signals: list[int]) -> None:
        self.folder = RunFolder(run_dir)
        self.signals = signals
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1

    def run(self) -> str:
        for sig in self.signals:
            os.kill(os.getpid(), sig)
            time.sleep(0.05)  # the handler runs here, as it would in the checkpoint's write
        return "stopped"


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_sighup_stops_with_a_checkpoint_and_later_signals_wait_for_it(capsys, tmp_path):
    from simclr_studio.cli.stopping import run_until_stopped

    trainer = SignalledTrainer(tmp_path, [signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGTERM])
    assert run_until_stopped(trainer, main_rank=True) == "stopped"  # type: ignore[arg-type]
    assert trainer.stops == 1
    assert "still stopping" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_a_third_ctrl_c_aborts_and_the_events_still_end_with_a_final_state(capsys, tmp_path):
    from simclr_studio.cli.stopping import run_until_stopped

    log = EventLog(tmp_path / "events.jsonl")
    log.write(step(5))
    log.close()
    trainer = SignalledTrainer(tmp_path, [signal.SIGINT] * 3)
    with pytest.raises(KeyboardInterrupt):
        run_until_stopped(trainer, main_rank=True)  # type: ignore[arg-type]
    last = read_events(tmp_path / "events.jsonl")[-1]
    assert isinstance(last, RunFinished) and (last.status, last.global_step) == ("stopped", 5)


def test_ctrl_c_while_starting_up_is_one_line(capsys, monkeypatch):
    import simclr_studio.cli as cli
    from simclr_studio import __main__ as launcher

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_expected_errors", interrupted)  # Ctrl-C while torch is imported
    assert launcher.main(["train", "--out", "x"]) == 130
    assert one_line(capsys.readouterr().err) == "simclr-studio: interrupted"


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals and sessions")
def test_the_launcher_forwards_ctrl_c_to_torchrun_once(capsys, tmp_path, monkeypatch):
    from simclr_studio import distributed
    from simclr_studio.cli.stopping import launch_torchrun

    got, ready = tmp_path / "got", tmp_path / "ready"
    script = (f"import signal, time, pathlib\n"
              f"seen = []\n"
              f"signal.signal(signal.SIGINT, lambda s, f: seen.append(s))\n"
              f"pathlib.Path({str(ready)!r}).touch()\n"
              f"end = time.time() + 10\n"
              f"while not seen and time.time() < end: time.sleep(0.02)\n"
              f"time.sleep(0.5)\n"
              f"pathlib.Path({str(got)!r}).write_text(str(len(seen)))\n")
    monkeypatch.setattr(distributed, "torchrun_command", lambda nproc, argv: [sys.executable, "-c", script])

    def interrupt() -> None:
        while not ready.exists():
            time.sleep(0.02)
        for _ in range(2):  # Ctrl-C twice at the launcher alone: torchrun hears one stop, once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)

    threading.Thread(target=interrupt, daemon=True).start()
    assert launch_torchrun(2, ["train", "--out", str(tmp_path / "run")], tmp_path / "run") == 130
    assert got.read_text() == "1"


# ---- 4. resuming what a crash left --------------------------------------------------------------------
def test_a_torn_last_events_line_is_cut_and_the_next_event_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write(step(1))
    log.close()
    with open(path, "a") as f:
        f.write('{"event": "step", "epoch": 0, "st')  # a writer killed mid-line
    log = EventLog(path)
    log.write(LogEvent(message="resumed"))
    log.close()
    events = read_events(path)
    assert [type(e) for e in events] == [StepEvent, LogEvent] and path.read_bytes().endswith(b"}\n")


def test_can_resume_from_epoch_checkpoints_alone(tmp_path):
    folder = RunFolder(tmp_path)
    assert not folder.can_resume()
    folder.epoch_checkpoint(2).parent.mkdir()
    folder.epoch_checkpoint(2).write_bytes(b"x")
    assert folder.can_resume()


@pytest.mark.slow  # two trainings
def test_resume_without_last_pt_or_config_json(capsys, tmp_path, image_folder):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", image_folder, "--out", run, *TINY[2:], "--epochs", "2")
    assert code == 0, err
    folder = RunFolder(run)
    saved = json.loads(folder.config_file.read_text())
    folder.last_checkpoint.write_bytes(b"torn")  # a crash mid-write of an old version
    folder.config_file.unlink()
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--epochs", "3")
    assert code == 0, err
    assert "config.json was missing" in err
    assert json.loads(folder.config_file.read_text())["backbone"] == saved["backbone"] == "small-cnn"
    assert folder.last_status() == "completed"


# ---- two real processes ----------------------------------------------------------------------------------
@pytest.mark.slow  # real training processes
@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_two_processes_never_write_one_run_and_a_killed_one_leaves_no_stale_lock(tmp_path, image_folder):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "simclr_studio", "train"]
    first = subprocess.Popen(base + [str(image_folder), "--out", str(run), *TINY[2:], "--epochs", "50"],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not RunFolder(run).epoch_checkpoints():
            assert first.poll() is None, first.communicate()[1]
            time.sleep(0.1)
        assert RunFolder(run).state() == "live"
        for argv in ([str(image_folder), "--out", str(run), *TINY], ["--out", str(run), "--resume"]):
            second = subprocess.run(base + argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2 and f"process {first.pid}" in one_line(second.stderr)
    finally:
        first.kill()  # SIGKILL: no handler, no checkpoint, no final event
        first.wait()
    assert RunFolder(run).writer() is None
    resumed = subprocess.run(base + ["--out", str(run), "--resume", "--epochs", "4", "--quiet"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert RunFolder(run).last_status() == "completed"


def test_a_reader_asking_who_writes_does_not_block_a_starting_writer(tmp_path):
    """current_writer takes the lock for an instant to test it; a writer starting at that moment
    must still get it (it retries briefly), while a real holder is still refused."""
    import threading

    from simclr_studio.run_lock import RunBusyError, RunLock, current_writer

    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            current_writer(tmp_path)

    readers = [threading.Thread(target=ask) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(50):
            lock = RunLock(tmp_path)
            lock.acquire()
            lock.release()
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    with RunLock(tmp_path), pytest.raises(RunBusyError):
        RunLock(tmp_path).acquire()
