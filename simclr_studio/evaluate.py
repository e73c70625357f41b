"""Frozen-feature evaluation: batched feature extraction, weighted kNN and a linear probe."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from simclr_studio.augment import centre_view, normalize

ProgressFn = Callable[[int, int], None]


def iter_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    batches: Iterable[torch.Tensor],
    device: torch.device | str = "cpu",
    total: int = 0,
    progress: ProgressFn | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Encoder outputs h for uint8 batches [B, 3, S, S]; streams batch by batch (bounded memory)."""
    was_training = backbone.training
    backbone.eval()
    out: list[np.ndarray] = []
    done = 0
    device = torch.device(device)
    try:
        for batch in batches:
            x = normalize(batch.to(device, non_blocking=True).float().div_(255))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            h = backbone(x)  # full precision: exported features must not depend on the device
            out.append(h.float().cpu().numpy())
            done += batch.shape[0]
            if progress is not None:
                progress(done, total)
    finally:
        backbone.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def knn_predict(
    train_features: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    query_features: np.ndarray | torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    leave_one_out: bool = False,
    chunk: int = 1024,
) -> np.ndarray:
    """Weighted kNN (Wu et al. 2018, the SSL standard): cosine similarity, top-k neighbours vote with
    weight exp(sim/τ). With ``leave_one_out`` the query set is the bank and each sample's own entry is excluded.
    """
    bank = F.normalize(torch.as_tensor(np.asarray(train_features), dtype=torch.float32), dim=1)
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    queries = F.normalize(torch.as_tensor(np.asarray(query_features), dtype=torch.float32), dim=1)
    k = min(k, bank.shape[0] - (1 if leave_one_out else 0))
    if k < 1:
        raise ValueError("kNN needs at least one reference sample")
    preds = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start : start + chunk] @ bank.T
        if leave_one_out:
            rows = torch.arange(sim.shape[0])
            sim[rows, rows + start] = -float("inf")
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, labels[top_idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes: int,
                 k: int = 200, temperature: float = 0.1, leave_one_out: bool = False) -> float:
    preds = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature, leave_one_out)
    return float((preds == np.asarray(test_labels)).mean())


ONLINE_KNN_MAX_IMAGES = 10_000  # the online kNN (and its baseline) use at most this many images
BASELINE_MAX_SIDE = 64  # raw pixels for the baseline at most 64 px a side


def knn_sample(labels, max_images: int = ONLINE_KNN_MAX_IMAGES, seed: int = 0) -> np.ndarray:
    """Sorted indices of up to ``max_images`` labelled samples (label >= 0), class-balanced: every class
    gets an equal share, and the share a small class cannot fill goes to the others."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels[labels >= 0])]
    if sum(len(idx) for idx in by_class) <= max_images:
        return np.sort(np.concatenate(by_class)) if by_class else np.zeros(0, dtype=np.int64)
    chosen: list[np.ndarray] = []
    left, pending = max_images, sorted(by_class, key=len)
    while pending:
        share = left // len(pending)
        idx = pending.pop(0)
        take = idx[: min(len(idx), share)] if pending else idx[:left]
        chosen.append(take)
        left -= len(take)
    return np.sort(np.concatenate(chosen))


def leave_one_out_knn(features, labels, num_classes: int, k_max: int = 200) -> tuple[float, int]:
    """(accuracy, k) of weighted kNN where every sample is classified by all the others:
    k = min(k_max, bank size − 1), cosine similarity, τ = 0.1."""
    labels = np.asarray(labels)
    k = int(min(k_max, len(labels) - 1))
    if k < 1:
        raise ValueError("kNN needs at least two samples")
    return knn_accuracy(features, labels, features, labels, num_classes, k=k, leave_one_out=True), k


def raw_pixel_features(images: torch.Tensor, max_side: int = BASELINE_MAX_SIDE) -> np.ndarray:
    """uint8 images [N, C, H, W] as flat float vectors in [0, 1]: the baseline every encoder must beat.
    Images larger than ``max_side`` are reduced first (a 224 px baseline would not fit in RAM)."""
    if images.shape[-1] > max_side:
        images = (centre_view(images, max_side) * 255).round_().to(torch.uint8)
    return images.reshape(images.shape[0], -1).float().div_(255).numpy()


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, max_iter: int = 1000,
                          c: float = 1.0, seed: int = 0) -> float:
    """Logistic regression on standardised frozen features; top-1 accuracy on the test features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=c, random_state=seed))
    clf.fit(np.asarray(train_features), np.asarray(train_labels))
    return float(clf.score(np.asarray(test_features), np.asarray(test_labels)))


