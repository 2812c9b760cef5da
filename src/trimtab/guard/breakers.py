"""Circuit breakers: a trading state per account and per subaccount.

States, from least to most severe:

* ``ACTIVE``: every order the limits allow.
* ``REDUCING``: only orders that move a position towards zero, never past it.
* ``HALTED``: only orders that close a position entirely (and cancels, which are never
  filtered).

Triggers (each fires when its condition *becomes* true, so a condition a human has already
acknowledged does not re-fire every bar):

============================  ==========  ==============================================
trigger                       -> state    condition (at an ``update``)
============================  ==========  ==============================================
``max_drawdown``              HALTED      drawdown from the peak >= ``Limits.max_drawdown``
``exchange_errors``           HALTED      consecutive exchange errors >= ``max_exchange_errors``
``bad_equity``                HALTED      equity or peak not finite, or equity <= 0
``daily_loss``                REDUCING    loss since the UTC day's start >= ``daily_loss_limit``
``loss_streak``               REDUCING    ``loss_streak`` losing bars in a row
``stale_data``                REDUCING    ``stale_data_bars`` bars in a row without fresh data
============================  ==========  ==============================================

A HALTED trigger escalates from ACTIVE or REDUCING; a REDUCING trigger only acts on an
ACTIVE state. Any trigger while not ACTIVE restarts the cooldown.

Leaving, automatically, to ACTIVE: after ``cooldown`` bars without a new trigger, when
every condition named in ``resume_conditions`` holds. REDUCING always may; HALTED only
with ``auto_resume: true``. Otherwise HALTED waits for ``resume(by, reason, at)`` from a
person, which is recorded. If the drawdown is still at the kill level when a person
resumes, the kill is re-armed from the equity at that moment (it is measured from the
highest equity since the resume until equity makes a new peak); otherwise the next bar
would halt again.

A halted subaccount does not stop the others; a halted account halts them all
(``BreakerBoard``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from trimtab.data.panel import to_utc
from trimtab.domain import Order, Side
from trimtab.domain.decisions import Decision, GuardAction, Observation, json_ready
from trimtab.guard.limits import LimitGuard, Limits

# Relative slack when comparing an order's quantity with the position it closes.
_TOL = 1e-9

ResumeCondition = Literal[
    "drawdown_recovered", "daily_loss_ok", "no_loss_streak", "data_fresh", "no_exchange_errors"
]
ALL_RESUME_CONDITIONS: tuple[ResumeCondition, ...] = (
    "drawdown_recovered",
    "daily_loss_ok",
    "no_loss_streak",
    "data_fresh",
    "no_exchange_errors",
)

# The share of the kill level the drawdown must fall under to count as recovered, when
# ``resume_drawdown`` is not set: the gap stops a book that sits at the kill level from
# flapping between HALTED and ACTIVE.
DEFAULT_RESUME_SHARE = 0.8


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def most_severe(*states: TradingState) -> TradingState:
    return max(states, key=lambda s: s.severity)


class BreakerConfig(BaseModel):
    """Circuit-breaker settings (``breakers:`` in the YAML configuration).

    Counts are in bars of the run's clock; losses and drawdowns are fractions.

    * ``daily_loss_limit`` (0.10; None = off): loss since the start of the UTC day, as a
      fraction of the equity then, that moves an ACTIVE book to REDUCING.
    * ``loss_streak`` (10; None = off): losing bars in a row (equity below the bar
      before) that move an ACTIVE book to REDUCING.
    * ``stale_data_bars`` (3; None = off): bars in a row without fresh market data for
      the held assets that move an ACTIVE book to REDUCING.
    * ``max_exchange_errors`` (5; None = off): consecutive exchange errors that HALT.
    * ``cooldown`` (5): bars without a new trigger before an automatic exit.
    * ``auto_resume`` (False): may HALTED end without a person (after the cooldown, when
      the conditions hold)? REDUCING always ends by itself.
    * ``resume_conditions`` (all): what must hold to leave REDUCING/HALTED automatically:
      ``drawdown_recovered`` (drawdown below ``resume_drawdown``), ``daily_loss_ok``,
      ``no_loss_streak``, ``data_fresh`` (this bar's data fresh), ``no_exchange_errors``.
    * ``resume_drawdown`` (None = 0.8 x the kill level ``Limits.max_drawdown``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    daily_loss_limit: float | None = Field(0.10, gt=0, lt=1)
    loss_streak: int | None = Field(10, ge=1)
    stale_data_bars: int | None = Field(3, ge=1)
    max_exchange_errors: int | None = Field(5, ge=1)
    cooldown: int = Field(5, ge=0)
    auto_resume: bool = False
    resume_conditions: tuple[ResumeCondition, ...] = ALL_RESUME_CONDITIONS
    resume_drawdown: float | None = Field(None, gt=0, lt=1)


@dataclass(frozen=True)
class StateChange:
    """One move of a breaker from ``old`` to ``new``, with the trigger and its numbers."""

    at: pd.Timestamp
    old: TradingState
    new: TradingState
    trigger: str
    message: str
    values: dict[str, Any]
    scope: str = "account"
    by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": self.at.isoformat(),
            "scope": self.scope,
            "old": str(self.old),
            "new": str(self.new),
            "trigger": self.trigger,
            "message": self.message,
            "values": json_ready(dict(self.values)),
        }
        if self.by is not None:
            out["by"] = self.by
        return out


@dataclass(frozen=True)
class BlockedOrder:
    """An order the breaker did not let through, and why."""

    order: Order
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.order.id,
            "symbol": self.order.symbol,
            "side": str(self.order.side),
            "reason": self.reason,
        }


