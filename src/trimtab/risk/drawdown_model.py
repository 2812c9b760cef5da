"""Calibrated probability of a large portfolio drawdown over the next days.

**The event (label).** For a portfolio with simple returns ``r_p`` (bar t's return is
earned by the weights known at the close of t-1) and wealth ``W``, the event at bar t is

    min_{k = 1..H} W_{t+k} / W_t - 1  <  -X

i.e. at some close within the next ``H`` bars the portfolio is worth more than ``X``
(default 10 %) less than at the close of t: the worst mark-to-market loss of a position
held from today's close, measured at closes (not intrabar lows: wicks on crypto bars are
too often bad ticks). A rally followed by a fall that ends above today's value is not an
event even if the fall from the new peak exceeds X. ``H`` is given in days (default 7)
and converted with the timeframe: 7 bars of 1d, 168 bars of 1h.

The label at t uses the returns of bars t+1..t+H, so it is known at the close of t+H and
not before: a model refitted at the close of bar s trains only on samples t with
``t + H <= s`` (``training_rows``). Labels are NaN where a return in the window is
missing or the window runs past the data.

**Features** at t are computed once over the whole input with trailing windows (every
value at t uses bars up to t), then indexed; windows are in days and converted to bars.
``FEATURE_DESCRIPTIONS`` lists them with units. *Series* features describe one return
series (the portfolio, or one asset); *market* features describe the universe (the
listed assets of the panel, or of ``universe``) and are shared by every row at a bar.
The default set (``DEFAULT_FEATURES``) keeps one feature per concept; the other features
stay available. Why: fitted on one portfolio, a set of 16 (several windows per concept)
lost to the volatility-only baseline out of sample on 2019-2023 daily and 2018-2021
hourly data (AUC lower in 9 of 10 threshold/horizon settings): collinear features split
weak, unstable effects and the fit followed noise. Caveat: these design choices were
made by looking at those same periods, so the figures they give are somewhat optimistic.

**Model** (``DrawdownModel``): a walk-forward L2 logistic regression on standardised
features, first fitted once ``min_train`` days of usable labelled portfolio samples (and
``min_events`` events and non-events) exist, then refitted every ``refit_every`` days on
an expanding window; each fit predicts the bars from its fit time up to the next refit.

- Pooling (``pool_assets=True``, the default for a Panel): the regression is fitted on
  the portfolio *and* on every asset of the universe as if each were a portfolio of its
  own (its own series features, label and the shared market features). One portfolio
  has only about a hundred separate crash episodes in six years; the assets add many
  more, with the same mechanics (a volatile, falling asset loses 10 % in a week more
  often). Because crypto assets move together, the rows of one bar are weighted to sum
  to 1, so pooling adds cross-sectional information, not pseudo-replicated samples.
- Training samples are taken once per UTC day (every bar of daily data): neighbouring
  intraday labels overlap almost entirely, so this loses nothing and keeps hourly fits
  cheap.
- Level recalibration: after each fit, an intercept shift is fitted by maximum
  likelihood on the portfolio's own training samples (the pooled score as offset), so
  the probability level is the portfolio's, not the assets' average.
- ``class_weight`` is left at None so the output stays a probability.

The **baseline** is the same procedure (same rows, weights, schedule, recalibration) on
``log_vol_30d`` alone. ``evaluate_drawdown_model`` scores both out of sample.
``DrawdownModel(pool_assets=False, features=("log_vol_30d",))`` is the plainer
reference, volatility fitted on the portfolio alone; it ranks worse than both and, on
the daily data, is better calibrated in 2019-2020 (after a 2017-2018 training period
of bubble and crash, every model here over-predicts 2019-2020).

How much to expect: the event is only weakly predictable. On daily 2019-2023 the model's
out-of-sample AUC is about 0.58 and its Brier score about climatology's; within a
single year most features barely rank the days. Treat the probability as a slowly
moving level of danger, not a timing signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from trimtab.data.calendar import calendar_mask
from trimtab.data.panel import Panel, infer_timeframe, timeframe_seconds, to_utc
from trimtab.risk.var import portfolio_returns
from trimtab.signals.correlation import (
    absorption_ratio,
    average_pairwise_correlation,
    correlation_shift,
)
from trimtab.signals.liquidity import volume_trend

__all__ = [
    "BASELINE_FEATURES",
    "BROAD_FEATURES",
    "DEFAULT_FEATURES",
    "FEATURE_DESCRIPTIONS",
    "MARKET_FEATURES",
    "DrawdownExplanation",
    "DrawdownForecast",
    "DrawdownModel",
    "FitRecord",
    "calibration_table",
    "days_to_bars",
    "drawdown_features",
    "drawdown_labels",
    "equal_weights",
    "evaluate_drawdown_model",
    "evaluate_forecast",
    "forward_min_return",
    "panel_portfolio_returns",
    "training_rows",
]

#: What each feature is, with its units (the risk score's breakdown shows these names).
FEATURE_DESCRIPTIONS: dict[str, str] = {
    "log_vol_7d": "ln of the annualised std of returns over 7 days",
    "log_vol_30d": "ln of the annualised std of returns over 30 days",
    "log_vol_90d": "ln of the annualised std of returns over 90 days",
    "log_ewma_vol": "ln of the annualised RiskMetrics EWMA vol (lambda 0.94 per day)",
    "vol_of_vol_90d": "std over 90 days of log_vol_7d (how unstable volatility is)",
    "vol_ratio_7d_90d": "log_vol_7d - log_vol_90d (short over long volatility, in ln)",
    "vol_asymmetry_30d": "ln(downside / upside semideviation of returns) over 30 days",
    "drawdown_365d": "value / its max over 365 days - 1 (<= 0, fraction)",
    "ret_7d": "simple return over the last 7 days (fraction)",
    "ret_30d": "simple return over the last 30 days (fraction)",
    "ret_90d": "simple return over the last 90 days (fraction)",
    "trend_ma_50d": "ln(value / its 50-day simple moving average)",
    "efficiency_30d": "signed efficiency ratio of ln value over 30 days, in [-1, 1]",
    "avg_corr_30d": "mean pairwise correlation of the universe's returns over 30 days",
    "corr_shift_30d_90d": "mean pairwise correlation over 30 days minus over 90 days",
    "absorption_90d": "absorption ratio (top fifth of eigenvalues) over 90 days, (0, 1]",
    "volume_trend_7d_90d": "mean over the universe of ln(7-day / 90-day quote volume)",
    "breadth_down_50d": "fraction of the universe closing below its 50-day average",
    "regime_turbulent": "filtered HMM probability of the most volatile regime",
}

#: Features of the universe, shared by every row of a bar (need a Panel, except the
#: regime, which a returns series gets from the series itself).
MARKET_FEATURES: tuple[str, ...] = (
    "avg_corr_30d",
    "corr_shift_30d_90d",
    "absorption_90d",
    "volume_trend_7d_90d",
    "breadth_down_50d",
    "regime_turbulent",
)
_PANEL_ONLY = MARKET_FEATURES[:-1]

#: The volatility family and the depth of the current drawdown: volatility level, fast
#: volatility, instability of volatility, drawdown from the 1-year high. Trend,
#: correlation, volume and breadth (``BROAD_FEATURES``) helped on the shared 2019-2023
#: data but lost to the baseline on a held-out set of ten coins, so they are opt-in.
DEFAULT_FEATURES: tuple[str, ...] = (
    "log_vol_30d",
    "log_ewma_vol",
    "vol_of_vol_90d",
    "drawdown_365d",
)

#: One feature per concept, the broader set.
BROAD_FEATURES: tuple[str, ...] = (
    *DEFAULT_FEATURES,
    "trend_ma_50d",
    "avg_corr_30d",
    "volume_trend_7d_90d",
    "breadth_down_50d",
)

#: The volatility-only baseline.
BASELINE_FEATURES: tuple[str, ...] = ("log_vol_30d",)


def expit(x: Any) -> Any:
    """The logistic function 1 / (1 + exp(-x)), elementwise (float64).

    ``scipy.special.expit``'s formula for doubles, in NumPy: importing scipy.special
    (its array-API layer) was a quarter of a second of a first review. Where NumPy's
    float64 exp is the C library's (x86-64 with AVX2 and no AVX-512, as the machine these
    figures were pinned on) the values are scipy's to the bit
    (``tests/risk/test_lbfgsb.py`` checks 800,000 values and both tails); with NumPy's
    own AVX-512 exp they may differ from scipy's by an ulp.
    """
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -709: 1/inf = 0
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


_VOL_FLOOR = 1e-6  # annualised; a flat window would otherwise give ln(0)
_EWMA_LAMBDA_PER_DAY = 0.94  # RiskMetrics daily decay (half-life about 11 days)


# --------------------------------------------------------------------------- time


def _bars_per_day(timeframe: str) -> float:
    return 86400.0 / timeframe_seconds(timeframe)


def days_to_bars(days: float, timeframe: str, *, minimum: int = 1) -> int:
    """A duration in days as a whole number of bars of ``timeframe`` (7 days of 1h: 168)."""
    bars = days * _bars_per_day(timeframe)
    n = round(bars)
    if abs(bars - n) > 1e-9 * max(1.0, bars):
        raise ValueError(f"{days} days is not a whole number of {timeframe} bars ({bars:g})")
    return max(int(n), minimum)


def _ppy(timeframe: str) -> float:
    return 365.0 * _bars_per_day(timeframe)


# --------------------------------------------------------------------------- portfolio


def _members(panel: Panel, universe: pd.DataFrame | None) -> pd.DataFrame:
    live = panel.live
    if universe is None:
        return live
    return live & universe.reindex_like(live).fillna(False).astype(bool)


def equal_weights(panel: Panel, universe: pd.DataFrame | None = None) -> pd.DataFrame:
    """Equal weights (fractions of equity) over the assets listed at each bar.

    ``universe`` (boolean, timestamp x symbol, e.g. from ``select_universe``) restricts
    the assets further. Row t uses only what is known at the close of t (listing at t).
    Rows with no asset are all zero (cash).
    """
    held = _members(panel, universe)
    n = held.sum(axis=1).to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(held.to_numpy(), 1.0 / n[:, None], 0.0)
    return pd.DataFrame(w, index=held.index, columns=held.columns)


def panel_portfolio_returns(panel: Panel, weights: pd.DataFrame | None = None) -> pd.Series:
    """Portfolio simple returns: weights known at the close of t earn the returns of t+1.

    ``weights`` default to ``equal_weights(panel)``. The first bar has no return (NaN).
    """
    w = equal_weights(panel) if weights is None else weights
    w = w.reindex(index=panel.index, columns=panel.symbols).fillna(0.0)
    asset_returns = panel.close / panel.close.shift(1) - 1.0
    return portfolio_returns(asset_returns, w).rename("portfolio")


def _log_wealth(returns: pd.Series | pd.DataFrame) -> np.ndarray:
    """Cumulative log wealth per column; NaN before the first return, gaps count as 0."""
    r = returns.to_numpy(dtype=float)
    finite = np.isfinite(r)
    started = np.cumsum(finite, axis=0) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log1p(np.where(finite, r, 0.0))
    return np.where(started, np.cumsum(lr, axis=0), np.nan)


def _like(values: np.ndarray, template: pd.Series | pd.DataFrame) -> Any:
    if isinstance(template, pd.DataFrame):
        return pd.DataFrame(values, index=template.index, columns=template.columns)
    return pd.Series(values, index=template.index)


# --------------------------------------------------------------------------- labels


def _forward_min(r: np.ndarray, horizon_bars: int) -> np.ndarray:
    """Column-wise ``min_{k=1..H} W_{t+k}/W_t - 1`` of a (T,) or (T, N) return array."""
    r2 = r[:, None] if r.ndim == 1 else r
    n = r2.shape[0]
    out = np.full(r2.shape, np.nan)
    if n > horizon_bars:
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log1p(r2)
        ok = np.isfinite(lr)
        lw = np.cumsum(np.where(ok, lr, 0.0), axis=0)
        # future[t, :, k] = lw[t + 1 + k]: the log wealth of the next H closes.
        future = sliding_window_view(lw[1:], horizon_bars, axis=0)
        complete = sliding_window_view(ok[1:], horizon_bars, axis=0).all(axis=-1)
        fmin = future.min(axis=-1) - lw[: n - horizon_bars]
        out[: n - horizon_bars] = np.where(complete, np.expm1(fmin), np.nan)
    return out[:, 0] if r.ndim == 1 else out


def forward_min_return(returns: pd.Series, horizon_bars: int) -> pd.Series:
    """``min_{k=1..H} W_{t+k} / W_t - 1`` per bar t, a simple return (< 0 is a loss).

    Uses the returns of bars t+1..t+H; NaN where any of them is missing or the window
    runs past the data (the last H bars are always NaN).
    """
    if horizon_bars < 1:
        raise ValueError(f"horizon_bars must be at least 1, got {horizon_bars}")
    fmin = _forward_min(returns.to_numpy(dtype=float), horizon_bars)
    return pd.Series(fmin, index=returns.index, name="forward_min_return")


def _labels(r: np.ndarray, threshold: float, horizon_bars: int) -> np.ndarray:
    fmin = _forward_min(r, horizon_bars)
    return np.where(np.isfinite(fmin), (fmin < -threshold).astype(float), np.nan)


def drawdown_labels(returns: pd.Series, threshold: float, horizon_bars: int) -> pd.Series:
    """1.0 where the portfolio loses more than ``threshold`` within the next H bars.

    The event of the module docstring: ``forward_min_return < -threshold``; 0.0 where
    it does not; NaN where the label is not known from the data.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a fraction in (0, 1), got {threshold!r}")
    if horizon_bars < 1:
        raise ValueError(f"horizon_bars must be at least 1, got {horizon_bars}")
    lab = _labels(returns.to_numpy(dtype=float), threshold, horizon_bars)
    return pd.Series(lab, index=returns.index, name="drawdown_event")


