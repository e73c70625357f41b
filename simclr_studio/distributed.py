"""Data-parallel training with PyTorch's own stack: torchrun starts the processes, this joins them.

Under ``torchrun`` every process reads its place (RANK, WORLD_SIZE, LOCAL_RANK) from the
environment. CUDA processes talk over NCCL, CPU processes over gloo. What SimCLR needs beyond
plain DistributedDataParallel:

- the NT-Xent negatives of all processes, gathered *with gradient* (``gather_with_grad``), so K
  processes × batch B train exactly like one batch of K·B;
- global batch-norm statistics (SyncBatchNorm, CUDA only in PyTorch), as in the paper;
- every rank agreeing, at every step, on whether to go on: a stop, a pause or a non-finite loss on
  any rank is seen by all (``StepAgreement``), so no rank waits forever in a collective.
"""

from __future__ import annotations

import datetime
import os
import shlex
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

# A rank that waits this long in a collective gives up with an error instead of hanging (e.g. when
# a peer machine vanished without torchrun noticing). Long enough for rank 0's end-of-epoch kNN.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device_name: str) -> DistContext:
    """Join the process group torchrun set up (no-op for a single process).

    Returns the context; for CUDA each process is bound to the GPU of its LOCAL_RANK.
    """
    if not launched_by_torchrun():
        return DistContext()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    elif os.environ.get("OMP_NUM_THREADS") == "1":
        # torchrun's default of one thread per process would leave most cores idle on a CPU run.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return DistContext(rank, world, local_rank, backend)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# all_gather_single is the newer name (torch ≥ 2.10) of all_gather_into_tensor.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for our rows (all-reduce, then our slice)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        out = z.new_empty((world * z.shape[0], *z.shape[1:]))
        _all_gather_single(out, z.contiguous())
        ctx.rows = z.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(z: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of ``z`` (equal batch sizes) in rank order, and where ours start.

    Differentiable: the loss terms that other ranks compute with our embeddings as negatives
    send their gradient back to us, so K ranks × B train exactly like one batch of K·B.
    """
    return _GatherWithGrad.apply(z), dist.get_rank() * z.shape[0]


def wrap_model(model: torch.nn.Module, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """DistributedDataParallel, with SyncBatchNorm when asked and the device supports it."""
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


class StepAgreement:
    """Small all-reduces that keep the ranks in step: whether any wants to stop or pause, and the
    mean loss (a NaN on any rank makes it NaN on all, so all stop together)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, stop: bool, pause: bool) -> tuple[bool, bool]:
        flags = torch.tensor([float(stop), float(pause)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])

    def same_everywhere(self, value: int) -> bool:
        t = torch.tensor([value, -value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t[0]) == value and int(-t[1]) == value

    def barrier(self) -> None:
        dist.barrier()

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / dist.get_world_size()

    def broadcast_ints(self, *values: int) -> tuple[int, ...]:
        """Rank 0's values on every rank (e.g. a time budget's plan, made from rank 0's clock)."""
        t = torch.tensor(values, dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return tuple(int(v) for v in t.tolist())


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node K -m simclr_studio ARGV``.

    A frozen bundle has no ``python -m``: its executable runs torchrun itself (the hidden
    ``torchrun`` command) and torchrun starts the executable as each worker (``--no-python``).
    """
    options = ["--standalone", f"--nproc_per_node={nproc}"]
    if getattr(sys, "frozen", False):
        return [sys.executable, "torchrun", *options, "--no-python", sys.executable, *argv]
    return [sys.executable, "-m", "torch.distributed.run", *options, "-m", "simclr_studio", *argv]


def describe_command(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
