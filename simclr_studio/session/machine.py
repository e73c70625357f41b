"""The machine while a run trains, without Qt: CPU and memory of the whole machine and of the training
process (with its children: loader workers, torchrun's ranks), and the GPU's utilisation and memory
when there is one.

:class:`MachineSampler` takes one sample per call and never blocks (``psutil.cpu_percent(interval=None)``
compares with the previous call); the app calls it about once a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psutil

from simclr_studio.sizes import GB


@dataclass(frozen=True)
class GpuSample:
    utilization: float | None  # percent of the last sample period the GPU was busy (None: not measurable)
    memory_used: int | None  # bytes in use on the device, by every process
    memory_total: int | None


@dataclass(frozen=True)
class MachineSample:
    cpu_percent: float  # the whole machine, 0–100
    ram_used: int  # bytes
    ram_total: int
    process_cpu_percent: float | None = None  # the training process and its children: 100 = one core
    process_rss: int | None = None  # their resident memory in bytes
    gpu: GpuSample | None = None

    def text(self) -> str:
        """One compact line, e.g. "CPU 87 % · RAM 6.1/23.5 GB · training 180 % CPU, 1.2 GB · GPU 93 %, 5.0/80.0 GB"."""
        parts = [f"CPU {self.cpu_percent:.0f} %", f"RAM {self.ram_used / GB:.1f}/{self.ram_total / GB:.1f} GB"]
        if self.process_cpu_percent is not None and self.process_rss is not None:
            parts.append(f"training {self.process_cpu_percent:.0f} % CPU, {self.process_rss / GB:.1f} GB")
        gpu = self.gpu
        if gpu is not None:
            bits = [f"{gpu.utilization:.0f} %"] if gpu.utilization is not None else []
            if gpu.memory_used is not None and gpu.memory_total:
                bits.append(f"{gpu.memory_used / GB:.1f}/{gpu.memory_total / GB:.1f} GB")
            if bits:
                parts.append("GPU " + ", ".join(bits))
        return " · ".join(parts)


def cuda_sampler(index: int = 0) -> Callable[[], GpuSample] | None:
    """A function sampling GPU ``index``, or None without CUDA. Utilisation and memory come from NVML
    (through torch.cuda) when it is installed, so this process makes no CUDA context of its own."""
    import torch

    if not torch.cuda.is_available():
        return None
    total: int | None = None
    try:
        total = int(torch.cuda.get_device_properties(index).total_memory)
    except (RuntimeError, AssertionError):
        pass

    def sample() -> GpuSample:
        util: float | None = None
        used: int | None = None
        try:
            util = float(torch.cuda.utilization(index))
        except Exception:  # no NVML (pynvml) here, or it failed: leave the utilisation out
            pass
        try:
            used = int(torch.cuda.device_memory_used(index))
        except Exception:
            try:  # the device-wide figure from the CUDA runtime (makes a context in this process)
                free, whole = torch.cuda.mem_get_info(index)
                used = int(whole - free)
            except Exception:
                pass
        return GpuSample(util, used, total)

    return sample


class MachineSampler:
    """Samples the machine, the process ``pid`` (and its children) and, with ``gpu``, a GPU."""

    def __init__(self, gpu: Callable[[], GpuSample] | None = None) -> None:
        self._gpu = gpu
        self._process: psutil.Process | None = None
        self._children: dict[int, psutil.Process] = {}  # kept so that cpu_percent compares with their last call
        psutil.cpu_percent(interval=None)  # the first call only starts the comparison

    def watch(self, pid: int | None) -> None:
        """Follow process ``pid`` (None: none; the machine alone)."""
        if pid is None:
            self._process = None
        elif self._process is None or self._process.pid != pid:
            try:
                self._process = psutil.Process(pid)
                self._process.cpu_percent(interval=None)
            except psutil.Error:
                self._process = None
        self._children = {}

    def sample(self) -> MachineSample:
        memory = psutil.virtual_memory()
        cpu, rss = self._process_usage()
        return MachineSample(psutil.cpu_percent(interval=None), int(memory.total - memory.available),
                             int(memory.total), cpu, rss, self._gpu() if self._gpu is not None else None)

    def _process_usage(self) -> tuple[float | None, int | None]:
        process = self._process
        if process is None:
            return None, None
        try:
            cpu, rss = process.cpu_percent(interval=None), process.memory_info().rss
            children = {}
            for child in process.children(recursive=True):
                known = self._children.get(child.pid, child)
                children[child.pid] = known
                try:
                    cpu += known.cpu_percent(interval=None)  # 0.0 on a child's first sample
                    rss += known.memory_info().rss
                except psutil.Error:
                    pass
            self._children = children
        except psutil.Error:  # it ended between samples
            self._process = None
            return None, None
        return cpu, rss
