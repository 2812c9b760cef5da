"""The per-bar shortcuts of the managed policy give the same bits as the NumPy calls
they replace (every pinned backtest figure depends on it)."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.policy.policies import _book_volatility, _clean_returns, _round1
from trimtab.policy.trading import _cov_columns
from trimtab.risk.sizing import SizingConfig, portfolio_volatility, risk_multiplier


@pytest.mark.parametrize("seed", range(20))
def test_book_volatility_is_np_std_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    r = rng.standard_t(3, int(rng.integers(2, 400))) * 10.0 ** rng.uniform(-4, 1)
    want = float(np.std(r, ddof=1) * np.sqrt(365.0))
    assert _book_volatility(r, 365.0) == want
    assert np.isnan(_book_volatility(r[:1], 365.0))


@pytest.mark.filterwarnings("ignore:overflow encountered")  # an infinity's square
@pytest.mark.parametrize("seed", range(20))
def test_clean_window_gives_portfolio_volatility_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.05, (60, 34))
    returns[rng.random(returns.shape) < 0.1] = np.nan
    if seed % 4 == 0:
        returns[3, 5] = np.inf
    weights = rng.dirichlet(np.ones(34))
    want = portfolio_volatility(weights, returns.copy(), 365.0)
    clean = _clean_returns(returns.copy())
    assert np.isfinite(clean).all()
    assert _book_volatility(clean @ weights, 365.0) == want


@pytest.mark.parametrize("seed", range(20))
def test_cov_columns_is_np_cov_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, 0.05, (int(rng.integers(3, 90)), int(rng.integers(1, 64))))
    want = np.atleast_2d(np.cov(returns, rowvar=False))
    got = np.atleast_2d(_cov_columns(returns))
    assert got.shape == want.shape
    assert np.array_equal(got, want)


def test_round1_is_python_round_for_every_length():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.uniform(0, 100, 500), np.arange(0, 100, 0.05), [0.05, 0.15, 0.25, 2.675, 99.95]]
    )
    for size in (1, 3, 5, 34, 64, 65, len(values)):
        chunk = values[:size] if size < len(values) else values
        assert _round1(chunk) == [round(float(v), 1) for v in chunk]


def test_fmin_fmax_multiplier_is_risk_multiplier():
    cfg = SizingConfig()
    scores = np.array([np.nan, -5.0, 0.0, 15.0, 15.0001, 32.5, 49.999, 50.0, 80.0, np.inf, -np.inf])
    want = risk_multiplier(scores, cfg)
    span = cfg.full_cut_score - cfg.no_cut_score
    got = np.fmin(np.fmax((cfg.full_cut_score - scores) / span, 0.0), 1.0)
    assert np.array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_governor_interpolation_is_np_interp_bit_for_bit():
    from trimtab.policy.governor import _interp

    rng = np.random.default_rng(3)
    for _ in range(100):
        k = int(rng.integers(1, 6))
        xs = [0.0, *sorted(rng.uniform(0, 1, k).tolist())]
        fs = [1.0, *sorted(rng.uniform(0, 1, k).tolist(), reverse=True)]
        points = np.array(xs)
        probes = np.concatenate(
            [
                rng.uniform(-0.1, 1.1, 500),
                points,
                np.nextafter(points, 2.0),
                np.nextafter(points, -2.0),
            ]
        )
        for x in probes.tolist():
            assert _interp(x, xs, fs) == float(np.interp(x, points, np.array(fs)))
