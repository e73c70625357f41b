"""Curation findings: exact near-duplicate pairs (against brute force), groups at any threshold, the kNN
graph, outliers, likely mislabels and the findings CSV."""

import csv

import numpy as np
import pytest

from simclr_studio import curate, duplicates, pair_search
from simclr_studio.curate import (
    Finding,
    duplicate_findings,
    knn_graph,
    likely_mislabeled,
    mislabel_findings,
    outlier_findings,
    outlier_scores,
    outliers,
    write_findings_csv,
)
from simclr_studio.duplicates import DuplicateGroup, duplicate_pairs, near_duplicates
from simclr_studio.neighbours import normalize_rows


def brute_force_pairs(features, floor):
    """{(i, j): similarity} of every pair i < j with cosine ≥ floor, from the full matrix in float64."""
    unit = normalize_rows(features).astype(np.float64)
    norms = np.sqrt((unit * unit).sum(1))
    sims = np.clip(unit @ unit.T / np.outer(norms, norms), -1, 1).astype(np.float32)
    i, j = np.nonzero(np.triu(sims >= np.float32(floor), 1))
    return {(int(a), int(b)): float(sims[a, b]) for a, b in zip(i, j, strict=True)}


def as_dict(pairs):
    return {(int(a), int(b)): float(s) for a, b, s in zip(pairs.i, pairs.j, pairs.similarity, strict=True)}


def assert_same_pairs(found, expected):
    assert found.keys() == expected.keys()
    assert all(abs(found[k] - expected[k]) <= 1e-6 for k in expected)


