"""Trend versus range, at one timeframe and across several; all causal.

Inputs are DataFrames (time x asset, bar open times in UTC) or Series; outputs have the
input's shape. The value at bar t uses bars up to and including t. NaN until an asset has
enough history and where it is not listed.

Multi-timeframe: ``multi_timeframe`` aggregates fine bars (say 1h) into coarser bars
(4h, 1d) on the UTC grid, computes a signal on each, and puts the coarse values back on
the fine index. A coarse bar's value becomes available only at the fine bar that closes
with it (the last fine bar of its bin) and is forward-filled until the next coarse bar
closes, so no fine bar ever sees a coarse bar that is still open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from trimtab.data.panel import infer_timeframe, timeframe_seconds
from trimtab.signals.volatility import Frame, _as_frame, _like, _values, seeded_ewm, true_range

ADX_RANGE = 15.0
ADX_TREND = 35.0


def efficiency_ratio(close: Frame, window: int = 10, *, signed: bool = False) -> Frame:
    """Kaufman's efficiency ratio: net move over the path length of the last ``window`` bars.

    ``|close_t - close_{t-window}| / sum(|close_i - close_{i-1}|)``, in [0, 1]: 1 is a
    straight line, near ``1 / sqrt(window)`` a random walk. ``signed=True`` keeps the sign
    of the net move (in [-1, 1]). A window without any movement scores 0.
    """
    net = close - close.shift(window)
    path = close.diff().abs().rolling(window, min_periods=window).sum()
    ratio = (net if signed else net.abs()) / path
    # A flat window has no trend; 0 / 0 would otherwise read as missing data.
    flat = (path == 0) & net.notna()
    return ratio.mask(flat, 0.0)


def directional_index(
    high: Frame, low: Frame, close: Frame, window: int = 14
) -> tuple[Frame, Frame, Frame]:
    """Wilder's +DI, -DI and ADX (each 0..100); see ``adx``."""
    h, lo = _values(high), _values(low)
    up = np.full_like(h, np.nan)
    down = np.full_like(h, np.nan)
    up[1:] = h[1:] - h[:-1]
    down[1:] = lo[:-1] - lo[1:]
    with np.errstate(invalid="ignore"):
        plus_dm = np.where((up > down) & (up > 0), up, 0.0)
        minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    missing = ~np.isfinite(up) | ~np.isfinite(down)
    plus_dm[missing] = np.nan
    minus_dm[missing] = np.nan
    tr = _values(true_range(high, low, close))
    alpha = 1.0 / window
    # Wilder smooths sums; his running averages give the same ratios.
    tr_s = seeded_ewm(tr, alpha, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        plus_di = np.where(tr_s > 0, 100.0 * seeded_ewm(plus_dm, alpha, window) / tr_s, 0.0)
        minus_di = np.where(tr_s > 0, 100.0 * seeded_ewm(minus_dm, alpha, window) / tr_s, 0.0)
        total = plus_di + minus_di
        dx = np.where(total > 0, 100.0 * np.abs(plus_di - minus_di) / total, 0.0)
    gone = ~np.isfinite(tr_s)
    for arr in (plus_di, minus_di, dx):
        arr[gone] = np.nan
    adx_ = seeded_ewm(dx, alpha, window)
    return _like(plus_di, close), _like(minus_di, close), _like(adx_, close)


def adx(high: Frame, low: Frame, close: Frame, window: int = 14) -> Frame:
    """Wilder's average directional index (0..100): trend strength, not direction.

    +DM/-DM and true range are smoothed with Wilder's average (seeded by the mean of the
    first ``window`` values), DX = 100 |+DI - -DI| / (+DI + -DI), ADX = Wilder average
    of DX. First value at bar ``2 * window - 1`` of a listing (as TA-Lib). Above ~25 is
    read as trending, below ~20 as ranging.
    """
    return directional_index(high, low, close, window)[2]


def trend_strength(
    high: Frame,
    low: Frame,
    close: Frame,
    window: int = 14,
    *,
    er_window: int | None = None,
    adx_range: float = ADX_RANGE,
    adx_trend: float = ADX_TREND,
) -> Frame:
    """Trend (1) versus range (0): the mean of an ADX score and an efficiency-ratio score.

    ADX score: 0 at ``adx_range`` (15) or below, 1 at ``adx_trend`` (35) or above, linear
    between, so the customary threshold of 25 maps to 0.5. Efficiency-ratio score: the
    ratio over ``er_window`` bars (default ``window``) in units of its random-walk level
    ``1 / sqrt(n)``, mapped 0 at that level and 1 at three times it, so it means the same
    for any window. NaN unless both parts exist.
    """
    n = er_window or window
    er = _values(efficiency_ratio(close, n))
    er_score = np.clip((er * np.sqrt(n) - 1.0) / 2.0, 0.0, 1.0)
    adx_score = np.clip(
        (_values(adx(high, low, close, window)) - adx_range) / (adx_trend - adx_range), 0.0, 1.0
    )
    return _like((er_score + adx_score) / 2.0, close)


# ------------------------------------------------------------------ multi-timeframe


class Bars(NamedTuple):
    """OHLC frames (time x asset) at one timeframe."""

    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame


def _bin_starts(index: pd.DatetimeIndex, timeframe: str) -> pd.DatetimeIndex:
    step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    # Bins are multiples of the step from the Unix epoch; 1970-01-01 was a Thursday, so
    # weekly bins count from Monday 1970-01-05 instead, as Binance's weeks do.
    origin = pd.Timestamp("1970-01-05" if timeframe == "1w" else "1970-01-01", tz=index.tz)
    return origin + ((index - origin) // step) * step


def resample_ohlc(bars: Bars, timeframe: str) -> Bars:
    """Aggregate fine bars into ``timeframe`` bars on the UTC grid, stamped at open time.

    First open, highest high, lowest low, last close of each bin, per asset, over the fine
    bars that exist. A bin is a coarse bar whether or not it is complete; ``align_to_fine``
    makes sure no one sees it before it closes.
    """
    bins = _bin_starts(pd.DatetimeIndex(bars.close.index), timeframe)

    def agg(frame: pd.DataFrame, how: str) -> pd.DataFrame:
        return getattr(frame.groupby(bins), how)()

    out = Bars(
        open=agg(bars.open, "first"),
        high=agg(bars.high, "max"),
        low=agg(bars.low, "min"),
        close=agg(bars.close, "last"),
    )
    return Bars(*(f.rename_axis(bars.close.index.name) for f in out))


def align_to_fine(
    coarse: pd.DataFrame,
    fine_index: pd.DatetimeIndex,
    coarse_timeframe: str,
    fine_timeframe: str,
) -> pd.DataFrame:
    """Put coarse values (indexed by coarse open time) on a fine index, causally.

    The coarse bar opening at B closes at B + coarse length; at fine bar t (closing at
    t + fine length) it is visible iff B + coarse <= t + fine. So its value is stamped on
    the fine bar B + coarse - fine and forward-filled from there.
    """
    lag = pd.Timedelta(seconds=timeframe_seconds(coarse_timeframe)) - pd.Timedelta(
        seconds=timeframe_seconds(fine_timeframe)
    )
    if lag < pd.Timedelta(0):
        raise ValueError(f"{coarse_timeframe} is finer than {fine_timeframe}")
    shifted = coarse.set_axis(coarse.index + lag)
    return shifted.reindex(fine_index, method="ffill")


def multi_timeframe(
    bars: Bars,
    signal: Callable[[Bars], pd.DataFrame],
    timeframes: Sequence[str] = ("1h", "4h", "1d"),
    *,
    fine_timeframe: str | None = None,
) -> dict[str, pd.DataFrame]:
    """``signal`` computed at each of ``timeframes`` and aligned to the fine bars' index.

    ``bars`` are at ``fine_timeframe`` (inferred from the index when not given); each
    timeframe must be a multiple of it. Window lengths inside ``signal`` count bars of the
    timeframe it runs at (14 hours, 14 four-hour bars, 14 days). Values are NaN where the
    fine close is NaN (asset not listed).
    """
    fine_index = pd.DatetimeIndex(bars.close.index)
    fine_tf = fine_timeframe or infer_timeframe(fine_index)
    fine_s = timeframe_seconds(fine_tf)
    listed = bars.close.notna()
    out: dict[str, pd.DataFrame] = {}
    for tf in timeframes:
        tf_s = timeframe_seconds(tf)
        if tf_s < fine_s or tf_s % fine_s:
            raise ValueError(f"{tf} is not a whole multiple of the {fine_tf} bars")
        if tf_s == fine_s:
            values = _as_frame(signal(bars))
        else:
            coarse = resample_ohlc(bars, tf)
            values = align_to_fine(_as_frame(signal(coarse)), fine_index, tf, fine_tf)
        out[tf] = values.where(listed)
    return out


def combine_timeframes(
    signals: Mapping[str, pd.DataFrame], how: str = "mean", *, threshold: float = 0.5
) -> pd.DataFrame:
    """Combine aligned per-timeframe signals into one frame.

    ``how``: ``"mean"``, ``"min"`` (all timeframes must agree, weakest wins), or
    ``"count"`` (how many timeframes exceed ``threshold``). NaN where any timeframe is
    NaN, so a combined value always has every timeframe behind it.
    """
    frames = list(signals.values())
    if not frames:
        raise ValueError("no signals to combine")
    stack = np.stack([_values(f) for f in frames])
    missing = np.isnan(stack).any(axis=0)
    if how == "mean":
        combined = stack.mean(axis=0)
    elif how == "min":
        combined = stack.min(axis=0)
    elif how == "count":
        combined = (stack > threshold).sum(axis=0).astype(float)
    else:
        raise ValueError("how must be 'mean', 'min' or 'count'")
    combined[missing] = np.nan
    return pd.DataFrame(combined, index=frames[0].index, columns=frames[0].columns)


def multi_timeframe_trend(
    bars: Bars,
    timeframes: Sequence[str] = ("1h", "4h", "1d"),
    window: int = 14,
    how: str = "mean",
    *,
    fine_timeframe: str | None = None,
) -> pd.DataFrame:
    """``trend_strength`` at each timeframe, combined with ``combine_timeframes``."""
    per_tf = multi_timeframe(
        bars,
        lambda b: trend_strength(b.high, b.low, b.close, window),
        timeframes,
        fine_timeframe=fine_timeframe,
    )
    return combine_timeframes(per_tf, how)
