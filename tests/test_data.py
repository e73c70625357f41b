"""simclr_studio.data: folder scanning, robust decoding, the RAM cache and the batch sources.

Every image is generated in tmp_path and tiny, so the whole module runs in a few seconds on CPU.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

from simclr_studio import data
from simclr_studio.batches import BatchSource, ImageFileDataset, epoch_permutation
from simclr_studio.data import DataError, ScanResult, SkippedFile, decode_image, scan_folder, to_chw_tensor
from simclr_studio.image_cache import cache_bytes, decode_all, fits_in_ram

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks")


# ---- helpers ----------------------------------------------------------------------------------
def noise(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def save(path: Path, array: np.ndarray | None = None, *, size=(12, 10), seed: int = 0, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise(*size, seed=seed) if array is None else array).save(path, **kwargs)
    return path


def solid(path: Path, value: int, size=(12, 10)) -> Path:
    """A flat grey image whose value identifies it after decoding (any resize keeps a flat image flat)."""
    return save(path, np.full((size[1], size[0], 3), value, dtype=np.uint8))


def truncated_png(path: Path) -> Path:
    """A PNG whose header is intact but whose pixel data is cut off: the header check passes, decoding fails."""
    save(path, size=(32, 32), seed=7)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def skipped_by_name(scan: ScanResult) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in scan.skipped}


# ---- scanning ---------------------------------------------------------------------------------
@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Two class folders full of the odd files real photo folders contain."""
    root = tmp_path / "messy"
    save(root / "cats" / "good1.png", seed=1)
    save(root / "cats" / "UPPER.PNG", seed=2)
    save(root / "cats" / "Mixed.JpG", seed=3, format="JPEG")
    save(root / "cats" / "deep" / "nested" / "n.png", seed=4)
    save(root / "dogs" / "good2.png", seed=5)
    truncated_png(root / "dogs" / "trunc.png")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / "text.png").write_text("this is not a picture\n" * 20)
    (root / "dogs" / "notes.txt").write_text("hello")
    (root / "dogs" / "README").write_text("no extension")
    save(root / "dogs" / ".hidden.png", seed=6)  # hidden file: ignored
    save(root / ".thumbnails" / "t.png", seed=8)  # hidden folder: ignored
    if hasattr(os, "symlink") and os.name != "nt":
        os.symlink(root / "dogs" / "missing.png", root / "dogs" / "broken.png")
        os.symlink(root / "nowhere", root / "dogs" / "broken_link")
        os.symlink("self_loop.png", root / "dogs" / "self_loop.png")  # ELOOP on open
        os.symlink("..", root / "cats" / "up")  # directory link to its parent: a loop
        os.symlink(".", root / "dogs" / "here")  # directory link to itself
    return root


@needs_symlinks
def test_scan_keeps_good_images_and_reports_every_bad_file(messy_folder: Path):
    scan = scan_folder(messy_folder)
    names = sorted(Path(p).name for p in scan.paths)
    # trunc.png's header is fine, but the scan finds it cut off, as training's decode would.
    assert names == sorted(["good1.png", "UPPER.PNG", "Mixed.JpG", "n.png", "good2.png"])
    # The loops (cats/up -> .., dogs/here -> .) neither hang the scan nor duplicate an image.
    real = [os.path.realpath(p) for p in scan.paths]
    assert len(set(real)) == len(real)
    assert all("up" not in Path(p).relative_to(messy_folder).parts for p in scan.paths)

    skipped = skipped_by_name(scan)
    assert set(skipped) == {"empty.jpg", "text.png", "notes.txt", "README", "broken.png", "broken_link",
                            "self_loop.png", "trunc.png"}
    assert skipped["trunc.png"].startswith("truncated")
    assert skipped["empty.jpg"] == "empty file"
    assert "not an image" in skipped["text.png"]
    assert "not an image file type" in skipped["notes.txt"] and ".txt" in skipped["notes.txt"]
    assert "no extension" in skipped["README"]
    assert skipped["broken_link"] == "broken link"
    assert "unreadable" in skipped["broken.png"]
    assert "unreadable" in skipped["self_loop.png"]
    for s in scan.skipped:
        assert isinstance(s, SkippedFile) and s.path and s.reason.strip()
        assert Path(s.path).parent.exists()
    # Hidden files and folders appear nowhere.
    everything = scan.paths + [s.path for s in scan.skipped]
    assert not any(part.startswith(".") for p in everything for part in Path(p).relative_to(messy_folder).parts)


