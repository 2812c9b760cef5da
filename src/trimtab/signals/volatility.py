"""Volatility estimators over whole panels (time x asset), all causal.

Conventions shared by every function here:

- Inputs are DataFrames indexed by bar open time (UTC) with one column per asset, or a
  single Series; the output has the input's type, index and columns.
- The value at bar t uses bars up to and including t only. It is known at the close of
  bar t and is the estimate for the bars that follow.
- Volatilities are annualised: per-bar standard deviation times sqrt(periods_per_year)
  (365 for daily bars, 8,760 for hourly), as fractions (0.8 = 80 % a year).
- NaN until an asset has enough history and wherever it is not listed (NaN input). An
  internal NaN (a hole inside the listing) restarts recursive estimators.
- Returns are simple returns unless a name says log.

Extreme wicks. Range-based estimators (Parkinson, Yang-Zhang) square the log high/low
range, so one absurd print (LINK traded at 0.0001 on 2020-03-12, FIL printed 430 on its
listing day) dominates a whole window. ``clip_wicks`` makes them robust: each bar's upper
wick ``log(high / max(open, close))`` and lower wick ``log(min(open, close) / low)`` are
capped at ``wick_mult`` times the median log range ``log(high / low)`` of the previous
``ref_window`` bars (the bar itself excluded, so an outlier cannot raise its own cap).
The body, open to close, is never touched: a crash that closes low is real movement.
A bar with fewer than ``ref_min`` earlier bars (a listing) has no reference and is left
out (NaN), exactly as close-to-close estimators cannot use a listing day either. With the
default ``wick_mult=4`` about 0.1 % of the real daily bars are clipped.
"""

from __future__ import annotations

import sys
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pandas as pd

# SciPy is imported inside the functions that use it (the GARCH fits): scipy.signal
# alone costs most of a second of start-up, which a review or a backtest that never
# fits a GARCH should not pay.

Frame = TypeVar("Frame", pd.DataFrame, pd.Series)

WICK_MULT = 4.0
REF_WINDOW = 30
REF_MIN = 5

# Fast GARCH engine: SLSQP tolerance on the mean negative log-likelihood, and how many of
# arch's grid starts a cold fit tries.
FTOL = 1e-10
COLD_STARTS = 3


# ---------------------------------------------------------------------------- helpers


def _as_frame(x: pd.DataFrame | pd.Series) -> pd.DataFrame:
    return x.to_frame() if isinstance(x, pd.Series) else x


def _like(values: np.ndarray | pd.DataFrame, template: Frame) -> Frame:
    """Wrap ``values`` (T x N) with the index/columns (or name) of ``template``."""
    arr = values.to_numpy() if isinstance(values, pd.DataFrame) else values
    if isinstance(template, pd.Series):
        return pd.Series(arr.reshape(-1), index=template.index, name=template.name)
    return pd.DataFrame(arr, index=template.index, columns=template.columns)


def _values(x: pd.DataFrame | pd.Series) -> np.ndarray:
    return _as_frame(x).to_numpy(dtype=float)


