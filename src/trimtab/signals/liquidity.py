"""Liquidity signals from bars: Amihud illiquidity, volume trend, OHLC spread estimates.

Inputs are panels (DataFrames, timestamp x symbol, bars stamped at their open) of close,
high, low and quote volume (in the quote currency, USDT for the shared data), NaN
outside an asset's listing. Every output at bar t uses bars up to t only (trailing
windows, including t) and is NaN where the window holds fewer than ``min_periods``
usable values (default: half the window, rounded up) or the asset is not listed at t.

Bars that did not trade (``trimtab.data.panel.Panel.has_bar`` False: flat filler bars
with zero volume) carry no information about liquidity; pass ``has_bar`` to skip them.

Units: Amihud in absolute return per million of quote currency traded (``scale``),
volume trend as a natural-log ratio, spreads in basis points of price.

Caveat on the OHLC spread estimators: they read the spread off the bounce of trade
prices between bid and ask, so on daily bars of liquid coins (true spreads well under
1 bp) they mostly measure intraday noise and report tens of bps (BTCUSDT 2017-2023 on
daily bars: ~25-100 bps). Use them to rank and to watch changes; use order book data
(``trimtab.signals.orderbook``) for the level of spread when it exists.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel

__all__ = [
    "abdi_ranaldo_spread",
    "amihud_illiquidity",
    "corwin_schultz_spread",
    "cs_two_bar_spread",
    "ar_two_bar_squared_spread",
    "liquidity_signals",
    "volume_trend",
]

_BPS = 1e4


def _min_periods(window: int, min_periods: int | None) -> int:
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    mp = math.ceil(window / 2) if min_periods is None else int(min_periods)
    if not 1 <= mp <= window:
        raise ValueError(f"min_periods must be in [1, {window}], got {min_periods!r}")
    return mp


def _listed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.notna()


def amihud_illiquidity(
    close: pd.DataFrame,
    quote_volume: pd.DataFrame,
    window: int = 30,
    min_periods: int | None = None,
    scale: float = 1e6,
    has_bar: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Amihud (2002) illiquidity: trailing mean of ``|r_t| / quote_volume_t``.

    ``r_t`` is the simple close-to-close return of bar t, ``quote_volume_t`` what traded in
    bar t (quote currency). Multiplied by ``scale`` (default 1e6: price move per million
    USDT traded). Bars with zero or missing volume, and bars with ``has_bar`` False, are
    skipped rather than counted as infinitely illiquid. Higher means less liquid.
    """
    mp = _min_periods(window, min_periods)
    ret = close.pct_change(fill_method=None).abs()
    qv = quote_volume.reindex_like(close)
    ok = qv > 0
    if has_bar is not None:
        ok &= has_bar.reindex_like(close).fillna(False).astype(bool)
    ratio = (ret / qv.where(ok)) * scale
    out = ratio.rolling(window, min_periods=mp).mean()
    return out.where(_listed(close))


def volume_trend(
    quote_volume: pd.DataFrame,
    short: int = 7,
    long: int = 90,
    min_periods: int | None = None,
) -> pd.DataFrame:
    """Log ratio of short- to long-window average quote volume, ``ln(mean_s / mean_l)``.

    Trailing means including bar t; zero-volume filler bars count as zero (nothing
    traded). Positive when trading picks up, negative when liquidity is drying up (-0.69:
    half the usual volume). ``min_periods`` applies to each window (default: half of it).
    NaN when either mean is zero or missing, or where the asset is not listed.
    """
    if short >= long:
        raise ValueError(f"short ({short}) must be less than long ({long})")
    qv = quote_volume.astype(float)
    mp_short = None if min_periods is None else min(int(min_periods), short)
    ms = qv.rolling(short, min_periods=_min_periods(short, mp_short)).mean()
    ml = qv.rolling(long, min_periods=_min_periods(long, min_periods)).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(ms.where(ms > 0) / ml.where(ml > 0))
    return out.where(_listed(qv))


# --------------------------------------------------------------------------- spreads


def _pair_mask(frame: pd.DataFrame, has_bar: pd.DataFrame | None) -> pd.DataFrame:
    """True where both bar t-1 and bar t traded (when ``has_bar`` is given)."""
    if has_bar is None:
        return pd.DataFrame(True, index=frame.index, columns=frame.columns)
    hb = has_bar.reindex_like(frame).fillna(False).astype(bool)
    return hb & hb.shift(1, fill_value=False)


_K = 3.0 - 2.0 * math.sqrt(2.0)


def cs_two_bar_spread(
    high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame, adjust_gaps: bool = True
) -> pd.DataFrame:
    """Corwin-Schultz (2012) two-bar spread estimate ending at bar t, as a fraction.

    From the high/low of bars t-1 and t (eq. 14 of the paper)::

        beta  = ln(H_{t-1}/L_{t-1})^2 + ln(H_t/L_t)^2
        gamma = ln(max(H_{t-1}, H_t) / min(L_{t-1}, L_t))^2
        alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))
        S     = 2 (e^alpha - 1) / (1 + e^alpha)

    With ``adjust_gaps`` bar t's high and low are first shifted by the gap between the
    close of t-1 and bar t's range (the paper's overnight adjustment; rare in 24/7
    markets). Can be negative: see ``corwin_schultz_spread`` for the handling.
    """
    h0, l0, c0 = high.shift(1), low.shift(1), close.shift(1)
    h1, l1 = high.astype(float), low.astype(float)
    if adjust_gaps:
        up = (l1 - c0).where(l1 > c0, 0.0)
        down = (c0 - h1).where(h1 < c0, 0.0)
        h1 = h1 - up + down
        l1 = l1 - up + down
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.log(h0 / l0) ** 2 + np.log(h1 / l1) ** 2
        hmax = np.maximum(h0, h1)
        lmin = np.minimum(l0, l1)
        gamma = np.log(hmax / lmin) ** 2
        alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _K - np.sqrt(gamma / _K)
        ea = np.exp(alpha)
        return 2.0 * (ea - 1.0) / (1.0 + ea)


