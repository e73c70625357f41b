"""What the quality benchmarks share: train with the real engine, then score frozen features.

Protocol (as the SSL literature reports it): on the test split, weighted kNN top-1 (k=200, cosine,
τ=0.1, bank = the training split's features) and linear-probe top-1 (logistic regression on
standardised features, fitted on the training split). Raw pixels (the images at the training size,
flattened) and the same encoder at its random initialisation go through the same code.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


PROTOCOL = "kNN k=200 cosine tau=0.1 (bank = train features); logistic regression on standardised features"


def describe_run(cfg, minutes: float, epochs: int, device) -> str:
    """The recipe's main choices and the run's length, for a table's title."""
    from simclr_studio.device import amp_dtype

    return (f"{cfg.backbone}, {cfg.image_size} px, batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}, "
            f"τ {cfg.temperature}, {minutes:g} min ({epochs} epochs), {amp_dtype(device) or 'fp32'} on {device}")


def print_times(prepare_s: float, train_s: float, budget_s: float, eval_s: float, total_s: float) -> None:
    print(f"time: prepare {prepare_s:.0f} s, train {train_s:.0f} s (budget {budget_s:.0f} s), "
          f"evaluate {eval_s:.0f} s, total {total_s / 60:.1f} min")


def evaluate(name: str, train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray,
             n_classes: int) -> dict:
    from simclr_studio.evaluate import knn_accuracy, linear_probe_accuracy

    start = time.perf_counter()
    knn = knn_accuracy(train_f, train_y, test_f, test_y, n_classes, k=200, temperature=0.1)
    lin = linear_probe_accuracy(train_f, train_y, test_f, test_y)
    row = {"features": name, "dim": int(train_f.shape[1]), "knn": knn, "linear": lin,
           "eval_seconds": time.perf_counter() - start}
    print(f"  {name:<16} kNN {knn:.4f}   linear {lin:.4f}   ({row['eval_seconds']:.0f} s)", flush=True)
    return row


def train(cfg, run_dir: Path) -> tuple[float, dict]:
    """Train ``cfg`` in ``run_dir`` with the engine the app and CLI use; (seconds, facts about the run)."""
    from simclr_studio.events import BaselineEvent, EpochEvent, ErrorEvent, EvalEvent, LogEvent, PlanEvent, RunStarted
    from simclr_studio.train import Trainer

    facts: dict = {"epochs": 0, "online_knn": [], "plan": None, "baseline_knn": None}

    def on_event(event) -> None:
        if isinstance(event, RunStarted):
            print(f"training on {event.device}: {event.backbone}, {event.n_images:,} images, "
                  f"{event.steps_per_epoch} steps/epoch", flush=True)
        elif isinstance(event, PlanEvent):
            facts["plan"] = {"total_steps": event.total_steps, "seconds_per_step": event.seconds_per_step}
            print(f"  plan: {event.total_steps:,} steps at {event.seconds_per_step:.3f} s/step "
                  f"({event.budget_s / 60:g} min budget)", flush=True)
        elif isinstance(event, EpochEvent):
            facts["epochs"] = event.epoch + 1
            print(f"  epoch {event.epoch + 1:>3}  loss {event.loss:.4f}  {event.images_per_s:,.0f} images/s  "
                  f"({event.seconds:.0f} s)", flush=True)
        elif isinstance(event, EvalEvent):
            facts["online_knn"].append(event.knn_accuracy)
            print(f"  online kNN {event.knn_accuracy:.4f} (k={event.k})", flush=True)
        elif isinstance(event, BaselineEvent):
            facts["baseline_knn"] = event.knn_accuracy
        elif isinstance(event, (ErrorEvent, LogEvent)):
            print(f"  {event.message}", flush=True)

    start = time.perf_counter()
    status = Trainer(cfg, run_dir, on_event=on_event).run()
    seconds = time.perf_counter() - start
    if status != "completed":
        raise SystemExit(f"training {status}; see {run_dir}")
    print(f"trained in {seconds:.0f} s ({seconds / 60:.1f} min)", flush=True)
    return seconds, facts


def score(cfg, run_dir: Path, train_paths: list[str], train_y: np.ndarray, test_paths: list[str],
          test_y: np.ndarray, n_classes: int) -> list[dict]:
    """Rows for raw pixels, the random encoder and the trained encoder (in that order)."""
    import torch

    from simclr_studio.config import RunConfig
    from simclr_studio.device import resolve_device
    from simclr_studio.evaluate import features_for_paths, raw_pixel_features
    from simclr_studio.image_cache import decode_all
    from simclr_studio.model import build_model
    from simclr_studio.train import resolve_config
    from simclr_studio.trained import load_trained

    device = resolve_device(cfg.device)
    size = cfg.image_size

    def raw(paths: list[str]) -> np.ndarray:
        images, failures = decode_all(paths, size)
        if failures:
            raise SystemExit(f"{len(failures)} benchmark images failed to decode: {next(iter(failures.values()))}")
        return raw_pixel_features(images)

    rows = [evaluate("raw pixels", raw(train_paths), train_y, raw(test_paths), test_y, n_classes)]
    trained = load_trained(run_dir, device=str(device)).model.backbone
    torch.manual_seed(cfg.seed)  # the same initialisation the run started from
    random_init = build_model(resolve_config(RunConfig.from_dict(cfg.to_dict()), device)).backbone.to(device)
    for name, backbone in (("random encoder", random_init), ("SimCLR", trained)):
        feats = []
        for paths in (train_paths, test_paths):
            f, failures = features_for_paths(backbone, paths, size, device)
            if failures:
                raise SystemExit(f"{len(failures)} benchmark images failed to decode")
            feats.append(f)
        rows.append(evaluate(name, feats[0], train_y, feats[1], test_y, n_classes))
    return rows


def report(title: str, rows: list[dict], targets: dict[str, float]) -> tuple[dict, list[str]]:
    """Print the table; return (margins over the best baseline, missed targets)."""
    simclr, baselines = rows[-1], rows[:-1]
    best = {m: max(r[m] for r in baselines) for m in ("knn", "linear")}
    print()
    print(title)
    print(f"{'features':<16}{'dim':>6}{'kNN top-1':>12}{'linear top-1':>14}")
    for r in rows:
        print(f"{r['features']:<16}{r['dim']:>6}{r['knn']:>12.4f}{r['linear']:>14.4f}")
    margins = {m: simclr[m] - best[m] for m in best}
    print(f"SimCLR over the best baseline: kNN {100 * margins['knn']:+.1f} points, "
          f"linear {100 * margins['linear']:+.1f} points")
    missed = []
    for name, target in targets.items():
        value = margins["knn"] if name == "knn_margin" else simclr[name]
        if value < target:
            missed.append(f"{name} {value:.4f} < {target}")
    if targets:
        print("targets: " + ("all met" if not missed else "MISSED " + "; ".join(missed)) + f" ({targets})")
    return margins, missed


def write(out: Path, **data) -> None:
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, torch {torch.__version__}"
    out.write_text(json.dumps({"machine": machine, **data}, indent=2) + "\n")
    print(f"wrote {out}")
