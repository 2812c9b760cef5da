"""Causal features over whole panels, computed once per run.

Every feature at bar t uses bars up to and including t only (trailing windows), so
indexing row t inside the step loop cannot see the future.
"""

from __future__ import annotations

import numpy as np

from trimtab.data.panel import Panel

VOL_WINDOW = 30


def trailing_volatility(close: np.ndarray, window: int, periods_per_year: float) -> np.ndarray:
    """Annualised std of simple close-to-close returns over the last ``window`` bars.

    NaN until ``window`` returns exist. Uses ddof=1.
    """
    returns = np.full_like(close, np.nan, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        returns[1:] = close[1:] / close[:-1] - 1.0
    out = np.full_like(returns, np.nan)
    if len(returns) <= window:
        return out
    # Rolling sums give O(T * N) rather than O(T * N * window).
    valid = np.isfinite(returns)
    r = np.where(valid, returns, 0.0)
    c1 = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r]), axis=0)
    c2 = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), r * r]), axis=0)
    cn = np.cumsum(np.vstack([np.zeros((1, r.shape[1])), valid]), axis=0)
    s1 = c1[window:] - c1[:-window]
    s2 = c2[window:] - c2[:-window]
    n = cn[window:] - cn[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * s1 / n) / (n - 1)
    var = np.where(n == window, np.maximum(var, 0.0), np.nan)
    out[window - 1 :] = np.sqrt(var * periods_per_year)[: len(out) - window + 1]
    return out


def compute_features(panel: Panel) -> dict[str, np.ndarray]:
    """The features every run gets, as (time x symbol) arrays aligned to the panel."""
    close = panel.close.to_numpy(float)
    return {
        f"volatility_{VOL_WINDOW}": trailing_volatility(close, VOL_WINDOW, panel.periods_per_year),
    }
