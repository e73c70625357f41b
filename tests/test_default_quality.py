"""The product's promise, end to end: the bundled demo folder, the default recipe, a two-minute
budget — the trained encoder beats a random encoder in the app's own quality measurement."""

from __future__ import annotations

import pytest
from conftest import DEMO

from simclr_studio.cli import main


@pytest.mark.slow
def test_demo_defaults_in_two_minutes_beat_a_random_encoder(tmp_path):
    from simclr_studio.data import scan_folder
    from simclr_studio.embeddings import embed_cached
    from simclr_studio.session.quality import measure_quality  # what the Explore tab shows
    from simclr_studio.trained import load_trained

    run_dir = tmp_path / "run"
    assert main(["train", "--demo", "--out", str(run_dir), "--minutes", "2", "--seed", "0", "--device", "cpu",
                 "--quiet"]) == 0
    run = load_trained(run_dir)
    scan = scan_folder(DEMO)
    emb, _, _ = embed_cached(run, scan, "cpu")
    quality = measure_quality(emb, run, scan, "cpu")
    trained, random = quality.trained, quality.random
    print(f"kNN: trained {trained.knn_accuracy:.3f}, random {random.knn_accuracy:.3f}, "
          f"raw pixels {quality.raw.knn_accuracy:.3f} (k={trained.k}, {quality.n} images)")
    assert trained.knn_accuracy > random.knn_accuracy
