"""Attribution of a portfolio run with sleeve subaccounts (market making, copy trading:
simulated on their own clock, fills inside the bars): examples/portfolio_sleeves.yaml on
the shared data. The sleeve lines are checked against the sleeve subaccount's equity
change minus transfers read from equity.csv and transfers.csv, the parts against the
trades and the sleeve's summary in result.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import HAVE_REAL_DATA, SHARED_DATA
from trimtab.analytics import attribution as at
from trimtab.analytics.report import build_report
from trimtab.cli import app

pytestmark = pytest.mark.skipif(not HAVE_REAL_DATA, reason="needs the shared data")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolio_sleeves.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sleeves") / "run"
    res = CliRunner().invoke(
        app,
        ["backtest", "--portfolio", str(EXAMPLE), "--data", str(SHARED_DATA), "--out", str(out)],
    )
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def ledger(run: Path) -> at.RunLedger:
    return at.load_run(run)


def _pnl_by_hand(run: Path) -> pd.DataFrame:
    """Each subaccount's equity change minus its net transfers per bar (USDT)."""
    eq = pd.read_csv(run / "equity.csv", index_col="timestamp", parse_dates=True)
    tr = pd.read_csv(run / "transfers.csv", parse_dates=["timestamp"])
    flows = pd.DataFrame(0.0, index=eq.index, columns=eq.columns)
    for _, row in tr.iterrows():
        if row["moved"] > 0:
            flows.loc[row["timestamp"], row["from"]] -= row["moved"]
            flows.loc[row["timestamp"], row["to"]] += row["moved"]
    return (eq.diff() - flows).iloc[1:].drop(columns="total")


def test_sleeve_lines_are_their_equity_change_and_add_to_the_cent(run: Path, ledger) -> None:
    assert set(ledger.sleeves) == {"mm", "copy"}
    a = at.attribute(ledger)
    by_hand = _pnl_by_hand(run)
    total = a.by_subaccount.loc["TOTAL"]
    lines = float(sum(total[k] for k in at.LINES))
    assert abs(lines - by_hand.to_numpy().sum()) < 0.005
    assert abs(total["residual"]) < 0.005
    assert (a.daily["residual"].abs() < 0.005).all()
    for name in ("mm", "copy"):
        rows = a.lines[a.lines["symbol"] == at.SLEEVE_PREFIX + name]
        assert set(a.lines.loc[a.lines["subaccount"] == name, "symbol"]) == {
            at.SLEEVE_PREFIX + name
        }
        per_bar = rows.set_index("timestamp")[list(at.LINES)].sum(axis=1)
        per_bar.index = per_bar.index.tz_convert(None)
        expect = by_hand[name]
        expect.index = pd.DatetimeIndex(expect.index).tz_convert(None)
        np.testing.assert_allclose(per_bar.reindex(expect.index).to_numpy(), expect, atol=1e-6)
        assert abs(a.by_subaccount.loc[name, "total"] - expect.sum()) < 0.005


def test_sleeve_parts_from_the_trades_and_the_summary(run: Path, ledger) -> None:
    doc = json.loads((run / "result.json").read_text())
    a = at.attribute(ledger)
    eq = pd.read_csv(run / "equity.csv", index_col="timestamp", parse_dates=True)
    # Market making: its only active bar (2021-01-08) holds all its fills; its capital
    # then over the simulated capital scales the summary's parts.
    mm = doc["subaccounts"]["mm"]["sleeve"]["summary"]
    trades = pd.read_csv(run / "subaccounts" / "mm" / "trades.csv", parse_dates=["timestamp"])
    assert trades["timestamp"].dt.strftime("%Y-%m-%d").unique().tolist() == ["2021-01-08"]
    scale = float(eq["mm"][eq.index.strftime("%Y-%m-%d") == "2021-01-07"].iloc[0]) / mm["capital"]
    row = a.sleeves.loc["mm"]
    assert row["name:execution"] == "spread capture" and row["name:price"] == "inventory"
    assert abs(row["part:execution"] - mm["spread_capture"] * scale) < 1e-9
    assert abs(row["part:fees"] + trades["fee"].sum()) < 1e-9
    assert abs(row["part:fees"] - mm["fees"] * scale) < 1e-9
    assert abs(row["part:price"] - mm["inventory_pnl"] * scale) < 0.005
    assert row["fills"] == len(trades) == mm["fills"]
    # Copy: slippage = side x (leader's price - fill price) x quantity from the trades.
    tc = pd.read_csv(run / "subaccounts" / "copy" / "trades.csv")
    leader = tc["reason"].map(lambda r: float(re.search(r" at (\S+) on ", r).group(1)))
    sign = np.where(tc["side"] == "buy", 1.0, -1.0)
    slip = float((sign * tc["quantity"] * (leader - tc["price"])).sum())
    row = a.sleeves.loc["copy"]
    assert row["name:execution"] == "slippage" and row["name:price"] == "market move"
    assert abs(row["part:execution"] - slip) < 1e-6
    assert slip < 0  # following late costs
    assert abs(row["part:fees"] + tc["fee"].sum()) < 1e-9
    assert len(a.sleeve_trades[a.sleeve_trades["subaccount"] == "copy"]) == len(tc)


def test_brinson_treats_a_sleeve_as_its_own_segment(run: Path, ledger) -> None:
    bf = at.brinson_fachler(ledger, "btc", freq="M", segments="group")
    effects = ["allocation", "selection", "interaction", "trading"]
    assert abs(bf.total[effects].sum() - bf.total["active"]) < 1e-12
    for name in ("mm", "copy"):
        seg = bf.segments.loc[at.SLEEVE_PREFIX + name]
        # Measured against itself: no selection, no interaction, no trading effect.
        assert max(abs(seg["selection"]), abs(seg["interaction"]), abs(seg["trading"])) < 1e-15
    # Its allocation, bar by bar: its weight (equity over the account's at the close
    # before) times its return less BTC's, summed (daily effects, sum link).
    eq = pd.read_csv(run / "equity.csv", index_col="timestamp", parse_dates=True)
    pnl = _pnl_by_hand(run)
    btc = ledger.prices["BTCUSDT"].pct_change().iloc[1:].to_numpy()
    daily_bf = at.brinson_fachler(ledger, "btc", freq="D", segments="group")
    for name in ("mm", "copy"):
        prev = eq[name].shift(1).iloc[1:].to_numpy()
        w = prev / eq["total"].shift(1).iloc[1:].to_numpy()
        alloc = float(np.sum(w * (pnl[name].to_numpy() / prev - btc)))
        got = daily_bf.segments.loc[at.SLEEVE_PREFIX + name, "allocation"]
        assert abs(got - alloc) < 1e-9  # equity.csv keeps 10 significant digits
    daily = at.brinson_fachler(ledger, "btc", freq="D", segments="asset", subaccount="copy")
    r = at.portfolio_returns(ledger, "copy")
    np.testing.assert_allclose(daily.periods["portfolio"].to_numpy(), r.to_numpy(), atol=1e-12)
    tm = at.timing(ledger, subaccount="mm")
    assert np.allclose(tm["timing"], 0.0, atol=1e-9)  # a sleeve counts as held


def test_the_report_renders_the_sleeves(run: Path, ledger) -> None:
    (mm, copy) = at.sleeve_lines_text(at.attribute(ledger))  # what trimtab attribution prints
    assert mm.startswith("sleeve mm (market-making): PnL ") and "spread capture" in mm
    assert copy.startswith("sleeve copy (copy): PnL ") and "market move" in copy
    text = build_report(run)
    assert "Attribution is not available" not in text
    assert "sleeve copy (copy): PnL" in text
