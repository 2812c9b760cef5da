"""Real holdings: `trimtab review --exchange` reads what an account holds through ccxt
(the local Binance emulator over HTTP) and reviews exactly what a file of the same
holdings gives; keys come from the environment or an owner-only file and show nowhere."""

from __future__ import annotations

import json
import os

import pytest

from tests._cli import trimtab
from tests.conftest import SHARED_DATA
from tests.emulator import BinanceEmulator
from tests.emulator.helpers import client
from trimtab.app.exchange import holdings_document, key_env_names, load_keys, open_venue
from trimtab.app.secrets import SecretError
from trimtab.data import load_panel

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")
DAILY = SHARED_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
KEY, SECRET = "k-main-7f3a", "s-main-91c2e8"
AS_OF = "2023-06-30"


@pytest.fixture(scope="module")
def bars():
    return load_panel(DAILY, symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"]).slice(
        "2023-05-01", "2023-07-15"
    )


@pytest.fixture
def emu(bars, tmp_path):
    accounts = {
        KEY: (
            SECRET,
            "main",
            {"USDT": "5000", "BTC": "0.5", "ETH": "4", "SOL": "120"},
            {"USDT": "2000"},
        )
    }
    with BinanceEmulator(bars, accounts=accounts, clock="2023-06-30 12:00") as e:
        # A 5x isolated long of 0.2 BTC on the perpetual, opened through ccxt.
        ex = client(e, KEY, SECRET)
        ex.load_markets()
        ex.set_margin_mode("isolated", "BTC/USDT:USDT")
        ex.set_leverage(5, "BTC/USDT:USDT")
        ex.create_order("BTC/USDT:USDT", "market", "buy", 0.2)
        yield e


def same_holdings_file(emu, folder):
    """The emulator's own record of the account, written by hand as a holdings file."""
    spot = {a: b["free"] + b["locked"] for a, b in emu.balances("main").items()}
    [(symbol, p)] = emu.positions("main").items()
    wallet = emu.futures_wallet("main")["USDT"]
    cash = spot.pop("USDT") + wallet - p["isolated_margin"]
    lines = [
        "subaccounts:",
        "  main:",
        "    exchange: binance",
        f"    cash: {{USDT: {float(cash)!r}}}",
        "    spot: {" + ", ".join(f"{a}: {float(q)!r}" for a, q in sorted(spot.items())) + "}",
        "    perps:",
        f"      - {{symbol: {symbol}, side: long, size: {float(p['amt'])!r}, "
        f"entry_price: {float(p['entry'])!r}, margin_mode: isolated, "
        f"leverage: {float(p['leverage'])!r}, margin: {float(p['isolated_margin'])!r}}}",
    ]
    path = folder / "same.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_review_from_the_exchange_equals_the_review_of_the_same_file(emu, tmp_path):
    key_env, secret_env = key_env_names("main")
    env = {key_env: KEY, secret_env: SECRET}
    common = ["--data", str(DAILY), "--as-of", AS_OF, "--format", "json"]
    live = trimtab(
        "review",
        "--exchange",
        "binance",
        "--exchange-url",
        emu.url,
        *common,
        cwd=tmp_path,
        env=env,
    )
    from_file = trimtab(
        "review", "--portfolio", str(same_holdings_file(emu, tmp_path)), *common, cwd=tmp_path
    )
    a, b = json.loads(live.stdout), json.loads(from_file.stdout)
    assert a == b
    assert 0 < a["risk_score"] <= 100 and len(a["positions"]) == 4  # BTC, ETH, SOL, the perp
    for text in (live.stdout, live.stderr):
        assert SECRET not in text and KEY not in text


def test_holdings_document_reads_every_asset_and_the_perp(emu, tmp_path):
    venue = open_venue(
        ["main"], keys={"main": (KEY, SECRET)}, url=emu.url, journal=tmp_path / "v.db"
    )
    try:
        doc = holdings_document(venue, ["main"], "binance")["subaccounts"]["main"]
    finally:
        venue.close()
    assert doc["spot"] == {"BTC": 0.5, "ETH": 4.0, "SOL": 120.0}
    [perp] = doc["perps"]
    p = emu.positions("main")["BTCUSDT"]
    assert perp["symbol"] == "BTCUSDT" and perp["side"] == "long" and perp["size"] == 0.2
    assert perp["entry_price"] == float(p["entry"]) and perp["leverage"] == 5
    assert perp["margin"] == pytest.approx(float(p["isolated_margin"]), abs=1e-8)
    # cash: the spot USDT plus the futures wallet (after the fee) less the isolated margin
    wallet = float(emu.futures_wallet("main")["USDT"])
    assert doc["cash"]["USDT"] == pytest.approx(
        5000 + wallet - float(p["isolated_margin"]), abs=1e-8
    )


def test_keys_missing_or_in_a_file_others_can_read_are_clear_errors(tmp_path, monkeypatch):
    key_env, secret_env = key_env_names("core-2")
    assert (key_env, secret_env) == ("TRIMTAB_CORE_2_API_KEY", "TRIMTAB_CORE_2_API_SECRET")
    monkeypatch.delenv(key_env, raising=False)
    monkeypatch.delenv(secret_env, raising=False)
    with pytest.raises(SecretError, match="TRIMTAB_CORE_2_API_KEY and TRIMTAB_CORE_2_API_SECRET"):
        load_keys(["core-2"])
    path = tmp_path / "keys.yaml"
    path.write_text("core-2: {api_key: abc, secret: def}\n")
    os.chmod(path, 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_keys(["core-2"], path)
    os.chmod(path, 0o600)
    [(k, s)] = load_keys(["core-2"], path).values()
    assert (k.reveal(), s.reveal()) == ("abc", "def") and str(k) == "***"
    with pytest.raises(SecretError, match="no entry other"):
        load_keys(["other"], path)


def test_review_without_keys_names_the_variables(emu, tmp_path):
    out = trimtab(
        "review",
        "--exchange",
        "binance",
        "--exchange-url",
        emu.url,
        "--subaccount",
        "spare",
        "--data",
        str(DAILY),
        cwd=tmp_path,
        code=2,
    )
    assert "TRIMTAB_SPARE_API_KEY" in out.stderr


def test_rebalance_from_the_exchange_equals_the_plan_from_the_same_file(emu, tmp_path):
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  main: {BTC: 0.3, ETH: 0.3, SOL: 0.2}\n")
    key_env, secret_env = key_env_names("main")
    common = ["--targets", str(targets), "--data", str(DAILY), "--as-of", AS_OF]
    trimtab(
        "rebalance",
        "--exchange",
        "binance",
        "--exchange-url",
        emu.url,
        *common,
        "--json",
        str(tmp_path / "live.json"),
        cwd=tmp_path,
        env={key_env: KEY, secret_env: SECRET},
    )
    trimtab(
        "rebalance",
        "--portfolio",
        str(same_holdings_file(emu, tmp_path)),
        *common,
        "--json",
        str(tmp_path / "file.json"),
        cwd=tmp_path,
    )
    live = json.loads((tmp_path / "live.json").read_text())
    from_file = json.loads((tmp_path / "file.json").read_text())
    assert live == from_file
    assert len(live["subaccounts"]["main"]["orders"]) == 3  # the targets differ from the holdings
