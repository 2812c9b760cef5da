"""The runner: the pipeline step of each subaccount on a wall (or replayed) clock, with
an exchange outside the process, modes, proposals and human commands.

At the close of every bar ``i`` (a *cycle*), in order:

1. the exchange runs bar ``i`` (``exchange.advance(i)``: orders sent after the close of
   ``i - 1`` fill at its open) and the runner takes the exchange's events since the last
   it saw (fills, funding, liquidations, order status) into its own ledger;
2. human commands waiting in the store are applied (pause, resume, close, limits, mode,
   approve, reject), each recorded with its outcome;
3. proposals whose time is up expire (they send nothing);
4. every subaccount is marked at the close (equity, peak; the breakers read them);
5. each subaccount's ``PipelineStep`` decides. By mode: ``monitor`` records the decision
   and sends nothing; ``approve`` turns its orders into a proposal (legs, the prices they
   were planned at, a price band, an expiry at the next decision); ``auto`` sends the
   orders that fit the envelope (per-order notional, daily turnover) and proposes the rest;
   Before the decisions, a transfer source (the portfolio's allocator) is asked, as a
   backtest asks it, with each subaccount's equity and transfers at the run's earlier
   closes: its allocation is recorded (a decision of ``*allocator``). Each transfer it
   asks for between two subaccounts in ``auto`` mode is checked by the transfer guard
   and booked at once (the subaccounts decide on their new capital; peaks and breakers
   move with it), written as ``new`` with a transfer id made of the run, bar and leg, and
   made on the exchange after the commit (``done``, or ``refused`` and taken back). With
   a subaccount in ``approve`` mode it becomes a *transfer proposal* (no legs; its row
   ``proposed``, under the transfer id it will be made with), which expires at the next
   close; a person's approval marks it ``approved``, and the next close checks it with
   the transfer guard of that moment and books and makes it as above (the proposal
   ``made``, or ``refused``). In ``monitor`` mode, or on an exchange that cannot move
   capital (a real venue without the master account's key), it is written as
   ``not_made`` with why;
6. one store transaction writes the cycle (decisions, orders as ``new`` with their
   deterministic client order ids, proposals, fills, balances, commands' outcomes, every
   component's state and the checkpoint); only then are the orders sent, each by its
   client order id, and marked ``sent`` (or ``rejected``).

Between bars the runner *ticks*: it applies commands (an approval is sent within one
tick), cancels orders past their timeout and writes a heartbeat.

After a kill: ``start`` rewinds what was written after the checkpoint (orders stay: they
may have left), restores every component, and asks the exchange about every order still
``new``: one the exchange has is marked from its answer, one it never got is sent now (it
was written in the last committed cycle, before the exchange moved on). Nothing is sent
twice: the exchange refuses a client order id it knows. A transfer still ``new`` is made
again by its id, which the exchange answers as it did the first time (its event is not
booked again: the ledger booked it when it was decided). A paused subaccount and a
subaccount in ``monitor`` never send. Money is USDT, quantities base units, times UTC.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError
from trimtab.data.panel import bars_per_year
from trimtab.domain import Account, Fill, Instrument, Order
from trimtab.domain.decisions import Observation, PortfolioState, json_ready
from trimtab.domain.orders import Liquidity, OrderType, Side, TimeInForce
from trimtab.domain.transfers import TransferRequest
from trimtab.engine.backtest import _ledger_view
from trimtab.engine.context import MarketContext
from trimtab.engine.cycle import CycleObserver, CycleReport, SubaccountCycle
from trimtab.engine.reconcile import (
    ACTIVE,
    HALTED,
    Reconciliation,
    Tolerance,
    book_event,
    book_in_order,
    compare,
    project,
)
from trimtab.engine.step import PipelineStep
from trimtab.execution.ccxt_venue import VenueUnavailable
from trimtab.execution.market import MarketArrays
from trimtab.execution.paper import ExchangeEvent, ExchangeOrder, PaperExchange
from trimtab.guard.breakers import CircuitBreaker, StateChange
from trimtab.guard.transfers import TransferGuard
from trimtab.journal.store import Store, StoreError, client_order_id

log = logging.getLogger(__name__)

MODES = ("monitor", "approve", "auto")
#: The exchange's order statuses as the store writes them.
_STATUS = {
    "open": "sent",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "cancelled": "cancelled",
    "expired": "expired",
    "rejected": "rejected",
}
_OPEN_PROPOSALS = ("pending", "approved")


@dataclass(frozen=True)
class Envelope:
    """What ``auto`` may send without asking: per order and per UTC day (USDT of
    notional; None: no cap). An order beyond either becomes a proposal."""

    max_order_notional: float | None = None
    max_daily_turnover: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_order_notional", "max_daily_turnover"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"envelope.{name} must be a number > 0 (USDT), got {v!r}")

    def to_dict(self) -> dict[str, float | None]:
        return {
            "max_order_notional": self.max_order_notional,
            "max_daily_turnover": self.max_daily_turnover,
        }


@dataclass
class LiveSubaccount:
    """One subaccount of the runner: its step (policy and guard), starting cash (USDT),
    mode and envelope, and what the runner remembers of it between cycles."""

    name: str
    step: PipelineStep
    capital: float
    mode: str = "monitor"
    envelope: Envelope | None = None
    paused: bool = False
    peak: float = float("nan")
    next_decision: int = 0
    sent_day: str | None = None
    sent_today: float = 0.0
    last_state: str = ""

    def __post_init__(self) -> None:
        self.last_state = str(self.step.safety.trading_state)
        if self.mode not in MODES:
            raise ValueError(f"subaccount {self.name}: mode must be one of {', '.join(MODES)}")
        if self.mode == "auto" and self.envelope is None:
            raise ValueError(
                f"subaccount {self.name}: auto mode needs an envelope "
                "(max_order_notional, max_daily_turnover)"
            )

    def state(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "paused": self.paused,
            "peak": self.peak,
            "next_decision": self.next_decision,
            "sent_day": self.sent_day,
            "sent_today": self.sent_today,
            "last_state": self.last_state,
            "step": self.step.state(),
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        self.mode = str(saved["mode"])
        self.paused = bool(saved["paused"])
        self.peak = float(saved["peak"])
        self.next_decision = int(saved["next_decision"])
        self.sent_day = saved["sent_day"]
        self.sent_today = float(saved["sent_today"])
        self.last_state = str(saved["last_state"])
        self.step.restore(saved["step"])

    def sent_room(self, day: str) -> float:
        """USDT the envelope still allows today."""
        if self.envelope is None or self.envelope.max_daily_turnover is None:
            return math.inf
        used = self.sent_today if self.sent_day == day else 0.0
        return self.envelope.max_daily_turnover - used

    def count_sent(self, day: str, notional: float) -> None:
        if self.sent_day != day:
            self.sent_day, self.sent_today = day, 0.0
        self.sent_today += abs(notional)


#: The name the allocator's decisions are recorded under (no subaccount is named so).
ALLOCATOR = "*allocator"


class TransferSource(Protocol):
    """What asks for capital to move between subaccounts at a bar's close (the
    portfolio's ``Allocator``): ``requests`` as a backtest calls it (``history``: each
    subaccount's equity at the run's earlier closes and the transfers booked at them,
    USDT), and ``records``, its allocation records so far (one per allocation date)."""

    records: list[dict[str, Any]]

    def requests(
        self,
        ts: pd.Timestamp,
        previous: pd.Timestamp | None,
        equity: Mapping[str, float],
        history: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> Sequence[TransferRequest]: ...


class Clock(Protocol):
    """When a bar may be processed. ``wait(i, tick)`` blocks until bar ``i`` has closed
    (plus a grace delay), calling ``tick()`` at intervals; it returns False when the
    runner should stop instead."""

    tick_seconds: float

    def wait(self, i: int, tick: Callable[[], None], stop: threading.Event) -> bool: ...


class ReplayClock:
    """Historical bars one after another. ``speed``: how many times faster than the wall
    clock (a daily bar at speed 86,400 takes one second); None or 0: no waiting."""

    def __init__(
        self, index: pd.DatetimeIndex, speed: float | None = None, tick_seconds: float = 1.0
    ) -> None:
        if speed is not None and not (math.isfinite(speed) and speed >= 0):
            raise ValueError(f"--speed must be a number >= 0, got {speed!r}")
        # Whatever the index's unit (ns or us), in seconds.
        steps = pd.Series(index[1:] - index[:-1])
        self.bar_seconds = float(steps.median().total_seconds()) if len(steps) else 0.0
        self.speed = speed or None
        self.tick_seconds = tick_seconds

    def wait(self, i: int, tick: Callable[[], None], stop: threading.Event) -> bool:
        if self.speed is not None:
            until = time.monotonic() + self.bar_seconds / self.speed
            while not stop.is_set():
                left = until - time.monotonic()
                if left <= 0:
                    break
                stop.wait(min(left, self.tick_seconds))
                tick()
        else:
            tick()
        return not stop.is_set()


class WallClock:
    """The wall clock: bar ``i`` (stamped with its open time, ``first_open`` plus ``i``
    bars) closes one bar later; it is processed ``grace_seconds`` after that, when the
    exchange has published it. ``now`` and ``sleep`` default to the real clock (tests
    pass a virtual one)."""

    def __init__(
        self,
        bar_seconds: float,
        first_open: pd.Timestamp,
        *,
        grace_seconds: float = 30.0,
        tick_seconds: float = 5.0,
        now: Callable[[], pd.Timestamp] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not bar_seconds > 0:
            raise ValueError(f"a bar must last > 0 seconds, got {bar_seconds}")
        self.bar_seconds = float(bar_seconds)
        self.first_open = pd.Timestamp(first_open)
        self.grace_seconds = grace_seconds
        self.tick_seconds = tick_seconds
        self.now = now or (lambda: pd.Timestamp.now(tz="UTC"))
        self.sleep = sleep

    def open_time(self, i: int) -> pd.Timestamp:
        return self.first_open + pd.Timedelta(seconds=self.bar_seconds * i)

    def due(self, i: int) -> pd.Timestamp:
        """When bar ``i`` is processed: its close plus the grace delay."""
        return self.open_time(i) + pd.Timedelta(seconds=self.bar_seconds + self.grace_seconds)

    def pause(self, seconds: float, stop: threading.Event) -> None:
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            stop.wait(seconds)

    def wait(self, i: int, tick: Callable[[], None], stop: threading.Event) -> bool:
        due = self.due(i)
        while not stop.is_set():
            left = (due - self.now()).total_seconds()
            if left <= 0:
                return True
            self.pause(min(left, self.tick_seconds), stop)
            tick()
        return False


@dataclass
class _Outgoing:
    """An order written to the store this cycle or tick, to send after the commit."""

    order: Order
    client_order_id: str
    bar: int
    subaccount: str
    leg: int


#: A transfer to make on the exchange after the commit: (transfer id, source, target,
#: USDT, the proposal it was approved in or None).
_Send = tuple[str, str, str, float, int | None]


@dataclass
class _Pending:
    """What a cycle or tick writes in its transaction."""

    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    orders: list[_Outgoing] = field(default_factory=list)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    proposal_updates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    commands: list[tuple[int, str, str]] = field(default_factory=list)
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    breaker_changes: list[StateChange] = field(default_factory=list)
    fills: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, ExchangeOrder] = field(default_factory=dict)
    cancels: list[str] = field(default_factory=list)
    rejected: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    # Transfers booked in this cycle, sent after the commit: (transfer id, source,
    # target, USDT, the proposal a person approved it in or None); and each
    # subaccount's capital moved at this close (USDT, signed).
    transfer_sends: list[_Send] = field(default_factory=list)
    flows: dict[str, float] = field(default_factory=dict)
    # Transfer rows written earlier that change: (transfer id, new status, the
    # statuses it may be in, Transaction.update_transfer's keywords).
    transfer_updates: list[tuple[str, str, tuple[str, ...], dict[str, Any]]] = field(
        default_factory=list
    )


class LiveRunner:
    """The runner over ``context`` (the market up to now: replayed, or rebuilt as live
    bars arrive) with ``exchange`` outside and ``store`` for everything it must not lose.

    ``send_delay``: bars between the last closed bar and the one an order sent outside a
    cycle can fill in (0 for a replay, whose ticks stand for the moment after the close;
    1 on the wall clock, where a tick comes during the next bar).
    """

    def __init__(
        self,
        run_id: str,
        store: Store,
        exchange: PaperExchange,
        context: MarketContext,
        subaccounts: Sequence[LiveSubaccount],
        *,
        spec: Mapping[str, Any],
        account_breaker: CircuitBreaker | None = None,
        observers: Sequence[CycleObserver] = (),
        band: float = 0.02,
        send_delay: int = 0,
        kind: str = "paper",
        tolerance: Tolerance | None = None,
        transfers: TransferSource | None = None,
        transfer_guard: TransferGuard | None = None,
    ) -> None:
        if not subaccounts:
            raise ValueError("the runner needs at least one subaccount")
        if not (0 < band < 1):
            raise ValueError(f"the proposals' price band must be a fraction in (0, 1): {band!r}")
        self.run_id, self.store, self.exchange = run_id, store, exchange
        self.context = context
        self.m = context.market
        self.subs = {s.name: s for s in subaccounts}
        self.spec = {**spec, "subaccounts": list(self.subs)}
        self.account_breaker = account_breaker
        self.observers = list(observers)
        self.band = band
        self.send_delay = send_delay
        self.kind = kind
        self.account = Account()
        for s in subaccounts:
            self.account.add_subaccount(s.name, s.capital)
            s.peak = s.capital
            if account_breaker is not None and s.step.safety.has_breakers:
                s.step.safety.share_account_breaker(account_breaker)
        self.n_sym = len(self.m.symbols)
        self.fields = _fields(self.m)
        self.event_seq = 0
        self.total_peak = float(sum(s.capital for s in subaccounts))
        self.day_start_total: tuple[str | None, float] = (None, self.total_peak)
        self.last_total = float("nan")  # the account's equity at the last close (USDT)
        self.last_bar: int | None = None
        # Client order ids of orders a person sent (approved legs, closes), still open.
        self.human_orders: set[str] = set()
        self.stop = threading.Event()
        self.beat_seconds = 10.0
        # The bar a live run waits for past its due time, and why (None: data in hand).
        self.data_late: dict[str, str] | None = None
        # The reconciliation gate: HALTED until the books agree with the exchange's.
        self.tolerance = tolerance or Tolerance()
        self.gate_state = HALTED
        self.gate: Reconciliation | None = None
        # Fills of orders the runner did not send, held unbooked until adopted (event
        # data with seq, subaccount, client order id); adopted: their order keys.
        self.held_fills: list[dict[str, Any]] = []
        self.adopted: set[str] = set()
        self.known_cids: set[str] = set()
        # The allocator (None: no transfer source); its decisions are numbered from 0,
        # and it reads each subaccount's equity at the run's closes (USDT, bar order).
        self.transfers = transfers
        self.transfer_guard = transfer_guard
        self.next_allocation = 0
        self.equity_history: dict[str, list[float]] = {s.name: [] for s in subaccounts}
        self.flow_history: dict[str, list[float]] = {s.name: [] for s in subaccounts}
        # Ids of the transfers this run booked itself: their exchange events are not
        # booked a second time.
        self.own_transfers: set[str] = set()
        self._started = False

    # --- start and resume -----------------------------------------------------------------
    def start(self) -> int:
        """Open the run in the store (or take it up after a stop or a kill): returns the
        next bar to run. A run another live process is running (its heartbeat fresh and,
        on this machine, its process alive) is a StoreError: two runners would both write
        it."""
        self.store.start_run(self.run_id, self.kind, self.spec)
        self._refuse_a_second_runner()
        cp = self.store.rewind(self.run_id, keep_orders=True)
        periods = bars_per_year(self.m.index)
        for s in self.subs.values():
            s.step.reset(self.m.symbols, periods)
        if cp is not None:
            saved = self.store.load_state(self.run_id, "runner")
            if saved is None:
                raise StoreError(f"run {self.run_id!r}: a checkpoint without the runner's state")
            self._restore(saved)
        self.known_cids = {o["client_order_id"] for o in self.store.orders(self.run_id)}
        self.own_transfers = self._transfer_ids()
        self._resolve_unsent()
        self._resolve_unsent_transfers()
        self.reconcile()
        self._started = True
        nxt = self.context.start_i if self.last_bar is None else self.last_bar + 1
        # Commands given while the runner was down: applied now, before the next bar.
        if self.last_bar is not None:
            self.tick()
        return nxt

    def inspect(self) -> Reconciliation:
        """Compare the books with the exchange without running: the saved state read
        back (nothing rewound, sent or written; observers not called). For ``trimtab
        reconcile`` while no runner runs."""
        if self.store.run(self.run_id) is None:
            raise StoreError(f"no run {self.run_id!r} in the store: nothing to reconcile yet")
        saved = self.store.load_state(self.run_id, "runner")
        if saved is not None:
            self._restore(saved)
        self.known_cids = {o["client_order_id"] for o in self.store.orders(self.run_id)}
        # A transfer made after the last commit has its exchange event still to book: it
        # is the run's own, booked when decided, not money moved from outside.
        self.own_transfers = self._transfer_ids()
        observers, self.observers = self.observers, []
        try:
            return self.reconcile()
        finally:
            self.observers = observers

    def _refuse_a_second_runner(self) -> None:
        beat = self.store.heartbeat(self.run_id)
        if not beat or beat.get("status") != "running" or beat.get("pid") == os.getpid():
            return
        at = beat.get("at")
        age = (pd.Timestamp.now(tz="UTC") - pd.Timestamp(at)).total_seconds() if at else 1e9
        window = 3 * float(beat.get("tick_seconds") or 10.0)
        pid = beat.get("pid")
        if beat.get("host") == socket.gethostname() and isinstance(pid, int):
            alive = _process_alive(pid)  # a killed runner leaves "running" behind
        else:
            alive = age < window
        if alive:
            raise StoreError(
                f"run {self.run_id!r} is already running (pid {pid} on "
                f"{beat.get('host', 'another machine')}, heartbeat {age:.0f} s ago): stop it "
                "first (Ctrl-C or SIGTERM), or give this one another --run-id"
            )

    def _restore(self, saved: Mapping[str, Any]) -> None:
        self.account.restore(saved["ledger"])
        for name, s in self.subs.items():
            s.restore(saved["subaccounts"][name])
        if self.account_breaker is not None:
            self.account_breaker.restore(saved["account_breaker"])
        self.event_seq = int(saved["event_seq"])
        self.total_peak = float(saved["total_peak"])
        self.day_start_total = (saved["day_start"][0], float(saved["day_start"][1]))
        self.last_total = float(saved.get("last_total", float("nan")))
        self.last_bar = int(saved["bar"])
        self.human_orders = set(saved["human_orders"])
        self.held_fills = [dict(h) for h in saved.get("held_fills", [])]
        self.adopted = set(saved.get("adopted", []))
        self.next_allocation = int(saved.get("next_allocation", 0))
        self._reload_history()

    def _state(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ledger": self.account.state(),
            "subaccounts": {n: s.state() for n, s in self.subs.items()},
            "event_seq": self.event_seq,
            "total_peak": self.total_peak,
            "day_start": list(self.day_start_total),
            "last_total": self.last_total,
            "bar": self.last_bar,
            "human_orders": sorted(self.human_orders),
            "held_fills": self.held_fills,
            "adopted": sorted(self.adopted),
            "next_allocation": self.next_allocation,
        }
        if self.account_breaker is not None:
            out["account_breaker"] = self.account_breaker.saved_state()
        return out

    def _reload_history(self) -> None:
        """Each subaccount's equity at the closes run so far, read back from the balances
        the cycles wrote (exact: the store keeps floats as decimals of their repr)."""
        self.equity_history = {name: [] for name in self.subs}
        self.flow_history = {name: [] for name in self.subs}
        if self.transfers is None or self.last_bar is None:
            return
        moved: dict[tuple[int, str], float] = {}
        for row in self.store.transfers(self.run_id, floats=True):
            amount = _booked_amount(row)
            if amount and row["bar"] is not None:
                for name, sign in ((row["source"], -1.0), (row["target"], 1.0)):
                    key = (int(row["bar"]), name)
                    moved[key] = moved.get(key, 0.0) + sign * amount
        for row in self.store.balances(self.run_id, floats=True):
            bar, name = row["bar"], row["subaccount"]
            if name in self.equity_history and bar is not None and bar <= self.last_bar:
                self.equity_history[name].append(float(row["equity"]))
                self.flow_history[name].append(moved.get((int(bar), name), 0.0))

    def _transfer_ids(self) -> set[str]:
        return {
            str(row["guard"]["transfer_id"])
            for row in self.store.transfers(self.run_id)
            if isinstance(row.get("guard"), Mapping) and row["guard"].get("transfer_id")
        }

    def _resolve_unsent_transfers(self) -> None:
        """Transfers booked and written but not known to be made: made now, once (the
        exchange answers a known transfer id with its first answer)."""
        for row in self.store.transfers(self.run_id, floats=True):
            if row["status"] == "new" and isinstance(row.get("guard"), Mapping):
                tid = str(row["guard"]["transfer_id"])
                pid = row["guard"].get("proposal_id")
                send = (
                    tid,
                    row["source"],
                    row["target"],
                    float(row["amount"]),
                    None if pid is None else int(pid),
                )
                log.info("transfer %s written before a stop: made now", tid)
                self._make_transfer(send)

    def _resolve_unsent(self) -> None:
        """Orders written but not known to be sent: ask the exchange, never send twice."""
        waiting = [o for o in self.store.orders(self.run_id, floats=True) if o["status"] == "new"]
        if not waiting:
            return
        last = self.exchange.last_bar
        for row in waiting:
            cid = row["client_order_id"]
            known = self.exchange.order(cid)
            if known is None:
                bar = int(row["bar"]) if row["bar"] is not None else -1
                send_bar = bar + self._delay_of(row)
                if last is not None and last > send_bar:
                    with self.store.transaction(self.run_id) as tx:
                        tx.update_order_status(cid, "expired")
                    log.warning("order %s was never sent and its bar has passed: expired", cid)
                    continue
                known = self.exchange.submit(_order_from_row(row), cid, send_bar)
                log.info("order %s written before a stop and not sent: sent now", cid)
            with self.store.transaction(self.run_id) as tx:
                tx.update_order_status(
                    cid,
                    _STATUS[known.status],
                    filled_quantity=known.filled_quantity,
                    exchange_order_id=known.exchange_order_id,
                )

    # --- the reconciliation gate ---------------------------------------------------------
    def reconcile(self, *, poll: bool = True) -> Reconciliation:
        """Compare the books with the exchange (see ``trimtab.engine.reconcile``): the
        exchange's unbooked events counted in, then balances, positions, open orders and
        orders the runner did not send. Sets the gate (ACTIVE or HALTED), tells the
        observers when it changes, and returns the comparison. Writes nothing to the
        ledger: the next cycle books the pending events. ``poll``: first have the
        exchange look again at the last bar run (a real venue reads the trades made since
        it last looked; the paper exchange has nothing new)."""
        if poll and self.last_bar is not None:
            self.exchange.advance(self.last_bar)
        pending = self.exchange.events_since(self.event_seq)
        internal = [
            ev for ev in pending if not self._is_external(ev) and not self._own_transfer(ev)
        ]
        projected, _, fills, _ = project(self.account, internal, self.exchange.instrument)
        subs = list(self.subs)
        store_orders = {
            o["client_order_id"]: o
            for o in self.store.orders(self.run_id)
            if o["status"] in ("sent", "partially_filled")
        }
        rec = compare(
            projected,
            self.exchange.balances(),
            store_orders=store_orders,
            theirs_open={name: self.exchange.open_orders(name) for name in subs},
            exchange_order=self.exchange.order,
            external=self._external_orders(subs),
            instrument=self.exchange.instrument,
            tolerance=self.tolerance,
        )
        rec.pending_events = len(pending)
        rec.pending_fills = fills
        held = list(self.held_fills) + [
            self._held_row(ev) for ev in pending if self._is_external(ev)
        ]
        rec.held_fills = held
        first = self.gate is None
        changed = rec.state != self.gate_state
        self.gate, self.gate_state = rec, rec.state
        if changed or not rec.ok:
            log_at = log.info if rec.ok else log.warning
            log_at("reconciliation: %s", rec.summary())
        # Observers hear of a halt, and of the gate opening after one; not of every start.
        if (first and not rec.ok) or (not first and changed):
            for observer in self.observers:
                try:
                    observer.on_gate(self.run_id, rec, self.store)
                except Exception:
                    log.exception("observer %r failed on the gate", observer)
        return rec

    def _external_orders(self, subs: Sequence[str]) -> dict[str, list[ExchangeOrder]]:
        """Open orders the venue itself reports as not ours (the paper exchange lists
        every order in ``open_orders``; ``compare`` sorts those by the store)."""
        lister = getattr(self.exchange, "external_orders", None)
        if lister is None:
            return {}
        return {name: list(lister(name)) for name in subs}

    def _is_external(self, ev: ExchangeEvent) -> bool:
        """A fill of an order the runner did not send and nobody adopted."""
        if ev.kind != "fill":
            return False
        key = _order_key(ev)
        if key is not None and key in self.adopted:
            return False
        if ev.data.get("external"):
            return True
        cid = ev.client_order_id
        return cid is not None and cid not in self.known_cids

    @staticmethod
    def _held_row(ev: ExchangeEvent) -> dict[str, Any]:
        return {
            "seq": ev.seq,
            "kind": ev.kind,
            "bar": ev.bar,
            "timestamp": ev.timestamp.isoformat(),
            "subaccount": ev.subaccount,
            "client_order_id": ev.client_order_id,
            "data": dict(ev.data),
        }

    def _our_open(self, name: str) -> list[str]:
        """Client order ids of ``name``'s open orders that are the runner's (sent or
        adopted): an order nobody adopted is never cancelled by the runner."""
        return [
            o.client_order_id
            for o in self.exchange.open_orders(name)
            if o.client_order_id in self.known_cids or o.client_order_id in self.adopted
        ]

    @property
    def halted(self) -> bool:
        return self.gate_state != ACTIVE

    def _delay_of(self, row: Mapping[str, Any]) -> int:
        reason = str(row.get("reason") or "")
        return self.send_delay if reason.startswith(("approved", "close")) else 0

    # --- the loop ---------------------------------------------------------------------
    def run(self, clock: Clock, *, until: int | None = None) -> int | None:
        """Cycle bar after bar until the context's last bar (or ``until``), or until
        ``stop`` is set; returns the last bar completed."""
        if not self._started:
            nxt = self.start()
        else:
            nxt = self.context.start_i if self.last_bar is None else self.last_bar + 1
        end = self.context.end_i if until is None else min(until, self.context.end_i)
        # The heartbeat says how often to expect it; a cycle with a review can take a
        # few seconds, so never less than 10 s.
        self.beat_seconds = max(float(clock.tick_seconds), 10.0)
        i = nxt
        self.heartbeat("running", i)
        while i <= end and not self.stop.is_set():
            if not clock.wait(i, self.tick, self.stop):
                break
            self.cycle(i)
            i += 1
        self.heartbeat("stopped", i)
        return self.last_bar

    def run_live(
        self,
        clock: WallClock,
        refresh: Callable[[], MarketContext | None],
        funding: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> int | None:
        """On the wall clock until ``stop``: wait for the next bar's close (plus grace),
        take the bars that closed since (``refresh``: the market rebuilt from the data,
        or None when nothing new), and run the cycle. A fresh run decides first at the
        newest closed bar. A bar the exchange has not published yet, or data that cannot
        be fetched (the exchange unreachable), is asked for again each tick: the data is
        stale meanwhile, and the heartbeat says since when and why (``data_late``), so
        ``trimtab status`` shows it; nothing is decided on old bars. ``funding``: the
        perpetuals' funding rates after a refresh (a carry's, downloaded with the bars),
        which the paper exchange books from then on."""
        if not self._started:
            self.start()
        self.beat_seconds = max(float(clock.tick_seconds), 10.0)
        self.heartbeat("running")
        while not self.stop.is_set():
            i = self.context.end_i if self.last_bar is None else self.last_bar + 1
            if not clock.wait(i, self.tick, self.stop):
                break
            problem = None
            try:
                fresh = refresh()
            except (DataError, OSError) as exc:
                fresh, problem = None, str(exc)
            if fresh is not None:
                self.extend(fresh, funding=funding() if funding is not None else None)
            if i > self.context.end_i:
                why = problem or "the exchange has not published it yet"
                if self.data_late is None or self.data_late.get("reason") != why:
                    log.warning("bar %s not in hand (%s); asking again", clock.open_time(i), why)
                self.data_late = {
                    "bar": clock.open_time(i).isoformat(),
                    "due": clock.due(i).isoformat(),
                    "reason": why,
                }
                clock.pause(clock.tick_seconds, self.stop)
                self.tick()
                continue
            self.data_late = None
            before = self.last_bar
            try:
                self.cycle(i)
            except VenueUnavailable as exc:
                if self.last_bar != before:
                    raise  # the cycle was committed: a restart resolves what it sent
                # The exchange did not answer before anything was booked or decided:
                # as a late bar, asked again each tick.
                log.warning("bar %s: the exchange is unreachable (%s); asking again", i, exc)
                self.data_late = {
                    "bar": clock.open_time(i).isoformat(),
                    "due": clock.due(i).isoformat(),
                    "reason": f"the exchange is unreachable: {exc}",
                }
                clock.pause(clock.tick_seconds, self.stop)
                self.tick()
        self.heartbeat("stopped")
        return self.last_bar

    def extend(self, context: MarketContext, *, funding: Mapping[str, Any] | None = None) -> None:
        """Take up a longer market: live bars that closed since. The bars and symbols
        the runner has must come first, unchanged. ``funding``: the perpetuals' rates as
        now known (None: the paper exchange keeps its own)."""
        old, new = self.m, context.market
        n = len(old.timestamps)
        if new.symbols != old.symbols or tuple(new.timestamps[:n]) != tuple(old.timestamps):
            raise ValueError(
                "the live market must extend the runner's: the same symbols and, first, the "
                f"same {n} bars (from {old.timestamps[0]})"
            )
        if len(new.timestamps) == n:
            return
        self.context, self.m = context, new
        self.fields = _fields(new)
        if isinstance(self.exchange, PaperExchange):  # a real venue has its own market
            self.exchange.extend_market(new, funding=funding)

    def heartbeat(self, status: str, next_bar: int | None = None) -> None:
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "status": status,
            "tick_seconds": self.beat_seconds,
        }
        if self.data_late is not None:
            info["data_late"] = self.data_late
        info["gate"] = self.gate_state
        if next_bar is not None and 0 <= next_bar < len(self.m.timestamps):
            info["next_bar"] = self.m.timestamps[next_bar].isoformat()
        try:
            self.store.save_heartbeat(self.run_id, info)
        except StoreError as exc:  # a heartbeat is advice; the cycle's writes are not
            log.warning("heartbeat not written: %s", exc)

    # --- one cycle ----------------------------------------------------------------------
    def cycle(self, i: int) -> CycleReport:
        """Run bar ``i``'s close (see the module docstring); returns what it saw and did."""
        if self.last_bar is not None and i != self.last_bar + 1:
            raise ValueError(f"bar {i} after bar {self.last_bar}: bars run in order")
        m = self.m
        ts = m.timestamps[i]
        work = _Pending()
        self.exchange.advance(i)
        held_before = len(self.held_fills)
        self._take_events(work)
        if self.halted or len(self.held_fills) != held_before:
            # A fill nobody here sent makes the books differ: compare them again.
            self.reconcile(poll=False)
        previous_states = {n: s.last_state for n, s in self.subs.items()}
        self._apply_commands(i, ts, work)
        self._expire_proposals(ts, work)
        equities: dict[str, float] = {}
        held: dict[str, np.ndarray] = {}
        for name, s in self.subs.items():
            held[name], eq = self._marked(name, i)
            equities[name] = eq
            s.peak = max(s.peak, eq) if math.isfinite(s.peak) else eq
        total = float(sum(equities.values()))
        self.total_peak = max(self.total_peak, total)
        day = ts.normalize().isoformat()
        if self.day_start_total[0] != day:
            # The day starts at the previous close (the first cycle: at its own).
            before = self.last_total if math.isfinite(self.last_total) else total
            self.day_start_total = (day, before)
        self.last_total = total
        account_changes: list[StateChange] = []
        if self.account_breaker is not None:
            account_changes = self.account_breaker.update(
                ts, total, self.total_peak, self.day_start_total[1], True, 0
            )
            work.breaker_changes += account_changes
        if self.transfers is not None:
            self._ask_transfers(i, ts, equities, work)
        for name, s in self.subs.items():
            qty = held[name]
            changes: list[StateChange] = []
            if s.step.safety.has_breakers:
                fresh = bool(np.all(m.tradable[i][qty != 0]))
                own = s.step.mark(ts, equities[name], s.peak, fresh)
                work.breaker_changes += own
                changes = account_changes + own
            self._decide(s, i, ts, equities[name], qty, changes, work, work.flows.get(name, 0.0))
            s.last_state = str(s.step.safety.trading_state)
        self.last_bar = i
        self._commit(i, ts, equities, total, work)
        self._send(work)
        report = self._report(i, ts, equities, total, previous_states, work)
        self.heartbeat("running", i + 1)
        if not self.observers:
            return report
        for observer in self.observers:
            try:
                observer.on_cycle(report, self.store)
            except Exception:  # an observer (review, alerts) never stops the runner
                log.exception("observer %r failed at bar %s", observer, ts)
        return report

    def _ask_transfers(
        self, i: int, ts: pd.Timestamp, equities: dict[str, float], work: _Pending
    ) -> None:
        """The transfer source at the close of bar ``i``, before the decisions: its
        allocation recorded as a decision of ``ALLOCATOR``; each transfer it asks for
        checked by the transfer guard and booked (the subaccounts' equities, peaks and
        breakers move with it, and each decides on its new capital, as in a backtest),
        written as ``new`` with its transfer id and made on the exchange after the
        commit. With a subaccount in approve mode (and nothing else in the way) it is
        written as ``proposed`` and becomes a transfer proposal for a person; one a
        person approved since is checked and booked here first, the same way. Not made,
        and written as ``not_made`` with why: a subaccount in monitor mode, an exchange
        that cannot move capital, no transfer guard."""
        source = self.transfers
        assert source is not None
        marks = {sym: float(self.m.close_filled[i][j]) for sym, j in self.m.column.items()}
        states = {n: sub.step.safety.trading_state for n, sub in self.subs.items()}
        self._make_approved_transfers(i, ts, equities, marks, states, work)
        history = {
            name: (np.asarray(h, dtype=float), np.asarray(self.flow_history[name], dtype=float))
            for name, h in self.equity_history.items()
        }
        previous = self.m.timestamps[i - 1] if i else None
        seen = len(source.records)
        requests = list(source.requests(ts, previous, dict(equities), history))
        rows = []
        for k, r in enumerate(requests):
            why, proposable = self._transfer_block(r)
            tid = f"{self.run_id}:t{i}:{k}"
            row: dict[str, Any] = {
                "timestamp": ts,
                "bar": i,
                "source": r.source,
                "target": r.target,
                "amount": float(r.amount),
                "reason": r.reason,
            }
            if why is not None and proposable:
                rows.append(self._propose_transfer(i, ts, r, tid, why, row, work))
                continue
            if why is not None:
                rows.append(
                    {**row, "status": "not_made", "guard": {"origin": r.origin, "not_made": why}}
                )
                continue
            assert self.transfer_guard is not None
            outcome = self.transfer_guard.check(r, self.account, marks, states)
            moved = float(outcome.moved)
            guard = {**outcome.to_dict(), "transfer_id": tid}
            if moved <= 0:
                rows.append({**row, "amount": 0.0, "status": "refused", "guard": guard})
                continue
            self._book_transfer((tid, r.source, r.target, moved, None), equities, work)
            rows.append({**row, "amount": moved, "status": "new", "guard": guard})
        for name, eq in equities.items():
            self.equity_history[name].append(float(eq))
            self.flow_history[name].append(work.flows.get(name, 0.0))
        work.transfers += rows
        for record in source.records[seen:]:
            decision = {
                "id": self.next_allocation,
                "timestamp": ts.isoformat(),
                "policy": "allocator",
                "action": "allocate" if record.get("moves") else "hold",
                "reasons": [{"code": "allocation", "message": str(record.get("summary", ""))}],
                "allocation": record,
                "transfers": [
                    {k: row[k] for k in ("source", "target", "amount", "reason")} for row in rows
                ],
            }
            unmade = [row["guard"]["not_made"] for row in rows if row["status"] == "not_made"]
            if unmade:
                decision["not_made"] = unmade[0]
            proposed = [row["guard"]["proposed"] for row in rows if row["status"] == "proposed"]
            if proposed:
                decision["proposed"] = proposed[0]
            self.next_allocation += 1
            work.decisions.setdefault(ALLOCATOR, []).append(json_ready(decision))

    def _book_transfer(self, send: _Send, equities: dict[str, float], work: _Pending) -> None:
        """Book a transfer the guard allowed at this close: the ledger, both
        subaccounts' equities, flows, peaks and breakers move with it; made on the
        exchange after the commit (its exchange event is not booked again)."""
        tid, source, target, moved, _ = send
        self.account.transfer(source, target, moved)
        for name, sign in ((source, -1.0), (target, 1.0)):
            sub = self.subs[name]
            equities[name] += sign * moved
            work.flows[name] = work.flows.get(name, 0.0) + sign * moved
            sub.peak = max(sub.peak + sign * moved, 0.0)
            sub.step.safety.on_transfer(sign * moved)
        self.own_transfers.add(tid)
        work.transfer_sends.append(send)

    def _propose_transfer(
        self,
        i: int,
        ts: pd.Timestamp,
        r: TransferRequest,
        tid: str,
        why: str,
        row: dict[str, Any],
        work: _Pending,
    ) -> dict[str, Any]:
        """A transfer a subaccount in approve mode keeps from being made: a proposal
        (kind ``transfer``, no legs, expiring at the next close as an order plan's does)
        and its transfer row, ``proposed`` (the proposal's id added when written)."""
        expires = (
            self.m.timestamps[i + 1]
            if i + 1 < len(self.m.timestamps)
            else ts + (self.m.timestamps[i] - self.m.timestamps[i - 1])
        )
        amount = float(r.amount)
        doc = {
            "source": r.source,
            "target": r.target,
            "amount": amount,
            "reason": r.reason,
            "origin": r.origin,
            "allow_partial": bool(r.allow_partial),
            "transfer_id": tid,
        }
        said = f" ({r.reason})" if r.reason else ""
        proposal = {
            "kind": "transfer",
            "subaccount": r.source,
            "decision_id": None,
            "timestamp": ts,
            "expires_at": expires,
            "legs": [],
            "transfer": doc,
            "reasons": [
                {"code": "transfer", "origin": r.origin, "message": r.reason, "why_proposed": why}
            ],
            "source": "approve-mode",
            "summary": f"transfer {r.source} -> {r.target}: {amount:,.2f} USDT, "
            f"asked by {r.origin}{said}",
        }
        out = {**row, "status": "proposed", "guard": {"origin": r.origin, "transfer_id": tid}}
        out["guard"]["proposed"] = why
        work.proposals.append(proposal)
        # The row learns its proposal's id when both are written (Store ids).
        proposal["_row"] = out
        return out

    def _make_approved_transfers(
        self,
        i: int,
        ts: pd.Timestamp,
        equities: dict[str, float],
        marks: Mapping[str, float],
        states: Mapping[str, Any],
        work: _Pending,
    ) -> None:
        """Transfer proposals a person approved (before this close or by a command of
        this cycle), checked by the transfer guard now (the account, marks and trading
        states of this close: a breaker or a limit can still cut or refuse it), booked
        at this close and made after the commit under the transfer id they were
        proposed with; their rows become ``new`` (or ``refused``), stamped with this bar."""
        decided = {pid: values for pid, values in work.proposal_updates}
        for p in self.store.proposals(self.run_id, status=_OPEN_PROPOSALS, floats=True):
            pid = int(p["proposal_id"])
            status = decided.get(pid, {}).get("status", p["status"])
            if p.get("kind") != "transfer" or status != "approved":
                continue
            doc = p["transfer"]
            by = decided.get(pid, {}).get("decided_by") or p.get("decided_by") or "unknown"
            tid = str(doc["transfer_id"])
            request = _proposed_request(doc, ts)
            why, proposable = self._transfer_block(request)
            base = {"approved_by": by, "proposal_id": pid}
            if why is not None and not proposable:
                guard = {**base, "requested": request.amount, "not_made": why}
                _refuse_approved(work, tid, pid, guard, why)
                continue
            assert self.transfer_guard is not None
            outcome = self.transfer_guard.check(request, self.account, marks, states)
            moved = float(outcome.moved)
            guard = {**outcome.to_dict(), "transfer_id": tid, **base}
            if moved <= 0:
                checks = "; ".join(outcome.checks) or "nothing to move"
                _refuse_approved(work, tid, pid, guard, f"refused by the transfer guard: {checks}")
                continue
            self._book_transfer((tid, request.source, request.target, moved, pid), equities, work)
            work.transfer_updates.append(
                (tid, "new", ("approved",), {"amount": moved, "guard": guard, "at_this_bar": True})
            )
            cut = (
                f" (cut from {request.amount:,.2f}: {'; '.join(outcome.checks)})"
                if outcome.checks
                else ""
            )
            work.proposal_updates.append(
                (
                    pid,
                    {
                        "status": "made",
                        "note": f"made at {ts.isoformat()}: {moved:,.2f} USDT{cut}",
                        "transfer": {"moved": moved, "made_at": ts.isoformat(), "bar": i},
                    },
                )
            )

    def _transfer_block(self, request: TransferRequest) -> tuple[str | None, bool]:
        """Why the runner does not make ``request`` now (None: it makes it), and whether
        a person may make it instead (True: only approve mode is in the way)."""
        involved = [n for n in (request.source, request.target) if n in self.subs]
        names = [n for n in involved if self.subs[n].mode == "monitor"]
        if names:
            return (
                f"monitor mode ({', '.join(names)}): no transfer is made (the runner "
                "moves capital between subaccounts in auto mode only, or approved in "
                "approve mode)",
                False,
            )
        if not callable(getattr(self.exchange, "transfer", None)):
            why = getattr(self.exchange, "why_no_transfers", None) or (
                f"{type(self.exchange).__name__} cannot move capital between subaccounts"
            )
            return (f"{why}: recorded only (move it on the exchange)", False)
        if self.transfer_guard is None:
            return "no transfer guard was given: recorded only", False
        names = [n for n in involved if self.subs[n].mode == "approve"]
        if names:
            return (
                f"approve mode ({', '.join(names)}): proposed to a person "
                "(trimtab approve or reject; it expires at the next close)",
                True,
            )
        return None, False

    def _make_transfer(self, send: _Send) -> None:
        """Make one booked transfer on the exchange (once per id) and write the answer.
        A refusal takes the booking back: the exchange's cash is what counts."""
        tid, source, target, amount, pid = send
        made = bool(self.exchange.transfer(source, target, amount, tid))
        if not made:
            log.warning(
                "transfer %s (%s -> %s, %.2f USDT) refused by the exchange: taken back",
                tid,
                source,
                target,
                amount,
            )
            self.account.transfer(target, source, amount)
            for name, sign in ((source, 1.0), (target, -1.0)):
                sub = self.subs[name]
                sub.peak = max(sub.peak + sign * amount, 0.0)
                sub.step.safety.on_transfer(sign * amount)
        bar = self.last_bar
        at = None if bar is None else self.m.timestamps[bar]
        with self.store.transaction(self.run_id, bar=bar, timestamp=at) as tx:
            tx.update_transfer_status(tid, "done" if made else "refused")
            if not made:
                # The take-back with the answer: a kill before the next commit must not
                # restore the booking from the checkpoint (the row is no longer new).
                tx.save_state("runner", self._state())
                if pid is not None:
                    tx.update_proposal(pid, status="refused", note="refused by the exchange")

    def _marked(self, name: str, i: int) -> tuple[np.ndarray, float]:
        """A subaccount's quantities per column and its equity at bar ``i``'s close."""
        sub = self.account.subaccount(name)
        qty, offset = _ledger_view(sub, self.m.column, self.n_sym)
        return qty, sub.cash + float(qty @ self.m.close_filled[i]) + offset

    def _observation(
        self, s: LiveSubaccount, i: int, equity: float, qty: np.ndarray, flow: float = 0.0
    ) -> Observation:
        m, ctx = self.m, self.context
        sub = self.account.subaccount(s.name)
        return Observation(
            i,
            m.timestamps[i],
            m.symbols,
            self.fields,
            ctx.features,
            m.tradable[i],
            ctx.universe[i],
            PortfolioState(equity, sub.cash, qty, m.close_filled[i], s.peak, flow),
            i - ctx.start_i,
            m.index[i - 1] if i else None,
        )

    def _decide(
        self,
        s: LiveSubaccount,
        i: int,
        ts: pd.Timestamp,
        equity: float,
        qty: np.ndarray,
        changes: list[StateChange],
        work: _Pending,
        flow: float = 0.0,
    ) -> None:
        obs = self._observation(s, i, equity, qty, flow)
        decision_id = s.next_decision
        out = s.step.step(obs, self.exchange.instrument, decision_id, changes)
        if out.record is None:
            return
        s.next_decision += 1
        record = out.record
        record["mode"] = s.mode
        if s.paused:
            record["paused"] = True
        orders = list(out.orders)
        if out.replaces_open:
            # A new plan replaces what is left of the earlier ones, proposals included.
            for p in self.store.proposals(self.run_id, status=_OPEN_PROPOSALS, floats=True):
                if p["subaccount"] == s.name and p.get("kind", "orders") == "orders":
                    work.proposal_updates.append(
                        (
                            p["proposal_id"],
                            {"status": "expired", "note": f"replaced by decision {decision_id}"},
                        )
                    )
            if s.mode == "auto" and not s.paused:
                # Orders a person sent (approved legs, closes) are theirs to cancel.
                work.cancels += [
                    o.client_order_id
                    for o in self.exchange.open_orders(s.name)
                    if o.client_order_id in self.known_cids
                    and o.client_order_id not in self.human_orders
                ]
        work.decisions.setdefault(s.name, []).append(record)
        if not orders:
            return
        if s.paused or s.mode == "monitor":
            record["not_sent"] = "paused" if s.paused else "monitor mode: no order is sent"
            return
        if self.halted:
            record["not_sent"] = (
                "halted: the books differ from the exchange's (trimtab reconcile shows how)"
            )
            return
        close = self.m.close_filled[i]
        send: list[tuple[int, Order]] = []
        propose: list[tuple[int, Order, str]] = []
        day = ts.normalize().isoformat()
        room = s.sent_room(day)
        for leg, order in enumerate(orders):
            notional = _notional(order, close[self.m.column[order.symbol]])
            if s.mode == "approve":
                propose.append((leg, order, "approve mode"))
                continue
            env = s.envelope
            assert env is not None
            if env.max_order_notional is not None and notional > env.max_order_notional:
                propose.append(
                    (leg, order, f"{notional:,.2f} USDT > envelope {env.max_order_notional:,.2f}")
                )
            elif notional > room:
                propose.append(
                    (
                        leg,
                        order,
                        f"{notional:,.2f} USDT > {max(room, 0):,.2f} left of today's envelope",
                    )
                )
            else:
                room -= notional
                send.append((leg, order))
        for leg, order in send:
            cid = client_order_id(self.run_id, s.name, decision_id, leg)
            work.orders.append(_Outgoing(order, cid, i, s.name, leg))
            s.count_sent(day, _notional(order, close[self.m.column[order.symbol]]))
        record["sent"] = [client_order_id(self.run_id, s.name, decision_id, leg) for leg, _ in send]
        if propose:
            expires = (
                self.m.timestamps[i + 1]
                if i + 1 < len(self.m.timestamps)
                else ts + (self.m.timestamps[i] - self.m.timestamps[i - 1])
            )
            legs = []
            for leg, order, why in propose:
                price = float(close[self.m.column[order.symbol]])
                legs.append(
                    {
                        "leg": leg,
                        "symbol": order.symbol,
                        "side": str(order.side),
                        "quantity": order.quantity,
                        "quote_quantity": order.quote_quantity,
                        "planned_price": price,
                        "band_low": price * (1 - self.band),
                        "band_high": price * (1 + self.band),
                        "notional": _notional(order, price),
                        "reason": order.reason,
                        "why_proposed": why,
                        "status": "pending",
                        "client_order_id": None,
                        "type": str(order.type),
                        "limit_price": order.limit_price,
                        "reduce_only": order.reduce_only,
                        "leverage": order.leverage,
                    }
                )
            source = "approve-mode" if s.mode == "approve" else "auto-envelope"
            work.proposals.append(
                {
                    "subaccount": s.name,
                    "decision_id": decision_id,
                    "timestamp": ts,
                    "expires_at": expires,
                    "legs": legs,
                    "reasons": record.get("reasons", []),
                    "source": source,
                    "summary": f"{record.get('action', '')}: {len(legs)} order(s), "
                    f"{sum(x['notional'] for x in legs):,.2f} USDT",
                }
            )
            record["proposed"] = len(legs)

    # --- human commands -----------------------------------------------------------------
    def tick(self) -> None:
        """Between bars: apply waiting commands (an approval is sent now), let the
        observers retry what is due, and beat."""
        for observer in self.observers:
            try:
                observer.on_tick(self.run_id, self.store)
            except Exception:  # alerts never stop the runner
                log.exception("observer %r failed between bars", observer)
        if self.last_bar is None:
            self.heartbeat("running")
            return
        if not self.store.pending_commands(self.run_id):
            self.heartbeat("running")
            return
        i = self.last_bar
        ts = self.m.timestamps[i]
        work = _Pending()
        self._apply_commands(i, ts, work, delay=self.send_delay)
        with self.store.transaction(self.run_id, bar=i, timestamp=ts) as tx:
            self._write(tx, work)
            tx.save_state("runner", self._state())
            tx.save_state("status", self._status(ts, i))
        self._send(work)
        self.heartbeat("running")

    def _apply_commands(self, i: int, ts: pd.Timestamp, work: _Pending, delay: int = 0) -> None:
        for cmd in self.store.pending_commands(self.run_id):
            try:
                status, outcome = self._apply(cmd, i, ts, work, delay)
            except (ValueError, KeyError, StoreError) as exc:
                status, outcome = "refused", str(exc.args[0] if exc.args else exc)
            work.commands.append((int(cmd["command_id"]), status, outcome))
            log.info("command %s (%s): %s: %s", cmd["command_id"], cmd["kind"], status, outcome)

    def _targets(self, cmd: Mapping[str, Any]) -> list[LiveSubaccount]:
        name = cmd.get("subaccount")
        if name is None:
            return list(self.subs.values())
        if name not in self.subs:
            raise ValueError(f"no subaccount {name!r} (there are {', '.join(self.subs)})")
        return [self.subs[name]]

    def _apply(
        self, cmd: Mapping[str, Any], i: int, ts: pd.Timestamp, work: _Pending, delay: int
    ) -> tuple[str, str]:
        kind = cmd["kind"]
        args = cmd.get("args") or {}
        by = str(cmd.get("actor") or "unknown")
        reason = str(cmd.get("reason") or "")
        if kind == "pause":
            subs = self._targets(cmd)
            for s in subs:
                s.paused = True
                work.cancels += self._our_open(s.name)
                work.overrides.append((s.name, _override("paused", False, True, by, reason, ts)))
            return "applied", f"paused {', '.join(s.name for s in subs)}: no order is sent"
        if kind == "resume":
            subs = self._targets(cmd)
            for s in subs:
                s.paused = False
                work.overrides.append((s.name, _override("paused", True, False, by, reason, ts)))
            return "applied", f"resumed {', '.join(s.name for s in subs)}"
        if kind == "mode":
            (s,) = self._targets(cmd)
            new = str(args.get("mode"))
            if new not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}, not {new!r}")
            if new == "auto" and s.envelope is None:
                raise ValueError(
                    f"{s.name} has no envelope: set envelope (max_order_notional, "
                    "max_daily_turnover) in the portfolio file before auto"
                )
            old, s.mode = s.mode, new
            work.overrides.append((s.name, _override("mode", old, new, by, reason, ts)))
            return "applied", f"{s.name}: mode {old} -> {new}"
        if kind == "limits":
            key, value = str(args.get("key")), args.get("value")
            subs = self._targets(cmd)
            done = []
            for s in subs:
                rec = s.step.safety.limits.override(
                    key, value, by=by, reason=reason or "(no reason given)", at=ts
                )
                work.overrides.append((s.name, rec))
                done.append(f"{s.name}: {key} {rec.old} -> {rec.new}")
            return "applied", "; ".join(done)
        if kind == "reconcile":
            return "applied", self.reconcile().summary()
        if kind == "adopt":
            return self._adopt(args, ts, work, by, reason)
        if kind == "accept":
            return self._accept(cmd, i, ts, work, by, reason)
        if kind in ("close", "approve") and self.halted:
            why = self.gate.summary() if self.gate is not None else "not reconciled yet"
            raise ValueError(f"the runner is halted, nothing is sent: {why}")
        if kind == "close":
            return self._close(cmd, args, i, ts, work, by, reason, delay)
        if kind == "approve":
            return self._approve(args, i, ts, work, by, reason, delay)
        if kind == "reject":
            p = self._proposal(args, work)
            if p["status"] not in _OPEN_PROPOSALS:
                raise ValueError(f"proposal {p['proposal_id']} is {p['status']}: nothing to reject")
            legs = [{**leg, "status": "rejected"} for leg in p["legs"]]
            work.proposal_updates.append(
                (
                    p["proposal_id"],
                    {
                        "status": "rejected",
                        "legs": legs,
                        "decided_by": by,
                        "decided_at": pd.Timestamp.now(tz="UTC"),
                        "note": reason,
                    },
                )
            )
            if p.get("kind") == "transfer":
                self._transfer_row_decided(p, "rejected", {"rejected_by": by}, work)
                return "applied", f"proposal {p['proposal_id']} rejected: nothing moves"
            return "applied", f"proposal {p['proposal_id']} rejected: nothing sent"
        raise ValueError(f"unknown command {kind!r}")

    def _adopt(
        self, args: Mapping[str, Any], ts: pd.Timestamp, work: _Pending, by: str, reason: str
    ) -> tuple[str, str]:
        """Take an order the runner did not send into its books: the fills held for it
        are booked now, later ones as they come; the runner never cancels it (as an
        order a person sent). Then the books are compared again."""
        key = str(args.get("order") or "").strip()
        if not key:
            raise ValueError("adopt needs the order's client order id or exchange order id")
        mine = [h for h in self.held_fills if _held_key(h) == key]
        # Fills not taken from the exchange yet (the runner just started): booked by the
        # next cycle once the order is adopted.
        unbooked = [
            h
            for h in (self.gate.held_fills if self.gate is not None else [])
            if _held_key(h) == key and h not in mine
        ]
        open_external = (self.gate.external if self.gate is not None else []) or []
        known_open = [
            o
            for o in open_external
            if key in (o.get("client_order_id"), str(o.get("exchange_order_id")))
        ]
        if not mine and not known_open and not unbooked:
            held = sorted({k for k in (_held_key(h) for h in self.held_fills) if k})
            opened = sorted(
                {str(o.get("client_order_id") or o.get("exchange_order_id")) for o in open_external}
            )
            listing = ", ".join(held + opened) or "none"
            raise ValueError(f"no external order {key!r} (external orders: {listing})")
        self.adopted.add(key)
        for h in known_open:
            if h.get("client_order_id"):
                self.adopted.add(str(h["client_order_id"]))
                self.human_orders.add(str(h["client_order_id"]))
        booked = 0
        for h in mine:
            ev = ExchangeEvent(
                int(h["seq"]),
                str(h["kind"]),
                int(h["bar"]),
                pd.Timestamp(h["timestamp"]),
                h["subaccount"],
                h["client_order_id"],
                {**h["data"], "external": False},
            )
            fill = book_event(self.account, ev, self.exchange.instrument)
            if fill is not None:
                row = _fill_row(fill, ev)
                row["reason"] = f"adopted by {by}: {reason or fill.reason}".strip()
                work.fills.append(row)
                s = self.subs.get(ev.subaccount)
                if s is not None:
                    s.step.safety.on_fill(fill)
                booked += 1
        self.held_fills = [h for h in self.held_fills if _held_key(h) != key]
        sub = (mine or unbooked or known_open)[0]["subaccount"]
        work.overrides.append(
            (sub, _override("adopted", None, key, by, reason or "adopted by command", ts))
        )
        after = self.reconcile()
        later = f", {len(unbooked)} at the next cycle" if unbooked else ""
        return "applied", f"order {key} adopted: {booked} fill(s) booked{later}; {after.summary()}"

    def _accept(
        self,
        cmd: Mapping[str, Any],
        i: int,
        ts: pd.Timestamp,
        work: _Pending,
        by: str,
        reason: str,
    ) -> tuple[str, str]:
        """Take the exchange's balances as the books of a subaccount (or all): for money
        moved outside trimtab (a deposit, a withdrawal) that no order explains. Each
        change is recorded as an override with who and why; positions keep their entry
        price, new ones enter at the close."""
        from trimtab.domain.account import Position

        if not reason:
            raise ValueError("accept needs a reason: it changes the books")
        waiting = self.exchange.events_since(self.event_seq)
        if waiting:
            raise ValueError(
                f"the exchange has {len(waiting)} event(s) the runner has not booked yet: "
                "give the command again after the next cycle"
            )
        books = self.exchange.balances()
        close = self.m.close_filled[i]
        done = []
        for s in self._targets(cmd):
            sub = self.account.subaccount(s.name)
            theirs = books.get(s.name)
            if theirs is None:
                raise ValueError(f"the exchange has no account for {s.name}")
            changes = []
            cash = float(theirs["cash"])
            if cash != sub.cash:
                changes.append(f"cash {sub.cash:,.8g} -> {cash:,.8g}")
                work.overrides.append((s.name, _override("cash", sub.cash, cash, by, reason, ts)))
                sub.cash = cash
            wanted = {k: float(q) for k, q in (theirs.get("positions") or {}).items() if q}
            for symbol in sorted(set(wanted) | {k for k, p in sub.positions.items() if p.quantity}):
                old = sub.positions[symbol].quantity if symbol in sub.positions else 0.0
                new = wanted.get(symbol, 0.0)
                if old == new:
                    continue
                changes.append(f"{symbol} {old:g} -> {new:g}")
                work.overrides.append(
                    (s.name, _override(f"position {symbol}", old, new, by, reason, ts))
                )
                if new == 0:
                    sub.positions.pop(symbol, None)
                elif symbol in sub.positions:
                    sub.positions[symbol].quantity = new
                else:
                    col = self.m.column.get(symbol)
                    mark = float(close[col]) if col is not None else 0.0
                    sub.positions[symbol] = Position(
                        instrument=self.exchange.instrument(symbol), quantity=new, entry_price=mark
                    )
            done.append(f"{s.name}: {', '.join(changes) or 'nothing to change'}")
        after = self.reconcile(poll=False)
        return "applied", f"the exchange's balances taken: {'; '.join(done)}; {after.summary()}"

    def _proposal(self, args: Mapping[str, Any], work: _Pending | None = None) -> dict[str, Any]:
        """The proposal a command names, as the store has it. With ``work``: refused when
        an earlier command of this pass decided it already (the store does not show that
        decision until the pass commits)."""
        pid = int(args.get("proposal_id", -1))
        if work is not None and any(q == pid for q, _ in work.proposal_updates):
            raise ValueError(
                f"proposal {pid} was decided by an earlier command applied with this one: "
                "nothing more is done"
            )
        try:
            return self.store.proposal(self.run_id, pid, floats=True)
        except StoreError:
            raise ValueError(f"no proposal {pid}") from None

    def _approve(
        self,
        args: Mapping[str, Any],
        i: int,
        ts: pd.Timestamp,
        work: _Pending,
        by: str,
        reason: str,
        delay: int,
    ) -> tuple[str, str]:
        p = self._proposal(args, work)
        pid = p["proposal_id"]
        if p["status"] != "pending":
            raise ValueError(f"proposal {pid} is {p['status']}: only a pending one can be approved")
        if p["expires_at"] is not None and ts >= pd.Timestamp(p["expires_at"]):
            work.proposal_updates.append(
                (pid, {"status": "expired", "note": "expired before approval"})
            )
            self._transfer_row_decided(p, "expired", {"expired_at": ts.isoformat()}, work)
            raise ValueError(f"proposal {pid} expired at {p['expires_at']}: nothing sent")
        if p.get("kind") == "transfer":
            return self._approve_transfer(p, args, work, by, reason)
        s = self.subs.get(p["subaccount"])
        if s is None:
            raise ValueError(f"proposal {pid}: no subaccount {p['subaccount']!r}")
        if s.paused or s.mode == "monitor":
            raise ValueError(
                f"proposal {pid}: {s.name} is {'paused' if s.paused else 'in monitor mode'}: "
                "nothing sent"
            )
        wanted = args.get("legs")
        legs = [dict(leg) for leg in p["legs"]]
        numbers = {int(leg["leg"]) for leg in legs}
        chosen = numbers if wanted is None else {int(x) for x in wanted}
        unknown = sorted(chosen - numbers)
        if unknown:
            raise ValueError(f"proposal {pid} has no leg {unknown[0]} (legs: {sorted(numbers)})")
        qty, equity = self._marked(s.name, i)
        close = self.m.close_filled[i]
        obs = self._observation(s, i, equity, qty)
        orders, in_band = [], []
        notes = []
        for leg in legs:
            n = int(leg["leg"])
            if n not in chosen:
                leg["status"] = "rejected"  # left out of a partial approval
                continue
            price = float(close[self.m.column[leg["symbol"]]])
            if not (leg["band_low"] <= price <= leg["band_high"]):
                leg["status"] = "refused"
                leg["refusal"] = (
                    f"price {price:g} outside the band {leg['band_low']:g}..{leg['band_high']:g}"
                )
                notes.append(f"leg {n}: {leg['refusal']}")
                continue
            order = Order(
                symbol=leg["symbol"],
                side=Side(leg["side"]),
                quantity=leg["quantity"],
                quote_quantity=leg["quote_quantity"],
                type=OrderType(leg.get("type") or "market"),
                limit_price=leg.get("limit_price"),
                reduce_only=bool(leg.get("reduce_only", False)),
                subaccount=s.name,
                leverage=float(leg.get("leverage") or 1.0),
                reason=f"approved by {by}: {leg['reason']}",
                decision_id=int(p["decision_id"]),
                time_in_force=TimeInForce.NEXT_BAR,
            )
            orders.append(order)
            in_band.append(leg)
        # The guard again, at today's prices and limits: an approval cannot break a limit.
        allowed, actions, blocked = s.step.safety.check_orders(
            orders, obs, close, self.exchange.instrument
        )
        allowed_ids = {o.id: o for o in allowed}
        sent = 0
        for order, leg in zip(orders, in_band, strict=True):
            passed = allowed_ids.get(order.id)
            if passed is None:
                leg["status"] = "refused"
                leg["refusal"] = "refused by the guard at approval"
                notes.append(f"leg {leg['leg']}: refused by the guard")
                continue
            cid = client_order_id(self.run_id, s.name, int(p["decision_id"]), int(leg["leg"]))
            work.orders.append(_Outgoing(passed, cid, i + delay, s.name, int(leg["leg"])))
            self.human_orders.add(cid)
            leg["status"] = "sent"
            leg["client_order_id"] = cid
            if passed.quantity != order.quantity or passed.quote_quantity != order.quote_quantity:
                leg["guard"] = "cut by the guard"
            sent += 1
        for a in actions:
            notes.append(f"guard: {a.to_dict().get('message', a.to_dict())}")
        for b in blocked:
            notes.append(f"blocked: {b.get('reason', b)}")
        work.proposal_updates.append(
            (
                pid,
                {
                    "status": "sent" if sent else "refused",
                    "legs": legs,
                    "decided_by": by,
                    "decided_at": pd.Timestamp.now(tz="UTC"),
                    "note": "; ".join([reason, *notes]).strip("; "),
                },
            )
        )
        if not sent:
            return "refused", f"proposal {pid}: nothing sent ({'; '.join(notes) or 'no leg'})"
        return "applied", f"proposal {pid}: {sent} of {len(legs)} leg(s) sent" + (
            f" ({'; '.join(notes)})" if notes else ""
        )

    def _approve_transfer(
        self,
        p: Mapping[str, Any],
        args: Mapping[str, Any],
        work: _Pending,
        by: str,
        reason: str,
    ) -> tuple[str, str]:
        """A person approves a transfer proposal: marked ``approved`` (its row too); the
        next close checks it with the transfer guard and makes it (see
        ``_make_approved_transfers``). A transfer has no legs to choose."""
        pid, doc = p["proposal_id"], p["transfer"]
        what = f"{doc['source']} -> {doc['target']}, {float(doc['amount']):,.2f} USDT"
        if args.get("legs") is not None:
            raise ValueError(
                f"proposal {pid} is a transfer ({what}): it has no legs to choose; "
                "approve it whole, without legs"
            )
        why, proposable = self._transfer_block(_proposed_request(doc, pd.Timestamp(p["timestamp"])))
        if why is not None and not proposable:
            raise ValueError(f"proposal {pid}: {why}: nothing moves")
        work.proposal_updates.append(
            (
                pid,
                {
                    "status": "approved",
                    "decided_by": by,
                    "decided_at": pd.Timestamp.now(tz="UTC"),
                    "note": reason,
                },
            )
        )
        self._transfer_row_decided(p, "approved", {"approved_by": by}, work)
        return "applied", (
            f"proposal {pid} approved: the transfer ({what}) is checked by the transfer "
            "guard and made at the next close"
        )

    @staticmethod
    def _transfer_row_decided(
        p: Mapping[str, Any], status: str, guard: Mapping[str, Any], work: _Pending
    ) -> None:
        """A transfer proposal's row follows its proposal: approved, rejected, expired."""
        if p.get("kind") != "transfer":
            return
        work.transfer_updates.append(
            (
                str(p["transfer"]["transfer_id"]),
                status,
                ("proposed", "approved"),
                {"guard": dict(guard)},
            )
        )

    def _close(
        self,
        cmd: Mapping[str, Any],
        args: Mapping[str, Any],
        i: int,
        ts: pd.Timestamp,
        work: _Pending,
        by: str,
        reason: str,
        delay: int,
    ) -> tuple[str, str]:
        """Flatten positions (all, or the symbols named) by market orders, then pause the
        subaccount so its policy does not buy them back; ``resume`` lets it trade again."""
        subs = self._targets(cmd)
        wanted = None if args.get("all") else {str(x).upper() for x in args.get("symbols") or ()}
        done, refused = [], []
        for s in subs:
            if s.mode == "monitor":
                refused.append(f"{s.name} is in monitor mode: no order is ever sent")
                continue
            sub = self.account.subaccount(s.name)
            qty, equity = self._marked(s.name, i)
            close = self.m.close_filled[i]
            held = {sym: p.quantity for sym, p in sub.positions.items() if p.quantity != 0}
            if wanted is not None:
                missing = sorted(wanted - set(held))
                if missing and len(subs) == 1:
                    refused.append(f"{s.name} holds no {', '.join(missing)}")
                held = {k: v for k, v in held.items() if k in wanted}
            decision_id = s.next_decision
            orders = []
            for symbol, q in sorted(held.items()):
                amount = self.exchange.instrument(symbol).round_quantity(abs(q))
                if amount <= 0:
                    continue
                orders.append(
                    Order(
                        symbol=symbol,
                        side=Side.SELL if q > 0 else Side.BUY,
                        quantity=amount,
                        reduce_only=True,
                        subaccount=s.name,
                        reason=f"close by {by}" + (f": {reason}" if reason else ""),
                        decision_id=decision_id,
                        leverage=sub.positions[symbol].leverage,
                    )
                )
            obs = self._observation(s, i, equity, qty)
            allowed, _actions, _blocked = s.step.safety.check_orders(
                orders, obs, close, self.exchange.instrument
            )
            s.next_decision += 1
            record = {
                "id": decision_id,
                "timestamp": ts.isoformat(),
                "policy": "human",
                "action": "close",
                "reasons": [
                    {"code": "human_close", "by": by, "reason": reason, "symbols": sorted(held)}
                ],
                "mode": s.mode,
                "sent": [],
            }
            for leg, order in enumerate(allowed):
                cid = client_order_id(self.run_id, s.name, decision_id, leg)
                work.orders.append(_Outgoing(order, cid, i + delay, s.name, leg))
                self.human_orders.add(cid)
                record["sent"].append(cid)
            work.decisions.setdefault(s.name, []).append(record)
            if not s.paused:
                s.paused = True
                work.overrides.append((s.name, _override("paused", False, True, by, "close", ts)))
            work.cancels += self._our_open(s.name)
            done.append(f"{s.name}: {len(allowed)} closing order(s), paused")
        if not done:
            return "refused", "; ".join(refused) or "nothing to close"
        return "applied", "; ".join(done + refused)

    def _expire_proposals(self, ts: pd.Timestamp, work: _Pending) -> None:
        touched = {pid for pid, _ in work.proposal_updates}
        for p in self.store.proposals(self.run_id, status="pending", floats=True):
            if p["proposal_id"] in touched or p["expires_at"] is None:
                continue
            if ts >= pd.Timestamp(p["expires_at"]):
                legs = [{**leg, "status": "expired"} for leg in p["legs"]]
                work.proposal_updates.append(
                    (
                        p["proposal_id"],
                        {"status": "expired", "legs": legs, "note": "expired unapproved"},
                    )
                )
                self._transfer_row_decided(p, "expired", {"expired_at": ts.isoformat()}, work)

    # --- the exchange ------------------------------------------------------------------
    def _take_events(self, work: _Pending) -> None:
        """The exchange's events since the last seen, into the ledger and the journal."""
        events = self.exchange.events_since(self.event_seq)
        book_in_order(
            self.account, events, self.exchange.instrument, lambda ev: self._apply_event(ev, work)
        )
        if events:
            self.event_seq = events[-1].seq

    def _own_transfer(self, ev: Any) -> bool:
        """A transfer event of a transfer this run booked when it decided it."""
        return ev.kind == "transfer" and str(ev.data.get("id")) in self.own_transfers

    def _apply_event(self, ev: ExchangeEvent, work: _Pending) -> None:
        if self._own_transfer(ev):
            return
        if self._is_external(ev):
            # Not ours: held apart, unbooked, until a person adopts its order.
            self.held_fills.append(self._held_row(ev))
            log.warning(
                "fill of an order the runner did not send (%s, %s): held until adopted",
                ev.client_order_id or ev.data.get("exchange_order_id"),
                ev.data.get("symbol"),
            )
            return
        fill = book_event(self.account, ev, self.exchange.instrument)
        if fill is not None:
            s = self.subs.get(ev.subaccount)
            if s is not None:
                s.step.safety.on_fill(fill)
            work.fills.append(_fill_row(fill, ev))
        elif ev.kind == "order" and ev.data.get("status") in ("rejected", "expired"):
            work.rejected.setdefault(ev.subaccount, []).append(
                {
                    "client_order_id": ev.client_order_id,
                    "symbol": ev.data.get("symbol"),
                    "side": ev.data.get("side"),
                    "reason": ev.data.get("reason", ""),
                    "status": ev.data.get("status"),
                }
            )
        if ev.client_order_id and ev.client_order_id in self.known_cids:
            known = self.exchange.order(ev.client_order_id)
            if known is not None:
                work.statuses[ev.client_order_id] = known
                if not known.is_open:
                    self.human_orders.discard(ev.client_order_id)

    def _send(self, work: _Pending) -> None:
        """After the commit: transfers, cancels, then each order by its client order id."""
        for send in work.transfer_sends:
            self._make_transfer(send)
        for cid in dict.fromkeys(work.cancels):
            self.exchange.cancel(cid)
        for out in work.orders:
            ack = self.exchange.submit(out.order, out.client_order_id, out.bar)
            with self.store.transaction(self.run_id) as tx:
                tx.update_order_status(
                    out.client_order_id,
                    _STATUS[ack.status],
                    filled_quantity=ack.filled_quantity,
                    exchange_order_id=ack.exchange_order_id,
                )
            if ack.status == "rejected":
                work.rejected.setdefault(out.subaccount, []).append(
                    {
                        "client_order_id": out.client_order_id,
                        "symbol": out.order.symbol,
                        "side": str(out.order.side),
                        "reason": ack.reason,
                        "status": "rejected",
                    }
                )

    # --- the store ------------------------------------------------------------------------
    def _write(self, tx: Any, work: _Pending) -> None:
        for name, records in work.decisions.items():
            tx.add_decisions(records, subaccount=name)
        if work.orders:
            rows = []
            self.known_cids.update(out.client_order_id for out in work.orders)
            for out in work.orders:
                o = out.order
                rows.append(
                    {
                        "client_order_id": out.client_order_id,
                        "subaccount": out.subaccount,
                        "decision_id": o.decision_id,
                        "leg": out.leg,
                        "symbol": o.symbol,
                        "side": str(o.side),
                        "type": str(o.type),
                        "quantity": o.quantity,
                        "quote_quantity": o.quote_quantity,
                        "limit_price": o.limit_price,
                        "time_in_force": str(o.time_in_force),
                        "expires_at": o.expires_at,
                        "reduce_only": o.reduce_only,
                        "leverage": o.leverage,
                        "reason": o.reason,
                        "status": "new",
                        "bar": out.bar,
                    }
                )
            tx.add_orders(rows)
        for cid, known in work.statuses.items():
            try:
                tx.update_order_status(
                    cid,
                    _STATUS[known.status],
                    filled_quantity=known.filled_quantity,
                    exchange_order_id=known.exchange_order_id,
                )
            except StoreError:
                log.warning("the exchange reports order %s, which this run never wrote", cid)
        if work.fills:
            tx.add_fills(work.fills)
        for p in work.proposals:
            pid = tx.add_proposal(p)
            if "_row" in p:  # a transfer proposal: its row names it
                p["_row"]["guard"]["proposal_id"] = pid
        for pid, values in work.proposal_updates:
            tx.update_proposal(pid, **values)
        for cid, status, outcome in work.commands:
            tx.finish_command(cid, status, outcome)
        for scope, rec in work.overrides:
            tx.add_overrides([rec], scope=scope)
        if work.breaker_changes:
            tx.add_breaker_changes(work.breaker_changes)
        if work.transfers:
            tx.add_transfers(work.transfers)
        for tid, status, expect, values in work.transfer_updates:
            tx.update_transfer(tid, status, expect=expect, **values)

    def _commit(
        self,
        i: int,
        ts: pd.Timestamp,
        equities: Mapping[str, float],
        total: float,
        work: _Pending,
    ) -> None:
        with self.store.transaction(self.run_id, bar=i, timestamp=ts) as tx:
            self._write(tx, work)
            rows = []
            for name, eq in equities.items():
                sub = self.account.subaccount(name)
                rows.append(
                    {
                        "subaccount": name,
                        "equity": eq,
                        "cash": sub.cash,
                        "positions": {s: p.quantity for s, p in sub.positions.items()},
                    }
                )
            rows.append({"subaccount": "*account", "equity": total, "cash": self.account_cash()})
            tx.add_balances(rows)
            tx.save_state("runner", self._state())
            tx.save_state("status", self._status(ts, i, equities, total))
            tx.set_checkpoint(i, ts)

    def account_cash(self) -> float:
        return float(sum(s.cash for s in self.account.subaccounts.values()))

    def _status(
        self,
        ts: pd.Timestamp,
        i: int,
        equities: Mapping[str, float] | None = None,
        total: float | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"timestamp": ts.isoformat(), "bar": i, "subaccounts": {}}
        eq_total = 0.0
        for name, s in self.subs.items():
            sub = self.account.subaccount(name)
            eq = equities[name] if equities else self._marked(name, i)[1]
            eq_total += eq
            day = ts.normalize().isoformat()
            out["subaccounts"][name] = {
                "mode": s.mode,
                "paused": s.paused,
                "trading_state": str(s.step.safety.trading_state),
                "equity": eq,
                "cash": sub.cash,
                "positions": {sym: p.quantity for sym, p in sub.positions.items()},
                "limits": s.step.safety.limits.limits.model_dump(mode="json"),
                "envelope": None if s.envelope is None else s.envelope.to_dict(),
                "turnover_today": s.sent_today if s.sent_day == day else 0.0,
            }
        out["account"] = {
            "equity": total if total is not None else eq_total,
            "state": None if self.account_breaker is None else str(self.account_breaker.state),
        }
        out["gate"] = self._gate_doc()
        return out

    def _gate_doc(self) -> dict[str, Any]:
        """The reconciliation gate as ``trimtab status`` shows it."""
        rec = self.gate
        if rec is None:
            return {"state": self.gate_state, "summary": "not reconciled yet"}
        doc = rec.to_dict()
        doc["summary"] = rec.summary()
        doc["held_fills"] = list(self.held_fills)
        return doc

    def _report(
        self,
        i: int,
        ts: pd.Timestamp,
        equities: Mapping[str, float],
        total: float,
        previous: Mapping[str, str],
        work: _Pending,
    ) -> CycleReport:
        m = self.m
        waiting = self.store.proposals(self.run_id, status="pending", floats=True)
        subs = {}
        for name, s in self.subs.items():
            sub = self.account.subaccount(name)
            positions = {sym: p.quantity for sym, p in sub.positions.items() if p.quantity}
            subs[name] = SubaccountCycle(
                name=name,
                mode=s.mode,
                paused=s.paused,
                trading_state=s.last_state,
                previous_trading_state=previous[name],
                equity=equities[name],
                peak=s.peak,
                cash=sub.cash,
                positions=positions,
                marks={sym: float(m.close_filled[i][m.column[sym]]) for sym in positions},
                stale=[sym for sym in positions if not m.tradable[i][m.column[sym]]],
                rejected=work.rejected.get(name, []),
                proposals_waiting=[
                    {
                        "proposal_id": p["proposal_id"],
                        "expires_at": p["expires_at"],
                        "legs": len(p["legs"]),
                        "kind": p.get("kind", "orders"),
                        "summary": p.get("summary"),
                    }
                    for p in waiting
                    if p["subaccount"] == name
                ],
                decision=(work.decisions.get(name) or [None])[-1],
            )
        instruments: dict[str, Instrument] = {}
        for sc in subs.values():
            for sym in sc.positions:
                instruments[sym] = self.exchange.instrument(sym)
        panel = self.context.panel
        if self.observers:  # nothing after the close of bar i
            panel = panel.slice(None, panel.index[i])
        return CycleReport(
            run_id=self.run_id,
            bar=i,
            timestamp=ts,
            account_equity=total,
            account_state=None if self.account_breaker is None else str(self.account_breaker.state),
            subaccounts=subs,
            instruments=instruments,
            panel=panel,
        )


