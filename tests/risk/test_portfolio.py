"""The portfolio risk score (``trimtab.risk.portfolio``) used directly, as the engine and
the allocator use it: the same figures as the review's, liquidation severity by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from trimtab.review import parse_holdings, review_portfolio
from trimtab.risk.portfolio import (
    PerpExposure,
    liquidation_score,
    portfolio_market,
    score_portfolio,
)
from trimtab.risk.score import Calibration

BAR = pd.Timestamp("2023-06-30", tz="UTC")


def _perp(distance_vols: float | None, notional: float, liq: float | None = 90.0) -> PerpExposure:
    return PerpExposure(
        symbol="ETHUSDT",
        side="long",
        quantity=notional / 100.0,
        price=100.0,
        notional=notional,
        liquidation_price=liq,
        distance_pct=0.1,
        distance_vols=distance_vols,
        loss_if_liquidated=notional / 10,
    )


def test_liquidation_score_by_hand():
    # calm at 10 daily vols, extreme at 1: 5.5 vols is half way (50), and a perp
    # controlling 12.5 % of equity counts half (full from 25 %).
    assert liquidation_score(_perp(5.5, 1_250.0), equity=10_000.0) == pytest.approx(25.0)
    assert liquidation_score(_perp(5.5, 5_000.0), equity=10_000.0) == pytest.approx(50.0)
    assert liquidation_score(_perp(0.5, 5_000.0), equity=10_000.0) == pytest.approx(100.0)
    # past liquidation (distance unknown) counts as at it; no liquidation price: nothing
    assert liquidation_score(_perp(None, 5_000.0), equity=10_000.0) == pytest.approx(100.0)
    assert liquidation_score(_perp(2.0, 5_000.0, liq=None), equity=10_000.0) == 0.0
    tight = Calibration(liquidation_vols=(20.0, 2.0))
    assert liquidation_score(_perp(11.0, 5_000.0), 10_000.0, tight) == pytest.approx(50.0)


def test_score_of_weights_equals_the_reviews(daily_panel):
    """Spot weights scored straight from a panel give the review's score and factors."""
    holdings = parse_holdings(
        "as_of: 2023-06-30\nsubaccounts:\n  core:\n    cash: {USDT: 3000}\n"
        "    spot: {BTCUSDT: 0.2, ETHUSDT: 2, SOLUSDT: 100}\n",
        "yaml",
        source="test.yaml",
    )
    review = review_portfolio(holdings, daily_panel)
    close = daily_panel.close.loc[BAR]
    qty = {"BTCUSDT": 0.2, "ETHUSDT": 2.0, "SOLUSDT": 100.0}
    # valued at the bar's close (the panel's close column is the bar's last price)
    exposure = pd.Series({s: q * float(close[s]) for s, q in qty.items()})
    equity = 3000.0 + exposure.sum()
    market = portfolio_market(daily_panel, list(qty), BAR)
    risk = score_portfolio(
        market, exposure / equity, equity=equity, leverage=exposure.sum() / equity
    )
    assert review["equity"] == pytest.approx(equity, rel=1e-9)
    assert risk.score == pytest.approx(review["risk_score"], rel=1e-8)
    assert {r.name: r.score for r in risk.readings} == pytest.approx(
        {f["name"]: f["score"] for f in review["factors"]}, rel=1e-7
    )
    assert risk.invested == pytest.approx(exposure.sum() / equity)
    assert math.isclose(sum(r.contribution for r in risk.readings), risk.score, rel_tol=1e-9)


def test_no_holdings_scores_structure_only(daily_panel):
    market = portfolio_market(daily_panel, [], BAR)
    risk = score_portfolio(market, pd.Series(dtype=float), equity=1000.0, leverage=0.0)
    assert risk.score == 0.0
    omitted = {o["name"] for o in risk.omitted}
    assert {"volatility", "correlation", "concentration", "drawdown_probability"} <= omitted
