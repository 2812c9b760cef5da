"""The queue fill simulator on hand-built tapes: queue position, latency, post-only,
fees, and the exact PnL split, each worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trimtab.data.ticks import BookSnapshots, Trades
from trimtab.execution.book_sim import (
    BookSimulator,
    Intent,
    MarketState,
    QuoteWish,
    SimParams,
    markouts,
    pnl_parts,
)

MS = 1_000_000  # ns


def book(rows: list[tuple[float, float, float, float, float]]) -> BookSnapshots:
    """(ms, bid, bid size, ask, ask size) rows: a top-of-book file."""
    a = np.array(rows, dtype=float)
    return BookSnapshots(
        "book",
        "X",
        (a[:, 0] * MS).astype("int64"),
        a[:, 1:2],
        a[:, 2:3],
        a[:, 3:4],
        a[:, 4:5],
    )


def tape(rows: list[tuple[float, float, float, int]]) -> Trades:
    """(ms, price, size, aggressor side) rows, ids t0, t1, ..."""
    a = np.array([r[:3] for r in rows], dtype=float)
    return Trades(
        "trades",
        "X",
        (a[:, 0] * MS).astype("int64"),
        np.array([f"t{k}" for k in range(len(rows))], dtype=object),
        a[:, 1],
        a[:, 2],
        np.array([r[3] for r in rows], dtype="int8"),
    )


class Fixed:
    """Quotes the same bid and ask at every decision (from ``start_ms``)."""

    def __init__(self, bid: QuoteWish | None, ask: QuoteWish | None, start_ms: float = 0):
        self.bid, self.ask, self.start = bid, ask, start_ms * MS
        self.seen: list[int] = []

    def decide(self, state: MarketState) -> Intent:
        self.seen.append(state.ts)
        if state.ts < self.start:
            return Intent(None, None, (("wait", "not yet"),))
        return Intent(self.bid, self.ask, (("fixed", "fixed quotes"),))


def test_queue_position_latency_and_fee_by_hand():
    # Book: bid 100 x 2, ask 101 x 1, all along. Quote 1 @ 100 and 1 @ 101, live at 10 ms.
    b = book([(0, 100, 2, 101, 1), (50, 100, 2, 101, 1)])
    t = tape(
        [
            (5, 100, 1.0, -1),  # before we are live: nothing
            (10, 100, 1.0, -1),  # at the instant we go live: not yet (strictly after)
            (20, 100, 1.5, -1),  # queue ahead 2 -> 0.5, no fill
            (30, 100, 1.0, -1),  # 0.5 more ahead, then 0.5 to us
            (35, 100.5, 3.0, 1),  # a buy below our ask: nothing
            (40, 101, 0.4, 1),  # at our ask: the 1 displayed ahead takes it
            (45, 102, 0.3, 1),  # through our ask: 0.3 to us
        ]
    )
    sim = BookSimulator(b, t, SimParams(latency_ms=10, maker_fee_bps=1.0))
    res = sim.run(Fixed(QuoteWish(100, 1.0), QuoteWish(101, 1.0)))
    got = [(f.trade_id, f.side, f.price, f.quantity, f.through) for f in res.fills]
    assert got == [("t3", 1, 100.0, 0.5, False), ("t6", -1, 101.0, 0.3, True)]
    assert res.fills[0].queue_at_join == 2.0 and res.fills[0].live_ts == 10 * MS
    fees = [f.fee for f in res.fills]
    assert fees == pytest.approx([1e-4 * 0.5 * 100, 1e-4 * 0.3 * 101], abs=1e-15)
    # cash: -0.5 x 100 - 0.005 + 0.3 x 101 - 0.00303; inventory 0.2; mid 100.5
    cash = -50 - 0.005 + 30.3 - 0.00303
    assert res.cash[-1] == pytest.approx(cash, abs=1e-12)
    assert res.inventory[-1] == pytest.approx(0.2, abs=1e-15)
    parts = pnl_parts(res.fills, 100.5)
    # spread: buy 0.5 x (100.5 - 100) + sell 0.3 x (101 - 100.5); mids at fills 100.5
    assert parts["spread_capture"] == pytest.approx(0.25 + 0.15, abs=1e-12)
    assert parts["inventory_pnl"] == pytest.approx(0.0, abs=1e-12)
    assert parts["fees"] == pytest.approx(-0.00803, abs=1e-12)
    assert parts["total"] == pytest.approx(cash + 0.2 * 100.5, abs=1e-12)
    assert parts["spread_capture"] + parts["inventory_pnl"] + parts["fees"] == pytest.approx(
        parts["total"], abs=1e-12
    )


def test_queue_factor_and_rebate():
    b = book([(0, 100, 2, 101, 1)])
    t = tape([(20, 100, 1.5, -1)])
    # Half of the displayed queue ahead: 1 ahead, 0.5 to us; a 0.5 bps rebate.
    res = BookSimulator(b, t, SimParams(latency_ms=10, queue_factor=0.5, maker_fee_bps=-0.5)).run(
        Fixed(QuoteWish(100, 2.0), None)
    )
    assert [(f.quantity, f.fee) for f in res.fills] == [(0.5, pytest.approx(-0.5e-4 * 50))]
    assert pnl_parts(res.fills, 100.5)["fees"] == pytest.approx(0.0025)


def test_post_only_rejects_a_quote_that_crosses_when_live():
    # Decided at 0 against ask 101; by 10 ms (live) the ask is 100: a bid at 100 would take.
    b = book([(0, 99, 1, 101, 1), (5, 99, 1, 100, 1)])
    t = tape([(20, 99.5, 1.0, -1)])
    q = Fixed(QuoteWish(100, 1.0), None)
    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(q)
    first = res.quotes[0]
    assert first["status"] == "rejected" and "post-only" in first["note"]
    assert "would cross the best ask 100" in first["note"]
    # the decision at 5 ms asked again (the first was still pending, same wish: no resend)
    assert len(res.quotes) == 1 and not res.fills


def test_inside_the_spread_no_queue_and_unknown_queue_below_the_touch():
    b = book([(0, 100, 5, 102, 5), (30, 99, 3, 101, 5), (60, 99, 3, 101, 5)])
    # bid 101 improves the touch: no queue; bid 99 is under the only level shown: unknown
    t = tape([(20, 101, 0.4, -1), (40, 99, 2.0, -1), (70, 99, 3.5, -1)])
    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(Fixed(QuoteWish(101, 0.4), None))
    assert [(f.trade_id, f.quantity, f.queue_at_join) for f in res.fills] == [("t0", 0.4, 0.0)]
    # below the touch: the queue is unknown until 99 is shown (3 at 30 ms); the trade at
    # 40 ms (2) consumes it to 1, the one at 70 ms (3.5): 1 ahead, then 2.5 of our 3.
    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(Fixed(QuoteWish(99, 3.0), None))
    assert res.quotes[0]["queue_at_join"] is None
    assert [(f.trade_id, f.quantity) for f in res.fills] == [("t2", 2.5)]


def test_cancel_latency_lets_the_old_quote_fill():
    # Quote 1 @ 100 from 0 ms (live 10), moved to 99 at 20 ms: the cancel lands at 30 ms,
    # so a trade through 100 at 25 ms still fills the old quote.
    b = book([(0, 100.5, 1, 101, 1), (20, 100.5, 1, 101, 1)])
    t = tape([(25, 99.9, 1.0, -1), (35, 99.9, 1.0, -1)])

    class Move:
        def decide(self, state: MarketState) -> Intent:
            px = 100.0 if state.ts < 20 * MS else 99.0
            return Intent(QuoteWish(px, 0.5), None, (("move", "m"),))

    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(Move())
    assert [(f.trade_id, f.price, f.quantity) for f in res.fills] == [("t0", 100.0, 0.5)]
    # after that fill the quoter asks for 0.5 @ 99 again (already on its way): no new quote
    assert [q["price"] for q in res.quotes] == [100.0, 99.0]
    assert res.quotes[0]["status"] == "filled"


def test_decisions_see_nothing_after_now():
    b = book([(0, 100, 1, 101, 1), (10, 100, 1, 101, 1), (20, 101, 1, 102, 1)])
    t = tape([(15, 101, 1.0, 1)])

    class Peek:
        def __init__(self) -> None:
            self.errors = 0

        def decide(self, state: MarketState) -> Intent:
            assert state.mid_at(state.ts) == state.mid
            try:
                state.mid_at(state.ts + 1)
            except ValueError:
                self.errors += 1
            return Intent(None, None, ())

    p = Peek()
    BookSimulator(b, t).run(p)
    assert p.errors == 3


def test_markouts_by_hand():
    b = book(
        [(0, 100, 1, 101, 1), (100, 101, 1, 102, 1), (1000, 99, 1, 100, 1), (2000, 99, 1, 100, 1)]
    )
    t = tape([(50, 100, 2.0, -1)])  # 1 ahead of us, 1 to us
    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(Fixed(QuoteWish(100, 1.0), None))
    m = markouts(res.fills, b, (100.0, 1000.0, 5000.0))
    # bought at mid 100.5; 100 ms later (150 ms) the mid is 101.5, at 1050 ms 99.5
    assert m[100.0][0] == pytest.approx(1 / 100.5 * 1e4)
    assert m[1000.0][0] == pytest.approx(-1 / 100.5 * 1e4)
    assert np.isnan(m[5000.0][0])  # the data ends first


def test_bad_params():
    with pytest.raises(ValueError, match="queue_factor must be in"):
        SimParams(queue_factor=1.5)
    with pytest.raises(ValueError, match="latency_ms must be >= 0"):
        SimParams(latency_ms=-1)


def test_queue_at_a_deeper_level_of_a_depth_book():
    # Bids 100 x 1, 99.9 x 4, 99.7 x 2 (99.8 empty); asks 100.1 x 1, 100.2 x 1, 100.3 x 1.
    px = np.array([[100.0, 99.9, 99.7]])
    b = BookSnapshots(
        "book",
        "X",
        np.array([0], dtype="int64"),
        px,
        np.array([[1.0, 4.0, 2.0]]),
        np.array([[100.1, 100.2, 100.3]]),
        np.ones((1, 3)),
    )
    t = tape([(20, 99.9, 3.0, -1), (30, 99.9, 1.5, -1), (40, 99.8, 0.2, -1)])
    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(Fixed(QuoteWish(99.9, 1.0), None))
    # behind the 4 displayed at 99.9: 3 then 1 of the 1.5 go ahead, 0.5 to us, then the
    # trade at 99.8 goes through our bid: the other 0.2
    assert res.quotes[0]["queue_at_join"] == 4.0
    assert [(f.trade_id, f.quantity, f.through) for f in res.fills] == [
        ("t1", 0.5, False),
        ("t2", 0.2, True),
    ]
    # 99.8 is inside the levels shown but empty: no queue
    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(Fixed(QuoteWish(99.8, 0.1), None))
    assert res.quotes[0]["queue_at_join"] == 0.0
    assert [(f.trade_id, f.quantity) for f in res.fills] == [("t2", 0.1)]
    # 99.6 is past the levels shown: unknown, never filled at its price here
    res = BookSimulator(b, t, SimParams(latency_ms=10)).run(Fixed(QuoteWish(99.6, 0.1), None))
    assert res.quotes[0]["queue_at_join"] is None and not res.fills
