"""Concentration of a portfolio: HHI, effective number of assets and of bets, clusters.

Weights are fractions of account equity (DESIGN.md): a Series (one portfolio, indexed by
symbol) or a DataFrame (timestamp x symbol, one portfolio per row). NaN weights count as
0. Shorts are allowed.

- ``hhi`` and ``effective_number`` measure concentration of *capital*: they use each
  position's share of gross exposure ``|w_i| / sum_j |w_j|``, so cash and leverage do not
  change them (equal weights give 1/N whatever the gross exposure).
- ``effective_number_of_bets`` measures concentration of *risk*: how many uncorrelated
  sources of risk the portfolio really holds, from the covariance matrix.
- ``cluster_exposure`` and ``largest_cluster_exposure`` sum weights by cluster label (see
  ``trimtab.signals.correlation.correlation_clusters``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "cluster_exposure",
    "effective_number",
    "effective_number_of_bets",
    "hhi",
    "largest_cluster_exposure",
    "minimum_torsion",
    "risk_contributions_pca",
]


def _weights_array(weights: pd.Series | pd.DataFrame) -> np.ndarray:
    w = weights.to_numpy(dtype=float, na_value=np.nan)
    return np.where(np.isfinite(w), w, 0.0)


def _wrap(values: np.ndarray, weights: pd.Series | pd.DataFrame, name: str):
    if isinstance(weights, pd.DataFrame):
        return pd.Series(values, index=weights.index, name=name)
    return float(values)


def hhi(weights: pd.Series | pd.DataFrame) -> float | pd.Series:
    """Herfindahl-Hirschman index of the gross-exposure shares, in [1/N, 1].

    ``HHI = sum_i s_i^2`` with ``s_i = |w_i| / sum_j |w_j|``. Equal weights over N
    assets give 1/N, a single position 1. NaN when the portfolio holds nothing. A float
    for a Series of weights, a Series per row for a DataFrame.
    """
    w = np.abs(_weights_array(weights))
    gross = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = w / (gross[..., None] if w.ndim == 2 else gross)
        h = np.where(gross > 0, (s * s).sum(axis=-1), np.nan)
    return _wrap(h, weights, "hhi")


def effective_number(weights: pd.Series | pd.DataFrame) -> float | pd.Series:
    """Effective number of assets, ``1 / HHI`` (N for equal weights, 1 for one asset)."""
    h = hhi(weights)
    if isinstance(h, pd.Series):
        return (1.0 / h).rename("effective_number")
    return 1.0 / h if np.isfinite(h) else float("nan")


# --------------------------------------------------------------------------- bets


def _sym_sqrt(a: np.ndarray, inverse: bool = False) -> np.ndarray:
    vals, vecs = np.linalg.eigh(0.5 * (a + a.T))
    vals = np.clip(vals, 0.0, None)
    if inverse:
        if vals.min() <= 0:
            raise np.linalg.LinAlgError("matrix is singular")
        vals = 1.0 / vals
    return (vecs * np.sqrt(vals)) @ vecs.T


def minimum_torsion(cov: np.ndarray, tol: float = 1e-10, max_iter: int = 10_000) -> np.ndarray:
    """Minimum-torsion matrix ``t`` (Meucci, Santangelo and Deguest 2015).

    ``F = t R`` are the uncorrelated factors closest (in tracking error) to the assets
    themselves. Exact algorithm of the paper's appendix, with symmetric square roots.
    ``cov`` must be positive definite; raises ``numpy.linalg.LinAlgError`` otherwise.
    """
    cov = np.asarray(cov, dtype=float)
    sigma = np.sqrt(np.diag(cov))
    if np.any(sigma <= 0):
        raise np.linalg.LinAlgError("a variance is zero: minimum torsion needs a PD covariance")
    corr = cov / np.outer(sigma, sigma)
    c = _sym_sqrt(corr)
    c_inv = _sym_sqrt(corr, inverse=True)
    n = len(sigma)
    d = np.ones(n)
    prev = np.inf
    pi = c
    for _ in range(max_iter):
        u = d[:, None] * corr * d[None, :]
        q = _sym_sqrt(u, inverse=True) @ (d[:, None] * c)
        d = np.einsum("ij,ji->i", q, c)
        pi = d[:, None] * q
        f = np.linalg.norm(c - pi)
        if np.isfinite(prev) and abs(f - prev) <= tol * max(f, 1e-300) * n:
            break
        prev = f
    x = pi @ c_inv
    return sigma[:, None] * x / sigma[None, :]


def risk_contributions_pca(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Shares of portfolio variance carried by each principal component, sum 1.

    ``p_k = lambda_k (e_k' w)^2 / (w' cov w)`` for eigenpairs ``(lambda_k, e_k)`` of
    ``cov`` (Meucci 2009). Non-negative; NaN if the portfolio variance is zero.
    """
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    vals = np.clip(vals, 0.0, None)
    var = float(w @ cov @ w)
    if not var > 0:
        return np.full(len(w), np.nan)
    return vals * (vecs.T @ w) ** 2 / var


def _bets_one(w: np.ndarray, cov: np.ndarray, method: str, measure: str) -> float:
    held = w != 0
    if not held.any():
        return float("nan")
    w, cov = w[held], cov[np.ix_(held, held)]
    if not np.all(np.isfinite(cov)):
        return float("nan")
    if method == "pca":
        p = risk_contributions_pca(w, cov)
    elif method == "minimum_torsion":
        try:
            t = minimum_torsion(cov)
        except np.linalg.LinAlgError:
            return float("nan")
        var = float(w @ cov @ w)
        if not var > 0:
            return float("nan")
        p = np.linalg.solve(t.T, w) * (t @ cov @ w) / var
    else:
        raise ValueError(f"method must be 'pca' or 'minimum_torsion', got {method!r}")
    if not np.all(np.isfinite(p)):
        return float("nan")
    p = np.clip(p, 0.0, None)
    p = p / p.sum()
    if measure == "entropy":
        nz = p[p > 0]
        return float(np.exp(-(nz * np.log(nz)).sum()))
    if measure == "inverse_hhi":
        return float(1.0 / (p * p).sum())
    raise ValueError(f"measure must be 'entropy' or 'inverse_hhi', got {measure!r}")


