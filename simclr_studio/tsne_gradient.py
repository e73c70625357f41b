"""t-SNE's gradient for openTSNE, one iteration at a time: the place that hands out the moving layout and
checks for a stop, and that runs the FFT repulsion alongside the attraction on two threads.

openTSNE computes an iteration's two halves one after the other. Its FFT repulsion runs on one thread
(and holds the GIL), while its attraction (a sparse loop over each point's neighbours) lets go of the GIL
and runs on all of them; so on a 2-core machine one core idles through the repulsion, about 40 % of a
late iteration at 100k points. Here one thread computes the repulsion and then the attraction of the
first rows, while the calling thread computes the attraction of the others, the split moved each
iteration so that both finish together. The sum is openTSNE's gradient, up to the order of additions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

Snapshot = Callable[[int, int, np.ndarray], None]  # iteration, total, coordinates float32 [N, 2] so far
ShouldStop = Callable[[], bool]

# FFT's cost per iteration has a floor (its interpolation grid) that Barnes-Hut undercuts on small maps.
FFT_MIN_POINTS = 5_000
# How fast the split follows the measured times (an exponential average): the costs change slowly, as
# the map grows, but one iteration's timing is noisy on a shared machine.
SMOOTHING = 0.3


class TsneGradient:
    """openTSNE's ``negative_gradient_method``: called once per iteration with the layout and the
    affinities P, returns (0.0, gradient). Hands ``snapshot`` a copy of the layout at most every
    ``every_s`` seconds and raises InterruptedError once ``should_stop()`` says so. (openTSNE's callbacks
    would do both, but each one makes it compute the KL divergence too, which costs as much as the
    attraction itself.) Call ``close()`` when done: it ends the helper thread."""

    def __init__(self, snapshot: Snapshot | None, should_stop: ShouldStop, every_s: float, total: int) -> None:
        self.snapshot, self.should_stop, self.every_s, self.total = snapshot, should_stop, every_s, total
        self.done = 0  # iterations done
        self.phase_end = 0  # iterations done at the end of the current phase
        self.last = time.monotonic()
        self._split = _Split()
        self._helper: ThreadPoolExecutor | None = None

    def check(self) -> None:
        if self.should_stop():
            raise InterruptedError("t-SNE stopped")

    def run_phase(self, iterations: int) -> None:
        self.phase_end = self.done + iterations
        self.last = time.monotonic() if self.done == 0 else self.last

    def close(self) -> None:
        if self._helper is not None:
            self._helper.shutdown(wait=True)
            self._helper = None

    def __call__(self, embedding: np.ndarray, P: Any, **params: Any) -> tuple[float, np.ndarray]:
        from openTSNE.tsne import kl_divergence_bh

        if self.done >= self.phase_end:  # openTSNE's extra evaluation after a phase, for its error: not needed
            return 0.0, np.zeros_like(embedding)
        self.check()
        now = time.monotonic()
        if self.snapshot is not None and now - self.last >= self.every_s:
            self.last = now
            self.snapshot(self.done, self.total, np.array(embedding, dtype=np.float32))  # a copy
        self.done += 1
        params["should_eval_error"] = False  # the KL divergence costs as much as the attraction itself
        if embedding.shape[0] < FFT_MIN_POINTS:
            return kl_divergence_bh(embedding, P, **params)
        return 0.0, self._fft_gradient(embedding, P, params["dof"], params["fft_params"], params["n_jobs"])

    def _fft_gradient(self, embedding: np.ndarray, P: Any, dof: float, fft_params: dict,
                      n_jobs: int) -> np.ndarray:
        from openTSNE import _tsne

        # Each row's attraction is summed from zero, by whichever thread, and added to its repulsion last:
        # the same numbers for any split and any number of threads, so a seed still fixes the map.
        repulsion = np.zeros_like(embedding, dtype=np.float64, order="C")
        attraction = np.zeros_like(repulsion)

        def attract(first: int, end: int, threads: int) -> None:
            # Rows [first, end) of P against the whole layout (openTSNE's reference_embedding).
            _tsne.estimate_positive_gradient_nn(P.indices, P.indptr[first:end + 1], P.data, embedding[first:end],
                                                embedding, attraction[first:end], dof, num_threads=threads,
                                                should_eval_error=False)

        def repel() -> None:
            _tsne.estimate_negative_gradient_fft_2d(embedding, repulsion, **fft_params, dof=dof)

        n = len(embedding)
        if n_jobs < 2:
            repel()
            attract(0, n, 1)
            return repulsion + attraction
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="tsne-repulsion")
        first = self._split.rows(P.indptr)  # the helper's share of the attraction: rows [0, first)

        def helper() -> tuple[float, float]:
            start = time.perf_counter()
            repel()
            middle = time.perf_counter()
            attract(0, first, 1)
            return middle - start, time.perf_counter() - middle

        job = self._helper.submit(helper)
        start = time.perf_counter()
        attract(first, n, n_jobs - 1)
        own = time.perf_counter() - start
        repelled, helper_attraction = job.result()
        self._split.measured(P.indptr, first, repelled, helper_attraction, own)
        return repulsion + attraction


class _Split:
    """Where the attraction's rows are split between the helper thread (after its repulsion) and the
    calling thread: from each side's measured seconds per affinity, so that both finish together."""

    def __init__(self) -> None:
        self.repulsion = 0.0  # seconds
        self.helper_cost = 0.0  # seconds per affinity (nonzero of P), the helper's one thread
        self.own_cost = 0.0  # the calling thread's (it may run several)

    def rows(self, indptr: np.ndarray) -> int:
        if self.own_cost == 0.0:  # nothing measured yet: the helper only repels
            return 0
        helper_cost = self.helper_cost or self.own_cost  # its own cost once it has had rows
        total = float(indptr[-1])
        share = (self.own_cost * total - self.repulsion) / (self.own_cost + helper_cost)
        return int(np.searchsorted(indptr, min(max(share, 0.0), total)))

    def measured(self, indptr: np.ndarray, first: int, repulsion: float, helper_attraction: float,
                 own: float) -> None:
        def blend(old: float, new: float) -> float:
            return new if old == 0.0 else old + SMOOTHING * (new - old)

        helper_nnz, own_nnz = float(indptr[first]), float(indptr[-1] - indptr[first])
        self.repulsion = blend(self.repulsion, repulsion)
        if own_nnz > 0:
            self.own_cost = blend(self.own_cost, own / own_nnz)
        if helper_nnz > 0:
            self.helper_cost = blend(self.helper_cost, helper_attraction / helper_nnz)
