"""The emulator as a process (``python -m tests.emulator``) on the daily bar file (the
real one beside the project, else trimtab's synthetic sample): its URL on stdout, the
real ccxt client trading on it, a SIGKILL and a restart from the state file that loses
nothing; bad command lines refused with a clear message (no traceback, no secret)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from decimal import ROUND_CEILING, Decimal

import ccxt
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE
from tests.emulator import point_ccxt_at
from tests.emulator.__main__ import build

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY, SECRET = "proc-key", "proc-secret-value-123"


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline().strip()
            if line.startswith("http://127.0.0.1:"):
                return proc, line
        if proc.poll() is not None:
            raise AssertionError(f"emulator exited {proc.returncode}: {proc.stderr.read()}")
    proc.kill()
    raise AssertionError("emulator printed no URL")


def _client(url: str) -> ccxt.binance:
    ex = ccxt.binance({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "timeout": 5000})
    point_ccxt_at(ex, url)
    ex.load_markets()
    return ex


def test_process_mode_survives_sigkill(tmp_path):
    state = tmp_path / "state.json"
    args = [
        "--data", str(DAILY_FILE), "--symbols", "BTCUSDT,ETHUSDT", "--state", str(state),
        "--clock", "2023-03-01T00:05", "--account", f"{KEY}:{SECRET}:main:USDT=10000:USDT=3000",
    ]  # fmt: skip
    proc, url = _start(args)
    try:
        ex = _client(url)
        assert {"BTC/USDT", "ETH/USDT:USDT"} <= set(ex.markets)
        bars = pd.read_csv(DAILY_FILE, parse_dates=["timestamp"])
        row = bars[(bars["symbol"] == "BTCUSDT") & (bars["timestamp"] == "2023-03-01")].iloc[0]
        tick = Decimal(str(ex.markets["BTC/USDT"]["precision"]["price"]))
        want = (Decimal(repr(float(row["open"]))) / tick).to_integral_value(ROUND_CEILING) * tick
        o = ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "pk-1"})
        assert Decimal(o["info"]["fills"][0]["price"]) == want
        ohlcv = ex.fetch_ohlcv("BTC/USDT", "1d", limit=3)
        assert ohlcv[-1][0] == int(pd.Timestamp("2023-03-01", tz="UTC").value // 1_000_000)
        ex.create_order("ETH/USDT:USDT", "market", "sell", 0.5, params={"clientOrderId": "pk-2"})
        before = ex.fetch_balance()["info"]["balances"]
        fut_before = ex.fetch_balance({"type": "future"})["USDT"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    proc, url = _start(args)
    try:
        ex = _client(url)
        assert ex.fetch_balance()["info"]["balances"] == before
        assert ex.fetch_balance({"type": "future"})["USDT"] == fut_before
        (pos,) = ex.fetch_positions(["ETH/USDT:USDT"])
        assert pos["side"] == "short" and pos["contracts"] == 0.5
        assert (
            ex.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "pk-1"})["filled"] == 0.01
        )
        with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):
            ex.create_order("BTC/USDT", "market", "buy", 0.01, params={"clientOrderId": "pk-1"})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--account", f"{KEY}:{SECRET}"], "expected KEY:SECRET:NAME"),
        (["--account", f"{KEY}:{SECRET}:main:USDT=lots"], "is not a number"),
        (["--symbols", "NOPEUSDT"], "NOPEUSDT"),
    ],
)
def test_bad_command_lines_are_refused_clearly(capsys, extra, message):
    with pytest.raises(SystemExit) as stop:
        build(["--data", str(DAILY_FILE), *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and SECRET not in err
