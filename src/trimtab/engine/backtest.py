"""The backtest: the pipeline step on a historical clock, for one subaccount or many.

At every bar t, in order:

1. act on the previous decisions: the broker fills orders decided at the close of t-1
   during bar t (market orders at its open), books funding and liquidations;
2. move capital: due transfers between subaccounts, each through the transfer guard;
3. mark every subaccount at the close of t (equity, weights) and the account's total;
   the breakers read them;
4. each subaccount's ``PipelineStep`` observes -> assesses -> decides -> guards ->
   records, seeing bars 0..t only, and its orders go to the broker.

The last bar is marked but decides nothing, since nothing could execute after it. The
loop owns the clock, the broker and the ledger; the steps own the decisions.

A sleeve subaccount (``SubaccountSpec.sleeve``: a strategy simulated on its own clock,
``trimtab.strategies.sleeve``) has no broker and holds no position: in step 1 its cash
moves by its equity of the bar before times the simulation's return over the bar, and
its simulated fills of the bar become its trade rows (``SleeveBars``). Its guard,
transfers, the account's total and breaker treat it as any subaccount.

Recording and resuming: ``run(recorder=...)`` hands a ``Recorder`` (the store's one is
``trimtab.engine.recording.RunRecorder``) a ``BarRecord`` of each bar (decisions, orders
with their leg, order status changes, trade rows, rejections, balances, transfers,
breaker changes) and a way to take every component's saved state (``state``: the
account, the broker, each subaccount's step, the account breaker and the loop's own
scalars: peaks, the order counter). Before the first bar the recorder may return a
``SavedRun``: the saved states and the ``BarRecord``s of every completed bar, which the
loop replays into its accumulators; the run then continues at the next bar and ends
with results equal to an uninterrupted run's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trimtab.data.panel import bars_per_year
from trimtab.domain import Account, Fill, Instrument, Subaccount
from trimtab.domain.decisions import GuardAction, Observation, PortfolioState
from trimtab.domain.orders import OrderType, Rejection, Side
from trimtab.domain.quotes import check_traded_quotes
from trimtab.domain.transfers import Transfer, TransferRequest
from trimtab.engine.context import MarketContext
from trimtab.engine.run_record import (
    BarRecord,
    Recorder,
    RunClock,
    SavedRun,
    SentOrder,
    SubaccountBar,
)
from trimtab.engine.step import Assessor, FeatureAssessor, PipelineStep
from trimtab.execution.broker import ExecutionReport
from trimtab.execution.costs import CostModel
from trimtab.execution.simulated import FundingRates, SimulatedBroker
from trimtab.guard.breakers import CircuitBreaker, StateChange, TradingState
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import Policy

__all__ = [
    "Assessor",
    "Backtest",
    "BacktestConfig",
    "BacktestResult",
    "BarRecord",
    "FeatureAssessor",
    "PortfolioBacktest",
    "PortfolioResult",
    "Recorder",
    "RunClock",
    "SavedRun",
    "SentOrder",
    "SubaccountBar",
    "SleeveBars",
    "SubaccountSpec",
]

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class BacktestConfig:
    """Run settings. ``initial_cash`` is in quote currency (USDT)."""

    initial_cash: float = 100_000.0
    costs: CostModel = field(default_factory=CostModel)
    subaccount: str = "main"
    record_holds: bool = True
    #: The fast paths, each used only where it gives the event path's result exactly:
    #: a bar's market orders filled as arrays (``SimulatedBroker``'s ``vector_fills``),
    #: and no pipeline step on the holds a policy declares in advance (``holds_at``, a
    #: target replay's bars without targets) when holds are not recorded and the guard
    #: has no breakers. False forces the event path: every order one by one, the step on
    #: every bar.
    vector_fills: bool = True

    def __post_init__(self) -> None:
        if not (np.isfinite(self.initial_cash) and self.initial_cash > 0):
            raise ValueError(f"initial_cash must be > 0, got {self.initial_cash}")


@dataclass
class BacktestResult:
    """A run's outputs. ``weights`` are end-of-bar fractions of equity."""

    policy: str
    equity: pd.Series
    weights: pd.DataFrame
    gross_exposure: pd.Series
    trades: pd.DataFrame
    decisions: list[dict[str, Any]]
    rejections: pd.DataFrame
    account: Account
    periods_per_year: float
    states: pd.DataFrame | None = None
    safety: dict[str, Any] | None = None
    target_weights: pd.DataFrame | None = None
    subaccount: str = "main"
    flows: pd.Series | None = None
    #: Per (bar, symbol) held or traded: ``LEDGER_COLUMNS`` (quantity at the close, base
    #: units; the close mark and the bar's open, quote; funding received and margin
    #: forfeited in liquidations in the bar, quote). None for a run resumed from a store
    #: written before its bar records held funding per symbol.
    ledger: pd.DataFrame | None = None

    @property
    def nav(self) -> pd.Series:
        """Equity with transfers taken out: starts at the first bar's equity and moves
        only with returns (time-weighted), for metrics of a subaccount that moved capital."""
        flows = self.flows if self.flows is not None else self.equity * 0.0
        prev = self.equity.shift(1)
        growth = ((self.equity - flows) / prev).fillna(1.0)
        growth = growth.where(prev > 0, 1.0)
        return growth.cumprod() * float(self.equity.iloc[0])

    @property
    def fees_paid(self) -> float:
        return sum(s.fees_paid for s in self.account.subaccounts.values())

    @property
    def dust(self) -> list[dict[str, Any]]:
        """What full exits could not sell (under one lot or an exchange minimum, as
        recorded in their decisions' ``skipped``) and is still held at the end:
        symbol, subaccount, quantity (base units), value (quote at the last close)."""
        recorded = {
            s["symbol"]: s for d in self.decisions for s in d.get("skipped", ()) if s.get("dust")
        }
        out = []
        for sub in self.account.subaccounts.values():
            for symbol, pos in sub.positions.items():
                left = recorded.get(symbol)
                # Bought back since: a holding again, not dust.
                if left is None or pos.quantity > float(left["quantity"]) * (1 + 1e-9):
                    continue
                value = float(self.weights[symbol].iloc[-1] * self.equity.iloc[-1])
                out.append(
                    {
                        "symbol": symbol,
                        "subaccount": sub.name,
                        "quantity": pos.quantity,
                        "value": value,
                        "reason": left["reason"],
                    }
                )
        return out


