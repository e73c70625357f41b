"""Training speed against the compute limit and against a peer library, on identical work, for a
grayscale and a colour image folder.

    python benchmarks/throughput.py                      # both cases, 5 alternating rounds (medians)
    python benchmarks/throughput.py --case colour        # only the colour case
    python benchmarks/throughput.py --backbone resnet18 --batch 128 --steps 6 --device cuda

Two cases, each trained with the default recipe's config for its folder (``simclr_studio.recipe``;
``--backbone``/``--batch`` override it) at the same batch, steps, threads, precision and memory format:

gray    Fashion-MNIST training images (random noise when the Debian package is missing) as 28 px
        grayscale PNGs (``--gray-size``). Images no larger than the training size: the Trainer caches
        them as training-size squares (``CacheLayout(whole=False)``) and the recipe turns random
        grayscale off.
colour  A deterministic folder of photo-like colour JPEGs (smooth random colour fields, a few filled
        shapes and sensor-like noise; seed 0), alternately landscape and portrait at 2 × 1.5 times
        the training size: 128×96 and 96×128 for the 64 px training size (``--colour-size``). They are
        larger than the training size, so the Trainer caches whole images with their shorter side at
        1.5 × the training size (``CacheLayout(side=96, stored=128, whole=True)`` at 64 px) and cuts
        antialiased random resized crops from them: the path that large photo folders take. (The
        emoji set of ``colour_data.py`` is 32×32: it would take the plain small-image path, or need
        upscaling, so it is not used here.)

Per case, three measurements, repeated in alternation (rounds of a, b, c for each case); the median of
each is reported, in images per second of timed steps (the clock starts when the warm-up's last step ends):

(a) ours: the real ``Trainer`` on the folder: decoding into its RAM cache (before the clock), then per
    step the batch from the cache, augmentation batched on the training device, the step, its events.
    The layout the Trainer chose (``CacheLayout``) is recorded and printed;
(b) compute only: the same model, loss and optimiser fed with views made in advance from the same
    cache (same layout, extents, batches, augmentation config and per-step generators, so the very
    views (a) trains on): model + loss + optimiser only, our ceiling;
(c) the peer: the ``lightly`` library as its documentation trains SimCLR (``LightlyDataset`` on the
    same folder, decoding every file with PIL in its ``DataLoader``, ``SimCLRTransform`` with
    ``input_size`` = the training size and our augmentation strengths, ``SimCLRProjectionHead``,
    ``NTXentLoss``, two forward passes, SGD), given the same backbone; measured with 0 and with
    ``--threads`` loader workers, and its better rate counts. Needs the optional extra:
    ``pip install -e ".[bench]"``; without it (c) is reported as None.

a/b says what the data pipeline costs (target ≥ 0.9 on a CPU, ≥ 0.85 on CUDA); a/c says how much faster
than the peer we train (target ≥ 1.2). Both are printed and written per case with met/missed.
Also checks that our NT-Xent equals lightly's ``NTXentLoss`` on the same embeddings.
Results: ``benchmarks/results/throughput.json`` (``--out``), with both cases under ``cases``.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from simclr_studio.augment import make_views, normalize, step_generator
from simclr_studio.batches import BatchSource
from simclr_studio.config import RunConfig
from simclr_studio.data import scan_folder, typical_side
from simclr_studio.device import amp_dtype, resolve_device
from simclr_studio.events import StepEvent
from simclr_studio.image_cache import CacheLayout, decode_cache, plan_cache_layout
from simclr_studio.loss import nt_xent
from simclr_studio.model import build_model
from simclr_studio.optim import build_optimizer
from simclr_studio.recipe import FolderFacts, suggest
from simclr_studio.train import Trainer

CASES = ("gray", "colour")
TARGET_A_OVER_C = 1.2


def target_a_over_b(device: torch.device) -> float:
    return 0.85 if device.type == "cuda" else 0.9


# ---- the image folders ----------------------------------------------------------------------
def gray_folder(n: int, size: int, work: Path) -> tuple[Path, str]:
    """n grayscale PNGs at ``size``: Fashion-MNIST when installed, else noise."""
    from fmnist import write_png_folder

    try:
        from fashion_mnist import load_split

        images, _ = load_split("train")
        images, source = np.resize(images, (n, 28, 28)), "Fashion-MNIST"
    except FileNotFoundError:
        images, source = np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8), "random noise"
    folder = write_png_folder(images, work / f"{source.split()[0].lower()}-{n}-{size}", size)
    return folder, f"{n} {source} images, {size}×{size} grayscale PNG"


def colour_image(i: int, size: int, seed: int = 0) -> np.ndarray:
    """Image ``i`` of the colour folder: uint8 RGB, 2·size × 1.5·size, landscape for even i and portrait
    for odd i; a smooth random colour field, 3–6 filled shapes and mild noise. A pure function of (i, seed)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, i])
    long, short = 2 * size, (3 * size) // 2
    w, h = (long, short) if i % 2 == 0 else (short, long)
    coarse = rng.integers(0, 256, (3, 4, 3) if w > h else (4, 3, 3), dtype=np.uint8)
    im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 7))):
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.2, 0.9) * w, rng.uniform(-0.2, 0.9) * h
        x1, y1 = x0 + rng.uniform(0.15, 0.6) * w, y0 + rng.uniform(0.15, 0.6) * h
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(3)], fill=fill)
    noisy = np.asarray(im, dtype=np.float32) + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def colour_folder(n: int, size: int, work: Path) -> tuple[Path, str]:
    """n colour JPEGs from ``colour_image`` (quality 90), written once (a marker records a complete folder)."""
    from PIL import Image

    folder = work / f"colour-{n}-{size}"
    marker = folder / ".complete"
    if not (marker.exists() and marker.read_text().strip() == str(n)):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(colour_image(i, size)).save(folder / f"{i:05d}.jpg", quality=90)
        marker.write_text(f"{n}\n")
    long, short = 2 * size, (3 * size) // 2
    return folder, f"{n} synthetic colour images, {long}×{short} and {short}×{long} RGB JPEG"


