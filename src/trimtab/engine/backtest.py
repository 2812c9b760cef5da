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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trimtab.domain import Account, Fill, Instrument, Subaccount
from trimtab.domain.decisions import GuardAction, Observation, PortfolioState
from trimtab.domain.orders import Rejection
from trimtab.domain.quotes import check_traded_quotes
from trimtab.engine.context import MarketContext
from trimtab.engine.step import Assessor, FeatureAssessor, PipelineStep
from trimtab.execution.broker import ExecutionReport
from trimtab.execution.costs import CostModel
from trimtab.execution.simulated import FundingRates, SimulatedBroker
from trimtab.guard.breakers import CircuitBreaker, StateChange
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import Policy

__all__ = [
    "Assessor",
    "Backtest",
    "BacktestConfig",
    "BacktestResult",
    "FeatureAssessor",
    "PortfolioBacktest",
    "PortfolioResult",
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

# ``kind``: rejected, expired (time in force ran out) or cancelled (replaced by a new plan).
REJECTION_COLUMNS = ["timestamp", "symbol", "side", "reason", "decision_id", "kind"]


class TransferRequest(Protocol):
    """A capital move asked for: ``amount`` of quote (USDT) from ``source`` to ``target``."""

    source: str
    target: str
    amount: float
    reason: str


class TransferOutcome(Protocol):
    """The transfer guard's answer: ``moved`` (quote, 0 when refused) and the record."""

    moved: float

    def to_dict(self) -> dict[str, Any]: ...


class TransferSource(Protocol):
    """The transfer decisions due at the close of bar ``ts`` (``previous``: the bar before)."""

    def requests(
        self, ts: pd.Timestamp, previous: pd.Timestamp | None
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
    ) -> TransferOutcome: ...


@dataclass
class SubaccountSpec:
    """One isolated subaccount of a portfolio run: its policy, its guard (None: limits
    only, as a reference policy runs) and its starting cash (quote, USDT)."""

    name: str
    policy: Policy
    initial_cash: float
    safety: SafetyLayer | None = None
    record_holds: bool = True
    assessor: Assessor | None = None

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

    @property
    def flows(self) -> pd.Series:
        """Net capital moved into the account at each bar (transfers net out to 0)."""
        return sum((r.flows for r in self.subaccounts.values()), start=self.equity * 0.0)


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


class _Book:
    """What the loop keeps for one subaccount while it runs."""

    def __init__(self, spec: SubaccountSpec, sub: Subaccount, n_steps: int, n_sym: int) -> None:
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
        self.qty = np.zeros(n_sym)
        self.offset = 0.0
        self.peak = spec.initial_cash
        self.equity = np.empty(n_steps)
        self.held = np.zeros((n_steps, n_sym))
        self.flows = np.zeros(n_steps)
        self.fills: list[tuple] = []
        self.rejections: list[tuple] = []
        self.decisions: list[dict[str, Any]] = []
        self.order_decision: dict[int, int] = {}
        self.states: list[str] = []
        self.ceilings: list[float] = []
        self.target_path = np.full((n_steps, n_sym), np.nan)


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
    ) -> None:
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
        # A pair quoted in another currency than the subaccounts' USDT cash (ADABTC) would
        # be bought at its BTC price as if it were USDT: refused before the run.
        traded = context.universe[context.start_i : context.end_i + 1].any(axis=0)
        check_traded_quotes(
            [s for s, t in zip(context.market.symbols, traded, strict=True) if t],
            instruments or {},
            "USDT",
            where=f"backtest, subaccounts {', '.join(repr(n) for n in names)} (cash in USDT)",
        )

    def run(self, progress: ProgressCallback | None = None) -> PortfolioResult:
        ctx = self.context
        m = ctx.market
        account = Account()
        for spec in self.specs:
            account.add_subaccount(spec.name, spec.initial_cash)
        n_sym = len(m.symbols)
        steps = range(ctx.start_i, ctx.end_i + 1)
        books = [
            _Book(spec, account.subaccount(spec.name), len(steps), n_sym) for spec in self.specs
        ]
        by_name = {b.name: b for b in books}
        safeties = {b.name: b.safety for b in books}
        if self.account_breaker is not None:
            for b in books:
                if b.safety.has_breakers:
                    b.safety.share_account_breaker(self.account_breaker)
        # Each fill is checked by its own subaccount's guard at its own price.
        broker = SimulatedBroker(
            account, m, self.costs, self.instruments, self.funding, fill_guard=_FillGuards(safeties)
        )
        periods = bars_per_year_of(m.index)
        for b in books:
            b.step.reset(m.symbols, periods)
        fields = {
            "open": m.open,
            "high": m.high,
            "low": m.low,
            "close": m.close,
            "quote_volume": m.quote_volume,
        }
        marks = m.close_filled
        total = np.empty(len(steps))
        total_peak = float(sum(s.initial_cash for s in self.specs))
        account_states: list[str] = []
        transfer_records: list[dict[str, Any]] = []
        next_order_id = 1
        report_every = max(len(steps) // 100, 1)
        index = m.index
        for k, i in enumerate(steps):
            ts = m.timestamps[i]
            if k:
                report = broker.on_bar(i)
                if report.fills or report.liquidations or report.funding:
                    for b in books:
                        b.qty, b.offset = _ledger_view(b.sub, m.column, n_sym)
                _route_report(report, broker, by_name)
            if self.transfers is not None:
                self._move_capital(
                    ts,
                    index[i - 1] if i else None,
                    i,
                    k,
                    account,
                    marks,
                    by_name,
                    safeties,
                    transfer_records,
                    m.column,
                    n_sym,
                )
            eq_total = 0.0
            for b in books:
                # Same as sub.equity(marks at close), without a Python loop over positions.
                eq = b.sub.cash + float(b.qty @ marks[i]) + b.offset
                b.equity[k] = eq
                b.held[k] = b.qty
                b.peak = max(b.peak, eq)
                eq_total += eq
            total[k] = eq_total
            total_peak = max(total_peak, eq_total)
            account_changes: list[StateChange] = []
            if self.account_breaker is not None:
                account_changes = self.account_breaker.update(
                    ts, eq_total, total_peak, _day_start(total, index, steps, k), True, 0
                )
                account_states.append(str(self.account_breaker.state))
            last = i == ctx.end_i
            for b in books:
                changes: list[StateChange] = []
                if b.safety.has_breakers:
                    # Stale data: a held asset without a real bar at this close.
                    fresh = bool(np.all(m.tradable[i][b.qty != 0]))
                    changes = account_changes + b.step.mark(ts, b.equity[k], b.peak, fresh)
                    b.states.append(str(b.safety.trading_state))
                if last:
                    continue
                obs = Observation(
                    i,
                    ts,
                    m.symbols,
                    fields,
                    ctx.features,
                    m.tradable[i],
                    ctx.universe[i],
                    PortfolioState(b.equity[k], b.sub.cash, b.qty, marks[i], b.peak),
                    k,
                    index[i - 1] if i else None,
                )
                decision_id = len(b.decisions)
                out = b.step.step(obs, broker.instrument, decision_id, changes)
                b.ceilings.append(out.telemetry.exposure_ceiling)
                if out.telemetry.current_target is not None:
                    b.target_path[k] = out.telemetry.current_target
                if out.record is None:
                    continue
                if out.replaces_open:
                    self._cancel_open(broker, b, ts, decision_id)
                sent = out.record.get("orders")
                for order in out.orders:
                    # Ids numbered by the run, so a resumed run numbers them the same.
                    order = replace(order, id=next_order_id)
                    next_order_id += 1
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
                b.decisions.append(out.record)
            if progress is not None and (k % report_every == 0):
                progress(k + 1, len(steps))
        if progress is not None:
            progress(len(steps), len(steps))
        run_index = ctx.index
        results = {b.name: _result(b, ctx, account, run_index) for b in books}
        return PortfolioResult(
            subaccounts=results,
            equity=pd.Series(total, index=run_index, name="equity"),
            transfers=transfer_records,
            account=account,
            periods_per_year=ctx.panel.periods_per_year,
            account_state=(
                pd.Series(account_states, index=run_index, name="state")
                if self.account_breaker is not None
                else None
            ),
        )

    def _cancel_open(
        self, broker: SimulatedBroker, b: _Book, ts: pd.Timestamp, decision_id: int
    ) -> None:
        """A new plan replaces what is left of the subaccount's earlier ones."""
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
                )

    def _move_capital(
        self,
        ts: pd.Timestamp,
        previous: pd.Timestamp | None,
        i: int,
        k: int,
        account: Account,
        marks: np.ndarray,
        books: Mapping[str, _Book],
        safeties: Mapping[str, SafetyLayer],
        records: list[dict[str, Any]],
        column: Mapping[str, int],
        n_sym: int,
    ) -> None:
        """Due transfers at the close of bar i: each checked, recorded, moved if allowed.

        A subaccount's peak moves with its capital, so a transfer out is not a drawdown.
        """
        assert self.transfers is not None and self.transfer_guard is not None
        requests = self.transfers.requests(ts, previous)
        if not requests:
            return
        mark_map = {s: float(marks[i][j]) for s, j in column.items()}
        for request in requests:
            outcome = self.transfer_guard.check(request, account, mark_map, safeties, ts)
            record = {"timestamp": ts.isoformat(), **outcome.to_dict()}
            records.append(record)
            moved = float(outcome.moved)
            if moved <= 0:
                continue
            account.transfer(request.source, request.target, moved)
            for name, sign in ((request.source, -1.0), (request.target, 1.0)):
                book = books[name]
                book.flows[k] += sign * moved
                book.peak = max(book.peak + sign * moved, 0.0)
                book.safety.on_transfer(sign * moved)


