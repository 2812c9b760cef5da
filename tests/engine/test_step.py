"""The pipeline step on its own (no clock, no broker), causal calendars, and policies
saved and restored in the middle of a run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trimtab.config import TrimtabConfig
from trimtab.data.calendar import FREQUENCIES, calendar_mask, starts_period
from trimtab.domain import spot
from trimtab.domain.decisions import Decision, Observation, PortfolioState, Reason
from trimtab.engine.context import MarketContext
from trimtab.engine.step import PipelineStep
from trimtab.execution.costs import CostModel
from trimtab.guard.limits import Limits
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import make_policy
from trimtab.policy.policies import Managed, RebalancedEqualWeight, StatelessPolicy


class _Fixed(StatelessPolicy):
    name = "fixed-row"

    def __init__(self, row):
        self.row = np.array(row, dtype=float)

    def decide(self, obs, assessment):
        return Decision.rebalance(self.row, Reason("test", "fixed row"))


def _observation(closes: dict[str, float], cash: float, qty=None, i: int = 0) -> Observation:
    symbols = tuple(closes)
    close = np.array([list(closes.values())], dtype=float)
    fields = {"open": close, "high": close, "low": close, "close": close,
              "quote_volume": np.full_like(close, 1e9)}  # fmt: skip
    qty = np.zeros(len(symbols)) if qty is None else np.asarray(qty, dtype=float)
    equity = cash + float(qty @ close[0])
    ts = pd.Timestamp("2024-03-01", tz="UTC")
    return Observation(
        i,
        ts,
        symbols,
        fields,
        {},
        np.ones(len(symbols), bool),
        np.ones(len(symbols), bool),
        PortfolioState(equity, cash, qty, close[0], equity),
        0,
    )


def _instrument(symbol: str):
    return spot(symbol, min_notional=5.0)


def test_a_step_turns_an_observation_into_a_record_and_guarded_orders():
    # 10,000 USDT cash; the policy asks for 60 % AAA and 60 % BBB. The limits (asset cap
    # 0.5, gross 1.0) cut that to 50 % each: buys of 5,000 USDT each, no broker involved.
    safety = SafetyLayer(Limits(max_asset_weight=0.5), subaccount="s1")
    step = PipelineStep(_Fixed([0.6, 0.6]), safety, subaccount="s1")
    obs = _observation({"AAAUSDT": 100.0, "BBBUSDT": 20.0}, cash=10_000.0)
    out = step.step(obs, _instrument, decision_id=7)
    assert out.record["id"] == 7 and out.record["policy"] == "fixed-row"
    assert out.record["targets"] == {"AAAUSDT": 0.5, "BBBUSDT": 0.5}
    assert [g["rule"] for g in out.record["guard"]] == ["max_asset_weight"]
    assert out.replaces_open
    assert {o.symbol: o.quote_quantity for o in out.orders} == {
        "AAAUSDT": pytest.approx(5_000.0),
        "BBBUSDT": pytest.approx(5_000.0),
    }
    assert all(o.subaccount == "s1" and o.decision_id == 7 for o in out.orders)
    assert out.record["orders"] == []  # what was sent is the loop's to say


def test_a_step_without_a_guard_is_refused_and_nan_targets_send_nothing():
    with pytest.raises(ValueError, match="needs a guard"):
        PipelineStep(_Fixed([0.5]), None)  # type: ignore[arg-type]
    step = PipelineStep(_Fixed([np.nan, 0.5]), SafetyLayer.limits_only())
    out = step.step(_observation({"AAAUSDT": 100.0, "BBBUSDT": 20.0}, 10_000.0), _instrument, 0)
    assert out.decision.targets is None and out.orders == []
    assert out.record["action"] == "rejected"
    assert out.record["guard"][0]["rule"] == "non_finite"
    assert "state" not in out.record  # limits only: no breaker state to report


@pytest.mark.parametrize("frequency", FREQUENCIES)
@pytest.mark.parametrize("freq", ["1D", "1h", "4h"])
def test_causal_calendar_matches_the_mask_over_the_whole_index(frequency, freq):
    rng = np.random.default_rng(3)
    index = pd.date_range("2020-12-25", periods=2_000, freq=freq, tz="UTC")
    # Gaps (missing bars) must not move a period start.
    index = index[np.sort(rng.choice(len(index), size=1_500, replace=False))]
    mask = calendar_mask(index, frequency)
    causal = [
        starts_period(ts, index[k - 1] if k else None, frequency) for k, ts in enumerate(index)
    ]
    assert causal == mask.tolist()
    assert mask.sum() > 1  # periods do start inside the index


def _policies():
    config = TrimtabConfig()
    costs = CostModel()
    return {
        "managed": lambda: Managed(
            config.sizing, governor=config.governor, costs=costs, cost_settings=config.rebalance
        ),
        "cost-aware": lambda: RebalancedEqualWeight("cost-aware", costs=costs),
        "equal-monthly": lambda: make_policy("equal-monthly"),
        "equal-hold": lambda: make_policy("equal-hold"),
        "btc-hold": lambda: make_policy("btc-hold", "BTCUSDT"),
    }


@pytest.mark.parametrize("name", list(_policies()))
def test_a_policy_restored_half_way_decides_as_the_uninterrupted_one(name, daily_panel):
    panel = daily_panel.select(["BTCUSDT", "ETHUSDT", "XRPUSDT", "ADAUSDT", "LTCUSDT"])
    ctx = MarketContext.build(
        panel, start="2021-01-01", end="2021-09-30", with_regime=name == "managed"
    )
    m = ctx.market
    make = _policies()[name]
    # A drifting, partly invested book, so that drift and drawdown rules have work to do.
    qty = np.array([0.5, 5.0, 1000.0, 2000.0, 10.0])

    def observations():
        for k, i in enumerate(range(ctx.start_i, ctx.end_i)):
            marks = m.close_filled[i]
            equity = 50_000.0 + float(qty @ marks)
            fields = {"open": m.open, "high": m.high, "low": m.low, "close": m.close,
                      "quote_volume": m.quote_volume}  # fmt: skip
            yield Observation(
                i, m.timestamps[i], m.symbols, fields, ctx.features, m.tradable[i],
                ctx.universe[i], PortfolioState(equity, 50_000.0, qty, marks, 1.2e5), k,
                m.index[i - 1] if i else None,
            )  # fmt: skip

    def trace(decision: Decision):
        targets = None if decision.targets is None else decision.targets.tolist()
        return decision.action, targets, [r.to_dict() for r in decision.reasons]

    from trimtab.engine.step import FeatureAssessor

    assess = FeatureAssessor().assess
    whole = make()
    whole.reset(m.symbols, 365.0)
    expected = [trace(whole.decide(o, assess(o))) for o in observations()]

    half = len(expected) // 2
    first = make()
    first.reset(m.symbols, 365.0)
    obs = list(observations())
    got = [trace(first.decide(o, assess(o))) for o in obs[:half]]
    saved = json.loads(json.dumps(first.state()))  # through JSON, as the store keeps it
    second = make()
    second.reset(m.symbols, 365.0)
    second.restore(saved)
    got += [trace(second.decide(o, assess(o))) for o in obs[half:]]
    assert got == expected
    assert any(a != "hold" for a, _, _ in expected[half:]) or name in ("equal-hold", "btc-hold")
