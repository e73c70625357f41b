"""t-SNE's gradient with the FFT repulsion overlapping the attraction on two threads (tsne_gradient.py):
openTSNE's gradient, the same numbers whatever the split, and a split that balances the two threads."""

import threading

import numpy as np
import pytest
from openTSNE import affinity
from openTSNE.tsne import kl_divergence_fft

from simclr_studio.tsne_gradient import TsneGradient, _Split

FFT = {"n_interpolation_points": 3, "min_num_intervals": 20, "ints_in_interval": 1.5}


@pytest.fixture(scope="module")
def problem():
    """Perplexity affinities of clustered points and a spread-out layout, as mid-way through a t-SNE."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 10)) + 4 * rng.normal(size=(12, 10))[rng.integers(0, 12, 6000)]
    P = affinity.PerplexityBasedNN(x, perplexity=30, n_jobs=1, random_state=0, verbose=False).P
    layout = np.ascontiguousarray(x[:, :2] * 6 + rng.normal(size=(6000, 2)), dtype=np.float64)
    return P, layout


def gradient_of(P, layout, n_jobs, split=None):
    gradient = TsneGradient(None, lambda: False, 1.0, 10)
    gradient.run_phase(10)
    if split is not None:  # force the helper's share of the attraction
        gradient._split.rows = lambda indptr: split
    try:
        error, g = gradient(layout, P, dof=1, fft_params=FFT, n_jobs=n_jobs, bh_params={}, reference_embedding=None)
    finally:
        gradient.close()
    assert error == 0.0
    return g


def test_the_gradient_is_opentsnes(problem):
    P, layout = problem
    _, expected = kl_divergence_fft(layout, P, dof=1, fft_params=FFT, n_jobs=1)
    for n_jobs in (1, 2, 3):
        got = gradient_of(P, layout, n_jobs)
        assert got.shape == layout.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_the_same_numbers_for_any_split_and_any_threads(problem):
    P, layout = problem
    reference = gradient_of(P, layout, 1)
    for split in (0, 1, 2500, 5999, 6000):
        np.testing.assert_array_equal(gradient_of(P, layout, 2, split), reference)
    np.testing.assert_array_equal(gradient_of(P, layout, 4), reference)


def test_the_split_balances_the_two_threads():
    indptr = np.arange(0, 1001, dtype=np.int32) * 10  # 1,000 rows of 10 affinities each
    split = _Split()
    assert split.rows(indptr) == 0  # nothing measured: the helper only repels
    # The helper repelled in 2 s; the caller attracted all 1,000 rows in 10 s (1 ms per affinity).
    split.measured(indptr, 0, repulsion=2.0, helper_attraction=0.0, own=10.0)
    # Equal costs: the helper takes 400 rows, so both threads take 6 s.
    assert split.rows(indptr) == 400
    # A repulsion longer than all the attraction: the helper gets no rows.
    split = _Split()
    split.measured(indptr, 0, repulsion=20.0, helper_attraction=0.0, own=10.0)
    assert split.rows(indptr) == 0
    # The helper's one thread three times as slow per affinity as the caller's (which may run several).
    split = _Split()
    split.measured(indptr, 500, repulsion=0.0, helper_attraction=15.0, own=5.0)  # 3 ms and 1 ms per affinity
    assert split.rows(indptr) == 250  # 7.5 s each


def test_the_helper_thread_ends_with_close(problem):
    P, layout = problem
    gradient = TsneGradient(None, lambda: False, 1.0, 10)
    gradient.run_phase(10)
    gradient(layout, P, dof=1, fft_params=FFT, n_jobs=2, bh_params={}, reference_embedding=None)
    assert any(t.name.startswith("tsne-repulsion") for t in threading.enumerate())
    gradient.close()
    assert not any(t.name.startswith("tsne-repulsion") for t in threading.enumerate())
