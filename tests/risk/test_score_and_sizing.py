import numpy as np
import pandas as pd
import pytest

from trimtab.risk.score import (
    ASSET_WEIGHTS,
    SCORE_MIN_DAYS,
    FactorReading,
    asset_risk,
    combine,
    ramp,
)
from trimtab.risk.sizing import (
    SizingConfig,
    portfolio_volatility,
    risk_multiplier,
    stop_distance,
    vol_target_scale,
)


def test_ramp_maps_linearly_and_clips():
    assert ramp([0.3, 0.9, 1.5, 3.0, 0.0], 0.3, 1.5).tolist() == pytest.approx([0, 50, 100, 100, 0])
    # Decreasing ramps (less is worse): 8 bets calm, 1 bet extreme.
    assert ramp([8, 4.5, 1], 8, 1).tolist() == [0, 50, 100]
    assert np.isnan(ramp(np.nan, 0, 1))


def test_combine_blends_the_worst_structural_factor_and_contributions_add_up():
    calm = [
        FactorReading("volatility", 0.4, 10, 0.2, ""),
        FactorReading("trend", 0.1, 10, 0.35, ""),
    ]
    score, _ = combine(calm)
    assert score == pytest.approx(10)
    risky = [*calm, FactorReading("liquidation", 1.2, 98, 0.25, "")]
    score, readings = combine(risky)
    mean = (0.2 * 10 + 0.35 * 10 + 0.25 * 98) / 0.8
    assert score == pytest.approx(0.6 * mean + 0.4 * 98)
    assert sum(r.contribution for r in readings) == pytest.approx(score)
    # A NaN factor is left out, not counted as zero.
    score_nan, _ = combine([*calm, FactorReading("funding", float("nan"), float("nan"), 0.1, "")])
    assert score_nan == pytest.approx(10)


@pytest.mark.real_data
def test_asset_risk_on_real_data_is_causal_and_reads_crashes(daily_panel):
    panel = daily_panel.select(["BTCUSDT", "ETHUSDT", "LINKUSDT", "ARBUSD"])
    risk = asset_risk(panel)
    cut = pd.Timestamp("2021-06-30", tz="UTC")
    short = asset_risk(panel.slice(end=cut))
    pd.testing.assert_frame_equal(risk.composite.loc[:cut], short.composite)
    # BTC in the 2018 bear market is riskier than in the calm uptrend of 2019-Q2...
    btc = risk.composite["BTCUSDT"]
    assert btc.loc["2018-11-25"] > 60
    assert btc.loc["2019-05-01"] < 35
    # ...and the week after the March 2020 crash scores near the top.
    assert btc.loc["2020-03-16"] > 70
    # No score before a listing or after a delisting.
    assert risk.composite["ARBUSD"].loc["2023-10-21":].isna().all()
    readings = risk.at(pd.Timestamp("2020-03-16", tz="UTC"), "BTCUSDT")
    assert {r.name for r in readings} == set(ASSET_WEIGHTS)
    assert sum(r.contribution for r in readings) == pytest.approx(btc.loc["2020-03-16"])
    vol = next(r for r in readings if r.name == "volatility")
    assert "annualised volatility" in vol.explanation and vol.value > 0.8


def test_risk_multiplier_and_vol_target():
    cfg = SizingConfig(target_vol=0.4, no_cut_score=20, full_cut_score=60, max_gross=1.0)
    assert risk_multiplier(np.array([10, 20, 40, 60, 90, np.nan]), cfg).tolist() == [
        1,
        1,
        0.5,
        0,
        0,
        0,
    ]
    assert vol_target_scale(0.8, cfg, gross=1.0) == pytest.approx(0.5)
    assert vol_target_scale(0.2, cfg, gross=1.0) == pytest.approx(1.0)  # leverage cap
    assert vol_target_scale(
        0.2, SizingConfig(target_vol=0.4, max_gross=3.0), gross=1.0
    ) == pytest.approx(2.0)
    assert vol_target_scale(float("nan"), cfg, gross=0.5) == 1.0
    with pytest.raises(ValueError, match="target_vol"):
        SizingConfig(target_vol=0)


def test_portfolio_volatility_matches_numpy_and_downside():
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.03, (60, 3))
    w = np.array([0.5, 0.3, 0.2])
    assert portfolio_volatility(w, r, 365) == pytest.approx(np.std(r @ w, ddof=1) * np.sqrt(365))
    p = r @ w
    assert portfolio_volatility(w, r, 365, downside=True) == pytest.approx(
        np.sqrt(np.mean(np.minimum(p, 0) ** 2) * 365)
    )


