"""``simclr-studio curate`` end to end on a tiny trained run, and embed's t-SNE flags."""

import csv
import shutil

import pytest
from conftest import DEMO

from simclr_studio.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("simclr-studio: error:") and "Traceback" not in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run on 30 demo images in three class folders, one of which has an exact copy there."""
    from simclr_studio.config import RunConfig
    from simclr_studio.train import Trainer

    root = tmp_path_factory.mktemp("curate")
    data = root / "images"
    for name in ("bag", "sneaker", "trouser"):
        (data / name).mkdir(parents=True)
        for path in sorted((DEMO / name).glob("*.png"))[:10]:
            shutil.copy(path, data / name / path.name)
    original = sorted((data / "sneaker").glob("*.png"))[3]
    shutil.copy(original, data / "sneaker" / f"copy_of_{original.name}")
    cfg = RunConfig(data_dir=str(data), backbone="tiny-cnn", image_size=16, batch_size=8, epochs=1, device="cpu",
                    optimizer="sgd", eval_every=0, seed=3)
    Trainer(cfg, root / "run").run()
    return root / "run", data, original


def read_report(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_curate_writes_one_row_per_finding(capsys, tmp_path, trained):
    run, data, original = trained
    report = tmp_path / "report.csv"
    code, out, err = run_cli(capsys, "curate", run, data, "--out", report, "--quiet")
    assert code == 0, err
    rows = read_report(report)
    assert rows[0] == ["kind", "group", "path", "score"]
    kinds = [r[0] for r in rows[1:]]
    assert set(kinds) <= {"duplicate", "outlier", "mislabel"} and "outlier" in kinds
    assert len([k for k in kinds if k == "outlier"]) == 1  # by default at most 5 % of the 31 images
    assert all(r[1].count("→") == 1 for r in rows[1:] if r[0] == "mislabel")
    assert "duplicates: " in out and "group(s)" in out and "outliers: the 1 most unusual of 31" in out
    assert "neighbour vote (k=20) agrees with the folder" in out and f"findings to {report}" in out

    # Flags: near-exact copies only, more outliers, no mislabels.
    code, out, err = run_cli(capsys, "curate", run, data, "--out", report, "--quiet", "--overwrite",
                             "--duplicates", "0.99999", "--outliers", "4", "--mislabels", "0")
    assert code == 0, err
    rows = read_report(report)
    # The copy and its original are the one group; the original (scanned first) is its reference.
    assert [r[:3] for r in rows[1:] if r[0] == "duplicate"] == [
        ["duplicate", "1", str(original)], ["duplicate", "1", str(original.with_name(f"copy_of_{original.name}"))]]
    assert "duplicates: 1 group(s), 2 images in them" in out
    assert [r[1] for r in rows[1:] if r[0] == "outlier"] == ["1", "2", "3", "4"]
    assert not [r for r in rows[1:] if r[0] == "mislabel"]
    outlier_scores = [float(r[3]) for r in rows[1:] if r[0] == "outlier"]
    assert outlier_scores == sorted(outlier_scores, reverse=True)


def test_curate_without_classes_has_no_mislabels(capsys, tmp_path, trained):
    run, data, *_ = trained
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted((data / "bag").glob("*.png")):
        shutil.copy(path, flat / path.name)
    code, out, err = run_cli(capsys, "curate", run, flat, "--out", tmp_path / "r.csv", "--quiet")
    assert code == 0, err
    assert {r[0] for r in read_report(tmp_path / "r.csv")[1:]} <= {"duplicate", "outlier"}
    assert "mislabel" not in out


@pytest.mark.parametrize("extra,message", [
    (["--duplicates", "1.5"], "--duplicates is a cosine similarity"),
    (["--out-exists"], "already exists: choose another --out, or --overwrite"),
])
def test_curate_refusals_are_one_line(capsys, tmp_path, trained, extra, message):
    run, data, *_ = trained
    report = tmp_path / "report.csv"
    if extra == ["--out-exists"]:
        report.write_text("the user's file")
        extra = []
    code, _, err = run_cli(capsys, "curate", run, data, "--out", report, "--quiet", *extra)
    assert code == 2 and one_line_error(err) and message in err
    assert not report.exists() or report.read_text() == "the user's file"


def test_curate_is_a_command_of_the_launcher(capsys):
    from simclr_studio import __main__ as launcher

    with pytest.raises(SystemExit):
        launcher.main(["curate", "--help"])
    assert "kind,group,path,score" in capsys.readouterr().out


def test_embed_passes_the_tsne_settings(capsys, tmp_path, trained, monkeypatch):
    import numpy as np

    from simclr_studio import projection

    asked = {}

    def fake_tsne(features, **kw):
        asked.update(kw)
        return np.zeros((len(features), 2), np.float32)

    monkeypatch.setattr(projection, "tsne_2d", fake_tsne)
    run, data, *_ = trained
    code, _, err = run_cli(capsys, "embed", run, data, "--out", tmp_path / "f.npz", "--map", "tsne", "--quiet",
                           "--perplexity", "12.5", "--tsne-iterations", "300")
    assert code == 0, err
    assert asked == {"perplexity": 12.5, "max_iter": 300}
    code, _, err = run_cli(capsys, "embed", run, data, "--out", tmp_path / "g.npz", "--map", "tsne", "--quiet")
    assert code == 0, err
    assert asked == {"perplexity": projection.TSNE_PERPLEXITY, "max_iter": projection.TSNE_ITERATIONS}
    with pytest.raises(SystemExit):
        run_cli(capsys, "embed", run, data, "--out", tmp_path / "h.npz", "--perplexity", "0")
    assert "must be above 0" in capsys.readouterr().err


def test_resized_and_reencoded_copies_are_found_by_default(capsys, tmp_path, trained, monkeypatch):
    """What an encoder alone can miss: a JPEG re-encode and a double-size copy group with their original,
    and no other image, even when the features tell nothing (random, one row per image)."""
    import numpy as np
    from PIL import Image

    from simclr_studio import evaluate

    rng = np.random.default_rng(0)
    monkeypatch.setattr(evaluate, "extract_features",
                        lambda encoder, batches, device="cpu": np.concatenate(
                            [rng.standard_normal((len(b), 32)).astype(np.float32) for b in batches]))
    run, _, _ = trained
    data = tmp_path / "photos"
    data.mkdir()
    for path in sorted((DEMO / "bag").glob("*.png"))[:8]:
        shutil.copy(path, data / path.name)
    original = sorted(data.glob("*.png"))[2]
    with Image.open(original) as im:
        rgb = im.convert("RGB")
        rgb.save(data / "reencoded.jpg", quality=75)
        rgb.resize((rgb.width * 2, rgb.height * 2), Image.BICUBIC).save(data / "double.png")
    report = tmp_path / "report.csv"
    code, _, err = run_cli(capsys, "curate", run, data, "--out", report, "--quiet")
    assert code == 0, err
    groups = {}
    for kind, group, path, _ in read_report(report)[1:]:
        if kind == "duplicate":
            groups.setdefault(group, set()).add(path)
    wanted = {str(original), str(data / "reencoded.jpg"), str(data / "double.png")}
    assert wanted in groups.values(), groups  # the three, and no distinct image with them
