"""`trimtab run` on live prices: the wall clock (virtual here), bars from the real ccxt
client talking HTTP to a local server that answers Binance's ``/api/v3/klines`` with the
daily file's bars that have opened by the virtual now, the download cache growing bar by
bar, the paper exchange filling at the next open, and a restart carrying on."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import ccxt
import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE
from trimtab.app.run import RunOptions, build_live
from trimtab.engine.portfolio_file import parse_portfolio

PORTFOLIO = """
backtest: {timeframe: 1d}
runner: {grace_seconds: 30, tick_seconds: 600, review_every: 0}
subaccounts:
  pilot:
    strategy: equal-weight
    rule: calendar:daily
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    mode: auto
    envelope: {max_order_notional: 100000}
  watch:
    strategy: equal-weight
    rule: calendar:daily
    symbols: [BTCUSDT, ETHUSDT]
    capital: 5000
    mode: monitor
"""
DAY_MS = 86_400_000


class VirtualTime:
    def __init__(self, start: pd.Timestamp) -> None:
        self.t = start

    def now(self) -> pd.Timestamp:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += pd.Timedelta(seconds=seconds)

    def ms(self) -> int:
        return int(self.t.value // 1_000_000)


def _klines(symbols: list[str]) -> dict[str, list[list]]:
    bars = pd.read_csv(DAILY_FILE, parse_dates=["timestamp"])
    out = {}
    for s in symbols:
        b = bars[bars["symbol"] == s].sort_values("timestamp")
        ms = pd.DatetimeIndex(b["timestamp"]).as_unit("ms").asi8
        out[s] = [
            [int(t), f"{o!r}", f"{h!r}", f"{lo!r}", f"{c!r}", f"{v!r}", int(t) + DAY_MS - 1]
            for t, o, h, lo, c, v in zip(
                ms, b["open"], b["high"], b["low"], b["close"], b["volume_base"], strict=True
            )
        ]
    return out


@pytest.fixture
def binance(request):
    """A local HTTP server answering /api/v3/klines as Binance does (rows opening at or
    after startTime, at most limit, the still-forming candle included), on a virtual clock."""
    clock = VirtualTime(pd.Timestamp("2023-03-02 00:05", tz="UTC"))
    data = _klines(["BTCUSDT", "ETHUSDT"])
    calls: list[dict[str, str]] = []
    outage: dict[str, pd.Timestamp] = {}  # "until": the exchange refuses before this time

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            u = urlparse(self.path)
            if u.path != "/api/v3/klines":
                self.send_error(404)
                return
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            calls.append(q)
            if "until" in outage and clock.now() < outage["until"]:
                # An error ccxt does not retry (a network error is retried with real
                # sleeps, too slow for a test); trimtab treats both alike: data late.
                body = json.dumps({"code": -1121, "msg": "Invalid symbol."})
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())
                return
            start = int(q.get("startTime", 0))
            rows = [r for r in data[q["symbol"]] if start <= r[0] <= clock.ms()]
            body = json.dumps(rows[: int(q.get("limit", 500))]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def client():
        ex = ccxt.binance({"enableRateLimit": False})
        base = f"http://127.0.0.1:{server.server_address[1]}/api/v3"
        ex.urls["api"]["public"] = base
        markets = []
        for b in ("BTC", "ETH"):
            markets.append(
                {
                    "id": b + "USDT",
                    "symbol": f"{b}/USDT",
                    "base": b,
                    "quote": "USDT",
                    "baseId": b,
                    "quoteId": "USDT",
                    "type": "spot",
                    "spot": True,
                    "margin": False,
                    "swap": False,
                    "future": False,
                    "option": False,
                    "contract": False,
                    "active": True,
                    "precision": {"amount": 1e-5, "price": 0.01},
                    "limits": {},
                    "info": {},
                }
            )
        ex.set_markets(markets)
        ex.milliseconds = clock.ms  # the exchange's clock is the virtual one
        return ex

    client.outage = outage
    yield clock, client, calls
    server.shutdown()


def _live(tmp_path, clock, client, cycles: int):
    portfolio = parse_portfolio(PORTFOLIO, "live.yaml", tmp_path)
    run = build_live(
        portfolio,
        RunOptions(db=f"sqlite:///{tmp_path / 'store.db'}", start="2023-03-01"),
        exchange=client(),
        cache=tmp_path / "cache",
        now=clock.now,
        sleep=clock.sleep,
    )
    seen = []
    original = run.runner.cycle

    def cycle(i):
        # what the decision at bar i can see: the market ends at bar i, and it is due
        seen.append((i, run.runner.context.end_i, run.runner.m.timestamps[i], clock.now()))
        out = original(i)
        if len(seen) >= cycles:
            run.runner.stop.set()
        return out

    run.runner.cycle = cycle
    return run, seen


def test_live_bars_as_they_close_no_lookahead_then_a_restart_carries_on(tmp_path, binance):
    clock, client, calls = binance
    run, seen = _live(tmp_path, clock, client, cycles=4)
    run.run()
    days = [ts for _, _, ts, _ in seen]
    assert days == list(pd.date_range("2023-03-01", periods=4, freq="D", tz="UTC"))
    for i, end_i, ts, now in seen:
        assert end_i == i  # nothing after the bar being decided
        assert now >= ts + pd.Timedelta(days=1, seconds=30)  # its close, plus the grace
    # the cache asked only for new bars: after the first download (warm-up), each later
    # request for a symbol starts after the bars it already had
    starts = {s: [int(c["startTime"]) for c in calls if c["symbol"] == s] for s in ("BTCUSDT",)}
    later = starts["BTCUSDT"][-3:]
    assert later == sorted(later) and len(set(later)) == len(later)
    from trimtab.journal.store import Store

    store = Store.open(tmp_path / "store.db")
    orders = store.orders("live", floats=True)
    assert orders and {o["subaccount"] for o in orders} == {"pilot"}  # monitor sent nothing
    fills = store.fills("live", floats=True)
    first = pd.Timestamp(fills[0]["timestamp"])
    assert first == pd.Timestamp("2023-03-02", tz="UTC")  # at the open after the decision
    bars = pd.read_csv(DAILY_FILE, parse_dates=["timestamp"])
    btc_open = float(
        bars[(bars.symbol == "BTCUSDT") & (bars.timestamp == "2023-03-02")]["open"].iloc[0]
    )
    f = next(x for x in fills if x["symbol"] == "BTCUSDT")
    assert f["price"] > btc_open  # a buy pays the spread and impact over the open
    assert f["price"] == pytest.approx(btc_open, rel=0.01)
    n_decisions = len(store.decisions("live", "pilot"))
    store.close()
    # a restart (the same command) carries on at the next bar, with the run's own start
    again, seen2 = _live(tmp_path, clock, client, cycles=2)
    again.run()
    assert [ts for _, _, ts, _ in seen2] == list(
        pd.date_range("2023-03-05", periods=2, freq="D", tz="UTC")
    )
    store = Store.open(tmp_path / "store.db")
    assert len(store.decisions("live", "pilot")) == n_decisions + 2
    # the runner's ledger (saved) equals the paper exchange's books (reopened)
    last = store.load_state("live", "runner")["ledger"]
    store.close()
    from trimtab.domain import Account
    from trimtab.execution.paper import PaperExchange

    ledger = Account.from_state(last)
    ex = PaperExchange(
        tmp_path / "store.paper.db", again.runner.m, balances={"pilot": 10000, "watch": 5000}
    )
    try:
        for name, sub in ledger.subaccounts.items():
            assert sub.cash == ex.balances()[name]["cash"]
            assert {s: p.quantity for s, p in sub.positions.items() if p.quantity} == {
                s: q for s, q in ex.balances()[name]["positions"].items() if q
            }
    finally:
        ex.close()
    assert np.isfinite(ledger.subaccount("pilot").cash)


def test_a_universe_or_two_venues_is_a_clear_error_for_a_live_run(tmp_path):
    text = PORTFOLIO.replace(
        "symbols: [BTCUSDT, ETHUSDT]\n    capital: 5000", "universe: top:5\n    capital: 5000"
    )
    portfolio = parse_portfolio(text, "live.yaml", tmp_path)
    with pytest.raises(ValueError, match="needs symbols"):
        build_live(portfolio, RunOptions(db=f"sqlite:///{tmp_path / 's.db'}"))


def test_an_unreachable_exchange_makes_the_data_late_and_the_runner_waits(tmp_path, binance):
    clock, client, calls = binance
    run, seen = _live(tmp_path, clock, client, cycles=3)
    r = run.runner
    late_seen = []
    original_tick = r.tick

    def tick():
        if r.data_late is not None:
            late_seen.append(dict(r.data_late))
        original_tick()

    r.tick = tick
    # Down from before the second bar is due (2023-03-03 00:00:30) for six hours.
    client.outage["until"] = pd.Timestamp("2023-03-03 06:00", tz="UTC")
    run.run()
    days = [ts for _, _, ts, _ in seen]
    assert days == list(pd.date_range("2023-03-01", periods=3, freq="D", tz="UTC"))
    # the second bar was decided only once the exchange answered again, on its own data
    _, end_i, _, decided_at = seen[1]
    assert decided_at >= client.outage["until"] and end_i == seen[1][0]
    assert late_seen and late_seen[0]["bar"].startswith("2023-03-02")
    assert "Invalid symbol" in late_seen[0]["reason"]
    from trimtab.journal.store import Store

    store = Store.open(tmp_path / "store.db")
    beat = store.heartbeat("live")
    store.close()
    assert beat["status"] == "stopped" and "data_late" not in beat
