"""The review on real data: riskier portfolios score higher, flags and recommendations
name the right symbols, recommendations do what they claim, the JSON keys are stable."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from trimtab.domain import Position, perpetual
from trimtab.review import (
    apply_recommendation,
    load_holdings,
    render,
    review_portfolio,
    run_review,
)
from trimtab.review.review import (
    TARGET_LIQUIDATION_VOLS,
    _margin_for_price,
    _size_for_price,
)
from trimtab.risk.score import asset_risk
from trimtab.signals.concentration import effective_number_of_bets
from trimtab.signals.volatility import ewma_vol

from .conftest import EXAMPLES, diversified, leveraged, yaml_holdings

# (as_of, ETH entry price of the 10x long): both a few % above its liquidation.
CASES = [("2022-05-09", 2350.0), ("2023-06-30", 2070.0)]


@pytest.fixture(scope="module")
def reviews(daily_panel, funding):
    out = {}
    for as_of, entry in CASES:
        out[as_of, "leveraged"] = review_portfolio(
            leveraged(as_of, entry), daily_panel, funding=funding
        )
        out[as_of, "diversified"] = review_portfolio(
            diversified(daily_panel, as_of), daily_panel, funding=funding
        )
    return out


@pytest.mark.real_data
@pytest.mark.parametrize(("as_of", "entry"), CASES)
def test_leveraged_perp_scores_far_riskier_than_diversified_spot(reviews, as_of, entry):
    lev, div = reviews[as_of, "leveraged"], reviews[as_of, "diversified"]
    assert lev["risk_score"] - div["risk_score"] > 25, (lev["risk_score"], div["risk_score"])
    assert lev["risk_level"] in ("high", "extreme")
    # The most severe flag is about the liquidation of ETHUSDT, at the right price.
    top = lev["flags"][0]
    assert top["severity"] == "critical" and top["symbols"] == ["ETHUSDT"]
    assert "liquidation" in top["message"]
    liq = lev["positions"][0]["liquidation_price"]
    near = [f for f in lev["flags"] if f["code"] == "LIQUIDATION_NEAR"]
    assert near and near[0]["symbols"] == ["ETHUSDT"] and f"{liq:,.0f}" in near[0]["message"]
    assert near[0]["severity"] in ("critical", "high")
    assert {f["code"] for f in lev["flags"]} >= {"LEVERAGE_HIGH", "POSITION_CONCENTRATION"}
    # Recommendations act on the ETH perpetual; the best removes most of the risk.
    assert lev["recommendations"] and all(r["symbol"] == "ETHUSDT" for r in lev["recommendations"])
    assert {r["action"] for r in lev["recommendations"]} >= {"close", "add_margin"}
    assert lev["recommendations"][0]["expected_score_after"] < div["risk_score"] + 10
    # The diversified book has no liquidation or leverage flags.
    codes = {f["code"] for f in div["flags"]}
    assert not codes & {"LIQUIDATION_NEAR", "LEVERAGE_HIGH", "LIQUIDATED", "POSITION_CONCENTRATION"}
    factors = {f["name"]: f for f in div["factors"]}
    assert factors["liquidation"]["score"] == 0 and factors["leverage"]["score"] == 0
    assert factors["concentration"]["value"] > 8  # ten similar-size positions


@pytest.mark.real_data
def test_regime_reads_the_luna_week_as_high_vol(reviews):
    assert reviews["2022-05-09", "diversified"]["regime"]["label"] == "high-vol"
    assert reviews["2023-06-30", "diversified"]["regime"]["label"] == "calm"
    p = reviews["2022-05-09", "diversified"]["regime"]["probabilities"]
    assert p["turbulent"] > 0.5 and sum(p.values()) == pytest.approx(1.0)
    assert any(
        f["code"] == "REGIME_HIGH_VOL" for f in reviews["2022-05-09", "diversified"]["flags"]
    )


def test_funding_factor_from_the_funding_file(reviews, funding):
    lev = reviews["2022-05-09", "leveraged"]
    f = {x["name"]: x for x in lev["factors"]}["funding"]
    bar_close = pd.Timestamp("2022-05-10", tz="UTC")
    g = funding[
        (funding.symbol == "ETHUSDT")
        & (funding.venue == "binance")
        & (funding.timestamp <= bar_close)
        & (funding.timestamp > bar_close - pd.Timedelta(days=7))
    ]
    assert f["value"] == pytest.approx(g.funding_rate.mean() * 1095, abs=1e-6)  # 3 a day
    assert lev["data"]["funding"]["symbols"]["ETHUSDT"]["venue"] == "binance"
    # 2023 is after the funding file: the factor is left out and the flag says why.
    lev23 = reviews["2023-06-30", "leveraged"]
    assert "funding" in {o["name"] for o in lev23["omitted_factors"]}
    assert any(fl["code"] == "FUNDING_UNKNOWN" for fl in lev23["flags"])


@pytest.mark.real_data
def test_liquidation_matches_a_hand_computation(daily_panel):
    as_of, entry, size, lev = "2023-06-30", 0.07, 200_000.0, 10.0
    h = yaml_holdings(
        f"""