@needs_symlinks
def test_truncated_png_fails_decode_and_drop_moves_it_to_skipped(messy_folder: Path):
    scan = scan_folder(messy_folder)
    truncated_png(messy_folder / "dogs" / "good2.png")  # cut after the scan: only decoding finds it
    images, failures = decode_all(scan.paths, 8, threads=2)
    trunc = [i for i, p in enumerate(scan.paths) if p.endswith("good2.png")]
    assert list(failures) == trunc
    assert "cannot decode" in failures[trunc[0]]
    assert images[trunc[0]].sum() == 0  # failed rows stay zero
    assert all(images[i].sum() > 0 for i in range(len(scan)) if i not in failures)

    kept = scan.drop(failures)
    assert len(kept) == len(scan) - 1
    assert not any(p.endswith("good2.png") for p in kept.paths)
    assert kept.skipped[-1] == SkippedFile(scan.paths[trunc[0]], failures[trunc[0]])
    assert kept.skipped[: len(scan.skipped)] == scan.skipped
    assert len(scan.paths) == len(kept.paths) + 1  # drop returns a copy, the original is untouched
    # Labels stay aligned with their paths after the drop.
    assert [Path(p).relative_to(messy_folder).parts[0] for p in kept.paths] == [kept.classes[label]
                                                                                for label in kept.labels]
    report = kept.report()
    assert f"{len(kept)} images" in report and f"skipped {len(kept.skipped)} file(s)" in report
    assert "good2.png: cannot decode" in report


@needs_symlinks
def test_nested_images_take_their_first_level_folder_as_label(messy_folder: Path):
    scan = scan_folder(messy_folder)
    assert scan.labeled and scan.classes == ["cats", "dogs"]
    by_name = {Path(p).name: label for p, label in zip(scan.paths, scan.labels, strict=True)}
    assert by_name == {"good1.png": 0, "UPPER.PNG": 0, "Mixed.JpG": 0, "n.png": 0, "good2.png": 1}
    assert scan.class_counts() == {"cats": 4, "dogs": 1}


def test_scan_without_header_checks_keeps_undecodable_image_files(tmp_path: Path):
    root = tmp_path / "r"
    save(root / "ok.png")
    (root / "empty.jpg").parent.mkdir(exist_ok=True)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.png").write_text("nope")
    (root / "notes.txt").write_text("nope")
    scan = scan_folder(root, check_headers=False)
    assert sorted(Path(p).name for p in scan.paths) == ["empty.jpg", "ok.png", "text.png"]
    assert [Path(s.path).name for s in scan.skipped] == ["notes.txt"]
    with_checks = scan_folder(root)
    assert [Path(p).name for p in with_checks.paths] == ["ok.png"]


@needs_symlinks
def test_symlink_to_another_class_does_not_steal_its_images(tmp_path: Path):
    root = tmp_path / "r"
    for c in ("a", "b"):
        for i in range(2):
            solid(root / c / f"{c}{i}.png", 10 * i)
    os.symlink("../b", root / "a" / "also_b")  # walked before b in sorted order
    scan = scan_folder(root)
    assert scan.classes == ["a", "b"]
    assert sorted(Path(p).relative_to(root).as_posix() for p in scan.paths) == ["a/a0.png", "a/a1.png",
                                                                                 "b/b0.png", "b/b1.png"]
    assert scan.class_counts() == {"a": 2, "b": 2}


@needs_symlinks
def test_symlinked_class_folder_outside_the_root_is_followed(tmp_path: Path):
    elsewhere = tmp_path / "store" / "birds"
    solid(elsewhere / "b.png", 1)
    root = tmp_path / "r"
    solid(root / "cats" / "c.png", 2)
    os.symlink(elsewhere, root / "birds")
    scan = scan_folder(root)
    assert scan.classes == ["birds", "cats"]
    assert {Path(p).name: label for p, label in zip(scan.paths, scan.labels, strict=True)} == {"b.png": 0, "c.png": 1}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_named_like_an_image_is_skipped_without_blocking(tmp_path: Path):
    root = tmp_path / "r"
    save(root / "ok.png")
    os.mkfifo(root / "pipe.png")
    scan = scan_folder(root)  # opening a FIFO would block forever
    assert [Path(p).name for p in scan.paths] == ["ok.png"]
    assert list(skipped_by_name(scan)) == ["pipe.png"]


def test_scan_reports_progress_and_can_stop(tmp_path: Path):
    root = tmp_path / "r"
    for i in range(5):
        solid(root / f"{i}.png", i)
    calls = []
    scan = scan_folder(root, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 0) and calls[-1] == (5, 5)
    assert len(scan) == 5
    with pytest.raises(InterruptedError):  # a cancelled scan is not mistaken for an empty folder
        scan_folder(root, should_stop=lambda: True)


