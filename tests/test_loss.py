import math

import pytest
import torch
import torch.nn.functional as F

from simclr_studio.loss import nt_xent


def nt_xent_naive(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The paper's formula as a plain loop over the 2N views: the reference nt_xent must match (slow)."""
    z = torch.cat((z1, z2), 0).double()
    n2 = z.shape[0]
    n = n2 // 2
    total = z.new_zeros(())
    for i in range(n2):
        j = (i + n) % n2
        sim = [torch.dot(z[i], z[k]) / (z[i].norm() * z[k].norm()) for k in range(n2)]
        numerator = torch.exp(sim[j] / temperature)
        denominator = sum(torch.exp(sim[k] / temperature) for k in range(n2) if k != i)
        total = total - torch.log(numerator / denominator)
    return total / n2


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.5), (5, 8, 0.1), (9, 4, 1.0), (16, 32, 0.2)])
def test_matches_the_papers_formula(n, d, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(nt_xent_naive(z1, z2, tau).item(), rel=1e-5, abs=1e-6)


def test_gradients_match_naive_loop():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 5, generator=g, requires_grad=True), torch.randn(6, 5, generator=g, requires_grad=True)
    (a1, a2) = torch.autograd.grad(nt_xent(z1, z2, 0.3), (z1, z2))
    (b1, b2) = torch.autograd.grad(nt_xent_naive(z1, z2, 0.3), (z1, z2))
    assert torch.allclose(a1, b1.float(), atol=1e-6) and torch.allclose(a2, b2.float(), atol=1e-6)


def test_stable_at_small_temperature_and_large_inputs():
    z1 = torch.randn(8, 16) * 1e4
    z2 = z1 + torch.randn(8, 16)
    loss = nt_xent(z1, z2, 0.01)
    assert math.isfinite(loss.item())
    # Identical views are near-perfect positives: the loss approaches its minimum, 0.
    assert nt_xent(z1, z1.clone(), 0.01).item() < 1e-3


def test_scale_invariant_cosine_similarity():
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    assert nt_xent(z1, z2).item() == pytest.approx(nt_xent(3 * z1, 0.5 * z2).item(), rel=1e-6)


def test_negatives_are_the_other_2n_minus_2_views():
    # With all views orthogonal except partners, each row's denominator holds exp(1/τ) once
    # (the partner) and exp(0) for the 2N-2 negatives: loss = log(e^{1/τ} + 2N-2) - 1/τ.
    n, tau = 3, 0.5
    z = torch.eye(2 * n)[:n]
    loss = nt_xent(z, z.clone(), tau).item()
    assert loss == pytest.approx(math.log(math.exp(1 / tau) + 2 * n - 2) - 1 / tau, rel=1e-6)


def test_gather_hook_makes_shards_equal_one_big_batch():
    """Two simulated processes with gathered negatives give the loss and gradients of one 2N batch."""
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    full = nt_xent(a1, a2, 0.2)
    full.backward()

    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    views = [F.normalize(b1, dim=1), F.normalize(b2, dim=1)]  # what every rank would all-gather
    total = 0
    for rank in range(2):
        calls = iter(range(2))  # nt_xent gathers view 1, then view 2

        def gather(local, rank=rank, calls=calls):
            which = next(calls)
            assert torch.allclose(local, views[which][rank * 4 : rank * 4 + 4])
            return views[which], rank * 4

        total = total + nt_xent(b1[rank * 4 : rank * 4 + 4], b2[rank * 4 : rank * 4 + 4], 0.2, gather)
    mean = total / 2  # DDP averages gradients over ranks
    mean.backward()
    assert mean.item() == pytest.approx(full.item(), rel=1e-6)
    assert torch.allclose(a1.grad, b1.grad, atol=1e-6) and torch.allclose(a2.grad, b2.grad, atol=1e-6)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
