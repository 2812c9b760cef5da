"""The portfolio pulse: each rule fires on a hand-made crossing and not otherwise;
cooldowns, filters, targets, the inputs' round trip and the readings from a panel."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from trimtab.config import AlertSettings, ConfigError, parse_alert_settings
from trimtab.review.pulse import (
    ACCOUNT,
    AssetReading,
    PerpReading,
    PulseInputs,
    SubaccountPulse,
    asset_readings,
    evaluate_pulse,
    regime_label,
    subaccount_pulse,
)

T0 = pd.Timestamp("2024-03-01", tz="UTC")
DAY = 86400.0


def settings(*rules: dict, **kw) -> AlertSettings:
    return parse_alert_settings({"rules": list(rules), **kw})


def unit(name: str = "core", **kw) -> SubaccountPulse:
    kw.setdefault("held", ("BTCUSDT",))
    return SubaccountPulse(name=name, **kw)


def inputs(t: int = 0, *, subs=None, account=None, assets=None) -> PulseInputs:
    subs = subs if subs is not None else [unit()]
    return PulseInputs(
        timestamp=T0 + pd.Timedelta(days=t),
        bar_seconds=DAY,
        account=account or SubaccountPulse(name=ACCOUNT),
        subaccounts={u.name: u for u in subs},
        assets=assets or {},
    )


def never(key: str):
    return None


def run(s, now, before=None, last=never):
    return [a for a, _ in evaluate_pulse(s, now, before, last)]


# --------------------------------------------------------------------------- risk score


def test_risk_score_fires_on_the_upward_crossing_only():
    s = settings({"kind": "risk_score", "level": 50})
    before = inputs(0, subs=[unit(risk_score=45.0)])
    now = inputs(1, subs=[unit(risk_score=55.5, risk_level="high", top_action="cut BTC")])
    [a] = run(s, now, before)
    assert a.rule == "risk_score" and a.key == "risk_score:core:up:50"
    assert a.severity == "warning" and a.subaccount == "core"
    assert "45.0 to 55.5" in a.message and "50" in a.message
    assert a.numbers == {"risk_score": 55.5, "previous_risk_score": 45.0, "level": 50.0}
    assert a.action == "cut BTC"
    # Above and staying above: nothing; below and staying below: nothing.
    assert run(s, inputs(2, subs=[unit(risk_score=60.0)]), now) == []
    assert run(s, inputs(1, subs=[unit(risk_score=48.0)]), before) == []


def test_risk_score_downward_crossing_and_direction():
    before = inputs(0, subs=[unit(risk_score=55.0)])
    now = inputs(1, subs=[unit(risk_score=42.0)])
    [a] = run(settings({"kind": "risk_score", "level": 50}), now, before)
    assert a.key == "risk_score:core:down:50" and a.severity == "info"
    assert "55.0 to 42.0" in a.message
    assert run(settings({"kind": "risk_score", "level": 50, "direction": "up"}), now, before) == []
    up_again = inputs(2, subs=[unit(risk_score=51.0)])
    assert run(settings({"kind": "risk_score", "direction": "down"}), up_again, now) == []


def test_risk_score_first_cycle_and_unknown_score():
    s = settings({"kind": "risk_score", "level": 50})
    [a] = run(s, inputs(0, subs=[unit(risk_score=70.0)]), None)
    assert "is 70.0" in a.message
    assert run(s, inputs(0, subs=[unit(risk_score=30.0)]), None) == []
    # No review this cycle: no reading, no alert, whatever came before.
    assert (
        run(s, inputs(1, subs=[unit(risk_score=None)]), inputs(0, subs=[unit(risk_score=10.0)]))
        == []
    )


def test_account_score_and_the_subaccount_filter():
    before = inputs(
        0, subs=[unit(risk_score=40.0)], account=SubaccountPulse(ACCOUNT, risk_score=40.0)
    )
    now = inputs(1, subs=[unit(risk_score=60.0)], account=SubaccountPulse(ACCOUNT, risk_score=61.0))
    keys = [a.key for a in run(settings({"kind": "risk_score"}), now, before)]
    assert keys == ["risk_score:core:up:50", "risk_score:account:up:50"]
    only = run(settings({"kind": "risk_score", "subaccount": "account"}), now, before)
    assert [a.subaccount for a in only] == [None]
    assert run(settings({"kind": "risk_score", "subaccount": "other"}), now, before) == []


# --------------------------------------------------------------------------- liquidation


def perp(vols: float | None, pct: float | None = 0.05) -> dict:
    return {
        "BTCUSDT": PerpReading(
            symbol="BTCUSDT",
            side="long",
            price=40000.0,
            liquidation_price=38000.0,
            distance_pct=pct,
            distance_vols=vols,
        )
    }


def test_liquidation_distance_fires_when_the_perp_comes_inside():
    s = settings({"kind": "liquidation_distance", "daily_moves": 3})
    before = inputs(0, subs=[unit(perps=perp(4.0))])
    now = inputs(1, subs=[unit(perps=perp(2.5))])
    [a] = run(s, now, before)
    assert a.severity == "critical" and a.key == "liquidation_distance:core:BTCUSDT"
    assert "2.5 daily moves (5.0%)" in a.message and "38,000" in a.message
    assert "4.0 daily moves" in a.message
    assert a.numbers["distance_vols"] == 2.5 and a.numbers["previous_distance_vols"] == 4.0
    assert "add margin" in a.action
    assert run(s, inputs(2, subs=[unit(perps=perp(2.0))]), now) == []  # still inside
    assert run(s, inputs(1, subs=[unit(perps=perp(3.5))]), before) == []  # never inside


def test_liquidation_past_the_price_counts_as_zero_distance():
    s = settings({"kind": "liquidation_distance"})
    [a] = run(
        s, inputs(1, subs=[unit(perps=perp(None, -0.01))]), inputs(0, subs=[unit(perps=perp(5.0))])
    )
    assert "past its liquidation price" in a.message and a.numbers["distance_vols"] == 0.0


# --------------------------------------------------------------------------- breaker


def test_breaker_state_changes():
    s = settings({"kind": "breaker"})
    halt = inputs(
        1,
        subs=[
            unit(trading_state="halted", previous_trading_state="active", equity=80.0, peak=100.0)
        ],
    )
    [a] = run(s, halt, None)
    assert a.severity == "critical" and a.key == "breaker:core:active->halted"
    assert "active to halted" in a.message and "20.0%" in a.message
    back = inputs(2, subs=[unit(trading_state="active", previous_trading_state="halted")])
    assert run(s, back, halt)[0].severity == "info"
    reduce = inputs(2, subs=[unit(trading_state="reducing", previous_trading_state="active")])
    assert run(s, reduce, None)[0].severity == "warning"
    same = inputs(3, subs=[unit(trading_state="active", previous_trading_state="active")])
    assert run(s, same, back) == []


def test_account_breaker_compares_with_the_previous_cycle():
    s = settings({"kind": "breaker", "subaccount": "account"})
    before = inputs(0, account=SubaccountPulse(ACCOUNT, trading_state="active"))
    now = inputs(1, account=SubaccountPulse(ACCOUNT, trading_state="reducing"))
    [a] = run(s, now, before)
    assert a.subaccount is None and a.numbers["from"] == "active" and a.numbers["to"] == "reducing"
    assert run(s, now, None) == []  # no state before: no change seen
    assert run(s, now, now) == []


# --------------------------------------------------------------------------- drawdown


def test_drawdown_past_the_level():
    s = settings({"kind": "drawdown", "level": 0.10})
    before = inputs(0, subs=[unit(equity=95_000.0, peak=100_000.0)])
    now = inputs(1, subs=[unit(equity=88_000.0, peak=100_000.0)])
    [a] = run(s, now, before)
    # 1 - 88,000 / 100,000 = 0.12; the bar before 1 - 95,000 / 100,000 = 0.05.
    assert a.numbers["drawdown"] == pytest.approx(0.12)
    assert a.numbers["previous_drawdown"] == pytest.approx(0.05)
    assert "from 5.0% to 12.0%" in a.message and "88,000 USDT" in a.message
    deeper = inputs(2, subs=[unit(equity=87_000.0, peak=100_000.0)])
    assert run(s, deeper, now) == []
    assert run(s, inputs(1, subs=[unit(equity=91_000.0, peak=100_000.0)]), before) == []


# --------------------------------------------------------------------------- assets


def test_correlation_shift_of_held_assets_only():
    s = settings({"kind": "correlation_shift", "z": 2.0})
    before = inputs(
        0,
        assets={
            "BTCUSDT": AssetReading(correlation_shift_z=1.5),
            "ETHUSDT": AssetReading(correlation_shift_z=1.0),
        },
    )
    now = inputs(
        1,
        assets={
            "BTCUSDT": AssetReading(correlation_shift_z=2.4),
            "ETHUSDT": AssetReading(correlation_shift_z=3.0),
        },
    )
    [a] = run(s, now, before)  # ETH is not held
    assert a.key == "correlation_shift:account:BTCUSDT" and a.subaccount is None
    assert "+1.5 to +2.4" in a.message and a.numbers["holders"] == ["core"]
    assert run(s, inputs(2, assets={"BTCUSDT": AssetReading(correlation_shift_z=2.8)}), now) == []


def test_volatility_regime_changes():
    s = settings({"kind": "volatility_regime"})
    r = lambda x: {"BTCUSDT": AssetReading(volatility_ratio=x)}  # noqa: E731
    [a] = run(s, inputs(1, assets=r(1.6)), inputs(0, assets=r(1.2)))
    assert a.severity == "warning" and "from normal to elevated" in a.title
    assert "1.60x" in a.message and "was 1.20x" in a.message
    assert run(s, inputs(2, assets=r(1.7)), inputs(1, assets=r(1.6))) == []
    [down] = run(s, inputs(3, assets=r(1.1)), inputs(2, assets=r(1.7)))
    assert down.severity == "info" and down.numbers["regime"] == "normal"
    # First sight: only an unusual regime is reported.
    assert run(s, inputs(0, assets=r(1.0)), None) == []
    assert run(s, inputs(0, assets=r(2.6)), None)[0].numbers["regime"] == "high-vol"


def test_regime_label_edges():
    assert [regime_label(x, 0.75, 1.5, 2.5) for x in (0.5, 0.75, 1.49, 1.5, 2.5, None)] == [
        "calm",
        "normal",
        "normal",
        "elevated",
        "high-vol",
        None,
    ]


# --------------------------------------------------------------------------- events


def test_stale_data_after_n_closes_in_a_row():
    s = settings({"kind": "stale_data", "bars": 2})
    one = inputs(0, subs=[unit(stale={"BTCUSDT": 1})])
    two = inputs(1, subs=[unit(stale={"BTCUSDT": 2})])
    three = inputs(2, subs=[unit(stale={"BTCUSDT": 3})])
    assert run(s, one, None) == []
    [a] = run(s, two, one)
    assert a.numbers == {"symbol": "BTCUSDT", "bars": 2, "threshold": 2} and "2 closes" in a.message
    assert run(s, three, two) == []


def test_order_rejected_once_per_order():
    s = settings({"kind": "order_rejected"})
    order = {
        "client_order_id": "r1-core-7-0",
        "symbol": "BTCUSDT",
        "side": "buy",
        "reason": "min notional",
    }
    [a] = run(s, inputs(0, subs=[unit(rejected=(order,))]), None)
    assert a.key == "order_rejected:core:r1-core-7-0" and "min notional" in a.message
    assert run(s, inputs(0), None) == []


def test_proposal_waiting_reminds_every_cooldown():
    s = settings({"kind": "proposal_waiting", "cooldown": "6h"})
    prop = {
        "proposal_id": 3,
        "expires_at": T0 + pd.Timedelta(hours=4),
        "legs": [{"notional": 1200.0}, {"notional": -800.0}],
    }
    now = inputs(0, subs=[unit(proposals_waiting=(prop,))])
    [a] = run(s, now, None)
    assert a.numbers["notional"] == 2000.0 and a.numbers["legs"] == 2
    assert "trimtab approve 3" in a.action
    assert run(s, now, None, last=lambda k: T0 - pd.Timedelta(hours=5)) == []
    assert len(run(s, now, None, last=lambda k: T0 - pd.Timedelta(hours=6))) == 1
    # The runner's report gives only the number of legs.
    counted = inputs(0, subs=[unit(proposals_waiting=({"proposal_id": 4, "legs": 3},))])
    [b] = run(s, counted, None)
    assert b.numbers["legs"] == 3 and b.numbers["notional"] is None and "3 order(s)" in b.message
    # A transfer proposal has no legs: it is said as a transfer, approved whole.
    tx = {
        "proposal_id": 5,
        "kind": "transfer",
        "legs": [],
        "summary": "transfer core -> satellite: 2,500.00 USDT (top up)",
    }
    [c] = run(s, inputs(0, subs=[unit(proposals_waiting=(tx,))]), None)
    assert "a transfer between subaccounts" in c.message and "order(s)" not in c.message
    assert "core -> satellite: 2,500.00 USDT" in c.message
    assert c.action.startswith("trimtab proposals; then trimtab approve 5 (the whole transfer)")


# --------------------------------------------------------------------------- cooldown, targets


def test_cooldown_drops_a_repeated_crossing_by_key():
    s = settings({"kind": "risk_score", "level": 50, "cooldown": 3})  # 3 bars = 3 days
    fired: dict[str, pd.Timestamp] = {}

    def step(t, score, prev):
        now = inputs(t, subs=[unit(risk_score=score)])
        alerts = run(s, now, prev, last=fired.get)
        for a in alerts:
            fired[a.key] = a.timestamp
        return now, [a.key for a in alerts]

    p, k = step(0, 40.0, None)
    assert k == []
    p, k = step(1, 60.0, p)
    assert k == ["risk_score:core:up:50"]
    p, k = step(2, 45.0, p)
    assert k == ["risk_score:core:down:50"]  # another key
    p, k = step(3, 55.0, p)
    assert k == []  # up again 2 days after the last up: within 3 bars
    p, k = step(4, 40.0, p)
    assert k == []  # down within its cooldown too
    p, k = step(5, 70.0, p)
    assert k == ["risk_score:core:up:50"]  # 4 days after: past the cooldown


def test_targets_default_to_all_and_rules_name_theirs():
    s = parse_alert_settings(
        {
            "notify": {"phone": {"url_env": "PHONE_URL"}, "team": {"url_file": "/tmp/x"}},
            "rules": [
                {"kind": "breaker", "targets": ["team"]},
                {"kind": "breaker", "targets": ["phone"], "subaccount": "b"},
                {"kind": "drawdown"},
            ],
        }
    )
    halt = inputs(
        0,
        subs=[
            unit("core", trading_state="halted", previous_trading_state="active"),
            unit(
                "b", trading_state="halted", previous_trading_state="active", equity=5.0, peak=10.0
            ),
        ],
    )
    out = evaluate_pulse(s, halt, None, never)
    # b's breaker alert comes from both breaker rules: raised once, sent to both targets.
    assert [(a.rule, a.subaccount, t) for a, t in out] == [
        ("breaker", "core", ("team",)),
        ("breaker", "b", ("team", "phone")),
        ("drawdown", "b", ("phone", "team")),
    ]


def test_severity_override():
    s = settings({"kind": "drawdown", "level": 0.1, "severity": "critical"})
    [a] = run(s, inputs(1, subs=[unit(equity=80.0, peak=100.0)]), None)
    assert a.severity == "critical"


def test_default_settings_cover_every_kind():
    kinds = [r.kind for r in AlertSettings().rules]
    assert len(set(kinds)) == 9
    assert evaluate_pulse(AlertSettings(), inputs(0), None, never) == []


# --------------------------------------------------------------------------- inputs


def test_subaccount_pulse_from_a_review():
    review = {
        "risk_score": 63.2,
        "risk_level": "high",
        "summary": "risk 63/100 (high): BTCUSDT long 10x is 2.0% from liquidation",
        "recommendations": [
            {
                "action": "cap_position",
                "symbol": "ETHUSDT",
                "reason": "cap ETH",
                "expected_effect": "63 -> 50",
            },
            {
                "action": "add_margin",
                "symbol": "BTCUSDT",
                "reason": "add 500 USDT of margin",
                "expected_effect": "liquidation 6 daily moves away",
            },
        ],
        "positions": [
            {
                "subaccount": "core",
                "symbol": "BTCUSDT",
                "kind": "perp",
                "side": "long",
                "price": 40000.0,
                "liquidation_price": 39200.0,
                "liquidation_distance_pct": 0.02,
                "liquidation_distance_vols": 0.8,
            },
            {"subaccount": "core", "symbol": "ETHUSDT", "kind": "spot", "side": "long"},
        ],
    }
    prev = unit(stale={"ETHUSDT": 2})
    u = subaccount_pulse(
        "core",
        review=review,
        trading_state="active",
        equity=9000.0,
        peak=10000.0,
        positions={"BTCUSDT": 0.1, "ETHUSDT": 2.0, "SOLUSDT": 0.0},
        stale=["ETHUSDT"],
        previous=prev,
    )
    assert u.risk_score == 63.2 and u.top_action == "cap ETH (63 -> 50)"
    assert list(u.perps) == ["BTCUSDT"] and u.perps["BTCUSDT"].distance_vols == 0.8
    assert u.perps["BTCUSDT"].action == "add 500 USDT of margin (liquidation 6 daily moves away)"
    assert u.held == ("BTCUSDT", "ETHUSDT") and u.stale == {"ETHUSDT": 3}
    assert u.drawdown == pytest.approx(0.1)
    assert subaccount_pulse("core", review=None).risk_score is None


def test_state_round_trip_and_carry():
    now = inputs(
        1,
        subs=[unit(risk_score=None, stale={"BTCUSDT": 2}, equity=1.0, peak=2.0)],
        account=SubaccountPulse(ACCOUNT, trading_state="active", risk_score=20.0),
        assets={"BTCUSDT": AssetReading(1.2, None)},
    )
    before = inputs(0, subs=[unit(risk_score=55.0, perps=perp(4.0))])
    carried = now.carried(before)
    assert carried.subaccounts["core"].risk_score == 55.0
    assert carried.subaccounts["core"].perps == perp(4.0)
    assert carried.account.risk_score == 20.0
    back = PulseInputs.from_state(carried.to_state())
    assert back.to_state() == carried.to_state()
    assert back.subaccounts["core"].perps["BTCUSDT"].distance_vols == 4.0
    assert back.timestamp == now.timestamp


def test_asset_readings_against_a_hand_computation(make_panel):
    rng = np.random.default_rng(7)
    n = 700
    market = rng.normal(0, 0.02, n)
    r_btc = market + rng.normal(0, 0.01, n)
    r_btc[-10:] *= 3.0  # a volatile last fortnight
    r_eth = market + rng.normal(0, 0.01, n)
    r_sol = rng.normal(0, 0.02, n)
    closes = {
        s: list(100 * np.cumprod(1 + r))
        for s, r in (("BTCUSDT", r_btc), ("ETHUSDT", r_eth), ("SOLUSDT", r_sol))
    }
    panel = make_panel(closes)
    bar = panel.index[-1]
    out = asset_readings(panel, ["BTCUSDT", "ETHUSDT"], bar)
    assert set(out) == {"BTCUSDT", "ETHUSDT"}
    rets = panel.close["BTCUSDT"].pct_change().to_numpy()
    want = np.std(rets[-10:], ddof=1) / np.std(rets[-90:], ddof=1)
    assert out["BTCUSDT"].volatility_ratio == pytest.approx(want, rel=1e-9)
    assert out["BTCUSDT"].volatility_ratio > 2.0
    z = out["ETHUSDT"].correlation_shift_z
    assert z is not None and math.isfinite(z)
    # Causal: readings at an earlier bar do not change when later bars exist.
    cut = make_panel({s: v[:650] for s, v in closes.items()})
    early = asset_readings(panel, ["ETHUSDT"], panel.index[649])["ETHUSDT"]
    assert early == asset_readings(cut, ["ETHUSDT"], cut.index[-1])["ETHUSDT"]


def test_config_errors_are_readable():
    with pytest.raises(ConfigError) as err:
        parse_alert_settings({"notify": {"phone": {"url": "json://127.0.0.1/t0ps3cret"}}}, "p.yaml")
    text = str(err.value)
    assert "url_env" in text and "url_file" in text and "t0ps3cret" not in text
    with pytest.raises(ConfigError, match="target 'pager' is not under notify"):
        parse_alert_settings({"rules": [{"kind": "breaker", "targets": ["pager"]}]})
    with pytest.raises(ConfigError, match="not a duration"):
        parse_alert_settings({"cooldown": "soon"})
    with pytest.raises(ConfigError, match=r"rules\[0\].*daily_moves.*must be > 0"):
        parse_alert_settings({"rules": [{"kind": "liquidation_distance", "daily_moves": -1}]})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_alert_settings({"rules": [{"kind": "drawdown", "levle": 0.2}]})