def effective_number_of_bets(
    weights: pd.Series | pd.DataFrame,
    cov: pd.DataFrame | np.ndarray,
    method: Literal["pca", "minimum_torsion"] = "pca",
    measure: Literal["entropy", "inverse_hhi"] = "entropy",
) -> float | pd.Series:
    """Effective number of independent bets, in [1, N].

    The portfolio's variance is split into the shares ``p_k`` carried by uncorrelated
    factors, then ``ENB = exp(-sum p_k ln p_k)`` (Meucci 2009, ``measure="entropy"``) or
    ``1 / sum p_k^2`` (``measure="inverse_hhi"``). Factors:

    - ``method="pca"`` (default): principal components of ``cov`` (Meucci 2009). Robust
      to singular matrices: perfectly correlated assets give exactly 1 bet. With equal
      eigenvalues the components are not unique, so neither is the result.
    - ``method="minimum_torsion"``: the uncorrelated factors closest to the assets
      (Meucci, Santangelo and Deguest 2015); unique and asset-like, so uncorrelated
      assets give the entropy of their own risk contributions. Needs ``cov`` positive
      definite over the held assets (NaN otherwise). Because its factors track the
      assets, near-duplicate assets still count as separate bets (two assets with
      correlation 0.999999 give 2, where PCA gives ~1): use it to attribute risk to
      positions, PCA to count truly independent sources.

    ``cov`` is a covariance (or correlation) matrix: a symbol x symbol DataFrame, or for
    a DataFrame of weights also an array (T, N, N) aligned to its rows and columns (e.g.
    ``trimtab.signals.correlation.ewma_covariance``). Only held assets (w != 0) enter;
    NaN if a held asset's covariance is unknown. Scale-free in the weights.
    """
    if isinstance(weights, pd.Series):
        if isinstance(cov, pd.DataFrame):
            cov_a = cov.reindex(index=weights.index, columns=weights.index).to_numpy(float)
        else:
            cov_a = np.asarray(cov, dtype=float)
        return _bets_one(_weights_array(weights), cov_a, method, measure)
    w = _weights_array(weights)
    if isinstance(cov, pd.DataFrame):
        c = cov.reindex(index=weights.columns, columns=weights.columns).to_numpy(float)
        cube = np.broadcast_to(c, (len(w), *c.shape))
    else:
        cube = np.asarray(cov, dtype=float)
        if cube.ndim == 2:
            cube = np.broadcast_to(cube, (len(w), *cube.shape))
        if cube.shape != (len(w), w.shape[1], w.shape[1]):
            raise ValueError(
                f"cov has shape {cube.shape}; expected {(len(w), w.shape[1], w.shape[1])}"
            )
    out = np.array([_bets_one(w[t], cube[t], method, measure) for t in range(len(w))])
    return pd.Series(out, index=weights.index, name="effective_bets")


# --------------------------------------------------------------------------- clusters


def _cluster_keys(labels: pd.Series, symbols: pd.Index) -> pd.Series:
    lab = labels.reindex(symbols)
    keys = lab.astype(object).where(lab.notna(), None)
    # An asset without a label is a cluster of its own, named after it.
    return pd.Series(
        [k if k is not None else f"unclustered:{s}" for s, k in zip(symbols, keys, strict=True)],
        index=symbols,
        dtype=object,
    )


def cluster_exposure(
    weights: pd.Series | pd.DataFrame, labels: pd.Series, net: bool = False
) -> pd.Series | pd.DataFrame:
    """Exposure per cluster, as a fraction of equity.

    Gross (default): ``sum |w_i|`` over the cluster's assets; ``net=True``: ``|sum w_i|``
    (a long and a short in one cluster offset). ``labels`` maps symbol -> cluster label;
    an asset with no label (missing or NA) is its own cluster ``"unclustered:<symbol>"``.
    A Series per cluster for a Series of weights; a frame (timestamp x cluster) for a
    frame of weights.
    """
    symbols = weights.index if isinstance(weights, pd.Series) else weights.columns
    keys = _cluster_keys(labels, symbols)
    w = _weights_array(weights)
    codes, uniques = pd.factorize(keys, sort=False)
    onehot = np.zeros((len(symbols), len(uniques)))
    onehot[np.arange(len(symbols)), codes] = 1.0
    vals = np.abs(w @ onehot) if net else np.abs(w) @ onehot
    if isinstance(weights, pd.Series):
        return pd.Series(vals, index=pd.Index(uniques, name="cluster"), name="exposure")
    return pd.DataFrame(vals, index=weights.index, columns=pd.Index(uniques, name="cluster"))


def largest_cluster_exposure(
    weights: pd.Series | pd.DataFrame, labels: pd.Series, net: bool = False
) -> float | pd.Series:
    """Largest ``cluster_exposure`` (fraction of equity); per row for a frame of weights.

    ``cluster_exposure(...).idxmax()`` names that cluster. 0 for an empty portfolio.
    """
    exp = cluster_exposure(weights, labels, net=net)
    if isinstance(exp, pd.DataFrame):
        return exp.max(axis=1).rename("largest_cluster_exposure")
    return float(exp.max()) if len(exp) else 0.0
