"""Hand-written portfolio construction checked against the reference libraries:
sklearn's LedoitWolf (same numbers), skfolio's RiskBudgeting and HierarchicalRiskParity
(same weights), and hand-worked two-asset cases.

The skfolio comparisons run on daily returns of the daily file (the real one beside the
project, else trimtab's synthetic sample in the same format) over 2021-2023, keeping the
coins with a return on every day; the figures of the real file are ``real_data``."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.cluster.hierarchy as sch
import scipy.spatial.distance as ssd
from sklearn.covariance import LedoitWolf

from tests.conftest import DAILY_FILE
from trimtab.data import load_panel
from trimtab.risk.construction import (
    _optimal_leaf_order,
    hrp_weights,
    risk_parity_weights,
    shrunk_covariance,
)

# Clarabel's defaults in skfolio (gap 1e-9) leave weights off by ~5e-7; tightened, the
# solver's answer agrees with Newton's to ~5e-11, so the tests can ask for 1e-8.
TIGHT_CLARABEL = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}


@pytest.fixture(scope="module")
def daily_returns():
    """(returns T x N as an array, symbols) of the coins listed all through 2021-2023."""
    if not DAILY_FILE.exists():
        pytest.skip(f"data not found: {DAILY_FILE}")
    close = load_panel(DAILY_FILE).close.loc["2021-01-01":"2023-12-31"]
    returns = close.pct_change().iloc[1:]
    full = returns.columns[returns.notna().all()]
    return returns[full].to_numpy(), list(full)


def factor_returns(t: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((t, 3)) * 0.02
    return f @ rng.standard_normal((3, n)) + rng.standard_normal((t, n)) * 0.03


# --- covariance ---------------------------------------------------------------------


@pytest.mark.parametrize(("t", "n"), [(500, 20), (60, 150), (2, 3), (300, 1)])
def test_ledoit_wolf_same_numbers_as_sklearn(t, n):
    x = factor_returns(t, n, seed=t + n)
    ours = shrunk_covariance(x)
    ref = LedoitWolf().fit(x).covariance_
    assert np.abs(ours - ref).max() <= 1e-10 * np.abs(ref).max()


def test_ledoit_wolf_on_real_returns(daily_returns):
    x, _ = daily_returns
    ref = LedoitWolf().fit(x).covariance_
    assert np.abs(shrunk_covariance(x) - ref).max() <= 1e-10 * np.abs(ref).max()


def test_ledoit_wolf_shrinks_toward_scaled_identity():
    x = factor_returns(40, 30)
    s = np.cov(x.T, ddof=0)
    lw = shrunk_covariance(x)
    mu = np.trace(s) / 30
    off = ~np.eye(30, dtype=bool)
    delta = 1 - lw[off][0] / s[off][0]  # one shrinkage for every entry
    assert 0 < delta < 1
    np.testing.assert_allclose(lw, (1 - delta) * s + delta * mu * np.eye(30), rtol=1e-12)
    np.testing.assert_allclose(np.trace(lw), np.trace(s), rtol=1e-12)


def test_sample_method_is_np_cov():
    x = factor_returns(100, 7)
    np.testing.assert_allclose(shrunk_covariance(x, "sample"), np.cov(x.T), rtol=1e-12)


def test_rows_with_a_nan_are_dropped():
    x = factor_returns(120, 5)
    holed = x.copy()
    holed[[3, 50, 51], [0, 2, 4]] = np.nan
    kept = np.delete(x, [3, 50, 51], axis=0)
    np.testing.assert_allclose(shrunk_covariance(holed), LedoitWolf().fit(kept).covariance_)
    # A returns DataFrame (as panel.close.pct_change() gives) works the same.
    frame = pd.DataFrame(holed, columns=list("ABCDE"))
    np.testing.assert_array_equal(shrunk_covariance(frame), shrunk_covariance(holed))


def test_covariance_input_errors():
    x = factor_returns(10, 3)
    x[1:, 1] = np.nan  # only row 0 is complete
    with pytest.raises(ValueError, match=r"shape \(10, 3\) has 1 row\(s\) without NaN"):
        shrunk_covariance(x)
    with pytest.raises(ValueError, match="2-D"):
        shrunk_covariance(np.ones(5))
    with pytest.raises(ValueError, match="infinite values .*row 2, column 1"):
        shrunk_covariance(np.where(np.arange(30).reshape(10, 3) == 7, np.inf, 0.01))
    with pytest.raises(ValueError, match="'ledoit-wolf' or 'sample'"):
        shrunk_covariance(factor_returns(10, 3), method="oas")


# --- risk parity --------------------------------------------------------------------


def test_two_uncorrelated_assets_weights_inverse_to_vol():
    # ERC: w1 s1 = w2 s2, so w = (1/s1, 1/s2) / (1/s1 + 1/s2) = (2/3, 1/3) for s = (.1, .2)
    cov = np.diag([0.1**2, 0.2**2])
    np.testing.assert_allclose(risk_parity_weights(cov), [2 / 3, 1 / 3], rtol=1e-12)
    # Budgets (1, 4): w_i^2 s_i^2 proportional to b_i, so w ~ sqrt(b) / s = (10, 10).
    np.testing.assert_allclose(risk_parity_weights(cov, np.array([1.0, 4.0])), [0.5, 0.5])


def test_two_correlated_assets_still_inverse_to_vol():
    # With two assets the correlation cancels: rc_i = w_i^2 s_i^2 + rho w1 w2 s1 s2.
    cov = np.array([[0.04, 0.5 * 0.2 * 0.5], [0.5 * 0.2 * 0.5, 0.25]])
    np.testing.assert_allclose(risk_parity_weights(cov), [5 / 7, 2 / 7], rtol=1e-12)


def test_risk_contributions_equal_budgets():
    x = factor_returns(400, 300, seed=3)
    cov = shrunk_covariance(x)
    w = risk_parity_weights(cov)
    rc = w * (cov @ w)
    assert (w > 0).all()
    assert abs(w.sum() - 1) < 1e-12
    np.testing.assert_allclose(rc / rc.sum(), np.full(300, 1 / 300), rtol=1e-9)
    budgets = np.linspace(1, 5, 300)
    wb = risk_parity_weights(cov, budgets)
    rcb = wb * (cov @ wb)
    np.testing.assert_allclose(rcb / rcb.sum(), budgets / budgets.sum(), rtol=1e-9)


def test_risk_parity_on_a_singular_covariance():
    # Assets 0 and 1 identical, 2 independent, same vols: w0 = w1 = a, rc0 = rc1 = 2a^2,
    # rc2 = w2^2, so w2 = sqrt(2) a and w = (1, 1, sqrt 2) / (2 + sqrt 2).
    cov = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) * 0.0025
    expected = np.array([1.0, 1.0, np.sqrt(2)]) / (2 + np.sqrt(2))
    np.testing.assert_allclose(risk_parity_weights(cov), expected, rtol=1e-10)


def test_no_risk_parity_when_a_long_only_mix_has_no_risk():
    # Correlation -1: the 50/50 mix has zero variance, risk shares are undefined.
    cov = np.array([[0.01, -0.01], [-0.01, 0.01]])
    with pytest.raises(RuntimeError, match="no solution: .*long-only portfolio with zero variance"):
        risk_parity_weights(cov)
    # An anti-correlated pair beside a third asset: the pair's risk shares tend to 0
    # however it is weighted, so Newton's iterates run away until max_iter.
    cov3 = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) * 0.01
    with pytest.raises(RuntimeError, match="did not converge in 100 .*zero variance"):
        risk_parity_weights(cov3)


def test_risk_parity_same_weights_as_skfolio(daily_returns):
    skopt = pytest.importorskip("skfolio.optimization")
    x, _ = daily_returns
    ref = skopt.RiskBudgeting(solver_params=TIGHT_CLARABEL).fit(x).weights_
    ours = risk_parity_weights(np.cov(x.T))  # skfolio's default prior: np.cov
    assert np.abs(ours - ref).max() < 1e-8


def test_risk_budgets_same_weights_as_skfolio(daily_returns):
    skopt = pytest.importorskip("skfolio.optimization")
    x, _ = daily_returns
    budgets = np.arange(1.0, x.shape[1] + 1)
    ref = skopt.RiskBudgeting(risk_budget=budgets, solver_params=TIGHT_CLARABEL).fit(x)
    ours = risk_parity_weights(np.cov(x.T), budgets)
    assert np.abs(ours - ref.weights_).max() < 1e-8


# --- HRP ----------------------------------------------------------------------------


def test_hrp_two_assets_inverse_variance():
    cov = np.array([[0.01, 0.002], [0.002, 0.04]])
    np.testing.assert_allclose(hrp_weights(cov), [0.8, 0.2], rtol=1e-12)


def test_hrp_same_weights_as_skfolio_defaults(daily_returns):
    skopt = pytest.importorskip("skfolio.optimization")
    x, _ = daily_returns
    ref = skopt.HierarchicalRiskParity().fit(x).weights_
    ours = hrp_weights(np.cov(x.T))
    assert np.abs(ours - ref).max() < 1e-8
    assert abs(ours.sum() - 1) < 1e-12


@pytest.mark.parametrize("linkage", ["single", "average", "complete"])
@pytest.mark.parametrize("optimal_ordering", [True, False])
def test_hrp_options_same_weights_as_skfolio(daily_returns, linkage, optimal_ordering):
    skopt = pytest.importorskip("skfolio.optimization")
    from skfolio.cluster import HierarchicalClustering, LinkageMethod
    from skfolio.seriation import HierarchicalSeriation

    x, _ = daily_returns
    seriation = HierarchicalSeriation(
        hierarchical_clustering_estimator=HierarchicalClustering(
            linkage_method=LinkageMethod(linkage)
        ),
        optimal_ordering=optimal_ordering,
    )
    ref = skopt.HierarchicalRiskParity(seriation_estimator=seriation).fit(x).weights_
    ours = hrp_weights(np.cov(x.T), linkage=linkage, optimal_ordering=optimal_ordering)
    assert np.abs(ours - ref).max() < 1e-8


def test_hrp_with_a_shrunk_covariance_and_returns_correlation(daily_returns):
    """skfolio with a Ledoit-Wolf prior still clusters on the Pearson correlation of the
    returns; ``corr=`` gives the same split."""
    skopt = pytest.importorskip("skfolio.optimization")
    from skfolio.moments import LedoitWolf as SkLedoitWolf
    from skfolio.prior import EmpiricalPrior

    x, _ = daily_returns
    prior = EmpiricalPrior(covariance_estimator=SkLedoitWolf())
    ref = skopt.HierarchicalRiskParity(prior_estimator=prior).fit(x).weights_
    ours = hrp_weights(shrunk_covariance(x), corr=np.corrcoef(x.T))
    assert np.abs(ours - ref).max() < 1e-8


@pytest.mark.real_data
def test_real_window_keeps_33_coins(daily_returns):
    x, symbols = daily_returns
    assert x.shape == (1094, 33)
    assert "ARBUSD" not in symbols  # listed in 2023


# --- input checks -------------------------------------------------------------------


@pytest.mark.parametrize("fn", [risk_parity_weights, hrp_weights])
def test_bad_covariances_are_named(fn):
    with pytest.raises(ValueError, match=r"square N x N matrix, got shape \(2, 3\)"):
        fn(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"not symmetric: \[0, 1\]"):
        fn(np.array([[0.04, 0.01], [0.02, 0.09]]))
    with pytest.raises(ValueError, match=r"NaN or infinite entries \(first at \[1, 0\]\)"):
        fn(np.array([[0.04, 0.01], [np.nan, 0.09]]))
    with pytest.raises(ValueError, match=r"variance <= 0 on its diagonal \(asset 1"):
        fn(np.array([[0.04, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="not positive semi-definite: .* -0.5"):
        fn(np.array([[1.0, 1.5], [1.5, 1.0]]))


@pytest.mark.parametrize("fn", [risk_parity_weights, hrp_weights])
def test_psd_tolerance(fn):
    # Correlation 1 + eps: eigenvalue -eps. Accepted at -1e-10 (rounding), refused at -1e-6.
    almost = np.array([[1.0, 1.0 + 1e-10], [1.0 + 1e-10, 1.0]]) * 0.01
    np.testing.assert_allclose(fn(almost), [0.5, 0.5], rtol=1e-9)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        fn(np.array([[1.0, 1.0 + 1e-6], [1.0 + 1e-6, 1.0]]) * 0.01)


def test_bad_options_are_named():
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    with pytest.raises(ValueError, match=r"budgets must have shape \(2,\)"):
        risk_parity_weights(cov, np.ones(3))
    with pytest.raises(ValueError, match="budget 1 is 0.0"):
        risk_parity_weights(cov, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="linkage must be one of"):
        hrp_weights(cov, linkage="wards")
    with pytest.raises(ValueError, match="corr must have the shape"):
        hrp_weights(cov, corr=np.eye(3))
    with pytest.raises(RuntimeError, match="did not converge in 1 Newton steps"):
        # three assets: the start (1/vol) is not the answer, one step does not reach 1e-10
        risk_parity_weights(np.array([[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]]), max_iter=1)


# --- the fast leaf ordering is scipy's ----------------------------------------------


@pytest.mark.parametrize("linkage", ["single", "complete", "average", "weighted", "ward"])
@pytest.mark.parametrize("n", [3, 4, 7, 40, 150])
def test_leaf_order_is_scipys_optimal_leaf_ordering(linkage, n):
    """The same order as scipy's optimal_leaf_ordering, which is not always the order
    of least total distance (its read-out is node by node): the same choices, too."""
    for seed in range(3):
        x = factor_returns(120, n, seed=seed)
        corr = np.corrcoef(x.T)
        dist = np.sqrt(np.clip(0.5 * (1 - corr), 0, 1))
        np.fill_diagonal(dist, 0)
        condensed = ssd.squareform(dist, checks=False)
        tree = sch.linkage(condensed, method=linkage)
        ref = sch.leaves_list(sch.optimal_leaf_ordering(tree, condensed))
        np.testing.assert_array_equal(_optimal_leaf_order(tree, dist), ref)


def test_scipys_leaf_ordering_is_not_the_least_distance_one():
    """Why the read-out copies scipy's instead of back-tracking: on this 9-asset case
    (found by enumerating all 2^8 flips) scipy's order is longer than the best one."""
    rng = np.random.default_rng(1)
    corr = np.corrcoef(rng.standard_normal((50, 9)).T)
    dist = np.sqrt(np.clip(0.5 * (1 - corr), 0, 1))
    np.fill_diagonal(dist, 0)
    condensed = ssd.squareform(dist, checks=False)
    tree = sch.linkage(condensed, method="ward")

    def length(order):
        return dist[order[:-1], order[1:]].sum()

    best = np.inf
    for flips in itertools.product([False, True], repeat=8):
        flipped = tree.copy()
        sel = np.array(flips)
        flipped[sel, 0], flipped[sel, 1] = tree[sel, 1], tree[sel, 0]
        best = min(best, length(sch.leaves_list(flipped)))
    scipy_order = sch.leaves_list(sch.optimal_leaf_ordering(tree, condensed))
    assert length(scipy_order) > best + 0.05
    np.testing.assert_array_equal(_optimal_leaf_order(tree, dist), scipy_order)
