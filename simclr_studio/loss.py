"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

For 2N views (z1[i], z2[i] from the same image) each view's positive is its partner and the
other 2N-2 views are negatives:  ℓ(i,j) = -log exp(sim(i,j)/τ) / Σ_{k≠i} exp(sim(i,k)/τ),
averaged over all 2N views. Computed as a cross-entropy over the similarity logits with the
self-similarity masked out (logsumexp: numerically stable at any τ).

Across processes, ``gather`` returns the views of all ranks (with gradient); each rank computes
the loss of its own rows against every column, so K ranks × N behave as one batch of K·N.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

GatherFn = Callable[[torch.Tensor], tuple[torch.Tensor, int]]  # local → (all ranks' rows, offset of ours)


def _local_gather(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    return z, 0


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
            gather: GatherFn | None = None) -> torch.Tensor:
    """Mean NT-Xent over this process's 2N views; negatives from all processes when ``gather`` is given."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two [N, D] tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    gather = gather or _local_gather
    dtype = torch.float64 if z1.dtype == torch.float64 else torch.float32  # never below fp32, even under AMP
    z1 = F.normalize(z1.to(dtype), dim=1)
    z2 = F.normalize(z2.to(dtype), dim=1)
    n = z1.shape[0]
    all1, offset = gather(z1)
    all2, _ = gather(z2)
    total = all1.shape[0]
    queries = torch.cat((z1, z2), 0)  # [2n, D]
    keys = torch.cat((all1, all2), 0)  # [2·total, D]
    logits = queries @ keys.T / temperature
    rows = torch.arange(n, device=z1.device) + offset
    self_cols = torch.cat((rows, rows + total))
    pos_cols = torch.cat((rows + total, rows))
    logits[torch.arange(2 * n, device=z1.device), self_cols] = float("-inf")  # a view is not its own negative
    return F.cross_entropy(logits, pos_cols)