# ---- one case: its folder, config and the cache (b) uses --------------------------------------
@dataclass
class Case:
    name: str
    cfg: RunConfig
    images: str  # what the folder holds, in words
    paths: list[str]  # in the Trainer's (scan) order
    layout: CacheLayout  # as the Trainer plans it for this folder
    cache: torch.Tensor  # uint8 [N, 3, stored, stored], as the Trainer decodes it
    extents: torch.Tensor | None


def prepare_case(name: str, args, device: torch.device) -> Case:
    """The folder, the default recipe's config for it (with the command line's overrides) and the cache."""
    n = args.batch * (args.warmup + args.steps)
    size = args.gray_size if name == "gray" else args.colour_size
    folder, images = (gray_folder if name == "gray" else colour_folder)(n, size, args.work)
    paths = scan_folder(str(folder)).paths
    side = typical_side(paths)
    recipe = suggest(FolderFacts(len(paths), side, grayscale=name == "gray"), device.type, image_size=size)
    cfg = recipe.config
    cfg.data_dir, cfg.device, cfg.batch_size, cfg.epochs = str(folder), args.device, args.batch, 1
    cfg.amp, cfg.eval_every, cfg.keep_checkpoints = args.precision == "auto", 0, 0
    if args.backbone:
        cfg.backbone = args.backbone
    if cfg.backbone.startswith("resnet"):
        cfg.small_stem = cfg.resolved_small_stem()
    layout = plan_cache_layout(cfg.image_size, side, cfg.cache_ram_gb * (1 << 30), len(paths))  # as Trainer
    cache, extents, failures = decode_cache(paths, layout)
    assert not failures, failures
    return Case(name, cfg, images, paths, layout, cache, extents)


def describe_layout(layout: CacheLayout) -> str:
    if layout.whole:
        return (f"whole images, shorter side {layout.side} px, in {layout.stored}×{layout.stored} "
                f"(CacheLayout(side={layout.side}, stored={layout.stored}, whole=True))")
    return f"training-size squares (CacheLayout(side={layout.side}, stored={layout.stored}, whole=False))"


