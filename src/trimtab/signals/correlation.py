"""Cross-asset correlation signals: EWMA and shrunk correlation, average correlation,
absorption ratio, correlation shifts and clusters.

Inputs are panels of **returns** (DataFrame, timestamp x symbol, simple returns unless
the caller passes log returns; the estimators do not care which). NaN means "no return
for this asset at this bar" (not listed yet, delisted, or a missing value).

Conventions shared by every rolling (window) function here:

- Causal: the value at bar t uses returns at bars ``t - window + 1 .. t`` only.
- An asset *participates* in the window ending at t only if all ``window`` of its
  returns there are finite and their variance is not zero (a constant series has no
  correlation). Correlations are taken among participants only; a non-participant gets
  NaN. This is exactly what ``df.rolling(window).corr()`` does with its default
  ``min_periods=window`` (a pair needs ``window`` joint observations), so the fast
  kernels here agree with pandas to rounding error (the tests check it).
- "Average correlation of asset i" at t is the mean of ``rho_ij`` over the other
  participants j != i; NaN when fewer than two assets participate.

EWMA estimators (RiskMetrics) handle NaN pairwise instead, see ``ewma_covariance``.

Performance: the average-correlation kernel never forms the N x N correlation matrices.
With x standardised inside each window, ``sum_j rho_ij = <z_i, sum_j z_j>``, i.e. the
correlation of each asset with the equal-risk portfolio of the participants. Because the
standardisation differs per window, the kernel evaluates that identity with two matrix
products per block of window ends (``O(T * N * (window + block))`` work, all in BLAS)
instead of ``O(T * N^2 * window)``; 2,000 assets x 1,000 bars take well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "CorrelationShift",
    "absorption_ratio",
    "average_correlation",
    "average_pairwise_correlation",
    "cluster_labels",
    "correlation_clusters",
    "correlation_distance",
    "correlation_shift",
    "correlation_shift_scan",
    "ewma_correlation",
    "ewma_correlation_at",
    "ewma_covariance",
    "ledoit_wolf_correlation",
    "ledoit_wolf_shrinkage",
    "rolling_zscore",
    "window_correlation",
]

#: Relative tolerance under which a window's sum of squared deviations counts as zero.
_ZERO_VAR_RTOL = 1e-10


# --------------------------------------------------------------------------- helpers


def _as_array(returns: pd.DataFrame | np.ndarray) -> np.ndarray:
    x = (
        returns.to_numpy(dtype=float, na_value=np.nan)
        if isinstance(returns, pd.DataFrame)
        else returns
    )
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"returns must be 2-D (time x asset), got shape {x.shape}")
    return x


def _check_window(window: int, name: str = "window") -> None:
    if int(window) != window or window < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {window!r}")


def _rolling_sum(a: np.ndarray, window: int) -> np.ndarray:
    """Trailing sums over ``window`` rows (rows before the first full window: NaN)."""
    c = np.cumsum(a, axis=0, dtype=float)
    out = np.full(a.shape, np.nan)
    if len(a) >= window:
        out[window - 1] = c[window - 1]
        out[window:] = c[window:] - c[:-window]
    return out


def _first_finite(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each column's first finite value (0 for all-NaN columns), shape (1, N)."""
    first = np.argmax(valid, axis=0)
    v = x[first, np.arange(x.shape[1])]
    return np.where(valid.any(axis=0) & np.isfinite(v), v, 0.0)[None, :]