class CircuitBreaker:
    """The trading state of one account or subaccount (``scope``).

    ``limits`` gives the kill level (``max_drawdown``); pass the ``LimitGuard`` itself so
    that a recorded human override of the limits reaches the breaker too.
    """

    def __init__(
        self,
        config: BreakerConfig | None = None,
        limits: Limits | LimitGuard | None = None,
        *,
        scope: str = "account",
    ) -> None:
        self.config = config or BreakerConfig()
        self._limits_source = limits if limits is not None else Limits()
        self.scope = scope
        self._state = TradingState.ACTIVE
        self._changes: list[StateChange] = []
        self._bars_quiet = 0  # bars since the last trigger or state change
        self._streak = 0
        self._stale = 0
        self._last_equity: float | None = None
        self._anchor: float | None = None  # peak re-armed by a human resume
        self._levels: dict[str, bool] = {}  # each trigger's condition at the last update
        self.metrics: dict[str, float] = {}

    @property
    def limits(self) -> Limits:
        src = self._limits_source
        return src.limits if isinstance(src, LimitGuard) else src

    @property
    def state(self) -> TradingState:
        return self._state

    @property
    def changes(self) -> tuple[StateChange, ...]:
        """Every state change so far, oldest first."""
        return tuple(self._changes)

    def kill_level(self) -> float:
        return self.limits.max_drawdown

    def resume_level(self) -> float:
        cfg = self.config.resume_drawdown
        return cfg if cfg is not None else DEFAULT_RESUME_SHARE * self.kill_level()

    # --- the clock ---------------------------------------------------------------------
    def update(
        self,
        timestamp: pd.Timestamp,
        equity: float,
        peak_equity: float,
        day_start_equity: float,
        data_fresh: bool,
        exchange_errors: int,
    ) -> list[StateChange]:
        """Read one bar's account numbers (quote currency); return any state change.

        ``day_start_equity`` is the equity at the start of the bar's UTC day;
        ``exchange_errors`` is the count of consecutive errors so far (0 after a success).
        """
        cfg = self.config
        m = self._measure(equity, peak_equity, day_start_equity, data_fresh, exchange_errors)
        self.metrics = m
        levels = {
            "bad_equity": m["valid"] == 0.0,
            "max_drawdown": _reached(m["drawdown"], self.kill_level()),
            "exchange_errors": cfg.max_exchange_errors is not None
            and exchange_errors >= cfg.max_exchange_errors,
            "daily_loss": cfg.daily_loss_limit is not None
            and _reached(m["daily_loss"], cfg.daily_loss_limit),
            "loss_streak": cfg.loss_streak is not None and self._streak >= cfg.loss_streak,
            "stale_data": cfg.stale_data_bars is not None and self._stale >= cfg.stale_data_bars,
        }
        fired = [k for k, on in levels.items() if on and not self._levels.get(k, False)]
        self._levels = levels
        halts = [k for k in fired if k in _HALT_TRIGGERS]
        reduces = [k for k in fired if k not in _HALT_TRIGGERS]
        # The time and the numbers of a change, made only when the state moves (most
        # bars it does not); a timestamp that is not a Timestamp is still read at once.
        at = timestamp if isinstance(timestamp, pd.Timestamp) else to_utc(timestamp)
        if halts and self._state is not TradingState.HALTED:
            return [self._move(to_utc(at), TradingState.HALTED, halts, _values(m))]
        if reduces and self._state is TradingState.ACTIVE:
            return [self._move(to_utc(at), TradingState.REDUCING, reduces, _values(m))]
        if self._state is TradingState.ACTIVE:
            return []
        if fired:
            # A fresh trigger while already restricted: the cooldown starts again.
            self._bars_quiet = 0
            return []
        self._bars_quiet += 1
        may_leave = self._state is TradingState.REDUCING or cfg.auto_resume
        if may_leave and self._bars_quiet >= cfg.cooldown:
            failing = [c for c in cfg.resume_conditions if not self._condition(c, m)]
            if not failing and m["valid"]:
                return [
                    self._move(to_utc(at), TradingState.ACTIVE, ["resume_conditions"], _values(m))
                ]
        return []

    def _measure(
        self,
        equity: float,
        peak_equity: float,
        day_start_equity: float,
        data_fresh: bool,
        exchange_errors: int,
    ) -> dict[str, float]:
        valid = (
            math.isfinite(equity)
            and math.isfinite(peak_equity)
            and math.isfinite(day_start_equity)
            and equity > 0
        )
        if valid:
            peak = max(peak_equity, equity)
            if self._anchor is not None:
                self._anchor = max(self._anchor, equity)
                if self._anchor >= peak:
                    self._anchor = None  # a new high: the re-armed kill is the normal one again
                else:
                    peak = self._anchor
            drawdown = 1.0 - equity / peak
            daily_loss = 1.0 - equity / day_start_equity if day_start_equity > 0 else 0.0
            losing = self._last_equity is not None and equity < self._last_equity
            self._streak = self._streak + 1 if losing else 0
            self._last_equity = equity
        else:
            # NaN compares false: no drawdown or loss trigger fires and nothing counts as
            # recovered; ``bad_equity`` alone halts.
            drawdown, daily_loss = math.nan, math.nan
        self._stale = 0 if data_fresh else self._stale + 1
        return {
            "valid": float(valid),
            "equity": float(equity),
            "drawdown": float(drawdown),
            "daily_loss": float(daily_loss),
            "loss_streak": float(self._streak),
            "stale_bars": float(self._stale),
            "exchange_errors": float(exchange_errors),
        }

    def _condition(self, name: str, m: dict[str, float]) -> bool:
        cfg = self.config
        if name == "drawdown_recovered":
            return _below(m["drawdown"], self.resume_level())
        if name == "daily_loss_ok":
            return cfg.daily_loss_limit is None or _below(m["daily_loss"], cfg.daily_loss_limit)
        if name == "no_loss_streak":
            return cfg.loss_streak is None or m["loss_streak"] < cfg.loss_streak
        if name == "data_fresh":
            return m["stale_bars"] == 0
        if name == "no_exchange_errors":
            return m["exchange_errors"] == 0
        raise ValueError(f"unknown resume condition {name!r}")

    def _move(
        self,
        at: pd.Timestamp,
        new: TradingState,
        triggers: list[str],
        values: dict[str, float],
        *,
        message: str | None = None,
        by: str | None = None,
    ) -> StateChange:
        old = self._state
        if message is None:
            message = "; ".join(_MESSAGES[t](self, values) for t in triggers)
        change = StateChange(
            at, old, new, ",".join(triggers), message, dict(values), self.scope, by
        )
        self._state = new
        self._bars_quiet = 0
        self._changes.append(change)
        return change

    # --- people ------------------------------------------------------------------------
    def resume(
        self,
        by: str,
        reason: str,
        at: pd.Timestamp,
        to: TradingState = TradingState.ACTIVE,
    ) -> StateChange:
        """A person lifts the breaker to ``to`` (ACTIVE or REDUCING). Recorded."""
        if not by.strip() or not reason.strip():
            raise ValueError("a resume needs who (by=) and why (reason=)")
        if to.severity >= self._state.severity:
            raise ValueError(f"cannot resume from {self._state} to {to}")
        values: dict[str, Any] = dict(self.metrics)
        values.pop("valid", None)
        if self._last_equity is not None and self._levels.get("max_drawdown", False):
            # Re-arm the kill from here, or the next bar would halt again.
            self._anchor = self._last_equity
            self._levels["max_drawdown"] = False
            values["rearmed_peak"] = self._last_equity
        return self._move(
            to_utc(at),
            to,
            ["human_resume"],
            values,
            message=f"resumed by {by.strip()}: {reason.strip()}",
            by=by.strip(),
        )

    def halt(self, by: str, reason: str, at: pd.Timestamp) -> StateChange:
        """A person halts trading (the kill switch). Recorded."""
        if not by.strip() or not reason.strip():
            raise ValueError("a halt needs who (by=) and why (reason=)")
        if self._state is TradingState.HALTED:
            raise ValueError("already halted")
        return self._move(
            to_utc(at),
            TradingState.HALTED,
            ["human_halt"],
            {},
            message=f"halted by {by.strip()}: {reason.strip()}",
            by=by.strip(),
        )

    # --- what may go out ---------------------------------------------------------------
    def check(self, decision: Decision, obs: Observation) -> Decision:
        """Targets (weights) restricted to the state: see ``restrict_targets``."""
        return restrict_targets(self._state, decision, obs, self.scope)

    def filter_orders(
        self,
        orders: Sequence[Order],
        quantities: Mapping[str, float] | np.ndarray,
        prices: Mapping[str, float] | np.ndarray,
        symbols: Sequence[str] | None = None,
    ) -> tuple[list[Order], list[BlockedOrder]]:
        """The orders this state lets through: see ``filter_orders``."""
        return filter_orders(self._state, orders, quantities, prices, symbols)

    # --- saved state (``state`` is the trading state; this is the breaker's memory) ------
    def saved_state(self) -> dict[str, Any]:
        """The trading state and everything the next ``update`` reads (counters, the last
        equity, the re-armed peak, each trigger's last level, the metrics), with every
        state change so far. JSON-ready; NaN stays a float NaN."""
        return {
            "state": str(self._state),
            "changes": [_change_state(c) for c in self._changes],
            "bars_quiet": self._bars_quiet,
            "streak": self._streak,
            "stale": self._stale,
            "last_equity": self._last_equity,
            "anchor": self._anchor,
            "levels": dict(self._levels),
            "metrics": dict(self.metrics),
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Take up the memory ``saved_state`` returned (the config stays this one's)."""
        self._state = TradingState(saved["state"])
        self._changes = [_change_from_state(c) for c in saved["changes"]]
        self._bars_quiet = int(saved["bars_quiet"])
        self._streak = int(saved["streak"])
        self._stale = int(saved["stale"])
        last, anchor = saved["last_equity"], saved["anchor"]
        self._last_equity = None if last is None else float(last)
        self._anchor = None if anchor is None else float(anchor)
        self._levels = {str(k): bool(v) for k, v in saved["levels"].items()}
        self.metrics = {str(k): float(v) for k, v in saved["metrics"].items()}


_HALT_TRIGGERS = frozenset({"bad_equity", "max_drawdown", "exchange_errors"})

_MESSAGES = {
    "bad_equity": lambda b, v: f"equity is not a usable number ({v['equity']})",
    "max_drawdown": lambda b, v: (
        f"drawdown {v['drawdown']:.2%} reached the kill level {b.kill_level():.2%}"
    ),
    "exchange_errors": lambda b, v: (
        f"{v['exchange_errors']:.0f} consecutive exchange errors "
        f"(limit {b.config.max_exchange_errors})"
    ),
    "daily_loss": lambda b, v: (
        f"daily loss {v['daily_loss']:.2%} reached the limit {b.config.daily_loss_limit:.2%}"
    ),
    "loss_streak": lambda b, v: f"{v['loss_streak']:.0f} losing bars in a row",
    "stale_data": lambda b, v: f"no fresh market data for {v['stale_bars']:.0f} bars",
    "resume_conditions": lambda b, v: (
        f"cooldown of {b.config.cooldown} bars over and "
        f"{', '.join(b.config.resume_conditions) or 'no conditions'} hold"
    ),
}


def restrict_targets(
    state: TradingState, decision: Decision, obs: Observation, scope: str = "account"
) -> Decision:
    """Targets that respect ``state``, measured against the current weights.

    REDUCING: each target is pulled between 0 and the current weight (a position can
    shrink, never grow or flip). HALTED: each target is either 0 (close) or the current
    weight (hold). ACTIVE: unchanged.
    """
    if state is TradingState.ACTIVE or decision.targets is None:
        return decision
    targets = np.asarray(decision.targets, dtype=float)
    current = obs.portfolio.weights
    if targets.shape != current.shape:
        return decision  # the limit guard rejects a wrong shape; nothing to restrict here
    if state is TradingState.REDUCING:
        low, high = np.minimum(current, 0.0), np.maximum(current, 0.0)
        new = np.clip(targets, low, high)
    else:
        new = np.where(targets == 0, 0.0, current)
    # A non-finite target is a broken model, not an instruction to close: hold.
    new = np.where(np.isfinite(targets), new, current)
    changed = new != targets  # NaN targets count as changed
    if not changed.any():
        return decision
    names = tuple(obs.symbols[j] for j in np.flatnonzero(changed))
    what = (
        "targets limited to reducing positions"
        if state is TradingState.REDUCING
        else "targets limited to full closes"
    )
    with np.errstate(over="ignore"):  # 1e308 targets: the record may say inf
        before = float(np.abs(np.nan_to_num(targets[changed])).sum())
    action = GuardAction(
        f"breaker_{state}",
        f"{scope} is {state.upper()}: {what}",
        names,
        before=before,
        after=float(np.abs(new[changed]).sum()),
    )
    return replace(decision, targets=new, guard=decision.guard + (action,))


def filter_orders(
    state: TradingState,
    orders: Sequence[Order],
    quantities: Mapping[str, float] | np.ndarray,
    prices: Mapping[str, float] | np.ndarray,
    symbols: Sequence[str] | None = None,
) -> tuple[list[Order], list[BlockedOrder]]:
    """Orders ``state`` lets through, checked in sequence against the running position.

    ``quantities`` are signed positions in base units and ``prices`` the prices that turn
    quote amounts into base; both are mappings by symbol, or arrays aligned with
    ``symbols``. REDUCING passes an order only if it moves the position towards zero
    without crossing it (a quote-amount buy counts at ``prices``); HALTED only if it closes
    the position entirely (base quantity equal to it). Cancels are not orders and are
    never blocked.
    """
    if state is TradingState.ACTIVE:
        return list(orders), []
    qty = _as_mapping(quantities, symbols)
    px = _as_mapping(prices, symbols)
    position = {s: float(q) for s, q in qty.items()}
    allowed: list[Order] = []
    blocked: list[BlockedOrder] = []
    for order in orders:
        pos = position.get(order.symbol, 0.0)
        if not math.isfinite(pos):
            pos = 0.0
        amount = _base_amount(order, px.get(order.symbol))
        why = _why_blocked(state, order, pos, amount)
        if why is not None:
            blocked.append(BlockedOrder(order, f"{state.upper()}: {why}"))
            continue
        position[order.symbol] = pos + order.side.sign * amount
        if state is TradingState.HALTED or abs(position[order.symbol]) <= _TOL * abs(pos):
            position[order.symbol] = 0.0
        allowed.append(order)
    return allowed, blocked


def _why_blocked(state: TradingState, order: Order, pos: float, amount: float | None) -> str | None:
    if amount is None:
        return "no price to value a quote-amount order"
    if pos == 0:
        return "no position to reduce"
    reduces_side = (pos > 0 and order.side is Side.SELL) or (pos < 0 and order.side is Side.BUY)
    if not reduces_side:
        return "order would increase the position"
    size = abs(pos)
    if state is TradingState.REDUCING:
        if amount > size * (1 + _TOL):
            return f"order of {amount:g} exceeds the position of {size:g}"
        return None
    if order.quote_quantity is not None or abs(amount - size) > _TOL * size:
        return f"only full closes pass (order {amount:g}, position {size:g})"
    return None


def _base_amount(order: Order, price: float | None) -> float | None:
    if order.quantity is not None:
        return float(order.quantity)
    if price is None or not (math.isfinite(price) and price > 0):
        return None
    return float(order.quote_quantity) / float(price)


def _as_mapping(
    values: Mapping[str, float] | np.ndarray, symbols: Sequence[str] | None
) -> Mapping[str, float]:
    if isinstance(values, Mapping):
        return values
    if symbols is None:
        raise ValueError("arrays of quantities or prices need symbols= to name their columns")
    arr = np.asarray(values, dtype=float)
    if arr.shape != (len(symbols),):
        raise ValueError(f"{arr.size} values for {len(symbols)} symbols")
    return dict(zip(symbols, arr.tolist(), strict=True))


def _values(metrics: dict[str, float]) -> dict[str, float]:
    """The numbers a state change records: the bar's metrics but the validity flag."""
    return {k: v for k, v in metrics.items() if k != "valid"}


def _reached(value: float, level: float) -> bool:
    """``value >= level``, where 1 - 80/100 counts as reaching 0.2 (NaN never does)."""
    return value >= level - 1e-12


def _below(value: float, level: float) -> bool:
    """Not ``_reached`` for numbers; NaN is never below anything."""
    return value < level - 1e-12


class BreakerBoard:
    """One breaker for the account and one per subaccount.

    A subaccount's effective state is the more severe of its own and the account's: a
    HALTED account halts every subaccount, a HALTED subaccount stops nothing else.
    """

    def __init__(
        self,
        config: BreakerConfig | None = None,
        limits: Limits | LimitGuard | None = None,
        subaccounts: Iterable[str] = (),
        *,
        configs: Mapping[str, BreakerConfig] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._limits = limits
        self._configs = dict(configs or {})
        self.account = CircuitBreaker(self.config, limits, scope="account")
        self._subs: dict[str, CircuitBreaker] = {}
        for name in subaccounts:
            self.add(name)

    def add(
        self,
        name: str,
        config: BreakerConfig | None = None,
        limits: Limits | LimitGuard | None = None,
    ) -> CircuitBreaker:
        """A breaker for subaccount ``name`` (its own config and limits if given)."""
        if name in self._subs:
            raise ValueError(f"subaccount {name!r} already has a breaker")
        breaker = CircuitBreaker(
            config or self._configs.get(name, self.config),
            limits if limits is not None else self._limits,
            scope=name,
        )
        self._subs[name] = breaker
        return breaker

    def __getitem__(self, name: str) -> CircuitBreaker:
        try:
            return self._subs[name]
        except KeyError:
            raise KeyError(
                f"no breaker for subaccount {name!r}; known: {list(self._subs)}"
            ) from None

    @property
    def subaccounts(self) -> tuple[str, ...]:
        return tuple(self._subs)

    def state(self, name: str | None = None) -> TradingState:
        """The effective state of subaccount ``name`` (or of the account when None)."""
        if name is None:
            return self.account.state
        account = self.account.state
        if account is TradingState.ACTIVE:  # the least severe: the subaccount's decides
            return self[name].state
        return most_severe(account, self[name].state)

    def check(self, name: str, decision: Decision, obs: Observation) -> Decision:
        return restrict_targets(self.state(name), decision, obs, name)

    def filter_orders(
        self,
        name: str,
        orders: Sequence[Order],
        quantities: Mapping[str, float] | np.ndarray,
        prices: Mapping[str, float] | np.ndarray,
        symbols: Sequence[str] | None = None,
    ) -> tuple[list[Order], list[BlockedOrder]]:
        return filter_orders(self.state(name), orders, quantities, prices, symbols)

    def changes(self) -> list[StateChange]:
        """Every state change on the board, in time order (account first on ties)."""
        out = list(self.account.changes)
        for breaker in self._subs.values():
            out.extend(breaker.changes)
        return sorted(out, key=lambda c: c.at)

    # --- saved state -------------------------------------------------------------------
    def saved_state(self, *, account: bool = True) -> dict[str, Any]:
        """Each breaker's ``saved_state``: the account's (unless ``account=False``: a
        breaker shared with other boards is saved by its owner) and each subaccount's."""
        out: dict[str, Any] = {"subaccounts": {n: b.saved_state() for n, b in self._subs.items()}}
        if account:
            out["account"] = self.account.saved_state()
        return out

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Restore every breaker in place; the board must have the same subaccounts."""
        missing = set(saved["subaccounts"]) ^ set(self._subs)
        if missing:
            raise ValueError(
                f"saved breakers are for subaccounts {sorted(saved['subaccounts'])}, "
                f"this board has {sorted(self._subs)}"
            )
        for name, breaker in self._subs.items():
            breaker.restore(saved["subaccounts"][name])
        if "account" in saved:
            self.account.restore(saved["account"])


def _change_state(change: StateChange) -> dict[str, Any]:
    # Not ``to_dict``: that one writes NaN as null for reports; a restore needs it back.
    return {
        "at": change.at.isoformat(),
        "old": str(change.old),
        "new": str(change.new),
        "trigger": change.trigger,
        "message": change.message,
        "values": dict(change.values),
        "scope": change.scope,
        "by": change.by,
    }


def _change_from_state(saved: Mapping[str, Any]) -> StateChange:
    return StateChange(
        at=to_utc(pd.Timestamp(saved["at"])),
        old=TradingState(saved["old"]),
        new=TradingState(saved["new"]),
        trigger=str(saved["trigger"]),
        message=str(saved["message"]),
        values=dict(saved["values"]),
        scope=str(saved["scope"]),
        by=saved["by"],
    )
