"""Hand-written hot paths against the library routine they replace (issue 10, speed).

``seeded_ewm`` runs its recursion without ``scipy.signal.lfilter`` when scipy.signal is not
imported (``_ewm_numpy``) and ``cluster_labels`` its average linkage without
``scipy.cluster``, so that a review does not import them; here they are checked against
those routines on random data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter

from trimtab.signals.correlation import cluster_labels
from trimtab.signals.volatility import _ewm_numpy, _finite_runs, seeded_ewm


def _lfilter_ewm(x: np.ndarray, alpha: float, seed_len: int) -> np.ndarray:
    """The former implementation: lfilter over each finite run, seeded with its mean."""
    x = np.asarray(x, dtype=float)
    flat = x.ndim == 1
    x2 = x[:, None] if flat else x
    out = np.full_like(x2, np.nan)
    decay = 1.0 - alpha
    for j in range(x2.shape[1]):
        col = x2[:, j]
        for start, stop in _finite_runs(np.isfinite(col)):
            if stop - start < seed_len:
                continue
            seed_at = start + seed_len - 1
            seed = col[start : seed_at + 1].mean()
            out[seed_at, j] = seed
            rest = col[seed_at + 1 : stop]
            if len(rest):
                out[seed_at + 1 : stop, j] = lfilter(
                    [alpha], [1.0, -decay], rest, zi=[decay * seed]
                )[0]
    return out[:, 0] if flat else out


def _holey(rng: np.random.Generator, t: int, n: int) -> np.ndarray:
    """Squared returns with late listings, delistings, holes, short runs and infinities."""
    x = rng.standard_normal((t, n)) ** 2 * 10.0 ** rng.uniform(-6, 2, size=n)
    for j in range(n):
        listed = rng.integers(0, t // 3)
        x[:listed, j] = np.nan
        if rng.random() < 0.3:
            x[rng.integers(t // 2, t) :, j] = np.nan  # delisted
        for _ in range(rng.integers(0, 4)):
            at = rng.integers(0, t)
            x[at : at + rng.integers(1, 6), j] = np.nan  # a hole
        if rng.random() < 0.1:
            x[rng.integers(0, t), j] = np.inf
    return x


@pytest.mark.parametrize("n", [1, 3, 4, 5, 34])
@pytest.mark.parametrize("alpha", [1 / 14, 1 - 0.94, 1 - 0.97, 0.5, 0.9, 1.0])
def test_seeded_ewm_is_lfilter_bit_for_bit(n: int, alpha: float) -> None:
    rng = np.random.default_rng(int(alpha * 1000) + n)
    x = _holey(rng, 700, n)
    seed_len = 14 if alpha < 0.5 else 2
    want = _lfilter_ewm(x, alpha, seed_len)
    ok = ~np.isnan(want)
    assert ok.sum() > 0
    for got in (_ewm_numpy(x, alpha, seed_len), seeded_ewm(x, alpha, seed_len)):
        assert got.shape == want.shape
        assert np.array_equal(np.isnan(got), np.isnan(want))
        # Same operations in the same order: equal, not merely close, so every figure
        # computed from it (the pinned backtests') stays what it was.
        assert np.array_equal(got[ok], want[ok])


def test_seeded_ewm_series_and_edges() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal(300)
    np.testing.assert_array_equal(_ewm_numpy(x, 0.1, 10), _lfilter_ewm(x, 0.1, 10))
    for ewm in (_ewm_numpy, seeded_ewm):
        # Too short to seed: all NaN, no error.
        assert np.isnan(ewm(x[:5], 0.1, 10)).all()
        assert np.isnan(ewm(np.full((20, 6), np.nan), 0.1, 3)).all()
        # A run exactly seed_len long holds only its seed (the mean).
        y = ewm(np.array([np.nan, 1.0, 2.0, 3.0, np.nan]), 0.5, 3)
        np.testing.assert_array_equal(y, [np.nan, np.nan, np.nan, 2.0, np.nan])
        # Hand-worked: seed 2 at bar 2, then 0.5 * 4 + 0.5 * 2 = 3, 0.5 * 0 + 0.5 * 3 = 1.5.
        y = ewm(np.array([1.0, 2.0, 3.0, 4.0, 0.0]), 0.5, 3)
        np.testing.assert_array_equal(y, [np.nan, np.nan, 2.0, 3.0, 1.5])


def test_seeded_ewm_frame_input_unchanged() -> None:
    rng = np.random.default_rng(3)
    x = _holey(rng, 200, 8)
    before = x.copy()
    _ewm_numpy(pd.DataFrame(x).to_numpy(), 0.2, 5)
    np.testing.assert_array_equal(x, before)


def _scipy_labels(corr: np.ndarray, max_distance: float) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    d = np.sqrt(np.clip(0.5 * (1.0 - corr), 0.0, 1.0))
    np.fill_diagonal(d, 0.0)
    d = 0.5 * (d + d.T)
    return fcluster(linkage(squareform(d, checks=False), "average"), max_distance, "distance")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


@pytest.mark.parametrize("seed", range(40))
def test_average_linkage_cut_is_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    # Returns of a few factors plus noise: clusters of every tightness, many merges
    # close to the 0.5 cut.
    k = int(rng.integers(1, 6))
    load = rng.normal(size=(n, k)) * rng.uniform(0.2, 2.0, size=(1, k))
    r = rng.normal(size=(250, k)) @ load.T + rng.normal(size=(250, n)) * rng.uniform(0.3, 2.0)
    corr = np.corrcoef(r.T)
    names = [f"A{i}" for i in range(n)]
    frame = pd.DataFrame(corr, index=names, columns=names)
    for cut in (0.3, 0.5, 0.6):
        got = cluster_labels(frame, max_distance=cut).to_numpy(dtype=int)
        assert _same_partition(got, _scipy_labels(corr, cut)), (seed, cut)
        # Relabelled as documented: 1 is the largest cluster.
        sizes = np.bincount(got)[1:]
        assert list(sizes) == sorted(sizes, reverse=True)


def test_average_linkage_hand_worked() -> None:
    # d(A,B) = 0.2, d(C, A) = 0.4, d(C, B) = 0.7: A and B merge at 0.2, then C joins at
    # the average (0.4 + 0.7) / 2 = 0.55: apart at a 0.5 cut, together at 0.6.
    d = np.array([[0.0, 0.2, 0.4], [0.2, 0.0, 0.7], [0.4, 0.7, 0.0]])
    corr = 1.0 - 2.0 * d**2
    frame = pd.DataFrame(corr, index=list("ABC"), columns=list("ABC"))
    assert cluster_labels(frame, max_distance=0.5).tolist() == [1, 1, 2]
    assert cluster_labels(frame, max_distance=0.6).tolist() == [1, 1, 1]
