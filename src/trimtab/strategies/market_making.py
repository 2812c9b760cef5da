"""Market making on order-book and trade data, simulated honestly (``trimtab mm``).

The strategy quotes a bid and an ask around a fair price, composed from parts (frozen
dataclasses; their fields are the parameters):

* a **fair price**: ``MidPrice`` or ``MicroPrice`` (the touch weighted by the opposite
  size: leans toward the side about to be taken);
* a **volatility** estimate: ``RollingVolatility``, realised volatility of the mid over
  the last ``window_s`` seconds of book states seen (causal), as a fraction per
  square-root second;
* a **quoting rule** in the manner of Avellaneda-Stoikov: ``AvellanedaStoikov``. With
  ``x`` the inventory as a share of its limit (in [-1, 1]), ``s`` the fair price,
  ``sigma`` the volatility and ``tau`` the horizon (s), the reservation price is
  ``r = s * (1 - gamma * x * sigma^2 * tau)`` and the half spread
  ``half_spread_bps / 1e4 + gamma * sigma^2 * tau / 2 + inventory_widen_bps / 1e4 * |x|``
  (as a fraction of ``s``): AS's ``r = s - q gamma sigma^2 (T - t)`` and spread
  ``gamma sigma^2 (T - t) + (2 / gamma) ln(1 + gamma / k)``, in relative units, the
  liquidity term given directly as ``half_spread_bps``. ``gamma`` is per unit of
  relative variance: with sigma^2 tau = 4e-7 (2 bps per root second, 10 s), gamma
  500 moves the reservation 2 bps at the inventory limit;
* an **inventory limit**: ``InventoryLimit``, the largest position as a fraction of the
  capital (notional at the fair price): the side that would grow it past the limit is
  quoted only for the room left, and not at all without room;
* an **adverse-selection kill switch**: ``AdverseSelectionSwitch``: when the last
  ``fills`` fills whose ``markout_ms`` has elapsed lost on average more than
  ``threshold_bps`` (mid move against them, known at the decision: causal), quoting
  stops for ``cooloff_s`` seconds, with the reason.

Quote sizes are ``order_fraction`` of the capital at the fair price (so returns scale
linearly with capital up to the capacity), rounded down to ``lot``; prices to ``tick``
(bids down, asks up), never crossing the book seen at the decision (post-only). The
venue model (latency, queue, fees) is ``trimtab.execution.book_sim``.

Accounting (quote currency, USDT): equity = capital + cash + inventory x mid; PnL splits
exactly into spread capture, inventory PnL and fees (``book_sim.pnl_parts``). The
position may go short (a perpetual or margin account); no funding over the seconds to
hours such data covers.

``MarketMakingSleeve`` implements ``trimtab.strategies.sleeve.SimulatedStrategy`` for the
portfolio and allocator; ``market_making_from_settings`` builds it from a portfolio
file's ``params``. Not offered on bars: a quote's fill depends on the trades inside a
bar and its place in the queue, which bars do not show.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trimtab.data.ticks import BookSnapshots, Trades, find_tick_files, read_book, read_trades
from trimtab.execution.book_sim import (
    BookSimulator,
    Intent,
    MarketState,
    QuoteWish,
    SimParams,
    SimResult,
    markouts,
    pnl_parts,
)
from trimtab.strategies.sleeve import SleeveRun

KIND = "market-making"

BARS_REFUSAL = (
    "market making cannot be simulated honestly on bars: whether a resting quote fills "
    "depends on the trades inside the bar, their aggressor side and the queue ahead of "
    "the quote at its price, none of which bars show. Give order-book and trade files "
    "(Tardis book_snapshot/quotes and trades CSV, Binance depth and trades/aggTrades "
    "CSV, Bybit ob zip, parquet quotes and trades) with --book and --trades"
)

# --- parts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MidPrice:
    """Fair price: the mid of the touch."""

    name: str = "mid"

    def fair(self, state: MarketState) -> float:
        return state.mid


@dataclass(frozen=True)
class MicroPrice:
    """Fair price: bid x ask size + ask x bid size over the two sizes (the touch
    weighted toward the thinner side, which the next trade is likelier to take)."""

    name: str = "micro"

    def fair(self, state: MarketState) -> float:
        bs, as_ = state.bid_size, state.ask_size
        if not (bs > 0 and as_ > 0):
            return state.mid
        return (state.bid * as_ + state.ask * bs) / (bs + as_)


@dataclass(frozen=True)
class RollingVolatility:
    """Realised volatility of the mid over the last ``window_s`` seconds (fraction per
    root second): sqrt(sum of squared log changes / seconds covered); ``floor_bps``
    (per root second) until ``min_changes`` changes were seen."""

    window_s: float = 30.0
    min_changes: int = 10
    floor_bps: float = 1.0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"vol window_s must be > 0 seconds, got {self.window_s}")


class _VolState:
    """The rolling sums of ``RollingVolatility`` (state of one run)."""

    def __init__(self, part: RollingVolatility) -> None:
        self.part = part
        self.points: deque[tuple[int, float]] = deque()  # (ts, squared log change)
        self.sum = 0.0
        self.last: tuple[int, float] | None = None

    def update(self, ts: int, mid: float) -> float:
        part = self.part
        if self.last is not None and ts > self.last[0] and mid > 0:
            r = math.log(mid / self.last[1])
            self.points.append((ts, r * r))
            self.sum += r * r
        if mid > 0 and (self.last is None or ts > self.last[0]):
            self.last = (ts, mid)
        horizon = int(part.window_s * 1e9)
        while self.points and self.points[0][0] < ts - horizon:
            self.sum -= self.points.popleft()[1]
        floor = part.floor_bps * 1e-4
        if len(self.points) < part.min_changes:
            return floor
        covered = min(part.window_s, (ts - self.points[0][0]) / 1e9 + 1e-3)
        return max(floor, math.sqrt(max(self.sum, 0.0) / covered))


@dataclass(frozen=True)
class AvellanedaStoikov:
    """Reservation price and half spread (see the module docstring): ``risk_aversion``
    (gamma, per unit of relative variance), ``horizon_s`` (tau, seconds),
    ``half_spread_bps`` (the liquidity term), ``inventory_widen_bps`` (extra half
    spread at the inventory limit)."""

    risk_aversion: float = 500.0
    horizon_s: float = 10.0
    half_spread_bps: float = 0.5
    inventory_widen_bps: float = 0.0

    def quote(self, fair: float, sigma: float, x: float) -> tuple[float, float]:
        """(reservation price, half spread as a fraction of ``fair``)."""
        var = sigma * sigma * self.horizon_s
        reservation = fair * (1.0 - self.risk_aversion * x * var)
        half = (
            self.half_spread_bps * 1e-4
            + 0.5 * self.risk_aversion * var
            + self.inventory_widen_bps * 1e-4 * abs(x)
        )
        return reservation, half


@dataclass(frozen=True)
class InventoryLimit:
    """Largest position, long or short: ``max_fraction`` of the capital (notional at the
    fair price)."""

    max_fraction: float = 0.5

    def limit(self, capital: float, fair: float) -> float:
        return self.max_fraction * capital / fair


@dataclass(frozen=True)
class AdverseSelectionSwitch:
    """Stop quoting for ``cooloff_s`` seconds when the mean mid move after the last
    ``fills`` fills, ``markout_ms`` after each, is below ``-threshold_bps`` (signed by
    the fill's side: negative is against us). Only fills whose markout time has passed
    count (causal); after a stop, only fills after it."""

    fills: int = 8
    markout_ms: float = 1000.0
    threshold_bps: float = 1.0
    cooloff_s: float = 10.0


FairPart = MidPrice | MicroPrice


class MarketMaker:
    """The quoter: the parts above, applied at each decision (``decide``)."""

    def __init__(
        self,
        *,
        capital: float,
        tick: float,
        lot: float = 0.0,
        order_fraction: float = 0.05,
        fair: FairPart | None = None,
        vol: RollingVolatility | None = None,
        quoting: AvellanedaStoikov | None = None,
        limit: InventoryLimit | None = None,
        switch: AdverseSelectionSwitch | None = None,
    ) -> None:
        if not (capital > 0 and math.isfinite(capital)):
            raise ValueError(f"capital must be > 0 USDT, got {capital}")
        if not tick > 0:
            raise ValueError(f"tick must be > 0, got {tick}")
        self.capital = capital
        self.tick = tick
        self.lot = lot
        self.order_fraction = order_fraction
        self.fair_part: FairPart = fair or MicroPrice()
        self.vol = vol or RollingVolatility()
        self.quoting = quoting or AvellanedaStoikov()
        self.limit = limit or InventoryLimit()
        self.switch = switch or AdverseSelectionSwitch()
        self._vol = _VolState(self.vol)
        self._sigma = self.vol.floor_bps * 1e-4
        self.stopped_until = -1
        self._count_from = -1  # fills at or after this time count for the switch
        self._marks: list[tuple[int, float]] = []  # (fill time, markout bps), known ones
        self.stops: list[dict[str, Any]] = []

    def snapshot(self) -> dict[str, Any]:
        """What the quoter remembers between decisions (the volatility window, the kill
        switch's markouts, stops), as JSON-able data: a live loop saves it each cycle and
        ``restore`` takes it up after a restart."""
        v = self._vol
        return {
            "vol_points": [list(p) for p in v.points],
            "vol_sum": v.sum,
            "vol_last": list(v.last) if v.last is not None else None,
            "sigma": self._sigma,
            "stopped_until": self.stopped_until,
            "count_from": self._count_from,
            "marks": [list(m) for m in self._marks],
            "stops": list(self.stops),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Take up a ``snapshot``."""
        v = self._vol
        v.points = deque((int(t), float(x)) for t, x in saved["vol_points"])
        v.sum = float(saved["vol_sum"])
        v.last = (
            None
            if saved["vol_last"] is None
            else (int(saved["vol_last"][0]), float(saved["vol_last"][1]))
        )
        self._sigma = float(saved["sigma"])
        self.stopped_until = int(saved["stopped_until"])
        self._count_from = int(saved["count_from"])
        self._marks = [(int(t), float(x)) for t, x in saved["marks"]]
        self.stops = list(saved["stops"])

    def _round_size(self, size: float) -> float:
        if self.lot > 0:
            return math.floor(size / self.lot + 1e-9) * self.lot
        return size

    def _check_switch(self, state: MarketState) -> tuple[str, str] | None:
        sw = self.switch
        h = int(sw.markout_ms * 1e6)
        # Fills come in time order, so their markouts become known in order: each is
        # measured once, when its time has come (the mid then no longer changes).
        fills, marks = state.fills, self._marks
        while len(marks) < len(fills) and fills[len(marks)].ts + h <= state.ts:
            f = fills[len(marks)]
            marks.append((f.ts, f.side * (state.mid_at(f.ts + h) - f.mid) / f.mid * 1e4))
        last = marks[-sw.fills :]
        if len(last) < sw.fills or last[0][0] < self._count_from:
            return None
        mean = float(np.mean([m for _, m in last]))
        if mean < -sw.threshold_bps:
            self.stopped_until = state.ts + int(sw.cooloff_s * 1e9)
            self._count_from = self.stopped_until
            message = (
                f"adverse selection: the last {sw.fills} fills lost {-mean:.2f} bps on "
                f"average {sw.markout_ms:g} ms after (limit {sw.threshold_bps:g}): no "
                f"quotes for {sw.cooloff_s:g} s"
            )
            self.stops.append(
                {
                    "ts": state.ts,
                    "until": self.stopped_until,
                    "markout_bps": mean,
                    "reason": message,
                }
            )
            return ("adverse_selection_stop", message)
        return None

    def decide(self, state: MarketState) -> Intent:
        fair = self.fair_part.fair(state)
        if state.event == "book":  # a fill leaves the mid as it was: no new change
            self._sigma = self._vol.update(state.ts, state.mid)
        sigma = self._sigma
        if state.ts < self.stopped_until:
            left = (self.stopped_until - state.ts) / 1e9
            return Intent(
                None, None, (("cooling_off", f"adverse-selection stop: {left:.1f} s left"),)
            )
        stop = self._check_switch(state)
        if stop is not None:
            return Intent(None, None, (stop,))
        if not (math.isfinite(fair) and fair > 0 and state.ask > state.bid):
            return Intent(None, None, (("no_book", "no two-sided book: no quotes"),))
        q_max = self.limit.limit(self.capital, fair)
        x = max(-1.0, min(1.0, state.inventory / q_max))
        r, half = self.quoting.quote(fair, sigma, x)
        tick = self.tick
        bid_px = math.floor((r * (1.0 - half)) / tick + 1e-9) * tick
        ask_px = math.ceil((r * (1.0 + half)) / tick - 1e-9) * tick
        # Post-only against the book seen now: never at or through the other side.
        bid_px = min(bid_px, state.ask - tick)
        ask_px = max(ask_px, state.bid + tick)
        bid_px, ask_px = round(bid_px / tick) * tick, round(ask_px / tick) * tick
        size = self.order_fraction * self.capital / fair
        msg = (
            f"{self.fair_part.name} {fair:.6g}, vol {sigma * 1e4:.2f} bps/root-s, inventory "
            f"{state.inventory:+.6g} ({x:+.0%} of limit): reservation {r:.6g}, half spread "
            f"{half * 1e4:.2f} bps"
        )
        reasons: list[tuple[str, str]] = [("quote", msg)]
        wishes: dict[int, QuoteWish | None] = {}
        for side, px in ((1, bid_px), (-1, ask_px)):
            # Room under the limit if every quote that can still fill does (a replaced
            # quote stays live until its cancel lands): the limit holds through latency.
            mine, others = state.in_flight(side)
            room = q_max - side * state.inventory - others
            if mine is not None:
                same = abs(mine[0] - px) <= 1e-9 * px
                room -= (mine[2] - mine[1]) if same else mine[2]
            qty = self._round_size(min(size, room))
            if qty <= max(self.lot, 1e-12) * 0.5 or qty <= 0 or px <= 0:
                name = "bid" if side == 1 else "ask"
                reasons.append(
                    (
                        f"inventory_limit_{name}",
                        f"inventory {state.inventory:+.6g} at the limit {side * q_max:+.6g}: "
                        f"no {name}",
                    )
                )
                wishes[side] = None
            else:
                wishes[side] = QuoteWish(px, qty, msg)
        return Intent(wishes[1], wishes[-1], tuple(reasons))


# --- paper and live: quotes as post-only orders through a broker --------------------------


class BrokerQuotes:
    """Keeps a broker's quotes in line with the quoter's decisions, through the broker
    protocol (``trimtab.execution.broker.Broker``: ``submit``, ``cancel``,
    ``open_orders``): each side is one post-only, good-till-cancelled limit order. A side
    asked for again unchanged (price and size) is left alone, keeping its place in the
    queue; a changed one is cancelled and sent again; a side not wanted is cancelled. A
    quote no longer among the open orders filled (or was cancelled by the venue): it is
    sent again only if still wanted. ``sync`` returns what it did, each with a reason."""

    def __init__(self, broker: Any, symbol: str, subaccount: str = "main") -> None:
        self.broker = broker
        self.symbol = symbol
        self.subaccount = subaccount
        self.orders: dict[int, Any] = {1: None, -1: None}

    def sync(self, intent: Intent) -> list[dict[str, Any]]:
        from trimtab.domain.orders import Order, OrderType, Side, TimeInForce

        open_ids = {o.id for o in self.broker.open_orders()}
        why = "; ".join(m for _, m in intent.reasons)
        done: list[dict[str, Any]] = []
        for side, wish in ((1, intent.bid), (-1, intent.ask)):
            name = "bid" if side == 1 else "ask"
            current = self.orders[side]
            if current is not None and current.id not in open_ids:
                current = self.orders[side] = None  # filled or ended at the venue
            if (
                current is not None
                and wish is not None
                and abs(current.limit_price - wish.price) <= 1e-9 * wish.price
                and abs(current.quantity - wish.size) <= 1e-12 * max(wish.size, 1.0)
            ):
                continue
            if current is not None:
                self.broker.cancel(current.id)
                done.append({"kind": "cancel", "order_id": current.id, "side": name, "reason": why})
                self.orders[side] = None
            if wish is None:
                continue
            order = Order(
                self.symbol,
                Side.BUY if side == 1 else Side.SELL,
                quantity=wish.size,
                type=OrderType.LIMIT,
                limit_price=wish.price,
                subaccount=self.subaccount,
                reason=wish.reason or why,
                time_in_force=TimeInForce.GTC,
                post_only=True,
            )
            rejection = self.broker.submit(order)
            if rejection is not None:
                done.append(
                    {
                        "kind": "rejected",
                        "order_id": order.id,
                        "side": name,
                        "reason": rejection.reason,
                    }
                )
                continue
            self.orders[side] = order
            done.append(
                {
                    "kind": "submit",
                    "order_id": order.id,
                    "side": name,
                    "price": wish.price,
                    "quantity": wish.size,
                    "reason": order.reason,
                }
            )
        return done


# --- parameters -----------------------------------------------------------------------------


class MarketMakingParams(BaseModel):
    """Parameters of ``strategy: market-making`` (a portfolio file's ``params``) and of
    ``trimtab mm``. Units: bps, seconds, milliseconds, fractions of the capital."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    book: str | None = None  # book file (relative to the data folder); None: found there
    trades: str | None = None  # trades file; None: beside the book
    depth: int = Field(25, ge=1, le=1000)  # levels kept from incremental books
    fair: Literal["mid", "micro"] = "micro"
    vol_window_s: float = Field(30.0, gt=0)
    vol_floor_bps: float = Field(1.0, ge=0)
    risk_aversion: float = Field(500.0, ge=0)
    horizon_s: float = Field(10.0, gt=0)
    half_spread_bps: float = Field(0.5, ge=0, le=1000)
    inventory_widen_bps: float = Field(0.0, ge=0, le=1000)
    order_fraction: float = Field(0.05, gt=0, le=1)
    max_inventory: float = Field(0.5, gt=0, le=10)  # fraction of capital, notional
    kill_fills: int = Field(8, ge=1)
    kill_markout_ms: float = Field(1000.0, gt=0)
    kill_threshold_bps: float = Field(1.0, ge=0)
    cooloff_s: float = Field(10.0, ge=0)
    latency_ms: float = Field(50.0, ge=0)
    cancel_latency_ms: float | None = Field(None, ge=0)
    queue_factor: float = Field(1.0, ge=0, le=1)
    queue_follows_book: bool = False
    # Binance USD-M futures' regular maker fee (0.02%); a rebate programme: negative.
    maker_fee_bps: float = Field(2.0, gt=-100, lt=100)
    tick: float | None = Field(None, gt=0)  # None: inferred from the prices
    lot: float = Field(0.0, ge=0)
    markout_ms: tuple[float, ...] = (100.0, 1000.0, 5000.0, 10000.0)
    capacity_depth_share: float = Field(1.0, gt=0, le=10)

    @model_validator(mode="after")
    def _check(self) -> MarketMakingParams:
        if not self.markout_ms or min(self.markout_ms) <= 0:
            raise ValueError("markout_ms: give positive horizons in ms, e.g. [100, 1000, 5000]")
        return self

    def sim_params(self) -> SimParams:
        return SimParams(
            latency_ms=self.latency_ms,
            cancel_latency_ms=self.cancel_latency_ms,
            queue_factor=self.queue_factor,
            queue_follows_book=self.queue_follows_book,
            maker_fee_bps=self.maker_fee_bps,
        )

    def quoter(self, capital: float, tick: float) -> MarketMaker:
        return MarketMaker(
            capital=capital,
            tick=tick,
            lot=self.lot,
            order_fraction=self.order_fraction,
            fair=MicroPrice() if self.fair == "micro" else MidPrice(),
            vol=RollingVolatility(self.vol_window_s, floor_bps=self.vol_floor_bps),
            quoting=AvellanedaStoikov(
                self.risk_aversion, self.horizon_s, self.half_spread_bps, self.inventory_widen_bps
            ),
            limit=InventoryLimit(self.max_inventory),
            switch=AdverseSelectionSwitch(
                self.kill_fills, self.kill_markout_ms, self.kill_threshold_bps, self.cooloff_s
            ),
        )


def market_making_params(params: dict[str, Any] | None) -> MarketMakingParams:
    """Validated parameters (``ValueError`` naming the key)."""
    try:
        return MarketMakingParams(**(params or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "params"
        raise ValueError(f"market-making params: {key}: {first['msg']}") from None


def infer_tick(book: BookSnapshots, trades: Trades) -> float:
    """The price tick: the smallest gap between distinct prices seen (book and trades),
    rounded to a power-of-ten multiple (1, 2 or 5)."""
    prices = np.concatenate(
        [book.bid_px.ravel(), book.ask_px.ravel(), np.asarray(trades.price, dtype=float)]
    )
    prices = np.unique(np.round(prices[np.isfinite(prices)], 10))
    gaps = np.diff(prices)
    gaps = gaps[gaps > 1e-12]
    if not gaps.size:
        return 10.0 ** math.floor(math.log10(float(prices[0]) * 1e-5)) if prices.size else 0.01
    g = float(gaps.min())
    exp = math.floor(math.log10(g))
    for m in (1, 2, 5, 10):
        if m * 10.0**exp >= g * 0.999:
            return round(m * 10.0**exp, 12)
    return g


# --- results ---------------------------------------------------------------------------------


@dataclass
class MarketMakingResult:
    """A run at ``capital``: the simulation, the quoter (its stops), the PnL parts,
    markouts (bps per horizon, per fill) and the summary figures."""

    capital: float
    params: MarketMakingParams
    sim: SimResult
    stops: list[dict[str, Any]]
    parts: dict[str, float]
    markouts: dict[float, np.ndarray]
    summary: dict[str, float]
    equity: pd.Series
    capacity: float
    book_source: str
    trades_source: str
    tick: float
    symbol: str = ""
    notes: list[str] = field(default_factory=list)

    def fills_frame(self) -> pd.DataFrame:
        rows = [
            {
                "timestamp": pd.Timestamp(f.ts, tz="UTC"),
                "side": "buy" if f.side == 1 else "sell",
                "price": f.price,
                "quantity": f.quantity,
                "fee": f.fee,
                "trade_id": f.trade_id,
                "trade_price": f.trade_price,
                "trade_size": f.trade_size,
                "mid": f.mid,
                "live_since": pd.Timestamp(f.live_ts, tz="UTC"),
                "queue_at_join": f.queue_at_join,
                "through": f.through,
                **{f"markout_{h:g}ms_bps": float(self.markouts[h][k]) for h in self.markouts},
            }
            for k, f in enumerate(self.sim.fills)
        ]
        return pd.DataFrame(rows)

    def records(self) -> list[dict[str, Any]]:
        """Decisions, quote outcomes, fills and stops in time order, each with ``ts``,
        ``kind`` and ``reason``; every fill names the trade that filled it."""
        out: list[dict[str, Any]] = []
        for d in self.sim.decisions:
            out.append(
                {
                    "ts": pd.Timestamp(d["ts"], tz="UTC"),
                    "kind": "decision",
                    "bid": d["bid"],
                    "ask": d["ask"],
                    "inventory": d["inventory"],
                    "codes": [c for c, _ in d["reasons"]],
                    "reason": "; ".join(m for _, m in d["reasons"]),
                }
            )
        for q in self.sim.quotes:
            if q["status"] == "rejected":
                out.append(
                    {
                        "ts": pd.Timestamp(q["end_ts"], tz="UTC"),
                        "kind": "rejected",
                        "quote_id": q["quote_id"],
                        "reason": q["note"],
                    }
                )
        for f in self.sim.fills:
            out.append(
                {
                    "ts": pd.Timestamp(f.ts, tz="UTC"),
                    "kind": "fill",
                    "symbol": self.symbol,
                    "side": "buy" if f.side == 1 else "sell",
                    "price": f.price,
                    "quantity": f.quantity,
                    "fee": f.fee,
                    "trade_id": f.trade_id,
                    "quote_id": f.quote_id,
                    "reason": (
                        f"trade {f.trade_id} ({'sell' if f.trade_side == -1 else 'buy'} "
                        f"aggressor {f.trade_size:g} at {f.trade_price:g}) "
                        + ("went through" if f.through else "reached, queue ahead consumed,")
                        + f" our {'bid' if f.side == 1 else 'ask'} {f.price:g}"
                    ),
                }
            )
        for s in self.stops:
            out.append(
                {
                    "ts": pd.Timestamp(s["ts"], tz="UTC"),
                    "kind": "stop",
                    "until": pd.Timestamp(s["until"], tz="UTC"),
                    "reason": s["reason"],
                }
            )
        out.sort(key=lambda r: r["ts"])
        return out


def _summary(
    capital: float,
    sim: SimResult,
    parts: dict[str, float],
    marks: dict[float, np.ndarray],
    stops: list[dict[str, Any]],
    capacity: float,
) -> dict[str, float]:
    quotes = sim.quotes
    went_live = [q for q in quotes if q["live_ts"] is not None]
    filled = [q for q in went_live if q["filled"] > 0]
    quoted_qty = sum(q["size"] for q in went_live)
    filled_qty = sum(f.quantity for f in sim.fills)
    inv = sim.inventory
    mid = sim.mid
    with np.errstate(invalid="ignore"):
        notional = np.abs(inv * mid)
    out: dict[str, float] = {
        "capital": capital,
        "fills": float(len(sim.fills)),
        "quotes_sent": float(len(quotes)),
        "quotes_live": float(len(went_live)),
        "quotes_rejected_post_only": float(sum(q["status"] == "rejected" for q in quotes)),
        "fill_rate": len(filled) / len(went_live) if went_live else float("nan"),
        "filled_share_of_quoted": filled_qty / quoted_qty if quoted_qty else float("nan"),
        "buys": float(sum(f.side == 1 for f in sim.fills)),
        "sells": float(sum(f.side == -1 for f in sim.fills)),
        "volume_usdt": float(sum(f.quantity * f.price for f in sim.fills)),
        "spread_capture": parts["spread_capture"],
        "inventory_pnl": parts["inventory_pnl"],
        "fees": parts["fees"],
        "total_pnl": parts["total"],
        "return": parts["total"] / capital,
        "final_inventory": float(inv[-1]) if len(inv) else 0.0,
        "max_abs_inventory_usdt": float(np.nanmax(notional)) if len(notional) else 0.0,
        "kill_switch_stops": float(len(stops)),
        "capacity_usdt": capacity,
    }
    for h, moves in marks.items():
        ok = moves[np.isfinite(moves)]
        out[f"markout_{h:g}ms_bps"] = float(ok.mean()) if ok.size else float("nan")
        out[f"adverse_share_{h:g}ms"] = float((ok < 0).mean()) if ok.size else float("nan")
    return out


# --- the sleeve ------------------------------------------------------------------------------


class MarketMakingSleeve:
    """Market making as a ``SimulatedStrategy`` over one book file and one trades file.

    ``capacity``: the capital at which each quote is ``capacity_depth_share`` of the
    median displayed size at the touch (USDT, mean of the two sides): past it, our quotes
    would be as large as the queue they join, and the replayed tape (which our orders do
    not change) no longer tells what would fill.
    """

    kind = KIND

    def __init__(
        self,
        book: BookSnapshots,
        trades: Trades,
        params: MarketMakingParams | None = None,
    ) -> None:
        self.book = book
        self.trades = trades
        self.params = params or MarketMakingParams()
        if len(trades) == 0:
            raise ValueError(f"{trades.source}: no trades: a quote can only fill from trades")
        start = max(book.ts[0], trades.ts[0])
        end = min(book.ts[-1], trades.ts[-1])
        if end <= start:
            raise ValueError(
                f"the book ({book.source}: {book.times[0]} to {book.times[-1]}) and the trades "
                f"({trades.source}: {trades.times[0]} to {trades.times[-1]}) do not overlap"
            )
        if book.symbol and trades.symbol and book.symbol != trades.symbol:
            raise ValueError(
                f"the book is {book.symbol} ({book.source}), the trades {trades.symbol} "
                f"({trades.source}): give both of one market"
            )
        self.tick = self.params.tick or infer_tick(book, trades)

    def coverage(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        start = max(self.book.ts[0], self.trades.ts[0])
        end = min(self.book.ts[-1], self.trades.ts[-1])
        return pd.Timestamp(int(start), tz="UTC"), pd.Timestamp(int(end), tz="UTC")

    def capacity(self) -> float:
        b = self.book
        depth = np.nanmedian(
            (b.bid_sz[:, 0] * b.bid_px[:, 0] + b.ask_sz[:, 0] * b.ask_px[:, 0]) / 2
        )
        return float(depth * self.params.capacity_depth_share / self.params.order_fraction)

    def run(
        self, capital: float, progress: Callable[[int, int], None] | None = None
    ) -> MarketMakingResult:
        """Simulate at ``capital`` USDT and report."""
        p = self.params
        quoter = p.quoter(capital, self.tick)
        sim = BookSimulator(self.book, self.trades, p.sim_params()).run(quoter, progress)
        final_mid = float(sim.mid[np.isfinite(sim.mid)][-1])
        parts = pnl_parts(sim.fills, final_mid)
        marks = markouts(sim.fills, self.book, p.markout_ms)
        capacity = self.capacity()
        ok = np.isfinite(sim.mid)
        times = pd.DatetimeIndex(pd.to_datetime(sim.ts[ok], utc=True))
        equity = pd.Series(capital + sim.pnl[ok], index=times, name="equity")
        equity = equity[~equity.index.duplicated(keep="last")]
        notes = []
        if capital > capacity:
            notes.append(
                f"capital {capital:,.0f} USDT is above the capacity {capacity:,.0f} USDT: the "
                "quotes are larger than the queue they join; fills are optimistic"
            )
        return MarketMakingResult(
            capital=capital,
            params=p,
            sim=sim,
            stops=quoter.stops,
            parts=parts,
            markouts=marks,
            summary=_summary(capital, sim, parts, marks, quoter.stops, capacity),
            equity=equity,
            capacity=capacity,
            book_source=self.book.source,
            trades_source=self.trades.source,
            tick=self.tick,
            symbol=self.book.symbol or self.trades.symbol,
            notes=notes,
        )

    def simulate(self, capital: float) -> SleeveRun:
        result = self.run(capital)
        return SleeveRun(
            equity=result.equity,
            records=result.records(),
            capacity=result.capacity,
            regimes=("ranging", "calm"),
            summary={k: float(v) for k, v in result.summary.items()},
        )


def load_sleeve(params: MarketMakingParams, data_dir: str | Path | None) -> MarketMakingSleeve:
    """Read the book and trades files of ``params`` (relative to ``data_dir``; when not
    given, the first trades file with a book of the same prefix in ``data_dir`` or its
    ``orderbook_samples``) and make the sleeve."""
    base = Path(data_dir) if data_dir is not None else None
    book_path = _resolve(params.book, base)
    trades_path = _resolve(params.trades, base)
    for given in (book_path, trades_path):
        if given is not None and is_bar_file(given):
            raise ValueError(f"{given}: {BARS_REFUSAL}")
    if book_path is None or trades_path is None:
        found = (
            find_tick_files(book_path.parent if book_path else base) if (book_path or base) else {}
        )
        book_path = book_path or found.get("book")
        trades_path = trades_path or found.get("trades")
    if book_path is None or trades_path is None:
        where = f" in {base} or {base / 'orderbook_samples'}" if base is not None else ""
        raise ValueError(
            f"no order-book and trade files found{where}: give a book file and a trades "
            "file (e.g. btcusdt-quotes.parquet and btcusdt-trades.parquet). "
            + BARS_REFUSAL.split(". ")[0]
            + "."
        )
    book = read_book(book_path, depth=params.depth)
    trades = read_trades(trades_path)
    return MarketMakingSleeve(book, trades, params)


def _resolve(name: str | None, base: Path | None) -> Path | None:
    if name is None:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None and not path.exists():
        path = (base if base.is_dir() else base.parent) / path
    return path


def is_bar_file(path: Path) -> bool:
    """Does ``path`` look like OHLCV bars (a name with ohlcv, or open/high/low/close
    columns)? Market making refuses those (``BARS_REFUSAL``)."""
    name = path.name.lower()
    if "ohlcv" in name or name.endswith(".feather"):
        return True
    if name.endswith((".csv", ".csv.gz")) and path.is_file():
        try:
            head = pd.read_csv(path, nrows=0).columns
        except (ValueError, OSError, UnicodeDecodeError):
            return False
        return {"open", "high", "low", "close"} <= {str(c).lower() for c in head}
    if name.endswith(".parquet") and path.is_file():
        import pyarrow.parquet as pq

        try:
            cols = pq.read_schema(path).names
        except (OSError, ValueError):
            return False
        return {"open", "high", "low", "close"} <= {c.lower() for c in cols}
    return False


def market_making_from_settings(
    params: dict[str, Any] | None, data_dir: str | Path | None
) -> MarketMakingSleeve:
    """The market-making sleeve a portfolio file's ``params`` describe (validated:
    ``ValueError`` naming the key), on the book and trades files under ``data_dir``."""
    return load_sleeve(market_making_params(params), data_dir)
