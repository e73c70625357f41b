"""What training bought: a checkpoint's features against a random encoder and raw pixels.

The kNN column is the Train tab's online kNN for the same checkpoint: leave-one-out weighted kNN on
the same class-balanced sample (``knn_sample``) with the same k. The linear probe is fitted on 80 %
of that sample and scored on the held-out 20 %. No Qt here: the Explore tab runs this in the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simclr_studio.data import ScanResult, decode_all, without_failures
from simclr_studio.evaluate import (
    knn_sample,
    leave_one_out_knn,
    linear_probe_accuracy,
    raw_pixel_features,
    stratified_split,
)

ROWS = (("trained", "This checkpoint"), ("random", "Random encoder"), ("raw", "Raw pixels"))
RAW_CHUNK = 1024  # images decoded at a time for the raw-pixel row (bounded memory at large sizes)


@dataclass
class Scores:
    knn_accuracy: float
    k: int  # neighbours that voted
    linear_accuracy: float | None  # None: too few images per class to hold any out


def scores(features: np.ndarray, labels: np.ndarray, num_classes: int) -> Scores:
    knn, k = leave_one_out_knn(features, labels, num_classes)
    train, test = stratified_split(labels, 0.2, seed=0)
    linear = None
    if len(test) and len(np.unique(labels[train])) >= 2:
        linear = linear_probe_accuracy(features[train], labels[train], features[test], labels[test])
    return Scores(knn, k, linear)


def measure_quality(emb, run, scan: ScanResult, device, progress=None, should_stop=None) -> dict:
    """Scores of the three rows of ``ROWS`` for embeddings ``emb`` of ``run``'s checkpoint, plus the
    sample's size ("n") and the number of labelled images ("total")."""
    sample = knn_sample(emb.labels)  # the images (and so the k) of the Train tab's online kNN
    labels = emb.labels[sample]
    paths = [emb.paths[i] for i in sample]
    n, classes = len(sample), len(emb.classes)

    def report(offset: int):  # two phases (random encoder, then raw pixels) on one progress bar
        return None if progress is None else (lambda done, total: progress(offset + done, 2 * n))

    result = {"trained": scores(emb.features[sample], labels, classes)}

    from simclr_studio.embeddings import embed_cached

    subset = ScanResult(root=scan.root, paths=paths, labels=[int(x) for x in labels], classes=list(emb.classes))
    random_emb, _, _ = embed_cached(run, subset, device, random_init=True, progress=report(0), should_stop=should_stop)
    result["random"] = scores(*_aligned(paths, labels, random_emb.paths, random_emb.features), classes)

    raw, keep = raw_pixels(paths, run.config.image_size, report(n), should_stop)
    result["raw"] = scores(raw, labels[keep], classes)
    result.update(n=n, total=int((emb.labels >= 0).sum()))
    return result


def raw_pixels(paths: list[str], size: int, progress=None, should_stop=None) -> tuple[np.ndarray, np.ndarray]:
    """(raw-pixel features, indices of the paths that decoded) as the trainer's baseline takes them:
    the evaluation view at the run's size (resize, centre crop), reduced as raw_pixel_features does."""
    parts, keep = [], []
    for start in range(0, len(paths), RAW_CHUNK):
        if should_stop is not None and should_stop():
            raise InterruptedError("cancelled")
        images, failed = decode_all(paths[start : start + RAW_CHUNK], size)
        images = without_failures(images, failed)
        parts.append(raw_pixel_features(images))
        keep += [start + i for i in range(min(RAW_CHUNK, len(paths) - start)) if i not in failed]
        if progress is not None:
            progress(min(start + RAW_CHUNK, len(paths)), len(paths))
    return np.concatenate(parts), np.asarray(keep, dtype=np.int64)


def _aligned(paths: list[str], labels: np.ndarray, got_paths: list[str], features: np.ndarray):
    """(features, labels) of the sampled images that ``got_paths`` holds, in the sample's order."""
    row = {p: i for i, p in enumerate(got_paths)}
    keep = [i for i, p in enumerate(paths) if p in row]
    return features[[row[paths[i]] for i in keep]], labels[keep]
