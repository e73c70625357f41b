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


def test_fmnist_benchmark_runs(tmp_path):
    import pytest

    from simclr_studio.fashion_mnist import DEFAULT_DIR, INSTALL_HINT

    if not DEFAULT_DIR.exists():
        pytest.skip(f"Fashion-MNIST is not installed; {INSTALL_HINT}")
    out = tmp_path / "fmnist.json"
    result = run_script("benchmarks/fmnist.py", "--limit-train", "600", "--limit-test", "200", "--epochs", "1",
                        "--work", str(tmp_path / "work"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["features"] for r in data["results"]] == ["raw pixels", "random encoder", "SimCLR"]
    assert all(0 <= r["knn"] <= 1 and 0 <= r["linear"] <= 1 for r in data["results"])
    assert data["n_train"] == 600 and data["n_test"] == 200 and data["config"]["optimizer"] == "adamw"
    assert data["targets"] == {}  # a smoke run is not judged against the preset's targets
    assert "SimCLR over the best baseline" in result.stdout


def test_throughput_benchmark_runs(tmp_path):
    out = tmp_path / "throughput.json"
    result = run_script("benchmarks/throughput.py", "--batch", "8", "--size", "16", "--steps", "2", "--warmup", "1",
                        "--repeats", "1", "--work", str(tmp_path / "work"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    rates = data["images_per_s"]
    assert rates["ours"]["median"] > 0 and rates["compute_only"]["median"] > 0
    assert data["a_over_b"] == rates["ours"]["median"] / rates["compute_only"]["median"]
    if data["peer"] is not None:  # lightly installed (the optional "bench" extra)
        assert data["a_over_c"] > 0
        assert all(row["max_abs_value_diff"] < 1e-9 for row in data["nt_xent_vs_lightly"].values())


def test_startup_benchmark_runs(tmp_path):
    out = tmp_path / "startup.json"
    result = run_script("benchmarks/startup.py", "--runs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert 0 < data["splash_s"]["median"] < data["window_s"]["median"]
