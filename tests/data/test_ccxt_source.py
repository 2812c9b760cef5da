"""download_ohlcv against a real ccxt.binance whose HTTP layer serves recorded klines.

``exchange.fetch`` (ccxt's single HTTP entry point) is replaced by a function that answers
``GET /api/v3/klines`` from ``fixtures/binance_klines_1h.json`` the way Binance does
(rows with open time >= startTime, at most ``limit``, including the still-forming candle),
so ccxt's own request building and kline parsing run unchanged and nothing touches the
network.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import ccxt
import numpy as np
import pandas as pd
import pytest

from trimtab.data import DataError, download_ohlcv, load_panel
from trimtab.data.ccxt_source import _make_exchange, cache_path, read_cache

from ._support import FIXTURES

UTC = "UTC"
HOUR_MS = 3_600_000
START_MS = 1_677_628_800_000  # 2023-03-01 00:00 UTC, first recorded kline


def _market(base: str, quote: str) -> dict:
    return {
        "id": base + quote,
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "baseId": base,
        "quoteId": quote,
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


class FakeBinance:
    """A ccxt.binance instance with recorded HTTP responses and a settable clock."""

    def __init__(self, now_ms: int):
        with open(FIXTURES / "binance_klines_1h.json") as fh:
            self.klines = json.load(fh)["klines"]
        self.now_ms = now_ms
        self.calls: list[dict[str, str]] = []
        self.failures: list[Exception] = []  # raised by the next calls, in order
        ex = ccxt.binance({"enableRateLimit": True})
        ex.rateLimit = 1  # keep ccxt's throttle on, but at 1 ms, for a fast test
        ex.set_markets([_market("BTC", "USDT"), _market("ETH", "USDT")])
        ex.fetch = self.fetch
        ex.milliseconds = lambda: self.now_ms
        self.exchange = ex

    def fetch(self, url, method="GET", headers=None, body=None):
        u = urlparse(url)
        assert u.path == "/api/v3/klines", url
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        self.calls.append(q)
        if self.failures:
            raise self.failures.pop(0)
        start = int(q.get("startTime", 0))
        rows = [r for r in self.klines[q["symbol"]] if start <= r[0] <= self.now_ms]
        return rows[: int(q.get("limit", 500))]


@pytest.fixture
def fake() -> FakeBinance:
    # 00:30 on 2023-03-04: the 00:00 candle of that day is still forming
    return FakeBinance(START_MS + 72 * HOUR_MS + 30 * 60_000)


def test_pagination_cache_and_no_network_second_run(fake, tmp_path):
    seen = []
    out = download_ohlcv(
        "binance",
        ["BTC/USDT", "ETHUSDT"],
        "1h",
        "2023-03-01",
        "2023-03-03",
        cache_dir=tmp_path,
        exchange=fake.exchange,
        limit=20,
        progress=lambda s, n: seen.append((s, n)),
    )
    assert set(out) == {"BTCUSDT", "ETHUSDT"}
    btc = out["BTCUSDT"]
    assert len(btc) == 48 and btc.attrs["requests"] == 3 and btc.attrs["new_bars"] == 48
    assert [int(c["startTime"]) for c in fake.calls if c["symbol"] == "BTCUSDT"] == [
        START_MS,
        START_MS + 20 * HOUR_MS,
        START_MS + 40 * HOUR_MS,
    ]
    assert all(c["limit"] == "20" and c["interval"] == "1h" for c in fake.calls)
    assert seen[:3] == [("BTCUSDT", 20), ("BTCUSDT", 40), ("BTCUSDT", 48)]
    first = fake.klines["BTCUSDT"][0]
    assert btc["timestamp"].iloc[0] == pd.Timestamp("2023-03-01", tz=UTC)
    assert btc["timestamp"].iloc[-1] == pd.Timestamp("2023-03-02 23:00", tz=UTC)
    assert btc["open"].iloc[0] == float(first[1]) and btc["volume"].iloc[0] == float(first[5])
    np.testing.assert_allclose(btc["quote_volume"], btc["volume"] * btc["close"])
    path = cache_path(tmp_path, "binance", "BTC/USDT", "1h")
    assert path.name == "binance-BTCUSDT-1h.parquet" and path.is_file()
    cached, meta = read_cache(path)
    assert (
        len(cached) == 48 and meta["symbol"] == "BTC/USDT" and meta["covered_from_ms"] == START_MS
    )

    fake.calls.clear()
    again = download_ohlcv(
        "binance",
        ["BTC/USDT", "ETHUSDT"],
        "1h",
        "2023-03-01",
        "2023-03-03",
        cache_dir=tmp_path,
        exchange=fake.exchange,
        limit=20,
    )
    assert fake.calls == []  # the cache answers everything
    pd.testing.assert_frame_equal(again["BTCUSDT"], btc)


def test_incremental_update_drops_forming_candle(fake, tmp_path):
    kw = {"cache_dir": tmp_path, "exchange": fake.exchange, "limit": 20}
    download_ohlcv("binance", ["BTC/USDT"], "1h", "2023-03-01", "2023-03-03", **kw)
    fake.calls.clear()
    out = download_ohlcv("binance", ["BTC/USDT"], "1h", "2023-03-01", **kw)["BTCUSDT"]
    # only bars after the last cached one are asked for
    assert [int(c["startTime"]) for c in fake.calls] == [
        START_MS + 48 * HOUR_MS,
        START_MS + 68 * HOUR_MS,
    ]
    assert len(out) == 72 and out.attrs["new_bars"] == 24
    # the 2023-03-04 00:00 candle was served but is still forming at 00:30: not kept
    assert out["timestamp"].iloc[-1] == pd.Timestamp("2023-03-03 23:00", tz=UTC)
    assert len(read_cache(cache_path(tmp_path, "binance", "BTCUSDT", "1h"))[0]) == 72

    fake.now_ms += HOUR_MS  # an hour later that candle has closed
    fake.calls.clear()
    out = download_ohlcv("binance", ["BTC/USDT"], "1h", "2023-03-01", **kw)["BTCUSDT"]
    assert len(fake.calls) == 1 and len(out) == 73


def test_cache_folder_loads_as_data(fake, tmp_path):
    download_ohlcv(
        "binance", ["BTC/USDT", "ETH/USDT"], "1h", "2023-03-01", cache_dir=tmp_path,
        exchange=fake.exchange, limit=50,
    )  # fmt: skip
    p = load_panel(tmp_path)
    assert p.timeframe == "1h" and p.symbols == ["BTCUSDT", "ETHUSDT"]
    assert len(p.index) == 72 and p.has_bar.all().all()
    assert p.provenance["issues"] == {"errors": 0, "warnings": 0}
    assert {f["format"] for f in p.provenance["files"]} == {"parquet"}


def test_earlier_since_is_fetched_once(fake, tmp_path):
    kw = {"cache_dir": tmp_path, "exchange": fake.exchange, "limit": 100}
    download_ohlcv("binance", ["BTC/USDT"], "1h", "2023-03-02", "2023-03-03", **kw)
    fake.calls.clear()
    out = download_ohlcv("binance", ["BTC/USDT"], "1h", "2023-02-27", "2023-03-03", **kw)
    assert [int(c["startTime"]) for c in fake.calls] == [START_MS - 2 * 86_400_000]
    assert len(out["BTCUSDT"]) == 48  # nothing exists before 2023-03-01 (the "listing")
    fake.calls.clear()
    download_ohlcv("binance", ["BTC/USDT"], "1h", "2023-02-27", "2023-03-03", **kw)
    assert fake.calls == []  # the cache remembers that nothing is there


def test_retries_with_backoff_then_gives_up(fake, tmp_path):
    sleeps: list[float] = []
    fake.failures = [ccxt.NetworkError("reset"), ccxt.RateLimitExceeded("429")]
    out = download_ohlcv(
        "binance", ["BTC/USDT"], "1h", "2023-03-01", "2023-03-02", cache_dir=tmp_path,
        exchange=fake.exchange, backoff=0.5, sleep=sleeps.append,
    )  # fmt: skip
    assert len(out["BTCUSDT"]) == 24 and sleeps == [0.5, 1.0]
    fake.failures = [ccxt.RequestTimeout("slow")] * 3
    with pytest.raises(DataError, match="failed after 3 attempts: slow"):
        download_ohlcv(
            "binance", ["ETH/USDT"], "1h", "2023-03-01", cache_dir=tmp_path,
            exchange=fake.exchange, retries=2, sleep=sleeps.append,
        )  # fmt: skip
    fake.failures = [ccxt.ExchangeError("banned")]
    with pytest.raises(DataError, match="banned"):
        download_ohlcv(
            "binance", ["ETH/USDT"], "1h", "2023-03-01", cache_dir=tmp_path,
            exchange=fake.exchange, sleep=sleeps.append,
        )  # fmt: skip


def test_bad_requests(fake, tmp_path):
    kw = {"cache_dir": tmp_path, "exchange": fake.exchange}
    with pytest.raises(DataError, match="no market 'DOGEUSDT'"):
        download_ohlcv("binance", ["DOGEUSDT"], "1h", "2023-03-01", **kw)
    with pytest.raises(DataError, match="unknown timeframe '7h'"):
        download_ohlcv("binance", ["BTC/USDT"], "7h", "2023-03-01", **kw)
    with pytest.raises(DataError, match="until .* must be after since"):
        download_ohlcv("binance", ["BTC/USDT"], "1h", "2023-03-02", "2023-03-01", **kw)
    assert fake.calls == []


def test_default_exchange_is_rate_limited():
    ex = _make_exchange("binance")  # constructing makes no request
    assert ex.enableRateLimit is True
    with pytest.raises(DataError, match="unknown exchange 'nosuchx'"):
        _make_exchange("nosuchx")