# ---- the three measurements -----------------------------------------------------------------
class RecordingTrainer(Trainer):
    """The real Trainer; only notes the data layout and cache it chose, so the report can say so."""

    layout: CacheLayout | None = None
    cached: bool | None = None

    def _prepare_data(self, device):
        scan, source = super()._prepare_data(device)
        self.layout, self.cached = source.layout, source.cached
        return scan, source


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_ours(case: Case, warmup: int, steps: int, work: Path) -> float:
    """(a) images/s of the real training loop, between the end of the warm-up's last step and the last step."""
    cfg = case.cfg
    stamps: list[float] = []

    def on_event(event) -> None:
        if isinstance(event, StepEvent):
            stamps.append(time.perf_counter())

    run_dir = Path(tempfile.mkdtemp(prefix=f"ours-{case.name}-", dir=work))
    trainer = RecordingTrainer(RunConfig.from_dict(cfg.to_dict()), run_dir, on_event=on_event)
    status = trainer.run()
    if status != "completed" or len(stamps) < warmup + steps:
        raise SystemExit(f"our training run ({case.name}) {status} after {len(stamps)} steps; see {run_dir}")
    if trainer.layout != case.layout or not trainer.cached:
        raise SystemExit(f"{case.name}: the Trainer used {trainer.layout} (cached: {trainer.cached}), but (b) was "
                         f"prepared for {case.layout} from a RAM cache: the comparison would not be fair")
    return steps * cfg.batch_size / (stamps[warmup + steps - 1] - stamps[warmup - 1])


def measure_compute_only(case: Case, warmup: int, steps: int, device, dtype, cl: bool) -> float:
    """(b) the same model, loss and optimiser step fed with the views (a) trains on, made beforehand."""
    cfg = case.cfg
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.resolved_lr(), cfg.resolved_weight_decay(), cfg.momentum)
    source = BatchSource(case.paths, cfg.image_size, cfg.batch_size, cfg.seed, cache=case.cache,
                         layout=case.layout, extents=case.extents)  # the Trainer's batches of epoch 0
    views = []
    with torch.no_grad():
        for i, (batch, extents) in zip(range(warmup + steps), source.batches_with_extents(0), strict=False):
            v1, v2 = make_views(batch.to(device), cfg.augment, cfg.image_size, step_generator(cfg.seed, i, device),
                                extents)
            x = normalize(torch.cat((v1, v2), 0))
            views.append(x.contiguous(memory_format=torch.channels_last) if cl else x)
    if len(views) < warmup + steps:
        raise SystemExit(f"{case.name}: only {len(views)} batches for (b)")
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


def lightly_transform(cfg: RunConfig):
    """lightly's documented SimCLR transform at our training size and augmentation strengths. It has no
    crop-ratio setting (torchvision's default 3/4–4/3, as ours) and no masking (off in the recipe)."""
    from lightly.transforms.simclr_transform import SimCLRTransform

    aug = cfg.augment
    return SimCLRTransform(input_size=cfg.image_size, cj_prob=aug.jitter_p, cj_strength=aug.jitter_strength,
                           min_scale=aug.crop_scale[0], random_gray_scale=aug.grayscale_p,
                           gaussian_blur=aug.blur_p, sigmas=aug.blur_sigma, hf_prob=aug.flip_p)


def measure_lightly(case: Case, warmup: int, steps: int, workers: int, device, dtype, cl: bool) -> float:
    """(c) lightly's documented SimCLR loop on the same folder, with our backbone and augmentation strengths."""
    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    cfg = case.cfg
    dataset = LightlyDataset(input_dir=cfg.data_dir, transform=lightly_transform(cfg))
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
        raise SystemExit(f"lightly's loader gave only {done} batches ({case.name})")
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
            float((a - b).abs().max()) for a, b in zip(grads_ours, grads_theirs, strict=True)))
        worst[f"value_n{n}"] = float(ours.detach())
    return worst


