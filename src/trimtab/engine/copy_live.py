"""Copy trading live (``trimtab copy --follow``): a follower loop that polls a leader's
trades and sends scaled market orders through the broker protocol.

Each cycle:

1. polls the leader feed (``CcxtLeaderFeed``: the leader's account through ccxt; or
   ``CsvLeaderPoller``: a CSV of trades that grows) for trades after its cursor;
2. acts on each leader trade at ``t + delay``, never before (a trade seen earlier waits
   in ``pending``): its symbol must be allowed (else skipped, ``symbol_not_allowed``),
   the leader must still be followed (else ``unfollowed``); the wanted quantity is the
   leader's scaled (``equity_ratio``: follower equity over leader equity x fraction;
   ``fixed_fraction``: x fraction), a sell the share of the copy's holding the leader
   sold of its own (``sells: proportional``; the leader is taken to start flat) and
   ``plan_copy`` (``trimtab.strategies.copy``) clips it by the limits at the leader's
   price;
3. sends each copy as a market order whose reason names the leader trade
   (``copy <id>: leader buy 0.5 BTCUSDT at 29338 on <time>``) and whose client order id
   is ``copy_client_id(run, leader trade id)``: the same on every restart. The order is
   written to the store (committed) before it is sent, and the venue's journal sends a
   client id at most once (``CcxtVenue.submit``), so a restart never copies a trade
   twice;
4. checks the stop: the leader's equity (the feed's, read each cycle) below its peak
   since following began by ``stop_drawdown`` unfollows (recorded once, later trades
   skipped);
5. writes one decision per cycle (every copy, skip and stop with its leader trade id),
   the loop's state (feed cursor, pending trades, trades handled, leader holdings, peak,
   stopped) and the checkpoint, in one store transaction.

A run restarted under the same ``run_id`` rewinds to its checkpoint (orders kept: they
may have been sent) and carries on from the saved state; a leader trade handled after
the checkpoint is handled again with the same client id, which the venue returns
without sending. Times are UTC; ``clock`` is seconds since the epoch (the exchange's
clock in tests). Quantities in base units, prices and notionals in USDT.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from trimtab.domain import Order, OrderType, Side
from trimtab.journal.store import Store
from trimtab.strategies.copy import CopyParams, plan_copy

KIND = "copy-live"
_STATE = "copy"


def ccxt_client(
    exchange_id: str,
    api_key: Any = None,
    secret: Any = None,
    *,
    url: str | None = None,
    testnet: bool = False,
) -> Any:
    """A ccxt client (keys: text or ``Secret``; handed to ccxt only) at the exchange, its
    testnet (``testnet``), or another base url (``url``: a local emulator, a proxy;
    every api entry keeps its path), its markets loaded."""
    import ccxt

    from trimtab.execution.ccxt_venue import aim_client

    if testnet and url:
        raise ValueError("--testnet and --exchange-url point at two places: give one")
    config: dict[str, Any] = {"enableRateLimit": url is None}
    for name, value in (("apiKey", api_key), ("secret", secret)):
        if value is not None:
            reveal = getattr(value, "reveal", None)
            config[name] = reveal() if callable(reveal) else str(value)
    client = getattr(ccxt, exchange_id)(config)
    if testnet:
        client.set_sandbox_mode(True)
    elif url:
        aim_client(client, url)
        # Spot only: no currency, margin or futures listings asked for.
        client.options["fetchCurrencies"] = False
        client.options["fetchMargins"] = False
        client.options["fetchMarkets"] = {"types": ["spot"]}
    client.load_markets()
    return client


def copy_client_id(run_id: str, leader_trade_id: str) -> str:
    """The client order id copying ``leader_trade_id`` in run ``run_id``:
    ``cp-<10 hex of the run>-<16 hex of the trade id>`` (30 characters, Binance's
    ``[A-Za-z0-9_-]{1,36}``)."""
    run = hashlib.blake2b(run_id.encode(), digest_size=5).hexdigest()
    trade = hashlib.blake2b(str(leader_trade_id).encode(), digest_size=8).hexdigest()
    return f"cp-{run}-{trade}"


class CsvLeaderPoller:
    """A CSV of leader trades that grows (columns as ``read_leader_csv``'s trades:
    ``timestamp, symbol, side, quantity, price[, trade_id]``): ``poll`` returns the rows
    after those returned before (by row count, kept in ``state``)."""

    def __init__(self, path: str | Path, *, state: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._rows = int((state or {}).get("rows", 0))
        self.leader_equity: float | None = None

    def state(self) -> dict[str, Any]:
        return {"rows": self._rows}

    def poll(self) -> pd.DataFrame:
        from trimtab.data.leader_feed import read_leader_csv

        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such leader file")
        feed = read_leader_csv(self.path, "trades")
        new = feed.trades.iloc[self._rows :].reset_index(drop=True)
        self._rows = len(feed.trades)
        return new

    def equity(self) -> float | None:
        return self.leader_equity


@dataclass
class CycleResult:
    """What one cycle did: ``cycle`` (its number), ``sent`` (client order ids sent or
    found sent), ``reasons`` (the decision's reasons), ``stopped``."""

    cycle: int
    sent: list[str]
    reasons: list[dict[str, Any]]
    stopped: bool


class CopyFollower:
    """Follow ``feed`` (``poll()``, ``state()``, optional ``equity()``) with ``params``
    (``CopyParams``: scaling, fraction, delay, limits, stop) on ``venue`` (the broker
    protocol: ``submit(order, client_order_id, bar)``, ``advance(i)``, ``snapshot``),
    as ``subaccount``, recorded in ``store`` under ``run_id``. ``clock``: seconds since
    the epoch. ``feed_factory(state)``: the feed again from a saved cursor (a restart).
    ``on_sent(cid)``: after each order is sent (tests kill the process there)."""

    def __init__(
        self,
        *,
        feed_factory: Callable[[Mapping[str, Any] | None], Any],
        params: CopyParams,
        venue: Any,
        store: Store,
        run_id: str,
        subaccount: str = "copy",
        spec: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        on_sent: Callable[[str], None] | None = None,
        fee_rate: float = 0.001,
    ) -> None:
        self.params = params
        self.venue = venue
        self.store = store
        self.run_id = run_id
        self.subaccount = subaccount
        self.clock = clock
        self.on_sent = on_sent
        self.fee_rate = float(fee_rate)
        store.start_run(run_id, KIND, dict(spec or {}))
        cp = store.rewind(run_id, keep_orders=True)
        saved = store.load_state(run_id, _STATE) if cp is not None else None
        saved = dict(saved or {})
        self.cycle = int(cp[0]) + 1 if cp is not None else 0
        self.feed = feed_factory(saved.get("feed"))
        self.pending: list[dict[str, Any]] = list(saved.get("pending", []))
        self.handled: set[str] = set(saved.get("handled", []))
        self.leader_held: dict[str, float] = dict(saved.get("leader_held", {}))
        self.peak: float | None = saved.get("peak")
        self.stopped: bool = bool(saved.get("stopped", False))

    # --- one cycle -----------------------------------------------------------------------

    def step(self) -> CycleResult:
        """Poll, act on what is due, check the stop, record (module docstring)."""
        now = pd.Timestamp(self.clock(), unit="s", tz="UTC")
        reasons: list[dict[str, Any]] = []
        known = {p["trade_id"] for p in self.pending} | self.handled
        for row in self.feed.poll().itertuples(index=False):
            tid = str(row.trade_id)
            if tid in known:
                continue
            known.add(tid)
            self.pending.append(
                {
                    "trade_id": tid,
                    "ts": pd.Timestamp(row.timestamp).isoformat(),
                    "symbol": str(row.symbol),
                    "side": str(row.side).lower(),
                    "quantity": float(row.quantity),
                    "price": float(row.price),
                }
            )
        reasons.extend(self._check_stop(now))
        sent: list[str] = []
        due = [p for p in self.pending if pd.Timestamp(p["ts"]) + self._delay() <= now]
        waiting = [p for p in self.pending if p not in due]
        snap = self.venue.snapshot(self.subaccount) if due else None
        for p in sorted(due, key=lambda p: p["ts"]):
            reason, cid = self._act(p, snap, now)
            reasons.append(reason)
            if cid is not None:
                sent.append(cid)
                snap = self.venue.snapshot(self.subaccount)  # cash and holdings moved
            self.handled.add(p["trade_id"])
        for p in waiting:
            reasons.append(
                _reason(
                    "waiting",
                    f"leader trade {p['trade_id']} at {p['ts']}: copied from "
                    f"{(pd.Timestamp(p['ts']) + self._delay()).isoformat()} (delay "
                    f"{self.params.delay:g} s)",
                    leader_trade_id=p["trade_id"],
                )
            )
        self.pending = waiting
        self.venue.advance(self.cycle)
        self._record(now, reasons)
        result = CycleResult(self.cycle, sent, reasons, self.stopped)
        self.cycle += 1
        return result

    def run(
        self, cycles: int, interval: float, sleep: Callable[[float], None] = time.sleep
    ) -> list[CycleResult]:
        """``cycles`` cycles, ``interval`` seconds apart."""
        out = []
        for k in range(int(cycles)):
            if k:
                sleep(float(interval))
            out.append(self.step())
        return out

    # --- parts ---------------------------------------------------------------------------

    def _delay(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=float(self.params.delay))

    def _leader_equity(self) -> float | None:
        eq = getattr(self.feed, "equity", None)
        value = eq() if callable(eq) else None
        if value is None or not math.isfinite(float(value)) or float(value) <= 0:
            return self.params.leader_equity
        return float(value)

    def _check_stop(self, now: pd.Timestamp) -> list[dict[str, Any]]:
        level = self.params.stop_drawdown
        if level is None or self.stopped:
            return []
        eq = self._leader_equity()
        if eq is None:
            return []
        self.peak = eq if self.peak is None else max(float(self.peak), eq)
        dd = 1.0 - eq / float(self.peak) if self.peak else 0.0
        if dd < level:
            return []
        self.stopped = True
        return [
            _reason(
                "unfollow",
                f"the leader's equity {eq:,.2f} USDT is {dd:.1%} below its peak "
                f"{self.peak:,.2f} since following began (stop at {level:.0%}): unfollowed at "
                f"{now.isoformat()}; later leader trades are skipped",
                drawdown=dd,
                peak=float(self.peak),
                equity=eq,
                level=level,
            )
        ]

    def _act(
        self, p: dict[str, Any], snap: Any, now: pd.Timestamp
    ) -> tuple[dict[str, Any], str | None]:
        tid, symbol, side = p["trade_id"], p["symbol"], p["side"]
        qty, price = float(p["quantity"]), float(p["price"])
        what = f"leader trade {tid} ({side} {qty:g} {symbol} at {price:g} on {p['ts']})"
        before = self.leader_held.get(symbol, 0.0)
        self.leader_held[symbol] = max(before + (qty if side == "buy" else -qty), 0.0)
        limits = self.params.limits
        if limits.symbols is not None and symbol not in limits.symbols:
            return (
                _reason(
                    "symbol_not_allowed",
                    f"{what}: skipped, {symbol} is not among the allowed symbols "
                    f"({', '.join(limits.symbols)})",
                    leader_trade_id=tid,
                ),
                None,
            )
        if self.stopped:
            return (
                _reason(
                    "unfollowed", f"{what}: skipped, the leader is unfollowed", leader_trade_id=tid
                ),
                None,
            )
        cash, held, gross, equity = _book(snap, symbol)
        if side == "buy" or self.params.sells == "scaled" or before <= 0 or qty > before:
            if self.params.scaling == "equity_ratio":
                leader_eq = self._leader_equity()
                if leader_eq is None:
                    raise ValueError(
                        "scaling equity_ratio needs the leader's equity: the feed gives none; "
                        "set leader_equity (USDT) or use scaling fixed_fraction"
                    )
                wanted = self.params.fraction * equity / leader_eq * qty
            else:
                wanted = self.params.fraction * qty
        else:
            wanted = held * qty / before  # the share of its holding the leader sold
        plan = plan_copy(
            side,
            wanted,
            price,
            held=held,
            cash=cash,
            equity=equity,
            gross=gross,
            limits=limits,
            fill_cost=(self.params.half_spread_bps + self.params.slippage_bps) / 1e4,
            fee_rate=self.fee_rate,
        )
        clips = "; ".join(f"clipped by {c['code']} to {c['to']:g}" for c in plan.clipped)
        if plan.skip is not None or plan.quantity <= 0:
            return (
                _reason(
                    plan.skip or "nothing",
                    f"{what}: skipped ({plan.skip}){'; ' + clips if clips else ''}",
                    leader_trade_id=tid,
                    wanted=wanted,
                ),
                None,
            )
        text = f"copy {tid}: leader {side} {qty:.8g} {symbol} at {price:.8g} on {p['ts']}"
        order = Order(
            symbol,
            Side(side),
            quantity=float(plan.quantity),
            type=OrderType.MARKET,
            subaccount=self.subaccount,
            reason=text + (f" ({clips})" if clips else ""),
            decision_id=self.cycle,
        )
        cid = copy_client_id(self.run_id, tid)
        row = {
            "symbol": symbol,
            "side": side,
            "quantity": float(plan.quantity),
            "type": "market",
            "subaccount": self.subaccount,
            "decision_id": self.cycle,
            "reason": order.reason,
            "client_order_id": cid,
            "id": order.id,
        }
        with self.store.transaction(self.run_id, bar=self.cycle, timestamp=now) as tx:
            tx.add_orders([row])  # an order already there (a restart) is kept as it is
        got = self.venue.submit(order, cid, self.cycle)
        if self.on_sent is not None:
            self.on_sent(cid)
        return (
            _reason(
                "copied",
                f"{order.reason}: {side} {plan.quantity:.8g} (wanted {wanted:.8g}), order {cid} "
                f"{got.status}",
                leader_trade_id=tid,
                client_order_id=cid,
                quantity=float(plan.quantity),
                wanted=wanted,
                status=got.status,
                filled=float(got.filled_quantity),
                average_price=got.average_price,
            ),
            cid,
        )

    def _record(self, now: pd.Timestamp, reasons: list[dict[str, Any]]) -> None:
        state = {
            "feed": self.feed.state(),
            "pending": self.pending,
            "handled": sorted(self.handled),
            "leader_held": self.leader_held,
            "peak": self.peak,
            "stopped": self.stopped,
        }
        record = {
            "id": self.cycle,
            "timestamp": now.isoformat(),
            "policy": "copy",
            "action": "trade" if any(r["code"] == "copied" for r in reasons) else "hold",
            "reasons": reasons,
            "state": "stopped" if self.stopped else "following",
        }
        with self.store.transaction(self.run_id, bar=self.cycle, timestamp=now) as tx:
            tx.add_decisions([record], subaccount=self.subaccount)
            tx.save_state(_STATE, state)
            tx.set_checkpoint()


def _reason(code: str, message: str, **values: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "values": values}


def _book(snap: Any, symbol: str) -> tuple[float, float, float, float]:
    """Cash (free USDT), the symbol's holding, gross notional and equity (USDT) of a
    ``VenueSnapshot`` at its marks (None: an empty book)."""
    if snap is None:
        return 0.0, 0.0, 0.0, 0.0
    usdt = snap.spot.get("USDT")
    cash = float(usdt.free) if usdt is not None else 0.0
    total_cash = float(usdt.total) if usdt is not None else 0.0
    held = 0.0
    gross = 0.0
    for asset, bal in snap.spot.items():
        if asset == "USDT" or not bal.total:
            continue
        mark = snap.marks.get(f"{asset}USDT")
        if mark is not None:
            gross += abs(float(bal.total)) * float(mark)
        if f"{asset}USDT" == symbol:
            held = float(bal.free)
    return cash, held, gross, total_cash + gross