def _fields(m: MarketArrays) -> dict[str, np.ndarray]:
    """The bar fields an observation carries."""
    return {
        "open": m.open,
        "high": m.high,
        "low": m.low,
        "close": m.close,
        "quote_volume": m.quote_volume,
    }


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _notional(order: Order, price: float) -> float:
    if order.quote_quantity is not None:
        return float(order.quote_quantity)
    return float(order.quantity or 0.0) * float(price)


def _override(key: str, old: Any, new: Any, by: str, reason: str, ts: pd.Timestamp) -> Any:
    from trimtab.guard.limits import LimitOverride

    return LimitOverride(key, old, new, by, reason or "(no reason given)", ts)


def _held_key(h: Mapping[str, Any]) -> str | None:
    if h.get("client_order_id"):
        return str(h["client_order_id"])
    oid = (h.get("data") or {}).get("exchange_order_id")
    return None if oid is None else str(oid)


def _order_key(ev: ExchangeEvent) -> str | None:
    """What a person names an order by to adopt it: its client order id, else the
    exchange's order id."""
    return _held_key({"client_order_id": ev.client_order_id, "data": ev.data})


def _fill_row(fill: Fill, ev: ExchangeEvent) -> dict[str, Any]:
    return {
        "client_order_id": ev.client_order_id,
        # The exchange's own trade id where it has one (per symbol on Binance), else the
        # paper exchange's event number: unique per run either way.
        "trade_id": f"{fill.symbol}:{ev.data['trade_id']}"
        if ev.data.get("trade_id") is not None
        else f"{ev.seq}",
        "timestamp": fill.timestamp,
        "symbol": fill.symbol,
        "side": str(fill.side),
        "quantity": fill.quantity,
        "price": fill.price,
        "fee": fill.fee,
        "fee_currency": fill.fee_currency,
        "liquidity": str(fill.liquidity) if fill.liquidity else str(Liquidity.TAKER),
        "subaccount": fill.subaccount,
        "reason": fill.reason,
    }