as_of: {as_of}
subaccounts:
  m:
    cash: {{USDT: 1000}}
    perps:
      - {{symbol: DOGEUSDT, side: long, size: {size:.0f}, entry_price: {entry}, leverage: {lev:.0f}}}
      - {{symbol: BTCUSDT, side: short, size: 0.5, entry_price: 30000, margin: 3000}}
"""
    )
    r = review_portfolio(h, daily_panel)
    doge, btc = r["positions"]
    margin = size * entry / lev  # 1,400 USDT
    # Binance isolated long; DOGE has no built-in brackets, so the conservative fallback
    # (trimtab.domain.instruments.FALLBACK_MARGIN_TIERS), whose bracket 2 (10,000-50,000:
    # mmr 1 %, cum 35) holds the ~12,700 notional at liquidation:
    # margin + q (P - entry) = 0.01 q P - 35  =>  P = (margin + 35 - q entry) / (0.01 q - q)
    liq = (margin + 35 - size * entry) / (0.01 * size - size)
    assert doge["liquidation_price"] == pytest.approx(liq, rel=1e-9)  # JSON keeps 10 digits
    assert liq == pytest.approx(0.0634596, rel=1e-5)
    mark = daily_panel.close.at[pd.Timestamp(as_of, tz="UTC"), "DOGEUSDT"]
    assert doge["price"] == mark
    assert doge["liquidation_distance_pct"] == pytest.approx((mark - liq) / mark)
    vol = ewma_vol(daily_panel.close["DOGEUSDT"]).loc[as_of] / math.sqrt(365)
    assert doge["daily_vol"] == pytest.approx(vol, rel=1e-6)
    assert doge["liquidation_distance_vols"] == pytest.approx((mark - liq) / mark / vol, rel=1e-6)
    assert doge["value"] == pytest.approx(margin + size * (mark - entry))
    # Short: margin + q (entry - P) = 0.004 q P  =>  P = (margin + q entry) / (q + 0.004 q).
    q = 0.5
    assert btc["liquidation_price"] == pytest.approx((3000 + q * 30000) / (q + 0.004 * q))
    assert btc["leverage"] == pytest.approx(5.0)  # from the margin: 15,000 / 3,000
    # The bar's low went through DOGE's liquidation price (0.06101 < 0.06346).
    assert any(
        f["code"] == "LIQUIDATION_TOUCHED" and f["symbols"] == ["DOGEUSDT"] for f in r["flags"]
    )

    # Cross margin: the subaccount's free cash backs the position too.
    cross = yaml_holdings(
        f"as_of: {as_of}\nsubaccounts:\n  m:\n    cash: {{USDT: 1000}}\n    perps:\n"
        f"      - {{symbol: DOGEUSDT, side: long, size: 200000, entry_price: {entry}, "
        "leverage: 10, margin_mode: cross}\n"
    )
    rc = review_portfolio(cross, daily_panel)
    liq_cross = (margin + 1000 + 35 - size * entry) / (0.01 * size - size)
    assert rc["positions"][0]["liquidation_price"] == pytest.approx(liq_cross, rel=1e-9)
    assert any("cross-margin" in n for n in rc["notes"])


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_margin_and_size_for_a_target_liquidation(side):
    from trimtab.review.holdings import Holding

    h = Holding(
        "m", "perp", "BTCUSDT", "BTC", side * 2.0, 30000.0, 10.0, 6000.0, "isolated", "perps", 0
    )
    target = 30000.0 * (1 - side * 0.2)
    m = _margin_for_price(h, target)
    pos = Position(perpetual("BTCUSDT"), side * 2.0, 30000.0, m, 10.0)
    assert pos.liquidation_price() == pytest.approx(target)
    q = _size_for_price(h, 6000.0, target)
    pos = Position(perpetual("BTCUSDT"), side * q, 30000.0, 6000.0, 10.0)
    assert pos.liquidation_price() == pytest.approx(target)


def test_recommendations_lower_the_score_when_applied(daily_panel, funding, reviews):
    cases = [
        (leveraged("2022-05-09", 2350.0), reviews["2022-05-09", "leveraged"]),
        (load_holdings(EXAMPLES / "holdings.yaml"), None),
    ]
    for holdings, review in cases:
        review = review or review_portfolio(holdings, daily_panel, funding=funding)
        recs = review["recommendations"]
        assert recs
        changes = [r["score_change"] for r in recs]
        assert changes == sorted(changes)  # largest reduction first
        for rec in recs:
            after = review_portfolio(
                apply_recommendation(holdings, rec), daily_panel, funding=funding
            )
            # The claim is the score of a full re-run of the review on the changed holdings.
            assert after["risk_score"] == pytest.approx(rec["expected_score_after"], abs=1e-6)
            assert after["risk_score"] <= review["risk_score"] + 1e-9
            assert after["equity"] == pytest.approx(review["equity"], rel=1e-9) or rec["legs"][
                0
            ].get("deposit")
            if rec["action"] in ("add_margin", "cut_leverage"):
                pos = next(p for p in after["positions"] if p["symbol"] == rec["symbol"])
                assert pos["liquidation_distance_vols"] >= TARGET_LIQUIDATION_VOLS - 0.05
            if rec["action"] == "close":
                assert rec["symbol"] not in {
                    p["symbol"] for p in after["positions"] if p["kind"] == "perp"
                }


def test_asset_readings_equal_asset_risk_on_the_full_panel(daily_panel, reviews):
    """The review reads a truncated window; the numbers must not change."""
    r = reviews["2023-06-30", "diversified"]
    full = asset_risk(daily_panel.select([p["symbol"] for p in r["positions"]]))
    bar = pd.Timestamp("2023-06-30", tz="UTC")
    for p in r["positions"]:
        for name, score in p["factor_scores"].items():
            assert score == pytest.approx(full.scores[name].at[bar, p["symbol"]], abs=1e-6), name


def test_concentration_matches_signals(daily_panel, reviews):
    from trimtab.review import resolve_holdings
    from trimtab.risk.portfolio import portfolio_market

    h = diversified(daily_panel, "2023-06-30")
    book = resolve_holdings(h, daily_panel)
    m = portfolio_market(daily_panel, book.symbols, book.bar)
    c = reviews["2023-06-30", "diversified"]["concentration"]
    w = pd.Series(
        {p["symbol"]: p["weight"] for p in reviews["2023-06-30", "diversified"]["positions"]}
    )
    cov = pd.DataFrame(m.matrices(m.symbols)["cov"], index=m.symbols, columns=m.symbols)
    assert c["effective_bets"] == pytest.approx(
        effective_number_of_bets(w, cov, method="minimum_torsion"), rel=1e-6
    )
    assert c["independent_bets"] == pytest.approx(effective_number_of_bets(w, cov), rel=1e-6)
    assert c["hhi"] == pytest.approx(0.1, rel=1e-6)  # ten equal positions


def test_decisions_see_nothing_after_the_as_of_bar(daily_panel):
    h = load_holdings(EXAMPLES / "holdings.yaml")
    full = review_portfolio(h, daily_panel)
    cut = review_portfolio(h, daily_panel.slice(end="2023-06-30"))
    full["data"] = cut["data"] = None
    assert json.dumps(full, sort_keys=True) == json.dumps(cut, sort_keys=True)


@pytest.mark.real_data
def test_short_trend_hedge_and_cash_only(daily_panel):
    # A short in a falling market is not flagged for the downtrend; spot + perp short of
    # the same coin net out of the market factors.
    h = yaml_holdings(
        """
