"""The backtest runner: the pipeline on a historical clock.

At every bar t, in order:

1. act on the previous decision: the broker fills orders decided at the close of t-1
   during bar t (market orders at its open), books funding and liquidations;
2. mark the account at the close of t (equity, weights);
3. observe -> assess -> decide -> guard -> act -> record, seeing bars 0..t only.

The last bar is marked but decides nothing, since nothing could execute after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trimtab.domain import Account, Instrument, Subaccount
from trimtab.domain.decisions import Assessment, Decision, Observation, PortfolioState
from trimtab.domain.orders import Rejection
from trimtab.domain.quotes import check_traded_quotes
from trimtab.engine.context import MarketContext
from trimtab.execution.broker import ExecutionReport
from trimtab.execution.costs import CostModel
from trimtab.execution.simulated import FundingRates, SimulatedBroker
from trimtab.guard import TargetGuard
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import Policy, plan_orders

ProgressCallback = Callable[[int, int], None]


class Assessor(Protocol):
    def assess(self, obs: Observation) -> Assessment: ...


class Guard(Protocol):
    def check(self, decision: Decision, obs: Observation) -> Decision: ...


class FeatureAssessor:
    """The default assess step: reads the run's features at the decision bar."""

    def assess(self, obs: Observation) -> Assessment:
        return Assessment(values={name: obs.feature(name) for name in obs.feature_names})


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


