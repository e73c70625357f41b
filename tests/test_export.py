import csv
import json

import numpy as np
import pytest
import torch
import torchvision

from simclr_studio.config import RunConfig
from simclr_studio.export import export_weights, save_embeddings
from simclr_studio.train import Trainer
from simclr_studio.trained import load_trained


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """One epoch of resnet18 (small stem) and of small-cnn on a tiny folder."""
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("export")
    data = make_image_folder(root / "data", classes=2, per_class=4, size=16)
    runs = {}
    for backbone in ("resnet18", "small-cnn"):
        cfg = RunConfig(data_dir=str(data), backbone=backbone, image_size=16, batch_size=4, epochs=1, device="cpu",
                        eval_every=0)
        assert Trainer(cfg, root / backbone).run() == "completed"
        runs[backbone] = load_trained(root / backbone)
    return runs


def torchvision_resnet18(meta):
    net = torchvision.models.resnet18()
    if meta["small_stem"]:
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    return net.eval()


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_weights_load_in_plain_torchvision(trained_runs, tmp_path, fmt):
    run = trained_runs["resnet18"]
    out = tmp_path / f"encoder.{fmt}"
    written = export_weights(run, fmt, out)
    meta = json.loads((tmp_path / f"encoder.{fmt}.json").read_text())
    assert written == [out, tmp_path / f"encoder.{fmt}.json"]
    assert meta["backbone"] == "resnet18" and meta["image_size"] == 16 and len(meta["mean"]) == 3
    if fmt == "pt":
        state = torch.load(out, weights_only=True)
    else:
        from safetensors.torch import load_file

        state = load_file(str(out))
    assert not any(k.startswith("fc.") for k in state)
    net = torchvision_resnet18(meta)
    net.load_state_dict(state)  # strict: every key matches torchvision's ResNet
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), run.model.backbone.eval()(x))


def test_small_cnn_export_round_trip(trained_runs, tmp_path):
    from simclr_studio.model import build_backbone

    run = trained_runs["small-cnn"]
    export_weights(run, "pt", tmp_path / "cnn.pt")
    net, _ = build_backbone("small-cnn")
    net.load_state_dict(torch.load(tmp_path / "cnn.pt", weights_only=True))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), run.model.backbone.eval()(x))


def test_onnx_matches_pytorch(trained_runs, tmp_path):
    import onnxruntime as ort  # part of the test extra: this check must not be skipped
    run = trained_runs["resnet18"]
    export_weights(run, "onnx", tmp_path / "encoder.onnx")
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 16, 16)  # a batch size other than the export's: the batch axis is dynamic
    (onnx_out,) = session.run(["features"], {"images": x.numpy()})
    with torch.no_grad():
        torch_out = run.model.backbone.eval()(x).numpy()
    assert onnx_out.shape == (5, 512)
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-4)


def test_embeddings_npz_and_csv(tmp_path):
    feats = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    paths, labels, classes = ["a.png", "b,c.png", "d.png"], [0, 1, -1], ["cat", "dog"]
    npz = save_embeddings(tmp_path / "f.npz", feats, paths, labels, classes)
    data = np.load(npz)
    assert np.array_equal(data["features"], feats) and data["paths"].tolist() == paths
    assert data["labels"].tolist() == labels and data["classes"].tolist() == classes
    out = save_embeddings(tmp_path / "f.csv", feats, paths, labels, classes, coords=np.ones((3, 2)))
    rows = list(csv.reader(out.open()))
    assert rows[0][:5] == ["path", "label", "class", "x", "y"] and len(rows) == 4
    assert rows[2][:3] == ["b,c.png", "1", "dog"] and rows[3][2] == ""
    assert np.allclose([float(v) for v in rows[1][5:]], feats[0], atol=1e-6)


def readme_recipe() -> str:
    """The README's recipe for using an export, as printed there."""
    from conftest import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- recipe: tests/test_export.py runs this block -->")
    block = text[text.index("```python\n", start) + len("```python\n"):]
    return block[: block.index("```")]


BACKBONES_EXPORTED = ["tiny-cnn", "small-cnn", "resnet18-small-stem", "resnet18"]


def exported_encoder(folder, backbone):
    """An export of ``backbone`` (random weights, trained-looking batch-norm statistics, so that eval mode
    matters) in ``folder``, an input ``x.pt``; returns the app's features of that input."""
    from simclr_studio.model import build_backbone
    from simclr_studio.trained import TrainedModel

    name = backbone.replace("-small-stem", "")
    size = 16 if "small-stem" in backbone or "cnn" in backbone else 96  # above 64 px: the ImageNet stem
    cfg = RunConfig(backbone=name, image_size=size)
    torch.manual_seed(0)
    net, dim = build_backbone(name, cfg.resolved_small_stem())
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    run = TrainedModel.__new__(TrainedModel)  # only what export reads
    run.config, run.epoch, run.global_step, run.checkpoint = cfg, 1, 10, folder / "last.pt"
    run.model = torch.nn.Module()
    run.model.backbone, run.model.feature_dim = net.eval(), dim
    export_weights(run, "pt", folder / "encoder.pt")
    meta = json.loads((folder / "encoder.pt.json").read_text())
    assert meta["small_stem"] == (None if "cnn" in name else size <= 64)
    x = torch.rand(2, 3, size, size)
    torch.save(x, folder / "x.pt")
    with torch.no_grad():
        return net(x)


@pytest.mark.slow
def test_the_readme_recipe_loads_every_backbone(tmp_path):
    """Export, then the README's recipe, as printed, in a fresh interpreter with only torch and
    torchvision (one interpreter, the recipe run in each backbone's folder): the app's features."""
    import subprocess
    import sys

    expected = {}
    for backbone in BACKBONES_EXPORTED:
        (tmp_path / backbone).mkdir()
        expected[backbone] = exported_encoder(tmp_path / backbone, backbone)
    recipe = readme_recipe()
    assert "simclr_studio" not in recipe
    body = recipe + "\ntorch.save(net(torch.load('x.pt')).detach(), 'out.pt')\n"
    script = (f"import os\nfor folder in {BACKBONES_EXPORTED!r}:\n"
              f"    os.chdir(os.path.join({str(tmp_path)!r}, folder))\n    exec({body!r})\n")
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for backbone in BACKBONES_EXPORTED:
        torch.testing.assert_close(torch.load(tmp_path / backbone / "out.pt"), expected[backbone], msg=backbone)
