"""Rolling, causal one-step-ahead Value-at-Risk and CVaR forecasts.

Models (``method`` names used by :func:`var_forecast` and the backtests):

- ``"historical"``: the empirical quantile of the last ``window`` returns (250 by default).
- ``"ewma_normal"``: RiskMetrics EWMA volatility times a standard normal quantile. The
  plain benchmark; it has too few standard deviations in its tail for crypto.
- ``"ewma_t"``: EWMA volatility times a Student-t scaled to unit variance, whose degrees
  of freedom are fitted by maximum likelihood on past standardised returns.
- ``"ewma_cf"``: EWMA volatility times a Cornish-Fisher quantile built from the trailing
  skewness and excess kurtosis of past standardised returns.

The t and Cornish-Fisher models take ``scale_correction=True`` (off by default) to
rescale the EWMA volatility by the trailing RMS of its standardised returns; on daily
crypto that RMS is above 1 and the uncorrected t has too many 99 % hits (BTC: 1.5 %).
:func:`portfolio_var` forecasts a weighted book with the weights known at each bar, and
:func:`portfolio_returns` gives the realised returns to backtest it against
(:mod:`trimtab.risk.var_backtest`).

Conventions (see DESIGN.md):

- Returns are simple per-bar returns. VaR and CVaR are POSITIVE loss fractions of the
  position's value (0.05 = a 5 % one-bar loss), at confidence ``level`` (0.95, 0.99): the
  loss exceeds VaR with probability ``1 - level``. CVaR (expected shortfall) is the mean
  loss beyond VaR, so CVaR >= VaR.
- Causality: the forecast for bar t+1 uses returns up to and including t only. With
  ``align="target"`` (the default) the value at t is the forecast FOR bar t (made at the
  close of the previous bar), so a backtest compares ``-returns[t]`` with ``var[t]``
  directly. With ``align="origin"`` the value at t is the forecast MADE at the close of t
  for the next bar: what a decision taken at t uses, including for the bar after the last.
- NaN returns mean "no bar" (before a listing, after a delisting, a gap): each column's
  model runs on its observed bars only, and the forecast for the bar after a gap is the
  one made at the last observed bar. Forecasts are NaN until a model has enough history.
- The EWMA models assume a zero conditional mean: at one bar the mean of crypto returns is
  far smaller than its estimation noise. The historical model uses the raw returns.

Inputs are validated: infinite values, returns below -100 % or an index that is not
strictly increasing raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

# SciPy's stats, signal and optimize are imported inside the functions that use them:
# together they take seconds to import, and portfolio_returns (the drawdown model's,
# a review's) needs none of them.

__all__ = [
    "CF_MAX_ABS_SKEW",
    "LEVELS",
    "METHODS",
    "RISKMETRICS_LAMBDA",
    "VarForecast",
    "cornish_fisher_cvar",
    "cornish_fisher_quantile",
    "cornish_fisher_safeguard",
    "ewma_cornish_fisher_var",
    "ewma_normal_var",
    "ewma_t_var",
    "ewma_volatility",
    "fit_standardized_t_df",
    "historical_var",
    "normal_cvar",
    "normal_var",
    "portfolio_returns",
    "portfolio_var",
    "standardized_t_cvar",
    "standardized_t_logpdf",
    "standardized_t_var",
    "var_forecast",
]

LEVELS: tuple[float, ...] = (0.95, 0.99)
RISKMETRICS_LAMBDA = 0.94
METHODS: tuple[str, ...] = ("historical", "ewma_normal", "ewma_t", "ewma_cf")

# Largest |skewness| for which a Cornish-Fisher expansion can be monotonic
# (Maillard 2012): 6 * (sqrt(2) - 1).
CF_MAX_ABS_SKEW = 6.0 * (np.sqrt(2.0) - 1.0)

Align = Literal["target", "origin"]
Frame = pd.Series | pd.DataFrame

# Degrees-of-freedom search range of the t fit. Above 2 so the variance exists (the t is
# scaled to unit variance); 200 is indistinguishable from the normal at these levels.
_DF_BOUNDS = (2.1, 200.0)


@dataclass(frozen=True)
class VarForecast:
    """Forecasts of one model, each shaped like the input returns (Series or DataFrame).

    ``var[level]`` and ``cvar[level]`` are positive loss fractions. ``volatility`` is the
    EWMA standard deviation forecast (a fraction per bar, before any ``scale_correction``;
    None for the historical model).
    ``params`` holds the fitted shape parameters per bar, aligned like the forecasts:
    ``"df"`` for the t model; ``"skewness"`` and ``"excess_kurtosis"`` (sample values) and
    ``"cf_skewness"`` and ``"cf_excess_kurtosis"`` (after the monotonicity safeguard) for
    Cornish-Fisher; ``"scale"`` (the factor applied to ``volatility``) with
    ``scale_correction``.
    """

    method: str
    var: dict[float, Frame]
    cvar: dict[float, Frame]
    volatility: Frame | None = None
    params: dict[str, Frame] = field(default_factory=dict)
    align: Align = "target"


# --------------------------------------------------------------------------- validation


def _check_levels(levels: Iterable[float]) -> tuple[float, ...]:
    out = tuple(float(x) for x in levels)
    if not out:
        raise ValueError("levels must not be empty")
    for lvl in out:
        # Below 0.5 the "loss" quantile is a gain and the tail formulas lose their meaning.
        if not 0.5 <= lvl < 1.0:
            raise ValueError(f"confidence level must be in [0.5, 1), got {lvl!r}")
    return out


def _check_align(align: str) -> Align:
    if align not in ("target", "origin"):
        raise ValueError(f"align must be 'target' or 'origin', got {align!r}")
    return align  # type: ignore[return-value]


def _check_int(name: str, value: int, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_lambda(lam: float) -> float:
    if not 0.0 < lam < 1.0:
        raise ValueError(f"EWMA lambda must be strictly between 0 and 1, got {lam!r}")
    return float(lam)


def _as_frame(returns: Frame, name: str = "returns") -> pd.DataFrame:
    if isinstance(returns, pd.Series):
        frame = returns.to_frame()
    elif isinstance(returns, pd.DataFrame):
        frame = returns
    else:
        raise ValueError(
            f"{name} must be a pandas Series or DataFrame, got {type(returns).__name__}"
        )
    if not frame.index.is_monotonic_increasing or not frame.index.is_unique:
        raise ValueError(f"{name} index must be strictly increasing (sorted, no duplicates)")
    try:
        values = frame.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric") from exc
    if np.any(np.isinf(values)):
        raise ValueError(f"{name} contain infinite values")
    if np.any(values < -1.0):
        raise ValueError(f"{name} below -100% are impossible for a simple return")
    return frame


def _wrap(values: np.ndarray, like: Frame) -> Frame:
    """A (time x column) array shaped back into the caller's Series or DataFrame."""
    if isinstance(like, pd.Series):
        return pd.Series(values[:, 0], index=like.index, name=like.name)
    return pd.DataFrame(values, index=like.index, columns=like.columns)