def training_rows(n_rows: int, fit_pos: int, horizon_bars: int) -> np.ndarray:
    """Rows (positions) whose label is fully known at the close of bar ``fit_pos``.

    Sample t is allowed iff ``t + horizon_bars <= fit_pos``: its label uses bars up to
    t + H. Boolean mask of length ``n_rows``.
    """
    return np.arange(n_rows) + horizon_bars <= fit_pos


# --------------------------------------------------------------------------- features


def _series_features(
    returns: pd.Series | pd.DataFrame, timeframe: str, wanted: set[str]
) -> dict[str, Any]:
    """Series features of a return series, or of each column of a frame."""
    b = lambda d: days_to_bars(d, timeframe, minimum=2)  # noqa: E731
    ppy = _ppy(timeframe)
    r = returns.astype(float)
    lw = _like(_log_wealth(r), r)
    wealth = np.exp(lw)
    out: dict[str, Any] = {}

    def std(x: Any, days: int) -> Any:
        return x.rolling(b(days), min_periods=b(days)).std(ddof=1)

    def log_vol(days: int) -> Any:
        return np.log((std(r, days) * math.sqrt(ppy)).clip(lower=_VOL_FLOOR))

    need_7 = wanted & {"log_vol_7d", "vol_of_vol_90d", "vol_ratio_7d_90d"}
    need_90 = wanted & {"log_vol_90d", "vol_ratio_7d_90d"}
    lv7 = log_vol(7) if need_7 else None
    lv90 = log_vol(90) if need_90 else None
    if "log_vol_7d" in wanted:
        out["log_vol_7d"] = lv7
    if "log_vol_30d" in wanted:
        out["log_vol_30d"] = log_vol(30)
    if "log_vol_90d" in wanted:
        out["log_vol_90d"] = lv90
    if "vol_ratio_7d_90d" in wanted:
        out["vol_ratio_7d_90d"] = lv7 - lv90
    if "vol_of_vol_90d" in wanted:
        out["vol_of_vol_90d"] = std(lv7, 90)
    if "log_ewma_vol" in wanted:
        lam = _EWMA_LAMBDA_PER_DAY ** (1.0 / _bars_per_day(timeframe))
        # Zero-mean RiskMetrics variance; pandas' adjusted ewm is causal and needs no seed.
        var = (r * r).ewm(alpha=1.0 - lam, adjust=True, min_periods=b(30)).mean()
        out["log_ewma_vol"] = np.log(np.sqrt(var * ppy).clip(lower=_VOL_FLOOR))
    if "vol_asymmetry_30d" in wanted:
        n = b(30)
        down = (r.clip(upper=0.0) ** 2).rolling(n, min_periods=n).mean()
        up = (r.clip(lower=0.0) ** 2).rolling(n, min_periods=n).mean()
        out["vol_asymmetry_30d"] = 0.5 * np.log(down.where(down > 0) / up.where(up > 0))
    if "drawdown_365d" in wanted:
        peak = wealth.rolling(b(365), min_periods=1).max()
        out["drawdown_365d"] = wealth / peak - 1.0
    for d in (7, 30, 90):
        if f"ret_{d}d" in wanted:
            out[f"ret_{d}d"] = np.expm1(lw - lw.shift(b(d)))
    if "trend_ma_50d" in wanted:
        out["trend_ma_50d"] = lw - np.log(wealth.rolling(b(50), min_periods=b(50)).mean())
    if "efficiency_30d" in wanted:
        n = b(30)
        path = lw.diff().abs().rolling(n, min_periods=n).sum()
        out["efficiency_30d"] = (lw - lw.shift(n)) / path.where(path > 0)
    return out


