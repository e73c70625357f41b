"""Each benchmark script runs end to end at a toy size (the numbers themselves are not checked here)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def run_script(*args, timeout=600):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_gui_latency_runs(tmp_path):
    out = tmp_path / "gui.json"
    result = run_script("benchmarks/gui_latency.py", "--epochs", "1", "--repeats", "1", "--big-folder", "40",
                        "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["in_window_images_per_s"] > 0 and data["headless_images_per_s"] > 0
    assert data["training_stall"]["max_ms"] >= 0 and data["big_folder"]["images"] == 40
    assert "UI overhead" in result.stdout
