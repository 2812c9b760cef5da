"""Panels: OHLCV bars aligned as timestamp x symbol frames.

A panel is what the rest of trimtab sees of market data. Conventions:

- index: UTC timestamps, bar open times, strictly increasing, one row per bar of the
  panel's timeframe;
- columns: symbols (e.g. ``BTCUSDT``);
- an asset exists only between its first and last bar (its listing and delisting in the
  data): outside that span every field is NaN, never forward-filled;
- a missing bar inside that span (a gap) is filled with a flat bar at the previous close
  and zero volume, and ``has_bar`` is False there, so nothing trades on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError

FIELDS = ("open", "high", "low", "close", "volume", "quote_volume")
LONG_COLUMNS = ("timestamp", "symbol", *FIELDS)

_TIMEFRAME_SECONDS = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
    "1w": 604800,
}


def timeframe_seconds(timeframe: str) -> int:
    """Length of a timeframe such as ``1h`` or ``1d`` in seconds."""
    try:
        return _TIMEFRAME_SECONDS[timeframe]
    except KeyError:
        raise ValueError(
            f"unknown timeframe {timeframe!r}; expected one of {', '.join(_TIMEFRAME_SECONDS)}"
        ) from None


def periods_per_year(timeframe: str) -> float:
    """Bars per 365-day year for a timeframe (365 for 1d, 8760 for 1h)."""
    return 365 * 86400 / timeframe_seconds(timeframe)


def bars_per_year(index: pd.DatetimeIndex, default: float = 365.0) -> float:
    """Bars per 365-day year from the spacing of the first two bars (``default`` when
    there is only one)."""
    if len(index) < 2:
        return default
    return 365 * 86400 / (index[1] - index[0]).total_seconds()


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The named timeframe closest to the most common spacing of ``index``."""
    if len(index) < 2:
        raise ValueError("cannot infer a timeframe from fewer than two timestamps")
    step = pd.Series(index).diff().dropna().mode().iloc[0].total_seconds()
    name = min(_TIMEFRAME_SECONDS, key=lambda k: abs(_TIMEFRAME_SECONDS[k] - step))
    if _TIMEFRAME_SECONDS[name] != step:
        raise ValueError(f"bar spacing of {step:g} s matches no known timeframe")
    return name


@dataclass(frozen=True)
class Panel:
    """OHLCV panel; see the module docstring for conventions.

    ``volume`` is in the base asset, ``quote_volume`` in the quote currency (USDT).
    """

    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame
    volume: pd.DataFrame
    quote_volume: pd.DataFrame
    has_bar: pd.DataFrame
    timeframe: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.close.index  # type: ignore[return-value]

    @property
    def symbols(self) -> list[str]:
        return list(self.close.columns)

    @property
    def live(self) -> pd.DataFrame:
        """True where the asset is listed (between its first and last bar)."""
        return self.close.notna()

    @property
    def periods_per_year(self) -> float:
        return periods_per_year(self.timeframe)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in (*FIELDS, "has_bar")}

    def _replace(self, fn) -> Panel:
        return Panel(
            **{k: fn(v) for k, v in self.frames().items()},
            timeframe=self.timeframe,
            provenance=dict(self.provenance),
        )

    def slice(self, start: Any = None, end: Any = None) -> Panel:
        """Rows with ``start <= timestamp <= end`` (both optional, inclusive)."""
        start = to_utc(start) if start is not None else None
        end = to_utc(end) if end is not None else None
        sliced = self._replace(lambda f: f.loc[start:end])
        return sliced.drop_empty_symbols()

    def select(self, symbols: list[str]) -> Panel:
        missing = [s for s in symbols if s not in self.close.columns]
        if missing:
            raise KeyError(
                f"symbols not in the data: {', '.join(missing)}; "
                f"available: {', '.join(self.symbols)}"
            )
        return self._replace(lambda f: f[list(symbols)])

    def drop_empty_symbols(self) -> Panel:
        keep = [s for s in self.symbols if self.close[s].notna().any()]
        if len(keep) == len(self.symbols):
            return self
        return self._replace(lambda f: f[keep])

    def to_long(self) -> pd.DataFrame:
        """Back to one row per real bar: ``timestamp, symbol, open, ..., quote_volume``."""
        stacked = {name: self.frames()[name].stack(future_stack=True) for name in FIELDS}
        mask = self.has_bar.stack(future_stack=True)
        long = pd.DataFrame(stacked)[mask.to_numpy()]
        long.index.names = ["timestamp", "symbol"]
        return long.reset_index()


def to_utc(ts: Any, *, what: str = "time") -> pd.Timestamp:
    """A UTC Timestamp from a string, datetime or Timestamp (naive input is taken as UTC)."""
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot read {what} {ts!r} as a date/time ({exc})") from None
    if pd.isna(t):
        raise DataError(f"{what} {ts!r} is not a date/time")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def panel_from_long(
    bars: pd.DataFrame, timeframe: str | None = None, provenance: dict[str, Any] | None = None
) -> Panel:
    """Build a panel from validated long bars (columns ``LONG_COLUMNS``).

    The input must already be clean (see ``trimtab.data.validation``): UTC, unique
    (timestamp, symbol) pairs, positive prices.
    """
    missing = [c for c in LONG_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns: {', '.join(missing)}")
    if bars.empty:
        raise ValueError("no bars to build a panel from")
    timeframe = timeframe or infer_timeframe(
        pd.DatetimeIndex(bars["timestamp"].unique()).sort_values()
    )
    step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    ts = pd.DatetimeIndex(bars["timestamp"])
    full_index = pd.date_range(ts.min(), ts.max(), freq=step, name="timestamp")
    off_grid = (ts - ts.min()) % step != pd.Timedelta(0)
    if off_grid.any():
        # reindexing onto the grid would silently drop these bars
        raise ValueError(
            f"{int(off_grid.sum())} bar(s) are not on the {timeframe} grid, e.g. "
            f"{ts[off_grid][0]}; validate the bars with that timeframe first"
        )
    wide = {
        name: bars.pivot(index="timestamp", columns="symbol", values=name)
        .reindex(full_index)
        .sort_index(axis=1)
        .astype(float)
        for name in FIELDS
    }
    has_bar = wide["close"].notna()
    # Listing span: first to last real bar. Inside it, gaps become flat zero-volume bars.
    first = has_bar.idxmax()
    last = has_bar[::-1].idxmax()
    pos = np.arange(len(full_index))[:, None]
    first_pos = full_index.get_indexer(first.to_numpy())[None, :]
    last_pos = full_index.get_indexer(last.to_numpy())[None, :]
    inside = (pos >= first_pos) & (pos <= last_pos)
    close = wide["close"].ffill().where(inside)
    filled = {}
    for name in ("open", "high", "low"):
        filled[name] = wide[name].where(has_bar, close)
    for name in ("volume", "quote_volume"):
        filled[name] = wide[name].where(has_bar, 0.0).where(inside)
    return Panel(
        open=filled["open"],
        high=filled["high"],
        low=filled["low"],
        close=close,
        volume=filled["volume"],
        quote_volume=filled["quote_volume"],
        has_bar=pd.DataFrame(has_bar.to_numpy(), index=full_index, columns=close.columns),
        timeframe=timeframe,
        provenance=dict(provenance or {}),
    )
