"""`trimtab run` with a funding carry: the default portfolio (core, trend, carry under the
allocator, all in monitor mode) on replayed bars over a funding period, and a carry-only
file in auto and approve mode on the paper exchange.

What is checked: every bar records a decision for each of the three subaccounts; the
carry's trailing funding at each decision equals the mean of the last 21 Binance rates
stamped at or before the bar's close, read from the funding CSV here (an independent,
lookahead-free computation); nothing is sent in monitor mode; the allocator's decision
is recorded at the month's first close; a SIGKILL mid-run and a restart record the same
decisions as a run never killed. In auto mode the short perpetual leg is planned, sent
and filled, every funding payment the exchange books is ``-quantity * mark * rate`` of
the short held then (walked from the fills in the exchange's own event order), and the
runner's ledger equals the exchange's books; in approve mode the proposal carries the
short leg and an approval fills it. On the wall clock (no funding data beside the
downloaded bars) the carry stays flat and says ``no_funding``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.app.test_live_run import binance  # noqa: F401  (the fixture, used below)
from tests.conftest import FUNDING_FILE, SHARED_DATA
from tests.engine._live import END, START
from trimtab.app.run import RunOptions, build_live, build_run
from trimtab.domain.decisions import json_ready
from trimtab.engine.live import ALLOCATOR
from trimtab.engine.portfolio_file import load_portfolio, parse_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, prepare_portfolio
from trimtab.journal.store import Store

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "examples" / "portfolio.yaml"
PERPS = ("BTCUSDT-PERP", "ETHUSDT-PERP")
WINDOW = 21  # the carry's default window (funding intervals)
WALL = {"created_at", "updated_at", "seq", "fill_id"}

CARRY_ONLY = """
backtest: {{timeframe: 1d}}
account:
  limits: {{max_gross_leverage: 2.0, max_drawdown: 0.9}}
  breakers: {{daily_loss_limit: null, loss_streak: null}}
runner: {{tick_seconds: 0.05, review_every: 0}}
subaccounts:
  carry:
    strategy: carry
    symbols: [BTCUSDT, ETHUSDT]
    capital: 20000
    params: {{enter_apr: {enter}, exit_apr: -0.5, gross: 0.95}}
    limits: {{max_gross_leverage: 2.0, max_drawdown: 0.5, max_net_exposure: 1.0}}
    breakers: {{daily_loss_limit: null, loss_streak: null}}
    mode: {mode}
    envelope: {{max_order_notional: 100000, max_daily_turnover: 1000000}}
"""


def binance_rates() -> dict[str, pd.Series]:
    """The funding file's Binance rates per spot symbol (fractions per 8 h, UTC)."""
    table = pd.read_csv(FUNDING_FILE)
    table = table[table["venue"] == "binance"]
    out = {}
    for symbol, rows in table.groupby("symbol"):
        stamps = pd.DatetimeIndex(pd.to_datetime(rows["timestamp"], utc=True))
        out[str(symbol)] = pd.Series(rows["funding_rate"].to_numpy(float), index=stamps)
    return {s: r.sort_index() for s, r in out.items()}


def trailing_apr(rates: pd.Series, bar_open: pd.Timestamp) -> float:
    """The mean of the last WINDOW rates stamped at or before the daily bar's close,
    per 365-day year (1,095 intervals of 8 h)."""
    known = rates[rates.index <= bar_open + pd.Timedelta(days=1)]
    return float(known.iloc[-WINDOW:].mean() * 1095)


@pytest.fixture(scope="module")
def default_prepared():
    portfolio = load_portfolio(DEFAULT)
    return portfolio, prepare_portfolio(
        portfolio, PortfolioOptions(data=str(SHARED_DATA), start=START, end=END)
    )


def run_default(folder: Path, prepared, end: str = END):
    portfolio, prep = prepared
    return build_run(
        portfolio,
        RunOptions(
            db=f"sqlite:///{folder / 'store.db'}",
            run_id="paper",
            replay=str(SHARED_DATA),
            start=START,
            end=end,
        ),
        prepared=prep,
    )


