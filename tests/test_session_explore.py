"""The Explore session without Qt: sources, embedding, maps, clusters, quality, neighbours, search and
the selection, driven as the app drives it (compute, then apply) on a tiny trained run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from simclr_studio.session.explore import ExploreSession
from simclr_studio.session.explore_values import Selection


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A labelled folder (two classes, one image beside them) and a one-epoch run on it."""
    from simclr_studio.config import RunConfig
    from simclr_studio.data import scan_folder
    from simclr_studio.train import Trainer

    root = tmp_path_factory.mktemp("session-explore")
    data = make_image_folder(root / "data", classes=2, per_class=6, size=16, seed=2)
    shutil.copyfile(data / "class_1" / "img_000.png", data / "loose.png")  # beside the class folders
    cfg = RunConfig(data_dir=str(data), backbone="small-cnn", image_size=16, batch_size=4, epochs=1, device="cpu",
                    optimizer="sgd", eval_every=0, seed=1)
    assert Trainer(cfg, root / "run").run() == "completed"
    return root / "run", scan_folder(data)


@pytest.fixture
def session(tiny_run):
    run_dir, scan = tiny_run
    shutil.rmtree(run_dir / "embeddings", ignore_errors=True)
    s = ExploreSession(device="cpu")
    assert s.set_sources(run_dir, scan)
    return s


def embedded(session):
    assert session.apply_embedded(session.embed())
    return session


def test_sources_and_what_to_do_first(tiny_run):
    run_dir, scan = tiny_run
    s = ExploreSession(device="cpu")
    assert "Train a run" in s.prompt() and not s.can_embed()
    s.set_sources(run_dir, None)
    assert s.sources.checkpoint == run_dir / "checkpoints" / "last.pt" and s.checkpoints()[0].name == "last.pt"
    assert "Open the image folder" in s.prompt() and not s.can_embed()
    assert s.set_sources(run_dir, scan)
    assert s.prompt() == f"Press Embed to compute features of {len(scan):,} images with last.pt."
    assert s.can_embed() and not s.cached()
    assert not s.set_sources(run_dir, scan)  # shown again, nothing changed: nothing is dropped


def test_embed_returns_a_value_that_applies_only_to_its_sources(session, tiny_run):
    run_dir, scan = tiny_run
    result = session.embed()
    assert session.embedded is None  # computing changes nothing
    emb = result.embeddings
    assert len(emb) == len(scan) == 13 and emb.features.shape[1] == 256 and emb.labeled
    assert result.trained.run_dir == run_dir and not result.from_cache and result.cache_file.is_file()
    assert emb.maps["pca"].shape == (13, 2) and len(result.index) == 13
    assert session.apply_embedded(result)
    assert session.embeddings is emb and session.trained is result.trained and session.cached()
    assert session.prompt() == "13 images · 256 features · last.pt"
    # Cleared, or other sources: an embedding still in flight does not apply.
    late = session.embed()
    session.clear()
    assert not session.apply_embedded(late) and session.embedded is None
    late = session.embed()
    session.set_sources(run_dir, None)
    assert not session.apply_embedded(late)
    session.set_sources(run_dir, scan)
    again = session.embed()
    assert again.from_cache and session.apply_embedded(again) and "(from cache)" in session.prompt()


def test_maps_and_clusters_are_applied_then_cached(session):
    embedded(session)
    assert session.map("tsne") is None
    tsne = session.projection("tsne")
    assert session.map("tsne") is None  # not until applied
    assert tsne.coords.shape == (13, 2) and session.apply_projection(tsne)
    np.testing.assert_array_equal(session.map("tsne"), tsne.coords)
    assert session.cluster_count() == 2  # one cluster per class of a labelled folder
    clusters = session.clusters()
    assert session.cluster_labels() is None and session.apply_clusters(clusters)
    np.testing.assert_array_equal(session.cluster_labels(), clusters.labels)
    groups, names = session.groups(by_cluster=True)
    assert names == ["cluster 1", "cluster 2"] and list(groups) == list(clusters.labels)
    groups, names = session.groups(by_cluster=False)
    assert names == ["class_0", "class_1", "unlabeled"]
    assert (groups == 2).sum() == 1 and session.paths(np.flatnonzero(groups == 2))[0].endswith("loose.png")
    # The session writes the cache: reopening reads the maps back.
    assert session.save() == session.embedded.cache_file
    session.clear()
    embedded(session)
    assert session.embedded.from_cache
    np.testing.assert_array_equal(session.map("tsne"), tsne.coords)
    np.testing.assert_array_equal(session.cluster_labels(), clusters.labels)
    # A map computed for embeddings that were since dropped does not apply.
    stale = session.projection("pca")
    session.clear()
    embedded(session)
    assert not session.apply_projection(stale) and not session.apply_clusters(clusters)


