"""What training bought: a checkpoint's features against a random encoder and raw pixels.

The kNN column is the Train tab's online kNN for the same checkpoint: leave-one-out weighted kNN on
the same class-balanced sample (``knn_sample``) with the same k. The linear probe is fitted on 80 %
of that sample and scored on the held-out 20 %.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from simclr_studio.data import ProgressFn, ScanResult
from simclr_studio.embeddings import Embeddings, embed_cached
from simclr_studio.evaluate import (
    files_to_features,
    knn_sample,
    leave_one_out_knn,
    linear_probe_accuracy,
    raw_pixel_features,
    stratified_split,
)
from simclr_studio.trained import TrainedModel

ROWS = (("trained", "This checkpoint"), ("random", "Random encoder"), ("raw", "Raw pixels"))
RAW_CHUNK = 1024  # images decoded at a time for the raw-pixel row (bounded memory at large sizes)

ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Scores:
    knn_accuracy: float
    k: int  # neighbours that voted
    linear_accuracy: float | None  # None: too few images per class to hold any out


@dataclass(frozen=True)
class Quality:
    """The three rows of ``ROWS`` (attributes of the same names), on a sample of ``n`` of the ``total``
    labelled images."""

    trained: Scores
    random: Scores
    raw: Scores
    n: int
    total: int

    def row(self, key: str) -> Scores:
        return {"trained": self.trained, "random": self.random, "raw": self.raw}[key]

    @property
    def gain(self) -> float:
        """The checkpoint's kNN accuracy over the better of the two baselines."""
        return self.trained.knn_accuracy - max(self.random.knn_accuracy, self.raw.knn_accuracy)


def scores(features: np.ndarray, labels: np.ndarray, num_classes: int) -> Scores:
    knn, k = leave_one_out_knn(features, labels, num_classes)
    train, test = stratified_split(labels, 0.2, seed=0)
    linear = None
    if len(test) and len(np.unique(labels[train])) >= 2:
        linear = linear_probe_accuracy(features[train], labels[train], features[test], labels[test])
    return Scores(knn, k, linear)


def measure_quality(embeddings: Embeddings, trained: TrainedModel, scan: ScanResult, device: str | torch.device,
                    progress: ProgressFn | None = None, should_stop: ShouldStop | None = None) -> Quality:
    """Scores of the checkpoint whose ``embeddings`` these are, a random encoder of its architecture and
    raw pixels, on the images of the Train tab's online kNN."""
    sample = knn_sample(embeddings.labels)  # the images (and so the k) of the Train tab's online kNN
    labels = embeddings.labels[sample]
    paths = [embeddings.paths[i] for i in sample]
    n, classes = len(sample), len(embeddings.classes)

    def report(offset: int) -> ProgressFn | None:  # two phases (random encoder, then raw pixels) on one bar
        if progress is None:
            return None
        return lambda done, total: progress(offset + done, 2 * n)

    trained_scores = scores(embeddings.features[sample], labels, classes)
    subset = ScanResult(root=scan.root, paths=paths, labels=[int(x) for x in labels], classes=list(embeddings.classes))
    random_emb, _, _ = embed_cached(trained, subset, device, random_init=True, progress=report(0),
                                    should_stop=should_stop)
    random_scores = scores(*_aligned(paths, labels, random_emb.paths, random_emb.features), classes)
    raw, keep = raw_pixels(paths, trained.config.image_size, report(n), should_stop)
    return Quality(trained_scores, random_scores, scores(raw, labels[keep], classes), n,
                   int((embeddings.labels >= 0).sum()))


def raw_pixels(paths: list[str], size: int, progress: ProgressFn | None = None,
               should_stop: ShouldStop | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(raw-pixel features, indices of the paths that decoded) as the trainer's baseline takes them:
    the evaluation view at the run's size (resize, centre crop), reduced as raw_pixel_features does."""
    features, failed = files_to_features(paths, size, raw_pixel_features, RAW_CHUNK, progress, should_stop)
    keep = [i for i in range(len(paths)) if i not in failed]
    return features, np.asarray(keep, dtype=np.int64)


def _aligned(paths: list[str], labels: np.ndarray, got_paths: list[str],
             features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of the sampled images that ``got_paths`` holds, in the sample's order."""
    row = {p: i for i, p in enumerate(got_paths)}
    keep = [i for i, p in enumerate(paths) if p in row]
    return features[[row[paths[i]] for i in keep]], labels[keep]