# ---- report ---------------------------------------------------------------------------------
def summarise(case: Case, rates: dict[str, list[float]], device: torch.device, peer: str | None) -> dict:
    """Medians, ratios and targets of one case, printed as a table; returned for the JSON."""
    cfg = case.cfg
    med = {k: statistics.median(v) for k, v in rates.items()}
    a, b = med["ours"], med["compute_only"]
    c_key = max((k for k in med if k.startswith("lightly")), key=med.get, default=None)
    c = med[c_key] if c_key else None
    t_b = target_a_over_b(device)
    targets = {"a_over_b": {"target": t_b, "value": a / b, "met": a / b >= t_b},
               "a_over_c": ({"target": TARGET_A_OVER_C, "value": a / c, "met": a / c >= TARGET_A_OVER_C}
                            if c else None)}
    aug = cfg.augment
    print(f"\n{case.name}: {case.images}; {cfg.backbone}, {cfg.image_size} px, batch {cfg.batch_size}")
    print(f"  Trainer's cache: {describe_layout(case.layout)}")
    print(f"  augmentation: crops {aug.crop_scale[0]:g}–{aug.crop_scale[1]:g}, jitter p {aug.jitter_p:g} strength "
          f"{aug.jitter_strength:g}, grayscale p {aug.grayscale_p:g}, blur p {aug.blur_p:g}, flip p {aug.flip_p:g}")
    print(f"  {'measurement':<46}{'images/s':>10}")
    print(f"  {'(a) ours: full training loop':<46}{a:>10.0f}")
    print(f"  {'(b) compute only (views made in advance)':<46}{b:>10.0f}")
    for k in (k for k in med if k.startswith("lightly_w")):
        label = f"(c) lightly {peer}, {k.removeprefix('lightly_w')} loader workers"
        print(f"  {label:<46}{med[k]:>10.0f}")
    print(f"  a/b = {a / b:.3f}  (target >= {t_b}: {'met' if targets['a_over_b']['met'] else 'MISSED'})")
    if c:
        print(f"  a/c = {a / c:.3f}  (target >= {TARGET_A_OVER_C}: "
              f"{'met' if targets['a_over_c']['met'] else 'MISSED'}; c = {c_key})")
    else:
        print("  a/c: no peer measured")
    return {
        "images": case.images,
        "config": {"backbone": cfg.backbone, "image_size": cfg.image_size, "batch": cfg.batch_size,
                   "optimizer": cfg.optimizer, "temperature": cfg.temperature, "augment": cfg.to_dict()["augment"]},
        "cache_layout": {"side": case.layout.side, "stored": case.layout.stored, "whole": case.layout.whole},
        "images_per_s": {k: {"median": med[k], "runs": v} for k, v in rates.items()},
        "a_over_b": a / b,
        "a_over_c": a / c if c else None,
        "peer_best": c_key,
        "targets": targets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=(*CASES, "both"), default="both")
    parser.add_argument("--gray-size", type=int, default=28, help="training size of the gray case (= image size)")
    parser.add_argument("--colour-size", type=int, default=64,
                        help="training size of the colour case (images are 2 × 1.5 times it)")
    parser.add_argument("--backbone", help="override the recipe's backbone")
    parser.add_argument("--batch", type=int, default=256)
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
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the clock starts when the warm-up's last step ends)")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    names = CASES if args.case == "both" else (args.case,)

    peer = None
    if not args.no_peer:
        try:
            import lightly

            peer = lightly.__version__
        except ImportError:
            print("lightly is not installed (pip install -e \".[bench]\"): measuring (a) and (b) only")
    worker_options = sorted({0, args.threads}) if peer else []

    cases = [prepare_case(name, args, device) for name in names]
    dtype = amp_dtype(device) if cases[0].cfg.amp else None
    cl = cases[0].cfg.channels_last and device.type in ("cuda", "cpu")
    print(f"{args.steps} timed steps after {args.warmup}, batch {args.batch}, {args.threads} threads, "
          f"{dtype or torch.float32} on {device}, channels-last {cl}; cases: {', '.join(names)}", flush=True)
    rates = {case.name: {"ours": [], "compute_only": []} | {f"lightly_w{w}": [] for w in worker_options}
             for case in cases}
    for r in range(args.repeats):
        for case in cases:
            row = rates[case.name]
            row["ours"].append(measure_ours(case, args.warmup, args.steps, args.work))
            row["compute_only"].append(measure_compute_only(case, args.warmup, args.steps, device, dtype, cl))
            for w in worker_options:
                row[f"lightly_w{w}"].append(measure_lightly(case, args.warmup, args.steps, w, device, dtype, cl))
            print(f"  round {r + 1}, {case.name}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in row.items())
                  + " images/s", flush=True)

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, torch {torch.__version__}",
        "config": {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "batch": args.batch,
                   "threads": args.threads, "device": str(device), "precision": str(dtype or torch.float32),
                   "channels_last": cl},
        "peer": {"library": "lightly", "version": peer, "loader_workers": worker_options} if peer else None,
        "cases": {case.name: summarise(case, rates[case.name], device, peer) for case in cases},
    }
    if peer:
        agreement = {str(t): loss_agreement(t) for t in sorted({0.5, *(case.cfg.temperature for case in cases)})}
        result["nt_xent_vs_lightly"] = agreement
        print()
        for t, row in agreement.items():
            print(f"NT-Xent vs lightly NTXentLoss (τ={t}, float64): max |value diff| {row['max_abs_value_diff']:.2e}, "
                  f"max |grad diff| {row['max_abs_grad_diff']:.2e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