def _order_from_row(row: Mapping[str, Any]) -> Order:
    expires = row.get("expires_at")
    return Order(
        symbol=row["symbol"],
        side=Side(row["side"]),
        quantity=None if row.get("quantity") is None else float(row["quantity"]),
        quote_quantity=None if row.get("quote_quantity") is None else float(row["quote_quantity"]),
        type=OrderType(row.get("type") or "market"),
        limit_price=None if row.get("limit_price") is None else float(row["limit_price"]),
        reduce_only=bool(row.get("reduce_only")),
        subaccount=row["subaccount"],
        leverage=float(row.get("leverage") or 1.0),
        reason=str(row.get("reason") or ""),
        decision_id=row.get("decision_id"),
        time_in_force=TimeInForce(row.get("time_in_force") or "next_bar"),
        expires_at=None if expires is None else pd.Timestamp(expires),
    )


def _refuse_approved(work: _Pending, tid: str, pid: int, guard: dict[str, Any], note: str) -> None:
    """An approved transfer not made at this close: its row and its proposal refused."""
    work.transfer_updates.append(
        (tid, "refused", ("approved",), {"amount": 0.0, "guard": guard, "at_this_bar": True})
    )
    work.proposal_updates.append((pid, {"status": "refused", "note": note}))


def _proposed_request(doc: Mapping[str, Any], timestamp: pd.Timestamp) -> TransferRequest:
    """The transfer request a transfer proposal's document holds, asked at ``timestamp``."""
    return TransferRequest(
        timestamp=timestamp,
        source=str(doc["source"]),
        target=str(doc["target"]),
        amount=float(doc["amount"]),
        reason=str(doc.get("reason") or ""),
        origin=str(doc.get("origin") or "scheduled"),
        allow_partial=bool(doc.get("allow_partial", False)),
    )


def _booked_amount(row: Mapping[str, Any]) -> float:
    """USDT a stored transfer row moved in the runner's ledger (0 when not booked)."""
    if row["status"] not in ("new", "done"):
        return 0.0
    return float(row["amount"])
