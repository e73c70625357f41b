"""Short in-memory trials behind the default recipe's choices (README "Default recipe").

    python benchmarks/recipe_trials.py --data fmnist --images 102400 \\
        '{"name": "tiny lr2e-3", "run": {"backbone": "tiny-cnn", "image_size": 28, "batch_size": 256,
          "optimizer": "adamw", "lr": 0.002, "temperature": 0.2}, "aug": {"crop_scale": [0.3, 1.0]}}'

Each trial trains with the engine's own augmentation, model, NT-Xent, optimiser and warm-up + cosine
schedule on images held in memory, for a fixed number of images (so that a trial's result does not
depend on how busy the machine was; the images/s column says what the time budget buys), then scores
weighted kNN (k=200, cosine, τ=0.1) of the frozen features: bank = the first 20,000 training images,
queries = the test split. Trials compare settings against each other; the benchmarks
(fmnist.py, colour.py) measure the chosen defaults by the full protocol. Results are appended as
JSON lines to ``benchmarks/results/recipe-trials.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simclr_studio.augment import make_views, normalize, step_generator
from simclr_studio.config import AugmentConfig, RunConfig
from simclr_studio.evaluate import extract_features, iter_batches, knn_accuracy
from simclr_studio.loss import nt_xent
from simclr_studio.model import build_model
from simclr_studio.optim import build_optimizer, lr_at, set_lr

torch.set_num_threads(int(os.environ.get("TRIAL_THREADS", "2")))


def load_fmnist():
    from fashion_mnist import load_split

    def rgb(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy()).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()

    (tx, ty), (vx, vy) = load_split("train"), load_split("test")
    return rgb(tx), ty.astype(np.int64), rgb(vx), vy.astype(np.int64)


def load_emoji(work: Path):
    from colour_data import build

    from simclr_studio.data import scan_folder
    from simclr_studio.image_cache import decode_all

    out = []
    for folder in build(work)[:2]:
        scan = scan_folder(folder)
        images, failures = decode_all(scan.paths, 32)
        assert not failures
        out += [images, np.asarray(scan.labels)]
    return tuple(out)


def trial(data, images: int, run: dict, aug: dict, seed: int = 0, bank: int = 20_000) -> dict:
    tx, ty, vx, vy = data
    size = run.get("image_size", 28)
    cfg = RunConfig(**run, augment=AugmentConfig.for_image_size(size, **aug), seed=seed)
    cfg.small_stem = cfg.resolved_small_stem()
    torch.manual_seed(seed)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    model.train()
    steps = images // cfg.batch_size
    base_lr = cfg.resolved_lr()
    optimizer = build_optimizer(model, cfg.optimizer, base_lr, cfg.resolved_weight_decay(), cfg.momentum)
    warmup = int(round(0.1 * steps))
    step, epoch, losses = 0, 0, []
    start = time.perf_counter()
    while step < steps:
        order = torch.randperm(len(tx), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        epoch += 1
        for first in range(0, len(tx) - cfg.batch_size + 1, cfg.batch_size):
            if step >= steps:
                break
            set_lr(optimizer, lr_at(step, steps, warmup, base_lr))
            with torch.no_grad():
                v1, v2 = make_views(tx[order[first:first + cfg.batch_size]], cfg.augment, size,
                                    step_generator(seed, step))
                views = normalize(torch.cat((v1, v2))).contiguous(memory_format=torch.channels_last)
            _, z = model(views)
            loss = nt_xent(*z.float().chunk(2), cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
    train_s = time.perf_counter() - start

    def features(x: torch.Tensor) -> np.ndarray:
        return extract_features(model.backbone, iter_batches(x, 1024), "cpu", channels_last=True)

    knn = knn_accuracy(features(tx[:bank]), ty[:bank], features(vx), vy, int(ty.max()) + 1, k=200)
    return {"knn": knn, "train_s": train_s, "img_s": steps * cfg.batch_size / train_s,
            "final_loss": float(np.mean(losses[-20:])), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("fmnist", "emoji"), default="fmnist")
    parser.add_argument("--images", type=int, default=102_400, help="training images per trial (default)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/simclr-colour"), help="where colour_data.py builds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recipe-trials.jsonl")
    parser.add_argument("trials", nargs="+", help='JSON: {"name", "run", "aug", "images"}')
    args = parser.parse_args()
    data = load_fmnist() if args.data == "fmnist" else load_emoji(args.work)
    for text in args.trials:
        spec = json.loads(text)
        images = spec.get("images", args.images)
        result = {"name": spec["name"], "data": args.data, "images": images,
                  **trial(data, images, spec["run"], spec.get("aug", {}))}
        print(json.dumps(result), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
