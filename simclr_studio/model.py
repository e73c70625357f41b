"""Encoders (torchvision ResNets, a small fast CNN) and the SimCLR projection head.

The representation used downstream is the encoder output h, never the head output z.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from simclr_studio.checkpoint import CheckpointError, is_training_checkpoint, safe_load
from simclr_studio.config import BACKBONES, ConfigError

if TYPE_CHECKING:
    from torchvision.models import ResNet

RESNETS = ("resnet18", "resnet34", "resnet50")
SMALL_CNN_WIDTHS = {"small-cnn": (32, 64, 128, 256), "tiny-cnn": (16, 32, 64, 128)}


def _resnet(name: str):
    # torchvision.models takes ~1.5 s to import: only when a ResNet is built (the app starts faster).
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


class SmallCNN(nn.Module):
    """Four stages of two conv-BN-ReLU (32→256 channels, stride 2 each after the first) and global pooling.

    About 1.2 M parameters: fast enough to train on a laptop CPU, strong enough for small images.
    ``tiny-cnn`` is the same at half width (16→128, 0.3 M): about 2.5× the images per second on a CPU.
    """

    feature_dim = 256

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(in_ch, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)


def apply_small_stem(net: ResNet) -> None:
    """3×3 stride-1 first conv and no max-pool: keeps spatial detail for 32–64 px inputs (paper's CIFAR setup)."""
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()


def build_backbone(name: str, small_stem: bool = False) -> tuple[nn.Module, int]:
    """Return (encoder mapping images to feature vectors, feature dimension)."""
    if name in SMALL_CNN_WIDTHS:
        net = SmallCNN(SMALL_CNN_WIDTHS[name])
        return net, net.feature_dim
    if name not in RESNETS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    net = _resnet(name)
    if small_stem:
        apply_small_stem(net)
    dim = net.fc.in_features
    net.fc = nn.Identity()  # keys then match torchvision's ResNet with fc removed
    return net, dim


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load a local weights file (our export, a training checkpoint or torchvision's .pth) into ``backbone``.

    Tensors whose shape does not match (e.g. an ImageNet conv1 into a small stem) are left as
    initialised and their names returned; no matching tensor at all is an error.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        try:
            state: Any = load_file(str(path))
        except Exception as exc:  # SafetensorError and friends: a corrupt or foreign file
            raise CheckpointError(f"cannot load weights {path}: {exc}") from exc
    else:
        state = safe_load(path)
    if is_training_checkpoint(state):
        model_state: dict[str, torch.Tensor] = state["model"]
        state = {k[len("backbone."):]: v for k, v in model_state.items() if k.startswith("backbone.")}
    elif isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state_dict")
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not usable:
        raise CheckpointError(f"no tensor in {path} matches this backbone (wrong architecture?)")
    backbone.load_state_dict(usable, strict=False)
    return sorted(k for k in own if k not in usable)


class ProjectionHead(nn.Module):
    """MLP g(·): Linear → BN → ReLU → Linear (hidden = feature dim, out 128 by default)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class SimCLRModel(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int | None = None, out_dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head = ProjectionHead(feature_dim, hidden_dim or feature_dim, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.head(h)


def build_model(cfg, load_weights: bool = True) -> SimCLRModel:
    """The SimCLR model a RunConfig describes (backbone must already be resolved, not "auto")."""
    backbone, dim = build_backbone(cfg.backbone, cfg.resolved_small_stem())
    if cfg.weights and load_weights:
        load_backbone_weights(backbone, cfg.weights)
    return SimCLRModel(backbone, dim, cfg.proj_hidden_dim, cfg.proj_out_dim)
