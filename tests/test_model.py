import pytest
import torch
import torchvision

from simclr_studio.checkpoint import CheckpointError
from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.model import build_backbone, build_model, load_backbone_weights


@pytest.mark.parametrize("name,dim", [("small-cnn", 256), ("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_backbones_give_feature_vectors(name, dim):
    net, d = build_backbone(name, small_stem=True)
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert d == dim and out.shape == (2, dim)


def test_small_stem_keeps_resolution():
    net, _ = build_backbone("resnet18", small_stem=True)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)
    plain, _ = build_backbone("resnet18", small_stem=False)
    assert plain.conv1.kernel_size == (7, 7) and plain.conv1.stride == (2, 2)


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("vgg11")


def test_head_follows_the_paper():
    model = build_model(RunConfig(backbone="resnet18", image_size=32))
    linears = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(512, 512), (512, 128)]
    model.eval()
    h, z = model(torch.randn(2, 3, 32, 32))
    assert h.shape == (2, 512) and z.shape == (2, 128)


def test_loads_torchvision_format_weights(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)  # a torchvision-style file, fc included
    net, _ = build_backbone("resnet18", small_stem=False)
    missing = load_backbone_weights(net, path)
    assert missing == []
    assert torch.equal(net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    # Into a small stem, conv1's 7×7 kernel does not fit: it is left initialised and reported.
    small, _ = build_backbone("resnet18", small_stem=True)
    assert load_backbone_weights(small, path) == ["conv1.weight"]


def test_wrong_architecture_weights_are_refused(tmp_path):
    path = tmp_path / "cnn.pt"
    torch.save(build_backbone("small-cnn")[0].state_dict(), path)
    net, _ = build_backbone("resnet18")
    with pytest.raises(CheckpointError, match="no tensor"):
        load_backbone_weights(net, path)
