"""`trimtab run --live --exchange-url URL` end to end on the wall clock (virtual here): the
bars downloaded through ccxt from the Binance emulator as they close, the orders sent
through the ccxt venue to the same emulator (its market clock following the virtual
one), a fresh run starting from what the accounts hold, the books equal to the
exchange's after each cycle."""

from __future__ import annotations

import ccxt
import pandas as pd
import pytest

from tests.app.test_live_run import PORTFOLIO, VirtualTime
from tests.conftest import SHARED_DATA
from tests.emulator import BinanceEmulator, point_ccxt_at
from trimtab.app.exchange import key_env_names
from trimtab.app.run import RunOptions, build_live
from trimtab.data import load_panel
from trimtab.engine.portfolio_file import parse_portfolio

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")
DAILY = SHARED_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
KEYS = {"pilot": ("kp-1", "sp-1"), "watch": ("kw-1", "sw-1")}


def test_live_on_the_emulator_from_bar_close_to_fill(tmp_path, monkeypatch):
    bars = load_panel(DAILY, symbols=["BTCUSDT", "ETHUSDT"]).slice("2021-12-01", "2023-03-31")
    clock = VirtualTime(pd.Timestamp("2023-03-02 00:05", tz="UTC"))
    accounts = {
        KEYS["pilot"][0]: (KEYS["pilot"][1], "pilot", {"USDT": "12000", "BTC": "0.1"}),
        KEYS["watch"][0]: (KEYS["watch"][1], "watch", {"USDT": "5000"}),
    }
    for name, (key, secret) in KEYS.items():
        key_env, secret_env = key_env_names(name)
        monkeypatch.setenv(key_env, key)
        monkeypatch.setenv(secret_env, secret)
    with BinanceEmulator(bars, accounts=accounts, clock=clock.t, futures_symbols=[]) as emu:
        sleep = clock.sleep

        def virtual_sleep(seconds: float) -> None:
            sleep(seconds)
            emu.set_clock(clock.t)  # the exchange lives on the same (virtual) time

        public = point_ccxt_at(ccxt.binance({"enableRateLimit": False}), emu.url)
        public.milliseconds = clock.ms
        portfolio = parse_portfolio(PORTFOLIO, "live.yaml", tmp_path)
        run = build_live(
            portfolio,
            RunOptions(
                db=f"sqlite:///{tmp_path / 'store.db'}",
                start="2023-03-01",
                live=True,
                exchange_url=emu.url,
            ),
            exchange=public,
            cache=tmp_path / "cache",
            now=clock.now,
            sleep=virtual_sleep,
        )
        r = run.runner
        assert r.kind == "live"
        # A fresh run starts from the accounts' holdings, not the file's capital.
        pilot = r.account.subaccount("pilot")
        assert pilot.cash == 12000 and pilot.positions["BTCUSDT"].quantity == 0.1
        seen = []
        original = r.cycle

        def cycle(i):
            seen.append((r.m.timestamps[i], clock.now()))
            out = original(i)
            if len(seen) >= 3:
                r.stop.set()
            return out

        r.cycle = cycle
        run.run()
        assert [ts for ts, _ in seen] == list(
            pd.date_range("2023-03-01", periods=3, freq="D", tz="UTC")
        )
        for ts, now in seen:
            assert now >= ts + pd.Timedelta(days=1, seconds=30)  # decided after its close
        ours = [o for o in emu.orders() if o["cid"].startswith("tt-")]
        assert ours and {o["account"] for o in ours} == {"pilot"}  # monitor sent nothing
        first = min(ours, key=lambda o: o["time"])
        # Decided at the close of 2023-03-01 (the runner started 5 minutes after it), filled
        # then, inside the next bar: at its open price.
        filled = pd.Timestamp(first["time"], unit="ms", tz="UTC")
        assert filled == pd.Timestamp("2023-03-02 00:05", tz="UTC")
        trade = next(t for t in emu.trades("pilot") if t["order_id"] == first["id"])
        open_0302 = float(bars.open.loc["2023-03-02", first["symbol"]])
        assert float(trade["price"]) == pytest.approx(open_0302, rel=1e-12)
        from trimtab.journal.store import Store

        store = Store.open(tmp_path / "store.db")
        try:
            status = store.load_state("live", "status")
            assert status["gate"]["state"] == "ACTIVE"
            fills = store.fills("live", floats=True)
        finally:
            store.close()
        # The fills of the first two cycles' orders were booked by the cycles after them.
        booked = {f["trade_id"] for f in fills}
        made = {f"{t['symbol']}:{t['id']}" for t in emu.trades("pilot")}
        assert booked and booked <= made
        assert emu.duplicate_attempts == 0
