"""Choosing the compute device and the settings that depend on it."""

from __future__ import annotations

import functools
import platform

import torch

from simclr_studio.config import ConfigError


def available_devices() -> list[str]:
    """Devices actually present, best first (the GUI lists these)."""
    found = []
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    found.append("cpu")
    return found


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_choices() -> list[tuple[str, str, int]]:
    """The app's device menu as (label, device, processes): every device, and with several GPUs
    "all N GPUs", which trains data-parallel in N processes through torchrun."""
    choices = [(name, name, 1) for name in available_devices()]
    n = gpu_count()
    if n > 1:
        choices.insert(n, (f"all {n} GPUs", "cuda", n))  # after the single GPUs, before the CPU
    return choices


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda > mps > cpu; an explicit device that is absent is a ConfigError."""
    if name == "auto":
        return torch.device(available_devices()[0].split(":")[0] if available_devices()[0] != "cpu" else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no CUDA GPU is available (try --device cpu)")
    if name == "mps" and "mps" not in available_devices():
        raise ConfigError("device mps requested but Apple's MPS backend is not available")
    return torch.device(name)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): there bf16 autocast
    roughly doubles convolution throughput; elsewhere it would be emulated and slower."""
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for mixed precision on ``device``, or None where it would not help.

    CUDA: bf16 where the GPU supports it (no loss scaling needed), else fp16. CPU: bf16 when the
    CPU has native bf16 instructions. MPS: None.
    """
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device.type != "cuda":
        return None
    # Native bf16 needs compute capability 8.0+ (Ampere); older GPUs would emulate it slowly.
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