TRADE_COLUMNS = [
    "timestamp",
    "symbol",
    "side",
    "quantity",
    "price",
    "fee",
    "fee_currency",
    "fee_quote",
    "reason",
    "decision_id",
]

#: The ledger's rows (``BacktestResult.ledger``, ``ledger.csv``), read by attribution.
LEDGER_COLUMNS = ["timestamp", "symbol", "quantity", "mark", "open", "funding", "liquidation"]

# ``kind``: rejected, expired (time in force ran out) or cancelled (replaced by a new plan).
REJECTION_COLUMNS = ["timestamp", "symbol", "side", "reason", "decision_id", "kind"]


class TransferSource(Protocol):
    """The transfer decisions due at the close of bar ``ts`` (``previous``: the bar before;
    ``equity``: each subaccount's equity at that close, before any transfer, in quote;
    ``history``: each subaccount's equity at the earlier closes of the run, after their
    transfers, and the transfers themselves (in > 0), as two arrays)."""

    def requests(
        self,
        ts: pd.Timestamp,
        previous: pd.Timestamp | None,
        equity: Mapping[str, float],
        history: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> Sequence[TransferRequest]: ...


class TransferGuard(Protocol):
    """Checks a transfer against the ledger and the subaccounts' guards."""

    def check(
        self,
        request: TransferRequest,
        account: Account,
        marks: Mapping[str, float],
        safeties: Mapping[str, SafetyLayer],
        ts: pd.Timestamp,
    ) -> Transfer: ...


@dataclass(frozen=True)
class SleeveBars:
    """A sleeve subaccount over the run's bars (index k: the run's bar k).

    ``returns[k]``: the simulation's simple return from the close of bar k-1 to the
    close of bar k (``returns[0]`` is not used: the subaccount starts at the first
    close). At bar k >= 1, while its guard was ACTIVE at the close before (REDUCING or
    HALTED stop it: its book taken off at the mark, cash until ACTIVE again), its cash,
    which is its whole equity, moves by that equity times ``max(returns[k], -1)``, before
    the bar's transfers: an isolated subaccount loses at most what it holds.
    ``equity[k]``: the simulation's equity at the close of bar k (USDT). ``fills[k]``:
    its fills in bar k, ``(timestamp, symbol, side, quantity, price, fee, reason)`` at
    the simulation's size (fee in USDT), booked as trade rows scaled by the subaccount's
    equity over the simulation's at the close before (no order, no decision id).
    """

    returns: np.ndarray
    equity: np.ndarray
    fills: Sequence[Sequence[tuple]]

    def __post_init__(self) -> None:
        if not (len(self.returns) == len(self.equity) == len(self.fills)):
            raise ValueError("a sleeve's returns, equity and fills need one entry per bar")


@dataclass
class SubaccountSpec:
    """One isolated subaccount of a portfolio run: its policy, its guard (None: limits
    only, as a reference policy runs) and its starting cash (quote, USDT); ``sleeve``:
    a subaccount without a broker whose equity follows a simulation (``SleeveBars``)."""

    name: str
    policy: Policy
    initial_cash: float
    safety: SafetyLayer | None = None
    record_holds: bool = True
    assessor: Assessor | None = None
    sleeve: SleeveBars | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.initial_cash) and self.initial_cash > 0):
            raise ValueError(
                f"subaccount {self.name!r}: initial cash must be > 0, got {self.initial_cash}"
            )


@dataclass
class PortfolioResult:
    """A portfolio run: each subaccount's result, the account total (quote, USDT, at each
    bar's close) and the transfer records."""

    subaccounts: dict[str, BacktestResult]
    equity: pd.Series
    transfers: list[dict[str, Any]]
    account: Account
    periods_per_year: float
    account_state: pd.Series | None = None


class _FillGuards:
    """The broker's fill guard for many subaccounts: each fill goes to its own guard."""

    def __init__(self, guards: Mapping[str, SafetyLayer]) -> None:
        self.guards = dict(guards)

    def check_fill(
        self, fill: Fill, instrument: Instrument, sub: Subaccount, marks: Mapping[str, float]
    ) -> tuple[float, list[GuardAction]]:
        return self.guards[sub.name].check_fill(fill, instrument, sub, marks)

    def on_fill(self, fill: Fill) -> None:
        self.guards[fill.subaccount].on_fill(fill)

    def spot_fills_unbounded(self, subaccount: str) -> bool:
        """Can ``subaccount``'s guard refuse or cut no spot fill (see
        ``SafetyLayer.spot_fills_unbounded``)? The broker's array path then skips it."""
        return self.guards[subaccount].spot_fills_unbounded()

    def on_fills(
        self,
        subaccount: str,
        timestamp: pd.Timestamp,
        order_ids: Sequence[int],
        notionals: Sequence[float],
    ) -> None:
        self.guards[subaccount].on_fills(timestamp, order_ids, notionals)


class _Book:
    """What the loop keeps for one subaccount while it runs."""

    def __init__(
        self, spec: SubaccountSpec, sub: Subaccount, n_steps: int, n_sym: int, fast: bool = True
    ) -> None:
        self.spec = spec
        self.name = spec.name
        safety = spec.safety or SafetyLayer.limits_only(subaccount=spec.name)
        if safety.subaccount != spec.name:
            raise ValueError(
                f"subaccount {spec.name!r} is guarded by a safety layer made for "
                f"{safety.subaccount!r}"
            )
        self.safety = safety
        self.step = PipelineStep(
            spec.policy,
            safety,
            subaccount=spec.name,
            assessor=spec.assessor,
            record_holds=spec.record_holds,
        )
        self.sub = sub
        # A policy that declares its holds in advance (``holds_at``: a target replay),
        # guarded by limits alone (no breaker state to update or record), with the
        # default assess step and holds unrecorded: on its declared holds the step would
        # return no record, no order and the policy's constant telemetry, so it is not
        # run there.
        holds_at = getattr(spec.policy, "holds_at", None)
        self.declared_holds: Callable[[pd.Timestamp], bool] | None = (
            holds_at
            if fast
            and holds_at is not None
            and not spec.record_holds
            and not safety.has_breakers
            and spec.assessor is None
            else None
        )
        self.qty = np.zeros(n_sym)
        self.offset = 0.0
        self.peak = spec.initial_cash
        self.equity = np.empty(n_steps)
        self.held = np.zeros((n_steps, n_sym))
        self.flows = np.zeros(n_steps)
        self.fills: list[tuple] = []
        # The broker's order id of each trade row (None: no order), for a recorder.
        self.fill_orders: list[int | None] = []
        self.rejections: list[tuple] = []
        self.decisions: list[dict[str, Any]] = []
        self.order_decision: dict[int, int] = {}
        self.states: list[str] = []
        self.ceilings: list[float] = []
        self.target_path = np.full((n_steps, n_sym), np.nan)
        # Ids of earlier decision records changed by this bar's fill events (recording).
        self.touched: set[int] | None = None
        # (run step, column) -> [funding received, margin forfeited] (quote), sparse.
        self.carry: dict[tuple[int, int], list[float]] = {}


