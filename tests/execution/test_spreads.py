import dataclasses

import numpy as np
import pandas as pd
import pytest

from trimtab.data import find_data_dir
from trimtab.domain import Account, Order, Side
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.simulated import SimulatedBroker
from trimtab.execution.spreads import (
    bar_half_spread_bps,
    half_spreads,
    quoted_half_spread_bps,
    read_books,
)


def _bars_with_spread(half_spread: float, n: int = 4000, seed: int = 1) -> dict[str, pd.DataFrame]:
    """Bars from a random-walk mid traded at bid or ask: the true half-spread is known."""
    rng = np.random.default_rng(seed)
    steps = 50  # trades per bar
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 0.0005, n * steps)))
    side = rng.choice([-1.0, 1.0], n * steps)
    price = (mid * (1 + side * half_spread)).reshape(n, steps)
    idx = pd.date_range("2021-01-01", periods=n, freq="1h", tz="UTC")
    frame = lambda a: pd.DataFrame({"AAAUSDT": a}, index=idx)  # noqa: E731
    return {
        "high": frame(price.max(axis=1)),
        "low": frame(price.min(axis=1)),
        "close": frame(price[:, -1]),
    }


def test_bar_estimate_recovers_a_known_spread_without_looking_ahead():
    bars = _bars_with_spread(0.0010)  # 10 bps half-spread, 20 bps quoted
    est = bar_half_spread_bps(**bars, window=500)
    assert est["AAAUSDT"].iloc[600:].median() == pytest.approx(10.0, rel=0.3)
    # Nothing after t changes the estimate at t.
    cut = {k: v.iloc[:1000] for k, v in bars.items()}
    short = bar_half_spread_bps(**cut, window=500)
    pd.testing.assert_frame_equal(short, est.iloc[:1000])


def test_quoted_half_spread_matches_the_book_sample():
    root = find_data_dir(None).path / "orderbook_samples"
    path = root / "binance-futures_book_snapshot_25_BTCUSDT.csv"
    if not path.exists():
        pytest.skip("shared data not found")
    books = read_books(path)
    last = max(books, key=lambda b: b["timestamp"])
    bid, ask = max(p for p, _ in last["bids"]), min(p for p, _ in last["asks"])
    expected = (ask - bid) / ((ask + bid) / 2) / 2 * 1e4
    assert quoted_half_spread_bps(books) == {"BTCUSDT": pytest.approx(expected)}


def test_sources_in_order_book_then_bars_then_floor():
    values, sources = half_spreads(
        ["A", "B", "C", "D"],
        2.0,
        quoted={"A": 0.5},
        estimated={"A": 9, "B": 7, "C": 0.1, "D": np.nan},
    )
    np.testing.assert_allclose(values, [0.5, 7.0, 2.0, 2.0])
    assert sources == ["book", "bars", "bars", "fixed"]


def test_venue_fee_schedules_and_unknown_venues():
    okx = CostModel.for_venue("OKX", half_spread_bps=1.0)
    assert (okx.taker_fee_bps, okx.maker_fee_bps, okx.half_spread_bps) == (10.0, 8.0, 1.0)
    with pytest.raises(ValueError, match="no fee schedule for venue 'mtgox'"):
        CostModel.for_venue("mtgox")
    with pytest.raises(ValueError, match="spread must be"):
        CostModel(spread="guess")  # type: ignore[arg-type]


def test_fills_pay_the_spread_estimated_before_the_bar(make_panel):
    panel = make_panel({"AAAUSDT": [100, 100, 100, 100]})
    market = MarketArrays.from_panel(panel)
    h = np.array([[3.0], [25.0], [1000.0], [1.0]])  # bar 2's own estimate must not be used
    market = dataclasses.replace(market, half_spread_bps=h)
    costs = CostModel(taker_fee_bps=0, half_spread_bps=5, impact_bps_at_1pct=0, spread="bars")
    broker = SimulatedBroker(Account.with_cash(10_000), market, costs)
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=1))
    (f,) = broker.on_bar(2).fills
    assert f.price == pytest.approx(100 * (1 + 25e-4))  # the estimate at bar 1
    broker.submit(Order("AAAUSDT", Side.BUY, quantity=1))
    (g,) = broker.on_bar(3).fills
    assert g.price == pytest.approx(100 * (1 + 1000e-4))
    fixed = SimulatedBroker(
        Account.with_cash(10_000), market, dataclasses.replace(costs, spread="fixed")
    )
    fixed.submit(Order("AAAUSDT", Side.BUY, quantity=1))
    (k,) = fixed.on_bar(2).fills
    assert k.price == pytest.approx(100 * (1 + 5e-4))