def ar_two_bar_squared_spread(
    high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame
) -> pd.DataFrame:
    """Abdi-Ranaldo (2017) two-bar squared spread estimate ending at bar t.

    ``s^2 = 4 (c_{t-1} - eta_{t-1}) (c_{t-1} - eta_t)`` with ``c`` the log close and
    ``eta = (ln H + ln L) / 2`` the log mid-range (eq. 9 of the paper, the pair of bars
    t-1 and t so that only data up to t is used). Can be negative.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = (np.log(high.astype(float)) + np.log(low.astype(float))) / 2.0
        c = np.log(close.astype(float))
    c0 = c.shift(1)
    return 4.0 * (c0 - eta.shift(1)) * (c0 - eta)


def corwin_schultz_spread(
    high: pd.DataFrame,
    low: pd.DataFrame,
    close: pd.DataFrame,
    window: int = 30,
    min_periods: int | None = None,
    negatives: Literal["window", "two_bar"] = "window",
    adjust_gaps: bool = True,
    has_bar: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Corwin-Schultz high-low spread estimate over a trailing window, in bps.

    Averages ``cs_two_bar_spread`` over the two-bar estimates ending at bars
    ``t - window + 1 .. t``. Negative estimates, per the paper's two treatments:

    - ``negatives="window"`` (default): average the raw two-bar estimates, then set a
      negative average to 0. Nearly unbiased when volatility is large against the spread
      (crypto: daily moves of several % against spreads of a few bps).
    - ``negatives="two_bar"``: set each negative two-bar estimate to 0, then average (the
      paper's main choice for equities). With crypto volatility that floor adds a bias of
      the order of the volatility itself (about +120 bps at 3 % daily volatility with no
      spread in a simulation), so it is not the default.

    ``has_bar`` (optional) drops pairs that include a bar that did not trade.
    """
    mp = _min_periods(window, min_periods)
    s = cs_two_bar_spread(high, low, close, adjust_gaps=adjust_gaps)
    s = s.where(_pair_mask(s, has_bar))
    s = s.where(np.isfinite(s))
    if negatives == "two_bar":
        out = s.clip(lower=0.0).rolling(window, min_periods=mp).mean()
    elif negatives == "window":
        out = s.rolling(window, min_periods=mp).mean().clip(lower=0.0)
    else:
        raise ValueError(f"negatives must be 'window' or 'two_bar', got {negatives!r}")
    return (out * _BPS).where(_listed(close))


def abdi_ranaldo_spread(
    high: pd.DataFrame,
    low: pd.DataFrame,
    close: pd.DataFrame,
    window: int = 30,
    min_periods: int | None = None,
    negatives: Literal["window", "two_bar"] = "window",
    has_bar: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Abdi-Ranaldo (2017) close-high-low spread estimate over a trailing window, in bps.

    From ``ar_two_bar_squared_spread`` over the pairs ending at bars
    ``t - window + 1 .. t``, with the paper's two corrections for negatives:

    - ``negatives="window"`` (default, the paper's "monthly corrected" estimator):
      ``sqrt(max(mean(s^2), 0))``.
    - ``negatives="two_bar"`` (the paper's "two-day corrected" estimator):
      ``mean(sqrt(max(s^2, 0)))``; biased upwards when volatility dwarfs the spread.

    ``has_bar`` (optional) drops pairs that include a bar that did not trade.
    """
    mp = _min_periods(window, min_periods)
    s2 = ar_two_bar_squared_spread(high, low, close)
    s2 = s2.where(_pair_mask(s2, has_bar))
    s2 = s2.where(np.isfinite(s2))
    if negatives == "window":
        m = s2.rolling(window, min_periods=mp).mean()
        out = np.sqrt(m.clip(lower=0.0))
    elif negatives == "two_bar":
        out = np.sqrt(s2.clip(lower=0.0)).rolling(window, min_periods=mp).mean()
    else:
        raise ValueError(f"negatives must be 'window' or 'two_bar', got {negatives!r}")
    return (out * _BPS).where(_listed(close))


def liquidity_signals(
    panel: Panel, window: int = 30, short: int = 7, long: int = 90
) -> dict[str, pd.DataFrame]:
    """All liquidity signals of a panel, skipping bars that did not trade.

    Keys: ``amihud`` (per 1e6 quote volume), ``volume_trend`` (log ratio),
    ``spread_cs_bps`` and ``spread_ar_bps`` (trailing ``window`` bars).
    """
    hb = panel.has_bar
    return {
        "amihud": amihud_illiquidity(panel.close, panel.quote_volume, window, has_bar=hb),
        "volume_trend": volume_trend(panel.quote_volume, short, long),
        "spread_cs_bps": corwin_schultz_spread(
            panel.high, panel.low, panel.close, window, has_bar=hb
        ),
        "spread_ar_bps": abdi_ranaldo_spread(
            panel.high, panel.low, panel.close, window, has_bar=hb
        ),
    }
