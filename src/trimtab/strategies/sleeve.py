"""Strategies simulated on their own clock: market making on book and trade data, copy
trading on a leader's trades.

Such a strategy cannot be stepped on the portfolio's bars (a quote's fill depends on the
trades inside the bar), so it simulates itself at a given capital and the portfolio sees
it through its equity, sampled at each bar close at or before that close (causal). Its
return over a bar is applied to the subaccount's equity of the bar before, so capital
moved in or out by the allocator scales it linearly; its capacity caps what the
allocator may give it, which keeps that scaling honest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pandas as pd


@dataclass(frozen=True)
class SleeveRun:
    """What a self-clocked strategy did at a given capital.

    ``equity``: marked-to-market value in the quote currency (USDT), on a UTC
    DatetimeIndex, increasing; its first value is the capital it started with.
    ``records``: its decisions and fills in time order, each a dict with at least ``ts``
    (UTC), ``kind`` (``decision``, ``fill``, ``stop``, ...) and ``reason``.
    ``capacity``: USDT it can use before its returns fall. ``summary``: its own figures
    (fill rate, spread capture, ...), plain floats.
    """

    equity: pd.Series
    records: list[dict[str, Any]] = field(default_factory=list)
    capacity: float = float("inf")
    regimes: tuple[str, ...] = ()
    summary: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        eq = self.equity
        if not isinstance(eq.index, pd.DatetimeIndex) or eq.index.tz is None:
            raise ValueError("SleeveRun.equity needs a UTC DatetimeIndex")
        if len(eq) and not eq.index.is_monotonic_increasing:
            raise ValueError("SleeveRun.equity must be in time order")

    def returns_at(self, closes: pd.DatetimeIndex) -> pd.Series:
        """Simple return over each bar ending at ``closes``, from the equity last known at
        or before each close; zero before the first and after the last equity point."""
        if self.equity.empty:
            return pd.Series(0.0, index=closes)
        sampled = self.equity.reindex(self.equity.index.union(closes)).ffill().loc[closes]
        sampled = sampled.fillna(float(self.equity.iloc[0]))
        return sampled.pct_change().fillna(0.0)


@runtime_checkable
class SimulatedStrategy(Protocol):
    """A strategy that simulates itself (see module docstring)."""

    kind: str

    def coverage(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """First and last UTC time its data covers."""
        ...

    def simulate(self, capital: float) -> SleeveRun:
        """Run over the whole coverage starting with ``capital`` USDT."""
        ...
