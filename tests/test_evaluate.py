import numpy as np
import pytest
import torch

from simclr_studio.evaluate import (
    evaluate_features,
    extract_features,
    iter_batches,
    knn_predict,
    linear_probe_accuracy,
    stratified_split,
)


def brute_force_knn(bank, labels, queries, classes, k, tau, loo=False):
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    preds = []
    for i, q in enumerate(queries):
        sims = bank @ q
        order = [j for j in np.argsort(-sims, kind="stable") if not (loo and j == i)][:k]
        votes = np.zeros(classes)
        for j in order:
            votes[labels[j]] += np.exp(sims[j] / tau)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.mark.parametrize("loo", [False, True])
def test_weighted_knn_matches_brute_force(loo):
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(60, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 60)
    queries = bank if loo else rng.normal(size=(25, 8)).astype(np.float32)
    ours = knn_predict(bank, labels, queries, 4, k=7, temperature=0.1, leave_one_out=loo, chunk=10)
    assert np.array_equal(ours, brute_force_knn(bank, labels, queries, 4, 7, 0.1, loo))


def test_leave_one_out_excludes_self():
    # Two far-apart clusters; a lone point of class 1 sits inside cluster 0. Counting itself it
    # would vote for class 1 (k=1); excluding itself its nearest neighbour is class 0.
    bank = np.array([[1, 0], [0.99, 0.05], [0.98, 0.1], [0, 1]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    assert knn_predict(bank, labels, bank, 2, k=1, leave_one_out=False)[2] == 1
    assert knn_predict(bank, labels, bank, 2, k=1, leave_one_out=True)[2] == 0


def test_linear_probe_separable_and_random():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] > 0).astype(int)
    assert linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:]) > 0.95
    noise = rng.normal(size=(200, 5))
    assert linear_probe_accuracy(noise[:150], y[:150], noise[150:], y[150:]) < 0.8


def test_stratified_split_covers_every_class():
    labels = np.repeat(np.arange(5), 10)
    train, test = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 50
    assert set(labels[test]) == set(range(5)) and np.bincount(labels[test]).tolist() == [2] * 5


def test_evaluate_features_reports_both():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 30)
    x = rng.normal(size=(90, 4)) + np.eye(3, 4)[y] * 5
    report = evaluate_features(x, y, 3)
    assert report.knn_accuracy > 0.9 and report.linear_accuracy > 0.9 and report.protocol == "80/20 split"


def test_extract_features_streams_in_eval_mode():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    net.train()
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    seen = []
    feats = extract_features(net, iter_batches(images, 4), "cpu", total=10, progress=lambda d, t: seen.append(d))
    assert feats.shape == (10, 4) and seen == [4, 8, 10]
    assert net.training  # restored
    one = extract_features(net, iter_batches(images[:1], 4), "cpu")
    assert np.allclose(one[0], feats[0], atol=1e-5)  # eval-mode BN: a sample's features do not depend on its batch


def test_features_for_paths_is_chunked_and_skips_failures(tmp_path, image_folder):
    from simclr_studio.data import scan_folder
    from simclr_studio.evaluate import features_for_paths
    from simclr_studio.model import build_backbone

    paths = scan_folder(image_folder).paths
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a PNG signature and nothing usable
    net, dim = build_backbone("small-cnn")
    all_paths = paths[:5] + [str(bad)] + paths[5:]
    feats, failures = features_for_paths(net, all_paths, 16, chunk=4, batch_size=3)
    assert list(failures) == [5] and feats.shape == (len(paths), dim)
    whole, _ = features_for_paths(net, paths, 16, chunk=1000)
    assert np.allclose(feats, whole, atol=1e-5)  # chunking does not change the result
