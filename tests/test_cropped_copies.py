"""Cropped copies: crop similarity (crops.py) finds an image's cropped copies, either way round, among
each image's neighbours, where whole-image signatures do not; distinct images stay apart."""

import io

import numpy as np
import pytest
import torch
from conftest import smooth_image

from simclr_studio import crops
from simclr_studio.duplicates import CROP_FLOOR, duplicate_pairs
from simclr_studio.image_cache import decode_all
from simclr_studio.signatures import FREQUENCIES, SIDE, dct_matrix, grey_thumbnails, thumbnail_signatures

CROPS = [(0.95, 0.5, 0.5), (0.9, 0.0, 0.0), (0.9, 1.0, 0.3), (0.88, 0.7, 0.2), (0.92, 0.1, 0.9)]  # side, where


def cropped(img, keep: float, fx: float, fy: float):
    side = img.size[0]
    k = round(side * keep)
    x, y = round((side - k) * fx), round((side - k) * fy)
    return img.crop((x, y, x + k, y + k))


@pytest.fixture(scope="module")
def folder_thumbnails(tmp_path_factory) -> np.ndarray:
    """Rows 0–9: distinct images; 10–14: crops of image 0 (CROPS), saved and decoded as files are."""
    folder = tmp_path_factory.mktemp("crops")
    images = [smooth_image(seed) for seed in range(10)]
    images += [cropped(images[0], *c) for c in CROPS]
    paths = []
    for n, im in enumerate(images):
        buf = io.BytesIO()
        im.save(buf, "PNG")
        (folder / f"{n:02d}.png").write_bytes(buf.getvalue())
        paths.append(str(folder / f"{n:02d}.png"))
    decoded, bad = decode_all(paths, 32)
    assert not bad
    return grey_thumbnails(decoded)


def both_ways(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = crops.crop_similarity(thumbs, np.r_[a, b], np.r_[b, a])
    return np.maximum(s[: len(a)], s[len(a):])


def test_the_whole_axis_gives_the_dct_rows_and_boxes_their_resampled_dct():
    whole = crops.axis_matrices(torch.tensor([1.0]), torch.tensor([0.0]))[0]
    torch.testing.assert_close(whole, dct_matrix(SIDE)[:FREQUENCIES], atol=1e-6, rtol=0)
    # The left half of an axis, resampled to SIDE samples, is each pixel repeated (bilinear at half steps).
    half = crops.axis_matrices(torch.tensor([0.5]), torch.tensor([0.0]))[0]
    ramp = torch.arange(SIDE, dtype=torch.float32)
    expected = dct_matrix(SIDE)[:FREQUENCIES] @ (ramp * 0.5 - 0.25).clamp_min(0)
    torch.testing.assert_close(half @ ramp, expected, atol=1e-4, rtol=0)
    assert crops.BOXES[0].tolist() == [0, 0]  # box 0: the whole image
    boxes = crops.box_signatures(torch.rand(2, SIDE, SIDE) * 255)
    assert boxes.shape == (2, len(crops.BOXES), FREQUENCIES * FREQUENCIES - 1)


def test_crops_match_their_original_and_distinct_images_do_not(folder_thumbnails):
    thumbs = folder_thumbnails
    copies = np.arange(10, 10 + len(CROPS))
    sigs = thumbnail_signatures(thumbs)
    whole = sigs[copies] @ sigs[0]
    assert whole.max() < 0.999, whole  # the whole-image signatures miss them at the default threshold
    found = both_ways(thumbs, np.zeros(len(CROPS), np.int64), copies)
    assert found.min() >= 0.999, found
    # Either way round: the copy as owner gives the same pair's similarity.
    np.testing.assert_allclose(both_ways(thumbs, copies, np.zeros(len(CROPS), np.int64)), found)
    i, j = np.triu_indices(10, 1)
    distinct = both_ways(thumbs, i, j)
    assert distinct.max() < 0.99, distinct.max()


def test_chunks_do_not_change_the_scores(folder_thumbnails, monkeypatch):
    rng = np.random.default_rng(0)
    owners = rng.integers(0, len(folder_thumbnails), 200)
    queries = rng.integers(0, len(folder_thumbnails), 200)
    whole = crops.crop_similarity(folder_thumbnails, owners, queries)
    monkeypatch.setattr(crops, "_CHUNK_ENTRIES", 7)
    monkeypatch.setattr(crops, "_CHUNK_OWNERS", 3)
    np.testing.assert_allclose(crops.crop_similarity(folder_thumbnails, owners, queries), whole, atol=1e-6)
    with pytest.raises(InterruptedError):
        crops.crop_similarity(folder_thumbnails, owners, queries, should_stop=lambda: True)


def test_crop_pairs_are_searched_among_neighbours_only(folder_thumbnails):
    thumbs = folder_thumbnails
    n = len(thumbs)
    far = np.array([[(r + 7) % n] for r in range(n)])  # nobody's neighbour is a copy of it
    assert len(crops.crop_pairs(thumbs, far, 0.99)[0]) == 0
    near = np.array([[11, 12]] + [[0, (r + 1) % n] for r in range(1, n)])  # copies list image 0 (and back)
    i, j, sim = crops.crop_pairs(thumbs, near, 0.99)
    pairs = set(zip(i.tolist(), j.tolist(), strict=True))
    assert {(0, c) for c in range(10, 10 + len(CROPS))} <= pairs
    assert (i < j).all() and list(sim) == sorted(sim, reverse=True) and sim.min() >= 0.99
    np.testing.assert_allclose(sim, both_ways(thumbs, i, j))


def test_duplicate_search_groups_cropped_copies(folder_thumbnails):
    thumbs = folder_thumbnails
    n = len(thumbs)
    feats = np.random.default_rng(1).standard_normal((n, 16)).astype(np.float32)  # features see nothing
    graph = np.array([[c for c in np.argsort(np.abs(np.arange(n) - r)) if c != r][:4] for r in range(n)])
    graph[10:, 0] = 0  # each copy's nearest is image 0
    without = duplicate_pairs(feats, 0.9, thumbnails=thumbs)
    assert all(0 not in g.rows for g in without.groups(0.999))
    pairs = duplicate_pairs(feats, 0.9, thumbnails=thumbs, neighbours=graph)
    group = next(g for g in pairs.groups(0.999) if g.rows[0] == 0)
    assert set(group.rows) == {0, *range(10, 10 + len(CROPS))}
    expected = both_ways(thumbs, np.zeros(len(group.rows) - 1, np.int64), np.array(group.rows[1:]))
    np.testing.assert_allclose(group.scores[1:], expected, atol=1e-6)
    assert pairs.similarity.min() >= 0.9 and CROP_FLOOR > 0.9
