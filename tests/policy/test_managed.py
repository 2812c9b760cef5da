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


@pytest.mark.real_data
def test_a_run_starting_where_its_data_starts_lands_close_to_a_warm_run(daily_panel):
    """managed top:10 in 2021 on data that starts 2021-01-01 ("cold") against the same run
    with two years of earlier history ("warm").

    Close means: the cold run holds assets from the first bar its universe can admit any
    (top:N ranks 30 days of volume first, so February; January is lost by design), its
    risk score works from then on with what history there is (old code: nothing held
    until April, when the 90-day windows were full), February to December return within
    5 points of the warm run's (old 9.1, now 3.4: 18.0 % vs 21.4 %), and once every
    window is full (July on) the two runs agree within half a point of return and
    exposure (2.58 % vs 2.62 %, exposure 18.3 % vs 18.4 %).
    """
    spec = RunSpec(
        policy="managed", universe="top:10", start="2021-01-01", end="2021-12-31", baselines=()
    )
    runs = {
        name: run_comparison(spec, panel=daily_panel.slice(first, "2021-12-31")).results["managed"]
        for name, first in (("warm", "2019-01-01"), ("cold", "2021-01-01"))
    }

    def total(name: str, since: str) -> float:
        eq = runs[name].equity[since:]
        return float(eq.iloc[-1] / eq.iloc[0] - 1)

    def exposure(name: str, since: str, until: str | None = None) -> float:
        return float(runs[name].gross_exposure[since:until].mean())

    held = runs["cold"].gross_exposure[lambda g: g > 0.01]
    assert held.index[0] <= pd.Timestamp("2021-02-03", tz="UTC")
    assert abs(total("cold", "2021-02-01") - total("warm", "2021-02-01")) < 0.05
    # In the warm-up months it holds a real share of what the warm run holds.
    assert exposure("cold", "2021-02-01", "2021-03-31") > 0.4 * exposure(
        "warm", "2021-02-01", "2021-03-31"
    )
    assert abs(total("cold", "2021-07-01") - total("warm", "2021-07-01")) < 0.005
    assert abs(exposure("cold", "2021-07-01") - exposure("warm", "2021-07-01")) < 0.005
    # It says why its young members were sized as they were.
    codes = {r["code"] for d in runs["cold"].decisions[:40] for r in d["reasons"]}
    assert "partial_score" in codes


def test_unscored_and_partially_scored_members_are_named(make_panel):
    obs = _obs(_alternating(60, 0.01))
    values = {"risk_score": np.array([np.nan, 20.0]), "risk_coverage": np.array([np.nan, 0.5])}
    weights, reasons = Managed().target(obs, Assessment(values))
    assert weights[0] == 0
    by_code = {r.code: r for r in reasons}
    assert by_code["not_scored"].values == {"assets": ["AAAUSDT"]}
    assert "held at zero" in by_code["not_scored"].message
    assert by_code["partial_score"].values == {"coverage": {"BBBUSDT": 0.5}}
    assert "BBBUSDT 50%" in by_code["partial_score"].message
