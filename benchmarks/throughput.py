"""Training speed against the compute limit and against a peer library, on identical work.

    python benchmarks/throughput.py                       # small CNN, 28 px, batch 256 (the cpu-quick preset)
    python benchmarks/throughput.py --backbone resnet18 --size 32 --batch 256 --steps 6

Three measurements of the same SimCLR training (same backbone, image size, batch, images, steps,
threads, precision and memory format), repeated in alternation; the median of each is reported:

(a) ours: the real ``Trainer`` on a folder of PNGs: loading, batched augmentation, step;
(b) compute only: the same model, loss and optimiser fed with views made in advance (our ceiling);
(c) the peer: the ``lightly`` library as its documentation trains SimCLR (``LightlyDataset`` +
    ``SimCLRTransform`` per image in ``DataLoader`` workers, ``SimCLRProjectionHead``, ``NTXentLoss``,
    two forward passes, SGD), given the same backbone; measured with 0 and with ``--threads`` loader
    workers, and its better rate counts. Needs the optional extra: ``pip install -e ".[bench]"``.

Also checks that our NT-Xent equals lightly's ``NTXentLoss`` on the same embeddings.
Images are Fashion-MNIST training images when the Debian package is installed, else random noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from simclr_studio.augment import make_views, normalize, step_generator  # noqa: E402
from simclr_studio.config import AugmentConfig, RunConfig  # noqa: E402
from simclr_studio.device import amp_dtype, resolve_device  # noqa: E402
from simclr_studio.events import StepEvent  # noqa: E402
from simclr_studio.loss import nt_xent  # noqa: E402
from simclr_studio.model import build_model  # noqa: E402
from simclr_studio.optim import build_optimizer  # noqa: E402
from simclr_studio.train import Trainer  # noqa: E402


def make_folder(n: int, size: int, folder: Path) -> tuple[Path, str]:
    """n grayscale PNGs: Fashion-MNIST when installed (resized to ``size``), else noise."""
    from fmnist import write_png_folder

    try:
        from simclr_studio.fashion_mnist import load_split

        images, _ = load_split("train")
        images, source = np.resize(images, (n, 28, 28)), "Fashion-MNIST"
    except FileNotFoundError:
        images, source = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8), "random noise"
    return write_png_folder(images, folder / f"{source.split()[0].lower()}-{n}-{size}", size), source


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def measure_ours(cfg: RunConfig, warmup: int, steps: int, work: Path) -> float:
    """(a) images/s of the real training loop, between the end of warm-up step and the last step."""
    stamps: list[float] = []

    def on_event(event) -> None:
        if isinstance(event, StepEvent):
            stamps.append(time.perf_counter())

    run_dir = Path(tempfile.mkdtemp(prefix="ours-", dir=work))
    status = Trainer(RunConfig.from_dict(cfg.to_dict()), run_dir, on_event=on_event).run()
    if status != "completed" or len(stamps) < warmup + steps:
        raise SystemExit(f"our training run {status} after {len(stamps)} steps; see {run_dir}")
    return steps * cfg.batch_size / (stamps[warmup + steps - 1] - stamps[warmup - 1])


def measure_compute_only(cfg: RunConfig, images: torch.Tensor, warmup: int, steps: int, device, dtype, cl: bool) -> float:
    """(b) the same model, loss and optimiser step fed with views made beforehand."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.resolved_lr(), cfg.resolved_weight_decay(), cfg.momentum)
    views = []
    for i in range(warmup + steps):
        batch = images[i * cfg.batch_size : (i + 1) * cfg.batch_size].to(device)
        v1, v2 = make_views(batch, cfg.augment, cfg.image_size, step_generator(cfg.seed, i, device))
        x = normalize(torch.cat((v1, v2), 0))
        views.append(x.contiguous(memory_format=torch.channels_last) if cl else x)
    model.train()
    for i, x in enumerate(views):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        with autocast(device, dtype):
            _, z = model(x)
        loss = nt_xent(*z.float().chunk(2), cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # the loop reads the loss every step, as ours does
    sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def measure_lightly(cfg: RunConfig, folder: Path, warmup: int, steps: int, workers: int, device, dtype, cl: bool) -> float:
    """(c) lightly's documented SimCLR loop, with our backbone and our augmentation strengths."""
    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms.simclr_transform import SimCLRTransform

    aug = cfg.augment
    transform = SimCLRTransform(input_size=cfg.image_size, cj_prob=aug.jitter_p, cj_strength=aug.jitter_strength,
                                min_scale=aug.crop_scale[0], random_gray_scale=aug.grayscale_p,
                                gaussian_blur=aug.blur_p, sigmas=aug.blur_sigma, hf_prob=aug.flip_p)
    dataset = LightlyDataset(input_dir=str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=False)

    class SimCLR(torch.nn.Module):
        def __init__(self, backbone, dim):
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(dim, dim, 128)

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    torch.manual_seed(cfg.seed)
    ours = build_model(cfg)
    model = SimCLR(ours.backbone, ours.feature_dim).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    criterion = NTXentLoss(temperature=cfg.temperature)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    model.train()
    done = 0
    start = time.perf_counter()
    for batch in loader:  # the clock starts when step `warmup - 1` ends: the next batch's loading counts
        x0, x1 = batch[0]
        x0, x1 = x0.to(device), x1.to(device)
        if cl:
            x0, x1 = (t.contiguous(memory_format=torch.channels_last) for t in (x0, x1))
        with autocast(device, dtype):
            z0, z1 = model(x0), model(x1)
        loss = criterion(z0.float(), z1.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        float(loss.detach())
        done += 1
        if done == warmup:
            sync(device)
            start = time.perf_counter()
        if done == warmup + steps:
            break
    sync(device)
    if done < warmup + steps:
        raise SystemExit(f"lightly's loader gave only {done} batches")
    return steps * cfg.batch_size / (time.perf_counter() - start)


def loss_agreement(temperature: float) -> dict:
    """Our NT-Xent against lightly's NTXentLoss on the same embeddings: value and gradient."""
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(0)
    worst = {"max_abs_value_diff": 0.0, "max_abs_grad_diff": 0.0}
    for n, d in ((8, 16), (256, 128), (512, 128)):
        z1 = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
        z2 = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
        ours = nt_xent(z1, z2, temperature)
        grads_ours = torch.autograd.grad(ours, (z1, z2))
        theirs = NTXentLoss(temperature=temperature)(z1, z2)
        grads_theirs = torch.autograd.grad(theirs, (z1, z2))
        worst["max_abs_value_diff"] = max(worst["max_abs_value_diff"], abs(float((ours - theirs).detach())))
        worst["max_abs_grad_diff"] = max(worst["max_abs_grad_diff"], max(
            float((a - b).abs().max()) for a, b in zip(grads_ours, grads_theirs)))
        worst[f"value_n{n}"] = float(ours.detach())
    return worst


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    from fmnist import PRESETS  # the cpu-quick preset's augmentation and loss settings

    quick = PRESETS["cpu-quick"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=quick["run"]["backbone"])
    parser.add_argument("--size", type=int, default=quick["run"]["image_size"])
    parser.add_argument("--batch", type=int, default=quick["run"]["batch_size"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of (a, b, c) in alternation; medians count")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                        help="auto: what training uses on this device (bf16 on CPUs with native bf16)")
    parser.add_argument("--no-peer", action="store_true", help="skip lightly even when it is installed")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "simclr-studio-bench-throughput")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)

    device = resolve_device(args.device)
    cfg = RunConfig(backbone=args.backbone, image_size=args.size, batch_size=args.batch, epochs=1,
                    optimizer=quick["run"]["optimizer"], temperature=quick["run"]["temperature"], device=args.device,
                    amp=args.precision == "auto",
                    eval_every=0, keep_checkpoints=0,
                    augment=AugmentConfig.for_image_size(args.size, **quick["augment"]))
    if cfg.backbone == "resnet18" or cfg.backbone.startswith("resnet"):
        cfg.small_stem = cfg.resolved_small_stem()
    dtype = amp_dtype(device) if cfg.amp else None
    cl = cfg.channels_last and device.type in ("cuda", "cpu")
    n = args.batch * (args.warmup + args.steps)
    folder, source = make_folder(n, args.size, args.work)
    cfg.data_dir = str(folder)

    from simclr_studio.data import decode_all

    images, failures = decode_all([str(folder / f"{i:05d}.png") for i in range(n)], args.size)
    assert not failures, failures

    peer = None
    if not args.no_peer:
        try:
            import lightly

            peer = lightly.__version__
        except ImportError:
            print("lightly is not installed (pip install -e \".[bench]\"): measuring (a) and (b) only")
    worker_options = sorted({0, args.threads}) if peer else []

    rates: dict[str, list[float]] = {"ours": [], "compute_only": []} | {f"lightly_w{w}": [] for w in worker_options}
    print(f"{cfg.backbone}, {args.size} px, batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
          f"{args.threads} threads, {dtype or torch.float32} on {device}, {n} {source} images", flush=True)
    for r in range(args.repeats):
        rates["ours"].append(measure_ours(cfg, args.warmup, args.steps, args.work))
        rates["compute_only"].append(measure_compute_only(cfg, images, args.warmup, args.steps, device, dtype, cl))
        for w in worker_options:
            rates[f"lightly_w{w}"].append(measure_lightly(cfg, folder, args.warmup, args.steps, w, device, dtype, cl))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()) + " images/s", flush=True)

    med = {k: statistics.median(v) for k, v in rates.items()}
    a, b = med["ours"], med["compute_only"]
    c_key = max((k for k in med if k.startswith("lightly")), key=med.get, default=None)
    c = med[c_key] if c_key else None
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, torch {torch.__version__}",
        "config": {"backbone": cfg.backbone, "image_size": args.size, "batch": args.batch, "steps": args.steps,
                   "warmup": args.warmup, "threads": args.threads, "device": str(device),
                   "precision": str(dtype or torch.float32), "channels_last": cl, "images": source},
        "images_per_s": {k: {"median": med[k], "runs": v} for k, v in rates.items()},
        "a_over_b": a / b,
        "peer": {"library": "lightly", "version": peer, "best": c_key} if peer else None,
        "a_over_c": a / c if c else None,
    }
    print()
    print(f"{'measurement':<44}{'images/s':>10}")
    print(f"{'(a) ours: full training loop':<44}{a:>10.0f}")
    print(f"{'(b) compute only (views made in advance)':<44}{b:>10.0f}")
    for w in worker_options:
        print(f"{f'(c) lightly {peer}, {w} loader workers':<44}{med[f'lightly_w{w}']:>10.0f}")
    target_b = 0.85 if device.type == "cuda" else 0.9
    print(f"a/b = {a / b:.3f}  (target >= {target_b}: {'met' if a / b >= target_b else 'MISSED'})")
    if c:
        print(f"a/c = {a / c:.3f}  (target >= 1.2 on CPU: {'met' if a / c >= 1.2 else 'MISSED'}; c = {c_key})")
        agreement = {str(t): loss_agreement(t) for t in sorted({0.5, cfg.temperature})}
        result["nt_xent_vs_lightly"] = agreement
        for t, row in agreement.items():
            print(f"NT-Xent vs lightly NTXentLoss (τ={t}, float64): max |value diff| {row['max_abs_value_diff']:.2e}, "
                  f"max |grad diff| {row['max_abs_grad_diff']:.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