def single_threaded_blas() -> AbstractContextManager[object]:
    """Limit BLAS to one thread: model fits do many tiny products, where BLAS threads
    only spin (a 5x slow-down on a busy 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits  # ships with scikit-learn
    except ImportError:  # pragma: no cover
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _finite_runs(ok: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` spans of consecutive True values in a 1-D mask."""
    edges = np.diff(np.concatenate(([0], ok.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def seeded_ewm(x: np.ndarray, alpha: float, seed_len: int) -> np.ndarray:
    """Causal exponential smoothing ``y_t = (1 - alpha) y_{t-1} + alpha x_t`` per column.

    Each run of finite values is seeded with the plain mean of its first ``seed_len``
    values (placed at the run's ``seed_len``-th bar; NaN before). Wilder's smoothing is
    ``alpha = 1 / n`` with ``seed_len = n``; RiskMetrics is ``alpha = 1 - lambda``.

    When scipy.signal is already imported, lfilter runs each run's recursion in C; if
    not, ``_ewm_numpy`` runs it without importing scipy.signal (most of a second of
    start-up), in lfilter's order of operations (``alpha x_t`` plus ``(1 - alpha)
    y_{t-1}``): both give the same bits (a test checks it).
    """
    lfilter = getattr(sys.modules.get("scipy.signal"), "lfilter", None)
    if lfilter is None:
        return _ewm_numpy(x, alpha, seed_len)
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
                # zi carries the seed in as y_{-1}.
                out[seed_at + 1 : stop, j] = lfilter(
                    [alpha], [1.0, -decay], rest, zi=[decay * seed]
                )[0]
    return out[:, 0] if flat else out


def _ewm_numpy(x: np.ndarray, alpha: float, seed_len: int) -> np.ndarray:
    """``seeded_ewm`` without scipy: the recursion over time with every column at once
    (two vector operations per bar), or a float loop per column when there are few."""
    x = np.asarray(x, dtype=float)
    flat = x.ndim == 1
    x2 = x[:, None] if flat else x
    t_len, n = x2.shape
    out = np.full((t_len, n), np.nan)
    decay = 1.0 - alpha
    finite = np.isfinite(x2)
    # Seeds by bar: (columns, values). NaN in ``drive`` (a hole or the end of a run)
    # ends the recursion there; it restarts only at the next seed, as lfilter per run did.
    seeds: dict[int, tuple[list[int], list[float]]] = {}
    for j in range(n):
        col = x2[:, j]
        for start, stop in _finite_runs(finite[:, j]):
            if stop - start < seed_len:
                continue
            seed_at = start + seed_len - 1
            cols, vals = seeds.setdefault(int(seed_at), ([], []))
            cols.append(j)
            vals.append(col[start : seed_at + 1].mean())
    if not seeds:
        return out[:, 0] if flat else out
    with np.errstate(invalid="ignore", over="ignore"):
        drive = np.where(finite, alpha * x2, np.nan)
    first = min(seeds)
    cols, vals = seeds[first]
    out[first, cols] = vals
    if n <= _SCALAR_COLUMNS:
        # Few columns: plain float arithmetic beats a NumPy call per bar.
        for j in range(n):
            _ewm_column(out[:, j], drive[:, j], decay, first, seeds, j)
    else:
        for t in range(first + 1, t_len):
            row = out[t]
            np.multiply(out[t - 1], decay, out=row)
            row += drive[t]
            if t in seeds:
                cols, vals = seeds[t]
                row[cols] = vals
    return out[:, 0] if flat else out


#: Up to this many columns ``_ewm_numpy`` runs a Python float loop per column.
_SCALAR_COLUMNS = 4


def _ewm_column(
    y: np.ndarray,
    drive: np.ndarray,
    decay: float,
    first: int,
    seeds: dict[int, tuple[list[int], list[float]]],
    j: int,
) -> None:
    """``_ewm_numpy``'s recursion for column ``j`` in place (``y[first]`` already set)."""
    starts = {t: vals[cols.index(j)] for t, (cols, vals) in seeds.items() if j in cols}
    d = drive.tolist()
    out = y.tolist()
    prev = out[first]
    for t in range(first + 1, len(d)):
        prev = d[t] + decay * prev
        if t in starts:
            prev = starts[t]
        out[t] = prev
    y[:] = out


def simple_returns(close: Frame) -> Frame:
    """Simple returns ``close_t / close_{t-1} - 1``; NaN on each asset's first bar."""
    return close / close.shift(1) - 1.0


def log_returns(close: Frame) -> Frame:
    """Log returns ``ln(close_t / close_{t-1})``; NaN on each asset's first bar."""
    return np.log(close / close.shift(1))


# -------------------------------------------------------------- close-to-close family


def close_to_close_vol(
    close: Frame, window: int = 30, periods_per_year: float = 365.0, *, ddof: int = 1
) -> Frame:
    """Annualised rolling std of simple returns over the last ``window`` returns.

    NaN unless all ``window`` returns in the window exist (the first value is at the
    ``window + 1``-th bar of a listing). Same numbers as ``features.trailing_volatility``.
    """
    r = simple_returns(close)
    return r.rolling(window, min_periods=window).std(ddof=ddof) * np.sqrt(periods_per_year)


def ewma_vol(
    close: Frame,
    *,
    lam: float = 0.94,
    halflife: float | None = None,
    periods_per_year: float = 365.0,
    min_periods: int = 30,
) -> Frame:
    """RiskMetrics EWMA volatility of simple returns, annualised.

    ``var_t = lam * var_{t-1} + (1 - lam) * r_t**2`` (zero mean, as RiskMetrics), seeded
    with the mean of the first ``min_periods`` squared returns; NaN before that.
    ``halflife`` (in bars), when given, overrides ``lam`` with ``0.5 ** (1 / halflife)``.
    The daily RiskMetrics ``lam = 0.94`` is a half-life of about 11 bars.
    """
    if halflife is not None:
        if halflife <= 0:
            raise ValueError("halflife must be positive")
        lam = 0.5 ** (1.0 / halflife)
    if not 0.0 < lam < 1.0:
        raise ValueError("lam must be in (0, 1)")
    r = _values(simple_returns(close))
    var = seeded_ewm(r * r, 1.0 - lam, min_periods)
    return _like(np.sqrt(var * periods_per_year), close)


# ------------------------------------------------------------------------ range-based


def clip_wicks(
    high: Frame,
    low: Frame,
    close: Frame,
    open: Frame | None = None,
    *,
    wick_mult: float = WICK_MULT,
    ref_window: int = REF_WINDOW,
    ref_min: int = REF_MIN,
) -> tuple[Frame, Frame]:
    """High and low with absurd wicks capped; see the module docstring for the rule.

    ``open`` defaults to the previous close (crypto trades around the clock). Returns
    ``(high, low)``; NaN on bars without a reference (the first ``ref_min`` bars of a
    listing) or without prices.
    """
    if open is None:
        open = close.shift(1)
    o, h, lo, c = (_values(x) for x in (open, high, low, close))
    body_hi = np.maximum(o, c)
    body_lo = np.minimum(o, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A low of 0 or below is an infinitely long wick, which the cap then trims.
        log_range = np.log(h / np.where(lo > 0, lo, np.nan))
        up = np.log(h / body_hi)
        down = np.log(body_lo / np.where(lo > 0, lo, 0.0))
    ref = (
        pd.DataFrame(log_range)
        .rolling(ref_window, min_periods=ref_min)
        .median()
        .shift(1)
        .to_numpy()
    )
    cap = wick_mult * ref
    with np.errstate(invalid="ignore"):
        # Unclipped bars keep their exact prices.
        new_h = np.where(up > cap, body_hi * np.exp(cap), h)
        new_l = np.where(down > cap, body_lo * np.exp(-cap), lo)
    bad = ~np.isfinite(cap) | ~np.isfinite(new_h) | ~np.isfinite(new_l) | ~(new_l > 0)
    new_h[bad] = np.nan
    new_l[bad] = np.nan
    return _like(new_h, high), _like(new_l, low)


def parkinson_vol(
    high: Frame,
    low: Frame,
    window: int = 30,
    periods_per_year: float = 365.0,
    *,
    close: Frame | None = None,
    open: Frame | None = None,
    wick_mult: float | None = WICK_MULT,
) -> Frame:
    """Parkinson (1980) high/low volatility, annualised.

    ``var = mean(ln(high / low) ** 2) / (4 ln 2)`` over the last ``window`` bars. Robust
    by default: wicks are clipped by ``clip_wicks``, which needs ``close`` (and uses
    ``open`` if given) to tell the wicks from the body. ``wick_mult=None`` gives the
    textbook estimator, which one bad print can blow up.
    """
    if wick_mult is not None:
        if close is None:
            raise ValueError(
                "robust Parkinson needs close= (and optionally open=) to tell wicks from "
                "the body; pass it, or wick_mult=None for the naive estimator"
            )
        high, low = clip_wicks(high, low, close, open, wick_mult=wick_mult)
    hl = np.log(_as_frame(high) / _as_frame(low))
    var = (hl * hl).rolling(window, min_periods=window).mean() / (4.0 * np.log(2.0))
    return _like(np.sqrt(var * periods_per_year), high)


def yang_zhang_vol(
    open: Frame,
    high: Frame,
    low: Frame,
    close: Frame,
    window: int = 30,
    periods_per_year: float = 365.0,
    *,
    wick_mult: float | None = WICK_MULT,
) -> Frame:
    """Yang-Zhang (2000) OHLC volatility, annualised.

    ``var = var(o) + k var(c) + (1 - k) mean(rs)`` over the last ``window`` bars, with
    ``o = ln(open_t / close_{t-1})`` (the gap), ``c = ln(close / open)``, the
    Rogers-Satchell term ``rs = u (u - c) + d (d - c)`` for ``u = ln(high / open)``,
    ``d = ln(low / open)``, sample variances (ddof=1) and
    ``k = 0.34 / (1.34 + (window + 1) / (window - 1))``. Robust to wicks by default
    (``clip_wicks``); ``wick_mult=None`` for the textbook estimator.
    """
    if window < 2:
        raise ValueError("window must be at least 2")
    if wick_mult is not None:
        high, low = clip_wicks(high, low, close, open, wick_mult=wick_mult)
    o_, h_, l_, c_ = (_as_frame(x) for x in (open, high, low, close))
    gap = np.log(o_ / c_.shift(1))
    oc = np.log(c_ / o_)
    u = np.log(h_ / o_)
    d = np.log(l_ / o_)
    rs = u * (u - oc) + d * (d - oc)
    # The gap needs the previous close, so every term is restricted to bars that have it.
    rs = rs.where(gap.notna())
    oc = oc.where(gap.notna())
    k = 0.34 / (1.34 + (window + 1) / (window - 1))
    roll = {"window": window, "min_periods": window}
    var = (
        gap.rolling(**roll).var()
        + k * oc.rolling(**roll).var()
        + (1.0 - k) * rs.rolling(**roll).mean()
    )
    return _like(np.sqrt(var.clip(lower=0.0) * periods_per_year), close)


def true_range(high: Frame, low: Frame, close: Frame) -> Frame:
    """Wilder's true range ``max(high - low, |high - prev close|, |low - prev close|)``.

    In price units; NaN on a listing's first bar (no previous close).
    """
    prev = close.shift(1)
    h, lo, pc = _values(high), _values(low), _values(prev)
    tr = np.maximum(h - lo, np.maximum(np.abs(h - pc), np.abs(lo - pc)))
    tr[~np.isfinite(pc)] = np.nan
    return _like(tr, close)


def atr(high: Frame, low: Frame, close: Frame, window: int = 14) -> Frame:
    """Wilder's average true range, in price units (not annualised), for stop distances.

    The first value is the mean of the first ``window`` true ranges (at bar ``window`` of
    a listing), then ``atr_t = atr_{t-1} + (tr_t - atr_{t-1}) / window``. For stops that
    ignore bad prints, pass highs and lows from ``clip_wicks``.
    """
    tr = _values(true_range(high, low, close))
    return _like(seeded_ewm(tr, 1.0 / window, window), close)


# ---------------------------------------------------------------------------- GARCH


@dataclass(frozen=True)
class GarchFit:
    """One refit of the GARCH(1,1) for one asset.

    ``at`` is the timestamp of the last bar used (the fit sees bars up to and including
    it); ``first`` the first return used. Parameters are for returns in ``scale`` units
    (log returns times ``scale``): ``mu`` (0 for the zero mean), ``omega``, ``alpha``,
    ``beta`` and ``nu`` (Student-t degrees of freedom; NaN for normal errors).
    """

    at: pd.Timestamp
    first: pd.Timestamp
    n_obs: int
    mu: float
    omega: float
    alpha: float
    beta: float
    nu: float
    scale: float
    converged: bool


@dataclass(frozen=True)
class GarchResult:
    """Annualised one-step-ahead GARCH vol per bar, and the fits that produced it."""

    vol: pd.DataFrame
    fits: dict[str, list[GarchFit]] = field(default_factory=dict)


def _backcast(resids: np.ndarray) -> float:
    """arch's start for the variance recursion: EWMA(0.94) of the first 75 squares."""
    tau = min(75, len(resids))
    w = 0.94 ** np.arange(tau)
    return float(np.sum(resids[:tau] ** 2 * w) / w.sum())


def _garch_nll(
    theta: np.ndarray,
    y: np.ndarray,
    bc: float,
    has_mu: bool,
    student: bool,
    per_obs: bool = False,
) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of GARCH(1,1) and its analytic gradient.

    Same model as arch's: ``sigma2_0 = omega + (alpha + beta) * bc``, then
    ``sigma2_t = omega + alpha e_{t-1}^2 + beta sigma2_{t-1}``; normal or standardised
    Student-t errors. ``theta`` is laid out as arch's: [mu], omega, alpha, beta, [nu].
    ``per_obs=True`` returns the per-bar gradient rows (n x k) instead of their mean.
    """
    from scipy.signal import lfilter
    from scipy.special import digamma, gammaln

    i = 1 if has_mu else 0
    mu = theta[0] if has_mu else 0.0
    omega, alpha, beta = theta[i], theta[i + 1], theta[i + 2]
    n = len(y)
    e = y - mu
    e2 = e * e
    x = np.empty(n)
    x[0] = omega + alpha * bc
    x[1:] = omega + alpha * e2[:-1]
    den = [1.0, -beta]
    s = lfilter([1.0], den, x, zi=[beta * bc])[0]
    # d sigma2_t / d theta obeys the same recursion with other inputs (bc held fixed).
    drive = np.empty((n, 4))
    drive[:, 0] = 1.0
    drive[0, 1] = bc
    drive[1:, 1] = e2[:-1]
    drive[0, 2] = bc
    drive[1:, 2] = s[:-1]
    drive[0, 3] = 0.0
    drive[1:, 3] = -2.0 * alpha * e[:-1]
    ds = lfilter([1.0], den, drive, axis=0)
    k = len(theta)
    if student:
        nu = theta[-1]
        q = e2 / (s * (nu - 2.0))
        log1q = np.log1p(q)
        const = gammaln((nu + 1.0) / 2.0) - gammaln(nu / 2.0) - 0.5 * np.log(np.pi * (nu - 2.0))
        ll = n * const - 0.5 * np.sum(np.log(s)) - 0.5 * (nu + 1.0) * np.sum(log1q)
        w = (nu + 1.0) / 2.0 * q / (1.0 + q)
        dl_ds = (-0.5 + w) / s
        dl_de2 = -0.5 * (nu + 1.0) / ((1.0 + q) * s * (nu - 2.0))
        dconst = 0.5 * digamma((nu + 1.0) / 2.0) - 0.5 * digamma(nu / 2.0) - 0.5 / (nu - 2.0)
        dl_dnu = dconst - 0.5 * log1q + w / (nu - 2.0)
    else:
        ll = -0.5 * (n * np.log(2.0 * np.pi) + np.sum(np.log(s)) + np.sum(e2 / s))
        dl_ds = -0.5 * (1.0 - e2 / s) / s
        dl_de2 = -0.5 / s
    if per_obs:
        rows = np.empty((n, k))
        rows[:, i : i + 3] = dl_ds[:, None] * ds[:, :3]
        if has_mu:
            rows[:, 0] = dl_ds * ds[:, 3] - 2.0 * dl_de2 * e
        if student:
            rows[:, -1] = dl_dnu
        return -ll / n, -rows
    grad = np.empty(k)
    grad[i : i + 3] = dl_ds @ ds[:, :3]
    if has_mu:
        grad[0] = dl_ds @ ds[:, 3] - 2.0 * (dl_de2 @ e)
    if student:
        grad[-1] = np.sum(dl_dnu)
    return -ll / n, -grad / n


def _garch_cold_starts(
    y: np.ndarray, resids: np.ndarray, bc: float, v: float, has_mu: bool, student: bool, n: int
) -> list[np.ndarray]:
    """arch's starting values (its (alpha, persistence) grid ranked by the Gaussian
    likelihood, nu from the kurtosis of the standardised residuals): the best ``n``."""
    from scipy.signal import lfilter

    scored = []
    for a in (0.01, 0.05, 0.1, 0.2):
        for p in (0.5, 0.7, 0.9, 0.98):
            th = np.array([(1.0 - p) * v, a, p - a])
            scored.append((_garch_nll(th, resids, bc, False, False)[0], a, p, th))
    scored.sort(key=lambda item: item[0])
    starts = []
    for _, _, _, th in scored[:n]:
        parts = [th]
        if has_mu:
            parts.insert(0, np.array([y.mean()]))
        if student:
            x = np.empty(len(resids))
            x[0] = th[0] + th[1] * bc
            x[1:] = th[0] + th[1] * resids[:-1] ** 2
            sigma2 = lfilter([1.0], [1.0, -th[2]], x, zi=[th[2] * bc])[0]
            z = resids / np.sqrt(sigma2)
            kurt = float(np.mean((z - z.mean()) ** 4) / np.var(z) ** 2)
            nu = max((4.0 * kurt - 6.0) / (kurt - 3.0) if kurt > 3.75 else 12.0, 4.0)
            parts.append(np.array([nu]))
        starts.append(np.concatenate(parts))
    return starts


def _garch_fit_fast(
    y: np.ndarray, start: np.ndarray | None, dist: str, mean: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    """ML fit of GARCH(1,1) with arch's likelihood, bounds and constraint; returns
    ``(params, sigma2 over the sample, converged)``.

    A cold fit tries arch's best few grid starts and keeps the best optimum (the
    likelihood can have two modes on short samples); a warm fit starts from ``start``.
    """
    from scipy.optimize import minimize
    from scipy.signal import lfilter

    has_mu, student = mean == "constant", dist == "t"
    mu0 = float(y.mean()) if has_mu else 0.0
    resids = y - mu0
    bc = _backcast(resids)
    v = float(np.mean(resids**2))
    bounds = [(1e-8 * v, 10.0 * v), (0.0, 1.0), (0.0, 1.0)]
    if has_mu:
        bounds.insert(0, (-np.inf, np.inf))
    if student:
        bounds.append((2.05, 500.0))
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    starts = (
        [start]
        if start is not None
        else _garch_cold_starts(y, resids, bc, v, has_mu, student, COLD_STARTS)
    )
    i = 1 if has_mu else 0
    best = None
    while starts:
        th0 = starts.pop(0)
        th0 = np.clip(th0, lo, hi)
        # Optimise in units of each parameter's score scale (BHHH diagonal) so that
        # SLSQP's identity start for the Hessian is about right: fewer iterations.
        _, rows = _garch_nll(th0, y, bc, has_mu, student, per_obs=True)
        d = np.sqrt(np.mean(rows * rows, axis=0))
        d = np.where(np.isfinite(d) & (d > 0), d, 1.0)
        cons_jac = np.zeros(len(th0))
        cons_jac[i + 1 : i + 3] = -1.0 / d[i + 1 : i + 3]

        def fun(u: np.ndarray, d: np.ndarray = d) -> tuple[float, np.ndarray]:
            f, g = _garch_nll(np.clip(u / d, lo, hi), y, bc, has_mu, student)
            return f, g / d

        cons = {
            "type": "ineq",
            "fun": lambda u, d=d: 1.0 - u[i + 1] / d[i + 1] - u[i + 2] / d[i + 2],
            "jac": lambda u, j=cons_jac: j,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = minimize(
                fun,
                th0 * d,
                jac=True,
                method="SLSQP",
                bounds=list(zip(lo * d, hi * d, strict=True)),
                constraints=[cons],
                options={"maxiter": 200, "ftol": FTOL},
            )
        if best is None or opt.fun < best[0]:
            best = (opt.fun, np.clip(opt.x / d, lo, hi), bool(opt.success))
        if start is not None and best[1][i + 1] < 1e-3:
            # A warm fit that ends at alpha = 0 may sit in the wrong one of two modes;
            # let the cold starts compete.
            starts = _garch_cold_starts(y, resids, bc, v, has_mu, student, COLD_STARTS)
            start = None
    assert best is not None
    params = best[1]
    omega, alpha, beta = params[i : i + 3]
    e2 = (y - (params[0] if has_mu else 0.0)) ** 2
    x = np.empty(len(y))
    x[0] = omega + alpha * bc
    x[1:] = omega + alpha * e2[:-1]
    sigma2 = lfilter([1.0], [1.0, -beta], x, zi=[beta * bc])[0]
    return params, sigma2, best[2]


def _garch_fit_arch(
    y: np.ndarray, start: np.ndarray | None, dist: str, mean: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    from arch import arch_model

    am = arch_model(
        y,
        mean="Zero" if mean == "zero" else "Constant",
        vol="GARCH",
        p=1,
        q=1,
        dist="studentst" if dist == "t" else "normal",
        rescale=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = am.fit(disp="off", show_warning=False, starting_values=start)
    sigma2 = np.asarray(res.conditional_volatility, dtype=float) ** 2
    return np.asarray(res.params, dtype=float), sigma2, res.convergence_flag == 0


def _garch_start(prev: np.ndarray | None, dist: str, mean: str) -> np.ndarray | None:
    """The previous fit's parameters, pulled off the boundaries to start the next fit.

    arch rejects starting values on the stationarity boundary, and a start at alpha = 0
    (constant variance, where beta and omega are not identified) would keep every later
    refit there even when the data have moved on.
    """
    if prev is None:
        return None
    sv = prev.copy()
    i = 1 if mean == "constant" else 0
    sv[i + 1] = max(sv[i + 1], 0.02)
    sv[i + 2] = max(sv[i + 2], 0.02)
    persistence = sv[i + 1] + sv[i + 2]
    if persistence >= 0.99:
        sv[i + 1 : i + 3] *= 0.99 / persistence
    sv[i] = max(sv[i], 1e-6)
    if dist == "t":
        sv[-1] = min(max(sv[-1], 2.5), 200.0)
    return sv


def _garch_column(
    r: np.ndarray,
    index: pd.DatetimeIndex,
    *,
    refit_every: int,
    min_history: int,
    fit_window: int | None,
    dist: str,
    mean: str,
    horizon: int,
    scale: float,
    warm_start: bool,
    engine: str,
) -> tuple[np.ndarray, list[GarchFit]]:
    """Per-bar variance forecast (average over ``horizon`` bars, scaled units)."""
    from scipy.signal import lfilter

    fit = _garch_fit_arch if engine == "arch" else _garch_fit_fast
    out = np.full(len(r), np.nan)
    fits: list[GarchFit] = []
    for start, stop in _finite_runs(np.isfinite(r)):
        prev = None
        s = start + min_history - 1
        while s < stop:
            block_end = min(s + refit_every, stop)
            lo = start if fit_window is None else max(start, s + 1 - fit_window)
            y = r[lo : s + 1]
            params, sigma2, converged = fit(
                y, _garch_start(prev, dist, mean) if warm_start else None, dist, mean
            )
            prev = params
            i = 1 if mean == "constant" else 0
            mu = params[0] if mean == "constant" else 0.0
            omega, alpha, beta = params[i], params[i + 1], params[i + 2]
            nu = params[-1] if dist == "t" else np.nan
            fits.append(
                GarchFit(
                    at=index[s],
                    first=index[lo],
                    n_obs=len(y),
                    mu=float(mu),
                    omega=float(omega),
                    alpha=float(alpha),
                    beta=float(beta),
                    nu=float(nu),
                    scale=scale,
                    converged=converged,
                )
            )
            # Filter forward with fixed parameters: sigma2_{t+1} = omega + alpha e_t^2 +
            # beta sigma2_t, started from the fitted sigma2 at the refit bar s.
            e = r[s:block_end] - mu
            nxt = lfilter([1.0], [1.0, -beta], omega + alpha * e * e, zi=[beta * sigma2[-1]])[0]
            if horizon > 1:
                # Mean of the h-step forecasts sigma2_{t+k} = omega sum_{j<k-1} phi^j +
                # phi^(k-1) sigma2_{t+1}, which is arch's analytic multi-step forecast.
                phi = alpha + beta
                pw = phi ** np.arange(horizon)
                geo = np.concatenate(([0.0], np.cumsum(pw)[:-1]))
                nxt = omega * geo.mean() + pw.mean() * nxt
            out[s:block_end] = nxt
            s = block_end
    return out, fits


def fit_garch(
    close: pd.DataFrame | pd.Series | None = None,
    *,
    log_returns: pd.DataFrame | pd.Series | None = None,
    periods_per_year: float = 365.0,
    refit_every: int | None = None,
    min_history: int | None = None,
    fit_window: int | None = None,
    dist: str = "t",
    mean: str = "zero",
    horizon: int = 1,
    warm_start: bool = True,
    engine: str = "fast",
) -> GarchResult:
    """GARCH(1,1) volatility forecasts, refitted on a schedule; causal.

    Give ``close`` prices or ``log_returns``. For each asset the model is first fitted at
    the bar where ``min_history`` returns exist (default: one year of bars), then every
    ``refit_every`` bars (default: 30 days of bars), each time on the returns up to and
    including that bar (all of them, or the last ``fit_window``). Between refits the
    variance recursion is filtered forward with the parameters held fixed, so the value
    at bar t uses bars <= t only and costs one fit a month.

    The value at bar t is the annualised forecast of volatility over bars t+1..t+horizon
    (the square root of the mean of the h-step variance forecasts, times
    ``periods_per_year``). Returns are log returns times ``100 * sqrt(ppy / 365)`` inside
    the fit (percent for daily bars) so the optimiser sees variances of order one.
    ``dist`` is ``"t"`` (Student-t) or ``"normal"``; ``mean`` is ``"zero"`` or
    ``"constant"``. ``warm_start`` starts each refit from the previous parameters (about
    4x faster; a warm fit that ends at alpha = 0 also tries the cold starts).

    ``engine="arch"`` fits with ``arch.arch_model(...).fit()``: the reference, about 7 ms
    a fit. ``engine="fast"`` (default) maximises the same likelihood (arch's model,
    backcast, bounds, stationarity constraint and starting grid) with analytic gradients,
    about 1.5 ms a fit; tests hold it to arch's forecasts. arch also clips the variance
    recursion into data-driven bounds, which binds only for absurd parameters; the fast
    engine does not.
    """
    if (close is None) == (log_returns is None):
        raise ValueError("give exactly one of close and log_returns")
    if dist not in ("t", "normal"):
        raise ValueError("dist must be 't' or 'normal'")
    if mean not in ("zero", "constant"):
        raise ValueError("mean must be 'zero' or 'constant'")
    if horizon < 1:
        raise ValueError("horizon must be at least 1")
    if engine not in ("fast", "arch"):
        raise ValueError("engine must be 'fast' or 'arch'")
    template = close if close is not None else log_returns
    assert template is not None
    frame = _as_frame(template)
    lr = _as_frame(np.log(frame / frame.shift(1))) if close is not None else frame.astype(float)
    refit_every = refit_every or max(1, round(periods_per_year * 30 / 365))
    min_history = min_history or max(100, round(periods_per_year))
    scale = 100.0 * np.sqrt(periods_per_year / 365.0)
    values = lr.to_numpy(dtype=float) * scale
    index = pd.DatetimeIndex(frame.index)
    out = np.full(values.shape, np.nan)
    fits: dict[str, list[GarchFit]] = {}
    with single_threaded_blas():
        for j, name in enumerate(frame.columns):
            out[:, j], fits[str(name)] = _garch_column(
                values[:, j],
                index,
                refit_every=refit_every,
                min_history=min_history,
                fit_window=fit_window,
                dist=dist,
                mean=mean,
                horizon=horizon,
                scale=scale,
                warm_start=warm_start,
                engine=engine,
            )
    vol = pd.DataFrame(
        np.sqrt(out * periods_per_year) / scale, index=frame.index, columns=frame.columns
    )
    return GarchResult(vol=vol, fits=fits)


def garch_forecast(
    close: Frame | None = None,
    *,
    log_returns: Frame | None = None,
    periods_per_year: float = 365.0,
    refit_every: int | None = None,
    min_history: int | None = None,
    fit_window: int | None = None,
    dist: str = "t",
    mean: str = "zero",
    horizon: int = 1,
    warm_start: bool = True,
    engine: str = "fast",
) -> Frame:
    """Annualised GARCH(1,1) vol forecast per bar; see ``fit_garch`` for the details."""
    result = fit_garch(
        close,
        log_returns=log_returns,
        periods_per_year=periods_per_year,
        refit_every=refit_every,
        min_history=min_history,
        fit_window=fit_window,
        dist=dist,
        mean=mean,
        horizon=horizon,
        warm_start=warm_start,
        engine=engine,
    )
    template = close if close is not None else log_returns
    assert template is not None
    return _like(result.vol, template)
