"""The safety layer through the real crashes in the shared data."""

import numpy as np
import pandas as pd
import pytest

from trimtab.config import parse_config
from trimtab.engine.runner import RunSpec, run_comparison

CRASHES = {
    "2018 bear market": ("2018-01-01", "2018-12-31"),
    "March 2020": ("2020-02-01", "2020-04-30"),
    "May 2021": ("2021-04-15", "2021-07-31"),
    "LUNA, May 2022": ("2022-04-15", "2022-06-30"),
    "FTX, November 2022": ("2022-10-25", "2022-12-31"),
}

CONFIG = """
limits:
  max_asset_weight: 0.25
  max_gross_leverage: 1.0
  min_cash: 0.02
  max_drawdown: 0.30
breakers:
  daily_loss_limit: 0.08
  auto_resume: true
  cooldown: 5
governor:
  schedule: [[0.05, 0.75], [0.10, 0.50], [0.20, 0.25]]
  recovery_bars: 20
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, daily_panel):
    path = tmp_path_factory.mktemp("cfg") / "safety.yaml"
    path.write_text(CONFIG)
    parse_config(CONFIG, "test")  # the example itself is valid
    return str(path)


@pytest.mark.parametrize("name", list(CRASHES))
def test_safety_layer_through_a_real_crash(name, daily_panel, config_file):
    start, end = CRASHES[name]
    spec = RunSpec(start=start, end=end, universe="top:10", config=config_file)
    comparison = run_comparison(spec, panel=daily_panel)
    managed = comparison.results["managed"]
    hold = comparison.results["equal-hold"]
    metrics = comparison.metrics
    # Capital is protected: a shallower drawdown than buying and holding the same coins.
    assert metrics["managed"]["max_drawdown"] < metrics["equal-hold"]["max_drawdown"]
    # Every target decided while ACTIVE respects the limits.
    for d in managed.decisions:
        if "targets" in d and d["state"] == "active":
            assert max(d["targets"].values(), default=0.0) <= 0.25 + 1e-9
            assert sum(d["targets"].values()) <= 0.98 + 1e-9
    # The exposure ceiling never rises while the drawdown deepens.
    states = managed.states
    equity = managed.equity
    drawdown = 1 - equity / equity.cummax()
    ceiling = states["exposure_ceiling"].ffill()
    deeper = drawdown.diff() > 0
    rises = ceiling.diff() > 1e-12
    assert not (deeper & rises).any()
    # While HALTED, nothing is bought.
    halted = states.index[states["state"] == "halted"]
    trades = managed.trades
    buys = trades[(trades["side"] == "buy") & trades["timestamp"].isin(halted + pd.Timedelta("1D"))]
    halted_decisions = {
        pd.Timestamp(d["timestamp"]) for d in managed.decisions if d.get("state") == "halted"
    }
    assert all(ts - pd.Timedelta("1D") not in halted_decisions for ts in buys["timestamp"]), (
        "a buy followed a HALTED decision"
    )
    # Gross exposure at every close stays within the highest ceiling that allowed it.
    assert (managed.gross_exposure.fillna(0) <= 1.0 + 1e-6).all()
    assert np.isfinite(equity).all() and (equity > 0).all()
    del hold


def test_breaker_halts_in_the_2018_crash_and_says_why(daily_panel, tmp_path):
    # A kill level the risk-sized book does reach in 2018, so the breaker must act.
    path = tmp_path / "kill.yaml"
    path.write_text(CONFIG.replace("max_drawdown: 0.30", "max_drawdown: 0.06"))
    spec = RunSpec(start="2018-01-01", end="2018-12-31", universe="top:10", config=str(path))
    result = run_comparison(spec, panel=daily_panel).results["managed"]
    changes = result.safety["state_changes"]
    assert changes, "no breaker fired in the 2018 bear market"
    assert all({"at", "old", "new", "trigger", "message"} <= set(c) for c in changes)
    assert any(c["new"] == "halted" and c["trigger"] == "max_drawdown" for c in changes)
    governor = [
        r for d in result.decisions for r in d["reasons"] if r["code"].startswith("governor_")
    ]
    assert any(r["code"] == "governor_drawdown" for r in governor)