# ---- labels -----------------------------------------------------------------------------------
def test_two_or_more_subfolders_are_sorted_classes(tmp_path: Path):
    root = tmp_path / "r"
    counts = {"zebra": 1, "apple": 3, "mango": 2}
    for name, n in counts.items():  # created out of order
        for i in range(n):
            solid(root / name / f"{i}.png", i)
    solid(root / "loose.png", 9)  # at the root of a labeled folder: no class
    scan = scan_folder(root)
    assert scan.labeled
    assert scan.classes == ["apple", "mango", "zebra"]
    for path, label in zip(scan.paths, scan.labels, strict=True):
        rel = Path(path).relative_to(root)
        expected = scan.classes.index(rel.parts[0]) if len(rel.parts) > 1 else -1
        assert label == expected, path
    assert scan.labels.count(-1) == 1
    assert scan.class_counts() == {"apple": 3, "mango": 2, "zebra": 1}
    assert "apple (3)" in scan.report()


def test_one_subfolder_is_unlabeled(tmp_path: Path):
    root = tmp_path / "r"
    solid(root / "only" / "a.png", 1)
    solid(root / "only" / "b.png", 2)
    solid(root / "c.png", 3)
    scan = scan_folder(root)
    assert not scan.labeled and scan.classes == []
    assert len(scan) == 3 and scan.labels == [-1, -1, -1]
    assert scan.class_counts() == {}
    assert "unlabeled" in scan.report()


def test_flat_folder_is_unlabeled(tmp_path: Path):
    root = tmp_path / "r"
    for i in range(4):
        solid(root / f"{i}.jpg", i)
    scan = scan_folder(root)
    assert not scan.labeled and scan.labels == [-1] * 4 and len(scan) == 4


def test_a_subfolder_without_usable_images_is_not_a_class(tmp_path: Path):
    root = tmp_path / "r"
    solid(root / "real" / "a.png", 1)
    solid(root / "real" / "b.png", 2)
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("x")
    (root / "junk" / "bad.png").write_text("x")
    scan = scan_folder(root)
    assert not scan.labeled and scan.labels == [-1, -1]


def test_class_counts_keep_a_class_whose_images_were_all_dropped(tmp_path: Path):
    root = tmp_path / "r"
    solid(root / "a" / "1.png", 1)
    solid(root / "b" / "2.png", 2)
    solid(root / "b" / "3.png", 3)
    scan = scan_folder(root)
    dropped = scan.drop({0: "gone"})
    assert dropped.classes == ["a", "b"] and dropped.labels == [1, 1]
    assert dropped.class_counts() == {"a": 0, "b": 2}
    assert scan.drop({0: "x", 1: "y", 2: "z"}).class_counts() == {"a": 0, "b": 0}


# ---- folder errors ----------------------------------------------------------------------------
def test_missing_folder_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "does_not_exist"
    with pytest.raises(DataError, match="folder not found") as err:
        scan_folder(missing)
    assert str(missing) in str(err.value)


def test_a_file_is_not_a_folder(tmp_path: Path):
    file = save(tmp_path / "single.png")
    with pytest.raises(DataError, match="not a folder") as err:
        scan_folder(file)
    assert str(file) in str(err.value)


def test_empty_folder_scans_to_nothing(tmp_path: Path):
    scan = scan_folder(tmp_path)
    assert len(scan) == 0 and not scan.skipped and not scan.labeled


# ---- decode_image -----------------------------------------------------------------------------
def test_output_is_uint8_square_and_centre_cropped(tmp_path: Path):
    # 30 wide x 10 high: red | green | blue thirds; the centre square is the green third.
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, :10] = (255, 0, 0)
    wide[:, 10:20] = (0, 255, 0)
    wide[:, 20:] = (0, 0, 255)
    out = decode_image(save(tmp_path / "wide.png", wide), 10)
    assert out.dtype == np.uint8 and out.shape == (10, 10, 3)
    assert (out == np.array([0, 255, 0], np.uint8)).all()
    # Downscaled, the centre is still green (edges may blend with the neighbours under bicubic).
    small = decode_image(tmp_path / "wide.png", 4)
    assert small.shape == (4, 4, 3)
    assert tuple(small[1:3, 1:3].reshape(-1, 3).mean(0).round()) == (0, 255, 0)

    tall = np.zeros((30, 10, 3), np.uint8)
    tall[:10] = (255, 0, 0)
    tall[10:20] = (0, 0, 255)
    tall[20:] = (255, 0, 0)
    out = decode_image(save(tmp_path / "tall.png", tall), 10)
    assert (out == np.array([0, 0, 255], np.uint8)).all()
    # Upscaling works too and keeps the square shape.
    assert decode_image(tmp_path / "tall.png", 24).shape == (24, 24, 3)


