"""Copy trading live (``trimtab.engine.copy_live``) against the local exchange emulator
with the real ccxt client over HTTP: a leader account and a follower account (two API
keys), the leader's trades read from its account, the follower's orders sent through a
``CcxtVenue``. Quantities checked against the balances and prices read from the
emulator independently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulator import BinanceEmulator
from tests.emulator.helpers import RULES, market
from tests.engine._copy_live import accounts, build, leader_client
from trimtab.engine.copy_live import copy_client_id
from trimtab.journal.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emu(tmp_path):
    e = BinanceEmulator(
        market(),
        rules=RULES,
        accounts=accounts(),
        clock="2023-01-03 00:05",
        state_path=tmp_path / "emu.json",
    ).start()
    yield e
    e.close()


def _later(emu: BinanceEmulator, seconds: float) -> None:
    emu.set_clock(emu.clock_ms + int(seconds * 1000))


def _leader_equity(emu: BinanceEmulator) -> float:
    """The leader's USDT plus each asset at the emulator's last price, from the
    emulator's own books."""
    client = leader_client(emu.url)
    total = 0.0
    for asset, b in emu.balances("leader").items():
        amount = float(b["free"] + b["locked"])
        if amount:
            price = 1.0 if asset == "USDT" else client.fetch_ticker(f"{asset}/USDT")["last"]
            total += amount * float(price)
    return total


def _copy_orders(emu: BinanceEmulator) -> list[dict]:
    return emu.orders("copy")


def test_a_leader_trade_is_copied_after_the_delay_scaled_and_named(emu, tmp_path):
    leader = leader_client(emu.url)
    leader.create_order("BTC/USDT", "market", "buy", 0.5)
    leader.create_order("ETH/USDT", "market", "buy", 2.0)  # not an allowed symbol
    (btc_trade,) = [t for t in emu.trades("leader") if t["symbol"] == "BTCUSDT"]
    (eth_trade,) = [t for t in emu.trades("leader") if t["symbol"] == "ETHUSDT"]
    follower = build(emu.url, tmp_path / "f", "copy-1")
    first = follower.step()  # seen at once, acted on only after the 120 s delay
    assert first.sent == [] and _copy_orders(emu) == []
    assert {r["code"] for r in first.reasons} == {"waiting"}
    _later(emu, 60)
    assert follower.step().sent == [] and _copy_orders(emu) == []
    _later(emu, 61)
    leader_eq = _leader_equity(emu)
    third = follower.step()
    cid = copy_client_id("copy-1", str(btc_trade["id"]))
    assert third.sent == [cid]
    (order,) = _copy_orders(emu)
    assert order["cid"] == cid and order["symbol"] == "BTCUSDT"
    # equity ratio: 0.5 BTC x 10,000 / the leader's equity, to the 0.00001 BTC lot
    expected = 0.5 * 10_000 / leader_eq
    assert abs(float(order["qty"]) - expected) <= 1e-5, (third.reasons, leader_eq)
    assert float(order["executed"]) == float(order["qty"])
    codes = {r["values"].get("leader_trade_id"): r["code"] for r in third.reasons}
    assert codes == {str(btc_trade["id"]): "copied", str(eth_trade["id"]): "symbol_not_allowed"}
    skip = next(r for r in third.reasons if r["code"] == "symbol_not_allowed")
    assert "ETHUSDT is not among the allowed symbols (BTCUSDT)" in skip["message"]
    with Store.open(f"sqlite:///{tmp_path / 'f' / 'store.db'}") as store:
        (row,) = store.orders("copy-1")
        assert row["client_order_id"] == cid
        assert row["reason"].startswith(f"copy {btc_trade['id']}: leader buy 0.5 BTCUSDT at ")
        decisions = store.decisions("copy-1", "copy")
        assert [d["id"] for d in decisions] == [0, 1, 2]
    assert follower.step().sent == []  # handled once
    assert len(_copy_orders(emu)) == 1


