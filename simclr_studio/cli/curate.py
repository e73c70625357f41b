"""``curate``: a report of what to look at in a folder, from a trained encoder's features: near-duplicate
groups, the most unusual images, and (with class subfolders) images whose neighbours say another class."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from simclr_studio.cli import CliError

DEFAULT_OUTLIERS = 50
OUTLIER_SHARE = 0.05  # by default, never more than this share of the folder is called unusual
DEFAULT_MISLABELS = 50


@contextmanager
def _bar(desc: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    from tqdm import tqdm

    with tqdm(desc=desc, disable=quiet, leave=False, file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def outlier_count(asked: int | None, n_images: int) -> int:
    """``--outliers``, or by default 50 but at most 5 % of the images (at least one); none when a
    single image has no neighbour to differ from."""
    if n_images < 2:
        return 0
    if asked is not None:
        return min(asked, n_images)
    return min(DEFAULT_OUTLIERS, max(1, int(n_images * OUTLIER_SHARE)))


def cmd_curate(args: argparse.Namespace) -> int:
    import numpy as np

    from simclr_studio import curate, duplicates
    from simclr_studio.cli.features import folder_embeddings
    from simclr_studio.trained import load_trained

    out = Path(args.out)
    if out.exists() and not args.overwrite:  # before the slow part
        raise CliError(f"{out} already exists: choose another --out, or --overwrite to replace it")
    if not 0.0 < args.duplicates <= 1.0:
        raise CliError(f"--duplicates is a cosine similarity in (0, 1], not {args.duplicates}")
    run = load_trained(args.run_dir, args.checkpoint)
    scan, feats, thumbs = folder_embeddings(run, args.data_dir, args.batch_size, args.device, args.quiet)
    paths, n = scan.paths, len(scan.paths)

    with _bar("neighbours", args.quiet) as progress:
        graph = curate.knn_graph(feats, curate.GRAPH_K, progress)
    with _bar("duplicates", args.quiet) as progress:
        pairs = duplicates.duplicate_pairs(feats, args.duplicates, progress, thumbnails=thumbs,
                                           neighbours=graph[0])
    threshold = max(args.duplicates, pairs.floor)
    groups = pairs.groups(threshold)
    findings = curate.duplicate_findings(groups, paths)
    in_groups = sum(len(g.rows) for g in groups)
    lines = [f"duplicates: {len(groups)} group(s), {in_groups} images in them (similarity ≥ {threshold:.3f})"]
    if threshold > args.duplicates:
        lines.append(f"  (more than {duplicates.MAX_DUPLICATE_PAIRS:,} similar pairs: "
                     f"threshold raised to {threshold:.4f})")

    count = outlier_count(args.outliers, n)
    if count:
        rows, scores = curate.outliers(graph, count)
        findings += curate.outlier_findings(rows, scores, paths)
        lines.append(f"outliers: the {len(rows)} most unusual of {n} images "
                     f"(score = 1 − mean similarity to the {curate.OUTLIER_K} nearest)")

    if scan.labeled:
        found, report = curate.likely_mislabeled(graph, np.asarray(scan.labels), len(scan.classes))
        findings += curate.mislabel_findings(found[: args.mislabels], paths, scan.classes)
        weakest = sorted(zip(report.per_class, scan.classes, strict=True), key=lambda t: t[0])[:3]
        lines.append(f"likely mislabeled: {len(found)} images whose neighbours vote for another class "
                     f"(listed: {min(len(found), args.mislabels)})")
        lines.append(f"  neighbour vote (k={report.k}) agrees with the folder for {report.accuracy:.1%}; "
                     "weakest classes: " + ", ".join(f"{name} {acc:.0%}" for acc, name in weakest))

    curate.write_findings_csv(out, findings, overwrite=args.overwrite)
    print("\n".join(lines))
    print(f"wrote {len(findings)} findings to {out}")
    return 0
