import math

import pytest
import torch

from simclr_studio.config import RunConfig
from simclr_studio.device import amp_dtype
from simclr_studio.model import build_model
from simclr_studio.optim import LARS, build_optimizer, lr_at, param_groups


def test_bn_and_biases_get_no_decay_and_no_adaptation():
    model = build_model(RunConfig(backbone="small-cnn", image_size=16))
    decay, no_decay = param_groups(model, 1e-6)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 for p in decay["params"]) and decay["lars"] and decay["weight_decay"] == 1e-6
    assert not no_decay["lars"] and no_decay["weight_decay"] == 0.0
    assert any("bias" in names[id(p)] for p in no_decay["params"])
    assert any(".1.weight" in names[id(p)] for p in no_decay["params"])  # a BatchNorm weight
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_lars_step_matches_the_formula():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "lars": True, "weight_decay": 0.1},
                {"params": [b], "lars": False, "weight_decay": 0.0}], lr=0.5, momentum=0.9, eta=0.01)
    w.grad = torch.tensor([1.0, 0.0])
    b.grad = torch.tensor([2.0])
    opt.step()
    d = torch.tensor([1.0, 0.0]) + 0.1 * torch.tensor([3.0, 4.0])  # g + λw
    trust = 0.01 * 5.0 / d.norm()
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * trust * d)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))  # plain SGD for BN/bias
    # Second step: momentum accumulates the scaled update.
    w_before = w.detach().clone()
    w.grad = torch.tensor([1.0, 0.0])
    opt.step()
    d2 = torch.tensor([1.0, 0.0]) + 0.1 * w_before
    trust2 = 0.01 * w_before.norm() / d2.norm()
    assert torch.allclose(w.detach(), w_before - 0.5 * (0.9 * trust * d + trust2 * d2), atol=1e-6)


@pytest.mark.parametrize("name,cls", [("lars", LARS), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_build_optimizer(name, cls):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = build_optimizer(model, name, lr=0.1, weight_decay=1e-4)
    assert isinstance(opt, cls) and [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]


def test_warmup_then_cosine():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))  # linear warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # cosine falls
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    assert lr_at(0, 10, 0, 2.0) == pytest.approx(2.0)  # no warm-up


def test_lr_scales_with_global_batch():
    cfg = RunConfig(optimizer="lars", batch_size=512)
    assert cfg.resolved_lr() == pytest.approx(0.6) and cfg.resolved_lr(world_size=4) == pytest.approx(2.4)
    assert RunConfig(lr=0.01).resolved_lr(world_size=8) == 0.01  # an explicit lr is taken as given


def test_amp_dtype_follows_the_hardware(monkeypatch):
    import simclr_studio.device as device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert amp_dtype(torch.device("cpu")) is None  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert amp_dtype(torch.device("cpu")) is torch.bfloat16
    assert amp_dtype(torch.device("mps")) is None
