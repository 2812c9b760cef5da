"""Concentration measures on hand examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.signals.concentration import (
    cluster_exposure,
    effective_number,
    effective_number_of_bets,
    hhi,
    largest_cluster_exposure,
    minimum_torsion,
    risk_contributions_pca,
)


def test_hhi_hand_examples():
    n = 8
    eq = pd.Series(1.0 / n, index=[f"A{i}" for i in range(n)])
    assert hhi(eq) == pytest.approx(1 / n)
    assert effective_number(eq) == pytest.approx(n)
    # Cash and leverage do not change concentration: shares of gross exposure.
    assert hhi(eq * 0.3) == pytest.approx(1 / n)
    assert hhi(pd.Series({"A": 0.5, "B": 0.0, "C": np.nan})) == pytest.approx(1.0)
    # 0.6 long, 0.2 short, 0.2 long: shares 0.6, 0.2, 0.2.
    w = pd.Series({"A": 0.6, "B": -0.2, "C": 0.2})
    assert hhi(w) == pytest.approx(0.36 + 0.04 + 0.04)
    assert effective_number(w) == pytest.approx(1 / 0.44)
    assert np.isnan(hhi(pd.Series({"A": 0.0})))


def test_hhi_per_row_of_a_frame():
    w = pd.DataFrame(
        [[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, np.nan, 0.0], [0, 0, 0, 0]],
        columns=list("abcd"),
        index=pd.date_range("2022-01-01", periods=4, tz="UTC"),
    )
    h = hhi(w)
    assert isinstance(h, pd.Series) and h.index.equals(w.index)
    np.testing.assert_allclose(h.to_numpy(), [0.25, 1.0, 0.5, np.nan])
    np.testing.assert_allclose(effective_number(w).to_numpy(), [4, 1, 2, np.nan])


def test_effective_bets_perfect_correlation_is_one():
    sig = np.array([0.5, 0.8, 0.3])
    cov = np.outer(sig, sig)  # correlation 1
    w = pd.Series([0.2, 0.5, 0.3], index=list("abc"))
    assert effective_number_of_bets(
        w, pd.DataFrame(cov, index=w.index, columns=w.index)
    ) == pytest.approx(1.0)
    assert effective_number_of_bets(w, cov, measure="inverse_hhi") == pytest.approx(1.0)


def test_effective_bets_uncorrelated_assets():
    n = 5
    w = pd.Series(1.0 / n, index=list("abcde"))
    cov = np.eye(n) * 0.04
    for method in ("pca", "minimum_torsion"):
        assert effective_number_of_bets(w, cov, method=method) == pytest.approx(n)
    # Unequal risk: contributions p_i = w_i^2 s_i^2 / sum; entropy by hand.
    sig = np.array([0.1, 0.2, 0.4])
    wv = pd.Series([0.5, 0.3, 0.2])
    p = (wv.to_numpy() * sig) ** 2
    p /= p.sum()
    cov = np.diag(sig**2)
    want = np.exp(-(p * np.log(p)).sum())
    assert effective_number_of_bets(wv, cov, method="minimum_torsion") == pytest.approx(want)
    assert effective_number_of_bets(wv, cov, method="pca") == pytest.approx(want)
    assert effective_number_of_bets(wv, cov, measure="inverse_hhi") == pytest.approx(
        1 / (p**2).sum()
    )


def test_two_correlated_assets_between_one_and_two():
    cov = np.array([[1.0, 0.6], [0.6, 1.0]])
    w = pd.Series([0.5, 0.5])
    # PCA: eigenvalues 1.6 and 0.4; equal weights load only on the first -> 1 bet.
    assert effective_number_of_bets(w, cov) == pytest.approx(1.0)
    p = risk_contributions_pca(np.array([0.5, 0.5]), cov)
    np.testing.assert_allclose(np.sort(p), [0.0, 1.0], atol=1e-12)
    # Minimum torsion splits the risk between two asset-like factors: 2 bets by symmetry.
    assert effective_number_of_bets(w, cov, method="minimum_torsion") == pytest.approx(2.0)
    w2 = pd.Series([0.8, 0.2])
    enb = effective_number_of_bets(w2, cov, method="minimum_torsion")
    assert 1.0 < enb < 2.0


def test_minimum_torsion_factors_are_uncorrelated():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T + 0.5 * np.eye(5)
    t = minimum_torsion(cov)
    fc = t @ cov @ t.T
    np.testing.assert_allclose(fc - np.diag(np.diag(fc)), 0.0, atol=1e-8)
    w = rng.uniform(0.05, 0.3, 5)
    p = np.linalg.solve(t.T, w) * (t @ cov @ w) / (w @ cov @ w)
    assert p.sum() == pytest.approx(1.0) and (p > -1e-12).all()


def test_effective_bets_per_row_with_a_covariance_cube():
    cols = list("abc")
    idx = pd.date_range("2022-01-01", periods=3, tz="UTC")
    w = pd.DataFrame([[1 / 3] * 3, [1 / 3] * 3, [1.0, 0.0, 0.0]], index=idx, columns=cols)
    cube = np.stack([np.eye(3), np.ones((3, 3)), np.full((3, 3), np.nan)])
    cube[2, 0, 0] = 1.0  # only the held asset's variance is needed
    got = effective_number_of_bets(w, cube)
    np.testing.assert_allclose(got.to_numpy(), [3.0, 1.0, 1.0])
    cube[2, 0, 0] = np.nan
    assert np.isnan(effective_number_of_bets(w, cube).iloc[2])


def test_cluster_exposure_hand_example():
    w = pd.Series({"BTC": 0.3, "ETH": 0.2, "SOL": -0.1, "DOGE": 0.15, "XMR": 0.05})
    labels = pd.Series({"BTC": 1, "ETH": 1, "SOL": 1, "DOGE": 2}, dtype="Int64")  # XMR unlabelled
    gross = cluster_exposure(w, labels)
    assert gross[1] == pytest.approx(0.6) and gross[2] == pytest.approx(0.15)
    assert gross["unclustered:XMR"] == pytest.approx(0.05)
    net = cluster_exposure(w, labels, net=True)
    assert net[1] == pytest.approx(0.4)
    assert largest_cluster_exposure(w, labels) == pytest.approx(0.6)
    assert largest_cluster_exposure(w, labels, net=True) == pytest.approx(0.4)
    frame = pd.DataFrame([w, w * 0.5, w * 0])
    got = largest_cluster_exposure(frame, labels)
    np.testing.assert_allclose(got.to_numpy(), [0.6, 0.3, 0.0])