def _market_features(panel: Panel, members: pd.DataFrame, wanted: set[str]) -> dict[str, pd.Series]:
    """Market features of the universe ``members`` (boolean timestamp x symbol)."""
    b = lambda d: days_to_bars(d, panel.timeframe, minimum=2)  # noqa: E731
    close = panel.close.where(members)
    rets = close / close.shift(1) - 1.0
    out: dict[str, Any] = {}
    if "avg_corr_30d" in wanted:
        out["avg_corr_30d"] = average_pairwise_correlation(rets, b(30))
    if "corr_shift_30d_90d" in wanted:
        shift = correlation_shift(rets, short=b(30), long=b(90), z_window=b(90))
        out["corr_shift_30d_90d"] = shift.market_shift
    if "absorption_90d" in wanted:
        out["absorption_90d"] = absorption_ratio(rets, b(90), use_correlation=True)
    if "volume_trend_7d_90d" in wanted:
        vt = volume_trend(panel.quote_volume.where(members), b(7), b(90))
        out["volume_trend_7d_90d"] = vt.mean(axis=1, skipna=True)
    if "breadth_down_50d" in wanted:
        n = b(50)
        sma = close.rolling(n, min_periods=n).mean()
        valid = sma.notna() & close.notna()
        count = valid.sum(axis=1).astype(float)
        out["breadth_down_50d"] = ((close < sma) & valid).sum(axis=1) / count.where(count > 0)
    if "regime_turbulent" in wanted:
        market = rets.mean(axis=1, skipna=True).where(members.any(axis=1))
        out["regime_turbulent"] = _regime_feature(market, panel.timeframe)
    return {k: pd.Series(np.asarray(v, dtype=float), index=panel.index) for k, v in out.items()}


def _regime_feature(returns: pd.Series, timeframe: str) -> pd.Series:
    """P(most volatile state) from trimtab.signals.regime, fitted on the series' value."""
    # Imported only when asked: the regime module is optional here.
    from trimtab.signals.regime import fit_regimes

    value = pd.DataFrame({"value": np.exp(_log_wealth(returns))}, index=returns.index)
    res = fit_regimes(value, periods_per_year=_ppy(timeframe))
    return res.probs[-1]["value"].astype(float)


def _check_features(features: Sequence[str]) -> None:
    unknown = [f for f in features if f not in FEATURE_DESCRIPTIONS]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {list(FEATURE_DESCRIPTIONS)}")


