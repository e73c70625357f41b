"""Faults on the data side: huge images, unreadable entries, hostile file names, bad config values.

Each test reproduces a probe that crashed, or ran out of memory, before the fix."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_studio import data
from simclr_studio.config import AugmentConfig, ConfigError, RunConfig
from simclr_studio.data import DataError, decode_image, scan_folder
from simclr_studio.export import save_embeddings
from simclr_studio.image_cache import CacheLayout, decode_cache

HUGE_SIDE = 10_900  # 118.8 MP: under the old 120 MP limit; 475 MB decoded as RGBA


def _noise(path: Path, w: int = 40, h: int = 30, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _reasons(scan: data.ScanResult) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in scan.skipped}


# ---- 1. decode memory -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def huge_folder(tmp_path_factory) -> Path:
    """Two 10,900² RGBA PNGs (2 MB each on disk: gradients compress) and 14 normal photos."""
    root = tmp_path_factory.mktemp("huge")
    g = Image.linear_gradient("L").resize((HUGE_SIDE, HUGE_SIDE))
    im = Image.merge("RGBA", (g, g.transpose(Image.Transpose.ROTATE_90), g, Image.new("L", g.size, 200)))
    im.save(root / "huge_a.png", compress_level=1)
    del g, im
    shutil.copy(root / "huge_a.png", root / "huge_b.png")
    for i in range(14):
        _noise(root / f"n{i:02d}.jpg", 64, 48, seed=i)
    return root


CHILD = """
import sys
from simclr_studio import data
from simclr_studio.data import scan_folder, typical_side
from simclr_studio.image_cache import decode_cache, plan_cache_layout
data.MAX_IMAGE_PIXELS = 120_000_000  # the old limit: both huge files are decoded
scan = scan_folder(sys.argv[1])
layout = plan_cache_layout(16, typical_side(scan.paths))
pixels, extents, failures = decode_cache(scan.paths, layout, threads=8)
print(len(scan), len(failures))
"""
WRAPPER = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-c", sys.argv[1], sys.argv[2]], capture_output=True, text=True)
print(done.stdout.strip(), done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_caching_a_folder_with_two_huge_pngs_stays_under_1_5_gb(huge_folder):
    # Before: 5.9 GB and 16 s (each decode made ~5 full-size copies, 8 threads at once).
    # The wrapper's only child is the measured process, so RUSAGE_CHILDREN is its peak RSS.
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", WRAPPER, CHILD, str(huge_folder)],
                         capture_output=True, text=True, timeout=300).stdout.split()
    n_images, n_failed, rc, peak_kb = (int(v) for v in out)
    print(f"peak RSS {peak_kb / 1024:.0f} MB in {time.monotonic() - start:.1f} s")
    assert (rc, n_images, n_failed) == (0, 16, 0)  # the huge files were decoded, not skipped
    assert peak_kb * 1024 < 1.5 * (1 << 30)


def test_default_limit_skips_huge_images_and_says_how_to_allow_them(tmp_path):
    im = Image.new("RGBA", (9000, 8000))  # 72 MP: over the 64 MP default, under the old 120 MP
    im.save(tmp_path / "big.png", compress_level=1)
    _noise(tmp_path / "ok.png")
    scan = scan_folder(tmp_path)
    assert [Path(p).name for p in scan.paths] == ["ok.png"]
    assert "9000×8000" in _reasons(scan)["big.png"] and "max_image_pixels" in _reasons(scan)["big.png"]
    assert len(scan_folder(tmp_path, max_pixels=80_000_000)) == 2  # the config override


def test_max_pixels_is_honoured_by_every_decoder(tmp_path):
    path = _noise(tmp_path / "a.png", 40, 30)
    with pytest.raises(DataError, match="too large"):
        decode_image(path, 8, max_pixels=1000)
    assert "too large" in _reasons(scan_folder(tmp_path, max_pixels=1000))["a.png"]
    _, _, failures = decode_cache([str(path)], CacheLayout(8, 8, False), max_pixels=1000)
    assert "too large" in failures[0]
    _, _, failures = decode_cache([str(path)], CacheLayout(8, 11, True), max_pixels=1000)
    assert "too large" in failures[0]
    from simclr_studio.batches import ImageFileDataset

    with pytest.warns(UserWarning, match="too large"):
        _, _, index = ImageFileDataset([str(path)], 8, max_pixels=1000)[0]
    assert index == -1  # flagged as a decode failure


def test_thumbnails_share_the_pixel_limit(tmp_path, monkeypatch):
    from simclr_studio.gui.thumbnails import load_qimage

    path = _noise(tmp_path / "a.png", 40, 30)
    assert load_qimage(str(path), 16).width() == 16
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="too large"):
        load_qimage(str(path), 16)


def test_big_decodes_wait_for_the_byte_budget(tmp_path, monkeypatch):
    """Decoding threads hold at most the budget's worth of full-size pixels (one larger image alone)."""
    budget = data._DecodeBudget(2 * 300 * 200 * 4)  # two of the 300×200 RGBA images below
    monkeypatch.setattr(data, "_budget", budget)
    peak = []
    real_reduce = data._reduced_rgb

    def watched(im, factor):
        peak.append(budget.used)
        time.sleep(0.05)
        return real_reduce(im, factor)

    monkeypatch.setattr(data, "_reduced_rgb", watched)
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGBA", (300, 200), (i, 0, 0, 255)).save(paths[-1])
    _, _, failures = decode_cache(paths, CacheLayout(16, 16, False), threads=6)
    assert not failures and max(peak) == budget.total and budget.used == 0
    peak.clear()
    big = tmp_path / "big.png"
    Image.new("RGBA", (600, 400)).save(big)  # 4× a small one: over the whole budget, runs alone
    decode_cache([str(big)] + paths[:2], CacheLayout(16, 16, False), threads=3)
    assert max(peak) == budget.total and budget.used == 0


