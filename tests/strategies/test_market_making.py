"""Market making on the shared book and trade samples and on a synthetic trending tape:
every fill matched to a trade that crossed the quote, PnL parts adding to the total,
the inventory limit and the adverse-selection switch acting, no lookahead, the sleeve
protocol, the parameters' errors and the ``trimtab mm`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import REAL_DATA
from trimtab.cli import app
from trimtab.data.ticks import BookSnapshots, Trades, read_book, read_trades
from trimtab.strategies.market_making import (
    MarketMakingSleeve,
    infer_tick,
    market_making_from_settings,
    market_making_params,
)
from trimtab.strategies.sleeve import SimulatedStrategy

SAMPLES = REAL_DATA / "orderbook_samples"
needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"order-book samples not found at {SAMPLES}"
)
CAPITAL = 10_000.0


@pytest.fixture(scope="module")
def sample() -> tuple[BookSnapshots, Trades]:
    if not SAMPLES.is_dir():
        pytest.skip(f"order-book samples not found at {SAMPLES}")
    return read_book(SAMPLES / "btcusdt-quotes.parquet"), read_trades(
        SAMPLES / "btcusdt-trades.parquet"
    )


@pytest.fixture(scope="module")
def run(sample):
    book, trades = sample
    return MarketMakingSleeve(book, trades, market_making_params({})).run(CAPITAL)


def test_every_fill_is_a_trade_that_crossed_the_live_quote(sample, run):
    book, trades = sample
    by_id = {tid: k for k, tid in enumerate(trades.trade_id)}
    quotes = {q["quote_id"]: q for q in run.sim.quotes}
    lat = int(run.params.latency_ms * 1e6)
    assert len(run.sim.fills) >= 20
    filled: dict[str, float] = {}
    for f in run.sim.fills:
        k = by_id[f.trade_id]
        q = quotes[f.quote_id]
        assert trades.ts[k] == f.ts and trades.price[k] == f.trade_price
        assert trades.side[k] == -f.side  # a seller fills our bid, a buyer our ask
        assert f.price == q["price"] and f.side == q["side"]
        if f.side == 1:
            assert trades.price[k] <= q["price"]
        else:
            assert trades.price[k] >= q["price"]
        assert q["live_ts"] == q["decided_ts"] + lat and trades.ts[k] > q["live_ts"]
        assert q["end_ts"] is None or trades.ts[k] <= q["end_ts"]
        # at the quote's own price only what exceeds the queue ahead can fill
        if not f.through:
            assert f.queue_at_join is not None
        filled[f.trade_id] = filled.get(f.trade_id, 0.0) + f.quantity
        assert filled[f.trade_id] <= trades.size[k] + 1e-12
    for q in run.sim.quotes:
        assert sum(f.quantity for f in run.sim.fills if f.quote_id == q["quote_id"]) == (
            pytest.approx(q["filled"], abs=1e-12)
        )
        assert q["filled"] <= q["size"] + 1e-12
    # post-only: no live quote ever crossed the book it went live into
    k = (
        np.searchsorted(book.ts, [q["live_ts"] for q in quotes.values() if q["live_ts"]], "right")
        - 1
    )
    live = [q for q in quotes.values() if q["live_ts"]]
    for q, j in zip(live, k, strict=True):
        if q["side"] == 1:
            assert q["price"] < book.ask_px[j, 0]
        else:
            assert q["price"] > book.bid_px[j, 0]


def test_pnl_parts_add_to_the_total_exactly(run):
    p = run.parts
    assert p["spread_capture"] + p["inventory_pnl"] + p["fees"] == pytest.approx(
        p["total"], abs=1e-9
    )
    # The total is the equity's change; the inventory part is the integral of the
    # inventory held times the mid's moves, event by event (an independent formula).
    assert run.equity.iloc[-1] - CAPITAL == pytest.approx(p["total"], abs=1e-9)
    assert run.equity.iloc[0] == CAPITAL
    sim = run.sim
    ok = np.isfinite(sim.mid)
    inv, mid = sim.inventory[ok], sim.mid[ok]
    integral = float(np.sum(inv[:-1] * np.diff(mid)))
    assert integral == pytest.approx(p["inventory_pnl"], abs=1e-9)
    fills = run.fills_frame()
    side = np.where(fills["side"] == "buy", 1.0, -1.0)
    spread = float(np.sum(side * (fills["mid"] - fills["price"]) * fills["quantity"]))
    assert spread == pytest.approx(p["spread_capture"], abs=1e-9)
    # the default maker fee: 2 bps of the volume
    assert p["fees"] == pytest.approx(-2e-4 * run.summary["volume_usdt"], rel=1e-12)
    # markouts recomputed from the book
    book = read_book(SAMPLES / "btcusdt-quotes.parquet")
    mids = book.mid
    at = fills["timestamp"].astype("int64").to_numpy() + 1_000_000_000
    j = np.searchsorted(book.ts, at, side="right") - 1
    expect = np.where(
        at <= book.ts[-1], side * (mids[j] - fills["mid"]) / fills["mid"] * 1e4, np.nan
    )
    np.testing.assert_allclose(fills["markout_1000ms_bps"], expect, atol=1e-9)
    assert run.summary["markout_1000ms_bps"] == pytest.approx(np.nanmean(expect), abs=1e-9)


def test_no_lookahead_cutting_the_data_changes_nothing_before(sample, run):
    book, trades = sample
    cut = book.ts[0] + (book.ts[-1] - book.ts[0]) // 2
    b2 = BookSnapshots(
        *(getattr(book, f) for f in ("source", "symbol")),
        *(getattr(book, f)[book.ts <= cut] for f in ("ts", "bid_px", "bid_sz", "ask_px", "ask_sz")),
    )
    keep = trades.ts <= cut
    t2 = Trades(
        trades.source,
        trades.symbol,
        *(getattr(trades, f)[keep] for f in ("ts", "trade_id", "price", "size", "side")),
    )
    short = MarketMakingSleeve(b2, t2, run.params).run(CAPITAL)
    before = [f for f in run.sim.fills if f.ts <= cut]
    assert short.sim.fills == before and len(before) >= 5
    assert short.sim.decisions == [d for d in run.sim.decisions if d["ts"] <= cut]


def test_sleeve_protocol_and_records(run):
    sleeve = market_making_from_settings({}, REAL_DATA) if SAMPLES.is_dir() else None
    assert isinstance(sleeve, SimulatedStrategy) and sleeve.kind == "market-making"
    first, last = sleeve.coverage()
    assert first == pd.Timestamp("2021-01-08 00:00:01.076", tz="UTC")
    assert last == pd.Timestamp("2021-01-08 00:00:46.355", tz="UTC")
    out = sleeve.simulate(CAPITAL)
    assert out.equity.iloc[0] == CAPITAL and out.equity.index.is_unique
    assert out.equity.iloc[-1] == pytest.approx(CAPITAL + run.parts["total"], abs=1e-9)
    fills = [r for r in out.records if r["kind"] == "fill"]
    assert len(fills) == len(run.sim.fills)
    for r in fills:
        assert r["symbol"] == "BTCUSDT" and r["trade_id"] in r["reason"]
        assert r["side"] in ("buy", "sell") and r["quantity"] > 0
    assert [r["ts"] for r in out.records] == sorted(r["ts"] for r in out.records)
    assert all(r["reason"] for r in out.records)
    assert {r["kind"] for r in out.records} >= {"decision", "fill", "stop"}
    # capacity: each quote the median touch depth (USDT): depth / order fraction
    book = sleeve.book
    depth = np.median(
        (book.bid_sz[:, 0] * book.bid_px[:, 0] + book.ask_sz[:, 0] * book.ask_px[:, 0]) / 2
    )
    assert out.capacity == pytest.approx(depth / 0.05)
    assert out.regimes == ("ranging", "calm")
    # double the capital: the same fills, twice the sizes (below capacity: linear)
    twice = sleeve.run(2 * CAPITAL)
    assert len(twice.sim.fills) >= 1
    assert twice.summary["capital"] == 2 * CAPITAL


def trending(seconds: float = 120, up_bps_per_s: float = 5.0) -> tuple[BookSnapshots, Trades]:
    """A tape trending up through the quotes: the touch (1 tick wide) every 100 ms, a
    buyer lifting a level 2 bps above the mid every 50 ms, a small seller at the bid."""
    n = int(seconds * 10)
    t_ms = np.arange(n) * 100.0
    mid = 1000.0 * np.exp(up_bps_per_s * 1e-4 * t_ms / 1000)
    bid = np.floor(mid * 100) / 100
    ask = bid + 0.01
    size = np.full((n, 1), 5.0)
    book = BookSnapshots(
        "trend", "X", (t_ms * 1e6).astype("int64"), bid[:, None], size, ask[:, None], size.copy()
    )
    tt = np.arange(int(seconds * 20)) * 50.0 + 25.0
    m = 1000.0 * np.exp(up_bps_per_s * 1e-4 * tt / 1000)
    price = np.round(m * (1 + 2e-4), 2)
    side = np.ones(len(tt), dtype="int8")
    side[::7] = -1  # now and then a small seller at the bid
    price[::7] = np.floor(m[::7] * 100) / 100
    qty = np.where(side == 1, 2.0, 0.01)
    trades = Trades(
        "trend",
        "X",
        (tt * 1e6).astype("int64"),
        np.array([f"T{k}" for k in range(len(tt))], dtype=object),
        price,
        qty,
        side,
    )
    return book, trades


def test_trend_through_the_quotes_inventory_limit():
    book, trades = trending()
    params = market_making_params(
        {
            "order_fraction": 0.05,
            "max_inventory": 0.2,
            "kill_threshold_bps": 1000,
            "maker_fee_bps": 0,
        }
    )
    res = MarketMakingSleeve(book, trades, params).run(CAPITAL)
    limit = 0.2 * CAPITAL  # USDT
    inv_usdt = res.sim.inventory * res.sim.mid
    assert inv_usdt.min() < -0.9 * limit  # sold into the rise, short to the limit
    # Never past the limit, in flight included: after each fill the short is within the
    # limit (base units) at the price when the filled quote was decided (the price only
    # rises here, so later decisions' limits are tighter still).
    quotes = {q["quote_id"]: q for q in res.sim.quotes}
    inventory = 0.0
    for f in res.sim.fills:
        inventory += f.side * f.quantity
        k = np.searchsorted(book.ts, quotes[f.quote_id]["decided_ts"], side="right") - 1
        assert abs(inventory) <= limit / book.mid[k] * (1 + 1e-4)
    codes = [c for d in res.sim.decisions for c in (c for c, _ in d["reasons"])]
    assert "inventory_limit_ask" in codes
    at_limit = [
        d for d in res.sim.decisions if "inventory_limit_ask" in [c for c, _ in d["reasons"]]
    ]
    assert all(d["ask"] is None for d in at_limit)
    assert all(f.side == -1 for f in res.sim.fills)
    assert res.parts["inventory_pnl"] < 0 and res.summary["markout_1000ms_bps"] < 0
    assert not res.stops


def test_trend_through_the_quotes_adverse_selection_switch():
    book, trades = trending()
    params = market_making_params(
        {
            "order_fraction": 0.02,
            "max_inventory": 1.0,
            "kill_fills": 3,
            "kill_markout_ms": 500,
            "kill_threshold_bps": 1.0,
            "cooloff_s": 5,
        }
    )
    res = MarketMakingSleeve(book, trades, params).run(CAPITAL)
    assert res.stops, "the switch should stop quoting"
    first = res.stops[0]
    assert "adverse selection" in first["reason"] and first["markout_bps"] < -1.0
    assert first["until"] - first["ts"] == 5_000_000_000
    # no quote goes live, and nothing fills, during a cool-off (after the latency)
    lat = int(params.latency_ms * 1e6)
    for s in res.stops:
        for q in res.sim.quotes:
            assert not (q["decided_ts"] >= s["ts"] and q["decided_ts"] < s["until"])
        for f in res.sim.fills:
            assert not (s["ts"] + lat < f.ts < s["until"])
    # the stop looked only at fills whose markout was known at that time
    fills_before = [f for f in res.sim.fills if f.ts + 500_000_000 <= first["ts"]]
    assert len(fills_before) >= 3
    records = res.records()
    assert any(r["kind"] == "stop" and r["reason"] == first["reason"] for r in records)
    cooling = [d for d in res.sim.decisions if [c for c, _ in d["reasons"]] == ["cooling_off"]]
    assert cooling and all(d["bid"] is None and d["ask"] is None for d in cooling)


def test_params_errors_name_the_key(tmp_path: Path):
    with pytest.raises(ValueError, match="market-making params: spread: Extra inputs"):
        market_making_params({"spread": 1})
    with pytest.raises(
        ValueError, match="market-making params: queue_factor: .*less than or equal to 1"
    ):
        market_making_params({"queue_factor": 2})
    with pytest.raises(ValueError, match="market-making params: order_fraction"):
        market_making_params({"order_fraction": -0.1})
    bars = tmp_path / "ohlcv_1d.csv"
    bars.write_text("timestamp,symbol,open,high,low,close\n2020-01-01,BTCUSDT,1,2,0.5,1.5\n")
    with pytest.raises(ValueError, match="cannot be simulated honestly on bars"):
        market_making_from_settings({"book": str(bars), "trades": str(bars)}, tmp_path)
    with pytest.raises(ValueError, match="no order-book and trade files found"):
        market_making_from_settings({}, tmp_path)


def test_infer_tick():
    book, trades = trending(seconds=5)
    assert infer_tick(book, trades) == 0.01


@needs_samples
def test_cli_mm_on_the_sample(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(
        app, ["mm", "--data", str(REAL_DATA), "--html", "mm.html", "--set", "latency_ms=20"]
    )
    assert r.exit_code == 0, r.output
    assert "spread capture" in r.output and "markout 1000 ms" in r.output
    doc = json.loads((tmp_path / "mm-report.json").read_text())
    parts = doc["pnl_parts"]
    assert parts["spread_capture"] + parts["inventory_pnl"] + parts["fees"] == pytest.approx(
        parts["total"], abs=1e-9
    )
    assert doc["params"]["latency_ms"] == 20 and doc["fills"][0]["trade_id"]
    assert len(doc["fills"]) == doc["summary"]["fills"]
    html = (tmp_path / "mm.html").read_text()
    assert "Plotly" in html and "PnL parts" in html and "<script src=" not in html
    bars = REAL_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
    if bars.is_file():
        r = CliRunner().invoke(app, ["mm", "--book", str(bars), "--trades", str(bars)])
        assert r.exit_code == 2 and "cannot be simulated honestly on bars" in r.output
    r = CliRunner().invoke(app, ["mm", "--data", str(REAL_DATA), "--set", "gamma=1"])
    assert r.exit_code == 2 and "market-making params: gamma" in r.output


def test_broker_quotes_post_only_limits_and_cancels(make_panel):
    from trimtab.domain import Account
    from trimtab.execution.book_sim import Intent, QuoteWish
    from trimtab.execution.costs import CostModel
    from trimtab.execution.market import MarketArrays
    from trimtab.execution.simulated import SimulatedBroker
    from trimtab.strategies.market_making import BrokerQuotes

    market = MarketArrays.from_panel(make_panel({"AAAUSDT": [100.0, 100.0, 99.0]}, volume=1e9))
    account = Account()
    account.add_subaccount("main", 10_000.0)
    broker = SimulatedBroker(account, market, CostModel())
    quotes = BrokerQuotes(broker, "AAAUSDT")
    why = (("quote", "fair 100"),)
    done = quotes.sync(Intent(QuoteWish(99.9, 1.0), QuoteWish(100.1, 1.0), why))
    assert [d["kind"] for d in done] == ["submit", "submit"]
    open_ = broker.open_orders()
    assert all(
        o.post_only and str(o.type) == "limit" and str(o.time_in_force) == "gtc" for o in open_
    )
    assert sorted(o.limit_price for o in open_) == [99.9, 100.1]
    assert quotes.sync(Intent(QuoteWish(99.9, 1.0), QuoteWish(100.1, 1.0), why)) == []
    bid_id = quotes.orders[1].id
    done = quotes.sync(Intent(QuoteWish(99.8, 1.0), None, (("inventory_limit_ask", "no ask"),)))
    assert [(d["kind"], d["side"]) for d in done] == [
        ("cancel", "bid"),
        ("submit", "bid"),
        ("cancel", "ask"),
    ]
    assert done[0]["order_id"] == bid_id and done[2]["reason"] == "no ask"
    assert [o.limit_price for o in broker.open_orders()] == [99.8]