def test_the_drawdown_stop_unfollows(emu, tmp_path):
    follower = build(emu.url, tmp_path / "f", "copy-stop", delay="0s")
    assert follower.step().reasons == []
    # The leader's equity falls 15 % below its peak (the feed sees its balances only).
    emu.deposit("leader", "USDT", "-15000")
    step = follower.step()
    assert follower.stopped and [r["code"] for r in step.reasons] == ["unfollow"]
    dd = step.reasons[0]["values"]["drawdown"]
    assert abs(dd - 0.15) < 1e-9
    leader_client(emu.url).create_order("BTC/USDT", "market", "buy", 0.1)
    after = follower.step()
    assert [r["code"] for r in after.reasons] == ["unfollowed"] and after.sent == []
    assert _copy_orders(emu) == []


def test_a_restart_after_a_kill_does_not_copy_again(emu, tmp_path):
    leader_client(emu.url).create_order("BTC/USDT", "market", "buy", 0.5)
    (trade,) = emu.trades("leader")
    _later(emu, 121)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "tests.engine._copy_live", emu.url, str(tmp_path / "f"), "k"]
    proc = subprocess.run(
        [*args, "kill"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr  # SIGKILL right after the order was sent
    cid = copy_client_id("k", str(trade["id"]))
    assert [o["cid"] for o in _copy_orders(emu)] == [cid]
    with Store.open(f"sqlite:///{tmp_path / 'f' / 'store.db'}") as store:
        assert store.checkpoint("k") is None  # killed before the cycle was recorded
    # Restarted (here, in this process): it rewinds to no checkpoint, reads the leader's
    # trade again and acts on it with the same client id, which the venue's journal
    # knows as sent: it is not sent again.
    again = build(emu.url, tmp_path / "f", "k").step()
    assert again.sent == [cid]
    (copied,) = [r for r in again.reasons if r["code"] == "copied"]
    assert copied["values"]["status"] == "filled"
    assert [o["cid"] for o in _copy_orders(emu)] == [cid]
    assert emu.duplicate_attempts == 0
    with Store.open(f"sqlite:///{tmp_path / 'f' / 'store.db'}") as store:
        assert [o["client_order_id"] for o in store.orders("k")] == [cid]
        assert store.checkpoint("k")[0] == 0


def test_the_cli_follows_on_the_emulator_and_never_prints_the_keys(emu, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tests.engine._copy_live import FOLLOWER, LEADER
    from trimtab.cli import app

    for name, (key, secret) in (("LEADER", LEADER), ("COPY", FOLLOWER)):
        monkeypatch.setenv(f"TRIMTAB_{name}_API_KEY", key)
        monkeypatch.setenv(f"TRIMTAB_{name}_API_SECRET", secret)
    leader_client(emu.url).create_order("BTC/USDT", "market", "buy", 0.2)
    (trade,) = emu.trades("leader")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    base = ["copy", "--follow", "--db", db, "--run-id", "cli", "--symbols", "BTCUSDT"]
    res = CliRunner().invoke(
        app,
        [*base, "--live", "--exchange-url", emu.url, "--delay", "0s", "--cycles", "1"],
    )
    assert res.exit_code == 0, res.output
    cid = copy_client_id("cli", str(trade["id"]))
    assert f"copy {trade['id']}: leader buy 0.2 BTCUSDT" in res.output and cid in res.output
    assert [o["cid"] for o in _copy_orders(emu)] == [cid]
    for secret in (*LEADER, *FOLLOWER):
        assert secret not in res.output
    # The real exchange needs the run id confirmed (no terminal here); paper: not built.
    res = CliRunner().invoke(app, [*base, "--live"])
    assert res.exit_code == 2 and "confirm with --confirm cli" in res.output
    res = CliRunner().invoke(app, [*base, "--paper"])
    assert res.exit_code == 2 and "--paper is not built yet" in res.output
