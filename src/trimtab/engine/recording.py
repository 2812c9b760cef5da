"""A backtest recorded in the store, and resumed from it after a kill.

``RunRecorder(store, run_id, spec)`` is the ``Recorder`` that ``PortfolioBacktest.run``
(and ``Backtest.run``) call::

    recorder = RunRecorder(Store.open("sqlite:///runs/bt.db"), "demo-1", {"policy": ...})
    result = Backtest(context, policy, config, safety=safety).run(recorder=recorder)

At ``begin`` it starts the run in the store (the same ``spec`` and clock as before, else
``StoreError``: another command under the same run id), rewinds what a killed process
wrote after its checkpoint and, when there is a checkpoint, reads the run back: every
component's saved state and the record of each completed bar. The loop replays those and
continues at the next bar, so the results equal an uninterrupted run's; a finished run
is read back whole and nothing is recomputed.

What goes where (``bar`` counts the run's bars from 0, as the checkpoint does):

* decisions: each record, upserted by id; a record that a later bar's fill events change
  (``not_filled``, ``fill_guard``) is written again, at its own bar; the allocator's
  records as decisions of ``*allocator`` (numbered from 0 by allocation date);
* orders: every order the loop submits, with its deterministic client order id (run,
  subaccount, decision, leg), in the transaction of the bar that decided it; its status
  (``sent``, ``rejected``, ``partially_filled``, ``filled``, ``expired``, ``cancelled``)
  and filled quantity follow the broker's reports;
* fills: the trade rows (liquidations and delistings without an order);
* balances: per subaccount per bar, equity and cash (quote, USDT) and in ``positions``
  the held quantities and the bar's telemetry: capital flow, breaker state, exposure
  ceiling, target weights, rejection rows and ``carry`` (funding received and margin
  forfeited per symbol in the bar: the ledger's, so a run read back has its
  ``ledger.csv``); the account's total in the row of subaccount ``*account`` (a name no
  portfolio file allows), whose ``carry: true`` says the bar's rows hold that;
* transfers, breaker changes; component state: the rest (``PortfolioBacktest``'s
  ``state``).

Batches: bars are written ``commit_bars`` at a time, or every ``commit_seconds`` of wall
time, whichever comes first (and at the last bar), in one transaction that ends with
every component's state and the checkpoint. A kill loses at most the batch being
written, which the resumed run computes again exactly. Floats go in as
``Decimal(repr(x))`` and JSON ``repr`` and come back bit-exact.

An order reaches the store with its batch, after the simulated broker took it: the
broker is part of the run, so a kill loses the order and the broker's memory of it
together and the resumed run sends it again, as the uninterrupted one did. A live
runner, whose orders leave the process, writes each one before sending it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from trimtab.engine.backtest import PortfolioResult
from trimtab.engine.run_record import BarRecord, RunClock, SavedRun, SentOrder, SubaccountBar
from trimtab.journal.store import Store, StoreError, client_order_id

#: The balance row holding the account's total (not a valid subaccount name).
ACCOUNT_ROW = "*account"
#: Order statuses after which the broker reports nothing more about an order.
_FINAL = frozenset({"filled", "rejected", "expired", "cancelled"})


class RunRecorder:
    """Records a run in ``store`` under ``run_id`` and resumes it (module docstring).

    ``spec`` says what the run is (JSON-ready: the command's options, the files' digests);
    the run's clock (bars, first and last stamps, symbols, subaccounts) is added to it.
    ``announce`` gets one line when a run resumes, is finished already, or starts again
    without a checkpoint. After ``begin``: ``resumed_after`` is the number of bars read
    back (None: a new run), ``bars`` the run's length, ``finished_before`` whether the
    store had it finished.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        spec: Mapping[str, Any],
        *,
        kind: str = "backtest",
        commit_bars: int | None = None,
        commit_seconds: float = 0.5,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        if commit_bars is not None and commit_bars < 1:
            raise ValueError(f"commit_bars must be at least 1, got {commit_bars}")
        if not commit_seconds > 0:
            raise ValueError(f"commit_seconds must be > 0, got {commit_seconds}")
        self.store = store
        self.run_id = run_id
        self.spec = dict(spec)
        self.kind = kind
        self.commit_bars = commit_bars
        self.commit_seconds = float(commit_seconds)
        self.announce = announce
        self.resumed_after: int | None = None
        self.bars = 0
        self.finished_before = False
        self.commits = 0
        self._clock: RunClock | None = None
        self._batch: list[BarRecord] = []
        self._since = time.monotonic()
        # Orders the broker may still report on: order id -> client order id, and the
        # quantity filled so far (base units).
        self._open: dict[int, str] = {}
        self._filled: dict[int, float] = {}
        # This batch's orders (written with their latest status) and status changes of
        # orders written by earlier batches.
        self._orders: dict[str, dict[str, Any]] = {}
        self._updates: dict[str, tuple[str, float]] = {}
        self._fills: list[dict[str, Any]] = []
        # (subaccount, decision id) -> the bar it was decided at.
        self._decision_bar: dict[tuple[str, int], int] = {}

    # --- the Recorder protocol ---------------------------------------------------------
    def begin(self, clock: RunClock) -> SavedRun | None:
        self._clock = clock
        n = self.bars = len(clock.timestamps)
        before = self.store.run(self.run_id)
        self.finished_before = before is not None and before.status == "finished"
        self.store.start_run(self.run_id, self.kind, {**self.spec, "clock": clock.describe()})
        checkpoint = self.store.rewind(self.run_id)
        self._since = time.monotonic()
        name = repr(self.run_id)
        if checkpoint is None:
            if before is not None:
                self._say(f"run {name}: no bar was completed before; starting at bar 1 of {n}")
            return None
        k = checkpoint[0]
        if not 0 <= k < n:
            raise StoreError(f"run {name} in {self.store.url}: checkpoint at bar {k} of {n}")
        bars, ledger = self._read_bars(k)
        saved = SavedRun(k, self.store.load_states(self.run_id), bars, ledger=ledger)
        self.resumed_after = k + 1
        if k == n - 1:
            self._say(f"run {name} is finished ({n} of {n} bars): results read from the store")
        else:
            stamp = clock.timestamps[k].isoformat()
            self._say(f"run {name}: resuming after bar {k + 1} of {n} ({stamp}), from the store")
        return saved

    def record(self, bar: BarRecord, states: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._batch.append(bar)
        for sb in bar.subaccounts:
            self._track(bar, sb)
        last = bar.bar == self.bars - 1
        full = self.commit_bars is not None and len(self._batch) >= self.commit_bars
        if last or full or time.monotonic() - self._since >= self.commit_seconds:
            self._commit(states())

    def finish(self, result: PortfolioResult) -> None:
        if self._batch:  # a recorder given bars past the run's end
            raise StoreError(f"run {self.run_id!r}: {len(self._batch)} bars left uncommitted")
        summary = {
            "bars": self.bars,
            "end_equity": float(result.equity.iloc[-1]),
            "subaccounts": {n: float(r.equity.iloc[-1]) for n, r in result.subaccounts.items()},
        }
        self.store.finish_run(self.run_id, summary=summary)

    # --- writing -----------------------------------------------------------------------
    def _track(self, bar: BarRecord, sb: SubaccountBar) -> None:
        """Turn the bar's trades, order events and new orders into rows (in that order:
        a bar's fills are of orders sent before it)."""
        stamp = bar.timestamp
        for ts, symbol, side, quantity, price, fee, currency, reason, order_id in sb.trades:
            self._fills.append(
                {
                    "bar": bar.bar,
                    "timestamp": ts,
                    "subaccount": sb.name,
                    "client_order_id": None if order_id is None else self._open.get(order_id),
                    "symbol": symbol,
                    "side": side,
                    "quantity": quantity,
                    "price": price,
                    "fee": fee,
                    "fee_currency": currency,
                    "reason": reason,
                }
            )
        for order_id, status, quantity in sb.order_events:
            cid = self._open.get(order_id)
            if cid is None:
                continue
            filled = self._filled[order_id] = self._filled[order_id] + quantity
            row = self._orders.get(cid)
            if row is not None:
                row["status"], row["filled_quantity"] = status, filled
            else:
                self._updates[cid] = (status, filled)
            if status in _FINAL:
                del self._open[order_id], self._filled[order_id]
        for sent in sb.orders:
            cid = client_order_id(self.run_id, sb.name, sent.decision_id, sent.leg)
            self._orders[cid] = _order_row(sent, cid, sb.name, bar.bar, stamp)
            if sent.status not in _FINAL:
                self._open[sent.order_id] = cid
                self._filled[sent.order_id] = 0.0

    def _commit(self, states: dict[str, dict[str, Any]]) -> None:
        batch, last = self._batch, self._batch[-1]
        with self.store.transaction(self.run_id, bar=last.bar, timestamp=last.timestamp) as tx:
            # Records by (bar, subaccount); one changed later is written again at its bar.
            groups: dict[tuple[int, str], dict[int, dict[str, Any]]] = {}
            for bar in batch:
                for sb in bar.subaccounts:
                    for rec in sb.decisions:
                        self._decision_bar[(sb.name, rec["id"])] = bar.bar
                        groups.setdefault((bar.bar, sb.name), {})[rec["id"]] = rec
                # The allocator's (``*allocator``): numbered by the run, upserted by id.
                for name, records in bar.decisions.items():
                    for rec in records:
                        groups.setdefault((bar.bar, name), {})[rec["id"]] = rec
            for bar in batch:
                for sb in bar.subaccounts:
                    for rec in sb.touched:
                        at = self._decision_bar[(sb.name, rec["id"])]
                        groups.setdefault((at, sb.name), {})[rec["id"]] = rec
            for (at, name), records in sorted(groups.items()):
                tx.bar = at
                tx.add_decisions([records[i] for i in sorted(records)], subaccount=name)
            tx.bar = last.bar
            tx.add_orders(self._orders.values())
            for cid, (status, filled) in self._updates.items():
                tx.update_order_status(cid, status, filled_quantity=filled)
            tx.add_fills(self._fills)
            tx.add_balances(row for bar in batch for row in _balance_rows(bar))
            tx.add_transfers(
                {
                    "bar": bar.bar,
                    "timestamp": bar.timestamp,
                    "source": t["from"],
                    "target": t["to"],
                    "amount": t["moved"],
                    "status": t["status"],
                    "reason": t.get("reason"),
                    "guard": t,  # the whole record: read back as the loop made it
                }
                for bar in batch
                for t in bar.transfers
            )
            tx.add_breaker_changes(
                {**c.to_dict(), "bar": bar.bar}
                for bar in batch
                for c in [
                    *bar.account_changes,
                    *(c for sb in bar.subaccounts for c in sb.breaker_changes),
                ]
            )
            for component, state in states.items():
                tx.save_state(component, state)
            tx.set_checkpoint(last.bar, last.timestamp)
        self.commits += 1
        self._batch = []
        self._orders = {}
        self._updates = {}
        self._fills = []
        self._since = time.monotonic()

    # --- reading -----------------------------------------------------------------------
    def _read_bars(self, k: int) -> tuple[list[BarRecord], bool]:
        """The records of bars 0..k from the store's rows (money as exact floats), and
        whether every bar's rows hold its funding and liquidations (``carry``)."""
        clock = self._clock
        assert clock is not None
        run, store = self.run_id, self.store
        stamps = clock.timestamps
        like = stamps[0]
        names = clock.subaccounts
        at = {ts.isoformat(): j for j, ts in enumerate(stamps)}
        subs: list[dict[str, SubaccountBar]] = [{} for _ in range(k + 1)]
        totals: list[tuple[float, str | None] | None] = [None] * (k + 1)
        carried = [False] * (k + 1)
        for row in store.balances(run, floats=True):
            j, extra = int(row["bar"]), row["positions"] or {}
            if j > k:
                continue
            if row["subaccount"] == ACCOUNT_ROW:
                totals[j] = (row["equity"], extra.get("state"))
                carried[j] = bool(extra.get("carry"))
                continue
            subs[j][row["subaccount"]] = SubaccountBar(
                name=row["subaccount"],
                equity=row["equity"],
                cash=row["cash"],
                quantities=extra.get("quantities", {}),
                flow=extra.get("flow", 0.0),
                state=extra.get("state"),
                decided="ceiling" in extra,
                exposure_ceiling=extra.get("ceiling"),
                target=extra.get("target"),
                rejections=[
                    (_stamp(r[0], like), *r[1:4], r[4], r[5]) for r in extra.get("rejections", ())
                ],
                carry={s: [float(a), float(b)] for s, (a, b) in extra.get("carry", {}).items()},
            )
        for j in range(k + 1):
            gone = [n for n in names if n not in subs[j]]
            if totals[j] is None or gone:
                what = ", ".join(gone or [ACCOUNT_ROW])
                raise StoreError(f"run {run!r}: bar {j} has no balance row for {what}")
        order_ids: dict[str, int] = {}
        for row in store.orders(run, floats=True):
            j, cid = int(row["bar"]), row["client_order_id"]
            order_ids[cid] = int(row["order_id"])
            subs[j][row["subaccount"]].orders.append(
                SentOrder(
                    int(row["order_id"]), int(row["decision_id"]), int(row["leg"]), row["status"]
                )
            )
            if row["status"] not in _FINAL:
                self._open[int(row["order_id"])] = cid
                self._filled[int(row["order_id"])] = row["filled_quantity"] or 0.0
        for row in store.fills(run, floats=True):
            cid = row["client_order_id"]
            subs[int(row["bar"])][row["subaccount"]].trades.append(
                (
                    _stamp(row["timestamp"], like),
                    row["symbol"],
                    row["side"],
                    row["quantity"],
                    row["price"],
                    row["fee"],
                    row["fee_currency"],
                    row["reason"],
                    None if cid is None else order_ids[cid],
                )
            )
        for name in names:
            for rec in store.decisions(run, subaccount=name):
                j = at[rec["timestamp"]]
                self._decision_bar[(name, rec["id"])] = j
                subs[j][name].decisions.append(rec)
        transfers: list[list[dict[str, Any]]] = [[] for _ in range(k + 1)]
        for row in store.transfers(run, floats=True):
            transfers[int(row["bar"])].append(row["guard"])
        out = []
        for j in range(k + 1):
            total = totals[j]
            assert total is not None
            out.append(
                BarRecord(
                    bar=j,
                    timestamp=stamps[j],
                    total_equity=total[0],
                    account_state=total[1],
                    transfers=transfers[j],
                    subaccounts=[subs[j][n] for n in names],
                )
            )
        return out, all(carried)

    def _say(self, message: str) -> None:
        if self.announce is not None:
            self.announce(message)


def _order_row(sent: SentOrder, cid: str, subaccount: str, bar: int, ts: pd.Timestamp) -> dict:
    order = sent.order
    assert order is not None
    return {
        "client_order_id": cid,
        "order_id": sent.order_id,
        "subaccount": subaccount,
        "decision_id": sent.decision_id,
        "leg": sent.leg,
        "bar": bar,
        "timestamp": ts,
        "status": sent.status,
        "filled_quantity": 0.0 if sent.status == "sent" else None,
        "symbol": order.symbol,
        "side": str(order.side),
        "type": str(order.type),
        "quantity": order.quantity,
        "quote_quantity": order.quote_quantity,
        "limit_price": order.limit_price,
        "time_in_force": str(order.time_in_force),
        "expires_at": order.expires_at,
        "reduce_only": order.reduce_only,
        "leverage": float(order.leverage),
        "reason": order.reason,
    }


def _balance_rows(bar: BarRecord) -> list[dict[str, Any]]:
    rows = []
    cash = 0.0
    for sb in bar.subaccounts:
        cash += sb.cash
        extra: dict[str, Any] = {"quantities": sb.quantities}
        if sb.flow:
            extra["flow"] = sb.flow
        if sb.state is not None:
            extra["state"] = sb.state
        if sb.decided:
            extra["ceiling"] = sb.exposure_ceiling
        if sb.target is not None:
            extra["target"] = sb.target
        if sb.rejections:
            extra["rejections"] = [[r[0].isoformat(), *r[1:]] for r in sb.rejections]
        if sb.carry:
            extra["carry"] = sb.carry
        rows.append(
            {
                "subaccount": sb.name,
                "bar": bar.bar,
                "timestamp": bar.timestamp,
                "equity": sb.equity,
                "cash": sb.cash,
                "positions": extra,
            }
        )
    # The bar's rows hold its funding and liquidations (``carry``): a store written
    # before they did reads back without a ledger.
    total: dict[str, Any] = {"carry": True}
    if bar.account_state is not None:
        total["state"] = bar.account_state
    rows.append(
        {
            "subaccount": ACCOUNT_ROW,
            "bar": bar.bar,
            "timestamp": bar.timestamp,
            "equity": bar.total_equity,
            "cash": cash,
            "positions": total,
        }
    )
    return rows


def _stamp(value: Any, like: pd.Timestamp) -> pd.Timestamp:
    """``value`` (ISO text or a timestamp) in the zone and unit of the run's stamps."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return ts.tz_convert(like.tzinfo).as_unit(like.unit)