def drawdown_features(
    data: Panel | pd.Series,
    features: Sequence[str] = DEFAULT_FEATURES,
    *,
    weights: pd.DataFrame | None = None,
    universe: pd.DataFrame | None = None,
    timeframe: str | None = None,
) -> pd.DataFrame:
    """The portfolio's feature frame (timestamp x feature), causal.

    ``data`` is a ``Panel`` (the portfolio is ``weights``, default equal weights over the
    listed assets of ``universe``; market features describe ``universe``) or a Series
    of portfolio simple returns, which has no market features except the regime.
    ``timeframe`` is inferred for a Series. Columns follow ``features``.
    """
    _check_features(features)
    wanted = set(features)
    if isinstance(data, Panel):
        tf = data.timeframe
        w = weights if weights is not None else equal_weights(data, universe)
        returns = panel_portfolio_returns(data, w)
        feats = _series_features(returns, tf, wanted)
        feats.update(_market_features(data, _members(data, universe), wanted))
    else:
        tf = timeframe or infer_timeframe(pd.DatetimeIndex(data.index))
        missing = wanted & set(_PANEL_ONLY)
        if missing:
            raise ValueError(f"features {sorted(missing)} need a Panel, not a returns series")
        returns = data.astype(float)
        feats = _series_features(returns, tf, wanted)
        if "regime_turbulent" in wanted:
            feats["regime_turbulent"] = _regime_feature(returns, tf)
    frame = pd.DataFrame({f: feats[f] for f in features}, index=returns.index)
    frame = frame.replace([np.inf, -np.inf], np.nan)
    frame.attrs["timeframe"] = tf
    return frame


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class FitRecord:
    """One walk-forward fit: when, on what, and the fitted parameters.

    ``coef`` is per standardised feature (log-odds per standard deviation of the
    training sample); ``mean``/``scale`` are that standardisation. The portfolio's
    log-odds are ``intercept + offset + coef . z``. ``last_train_pos`` is the latest
    sample used (always ``<= fit_pos - horizon_bars``). The ``baseline_*`` fields are NaN
    when the forecast was made with ``baseline=False``.
    """

    fitted_at: pd.Timestamp
    fit_pos: int
    last_train_pos: int
    n_train: int
    n_train_portfolio: int
    n_events_portfolio: int
    coef: np.ndarray
    intercept: float
    offset: float
    mean: np.ndarray
    scale: np.ndarray
    baseline_coef: np.ndarray
    baseline_intercept: float
    baseline_offset: float
    baseline_mean: np.ndarray
    baseline_scale: np.ndarray


@dataclass(frozen=True)
class DrawdownForecast:
    """Out-of-sample walk-forward probabilities of the drawdown event, per bar.

    ``probabilities``/``baseline``: NaN before the first fit and where a feature is
    missing. ``labels``: the realised event (1/0, NaN if not known from the data).
    ``returns``: the portfolio returns the labels come from. ``features``: the
    portfolio's raw features. ``fits``: every fit in time order.
    """

    probabilities: pd.Series
    baseline: pd.Series
    labels: pd.Series
    returns: pd.Series
    features: pd.DataFrame
    fits: list[FitRecord]
    threshold: float
    horizon_days: float
    horizon_bars: int
    timeframe: str
    feature_names: tuple[str, ...]
    baseline_feature_names: tuple[str, ...]
    pooled: bool


