"""The wheel carries everything the app needs, and works when installed into a fresh environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # From a clean copy of the sources: a build/ folder left in the checkout would put modules that
    # have since moved or gone into the wheel.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("simclr_studio", "resources"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # Build with this environment's setuptools when it is recent enough (fast, offline); else isolated.
    try:
        import setuptools

        flags = ["--no-isolation"] if int(setuptools.__version__.split(".")[0]) >= 68 else []
    except ImportError:
        flags = []
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", *flags, "--outdir", str(out), str(src)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (found,) = out.glob("simclr_studio-*.whl")
    return found


@pytest.mark.slow  # builds a wheel
def test_wheel_contains_the_resources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    res = "simclr_studio/resources/"
    assert f"{res}style.qss" in names and f"{res}icons/simclr-studio.svg" in names
    assert {f"{res}icons/simclr-studio-{s}.png" for s in (16, 32, 48, 128, 256, 512)} <= names
    assert sum(n.startswith(f"{res}demo/") and n.endswith(".png") for n in names) == 600
    assert not any("screenshots" in n for n in names)  # documentation images stay out of the wheel


@pytest.mark.slow  # builds a wheel
def test_wheel_holds_every_package_and_no_dev_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {p.relative_to(REPO).as_posix() for p in (REPO / "simclr_studio").rglob("*.py")}
    assert source <= names  # the launcher, the app, the command line, the sessions and the engine
    assert {"simclr_studio/__main__.py", "simclr_studio/cli/__init__.py", "simclr_studio/gui/app.py",
            "simclr_studio/session/wording.py"} <= names
    # Dev-only scripts live in benchmarks/ and packaging/, outside the package.
    assert not any(n.endswith(("fashion_mnist.py", "make_demo.py")) for n in names)
    assert not [n for n in names if n.startswith("simclr_studio/resources/") and n.endswith(".py")]
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "simclr-studio = simclr_studio.__main__:main" in scripts


@pytest.mark.slow  # builds a wheel, installs it in a fresh environment
def test_wheel_installs_and_trains_in_a_fresh_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    # The dependencies (PyTorch is gigabytes) come from this interpreter's site-packages, added as a
    # plain path: its .pth files, including a development install of this project, are not run.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer-site-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import simclr_studio, sys; print(simclr_studio.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where

    version = subprocess.run([str(bindir / "simclr-studio"), "--version"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("simclr-studio "), version.stderr
    run = tmp_path / "run"
    train = subprocess.run([str(bindir / "simclr-studio"), "train", "--demo", "--out", str(run), "--epochs", "1",
                            "--device", "cpu", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (run / "checkpoints" / "last.pt").exists() and "completed" in train.stdout


def test_bundle_launcher_survives_having_no_console(tmp_path, monkeypatch):
    # A windowed bundle starts with sys.stdout/sys.stderr set to None: printing must not crash.
    import importlib.util

    spec = importlib.util.spec_from_file_location("launcher", REPO / "packaging" / "launcher.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    launcher._safe_streams()
    print("hello from a windowed app")
    print("and its errors", file=sys.stderr)
    sys.stdout.flush()
    log = (tmp_path / "simclr-studio" / "app.log").read_text()
    assert "hello from a windowed app" in log and "and its errors" in log


def test_desktop_entry_is_valid():
    entry = (REPO / "packaging" / "simclr-studio.desktop").read_text().splitlines()
    assert entry[0] == "[Desktop Entry]"
    keys = dict(line.split("=", 1) for line in entry[1:] if "=" in line)
    assert keys["Type"] == "Application" and keys["Icon"] == "simclr-studio"
    assert keys["Exec"].startswith("simclr-studio")
    assert keys["Categories"].endswith(";")


def test_desktop_entry_installs_for_the_current_user(tmp_path):
    exe = tmp_path / "bundle" / "simclr-studio"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}
    script = REPO / "packaging" / "install_desktop_entry.sh"
    result = subprocess.run(["bash", str(script), str(exe)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    entry = (tmp_path / "share" / "applications" / "simclr-studio.desktop").read_text()
    assert f'Exec="{exe}" %f' in entry
    for size in (16, 48, 256, 512):
        assert (tmp_path / "share" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "simclr-studio.png").is_file()
    assert (tmp_path / "share" / "icons" / "hicolor" / "scalable" / "apps" / "simclr-studio.svg").is_file()
    subprocess.run(["bash", str(script), "--uninstall"], env=env, check=True, capture_output=True, timeout=60)
    assert not (tmp_path / "share" / "applications" / "simclr-studio.desktop").exists()
