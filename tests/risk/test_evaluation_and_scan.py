import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import FUNDING_FILE, SHARED_DATA
from trimtab.cli import app
from trimtab.data import read_funding
from trimtab.risk.evaluation import equal_weights, var_coverage
from trimtab.risk.scan import scan_universe
from trimtab.risk.var_backtest import kupiec_pof


def test_equal_weights_follow_listings(daily_panel):
    w = equal_weights(daily_panel)
    assert np.allclose(w.sum(axis=1), 1.0)
    assert (w["ARBUSD"].loc["2023-10-21":] == 0).all()
    assert w.loc[pd.Timestamp("2017-09-01", tz="UTC")].gt(0).sum() == 2  # BTC and ETH only


@pytest.mark.real_data
def test_var_coverage_on_real_portfolio_passes_for_the_fat_tailed_model(daily_panel):
    doc = var_coverage(daily_panel, equal_weights(daily_panel), start="2019-01-01")
    t99 = doc["methods"]["ewma_t"]["0.99"]
    normal99 = doc["methods"]["ewma_normal"]["0.99"]
    assert doc["n_bars"] > 1700
    assert t99["kupiec_p"] > 0.05 and t99["christoffersen_p"] > 0.05
    assert normal99["kupiec_p"] < 0.01  # thin tails: too many 99 % breaches
    assert normal99["hit_rate"] > 1.5 * t99["hit_rate"]
    # Recompute Kupiec from the reported counts.
    hits = np.zeros(t99["n"], dtype=bool)
    hits[: t99["hits"]] = True
    assert kupiec_pof(hits, 0.99).p_value == pytest.approx(t99["kupiec_p"])


@pytest.mark.real_data
def test_scan_flags_the_volatility_breakout_and_funding(daily_panel):
    funding = read_funding(FUNDING_FILE)
    scan = scan_universe(daily_panel, as_of="2022-05-12", funding=funding)
    assert scan.attrs["as_of"] == pd.Timestamp("2022-05-12", tz="UTC")
    assert list(scan["alert"].dropna()) == sorted(scan["alert"].dropna(), reverse=True)
    # LUNA week: volatility broke out across the board.
    assert (scan["vol_regime_z"] > 1).mean() > 0.7
    btc = scan.set_index("symbol").loc["BTCUSDT"]
    assert np.isfinite(btc["funding_carry"])
    row = scan.iloc[0]
    assert row["alert"] == pytest.approx(abs(row[row["driver"]]))


@pytest.mark.real_data
def test_cli_risk_backtest_var_and_scan(tmp_path):
    if not SHARED_DATA.exists():
        pytest.skip("shared data not found")
    runner = CliRunner()
    out = tmp_path / "var.json"
    result = runner.invoke(
        app,
        [
            "risk",
            "backtest-var",
            "--data",
            str(SHARED_DATA),
            "--start",
            "2020-01-01",
            "--universe",
            "top:10",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    for method in ("historical", "ewma_t", "ewma_cornish_fisher"):
        for level in ("0.95", "0.99"):
            row = doc["methods"][method][level]
            assert {"hit_rate", "expected_rate", "kupiec_p", "christoffersen_p"} <= set(row)
    result = runner.invoke(
        app,
        [
            "scan",
            "--data",
            str(SHARED_DATA),
            "--as-of",
            "2020-03-20",
            "--json",
            str(tmp_path / "s.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    scan = json.loads((tmp_path / "s.json").read_text())
    assert len(scan["assets"]) > 20 and scan["as_of"].startswith("2020-03-20")


def test_cli_risk_evaluate_writes_the_documented_json(tmp_path):
    if not SHARED_DATA.exists():
        pytest.skip("shared data not found")
    out = tmp_path / "ev.json"
    result = CliRunner().invoke(
        app,
        [
            "risk",
            "evaluate",
            "--data",
            str(SHARED_DATA),
            "--start",
            "2020-01-01",
            "--universe",
            "top:10",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert {
        "auc",
        "brier",
        "baseline_auc",
        "baseline_brier",
        "horizon_days",
        "threshold",
        "n_samples",
    } <= set(doc)
    assert doc["horizon_days"] == 7 and doc["threshold"] == 0.10 and doc["n_samples"] > 1000
    assert 0 < doc["brier"] < 0.5 and 0 < doc["auc"] < 1
    assert sum(row["count"] for row in doc["calibration"]) == doc["n_samples"]
