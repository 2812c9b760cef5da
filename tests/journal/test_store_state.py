"""Component state round-trips: the account, the simulated broker and the safety layer
saved half way through a run, passed through JSON (and the store), restored into fresh
objects, continue exactly as the run that was never interrupted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trimtab.domain import Account, Order, OrderType, Side, perpetual
from trimtab.domain.orders import TimeInForce
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.simulated import SimulatedBroker
from trimtab.guard.breakers import BreakerConfig
from trimtab.guard.limits import Limits
from trimtab.guard.safety import SafetyLayer
from trimtab.journal.store import Store

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "ADAUSDT", "XRPUSDT"]
PERP = "ETHUSDT"


@pytest.fixture(scope="module")
def market(daily_panel) -> MarketArrays:
    return MarketArrays.from_panel(daily_panel.select(SYMBOLS).slice("2021-01-01", "2021-12-31"))


def funding(m: MarketArrays) -> dict[str, pd.Series]:
    """Funding on the perpetual every 8 hours, its sign changing with the week."""
    stamps = pd.date_range(m.index[0], m.index[-1], freq="8h")
    rates = np.where((stamps.day_of_year // 7) % 2 == 0, 3e-4, -2e-4)
    return {PERP: pd.Series(rates, index=stamps)}


@dataclass
class Run:
    """Broker, account and safety layer, driven bar by bar like the backtest loop."""

    market: MarketArrays
    account: Account = field(default_factory=lambda: Account.with_cash(100_000.0))
    peak: float = 100_000.0
    events: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.safety = SafetyLayer(
            Limits(max_daily_turnover=0.6, max_order_notional=30_000.0),
            BreakerConfig(loss_streak=3, cooldown=2, daily_loss_limit=0.03),
        )
        self.broker = SimulatedBroker(
            self.account,
            self.market,
            CostModel(max_volume_share=1e-6),  # big orders fill over several bars
            {PERP: perpetual(PERP, lot_size=0.001)},
            funding(self.market),
            fill_guard=self.safety,
        )

    def state(self) -> dict[str, Any]:
        return {
            "account": self.account.state(),
            "broker": self.broker.state(),
            "safety": self.safety.state(),
            "loop": {"peak": self.peak},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.account.restore(state["account"])
        self.broker.restore(state["broker"])
        self.safety.restore(state["safety"])
        self.peak = state["loop"]["peak"]

    def bar(self, i: int) -> None:
        m, sub = self.market, self.account.subaccount("main")
        if i:
            report = self.broker.on_bar(i)
            self.events += [("fill", f) for f in report.fills]
            self.events += [("liquidation", x) for x in report.liquidations]
            self.events += [("funding", x) for x in report.funding]
            self.events += [("not filled", r) for r in report.rejections]
            self.events += [("fill guard", o.id, a) for o, a in report.guard]
        marks = {s: float(m.close_filled[i, m.column[s]]) for s in sub.positions}
        equity = sub.equity(marks)
        self.peak = max(self.peak, equity)
        changes = self.safety.on_bar(m.timestamps[i], equity, self.peak, True)
        self.events += [("state change", c.to_dict()) for c in changes]
        self.events.append(("equity", i, equity, sub.cash))
        if i % 3 == 0:
            self.trade(i, sub)

    def trade(self, i: int, sub: Any) -> None:
        """Orders of every kind, from a generator seeded by the bar (no hidden state)."""
        m = self.market
        rng = np.random.default_rng(i)
        orders = []
        for symbol in SYMBOLS:
            j = m.column[symbol]
            close = m.close[i, j]
            if not np.isfinite(close):
                continue
            held = sub.quantity(symbol)
            pick = rng.random()
            if symbol == PERP:
                side = Side.SELL if pick < 0.5 else Side.BUY
                orders.append(Order(symbol, side, quantity=4.0, leverage=3.0, decision_id=i))
            elif pick < 0.4:
                orders.append(Order(symbol, Side.BUY, quote_quantity=8_000.0, decision_id=i))
            elif pick < 0.7 and held > 0:
                orders.append(
                    Order(
                        symbol,
                        Side.SELL,
                        quantity=held / 2,
                        type=OrderType.LIMIT,
                        limit_price=float(close) * 1.01,
                        time_in_force=TimeInForce.GTC,
                        decision_id=i,
                    )
                )
            elif held > 0:
                expires = m.timestamps[i] + pd.Timedelta("4D")
                orders.append(
                    Order(
                        symbol,
                        Side.SELL,
                        quantity=held,
                        time_in_force=TimeInForce.GTD,
                        expires_at=expires,
                        decision_id=i,
                    )
                )
        quantities = {s: sub.quantity(s) for s in SYMBOLS}
        prices = {s: float(m.close_filled[i, m.column[s]]) for s in SYMBOLS}
        allowed, blocked = self.safety.breakers.filter_orders("main", orders, quantities, prices)
        self.events += [("blocked", b.to_dict()) for b in blocked]
        for order in allowed:
            rejection = self.broker.submit(order)
            self.events.append(("submitted", order.id, rejection))


def test_account_broker_and_safety_resume_exactly_from_saved_state(market, tmp_path) -> None:
    n, cut = len(market.index), len(market.index) // 2
    reference = Run(market)
    for i in range(cut + 1):
        reference.bar(i)
    saved = json.loads(json.dumps(reference.state()))
    # The same state through the store (exact JSON on SQLite).
    store = Store.open(tmp_path / "state.db")
    store.start_run("half", "backtest", {})
    with store.transaction("half", bar=cut) as tx:
        for name, part in saved.items():
            tx.save_state(name, part)
        tx.set_checkpoint(timestamp=market.timestamps[cut])
    from_store = store.load_states("half")
    store.close()
    assert from_store == saved
    before = len(reference.events)
    for i in range(cut + 1, n):
        reference.bar(i)

    resumed = Run(market)
    resumed.restore(from_store)
    assert resumed.state() == saved
    for i in range(cut + 1, n):
        resumed.bar(i)

    assert resumed.events == reference.events[before:]
    assert resumed.state() == reference.state()
    # The cut fell where there was something to carry over, and the run did real work.
    kinds = {e[0] for e in reference.events}
    assert {"fill", "funding", "not filled", "state change", "blocked"} <= kinds
    assert saved["broker"]["pending"], "orders were waiting at the cut"
    assert any(p["instrument"]["kind"] == "linear_perpetual" for p in _positions(saved))
    assert saved["safety"]["breakers"]["subaccounts"]["main"]["changes"]
    assert saved["safety"]["order_notional"]
    fills_after = [e for e in resumed.events if e[0] == "fill"]
    assert len(fills_after) > 20
    # Orders waiting at the cut were carried over: each filled or ended after it.
    pending = {o["id"] for o in saved["broker"]["pending"]}
    ended = {e[1].order.id for e in resumed.events if e[0] == "not filled"}
    assert pending & ({f.order_id for _, f in fills_after} | ended)


def _positions(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for s in state["account"]["subaccounts"] for p in s["positions"]]


def test_a_restored_account_is_the_same_ledger() -> None:
    account = Account.with_cash(1_000.0, name="core")
    carry = account.add_subaccount("carry", 500.0)
    carry.fees_by_currency["BNB"] = 0.1 + 0.2
    account.transfer("core", "carry", 100.0)
    back = Account.from_state(json.loads(json.dumps(account.state())))
    assert back == account
    assert list(back.subaccounts) == ["core", "carry"]
    assert back.subaccount("carry").fees_by_currency == {"BNB": 0.30000000000000004}


def test_breaker_memory_survives_a_human_resume_and_nan_values() -> None:
    safety = SafetyLayer(Limits(max_drawdown=0.1))
    t = pd.Timestamp("2021-01-01", tz="UTC")
    safety.on_bar(t, 100.0, 100.0, True)
    safety.on_bar(t + pd.Timedelta("1D"), 85.0, 100.0, True)  # halts at the kill level
    safety.breakers["main"].resume("ana", "checked", t + pd.Timedelta("2D"))
    safety.limits.override("max_asset_weight", 0.5, by="ana", reason="calmer", at=t)
    safety.on_bar(t + pd.Timedelta("3D"), float("nan"), 100.0, False)  # bad equity: halts
    saved = json.loads(json.dumps(safety.state()))
    fresh = SafetyLayer(Limits(max_drawdown=0.1))
    fresh.restore(saved)
    assert json.dumps(fresh.state()) == json.dumps(saved)  # NaN != NaN: compare the text
    assert fresh.limits.limits.max_asset_weight == 0.5
    assert fresh.limits.overrides == safety.limits.overrides
    main = fresh.breakers["main"]
    assert repr(main.changes) == repr(safety.breakers["main"].changes)
    assert [c.trigger for c in main.changes] == ["max_drawdown", "human_resume", "bad_equity"]
    assert main.state == safety.breakers["main"].state
    # Both carry on identically.
    for layer in (safety, fresh):
        layer.on_bar(t + pd.Timedelta("4D"), 90.0, 100.0, True)
    assert json.dumps(fresh.state()) == json.dumps(safety.state())
