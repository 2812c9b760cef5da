"""Performance metrics of an equity curve and of the trades that produced it.

Conventions (see DESIGN.md):

- Returns are simple per-period returns, ``r_t = equity_t / equity_{t-1} - 1``.
- Annualisation uses ``periods_per_year`` (365 for daily bars, 8760 for hourly bars;
  crypto trades every day, never 252).
- ``risk_free`` is an ANNUAL rate, compounded down to one period as
  ``(1 + risk_free) ** (1 / periods_per_year) - 1``.
- Losses are POSITIVE numbers: ``max_drawdown``, the drawdown series, ``value_at_risk`` and
  ``conditional_value_at_risk`` report 0.45 for a 45 % loss (empyrical reports -0.45).
- Quantiles use linear interpolation between order statistics (NumPy's default
  ``method="linear"``, Hyndman & Fan type 7), as empyrical does.
- Undefined results are ``nan``, never ``inf``: a ratio whose denominator is zero (Sharpe
  of a constant series, Sortino without a losing period, Calmar without a drawdown, Omega
  without a period below the threshold, tail ratio with a zero 5th percentile) or a
  statistic without enough data (volatility, Sharpe and Sortino need two returns; CAGR
  needs at least one).
- Path quantities have natural values on an empty return series: total return 0, max
  drawdown 0, drawdown duration 0 (the equity has not moved).

Inputs are validated: NaN or infinite values, returns below -100 %, negative equity or a
non-increasing index raise ``ValueError``. Equity that reaches exactly zero (a wipe-out)
is valid; it must then stay at zero, and returns after it are 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "METRIC_KEYS",
    "annual_volatility",
    "average_exposure",
    "cagr",
    "calmar_ratio",
    "compute_metrics",
    "conditional_value_at_risk",
    "drawdown_series",
    "fees_paid",
    "max_drawdown",
    "max_drawdown_duration",
    "max_drawdown_duration_days",
    "omega_ratio",
    "per_period_rate",
    "returns_from_equity",
    "sharpe_ratio",
    "sortino_ratio",
    "tail_ratio",
    "total_return",
    "turnover",
    "value_at_risk",
]

ReturnsLike = pd.Series | np.ndarray | Sequence[float]

METRIC_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration_days",
    "var_95",
    "cvar_95",
    "var_99",
    "cvar_99",
    "omega",
    "tail_ratio",
    "turnover",
    "fees_paid",
    "average_exposure",
    "n_periods",
    "start_equity",
    "end_equity",
)

TRADE_COLUMNS = ("timestamp", "symbol", "side", "quantity", "price", "fee", "reason")

# Compounding returns back into wealth leaves round-off of ~1e-16 at a recovered peak;
# drawdowns smaller than this are treated as none, so that noise neither starts a
# drawdown span nor turns Calmar into cagr / 1e-16.
_DRAWDOWN_EPS = 1e-12

_DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------- validation


#: The metrics tables' rows, in order: (key of ``compute_metrics``, label, format: pct,
#: num, int or money). The terminal and the HTML report print the same rows.
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "Volatility", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("calmar", "Calmar", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_duration_days", "Max DD days", "int"),
    ("var_95", "VaR 95% (1 bar)", "pct"),
    ("cvar_95", "CVaR 95% (1 bar)", "pct"),
    ("omega", "Omega", "num"),
    ("turnover", "Turnover / yr", "pct"),
    ("rebalance_turnover", "  after buy-in", "pct"),
    ("tracking_error", "Tracking error", "pct"),
    ("fees_paid", "Fees paid", "money"),
    ("rebalance_fees", "  after buy-in", "money"),
    ("average_exposure", "Avg exposure", "pct"),
    ("end_equity", "End equity", "money"),
)


def _as_returns(returns: ReturnsLike) -> np.ndarray:
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"returns must be one-dimensional, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        bad = int(np.count_nonzero(~np.isfinite(r)))
        raise ValueError(
            f"returns contain {bad} NaN or infinite value(s); drop the leading NaN of "
            "pct_change() or use returns_from_equity()"
        )
    if np.any(r < -1.0):
        raise ValueError("returns below -100% are impossible for a simple return")
    return r


def _check_ppy(periods_per_year: float) -> float:
    ppy = float(periods_per_year)
    if not np.isfinite(ppy) or ppy <= 0:
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    return ppy


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be strictly between 0 and 1, got {level!r}")
    return float(level)


def _validate_equity(equity: pd.Series) -> np.ndarray:
    if not isinstance(equity, pd.Series):
        raise ValueError(f"equity must be a pandas Series, got {type(equity).__name__}")
    if not equity.index.is_monotonic_increasing or not equity.index.is_unique:
        raise ValueError("equity index must be strictly increasing (sorted, no duplicates)")
    try:
        e = equity.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError("equity must be numeric") from exc
    if not np.all(np.isfinite(e)):
        bad = int(np.count_nonzero(~np.isfinite(e)))
        raise ValueError(f"equity contains {bad} NaN or infinite value(s)")
    if np.any(e < 0):
        first = equity.index[int(np.argmax(e < 0))]
        raise ValueError(
            f"equity is negative at {first}; clamp a liquidated account at 0 before "
            "computing metrics"
        )
    if e.size and e[0] == 0:
        raise ValueError("equity starts at 0; returns are undefined")
    zero = e == 0
    if zero.any():
        # A wiped-out account cannot earn a return; money appearing afterwards is a
        # deposit, which a return series cannot express.
        first_zero = int(np.argmax(zero))
        if np.any(e[first_zero:] != 0):
            raise ValueError(
                f"equity recovers from 0 after {equity.index[first_zero]}; a deposit after "
                "a wipe-out cannot be expressed as returns"
            )
    return e


def _finite(x: float) -> float:
    """``x`` as a float, or NaN where a ratio overflowed (e.g. a std that underflowed to 0)."""
    x = float(x)
    return x if np.isfinite(x) else float("nan")


def per_period_rate(annual_rate: float, periods_per_year: float) -> float:
    """Per-period rate equivalent to an annual rate: ``(1 + annual) ** (1 / ppy) - 1``."""
    ppy = _check_ppy(periods_per_year)
    if not np.isfinite(annual_rate) or annual_rate <= -1.0:
        raise ValueError(f"annual rate must be finite and above -100%, got {annual_rate!r}")
    return float((1.0 + annual_rate) ** (1.0 / ppy) - 1.0)


# --------------------------------------------------------------------------- returns


def returns_from_equity(equity: pd.Series) -> pd.Series:
    """Simple returns of an equity curve, indexed like ``equity`` minus its first bar.

    After a wipe-out (equity 0) the returns are 0: the account stays at nothing.
    """
    e = _validate_equity(equity)
    prev, cur = e[:-1], e[1:]
    r = np.zeros(cur.shape, dtype=float)
    alive = prev > 0
    r[alive] = cur[alive] / prev[alive] - 1.0
    return pd.Series(r, index=equity.index[1:], name="returns")


def total_return(returns: ReturnsLike) -> float:
    """Compounded return over the whole series, as a fraction (0.2 = +20 %); 0 if empty."""
    r = _as_returns(returns)
    return float(np.prod(1.0 + r) - 1.0)


def cagr(returns: ReturnsLike, periods_per_year: float) -> float:
    """Compound annual growth rate, with years = number of returns / ``periods_per_year``.

    NaN when there are no returns, or when extrapolating a short, strong run overflows
    float64. A wipe-out gives -1.
    """
    r = _as_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size == 0:
        return float("nan")
    growth = np.prod(1.0 + r)
    # NumPy power, not Python's: overflow gives inf (mapped to NaN below), not an exception.
    with np.errstate(over="ignore"):
        value = np.power(growth, ppy / r.size) - 1.0
    return _finite(value)


def annual_volatility(returns: ReturnsLike, periods_per_year: float) -> float:
    """Sample standard deviation (ddof=1) times ``sqrt(periods_per_year)``; NaN if < 2 returns.

    Exactly 0 for a constant series (the floating mean can leave a 1e-18 residue).
    """
    r = _as_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size < 2:
        return float("nan")
    if np.ptp(r) == 0:
        return 0.0
    return float(np.std(r, ddof=1) * np.sqrt(ppy))


def sharpe_ratio(returns: ReturnsLike, periods_per_year: float, risk_free: float = 0.0) -> float:
    """Annualised Sharpe ratio: ``mean(r - rf_p) / std(r - rf_p, ddof=1) * sqrt(ppy)``.

    ``risk_free`` is annual, converted with :func:`per_period_rate`. NaN with fewer than
    two returns or zero dispersion.
    """
    r = _as_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size < 2:
        return float("nan")
    excess = r - per_period_rate(risk_free, ppy)
    # Compare the values, not the std: identical values can give a std of 1e-18 and a
    # meaningless ratio near 1e15 (empyrical does the same).
    if np.ptp(excess) == 0:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _finite(np.mean(excess) / np.std(excess, ddof=1) * np.sqrt(ppy))


def sortino_ratio(returns: ReturnsLike, periods_per_year: float, risk_free: float = 0.0) -> float:
    """Annualised Sortino ratio: ``mean(x) * ppy / (sqrt(mean(min(x, 0) ** 2)) * sqrt(ppy))``.

    ``x = r - rf_p`` (annual ``risk_free`` converted per period). The downside deviation
    is the root mean square of ``min(x, 0)`` over ALL periods, not the std of the losing
    ones (empyrical's convention). NaN with fewer than two returns or when no period is
    below the risk-free rate.
    """
    r = _as_returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size < 2:
        return float("nan")
    excess = r - per_period_rate(risk_free, ppy)
    downside = np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))
    if downside == 0:
        return float("nan")
    with np.errstate(over="ignore"):
        return _finite(np.mean(excess) * ppy / (downside * np.sqrt(ppy)))


# --------------------------------------------------------------------------- drawdowns


def _wealth(r: np.ndarray) -> np.ndarray:
    # The starting value 1 anchors the running peak, so a loss on the first period
    # counts as a drawdown from the initial equity.
    return np.concatenate(([1.0], np.cumprod(1.0 + r)))


def _drawdowns(wealth: np.ndarray) -> np.ndarray:
    peak = np.maximum.accumulate(wealth)
    dd = 1.0 - wealth / peak  # peak >= wealth[0] > 0
    dd[dd < _DRAWDOWN_EPS] = 0.0
    return dd


def _longest_underwater(dd: np.ndarray, position: np.ndarray) -> float:
    """Longest peak-to-recovery (or peak-to-end) span, measured on ``position``."""
    if dd.size == 0:
        return 0.0
    highs = np.flatnonzero(dd == 0.0)  # always holds 0: the anchor is its own peak
    gaps = np.diff(highs) > 1  # consecutive highs have no drawdown between them
    spans = position[highs[1:][gaps]] - position[highs[:-1][gaps]]
    longest = float(spans.max()) if spans.size else 0.0
    if highs[-1] < dd.size - 1:  # still under water at the end
        longest = max(longest, float(position[-1] - position[highs[-1]]))
    return longest


def drawdown_series(returns: ReturnsLike) -> pd.Series | np.ndarray:
    """Drawdown after each period as a POSITIVE fraction of the running peak (0.3 = 30 % down).

    The peak includes the starting equity. Same index as ``returns`` for a Series, else an
    array. Drawdowns below 1e-12 (compounding round-off) are reported as 0.
    """
    r = _as_returns(returns)
    dd = _drawdowns(_wealth(r))[1:]
    if isinstance(returns, pd.Series):
        return pd.Series(dd, index=returns.index, name="drawdown")
    return dd


def max_drawdown(returns: ReturnsLike) -> float:
    """Largest peak-to-trough loss as a POSITIVE fraction (0.45 = 45 %); 0 if none or empty."""
    r = _as_returns(returns)
    return float(_drawdowns(_wealth(r)).max())


def max_drawdown_duration(returns: ReturnsLike) -> int:
    """Longest drawdown in periods, from its peak to the recovery of that peak.

    A drawdown not recovered by the end counts from its peak to the last period. A single
    losing period that is recovered on the next one spans 2 periods. 0 without drawdowns.
    """
    r = _as_returns(returns)
    dd = _drawdowns(_wealth(r))
    return int(_longest_underwater(dd, np.arange(dd.size)))


def max_drawdown_duration_days(equity: pd.Series) -> float:
    """Longest drawdown of an equity curve in days (float), peak to recovery or to the end.

    Takes equity rather than returns because the peak can be the first bar, whose
    timestamp a return series does not carry. Measured on the timestamps, so gaps in the
    index count at their real length. 0 without drawdowns; NaN if ``equity`` is empty.
    """
    e = _validate_equity(equity)
    if not isinstance(equity.index, pd.DatetimeIndex):
        raise ValueError("max_drawdown_duration_days needs an equity Series with a DatetimeIndex")
    if e.size == 0:
        return float("nan")
    dd = _drawdowns(e / e[0])
    # Via Timedelta division rather than asi8: the index resolution (ns, us, s) varies.
    days = np.asarray((equity.index - equity.index[0]) / _DAY, dtype=float)
    return _longest_underwater(dd, days)


def calmar_ratio(returns: ReturnsLike, periods_per_year: float) -> float:
    """CAGR divided by the (positive) max drawdown; NaN when there is no drawdown."""
    mdd = max_drawdown(returns)
    if mdd == 0:
        return float("nan")
    with np.errstate(over="ignore"):
        return _finite(cagr(returns, periods_per_year) / mdd)


# --------------------------------------------------------------------------- tails


def value_at_risk(returns: ReturnsLike, level: float = 0.95) -> float:
    """Historical one-period VaR as a POSITIVE loss fraction (0.05 = a 5 % loss).

    Minus the ``1 - level`` quantile of the returns, linearly interpolated between order
    statistics (``np.quantile(..., method="linear")``, as ``np.percentile`` in
    empyrical). Negative when even that quantile is a gain. NaN if empty.
    """
    r = _as_returns(returns)
    lvl = _check_level(level)
    if r.size == 0:
        return float("nan")
    # + 0.0 turns -0.0 into 0.0 for a flat series.
    return float(-np.quantile(r, 1.0 - lvl, method="linear") + 0.0)


def conditional_value_at_risk(returns: ReturnsLike, level: float = 0.95) -> float:
    """Historical CVaR (expected shortfall) as a POSITIVE loss fraction.

    Minus the mean of the ``k = floor((n - 1) * (1 - level)) + 1`` smallest returns: the
    observations at or below the position of the linearly interpolated VaR quantile
    (``(n - 1) * (1 - level)`` in the sorted sample). Counting observations rather than
    comparing against the VaR value keeps ties deterministic; it equals empyrical's
    ``conditional_value_at_risk(returns, cutoff=1 - level)``. Always >= VaR. NaN if empty.
    """
    r = _as_returns(returns)
    lvl = _check_level(level)
    if r.size == 0:
        return float("nan")
    k = int((r.size - 1) * (1.0 - lvl)) + 1
    return float(-np.mean(np.partition(r, k - 1)[:k]) + 0.0)


def omega_ratio(returns: ReturnsLike, threshold: float = 0.0) -> float:
    """Omega ratio: sum of gains above ``threshold`` / sum of losses below it.

    ``threshold`` is a PER-PERIOD return (not annual). NaN if empty or if no return is
    below the threshold.
    """
    r = _as_returns(returns)
    if r.size == 0:
        return float("nan")
    d = r - threshold
    loss = -d[d < 0].sum()
    if loss == 0:
        return float("nan")
    with np.errstate(over="ignore"):
        return _finite(d[d > 0].sum() / loss)


def tail_ratio(returns: ReturnsLike) -> float:
    """``|95th percentile| / |5th percentile|`` of the returns (linear interpolation).

    Above 1: the right tail is fatter than the left. NaN if empty or if the 5th
    percentile is 0.
    """
    r = _as_returns(returns)
    if r.size == 0:
        return float("nan")
    p95, p5 = np.quantile(r, [0.95, 0.05], method="linear")
    if p5 == 0:
        return float("nan")
    with np.errstate(over="ignore"):
        return _finite(abs(p95) / abs(p5))


# --------------------------------------------------------------------------- trading


def _validate_trades(trades: pd.DataFrame) -> None:
    missing = [c for c in TRADE_COLUMNS if c not in trades.columns]
    if missing:
        raise ValueError(f"trades is missing column(s) {missing}; expected {list(TRADE_COLUMNS)}")
    if trades.empty:
        return
    values = {}
    for col in ("quantity", "price", "fee"):
        values[col] = pd.to_numeric(trades[col], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(values[col])):
            raise ValueError(f"trades[{col!r}] contains NaN, infinite or non-numeric values")
    if np.any(values["quantity"] < 0):
        raise ValueError("trades['quantity'] must be positive; the direction is in 'side'")
    if np.any(values["price"] <= 0):
        raise ValueError("trades['price'] must be positive")
    sides = set(trades["side"].unique()) - {"buy", "sell"}
    if sides:
        raise ValueError(f"trades['side'] must be 'buy' or 'sell', got {sorted(map(str, sides))}")


def turnover(trades: pd.DataFrame, equity: pd.Series, periods_per_year: float) -> float:
    """Annualised ONE-WAY turnover as a fraction of equity.

    ``0.5 * sum(|quantity * price| / equity at the fill) / years``, with years = number
    of return periods (``len(equity) - 1``) / ``periods_per_year``. The 0.5 makes it
    one-way: a full buy-in from cash counts 0.5, a full switch from one asset to another
    (sell all, buy all) counts 1.0. "Equity at the fill" is the equity at the fill's
    timestamp, or the last one before it when the timestamps differ. Fills at zero
    equity (a liquidation at a wipe-out) have no meaningful ratio and are left out.
    0 without trades; NaN when the equity spans no period.
    """
    ppy = _check_ppy(periods_per_year)
    e = _validate_equity(equity)
    _validate_trades(trades)
    n_periods = e.size - 1
    if n_periods < 1:
        return float("nan")
    if trades.empty:
        return 0.0
    if not isinstance(equity.index, pd.DatetimeIndex):
        raise ValueError("turnover needs an equity Series with a DatetimeIndex")
    ts = pd.DatetimeIndex(pd.to_datetime(trades["timestamp"], format="ISO8601"))
    if (ts.tz is None) != (equity.index.tz is None):
        raise ValueError(
            "trades['timestamp'] and the equity index must both be tz-aware (UTC) or both naive"
        )
    pos = equity.index.searchsorted(ts, side="right") - 1
    if np.any(pos < 0):
        raise ValueError(f"a fill at {ts[pos < 0][0]} precedes the first equity timestamp")
    eq_at_fill = e[pos]
    quantity = pd.to_numeric(trades["quantity"]).to_numpy(dtype=float)
    notional = np.abs(quantity * pd.to_numeric(trades["price"]).to_numpy(dtype=float))
    alive = eq_at_fill > 0
    traded = float(np.sum(notional[alive] / eq_at_fill[alive]))
    years = n_periods / ppy
    return 0.5 * traded / years


def fees_paid(trades: pd.DataFrame) -> float:
    """Sum of the ``fee`` column in quote currency (rebates, as negative fees, reduce it)."""
    _validate_trades(trades)
    return float(pd.to_numeric(trades["fee"]).to_numpy(dtype=float).sum())


def average_exposure(gross_exposure: pd.Series) -> float:
    """Mean gross exposure: per bar, gross position value / equity (1.0 = fully invested).

    NaN if empty. Values must be finite and non-negative.
    """
    x = np.asarray(gross_exposure, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"gross_exposure must be one-dimensional, got shape {x.shape}")
    if x.size == 0:
        return float("nan")
    if not np.all(np.isfinite(x)):
        raise ValueError("gross_exposure contains NaN or infinite values")
    if np.any(x < 0):
        raise ValueError("gross_exposure must be non-negative (gross = sum of |position| / equity)")
    return float(x.mean())


# --------------------------------------------------------------------------- summary


def compute_metrics(
    equity: pd.Series,
    *,
    periods_per_year: float,
    risk_free: float = 0.0,
    trades: pd.DataFrame | None = None,
    gross_exposure: pd.Series | None = None,
) -> dict[str, float]:
    """All metrics of an equity curve, as plain Python floats keyed by :data:`METRIC_KEYS`.

    ``equity`` is indexed by UTC timestamps (strictly increasing). Sharpe and Sortino are
    in excess of the annual ``risk_free``; Omega uses the per-period risk-free rate as its
    threshold. VaR/CVaR are one-period, at 95 % and 99 %. ``turnover``, ``fees_paid`` and
    ``average_exposure`` are NaN when ``trades`` / ``gross_exposure`` are not given.
    Undefined values are ``nan`` (see the module docstring); an empty equity curve gives
    NaN everywhere except ``n_periods`` = 0 and the trade metrics.
    """
    ppy = _check_ppy(periods_per_year)
    e = _validate_equity(equity)
    if not isinstance(equity.index, pd.DatetimeIndex):
        raise ValueError("equity must be indexed by timestamps (a DatetimeIndex)")
    nan = float("nan")
    r = returns_from_equity(equity).to_numpy()
    rf_p = per_period_rate(risk_free, ppy)

    out: dict[str, float] = dict.fromkeys(METRIC_KEYS, nan)
    if e.size:
        out.update(
            total_return=total_return(r),
            cagr=cagr(r, ppy),
            volatility=annual_volatility(r, ppy),
            sharpe=sharpe_ratio(r, ppy, risk_free),
            sortino=sortino_ratio(r, ppy, risk_free),
            calmar=calmar_ratio(r, ppy),
            max_drawdown=max_drawdown(r),
            max_drawdown_duration_days=max_drawdown_duration_days(equity),
            var_95=value_at_risk(r, 0.95),
            cvar_95=conditional_value_at_risk(r, 0.95),
            var_99=value_at_risk(r, 0.99),
            cvar_99=conditional_value_at_risk(r, 0.99),
            omega=omega_ratio(r, rf_p),
            tail_ratio=tail_ratio(r),
            start_equity=float(e[0]),
            end_equity=float(e[-1]),
        )
    out["n_periods"] = float(r.size)
    if trades is not None:
        out["turnover"] = turnover(trades, equity, ppy)
        out["fees_paid"] = fees_paid(trades)
    if gross_exposure is not None:
        out["average_exposure"] = average_exposure(gross_exposure)
    return {k: float(v) for k, v in out.items()}


def tracking_error(
    equity: pd.Series, target_weights: pd.DataFrame, close: pd.DataFrame, periods_per_year: float
) -> float:
    """Annualised tracking error of a run against its own target weights.

    The target portfolio earns ``sum_j w*_{t-1,j} r_{t,j}`` over bar t (targets decided at
    the close of t-1, simple close-to-close returns, unlisted assets count as cash); the
    tracking error is the sample std (ddof=1) of the run's return minus that, times
    ``sqrt(periods_per_year)``. NaN with fewer than two comparable bars.
    """
    ppy = _check_ppy(periods_per_year)
    returns = close.reindex(index=equity.index, columns=target_weights.columns).pct_change(
        fill_method=None
    )
    held = target_weights.reindex(equity.index).shift(1)
    target_return = (held * returns.fillna(0.0)).sum(axis=1, min_count=1)
    target_return = target_return.where(held.notna().any(axis=1))
    active = (equity.pct_change() - target_return).dropna()
    if len(active) < 2:
        return float("nan")
    return float(active.std(ddof=1) * np.sqrt(ppy))
