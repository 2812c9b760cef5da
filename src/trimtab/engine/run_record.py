"""What the backtest loop hands a recorder, and what a recorder hands back to resume.

Each bar the loop gives a ``Recorder`` a ``BarRecord`` (one ``SubaccountBar`` per
subaccount) and a way to take every component's state; before the first bar the recorder
may return a ``SavedRun`` (the states and the records of the completed bars), which the
loop replays. Plain data only: the store's recorder is ``trimtab.engine.recording``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from trimtab.domain import Order
from trimtab.guard.breakers import StateChange

if TYPE_CHECKING:
    from trimtab.engine.backtest import PortfolioResult

__all__ = [
    "BarRecord",
    "Recorder",
    "RunClock",
    "SavedRun",
    "SentOrder",
    "SubaccountBar",
    "TradeEvent",
]

#: A trade as a recorder sees it: the trade row's fields without ``fee_quote`` and
#: ``decision_id`` (the loop derives both), then the broker's order id (None: no order,
#: e.g. a liquidation or a delisting).
TradeEvent = tuple[pd.Timestamp, str, str, float, float, float, str, str, "int | None"]


@dataclass(frozen=True)
class RunClock:
    """The bars a run will step through (UTC stamps, in order), its market's symbols and
    its subaccounts: what a recorder checks a saved run against."""

    timestamps: tuple[pd.Timestamp, ...]
    symbols: tuple[str, ...]
    subaccounts: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the number of bars, the first and last stamps, the names."""
        return {
            "bars": len(self.timestamps),
            "first": self.timestamps[0].isoformat(),
            "last": self.timestamps[-1].isoformat(),
            "symbols": list(self.symbols),
            "subaccounts": list(self.subaccounts),
        }


@dataclass
class SentOrder:
    """An order the loop submitted: its run-numbered id, its decision and leg (its
    place among the decision's orders), ``sent`` or ``rejected`` (the broker refused it
    at once), and the order itself (None when read back from a store)."""

    order_id: int
    decision_id: int
    leg: int
    status: str
    order: Order | None = None


@dataclass
class SubaccountBar:
    """What one subaccount did at one bar. Money in quote (USDT) at the bar's close.

    ``quantities``: held quantities (base units, non-zero ones); ``flow``: capital moved
    in (< 0: out) by transfers; ``state``: the breakers' state (None without breakers);
    ``decided``: the step ran (every bar but the last), with its ``exposure_ceiling``
    and ``target`` weights (None: the policy published none). ``decisions``: records
    made at this bar; ``touched``: earlier records that this bar's fill events changed
    (``not_filled``, ``fill_guard``). ``order_events``: (order id, new status, quantity
    filled now) in order. ``trades``/``rejections``: rows added at this bar.
    ``carry``: by symbol, [funding received, margin forfeited in liquidations] in the bar
    (quote; the ledger's ``funding`` and ``liquidation``), only symbols that had either."""

    name: str
    equity: float
    cash: float
    quantities: dict[str, float]
    flow: float = 0.0
    state: str | None = None
    decided: bool = False
    exposure_ceiling: float | None = None
    target: list[float] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    touched: list[dict[str, Any]] = field(default_factory=list)
    orders: list[SentOrder] = field(default_factory=list)
    order_events: list[tuple[int, str, float]] = field(default_factory=list)
    trades: list[TradeEvent] = field(default_factory=list)
    rejections: list[tuple] = field(default_factory=list)
    breaker_changes: list[StateChange] = field(default_factory=list)
    carry: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class BarRecord:
    """One bar of a run: ``bar`` counts from 0 at the first traded bar; the account's
    total equity (quote) and breaker state, the transfer records and the account
    breaker's changes, and each subaccount's ``SubaccountBar`` (in the run's order).
    ``decisions``: decision records of deciders above the subaccounts (the allocator's,
    under ``*allocator``), by the name they are recorded under; written, not read back
    (the allocator makes its records again from the run's equity)."""

    bar: int
    timestamp: pd.Timestamp
    total_equity: float
    account_state: str | None
    transfers: list[dict[str, Any]]
    subaccounts: list[SubaccountBar]
    account_changes: list[StateChange] = field(default_factory=list)
    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class SavedRun:
    """A run read back at its checkpoint: ``bar`` is the last completed bar, ``states``
    every component's saved state (as ``state`` gave it), ``bars`` the records of bars
    0..bar with each decision record in its latest form. ``ledger``: the records carry
    each bar's funding and liquidation losses per symbol (False: a store written before
    they did), so the resumed run can build its ledger."""

    bar: int
    states: dict[str, dict[str, Any]]
    bars: list[BarRecord]
    ledger: bool = True


class Recorder(Protocol):
    """Where a run is recorded, and where it resumes from (``RunRecorder``)."""

    def begin(self, clock: RunClock) -> SavedRun | None:
        """Called before the first bar: the run to resume, or None to start afresh."""
        ...

    def record(self, bar: BarRecord, states: Callable[[], dict[str, dict[str, Any]]]) -> None:
        """Each bar, in order; ``states()`` gives every component's state after it."""
        ...

    def finish(self, result: PortfolioResult) -> None:
        """Called once the results are built."""
        ...
