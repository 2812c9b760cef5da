"""Strategies simulated on their own clock: market making on book and trade data, copy
trading on a leader's trades.

Such a strategy cannot be stepped on the portfolio's bars (a quote's fill depends on the
trades inside the bar), so it simulates itself at a given capital and the portfolio sees
it through its equity, sampled at each bar close at or before that close (causal). Its
return over a bar is applied to the subaccount's equity of the bar before, so capital
moved in or out by the allocator scales it linearly; its capacity caps what the
allocator may give it, which keeps that scaling honest.

Bars are stamped with their open time: the bar opening at ``t`` closes at ``t + bar``,
and its return is the sleeve's equity last known at or before that close over the one
last known at or before the bar before's close (``bar_closes``, ``SleeveRun.returns_at``).
Before its first equity point a sleeve's equity is its first value (no return), after
its last it stays at its last value (its book taken off at its last mark: no return).
A bar is covered (``covered``) when the sleeve's data overlaps it; elsewhere it holds
cash and says why.

Records (``SleeveRun.records``): dicts in time order with ``ts`` (UTC), ``kind`` and
``reason``. A ``fill`` also carries ``symbol``, ``side`` (``buy``/``sell``),
``quantity`` (base units, > 0), ``price`` (quote) and ``fee`` (quote; < 0 a rebate), and
its ``reason`` names what it matched (the market trade that crossed the quote, the
leader's trade it copies). Other kinds (``stop``, ``kill``, ``unfollow``, ...) are the
sleeve's own decisions; frequent bookkeeping kinds (``quote``, ``decision``) are counted,
not listed, by the portfolio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SleeveRun:
    """What a self-clocked strategy did at a given capital.

    ``equity``: marked-to-market value in the quote currency (USDT), on a UTC
    DatetimeIndex, increasing; its first value is the capital it started with.
    ``records``: its decisions and fills in time order, each a dict with at least ``ts``
    (UTC), ``kind`` (``decision``, ``fill``, ``stop``, ...) and ``reason`` (fills: see
    the module docstring). ``capacity``: USDT it can use before its returns fall.
    ``regimes``: the market regimes it suits (``trimtab.strategies.base.REGIMES``).
    ``summary``: its own figures (fill rate, spread capture, ...), plain floats.
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

    def equity_at(self, closes: pd.DatetimeIndex) -> pd.Series:
        """The equity last known at or before each of ``closes`` (USDT): its first value
        before its first point, its last after its last; several points at one time:
        the last of them."""
        eq = self.equity
        if eq.empty:
            return pd.Series(np.nan, index=closes)
        eq = eq[~eq.index.duplicated(keep="last")]
        sampled = eq.reindex(eq.index.union(closes)).ffill().loc[closes]
        return sampled.fillna(float(eq.iloc[0]))

    def returns_at(self, closes: pd.DatetimeIndex) -> pd.Series:
        """Simple return over each bar ending at ``closes``, from the equity last known at
        or before each close; zero before the first and after the last equity point."""
        if self.equity.empty:
            return pd.Series(0.0, index=closes)
        return self.equity_at(closes).pct_change().fillna(0.0)


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


def bar_closes(opens: pd.DatetimeIndex, bar: pd.Timedelta) -> pd.DatetimeIndex:
    """The close of each bar stamped with its open time (``opens``): open plus ``bar``."""
    return opens + bar


def covered(
    opens: pd.DatetimeIndex, bar: pd.Timedelta, coverage: tuple[pd.Timestamp, pd.Timestamp] | None
) -> np.ndarray:
    """Whether the sleeve's data (``coverage``: first and last UTC time, None: none)
    overlaps each bar ``[open, open + bar)``."""
    if coverage is None:
        return np.zeros(len(opens), dtype=bool)
    first, last = coverage
    return np.asarray((opens <= last) & (opens + bar > first), dtype=bool)