def bars_per_year_of(index: pd.DatetimeIndex) -> float:
    """Bars per 365-day year from the spacing of the first two bars (365 with one bar)."""
    from trimtab.data.panel import bars_per_year

    return bars_per_year(index, 365.0)


def _day_start(total: np.ndarray, index: pd.DatetimeIndex, steps: range, k: int) -> float:
    """The account's total equity at the first bar of bar k's UTC day (within the run)."""
    day = index[steps[k]].normalize()
    j = k
    while j > 0 and index[steps[j - 1]].normalize() == day:
        j -= 1
    return float(total[j])


def _route_report(
    report: ExecutionReport, broker: SimulatedBroker, books: Mapping[str, _Book]
) -> None:
    """Give each subaccount its fills, liquidations, rejections and fill-guard actions."""
    if len(books) == 1:
        (only,) = books.values()
        _collect(report, broker, only)
        _journal_fill_events(report, only.order_decision, only.decisions, only.rejections)
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
        _journal_fill_events(part, book.order_decision, book.decisions, book.rejections)


def _collect(report: ExecutionReport, broker: SimulatedBroker, b: _Book) -> None:
    """Append the report's fills and liquidations as trade rows."""
    fills, order_decision = b.fills, b.order_decision
    for f in report.fills:
        quote = broker.instrument(f.symbol).quote
        fee_quote = f.fee if f.fee_currency == quote else f.fee * f.price
        fills.append(
            (
                f.timestamp,
                f.symbol,
                str(f.side),
                f.quantity,
                f.price,
                f.fee,
                f.fee_currency,
                fee_quote,
                f.reason,
                order_decision.get(f.order_id),
            )
        )
    for liq in report.liquidations:
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


def _result(
    b: _Book, ctx: MarketContext, account: Account, index: pd.DatetimeIndex
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
        )

    def run(self, progress: ProgressCallback | None = None) -> BacktestResult:
        return self._portfolio.run(progress).subaccounts[self.config.subaccount]


def _journal_fill_events(
    report: ExecutionReport,
    order_decision: dict[int, int],
    decisions: list[dict[str, Any]],
    rejections: list[tuple],
) -> None:
    """Rejections, expiries and fill-time guard actions: rows for rejections.csv, and
    each one also in the record of the decision whose order it was."""
    for r in report.rejections:
        decision_id = order_decision.get(r.order.id)
        rejections.append(
            (r.timestamp, r.order.symbol, str(r.order.side), r.reason, decision_id, r.kind)
        )
        if decision_id is not None:
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
    out: dict[str, Any] = {
        "id": order.id,
        "symbol": order.symbol,
        "side": str(order.side),
        "type": str(order.type),
    }
    if order.quantity is not None:
        out["quantity"] = order.quantity
    if order.quote_quantity is not None:
        out["quote_quantity"] = order.quote_quantity
    out["reason"] = order.reason
    return out