def test_stops_tighten_when_volatility_is_stressed():
    cfg = SizingConfig()
    d = stop_distance(np.array([100.0, 100.0]), np.array([1.0, 2.0]), cfg)
    assert d.tolist() == [300.0, 200.0]


def test_a_young_asset_is_scored_on_the_factors_its_history_allows(make_panel):
    """Old code: no score (so a zero weight) until the 90-day volatility was full."""
    rng = np.random.default_rng(11)
    old = list(100 * np.cumprod(1 + rng.normal(0, 0.03, 300)))
    young = [np.nan] * 100 + list(50 * np.cumprod(1 + rng.normal(0, 0.05, 200)))
    risk = asset_risk(make_panel({"OLDUSDT": old, "NEWUSDT": young}))
    score, coverage = risk.composite["NEWUSDT"], risk.coverage["NEWUSDT"]
    first = score.first_valid_index()
    assert first == score.index[100 + SCORE_MIN_DAYS - 1]  # its 30th day of prices
    # Volatility (from its 30th day), drawdown and liquidity: 0.5 of the weight. Trend
    # joins a day later (its 30-day move needs 31 closes), the volatility regime at 91.
    assert coverage.loc[first] == pytest.approx(0.50)
    assert coverage.iloc[100 + 31] == pytest.approx(0.85)
    assert coverage.iloc[100 + 91] == pytest.approx(1.0)
    # The score is the weighted mean of the factors there are, by hand.
    t = score.index[100 + 50]
    there = {n: w for n, w in ASSET_WEIGHTS.items() if np.isfinite(risk.scores[n].at[t, "NEWUSDT"])}
    assert set(there) == {"volatility", "trend", "drawdown", "liquidity"}
    expected = sum(risk.scores[n].at[t, "NEWUSDT"] * w for n, w in there.items()) / sum(
        there.values()
    )
    assert score.at[t] == pytest.approx(expected)
    assert coverage.at[t] == pytest.approx(0.85)
    # The old asset is unchanged by its neighbour and fully covered once warm.
    assert risk.coverage["OLDUSDT"].iloc[200:].eq(1.0).all()


def test_trend_counts_only_the_horizons_with_a_full_window(make_panel):
    """Old code counted a missing 200-day average as 'price above it' (calm), so a young
    asset's downtrend read a third weaker than it was."""
    from trimtab.signals.trend import efficiency_ratio

    rng = np.random.default_rng(5)
    close = pd.Series(100 * np.cumprod(1 + rng.normal(-0.002, 0.03, 199)))
    trend = asset_risk(make_panel({"YUSDT": list(close)})).values["trend"]["YUSDT"].to_numpy()
    # By hand on bars 60..198: only the 20- and 60-day averages exist.
    below = (close < close.rolling(20).mean()).astype(float) + (close < close.rolling(60).mean())
    straight_fall = (-efficiency_ratio(close.to_frame(), 30, signed=True)[0]).clip(lower=0)
    expected = (below / 2 + straight_fall).clip(upper=1.0)
    assert trend[59:] == pytest.approx(expected.to_numpy()[59:])
    old = (below / 3 + straight_fall).clip(upper=1.0)
    assert (np.abs(old - expected).to_numpy()[59:] > 0.1).sum() > 20  # the test can tell
    assert np.isnan(trend[:30]).all()  # the 30-day move needs 31 closes


def test_universe_admission_and_score_warm_up_agree(daily_panel):
    """Every bar where the backtest's top:10 holds an asset, the asset has a risk score
    (old code: 40-60 bars without one for most assets, from each listing and from the
    start of the data)."""
    from trimtab.engine.runner import RunSpec, select_members

    _, members = select_members(daily_panel, RunSpec(universe="top:10"))
    score = asset_risk(daily_panel).composite
    unscored = members & score.isna()
    assert not unscored.to_numpy().any(), unscored.sum()[lambda x: x > 0]


def test_admission_waits_for_the_score_at_any_bar_length(make_panel):
    """Old code admitted an hourly listing after 30 bars (hours), 29 days before its
    score could exist: a member held at zero for a month."""
    from trimtab.engine.runner import RunSpec, select_members

    rng = np.random.default_rng(2)
    n = 24 * 80
    old = list(100 * np.cumprod(1 + rng.normal(0, 0.004, n)))
    young = [np.nan] * (24 * 20) + list(10 * np.cumprod(1 + rng.normal(0, 0.006, n - 24 * 20)))
    panel = make_panel({"OLDUSDT": old, "NEWUSDT": young}, freq="1h")
    # Re-ranked monthly: the old code admitted NEW on 1 Feb, 11 days after its listing.
    _, members = select_members(panel, RunSpec(universe="top:2"))
    score = asset_risk(panel).composite
    assert members["NEWUSDT"].any()
    assert not (members & score.isna()).to_numpy().any()
