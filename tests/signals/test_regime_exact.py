"""The regime HMM's EM without hmmlearn.hmm equals hmmlearn's GaussianHMM bit for bit.

``signals.regime`` fits the HMM with its own EM (hmmlearn's ``_hmmc`` passes, hmmlearn's
M-step written out) so that a review does not import ``hmmlearn.hmm`` and scikit-learn.
The reference here is hmmlearn itself, configured as trimtab configured it before:
full covariances, ``init_params=""`` (no KMeans: the start is ``_initial_params`` or the
previous refit), ``params="stmc"``, scaling first then log space. Real daily bars.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE as DAILY
from trimtab.signals import regime as R


def _hmmlearn_fit(x, start, n_iter, tol, implementation):
    """hmmlearn's GaussianHMM fitted as trimtab's old ``_fit_hmm`` did (one implementation)."""
    from hmmlearn.hmm import GaussianHMM

    model = GaussianHMM(
        n_components=len(start[0]),
        covariance_type="full",
        n_iter=n_iter,
        tol=tol,
        init_params="",
        params="stmc",
        random_state=0,
        implementation=implementation,
    )
    model.startprob_, model.transmat_, model.means_, model.covars_ = (a.copy() for a in start)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        model.fit(x)
    params = (model.startprob_, model.transmat_, model.means_, model.covars_)
    return params, list(model.monitor_.history), int(model.monitor_.iter)


def _hmmlearn_ordered(x, start, n_iter, tol):
    """The old ``_fit_hmm`` whole: scaling, then log space, states in label order."""
    for implementation in ("scaling", "log"):
        try:
            params, history, iters = _hmmlearn_fit(x, start, n_iter, tol, implementation)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if all(np.isfinite(a).all() for a in params):
            break
    else:
        return start, np.nan, 0
    order = np.argsort(params[2][:, 1], kind="stable")
    ordered = (
        params[0][order],
        params[1][np.ix_(order, order)],
        params[2][order],
        params[3][order],
    )
    return ordered, float(history[-1]) if history else np.nan, iters


def _same(a, b) -> None:
    for u, v in zip(a, b, strict=True):
        assert u.shape == v.shape
        assert np.array_equal(u, v), np.max(np.abs(u - v))


@pytest.fixture(scope="module")
def close() -> pd.DataFrame:
    if not DAILY.exists():
        pytest.skip(f"shared data not found: {DAILY}")
    bars = pd.read_csv(DAILY, parse_dates=["timestamp"], usecols=["timestamp", "symbol", "close"])
    return bars.pivot(index="timestamp", columns="symbol", values="close")


def _features(c: pd.Series) -> np.ndarray:
    ret, logvol = R.regime_features(c)
    x = np.column_stack([ret.iloc[:, 0], logvol.iloc[:, 0]])
    return x[np.isfinite(x).all(axis=1)]


# (symbol, first bar, bars): calm and violent years, short and long windows.
WINDOWS = [
    ("BTCUSDT", 900, 700),
    ("ETHUSDT", 300, 500),
    ("ADAUSDT", 600, 365),
]


@pytest.mark.parametrize(("symbol", "lo", "n"), WINDOWS)
def test_em_equals_hmmlearn_cold_and_warm_both_implementations(close, symbol, lo, n):
    x = _features(close[symbol])[lo : lo + n]
    assert len(x) == n
    start = R._initial_params(x, R.N_STATES)
    tol = 1e-4 * n
    for scaling, implementation in ((True, "scaling"), (False, "log")):
        got, history = R._em(x, start, 100, tol, scaling)
        want, want_history, want_iter = _hmmlearn_fit(x, start, 100, tol, implementation)
        _same(got, want)
        assert history == want_history and len(history) == want_iter
        assert want_iter >= 3  # EM really ran
        # A warm refit on a longer window from the fitted parameters (5 iterations).
        y = _features(close[symbol])[lo : lo + n + 30]
        got2, history2 = R._em(y, got, 5, 1e-4 * len(y), scaling)
        want2, want_history2, _ = _hmmlearn_fit(y, want, 5, 1e-4 * len(y), implementation)
        _same(got2, want2)
        assert history2 == want_history2


def test_fit_regimes_fits_are_hmmlearns_chain(close):
    # Every refit of fit_regimes (cold first, then warm from the previous refit) equals
    # hmmlearn's fit from the same start on the same window; the probabilities follow.
    c = close[["BTCUSDT", "ETHUSDT"]].loc[:"2020-12-31"]
    res = R.fit_regimes(c, min_history=300, refit_every=120)
    index = c.index
    for symbol in c.columns:
        ret, logvol = R.regime_features(c[symbol])
        x = np.column_stack([ret.iloc[:, 0], logvol.iloc[:, 0]])
        fits = res.fits[symbol]
        assert len(fits) >= 4
        prev = None
        for fit in fits:
            y = x[index.get_loc(fit.first) : index.get_loc(fit.at) + 1]
            start = prev if prev is not None else R._initial_params(y, R.N_STATES)
            iters = 5 if prev is not None else 100
            want, loglik, used = _hmmlearn_ordered(y, start, iters, 1e-4 * len(y))
            got = (fit.startprob, fit.transmat, fit.means, fit.covars)
            _same(got, want)
            assert fit.log_likelihood == loglik and fit.n_iter == used
            prev = want


def test_the_fit_imports_neither_hmmlearn_hmm_nor_sklearn(close, monkeypatch):
    # A None entry in sys.modules makes any import of that module raise ImportError, so
    # the fit below would fail if it imported one of them (hmmlearn's compiled passes,
    # already loaded or not, stay importable).
    for name in ("hmmlearn.hmm", "sklearn", "scipy.stats"):
        monkeypatch.setitem(sys.modules, name, None)
    c = close[["SOLUSDT"]].dropna().iloc[:500]
    res = R.fit_regimes(c, min_history=400, refit_every=50)
    assert len(res.fits["SOLUSDT"]) == 2 and res.fits["SOLUSDT"][0].n_iter >= 3
    assert np.isfinite(res.high_vol.iloc[-1, 0])