# --------------------------------------------------------------------------- distributions


def normal_var(level: float) -> float:
    """VaR of a standard normal loss at ``level``: ``Phi^-1(level)`` (2.326 at 0.99)."""
    from scipy import stats

    return float(stats.norm.ppf(level))


def normal_cvar(level: float) -> float:
    """CVaR of a standard normal: ``phi(Phi^-1(level)) / (1 - level)`` (2.665 at 0.99)."""
    from scipy import stats

    return float(stats.norm.pdf(stats.norm.ppf(level)) / (1.0 - level))


def _t_unit_scale(df: np.ndarray | float) -> np.ndarray | float:
    # A t with df degrees of freedom has variance df / (df - 2); this factor makes it 1.
    return np.sqrt((np.asarray(df, dtype=float) - 2.0) / np.asarray(df, dtype=float))


def standardized_t_logpdf(z: np.ndarray, df: float) -> np.ndarray:
    """Log density of the Student-t scaled to unit variance (df > 2), at ``z``."""
    from scipy import special

    z = np.asarray(z, dtype=float)
    return (
        special.gammaln((df + 1.0) / 2.0)
        - special.gammaln(df / 2.0)
        - 0.5 * np.log(np.pi * (df - 2.0))
        - (df + 1.0) / 2.0 * np.log1p(z * z / (df - 2.0))
    )


def standardized_t_var(level: float, df: np.ndarray | float) -> np.ndarray | float:
    """VaR multiplier of the unit-variance t: ``t_df^-1(level) * sqrt((df - 2) / df)``.

    Multiply by a volatility to get a loss fraction. Vectorised over ``df`` (> 2).
    """
    from scipy import stats

    df = np.asarray(df, dtype=float)
    out = stats.t.ppf(level, df) * _t_unit_scale(df)
    return float(out) if out.ndim == 0 else out


def standardized_t_cvar(level: float, df: np.ndarray | float) -> np.ndarray | float:
    """CVaR multiplier of the unit-variance t, in closed form.

    For a standard t_df with ``x = t_df^-1(level)`` and ``a = 1 - level`` the mean loss
    beyond ``x`` is ``f_df(x) * (df + x**2) / ((df - 1) * a)``; scaling to unit variance
    multiplies it by ``sqrt((df - 2) / df)``. Vectorised over ``df`` (> 2).
    """
    from scipy import stats

    df = np.asarray(df, dtype=float)
    x = stats.t.ppf(level, df)
    es = stats.t.pdf(x, df) * (df + x * x) / ((df - 1.0) * (1.0 - level))
    out = es * _t_unit_scale(df)
    return float(out) if out.ndim == 0 else out