def clustered(n=2000, d=32, centres=40, spread=0.25, seed=0):
    """Gaussian clusters (as trained features are) plus planted copies: rows 1..3 are copies of row 0
    (exact, scaled, nudged), and rows 10, 11 of row 9."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(centres, d))[rng.integers(0, centres, n)] + rng.normal(scale=spread, size=(n, d))
    feats[1], feats[2], feats[3] = feats[0], feats[0] * 3.0, feats[0] + rng.normal(scale=0.01, size=d)
    feats[10], feats[11] = feats[9], feats[9]
    return feats.astype(np.float32)


@pytest.fixture
def force_partition(monkeypatch):
    """The clustered search on small inputs, whatever its cost (so its exactness is tested too)."""
    monkeypatch.setattr(pair_search, "_PARTITION_MIN_ROWS", 0)
    monkeypatch.setattr(pair_search, "_PARTITION_MAX_COST", 10.0)


def spy_partition(monkeypatch):
    used = []
    fit = pair_search._Partition.fit.__func__

    def spying(cls, *args, **kw):
        part = fit(cls, *args, **kw)
        used.append(part)
        return part

    monkeypatch.setattr(pair_search._Partition, "fit", classmethod(spying))
    return used


def test_pairs_are_exact_on_clustered_data(monkeypatch):
    monkeypatch.setattr(pair_search, "_PARTITION_MIN_ROWS", 0)
    used = spy_partition(monkeypatch)
    feats = clustered()
    for floor in (0.9, 0.97):
        pairs = duplicate_pairs(feats, floor)
        assert used[-1] is not None and used[-1].cost < 0.2 * 2000 * 1999 / 2  # the clusters did prune
        expected = brute_force_pairs(feats, floor)
        assert len(expected) > 50
        assert_same_pairs(as_dict(pairs), expected)
        assert pairs.floor == floor and pairs.n == 2000
        assert np.all(pairs.i < pairs.j) and np.all(np.diff(pairs.similarity) <= 0)  # most similar first
        assert pairs.i.dtype == np.int64 and pairs.similarity.dtype == np.float32


def test_pairs_are_exact_on_random_data(monkeypatch, force_partition):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(1500, 12)).astype(np.float32)
    expected = brute_force_pairs(feats, 0.8)
    assert len(expected) > 100
    assert_same_pairs(as_dict(duplicate_pairs(feats, 0.8)), expected)  # the partition, forced


def test_uniform_data_falls_back_to_all_pairs(monkeypatch):
    monkeypatch.setattr(pair_search, "_PARTITION_MIN_ROWS", 0)
    used = spy_partition(monkeypatch)
    feats = np.random.default_rng(2).normal(size=(2000, 64)).astype(np.float32)
    pairs = duplicate_pairs(feats, 0.5)
    assert used == [None]  # borders everywhere: no cheaper than all pairs
    assert_same_pairs(as_dict(pairs), brute_force_pairs(feats, 0.5))


def test_first_stage_coordinates_bound_every_similarity():
    """The rotated first coordinates plus the norm of the rest: dot products bound the cosines from above,
    norms are kept, and distances only shrink (so the partition's borders lose no pair either)."""
    rng = np.random.default_rng(3)
    unit = normalize_rows(rng.normal(size=(600, 48)) + rng.normal(size=48)).astype(np.float32)
    first = pair_search._project(unit, 5)
    assert first.shape == (600, 6)
    exact = unit.astype(np.float64) @ unit.T.astype(np.float64)
    bound = first.astype(np.float64) @ first.T.astype(np.float64)
    assert np.all(bound >= exact - 1e-6) and np.mean(bound - exact) > 1e-3  # a bound, and not a trivial one
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    far = np.linalg.norm(unit[:, None] - unit[None], axis=2)
    near = np.linalg.norm(first[:, None] - first[None], axis=2)
    assert np.all(near <= far + 1e-6)


@pytest.mark.parametrize("partition", [True, False])
def test_two_stage_search_is_exact(monkeypatch, partition):
    """Wide vectors: tiles of bounds from their first principal coordinates, then each candidate measured;
    the pairs, their similarities, the cap and exact copies are as with one stage."""
    monkeypatch.setattr(pair_search, "_PROJECT_MIN_ROWS", 0)
    monkeypatch.setattr(pair_search, "FIRST_STAGE_DIMS", 6)
    monkeypatch.setattr(pair_search, "_PARTITION_MIN_ROWS", 0 if partition else 10**9)
    measured = []
    measure = pair_search._PairSearch._measure

    def spying(self, i, j):
        measured.append(len(i))
        return measure(self, i, j)

    monkeypatch.setattr(pair_search._PairSearch, "_measure", spying)
    feats = clustered(d=32, spread=0.35)
    for floor in (0.9, 0.97):
        measured.clear()
        expected = brute_force_pairs(feats, floor)
        assert_same_pairs(as_dict(duplicate_pairs(feats, floor)), expected)
        assert len(expected) < sum(measured) < 0.5 * 2000 * 1999 / 2  # bounds: more candidates than pairs
    capped = duplicate_pairs(feats, 0.9, max_pairs=40)
    assert_same_pairs(as_dict(capped), {k: v for k, v in brute_force_pairs(feats, 0.9).items()
                                        if v >= np.float32(capped.floor)})
    groups = near_duplicates(feats, threshold=0.9999)
    assert groups[0].rows == (0, 1, 2, 3) and groups[0].scores[:3] == (1.0, 1.0, 1.0)


def test_tiles_are_bounded_and_their_edges_exact(monkeypatch, force_partition):
    """No similarity matrix larger than a tile (never N × N), and small tiles lose no pair at their edges."""
    monkeypatch.setattr(pair_search, "TILE_ROWS", 64)
    monkeypatch.setattr(pair_search, "TILE_COLS", 160)
    shapes = []
    tile = pair_search._PairSearch._tile

    def spying(self, rows, row_ids, cols, col_ids, diagonal):
        shapes.append((rows.shape[0], cols.shape[0]))
        return tile(self, rows, row_ids, cols, col_ids, diagonal)

    monkeypatch.setattr(pair_search._PairSearch, "_tile", spying)
    feats = clustered(n=1500)
    assert_same_pairs(as_dict(duplicate_pairs(feats, 0.9)), brute_force_pairs(feats, 0.9))
    monkeypatch.setattr(pair_search, "_PARTITION_MAX_COST", 0.0)  # and all pairs, tile by tile
    assert_same_pairs(as_dict(duplicate_pairs(feats, 0.9)), brute_force_pairs(feats, 0.9))
    assert len(shapes) > 50 and max(r for r, _ in shapes) <= 64 and max(c for _, c in shapes) <= 160


def test_exact_copies_group_with_score_one():
    feats = clustered()
    groups = near_duplicates(feats, threshold=0.9999)
    assert DuplicateGroup((0, 1, 2, 3), (1.0, 1.0, 1.0, groups[0].scores[3])) == groups[0]  # exactly 1
    assert 0.9999 <= groups[0].scores[3] < 1.0
    assert groups[1].rows == (9, 10, 11) and groups[1].scores == (1.0, 1.0, 1.0)


def test_groups_at_any_threshold_above_the_floor():
    feats = clustered(spread=0.45)
    pairs = duplicate_pairs(feats, 0.9)
    unit = normalize_rows(feats).astype(np.float64)
    before = None
    for t in (0.9, 0.93, 0.95, 0.97, 0.99, 0.9999, 1.0):
        groups = pairs.groups(t)
        assert pairs.count(t) == len(groups)
        assert [len(g.rows) for g in groups] == sorted((len(g.rows) for g in groups), reverse=True)
        for g in groups:
            assert len(g.rows) >= 2 and g.rows[0] == min(g.rows) and g.scores[0] == 1.0
            assert list(g.scores[1:]) == sorted(g.scores[1:], reverse=True)
            assert np.allclose(g.scores, unit[list(g.rows)] @ unit[g.rows[0]], atol=1e-6)
        # Connected components: every pair ≥ t inside one group, and a group is connected by such pairs.
        where = {row: k for k, g in enumerate(groups) for row in g.rows}
        strong = [(i, j) for (i, j), s in as_dict(pairs).items() if s >= np.float32(t)]
        assert all(where[i] == where[j] for i, j in strong)
        assert len(where) == len({r for pair in strong for r in pair})
        if before is not None:
            assert sum(len(g.rows) for g in groups) <= before
        before = sum(len(g.rows) for g in groups)
    with pytest.raises(ValueError, match="below 0.9"):
        pairs.groups(0.85)
    with pytest.raises(ValueError, match="below 0.9"):
        pairs.count(0.5)


def test_count_is_fast_enough_for_a_slider():
    """100,000 rows and a million pairs: counting groups at a threshold is a lookup."""
    import time

    rng = np.random.default_rng(0)
    n, p = 100_000, 1_000_000
    i, j = rng.integers(0, n, p), rng.integers(0, n, p)
    i, j = np.minimum(i, j), np.maximum(i, j) + (i == j)
    sim = np.sort(rng.uniform(0.9, 1.0, p).astype(np.float32))[::-1]
    pairs = duplicates.DuplicatePairs(i, np.minimum(j, n - 1), sim, 0.9, n, (np.zeros((n, 2), np.float32),))
    pairs.count(0.95)  # the forest, once
    start = time.perf_counter()
    counts = [pairs.count(t) for t in np.linspace(0.9, 1.0, 50)]
    assert (time.perf_counter() - start) / 50 < 0.05
    assert counts[-1] <= counts[0]


def test_the_pair_cap_raises_the_floor_and_stays_exact():
    feats = clustered(spread=0.45)
    expected = brute_force_pairs(feats, 0.9)
    pairs = duplicate_pairs(feats, 0.9, max_pairs=40)
    assert 0 < len(pairs.i) <= 40 and pairs.floor > 0.9
    assert_same_pairs(as_dict(pairs), {k: s for k, s in expected.items() if s >= np.float32(pairs.floor)})
    with pytest.raises(ValueError):
        pairs.groups(0.9)


def test_progress_and_stop(monkeypatch):
    monkeypatch.setattr(pair_search, "TILE_ROWS", 100)
    feats = clustered(n=1000)
    seen = []
    duplicate_pairs(feats, 0.9, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 3 and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(InterruptedError):
        duplicate_pairs(feats, 0.9, should_stop=lambda: True)
    with pytest.raises(InterruptedError):
        knn_graph(feats, 5, should_stop=lambda: True)
    with pytest.raises(ValueError, match="floor"):
        duplicate_pairs(feats, 0.0)


def test_knn_graph_is_exact(monkeypatch):
    monkeypatch.setattr(curate, "KNN_BLOCK", 37)  # many tiles, ragged edges
    feats = np.random.default_rng(3).normal(size=(300, 12)).astype(np.float32)
    unit = normalize_rows(feats)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :7]
    progress = []
    indices, similarities = knn_graph(feats, 7, progress=lambda d, t: progress.append((d, t)))
    assert indices.shape == (300, 7) and indices.dtype == np.int64 and similarities.dtype == np.float32
    assert np.array_equal(indices, order)
    assert np.allclose(similarities, np.take_along_axis(sims, order, 1), atol=1e-6)
    assert progress[-1][0] == progress[-1][1]
    assert knn_graph(feats[:4], 10)[0].shape == (4, 3)  # k capped at N − 1
    assert knn_graph(feats[:1], 10)[0].shape == (1, 0)


def test_a_planted_outlier_ranks_first():
    feats = clustered(n=500)
    feats[123] = np.random.default_rng(9).normal(size=32) * 5  # belongs to no cluster
    rows, scores = outliers(feats, 5)
    assert rows[0] == 123 and len(rows) == 5 and np.all(np.diff(scores) <= 0)
    graph = knn_graph(feats, 20)
    assert np.allclose(outlier_scores(graph, 10), outlier_scores(feats, 10), atol=1e-6)
    assert np.allclose(outlier_scores(graph, 10)[rows], scores, atol=1e-6)
    assert outlier_scores(feats[:1]).tolist() == [0.0]


def labelled_clusters(per_class=60, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 16)) * 3
    labels = np.repeat(np.arange(classes), per_class)
    feats = (centres[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32)
    return feats, labels


def test_planted_mislabels_are_found():
    feats, labels = labelled_clusters()
    planted = {5: 2, 70: 0, 130: 3}  # row: wrong folder label
    wrong = labels.copy()
    for row, label in planted.items():
        wrong[row] = label
    wrong[200] = -1  # unlabelled: neither judged nor voting
    found, report = likely_mislabeled(knn_graph(feats, 20), wrong, 4)
    assert {m.row for m in found} == set(planted)
    assert all(m.vote == labels[m.row] and m.label == planted[m.row] and m.confidence > 0.9 for m in found)
    assert [m.confidence for m in found] == sorted((m.confidence for m in found), reverse=True)
    assert report.confusion.sum() == 239 and report.k == 20
    assert report.confusion[2, 0] == 1 and report.confusion[0, 1] == 1 and report.confusion[3, 2] == 1
    assert report.accuracy == pytest.approx(236 / 239)
    assert report.per_class[0] == pytest.approx(59 / 60) and report.per_class[3] == pytest.approx(59 / 60)


def test_the_vote_is_evaluate_s_knn():
    """The mislabel vote is the leave-one-out weighted kNN of evaluate.knn_predict (cosine, τ = 0.1)."""
    from simclr_studio.evaluate import knn_predict

    feats, labels = labelled_clusters(per_class=40, seed=4)
    feats += np.random.default_rng(5).normal(scale=6.0, size=feats.shape).astype(np.float32)  # classes overlap
    vote, confidence = curate.knn_votes(knn_graph(feats, 20), labels, 4)
    expected = knn_predict(feats, labels, feats, 4, k=20, leave_one_out=True)
    assert np.array_equal(vote, expected) and (vote != labels).sum() > 10
    assert np.all((confidence > 0) & (confidence <= 1))


def test_findings_csv(tmp_path):
    paths = [f"/data/img{i}.png" for i in range(6)] + ["=HYPERLINK(1)"]
    findings = duplicate_findings([DuplicateGroup((0, 3), (1.0, 0.991234)), DuplicateGroup((1, 2), (1.0, 0.99))],
                                  paths)
    findings += outlier_findings(np.array([6, 4]), np.array([0.5, 0.25], np.float32), paths)
    found, _ = likely_mislabeled((np.array([[1], [0]]), np.ones((2, 1), np.float32)), np.array([0, 1]), 2)
    findings += mislabel_findings(found, paths, ["shirt", "t-shirt"])
    out = write_findings_csv(tmp_path / "report.csv", findings)
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["kind", "group", "path", "score"]
    assert rows[1:5] == [["duplicate", "1", "/data/img0.png", "1.000000"], ["duplicate", "1", "/data/img3.png",
                         "0.991234"], ["duplicate", "2", "/data/img1.png", "1.000000"],
                         ["duplicate", "2", "/data/img2.png", "0.990000"]]
    assert rows[5] == ["outlier", "1", "'=HYPERLINK(1)", "0.500000"]  # a formula-like name is not a formula
    assert rows[6] == ["outlier", "2", "/data/img4.png", "0.250000"]
    assert rows[7] == ["mislabel", "shirt→t-shirt", "/data/img0.png", "1.000000"]
    assert rows[8][:2] == ["mislabel", "t-shirt→shirt"] and len(rows) == 9
    with pytest.raises(FileExistsError, match="already exists"):
        write_findings_csv(out, [])
    assert len(out.read_text().splitlines()) == 9  # refused: untouched
    write_findings_csv(out, [Finding("outlier", "1", "x", 0.1)], overwrite=True)
    assert len(out.read_text().splitlines()) == 2