def stratified_split(labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, test) with every class represented in both where it has ≥ 2 samples."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction)) if len(idx) >= 2 else 0
        n_test = min(max(n_test, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def features_for_paths(
    backbone: nn.Module,
    paths: list[str],
    size: int,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    chunk: int = 2048,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Decode and embed image files chunk by chunk, so memory stays bounded for any folder size.

    Returns (features of the images that decoded, in order; {index: reason} of those that did not).
    ``should_stop`` is checked between chunks; when it holds, InterruptedError is raised.
    """
    return files_to_features(
        paths, size, lambda images: extract_features(backbone, iter_batches(images, batch_size), device),
        chunk, progress, should_stop, max_pixels)


def files_to_features(
    paths: list[str],
    size: int,
    featurize: Callable[[torch.Tensor], np.ndarray],
    chunk: int = 2048,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """``featurize`` of the image files' evaluation views (uint8 [n, 3, size, size]), decoded a
    chunk at a time: (features of the images that decoded, in order; {index: reason} of the others)."""
    from simclr_studio.image_cache import decode_all, without_failures

    parts: list[np.ndarray] = []
    failures: dict[int, str] = {}
    for start in range(0, len(paths), chunk):
        if should_stop is not None and should_stop():
            raise InterruptedError("cancelled")
        images, bad = decode_all(paths[start : start + chunk], size, max_pixels=max_pixels)
        failures.update({start + i: reason for i, reason in bad.items()})
        parts.append(featurize(without_failures(images, bad)))
        if progress is not None:
            progress(min(start + chunk, len(paths)), len(paths))
    parts = [p for p in parts if p.size]
    return (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)), failures


@dataclass
class EvalReport:
    knn_accuracy: float
    linear_accuracy: float
    n_train: int
    n_test: int
    protocol: str  # "test folder" or "80/20 split"

    def format(self) -> str:
        return (f"kNN (k=200, cosine, τ=0.1) top-1: {self.knn_accuracy:.4f}\n"
                f"linear probe top-1:            {self.linear_accuracy:.4f}\n"
                f"train {self.n_train} / test {self.n_test} images ({self.protocol})")


def evaluate_features(train_f, train_y, num_classes: int, test_f=None, test_y=None, seed: int = 0) -> EvalReport:
    """kNN + linear probe; without a test set, a stratified 80/20 split of the labeled images."""
    train_f, train_y = np.asarray(train_f), np.asarray(train_y)
    protocol = "test folder"
    if len(np.unique(train_y)) < 2:
        raise ValueError("evaluation needs images of at least two classes")
    if test_f is None:
        tr, te = stratified_split(train_y, 0.2, seed)
        if len(te) == 0:
            raise ValueError("too few images to hold out a test split: give every class at least 2 images, "
                             "or pass a separate test folder")
        train_f, test_f, train_y, test_y = train_f[tr], train_f[te], train_y[tr], train_y[te]
        protocol = "80/20 split"
    knn = knn_accuracy(train_f, train_y, test_f, test_y, num_classes)
    lin = linear_probe_accuracy(train_f, train_y, test_f, test_y, seed=seed)
    return EvalReport(knn, lin, len(train_y), len(test_y), protocol)
