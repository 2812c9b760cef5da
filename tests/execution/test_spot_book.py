"""The broker's spot book (the marks a fill guard sees) values the book exactly as the
ledger does, and a backtest guarded through it makes the same fills as through a plain
dict of marks."""

import numpy as np
import pandas as pd
import pytest

from trimtab.domain import Account, Fill, Side, spot
from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.execution.simulated import SimulatedBroker, SpotBook
from trimtab.guard.limits import Limits
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import TargetWeights

TS = pd.Timestamp("2024-01-01", tz="UTC")


def _account(rng, n):
    account = Account.with_cash(1e6)
    sub = account.subaccount("main")
    for j in range(n):
        symbol = f"C{j}USDT"
        price = float(rng.uniform(0.01, 5000))
        qty = float(rng.uniform(1, 50_000)) / price
        fill = Fill(0, TS, symbol, Side.BUY, qty, price, qty * price * 1e-3, "USDT")
        sub.apply_fill(fill, spot(symbol))
    return sub


def test_spot_book_equity_and_other_values_are_the_ledgers_to_the_bit():
    rng = np.random.default_rng(7)
    sub = _account(rng, 23)
    symbols = list(sub.positions)
    marks = rng.uniform(0.01, 5000, len(symbols))
    qty = np.array([p.quantity for p in sub.positions.values()])
    book = SpotBook(symbols, marks, qty)
    for symbol in [*symbols[::5], "NEWUSDT"]:
        price = float(rng.uniform(0.01, 5000))
        view = book.at_fill(symbol, price, sub.cash)
        expected = {s: float(m) for s, m in zip(symbols, marks, strict=True)}
        expected[symbol] = price
        assert dict(view) == expected
        assert view.equity(sub.quantity(symbol)) == sub.equity(expected)
        values, keep = view.others()
        others = [s for s in sub.positions if s != symbol]
        assert [symbols[k] for k in keep] == others
        assert values.tolist() == [sub.quantity(s) * expected[s] for s in others]
    book.append("NEWUSDT", 2.5, 4.0)
    assert book.symbols[-1] == "NEWUSDT" and book.at_fill("C0USDT", 1.0, 0.0)["NEWUSDT"] == 2.5
    assert book.values[-1] == 10.0


@pytest.mark.real_data
def test_a_guarded_backtest_fills_the_same_through_the_book_as_through_a_dict(
    daily_panel, monkeypatch
):
    panel = daily_panel.slice("2021-01-01", "2021-12-31")
    listed = panel.live & panel.has_bar
    targets = listed.div(listed.sum(axis=1), axis=0).fillna(0.0) * 1.5
    ctx = MarketContext.build(panel)
    symbols = list(panel.symbols)
    # Tight caps, so that fills at the open (not the decision's close) are cut often.
    limits = Limits(
        max_asset_weight=0.06, max_cluster_weight=0.15, min_cash=0.05, max_order_notional=4_000
    )
    clusters = {s: f"k{j % 4}" for j, s in enumerate(symbols)}

    def run():
        safety = SafetyLayer(limits=limits, clusters=clusters)
        config = BacktestConfig(costs=CostModel(half_spread_bps=5), record_holds=False)
        return Backtest(ctx, TargetWeights(targets), config, safety=safety).run()

    fast = run()
    monkeypatch.setattr(SimulatedBroker, "_book", lambda self, sub, i: None)
    slow = run()
    cut = fast.rejections["reason"].astype(str).str.contains("cut at the fill")
    assert cut.sum() > 20  # the fill guard did bind, through both paths
    pd.testing.assert_frame_equal(fast.trades, slow.trades)
    pd.testing.assert_frame_equal(fast.rejections, slow.rejections)
    assert fast.equity.equals(slow.equity)


def test_spot_book_stays_in_the_ledgers_order_as_positions_open_and_close():
    book = SpotBook(["A", "B", "C"], np.array([1.0, 2.0, 3.0]), np.ones(3), np.array([4, 0, 2]))
    book.append("D", 5.0, 2.0, 7)
    book.remove("B")
    assert book.symbols == ("A", "C", "D") and dict(book.at_fill("A", 1.0, 0.0)) == {
        "A": 1.0,
        "C": 3.0,
        "D": 5.0,
    }
    values, keep = book.at_fill("C", 9.0, 0.0).others()
    assert values.tolist() == [1.0, 10.0] and book.columns[keep].tolist() == [4, 7]
    assert book.equity(1.0) == 1.0 + 9.0 + 10.0
    # Closed and reopened: last, as a dict puts a key added again.
    book.append("B", 2.0, 1.0, 0)
    assert book.symbols == ("A", "C", "D", "B")
    for k in range(40):  # many closes: the slots are compacted, the order kept
        book.append(f"X{k}", 1.0, 1.0, 9)
        book.remove(f"X{k}")
    assert book.symbols == ("A", "C", "D", "B") and len(book.values) < 30
    values, keep = book.at_fill("NEW", 1.0, 0.0).others()
    assert values.tolist() == [1.0, 3.0, 10.0, 2.0] and book.columns[keep].tolist() == [4, 2, 7, 0]


def test_reference_prices_of_a_bar_are_the_open_or_the_last_close(make_panel):
    nan = float("nan")
    panel = make_panel(
        {
            "AUSDT": [1.0, 2.0, 3.0, 4.0, 5.0, nan, nan],  # delisted after bar 4
            "BUSDT": [nan, nan, 7.0, 8.0, 9.0, 10.0, 11.0],  # listed at bar 2
            "CUSDT": [3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6],
        }
    )
    ctx = MarketContext.build(panel)
    broker = SimulatedBroker(Account.with_cash(1.0), ctx.market)
    for i in range(len(panel.index)):
        row = broker._ref_prices(i)
        for j in range(3):
            want = broker._ref_price(i, j)
            assert row[j] == want or (np.isnan(row[j]) and np.isnan(want))
