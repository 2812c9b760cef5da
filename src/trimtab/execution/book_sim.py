"""An order-book and queue fill simulator for passive (post-only) limit quotes.

It replays book states (``BookSnapshots``) and trades (``Trades``) in time order and asks
a ``Quoter`` what to quote after every book state and after every fill of its own. The
rules, chosen to be conservative:

* **Latency.** A decision at ``t`` reaches the venue at ``t + latency_ms``: a new quote
  goes live then, and a cancel (or the cancel half of a replace) takes effect at
  ``t + cancel_latency_ms`` (default: the same latency). Until then the old quote can
  still fill. A quote the quoter asks for again unchanged (same price and size) is left
  alone and keeps its place in the queue.
* **Post-only.** A quote that would cross the book when it goes live (a bid at or above
  the best ask, an ask at or below the best bid) is rejected, like Binance's GTX: it
  never takes liquidity and never pays a taker fee.
* **Fills come only from trades.** A seller-aggressor trade at a price below our bid,
  or a buyer-aggressor trade above our ask, went through our price: we fill up to the
  trade's size. A trade exactly at our price first consumes the queue ahead of us: the
  size displayed at our price when we went live times ``queue_factor`` (1.0: behind all
  of it). A price better than the touch has no queue; a price inside the levels shown
  but not among them has none either; a price beyond the levels the data shows (e.g.
  under the best bid of top-of-book data) has an unknown queue, taken as the whole
  size displayed there when the level first comes into view (everything ahead of us is
  still displayed then), and no trade at our price fills us before that. With
  ``queue_follows_book`` the queue ahead also shrinks to the size displayed at our
  price when that falls (cancels ahead of us); off by default (more conservative).
  Only trades strictly after the quote went live can fill it; trades at the same
  instant as a book state are applied first. Our quotes do not change the replayed
  tape (the usual assumption of a small quoter).
* **Fees.** ``maker_fee_bps`` of each fill's notional; negative is a rebate.

Every fill names the trade that filled it. Times are int64 nanoseconds UTC; prices in
the quote currency (USDT), sizes in base units; ``side`` +1 buy, -1 sell.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from trimtab.data.ticks import BookSnapshots, Trades

_REL = 1e-10  # prices equal within this relative tolerance are the same price


@dataclass(frozen=True)
class SimParams:
    """Venue model: ``latency_ms`` from decision to live quote, ``cancel_latency_ms``
    (None: the same), ``queue_factor`` (share of the displayed queue at our price
    ahead of us when we join, in [0, 1]), ``queue_follows_book`` (see the module
    docstring), ``maker_fee_bps`` (negative: rebate)."""

    latency_ms: float = 50.0
    cancel_latency_ms: float | None = None
    queue_factor: float = 1.0
    queue_follows_book: bool = False
    maker_fee_bps: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")
        c = self.cancel_latency_ms
        if c is not None and not (math.isfinite(c) and c >= 0):
            raise ValueError(f"cancel_latency_ms must be >= 0, got {c}")
        if not 0 <= self.queue_factor <= 1:
            raise ValueError(f"queue_factor must be in [0, 1], got {self.queue_factor}")
        if not (math.isfinite(self.maker_fee_bps) and abs(self.maker_fee_bps) < 100):
            raise ValueError(f"maker_fee_bps must be within +-100 bps, got {self.maker_fee_bps}")


@dataclass(frozen=True)
class QuoteWish:
    """One side the quoter wants: ``price`` (quote currency), ``size`` (base) and why."""

    price: float
    size: float
    reason: str = ""


@dataclass(frozen=True)
class Intent:
    """A decision: the bid and ask wanted (None: no quote on that side), and the
    reasons (code, message) behind it."""

    bid: QuoteWish | None
    ask: QuoteWish | None
    reasons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SimFill:
    """A fill of one of our quotes by one trade of the tape."""

    ts: int
    quote_id: int
    side: int
    price: float
    quantity: float
    fee: float
    trade_id: str
    trade_price: float
    trade_size: float
    trade_side: int
    mid: float
    live_ts: int
    queue_at_join: float | None
    through: bool
    reason: str


@dataclass
class _Quote:
    id: int
    side: int
    price: float
    size: float
    reason: str
    decided_ts: int
    remaining: float = 0.0
    status: str = "pending"  # pending, live, cancelled, rejected, filled
    live_ts: int | None = None
    end_ts: int | None = None
    queue: float | None = None
    queue_at_join: float | None = None
    note: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "quote_id": self.id,
            "side": self.side,
            "price": self.price,
            "size": self.size,
            "filled": self.size - self.remaining,
            "status": self.status,
            "decided_ts": self.decided_ts,
            "live_ts": self.live_ts,
            "end_ts": self.end_ts,
            "queue_at_join": self.queue_at_join,
            "reason": self.reason,
            "note": self.note,
        }


class MarketState:
    """What the quoter sees at a decision: time ``ts`` (ns), the book up to now, its
    inventory (base), cash (quote) and fills so far. Nothing after ``ts``."""

    __slots__ = (
        "_active",
        "_book",
        "_requested",
        "cash",
        "cur",
        "event",
        "fills",
        "inventory",
        "ts",
    )

    def __init__(self, book: BookSnapshots) -> None:
        self._book = book
        self._active: dict[int, _Quote] = {}  # quotes pending or live (pruned lazily)
        self._requested: dict[int, _Quote | None] = {1: None, -1: None}
        self.ts = 0
        self.cur = -1
        self.inventory = 0.0
        self.cash = 0.0
        self.fills: list[SimFill] = []
        self.event = "book"

    @property
    def bid(self) -> float:
        return float(self._book.bid_px[self.cur, 0])

    @property
    def ask(self) -> float:
        return float(self._book.ask_px[self.cur, 0])

    @property
    def bid_size(self) -> float:
        return float(self._book.bid_sz[self.cur, 0])

    @property
    def ask_size(self) -> float:
        return float(self._book.ask_sz[self.cur, 0])

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    def in_flight(self, side: int) -> tuple[tuple[float, float, float] | None, float]:
        """Our quotes on ``side`` (+1 bids, -1 asks) that can still fill: the one last
        asked for, as (price, size, remaining), if pending or live; and the remaining
        size of the others still pending or live (replaced, their cancels on the way)."""
        for k in [k for k, q in self._active.items() if q.status not in ("pending", "live")]:
            del self._active[k]
        req = self._requested[side]
        mine = None
        if req is not None and req.status in ("pending", "live"):
            mine = (req.price, req.size, req.remaining)
        others = sum(q.remaining for q in self._active.values() if q.side == side and q is not req)
        return mine, others

    def mid_at(self, ts: int) -> float:
        """The mid of the last book state at or before ``ts`` (ns); ``ts`` must not be
        after now (no lookahead)."""
        if ts > self.ts:
            raise ValueError("mid_at: asked for a time after now")
        k = int(np.searchsorted(self._book.ts[: self.cur + 1], ts, side="right")) - 1
        if k < 0:
            return float("nan")
        b = self._book
        return float((b.bid_px[k, 0] + b.ask_px[k, 0]) / 2.0)


class Quoter(Protocol):
    """Decides the quotes wanted now from the market state."""

    def decide(self, state: MarketState) -> Intent: ...


@dataclass
class SimResult:
    """What the simulation did: ``fills``, every quote (``quotes``: records), the
    decisions that changed something (``decisions``), and the path at every event:
    ``ts``, ``mid``, ``inventory`` (base), ``cash`` (quote, fees paid in)."""

    fills: list[SimFill]
    quotes: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    ts: np.ndarray
    mid: np.ndarray
    inventory: np.ndarray
    cash: np.ndarray
    params: SimParams
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pnl(self) -> np.ndarray:
        """Marked-to-market PnL at every event: cash + inventory x mid (quote)."""
        return self.cash + self.inventory * self.mid


class BookSimulator:
    """Replays ``book`` and ``trades`` with a ``Quoter`` under ``params`` (see the
    module docstring)."""

    def __init__(self, book: BookSnapshots, trades: Trades, params: SimParams | None = None):
        if len(book) == 0:
            raise ValueError(f"{book.source}: no book states to simulate on")
        self.book = book
        self.trades = trades
        self.params = params or SimParams()

    def run(self, quoter: Quoter, progress: Callable[[int, int], None] | None = None) -> SimResult:
        book, trades, p = self.book, self.trades, self.params
        lat = int(round(p.latency_ms * 1e6))
        clat = lat if p.cancel_latency_ms is None else int(round(p.cancel_latency_ms * 1e6))
        fee_rate = p.maker_fee_bps * 1e-4
        state = MarketState(book)
        quotes: list[_Quote] = []
        requested = state._requested  # the quote last asked for, per side
        live: dict[int, _Quote | None] = {1: None, -1: None}
        actions: list[tuple[int, int, str, int]] = []  # (time, seq, kind, quote id)
        seq = 0
        fills: list[SimFill] = []
        decisions: list[dict[str, Any]] = []
        path_ts: list[int] = []
        path_mid: list[float] = []
        path_inv: list[float] = []
        path_cash: list[float] = []
        last_reasons: tuple[str, ...] | None = None

        bts, tts = book.ts, trades.ts
        nb, nt = len(bts), len(tts)
        total = nb + nt
        i = j = 0

        def apply(kind: str, q: _Quote, at: int) -> None:
            if kind == "cancel":
                if q.status in ("pending", "live"):
                    q.status, q.end_ts = "cancelled", at
                    if live[q.side] is q:
                        live[q.side] = None
                return
            if q.status != "pending":  # cancelled before it reached the venue
                return
            k = state.cur  # >= 0: decisions start at the first book state
            best_opp = book.ask_px[k, 0] if q.side == 1 else book.bid_px[k, 0]
            if math.isfinite(best_opp):
                crosses = q.price >= best_opp if q.side == 1 else q.price <= best_opp
                if crosses:
                    q.status, q.end_ts = "rejected", at
                    q.note = (
                        f"post-only: {'bid' if q.side == 1 else 'ask'} {q.price:g} would cross "
                        f"the best {'ask' if q.side == 1 else 'bid'} {best_opp:g} when live"
                    )
                    if requested[q.side] is q:
                        requested[q.side] = None
                    return
            q.status, q.live_ts = "live", at
            q.queue = self._queue(q, k)
            q.queue_at_join = q.queue
            old = live[q.side]
            if old is not None and old.status == "live":
                # Its cancel was sent with this quote; latencies may differ, the
                # venue holds one quote per side in this model.
                old.status, old.end_ts = "cancelled", at
            live[q.side] = q

        def mark() -> None:
            path_ts.append(state.ts)
            path_mid.append(state.mid if state.cur >= 0 else float("nan"))
            path_inv.append(state.inventory)
            path_cash.append(state.cash)

        def decide() -> None:
            nonlocal seq, last_reasons
            if state.cur < 0:
                return
            intent = quoter.decide(state)
            changed = False
            for side, wish in ((1, intent.bid), (-1, intent.ask)):
                cur = requested[side]
                if cur is not None and cur.status in ("filled", "cancelled", "rejected"):
                    cur = requested[side] = None
                if wish is None and cur is None:
                    continue
                if (
                    wish is not None
                    and cur is not None
                    and abs(wish.price - cur.price) <= _REL * cur.price
                    and abs(wish.size - cur.size) <= 1e-12 * max(cur.size, 1.0)
                ):
                    continue
                changed = True
                if cur is not None:
                    heapq.heappush(actions, (state.ts + clat, seq, "cancel", cur.id))
                    seq += 1
                if wish is not None:
                    if not (math.isfinite(wish.price) and wish.price > 0 and wish.size > 0):
                        raise ValueError(f"quoter asked for a bad quote {wish}")
                    q = _Quote(
                        len(quotes),
                        side,
                        float(wish.price),
                        float(wish.size),
                        wish.reason,
                        state.ts,
                        remaining=float(wish.size),
                    )
                    quotes.append(q)
                    state._active[q.id] = q
                    requested[side] = q
                    heapq.heappush(actions, (state.ts + lat, seq, "live", q.id))
                    seq += 1
                else:
                    requested[side] = None
            codes = tuple(code for code, _ in intent.reasons)
            if changed or codes != last_reasons:
                decisions.append(
                    {
                        "ts": state.ts,
                        "bid": None if intent.bid is None else (intent.bid.price, intent.bid.size),
                        "ask": None if intent.ask is None else (intent.ask.price, intent.ask.size),
                        "inventory": state.inventory,
                        "reasons": list(intent.reasons),
                        "changed": changed,
                    }
                )
                last_reasons = codes

        done = 0
        while i < nb or j < nt:
            trade_next = j < nt and (i >= nb or tts[j] <= bts[i])
            now = int(tts[j] if trade_next else bts[i])
            while actions and actions[0][0] < now:
                at, _, kind, qid = heapq.heappop(actions)
                state.ts = max(state.ts, at)
                apply(kind, quotes[qid], at)
            state.ts = now
            if trade_next:
                got = self._trade(j, live, state, fee_rate, fills)
                j += 1
                if got:
                    mark()
                    state.event = "fill"
                    decide()
            else:
                state.cur = i
                i += 1
                self._refresh_queues(live, state.cur)
                mark()
                state.event = "book"
                decide()
            done += 1
            if progress is not None and (done % 2000 == 0 or done == total):
                progress(done, total)
        return SimResult(
            fills=fills,
            quotes=[q.record() for q in quotes],
            decisions=decisions,
            ts=np.asarray(path_ts, dtype="int64"),
            mid=np.asarray(path_mid, dtype=float),
            inventory=np.asarray(path_inv, dtype=float),
            cash=np.asarray(path_cash, dtype=float),
            params=p,
        )

    # --- queue and fills ------------------------------------------------------------------
    def _displayed(self, side: int, price: float, k: int) -> float | None:
        """Size displayed at ``price`` on our side of book state ``k``: 0 when better
        than the touch or inside the levels shown but absent, None beyond them."""
        b = self.book
        px = b.bid_px[k] if side == 1 else b.ask_px[k]
        sz = b.bid_sz[k] if side == 1 else b.ask_sz[k]
        tol = _REL * price
        if b.levels == 1:  # top of book: no arrays to scan
            top = float(px[0])
            if not math.isfinite(top):
                return None
            if abs(top - price) <= tol:
                return float(sz[0])
            return 0.0 if (price > top if side == 1 else price < top) else None
        ok = np.isfinite(px)
        if not ok.any():
            return None
        px, sz = px[ok], sz[ok]
        hit = np.flatnonzero(np.abs(px - price) <= tol)
        if hit.size:
            return float(sz[hit[0]])
        worst = px[-1]
        inside = price > worst if side == 1 else price < worst
        return 0.0 if inside else None

    def _queue(self, q: _Quote, k: int) -> float | None:
        shown = self._displayed(q.side, q.price, k)
        return None if shown is None else shown * self.params.queue_factor

    def _refresh_queues(self, live: dict[int, _Quote | None], k: int) -> None:
        for q in live.values():
            if q is None or q.status != "live":
                continue
            if q.queue is None:
                q.queue = self._queue(q, k)
            elif self.params.queue_follows_book:
                shown = self._displayed(q.side, q.price, k)
                if shown is not None:
                    q.queue = min(q.queue, shown)

    def _trade(
        self,
        j: int,
        live: dict[int, _Quote | None],
        state: MarketState,
        fee_rate: float,
        fills: list[SimFill],
    ) -> bool:
        t = self.trades
        aggressor = int(t.side[j])
        q = live[-aggressor]  # a seller hits our bid, a buyer lifts our ask
        if q is None or q.status != "live":
            return False
        price, size = float(t.price[j]), float(t.size[j])
        tol = _REL * q.price
        through = price < q.price - tol if q.side == 1 else price > q.price + tol
        at_price = abs(price - q.price) <= tol
        if through:
            available = size
            q.queue = 0.0
        elif at_price:
            if q.queue is None:
                return False  # behind an unknown queue
            available = max(0.0, size - q.queue)
            q.queue = max(0.0, q.queue - size)
        else:
            return False
        qty = min(available, q.remaining)
        if qty <= 0:
            return False
        q.remaining -= qty
        if q.remaining <= 1e-12 * q.size:
            q.remaining = 0.0
            q.status, q.end_ts = "filled", int(t.ts[j])
            live[q.side] = None
        fee = fee_rate * qty * q.price
        state.cash -= q.side * qty * q.price + fee
        state.inventory += q.side * qty
        fill = SimFill(
            ts=int(t.ts[j]),
            quote_id=q.id,
            side=q.side,
            price=q.price,
            quantity=qty,
            fee=fee,
            trade_id=str(t.trade_id[j]),
            trade_price=price,
            trade_size=size,
            trade_side=aggressor,
            mid=state.mid,
            live_ts=int(q.live_ts or 0),
            queue_at_join=q.queue_at_join,
            through=through,
            reason=q.reason,
        )
        fills.append(fill)
        state.fills.append(fill)
        return True


# --- accounting -----------------------------------------------------------------------------


def pnl_parts(fills: list[SimFill], final_mid: float) -> dict[str, float]:
    """Marked-to-market PnL (quote currency) split exactly into three parts:

    * ``spread_capture`` = sum of side x (mid at fill - fill price) x qty: what each fill
      earned against the mid at its time;
    * ``inventory_pnl`` = sum of side x (final mid - mid at fill) x qty: the mid's moves
      on the inventory the fills built (equal to the integral of inventory x d(mid));
    * ``fees`` = minus the fees paid (a rebate is positive).

    They add to ``total`` = cash + inventory x final mid, since
    side x (final - fill price) = side x (mid - fill price) + side x (final - mid).
    """
    spread = sum(f.side * (f.mid - f.price) * f.quantity for f in fills)
    inventory = sum(f.side * (final_mid - f.mid) * f.quantity for f in fills)
    fees = 0.0 - sum(f.fee for f in fills)  # 0.0 first: no "-0.0" without fees
    cash = -sum(f.side * f.price * f.quantity + f.fee for f in fills)
    position = sum(f.side * f.quantity for f in fills)
    return {
        "spread_capture": spread,
        "inventory_pnl": inventory,
        "fees": fees,
        "total": cash + position * final_mid,
    }


def markouts(
    fills: list[SimFill], book: BookSnapshots, horizons_ms: tuple[float, ...]
) -> dict[float, np.ndarray]:
    """Signed mid move after each fill, in bps of the mid at the fill, per horizon:
    side x (mid at fill time + h - mid at fill) / mid at fill x 1e4. Negative: the
    market moved against the fill (adverse selection). NaN when the data ends first.
    An after-the-fact measure (it looks ahead by design); not for decisions."""
    ts = np.array([f.ts for f in fills], dtype="int64")
    side = np.array([f.side for f in fills], dtype=float)
    mid0 = np.array([f.mid for f in fills], dtype=float)
    mids = book.mid
    out: dict[float, np.ndarray] = {}
    for h in horizons_ms:
        at = ts + int(round(h * 1e6))
        k = np.searchsorted(book.ts, at, side="right") - 1
        later = mids[np.clip(k, 0, len(mids) - 1)]
        moved = side * (later - mid0) / mid0 * 1e4
        out[h] = np.where(at <= book.ts[-1], moved, np.nan) if len(ts) else np.zeros(0)
    return out
