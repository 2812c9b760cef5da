"""The managed policy reads every documented ``sizing:`` key (checked by hand)."""

import numpy as np
import pandas as pd
import pytest

from trimtab.config import TrimtabConfig, parse_config
from trimtab.domain.decisions import Assessment, Observation, PortfolioState
from trimtab.engine.runner import RunSpec, run_comparison
from trimtab.policy.policies import Managed, SizingSettings

SYMBOLS = ("AAAUSDT", "BBBUSDT")


def _obs(returns: list[float]) -> Observation:
    """Two assets with the same close-to-close returns (perfectly correlated)."""
    close = 100 * np.cumprod([1.0, *(1 + r for r in returns)])
    fields = {
        "close": np.column_stack([close, close]),
        "quote_volume": np.full((len(close), 2), 1e9),
    }
    ts = pd.Timestamp("2021-01-01", tz="UTC") + pd.Timedelta(days=len(close) - 1)
    book = PortfolioState(1e5, 1e5, np.zeros(2), close[-1] * np.ones(2), 1e5)
    members = np.ones(2, dtype=bool)
    return Observation(len(close) - 1, ts, SYMBOLS, fields, {}, members, members, book, 0)


def _alternating(n: int, size: float) -> list[float]:
    return [size if k % 2 == 0 else -size for k in range(n)]


# 60 returns alternating +-1 %: mean 0, sample std 0.01 * sqrt(60 / 59), x sqrt(365).
VOL_60 = 0.01 * np.sqrt(60 / 59) * np.sqrt(365)  # 19.27 %


def test_volatility_target_and_leverage_cap_are_read():
    obs, calm = _obs(_alternating(60, 0.01)), Assessment({"risk_score": np.array([0.0, 0.0])})
    weights, reasons = Managed(SizingSettings(target_vol=0.10)).target(obs, calm)
    assert weights == pytest.approx([0.5 * 0.10 / VOL_60] * 2)  # 0.2595 each
    vol = next(r for r in reasons if r.code == "vol_target")
    assert vol.values["target_vol"] == 0.10 and vol.values["forecast_vol"] == pytest.approx(VOL_60)
    # 45 % wants 2.3x leverage; the 1x cap (default) and a 0.6x cap hold it.
    assert Managed().target(obs, calm)[0] == pytest.approx([0.5, 0.5])
    capped, _ = Managed(SizingSettings(max_gross=0.6)).target(obs, calm)
    assert capped == pytest.approx([0.3, 0.3])


def test_covariance_window_is_read():
    # 50 returns of +-2 % then 10 of +-1 %: a 10-bar window sees only the calm end.
    obs = _obs(_alternating(50, 0.02) + _alternating(10, 0.01))
    calm = Assessment({"risk_score": np.array([0.0, 0.0])})
    short = SizingSettings(target_vol=0.10, cov_window=10, min_history=5)
    _, reasons = Managed(short).target(obs, calm)
    vol = next(r for r in reasons if r.code == "vol_target").values["forecast_vol"]
    assert vol == pytest.approx(0.01 * np.sqrt(10 / 9) * np.sqrt(365))


def test_risk_cut_thresholds_are_read():
    obs = _obs(_alternating(60, 0.01))
    scores = Assessment({"risk_score": np.array([12.0, 30.0])})
    # Defaults: full size at <= 15, none at >= 50: (50 - 30) / 35 of B's 0.5.
    default, _ = Managed().target(obs, scores)
    assert default == pytest.approx([0.5, 0.5 * 20 / 35])
    # no_cut 10, full_cut 40: A (12) is cut by 2/30, B by 20/30.
    tight, reasons = Managed(SizingSettings(no_cut_score=10, full_cut_score=40)).target(obs, scores)
    assert tight == pytest.approx([0.5 * 28 / 30, 0.5 * 10 / 30])
    cut = next(r for r in reasons if r.code == "risk_cut")
    assert "above 10" in cut.message and "zero at 40" in cut.message


def test_the_config_file_reaches_the_policy_run(make_panel):
    """Old code: ``sizing: {target_vol: ...}`` was accepted and ignored."""
    rng = np.random.default_rng(3)
    closes = {s: list(100 * np.cumprod(1 + rng.normal(0, 0.04, 120))) for s in SYMBOLS}
    panel = make_panel(closes)
    spec = RunSpec(policy="managed", baselines=())
    cfg = parse_config("sizing: {target_vol: 0.12, trading: band}\n")
    run = run_comparison(spec, panel=panel, settings=cfg).results["managed"]
    vols = {
        r["values"]["target_vol"]
        for d in run.decisions
        for r in d["reasons"]
        if r["code"] == "vol_target"
    }
    assert vols == {0.12}
    default = run_comparison(spec, panel=panel, settings=TrimtabConfig()).results["managed"]
    assert run.gross_exposure.mean() < default.gross_exposure.mean()
