"""The drawdown model fits without scikit-learn (its import was a second of every first
review) and gives the same floats as before: the standardisation, the loss and the
warm-started L-BFGS-B fit are checked bit for bit against scikit-learn's own, and the
review's probability on the real data against the value the scikit-learn code gave."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import NUMPY_MATH_IS_LIBM
from trimtab.review.run import model_probability
from trimtab.risk.drawdown_model import (
    _Logistic,
    _logistic_loss_gradient,
    _standardise,
)


def _data(seed: int, n: int, k: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)) * rng.uniform(0.1, 30.0, k) + rng.normal(0.0, 5.0, k)
    y = (rng.random(n) < 0.15).astype(float)
    w = rng.uniform(0.01, 1.0, n) / 35.0  # the model's weights: a bar's rows sum to 1
    return x, y, w


def test_standardisation_is_scikit_learns_to_the_bit():
    from sklearn.preprocessing import StandardScaler

    for seed in range(5):
        x, _, w = _data(seed, 3000 + 997 * seed)
        x[:, 2] = 0.7  # a constant column: scale 1 both ways
        scaler = StandardScaler().fit(x, sample_weight=w)
        mean, scale = _standardise(x, w)
        assert np.array_equal(mean, scaler.mean_)
        assert np.array_equal(scale, scaler.scale_)
        assert scale[2] == 1.0


def test_loss_and_gradient_are_scikit_learns_to_the_bit():
    from sklearn._loss.loss import HalfBinomialLoss
    from sklearn.linear_model._linear_loss import LinearModelLoss

    loss = LinearModelLoss(base_loss=HalfBinomialLoss(), fit_intercept=True)
    x, y, w = _data(7, 20_000, 3)
    z = (x - x.mean(axis=0)) / x.std(axis=0) * 8.0  # raw scores from -60 to 60: every branch
    first = np.array([2.0, -1.0, 0.5, -3.0])
    raw = z @ first[:-1] + first[-1]
    assert (raw <= -37).any() and (raw > 18).any()
    assert ((raw > -37) & (raw <= -2)).any() and ((raw > -2) & (raw <= 18)).any()
    for coef in (first, [0.0, 0.0, 0.0, 0.0], [0.3, 0.1, -0.1, 5.0]):
        c = np.array(coef)
        f0, g0 = loss.loss_gradient(c, z, y, w, l2_reg_strength=0.3)
        f1, g1 = _logistic_loss_gradient(c, z, y, w, 0.3)
        assert f1 == f0
        assert np.array_equal(g1, g0)


def test_warm_started_fits_are_scikit_learns_to_the_bit():
    """A walk-forward in miniature: an expanding sample, each fit started from the last."""
    from sklearn.linear_model import LogisticRegression

    x, y, w = _data(11, 12_000)
    ours = _Logistic(C=0.05, max_iter=1000)
    theirs = LogisticRegression(C=0.05, max_iter=1000, warm_start=True)
    for n in range(2000, 12_001, 2000):
        ours.fit(x[:n], y[:n], w[:n])
        theirs.fit(x[:n], y[:n].astype(int), sample_weight=w[:n])
        if NUMPY_MATH_IS_LIBM:
            assert np.array_equal(ours.coef_, theirs.coef_[0])
            assert ours.intercept_ == float(theirs.intercept_[0])
        else:  # NumPy's AVX-512 exp is an ulp off libm's; six warm starts carry it to ~2e-10
            np.testing.assert_allclose(ours.coef_, theirs.coef_[0], rtol=1e-8, atol=1e-12)
            assert ours.intercept_ == pytest.approx(float(theirs.intercept_[0]), rel=1e-8)


#: The review's weights (net exposure / equity) of examples/holdings.yaml at 2023-06-30.
EXAMPLE_WEIGHTS = {
    "BTCUSDT": 0.4190542619710732,
    "ETHUSDT": 0.21274952513968012,
    "SOLUSDT": 0.06224754566112712,
    "LINKUSDT": 0.05209023803800312,
    "BNBUSDT": 0.03965558118337447,
    "DOGEUSDT": 0.5483790939340547,
}


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("weights", "bar", "expected"),
    [
        # Values of the scikit-learn code (commit 4a5b1e1), full floats.
        (EXAMPLE_WEIGHTS, "2023-06-30", 0.21123770566742028),
        ({"BTCUSDT": 0.5, "ETHUSDT": 0.3}, "2023-06-30", 0.09491644821159967),
        ({"SOLUSDT": 0.6, "DOGEUSDT": -0.2, "ETHUSDT": 0.4}, "2021-05-19", 0.25551754596606663),
    ],
)
def test_the_reviews_probability_is_the_old_codes(daily_panel, tmp_path, weights, bar, expected):
    from trimtab.signals.volatility import single_threaded_blas

    with single_threaded_blas():  # as in a review
        got = model_probability(
            pd.Series(weights),
            daily_panel,
            pd.Timestamp(bar, tz="UTC"),
            threshold=0.1,
            horizon_days=7,
            cache=tmp_path,  # computed here, never read back
        )
    if NUMPY_MATH_IS_LIBM:  # the machine the values were pinned on
        assert got == expected
    else:  # NumPy's AVX-512 exp and log: ulps in the features and the fits
        assert got == pytest.approx(expected, rel=1e-11)


@pytest.mark.real_data
def test_every_walk_forward_fit_is_scipy_minimizes(daily_panel, monkeypatch):
    """The review's 56 warm-started fits with SciPy's L-BFGS-B driven by
    ``trimtab.risk.lbfgsb`` (no scipy.optimize import) and with scipy.optimize.minimize
    itself: every fit's coefficients, intercept and offset equal to the bit."""
    from trimtab.risk import lbfgsb
    from trimtab.risk.drawdown_model import DrawdownModel
    from trimtab.signals.volatility import single_threaded_blas

    if lbfgsb._setulb() is None:
        pytest.skip("SciPy release not verified: the driver is minimize itself")
    history = daily_panel.slice(end=pd.Timestamp("2023-06-30", tz="UTC"))
    row = pd.Series(EXAMPLE_WEIGHTS).reindex(history.symbols).fillna(0.0).to_numpy(float)
    w = pd.DataFrame(
        np.tile(row, (len(history.index), 1)), index=history.index, columns=history.symbols
    ).where(history.live, 0.0)

    def fits():
        with single_threaded_blas():
            return DrawdownModel().fit_predict(history, weights=w, baseline=False)

    ours = fits()
    monkeypatch.setattr(lbfgsb, "_setulb_cache", None)  # scipy.optimize.minimize
    theirs = fits()
    assert len(ours.fits) == len(theirs.fits) > 40
    for a, b in zip(ours.fits, theirs.fits, strict=True):
        assert np.array_equal(a.coef, b.coef)
        assert (a.intercept, a.offset, a.n_train) == (b.intercept, b.offset, b.n_train)
    assert np.array_equal(ours.probabilities, theirs.probabilities, equal_nan=True)