def test_quality_against_a_random_encoder_and_raw_pixels(session):
    from simclr_studio.evaluate import knn_sample, leave_one_out_knn
    from simclr_studio.session.quality import ROWS

    with pytest.raises(ValueError, match="embed"):
        session.measure_quality()
    embedded(session)
    reports = []
    measured = session.measure_quality(progress=lambda done, total: reports.append((done, total)))
    assert session.quality is None and session.apply_quality(measured)
    quality = session.quality
    emb = session.embeddings
    sample = knn_sample(emb.labels)
    assert quality.n == len(sample) == 12 and quality.total == 12  # the loose image has no class
    knn, k = leave_one_out_knn(emb.features[sample], emb.labels[sample], 2)
    assert (quality.trained.knn_accuracy, quality.trained.k) == (pytest.approx(knn), k)
    for key, _ in ROWS:
        assert 0.0 <= quality.row(key).knn_accuracy <= 1.0
    assert quality.gain == pytest.approx(quality.trained.knn_accuracy
                                         - max(quality.random.knn_accuracy, quality.raw.knn_accuracy))
    assert reports and reports[-1] == (24, 24)  # two phases of 12 images on one bar
    # The latest checkpoint's accuracy is kept in the run folder, where the Runs tab reads it.
    import json

    from simclr_studio.session.runs import summarize_run

    record = json.loads((session.run_dir / "eval.json").read_text())
    assert record["linear_accuracy"] == quality.trained.linear_accuracy
    assert record["knn_accuracy"] == pytest.approx(quality.trained.knn_accuracy)
    assert summarize_run(session.run_dir).linear_accuracy == quality.trained.linear_accuracy
    with pytest.raises(InterruptedError):
        session.measure_quality(should_stop=lambda: True)


def test_neighbours_search_and_selection(session, tmp_path):
    embedded(session)
    emb = session.embeddings
    unit = emb.features / np.linalg.norm(emb.features, axis=1, keepdims=True)
    results = session.neighbours(4, k=5)
    assert session.results is None and session.show(results)
    sims = unit @ unit[4]
    sims[4] = -np.inf
    assert len(results.rows) == 5 and 4 not in results.rows and session.focus == 4
    np.testing.assert_allclose(results.similarities, np.sort(sims)[::-1][:5], atol=1e-5)
    captions = session.captions(results)
    assert captions[0].startswith(f"{results.similarities[0]:.3f}")
    assert captions[0].endswith("\n" + session.label_of(results.rows[0]))
    with pytest.raises(IndexError):
        session.neighbours(13)
    # A copy of an image, from outside the folder: found first, with similarity 1.
    outside = tmp_path / "query.png"
    shutil.copyfile(emb.paths[9], outside)
    found = session.search(outside, k=3)
    assert found.kind == "search" and found.query == str(outside) and found.focus is None
    assert found.rows[0] == 9 and session.captions(found)[0].startswith("1.000")
    # An image of the map itself, however its path is written: its neighbours, as for a click on it.
    roundabout = Path(emb.paths[9]).parent / ".." / Path(emb.paths[9]).parent.name / Path(emb.paths[9]).name
    inside = session.search(roundabout, k=3)
    assert inside.kind == "neighbours" and inside.focus == 9 and 9 not in inside.rows
    assert session.row_of(outside) is None
    # The selection is a value; it is what is shown until something else is.
    selection = session.select([7, 3, 3, 99, 5])
    assert selection == Selection((3, 5, 7)) == session.selection and len(selection) == 3 and 5 in selection
    assert session.results.kind == "selection" and session.results.rows == (3, 5, 7) and session.focus is None
    assert selection.paths(emb) == [emb.paths[r] for r in (3, 5, 7)]
    assert session.captions(session.results) == [session.label_of(r) for r in (3, 5, 7)]
    assert session.show(found) and session.selection == Selection()
    # Results of dropped embeddings are not shown.
    session.clear()
    embedded(session)
    assert not session.show(found) and session.results is None


