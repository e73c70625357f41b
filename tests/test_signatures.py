"""Pixel signatures: near-exact copies (resized, re-encoded) keep their signature; other images don't;
and the duplicate search uses the higher of the feature and signature similarities (of thumbnails)."""

import io

import numpy as np
import pytest
import torch
from conftest import smooth_image
from PIL import Image

from simclr_studio.duplicates import duplicate_pairs
from simclr_studio.image_cache import decode_all
from simclr_studio.neighbours import normalize_rows
from simclr_studio.signatures import DIMS, SIDE, grey_thumbnails, image_signatures, thumbnail_signatures


def copies(img: Image.Image, folder) -> list[str]:
    """The image as PNG, then a JPEG (quality 75), a half-size and a double-size copy."""
    paths = []
    for name, im, fmt in [("orig.png", img, "PNG"), ("q75.jpg", img, "JPEG"),
                          ("half.png", img.resize((img.width // 2,) * 2, Image.BICUBIC), "PNG"),
                          ("double.png", img.resize((img.width * 2,) * 2, Image.BICUBIC), "PNG")]:
        buf = io.BytesIO()
        im.save(buf, fmt, **({"quality": 75} if fmt == "JPEG" else {}))
        (folder / name).write_bytes(buf.getvalue())
        paths.append(str(folder / name))
    return paths


def cosine_to_first(sigs: np.ndarray) -> np.ndarray:
    unit = normalize_rows(sigs)
    return unit[1:] @ unit[0]


def test_copies_keep_their_signature_and_other_images_do_not(tmp_path):
    paths = copies(smooth_image(0), tmp_path)
    others = []
    for seed in range(1, 21):
        smooth_image(seed).save(tmp_path / f"other{seed}.png")
        others.append(str(tmp_path / f"other{seed}.png"))
    images, bad = decode_all(paths + others, 32)
    assert not bad
    sigs = image_signatures(images)
    assert sigs.shape == (len(paths) + len(others), DIMS) and sigs.dtype == np.float32
    sims = cosine_to_first(sigs)
    assert sims[: len(paths) - 1].min() >= 0.998, sims[:3]  # JPEG, half and double size
    assert sims[len(paths) - 1 :].max() < 0.99  # every other image


def test_brightness_offsets_and_sizes_do_not_matter():
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.integers(30, 200, (1, 3, 40, 40), dtype=np.uint8))
    brighter = base + 20  # the constant term is left out of the signature
    sims = cosine_to_first(image_signatures(torch.cat([base, brighter])))
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert image_signatures(torch.zeros((0, 3, 16, 16), dtype=torch.uint8)).shape == (0, DIMS)
    assert image_signatures(torch.zeros((2, 3, 7, 7), dtype=torch.uint8)).shape == (2, DIMS)  # smaller than 32


def random_thumbnails(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8)


def test_thumbnails_give_the_images_signatures():
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.integers(0, 256, (3, 3, 40, 40), dtype=np.uint8))
    thumbs = grey_thumbnails(images)
    assert thumbs.shape == (3, SIDE, SIDE) and thumbs.dtype == np.uint8
    sigs = thumbnail_signatures(thumbs)
    assert np.allclose(np.linalg.norm(sigs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(sigs, image_signatures(images), atol=1e-6)
    assert thumbnail_signatures(thumbs[:0]).shape == (0, DIMS)


def test_pairs_take_the_higher_of_the_two_similarities():
    rng = np.random.default_rng(1)
    n = 300
    feats = rng.standard_normal((n, 16)).astype(np.float32)
    thumbs = random_thumbnails(rng, n)
    feats[1] = feats[0] + 0.01 * rng.standard_normal(16)  # similar by features only
    thumbs[3] = np.clip(thumbs[2].astype(int) + rng.integers(-2, 3, (SIDE, SIDE)), 0, 255)  # by signatures only
    feats[5], thumbs[5] = feats[4], thumbs[4]  # by both
    pairs = duplicate_pairs(feats, 0.9, thumbnails=thumbs)
    uf, us = normalize_rows(feats).astype(np.float64), thumbnail_signatures(thumbs).astype(np.float64)
    best = np.maximum(uf @ uf.T, us @ us.T)
    i, j = np.triu_indices(n, 1)
    expected = {(a, b): s for a, b, s in zip(i, j, best[i, j], strict=True) if s >= 0.9}
    found = dict(zip(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True), pairs.similarity.tolist(), strict=True))
    assert set(found) == set(expected) and {(0, 1), (2, 3), (4, 5)} <= set(found)
    assert all(abs(found[p] - expected[p]) < 1e-5 for p in found)
    assert list(pairs.similarity) == sorted(pairs.similarity, reverse=True)
    groups = pairs.groups(0.9)
    group = next(g for g in groups if g.rows[0] == 2)
    assert group.rows == (2, 3) and group.scores[1] == pytest.approx(best[2, 3], abs=1e-5)
    assert duplicate_pairs(feats, 0.9).count(0.9) == pairs.count(0.9) - 1  # (2, 3) only through signatures
    with pytest.raises(ValueError, match="thumbnails for"):
        duplicate_pairs(feats, 0.9, thumbnails=thumbs[:10])
    with pytest.raises(ValueError, match="none were given"):
        duplicate_pairs(feats, 0.9, neighbours=np.zeros((n, 2), np.int64))


def test_progress_covers_both_searches():
    rng = np.random.default_rng(2)
    seen = []
    duplicate_pairs(rng.standard_normal((200, 8)), 0.9, progress=lambda d, t: seen.append((d, t)),
                    thumbnails=random_thumbnails(rng, 200))
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert any(d <= t // 2 for d, t in seen) and any(d > t // 2 for d, t in seen)  # half for each


def test_embedding_gives_thumbnails_only_when_asked(tmp_path):
    """``embed`` and ``eval`` do not need them: without, the same features and an empty thumbnail array."""
    from simclr_studio.embeddings import embed_paths
    from simclr_studio.model import build_backbone

    paths = copies(smooth_image(7, side=40), tmp_path)
    torch.manual_seed(0)
    encoder, _ = build_backbone("tiny-cnn")
    feats, thumbs, failures = embed_paths(encoder, paths, 32)
    plain, none, _ = embed_paths(encoder, paths, 32, thumbnails=False)
    assert not failures and thumbs.shape == (4, SIDE, SIDE) and thumbs.dtype == np.uint8 and len(none) == 0
    images, _ = decode_all(paths, 32)
    np.testing.assert_array_equal(thumbs, grey_thumbnails(images))
    assert np.allclose(plain, feats, atol=1e-6)