def test_budget_lets_one_oversized_reservation_run_alone():
    budget = data._DecodeBudget(100)
    order: list[str] = []
    with budget.reserve(60):
        entered = threading.Event()

        def big() -> None:
            with budget.reserve(500):
                order.append("big")
                entered.set()

        t = threading.Thread(target=big)
        t.start()
        time.sleep(0.1)
        assert not entered.is_set()  # waits for the 60 held
        order.append("small done")
    t.join(5)
    assert order == ["small done", "big"] and budget.used == 0


def _old_decode(path: Path, size: int) -> np.ndarray:
    """The decode before reduction: full-size conversion, then one resize."""
    with Image.open(path) as im:
        rgb = data._to_rgb(im)
        w, h = rgb.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0))


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "P", "RGB", "LA"])
def test_reduced_decode_matches_a_full_size_decode(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = (np.add.outer(np.arange(900), np.arange(1200)) / 2100 * 255).astype(np.uint8)
    blocks = np.kron(rng.integers(0, 255, (9, 12), dtype=np.uint8), np.ones((100, 100), np.uint8))
    rgba = np.stack([base, blocks, 255 - base, np.where(blocks > 128, 255, 40).astype(np.uint8)], axis=2)
    im = Image.fromarray(rgba)
    if mode == "I;16":
        im = Image.fromarray((base.astype(np.uint16) * 200 + 1000).astype(np.uint16))
    elif mode != "RGBA":
        im = im.convert(mode)
    path = tmp_path / "x.png"
    im.save(path)
    new, old = decode_image(path, 24).astype(float), _old_decode(path, 24).astype(float)
    assert new.shape == old.shape == (24, 24, 3)
    assert np.abs(new - old).mean() < 3.0


# ---- 2. unreadable entries --------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "r"
    _noise(root / "cats" / "a.png")
    _noise(root / "dogs" / "b.png")
    _noise(root / "locked" / "c.png")
    (root / "dogs" / "notes.txt").write_text("x")
    _noise(root / "dogs" / "secret.png")
    return root


def test_an_unlistable_folder_is_skipped_and_listed(folder, monkeypatch):
    real = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    scan = scan_folder(folder)
    assert sorted(Path(p).name for p in scan.paths) == ["a.png", "b.png", "secret.png"]
    assert _reasons(scan)["locked"] == "unreadable folder (Permission denied)"
    assert "locked: unreadable folder" in scan.report()


def test_an_entry_that_cannot_be_stat_ed_is_skipped_and_listed(folder, monkeypatch):
    real_exists, real_stat = Path.exists, Path.stat

    def exists(self, *args, **kwargs):
        if self.name == "notes.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    def stat(self, *args, **kwargs):
        if self.name == "secret.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    monkeypatch.setattr(Path, "stat", stat)
    for check_headers in (True, False):
        reasons = _reasons(scan_folder(folder, check_headers=check_headers))
        assert reasons["notes.txt"] == "unreadable (Permission denied)"
    assert _reasons(scan_folder(folder))["secret.png"] == "unreadable (Permission denied)"


def test_an_unreadable_root_is_one_line(folder, monkeypatch):
    def exists(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(DataError, match=r"^cannot read folder .*: Permission denied$"):
        scan_folder(folder)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_chmod_000_folder_and_file_are_skipped_and_listed(folder):
    (folder / "cats" / "x.txt").write_text("x")
    os.chmod(folder / "locked", 0)
    os.chmod(folder / "dogs" / "secret.png", 0)
    os.chmod(folder / "cats", 0o600)  # listable, but its entries cannot be stat'ed
    try:
        scan = scan_folder(folder)
        reasons = _reasons(scan)
        assert reasons["locked"].startswith("unreadable folder")
        assert reasons["secret.png"].startswith("unreadable")
        assert reasons["x.txt"].startswith("unreadable")
        assert [Path(p).name for p in scan.paths] == ["b.png"]
    finally:
        for p in (folder / "locked", folder / "dogs" / "secret.png", folder / "cats"):
            os.chmod(p, 0o700)


# ---- 3. file names in exports -----------------------------------------------------------------
HOSTILE = [os.fsdecode(b"/d/bad\xffname.png"), "/d/new\nline.png", "/d/cr\rname.png", "=cmd|' /C calc'!A0",
           "+1.png", "-2.png", "@SUM(A1).png", "\tx.png", "/d/plain, \"quoted\".png"]


def test_csv_export_survives_hostile_names_and_defuses_formulas(tmp_path):
    feats = np.arange(len(HOSTILE) * 2, dtype=np.float32).reshape(-1, 2)
    classes = ["=HYPERLINK(\"http://x\")", "ok"]
    labels = [i % 2 for i in range(len(HOSTILE))]
    out = save_embeddings(tmp_path / "e.csv", feats, HOSTILE, labels, classes)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + len(HOSTILE)
    cells = [row[0] for row in rows[1:]]
    assert cells[0] == "/d/bad\\xffname.png"
    assert cells[1:3] == ["/d/new\nline.png", "/d/cr\rname.png"]
    assert cells[3:8] == ["'" + name for name in HOSTILE[3:8]]
    assert cells[8] == HOSTILE[8]
    assert rows[1][2] == "'=HYPERLINK(\"http://x\")" and rows[2][2] == "ok"
    assert [float(v) for v in rows[-1][3:]] == feats[-1].tolist()


def test_npz_export_keeps_hostile_names(tmp_path):
    feats = np.zeros((len(HOSTILE), 2), np.float32)
    out = save_embeddings(tmp_path / "e.npz", feats, HOSTILE, [-1] * len(HOSTILE), [])
    with np.load(out) as z:
        assert z["paths"].tolist() == HOSTILE


# ---- 4. config values -------------------------------------------------------------------------
def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(b'{"data_dir": "caf\xe9"}')
    with pytest.raises(ConfigError) as err:
        RunConfig.load(path)
    assert "not UTF-8" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("seed", [-1, 2**64, 10**30])
def test_seed_outside_torch_range_is_refused(seed):
    with pytest.raises(ConfigError, match="seed"):
        RunConfig(seed=seed).validate()


def test_seed_at_the_edge_of_torch_range_is_accepted():
    import torch

    RunConfig(seed=2**64 - 1).validate()
    torch.manual_seed(2**64 - 1)  # the bound is torch's own


@pytest.mark.parametrize("name", ["lr", "temperature", "weight_decay", "minutes", "momentum", "warmup_epochs",
                                  "cache_ram_gb"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(name, value):
    with pytest.raises(ConfigError, match=f"{name} must be a finite number"):
        RunConfig(**{name: value}).validate()


@pytest.mark.parametrize("name,value", [("flip_p", math.nan), ("jitter_strength", math.inf),
                                        ("blur_sigma", (0.1, math.inf)), ("blend_alpha", (math.nan, 0.2)),
                                        ("crop_scale", (math.nan, 1.0))])
def test_non_finite_augment_floats_are_refused(name, value):
    with pytest.raises(ConfigError, match=f"augment.{name} must be a finite number"):
        RunConfig(augment=AugmentConfig(**{name: value})).validate()


def test_nan_from_a_json_file_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"lr": NaN, "image_size": 32}')  # Python's json reads NaN and Infinity
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        RunConfig.load(path).validate()


@pytest.mark.parametrize("size", [1025, 5000])
def test_image_size_has_an_upper_bound(size):
    with pytest.raises(ConfigError, match="image_size must be at most 1024"):
        RunConfig(image_size=size).validate()
    RunConfig(image_size=1024).validate()


def test_max_image_pixels_is_a_validated_config_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"max_image_pixels": 150_000_000}))
    assert RunConfig.load(path).max_image_pixels == 150_000_000
    RunConfig.load(path).validate()
    for bad in (0, 10**12):
        with pytest.raises(ConfigError, match="max_image_pixels"):
            RunConfig(max_image_pixels=bad).validate()


def test_training_honours_the_runs_pixel_limit(tmp_path):
    """max_image_pixels reaches every decoder of a training run: an image over it is skipped and said."""
    from conftest import make_image_folder

    from simclr_studio.train import Trainer

    folder = make_image_folder(tmp_path / "images", classes=2, per_class=8, size=20)
    Image.fromarray(np.zeros((120, 120, 3), np.uint8)).save(folder / "class_0" / "big.png")
    cfg = RunConfig(data_dir=str(folder), backbone="tiny-cnn", image_size=16, batch_size=8, epochs=1, device="cpu",
                    optimizer="sgd", eval_every=0, max_image_pixels=120 * 120 - 1)
    events: list = []
    assert Trainer(cfg, tmp_path / "run", on_event=events.append).run() == "completed"
    skipped = [e.message for e in events if getattr(e, "kind", "") == "log" and "big.png" in e.message]
    assert len(skipped) == 1 and "max_image_pixels" in skipped[0]
    assert next(e for e in events if e.kind == "run_started").n_images == 16
