"""The safety layer as the engine runs it: limits, then breakers, on targets and orders.

Per bar, in order: ``on_bar`` reads the account (equity, its peak, the start of the UTC
day, data freshness) into the circuit breakers; ``check`` passes the decision's targets
through the hard limits and then the trading state; ``check_orders`` passes the order
plan through the order-level limits (size, daily turnover) and the trading state;
``record_fill`` counts the day's turnover. The layer is also the broker's fill guard
(``check_fill``/``on_fill``): every fill is checked again at its own price against the
account of that moment, and counted. Nothing here reads a model's output as a limit:
everything comes from the person's configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trimtab.domain import Fill, Instrument, Order, Subaccount
from trimtab.domain.decisions import Decision, GuardAction, Observation
from trimtab.guard.breakers import (
    BreakerBoard,
    BreakerConfig,
    CircuitBreaker,
    StateChange,
    TradingState,
)
from trimtab.guard.limits import DailyTurnover, LimitGuard, Limits, _only_ledger_bounds


class SafetyLayer:
    """Limits and breakers for one subaccount (and the account above it)."""

    def __init__(
        self,
        limits: Limits | None = None,
        breakers: BreakerConfig | None = None,
        clusters: Mapping[str, str] | None = None,
        subaccount: str = "main",
        with_breakers: bool = True,
    ) -> None:
        """``limits`` and ``breakers`` are the configuration's sections (defaults when
        None), ``clusters`` maps a symbol to its cluster name. ``with_breakers=False``
        guards with the limits alone (see ``limits_only``)."""
        self.configured_limits = limits if limits is not None else Limits()
        self.subaccount = subaccount
        self.limits = LimitGuard(self.configured_limits, clusters=clusters or None)
        self.breakers = BreakerBoard(
            breakers if breakers is not None else BreakerConfig(), self.limits, [subaccount]
        )
        self.has_breakers = with_breakers
        self._shared_account = False
        self.turnover = DailyTurnover()
        self._order_notional: dict[int, float] = {}  # quote filled so far, by order id
        self._day: pd.Timestamp | None = None
        self._day_start_equity = float("nan")
        self._last_equity = float("nan")  # at the last close seen (quote)

    @classmethod
    def limits_only(cls, limits: Limits | None = None, subaccount: str = "main") -> SafetyLayer:
        """A guard of hard limits without circuit breakers: what a reference policy (a
        baseline) runs with, so that no target or fill is ever unchecked."""
        return cls(limits, subaccount=subaccount, with_breakers=False)

    @property
    def trading_state(self) -> TradingState:
        """The subaccount's breaker state (always ACTIVE without breakers)."""
        if not self.has_breakers:
            return TradingState.ACTIVE
        return self.breakers.state(self.subaccount)

    def on_bar(
        self, ts: pd.Timestamp, equity: float, peak: float, data_fresh: bool
    ) -> list[StateChange]:
        """Update the breakers with this bar's close; returns any state changes."""
        if not self.has_breakers:
            return []
        day = ts.normalize()
        if day != self._day:
            # The day starts at midnight: the equity of the previous close (on daily bars
            # the bar before; the first bar ever starts its own day).
            start = self._last_equity if np.isfinite(self._last_equity) else equity
            self._day, self._day_start_equity = day, start
        self._last_equity = equity
        changes = []
        # A shared account breaker reads the total equity: its owner updates it.
        own = (self.breakers[self.subaccount],)
        breakers = own if self._shared_account else (self.breakers.account, *own)
        for breaker in breakers:
            changes += breaker.update(ts, equity, peak, self._day_start_equity, data_fresh, 0)
        return changes

    def on_transfer(self, amount: float) -> None:
        """Capital moved in (> 0) or out (< 0) at this close, in quote: the day's starting
        equity moves with it, so a transfer is never read as a daily loss or gain."""
        if np.isfinite(self._day_start_equity):
            self._day_start_equity += amount
        if np.isfinite(self._last_equity):
            self._last_equity += amount

    def share_account_breaker(self, breaker: CircuitBreaker) -> None:
        """Use ``breaker`` (one per account, updated on the account's total equity by its
        owner) as this subaccount's account breaker: a HALTED account halts it too."""
        if not self.has_breakers:
            raise ValueError("a limits-only guard has no breakers to share")
        self.breakers.account = breaker
        self._shared_account = True

    def check(self, decision: Decision, obs: Observation) -> Decision:
        checked = self.limits.check(decision, obs)
        if not self.has_breakers:
            return checked
        return self.breakers.check(self.subaccount, checked, obs)

    def check_orders(
        self,
        orders: list[Order],
        obs: Observation,
        prices: np.ndarray,
        instrument: Any = None,
    ) -> tuple[list[Order], list[GuardAction], list[dict[str, Any]]]:
        """Orders allowed out, the limit actions taken, and the orders the state blocked."""
        allowed, actions = self.limits.check_orders(
            orders, obs, prices, self.turnover.today(obs.timestamp), instrument=instrument
        )
        if not self.has_breakers:
            return allowed, actions, []
        passed, blocked = self.breakers.filter_orders(
            self.subaccount, allowed, obs.portfolio.quantities, prices, obs.symbols
        )
        return passed, actions, [b.to_dict() for b in blocked]

    def record_fill(self, ts: pd.Timestamp, notional: float) -> None:
        self.turnover.record(ts, abs(notional))

    # --- the fill guard (``trimtab.execution.broker.FillGuard``) ----------------------------
    def check_fill(
        self,
        fill: Fill,
        instrument: Instrument,
        sub: Subaccount,
        marks: Mapping[str, float],
    ) -> tuple[float, list[GuardAction]]:
        """The quantity of ``fill`` the limits allow at its price (see
        ``LimitGuard.check_fill``), with the day's turnover and the order's earlier fills."""
        return self.limits.check_fill(
            fill,
            instrument,
            sub,
            marks,
            traded_today=self.turnover.today(fill.timestamp),
            order_filled=self._order_notional.get(fill.order_id, 0.0),
        )

    def on_fill(self, fill: Fill) -> None:
        """Count a booked fill: the day's turnover and its order's notional (quote)."""
        notional = fill.quantity * fill.price  # fill.notional
        self.turnover.record(fill.timestamp, abs(notional))  # record_fill
        order_id = fill.order_id
        if order_id:
            filled = self._order_notional
            filled[order_id] = filled.get(order_id, 0.0) + abs(notional)

    def spot_fills_unbounded(self) -> bool:
        """True when ``check_fill`` allows any spot fill of a book without perpetuals as
        asked (a finite quantity > 0 at a finite price > 0) and records no action: the
        limits cap nothing the book's own cash does not bound (``LimitGuard.check_fill``'s
        first exit). A broker may then skip the check and count the fills with
        ``on_fills``."""
        guard = self.limits
        lim = guard.limits
        if lim.allowed_venues is not None and not lim.venue_allowed(guard.venue):
            return False
        return _only_ledger_bounds(lim)

    def on_fills(
        self, timestamp: pd.Timestamp, order_ids: Sequence[int], notionals: Sequence[float]
    ) -> None:
        """``on_fill`` of booked fills at one ``timestamp``, in order (notionals in quote):
        the same additions, without a Fill each."""
        turnover = self.turnover
        traded = turnover.today(timestamp)
        values = [abs(float(v)) for v in notionals]
        for value in values:
            traded += value
        turnover.traded = traded
        filled = self._order_notional
        if (
            all(order_ids)
            and len(set(order_ids)) == len(values)
            and filled.keys().isdisjoint(order_ids)
        ):
            # One first fill per order: 0.0 + value is value.
            filled.update(zip(order_ids, values, strict=True))
            return
        for order_id, value in zip(order_ids, values, strict=True):
            if order_id:
                filled[order_id] = filled.get(order_id, 0.0) + value

    def journal(self) -> dict[str, Any]:
        """State changes and limit overrides, for result.json."""
        return {
            "state_changes": [c.to_dict() for c in self.breakers.changes()],
            "overrides": [o.to_dict() for o in self.limits.overrides],
            "limits": self.configured_limits.model_dump(mode="json"),
            "final_state": str(self.trading_state),
        }

    # --- saved state ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything the layer remembers, JSON-ready: the limits in force and their
        overrides, the breakers' memory (not a shared account breaker's: its owner saves
        it), the day's turnover, each order's filled notional and the day's start."""
        return {
            "limits": self.limits.state(),
            "breakers": self.breakers.saved_state(account=not self._shared_account),
            "turnover": self.turnover.state(),
            # Pairs, not a mapping: JSON keys would turn the order ids into strings.
            "order_notional": [[k, float(v)] for k, v in self._order_notional.items()],
            "day": None if self._day is None else self._day.isoformat(),
            "day_start_equity": float(self._day_start_equity),
            "last_equity": float(self._last_equity),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take up what ``state`` returned, in place (a shared account breaker stays
        shared)."""
        self.limits.restore(state["limits"])
        self.breakers.restore(state["breakers"])
        self.turnover.restore(state["turnover"])
        self._order_notional = {int(k): float(v) for k, v in state["order_notional"]}
        day = state["day"]
        self._day = None if day is None else pd.Timestamp(day).tz_convert("UTC")
        self._day_start_equity = float(state["day_start_equity"])
        # States saved before 2026-12-02 lack it: the next new day starts at its own bar.
        self._last_equity = float(state.get("last_equity", float("nan")))
