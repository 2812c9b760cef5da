"""Copy trading: a real run's trades copied after a delay at the next hourly open (checked
against the bars read independently), the drawdown stop, the limits, no lookahead,
settings and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests._leader_run import CAPITAL, leader_run
from tests.conftest import HOURLY_FILE, SHARED_DATA
from trimtab.data.leader_feed import LeaderFeed, read_leader_csv, read_leader_run
from trimtab.data.panel import panel_from_long
from trimtab.strategies.copy import CopyStrategy, copy_from_settings, copy_params, parse_delay
from trimtab.strategies.sleeve import SimulatedStrategy

ROOT = Path(__file__).resolve().parents[2]
COST = (2.0 + 3.0) / 1e4  # default half spread + slippage
FEE = 10.0 / 1e4


@pytest.fixture(scope="module")
def leader():
    folder, _ = leader_run()
    return folder, read_leader_run(folder)


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return pd.read_csv(HOURLY_FILE, parse_dates=["timestamp"])


def _fills(run):
    return [r for r in run.records if r["kind"] == "fill" and r.get("leader_trade_id")]


def test_real_run_copied_at_the_next_hourly_open_after_the_delay(leader, hourly):
    folder, feed = leader
    p = copy_params(
        {
            "scaling": "fixed_fraction",
            "fraction": 0.25,
            "delay": "30m",
            "stop_drawdown": None,
            "limits": {"min_notional": 0},
        }
    )
    strat = CopyStrategy(p, feed, SHARED_DATA)
    capital = 1_000_000.0  # ample: no limit binds
    run = strat.simulate(capital)
    assert strat.market().timeframe == "1h"
    fills = _fills(run)
    assert len(fills) == len(feed.trades) > 10
    delay = pd.Timedelta(minutes=30)
    cash, held = capital, {}
    for f, t in zip(fills, feed.trades.itertuples(index=False), strict=True):
        assert f["leader_trade_id"] == t.trade_id and f["leader_ts"] == t.timestamp
        bars = hourly[(hourly["symbol"] == t.symbol) & (hourly["timestamp"] >= t.timestamp + delay)]
        bar = bars.sort_values("timestamp").iloc[0]  # the first hourly open after t + 30 min
        sign = 1.0 if t.side == "buy" else -1.0
        price = bar["open"] * (1 + sign * COST)
        assert f["ts"] == bar["timestamp"] and f["ts"] >= t.timestamp + delay
        assert f["side"] == t.side
        assert f["quantity"] == pytest.approx(0.25 * t.quantity, rel=1e-9)
        assert f["price"] == pytest.approx(price, rel=1e-12)
        assert f["fee"] == pytest.approx(FEE * f["quantity"] * price, rel=1e-9)
        bps = sign * (price / t.price - 1) * 1e4
        assert f["slippage_bps"] == pytest.approx(bps, abs=1e-9)
        assert f["market_bps"] == pytest.approx(sign * (bar["open"] / t.price - 1) * 1e4)
        assert f["cost_bps"] == pytest.approx(COST * 1e4 * bar["open"] / t.price)
        assert f["slippage_bps"] == pytest.approx(f["market_bps"] + f["cost_bps"], abs=1e-9)
        assert f["slippage_usdt"] == pytest.approx(sign * (price - t.price) * f["quantity"])
        cash -= sign * f["quantity"] * price + f["fee"]
        held[t.symbol] = held.get(t.symbol, 0.0) + sign * f["quantity"]
    # The end equity: cash plus holdings at the close of the last hourly bar.
    end = run.equity.index[-1]
    last = hourly[hourly["timestamp"] == end - pd.Timedelta(hours=1)].set_index("symbol")["close"]
    value = cash + sum(q * last[s] for s, q in held.items())
    assert run.equity.iloc[-1] == pytest.approx(value, rel=1e-9)
    s = run.summary
    assert s["copied"] == len(fills) and s["skipped"] == 0
    assert s["mean_delay_slippage_bps"] == pytest.approx(
        np.mean([f["slippage_bps"] for f in fills])
    )
    # The leader's return over the copy's span is the run's own total return.
    result = json.loads((folder / "result.json").read_text())
    assert s["leader_return"] == pytest.approx(result["metrics"]["total_return"], rel=1e-6)


def test_equity_ratio_scales_by_the_equities_known_at_the_decision(leader):
    _, feed = leader
    p = copy_params({"delay": "30m", "stop_drawdown": None, "limits": {"min_notional": 0}})
    strat = CopyStrategy(p, feed, SHARED_DATA)
    run = strat.simulate(20_000.0)
    fills = _fills(run)
    eq = run.equity
    t = feed.trades
    copy_held: dict[str, float] = {}
    for f in fills:
        # the copy's equity last marked at or before t + delay, over the leader's last known
        mine = eq[eq.index <= f["decided_at"]].iloc[-1]
        theirs = feed.equity[feed.equity.index <= f["decided_at"]].iloc[-1]
        assert f["scale"] == pytest.approx(mine / theirs, rel=1e-12)
        sym, have = f["symbol"], copy_held.get(f["symbol"], 0.0)
        if f["side"] == "buy":
            want = f["scale"] * f["leader_quantity"]
        else:  # proportional: the share of its holding the leader sold
            earlier = t[(t["symbol"] == sym) & (t["timestamp"] < f["leader_ts"])]
            lead = (earlier["quantity"] * np.where(earlier["side"] == "buy", 1, -1)).sum()
            want = have * f["leader_quantity"] / lead
        assert f["wanted_quantity"] == pytest.approx(want, rel=1e-9)
        copy_held[sym] = have + (f["quantity"] if f["side"] == "buy" else -f["quantity"])
    assert fills[0]["scale"] == pytest.approx(20_000.0 / CAPITAL)
    s = run.summary
    # A 5-bps costed, 30-minute-late copy of a daily book tracks it closely.
    assert s["tracking_correlation"] > 0.99 and s["tracking_error"] < 0.10
    assert isinstance(strat, SimulatedStrategy) and run.capacity > 0


# --- hand-made markets ------------------------------------------------------------------


def _panel(opens: dict[str, list[float]], start="2021-01-01", freq="1h", spread=0.5):
    """Bars whose close is open + ``spread``; volume 1e6 USDT a bar."""
    rows = []
    for sym, values in opens.items():
        for i, o in enumerate(values):
            ts = pd.Timestamp(start, tz="UTC") + i * pd.Timedelta(freq)
            c = o + spread
            rows.append((ts, sym, o, max(o, c), min(o, c), c, 1e6 / c, 1e6))
    cols = ["timestamp", "symbol", "open", "high", "low", "close", "volume", "quote_volume"]
    return panel_from_long(pd.DataFrame(rows, columns=cols))


def _feed(rows: list[tuple], equity: bool = False) -> LeaderFeed:
    cols = ["timestamp", "symbol", "side", "quantity", "price"]
    df = pd.DataFrame([r[:5] for r in rows], columns=cols)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    df["fee"] = 0.0
    df["trade_id"] = [f"L{i + 1}" for i in range(len(rows))]
    df["note"] = ""
    eq = None
    if equity:
        eq = pd.Series([r[5] for r in rows], index=pd.DatetimeIndex(df["timestamp"]))
    return LeaderFeed(df, eq, "hand-made", "trades")


def test_leader_drawdown_stop_unfollows_at_the_level():
    panel = _panel({"BTCUSDT": [100 + 0.1 * i for i in range(48)]})
    rows = [
        ("2021-01-01 01:00", "BTCUSDT", "buy", 1.0, 100.1, 1000.0),
        ("2021-01-01 05:00", "BTCUSDT", "buy", 1.0, 100.5, 1100.0),  # the peak
        ("2021-01-01 09:00", "BTCUSDT", "sell", 0.5, 100.9, 900.0),  # 18.2% down
        ("2021-01-01 13:00", "BTCUSDT", "buy", 0.5, 101.3, 800.0),  # 27.3% down
        ("2021-01-01 20:00", "BTCUSDT", "buy", 1.0, 102.0, 820.0),
    ]
    feed = _feed(rows, equity=True)
    base = {"scaling": "fixed_fraction", "delay": "10m", "end": "2021-01-02 00:00"}
    run = CopyStrategy(copy_params({**base, "stop_drawdown": 0.25}), feed, panel=panel).simulate(
        1e4
    )
    stops = [r for r in run.records if r["kind"] == "stop"]
    assert len(stops) == 1 and stops[0]["reason"] == "leader_drawdown"
    assert stops[0]["ts"] == pd.Timestamp("2021-01-01 13:00", tz="UTC")
    assert stops[0]["drawdown"] == pytest.approx(1 - 800 / 1100)
    copied = [f["leader_trade_id"] for f in _fills(run)]
    assert copied == ["L1", "L2", "L3"]
    skipped = {r["leader_trade_id"]: r["reason"] for r in run.records if r["kind"] == "skip"}
    assert skipped == {"L4": "unfollowed", "L5": "unfollowed"}
    # holdings (1.5) sold at the first open after the stop: the 13:00 bar
    out = [r for r in run.records if r["kind"] == "fill" and r["reason"].startswith("unfollow")]
    assert len(out) == 1 and out[0]["quantity"] == pytest.approx(1.5)
    assert out[0]["ts"] == pd.Timestamp("2021-01-01 13:00", tz="UTC")
    assert out[0]["price"] == pytest.approx((100 + 0.1 * 13) * (1 - COST))
    assert run.equity.iloc[-1] == run.equity[pd.Timestamp("2021-01-01 14:00", tz="UTC")]  # flat
    # a level the leader never reached: no stop, every trade copied
    calm = CopyStrategy(copy_params({**base, "stop_drawdown": 0.3}), feed, panel=panel).simulate(
        1e4
    )
    assert not [r for r in calm.records if r["kind"] == "stop"]
    assert [f["leader_trade_id"] for f in _fills(calm)] == ["L1", "L2", "L3", "L4", "L5"]


def test_copy_drawdown_stop_on_its_own_equity():
    opens = [100.0] * 3 + [100.0 * 0.98**i for i in range(1, 30)]
    panel = _panel({"BTCUSDT": opens}, spread=0.0)
    feed = _feed([("2021-01-01 00:00", "BTCUSDT", "buy", 50.0, 100.0)])
    p = copy_params(
        {
            "scaling": "fixed_fraction",
            "delay": 0,
            "stop_drawdown": 0.1,
            "stop_on": "copy",
            "end": "2021-01-02 08:00",
        }
    )
    run = CopyStrategy(p, feed, panel=panel).simulate(10_000.0)
    eq = run.equity
    # independent: cash after the buy plus 50 BTC at each close, until the stop's sale
    buy = 100.0 * (1 + COST)
    cash = 10_000.0 - 50 * buy * (1 + FEE)
    closes = np.array(opens)  # spread 0: close == open
    marks = cash + 50 * closes
    dd = 1 - marks / np.maximum.accumulate(np.r_[10_000.0, marks])[1:]
    k = int(np.flatnonzero(dd >= 0.1)[0])  # bar k's close: the stop
    stop = [r for r in run.records if r["kind"] == "stop"][0]
    assert stop["reason"] == "copy_drawdown"
    assert stop["ts"] == panel.index[k] + pd.Timedelta(hours=1)
    assert stop["equity"] == pytest.approx(marks[k])
    sale = [r for r in run.records if r["reason"].startswith("unfollow: copy_drawdown")][0]
    assert sale["ts"] == panel.index[k + 1]
    assert sale["price"] == pytest.approx(opens[k + 1] * (1 - COST))
    after = cash + 50 * sale["price"] * (1 - FEE)
    assert eq.iloc[-1] == pytest.approx(after)


def test_limits_clip_or_skip_with_reasons():
    panel = _panel({"BTCUSDT": [100.0] * 30, "ETHUSDT": [100.0] * 30}, spread=0.0)
    rows = [
        ("2021-01-01 01:00", "BTCUSDT", "buy", 30.0, 100.0),  # 3000 > 2000 per trade
        ("2021-01-01 02:00", "ETHUSDT", "buy", 50.0, 100.0),  # total 2000 + 5000 > 6000
        ("2021-01-01 03:00", "XRPUSDT", "buy", 10.0, 1.0),  # not allowed
        ("2021-01-01 04:00", "BTCUSDT", "sell", 15.0, 100.0),  # holds 20: 5 left
        ("2021-01-01 05:00", "BTCUSDT", "sell", 10.0, 100.0),  # holds 5
        ("2021-01-01 06:00", "BTCUSDT", "sell", 1.0, 100.0),  # holds nothing
        ("2021-01-01 07:00", "BTCUSDT", "buy", 0.01, 100.0),  # 1 USDT < 5
    ]
    settings = {
        "scaling": "fixed_fraction",
        "delay": 0,
        "half_spread_bps": 0,
        "slippage_bps": 0,
        "fee_bps": 0,
        "stop_drawdown": None,
        "sells": "scaled",
        "limits": {
            "max_trade_notional": 2000,
            "max_total_notional": 6000,
            "symbols": ["BTCUSDT", "ETHUSDT"],
        },
    }
    run = CopyStrategy(copy_params(settings), _feed(rows), panel=panel).simulate(10_000.0)
    fills = {f["leader_trade_id"]: f for f in _fills(run)}
    assert fills["L1"]["quantity"] == pytest.approx(20.0)
    assert [c["code"] for c in fills["L1"]["clipped"]] == ["trade_notional"]
    # L2: 2000 per trade binds (20); the total (6000 - 2000 held) has room for it
    assert fills["L2"]["quantity"] == pytest.approx(20.0)
    assert [c["code"] for c in fills["L2"]["clipped"]] == ["trade_notional"]
    assert fills["L4"]["quantity"] == pytest.approx(15.0) and not fills["L4"]["clipped"]
    assert fills["L5"]["quantity"] == pytest.approx(5.0)
    assert [c["code"] for c in fills["L5"]["clipped"]] == ["holdings"]
    skipped = {r["leader_trade_id"]: r["reason"] for r in run.records if r["kind"] == "skip"}
    assert skipped == {"L3": "symbol_not_allowed", "L6": "nothing_held", "L7": "below_min_notional"}
    assert run.equity.iloc[-1] == pytest.approx(10_000.0)  # flat prices, no costs

    # Proportional sells: the share of its holding the leader sold (of 30 BTC it bought)
    settings["sells"] = "proportional"
    run = CopyStrategy(copy_params(settings), _feed(rows), panel=panel).simulate(10_000.0)
    fills = {f["leader_trade_id"]: f for f in _fills(run)}
    assert fills["L4"]["quantity"] == pytest.approx(20.0 * 15 / 30)  # 10 of 20 held
    assert fills["L5"]["quantity"] == pytest.approx(10.0 * 10 / 15)
    assert fills["L6"]["quantity"] == pytest.approx((10.0 - 20 / 3) * 1 / 5)
    assert fills["L6"]["sell_rule"] == "proportional" and fills["L6"]["leader_held"] == 5.0

    # total notional and leverage, without the per-trade cap
    rows = [
        ("2021-01-01 01:00", "BTCUSDT", "buy", 30.0, 100.0),
        ("2021-01-01 02:00", "ETHUSDT", "buy", 50.0, 100.0),  # 3000 held + 5000 > 6000
        ("2021-01-01 03:00", "BTCUSDT", "buy", 10.0, 100.0),  # at the total: nothing left
    ]
    settings["limits"] = {"max_total_notional": 6000}
    run = CopyStrategy(copy_params(settings), _feed(rows), panel=panel).simulate(10_000.0)
    fills = {f["leader_trade_id"]: f for f in _fills(run)}
    assert fills["L2"]["quantity"] == pytest.approx(30.0)
    assert [c["code"] for c in fills["L2"]["clipped"]] == ["total_notional"]
    skipped = {r["leader_trade_id"]: r["reason"] for r in run.records if r["kind"] == "skip"}
    assert skipped == {"L3": "total_notional"}
    settings["limits"] = {"max_leverage": 0.5}
    run = CopyStrategy(copy_params(settings), _feed(rows), panel=panel).simulate(10_000.0)
    fills = {f["leader_trade_id"]: f for f in _fills(run)}
    assert fills["L1"]["quantity"] == pytest.approx(30.0)
    assert fills["L2"]["quantity"] == pytest.approx(20.0)  # 0.5 x 10000 - 3000
    assert [c["code"] for c in fills["L2"]["clipped"]] == ["leverage"]


def test_no_lookahead_rows_after_t_change_nothing_before_t(leader):
    _, feed = leader
    panel = CopyStrategy(copy_params({}), feed, SHARED_DATA).market().panel
    cut = pd.Timestamp("2021-02-15", tz="UTC")
    later = feed.trades["timestamp"] > cut
    trades = feed.trades.copy()
    trades.loc[later, "quantity"] *= 3  # different leader trades after t
    equity = feed.equity.copy()
    equity[equity.index > cut] *= 0.4  # and a collapse that stops the copy
    poisoned = LeaderFeed(trades, equity, "poisoned", "run")
    settings = copy_params({"delay": "2h", "stop_drawdown": 0.3, "end": "2021-03-31"})
    a = CopyStrategy(settings, feed, panel=panel).simulate(50_000.0)
    b = CopyStrategy(settings, poisoned, panel=panel).simulate(50_000.0)
    before = a.equity.index <= cut
    pd.testing.assert_series_equal(a.equity[before], b.equity[b.equity.index <= cut])
    ra = [r for r in a.records if r["ts"] <= cut]
    rb = [r for r in b.records if r["ts"] <= cut]
    assert len(ra) > 5 and repr(ra) == repr(rb)
    # ... and it does change what comes after
    assert [r for r in b.records if r["kind"] == "stop"] and a.equity.iloc[-1] != b.equity.iloc[-1]
    for f in _fills(a):
        assert f["ts"] >= f["leader_ts"] + pd.Timedelta(hours=2)


def test_settings_name_the_bad_key(tmp_path):
    with pytest.raises(ValueError, match=r"copy: leverage: unknown key"):
        copy_params({"leverage": 2})
    with pytest.raises(ValueError, match=r"limits\.max_leverage: Input should be greater than 0"):
        copy_params({"limits": {"max_leverage": -1}})
    with pytest.raises(ValueError, match=r"delay: delay 'soon'"):
        copy_params({"delay": "soon"})
    with pytest.raises(ValueError, match=r"scaling: Input should be"):
        copy_params({"scaling": "double"})
    assert parse_delay("5m") == 300 and parse_delay("1.5h") == 5400 and parse_delay(30) == 30
    with pytest.raises(ValueError, match="leader: missing"):
        copy_from_settings({}, SHARED_DATA)
    example = ROOT / "examples" / "leader_trades.csv"
    strat = copy_from_settings(
        {"leader": str(example), "scaling": "fixed_fraction", "fraction": 0.1}, SHARED_DATA
    )
    assert isinstance(strat, SimulatedStrategy) and strat.kind == "copy"
    assert strat.feed.trades["trade_id"].iloc[0] == "L001"
    with pytest.raises(ValueError, match="equity_ratio needs the leader's equity"):
        copy_from_settings({"leader": str(example)}, SHARED_DATA).simulate(1e4)


def test_cli_copies_the_example_and_names_bad_rows(tmp_path, monkeypatch):
    from trimtab.cli import app

    monkeypatch.chdir(tmp_path)
    example = ROOT / "examples" / "leader_trades.csv"
    out = tmp_path / "copy.json"
    args = ["copy", str(example), "--leader-equity", "100000", "--delay", "30m"]
    args += ["--data", str(SHARED_DATA), "--json", str(out), "--html", str(tmp_path / "c.html")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    fills = [r for r in doc["records"] if r["kind"] == "fill" and r["leader_trade_id"]]
    assert doc["summary"]["copied"] == len(fills) > 20
    assert all(r["leader_trade_id"].startswith("L") for r in fills)
    assert "Mean delay slippage" in result.output
    assert (tmp_path / "c.html").read_text().count("copy-equity") >= 1
    feed = read_leader_csv(example)
    assert doc["summary"]["leader_trades"] == len(feed.trades)

    # a run recorded in a store: the same copies as its run folder
    folder, url = leader_run()
    runs = []
    for source in (["--leader-run", str(folder)], ["--db", url, "--run-id", "leader"]):
        out = tmp_path / "s.json"
        args = ["copy", *source, "--delay", "1h", "--data", str(SHARED_DATA), "--json", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        runs.append(json.loads(out.read_text()))
    assert runs[0]["summary"]["copied"] == runs[1]["summary"]["copied"] > 20
    assert runs[0]["summary"]["end_equity"] == pytest.approx(runs[1]["summary"]["end_equity"])

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,symbol,side,quantity,price\n2021-01-02,BTCUSDT,buy,zero,100\n")
    result = CliRunner().invoke(app, ["copy", str(bad), "--data", str(SHARED_DATA)])
    assert result.exit_code == 2
    assert "row 1 (line 2), column 'quantity'" in result.output
    assert not math.isnan(doc["capacity"] or math.nan)