def test_the_default_portfolio_runs_in_monitor_mode_over_a_funding_period(
    tmp_path, default_prepared
):
    run = run_default(tmp_path, default_prepared)
    r = run.runner
    bars = list(r.m.timestamps[r.context.start_i : r.context.end_i + 1])
    assert bars[0] == pd.Timestamp(START, tz="UTC") and bars[-1] == pd.Timestamp(END, tz="UTC")
    # The perpetuals reach the paper exchange as perpetuals (not spot, not unknown).
    for perp in PERPS:
        assert r.exchange.instrument(perp).is_perpetual
    run.run()
    store = Store.open(tmp_path / "store.db")
    try:
        decided = {n: store.decisions("paper", n) for n in ("core", "trend", "carry")}
        for name, records in decided.items():
            assert [pd.Timestamp(d["timestamp"]) for d in records] == bars, name
            assert all(d["mode"] == "monitor" for d in records)
        assert store.orders("paper") == [] and run.exchange.orders() == []
        # Nothing but the carry ever wanted a perpetual.
        for name in ("core", "trend"):
            assert not any(set(d.get("targets") or {}) & set(PERPS) for d in decided[name])
        rates = binance_rates()
        entered = 0
        for d in decided["carry"]:
            reasons = {x["code"]: x for x in d["reasons"]}
            assert "funding" in reasons and "carry_target" in reasons
            apr = reasons["funding"]["values"]["apr"]
            bar = pd.Timestamp(d["timestamp"])
            for spot in ("BTCUSDT", "ETHUSDT"):
                assert apr[spot] == pytest.approx(trailing_apr(rates[spot], bar), rel=1e-9)
            targets = d.get("targets") or {}
            if targets:  # a pair entered: spot long, perpetual short, equal weights
                entered += 1
                assert d["not_sent"] == "monitor mode: no order is sent"
                for spot in ("BTCUSDT", "ETHUSDT"):
                    if spot in targets:
                        assert targets[spot + "-PERP"] == pytest.approx(-targets[spot])
        # The allocator is asked at every close and decides at the month's first one.
        [alloc] = store.decisions("paper", ALLOCATOR)
        assert pd.Timestamp(alloc["timestamp"]) == pd.Timestamp("2022-02-01", tz="UTC")
        assert alloc["allocation"]["current"] == {"core": 0.4, "trend": 0.4, "carry": 0.2}
        # 29 closes of history before February: fewer than min_history (60), it holds.
        assert "fewer than two subaccounts with 60 bars" in alloc["reasons"][0]["message"]
        assert store.transfers("paper") == []
    finally:
        store.close()
    assert entered or all(
        min(x["values"]["apr"].values()) <= 0.08
        for d in decided["carry"]
        for x in d["reasons"]
        if x["code"] == "funding"
    )


