"""Each benchmark script runs end to end at a toy size (the numbers themselves are not checked here).

The scripts of the tests selected start together, two at a time, when the first of them asks (each is
mostly one core's work: imports, decoding, a short training), and each test waits for its own run: the
module takes a little over half its time one after the other. Nothing here is timed, so the overlap
changes no assertion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # each runs a benchmark script end to end


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def fashion_mnist_missing() -> str | None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from fashion_mnist import DEFAULT_DIR, INSTALL_HINT

    return None if DEFAULT_DIR.exists() else f"Fashion-MNIST is not installed; {INSTALL_HINT}"


def scripts() -> dict[str, tuple[str | None, Callable[[Path], list[str]]]]:
    """Each test's script: why it cannot run here (or None) and its command line, given a folder of its
    own. The longest first, so that the two at a time end together."""
    fmnist = fashion_mnist_missing()
    npm = None if shutil.which("npm") else "the colour benchmark fetches its images with npm"
    return {
        "test_gui_latency_runs": (None, lambda d: [
            "benchmarks/gui_latency.py", "--epochs", "1", "--repeats", "1", "--stall-runs", "1", "--big-folder", "40",
            "--out", str(d / "gui.json")]),
        "test_duplicates_benchmark_runs": (fmnist, lambda d: [
            "benchmarks/duplicates.py", "--quick", "--minutes", "0.1", "--work", str(d / "work"),
            "--out", str(d / "duplicates.json")]),
        "test_explore_benchmark_runs": (fmnist, lambda d: [
            "benchmarks/explore.py", "--quick", "--out", str(d / "explore.json"), "--cache", str(d / "cache")]),
        "test_fmnist_benchmark_runs": (fmnist, lambda d: [
            "benchmarks/fmnist.py", "--limit-train", "600", "--limit-test", "200", "--minutes", "0.15",
            "--work", str(d / "work"), "--out", str(d / "fmnist.json")]),
        "test_colour_benchmark_runs": (npm, lambda d: [
            "benchmarks/colour.py", "--limit-train", "300", "--limit-test", "90", "--minutes", "0.15",
            "--work", str(d / "work"), "--out", str(d / "colour.json")]),
        "test_explore_latency_benchmark_runs": (None, lambda d: [
            "benchmarks/explore_latency.py", "--n", "1500", "--out", str(d / "latency.json")]),
        "test_startup_benchmark_runs": (None, lambda d: [
            "benchmarks/startup.py", "--runs", "1", "--out", str(d / "startup.json")]),
        "test_throughput_benchmark_runs": (None, lambda d: [
            "benchmarks/throughput.py", "--batch", "8", "--gray-size", "16", "--colour-size", "16", "--steps", "2",
            "--warmup", "1", "--repeats", "1", "--threads", "1", "--work", str(d / "work"),
            "--out", str(d / "throughput.json")]),
        "test_throughput_colour_case_alone": (None, lambda d: [
            "benchmarks/throughput.py", "--case", "colour", "--no-peer", "--batch", "4", "--colour-size", "16",
            "--steps", "1", "--warmup", "1", "--repeats", "1", "--threads", "1", "--work", str(d / "work"),
            "--out", str(d / "throughput.json")]),
    }


class Launched:
    """The selected tests' scripts, running two at a time; ``launched(test)`` waits for that test's."""

    def __init__(self, selected: set[str], tmp_path_factory: pytest.TempPathFactory) -> None:
        self.pool = ThreadPoolExecutor(2)
        self.runs: dict[str, tuple[str | None, Future | None, Path]] = {}
        for name, (missing, command) in scripts().items():
            if name in selected:
                folder = tmp_path_factory.mktemp(name.removeprefix("test_"))
                self.runs[name] = (missing, None if missing else self.pool.submit(run_script, *command(folder)),
                                   folder)

    def __call__(self, request: pytest.FixtureRequest) -> tuple[subprocess.CompletedProcess, Path]:
        missing, run, folder = self.runs[request.node.name]
        if missing is not None or run is None:
            pytest.skip(missing or "not run")
        return run.result(), folder


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    runs = Launched({item.name for item in request.session.items if getattr(item, "module", None) is request.module},
                    tmp_path_factory)
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)


def test_gui_latency_runs(launched, request):
    result, folder = launched(request)
    out = folder / "gui.json"
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["in_window_images_per_s"] > 0 and data["headless_images_per_s"] > 0
    assert data["training_stall"]["max_ms"] >= 0 and data["big_folder"]["images"] == 40
    assert "UI overhead" in result.stdout


def test_explore_benchmark_runs(launched, request):
    result, folder = launched(request)
    out = folder / "explore.json"
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["case"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"extract", "pca", "tsne", "neighbours", "scan", "map_redraw"}
    assert rows["scan"]["images"] == 300 and rows["extract"]["images_per_s"] > 0
    assert rows["neighbours"]["query_ms_median"] > 0 and all(r["peak_rss_mb"] > 0 for r in rows.values())


def test_explore_latency_benchmark_runs(launched, request):
    result, folder = launched(request)
    out = folder / "latency.json"
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    steps = ("tsne_live", "duplicates_search", "duplicates_slider", "duplicates_groups_drawn", "outliers", "mislabels")
    assert all(data[step]["max_ms"] >= 0 for step in steps) and data["n"] == 1500
    assert data["tsne_live"]["snapshots_drawn"] >= 1 and data["duplicates_slider"]["steps"] == 41
    assert "worst stall" in result.stdout


def test_duplicates_benchmark_runs(launched, request):
    result, folder = launched(request)
    out = folder / "duplicates.json"
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())["fmnist"]
    both = data["features or pixels"]["table"]
    assert [row["threshold"] for row in both][-1] == 0.999 and all(row["exact"] == 1.0 for row in both)
    app = data["features, pixels or crops"]["table"]  # the higher of more measures: never finds less
    assert all(a[kind] >= b[kind] for a, b in zip(app, both, strict=True) for kind in a if kind.startswith("crop"))
    assert data["n_copied"] == 200 and "== similarity: features, pixels or crops ==" in result.stdout


def test_fmnist_benchmark_runs(launched, request):
    result, folder = launched(request)
    out = folder / "fmnist.json"
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["features"] for r in data["results"]] == ["raw pixels", "random encoder", "SimCLR"]
    assert all(0 <= r["knn"] <= 1 and 0 <= r["linear"] <= 1 for r in data["results"])
    assert data["n_train"] == 600 and data["n_test"] == 200
    assert data["config"]["optimizer"] == "adamw" and data["config"]["minutes"] == 0.15  # the CPU recipe
    assert data["targets"] == {}  # a smoke run is not judged against the preset's targets
    assert data["seconds"]["budget"] == 9.0 and data["training"]["epochs"] >= 1
    assert "SimCLR over the best baseline" in result.stdout


def test_colour_benchmark_runs(launched, request):
    result, folder = launched(request)
    out = folder / "colour.json"
    if result.returncode != 0 and "npm" in result.stderr and "registry" in result.stderr.lower():
        pytest.skip("the npm registry could not be reached")
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["features"] for r in data["results"]] == ["raw pixels", "random encoder", "SimCLR"]
    assert data["results"][0]["dim"] == 3 * 32 * 32 and data["config"]["image_size"] == 32
    assert data["targets"] == {} and "SimCLR over the best baseline" in result.stdout


def test_throughput_benchmark_runs(launched, request):
    """Both cases at a toy size: (a), (b) and, with lightly installed, (c), with ratios and targets per case,
    and the colour case on the whole-image cache (shorter side 1.5 × the training size)."""
    result, folder = launched(request)
    out = folder / "throughput.json"
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert list(data["cases"]) == ["gray", "colour"]
    gray, colour = data["cases"]["gray"], data["cases"]["colour"]
    assert gray["cache_layout"] == {"side": 16, "stored": 16, "whole": False}
    assert colour["cache_layout"] == {"side": 24, "stored": 32, "whole": True}  # 32×24 / 24×32 images
    assert gray["config"]["augment"]["grayscale_p"] == 0 and colour["config"]["augment"]["grayscale_p"] > 0
    assert gray["config"]["image_size"] == colour["config"]["image_size"] == 16
    for name, case in data["cases"].items():
        rates = case["images_per_s"]
        assert rates["ours"]["median"] > 0 and rates["compute_only"]["median"] > 0, name
        assert case["a_over_b"] == rates["ours"]["median"] / rates["compute_only"]["median"]
        ab = case["targets"]["a_over_b"]
        assert ab["value"] == case["a_over_b"] and ab["met"] == (ab["value"] >= ab["target"] == 0.9)
        if data["peer"] is None:  # lightly not installed (the optional "bench" extra)
            assert case["a_over_c"] is None and case["targets"]["a_over_c"] is None
        else:
            best = rates[case["peer_best"]]["median"]
            assert best == max(v["median"] for k, v in rates.items() if k.startswith("lightly_w"))
            assert case["a_over_c"] == rates["ours"]["median"] / best > 0
            ac = case["targets"]["a_over_c"]
            assert ac["met"] == (ac["value"] >= ac["target"] == 1.2)
    if data["peer"] is not None:
        assert all(row["max_abs_value_diff"] < 1e-9 for row in data["nt_xent_vs_lightly"].values())
    for text in ("gray: ", "colour: ", "CacheLayout(side=24, stored=32, whole=True)", "a/b = "):
        assert text in result.stdout, text
    assert result.stdout.count("a/b = ") == 2


def test_throughput_colour_case_alone(launched, request):
    """``--case colour`` measures only the colour case; its folder is deterministic, coloured, landscape and
    portrait at 2 × 1.5 times the training size."""
    import numpy as np
    from PIL import Image

    result, folder = launched(request)
    out = folder / "throughput.json"
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert list(data["cases"]) == ["colour"] and data["peer"] is None
    assert "gray: " not in result.stdout
    files = sorted((folder / "work" / "colour-8-16").glob("*.jpg"))
    assert len(files) == 8
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    assert {im.shape for im in images} == {(24, 32, 3), (32, 24, 3)}
    assert all(np.ptp(im, axis=2).mean() > 10 for im in images)  # colour, not grey
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from throughput import colour_image
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert np.array_equal(colour_image(3, 16), colour_image(3, 16))
    assert not np.array_equal(colour_image(3, 16), colour_image(5, 16))


def test_startup_benchmark_runs(launched, request):
    result, folder = launched(request)
    out = folder / "startup.json"
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert 0 < data["splash_s"]["median"] < data["window_s"]["median"]
