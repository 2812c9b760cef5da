"""Market making on a live order book, in paper or live mode (``trimtab mm --exchange``).

Each cycle reads the venue's order book (``fetch_order_book``) and the market's trades
since a cursor (``fetch_trades`` from the last aggregate trade id seen) through ccxt and
hands them to the quoter the simulation runs (``trimtab.strategies.market_making``:
``MarketMaker.decide``; its fair price, volatility, inventory limit and kill switch).

* **paper**: the book states and trades seen so far are replayed by
  ``trimtab.execution.book_sim.BookSimulator`` with that quoter: the same latency, queue
  and post-only rules as the backtest, so a quote fills only when a live trade crosses
  it, behind the queue displayed at its price. The replay is deterministic and sees at
  each decision only what came before it, so each cycle's replay repeats the previous
  cycles' exactly and adds what the new data brought; those new quotes, fills and stops
  are booked on the paper ledger (inventory and cash). A trade stamped at or before the
  last book state already replayed (late) is recorded and left out (it would rewrite the
  past). Each cycle's replay costs time in proportion to everything seen so far.
* **live**: ``BrokerQuotes`` keeps one post-only GTC limit per side on the
  ``CcxtVenue`` (LIMIT_MAKER on spot, GTX on USDT-M perpetuals): a changed quote is
  cancelled and sent again, an unchanged one keeps its place in the queue. Fills are the
  venue's (its own polling and booking, ``advance`` and its events). Client order ids
  are the store's deterministic ``client_order_id(run, subaccount, cycle, leg)``; each
  order is written to the store before it is sent, and the venue's journal sends a
  client id at most once, so a restarted loop never sends an order twice.

Every cycle is one store transaction (``trimtab.journal.Store``): its records (what was
seen, the quotes wanted and why, orders sent, cancels, post-only refusals, fills, kill
switch stops), the balance, the loop's state (trade cursor, inventory, cash, quotes, the
quoter's memory) and the checkpoint. A restarted run of the same ``run_id`` rewinds to
its checkpoint and carries on from that state. ``stop`` (also on SIGINT/SIGTERM in
``run``) cancels the open quotes and records it.

Times: int64 ns UTC inside; prices in the quote currency (USDT), sizes in base units.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.ticks import BookSnapshots, Trades
from trimtab.domain import Order, OrderType, Side
from trimtab.domain.orders import Rejection, TimeInForce
from trimtab.execution.book_sim import BookSimulator, Intent
from trimtab.journal.store import Store, client_order_id
from trimtab.strategies.market_making import BrokerQuotes, MarketMaker, MarketMakingParams

log = logging.getLogger(__name__)

KIND = "mm-live"
_STATE = "mm"


def venue_symbol(ccxt_symbol: str) -> str:
    """trimtab's name of a ccxt symbol: ``BTC/USDT`` -> ``BTCUSDT``, ``BTC/USDT:USDT``
    -> ``BTCUSDT-PERP``."""
    base, sep, rest = ccxt_symbol.partition("/")
    if not sep or not base or not rest:
        raise ValueError(f"--symbol {ccxt_symbol!r}: give a ccxt symbol such as BTC/USDT")
    quote, colon, settle = rest.partition(":")
    if quote != "USDT" or (colon and settle != "USDT"):
        raise ValueError(f"--symbol {ccxt_symbol!r}: trimtab quotes USDT markets only")
    return f"{base}USDT" + ("-PERP" if colon else "")


# --- reading the market ------------------------------------------------------------------


class MarketFeed:
    """The public market data of one symbol through a ccxt client: the top ``depth``
    levels of the book, and trades after a cursor (the last aggregate trade id seen;
    None before the first look, which takes the newest id as the cursor: earlier trades
    are history, not events)."""

    def __init__(self, client: Any, symbol: str, depth: int = 5) -> None:
        self.client = client
        self.symbol = symbol
        self.depth = int(depth)

    def book(self) -> tuple[list[list[float]], list[list[float]]]:
        got = self.client.fetch_order_book(self.symbol, self.depth)
        bids = [[float(p), float(q)] for p, q, *_ in got.get("bids") or []][: self.depth]
        asks = [[float(p), float(q)] for p, q, *_ in got.get("asks") or []][: self.depth]
        return bids, asks

    def trades(self, cursor: int | None) -> tuple[list[dict[str, Any]], int | None]:
        """(new trades oldest first, the new cursor)."""
        if cursor is None:
            recent = self.client.fetch_trades(self.symbol, limit=1)
            return [], (int(recent[-1]["id"]) if recent else 0)
        out: list[dict[str, Any]] = []
        while True:
            page = self.client.fetch_trades(
                self.symbol, limit=1000, params={"fromId": int(cursor) + 1}
            )
            for t in page:
                tid = int(t["id"])
                if tid <= cursor:
                    continue
                out.append(
                    {
                        "id": str(tid),
                        "ts": int(t["timestamp"]) * 1_000_000,
                        "price": float(t["price"]),
                        "size": float(t["amount"]),
                        "side": 1 if t["side"] == "buy" else -1,
                    }
                )
                cursor = tid
            if len(page) < 1000:
                return out, cursor


# --- what the quoter sees live -----------------------------------------------------------


@dataclass(frozen=True)
class _SeenFill:
    ts: int
    side: int
    mid: float


class LiveState:
    """``book_sim.MarketState``'s interface over what the live loop has seen: the book
    now, the mids seen (``mid_at``), our fills, inventory and cash, and our quotes at the
    venue (``in_flight``: cancels are answered before the loop goes on, so nothing else
    is in flight)."""

    event = "book"

    def __init__(self, ts: int, bids: list, asks: list, mids: list[tuple[int, float]]) -> None:
        self.ts = ts
        self.bid, self.bid_size = (bids[0][0], bids[0][1]) if bids else (math.nan, math.nan)
        self.ask, self.ask_size = (asks[0][0], asks[0][1]) if asks else (math.nan, math.nan)
        self._mids = mids
        self.inventory = 0.0
        self.cash = 0.0
        self.fills: list[_SeenFill] = []
        self.quotes: dict[int, tuple[float, float, float] | None] = {1: None, -1: None}

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    def in_flight(self, side: int) -> tuple[tuple[float, float, float] | None, float]:
        return self.quotes[side], 0.0

    def mid_at(self, ts: int) -> float:
        if ts > self.ts:
            raise ValueError("mid_at: asked for a time after now")
        times = [t for t, _ in self._mids]
        k = int(np.searchsorted(times, ts, side="right")) - 1
        return float(self._mids[k][1]) if k >= 0 else math.nan


class VenueBroker:
    """The broker protocol (``submit``, ``cancel``, ``open_orders``) over a
    ``CcxtVenue`` for ``BrokerQuotes``: each order gets the store's deterministic client
    id for (run, subaccount, cycle, leg), is written to the store (committed) before it
    is sent, and is sent by the venue at most once."""

    def __init__(self, venue: Any, store: Store, run_id: str, subaccount: str) -> None:
        self.venue = venue
        self.store = store
        self.run_id = run_id
        self.subaccount = subaccount
        self.cycle = 0
        self.ts: pd.Timestamp | None = None
        self.cids: dict[int, str] = {}  # Order.id -> client order id
        self._legs: dict[int, int] = {}

    def _next_cid(self) -> tuple[str, int]:
        if self.cycle not in self._legs:  # a cycle run again after a restart: new legs
            known = [o for o in self.store.orders(self.run_id) if o["decision_id"] == self.cycle]
            self._legs[self.cycle] = len(known)
        leg = self._legs[self.cycle]
        self._legs[self.cycle] = leg + 1
        return client_order_id(self.run_id, self.subaccount, self.cycle, leg), leg

    def submit(self, order: Order) -> Rejection | None:
        cid, leg = self._next_cid()
        row = {**_order_row(order), "decision_id": self.cycle, "client_order_id": cid, "leg": leg}
        with self.store.transaction(self.run_id, bar=self.cycle, timestamp=self.ts) as tx:
            tx.add_orders([row])
        got = self.venue.submit(order, cid, self.cycle)
        self.cids[order.id] = cid
        if got.status in ("rejected", "expired") and not got.filled_quantity:
            return Rejection(order, self.ts or pd.Timestamp.now(tz="UTC"), got.reason, got.status)
        return None

    def cancel(self, order_id: int) -> bool:
        cid = self.cids.get(order_id)
        if cid is None:
            return False
        got = self.venue.cancel(cid)
        return got is not None and got.status == "cancelled"

    def open_orders(self) -> list[Order]:
        open_cids = {o.client_order_id for o in self.venue.open_orders(self.subaccount)}
        return [_Ref(oid) for oid, cid in self.cids.items() if cid in open_cids]  # type: ignore[misc]


@dataclass(frozen=True)
class _Ref:
    id: int


def _order_row(order: Order) -> dict[str, Any]:
    return {
        "symbol": order.symbol,
        "side": str(order.side),
        "quantity": order.quantity,
        "type": str(order.type),
        "limit_price": order.limit_price,
        "subaccount": order.subaccount,
        "decision_id": order.decision_id,
        "reason": order.reason,
        "time_in_force": str(order.time_in_force),
        "id": order.id,
    }


# --- the loop ----------------------------------------------------------------------------


class QuotingLoop:
    """Market making on ``feed``'s market, ``mode`` ``paper`` or ``live`` (then through
    ``venue``, a ``CcxtVenue``), recorded in ``store`` under ``run_id``.

    ``capital`` (USDT) sizes the quotes and the inventory limit as in the simulation;
    ``tick`` and ``lot`` come from the venue's rules (``instrument``) when the params do
    not give them. ``clock`` is seconds since the epoch (tests give the emulator's);
    ``on_decided(intent)`` runs between the decision and the orders (tests move the
    market there, as latency would)."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        feed: MarketFeed,
        *,
        mode: str,
        capital: float,
        params: MarketMakingParams | None = None,
        venue: Any = None,
        symbol: str | None = None,
        subaccount: str = "mm",
        tick: float | None = None,
        lot: float | None = None,
        clock: Callable[[], float] = time.time,
        on_decided: Callable[[Intent], None] | None = None,
    ) -> None:
        if mode not in ("paper", "live"):
            raise ValueError(f"mode must be paper or live, got {mode!r}")
        if mode == "live" and venue is None:
            raise ValueError("live market making needs a venue")
        self.store, self.run_id, self.feed, self.mode = store, run_id, feed, mode
        self.venue, self.subaccount, self.capital = venue, subaccount, float(capital)
        self.symbol = symbol or venue_symbol(feed.symbol)
        self.params = params or MarketMakingParams()
        inst = venue.instrument(self.symbol) if venue is not None else None
        self.tick = tick or self.params.tick or (inst.tick_size if inst else None)
        if not self.tick:
            raise ValueError("the price tick is unknown: give --set tick=0.01 (the venue's)")
        self.lot = lot if lot is not None else (self.params.lot or (inst.lot_size if inst else 0))
        self.params = self.params.model_copy(update={"tick": self.tick, "lot": self.lot})
        self.clock, self.on_decided = clock, on_decided
        self.quoter: MarketMaker = self.params.quoter(self.capital, self.tick)
        spec = {
            "symbol": feed.symbol,
            "mode": mode,
            "capital": self.capital,
            "subaccount": subaccount,
            "params": self.params.model_dump(mode="json"),
        }
        store.start_run(run_id, KIND, spec)
        cp = store.rewind(run_id, keep_orders=True)
        saved = store.load_state(run_id, _STATE) if cp is not None else None
        self.cycle = (cp[0] + 1) if cp is not None else 0
        self.state: dict[str, Any] = saved or {
            "cursor": None,
            "next_id": 0,
            "last_book_ts": None,
            "inventory": 0.0,
            "cash": 0.0,
            "mids": [],
            "fills": [],
            "quotes": {"1": None, "-1": None},
            "venue_seq": 0,
            "quoter": None,
            "paper": {"decisions": 0, "quotes": 0, "fills": 0, "stops": 0},
        }
        self.inputs: dict[str, list] = {"books": [], "trades": []}
        if mode == "paper" and cp is not None:
            for rec in store.decisions(run_id, subaccount):
                if rec.get("kind") == "seen":
                    self.inputs["books"].append(rec["book"])
                    self.inputs["trades"].extend(rec["trades"])
        self.broker: VenueBroker | None = None
        self.quotes: BrokerQuotes | None = None
        if mode == "live":
            if self.state["quoter"] is not None:
                self.quoter.restore(self.state["quoter"])
            self.broker = VenueBroker(venue, store, run_id, subaccount)
            self.quotes = BrokerQuotes(self.broker, self.symbol, subaccount)
            self._adopt_quotes()

    # --- live: the quotes the venue holds ----------------------------------------------
    def _adopt_quotes(self) -> None:
        """After a restart: our quotes still open at the venue are taken up (by the
        client ids the store holds, the newest per side; an older one is cancelled), so
        an unchanged quote is not sent again."""
        assert self.broker is not None and self.quotes is not None
        mine = [o for o in self.store.orders(self.run_id) if o["subaccount"] == self.subaccount]
        for row in mine:
            got = self.venue.order(row["client_order_id"])
            if got is None or not got.is_open:
                continue
            side = 1 if got.side == "buy" else -1
            order = Order(
                self.symbol,
                Side.BUY if side == 1 else Side.SELL,
                quantity=float(got.quantity or 0.0),
                type=OrderType.LIMIT,
                limit_price=float(row["limit_price"]),
                subaccount=self.subaccount,
                time_in_force=TimeInForce.GTC,
                post_only=True,
            )
            old = self.quotes.orders[side]
            if old is not None:
                self.venue.cancel(self.broker.cids[old.id])
            self.broker.cids[order.id] = got.client_order_id
            self.quotes.orders[side] = order

    def _venue_fills(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Our fills the venue booked since the last look, into inventory and cash."""
        st = self.state
        out = []
        ours = set(self.broker.cids.values()) if self.broker else set()
        ours |= {o["client_order_id"] for o in self.store.orders(self.run_id)}
        base = self.symbol.removesuffix("-PERP").removesuffix("USDT")
        for ev in self.venue.events_since(st["venue_seq"]):
            st["venue_seq"] = ev.seq
            if ev.kind == "order" and ev.client_order_id in ours:
                records.append(
                    self._rec(
                        "order_" + str(ev.data.get("status", "update")),
                        client_order_id=ev.client_order_id,
                        reason=str(ev.data.get("reason") or ev.data.get("status") or ""),
                    )
                )
            if ev.kind != "fill" or ev.client_order_id not in ours:
                continue
            f = ev.fill()
            side = 1 if f.side == Side.BUY else -1
            fee_base = f.fee if f.fee_currency == base else 0.0
            fee_quote = f.fee if f.fee_currency != base else 0.0
            st["inventory"] += side * f.quantity - fee_base
            st["cash"] -= side * f.quantity * f.price + fee_quote
            ts = int(f.timestamp.value)
            st["fills"].append([ts, side, self._mid_at(ts)])
            row = {
                "timestamp": f.timestamp,
                "symbol": self.symbol,
                "side": str(f.side),
                "quantity": f.quantity,
                "price": f.price,
                "fee": f.fee,
                "fee_currency": f.fee_currency,
                "liquidity": str(f.liquidity),
                "subaccount": self.subaccount,
                "client_order_id": ev.client_order_id,
                "trade_id": str(ev.data.get("trade_id") or f"ev{ev.seq}"),
                "reason": f.reason,
            }
            out.append(row)
            records.append(
                self._rec(
                    "fill",
                    client_order_id=ev.client_order_id,
                    side=row["side"],
                    price=f.price,
                    quantity=f.quantity,
                    fee=f.fee,
                    reason=f"our {'bid' if side == 1 else 'ask'} {f.price:g} filled "
                    f"{f.quantity:g} at the venue ({row['liquidity']})",
                )
            )
        return out

    def _mid_at(self, ts: int) -> float:
        mids = self.state["mids"]
        k = int(np.searchsorted([t for t, _ in mids], ts, side="right")) - 1
        return float(mids[k][1]) if k >= 0 else math.nan

    # --- one cycle ------------------------------------------------------------------------
    def _rec(self, kind: str, **fields: Any) -> dict[str, Any]:
        rid = self.state["next_id"]
        self.state["next_id"] = rid + 1
        out = {
            "id": rid,
            "cycle": self.cycle,
            "kind": kind,
            "action": kind,
            "timestamp": self._ts,
            "symbol": self.symbol,
            "mode": self.mode,
        }
        out.update(fields)
        if "reason" in out:
            out["reasons"] = [out["reason"]]
        return out

    def step(self) -> dict[str, Any]:
        """One cycle: read, decide, act (paper: replay; live: the venue), record. Returns
        what it did (``records``)."""
        st = self.state
        now_ns = int(round(self.clock() * 1e9))
        trades, cursor = self.feed.trades(st["cursor"])
        bids, asks = self.feed.book()
        last = st["last_book_ts"]
        latest = max([now_ns] + [t["ts"] for t in trades])
        ts = latest if last is None else max(latest, last + 1)
        self._ts = pd.Timestamp(ts, tz="UTC")
        late = [t for t in trades if last is not None and t["ts"] <= last]
        fresh = [t for t in trades if not (last is not None and t["ts"] <= last)]
        st["cursor"], st["last_book_ts"] = cursor, ts
        mid = (bids[0][0] + asks[0][0]) / 2.0 if bids and asks else math.nan
        if math.isfinite(mid):
            st["mids"].append([ts, mid])
            horizon = int((self.params.vol_window_s + self.params.kill_markout_ms / 1e3) * 2e9)
            while len(st["mids"]) > 2 and st["mids"][1][0] < ts - horizon:
                st["mids"].pop(0)
        records: list[dict[str, Any]] = []
        seen = self._rec(
            "seen",
            book={"ts": ts, "bids": bids, "asks": asks},
            trades=fresh,
            reason=f"book {bids[0][0] if bids else 'none'} / {asks[0][0] if asks else 'none'}, "
            f"{len(fresh)} new trades",
        )
        records.append(seen)
        if late:
            records.append(
                self._rec(
                    "late_trades",
                    trades=late,
                    reason=f"{len(late)} trades stamped at or before the last book state "
                    "replayed: left out of the paper fills",
                )
            )
        fills: list[dict[str, Any]] = []
        if self.mode == "paper":
            self.inputs["books"].append(seen["book"])
            self.inputs["trades"].extend(fresh)
            fills = self._paper(records)
        else:
            fills = self._live(ts, bids, asks, records)
        equity = self.capital + st["cash"] + st["inventory"] * (mid if math.isfinite(mid) else 0)
        with self.store.transaction(self.run_id, bar=self.cycle, timestamp=self._ts) as tx:
            tx.add_decisions(records, subaccount=self.subaccount)
            if fills:
                tx.add_fills(fills)
            tx.add_balances(
                [
                    {
                        "subaccount": self.subaccount,
                        "equity": equity,
                        "cash": self.capital + st["cash"],
                        "positions": {self.symbol: st["inventory"]},
                    }
                ]
            )
            tx.save_state(_STATE, st)
            tx.set_checkpoint(bar=self.cycle, timestamp=self._ts)
        self.cycle += 1
        return {"records": records, "fills": fills, "inventory": st["inventory"], "mid": mid}

    def _live(self, ts: int, bids: list, asks: list, records: list) -> list[dict[str, Any]]:
        st = self.state
        assert self.broker is not None and self.quotes is not None
        self.venue.advance(self.cycle)
        fills = self._venue_fills(records)
        state = LiveState(ts, bids, asks, [tuple(m) for m in st["mids"]])
        state.inventory, state.cash = st["inventory"], st["cash"]
        state.fills = [_SeenFill(int(t), int(s), float(m)) for t, s, m in st["fills"]]
        open_by_cid = {o.client_order_id: o for o in self.venue.open_orders(self.subaccount)}
        for side in (1, -1):
            order = self.quotes.orders[side]
            got = open_by_cid.get(self.broker.cids.get(order.id, "")) if order else None
            if order is not None and got is not None:
                left = float(order.quantity) - float(got.filled_quantity)
                state.quotes[side] = (float(order.limit_price), float(order.quantity), left)
        intent = self.quoter.decide(state)
        records.append(self._decision(intent, state.inventory))
        if self.on_decided is not None:
            self.on_decided(intent)
        self.broker.cycle, self.broker.ts = self.cycle, self._ts
        for done in self.quotes.sync(intent):
            cid = self.broker.cids.get(done["order_id"])
            records.append(
                self._rec(
                    done["kind"],
                    client_order_id=cid,
                    **{k: v for k, v in done.items() if k not in ("kind", "order_id")},
                )
            )
        st["quotes"] = {
            str(side): (None if o is None else [self.broker.cids[o.id], o.limit_price, o.quantity])
            for side, o in self.quotes.orders.items()
        }
        st["quoter"] = self.quoter.snapshot()
        st["fills"] = st["fills"][-max(self.params.kill_fills * 4, 32) :]
        return fills

    def _decision(self, intent: Intent, inventory: float) -> dict[str, Any]:
        return self._rec(
            "decision",
            bid=None if intent.bid is None else [intent.bid.price, intent.bid.size],
            ask=None if intent.ask is None else [intent.ask.price, intent.ask.size],
            inventory=inventory,
            codes=[c for c, _ in intent.reasons],
            reason="; ".join(m for _, m in intent.reasons),
        )

    # --- paper: the backtest's simulator over what was seen --------------------------------
    def _paper(self, records: list) -> list[dict[str, Any]]:
        st, seen = self.state, self.state["paper"]
        books, tape = self.inputs["books"], self.inputs["trades"]
        depth = max([len(b["bids"]) for b in books] + [len(b["asks"]) for b in books] + [1])

        def levels(rows: list, k: int) -> tuple[float, float]:
            return (rows[k][0], rows[k][1]) if k < len(rows) else (math.nan, math.nan)

        arr = {n: np.full((len(books), depth), np.nan) for n in ("bp", "bs", "ap", "as")}
        for i, b in enumerate(books):
            for k in range(depth):
                arr["bp"][i, k], arr["bs"][i, k] = levels(b["bids"], k)
                arr["ap"][i, k], arr["as"][i, k] = levels(b["asks"], k)
        book = BookSnapshots(
            "live",
            self.feed.symbol,
            np.array([b["ts"] for b in books], dtype="int64"),
            arr["bp"],
            arr["bs"],
            arr["ap"],
            arr["as"],
        )
        trades = Trades(
            "live",
            self.feed.symbol,
            np.array([t["ts"] for t in tape], dtype="int64"),
            np.array([t["id"] for t in tape], dtype=object),
            np.array([t["price"] for t in tape], dtype=float),
            np.array([t["size"] for t in tape], dtype=float),
            np.array([t["side"] for t in tape], dtype="int8"),
        )
        quoter = self.params.quoter(self.capital, self.tick)
        sim = BookSimulator(book, trades, self.params.sim_params()).run(quoter)
        for d in sim.decisions[seen["decisions"] :]:
            rec = self._decision(
                Intent(None, None, tuple(tuple(r) for r in d["reasons"])), d["inventory"]
            )
            rec.update(
                bid=list(d["bid"]) if d["bid"] else None,
                ask=list(d["ask"]) if d["ask"] else None,
                at=pd.Timestamp(d["ts"], tz="UTC"),
            )
            records.append(rec)
        for q in sim.quotes[seen["quotes"] :]:
            records.append(
                self._rec(
                    "paper_quote",
                    quote_id=q["quote_id"],
                    side="bid" if q["side"] == 1 else "ask",
                    price=q["price"],
                    quantity=q["size"],
                    reason=q["reason"],
                )
            )
        for q in sim.quotes:
            if q["status"] == "rejected" and q["quote_id"] >= seen.get("rejected_from", 0):
                records.append(self._rec("rejected", quote_id=q["quote_id"], reason=q["note"]))
                seen["rejected_from"] = q["quote_id"] + 1
        fills = []
        for f in sim.fills[seen["fills"] :]:
            why = (
                f"trade {f.trade_id} ({'sell' if f.trade_side == -1 else 'buy'} aggressor "
                f"{f.trade_size:g} at {f.trade_price:g}) "
                + ("went through" if f.through else "reached, queue ahead consumed,")
                + f" our {'bid' if f.side == 1 else 'ask'} {f.price:g}"
            )
            records.append(
                self._rec(
                    "fill",
                    quote_id=f.quote_id,
                    side="buy" if f.side == 1 else "sell",
                    price=f.price,
                    quantity=f.quantity,
                    fee=f.fee,
                    trade_id=f.trade_id,
                    reason=why,
                )
            )
            fills.append(
                {
                    "timestamp": pd.Timestamp(f.ts, tz="UTC"),
                    "symbol": self.symbol,
                    "side": "buy" if f.side == 1 else "sell",
                    "quantity": f.quantity,
                    "price": f.price,
                    "fee": f.fee,
                    "fee_currency": "USDT",
                    "liquidity": "maker",
                    "subaccount": self.subaccount,
                    "trade_id": f"paper-{f.trade_id}-{f.quote_id}",
                    "reason": why,
                }
            )
        for s in quoter.stops[seen["stops"] :]:
            records.append(self._rec("kill_switch", until=s["until"], reason=s["reason"]))
        seen.update(
            decisions=len(sim.decisions),
            quotes=len(sim.quotes),
            fills=len(sim.fills),
            stops=len(quoter.stops),
        )
        st["inventory"] = float(sim.inventory[-1]) if len(sim.inventory) else 0.0
        st["cash"] = float(sim.cash[-1]) if len(sim.cash) else 0.0
        self._paper_open = [q for q in sim.quotes if q["status"] in ("pending", "live")]
        return fills

    # --- stopping ---------------------------------------------------------------------------
    def stop(self, why: str = "stopped") -> list[dict[str, Any]]:
        """Cancel the open quotes (live: at the venue) and record it."""
        self._ts = pd.Timestamp(int(round(self.clock() * 1e9)), tz="UTC")
        records: list[dict[str, Any]] = []
        if self.mode == "live":
            assert self.broker is not None and self.quotes is not None
            for side, order in self.quotes.orders.items():
                if order is None:
                    continue
                cid = self.broker.cids[order.id]
                got = self.venue.cancel(cid)
                records.append(
                    self._rec(
                        "cancel",
                        client_order_id=cid,
                        side="bid" if side == 1 else "ask",
                        status=None if got is None else got.status,
                        reason=f"{why}: quotes withdrawn",
                    )
                )
                self.quotes.orders[side] = None
            self.state["quotes"] = {"1": None, "-1": None}
        else:
            for q in getattr(self, "_paper_open", []):
                records.append(
                    self._rec(
                        "cancel",
                        quote_id=q["quote_id"],
                        side="bid" if q["side"] == 1 else "ask",
                        reason=f"{why}: paper quote withdrawn",
                    )
                )
        records.append(self._rec("stop", reason=why))
        with self.store.transaction(self.run_id, bar=self.cycle - 1, timestamp=self._ts) as tx:
            tx.add_decisions(records, subaccount=self.subaccount)
            tx.save_state(_STATE, self.state)
        return records

    @property
    def _transient(self) -> tuple[type[BaseException], ...]:
        import ccxt

        from trimtab.execution.ccxt_venue import VenueUnavailable

        return (ccxt.NetworkError, VenueUnavailable)

    def run(
        self,
        cycles: int | None,
        interval_s: float,
        *,
        on_cycle: Callable[[dict[str, Any]], None] | None = None,
        cancel_on_exit: bool = True,
    ) -> str:
        """Cycle every ``interval_s`` seconds, ``cycles`` times (None: until stopped);
        SIGINT or SIGTERM end the wait, then the open quotes are cancelled (also on an
        error, and at the end unless ``cancel_on_exit`` is False). A cycle lost to the
        network (ccxt's ``NetworkError``, the venue unavailable) is logged and tried
        again; five in a row end the loop. Returns why it ended."""
        stop = threading.Event()
        why = {"text": "cycles done"}

        def on_signal(signum: int, _frame: Any) -> None:
            why["text"] = f"signal {signal.Signals(signum).name}"
            stop.set()

        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, on_signal)
        done = failures = 0
        try:
            while (cycles is None or done < cycles) and not stop.is_set():
                try:
                    out = self.step()
                except self._transient as exc:  # the network: the next cycle asks again
                    log.warning("cycle %s: %s: %s", self.cycle, type(exc).__name__, exc)
                    failures += 1
                    if failures >= 5:
                        raise
                    stop.wait(max(interval_s, 1.0))
                    continue
                failures = 0
                done += 1
                if on_cycle is not None:
                    on_cycle(out)
                if (cycles is None or done < cycles) and stop.wait(interval_s):
                    break
        except BaseException as exc:
            why["text"] = f"error: {type(exc).__name__}"
            self.stop(why["text"])
            raise
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if cancel_on_exit or stop.is_set():
            self.stop(why["text"])
        return why["text"]