as_of: 2022-06-20
subaccounts:
  hedge:
    cash: {USDT: 5000}
    spot: {ETH: 10}
    perps:
      - {symbol: ETHUSDT, side: short, size: 10, entry_price: 1100, leverage: 3}
  bear:
    cash: {USDT: 5000}
    perps:
      - {symbol: SOLUSDT, side: short, size: 100, entry_price: 35, leverage: 2}
"""
    )
    r = review_portfolio(h, daily_panel)
    codes = {(f["code"], tuple(f["symbols"])) for f in r["flags"]}
    assert ("DOWNTREND", ("SOLUSDT",)) not in codes
    assert r["concentration"]["largest_position"]["symbol"] == "SOLUSDT"
    assert r["concentration"]["largest_position"]["weight"] < 0
    trend = {p["symbol"] + p["kind"]: p["factor_scores"]["trend"] for p in r["positions"]}
    assert trend["ETHUSDTspot"] > 50 > trend["SOLUSDTperp"]  # long in a downtrend vs short in it
    assert r["net_exposure"] == pytest.approx(
        -100 * daily_panel.close.at[pd.Timestamp("2022-06-20", tz="UTC"), "SOLUSDT"], rel=1e-9
    )
    cash = review_portfolio(
        yaml_holdings("subaccounts: {a: {cash: {USDT: 100, DAI: 50}}}"), daily_panel
    )
    assert cash["equity"] == 150 and cash["positions"] == [] and cash["recommendations"] == []
    assert cash["risk_score"] == 0 and cash["flags"][0]["code"] == "NO_POSITIONS"


def test_drawdown_probability_input(daily_panel):
    h = diversified(daily_panel, "2023-06-30")
    base = review_portfolio(h, daily_panel)
    assert base["probability_of_drawdown"] is None
    assert "drawdown_probability" in {o["name"] for o in base["omitted_factors"]}
    r = review_portfolio(h, daily_panel, drawdown_probability=0.4, threshold=0.15, horizon_days=10)
    f = {x["name"]: x for x in r["factors"]}["drawdown_probability"]
    assert r["probability_of_drawdown"] == 0.4 and f["score"] == pytest.approx(77.777778, rel=1e-6)
    assert "more than 15% within 10 days" in f["explanation"]
    assert r["risk_score"] > base["risk_score"]
    seen = {}

    def model(weights, panel, bar):
        seen["w"], seen["bar"] = weights, bar
        return 0.1

    assert (
        review_portfolio(h, daily_panel, drawdown_probability=model)["probability_of_drawdown"]
        == 0.1
    )
    assert seen["bar"] == pd.Timestamp("2023-06-30", tz="UTC") and len(seen["w"]) == 10
    with pytest.raises(ValueError, match="probability in"):
        review_portfolio(h, daily_panel, drawdown_probability=1.5)


# --------------------------------------------------------------------------- output

TOP_KEYS = {
    "schema_version",
    "as_of",
    "bar",
    "valued_at",
    "timeframe",
    "risk_score",
    "risk_level",
    "summary",
    "probability_of_drawdown",
    "drawdown_event",
    "equity",
    "cash",
    "gross_exposure",
    "net_exposure",
    "leverage",
    "factors",
    "omitted_factors",
    "flags",
    "recommendations",
    "positions",
    "subaccounts",
    "regime",
    "concentration",
    "correlation",
    "data",
    "notes",
}
FACTOR_KEYS = {"name", "value", "score", "weight", "contribution", "explanation"}
FLAG_KEYS = {"severity", "code", "message", "symbols", "subaccount"}
REC_KEYS = {
    "action",
    "symbol",
    "symbols",
    "subaccount",
    "amount",
    "unit",
    "notional",
    "reason",
    "expected_score_after",
    "score_change",
    "expected_effect",
    "factor_changes",
    "legs",
}
POSITION_KEYS = {
    "subaccount",
    "symbol",
    "asset",
    "kind",
    "side",
    "quantity",
    "price",
    "notional",
    "value",
    "weight",
    "entry_price",
    "unrealized_pnl",
    "leverage",
    "effective_leverage",
    "margin",
    "margin_mode",
    "liquidation_price",
    "liquidation_distance_pct",
    "liquidation_distance_vols",
    "daily_vol",
    "risk_score",
    "factor_scores",
    "where",
    "note",
}
SUBACCOUNT_KEYS = {
    "equity",
    "cash",
    "spot_value",
    "perp_margin",
    "unrealized_pnl",
    "gross_exposure",
    "net_exposure",
    "leverage",
    "positions",
}
REGIME_KEYS = {
    "label",
    "probabilities",
    "state_volatility",
    "change_score",
    "volatility_10d",
    "volatility_90d",
    "history_days",
    "method",
    "explanation",
}
CONCENTRATION_KEYS = {
    "effective_bets",
    "independent_bets",
    "hhi",
    "effective_positions",
    "largest_position",
    "largest_cluster",
    "clusters",
}
CORRELATION_KEYS = {
    "average_30d",
    "average_180d",
    "shift",
    "market_shift_z",
    "market_average_30d",
    "market_average_180d",
    "most_correlated",
}


def test_json_keys_are_stable(reviews):
    for r in reviews.values():
        assert set(r) == TOP_KEYS
        assert r["schema_version"] == 1
        for f in r["factors"]:
            assert FACTOR_KEYS <= set(f) <= FACTOR_KEYS | {"symbols"}
        assert all(set(f) == FLAG_KEYS for f in r["flags"])
        assert all(set(x) == REC_KEYS for x in r["recommendations"])
        assert all(set(p) == POSITION_KEYS for p in r["positions"])
        assert all(set(s) == SUBACCOUNT_KEYS for s in r["subaccounts"].values())
        assert set(r["regime"]) == REGIME_KEYS
        assert set(r["concentration"]) == CONCENTRATION_KEYS
        assert set(r["correlation"]) == CORRELATION_KEYS
        assert sum(f["contribution"] for f in r["factors"]) == pytest.approx(r["risk_score"])
        json.dumps(r, allow_nan=False)  # no NaN or inf anywhere
        sev = [f["severity"] for f in r["flags"]]
        order = ["critical", "high", "medium", "low"]
        assert sev == sorted(sev, key=order.index)


@pytest.mark.real_data
def test_run_review_on_the_examples(shared_data, tmp_path):
    text = run_review(EXAMPLES / "holdings.yaml", data=str(shared_data))
    assert "Risk score" in text and "DOGEUSDT long 12x is" in text and "RECOMMENDATIONS" in text
    md = run_review(EXAMPLES / "holdings.yaml", data=str(shared_data), fmt="markdown")
    assert md.startswith("# Portfolio review, 2023-06-30") and "| factor |" in md
    out = tmp_path / "deep" / "review.json"
    js = run_review(EXAMPLES / "holdings.csv", data=str(shared_data), fmt="json", out=out)
    assert out.read_text() == js
    from_csv = json.loads(js)
    from_yaml = json.loads(
        run_review(EXAMPLES / "holdings.yaml", data=str(shared_data), fmt="json")
    )
    assert from_csv["data"]["funding_file"].endswith("funding_BTC_ETH_7venues_2020-2022.csv.gz")
    for r in (from_csv, from_yaml):
        r.pop("data")
        for p in r["positions"]:
            p.pop("where")
    assert from_csv == from_yaml
    assert from_yaml["as_of"] == "2023-06-30" and set(from_yaml) == TOP_KEYS - {"data"}
    with pytest.raises(ValueError, match="unknown format 'html'"):
        run_review(EXAMPLES / "holdings.yaml", data=str(shared_data), fmt="html")


def test_renderers_handle_every_review(reviews):
    for r in reviews.values():
        for fmt in ("text", "markdown", "json"):
            out = render(r, fmt)
            assert out.endswith("\n") and "nan" not in out.lower().replace("nanc", "")
        assert f"Risk score {r['risk_score']:.0f}/100" in render(r, "text")
    assert np.isfinite(reviews["2022-05-09", "leveraged"]["risk_score"])
