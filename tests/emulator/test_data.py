"""The emulator on trimtab's own market data: the real daily file beside the project
(klines equal to the file's bars up to the clock, a real wick filling a resting limit,
a symbol not yet listed refused, AR/BUSD split right) and the synthetic sample."""

from __future__ import annotations

from decimal import ROUND_CEILING
from decimal import Decimal as D

import ccxt
import pandas as pd
import pytest

from tests.conftest import HAVE_REAL_DATA, REAL_DATA
from tests.emulator import Account, BinanceEmulator
from tests.emulator.helpers import KEY, SECRET, client, ms
from trimtab.data import load_panel, sample

REAL_FILE = REAL_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
needs_real = pytest.mark.skipif(not HAVE_REAL_DATA, reason=f"real data not found at {REAL_DATA}")


@needs_real
def test_real_daily_bars_served_up_to_the_clock(tmp_path):
    panel = load_panel(REAL_FILE, symbols=["BTCUSDT", "LINKUSDT", "ARBUSD", "SOLUSDT"])
    emu = BinanceEmulator(
        panel,
        accounts=[Account(KEY, SECRET, "main", {"USDT": "100000"})],
        clock="2020-03-12 00:05",
    )
    with emu:
        ex = client(emu)
        ex.load_markets()
        assert ex.markets["AR/BUSD"]["id"] == "ARBUSD"
        assert "AR/BUSD:BUSD" not in ex.markets  # perpetuals only for USDT pairs
        file = pd.read_csv(REAL_FILE, parse_dates=["timestamp"])
        link = file[(file["symbol"] == "LINKUSDT") & (file["timestamp"] < "2020-03-12")]
        bars = ex.fetch_ohlcv("LINK/USDT", "1d", since=ms("2020-02-01"), limit=1000)
        want = link[link["timestamp"] >= "2020-02-01"]
        assert [b[0] for b in bars[:-1]] == [ms(str(t)) for t in want["timestamp"]]
        assert [b[1:5] for b in bars[:-1]] == want[["open", "high", "low", "close"]].values.tolist()
        assert bars[-1][0] == ms("2020-03-12")  # the forming bar, open only
        assert bars[-1][2] == bars[-1][3] == bars[-1][1]
        # 12 March 2020: LINK's low printed 0.0001; a resting buy far below fills
        o = ex.create_order("LINK/USDT", "limit", "buy", 100, 1.5, params={"clientOrderId": "w-1"})
        assert o["status"] == "open"
        emu.set_clock("2020-03-13 00:05")
        got = ex.fetch_order(o["id"], "LINK/USDT")
        assert got["status"] == "closed" and got["average"] == 1.5
        assert emu.balances("main")["LINK"]["free"] == D("100") - D("0.1")
        # SOL starts in the data on 2020-08-11: listed as not trading, orders refused
        assert ex.markets["SOL/USDT"]["active"] is False and ex.markets["BTC/USDT"]["active"]
        with pytest.raises(ccxt.MarketClosed):
            ex.create_order("SOL/USDT", "market", "buy", 1, params={"clientOrderId": "w-2"})


def test_on_the_synthetic_sample(tmp_path):
    panel = load_panel(sample.ensure_sample() / sample.DAILY_FILE, symbols=["BTCUSDT", "ETHUSDT"])
    t = panel.index[100]
    emu = BinanceEmulator(
        panel,
        accounts=[Account(KEY, SECRET, "main", {"USDT": "50000"}, {"USDT": "50000"})],
        clock=t + pd.Timedelta(minutes=5),
        state_path=tmp_path / "s.json",
    )
    with emu:
        ex = client(emu)
        ex.load_markets()
        bars = ex.fetch_ohlcv("ETH/USDT", "1d", limit=5)
        assert bars[-1][0] == ms(str(t)) and bars[-2][4] == panel.close["ETHUSDT"].iloc[99]
        o = ex.create_order("BTC/USDT:USDT", "market", "buy", 0.5, params={"clientOrderId": "s1"})
        price = emu.price("BTCUSDT")
        assert price == D(repr(float(panel.open["BTCUSDT"].iloc[100])))
        tick = emu.rules["BTCUSDT"].tick  # a buy pays the open rounded up to the tick
        assert D(o["info"]["avgPrice"]) == (price / tick).to_integral_value(ROUND_CEILING) * tick
        assert emu.positions("main")["BTCUSDT"]["amt"] == D("0.5")