def test_size_none_keeps_the_full_image(tmp_path: Path):
    arr = noise(13, 7, seed=3)
    out = decode_image(save(tmp_path / "x.png", arr), None)
    assert out.dtype == np.uint8 and out.shape == (7, 13, 3)
    assert np.array_equal(out, arr)


def test_grey_modes_become_three_equal_channels(tmp_path: Path):
    grey = noise(6, 5, seed=1, channels=1)
    out = decode_image(save(tmp_path / "l.png", grey), None)
    assert out.shape == (5, 6, 3)
    assert all(np.array_equal(out[..., c], grey) for c in range(3))
    one_bit = Image.fromarray(grey > 127).convert("1")
    one_bit.save(tmp_path / "bits.png")
    out = decode_image(tmp_path / "bits.png", None)
    assert set(np.unique(out)) <= {0, 255} and np.array_equal(out[..., 0] == 255, grey > 127)


def test_la_alpha_composites_over_white(tmp_path: Path):
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 0] = 50
    la[..., 1] = 255
    la[0, 0, 1] = 0  # fully transparent
    la[1, 1, 1] = 128  # half transparent
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = decode_image(tmp_path / "la.png", None).astype(int)
    assert (out[0, 0] == 255).all()
    assert (out[2, 2] == 50).all()
    expected = round(50 * 128 / 255 + 255 * (1 - 128 / 255))
    assert np.abs(out[1, 1] - expected).max() <= 1


def test_rgba_transparent_pixel_is_white(tmp_path: Path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[...] = (10, 20, 30, 255)
    rgba[0, 0] = (0, 0, 0, 0)  # transparent black must not come out black
    rgba[3, 4] = (200, 0, 0, 0)
    out = decode_image(save(tmp_path / "rgba.png", rgba), None)
    assert out.shape == (4, 5, 3)
    assert (out[0, 0] == 255).all() and (out[3, 4] == 255).all()
    assert tuple(out[2, 2]) == (10, 20, 30)


def test_palette_without_transparency(tmp_path: Path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([200, 10, 20, 30, 40, 250] + [0] * (256 * 3 - 6))
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = decode_image(tmp_path / "p.png", None)
    assert tuple(out[0, 0]) == (200, 10, 20) and tuple(out[1, 1]) == (30, 40, 250)


def test_palette_with_transparency(tmp_path: Path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 30, 40, 250] + [0] * (256 * 3 - 6))
    im.putpixel((2, 3), 1)
    im.save(tmp_path / "pt.png", transparency=0)  # index 0 (black) is transparent
    reopened = Image.open(tmp_path / "pt.png")
    assert reopened.mode == "P" and "transparency" in reopened.info
    out = decode_image(tmp_path / "pt.png", None)
    assert (out[0, 0] == 255).all()  # transparent black -> white
    assert tuple(out[3, 2]) == (30, 40, 250)


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path):
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = decode_image(tmp_path / "cmyk.jpg", 8).astype(int)
    assert out.shape == (8, 8, 3)
    r, g, b = out.reshape(-1, 3).mean(0)
    assert r > 230 and g < 25 and b < 25  # pure red


