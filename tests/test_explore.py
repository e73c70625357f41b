"""Exploring features (engine side): neighbour index, 2-D maps, selections, cached embeddings."""

import os
import time

import numpy as np
import pytest

from simclr_studio.neighbours import NeighbourIndex
from simclr_studio.projection import pca_2d, points_in_polygon, points_in_rect


def brute_force(features, row, k):
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sims = unit @ unit[row]
    sims[row] = -np.inf
    order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:k]
    return order, sims[order]


def test_neighbours_match_brute_force():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 32)).astype(np.float32)
    index = NeighbourIndex(feats)
    for row in (0, 17, 499):
        found = index.query_row(row, 10)
        order, sims = brute_force(feats, row, 10)
        assert list(found.indices) == order
        np.testing.assert_allclose(found.similarities, sims, rtol=1e-5, atol=1e-6)
        assert row not in found.indices


def test_neighbour_query_is_cosine_and_scale_free():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(50, 8)).astype(np.float32)
    index = NeighbourIndex(feats)
    found = index.query_vector(feats[7] * 42.0, k=3)  # a scaled copy of row 7: same direction
    assert found.indices[0] == 7 and found.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert len(index.query_vector(feats[0], k=1000).indices) == 50  # k capped at the index size
    with pytest.raises(ValueError, match="features"):
        index.query_vector(np.ones(3))


def test_rect_and_lasso_selection():
    xs, ys = np.meshgrid(np.arange(10.0), np.arange(10.0))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    rect = points_in_rect(coords, 5.5, 2.5, 2.5, 5.5)  # corners in any order
    assert set(map(tuple, coords[rect])) == {(x, y) for x in (3, 4, 5) for y in (3, 4, 5)}
    triangle = np.array([[-0.5, -0.5], [9.5, -0.5], [-0.5, 9.5]])
    inside = points_in_polygon(coords, triangle)
    assert set(map(tuple, coords[inside])) == {(x, y) for x in range(10) for y in range(10) if x + y <= 8}
    assert len(points_in_polygon(coords, triangle[:2])) == 0  # not a polygon


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import make_image_folder

    from simclr_studio.config import RunConfig
    from simclr_studio.data import scan_folder
    from simclr_studio.train import Trainer
    from simclr_studio.trained import load_trained

    root = tmp_path_factory.mktemp("explore")
    data = make_image_folder(root / "data", classes=2, per_class=6, size=16)
    (data / "class_0" / "broken.png").write_bytes(b"not a png")
    cfg = RunConfig(data_dir=str(data), backbone="small-cnn", image_size=16, batch_size=4, epochs=1, device="cpu",
                    eval_every=0)
    assert Trainer(cfg, root / "run").run() == "completed"
    return load_trained(root / "run"), scan_folder(data)


def test_embeddings_are_cached_per_checkpoint(trained_run):
    from simclr_studio.embeddings import embed_cached, load

    run, scan = trained_run
    emb, path, cached = embed_cached(run, scan)
    assert not cached and path.is_file() and path.parent.name == "embeddings"
    assert emb.features.shape == (12, 256) and len(emb.paths) == 12 and emb.labeled
    again, path2, cached2 = embed_cached(run, scan)
    assert cached2 and path2 == path
    np.testing.assert_array_equal(again.features, emb.features)
    assert again.paths == emb.paths and again.classes == emb.classes
    # The maps computed later go into the same file.
    emb.maps["pca"] = pca_2d(emb.features)
    from simclr_studio.embeddings import save

    save(emb, path)
    np.testing.assert_array_equal(load(path).maps["pca"], emb.maps["pca"])
    # A newer checkpoint (same path, new content) is embedded again.
    from simclr_studio.trained import load_trained

    later = time.time() + 5
    os.utime(run.checkpoint, (later, later))
    _, path3, cached3 = embed_cached(load_trained(run.run_dir), scan)
    assert not cached3 and path3 != path


def test_random_encoder_baseline_differs_and_is_reproducible(trained_run):
    from simclr_studio.embeddings import embed_cached

    run, scan = trained_run
    trained, _, _ = embed_cached(run, scan)
    random_a, path_a, _ = embed_cached(run, scan, random_init=True, seed=0)
    path_a.unlink()
    random_b, _, cached = embed_cached(run, scan, random_init=True, seed=0)
    assert not cached
    np.testing.assert_allclose(random_a.features, random_b.features, rtol=1e-5, atol=1e-6)
    assert not np.allclose(random_a.features, trained.features)


def test_unreadable_cache_is_recomputed(trained_run):
    from simclr_studio.embeddings import cache_path, embed_cached

    run, scan = trained_run
    path = cache_path(run.run_dir, str(run.checkpoint), run.config.image_size, scan.paths, run.identity)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"garbage")
    emb, _, cached = embed_cached(run, scan)
    assert not cached and len(emb) == 12


def test_thumbnails_are_cached_and_a_cache_without_them_is_recomputed(trained_run):
    from simclr_studio.embeddings import embed_cached, load, save
    from simclr_studio.signatures import SIDE

    run, scan = trained_run
    emb, path, _ = embed_cached(run, scan)
    assert emb.thumbnails is not None and emb.thumbnails.shape == (len(emb), SIDE, SIDE)
    np.testing.assert_array_equal(load(path).thumbnails, emb.thumbnails)
    emb.thumbnails = None  # as a cache written before grey thumbnails were kept
    save(emb, path)
    again, _, cached = embed_cached(run, scan)
    assert not cached and again.thumbnails is not None
    np.testing.assert_array_equal(again.thumbnails, load(path).thumbnails)
