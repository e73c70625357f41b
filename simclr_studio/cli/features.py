"""``embed``, ``eval`` and ``export``: what a trained encoder gives, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from simclr_studio.cli import CliError

if TYPE_CHECKING:
    import numpy as np

    from simclr_studio.data import ScanResult
    from simclr_studio.trained import TrainedModel


def folder_features(run: TrainedModel, data_dir: str, batch_size: int, device: str,
                    quiet: bool) -> tuple[ScanResult, np.ndarray]:
    """Scan a folder and embed it chunk by chunk (bounded memory), with a progress bar."""
    scan, feats, _ = folder_embeddings(run, data_dir, batch_size, device, quiet, thumbnails=False)
    return scan, feats


def folder_embeddings(run: TrainedModel, data_dir: str, batch_size: int, device: str, quiet: bool,
                      thumbnails: bool = True) -> tuple[ScanResult, np.ndarray, np.ndarray]:
    """``folder_features``, and the images' grey thumbnails (``signatures.py``) unless not wanted."""
    from tqdm import tqdm

    from simclr_studio.data import scan_folder
    from simclr_studio.device import resolve_device
    from simclr_studio.embeddings import embed_paths

    if not Path(data_dir).is_dir():
        raise CliError(f"data folder not found: {data_dir}")
    scan = scan_folder(data_dir, max_pixels=run.config.max_image_pixels)
    if len(scan) == 0:
        raise CliError(f"no images found in {data_dir}")
    dev = resolve_device(device)
    run.model.to(dev)
    with tqdm(total=len(scan), desc="embed", unit="img", disable=quiet, leave=False, file=sys.stderr) as bar:
        feats, thumbs, failures = embed_paths(run.model.backbone, scan.paths, run.config.image_size, dev, batch_size,
                                            chunk=2048, progress=lambda done, total: bar.update(done - bar.n),
                                            max_pixels=run.config.max_image_pixels, thumbnails=thumbnails)
    scan = scan.drop(failures) if failures else scan
    for skipped in scan.skipped:
        print(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    return scan, feats, thumbs


def cmd_embed(args: argparse.Namespace) -> int:
    from simclr_studio.export import save_embeddings
    from simclr_studio.trained import load_trained

    run = load_trained(args.run_dir, args.checkpoint)
    scan, feats = folder_features(run, args.data_dir, args.batch_size, args.device, args.quiet)
    coords = None
    if args.map != "none":
        from simclr_studio.projection import pca_2d, tsne_2d

        if args.map == "pca":
            coords = pca_2d(feats)
        else:
            coords = tsne_2d(feats, perplexity=args.perplexity, max_iter=args.tsne_iterations)
    path = save_embeddings(args.out, feats, scan.paths, scan.labels, scan.classes, coords)
    print(f"wrote {feats.shape[0]} × {feats.shape[1]} features to {path}"
          + (f" with {args.map} map coordinates" if coords is not None else ""))
    return 0


def labeled_features(scan: ScanResult, feats: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The features and labels of the images that have a class."""
    keep = [i for i, label in enumerate(scan.labels) if label >= 0]
    return feats[keep], [scan.labels[i] for i in keep]


def cmd_eval(args: argparse.Namespace) -> int:
    from simclr_studio.evaluate import evaluate_features
    from simclr_studio.trained import load_trained

    run = load_trained(args.run_dir, args.checkpoint)
    scan, feats = folder_features(run, args.data_dir, args.batch_size, args.device, args.quiet)
    if not scan.labeled:
        raise CliError(f"{args.data_dir} has no class subfolders: evaluation needs labels (one subfolder per class)")
    train_f, train_y = labeled_features(scan, feats)
    test_f = test_y = None
    if args.test_dir:
        test_scan, test_feats = folder_features(run, args.test_dir, args.batch_size, args.device, args.quiet)
        if test_scan.classes != scan.classes:
            raise CliError(f"the test folder's classes {test_scan.classes} differ from the training folder's "
                           f"{scan.classes}")
        test_f, test_y = labeled_features(test_scan, test_feats)
    try:
        report = evaluate_features(train_f, train_y, len(scan.classes), test_f, test_y)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"checkpoint {run.checkpoint} (epoch {run.epoch})")
    print(report.format())
    if args.json:
        from simclr_studio.atomic import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(report.__dict__, indent=2) + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from simclr_studio.export import export_weights
    from simclr_studio.trained import load_trained

    run = load_trained(args.run_dir, args.checkpoint)
    if args.format == "onnx":
        import importlib.util

        if importlib.util.find_spec("onnx") is None:
            raise CliError("ONNX export needs the onnx extra: pip install 'simclr-studio[onnx]'")
    written = export_weights(run, args.format, args.out)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