def test_16_bit_png_is_rescaled_to_8_bits(tmp_path: Path):
    arr = (np.arange(40, dtype=np.uint16).reshape(5, 8) * 1000 + 1000).astype(np.uint16)  # 1000 .. 40000
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = decode_image(tmp_path / "deep.png", None)
    assert out.dtype == np.uint8 and out.shape == (5, 8, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255  # min -> 0, max -> 255
    expected = np.round((arr.astype(np.float64) - 1000) / 39000 * 255)
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1
    assert np.array_equal(out[..., 0], out[..., 2])
    assert (np.diff(out[..., 0].reshape(-1).astype(int)) >= 0).all()  # order preserved


@pytest.mark.parametrize("ext,kwargs", [
    (".webp", {"lossless": True}),
    (".bmp", {}),
    (".tif", {}),
    (".tiff", {"compression": "tiff_lzw"}),
])
def test_lossless_formats_round_trip(tmp_path: Path, ext, kwargs):
    arr = noise(9, 7, seed=11)
    out = decode_image(save(tmp_path / f"x{ext}", arr, **kwargs), None)
    assert np.array_equal(out, arr)
    assert decode_image(tmp_path / f"x{ext}", 5).shape == (5, 5, 3)


def test_gif_first_frame(tmp_path: Path):
    frames = [Image.new("RGB", (6, 4), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out = decode_image(tmp_path / "anim.gif", None)
    assert out.shape == (4, 6, 3)
    assert (out == np.array([255, 0, 0], np.uint8)).all()
    assert decode_image(tmp_path / "anim.gif", 3).shape == (3, 3, 3)


def _exif_jpeg(path: Path, orientation: int) -> Path:
    # 40 wide x 20 high: red left half, blue right half.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize("orientation,red_on_top", [(6, True), (8, False)])
def test_exif_orientation_is_applied(tmp_path: Path, orientation, red_on_top):
    path = _exif_jpeg(tmp_path / f"o{orientation}.jpg", orientation)
    assert Image.open(path).size == (40, 20)  # stored landscape
    out = decode_image(path, None)
    assert out.shape == (40, 20, 3)  # shown portrait
    top, bottom = out[:15].reshape(-1, 3).mean(0), out[25:].reshape(-1, 3).mean(0)
    red, blue = (top, bottom) if red_on_top else (bottom, top)
    assert red[0] > 200 and red[2] < 60
    assert blue[2] > 200 and blue[0] < 60
    # With a size, the draft-mode JPEG path gives a square crop of the rotated image.
    assert decode_image(path, 8).shape == (8, 8, 3)


def test_no_exif_orientation_leaves_size_alone(tmp_path: Path):
    path = _exif_jpeg(tmp_path / "o1.jpg", 1)
    assert decode_image(path, None).shape == (20, 40, 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10])
def test_undecodable_files_raise_data_error(tmp_path: Path, content: bytes):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        decode_image(path, 8)
    assert str(err.value)


def test_truncated_png_raises_data_error(tmp_path: Path):
    path = truncated_png(tmp_path / "t.png")
    with Image.open(path):  # the header is fine ...
        pass
    assert data._check_header(path).startswith("truncated")  # ... the end of the file is not
    with pytest.raises(DataError, match="cannot decode"):
        decode_image(path, 8)


def test_missing_file_raises_data_error(tmp_path: Path):
    with pytest.raises(DataError):
        decode_image(tmp_path / "gone.png", 8)


def test_unexpected_decoder_exceptions_become_data_errors(tmp_path: Path, monkeypatch):
    """PIL raises assorted non-OSError exceptions on hostile files; none may escape decode_all."""
    ok = solid(tmp_path / "ok.png", 77)
    hostile = solid(tmp_path / "hostile.png", 99)
    real_to_rgb = data._to_rgb

    def flaky(im):
        if np.asarray(im)[0, 0, 0] == 99:
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real_to_rgb(im)

    monkeypatch.setattr(data, "_to_rgb", flaky)
    with pytest.raises(DataError, match="cannot decode.*unpack requires"):
        decode_image(hostile, 4)
    images, failures = decode_all([str(ok), str(hostile)], 4, threads=2)
    assert list(failures) == [1] and "unpack requires" in failures[1]
    assert (images[0] == 77).all() and (images[1] == 0).all()


class TestDecompressionBombLimit:
    LIMIT = 1_000  # pixels

    @pytest.fixture
    def small_limit(self, monkeypatch):
        monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", self.LIMIT)
        monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", self.LIMIT)

    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        save(tmp_path / "r" / "small.png", size=(20, 20))  # 400 px: fine
        save(tmp_path / "r" / "warn.png", size=(40, 40))  # 1,600 px: over the limit (PIL warns)
        save(tmp_path / "r" / "bomb.png", size=(50, 50))  # 2,500 px: over twice the limit (PIL raises)
        return tmp_path / "r"

    def test_scan_skips_images_over_the_limit(self, folder, small_limit):
        scan = scan_folder(folder)
        assert [Path(p).name for p in scan.paths] == ["small.png"]
        skipped = skipped_by_name(scan)
        assert set(skipped) == {"warn.png", "bomb.png"}
        assert all("too large" in r for r in skipped.values())

    # decode_all's threads race on the process-wide warnings filters, so PIL's warning can surface
    # as a plain warning; the explicit size check in decode_image must refuse the image regardless.
    @pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
    @pytest.mark.parametrize("name", ["warn.png", "bomb.png"])
    def test_decode_refuses_images_over_the_limit(self, folder, small_limit, name):
        with pytest.raises(DataError, match="too large"):
            decode_image(folder / name, 8)
        assert decode_image(folder / "small.png", 8).shape == (8, 8, 3)
        images, failures = decode_all([str(folder / "small.png"), str(folder / name)], 8)
        assert list(failures) == [1] and "too large" in failures[1]

    def test_decode_honours_the_module_limit_on_its_own(self, folder, monkeypatch):
        # Scan and decode must agree even when PIL's process-wide setting differs from ours.
        monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", self.LIMIT)
        assert "too large" in skipped_by_name(scan_folder(folder))["warn.png"]
        with pytest.raises(DataError, match="too large"):
            decode_image(folder / "warn.png", 8)

    def test_limit_is_restored(self, folder):
        # data checks the limit itself (PIL's check warns through filters that threads race on).
        assert data.MAX_IMAGE_PIXELS == 64_000_000 and PIL.Image.MAX_IMAGE_PIXELS is None
        assert len(scan_folder(folder)) == 3
        assert decode_image(folder / "bomb.png", None).shape == (50, 50, 3)


# ---- decode_all -------------------------------------------------------------------------------
def test_decode_all_stacks_images_and_reports_failures_by_index(tmp_path: Path):
    paths = [
        str(save(tmp_path / "a.png", size=(12, 9), seed=1)),
        str(tmp_path / "missing.png"),
        str(save(tmp_path / "b.jpg", size=(9, 14), seed=2)),
        str(truncated_png(tmp_path / "t.png")),
        str(save(tmp_path / "c.bmp", size=(6, 6), seed=3)),
    ]
    images, failures = decode_all(paths, 6, threads=3)
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 6, 6)
    assert sorted(failures) == [1, 3]
    assert all(isinstance(r, str) and r for r in failures.values())
    for i in (0, 2, 4):
        assert torch.equal(images[i], to_chw_tensor(decode_image(paths[i], 6)))
    assert images[1].sum() == 0 and images[3].sum() == 0
    single, single_failures = decode_all(paths, 6, threads=1)
    assert torch.equal(single, images) and single_failures == failures


def test_decode_all_progress_stop_and_empty(tmp_path: Path):
    paths = [str(solid(tmp_path / f"{i}.png", i)) for i in range(3)]
    calls = []
    decode_all(paths, 4, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (3, 3)
    with pytest.raises(InterruptedError):
        decode_all(paths, 4, should_stop=lambda: True)
    images, failures = decode_all([], 4)
    assert images.shape == (0, 3, 4, 4) and failures == {}


def test_to_chw_tensor_layout():
    arr = noise(3, 2, seed=0)
    t = to_chw_tensor(arr)
    assert t.shape == (3, 2, 3) and t.dtype == torch.uint8 and t.is_contiguous()
    assert t[1, 1, 2] == arr[1, 2, 1]


def test_cache_size_helpers():
    assert cache_bytes(10, 4) == 10 * 3 * 4 * 4
    assert fits_in_ram(1024, 32, 3 * 1024 * 32 * 32 / (1 << 30))
    assert not fits_in_ram(1025, 32, 3 * 1024 * 32 * 32 / (1 << 30))


# ---- batch sources ----------------------------------------------------------------------------
N_IMAGES, SIZE = 10, 6


@pytest.fixture(scope="module")
def identified_paths(tmp_path_factory) -> list[str]:
    """Flat images whose grey value names them: image i is 10 + 20·i everywhere."""
    root = tmp_path_factory.mktemp("ids")
    return [str(solid(root / f"{i:02d}.png", 10 + 20 * i, size=(9, 7))) for i in range(N_IMAGES)]


@pytest.fixture(scope="module")
def cache(identified_paths) -> torch.Tensor:
    images, failures = decode_all(identified_paths, SIZE)
    assert failures == {}
    return images


def ids(batch: torch.Tensor) -> list[int]:
    values = batch[:, 0, 0, 0].tolist()
    assert all((v - 10) % 20 == 0 for v in values)
    assert all(bool((img == v).all()) for img, v in zip(batch, values, strict=True))
    return [(v - 10) // 20 for v in values]


def test_cached_and_streaming_batches_are_identical(identified_paths, cache):
    cached = BatchSource(identified_paths, SIZE, 3, seed=5, cache=cache)
    streaming = BatchSource(identified_paths, SIZE, 3, seed=5, cache=None, num_workers=0)
    assert cached.cached and not streaming.cached
    for epoch in (0, 1):
        a, b = list(cached.batches(epoch)), list(streaming.batches(epoch))
        assert len(a) == len(b) == cached.steps_per_epoch == 3
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype == torch.uint8 and x.shape == y.shape == (3, 3, SIZE, SIZE)
            assert torch.equal(x, y)
        # The batches follow the epoch's order, without repeats.
        seen = [i for batch in a for i in ids(batch)]
        assert seen == cached.indices(epoch)[:9].tolist()
        assert len(set(seen)) == 9
    assert ids(list(cached.batches(0))[0]) != ids(list(cached.batches(1))[0])


def test_same_seed_same_batches_other_seed_other_batches(identified_paths, cache):
    def order(seed):
        return [ids(b) for b in BatchSource(identified_paths, SIZE, 2, seed=seed, cache=cache).batches(0)]

    assert order(1) == order(1)
    assert order(1) != order(2)


@pytest.mark.parametrize("streaming", [False, True])
def test_start_step_skips_exactly_that_many_batches(identified_paths, cache, streaming):
    source = BatchSource(identified_paths, SIZE, 2, seed=0, cache=None if streaming else cache)
    full = list(source.batches(3))
    assert len(full) == source.steps_per_epoch == 5
    for start in range(source.steps_per_epoch + 1):
        resumed = list(source.batches(3, start_step=start))
        assert len(resumed) == len(full) - start
        assert all(torch.equal(x, y) for x, y in zip(resumed, full[start:], strict=True))


@pytest.mark.parametrize("streaming", [False, True])
def test_incomplete_last_batch_is_dropped(identified_paths, cache, streaming):
    source = BatchSource(identified_paths, SIZE, 4, seed=0, cache=None if streaming else cache)
    assert source.steps_per_epoch == N_IMAGES // 4 == 2
    batches = list(source.batches(0))
    assert [b.shape[0] for b in batches] == [4, 4]


def test_batch_equal_to_dataset_is_one_step(identified_paths, cache):
    source = BatchSource(identified_paths, SIZE, N_IMAGES, seed=0, cache=cache)
    (batch,) = list(source.batches(0))
    assert sorted(ids(batch)) == list(range(N_IMAGES))


def test_batch_larger_than_dataset_suggests_a_smaller_batch_size(identified_paths):
    with pytest.raises(DataError, match=r"--batch-size 10 or fewer") as err:
        BatchSource(identified_paths, SIZE, 16, seed=0)
    assert "16" in str(err.value) and "per process" not in str(err.value)
    with pytest.raises(DataError, match=r"per process.*--batch-size 5 or fewer"):
        BatchSource(identified_paths, SIZE, 8, seed=0, world_size=2)


def test_too_few_images_never_suggests_an_impossible_batch_size(identified_paths):
    with pytest.raises(DataError) as err:
        BatchSource(identified_paths[:1], SIZE, 4, seed=0)
    message = str(err.value)
    assert "1 image" in message and "--batch-size 2" not in message
    with pytest.raises(DataError, match="0 image"):
        BatchSource([], SIZE, 2, seed=0)
    with pytest.raises(DataError, match="per process"):
        BatchSource(identified_paths[:3], SIZE, 2, seed=0, world_size=2)


def test_zero_batch_size_is_a_data_error(identified_paths):
    with pytest.raises(DataError, match="batch size"):
        BatchSource(identified_paths, SIZE, 0, seed=0)


@pytest.mark.parametrize("n,world", [(11, 2), (10, 2), (10, 3), (7, 4)])
def test_ranks_take_disjoint_equal_shares(n, world):
    paths = [f"img{i}.png" for i in range(n)]  # never decoded: indices only
    for epoch in (0, 1):
        shares = [BatchSource(paths, SIZE, 1, seed=9, rank=r, world_size=world).indices(epoch).tolist()
                  for r in range(world)]
        assert all(len(s) == n // world for s in shares)
        flat = [i for s in shares for i in s]
        assert len(set(flat)) == len(flat)  # disjoint
        assert set(flat) <= set(range(n))
        # Every rank walks the same epoch permutation, strided.
        perm = epoch_permutation(n, 9, epoch).tolist()
        assert sorted(flat) == sorted(perm[: world * (n // world)])
    steps = {BatchSource(paths, SIZE, 1, seed=9, rank=r, world_size=world).steps_per_epoch for r in range(world)}
    assert steps == {n // world}


def test_ranks_yield_disjoint_cached_batches(identified_paths, cache):
    seen = []
    for rank in range(2):
        source = BatchSource(identified_paths, SIZE, 2, seed=4, cache=cache, rank=rank, world_size=2)
        assert source.steps_per_epoch == 2
        seen.append([i for b in source.batches(0) for i in ids(b)])
    assert len(seen[0]) == len(seen[1]) == 4
    assert not set(seen[0]) & set(seen[1])


def test_epoch_permutation_is_deterministic_and_varies():
    a = epoch_permutation(50, seed=3, epoch=0)
    assert torch.equal(a, epoch_permutation(50, seed=3, epoch=0))
    assert sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_permutation(50, seed=3, epoch=1))
    assert not torch.equal(a, epoch_permutation(50, seed=4, epoch=0))
    # Independent of the global RNG state.
    torch.manual_seed(123)
    b = epoch_permutation(50, seed=3, epoch=0)
    torch.rand(10)
    assert torch.equal(b, epoch_permutation(50, seed=3, epoch=0)) and torch.equal(a, b)


def test_streaming_substitutes_grey_for_a_file_that_breaks_mid_training(tmp_path: Path, identified_paths):
    broken = str(truncated_png(tmp_path / "t.png"))
    dataset = ImageFileDataset([identified_paths[0], broken], SIZE)
    assert len(dataset) == 2
    image, extents, index = dataset[0]
    assert index == 0 and image.shape == (3, SIZE, SIZE) and (image == 10).all()
    assert extents.tolist() == [SIZE, SIZE]
    with pytest.warns(UserWarning, match="t.png"):
        image, _, index = dataset[1]
    assert index == -1 and image.dtype == torch.uint8 and (image == 128).all()
    source = BatchSource(identified_paths[:3] + [broken], SIZE, 4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (batch,) = list(source.batches(0))
    assert batch.shape == (4, 3, SIZE, SIZE)
    assert sum(bool((img == 128).all()) for img in batch) == 1


# ---- truncated files: the scan finds what training's decode rejects --------------------------------
def encoded(fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise(40, 30, seed=11)).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def scan_one(tmp_path: Path, name: str, raw: bytes) -> tuple[ScanResult, Path]:
    path = tmp_path / "one" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return scan_folder(path.parent), path


@pytest.mark.parametrize(("name", "fmt", "kwargs", "cut"), [
    ("half.jpg", "JPEG", {}, 0.5), ("last_byte.jpg", "JPEG", {}, 1),
    ("progressive.jpg", "JPEG", {"progressive": True}, 0.5),
    ("half.png", "PNG", {}, 0.5), ("crc_cut.png", "PNG", {}, 21),
])
def test_scan_skips_a_cut_off_image_that_training_rejects(tmp_path: Path, name, fmt, kwargs, cut):
    raw = encoded(fmt, **kwargs)
    n = int(len(raw) * cut) if isinstance(cut, float) else len(raw) - cut
    scan, path = scan_one(tmp_path, name, raw[:n])
    assert scan.paths == [] and len(scan.skipped) == 1
    assert scan.skipped[0].path == str(path) and scan.skipped[0].reason.startswith("truncated")
    with pytest.raises(DataError, match="truncated"):
        decode_image(path, 8)  # training's decode rejects the same file
    _, failures = decode_all([str(path)], 8, threads=1)
    assert list(failures) == [0]


@pytest.mark.parametrize(("fmt", "kwargs"), [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {})])
def test_scan_and_decode_agree_on_every_cut_near_the_end(tmp_path: Path, fmt, kwargs):
    """PIL decodes a PNG that lacks only its IEND chunk (and the CRCs after the pixel data), but no JPEG
    that lacks even its last byte: the scan must say so exactly."""
    raw = encoded(fmt, **kwargs)
    for cut in [0, *range(1, 40), len(raw) // 3]:
        path = tmp_path / f"cut{cut}.{fmt.lower()}"
        path.write_bytes(raw[:len(raw) - cut])
        try:
            decode_image(path, 8)
            decodes = True
        except DataError:
            decodes = False
        assert (data._check_header(path) is None) == decodes, cut
    assert fmt == "JPEG" or data._check_header(tmp_path / "cut20.png") is None  # a PNG PIL still decodes


def test_scan_keeps_images_with_bytes_after_their_end(tmp_path: Path):
    """Zero padding, or a video appended after the JPEG (a phone's motion photo), decode fine."""
    video = bytes(range(256)).replace(b"\xff", b"") * 40  # no end marker in it
    for name, raw in (("padded.jpg", encoded("JPEG") + b"\0" * 3000), ("motion.jpg", encoded("JPEG") + video),
                      ("padded.png", encoded("PNG") + b"\0" * 100), ("extra.png", encoded("PNG") + video)):
        scan, path = scan_one(tmp_path / name, name, raw)
        assert scan.paths == [str(path)] and not scan.skipped, name
        assert decode_image(path, 8).shape == (8, 8, 3)


def test_an_end_marker_in_a_header_does_not_hide_a_cut(tmp_path: Path):
    """A camera's EXIF thumbnail ends with its own end marker; a comment segment stands in for it."""
    raw = encoded("JPEG")
    comment = b"\xff\xfe" + (2 + 4).to_bytes(2, "big") + b"\xff\xd9\xff\xd9"
    raw = raw[:2] + comment + raw[2:]
    assert decode_image_bytes_ok(tmp_path, raw)
    scan, path = scan_one(tmp_path, "thumb.jpg", raw[:len(raw) * 2 // 3])
    assert scan.paths == [] and scan.skipped[0].reason.startswith("truncated")
    with pytest.raises(DataError):
        decode_image(path, 8)


def decode_image_bytes_ok(tmp_path: Path, raw: bytes) -> bool:
    path = tmp_path / "whole.jpg"
    path.write_bytes(raw)
    return decode_image(path, 8).shape == (8, 8, 3) and data._check_header(path) is None