def rolling_zscore(
    values: pd.DataFrame | pd.Series, window: int, min_periods: int | None = None
) -> pd.DataFrame | pd.Series:
    """Trailing z-score ``(x_t - mean) / std`` over the last ``window`` rows incl. t.

    Mean and std (ddof=1) of the finite values in the window; NaN where x_t is NaN, where
    fewer than ``min_periods`` (default ``window``) values are finite, or where the std
    is zero. Same as ``(x - x.rolling(w, min_periods).mean()) / x.rolling(...).std()``
    but vectorised over columns (pandas loops over them).
    """
    mp = window if min_periods is None else int(min_periods)
    if window < 2 or mp < 2:
        raise ValueError("a z-score needs window >= 2 and min_periods >= 2")
    is_series = isinstance(values, pd.Series)
    x = values.to_numpy(dtype=float, na_value=np.nan)
    x2d = x[:, None] if is_series else x
    valid = np.isfinite(x2d)
    xc = np.where(valid, x2d - _first_finite(x2d, valid), 0.0)
    n = _rolling_sum_partial(valid.astype(float), window)
    s1 = _rolling_sum_partial(xc, window)
    s2 = _rolling_sum_partial(xc * xc, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = (s2 - s1 * mean) / (n - 1.0)
        # Sums of squares that are zero up to rounding mean a constant window.
        flat = var * (n - 1.0) <= 1e-12 * s2
        z = (xc - mean) / np.sqrt(np.where(flat, np.nan, var))
    z = np.where(valid & (n >= mp), z, np.nan)
    if is_series:
        return pd.Series(z[:, 0], index=values.index, name=values.name)
    return pd.DataFrame(z, index=values.index, columns=values.columns)


def _rolling_sum_partial(a: np.ndarray, window: int) -> np.ndarray:
    """Trailing sums over up to ``window`` rows (shorter at the start)."""
    c = np.cumsum(a, axis=0, dtype=float)
    out = c.copy()
    out[window:] -= c[:-window]
    return out


def _row_loc(index: pd.Index, at: Any) -> int:
    """Position of the last row with timestamp <= ``at`` (``None``: the last row)."""
    if at is None:
        return len(index) - 1
    if isinstance(at, (int, np.integer)) and not isinstance(index, pd.DatetimeIndex):
        return int(at)
    ts = pd.Timestamp(at)
    if isinstance(index, pd.DatetimeIndex) and index.tz is not None and ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    pos = int(index.searchsorted(ts, side="right")) - 1
    if pos < 0:
        raise KeyError(f"{at!r} is before the first bar ({index[0]})")
    return pos


def _window_stats(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shifted zero-filled returns, window means and inverse root sum of squares.

    Returns ``(xc, mean, u)`` where ``xc`` is ``x`` minus each column's first finite value with
    NaN set to 0, ``mean`` the trailing window mean of ``xc`` and ``u = 1/sqrt(sum of
    squared deviations)`` over the window for participants, 0 for everybody else.
    """
    valid = np.isfinite(x)
    # Removing a constant per column changes no correlation but conditions the sums; the
    # first finite value is used (not the mean) so that no later bar influences t.
    xc = np.where(valid, x - _first_finite(x, valid), 0.0)
    cnt = _rolling_sum(valid.astype(float), window)
    s1 = _rolling_sum(xc, window)
    s2 = _rolling_sum(xc * xc, window)
    mean = s1 / window
    ssd = s2 - s1 * mean
    with np.errstate(invalid="ignore"):
        ok = (cnt == window) & (ssd > _ZERO_VAR_RTOL * s2) & (ssd > 0)
        u = np.where(ok, 1.0 / np.sqrt(np.where(ok, ssd, 1.0)), 0.0)
    return xc, np.where(ok, mean, 0.0), u


def _corr_row_sums(
    x: np.ndarray, window: int, start: int = 0, block: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``S[t, i] = sum_j rho_ij(t)`` over participants j (self included) and ``u``.

    Only window ends ``t >= start`` are computed (earlier rows are NaN). ``S`` is NaN for
    non-participants. See the module docstring for the identity used.
    """
    T, N = x.shape
    xc, mean, u = _window_stats(x, window)
    S = np.full((T, N), np.nan)
    first = max(start, window - 1)
    if first >= T:
        return S, u
    if block is None:
        # About one window per block (cost per row ~ window + block), split evenly.
        target = int(min(max(window, 64), 512))
        nblocks = -(-(T - first) // target)
        block = -(-(T - first) // nblocks)
    # m . u per window end (scalar per row).
    mu = np.einsum("tn,tn->t", mean, u)
    for a in range(first, T, block):
        b = min(a + block, T)
        lo = a - window + 1
        xb = xc[lo:b]  # (L, N): every return any window end in [a, b) needs
        ub = u[a:b]  # (B, N)
        A = xb @ ub.T  # A[l, k] = x_(lo+l) . u(t_k)
        tau = np.arange(lo, b)[:, None]
        ends = np.arange(a, b)[None, :]
        A *= (tau <= ends) & (tau > ends - window)
        G = (xb.T @ A).T  # (B, N): sum over the window of x_tau * (x_tau . u)
        Sb = ub * (G - window * mean[a:b] * mu[a:b, None])
        S[a:b] = np.where(ub > 0, Sb, np.nan)
    return S, u


def _average_from_sums(S: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-asset average correlation, market average and participant count per row."""
    n = (u > 0).sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_asset = (S - 1.0) / (n[:, None] - 1.0)
        market = (np.nansum(S, axis=1) - n) / (n * (n - 1.0))
    per_asset = np.where(n[:, None] >= 2, per_asset, np.nan)
    market = np.where(n >= 2, market, np.nan)
    # Rounding can push a sum of correlations a hair outside [-1, 1].
    return np.clip(per_asset, -1.0, 1.0), np.clip(market, -1.0, 1.0), n


def _frame(values: np.ndarray, like: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
    if isinstance(like, pd.DataFrame):
        return pd.DataFrame(values, index=like.index, columns=like.columns)
    return values


def _series(
    values: np.ndarray, like: pd.DataFrame | np.ndarray, name: str
) -> pd.Series | np.ndarray:
    if isinstance(like, pd.DataFrame):
        return pd.Series(values, index=like.index, name=name)
    return values


# --------------------------------------------------------------------------- averages


def average_correlation(returns: pd.DataFrame, window: int = 30) -> pd.DataFrame:
    """Each asset's average correlation with the other assets over a trailing window.

    Value at (t, i): mean over participants j != i of the Pearson correlation of returns
    over bars ``t - window + 1 .. t`` (participation rule in the module docstring).
    Unitless, in [-1, 1]; NaN for non-participants and while fewer than two assets
    participate. Equal to averaging the off-diagonal of ``returns.rolling(window).corr()``
    with NaN pairs skipped, but computed without the N x N matrices.
    """
    _check_window(window)
    x = _as_array(returns)
    S, u = _corr_row_sums(x, window)
    per_asset, _, _ = _average_from_sums(S, u)
    return _frame(per_asset, returns)


def average_pairwise_correlation(returns: pd.DataFrame, window: int = 30) -> pd.Series:
    """Mean of all pairwise correlations among participating assets, per bar.

    Same window and participation rules as ``average_correlation``; equal to the mean of
    its per-asset values at each bar. Unitless in [-1, 1]; NaN with fewer than 2 assets.
    """
    _check_window(window)
    x = _as_array(returns)
    S, u = _corr_row_sums(x, window)
    _, market, _ = _average_from_sums(S, u)
    return _series(market, returns, f"avg_corr_{window}")


def window_correlation(returns: pd.DataFrame, window: int = 90, at: Any = None) -> pd.DataFrame:
    """Pearson correlation matrix of the ``window`` bars ending at ``at`` (default: last).

    ``at`` is a timestamp (the last bar stamped <= ``at`` is used) or ``None``. Only
    assets that participate (full window, non-zero variance) are kept, so the result is
    square over those symbols with no NaN.
    """
    _check_window(window)
    pos = _row_loc(returns.index, at)
    if pos + 1 < window:
        raise ValueError(f"only {pos + 1} bars up to {at!r}; the window needs {window}")
    block = returns.iloc[pos - window + 1 : pos + 1]
    x = block.to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(x).all(axis=0)
    keep[keep] = np.std(x[:, keep], axis=0) > 0
    x = x[:, keep]
    cols = block.columns[keep]
    if x.shape[1] == 0:
        return pd.DataFrame(index=cols, columns=cols, dtype=float)
    corr = np.atleast_2d(np.corrcoef(x, rowvar=False))
    np.fill_diagonal(corr, 1.0)
    return pd.DataFrame(np.clip(corr, -1.0, 1.0), index=cols, columns=cols)


# --------------------------------------------------------------------------- shifts


@dataclass(frozen=True)
class CorrelationShift:
    """Short- vs long-window average correlation and its z-score.

    Per asset (timestamp x symbol frames): ``short`` and ``long`` average correlations
    with the other assets, ``shift = short - long`` and ``z``, the shift standardised
    against its own trailing history. ``market_*`` are the same for the average pairwise
    correlation of all participants (Series per bar). All unitless.
    """

    short: pd.DataFrame
    long: pd.DataFrame
    shift: pd.DataFrame
    z: pd.DataFrame
    market_short: pd.Series
    market_long: pd.Series
    market_shift: pd.Series
    market_z: pd.Series


def _default_z_min(z_window: int) -> int:
    return max(2, min(z_window, 60))


def correlation_shift(
    returns: pd.DataFrame,
    short: int = 30,
    long: int = 180,
    z_window: int = 365,
    z_min_periods: int | None = None,
    *,
    start: int = 0,
) -> CorrelationShift:
    """Correlation-shift signals: short minus long average correlation, and its z-score.

    ``short``/``long`` are window lengths in bars for ``average_correlation``;
    ``shift(t) = avg_short(t) - avg_long(t)`` (positive: assets move together more than
    usual). ``z(t) = (shift(t) - mean) / std`` with mean and std (ddof=1) over the last
    ``z_window`` bars of ``shift`` including t, needing ``z_min_periods`` finite values
    (default ``min(z_window, 60)``); NaN otherwise or when that std is zero.

    ``start`` (row position) skips computing averages before it, for callers that need
    only recent rows; rows before ``start`` are NaN.
    """
    _check_window(short, "short")
    _check_window(long, "long")
    if short >= long:
        raise ValueError(f"short ({short}) must be less than long ({long})")
    z_min = _default_z_min(z_window) if z_min_periods is None else z_min_periods
    x = _as_array(returns)
    S_s, u_s = _corr_row_sums(x, short, start=start)
    S_l, u_l = _corr_row_sums(x, long, start=start)
    a_s, m_s, _ = _average_from_sums(S_s, u_s)
    a_l, m_l, _ = _average_from_sums(S_l, u_l)
    idx, cols = returns.index, returns.columns
    short_f = pd.DataFrame(a_s, index=idx, columns=cols)
    long_f = pd.DataFrame(a_l, index=idx, columns=cols)
    shift_f = short_f - long_f
    ms = pd.Series(m_s, index=idx, name="market_short")
    ml = pd.Series(m_l, index=idx, name="market_long")
    mshift = (ms - ml).rename("market_shift")
    return CorrelationShift(
        short=short_f,
        long=long_f,
        shift=shift_f,
        z=rolling_zscore(shift_f, z_window, z_min),
        market_short=ms,
        market_long=ml,
        market_shift=mshift,
        market_z=rolling_zscore(mshift, z_window, z_min).rename("market_z"),
    )


def correlation_shift_scan(
    returns: pd.DataFrame,
    short: int = 30,
    long: int = 180,
    z_window: int = 365,
    z_min_periods: int | None = None,
) -> pd.DataFrame:
    """Latest correlation shift of every asset, most alarming first.

    Returns one row per symbol, columns ``avg_corr_short``, ``avg_corr_long``, ``shift``
    and ``shift_z`` (see ``correlation_shift``) at the last bar of ``returns``, sorted by
    ``shift_z`` descending (assets becoming more correlated with the rest first), NaN
    (not enough history, or not listed at the last bar) last. The timestamp of the values
    is in ``attrs["asof"]``.

    Only the last ``z_window + long - 1`` bars can affect these values, so only those are
    computed: a scan of 2,000 assets x 1,000 bars takes a fraction of a second.
    """
    need = z_window + long - 1
    tail = returns.iloc[-need:] if len(returns) > need else returns
    # Before row long - 1 the shift is NaN anyway: skip the short averages there.
    shift = correlation_shift(tail, short, long, z_window, z_min_periods, start=long - 1)
    last = {
        "avg_corr_short": shift.short.iloc[-1],
        "avg_corr_long": shift.long.iloc[-1],
        "shift": shift.shift.iloc[-1],
        "shift_z": shift.z.iloc[-1],
    }
    out = pd.DataFrame(last)
    out.index.name = "symbol"
    out = out.sort_values(["shift_z", "shift"], ascending=False, na_position="last", kind="stable")
    out.attrs["asof"] = returns.index[-1] if len(returns) else None
    return out


# --------------------------------------------------------------------------- EWMA


def _ewma_sums(x: np.ndarray, lam: float):
    """Normalised EW sums of ``x_i x_j``, ``x_i^2`` and weights over joint observations."""
    T, N = x.shape
    valid = np.isfinite(x)
    xz = np.where(valid, x, 0.0)
    vf = valid.astype(float)
    xx = np.zeros((N, N))  # sum w x_i x_j (joint)
    sq = np.zeros((N, N))  # sum w x_i^2 over obs where j also observed
    wt = np.zeros((N, N))  # sum w over joint obs
    cnt = np.zeros((N, N))
    a = 1.0 - lam
    for t in range(T):
        xt, vt = xz[t], vf[t]
        xx *= lam
        sq *= lam
        wt *= lam
        joint = np.outer(vt, vt)
        xx += a * np.outer(xt, xt)
        sq += a * np.outer(xt * xt, vt)
        wt += a * joint
        cnt += joint
        yield t, xx, sq, wt, cnt, valid[t]


def _check_lam(lam: float) -> None:
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lam must be in (0, 1), got {lam!r}")


def ewma_covariance(
    returns: pd.DataFrame | np.ndarray, lam: float = 0.94, min_periods: int = 20
) -> np.ndarray:
    """RiskMetrics EWMA covariance per bar, shape (T, N, N), in squared return units.

    ``cov_ij(t) = sum_s lam^(t-s) r_i(s) r_j(s) / sum_s lam^(t-s)`` over the bars s <= t
    where *both* returns are finite: zero mean (RiskMetrics), decay per bar whether or not
    the pair was observed, and weights normalised over the observed bars (as pandas'
    ``ewm(alpha=1-lam, adjust=True, ignore_na=False).mean()`` of the product), so a pair
    whose second asset listed late starts from its own joint history instead of from
    zeros. NaN where the pair has fewer than ``min_periods`` joint observations, and in
    the row and column of an asset with no return at t (unlisted at t).

    With NaN handled pairwise the matrix need not be positive semi-definite when assets
    list at different times. Memory is ``T * N^2`` floats: meant for portfolios and
    universes up to a few hundred assets; use ``ewma_correlation_at`` for one date.
    ``lam=0.94`` is RiskMetrics' daily decay (half-life ~11 bars).
    """
    _check_lam(lam)
    x = _as_array(returns)
    T, N = x.shape
    out = np.full((T, N, N), np.nan)
    for t, xx, _sq, wt, cnt, v in _ewma_sums(x, lam):
        ok = (cnt >= min_periods) & np.outer(v, v)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[t] = np.where(ok, xx / wt, np.nan)
    return out


def ewma_correlation(
    returns: pd.DataFrame | np.ndarray, lam: float = 0.94, min_periods: int = 20
) -> np.ndarray:
    """RiskMetrics EWMA correlation per bar, shape (T, N, N), unitless.

    ``rho_ij = S_ij / sqrt(Q_ij Q_ji)`` where ``S_ij`` is the EW sum of ``r_i r_j`` and
    ``Q_ij`` the EW sum of ``r_i^2``, both over the bars where i *and* j are observed
    (see ``ewma_covariance``), so every entry is in [-1, 1] even when assets list at
    different dates. Diagonal 1 where defined; NaN as in ``ewma_covariance``.
    """
    _check_lam(lam)
    x = _as_array(returns)
    T, N = x.shape
    out = np.full((T, N, N), np.nan)
    for t, xx, sq, _wt, cnt, v in _ewma_sums(x, lam):
        out[t] = _corr_from_sums(xx, sq, cnt, v, min_periods)
    return out


def _corr_from_sums(xx, sq, cnt, v, min_periods) -> np.ndarray:
    den = np.sqrt(sq * sq.T)
    ok = (cnt >= min_periods) & np.outer(v, v) & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(ok, xx / den, np.nan)
    c = np.clip(c, -1.0, 1.0)
    d = np.diag(ok).copy()
    c[np.diag_indices_from(c)] = np.where(d, 1.0, np.nan)
    return c


def ewma_correlation_at(
    returns: pd.DataFrame, at: Any = None, lam: float = 0.94, min_periods: int = 20
) -> pd.DataFrame:
    """``ewma_correlation`` at one bar (default: the last), as a symbol x symbol frame.

    Computed directly from weighted sums up to that bar (``O(T * N^2)``, no cube), so it
    suits large universes. Assets with no return at that bar are dropped.
    """
    _check_lam(lam)
    pos = _row_loc(returns.index, at)
    x = returns.iloc[: pos + 1].to_numpy(dtype=float, na_value=np.nan)
    valid = np.isfinite(x)
    xz = np.where(valid, x, 0.0)
    w = (1.0 - lam) * lam ** np.arange(pos, -1, -1, dtype=float)
    xw = xz * w[:, None]
    xx = xw.T @ xz
    sq = (xw * xz).T @ valid.astype(float)
    cnt = valid.T.astype(float) @ valid.astype(float)
    c = _corr_from_sums(xx, sq, cnt, valid[pos], min_periods)
    keep = valid[pos] & np.isfinite(np.diag(c))
    cols = returns.columns[keep]
    return pd.DataFrame(c[np.ix_(keep, keep)], index=cols, columns=cols)


# --------------------------------------------------------------------------- shrinkage


def ledoit_wolf_shrinkage(x: np.ndarray) -> float:
    """Ledoit-Wolf (2004) shrinkage intensity for data ``x`` (n samples x p features).

    The optimal weight on the scaled-identity target ``mu * I`` of the sample covariance
    (ddof=0) of the centred data; same formula as ``sklearn.covariance.ledoit_wolf``.
    """
    x = np.asarray(x, dtype=float)
    n, p = x.shape
    x = x - x.mean(axis=0)
    x2 = x * x
    emp_trace = x2.sum(axis=0) / n
    mu = emp_trace.sum() / p
    beta_ = float(np.sum(x2.T @ x2))
    delta_ = float(np.sum((x.T @ x) ** 2)) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * emp_trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


def ledoit_wolf_correlation(
    returns: pd.DataFrame, window: int = 90, at: Any = None
) -> pd.DataFrame:
    """Ledoit-Wolf shrunk correlation of the ``window`` bars ending at ``at``.

    Returns are standardised per asset over the window (mean 0, std 1 with ddof=0), so
    the sample covariance is the sample correlation ``R`` and the Ledoit-Wolf target
    ``mu * I`` is the identity: the result is ``(1 - d) R + d I`` with ``d`` the
    Ledoit-Wolf intensity (in ``attrs["shrinkage"]``), a proper correlation matrix (unit
    diagonal, positive definite for ``d > 0``). Same as ``sklearn.covariance.LedoitWolf``
    fitted on the standardised window. Only participating assets (full window, non-zero
    variance) are kept.
    """
    raw = window_correlation(returns, window, at)
    cols = raw.columns
    pos = _row_loc(returns.index, at)
    x = returns.iloc[pos - window + 1 : pos + 1][cols].to_numpy(dtype=float)
    if x.shape[1] == 0:
        return raw
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    d = ledoit_wolf_shrinkage(z)
    n = z.shape[0]
    emp = z.T @ z / n
    shrunk = (1.0 - d) * emp + d * np.eye(len(cols))
    np.fill_diagonal(shrunk, 1.0)
    out = pd.DataFrame(shrunk, index=cols, columns=cols)
    out.attrs["shrinkage"] = d
    return out


# --------------------------------------------------------------------------- absorption


def absorption_ratio(
    returns: pd.DataFrame,
    window: int = 250,
    k: int | None = None,
    fraction: float = 0.2,
    use_correlation: bool = False,
) -> pd.Series:
    """Absorption ratio (Kritzman, Li, Page and Rigobon 2011) per bar, unitless in (0, 1].

    Share of the total variance of the participating assets explained by the first k
    eigenvectors of their covariance over the trailing ``window`` bars:
    ``AR(t) = sum_{i<=k} lambda_i / sum_i lambda_i``. ``k`` defaults to
    ``ceil(fraction * n(t))`` (Kritzman et al. use a fifth of the assets) where n(t)
    participants have a full window of returns; it is capped at n(t) - 1. A high ratio
    means markets are tightly coupled (fragile). ``use_correlation`` uses the
    correlation matrix instead of the covariance, so one volatile asset cannot dominate.
    NaN while fewer than 2 assets participate. Equal weights in the window (the paper
    also uses exponential weights; not done here).

    Cost ``O(T * N^3)`` and memory ``T * N^2`` floats: for tens to a few hundred assets.
    """
    _check_window(window)
    x = _as_array(returns)
    T, N = x.shape
    xc, mean, u = _window_stats(x, window)
    part = u > 0
    out = np.full(T, np.nan)
    if T < window or N < 2:
        return pd.Series(out, index=returns.index, name="absorption_ratio")
    outer = xc[:, :, None] * xc[:, None, :]
    c = np.cumsum(outer, axis=0)
    sums = c[window - 1 :].copy()
    sums[1:] -= c[:-window]
    ends = np.arange(window - 1, T)
    m = mean[ends]
    cov = (sums - window * m[:, :, None] * m[:, None, :]) / (window - 1)
    p = part[ends]
    mask = p[:, :, None] & p[:, None, :]
    cov = np.where(mask, cov, 0.0)
    if use_correlation:
        sd = np.sqrt(np.clip(np.einsum("tii->ti", cov), 0.0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            inv = np.where(sd > 0, 1.0 / sd, 0.0)
        cov = cov * inv[:, :, None] * inv[:, None, :]
    ev = np.linalg.eigvalsh(cov)[:, ::-1]  # descending; non-participants add zeros
    ev = np.clip(ev, 0.0, None)
    n = p.sum(axis=1)
    kk = (
        np.minimum(np.full(n.shape, int(k)), n - 1)
        if k is not None
        else np.minimum(np.ceil(fraction * n).astype(int), n - 1)
    )
    kk = np.maximum(kk, 1)
    cum = np.cumsum(ev, axis=1)
    total = cum[:, -1]
    top = np.take_along_axis(cum, (kk - 1)[:, None], axis=1)[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        ar = np.where((n >= 2) & (total > 0), top / total, np.nan)
    out[ends] = ar
    return pd.Series(out, index=returns.index, name="absorption_ratio")


# --------------------------------------------------------------------------- clusters


def correlation_distance(corr: pd.DataFrame | np.ndarray) -> pd.DataFrame | np.ndarray:
    """The metric ``d_ij = sqrt(0.5 * (1 - rho_ij))`` (0 for rho = 1, 1 for rho = -1)."""
    c = corr.to_numpy(dtype=float) if isinstance(corr, pd.DataFrame) else np.asarray(corr)
    d = np.sqrt(np.clip(0.5 * (1.0 - c), 0.0, 1.0))
    np.fill_diagonal(d, 0.0)
    if isinstance(corr, pd.DataFrame):
        return pd.DataFrame(d, index=corr.index, columns=corr.columns)
    return d


def cluster_labels(
    corr: pd.DataFrame,
    max_distance: float | None = 0.5,
    n_clusters: int | None = None,
    method: Literal["single", "complete", "average", "weighted", "ward"] = "average",
) -> pd.Series:
    """Hierarchical clusters of a correlation matrix (scipy ``linkage``/``fcluster``; an
    equivalent written here for the usual average linkage cut at a distance).

    Distance ``sqrt(0.5 * (1 - rho))``. Cut the tree at ``max_distance`` (default 0.5,
    i.e. assets whose linkage correlation is above 0.5 end up together) or, if
    ``n_clusters`` is given, into that many clusters. Labels are integers 1..K numbered
    by cluster size, largest first (ties by first symbol), so they are deterministic.
    """
    names = list(corr.index)
    n = len(names)
    if n == 0:
        return pd.Series([], dtype="Int64", name="cluster")
    if n == 1:
        return pd.Series([1], index=pd.Index(names), dtype="Int64", name="cluster")
    d = correlation_distance(corr.to_numpy(dtype=float))
    d = 0.5 * (d + d.T)
    if n_clusters is None and max_distance is None:
        raise ValueError("give max_distance or n_clusters")
    if n_clusters is None and method == "average" and n <= _SMALL_LINKAGE and np.isfinite(d).all():
        raw = _average_linkage_cut(d, float(max_distance))  # type: ignore[arg-type]
    else:
        # scipy.cluster costs a third of a second to import: only here, where it is used.
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import squareform

        z = linkage(squareform(d, checks=False), method=method)
        if n_clusters is not None:
            raw = fcluster(z, t=n_clusters, criterion="maxclust")
        else:
            raw = fcluster(z, t=max_distance, criterion="distance")
    s = pd.Series(raw, index=pd.Index(names))
    sizes = s.value_counts()
    first = {lab: names.index(s.index[s == lab][0]) for lab in sizes.index}
    order = sorted(sizes.index, key=lambda lab: (-sizes[lab], first[lab]))
    mapping = {lab: i + 1 for i, lab in enumerate(order)}
    return s.map(mapping).astype("Int64").rename("cluster")


#: Up to this many assets ``cluster_labels`` runs its own average linkage (O(n^3)).
_SMALL_LINKAGE = 200


def _average_linkage_cut(d: np.ndarray, max_distance: float) -> np.ndarray:
    """Flat clusters of average linkage (UPGMA) cut at ``max_distance``, as scipy's
    ``fcluster(linkage(d, "average"), max_distance, "distance")``: merge the closest pair
    of clusters while their distance is at most ``max_distance`` (average linkage never
    merges lower after a higher merge, so this is the cut of the whole tree). Distances
    update as scipy's: ``(n_a d_ka + n_b d_kb) / (n_a + n_b)``. Labels are arbitrary
    integers (the caller renumbers them)."""
    n = len(d)
    dist = np.array(d, dtype=float)
    np.fill_diagonal(dist, np.inf)
    size = np.ones(n)
    label = np.arange(n)
    for _ in range(n - 1):
        flat = int(np.argmin(dist))
        a, b = divmod(flat, n)
        if not dist[a, b] <= max_distance:
            break
        merged = (size[a] * dist[a] + size[b] * dist[b]) / (size[a] + size[b])
        dist[a] = merged
        dist[:, a] = merged
        dist[a, a] = np.inf
        dist[b] = np.inf
        dist[:, b] = np.inf
        size[a] += size[b]
        label[label == b] = a
    return label


def correlation_clusters(
    returns: pd.DataFrame,
    at: Any = None,
    window: int = 90,
    max_distance: float | None = 0.5,
    n_clusters: int | None = None,
    method: Literal["single", "complete", "average", "weighted", "ward"] = "average",
    shrink: bool = False,
) -> pd.Series:
    """Clusters of assets that moved together over the ``window`` bars ending at ``at``.

    Correlation of the window (Ledoit-Wolf shrunk if ``shrink``), then ``cluster_labels``.
    Returns labels for every column of ``returns``: integers 1..K (largest cluster 1),
    ``<NA>`` for assets without a full window of returns at that date.
    """
    corr = (ledoit_wolf_correlation if shrink else window_correlation)(returns, window, at)
    labels = cluster_labels(corr, max_distance=max_distance, n_clusters=n_clusters, method=method)
    out = labels.reindex(returns.columns).astype("Int64")
    out.index.name = returns.columns.name
    return out