def _driver(portfolio: Path, folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.engine._live", str(portfolio), str(folder), str(SHARED_DATA)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _checkpoint(folder: Path) -> int | None:
    db = folder / "store.db"
    if not db.exists():
        return None
    store = Store.open(db)
    try:
        run = store.run("paper")
        return None if run is None or run.checkpoint is None else run.checkpoint[0]
    finally:
        store.close()


def _strip(rows):
    return [{k: v for k, v in row.items() if k not in WALL} for row in rows]


def test_a_sigkill_mid_run_then_a_restart_records_what_a_whole_run_does(tmp_path, default_prepared):
    whole = tmp_path / "whole"
    run = run_default(whole, default_prepared)
    first, last = run.runner.context.start_i, run.runner.context.end_i
    run.run()
    killed = tmp_path / "killed"
    proc = _driver(DEFAULT, killed)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready")
    # Kill once some bars are committed and before the end (the driver runs a daily bar
    # in 40 ms of wall time, so this lands inside the cycles).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = _checkpoint(killed)
        if done is not None and done >= first + 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    at_kill = _checkpoint(killed)
    assert at_kill is not None and first + 5 <= at_kill < last
    proc = _driver(DEFAULT, killed)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"done {last}" in out
    a, b = Store.open(whole / "store.db"), Store.open(killed / "store.db")
    try:
        assert a.decisions("paper") == b.decisions("paper")
        assert len(b.decisions("paper", "carry")) == last - first + 1
        assert b.decisions("paper", ALLOCATOR)  # the allocator's, after the restart too
        assert _strip(a.balances("paper")) == _strip(b.balances("paper"))
        assert b.orders("paper") == []
    finally:
        a.close()
        b.close()


def carry_run(folder: Path, mode: str, start: str, end: str, enter: float = 0.08):
    path = folder / "carry.yaml"
    path.write_text(CARRY_ONLY.format(mode=mode, enter=enter))
    return build_run(
        load_portfolio(path),
        RunOptions(
            db=f"sqlite:///{folder / 'store.db'}",
            run_id="carry",
            replay=str(SHARED_DATA),
            start=start,
            end=end,
        ),
    )


def assert_ledger_is_the_exchange(run) -> None:
    books = run.exchange.balances()
    for name, sub in run.runner.account.subaccounts.items():
        assert sub.cash == books[name]["cash"], name
        held = {s: p.quantity for s, p in sub.positions.items() if p.quantity}
        assert held == {s: q for s, q in books[name]["positions"].items() if q}, name


def test_auto_mode_opens_the_short_leg_and_books_its_funding(tmp_path):
    # Entry at any positive trailing funding (enter 1%/yr): the pairs open at the first
    # decision on both data sets and are held through January 2021's funding.
    run = carry_run(tmp_path, "auto", "2021-01-04", "2021-01-31", enter=0.01)
    r = run.runner
    r.run(run.clock)
    events = run.exchange.events_since(0)
    run.close()
    fills = [e for e in events if e.kind == "fill"]
    perp_sells = [e for e in fills if e.data["symbol"] in PERPS and e.data["side"] == "sell"]
    assert {e.data["symbol"] for e in perp_sells} == set(PERPS)
    assert pd.Timestamp(perp_sells[0].data["timestamp"]) == pd.Timestamp("2021-01-05", tz="UTC")
    # Walk the exchange's events in its own order: each payment is -q * mark * rate of
    # the short held at that moment, at a rate of the funding file within the bar.
    rates = binance_rates()
    held = dict.fromkeys(PERPS, 0.0)
    paid = 0.0
    funding = [e for e in events if e.kind == "funding"]
    assert funding
    for e in events:
        symbol = e.data.get("symbol")
        if e.kind == "fill" and symbol in PERPS:
            sign = 1.0 if e.data["side"] == "buy" else -1.0
            held[symbol] += sign * float(e.data["quantity"])
        elif e.kind == "funding":
            q, mark, rate = held[symbol], e.data["mark"], e.data["rate"]
            assert q < 0  # only the short is ever held
            assert e.data["amount"] == pytest.approx(-q * mark * rate, rel=1e-12)
            window = rates[symbol.removesuffix("-PERP")]
            inside = window[
                (window.index >= e.timestamp) & (window.index <= e.timestamp + pd.Timedelta(days=1))
            ]
            assert rate in set(inside.tolist())
            paid += e.data["amount"]
    carry = r.account.subaccount("carry")
    assert carry.funding_pnl == pytest.approx(paid, rel=1e-12, abs=1e-9)
    assert_ledger_is_the_exchange(run)
    # Hedged: each short is within 1% of its spot leg (base units) at the end.
    books = run.exchange.balances()["carry"]["positions"]
    for spot in ("BTCUSDT", "ETHUSDT"):
        perp = books.get(spot + "-PERP", 0.0)
        if perp:
            assert books[spot] == pytest.approx(-perp, rel=0.01)


def test_approve_mode_proposes_the_short_leg_and_an_approval_fills_it(tmp_path):
    run = carry_run(tmp_path, "approve", "2021-01-04", "2021-01-12", enter=0.01)
    r, store = run.runner, run.store
    i = r.start()
    r.cycle(i)
    [p] = store.proposals("carry", status="pending")
    legs = {(leg["symbol"], leg["side"]): leg for leg in p["legs"]}
    assert set(legs) == {
        ("BTCUSDT", "buy"),
        ("ETHUSDT", "buy"),
        ("BTCUSDT-PERP", "sell"),
        ("ETHUSDT-PERP", "sell"),
    }
    assert not any(leg["reduce_only"] for leg in p["legs"])
    assert run.exchange.orders() == []  # nothing before the approval
    store.add_command(
        "carry", "approve", args={"proposal_id": p["proposal_id"]}, actor="ana", reason="go"
    )
    r.tick()
    [cmd] = store.commands("carry")
    assert cmd["status"] == "applied", cmd["outcome"]
    r.cycle(i + 1)  # the approved legs fill at this bar's open
    positions = run.exchange.balances()["carry"]["positions"]
    for spot in ("BTCUSDT", "ETHUSDT"):
        assert positions[spot + "-PERP"] < 0 < positions[spot]
        assert positions[spot] == pytest.approx(-positions[spot + "-PERP"], rel=0.01)
    assert_ledger_is_the_exchange(run)
    run.close()


LIVE_CARRY = """
backtest: {timeframe: 1d}
runner: {grace_seconds: 30, tick_seconds: 600, review_every: 0}
account:
  limits: {max_gross_leverage: 2.0}
subaccounts:
  trend:
    strategy: trend
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    mode: monitor
  carry:
    strategy: carry
    symbols: [BTCUSDT, ETHUSDT]
    capital: 5000
    limits: {max_gross_leverage: 2.0}
    mode: monitor
"""


def test_on_the_wall_clock_without_funding_data_the_carry_stays_flat_and_says_why(
    tmp_path,
    binance,  # noqa: F811
):
    clock, client, _calls = binance
    portfolio = parse_portfolio(LIVE_CARRY, "live.yaml", tmp_path)
    run = build_live(
        portfolio,
        RunOptions(db=f"sqlite:///{tmp_path / 'store.db'}", start="2023-03-01"),
        exchange=client(),
        cache=tmp_path / "cache",
        now=clock.now,
        sleep=clock.sleep,
    )
    cycles = []
    original = run.runner.cycle

    def cycle(i):
        out = original(i)
        cycles.append(i)
        if len(cycles) >= 3:
            run.runner.stop.set()
        return out

    run.runner.cycle = cycle
    assert run.runner.exchange.instrument("BTCUSDT-PERP").is_perpetual
    run.run()
    store = Store.open(tmp_path / "store.db")
    try:
        carry = store.decisions("live", "carry")
        assert len(carry) == 3 and len(store.decisions("live", "trend")) == 3
        for d in carry:
            codes = {x["code"] for x in d["reasons"]}
            assert "no_funding" in codes and not d.get("targets")
    finally:
        store.close()


ALLOCATED = """
backtest: {timeframe: 1d}
account:
  limits: {max_gross_leverage: 2.0, max_drawdown: 0.9}
  breakers: {daily_loss_limit: null, loss_streak: null}
runner: {tick_seconds: 0.05, review_every: 0}
subaccounts:
  trend:
    strategy: trend
    symbols: [BTCUSDT, ETHUSDT]
    capital: 30000
    breakers: {daily_loss_limit: null, loss_streak: null}
    mode: auto
    envelope: {max_order_notional: 1000000}
  carry:
    strategy: carry
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    params: {enter_apr: 0.01, exit_apr: -0.5}
    limits: {max_gross_leverage: 2.0}
    breakers: {daily_loss_limit: null, loss_streak: null}
    mode: auto
    envelope: {max_order_notional: 1000000}
allocator: {every: weekly, lookback: 10, min_history: 5, min_share: 0.1, max_share: 0.9, band: 0.01}
"""


def allocated_run(folder: Path, prep=None):
    path = folder.parent / "allocated.yaml"
    path.write_text(ALLOCATED)
    portfolio = load_portfolio(path)
    return portfolio, build_run(
        portfolio,
        RunOptions(
            db=f"sqlite:///{folder / 'store.db'}",
            run_id="alloc",
            replay=str(SHARED_DATA),
            start="2021-01-04",
            end="2021-02-14",
        ),
        prepared=prep,
    )


def assert_nested_close(got, want, rel: float) -> None:
    """``got == want`` for nested JSON, numbers compared to ``rel``."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (got, want)
        for key in want:
            assert_nested_close(got[key], want[key], rel)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for g, w in zip(got, want, strict=True):
            assert_nested_close(g, w, rel)
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=rel, abs=1e-12), (got, want)
    else:
        assert got == want


def test_the_allocator_reads_the_runs_earlier_closes_and_a_restart_reads_the_same(tmp_path):
    from trimtab.engine.portfolio_run import make_allocator

    portfolio, whole = allocated_run(tmp_path / "whole")
    first = whole.runner.context.start_i
    whole.run()
    # Stopped after a week and a half, built again and run on: the same records.
    _, part = allocated_run(tmp_path / "stopped")
    part.run(until=first + 10)
    _, rest = allocated_run(tmp_path / "stopped")
    rest.run()
    a, b = (
        Store.open(tmp_path / "whole" / "store.db"),
        Store.open(tmp_path / "stopped" / "store.db"),
    )
    try:
        records = a.decisions("alloc", ALLOCATOR)
        assert records == b.decisions("alloc", ALLOCATOR)
        assert _strip(a.transfers("alloc")) == _strip(b.transfers("alloc"))
        assert _strip(a.balances("alloc")) == _strip(b.balances("alloc"))
        # Every Monday close after the run's first bar (which has no returns yet, so no
        # record, as in a backtest); those with 5 returns of history decide.
        stamps = [pd.Timestamp(r["timestamp"]) for r in records]
        assert stamps == list(pd.date_range("2021-01-11", "2021-02-08", freq="7D", tz="UTC"))
        decided = [r for r in records if r["allocation"]["strategies"]]
        assert decided
        # What the runner gave the allocator: each subaccount's equity at the earlier
        # closes of the run (the store's balances, after that close's transfers) with the
        # transfers made at them, and at this close, before its own transfer, as "now".
        rows = a.balances("alloc", floats=True)
        equity = {(pd.Timestamp(r["timestamp"]), r["subaccount"]): float(r["equity"]) for r in rows}
        days = sorted({t for t, _ in equity})
        made = a.transfers("alloc", floats=True)
        flow = {key: 0.0 for key in equity}
        for t in made:
            ts = pd.Timestamp(t["timestamp"])
            flow[(ts, t["source"])] -= t["amount"]
            flow[(ts, t["target"])] += t["amount"]
        portfolio_prep = prepare_portfolio(
            portfolio,
            PortfolioOptions(data=str(SHARED_DATA), start="2021-01-04", end="2021-02-14"),
        )
        alloc = make_allocator(portfolio.settings, portfolio_prep)
        for r in records:
            ts = pd.Timestamp(r["timestamp"])
            now = {n: equity[(ts, n)] - flow[(ts, n)] for n in ("trend", "carry")}
            total = sum(now.values())
            shares = r["allocation"]["current"]
            assert shares == {n: round(v / total, 6) for n, v in now.items()}
            before = [d for d in days if d < ts]
            history = {
                n: (
                    np.array([equity[(d, n)] for d in before]),
                    np.array([flow[(d, n)] for d in before]),
                )
                for n in now
            }
            expected = json_ready(alloc.allocate(ts, now, history))
            # To 1e-12: "now" is rebuilt here as the stored equity less its transfer.
            assert_nested_close(r["allocation"], expected, rel=1e-12)
        assert len(made) == len([r for r in records if r["action"] == "allocate"]) > 0
        by_day = {pd.Timestamp(r["timestamp"]): r["allocation"] for r in records}
        for t in made:
            # Both in auto mode: made. Two subaccounts: the move is the target's share gap
            # times their total, as the guard let it through.
            ts, target = pd.Timestamp(t["timestamp"]), t["target"]
            total = sum(equity[(ts, n)] for n in ("trend", "carry"))
            before_move = equity[(ts, target)] - flow[(ts, target)]
            gap = by_day[ts]["targets"][target] - before_move / total
            guard = t["guard"]
            assert t["status"] == "done"
            assert guard["requested"] == pytest.approx(gap * total, rel=1e-9)
            assert t["amount"] == guard["moved"] > 0
            if guard["status"] == "cut":  # the source's free cash, say: named in checks
                assert t["amount"] < guard["requested"] and guard["checks"]
            else:
                assert guard["status"] == "done" and t["amount"] == guard["requested"]
            assert t["guard"]["transfer_id"] == f"alloc:t{t['bar']}:0"
        # The exchange moved the same cash, once: its balances and the runner's books agree.
        for folder in ("whole", "stopped"):
            _, again = allocated_run(tmp_path / folder)
            try:
                rec = again.runner.inspect()
                assert rec.ok, rec.summary()
                moves = [e for e in again.exchange.events_since(0) if e.kind == "transfer"]
                assert [(e.data["id"], e.data["amount"]) for e in moves] == [
                    (t["guard"]["transfer_id"], t["amount"]) for t in made
                ]
            finally:
                again.close()
    finally:
        a.close()
        b.close()


LIVE_FUNDED = """
backtest: {timeframe: 1d}
runner: {grace_seconds: 30, tick_seconds: 600, review_every: 0}
account:
  limits: {max_gross_leverage: 2.0}
  breakers: {daily_loss_limit: null, loss_streak: null}
subaccounts:
  trend:
    strategy: trend
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    mode: monitor
  carry:
    strategy: carry
    symbols: [BTCUSDT, ETHUSDT]
    capital: 5000
    params: {enter_apr: 0.01, exit_apr: -0.5}
    limits: {max_gross_leverage: 2.0}
    breakers: {daily_loss_limit: null, loss_streak: null}
    mode: auto
    envelope: {max_order_notional: 100000}
"""
DAY_MS = 86_400_000


@pytest.fixture
def binance_with_funding():
    """A local HTTP server answering Binance's spot klines (the daily file) and USD-M
    funding history (``/fapi/v1/fundingRate``, the funding file's Binance rows), each
    only up to a virtual now; and a ccxt client pointed at it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    import ccxt

    from tests.app.test_live_run import VirtualTime, _klines

    clock = VirtualTime(pd.Timestamp("2022-01-04 00:05", tz="UTC"))
    klines = _klines(["BTCUSDT", "ETHUSDT"])
    rates = binance_rates()
    asked: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            u = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            start = int(q.get("startTime", 0))
            limit = int(q.get("limit", 500))
            if u.path == "/api/v3/klines":
                rows = [r for r in klines[q["symbol"]] if start <= r[0] <= clock.ms()]
            elif u.path == "/fapi/v1/fundingRate":
                asked.append(q)
                series = rates[q["symbol"]]
                ms = series.index.as_unit("ms").asi8
                rows = [
                    {"symbol": q["symbol"], "fundingTime": int(t), "fundingRate": repr(float(r))}
                    for t, r in zip(ms, series.to_numpy(), strict=True)
                    if start <= t <= clock.ms()
                ]
            else:
                self.send_error(404)
                return
            body = json.dumps(rows[:limit]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def market(b: str, swap: bool) -> dict:
        return {
            "id": b + "USDT",
            "symbol": f"{b}/USDT:USDT" if swap else f"{b}/USDT",
            "base": b,
            "quote": "USDT",
            "settle": "USDT" if swap else None,
            "baseId": b,
            "quoteId": "USDT",
            "settleId": "USDT" if swap else None,
            "type": "swap" if swap else "spot",
            "spot": not swap,
            "margin": False,
            "swap": swap,
            "future": False,
            "option": False,
            "contract": swap,
            "linear": True if swap else None,
            "inverse": False if swap else None,
            "contractSize": 1.0 if swap else None,
            "active": True,
            "precision": {"amount": 1e-5, "price": 0.01},
            "limits": {},
            "info": {},
        }

    def client():
        ex = ccxt.binance({"enableRateLimit": False})
        ex.urls["api"]["public"] = base + "/api/v3"
        ex.urls["api"]["fapiPublic"] = base + "/fapi/v1"
        ex.set_markets([market(b, swap) for b in ("BTC", "ETH") for swap in (False, True)])
        ex.milliseconds = clock.ms
        return ex

    yield clock, client, asked
    server.shutdown()


def test_on_the_wall_clock_the_carrys_funding_is_downloaded_as_bars_close(
    tmp_path, binance_with_funding
):
    clock, client, asked = binance_with_funding
    portfolio = parse_portfolio(LIVE_FUNDED, "live.yaml", tmp_path)
    run = build_live(
        portfolio,
        RunOptions(db=f"sqlite:///{tmp_path / 'store.db'}", start="2022-01-03"),
        exchange=client(),
        cache=tmp_path / "cache",
        now=clock.now,
        sleep=clock.sleep,
    )
    seen = []
    original = run.runner.cycle

    def cycle(i):
        seen.append((run.runner.m.timestamps[i], clock.now()))
        out = original(i)
        if len(seen) >= 5:
            run.runner.stop.set()
        return out

    run.runner.cycle = cycle
    exchange = run.exchange
    r = run.runner
    r.run_live(run.clock, run.feed.context, lambda: run.feed.latest().funding)
    events = exchange.events_since(0)
    run.close()
    assert [t for t, _ in seen] == list(pd.date_range("2022-01-03", periods=5, tz="UTC"))
    # Rates asked for incrementally: after the first download, from past the last kept.
    later = [int(q["startTime"]) for q in asked if q["symbol"] == "BTCUSDT"][-3:]
    assert later == sorted(later) and len(set(later)) == 3
    rates = binance_rates()
    store = Store.open(tmp_path / "store.db")
    try:
        decisions = store.decisions("live", "carry")
        assert len(decisions) == 5
        for d in decisions:
            funding = next(x for x in d["reasons"] if x["code"] == "funding")
            bar = pd.Timestamp(d["timestamp"])
            for spot in ("BTCUSDT", "ETHUSDT"):
                # Only the rates the venue had published by the decision (its close
                # plus the grace): the file's trailing mean at the close, no later rate.
                apr = funding["values"]["apr"][spot]
                assert apr == pytest.approx(trailing_apr(rates[spot], bar), rel=1e-9)
    finally:
        store.close()
    # The paper exchange books the funding downloaded after it was opened: payments at
    # bars later than the first decision's, each -q * mark * rate of the short held.
    held = dict.fromkeys(PERPS, 0.0)
    paid = []
    for e in events:
        symbol = e.data.get("symbol")
        if e.kind == "fill" and symbol in PERPS:
            held[symbol] += (1.0 if e.data["side"] == "buy" else -1.0) * e.data["quantity"]
        elif e.kind == "funding":
            assert e.data["amount"] == pytest.approx(
                -held[symbol] * e.data["mark"] * e.data["rate"], rel=1e-12
            )
            paid.append(e)
    # The exchange opened knowing rates up to 2022-01-04 00:00 (the virtual now then);
    # every later payment is of a rate downloaded at a later refresh.
    # Three 8-hour payments a day on each short, from the fill's bar to the last run.
    days = pd.Series([e.timestamp for e in paid]).value_counts().sort_index()
    assert list(days.index) == list(pd.date_range("2022-01-04", periods=4, tz="UTC"))
    assert (days == 6).all()