@dataclass(frozen=True)
class DrawdownExplanation:
    """The probability at one bar and why: ``logit = intercept + sum(contributions)``.

    ``contributions`` are ``coef * standardised value`` in log-odds, sorted by absolute
    size; positive raises the probability. ``values`` are the raw features and
    ``standardised`` their z-scores against the training sample of the fit used.
    """

    timestamp: pd.Timestamp
    probability: float
    baseline_probability: float
    intercept: float
    contributions: pd.Series
    values: pd.Series
    standardised: pd.Series
    fitted_at: pd.Timestamp
    train_base_rate: float
    threshold: float
    horizon_days: float
    descriptions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Fitted:
    coef: np.ndarray
    intercept: float
    offset: float
    mean: np.ndarray
    scale: np.ndarray

    def logit(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.offset + ((x - self.mean) / self.scale) @ self.coef


def _offset(score: np.ndarray, y: np.ndarray) -> float:
    """Maximum-likelihood shift d of ``logit = score + d`` (Newton on one parameter)."""
    d = 0.0
    for _ in range(100):
        p = expit(score + d)
        h = float(np.sum(p * (1.0 - p)))
        if h <= 0:
            break
        step = float(np.sum(y - p)) / h
        d += float(np.clip(step, -2.0, 2.0))  # damped: early samples can be lopsided
        if abs(step) < 1e-10:
            break
    return d


def _standardise(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and standard deviation of each column of a finite ``x`` (weights ``w``).

    The computation of scikit-learn's ``StandardScaler().fit(x, sample_weight=w)`` (its
    corrected two-pass update from zero, scale 1 for a column indistinguishable from a
    constant), operation by operation, so that it gives the same floats without
    importing scikit-learn (a second of a review's start-up). Tested against it.
    """
    nan = np.isnan(x)
    seen = np.zeros(x.shape[1])
    new_sum = np.matmul(w, np.where(nan, 0, x))
    new_count = np.sum(w[:, None] * (~nan).astype(w.dtype), axis=0)
    count = seen + new_count
    mean = (0.0 * seen + new_sum) / count
    temp = x - new_sum / new_count
    correction = np.matmul(w, np.where(nan, 0, temp))
    temp **= 2
    unnormalised = np.matmul(w, np.where(nan, 0, temp))
    unnormalised -= correction**2 / new_count
    var = unnormalised / count
    n = count[0] if count.max() == count.min() else count
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    with np.errstate(invalid="ignore"):  # a constant column's variance can be -1e-20
        scale = np.sqrt(var)
    scale[constant] = 1.0
    return mean, scale


def _logistic_loss_gradient(
    coef: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    l2: float,
    work: _LossWork | None = None,
) -> tuple[float, np.ndarray]:
    """Weighted mean half binomial loss plus ``l2 / 2 * |coef|^2`` (intercept last, not
    penalised) and its gradient.

    scikit-learn's ``LinearModelLoss(HalfBinomialLoss()).loss_gradient``: the same
    branches (cut at raw scores -37, -2 and 18) and the same operations in the same
    order, so that L-BFGS-B takes the same steps. Each element takes its own branch's
    value, computed with the same float operations as scikit-learn's expressions but
    only once and into the buffers of ``work`` (one set per fit, which evaluates this
    about seven times) instead of both branches into fresh temporaries: the review's 398
    evaluations took 0.25 s instead of 0.30 s (cProfile, idle machine; the C library's
    exp and log1p are most of what is left). The sums are over the same arrays in the
    same order.
    """
    if work is None:
        work = _LossWork(len(y), y)
    weights, intercept = coef[:-1], coef[-1]
    raw, low, tail, t, e, log_term, loss, grad, b = work.buffers
    np.matmul(z, weights, out=raw)
    raw += np.asarray(intercept)
    np.less_equal(raw, -2, out=low)
    np.less_equal(raw, -37, out=tail)
    np.negative(raw, out=t)
    np.copyto(t, raw, where=low)
    np.exp(t, out=e)  # exp(raw) up to -2, exp(-raw) above
    np.log1p(e, out=log_term)
    not_y = work.not_y
    # loss: low: (e if raw <= -37 else log1p(e)) - y * raw;
    #       else: (log1p(e) if raw <= 18 else e) + (1 - y) * raw
    np.greater(raw, 18, out=b)
    b |= tail
    np.copyto(log_term, e, where=b)  # the first term of either branch
    np.multiply(y, raw, out=t)
    np.subtract(log_term, t, out=loss)
    np.multiply(not_y, raw, out=t)
    np.invert(low, out=b)
    np.add(log_term, t, out=loss, where=b)
    # grad: raw <= -37: e - y; low: (not_y * e - y) / (1 + e); else (not_y - y * e) / (1 + e)
    np.multiply(not_y, e, out=grad)
    grad -= y
    np.multiply(y, e, out=t)
    np.subtract(not_y, t, out=t)
    np.copyto(grad, t, where=b)
    np.add(1, e, out=t)
    grad /= t
    np.subtract(e, y, out=grad, where=tail)
    loss *= w
    grad *= w
    w_sum = np.sum(w)
    f = float(np.sum(loss) / w_sum)
    f += float(0.5 * l2 * (weights @ weights))
    grad /= w_sum
    g = np.empty_like(coef, dtype=weights.dtype)
    g[:-1] = z.T @ grad + l2 * weights
    g[-1] = np.sum(grad)
    return f, g


class _LossWork:
    """The buffers of ``_logistic_loss_gradient`` for ``n`` rows, and ``1 - y`` of the
    fit's labels ``y``."""

    def __init__(self, n: int, y: np.ndarray) -> None:
        self.not_y = 1 - np.asarray(y, dtype=float)
        raw, t, e, log_term, loss, grad = (np.empty(n) for _ in range(6))
        low, tail, b = (np.empty(n, dtype=bool) for _ in range(3))
        self.buffers = (raw, low, tail, t, e, log_term, loss, grad, b)


class _Logistic:
    """L2 logistic regression fitted by L-BFGS-B, warm-started from its previous fit.

    The computation of scikit-learn's ``LogisticRegression(C=C, max_iter=max_iter,
    warm_start=True)`` (lbfgs solver, tolerance 1e-4) on 0/1 labels with sample
    weights: the objective is the weighted mean loss plus ``1 / (2 C sum(w)) |coef|^2``,
    minimised by SciPy's L-BFGS-B with scikit-learn's options. The coefficients are the
    same floats (tested against scikit-learn, every refit of a review's walk-forward);
    scikit-learn is not imported.
    """

    def __init__(self, C: float, max_iter: int = 1000, tol: float = 1e-4) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.coef_: np.ndarray | None = None  # (features,)
        self.intercept_: float | None = None

    def fit(self, z: np.ndarray, y: np.ndarray, w: np.ndarray) -> _Logistic:
        # SciPy's L-BFGS-B without importing scipy.optimize (see trimtab.risk.lbfgsb).
        from trimtab.risk.lbfgsb import minimize_lbfgsb

        z = np.ascontiguousarray(z, dtype=float)
        target = (np.asarray(y) == 1).astype(float)
        w = np.array(w, dtype=float)
        w0 = np.zeros(z.shape[1] + 1)
        if self.coef_ is not None:
            w0[:-1] = self.coef_
            w0[-1] = self.intercept_
        l2 = 1.0 / (self.C * float(np.sum(w)))
        x = minimize_lbfgsb(
            _logistic_loss_gradient,
            w0,
            (z, target, w, l2, _LossWork(len(target), target)),
            maxiter=self.max_iter,
            maxls=50,
            gtol=self.tol,
            ftol=64 * np.finfo(float).eps,
        )
        self.coef_ = x[:-1].copy()
        self.intercept_ = float(x[-1])
        return self


def _fit(
    lr: _Logistic,
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    port_x: np.ndarray,
    port_y: np.ndarray,
) -> _Fitted:
    """Weighted standardised L2 logistic fit, then the portfolio's level offset.

    ``lr`` is reused across refits: the previous solution starts the next one (same
    history, same start, so causality is untouched).
    """
    mean, sd = _standardise(x, w)
    scale = np.where(sd > 0, sd, 1.0)
    z = (x - mean) / scale
    lr.fit(z, y, w)
    assert lr.coef_ is not None and lr.intercept_ is not None
    fitted = _Fitted(lr.coef_.copy(), lr.intercept_, 0.0, mean.copy(), scale)
    off = _offset(fitted.logit(port_x), port_y)
    return _Fitted(fitted.coef, fitted.intercept, off, fitted.mean, fitted.scale)


class DrawdownModel:
    """Walk-forward logistic model of P(portfolio loses > threshold within horizon days).

    Parameters (durations in days, converted to bars of the data's timeframe):

    - ``threshold``: loss fraction X of the event (0.10 = 10 %).
    - ``horizon``: H, days ahead.
    - ``refit_every``: days between refits.
    - ``min_train``: days' worth of usable labelled portfolio samples before the first fit.
    - ``min_events``: portfolio events and non-events each needed before the first fit.
    - ``C``: inverse L2 strength on standardised features, with the training samples of
      one day weighing 1 in total (so the prior is as strong for 1h bars as for 1d).
    - ``features``: names from ``FEATURE_DESCRIPTIONS`` (default ``DEFAULT_FEATURES``);
      market features are dropped for a returns series (except the regime).
    - ``pool_assets``: also train on each asset of the universe (Panel only).

    After ``fit_predict``: ``coef_``, ``intercept_`` (offset included), ``mean_``,
    ``scale_`` (latest fit), ``feature_names_in_``, ``probabilities_``,
    ``baseline_probabilities_``, ``labels_``, ``fits_``, ``forecast_``.
    """

    def __init__(
        self,
        threshold: float = 0.10,
        horizon: float = 7,
        refit_every: float = 30,
        min_train: float = 365,
        min_events: int = 10,
        C: float = 0.05,
        features: Sequence[str] | None = None,
        baseline_features: Sequence[str] = BASELINE_FEATURES,
        pool_assets: bool = True,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        if horizon <= 0 or refit_every <= 0 or min_train <= 0:
            raise ValueError("horizon, refit_every and min_train must be positive (days)")
        if C <= 0:
            raise ValueError(f"C must be positive, got {C!r}")
        self.threshold = float(threshold)
        self.horizon = horizon
        self.refit_every = refit_every
        self.min_train = min_train
        self.min_events = int(min_events)
        self.C = float(C)
        self.features = tuple(DEFAULT_FEATURES if features is None else features)
        self.baseline_features = tuple(baseline_features)
        self.pool_assets = bool(pool_assets)
        _check_features(self.features)
        _check_features(self.baseline_features)

    def __repr__(self) -> str:
        return (
            f"DrawdownModel(threshold={self.threshold}, horizon={self.horizon}, "
            f"refit_every={self.refit_every}, min_train={self.min_train}, C={self.C}, "
            f"features={list(self.features)}, pool_assets={self.pool_assets})"
        )

    # ------------------------------------------------------------------ fitting

    def _names_for(self, data: Panel | pd.Series) -> tuple[str, ...]:
        if isinstance(data, Panel):
            return self.features
        return tuple(f for f in self.features if f not in _PANEL_ONLY)

    def fit_predict(
        self,
        data: Panel | pd.Series,
        *,
        weights: pd.DataFrame | None = None,
        universe: pd.DataFrame | None = None,
        timeframe: str | None = None,
        baseline: bool = True,
    ) -> DrawdownForecast:
        """Walk-forward out-of-sample probabilities for every bar after the first fit.

        ``data``: a Panel (portfolio = ``weights``, default equal weights over the listed
        assets of ``universe``) or a Series of portfolio simple returns (no pooling, no
        market features but the regime). Causal: truncating the data after bar s
        changes no output up to s. ``baseline=False`` skips the baseline's fits (half
        the time; what a review needs): its probabilities and fitted parameters are
        then NaN, and the model's are the same as with it (the baseline only shares
        the training rows).
        """
        names = self._names_for(data)
        base = self.baseline_features
        all_names = tuple(dict.fromkeys((*names, *base)))
        if isinstance(data, Panel):
            w = weights if weights is not None else equal_weights(data, universe)
            returns = panel_portfolio_returns(data, w)
        else:
            returns = data.astype(float).rename("portfolio")
        feats = drawdown_features(
            data if isinstance(data, Panel) else returns,
            all_names,
            weights=weights if isinstance(data, Panel) else None,
            universe=universe,
            timeframe=timeframe,
        )
        tf = feats.attrs["timeframe"]
        H = days_to_bars(self.horizon, tf)
        T = len(feats)

        # Row blocks: (T, J, F) with the portfolio last; assets first when pooling.
        port_x = feats[list(all_names)].to_numpy(dtype=float)[:, None, :]
        port_y = _labels(returns.to_numpy(dtype=float), self.threshold, H)[:, None]
        port_in = np.ones((T, 1), dtype=bool)
        if self.pool_assets and isinstance(data, Panel) and data.symbols:
            ax, ay, a_in = _asset_rows(data, all_names, feats, universe, self.threshold, H)
            X = np.concatenate([ax, port_x], axis=1)
            Y = np.concatenate([ay, port_y], axis=1)
            member = np.concatenate([a_in, port_in], axis=1)
            pooled = True
        else:
            X, Y, member, pooled = port_x, port_y, port_in, False
        cols = {n: i for i, n in enumerate(all_names)}
        xi = [cols[n] for n in names]
        bi = [cols[n] for n in base]
        ok_x = np.isfinite(X[..., xi]).all(axis=-1)
        ok_b = np.isfinite(X[..., bi]).all(axis=-1)
        usable = member & ok_x & ok_b & np.isfinite(Y)

        probs, bprobs, fits = self._walk_forward(
            X, Y, usable, ok_x, ok_b, xi, bi, feats, H, baseline=baseline
        )
        forecast = DrawdownForecast(
            probabilities=pd.Series(probs, index=feats.index, name="p_drawdown"),
            baseline=pd.Series(bprobs, index=feats.index, name="p_drawdown_baseline"),
            labels=pd.Series(port_y[:, 0], index=feats.index, name="drawdown_event"),
            returns=returns,
            features=feats[list(names)],
            fits=fits,
            threshold=self.threshold,
            horizon_days=float(self.horizon),
            horizon_bars=H,
            timeframe=tf,
            feature_names=names,
            baseline_feature_names=base,
            pooled=pooled,
        )
        self._set_fitted(forecast)
        return forecast

    def _walk_forward(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        usable: np.ndarray,
        ok_x: np.ndarray,
        ok_b: np.ndarray,
        xi: list[int],
        bi: list[int],
        feats: pd.DataFrame,
        H: int,
        *,
        baseline: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, list[FitRecord]]:
        tf = feats.attrs["timeframe"]
        T = X.shape[0]
        refit = days_to_bars(self.refit_every, tf)
        min_train = days_to_bars(self.min_train, tf)
        index = pd.DatetimeIndex(feats.index)
        # One training sample per UTC day: intraday neighbours' labels overlap almost fully.
        daily = calendar_mask(index, "daily") if T else np.zeros(0, dtype=bool)
        pos = np.arange(T)

        # The first fit: the first bar s at which enough portfolio labels are known.
        up = usable[:, -1]
        yp = Y[:, -1]
        cum_n = np.cumsum(up)
        cum_e = np.cumsum(up & (yp == 1))
        first = None
        for s in range(H, T):
            n_s, e_s = int(cum_n[s - H]), int(cum_e[s - H])
            if n_s >= min_train and e_s >= self.min_events and n_s - e_s >= self.min_events:
                first = s
                break

        probs = np.full(T, np.nan)
        bprobs = np.full(T, np.nan)
        fits: list[FitRecord] = []
        if first is None:
            return probs, bprobs, fits
        # Each bar's training rows weigh 1 in total (see the module docstring).
        count = usable.sum(axis=1, keepdims=True)
        weight = np.where(usable, 1.0 / np.maximum(count, 1), 0.0)
        lr = _Logistic(C=self.C, max_iter=1000)
        blr = _Logistic(C=self.C, max_iter=1000)
        nan_b = np.full(len(bi), np.nan)
        no_baseline = _Fitted(nan_b, np.nan, np.nan, nan_b, nan_b)
        # Every training row of every fit, in the order ``X[mask]`` takes them (bar, then
        # asset). A fit at bar s trains on the rows of bars t <= s - H
        # (``training_rows``): the first rows of these, so each fit takes a prefix (the
        # same rows in the same order as masking the whole array again, 56 times).
        train = usable & daily[:, None]
        x_all, y_all, w_all = X[train], Y[train], weight[train]
        t_all = np.nonzero(train)[0]
        p_train = train[:, -1]
        px_all, py_all = X[p_train, -1], Y[p_train, -1]
        pt_all = pos[p_train]
        for s in range(first, T, refit):
            k = int(np.searchsorted(t_all, s - H, side="right"))
            kp = int(np.searchsorted(pt_all, s - H, side="right"))
            xs, ys, ws = x_all[:k], y_all[:k], w_all[:k]
            port_x, port_y = px_all[:kp], py_all[:kp]
            model = _fit(lr, xs[:, xi], ys, ws, port_x[:, xi], port_y)
            bmodel = (
                _fit(blr, xs[:, bi], ys, ws, port_x[:, bi], port_y) if baseline else no_baseline
            )
            fits.append(
                FitRecord(
                    fitted_at=index[s],
                    fit_pos=s,
                    last_train_pos=int(t_all[k - 1]),
                    n_train=k,
                    n_train_portfolio=kp,
                    n_events_portfolio=int(port_y.sum()),
                    coef=model.coef,
                    intercept=model.intercept,
                    offset=model.offset,
                    mean=model.mean,
                    scale=model.scale,
                    baseline_coef=bmodel.coef,
                    baseline_intercept=bmodel.intercept,
                    baseline_offset=bmodel.offset,
                    baseline_mean=bmodel.mean,
                    baseline_scale=bmodel.scale,
                )
            )
            seg = slice(s, min(s + refit, T))
            px = X[seg, -1]
            okx, okb = ok_x[seg, -1], ok_b[seg, -1]
            with np.errstate(invalid="ignore"):
                probs[seg] = np.where(okx, expit(model.logit(px[:, xi])), np.nan)
                if baseline:
                    bprobs[seg] = np.where(okb, expit(bmodel.logit(px[:, bi])), np.nan)
        return probs, bprobs, fits

    def _set_fitted(self, forecast: DrawdownForecast) -> None:
        self.forecast_ = forecast
        self.feature_names_in_ = np.array(forecast.feature_names, dtype=object)
        self.probabilities_ = forecast.probabilities
        self.baseline_probabilities_ = forecast.baseline
        self.labels_ = forecast.labels
        self.fits_ = forecast.fits
        self.horizon_bars_ = forecast.horizon_bars
        if forecast.fits:
            last = forecast.fits[-1]
            self.coef_ = last.coef[None, :]
            self.intercept_ = np.array([last.intercept + last.offset])
            self.mean_ = last.mean
            self.scale_ = last.scale

    # ------------------------------------------------------------------ explaining

    def predict_latest(
        self,
        data: Panel | pd.Series | None = None,
        *,
        at: Any = None,
        **kwargs: Any,
    ) -> DrawdownExplanation:
        """The probability at the last bar (or at ``at``) with each feature's share.

        With ``data`` the model is first run with ``fit_predict(data, **kwargs)``;
        otherwise the last ``fit_predict`` is used. The probability equals
        ``probabilities_`` at that bar (same fit, same inputs), so backtests and live
        runs agree. Raises ValueError if no fit exists yet at that bar or a feature
        is missing there.
        """
        if data is not None:
            self.fit_predict(data, **kwargs)
        fc: DrawdownForecast | None = getattr(self, "forecast_", None)
        if fc is None:
            raise ValueError("call fit_predict first or pass data")
        idx = pd.DatetimeIndex(fc.features.index)
        pos = len(idx) - 1 if at is None else int(idx.searchsorted(to_utc(at), side="right")) - 1
        usable = [f for f in fc.fits if f.fit_pos <= pos]
        if pos < 0 or not usable:
            raise ValueError("no fit exists at that bar yet (not enough labelled history)")
        fit = usable[-1]
        names = list(fc.feature_names)
        xv = fc.features[names].iloc[pos].to_numpy(dtype=float)
        if not np.isfinite(xv).all():
            bad = [n for n, v in zip(names, xv, strict=True) if not np.isfinite(v)]
            raise ValueError(f"features missing at {idx[pos]}: {bad}")
        z = (xv - fit.mean) / fit.scale
        contrib = pd.Series(fit.coef * z, index=names, name="log_odds")
        order = contrib.abs().sort_values(ascending=False, kind="stable").index
        intercept = fit.intercept + fit.offset
        return DrawdownExplanation(
            timestamp=idx[pos],
            probability=float(expit(intercept + float(contrib.sum()))),
            baseline_probability=float(fc.baseline.iloc[pos]),
            intercept=intercept,
            contributions=contrib[order],
            values=pd.Series(xv, index=names, name="value")[order],
            standardised=pd.Series(z, index=names, name="z")[order],
            fitted_at=fit.fitted_at,
            train_base_rate=fit.n_events_portfolio / max(fit.n_train_portfolio, 1),
            threshold=fc.threshold,
            horizon_days=fc.horizon_days,
            descriptions={n: FEATURE_DESCRIPTIONS[n] for n in names},
        )


def _asset_rows(
    panel: Panel,
    names: Sequence[str],
    port_feats: pd.DataFrame,
    universe: pd.DataFrame | None,
    threshold: float,
    H: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each asset as a one-asset portfolio: features (T, N, F), labels (T, N), membership.

    Series features come from the asset's own returns; market features are the
    portfolio's (the same universe), repeated across assets.
    """
    T, N = panel.close.shape
    asset_returns = panel.close / panel.close.shift(1) - 1.0
    series = [n for n in names if n not in MARKET_FEATURES]
    own = _series_features(asset_returns, panel.timeframe, set(series))
    X = np.empty((T, N, len(names)))
    for k, n in enumerate(names):
        if n in MARKET_FEATURES:
            X[:, :, k] = port_feats[n].to_numpy(dtype=float)[:, None]
        else:
            X[:, :, k] = own[n].to_numpy(dtype=float)
    X[~np.isfinite(X)] = np.nan
    Y = _labels(asset_returns.to_numpy(dtype=float), threshold, H)
    member = _members(panel, universe).to_numpy()
    return X, Y, member


# --------------------------------------------------------------------------- evaluation


def calibration_table(
    p: np.ndarray,
    y: np.ndarray,
    n_bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> list[dict[str, float]]:
    """Reliability table: per bin of predicted probability, mean prediction vs frequency.

    ``quantile`` bins hold about equal counts (informative when most predictions are
    small); ``uniform`` bins split [0, 1] evenly. Empty bins are left out.
    """
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(p) == 0:
        return []
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1)))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    if len(edges) < 2:
        edges = np.array([p.min(), p.max()])
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for i in range(len(edges) - 1):
        m = which == i
        if m.any():
            rows.append(
                {
                    "bin_low": float(edges[i]),
                    "bin_high": float(edges[i + 1]),
                    "mean_predicted": float(p[m].mean()),
                    "observed_rate": float(y[m].mean()),
                    "count": int(m.sum()),
                }
            )
    return rows


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _block_bootstrap(
    y: np.ndarray, p: np.ndarray, q: np.ndarray, block: int, n_boot: int, seed: int
) -> dict[str, Any]:
    """Moving-block bootstrap of AUC(p) - AUC(q) and Brier(p) - Brier(q).

    Blocks of ``block`` consecutive samples keep the overlap of labels (and volatility
    clustering) inside each resample, so the intervals are not falsely narrow.
    """
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = len(y)
    block = max(1, min(block, n))
    n_blocks = -(-n // block)
    d_auc, d_brier = [], []
    for _ in range(n_boot):
        starts = rng.integers(0, n - block + 1, n_blocks)
        idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
        yy = y[idx]
        if not 0 < yy.sum() < n:
            continue
        d_auc.append(roc_auc_score(yy, p[idx]) - roc_auc_score(yy, q[idx]))
        d_brier.append(np.mean((p[idx] - yy) ** 2) - np.mean((q[idx] - yy) ** 2))
    if not d_auc:
        return {}
    da, db = np.asarray(d_auc), np.asarray(d_brier)
    return {
        "n_boot": len(da),
        "block_bars": block,
        "auc_diff_ci90": [float(np.quantile(da, 0.05)), float(np.quantile(da, 0.95))],
        "brier_diff_ci90": [float(np.quantile(db, 0.05)), float(np.quantile(db, 0.95))],
        "share_auc_better": float(np.mean(da > 0)),
        "share_brier_better": float(np.mean(db < 0)),
    }


def _episodes(y: np.ndarray) -> int:
    """Runs of consecutive events: the overlapping labels of one crash count once."""
    if len(y) == 0:
        return 0
    starts = (y == 1) & np.concatenate([[True], y[:-1] != 1])
    return int(starts.sum())


def evaluate_forecast(
    forecast: DrawdownForecast,
    start: Any = None,
    end: Any = None,
    *,
    n_bins: int = 10,
    bins: Literal["quantile", "uniform"] = "quantile",
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Out-of-sample scores of a forecast over bars ``start <= t <= end`` (UTC).

    Only bars where both the model and the baseline predict and the label is known are
    scored, so both are judged on the same samples. Climatology is the constant base
    rate of the scored sample (the usual Brier-skill reference);
    ``brier_climatology_causal`` uses the event rate known at each bar instead (past
    labels only), a forecast one could actually have made. ``bootstrap`` holds 90 %
    moving-block intervals (blocks of 30 days) of the model-minus-baseline differences.
    """
    # Imported here: scoring needs scikit-learn, fitting and predicting do not.
    from sklearn.metrics import brier_score_loss, log_loss

    p, q, y = forecast.probabilities, forecast.baseline, forecast.labels
    idx = pd.DatetimeIndex(p.index)
    m = np.isfinite(p.to_numpy()) & np.isfinite(q.to_numpy()) & np.isfinite(y.to_numpy())
    if start is not None:
        m &= idx >= to_utc(start)
    if end is not None:
        m &= idx <= to_utc(end)
    H = forecast.horizon_bars
    yv, pv, qv = y.to_numpy()[m], p.to_numpy()[m], q.to_numpy()[m]
    out: dict[str, Any] = {
        "threshold": forecast.threshold,
        "horizon_days": forecast.horizon_days,
        "horizon_bars": H,
        "timeframe": forecast.timeframe,
        "start": str(idx[m][0]) if m.any() else None,
        "end": str(idx[m][-1]) if m.any() else None,
        "n_samples": int(m.sum()),
        "n_events": int(yv.sum()),
        "n_event_episodes": _episodes(yv),
        "base_rate": float(yv.mean()) if m.any() else float("nan"),
        "n_refits": len(forecast.fits),
        "first_fit": str(forecast.fits[0].fitted_at) if forecast.fits else None,
        "pooled": forecast.pooled,
        "features": list(forecast.feature_names),
        "baseline_features": list(forecast.baseline_feature_names),
    }
    if not m.any():
        return out
    base_rate = float(yv.mean())
    brier = float(brier_score_loss(yv, pv))
    bbrier = float(brier_score_loss(yv, qv))
    clim = base_rate * (1.0 - base_rate)
    # Causal climatology: the event rate among portfolio labels known at each bar.
    lab = y.to_numpy()
    known = np.isfinite(lab)
    cn = np.cumsum(known)
    cp = np.cumsum(np.where(known, lab, 0.0))
    k = np.flatnonzero(m) - H
    kk = np.maximum(k, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        causal = np.where((k >= 0) & (cn[kk] > 0), cp[kk] / cn[kk], np.nan)
    causal = np.where(np.isfinite(causal), causal, base_rate)
    eps = 1e-12

    def skill(b: float) -> float:
        return 1.0 - b / clim if clim > 0 else float("nan")

    out.update(
        {
            "auc": _auc(yv, pv),
            "brier": brier,
            "log_loss": float(log_loss(yv, np.clip(pv, eps, 1 - eps), labels=[0, 1])),
            "baseline_auc": _auc(yv, qv),
            "baseline_brier": bbrier,
            "baseline_log_loss": float(log_loss(yv, np.clip(qv, eps, 1 - eps), labels=[0, 1])),
            "brier_climatology": clim,
            "brier_climatology_causal": float(np.mean((causal - yv) ** 2)),
            "brier_skill_vs_climatology": skill(brier),
            "baseline_brier_skill_vs_climatology": skill(bbrier),
            "brier_skill_vs_baseline": 1.0 - brier / bbrier if bbrier > 0 else float("nan"),
            "mean_predicted": float(pv.mean()),
            "baseline_mean_predicted": float(qv.mean()),
            "calibration": calibration_table(pv, yv, n_bins, bins),
            "baseline_calibration": calibration_table(qv, yv, n_bins, bins),
        }
    )
    years = idx[m].year
    out["by_year"] = {
        int(yr): {
            "n_samples": int(s.sum()),
            "n_events": int(yv[s].sum()),
            "base_rate": float(yv[s].mean()),
            "auc": _auc(yv[s], pv[s]),
            "baseline_auc": _auc(yv[s], qv[s]),
            "brier": float(np.mean((pv[s] - yv[s]) ** 2)),
            "baseline_brier": float(np.mean((qv[s] - yv[s]) ** 2)),
        }
        for yr in np.unique(years)
        for s in [years == yr]
    }
    if n_boot > 0:
        # Blocks of a month: longer than the label overlap and than a volatility burst.
        block = days_to_bars(30, forecast.timeframe)
        out["bootstrap"] = _block_bootstrap(yv, pv, qv, block, n_boot, seed)
    if forecast.fits:
        last = forecast.fits[-1]
        out["coef"] = dict(zip(forecast.feature_names, map(float, last.coef), strict=True))
        out["intercept"] = last.intercept + last.offset
    return out


def evaluate_drawdown_model(
    panel: Panel,
    start: Any = None,
    end: Any = None,
    symbols: list[str] | None = None,
    threshold: float = 0.10,
    horizon: float = 7,
    *,
    universe: pd.DataFrame | None = None,
    weights: pd.DataFrame | None = None,
    n_bins: int = 10,
    bins: Literal["quantile", "uniform"] = "quantile",
    n_boot: int = 200,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """Walk-forward out-of-sample evaluation of ``DrawdownModel`` against its baseline.

    The model sees the panel's history up to ``end`` and nothing after it (the data is
    cut there, so labels that would need later bars are not scored) and is scored on
    its predictions dated in ``[start, end]``; everything before ``start`` is training
    history only. ``symbols`` restricts the panel's assets; ``model_kwargs`` go to
    ``DrawdownModel``. Returns the dict of ``evaluate_forecast`` (``auc``, ``brier``,
    ``baseline_auc``, ``baseline_brier``, ``calibration``, ``brier_skill_vs_climatology``,
    ``by_year``, ``bootstrap``, ...) plus ``model`` (its repr).
    """
    data = panel
    if symbols is not None:
        data = data.select(list(symbols))
    if end is not None:
        data = data.slice(None, to_utc(end))
    model = DrawdownModel(threshold=threshold, horizon=horizon, **model_kwargs)
    forecast = model.fit_predict(data, weights=weights, universe=universe)
    out = evaluate_forecast(forecast, start, end, n_bins=n_bins, bins=bins, n_boot=n_boot)
    out["model"] = repr(model)
    return out
