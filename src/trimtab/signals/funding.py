"""Perpetual funding signals: level, annualised carry, z-score, cross-venue dispersion.

Input is the long funding frame ``timestamp, symbol, venue, funding_rate`` (as from
``trimtab.data.readers.read_funding`` or ``load_funding``): one row per funding event,
``timestamp`` the UTC time the rate was fixed and paid, ``funding_rate`` the rate for
that funding interval as a fraction of notional. Positive: longs pay shorts.

Conventions:

- **Funding interval** per venue is inferred from the data: the most common spacing of
  that venue's timestamps (rounded to the minute), e.g. 8 h on Binance, Bybit, Gate,
  HTX, KuCoin and MEXC (3 fundings a day) and 1 h on dYdX (24 a day). Override with
  ``intervals={"venue": "8h"}``.
- **Annualised carry** ``carry_annual = funding_rate * intervals_per_year`` with
  ``intervals_per_year = 8,760 h / interval`` (365-day year; 1,095 for 8 h, 8,760 for
  1 h): what a long pays (a short earns) per year as a fraction of notional, simple,
  not compounded. It makes venues with different intervals comparable.
- **Z-score** against the series' own trailing history: events of that (symbol, venue)
  within the last ``z_window`` of time, the current one included.
- **Common clock, no lookahead**: to compare venues at time t, each venue contributes
  its latest rate stamped at or before t (an as-of join), and nothing if that rate is
  older than ``max_age`` (default 3 funding intervals of that venue), so a venue that
  stopped reporting drops out instead of contributing a stale rate.
- **Bars**: a rate stamped s is known at s, so bar t (open t, close t + bar) sees the
  latest rate with ``s <= t + bar`` (``align_funding``), the rule of
  ``trimtab.signals.external``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.signals.external import asof_positions, bar_closes

__all__ = [
    "FUNDING_COLUMNS",
    "align_funding",
    "funding_asof",
    "funding_dispersion",
    "funding_intervals",
    "funding_signals",
    "intervals_per_year",
    "load_funding",
]

FUNDING_COLUMNS = ("timestamp", "symbol", "venue", "funding_rate")
HOURS_PER_YEAR = 8760.0
#: Default staleness limit on a common clock, in funding intervals of the venue.
MAX_AGE_INTERVALS = 3


def load_funding(path: str | Path) -> pd.DataFrame:
    """Read and validate a funding CSV (``trimtab.data.readers.read_funding``)."""
    from trimtab.data.readers import read_funding

    return read_funding(path)


def _check(funding: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in FUNDING_COLUMNS if c not in funding.columns]
    if missing:
        raise ValueError(f"funding frame lacks column(s): {', '.join(missing)}")
    ts = funding["timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError("funding timestamps must be timezone-aware (UTC)")
    f = funding[list(FUNDING_COLUMNS)].copy()
    f["timestamp"] = ts.dt.tz_convert("UTC")
    return f.sort_values(["symbol", "venue", "timestamp"], kind="stable").reset_index(drop=True)


def funding_intervals(
    funding: pd.DataFrame, intervals: Mapping[str, str | pd.Timedelta] | None = None
) -> pd.Series:
    """Funding interval of each venue (Timedelta), inferred unless given in ``intervals``.

    The most common gap between consecutive events of the same symbol on a venue,
    rounded to the minute. A venue with a single event and no override raises.
    """
    f = _check(funding)
    out = {}
    for venue, g in f.groupby("venue", sort=True):
        if intervals and venue in intervals:
            out[venue] = pd.Timedelta(intervals[venue])
            continue
        gaps = g.groupby("symbol")["timestamp"].diff().dropna()
        gaps = gaps[gaps > pd.Timedelta(0)].dt.round("min")
        if gaps.empty:
            raise ValueError(f"cannot infer the funding interval of {venue!r}; pass intervals=")
        out[venue] = gaps.mode().iloc[0]
    return pd.Series(out, name="interval", dtype="timedelta64[ns]").rename_axis("venue")


def intervals_per_year(interval: pd.Timedelta | str) -> float:
    """Funding events per 365-day year for an interval (1,095 for 8 h, 8,760 for 1 h)."""
    hours = pd.Timedelta(interval) / pd.Timedelta(hours=1)
    if hours <= 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    return HOURS_PER_YEAR / hours


def funding_signals(
    funding: pd.DataFrame,
    z_window: str | pd.Timedelta = "90D",
    z_min_history: str | pd.Timedelta = "14D",
    intervals: Mapping[str, str | pd.Timedelta] | None = None,
) -> pd.DataFrame:
    """Per (symbol, venue) event: level, annualised carry and its trailing z-score.

    Returns the long frame sorted by symbol, venue, timestamp with columns
    ``timestamp, symbol, venue, funding_rate`` (level, per interval, fraction),
    ``interval_hours``, ``intervals_per_year``, ``carry_annual`` (fraction per year, see
    the module docstring) and ``carry_z``: ``(carry - mean) / std`` (ddof=1) over that
    series' events in ``(t - z_window, t]``, NaN until the window holds at least
    ``z_min_history / interval`` events (14 days: 42 events at 8 h, 336 at 1 h) or when
    the std is zero.
    """
    f = _check(funding)
    iv = funding_intervals(f, intervals)
    hours = f["venue"].map(iv / pd.Timedelta(hours=1)).astype(float)
    f["interval_hours"] = hours
    f["intervals_per_year"] = HOURS_PER_YEAR / hours
    f["carry_annual"] = f["funding_rate"] * f["intervals_per_year"]
    z = np.full(len(f), np.nan)
    window = pd.Timedelta(z_window)
    for (_sym, venue), g in f.groupby(["symbol", "venue"], sort=False):
        mp = max(2, int(pd.Timedelta(z_min_history) // iv[venue]))
        s = pd.Series(g["carry_annual"].to_numpy(), index=pd.DatetimeIndex(g["timestamp"]))
        roll = s.rolling(window, min_periods=mp)
        mean, std = roll.mean(), roll.std(ddof=1)
        zz = (s - mean) / std.where(std > 0)
        z[g.index.to_numpy()] = zz.to_numpy()
    f["carry_z"] = z
    return f


def _series_asof(
    times: np.ndarray, values: np.ndarray, query: np.ndarray, max_age_ns: int | None
) -> np.ndarray:
    pos = asof_positions(times, query)
    have = pos >= 0
    p = np.maximum(pos, 0)
    out = np.where(have, values[p], np.nan)
    if max_age_ns is not None:
        out = np.where(have & (query - times[p] <= max_age_ns), out, np.nan)
    return out


def _max_age_ns(
    max_age: str | pd.Timedelta | None | Mapping[str, str | pd.Timedelta],
    venue: str,
    interval: pd.Timedelta,
) -> int | None:
    if max_age == "auto":
        return int((MAX_AGE_INTERVALS * interval).value)
    if max_age is None:
        return None
    if isinstance(max_age, Mapping):
        return int(pd.Timedelta(max_age[venue]).value) if venue in max_age else None
    return int(pd.Timedelta(max_age).value)


def funding_asof(
    funding: pd.DataFrame,
    clock: pd.DatetimeIndex,
    value: str = "carry_annual",
    max_age: str | pd.Timedelta | None | Mapping[str, str | pd.Timedelta] = "auto",
    intervals: Mapping[str, str | pd.Timedelta] | None = None,
) -> pd.DataFrame:
    """Latest known ``value`` of every (symbol, venue) at each time of ``clock``.

    As-of join (stamp ``<=`` clock time). ``value`` is ``"funding_rate"`` or
    ``"carry_annual"``. ``max_age="auto"`` blanks values older than 3 intervals of their
    venue; a Timedelta applies one limit, a mapping one per venue, None none. Returns a
    frame indexed by ``clock`` with (symbol, venue) MultiIndex columns.
    """
    if not isinstance(clock, pd.DatetimeIndex) or clock.tz is None:
        raise ValueError("clock must be a timezone-aware (UTC) DatetimeIndex")
    if value not in ("funding_rate", "carry_annual"):
        raise ValueError(f"value must be 'funding_rate' or 'carry_annual', got {value!r}")
    f = _check(funding)
    iv = funding_intervals(f, intervals)
    q = clock.as_unit("ns").asi8
    cols, data = [], []
    for (sym, venue), g in f.groupby(["symbol", "venue"], sort=True):
        t = pd.DatetimeIndex(g["timestamp"]).as_unit("ns").asi8
        v = g["funding_rate"].to_numpy(float)
        if value == "carry_annual":
            v = v * intervals_per_year(iv[venue])
        data.append(_series_asof(t, v, q, _max_age_ns(max_age, venue, iv[venue])))
        cols.append((sym, venue))
    arr = np.column_stack(data) if data else np.empty((len(clock), 0))
    columns = pd.MultiIndex.from_tuples(cols, names=["symbol", "venue"])
    return pd.DataFrame(arr, index=clock, columns=columns)


def funding_dispersion(
    funding: pd.DataFrame,
    clock: pd.DatetimeIndex | None = None,
    max_age: str | pd.Timedelta | None | Mapping[str, str | pd.Timedelta] = "auto",
    min_venues: int = 2,
    intervals: Mapping[str, str | pd.Timedelta] | None = None,
) -> pd.DataFrame:
    """Cross-venue dispersion of annualised funding, per symbol, on a common clock.

    At each clock time: the standard deviation (ddof=1) across venues of their latest
    known ``carry_annual`` (``funding_asof``, no lookahead, stale values dropped), in
    fraction per year; NaN with fewer than ``min_venues`` venues. ``clock`` defaults to
    every distinct funding timestamp in the data. High dispersion flags a dislocated
    venue (a basis or liquidity problem, or a carry opportunity). Returns a frame
    indexed by clock, one column per symbol; ``attrs["venues"]`` holds the count of
    venues per cell as a frame.
    """
    f = _check(funding)
    if clock is None:
        clock = pd.DatetimeIndex(np.sort(f["timestamp"].unique()), name="timestamp")
    panel = funding_asof(f, clock, "carry_annual", max_age, intervals)
    by_symbol = panel.T.groupby(level="symbol")
    count = by_symbol.count().T
    std = by_symbol.std(ddof=1).T
    out = std.where(count >= max(min_venues, 2))
    out.columns.name = "symbol"
    out.attrs["venues"] = count
    return out


def align_funding(
    funding: pd.DataFrame,
    index: pd.DatetimeIndex,
    timeframe: str | pd.Timedelta | None = None,
    venue: str | None = None,
    value: str = "funding_rate",
    max_age: str | pd.Timedelta | None | Mapping[str, str | pd.Timedelta] = "auto",
    symbols: list[str] | None = None,
    intervals: Mapping[str, str | pd.Timedelta] | None = None,
) -> pd.DataFrame:
    """Latest funding known at each bar's close, aligned to a bar index.

    Bar t (stamped at its open) closes at ``t + bar``; its value is the latest event
    with ``timestamp <= t + bar`` (``timeframe`` names the bar length, or it is inferred
    from ``index``). ``value`` is ``"funding_rate"`` (per interval) or
    ``"carry_annual"``. With ``venue`` the columns are symbols (optionally reindexed to
    ``symbols``, e.g. a panel's); without, (symbol, venue) pairs. Staleness as in
    ``funding_asof``.
    """
    f = _check(funding)
    if venue is not None:
        if venue not in set(f["venue"]):
            raise KeyError(f"no venue {venue!r} in the data; venues: {sorted(set(f['venue']))}")
        f = f[f["venue"] == venue]
    closes = bar_closes(index, timeframe)
    aligned = funding_asof(f, closes, value, max_age, intervals)
    aligned.index = index
    if venue is not None:
        aligned = aligned.droplevel("venue", axis=1)
        if symbols is not None:
            aligned = aligned.reindex(columns=symbols)
        aligned.columns.name = "symbol"
    return aligned