def fit_standardized_t_df(z: np.ndarray, bounds: tuple[float, float] = _DF_BOUNDS) -> float:
    """Maximum-likelihood degrees of freedom of a zero-mean, UNIT-VARIANCE t fitted to ``z``.

    ``z`` are standardised returns (return / volatility forecast); the scale is fixed by the
    volatility model, so only the tail thickness is estimated. Bounded search over
    ``log(df - 2)`` with df in ``bounds`` (2.1 to 200 by default), which is better
    conditioned than ``df`` near the variance pole. NaN values are ignored; NaN with fewer
    than 10 finite values.
    """
    from scipy import optimize

    z = np.asarray(z, dtype=float)
    z = z[np.isfinite(z)]
    if z.size < 10:
        return float("nan")
    lo, hi = np.log(bounds[0] - 2.0), np.log(bounds[1] - 2.0)

    def nll(x: float) -> float:
        return -float(np.sum(standardized_t_logpdf(z, 2.0 + np.exp(x))))

    res = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(2.0 + np.exp(res.x))


def cornish_fisher_safeguard(
    skew: np.ndarray | float, excess_kurtosis: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Project (skewness, excess kurtosis) onto the domain where Cornish-Fisher is monotonic.

    The expansion ``x(z)`` is increasing in ``z`` (so it is a valid quantile function)
    iff ``s**2/9 - 4 (k/8 - s**2/6) (1 - k/8 + 5 s**2/36) <= 0`` (Maillard 2012, "A
    user's guide to the Cornish Fisher expansion"), which needs
    ``|s| <= 6 (sqrt(2) - 1) = 2.485``. We clip ``s`` to that range, then ``k`` to the
    interval ``[k_lo(s), k_hi(s)]`` that the condition allows for this ``s`` (``[0, 8]``
    at ``s = 0``). Inside the domain nothing changes. Clipping ``k`` at 8 caps the fat
    tail the expansion can express: excess kurtosis above 8 is treated as 8.
    NaN inputs stay NaN.
    """
    s = np.clip(np.asarray(skew, dtype=float), -CF_MAX_ABS_SKEW, CF_MAX_ABS_SKEW)
    k = np.asarray(excess_kurtosis, dtype=float)
    # The condition is a quadratic in u = k / 8: 4u^2 - 4(a + b)u + 4ab + s^2/9 <= 0.
    a = s * s / 6.0
    b = 1.0 + 5.0 * s * s / 36.0
    disc = np.sqrt(np.maximum((b - a) ** 2 - s * s / 9.0, 0.0))
    k_lo = 8.0 * ((a + b) - disc) / 2.0
    k_hi = 8.0 * ((a + b) + disc) / 2.0
    return s, np.clip(k, k_lo, k_hi)


def cornish_fisher_quantile(
    p: float, skew: np.ndarray | float, excess_kurtosis: np.ndarray | float
) -> np.ndarray | float:
    """Cornish-Fisher ``p``-quantile of a standardised variable (mean 0, variance 1).

    ``z + (z^2 - 1) s/6 + (z^3 - 3z) k/24 - (2z^3 - 5z) s^2/36`` with ``z = Phi^-1(p)``.
    No safeguard is applied here; see :func:`cornish_fisher_safeguard`.
    """
    from scipy import stats

    z = stats.norm.ppf(p)
    s = np.asarray(skew, dtype=float)
    k = np.asarray(excess_kurtosis, dtype=float)
    out = (
        z
        + (z * z - 1.0) * s / 6.0
        + (z**3 - 3.0 * z) * k / 24.0
        - (2.0 * z**3 - 5.0 * z) * s * s / 36.0
    )
    return float(out) if out.ndim == 0 else out


def cornish_fisher_cvar(
    level: float, skew: np.ndarray | float, excess_kurtosis: np.ndarray | float
) -> np.ndarray | float:
    """CVaR multiplier (positive loss) of the distribution whose quantile function is CF.

    With ``c = Phi^-1(1 - level)`` and ``a = 1 - level``, the mean of the returns below
    the VaR quantile is ``(1/a) * integral_{-inf}^{c} x(z) phi(z) dz`` (substituting
    ``u = Phi(z)`` in the integral of the quantile function). ``x`` is a cubic, and the
    normal partial moments are closed form, which gives

        CVaR = phi(c)/a * [1 + s c/6 - k (1 - c^2)/24 + s^2 (1 - 2 c^2)/36].

    It is exact only when the expansion is monotonic, so pass safeguarded (s, k). Checked
    against numerical quadrature in the tests. At s = k = 0 it is the normal CVaR.
    """
    from scipy import stats

    a = 1.0 - level
    c = stats.norm.ppf(a)
    s = np.asarray(skew, dtype=float)
    k = np.asarray(excess_kurtosis, dtype=float)
    bracket = 1.0 + s * c / 6.0 - k * (1.0 - c * c) / 24.0 + s * s * (1.0 - 2.0 * c * c) / 36.0
    out = stats.norm.pdf(c) / a * bracket
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- model cores
# Each core takes one column's observed returns (1-D, no NaN) and returns ORIGIN-aligned
# arrays: element i is the forecast made at the close of observation i for i + 1.


def _historical_from_windows(
    windows: np.ndarray, levels: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """VaR/CVaR of each row of ``windows`` (rows of equal length m), as in analytics.metrics.

    Quantile: linear interpolation (Hyndman & Fan type 7, NumPy's default). CVaR: minus
    the mean of the ``floor((m - 1)(1 - level)) + 1`` smallest returns.
    """
    m = windows.shape[1]
    var = np.empty((len(levels), windows.shape[0]))
    cvar = np.empty_like(var)
    for j, lvl in enumerate(levels):
        var[j] = -np.quantile(windows, 1.0 - lvl, axis=1, method="linear")
        k = int((m - 1) * (1.0 - lvl)) + 1
        cvar[j] = -np.partition(windows, k - 1, axis=1)[:, :k].mean(axis=1)
    return var + 0.0, cvar + 0.0


def _historical_core(
    r: np.ndarray, levels: tuple[float, ...], window: int, min_periods: int
) -> tuple[np.ndarray, np.ndarray]:
    n = r.size
    var = np.full((len(levels), n), np.nan)
    cvar = np.full_like(var, np.nan)
    # Expanding part (min_periods <= count < window): window lengths differ, so row by row.
    for i in range(min_periods - 1, min(window - 1, n)):
        v, c = _historical_from_windows(r[None, : i + 1], levels)
        var[:, i], cvar[:, i] = v[:, 0], c[:, 0]
    if n >= window:
        v, c = _historical_from_windows(sliding_window_view(r, window), levels)
        var[:, window - 1 :], cvar[:, window - 1 :] = v, c
    return var, cvar


def _ewma_variance_core(r: np.ndarray, lam: float, seed: int) -> np.ndarray:
    """Origin-aligned EWMA variance: ``s2[i] = lam s2[i-1] + (1 - lam) r[i]^2``.

    Seeded causally: ``s2[seed - 1]`` is the mean of the first ``seed`` squared returns
    (zero-mean convention), NaN before. Each value uses returns up to i only.
    """
    from scipy import signal

    n = r.size
    s2 = np.full(n, np.nan)
    if n < seed:
        return s2
    s0 = float(np.mean(r[:seed] ** 2))
    s2[seed - 1] = s0
    if n > seed:
        # lfilter runs the recursion y[i] = lam y[i-1] + (1 - lam) x[i] in C, from y = s0.
        s2[seed:] = signal.lfilter([1.0 - lam], [1.0, -lam], r[seed:] ** 2, zi=[lam * s0])[0]
    return s2


def _standardise(r: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``z[i] = r[i] / sigma[i-1]``: each return over the volatility forecast made for it."""
    z = np.full(r.size, np.nan)
    prev = sigma[:-1]
    ok = np.isfinite(prev) & (prev > 0)
    z[1:][ok] = r[1:][ok] / prev[ok]
    return z


def _t_df_path(
    z: np.ndarray, fit_window: int, min_fit: int, refit_every: int, normalise: bool
) -> np.ndarray:
    """Origin-aligned df: refit every ``refit_every`` bars on the last ``fit_window`` z.

    The first fit happens at the first origin with ``min_fit`` finite z; between refits
    the last fitted value is carried forward (it only uses z known at its fit time). With
    ``normalise`` the window is first divided by its root mean square, so the unit-variance
    t is fitted to data whose second moment is 1 (see ``scale_correction``).
    """
    n = z.size
    df = np.full(n, np.nan)
    count = np.cumsum(np.isfinite(z))
    ready = np.flatnonzero(count >= min_fit)
    if ready.size == 0:
        return df
    fit_at = np.arange(ready[0], n, refit_every)
    for j, i in enumerate(fit_at):
        win = z[max(0, i - fit_window + 1) : i + 1]
        if normalise:
            win = win / np.sqrt(np.nanmean(win * win))
        value = fit_standardized_t_df(win)
        stop = fit_at[j + 1] if j + 1 < fit_at.size else n
        df[i:stop] = value
    return df


def _rms_path(z: np.ndarray, fit_window: int, min_fit: int) -> np.ndarray:
    """Trailing root mean square of z (at least ``min_fit`` finite values), known at i."""
    roll = pd.Series(z * z).rolling(fit_window, min_periods=min_fit)
    return np.sqrt(roll.mean().to_numpy(float))


def _cf_moments(z: np.ndarray, fit_window: int, min_fit: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing bias-corrected sample skewness and excess kurtosis of z (pandas' G1, G2)."""
    roll = pd.Series(z).rolling(fit_window, min_periods=min_fit)
    return roll.skew().to_numpy(float), roll.kurt().to_numpy(float)


def _ewma_core(
    r: np.ndarray,
    sigma: np.ndarray,
    levels: tuple[float, ...],
    dist: str,
    fit_window: int,
    min_fit: int,
    refit_every: int,
    scale_correction: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """VaR/CVaR = sigma x multiplier of the standardised distribution ``dist``.

    ``r`` are the realised returns and ``sigma`` the origin-aligned volatility forecasts;
    the shape of the t and Cornish-Fisher models is estimated on ``r[i] / sigma[i-1]``.
    With ``scale_correction`` sigma is multiplied by the trailing RMS of those
    standardised returns (returned as ``params["scale"]``).
    """
    n = r.size
    var = np.full((len(levels), n), np.nan)
    cvar = np.full_like(var, np.nan)
    params: dict[str, np.ndarray] = {}
    if dist == "normal":
        for j, lvl in enumerate(levels):
            var[j] = sigma * normal_var(lvl)
            cvar[j] = sigma * normal_cvar(lvl)
        return var, cvar, params
    z = _standardise(r, sigma)
    if scale_correction:
        # EWMA under-forecasts the scale of its own surprises (noise in sigma and fat
        # tails make E[(r / sigma)^2] > 1: RMS 1.07 to 1.37 on six large daily Binance
        # coins, 1.11 on BTC). The t and
        # Cornish-Fisher multipliers assume a unit-variance z, so rescale sigma causally.
        scale = _rms_path(z, fit_window, min_fit)
        params["scale"] = scale
        sigma = sigma * scale
    if dist == "t":
        df = _t_df_path(z, fit_window, min_fit, refit_every, scale_correction)
        params["df"] = df
        ok = np.isfinite(df)
        for j, lvl in enumerate(levels):
            var[j, ok] = sigma[ok] * standardized_t_var(lvl, df[ok])
            cvar[j, ok] = sigma[ok] * standardized_t_cvar(lvl, df[ok])
        return var, cvar, params
    if dist == "cf":
        skew, kurt = _cf_moments(z, fit_window, min_fit)
        s, k = cornish_fisher_safeguard(skew, kurt)
        params.update(skewness=skew, excess_kurtosis=kurt, cf_skewness=s, cf_excess_kurtosis=k)
        for j, lvl in enumerate(levels):
            var[j] = -sigma * cornish_fisher_quantile(1.0 - lvl, s, k)
            cvar[j] = sigma * cornish_fisher_cvar(lvl, s, k)
        return var, cvar, params
    raise ValueError(f"unknown distribution {dist!r}")


# --------------------------------------------------------------------------- column driver

CoreResult = tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, np.ndarray]]


def _run_columns(
    returns: Frame,
    method: str,
    levels: tuple[float, ...],
    align: Align,
    core: Callable[[np.ndarray], CoreResult],
) -> VarForecast:
    """Run ``core`` on each column's observed bars and place its forecasts on the index."""
    frame = _as_frame(returns)
    values = frame.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    nan = np.full((n_rows, n_cols), np.nan)
    var = {lvl: nan.copy() for lvl in levels}
    cvar = {lvl: nan.copy() for lvl in levels}
    vol: np.ndarray | None = None
    params: dict[str, np.ndarray] = {}
    for c in range(n_cols):
        rows = np.flatnonzero(np.isfinite(values[:, c]))
        if rows.size == 0:
            continue
        v, cv, sigma, prm = core(values[rows, c])
        # Origin: the forecast made at observed bar i sits on that bar. Target: it sits on
        # the next observed bar, the one it is a forecast for; the last one has no target.
        if align == "origin":
            dest, src = rows, slice(None)
        else:
            dest, src = rows[1:], slice(None, -1)
        for j, lvl in enumerate(levels):
            var[lvl][dest, c] = v[j, src]
            cvar[lvl][dest, c] = cv[j, src]
        if sigma is not None:
            if vol is None:
                vol = nan.copy()
            vol[dest, c] = sigma[src]
        for key, arr in prm.items():
            params.setdefault(key, nan.copy())[dest, c] = arr[src]
    return VarForecast(
        method=method,
        var={lvl: _wrap(a, returns) for lvl, a in var.items()},
        cvar={lvl: _wrap(a, returns) for lvl, a in cvar.items()},
        volatility=None if vol is None else _wrap(vol, returns),
        params={key: _wrap(a, returns) for key, a in params.items()},
        align=align,
    )


# --------------------------------------------------------------------------- public models


def historical_var(
    returns: Frame,
    *,
    levels: Iterable[float] = LEVELS,
    window: int = 250,
    min_periods: int | None = None,
    align: Align = "target",
) -> VarForecast:
    """Historical-simulation VaR/CVaR over the trailing ``window`` bars (default 250).

    Same estimator as :func:`trimtab.analytics.metrics.value_at_risk` and
    ``conditional_value_at_risk`` applied to each trailing window: the quantile is linearly
    interpolated between order statistics (``np.quantile(method="linear")``, Hyndman &
    Fan type 7); CVaR is minus the mean of the ``floor((m - 1)(1 - level)) + 1`` smallest
    returns of the window of length m. With ``min_periods < window`` the window expands
    from ``min_periods`` bars; by default forecasts start once ``window`` bars exist.
    """
    lv = _check_levels(levels)
    window = _check_int("window", window, 2)
    mp = window if min_periods is None else _check_int("min_periods", min_periods, 1)
    if mp > window:
        raise ValueError(f"min_periods ({mp}) must not exceed window ({window})")

    def core(r: np.ndarray) -> CoreResult:
        v, c = _historical_core(r, lv, window, mp)
        return v, c, None, {}

    return _run_columns(returns, "historical", lv, _check_align(align), core)


def ewma_volatility(
    returns: Frame,
    *,
    lam: float = RISKMETRICS_LAMBDA,
    seed: int = 30,
    align: Align = "target",
) -> Frame:
    """RiskMetrics EWMA volatility forecast per bar (a fraction, not annualised).

    ``sigma2_{t+1|t} = lam * sigma2_{t|t-1} + (1 - lam) * r_t^2`` with zero mean, seeded with
    the mean squared return of each column's first ``seed`` bars (so the first forecast is
    made at the close of its ``seed``-th bar).
    """
    fc = ewma_normal_var(returns, levels=(0.99,), lam=lam, seed=seed, align=align)
    if fc.volatility is None:  # every EWMA model sets it; this narrows the type
        raise RuntimeError("EWMA model returned no volatility")
    return fc.volatility


def _ewma_model(
    returns: Frame,
    method: str,
    dist: str,
    levels: Iterable[float],
    lam: float,
    seed: int,
    fit_window: int,
    min_fit: int,
    refit_every: int,
    align: Align,
    scale_correction: bool = False,
) -> VarForecast:
    lv = _check_levels(levels)
    lam = _check_lambda(lam)
    seed = _check_int("seed", seed, 1)
    min_fit = _check_int("min_fit", min_fit, 10)
    fit_window = _check_int("fit_window", fit_window, min_fit)
    refit_every = _check_int("refit_every", refit_every, 1)

    def core(r: np.ndarray) -> CoreResult:
        sigma = np.sqrt(_ewma_variance_core(r, lam, seed))
        v, c, prm = _ewma_core(
            r, sigma, lv, dist, fit_window, min_fit, refit_every, scale_correction
        )
        return v, c, sigma, prm

    return _run_columns(returns, method, lv, _check_align(align), core)


def ewma_normal_var(
    returns: Frame,
    *,
    levels: Iterable[float] = LEVELS,
    lam: float = RISKMETRICS_LAMBDA,
    seed: int = 30,
    align: Align = "target",
) -> VarForecast:
    """RiskMetrics VaR/CVaR: EWMA volatility x the normal multipliers (thin-tailed benchmark).

    ``VaR = sigma * Phi^-1(level)``, ``CVaR = sigma * phi(Phi^-1(level)) / (1 - level)``.
    """
    return _ewma_model(returns, "ewma_normal", "normal", levels, lam, seed, 10, 10, 1, align)


def ewma_t_var(
    returns: Frame,
    *,
    levels: Iterable[float] = LEVELS,
    lam: float = RISKMETRICS_LAMBDA,
    seed: int = 30,
    fit_window: int = 1000,
    min_fit: int = 250,
    refit_every: int = 30,
    align: Align = "target",
    scale_correction: bool = False,
) -> VarForecast:
    """EWMA volatility x a unit-variance Student-t with fitted degrees of freedom.

    Standardised returns ``z_t = r_t / sigma_{t|t-1}`` are known at t. The df is fitted by
    maximum likelihood (:func:`fit_standardized_t_df`) on the last ``fit_window`` of them,
    first once ``min_fit`` exist, then every ``refit_every`` bars; in between, the last fit
    is used. VaR and CVaR use :func:`standardized_t_var` and :func:`standardized_t_cvar`:
    ``VaR = sigma * t_df^-1(level) * sqrt((df - 2) / df)``.

    ``scale_correction=True`` (off by default: plain RiskMetrics scale) multiplies sigma by
    the trailing root mean square of the standardised returns (same window, known at t)
    and fits the df on the window divided by that RMS, so the unit-variance t meets data of
    unit second moment. EWMA(0.94) surprises have an RMS above 1 on crypto, which leaves
    the plain model with too many 99 % hits on BTC (see the tests).
    """
    return _ewma_model(
        returns,
        "ewma_t",
        "t",
        levels,
        lam,
        seed,
        fit_window,
        min_fit,
        refit_every,
        align,
        scale_correction,
    )


def ewma_cornish_fisher_var(
    returns: Frame,
    *,
    levels: Iterable[float] = LEVELS,
    lam: float = RISKMETRICS_LAMBDA,
    seed: int = 30,
    fit_window: int = 1000,
    min_fit: int = 250,
    align: Align = "target",
    scale_correction: bool = False,
) -> VarForecast:
    """EWMA volatility x a Cornish-Fisher quantile from trailing skewness and kurtosis.

    Skewness and excess kurtosis are the bias-corrected sample values (pandas' ``skew``,
    ``kurt``) of the last ``fit_window`` standardised returns (at least ``min_fit``),
    updated every bar. They are projected onto the monotonic domain by
    :func:`cornish_fisher_safeguard` before use; CVaR is the exact tail mean of the
    resulting quantile function (:func:`cornish_fisher_cvar`). ``scale_correction`` as in
    :func:`ewma_t_var` (skewness and kurtosis do not depend on the scale).
    """
    return _ewma_model(
        returns, "ewma_cf", "cf", levels, lam, seed, fit_window, min_fit, 1, align, scale_correction
    )


_MODELS: dict[str, Callable[..., VarForecast]] = {
    "historical": historical_var,
    "ewma_normal": ewma_normal_var,
    "ewma_t": ewma_t_var,
    "ewma_cf": ewma_cornish_fisher_var,
}


def var_forecast(returns: Frame, method: str, **kwargs: object) -> VarForecast:
    """Dispatch to a model by name (one of :data:`METHODS`); ``kwargs`` go to the model."""
    try:
        model = _MODELS[method]
    except KeyError:
        raise ValueError(f"unknown VaR method {method!r}; expected one of {METHODS}") from None
    return model(returns, **kwargs)


# --------------------------------------------------------------------------- portfolios


def _aligned_weights(asset_returns: pd.DataFrame, weights: pd.Series | pd.DataFrame) -> np.ndarray:
    """Weights as a (time x asset) array in the columns of ``asset_returns``, NaN -> 0."""
    cols = asset_returns.columns
    if isinstance(weights, pd.Series):
        unknown = weights.index.difference(cols)
        if len(unknown):
            raise ValueError(f"weights for assets without returns: {list(unknown)}")
        row = weights.reindex(cols).to_numpy(dtype=float)
        w = np.broadcast_to(row, asset_returns.shape).copy()
    elif isinstance(weights, pd.DataFrame):
        if not weights.index.equals(asset_returns.index):
            raise ValueError("a weights DataFrame must have the same index as asset_returns")
        unknown = weights.columns.difference(cols)
        if len(unknown):
            raise ValueError(f"weights for assets without returns: {list(unknown)}")
        w = weights.reindex(columns=cols).to_numpy(dtype=float)
    else:
        raise ValueError(f"weights must be a Series or DataFrame, got {type(weights).__name__}")
    if np.any(np.isinf(w)):
        raise ValueError("weights contain infinite values")
    # A NaN weight is an asset not held (typically one not listed yet).
    return np.nan_to_num(w, nan=0.0)


def _portfolio_arrays(
    asset_returns: pd.DataFrame, weights: pd.Series | pd.DataFrame, strict: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights W, proxied return history H, realised portfolio returns r_p), row-aligned.

    H replaces a missing return by the equal-weighted mean return of the assets that have
    one on that bar (0 when none has); see :func:`portfolio_var`.
    """
    frame = _as_frame(asset_returns, "asset_returns")
    if not isinstance(asset_returns, pd.DataFrame):
        raise ValueError("asset_returns must be a (time x asset) DataFrame")
    w = _aligned_weights(frame, weights)
    raw = frame.to_numpy(dtype=float)
    missing = np.isnan(raw)
    rz = np.where(missing, 0.0, raw)
    rp = np.full(raw.shape[0], np.nan)
    if raw.shape[0] > 1:
        held = w[:-1] != 0
        if strict and np.any(held & missing[1:]):
            t, i = np.argwhere(held & missing[1:])[0]
            raise ValueError(
                f"asset {frame.columns[i]!r} is held at {frame.index[t]} but has no return "
                f"at {frame.index[t + 1]}"
            )
        # The weights chosen at the close of t earn the returns of bar t+1.
        rp[1:] = np.einsum("ti,ti->t", w[:-1], rz[1:])
    if isinstance(weights, pd.Series) and raw.shape[0]:
        # Constant weights are known before the first bar too.
        rp[0] = float(w[0] @ rz[0])
    present = (~missing).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        market = np.where(present > 0, rz.sum(axis=1, keepdims=True) / present, 0.0)
    history = np.where(missing, market, raw)
    return w, history, rp


def portfolio_returns(
    asset_returns: pd.DataFrame, weights: pd.Series | pd.DataFrame, *, strict: bool = False
) -> pd.Series:
    """Realised portfolio returns: ``r_p[t+1] = sum_i w_i[t] * r_i[t+1]``.

    ``weights`` are fractions of equity (they need not sum to 1; the rest is cash, and
    negative weights are shorts), either a Series by asset (constant weights, rebalanced
    every bar) or a (time x asset) DataFrame on the same index as ``asset_returns`` whose
    row t is known at the close of t and therefore applies to the returns of t+1: the
    first bar of a DataFrame has no return (NaN). A NaN weight means "not held". A held
    asset without a return (delisted, a gap) contributes 0, as if its position were cash
    at the last close; ``strict=True`` raises instead.
    """
    _, _, rp = _portfolio_arrays(asset_returns, weights, strict)
    return pd.Series(rp, index=asset_returns.index, name="portfolio")


def _portfolio_ewma_sigma(w: np.ndarray, rz: np.ndarray, lam: float, seed: int) -> np.ndarray:
    """Origin-aligned ``sqrt(w_t' S_t w_t)`` with ``S_t`` the RiskMetrics EWMA covariance.

    ``S`` is seeded with the mean outer product of the first ``seed`` return rows, then ``S_t = lam S_{t-1} + (1 - lam) r_t r_t'``: a sum of outer products, so it
    is positive semi-definite by construction. A row-by-row loop keeps memory at O(N^2).
    """
    n, _ = rz.shape
    sigma = np.full(n, np.nan)
    if n < seed:
        return sigma
    cov = rz[:seed].T @ rz[:seed] / seed
    for t in range(seed - 1, n):
        if t >= seed:
            cov = lam * cov + (1.0 - lam) * np.outer(rz[t], rz[t])
        sigma[t] = np.sqrt(max(float(w[t] @ cov @ w[t]), 0.0))
    return sigma


def portfolio_var(
    asset_returns: pd.DataFrame,
    weights: pd.Series | pd.DataFrame,
    *,
    method: str = "ewma_t",
    levels: Iterable[float] = LEVELS,
    window: int = 250,
    min_periods: int | None = None,
    lam: float = RISKMETRICS_LAMBDA,
    seed: int = 30,
    fit_window: int = 1000,
    min_fit: int = 250,
    refit_every: int = 30,
    align: Align = "target",
    strict: bool = False,
    scale_correction: bool = False,
) -> VarForecast:
    """VaR/CVaR of a weighted portfolio, forecast at t with the weights known at t.

    The forecast made at the close of t for bar t+1 applies the CURRENT weights ``w[t]``
    to past asset returns, so a change of weights changes the risk at once (the portfolio
    that will be held, not the one that was):

    - ``"historical"``: the quantile of ``sum_i w_i[t] r_i[s]`` over the last ``window``
      bars s <= t (same estimator as :func:`historical_var`);
    - EWMA models: ``sigma = sqrt(w[t]' S_t w[t])`` with the RiskMetrics EWMA covariance
      ``S_t`` (zero mean, seeded with the first ``seed`` rows); the t / Cornish-Fisher shape
      is fitted on the realised standardised portfolio returns
      ``r_p[t] / sigma_{t|t-1}`` (see :func:`portfolio_returns`), and so is the optional
      ``scale_correction`` of :func:`ewma_t_var`.

    Missing asset returns in the HISTORY (an asset before its listing, which a current
    weight may hold) are proxied by the equal-weighted mean return of the assets listed on
    that bar: a new coin is assumed to have moved like the market. This keeps its weight
    in the simulated losses (counting it as 0 understated the 99 % VaR of an equal-weight
    book of the Binance coins by enough to fail Kupiec) but ignores its own, usually
    larger, idiosyncratic risk until it has a history. The realised portfolio returns
    (the backtest's truth) still count a held asset without a return as cash. Alignment and parameters are as in the single-series models; the result
    is a Series named "portfolio". Backtest it against :func:`portfolio_returns`.
    """
    lv = _check_levels(levels)
    al = _check_align(align)
    w, rz, rp = _portfolio_arrays(asset_returns, weights, strict)  # rz: proxied history
    n = rp.size
    var = np.full((len(lv), n), np.nan)
    cvar = np.full_like(var, np.nan)
    sigma: np.ndarray | None = None
    params: dict[str, np.ndarray] = {}
    if method == "historical":
        window = _check_int("window", window, 2)
        mp = window if min_periods is None else _check_int("min_periods", min_periods, 1)
        if mp > window:
            raise ValueError(f"min_periods ({mp}) must not exceed window ({window})")
        for i in range(mp - 1, min(window - 1, n)):
            v, c = _historical_from_windows((rz[: i + 1] @ w[i])[None, :], lv)
            var[:, i], cvar[:, i] = v[:, 0], c[:, 0]
        if n >= window:
            # windows[k] is the (asset x window) block ending at row k + window - 1.
            windows = sliding_window_view(rz, window, axis=0)
            hypo = np.einsum("kiw,ki->kw", windows, w[window - 1 :])
            var[:, window - 1 :], cvar[:, window - 1 :] = _historical_from_windows(hypo, lv)
    elif method in ("ewma_normal", "ewma_t", "ewma_cf"):
        lam = _check_lambda(lam)
        seed = _check_int("seed", seed, 1)
        min_fit = _check_int("min_fit", min_fit, 10)
        fit_window = _check_int("fit_window", fit_window, min_fit)
        refit_every = _check_int("refit_every", refit_every, 1)
        sigma = _portfolio_ewma_sigma(w, rz, lam, seed)
        dist = {"ewma_normal": "normal", "ewma_t": "t", "ewma_cf": "cf"}[method]
        # The realised r_p[0] of a weight frame is NaN; the standardiser leaves it NaN.
        var, cvar, params = _ewma_core(
            rp, sigma, lv, dist, fit_window, min_fit, refit_every, scale_correction
        )
    else:
        raise ValueError(f"unknown VaR method {method!r}; expected one of {METHODS}")

    index = asset_returns.index

    def place(a: np.ndarray) -> pd.Series:
        out = np.full(n, np.nan)
        if al == "origin":
            out[:] = a
        else:
            out[1:] = a[:-1]
        return pd.Series(out, index=index, name="portfolio")

    return VarForecast(
        method=method,
        var={lvl: place(var[j]) for j, lvl in enumerate(lv)},
        cvar={lvl: place(cvar[j]) for j, lvl in enumerate(lv)},
        volatility=None if sigma is None else place(sigma),
        params={key: place(a) for key, a in params.items()},
        align=al,
    )
