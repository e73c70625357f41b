"""Cropped copies: how well one image's pixel signature matches the best crop of another's.

A copy cropped to 90 % of each side is not near its original by the whole-image signature
(``signatures.py``: on Fashion-MNIST, cosine 0.23–0.9) nor, with a briefly trained encoder, by its
features. It is near one *box* of the original: the crop similarity of a pair is the highest cosine
between one image's whole signature and the signature of a box of the other's grey thumbnail, either
way round. Boxes: a grid of square crops (``CROP_SCALES``, offsets ``OFFSET_STEP`` apart, and the whole
image), and, for pairs whose grid best reaches ``REFINE_FROM``, a local search from the best grid box
over each side's scale and offset (rounded crops of small images are rarely on the grid).

A box's signature is a linear map of the thumbnail: the DCT's low rows times a bilinear resampling of
the box's interval, one 8 × 32 matrix per axis (``axis_matrices``), so a box costs two small products.
Pairs are measured only among candidates (each image's nearest feature neighbours: ``crop_pairs``), in
chunks of box owners, never all pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from simclr_studio.signatures import FREQUENCIES, SIDE, dct_matrix, thumbnail_signatures, unit_signatures

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]

CROP_SCALES = (0.96, 0.93, 0.90, 0.87, 0.84)  # the grid's box sides, as shares of the image's
OFFSET_STEP = 0.03  # the grid's box offsets are about this far apart (shares of the side)
REFINE_FROM = 0.99  # pairs whose grid best reaches this are refined
REFINE_STEPS = (0.02, 0.01, 0.005, 0.0025)  # the local search's step sizes, largest first
_CHUNK_ENTRIES = 65536  # (owner, query) entries measured at a time
_CHUNK_OWNERS = 1024  # owners whose box signatures are held at a time (~24 MB)


def _intervals() -> np.ndarray:
    """[M, 2] (side, offset) of each axis interval of the grid; the whole axis first."""
    out = [(1.0, 0.0)]
    for s in CROP_SCALES:
        n = max(2, round((1 - s) / OFFSET_STEP) + 1)
        out += [(s, o) for o in np.linspace(0.0, 1.0 - s, n)]
    return np.asarray(out, np.float32)


INTERVALS = _intervals()
# Square boxes: (y interval, x interval) of the same side; box 0 is the whole image.
BOXES = np.asarray([(a, b) for a in range(len(INTERVALS)) for b in range(len(INTERVALS))
                    if INTERVALS[a, 0] == INTERVALS[b, 0]], np.int64)
_SAME_SIDE = [np.flatnonzero(INTERVALS[:, 0] == side) for side in dict.fromkeys(INTERVALS[:, 0].tolist())]


def axis_matrices(side: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """[P, FREQUENCIES, SIDE]: the low DCT rows of the interval [offset, offset + side] (shares of the
    axis) resampled bilinearly to SIDE samples. The whole axis (1, 0) gives the DCT rows themselves."""
    i = torch.arange(SIDE, dtype=torch.float32)
    centre = offset[:, None] * SIDE + (i[None] + 0.5) * side[:, None] - 0.5  # source pixel coordinates
    left = centre.floor()
    w = (centre - left)[:, None, :]
    lo = left.long().clamp(0, SIDE - 1)[:, None, :].expand(-1, FREQUENCIES, -1)
    hi = (left.long() + 1).clamp(0, SIDE - 1)[:, None, :].expand(-1, FREQUENCIES, -1)
    dct = dct_matrix(SIDE)[:FREQUENCIES][None]  # sample i's weight in each frequency, spread to its two pixels
    out = torch.zeros(len(side), FREQUENCIES, SIDE)
    out.scatter_add_(2, lo, dct * (1 - w))
    out.scatter_add_(2, hi, dct * w)
    return out


def _as_float(thumbnails: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(thumbnails[rows])).float()


_AXES = axis_matrices(torch.from_numpy(INTERVALS[:, 0]), torch.from_numpy(INTERVALS[:, 1]))


def box_signatures(thumbs: torch.Tensor) -> torch.Tensor:
    """[n, len(BOXES), DIMS] unit signatures of every grid box of float thumbnails [n, SIDE, SIDE]."""
    n = len(thumbs)
    rows = (_AXES.reshape(1, -1, SIDE) @ thumbs).view(n, len(INTERVALS), FREQUENCIES, SIDE)  # y intervals
    parts = []
    for group in _SAME_SIDE:  # one product per side: every (y, x) interval pair of it, in BOXES' order
        m = len(group)
        cols = _AXES[group].reshape(m * FREQUENCIES, SIDE)
        low = rows[:, group].reshape(n, m * FREQUENCIES, SIDE) @ cols.T  # [n, (y, f), (x, g)]
        parts.append(low.view(n, m, FREQUENCIES, m, FREQUENCIES).permute(0, 1, 3, 2, 4).reshape(n, m * m, FREQUENCIES,
                                                                                                 FREQUENCIES))
    return unit_signatures(torch.cat(parts, 1))


def _refine(owner_thumbs: torch.Tensor, query_sigs: torch.Tensor, box: torch.Tensor,
            best: torch.Tensor) -> torch.Tensor:
    """The best score found by a coordinate search from each grid box over (side, offset) of each axis."""
    params = torch.from_numpy(INTERVALS[BOXES[box.numpy()]].reshape(-1, 4).copy())  # sy, oy, sx, ox
    axes = [axis_matrices(params[:, 0], params[:, 1]), axis_matrices(params[:, 2], params[:, 3])]
    best = best.clone()
    for step in REFINE_STEPS:
        for k in range(4):
            axis = k // 2  # a trial moves one axis: the thumbnail times the other's matrix is reused
            fixed = owner_thumbs @ axes[1].transpose(1, 2) if axis == 0 else axes[0] @ owner_thumbs
            for sign in (1.0, -1.0):
                trial = params.clone()
                trial[:, k] += sign * step
                side = trial[:, 2 * axis].clamp(0.5, 1.0)
                trial[:, 2 * axis] = side
                trial[:, 2 * axis + 1] = torch.minimum(trial[:, 2 * axis + 1].clamp_min(0.0), 1.0 - side)
                moved = axis_matrices(trial[:, 2 * axis], trial[:, 2 * axis + 1])
                low = moved @ fixed if axis == 0 else fixed @ moved.transpose(1, 2)
                score = (unit_signatures(low) * query_sigs).sum(1)
                up = score > best
                best = torch.where(up, score, best)
                params = torch.where(up[:, None], trial, params)
                axes[axis] = torch.where(up[:, None, None], moved, axes[axis])
    return best


def crop_similarity(thumbnails: np.ndarray, owners: np.ndarray, queries: np.ndarray,
                    whole: np.ndarray | None = None, should_stop: StopFn | None = None,
                    progress: ProgressFn | None = None) -> np.ndarray:
    """float32 [P]: how well each query's whole signature matches the best box of its owner's thumbnail
    (grid, then refined from ``REFINE_FROM``). ``whole``: ``thumbnail_signatures(thumbnails)``, if at hand."""
    signatures = torch.from_numpy(thumbnail_signatures(thumbnails) if whole is None else whole)
    scores = np.zeros(len(owners), np.float32)
    order = np.argsort(owners, kind="stable")
    owners, queries = owners[order], queries[order]
    starts = np.flatnonzero(np.r_[True, np.diff(owners) != 0]) if len(owners) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(owners)]
    by_count = np.argsort(ends - starts, kind="stable")  # owners with alike counts share a chunk: little padding
    starts, ends = starts[by_count], ends[by_count]
    done = 0
    while done < len(starts):
        if should_stop is not None and should_stop():
            raise InterruptedError("stopped while measuring crops")
        # A chunk of owners, their entries padded to the chunk's largest count: one batched product.
        counts = ends[done:] - starts[done:]
        width = np.maximum.accumulate(counts)
        fits = int(np.searchsorted(width * np.arange(1, len(counts) + 1), _CHUNK_ENTRIES, side="right"))
        take = min(max(1, fits), _CHUNK_OWNERS)
        group = slice(done, done + take)
        m = int(width[take - 1])
        pad = starts[group, None] + np.arange(m)[None]
        valid = pad < ends[group, None]
        pad = np.where(valid, pad, starts[group, None])
        owner_rows = owners[starts[group]]
        thumbs = _as_float(thumbnails, owner_rows)
        boxes = box_signatures(thumbs)  # [c, B, D]
        q = signatures[torch.from_numpy(queries[pad])]  # [c, m, D]
        grid = torch.bmm(q, boxes.transpose(1, 2))  # [c, m, B]
        best, box = grid.max(2)
        fine = (best >= REFINE_FROM) & torch.from_numpy(valid)
        if bool(fine.any()):
            c_idx, m_idx = fine.nonzero(as_tuple=True)
            best[c_idx, m_idx] = _refine(thumbs[c_idx], q[c_idx, m_idx], box[c_idx, m_idx], best[c_idx, m_idx])
        flat = pad[valid]
        scores[order[flat]] = best.numpy()[valid]
        done += take
        if progress is not None:
            progress(done, len(starts))
    return scores


def pair_crop_similarity(thumbnails: np.ndarray, i: np.ndarray, j: np.ndarray, whole: np.ndarray | None = None,
                         should_stop: StopFn | None = None, progress: ProgressFn | None = None) -> np.ndarray:
    """float32 [P]: the crop similarity of each pair (i, j), the higher of ``crop_similarity`` either way
    round (j matching a box of i, or i a box of j)."""
    both = crop_similarity(thumbnails, np.r_[i, j], np.r_[j, i], whole, should_stop, progress)
    return np.maximum(both[: len(i)], both[len(i):])


def crop_pairs(thumbnails: np.ndarray, neighbours: np.ndarray, floor: float, progress: ProgressFn | None = None,
               should_stop: StopFn | None = None,
               whole: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, crop similarity) with i < j of the pairs among each row's ``neighbours`` (int64 [N, k],
    its nearest rows by features) whose crop similarity, the higher either way round, is ≥ ``floor``;
    most similar first."""
    n = len(thumbnails)
    if neighbours.shape[0] != n:
        raise ValueError(f"{neighbours.shape[0]} neighbour lists for {n} thumbnails")
    a = np.repeat(np.arange(n, dtype=np.int64), neighbours.shape[1])
    b = neighbours.reshape(-1).astype(np.int64)
    keep = (a != b) & (b >= 0)
    i, j = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    key = np.sort(i * n + j)
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key  # each pair once
    i, j = key // n, key % n
    sim = pair_crop_similarity(thumbnails, i, j, whole, should_stop, progress)
    keep = sim >= np.float32(floor)
    i, j, sim = i[keep], j[keep], sim[keep]
    order = np.lexsort((j, i, -sim))
    return i[order], j[order], sim[order]
