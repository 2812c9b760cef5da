"""Covariance and correlation estimators, one home for every caller (the portfolio
score, the review, sizing, VaR).

Conventions: ``returns`` is a DataFrame of simple returns (rows: bars, oldest first;
columns: symbols); NaN is a missing return (not listed yet, or no bar). Windows are in
rows of the frame given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trimtab.signals.correlation import ledoit_wolf_shrinkage

__all__ = ["pairwise_correlation", "sample_covariance", "shrunk_covariance"]


def pairwise_correlation(returns: pd.DataFrame, window: int) -> pd.DataFrame:
    """Correlation over the last ``window`` rows, pairwise; unknown pairs take the mean
    of the known ones (a neutral guess for an asset with a short history)."""
    tail = returns.iloc[-window:]
    n = tail.shape[1]
    if n == 1:
        return pd.DataFrame([[1.0]], index=tail.columns, columns=tail.columns)
    c = tail.corr(min_periods=max(5, window // 2)).to_numpy(dtype=float)
    off = ~np.eye(n, dtype=bool)
    known = c[off][np.isfinite(c[off])]
    fill = float(known.mean()) if known.size else 0.0
    c = np.where(np.isfinite(c), c, fill)
    np.fill_diagonal(c, 1.0)
    return pd.DataFrame(np.clip(c, -1.0, 1.0), index=tail.columns, columns=tail.columns)


def shrunk_covariance(returns: pd.DataFrame, window: int, fallback_vol: pd.Series) -> pd.DataFrame:
    """Ledoit-Wolf shrunk correlation of the last ``window`` returns, scaled by each
    asset's standard deviation over them (the EWMA daily vol where too short)."""
    tail = returns.iloc[-window:]
    raw = pairwise_correlation(returns, window).to_numpy()
    n = raw.shape[0]
    x = tail.to_numpy(dtype=float)
    full = np.isfinite(x).all(axis=0)
    full[full] &= np.std(x[:, full], axis=0) > 0
    if full.sum() >= 2:
        z = x[:, full]
        z = (z - z.mean(axis=0)) / z.std(axis=0)
        d = ledoit_wolf_shrinkage(z)
    else:
        d = 0.1
    c = (1.0 - d) * raw + d * np.eye(n)
    vals, vecs = np.linalg.eigh(0.5 * (c + c.T))
    c = (vecs * np.clip(vals, 1e-6, None)) @ vecs.T
    s = np.sqrt(np.diag(c))
    c = c / np.outer(s, s)
    sd = tail.std(ddof=1).to_numpy(dtype=float)
    fb = fallback_vol.reindex(tail.columns).to_numpy(dtype=float)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, fb)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 0.05)
    return pd.DataFrame(c * np.outer(sd, sd), index=tail.columns, columns=tail.columns)


def sample_covariance(returns: np.ndarray) -> np.ndarray:
    """Sample covariance (ddof=1) of a (bars x assets) window of returns whose missing
    returns are already 0: what a rebalancing rule weighs drift with. Zeros under three
    bars (no estimate worth trading on); always 2-D (one asset gives 1 x 1). The same
    numbers as ``np.cov(returns, rowvar=False)``."""
    n = returns.shape[1]
    if len(returns) <= 2:
        return np.zeros((n, n))
    return np.atleast_2d(np.cov(returns, rowvar=False))