class Backtest:
    """One policy over one ``MarketContext``; the steps are replaceable parts."""

    def __init__(
        self,
        context: MarketContext,
        policy: Policy,
        config: BacktestConfig | None = None,
        *,
        assessor: Assessor | None = None,
        guard: Guard | None = None,
        instruments: Mapping[str, Instrument] | None = None,
        funding: FundingRates | None = None,
        safety: SafetyLayer | None = None,
    ) -> None:
        self.context = context
        self.policy = policy
        self.config = config or BacktestConfig()
        self.assessor = assessor or FeatureAssessor()
        self.guard = guard or TargetGuard()
        self.instruments = instruments
        self.funding = funding
        self.safety = safety
        # A pair quoted in another currency than the subaccount's USDT cash (ADABTC) would
        # be bought at its BTC price as if it were USDT: refused before the run.
        traded = context.universe[context.start_i : context.end_i + 1].any(axis=0)
        check_traded_quotes(
            [s for s, t in zip(context.market.symbols, traded, strict=True) if t],
            instruments or {},
            "USDT",
            where=f"backtest, subaccount {self.config.subaccount!r} (cash in USDT)",
        )

    def run(self, progress: ProgressCallback | None = None) -> BacktestResult:
        ctx, cfg = self.context, self.config
        m = ctx.market
        account = Account.with_cash(cfg.initial_cash, name=cfg.subaccount)
        sub = account.subaccount(cfg.subaccount)
        safety = self.safety
        # The safety layer is also the broker's fill guard: every fill is checked against
        # the limits at its own price, and counted in the day's turnover.
        broker = SimulatedBroker(
            account, m, cfg.costs, self.instruments, self.funding, fill_guard=safety
        )
        self.policy.prepare(m.index, m.symbols)
        n_sym = len(m.symbols)
        steps = range(ctx.start_i, ctx.end_i + 1)
        equity = np.empty(len(steps))
        held = np.zeros((len(steps), n_sym))
        fills: list[tuple] = []
        rejections: list[tuple] = []
        decisions: list[dict[str, Any]] = []
        order_decision: dict[int, int] = {}
        fields = {
            "open": m.open,
            "high": m.high,
            "low": m.low,
            "close": m.close,
            "quote_volume": m.quote_volume,
        }
        marks = m.close_filled
        qty, offset = _ledger_view(sub, m.column, n_sym)
        peak = cfg.initial_cash
        states: list[str] = []
        ceilings: list[float] = []
        target_path = np.full((len(steps), n_sym), np.nan)
        report_every = max(len(steps) // 100, 1)
        for k, i in enumerate(steps):
            ts = m.timestamps[i]
            if k:
                report = broker.on_bar(i)
                if report.fills or report.liquidations or report.funding:
                    qty, offset = _ledger_view(sub, m.column, n_sym)
                    self._collect(report, broker, order_decision, fills)
                _journal_fill_events(report, order_decision, decisions, rejections)
            close_row = m.close[i]
            # Same as sub.equity(marks at close), without a Python loop over positions.
            eq = sub.cash + float(qty @ marks[i]) + offset
            equity[k] = eq
            held[k] = qty
            peak = max(peak, eq)
            changes = []
            if safety is not None:
                # Stale data: a held asset without a real bar at this close.
                fresh = bool(np.all(m.tradable[i][qty != 0]))
                changes = safety.on_bar(ts, eq, peak, fresh)
                states.append(str(safety.state))
            if i == ctx.end_i:
                break
            obs = Observation(
                i,
                ts,
                m.symbols,
                fields,
                ctx.features,
                m.tradable[i],
                ctx.universe[i],
                PortfolioState(eq, sub.cash, qty, marks[i], peak),
                k,
            )
            assessment = self.assessor.assess(obs)
            decision = self.policy.decide(obs, assessment)
            ceilings.append(float(getattr(self.policy, "exposure_ceiling", np.nan)))
            current_target = getattr(self.policy, "current_target", None)
            if current_target is not None:
                target_path[k] = current_target
            decision = (
                safety.check(decision, obs)
                if safety is not None
                else self.guard.check(decision, obs)
            )
            if decision.targets is None and not (cfg.record_holds or decision.guard or changes):
                if progress is not None and (k % report_every == 0):
                    progress(k + 1, len(steps))
                continue
            decision_id = len(decisions)
            record: dict[str, Any] = {
                "id": decision_id,
                "timestamp": ts.isoformat(),
                "policy": self.policy.name,
                "action": decision.action,
                "inputs": {"digest": _digest(close_row, qty, eq), "equity": eq},
                "reasons": [r.to_dict() for r in decision.reasons],
            }
            if decision.guard:
                record["guard"] = [g.to_dict() for g in decision.guard]
            if changes:
                record["state_changes"] = [c.to_dict() for c in changes]
            if safety is not None:
                record["state"] = str(safety.state)
            if decision.targets is not None:
                orders, skipped = plan_orders(
                    decision.targets,
                    obs.portfolio,
                    close_row,
                    m.symbols,
                    broker.instrument,
                    reason=decision.action,
                    subaccount=cfg.subaccount,
                    decision_id=decision_id,
                )
                if safety is not None:
                    orders, actions, blocked = safety.check_orders(
                        orders, obs, close_row, broker.instrument
                    )
                    if actions:
                        record.setdefault("guard", []).extend(a.to_dict() for a in actions)
                    if blocked:
                        record["blocked"] = blocked
                for stale in broker.open_orders():
                    # A new plan replaces what is left of earlier ones: never both at once.
                    if stale.subaccount == cfg.subaccount and broker.cancel(stale.id):
                        _journal_fill_events(
                            ExecutionReport(
                                rejections=[
                                    Rejection(
                                        stale,
                                        ts,
                                        f"replaced by decision {decision_id}",
                                        "cancelled",
                                    )
                                ]
                            ),
                            order_decision,
                            decisions,
                            rejections,
                        )
                sent = []
                for order in orders:
                    rejection = broker.submit(order)
                    if rejection is None:
                        order_decision[order.id] = decision_id
                        sent.append(_order_dict(order))
                    else:
                        rejections.append(
                            (
                                ts,
                                order.symbol,
                                str(order.side),
                                rejection.reason,
                                decision_id,
                                rejection.kind,
                            )
                        )
                record["targets"] = {
                    m.symbols[j]: float(w) for j, w in enumerate(decision.targets) if w
                }
                record["orders"] = sent
                if skipped:
                    record["skipped"] = [s.to_dict() for s in skipped]
            decisions.append(record)
            if progress is not None and (k % report_every == 0):
                progress(k + 1, len(steps))
        if progress is not None:
            progress(len(steps), len(steps))
        index = ctx.index
        values = held * marks[ctx.start_i : ctx.end_i + 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = np.where(equity[:, None] > 0, values / equity[:, None], 0.0)
        gross = np.abs(values).sum(axis=1)
        trades = pd.DataFrame(fills, columns=TRADE_COLUMNS)
        trades["decision_id"] = trades["decision_id"].astype("Int64")
        return BacktestResult(
            policy=self.policy.name,
            equity=pd.Series(equity, index=index, name="equity"),
            weights=pd.DataFrame(weights, index=index, columns=list(m.symbols)),
            gross_exposure=pd.Series(
                gross / np.where(equity > 0, equity, np.nan), index=index, name="gross_exposure"
            ),
            trades=trades,
            decisions=decisions,
            rejections=pd.DataFrame(rejections, columns=REJECTION_COLUMNS),
            account=account,
            periods_per_year=ctx.panel.periods_per_year,
            states=pd.DataFrame(
                {
                    "state": states,
                    "exposure_ceiling": ceilings + [np.nan] * (len(states) - len(ceilings)),
                },
                index=index[: len(states)],
            )
            if safety is not None
            else None,
            safety=safety.journal() if safety is not None else None,
            target_weights=(
                pd.DataFrame(target_path, index=index, columns=list(m.symbols))
                if np.isfinite(target_path).any()
                else None
            ),
        )

    @staticmethod
    def _collect(
        report, broker: SimulatedBroker, order_decision: dict[int, int], fills: list[tuple]
    ) -> None:
        """Append the report's fills and liquidations as trade rows."""
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


def _digest(close_row: np.ndarray, qty: np.ndarray, equity: float) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(close_row.tobytes())
    h.update(qty.tobytes())
    h.update(np.float64(equity).tobytes())
    return h.hexdigest()


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