def test_a_checkpoint_from_another_run_stays_chosen(session, tiny_run, tmp_path):
    run_dir, scan = tiny_run
    other = tmp_path / "other-run"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("embeddings"))
    embedded(session)
    assert session.use_checkpoint(other / "checkpoints" / "last.pt")
    assert session.run_dir == other and session.embedded is None
    assert not session.set_sources(run_dir, scan)  # the Train tab shows the same run: the choice stays
    assert session.sources.checkpoint == other / "checkpoints" / "last.pt"
    assert session.set_sources(None, scan)  # the Train tab moved on: it wins again
    assert session.run_dir is None and session.sources.checkpoint is None


def test_the_session_imports_no_qt():
    import subprocess

    code = ("import sys\nimport simclr_studio.session.explore\n"
            "sys.exit(1 if any(m.startswith(('PySide6', 'pyqtgraph')) for m in sys.modules) else 0)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_back_and_forward_through_what_was_shown(session):
    embedded(session)
    assert session.go(-1) is None
    first = session.neighbours(1)
    session.show(first)
    session.select([2, 4], how="lasso")
    session.show(session.neighbours(5))
    assert session.go(-1).kind == "selection" and session.selection == Selection((2, 4))
    assert session.go(-1) is first and session.focus == 1 and session.selection == Selection()
    assert session.go(-1) is None and session.focus == 1
    assert session.go(1).how == "lasso"
    session.show(session.neighbours(7))  # something new drops what was ahead
    assert session.go(1) is None and session.go(-1).how == "lasso"
    session.clear()
    assert not session.history.can_go(-1)


def test_file_name_filter(session):
    embedded(session)
    names = [Path(p).name for p in session.embeddings.paths]
    picked = session.filter_names("  IMG_00 ")
    assert [names[r] for r in picked] == [n for n in names if "img_00" in n] and len(picked) > 0
    assert session.results.how == "file names with 'IMG_00'"
    assert len(session.filter_names("no such name")) == 0


def test_curation_finds_copies_outliers_and_saves_selections(session, tiny_run, tmp_path):
    from simclr_studio import curate
    from simclr_studio.selections import SelectionStore
    from simclr_studio.session.curation import Curation

    embedded(session)
    emb = session.embeddings
    curation = Curation(session)
    found = curation.find_duplicates()
    assert curation.apply(found) and curation.duplicates is found
    # loose.png is a byte copy of class_1/img_000.png: the same features, grouped at any threshold.
    loose, original = (session.row_of(str(Path(tiny_run[1].root) / p)) for p in ("loose.png", "class_1/img_000.png"))
    assert any({loose, original} <= set(g.rows) for g in found.pairs.groups(0.999))
    outliers = curation.find_outliers(3)
    assert curation.apply(outliers)
    assert outliers.rows.tolist() == curate.outliers(emb.features, 3)[0].tolist()
    mislabels = curation.find_mislabels()
    assert mislabels.graph is outliers.graph  # the kNN graph is computed once
    assert curation.apply(mislabels) and mislabels.report.confusion.sum() == sum(1 for x in emb.labels if x >= 0)
    kinds = {f.kind for f in curation.findings()}
    assert {"duplicate", "outlier"} <= kinds
    # Selections are saved with the run by path; copies go to a new folder, never into the image folder.
    curation.save("firsts", [0, 1], "lasso")
    assert SelectionStore(session.run_dir).get("firsts").paths == tuple(emb.paths[:2])
    assert curation.rows_of([emb.paths[1], "/nowhere.png"]) == ([1], 1)
    plan = curation.copy_plan([0, 1], tmp_path / "out")
    assert [src for src, _ in plan] == [Path(p) for p in emb.paths[:2]]
    with pytest.raises(ValueError):
        curation.copy_plan([0], Path(tiny_run[1].root) / "inside")
    # Findings about embeddings no longer shown are dropped.
    session.clear()
    embedded(session)
    assert not curation.apply(found)
    assert curation.findings() == []
