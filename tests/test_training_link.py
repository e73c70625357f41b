"""The app ↔ training-process link: its wire format, and both ends over real pipes."""

from __future__ import annotations

import os
import sys
import textwrap
import threading

import pytest

from simclr_studio.config import RunConfig
from simclr_studio.events import ErrorEvent, LogEvent, RunFinished, StateEvent, StepEvent
from simclr_studio.training_link import (
    LINK_FLAG,
    ChildRun,
    child_command,
    decode_commands,
    decode_event,
    encode_command,
    encode_event,
    serve_commands,
)


def test_events_cross_the_wire_unchanged():
    step = StepEvent(epoch=1, step=2, global_step=30, total_steps=90, loss=4.5, lr=0.1, images_per_s=800.0, eta_s=12.0)
    line = encode_event(step)
    assert line.endswith("\n") and line.count("\n") == 1
    assert decode_event(line) == step
    assert decode_event(line.encode()) == step


@pytest.mark.parametrize("line", ["", "loading weights…\n", "{\"event\": \"step\", \"epoch\"", "[1, 2]",
                                  "{\"event\": \"from-a-newer-version\"}"])
def test_anything_else_on_the_wire_is_not_an_event(line):
    assert decode_event(line) is None


def test_commands_are_whole_known_lines():
    assert encode_command("pause") == b"pause\n"
    with pytest.raises(ValueError):
        encode_command("resume")  # un-pausing is "unpause": "resume" means continuing from a checkpoint
    commands, rest = decode_commands(b"", b"pause\nunpa")
    assert commands == ["pause"] and rest == b"unpa"
    commands, rest = decode_commands(rest, b"use\nreboot\n stop \n")
    assert commands == ["unpause", "stop"] and rest == b""


def test_a_new_run_sends_its_data_folder_once_in_its_config(tmp_path):
    cmd = child_command(tmp_path / "run", config_file=tmp_path / "c.json")
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "run") and LINK_FLAG in cmd
    assert cmd[cmd.index("--config") + 1] == str(tmp_path / "c.json")
    assert "--resume" not in cmd and "--nproc" not in cmd
    # no DATA_DIR argument: after the subcommand only flags and their values
    after = cmd[cmd.index("train") + 1:]
    assert all(arg.startswith("--") or after[i - 1].startswith("--") for i, arg in enumerate(after))
    with pytest.raises(ValueError):
        child_command(tmp_path / "run")


def test_a_resume_sends_only_what_a_resume_may_change(tmp_path):
    cmd = child_command(tmp_path, resume=True, epochs=7, device="cpu", nproc=2)
    assert "--resume" in cmd and "--config" not in cmd
    assert cmd[cmd.index("--epochs") + 1] == "7" and cmd[cmd.index("--device") + 1] == "cpu"
    assert cmd[cmd.index("--nproc") + 1] == "2"
    assert "--epochs" not in child_command(tmp_path, resume=True)  # a budgeted run keeps its plan


class _Target:
    def __init__(self):
        self.calls: list[str] = []
        self.stopped = threading.Event()

    def pause(self):
        self.calls.append("pause")

    def unpause(self):
        self.calls.append("unpause")

    def stop(self):
        self.calls.append("stop")
        self.stopped.set()


def test_the_child_obeys_commands_and_stops_when_the_app_goes_away():
    read, write = os.pipe()
    target = _Target()
    thread = serve_commands(target, read)
    os.write(write, b"pause\nunpa")
    os.write(write, b"use\n")
    os.close(write)  # the app closed (or crashed): the run must stop with a checkpoint
    thread.join(5)
    os.close(read)
    assert target.calls == ["pause", "unpause", "stop"]


# A stand-in for `simclr-studio train --link`: it speaks the protocol without training.
FAKE_CHILD = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    from simclr_studio.events import LogEvent, RunFinished, StateEvent
    from simclr_studio.training_link import decode_commands, encode_event
    print("a stray print on stdout", flush=True)
    sys.stderr.write("child says hello\\n")
    sys.stdout.write(encode_event(LogEvent(message="ready")))
    sys.stdout.flush()
    pending = b""
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        commands, pending = decode_commands(pending, chunk)
        for c in commands:
            if c == "stop":
                sys.stdout.write(encode_event(RunFinished(status="stopped", epoch=0, global_step=5)))
                sys.stdout.flush()
                sys.exit(0)
            sys.stdout.write(encode_event(StateEvent(state="paused" if c == "pause" else "running")))
            sys.stdout.flush()
""")


def _drain_until(child: ChildRun, predicate, timeout: float = 20.0) -> list:
    import time

    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        seen += child.drain()
        if predicate(seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"timed out; saw {seen}")


def test_the_parent_drives_a_child_over_real_pipes(tmp_path):
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    child = ChildRun(tmp_path / "run", [sys.executable, "-c", FAKE_CHILD.format(root=root)])
    child.start()
    assert child.is_running()
    seen = _drain_until(child, lambda s: any(isinstance(e, LogEvent) for e in s))
    child.pause()
    seen += _drain_until(child, lambda s: any(isinstance(e, StateEvent) for e in s))
    child.unpause()
    child.stop()
    seen += _drain_until(child, lambda s: any(isinstance(e, RunFinished) for e in s))
    assert child.wait(10)
    seen += child.drain()
    states = [e.state for e in seen if isinstance(e, StateEvent)]
    assert states == ["paused", "running"]
    assert child.status == "stopped" and not child.is_running()
    assert [e for e in seen if isinstance(e, ErrorEvent)] == []
    assert "child says hello" in (tmp_path / "run" / "train.log").read_text()  # people's messages go to the log


def test_a_child_that_dies_without_a_word_is_reported_with_its_last_messages(tmp_path):
    script = "import sys; sys.stderr.write('Segmentation fault in the loader\\n'); sys.exit(139)"
    child = ChildRun(tmp_path, [sys.executable, "-c", script])
    child.start()
    assert child.wait(20)
    events = child.drain()
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed"
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and "code 139" in errors[0].message and "Segmentation fault" in errors[0].message
    assert child.status == "failed"


def test_a_child_that_cannot_start_is_a_failed_run_not_a_crash(tmp_path):
    child = ChildRun(tmp_path, [str(tmp_path / "no-such-program")])
    child.start()
    assert child.wait(5)
    events = child.drain()
    assert isinstance(events[0], ErrorEvent) and "cannot start training" in events[0].message
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed" and child.status == "failed"


def test_a_new_runs_config_file_is_removed_when_the_child_ends(tmp_path):
    cfg = RunConfig(data_dir=str(tmp_path), epochs=1)
    child = ChildRun.new_run(cfg, tmp_path / "run")
    config_file = child.command[child.command.index("--config") + 1]
    assert RunConfig.load(config_file).data_dir == str(tmp_path)
    child.command = [sys.executable, "-c", "pass"]  # do not train: only the clean-up is under test
    child.start()
    assert child.wait(20)
    assert not os.path.exists(config_file)
