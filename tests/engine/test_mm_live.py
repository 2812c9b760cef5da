"""The market-making quoting loop (trimtab.engine.mm_live) against the local Binance
emulator (tests/emulator) over real HTTP with the real ccxt client: the emulator shows a
book (``set_book``) and market trades (``market_trade``, served by ``aggTrades``).

Quote prices are worked by hand from the quoter's rule (module docstring of
trimtab.strategies.market_making): with the book 39,999 / 40,001 (equal sizes) the
micro-price is 40,000; before ten mid changes the volatility is its floor, 1 bp per
root second; at zero inventory the half spread is 0.5 bp + 500 x 1e-8 x 10 / 2 = 0.75 bp
= 3.00 USDT: bid 39,997.00, ask 40,003.00 (tick 0.01). Size: 5% of 1,000 USDT at 40,000
= 0.00125 BTC (step 0.00001)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ccxt
import pytest

from tests.conftest import synthetic_bars
from tests.emulator import BinanceEmulator, point_ccxt_at
from trimtab.engine.mm_live import MarketFeed, QuotingLoop
from trimtab.execution.ccxt_venue import CcxtVenue
from trimtab.journal.store import Store, client_order_id
from trimtab.strategies.market_making import market_making_params

KEY, SECRET = "mm-key-" + "k" * 40, "mm-secret-" + "s" * 40
ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"latency_ms": 0.0, "maker_fee_bps": 2.0}


@pytest.fixture
def emu(tmp_path):
    bars = synthetic_bars({"BTCUSDT": [40_000.0] * 120}, freq="1min")  # flat: no bar fills
    e = BinanceEmulator(
        bars,
        accounts={KEY: (SECRET, "mm", {"USDT": 10_000, "BTC": 0.1}, {"USDT": 5_000})},
        state_path=tmp_path / "emu.json",
    )
    e.start()
    e.set_book("BTCUSDT", 39_999, 40_001, 2, 2)
    yield e
    e.close()


def aim(url):
    def configure(ex):
        point_ccxt_at(ex, url)
        ex.rateLimit = 1
        return ex

    return configure


def public(emu):
    ex = point_ccxt_at(ccxt.binance(), emu.url)
    ex.rateLimit = 1
    return ex


def make_loop(emu, tmp_path, mode, symbol="BTC/USDT", **params):
    store = Store.open(tmp_path / "store.db")
    venue = None
    if mode == "live":
        venue = CcxtVenue(
            tmp_path / "venue.db",
            {"mm": (KEY, SECRET)},
            symbols=[("BTCUSDT-PERP" if ":" in symbol else "BTCUSDT")],
            configure=aim(emu.url),
            clock=lambda: emu.clock_ms / 1000,
            timeout_ms=2000,
        )
    kw = {}
    if mode == "paper":
        kw = {"tick": 0.01, "lot": 0.00001}
    loop = QuotingLoop(
        store,
        "mm-test",
        MarketFeed(public(emu), symbol),
        mode=mode,
        capital=1_000.0,
        params=market_making_params({**PARAMS, **params}),
        venue=venue,
        clock=lambda: emu.clock_ms / 1000,
        **kw,
    )
    return loop


def tick(emu, seconds=1.0):
    emu.set_clock(emu.clock_ms + int(seconds * 1000))


def open_at_emu(emu):
    return sorted(
        (o for o in emu.orders("mm") if o["status"] in ("NEW", "PARTIALLY_FILLED")),
        key=lambda o: o["side"],
    )


def kinds(out):
    return [r["kind"] for r in out["records"]]


def test_paper_fills_only_from_trades_that_cross_the_quote(emu, tmp_path):
    loop = make_loop(emu, tmp_path, "paper")
    out = loop.step()  # the first look: the quotes are decided
    (d,) = [r for r in out["records"] if r["kind"] == "decision"]
    assert d["bid"] == [pytest.approx(39_997.0), pytest.approx(0.00125)]
    assert d["ask"] == [pytest.approx(40_003.0), pytest.approx(0.00125)]
    tick(emu)
    emu.market_trade("BTCUSDT", "sell", 39_998, 0.5)  # above our bid: no fill
    emu.market_trade("BTCUSDT", "sell", 39_997, 0.5)  # at our bid, the queue unknown there
    emu.market_trade("BTCUSDT", "buy", 40_002, 0.5)  # under our ask
    out = loop.step()
    assert "fill" not in kinds(out) and out["inventory"] == 0.0
    tick(emu)
    third = emu.market_trade("BTCUSDT", "sell", 39_996, 0.5)  # through our bid
    out = loop.step()
    (fill,) = [r for r in out["records"] if r["kind"] == "fill"]
    assert fill["trade_id"] == str(third) and fill["price"] == pytest.approx(39_997.0)
    assert "went through" in fill["reason"]
    assert out["inventory"] == pytest.approx(0.00125, rel=1e-9)
    # paper cash: -price x qty - 2 bps maker fee
    cash = -39_997.0 * 0.00125 * (1 + 2e-4)
    assert loop.state["cash"] == pytest.approx(cash, rel=1e-12)
    assert emu.orders("mm") == []  # paper sends nothing to the exchange
    loop.store.close()
    # Restarted: the paper ledger and the tape are taken up; nothing is booked twice.
    again = make_loop(emu, tmp_path, "paper")
    assert again.cycle == 3 and again.state["inventory"] == pytest.approx(0.00125)
    tick(emu)
    out = again.step()
    assert "fill" not in kinds(out)
    fills = again.store.fills("mm-test", floats=True)
    assert len(fills) == 1 and fills[0]["price"] == pytest.approx(39_997.0)
    again.stop("test over")
    assert any(r["kind"] == "stop" for r in again.store.decisions("mm-test"))
    again.store.close()


def test_live_quotes_replace_fill_and_stop_at_the_inventory_limit(emu, tmp_path):
    # max_inventory 0.1 of 1,000 USDT: two quotes' size (the quoter counts a quote being
    # replaced as still able to fill, as in the simulation), so two buys reach it. Sizes
    # in lots of 0.0001 BTC: 50 USDT / 40,000 = 0.00125 -> 0.0012.
    loop = make_loop(emu, tmp_path, "live", max_inventory=0.1, lot=0.0001)
    loop.step()
    o = open_at_emu(emu)
    assert [(x["side"], x["type"], float(x["price"]), float(x["qty"])) for x in o] == [
        ("BUY", "LIMIT_MAKER", 39_997.0, 0.0012),
        ("SELL", "LIMIT_MAKER", 40_003.0, 0.0012),
    ]
    assert {x["cid"] for x in o} == {client_order_id("mm-test", "mm", 0, k) for k in (0, 1)}
    tick(emu)
    loop.step()  # nothing moved: the quotes keep their place
    assert open_at_emu(emu) == o
    emu.set_book("BTCUSDT", 40_099, 40_101, 2, 2)  # the fair price moves 100
    tick(emu)
    out = loop.step()
    assert kinds(out).count("cancel") == 2 and kinds(out).count("submit") == 2
    new = open_at_emu(emu)
    # 40,100 x (1 -+ 0.75 bp) = 40,096.99 / 40,103.01 rounded out; 50 / 40,100 -> 0.0012
    assert [(x["side"], float(x["price"]), float(x["qty"])) for x in new] == [
        ("BUY", 40_096.99, 0.0012),
        ("SELL", 40_103.01, 0.0012),
    ]
    assert {x["status"] for x in emu.orders("mm") if x not in new} == {"CANCELED"}
    inventory = 0.0
    for k in range(2):  # two sellers go through our bid: the venue fills it each time
        tick(emu)
        emu.market_trade("BTCUSDT", "sell", 40_090, 1.0)
        tick(emu)
        out = loop.step()
        (fill,) = [r for r in out["records"] if r["kind"] == "fill"]
        assert fill["side"] == "buy" and fill["quantity"] == pytest.approx(0.0012)
        buys = [x for x in emu.trades("mm") if x["side"] == "BUY"]
        assert len(buys) == k + 1
        # a spot buy's fee is taken in BTC: inventory = bought - fee, as the emulator booked
        inventory += 0.0012 - float(buys[-1]["commission"])
        assert out["inventory"] == pytest.approx(inventory, rel=1e-12)
    assert float(buys[0]["price"]) == 40_096.99
    (d,) = [r for r in out["records"] if r["kind"] == "decision"]
    assert "inventory_limit_bid" in d["codes"] and d["bid"] is None and d["ask"] is not None
    assert [x["side"] for x in open_at_emu(emu)] == ["SELL"]  # the growing side stopped
    btc = emu.balances("mm")["BTC"]
    assert float(btc["free"] + btc["locked"]) == pytest.approx(0.1 + inventory, rel=1e-12)
    loop.stop("test over")
    assert open_at_emu(emu) == []
    stored = loop.store.decisions("mm-test")
    assert any("no bid" in r["reason"] for r in stored if r["kind"] == "decision")
    assert [r["reason"] for r in stored if r["kind"] == "stop"] == ["test over"]
    assert emu.duplicate_attempts == 0
    loop.venue.close()
    loop.store.close()


def test_live_kill_switch_withdraws_the_quotes_after_an_adverse_fill(emu, tmp_path):
    # One fill whose mid 1.5 s later is 25 bps against it stops quoting for 60 s.
    loop = make_loop(
        emu,
        tmp_path,
        "live",
        kill_fills=1,
        kill_markout_ms=1500.0,
        kill_threshold_bps=1.0,
        cooloff_s=60.0,
    )
    loop.step()  # t0: bid 39,997, ask 40,003
    tick(emu)
    emu.market_trade("BTCUSDT", "sell", 39_990, 1.0)  # t1: our bid is hit
    emu.set_book("BTCUSDT", 39_899, 39_901, 2, 2)  # and the market falls 100
    tick(emu)
    out = loop.step()  # t1 + 1 s: the fill is booked; its 1.5 s markout is not known yet
    assert "fill" in kinds(out) and len(open_at_emu(emu)) == 2
    tick(emu)
    out = loop.step()  # t1 + 2 s: known: (39,900 - 40,000) / 40,000 = -25 bps
    (d,) = [r for r in out["records"] if r["kind"] == "decision"]
    assert d["codes"] == ["adverse_selection_stop"] and "lost 25.00 bps" in d["reason"]
    assert kinds(out).count("cancel") == 2 and open_at_emu(emu) == []
    tick(emu)
    out = loop.step()
    (d,) = [r for r in out["records"] if r["kind"] == "decision"]
    assert d["codes"] == ["cooling_off"] and open_at_emu(emu) == []
    assert "submit" not in kinds(out)
    loop.stop("test over")
    loop.venue.close()
    loop.store.close()


@pytest.mark.parametrize("symbol", ["BTC/USDT", "BTC/USDT:USDT"])
def test_live_a_post_only_quote_that_would_cross_is_refused_and_recorded(emu, tmp_path, symbol):
    loop = make_loop(emu, tmp_path, "live", symbol=symbol)

    def book_jumps(intent):  # between the decision and the order, as latency would
        emu.set_book("BTCUSDT", 40_005, 40_007, 2, 2)

    loop.on_decided = book_jumps
    out = loop.step()
    (rej,) = [r for r in out["records"] if r["kind"] == "rejected"]
    assert rej["side"] == "ask"
    if ":" in symbol:  # futures: GTX expires a taking order
        (x,) = [o for o in emu.orders("mm") if o["side"] == "SELL"]
        assert x["tif"] == "GTX" and x["status"] == "EXPIRED"
    else:
        assert "would immediately match and take" in rej["reason"]
    assert [o["side"] for o in open_at_emu(emu)] == ["BUY"]
    stored = [r for r in loop.store.decisions("mm-test") if r["action"] == "rejected"]
    assert len(stored) == 1
    loop.stop("test over")
    assert open_at_emu(emu) == []
    loop.venue.close()
    loop.store.close()


def test_live_restart_resumes_without_sending_again(emu, tmp_path):
    loop = make_loop(emu, tmp_path, "live")
    assert loop.run(2, 0.0, cancel_on_exit=False) == "cycles done"  # as if killed after
    sent = emu.orders("mm")
    assert len(sent) == 2
    loop.venue.close()
    loop.store.close()
    again = make_loop(emu, tmp_path, "live")
    assert again.cycle == 2
    tick(emu)
    out = again.step()
    assert "submit" not in kinds(out) and "cancel" not in kinds(out)
    assert emu.orders("mm") == sent and emu.duplicate_attempts == 0
    assert len(again.store.orders("mm-test")) == 2
    again.stop("test over")
    assert open_at_emu(emu) == []
    again.venue.close()
    again.store.close()


def test_cli_live_sigterm_cancels_the_quotes(emu, tmp_path):
    env = {
        **os.environ,
        "TRIMTAB_MM_API_KEY": KEY,
        "TRIMTAB_MM_API_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
    }
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    args = [sys.executable, "-m", "trimtab.cli", "mm", "--exchange", "binance", "--live"]
    args += ["--exchange-url", emu.url, "--symbol", "BTC/USDT", "--interval", "0.2"]
    args += ["--db", db, "--run-id", "mm-cli", "--capital", "1000", "--set", "latency_ms=0"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while len(open_at_emu(emu)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(open_at_emu(emu)) == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert open_at_emu(emu) == []
    assert b"signal SIGTERM" in out
    assert KEY.encode() not in out + err and SECRET.encode() not in out + err
    store = Store.open(db)
    recs = store.decisions("mm-cli", "mm")
    cancels = [r for r in recs if r["kind"] == "cancel"]
    assert len(cancels) == 2 and all("signal SIGTERM" in r["reason"] for r in cancels)
    assert json.dumps(recs).count(KEY) == 0
    store.close()


def test_cli_mistakes_are_named():
    from typer.testing import CliRunner

    from trimtab.cli import app

    got = CliRunner().invoke(app, ["mm", "--exchange", "binance", "--symbol", "BTCUSDT"])
    assert got.exit_code != 0 and "give a ccxt symbol such as BTC/USDT" in got.output
    got = CliRunner().invoke(app, ["mm", "--live"])
    assert got.exit_code != 0 and "give --exchange binance" in got.output
    got = CliRunner().invoke(app, ["mm", "--exchange", "binance", "--exchange-url", "x"])
    assert got.exit_code != 0 and "--exchange-url trades on that endpoint" in got.output
