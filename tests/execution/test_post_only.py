"""Post-only limit orders (market making's quotes) in the paper exchange and through
ccxt against the local Binance emulator: one that would take liquidity is refused, one
that rests is accepted as a maker order (LIMIT_MAKER on spot, GTX on futures)."""

from __future__ import annotations

import pytest

from tests.execution.test_ccxt_venue import at_exchange, emu, venue  # noqa: F401 (fixture)
from trimtab.domain import Order, OrderType, Side
from trimtab.domain.orders import TimeInForce
from trimtab.execution.costs import CostModel
from trimtab.execution.market import MarketArrays
from trimtab.execution.paper import PaperExchange
from trimtab.execution.simulated import order_from_state, order_state


def limit(symbol: str, side: Side, price: float, qty: float, sub: str = "main") -> Order:
    return Order(
        symbol,
        side,
        quantity=qty,
        type=OrderType.LIMIT,
        limit_price=price,
        subaccount=sub,
        time_in_force=TimeInForce.GTC,
        post_only=True,
    )


def test_order_post_only_is_for_limits_and_survives_its_state():
    with pytest.raises(ValueError, match="post_only is for limit orders"):
        Order("BTCUSDT", Side.BUY, quantity=1.0, post_only=True)
    o = limit("BTCUSDT", Side.BUY, 100.0, 1.0)
    assert order_from_state(order_state(o)) == o and order_state(o)["post_only"] is True
    plain = Order("BTCUSDT", Side.BUY, quantity=1.0)
    assert (
        "post_only" not in order_state(plain) and not order_from_state(order_state(plain)).post_only
    )


def test_paper_rejects_a_post_only_limit_that_would_cross(tmp_path, make_panel):
    market = MarketArrays.from_panel(
        make_panel({"AAAUSDT": [100.0, 100.0, 99.0, 98.0]}, start="2021-01-01", volume=1e9)
    )
    costs = CostModel(maker_fee_bps=2, half_spread_bps=5)
    ex = PaperExchange(tmp_path / "x.db", market, balances={"main": 10_000.0}, costs=costs)
    # Bar 0 closes at 100: the ask is 100.05, the bid 99.95.
    take = ex.submit(limit("AAAUSDT", Side.BUY, 100.05, 1.0), "po-1", bar=0)
    assert take.status == "rejected"
    assert take.reason == "post-only buy limit 100.05 would cross the ask 100.05 at acceptance"
    sell = ex.submit(limit("AAAUSDT", Side.SELL, 99.9, 1.0), "po-2", bar=0)
    assert sell.status == "rejected" and "would cross the bid 99.95" in sell.reason
    rest = ex.submit(limit("AAAUSDT", Side.BUY, 100.04, 1.0), "po-3", bar=0)
    assert rest.status == "open"
    # A plain limit at the ask is accepted (it may take).
    plain = Order("AAAUSDT", Side.BUY, quantity=1.0, type=OrderType.LIMIT, limit_price=100.05)
    assert ex.submit(plain, "lim-1", bar=0).status == "open"
    ex.advance(2)  # the price falls through 100.04: the resting quote fills as maker
    filled = ex.order("po-3")
    assert filled.status == "filled" and filled.filled_quantity == 1.0
    (mine,) = [e.fill() for e in ex.events_since(0) if e.client_order_id == "po-3"]
    # bar 1 opens at 100, under the bid 100.04 it rests at: filled at 100.04, maker fee
    assert str(mine.liquidity) == "maker" and mine.price == 100.04
    assert mine.fee == pytest.approx(100.04 * 2e-4, rel=1e-12)
    (plain_fill,) = [e.fill() for e in ex.events_since(0) if e.client_order_id == "lim-1"]
    assert str(plain_fill.liquidity) == "taker" and plain_fill.price == 100.0
    ex.close()
    # Reopened: the post-only flag of a resting order is restored with it.
    again = PaperExchange(tmp_path / "x.db", market, balances={"main": 10_000.0}, costs=costs)
    assert again.order("po-1").status == "rejected"
    again.close()


def test_ccxt_post_only_against_the_emulator(emu, tmp_path):  # noqa: F811
    v = venue(emu, tmp_path / "v.sqlite")
    # Bar 0: BTC 40,000, ETH 2,000 (tests/execution/test_ccxt_venue.py's bars).
    take = v.submit(limit("BTCUSDT", Side.BUY, 40_100.0, 0.01, "alice"), "tt-p-alice-1-0", 0)
    assert take.status == "rejected" and "would immediately match and take" in take.reason
    (sent,) = at_exchange(emu, "tt-p-alice-1-0") or [None]
    assert sent is None  # refused: nothing rests at the exchange
    rest = v.submit(limit("BTCUSDT", Side.BUY, 39_000.0, 0.01, "alice"), "tt-p-alice-1-1", 0)
    assert rest.status == "open"
    (o,) = at_exchange(emu, "tt-p-alice-1-1")
    assert o["type"] == "LIMIT_MAKER"
    perp = v.submit(limit("ETHUSDT-PERP", Side.BUY, 2_010.0, 0.1, "alice"), "tt-p-alice-1-2", 0)
    (p,) = at_exchange(emu, "tt-p-alice-1-2")
    assert p["tif"] == "GTX" and p["status"] == "EXPIRED"  # Binance expires a taking GTX
    assert perp.status == "expired" and perp.filled_quantity == 0, perp
    rest_perp = v.submit(
        limit("ETHUSDT-PERP", Side.BUY, 1_990.0, 0.1, "alice"), "tt-p-alice-1-3", 0
    )
    assert rest_perp.status == "open"
    (q,) = at_exchange(emu, "tt-p-alice-1-3")
    assert q["tif"] == "GTX" and q["status"] == "NEW"
    assert v.journal.order("tt-p-alice-1-3").post_only is True
    v.close()


def test_a_journal_from_before_post_only_opens_and_reads(tmp_path):
    import sqlite3

    from trimtab.execution.ccxt_journal import Journal, OrderRecord

    path = tmp_path / "j.sqlite"
    j = Journal(path, now_ms=1)
    rec = OrderRecord(
        cid="c1",
        venue_cid="v1",
        subaccount="alice",
        symbol="BTCUSDT",
        side="buy",
        type="limit",
        quantity=0.1,
        quote_quantity=None,
        limit_price=100.0,
        reduce_only=False,
        leverage=1.0,
        time_in_force="gtc",
        reason="",
        bar=0,
    )
    j.add_order(rec)
    j.close()
    conn = sqlite3.connect(path)  # as a journal written before the column
    conn.execute("ALTER TABLE orders DROP COLUMN post_only")
    conn.commit()
    conn.close()
    j = Journal(path, now_ms=2)
    got = j.order("c1")
    assert got is not None and got.post_only is False and got.limit_price == 100.0
    j.close()
