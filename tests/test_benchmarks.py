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
    result = run_script("benchmarks/gui_latency.py", "--epochs", "1", "--repeats", "1", "--stall-runs", "1", "--big-folder", "40",
                        "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["in_window_images_per_s"] > 0 and data["headless_images_per_s"] > 0
    assert data["training_stall"]["max_ms"] >= 0 and data["big_folder"]["images"] == 40
    assert "UI overhead" in result.stdout


def test_explore_benchmark_runs(tmp_path):
    import pytest

    from simclr_studio.fashion_mnist import DEFAULT_DIR, INSTALL_HINT

    if not DEFAULT_DIR.exists():
        pytest.skip(f"Fashion-MNIST is not installed; {INSTALL_HINT}")
    out = tmp_path / "explore.json"
    result = run_script("benchmarks/explore.py", "--quick", "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["case"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"extract", "pca", "tsne", "neighbours", "scan", "map_redraw"}
    assert rows["scan"]["images"] == 300 and rows["extract"]["images_per_s"] > 0
    assert rows["neighbours"]["query_ms_median"] > 0 and all(r["peak_rss_mb"] > 0 for r in rows.values())
