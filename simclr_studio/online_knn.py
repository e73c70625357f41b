"""The online kNN during training: a cheap 'is it learning?' signal at epoch ends.

Leave-one-out weighted kNN on unaugmented views of a fixed, class-balanced sample of the labelled
images (at most 10,000), beside the same measure on raw pixels (the baseline every epoch should
beat). Under a time budget it takes at most 5 % of the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from simclr_studio.augment import centre_view
from simclr_studio.batches import BatchSource
from simclr_studio.data import ScanResult
from simclr_studio.evaluate import extract_features, iter_batches, knn_sample, leave_one_out_knn, raw_pixel_features
from simclr_studio.events import BaselineEvent, EvalEvent
from simclr_studio.model import SimCLRModel

# Under a time budget the kNN waits this many times its own cost between runs: at most 1/20 = 5 %.
WAIT_FACTOR = 19


@dataclass
class OnlineKnn:
    labels: np.ndarray
    images: torch.Tensor  # uint8 evaluation views at the training size
    n_classes: int
    cost_s: float = 0.0  # the last evaluation's duration (0: none yet)
    ended_at: float = 0.0  # and when it ended (perf_counter)

    @classmethod
    def sample(cls, scan: ScanResult, source: BatchSource, image_size: int) -> OnlineKnn | None:
        """The same images and protocol every epoch and for the baseline; None when the images are
        not cached, or too few or of one class."""
        labels = np.asarray(scan.labels)
        idx = knn_sample(labels)
        if source.cache is None or len(idx) < 10 or len(np.unique(labels[idx])) < 2:
            return None
        rows = torch.as_tensor(idx)
        views = []
        for start in range(0, len(rows), 512):
            part = rows[start : start + 512]
            extents = source.extents.index_select(0, part) if source.extents is not None else None
            pixels = source.cache.index_select(0, part)
            if source.layout.whole or pixels.shape[-1] != image_size:
                pixels = (centre_view(pixels, image_size, extents) * 255).round_().to(torch.uint8)
            views.append(pixels)
        return cls(labels[idx], torch.cat(views), len(scan.classes))

    def baseline(self) -> BaselineEvent:
        """Raw pixels under the same protocol: the number every epoch's kNN should beat."""
        acc, k = leave_one_out_knn(raw_pixel_features(self.images), self.labels, self.n_classes)
        return BaselineEvent(features="raw pixels", knn_accuracy=acc, n_images=len(self.labels), k=k)

    def evaluate(self, model: SimCLRModel, device: torch.device, epoch: int) -> EvalEvent:
        feats = extract_features(model.backbone, iter_batches(self.images, 512), device)
        acc, k = leave_one_out_knn(feats, self.labels, self.n_classes)
        return EvalEvent(epoch=epoch, knn_accuracy=acc, n_images=len(self.labels), k=k)

    def measured(self, started_at: float, ended_at: float) -> None:
        self.cost_s, self.ended_at = ended_at - started_at, ended_at

    def due(self, epoch: int, eval_every: int, budgeted: bool, last: bool, now: float) -> bool:
        """At the end of ``epoch``: every ``eval_every`` epochs; under a time budget also only once
        WAIT_FACTOR times its cost has passed since the last (short epochs would otherwise spend the
        user's minutes on measuring), except at the run's last epoch end."""
        if (epoch + 1) % eval_every != 0:
            return False
        if not budgeted or last or self.cost_s == 0.0:
            return True
        return now - self.ended_at >= WAIT_FACTOR * self.cost_s
