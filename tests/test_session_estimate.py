"""Before Start and while training, without Qt: the run's estimated time (the budget's, or measured
steps times the run's steps), whether its images fit the RAM cache (the engine's own decision), and
the machine sampler (CPU and memory of the machine and of a process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from simclr_studio.config import RunConfig
from simclr_studio.image_cache import fits_in_ram, plan_cache_layout
from simclr_studio.session.estimate import (
    GB,
    StepSpeed,
    cache_plan,
    estimate_run,
    measure_step_seconds,
    speed_key,
)
from simclr_studio.session.machine import GpuSample, MachineSample, MachineSampler


def cfg(**kw) -> RunConfig:
    return RunConfig(**{**dict(data_dir="x", backbone="tiny-cnn", image_size=16, batch_size=8, epochs=3,
                               device="cpu"), **kw})


def test_an_epochs_run_takes_its_steps_times_the_measured_speed():
    # 100 images, batch 8: 12 full batches per epoch (the last, incomplete one is dropped), 3 epochs.
    pending = estimate_run(cfg(), 100)
    assert pending.steps == 36 and pending.seconds is None and "measuring" in pending.text()
    estimate = estimate_run(cfg(), 100, speed=StepSpeed(0.5, 8, False))
    assert estimate.steps == 36 and estimate.seconds == pytest.approx(18.0) and not estimate.from_budget
    assert estimate.text() == "Takes about 18 s: 36 steps (3 epochs)"
    # Two processes each take half the images: half the steps.
    assert estimate_run(cfg(), 100, nproc=2, speed=StepSpeed(0.5, 8, False)).steps == 18
    rough = estimate_run(cfg(epochs=50), 1000, speed=StepSpeed(1.2, 4, True))
    assert rough.seconds == pytest.approx(125 * 50 * 1.2) and rough.text().startswith("Takes roughly 2:05 h")


def test_a_budgeted_run_takes_its_budget_and_the_speed_says_how_far_it_gets():
    estimate = estimate_run(cfg(minutes=10), 100)
    assert estimate.from_budget and estimate.seconds == 600 and estimate.steps is None
    assert estimate.text() == "Takes 10 min (the time budget)"
    measured = estimate_run(cfg(minutes=10), 100, speed=StepSpeed(2.0, 8, False))
    assert measured.seconds == 600 and measured.steps == 300 and measured.epochs == pytest.approx(25.0)
    assert "300 steps, 25 epochs" in measured.text()


def test_the_cache_decision_is_the_engines():
    small = cache_plan(cfg(cache_ram_gb=4.0), 1000, 28)
    stored = plan_cache_layout(16, 28, 4.0 * GB, 1000).stored  # whole images at 1.5 × 16 px, up to 4:3
    assert stored == 32 and small.fits and small.bytes == 1000 * 3 * 32 * 32 and "into RAM" in small.text()
    big = cache_plan(cfg(image_size=64, cache_ram_gb=1.0), 200_000, 512)
    layout = plan_cache_layout(64, 512, 1.0 * GB, 200_000)
    assert big.fits == fits_in_ram(200_000, layout.stored, 1.0) is False
    assert "streamed from disk" in big.text() and "1.0 GB" in big.text()
    # Several processes share the budget: a cache that fits one does not fit four.
    fits_one = cache_plan(cfg(image_size=32, cache_ram_gb=1.0), 300_000, 32)
    assert fits_one.fits and not cache_plan(cfg(image_size=32, cache_ram_gb=1.0), 300_000, 32, nproc=4).fits
    short = cache_plan(cfg(), 1000, 28, available_bytes=1000)
    assert "only" in short.text() and "free now" in short.text()


def test_the_speed_is_measured_with_the_runs_own_step_and_can_be_cancelled():
    speed = measure_step_seconds(cfg(batch_size=4), budget_s=20.0)  # room for the first, slow step
    assert speed.seconds_per_step > 0 and speed.measured_batch == 4 and not speed.extrapolated
    with pytest.raises(InterruptedError):
        measure_step_seconds(cfg(batch_size=4), should_stop=lambda: True)
    # What the speed depends on, and not the run's length.
    assert speed_key(cfg()) == speed_key(cfg(epochs=9, minutes=3.0))
    assert speed_key(cfg()) != speed_key(cfg(image_size=32)) != speed_key(cfg(batch_size=16))


def test_a_large_batch_is_timed_at_a_small_one_within_the_budget():
    speed = measure_step_seconds(cfg(batch_size=512), budget_s=0.001)
    assert speed.extrapolated and speed.measured_batch == 16 and speed.seconds_per_step > 0


def test_the_sampler_reports_the_machine_and_a_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        sampler = MachineSampler()
        sampler.watch(busy.pid)
        import time

        time.sleep(1.0)
        sample = sampler.sample()
        assert 0 <= sample.cpu_percent <= 100 and 0 < sample.ram_used < sample.ram_total
        assert sample.process_cpu_percent is not None and sample.process_cpu_percent > 10  # it spins
        assert sample.process_rss is not None and sample.process_rss > 1 << 20
        text = sample.text()
        assert text.startswith("CPU ") and " · RAM " in text and "training " in text and "GPU" not in text
        busy.kill()
        busy.wait()
        assert sampler.sample().process_cpu_percent is None  # it ended: the machine alone
    finally:
        busy.kill()
    sampler.watch(os.getpid())
    assert sampler.sample().process_rss is not None
    sampler.watch(None)
    assert sampler.sample().process_rss is None


def test_the_gpu_part_of_the_line_shows_what_was_measured():
    base = dict(cpu_percent=50.0, ram_used=2 * GB, ram_total=8 * GB)
    both = MachineSample(**base, gpu=GpuSample(87.0, 5 * GB, 80 * GB)).text()
    assert both == "CPU 50 % · RAM 2.0/8.0 GB · GPU 87 %, 5.0/80.0 GB"
    assert MachineSample(**base, gpu=GpuSample(None, 5 * GB, 80 * GB)).text().endswith("GPU 5.0/80.0 GB")
    sampler = MachineSampler(gpu=lambda: GpuSample(12.0, GB, 16 * GB))
    assert sampler.sample().text().endswith("GPU 12 %, 1.0/16.0 GB")


def test_measuring_leaves_torchs_optimiser_machinery_unloaded():
    """The window's process measures: torch.optim's first optimiser would import torch._dynamo (~2 s,
    holding the GIL in stretches that stall the window)."""
    code = ("import sys\nfrom simclr_studio.config import RunConfig\n"
            "from simclr_studio.session.estimate import measure_step_seconds\n"
            "measure_step_seconds(RunConfig(data_dir='x', backbone='tiny-cnn', image_size=16, batch_size=4,"
            " device='cpu', optimizer='lars'))\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