class PortfolioBacktest:
    """Isolated subaccounts, one policy each, over one ``MarketContext`` and one broker.

    Each subaccount has its own cash, positions, guard and decisions: a loss in one can
    never draw on another's cash (the ledger refuses it). ``account_breaker`` (optional)
    reads the account's total equity and, when it trips, restricts every subaccount whose
    guard has breakers. Capital moves only as transfers: ``transfers`` proposes them,
    ``transfer_guard`` checks each, and every one is recorded, moved or not.
    """

    def __init__(
        self,
        context: MarketContext,
        subaccounts: Sequence[SubaccountSpec],
        *,
        costs: CostModel | None = None,
        instruments: Mapping[str, Instrument] | None = None,
        funding: FundingRates | None = None,
        account_breaker: CircuitBreaker | None = None,
        transfers: TransferSource | None = None,
        transfer_guard: TransferGuard | None = None,
        vector_fills: bool = True,
    ) -> None:
        """``vector_fills=False`` forces the event path (see
        ``BacktestConfig.vector_fills``)."""
        if not subaccounts:
            raise ValueError("a portfolio run needs at least one subaccount")
        names = [s.name for s in subaccounts]
        duplicate = sorted({n for n in names if names.count(n) > 1})
        if duplicate:
            raise ValueError(f"subaccount names must be unique: {', '.join(duplicate)}")
        if transfers is not None and transfer_guard is None:
            raise ValueError("transfers need a transfer guard: none may move unchecked")
        self.context = context
        self.specs = list(subaccounts)
        self.costs = costs or CostModel()
        self.instruments = instruments
        self.funding = funding
        self.account_breaker = account_breaker
        self.transfers = transfers
        self.transfer_guard = transfer_guard
        self.vector_fills = vector_fills
        # A pair quoted in another currency than the subaccounts' USDT cash (ADABTC) would
        # be bought at its BTC price as if it were USDT: refused before the run.
        traded = context.universe[context.start_i : context.end_i + 1].any(axis=0)
        check_traded_quotes(
            [s for s, t in zip(context.market.symbols, traded, strict=True) if t],
            instruments or {},
            "USDT",
            where=f"backtest, subaccounts {', '.join(repr(n) for n in names)} (cash in USDT)",
        )

    def run(
        self, progress: ProgressCallback | None = None, recorder: Recorder | None = None
    ) -> PortfolioResult:
        """Step through every bar. With ``recorder``, each bar is recorded and a run it
        returns at ``begin`` is taken up at its checkpoint (see the module docstring)."""
        run = _Run(self, recording=recorder is not None)
        n = len(run.steps)
        start = 0
        if recorder is not None:
            saved = recorder.begin(run.clock())
            if saved is not None:
                start = run.restore(saved) + 1
        report_every = max(n // 100, 1)
        for k in range(start, n):
            record = run.bar(k)
            if recorder is not None:
                assert record is not None
                recorder.record(record, run.state)
            if progress is not None and (k % report_every == 0):
                progress(k + 1, n)
        if progress is not None:
            progress(n, n)
        result = run.result()
        if recorder is not None:
            recorder.finish(result)
        return result


class _Run:
    """One run of the loop: the ledger, the broker, each subaccount's book and the
    account's totals, advanced bar by bar, saved (``state``) and restored (``restore``)."""

    def __init__(self, bt: PortfolioBacktest, recording: bool = False) -> None:
        ctx = bt.context
        m = ctx.market
        self.bt, self.ctx, self.m = bt, ctx, m
        self.recording = recording
        account = Account()
        for spec in bt.specs:
            account.add_subaccount(spec.name, spec.initial_cash)
        self.account = account
        self.n_sym = len(m.symbols)
        self.steps = range(ctx.start_i, ctx.end_i + 1)
        n = len(self.steps)
        self.books = [
            _Book(spec, account.subaccount(spec.name), n, self.n_sym, bt.vector_fills)
            for spec in bt.specs
        ]
        self.by_name = {b.name: b for b in self.books}
        self.safeties = {b.name: b.safety for b in self.books}
        self.sleeve_books = [b for b in self.books if b.spec.sleeve is not None]
        for b in self.sleeve_books:
            assert b.spec.sleeve is not None
            if len(b.spec.sleeve.returns) != n:
                raise ValueError(
                    f"subaccount {b.name!r}: its sleeve has {len(b.spec.sleeve.returns)} "
                    f"bars, the run {n}"
                )
        if bt.account_breaker is not None:
            for b in self.books:
                if b.safety.has_breakers:
                    b.safety.share_account_breaker(bt.account_breaker)
        # Each fill is checked by its own subaccount's guard at its own price.
        self.broker = SimulatedBroker(
            account,
            m,
            bt.costs,
            bt.instruments,
            bt.funding,
            fill_guard=_FillGuards(self.safeties),
            vector_fills=bt.vector_fills,
        )
        periods = bars_per_year(m.index)
        for b in self.books:
            b.step.reset(m.symbols, periods)
            if recording:
                b.touched = set()
        self.fields = {
            "open": m.open,
            "high": m.high,
            "low": m.low,
            "close": m.close,
            "quote_volume": m.quote_volume,
        }
        self.marks = m.close_filled
        self.total = np.empty(n)
        # The run step whose close starts each step's UTC day (the account breaker's daily
        # loss is measured from the total equity there): the last close before the day's
        # first bar (on daily bars, the bar before); the first day starts at the first
        # close. From the index, once.
        days = m.index[ctx.start_i : ctx.end_i + 1].normalize().asi8
        new_day = np.r_[True, days[1:] != days[:-1]] if n else np.zeros(0, bool)
        first = np.maximum.accumulate(np.where(new_day, np.arange(n), 0))
        self.day_start_step = np.maximum(first - 1, 0)
        self.total_peak = float(sum(s.initial_cash for s in bt.specs))
        self.account_states: list[str] = []
        self.transfer_records: list[dict[str, Any]] = []
        # Ids numbered by the run, so a resumed run numbers them the same.
        self.next_order_id = 1
        # The bar records carry each bar's funding and liquidation losses per symbol
        # (``SubaccountBar.carry``), so a resumed run rebuilds the ledger from them too.
        self.with_ledger = True

    def clock(self) -> RunClock:
        m = self.m
        return RunClock(
            tuple(m.timestamps[i] for i in self.steps),
            tuple(m.symbols),
            tuple(b.name for b in self.books),
        )

    def bar(self, k: int) -> BarRecord | None:
        """Run bar ``k`` of the run (see the module docstring for the order); its record
        when recording."""
        m, books, broker, bt = self.m, self.books, self.broker, self.bt
        i = self.steps[k]
        ts = m.timestamps[i]
        log = _BarLog(self, k) if self.recording else None
        if k:
            report = broker.on_bar(i)
            if report.fills or report.liquidations or report.funding:
                self._refresh_ledger_views(report)
            _route_report(report, broker, self.by_name)
            if report.funding or report.liquidations:
                self._book_carry(k, report)
            if log is not None:
                log.report(report, broker)
            if self.sleeve_books:
                self._book_sleeves(k)
        transfers_before = len(self.transfer_records)
        if bt.transfers is not None:
            self._move_capital(ts, m.timestamps[i - 1] if i else None, i, k)
            if log is not None:
                log.deciders = self._decider_records(k, transfers_before)
        marks = self.marks
        eq_total = 0.0
        for b in books:
            # Same as sub.equity(marks at close), without a Python loop over positions.
            eq = b.sub.cash + float(b.qty @ marks[i]) + b.offset
            b.equity[k] = eq
            b.held[k] = b.qty
            b.peak = max(b.peak, eq)
            eq_total += eq
        self.total[k] = eq_total
        self.total_peak = max(self.total_peak, eq_total)
        account_changes: list[StateChange] = []
        if bt.account_breaker is not None:
            account_changes = bt.account_breaker.update(
                ts,
                eq_total,
                self.total_peak,
                float(self.total[self.day_start_step[k]]),
                True,
                0,
            )
            self.account_states.append(str(bt.account_breaker.state))
        last = i == self.ctx.end_i
        for b in books:
            changes: list[StateChange] = []
            if b.safety.has_breakers:
                # Stale data: a held asset without a real bar at this close.
                fresh = bool(np.all(m.tradable[i][b.qty != 0]))
                own = b.step.mark(ts, b.equity[k], b.peak, fresh)
                changes = account_changes + own
                b.states.append(str(b.safety.trading_state))
                if log is not None:
                    log.changes[b.name] = own
            if last:
                continue
            self._decide(b, k, i, ts, changes, log)
        if log is None:
            return None
        return log.finish(account_changes, self.transfer_records[transfers_before:], last)

    def _book_sleeves(self, k: int) -> None:
        """Each sleeve's return and fills over bar k (``SleeveBars``)."""
        for b in self.sleeve_books:
            sleeve = b.spec.sleeve
            assert sleeve is not None
            base = b.sub.cash
            if base <= 0 or b.safety.trading_state is not TradingState.ACTIVE:
                continue
            r = max(float(sleeve.returns[k]), -1.0)
            if r:
                pnl = base * r
                b.sub.cash = base + pnl if r > -1.0 else 0.0
                b.sub.realized_pnl += b.sub.cash - base
            prior = float(sleeve.equity[k - 1])
            scale = base / prior if prior > 0 else 0.0
            scaled = abs(scale - 1.0) > 1e-9
            for ts, symbol, side, quantity, price, fee, reason in sleeve.fills[k]:
                if scaled:
                    reason = f"{reason} (x{scale:.4g} of the simulation's size)"
                fee = float(fee) * scale
                b.fills.append(
                    (
                        ts,
                        symbol,
                        side,
                        float(quantity) * scale,
                        price,
                        fee,
                        "USDT",
                        fee,
                        reason,
                        None,
                    )
                )
                b.fill_orders.append(None)

    def _book_carry(self, k: int, report: ExecutionReport) -> None:
        """Funding and liquidation losses of bar k per subaccount and symbol (ledger)."""
        column = self.m.column
        for name, symbol, amount in report.funding:
            self.by_name[name].carry.setdefault((k, column[symbol]), [0.0, 0.0])[0] += amount
        for liq in report.liquidations:
            key = (k, column[liq.symbol])
            self.by_name[liq.subaccount].carry.setdefault(key, [0.0, 0.0])[1] += (
                liq.margin_forfeited
            )

    def _refresh_ledger_views(self, report: ExecutionReport) -> None:
        """Each book's quantities and perpetual offset after the bar's fills (as
        ``_ledger_view`` computes them): spot fills change only their own symbols'
        quantities, so only those are read again; funding, liquidations and perpetual
        fills move the offset, and their books are read whole."""
        column, n = self.m.column, self.n_sym
        if report.liquidations or report.funding:
            for b in self.books:
                b.qty, b.offset = _ledger_view(b.sub, column, n)
            return
        changed: dict[str, set[str]] = {}
        if len(self.books) == 1:
            changed[self.books[0].name] = {f.symbol for f in report.fills}
        else:
            for f in report.fills:
                changed.setdefault(f.subaccount, set()).add(f.symbol)
        instrument = self.broker.instrument
        # No perpetual ever traded: none of these fills was one.
        perps = self.broker.perpetuals_traded
        for name, symbols in changed.items():
            b = self.by_name[name]
            if perps and any(instrument(s).is_perpetual for s in symbols):
                b.qty, b.offset = _ledger_view(b.sub, column, n)
                continue
            # A fresh array: an observation given the last one keeps what it saw.
            qty = b.qty.copy()
            positions = b.sub.positions
            for symbol in symbols:
                pos = positions.get(symbol)
                qty[column[symbol]] = pos.quantity if pos is not None else 0.0
            b.qty = qty

    def _decide(
        self,
        b: _Book,
        k: int,
        i: int,
        ts: pd.Timestamp,
        changes: list[StateChange],
        log: _BarLog | None,
    ) -> None:
        """The subaccount's step at the close of bar i, and its orders to the broker."""
        m, broker, ctx = self.m, self.broker, self.ctx
        if b.declared_holds is not None and b.declared_holds(ts):
            telemetry = b.step.policy.telemetry()
            b.ceilings.append(telemetry.exposure_ceiling)
            if telemetry.current_target is not None:
                b.target_path[k] = telemetry.current_target
            return
        obs = Observation(
            i,
            ts,
            m.symbols,
            self.fields,
            ctx.features,
            m.tradable[i],
            ctx.universe[i],
            PortfolioState(b.equity[k], b.sub.cash, b.qty, self.marks[i], b.peak, b.flows[k]),
            k,
            m.timestamps[i - 1] if i else None,
        )
        decision_id = len(b.decisions)
        out = b.step.step(obs, broker.instrument, decision_id, changes)
        b.ceilings.append(out.telemetry.exposure_ceiling)
        if out.telemetry.current_target is not None:
            b.target_path[k] = out.telemetry.current_target
        if out.record is None:
            return
        if out.replaces_open:
            self._cancel_open(b, ts, decision_id, log)
        sent = out.record.get("orders")
        orders = out.orders
        if log is None and orders and broker.accepts(orders):
            # Every order goes to the book (the common case): numbered, queued and
            # recorded in one pass, the same ids, queue and records as the loop below.
            next_id = self.next_order_id
            order_decision = b.order_decision
            for order in orders:
                # Fresh objects no one else holds (see below): renumbered in place.
                order.__dict__["id"] = next_id
                order_decision[next_id] = decision_id
                sent.append(_order_dict(order))
                next_id += 1
            self.next_order_id = next_id
            broker.submit_accepted(orders)
            b.decisions.append(out.record)
            return
        for leg, order in enumerate(orders):
            # Ids numbered by the run, so that a resumed run numbers them the same. The
            # plan's orders are fresh objects no one else holds: renumbered in place, as
            # a dataclass copy (with its validation again) costs more than the fill.
            object.__setattr__(order, "id", self.next_order_id)
            self.next_order_id += 1
            rejection = broker.submit(order)
            if rejection is None:
                b.order_decision[order.id] = decision_id
                sent.append(_order_dict(order))
            else:
                b.rejections.append(
                    (
                        ts,
                        order.symbol,
                        str(order.side),
                        rejection.reason,
                        decision_id,
                        rejection.kind,
                    )
                )
            if log is not None:
                status = "sent" if rejection is None else "rejected"
                log.orders[b.name].append(SentOrder(order.id, decision_id, leg, status, order))
        b.decisions.append(out.record)

    def _cancel_open(
        self, b: _Book, ts: pd.Timestamp, decision_id: int, log: _BarLog | None
    ) -> None:
        """A new plan replaces what is left of the subaccount's earlier ones."""
        broker = self.broker
        for stale in broker.open_orders():
            if stale.subaccount == b.name and broker.cancel(stale.id):
                _journal_fill_events(
                    ExecutionReport(
                        rejections=[
                            Rejection(stale, ts, f"replaced by decision {decision_id}", "cancelled")
                        ]
                    ),
                    b.order_decision,
                    b.decisions,
                    b.rejections,
                    b.touched,
                )
                if log is not None:
                    log.events[b.name].append((stale.id, "cancelled", 0.0))

    def _decider_records(self, k: int, transfers_before: int) -> dict[str, list[dict[str, Any]]]:
        """The transfer source's own decision records made at bar k (a source with a
        ``decisions`` method: the allocator's, recorded as ``*allocator``), given the
        bar's transfer records; only a recorded run asks."""
        decisions = getattr(self.bt.transfers, "decisions", None)
        if decisions is None:
            return {}
        stamps = self.ctx.index[: k + 1]
        return decisions(stamps, self.transfer_records[transfers_before:])

    def _move_capital(
        self, ts: pd.Timestamp, previous: pd.Timestamp | None, i: int, k: int
    ) -> None:
        """Due transfers at the close of bar i: each checked, recorded, moved if allowed.

        A subaccount's peak moves with its capital, so a transfer out is not a drawdown.
        """
        bt = self.bt
        assert bt.transfers is not None and bt.transfer_guard is not None
        equity = {
            name: book.sub.cash + float(book.qty @ self.marks[i]) + book.offset
            for name, book in self.by_name.items()
        }
        history = {name: (book.equity[:k], book.flows[:k]) for name, book in self.by_name.items()}
        requests = bt.transfers.requests(ts, previous, equity=equity, history=history)
        if not requests:
            return
        mark_map = {s: float(self.marks[i][j]) for s, j in self.m.column.items()}
        for request in requests:
            outcome = bt.transfer_guard.check(request, self.account, mark_map, self.safeties, ts)
            record = {"timestamp": ts.isoformat(), **outcome.to_dict()}
            self.transfer_records.append(record)
            moved = float(outcome.moved)
            if moved <= 0:
                continue
            self.account.transfer(request.source, request.target, moved)
            for name, sign in ((request.source, -1.0), (request.target, 1.0)):
                book = self.by_name[name]
                book.flows[k] += sign * moved
                book.peak = max(book.peak + sign * moved, 0.0)
                book.safety.on_transfer(sign * moved)

    # --- saved state -------------------------------------------------------------------
    def state(self) -> dict[str, dict[str, Any]]:
        """Every component's state after the bar just run, JSON-ready, by component:
        ``account``, ``broker``, ``account_breaker`` (when there is one), ``step:NAME``
        per subaccount (policy and guard) and ``loop`` (peaks, the order counter, each
        book's perpetual equity offset)."""
        out: dict[str, dict[str, Any]] = {
            "account": self.account.state(),
            "broker": self.broker.state(),
        }
        if self.bt.account_breaker is not None:
            out["account_breaker"] = self.bt.account_breaker.saved_state()
        for b in self.books:
            out[f"step:{b.name}"] = b.step.state()
        out["loop"] = {
            "next_order_id": self.next_order_id,
            "total_peak": float(self.total_peak),
            "books": {
                b.name: {"peak": float(b.peak), "offset": float(b.offset)} for b in self.books
            },
        }
        return out

    def restore(self, saved: SavedRun) -> int:
        """Take up a saved run: components from their states, accumulators replayed from
        the bar records; returns the last completed bar."""
        names = [b.name for b in self.books]
        k = saved.bar
        # Records from a store written before they carried funding: no ledger.
        self.with_ledger = saved.ledger
        if not 0 <= k < len(self.steps) or len(saved.bars) != k + 1:
            raise ValueError(
                f"a saved run at bar {k} needs records of bars 0..{k} of a run of "
                f"{len(self.steps)} bars; it has {len(saved.bars)}"
            )
        states = saved.states
        wanted = ["account", "broker", "loop", *(f"step:{n}" for n in names)]
        if self.bt.account_breaker is not None:
            wanted.append("account_breaker")
        missing = [w for w in wanted if w not in states]
        if missing:
            raise ValueError(f"the saved run lacks the state of {', '.join(missing)}")
        self.account.restore(states["account"])
        for b in self.books:
            b.sub = self.account.subaccount(b.name)
        self.broker.restore(states["broker"])
        if self.bt.account_breaker is not None:
            self.bt.account_breaker.restore(states["account_breaker"])
        for b in self.books:
            b.step.restore(states[f"step:{b.name}"])
        loop = states["loop"]
        self.next_order_id = int(loop["next_order_id"])
        self.total_peak = float(loop["total_peak"])
        for b in self.books:
            kept = loop["books"][b.name]
            b.peak, b.offset = float(kept["peak"]), float(kept["offset"])
        for j, record in enumerate(saved.bars):
            if record.bar != j:
                raise ValueError(f"the saved run's records are out of order at bar {j}")
            self._replay(record)
        for b in self.books:
            b.qty = b.held[k].copy()
        return k

    def _replay(self, record: BarRecord) -> None:
        """Put one recorded bar back into the accumulators, as running it had."""
        k = record.bar
        self.total[k] = record.total_equity
        if record.account_state is not None:
            self.account_states.append(record.account_state)
        self.transfer_records.extend(record.transfers)
        column, broker = self.m.column, self.broker
        for sb in record.subaccounts:
            b = self.by_name[sb.name]
            b.equity[k] = sb.equity
            held = np.zeros(self.n_sym)
            for symbol, quantity in sb.quantities.items():
                held[column[symbol]] = quantity
            b.held[k] = held
            b.flows[k] = sb.flow
            if sb.state is not None:
                b.states.append(sb.state)
            if sb.decided:
                b.ceilings.append(sb.exposure_ceiling)
            if sb.target is not None:
                b.target_path[k] = sb.target
            # Fills come before this bar's orders: none of those could fill yet.
            sleeve = b.spec.sleeve is not None
            for ts, symbol, side, quantity, price, fee, currency, reason, order_id in sb.trades:
                b.fills.append(
                    (
                        ts,
                        symbol,
                        side,
                        quantity,
                        price,
                        fee,
                        currency,
                        # A sleeve's fees are in USDT; its symbols need not be the run's.
                        fee if sleeve else _fee_quote(broker, symbol, fee, currency, price),
                        reason,
                        b.order_decision.get(order_id) if order_id is not None else None,
                    )
                )
                b.fill_orders.append(order_id)
            b.rejections.extend(sb.rejections)
            for symbol, (funding, forfeited) in sb.carry.items():
                b.carry[(k, column[symbol])] = [float(funding), float(forfeited)]
            for rec in sb.decisions:
                if rec.get("id") != len(b.decisions):
                    raise ValueError(
                        f"subaccount {sb.name!r}: saved decision {rec.get('id')} where "
                        f"{len(b.decisions)} was due"
                    )
                b.decisions.append(rec)
            for order in sb.orders:
                b.order_decision[order.order_id] = order.decision_id

    def result(self) -> PortfolioResult:
        ctx = self.ctx
        run_index = ctx.index
        results = {
            b.name: _result(b, ctx, self.account, run_index, ledger=self.with_ledger)
            for b in self.books
        }
        return PortfolioResult(
            subaccounts=results,
            equity=pd.Series(self.total, index=run_index, name="equity"),
            transfers=self.transfer_records,
            account=self.account,
            periods_per_year=ctx.panel.periods_per_year,
            account_state=(
                pd.Series(self.account_states, index=run_index, name="state")
                if self.bt.account_breaker is not None
                else None
            ),
        )


class _BarLog:
    """What a bar did, gathered for a recorder while the bar runs."""

    def __init__(self, run: _Run, k: int) -> None:
        self.run = run
        self.k = k
        books = run.books
        self.marks = {b.name: (len(b.fills), len(b.rejections), len(b.decisions)) for b in books}
        self.events: dict[str, list[tuple[int, str, float]]] = {b.name: [] for b in books}
        self.orders: dict[str, list[SentOrder]] = {b.name: [] for b in books}
        self.changes: dict[str, list[StateChange]] = {}
        # Decision records of the transfer source (the allocator), by recorded name.
        self.deciders: dict[str, list[dict[str, Any]]] = {}
        # (subaccount, symbol) funded or liquidated in the bar: its ``carry`` entries.
        self.carried: set[tuple[str, str]] = set()
        for b in books:
            assert b.touched is not None
            b.touched.clear()

    def report(self, report: ExecutionReport, broker: SimulatedBroker) -> None:
        """Order status changes of the broker's report: a fill leaves its order filled
        (or partially, while a remainder waits or when the rest expired), a rejection,
        expiry or cancel ends it."""
        still_open = {o.id for o in broker.open_orders()} if report.fills else set()
        still_open.update(r.order.id for r in report.rejections)
        for f in report.fills:
            if f.order_id:
                status = "partially_filled" if f.order_id in still_open else "filled"
                self.events[f.subaccount].append((f.order_id, status, float(f.quantity)))
        for r in report.rejections:
            self.events[r.order.subaccount].append((r.order.id, r.kind, 0.0))
        self.carried.update((name, symbol) for name, symbol, _ in report.funding)
        self.carried.update((liq.subaccount, liq.symbol) for liq in report.liquidations)

    def finish(
        self, account_changes: list[StateChange], transfers: list[dict[str, Any]], last: bool
    ) -> BarRecord:
        run, k = self.run, self.k
        symbols, column = run.m.symbols, run.m.column
        bars = []
        for b in run.books:
            fills_at, rejections_at, decisions_at = self.marks[b.name]
            qty = b.held[k]
            target = b.target_path[k]
            assert b.touched is not None
            bars.append(
                SubaccountBar(
                    name=b.name,
                    equity=float(b.equity[k]),
                    cash=float(b.sub.cash),
                    quantities={symbols[j]: float(qty[j]) for j in np.flatnonzero(qty)},
                    flow=float(b.flows[k]),
                    state=b.states[-1] if b.safety.has_breakers else None,
                    decided=not last,
                    exposure_ceiling=None if last else b.ceilings[-1],
                    target=None if np.isnan(target).all() else target.tolist(),
                    decisions=b.decisions[decisions_at:],
                    touched=[b.decisions[d] for d in sorted(b.touched) if d < decisions_at],
                    orders=self.orders[b.name],
                    order_events=self.events[b.name],
                    trades=[
                        (*row[:7], row[8], order)
                        for row, order in zip(
                            b.fills[fills_at:], b.fill_orders[fills_at:], strict=True
                        )
                    ],
                    rejections=b.rejections[rejections_at:],
                    breaker_changes=self.changes.get(b.name, []),
                    carry={
                        symbol: list(b.carry[(k, column[symbol])])
                        for name, symbol in sorted(self.carried)
                        if name == b.name
                    },
                )
            )
        return BarRecord(
            bar=k,
            timestamp=run.m.timestamps[run.steps[k]],
            total_equity=float(run.total[k]),
            account_state=run.account_states[-1] if run.bt.account_breaker is not None else None,
            transfers=list(transfers),
            subaccounts=bars,
            account_changes=list(account_changes),
            decisions=self.deciders,
        )


def _route_report(
    report: ExecutionReport, broker: SimulatedBroker, books: Mapping[str, _Book]
) -> None:
    """Give each subaccount its fills, liquidations, rejections and fill-guard actions."""
    if len(books) == 1:
        (only,) = books.values()
        _collect(report, broker, only)
        _journal_fill_events(
            report, only.order_decision, only.decisions, only.rejections, only.touched
        )
        return
    split = {name: ExecutionReport() for name in books}
    for f in report.fills:
        split[f.subaccount].fills.append(f)
    for liq in report.liquidations:
        split[liq.subaccount].liquidations.append(liq)
    for r in report.rejections:
        split[r.order.subaccount].rejections.append(r)
    for order, action in report.guard:
        split[order.subaccount].guard.append((order, action))
    for name, part in split.items():
        book = books[name]
        _collect(part, broker, book)
        _journal_fill_events(
            part, book.order_decision, book.decisions, book.rejections, book.touched
        )


def _collect(report: ExecutionReport, broker: SimulatedBroker, b: _Book) -> None:
    """Append the report's fills and liquidations as trade rows."""
    fills, order_decision, fill_orders = b.fills, b.order_decision, b.fill_orders
    # Each symbol's quote and each side's name looked up once per report, not per fill.
    quotes: dict[str, str] = {}
    sides: dict[Any, str] = {}
    instrument = broker.instrument
    for f in report.fills:
        order_id, symbol, fee, currency, price = (
            f.order_id,
            f.symbol,
            f.fee,
            f.fee_currency,
            f.price,
        )
        fill_orders.append(order_id or None)
        quote = quotes.get(symbol)
        if quote is None:
            quote = quotes[symbol] = instrument(symbol).quote
        side = sides.get(f.side)
        if side is None:
            side = sides[f.side] = str(f.side)
        fills.append(
            (
                f.timestamp,
                symbol,
                side,
                f.quantity,
                price,
                fee,
                currency,
                # As _fee_quote: as charged, or a base-asset fee at the price.
                fee if currency == quote else fee * price,
                f.reason,
                order_decision.get(order_id),
            )
        )
    for liq in report.liquidations:
        fill_orders.append(None)
        fills.append(
            (
                liq.timestamp,
                liq.symbol,
                "sell" if liq.quantity > 0 else "buy",
                abs(liq.quantity),
                liq.price,
                0.0,
                broker.instrument(liq.symbol).quote,
                0.0,
                f"liquidated; margin forfeited {liq.margin_forfeited:.2f}",
                None,
            )
        )


def _fee_quote(
    broker: SimulatedBroker, symbol: str, fee: float, currency: str, price: float
) -> float:
    """A fee in the symbol's quote currency: as charged, or a base-asset fee at the price."""
    return fee if currency == broker.instrument(symbol).quote else fee * price


def _ledger(b: _Book, ctx: MarketContext, index: pd.DatetimeIndex) -> pd.DataFrame:
    """The book's ``LEDGER_COLUMNS`` rows: every (bar, symbol) held at the close or the
    close before, traded, funded or liquidated in the bar."""
    m = ctx.market
    if b.spec.sleeve is not None:  # no position in the run's market
        return pd.DataFrame({c: [] for c in LEDGER_COLUMNS}, columns=LEDGER_COLUMNS)
    held = b.held != 0
    rows = held.copy()
    rows[1:] |= held[:-1]
    column = m.column
    if b.fills:
        # Each fill's bar: its timestamp's place in the run's index (-1 where none, as
        # get_indexer gives), found on the nanosecond integers without building an index
        # of Timestamp objects.
        stamps = np.fromiter((f[0].value for f in b.fills), dtype=np.int64, count=len(b.fills))
        keys = index.as_unit("ns").asi8
        at = np.minimum(np.searchsorted(keys, stamps), len(keys) - 1)
        pos = np.where(keys[at] == stamps, at, -1)
        cols = np.array([column[f[1]] for f in b.fills])
        ok = pos >= 0
        rows[pos[ok], cols[ok]] = True
    for k, j in b.carry:
        rows[k, j] = True
    ks, js = np.nonzero(rows)
    steps = ks + ctx.start_i
    carry = np.zeros((len(ks), 2))
    if b.carry:
        # Rows are in (bar, column) order: each event's row found by its flat key.
        n_sym = held.shape[1]
        keys = np.array([k * n_sym + j for k, j in b.carry])
        at = np.searchsorted(ks * n_sym + js, keys)
        carry[at] = np.array(list(b.carry.values()))
    return pd.DataFrame(
        {
            "timestamp": index[ks],
            "symbol": np.asarray(m.symbols, dtype=object)[js],
            "quantity": b.held[ks, js],
            "mark": m.close_filled[steps, js],
            "open": m.open[steps, js],
            "funding": carry[:, 0],
            "liquidation": carry[:, 1],
        },
        columns=LEDGER_COLUMNS,
    )


def _result(
    b: _Book, ctx: MarketContext, account: Account, index: pd.DatetimeIndex, ledger: bool = True
) -> BacktestResult:
    m = ctx.market
    equity = b.equity
    values = b.held * m.close_filled[ctx.start_i : ctx.end_i + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(equity[:, None] > 0, values / equity[:, None], 0.0)
    gross = np.abs(values).sum(axis=1)
    trades = pd.DataFrame(b.fills, columns=TRADE_COLUMNS)
    trades["decision_id"] = trades["decision_id"].astype("Int64")
    safety = b.safety if b.safety.has_breakers else None
    states = b.states
    return BacktestResult(
        policy=b.spec.policy.name,
        equity=pd.Series(equity, index=index, name="equity"),
        weights=pd.DataFrame(weights, index=index, columns=list(m.symbols)),
        gross_exposure=pd.Series(
            gross / np.where(equity > 0, equity, np.nan), index=index, name="gross_exposure"
        ),
        trades=trades,
        decisions=b.decisions,
        rejections=pd.DataFrame(b.rejections, columns=REJECTION_COLUMNS),
        account=account,
        periods_per_year=ctx.panel.periods_per_year,
        states=pd.DataFrame(
            {
                "state": states,
                "exposure_ceiling": b.ceilings + [np.nan] * (len(states) - len(b.ceilings)),
            },
            index=index[: len(states)],
        )
        if safety is not None
        else None,
        safety=safety.journal() if safety is not None else None,
        target_weights=(
            pd.DataFrame(b.target_path, index=index, columns=list(m.symbols))
            if np.isfinite(b.target_path).any()
            else None
        ),
        subaccount=b.name,
        flows=pd.Series(b.flows, index=index, name="flows"),
        ledger=_ledger(b, ctx, index) if ledger else None,
    )


class Backtest:
    """One policy in one subaccount over one ``MarketContext``.

    ``safety`` is the person's guard (limits and breakers); without one the policy runs
    as a reference (a baseline) under the default hard limits alone: every target and
    order is still guarded.
    """

    def __init__(
        self,
        context: MarketContext,
        policy: Policy,
        config: BacktestConfig | None = None,
        *,
        assessor: Assessor | None = None,
        instruments: Mapping[str, Instrument] | None = None,
        funding: FundingRates | None = None,
        safety: SafetyLayer | None = None,
    ) -> None:
        self.context = context
        self.policy = policy
        self.config = config or BacktestConfig()
        self.safety = safety
        cfg = self.config
        self._portfolio = PortfolioBacktest(
            context,
            [
                SubaccountSpec(
                    cfg.subaccount,
                    policy,
                    cfg.initial_cash,
                    safety=safety,
                    record_holds=cfg.record_holds,
                    assessor=assessor,
                )
            ],
            costs=cfg.costs,
            instruments=instruments,
            funding=funding,
            vector_fills=cfg.vector_fills,
        )

    def run(
        self, progress: ProgressCallback | None = None, recorder: Recorder | None = None
    ) -> BacktestResult:
        """Run the policy; ``recorder`` records it (and resumes it): see
        ``PortfolioBacktest.run``."""
        return self._portfolio.run(progress, recorder).subaccounts[self.config.subaccount]


def _journal_fill_events(
    report: ExecutionReport,
    order_decision: dict[int, int],
    decisions: list[dict[str, Any]],
    rejections: list[tuple],
    touched: set[int] | None = None,
) -> None:
    """Rejections, expiries and fill-time guard actions: rows for rejections.csv, and
    each one also in the record of the decision whose order it was (its id added to
    ``touched``, when given)."""
    for r in report.rejections:
        decision_id = order_decision.get(r.order.id)
        rejections.append(
            (r.timestamp, r.order.symbol, str(r.order.side), r.reason, decision_id, r.kind)
        )
        if decision_id is not None:
            if touched is not None:
                touched.add(decision_id)
            decisions[decision_id].setdefault("not_filled", []).append(
                {
                    "timestamp": r.timestamp.isoformat(),
                    "order": r.order.id,
                    "symbol": r.order.symbol,
                    "side": str(r.order.side),
                    "kind": r.kind,
                    "reason": r.reason,
                }
            )
    for order, action in report.guard:
        decision_id = order_decision.get(order.id)
        if decision_id is not None:
            if touched is not None:
                touched.add(decision_id)
            entry = {"order": order.id, **action.to_dict()}
            decisions[decision_id].setdefault("fill_guard", []).append(entry)


def _ledger_view(sub: Subaccount, column: dict[str, int], n: int) -> tuple[np.ndarray, float]:
    """Quantities per column, and what perpetuals add to equity beyond quantity * mark.

    A perpetual is worth ``margin + qty * (mark - entry)``, i.e. ``qty * mark`` plus
    ``margin - qty * entry``; spot is worth ``qty * mark``. Refreshed only when the
    ledger changes, so marking each bar is one dot product.
    """
    qty = np.zeros(n)
    offset = 0.0
    for symbol, pos in sub.positions.items():
        qty[column[symbol]] = pos.quantity
        if pos.instrument.is_perpetual:
            offset += pos.margin - pos.quantity * pos.entry_price
    return qty, offset


def _order_dict(order) -> dict[str, Any]:
    fields = order.__dict__
    quantity, quote_quantity = fields["quantity"], fields["quote_quantity"]
    out: dict[str, Any] = {
        "id": fields["id"],
        "symbol": fields["symbol"],
        "side": _NAMES[fields["side"]],
        "type": _NAMES[fields["type"]],
    }
    if quantity is not None:
        out["quantity"] = quantity
    if quote_quantity is not None:
        out["quote_quantity"] = quote_quantity
    out["reason"] = fields["reason"]
    return out


# str() of each side and order type, looked up (a StrEnum's str() is its value).
_NAMES: dict[Any, str] = {**{s: str(s) for s in Side}, **{t: str(t) for t in OrderType}}
