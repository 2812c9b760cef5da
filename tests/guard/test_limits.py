import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from trimtab.domain import Order, Side, spot
from trimtab.guard.breakers import CircuitBreaker
from trimtab.guard.limits import ABSURD_WEIGHT, DailyTurnover, LimitGuard, Limits

from ._support import T0, buy, buy_base, decide, make_obs, rules, sell

SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
CLOSES = (50_000.0, 2_500.0, 100.0)


def obs(**kw):
    return make_obs(SYMS, kw.pop("closes", CLOSES), **kw)


# --- Limits ------------------------------------------------------------------------------


def test_defaults_suit_a_spot_long_only_book():
    lim = Limits()
    assert (lim.max_gross_leverage, lim.max_net_exposure) == (1.0, 1.0)
    assert (lim.max_asset_weight, lim.max_cluster_weight) == (1.0, 1.0)
    assert lim.max_order_notional is None and lim.max_daily_turnover is None
    assert lim.min_cash == 0.0 and lim.max_drawdown == 0.5
    assert lim.allowed_symbols is None and lim.allowed_venues is None


@pytest.mark.parametrize(
    "kw",
    [
        {"max_asset_weight": -0.1},
        {"max_asset_weight": 0},
        {"max_gross_leverage": float("inf")},
        {"max_net_exposure": float("nan")},
        {"max_order_notional": 0},
        {"max_daily_turnover": -1},
        {"min_cash": 1.0},
        {"min_cash": -0.01},
        {"max_drawdown": 0},
        {"max_drawdown": 1},
        {"allowed_symbols": ["BTCUSDT", " "]},
        {"max_cluster_wieght": 0.5},
    ],
)
def test_limits_reject_bad_values(kw):
    with pytest.raises(ValidationError):
        Limits(**kw)


def test_limits_are_immutable():
    lim = Limits()
    with pytest.raises(ValidationError):
        lim.max_asset_weight = 5.0
    guard = LimitGuard(lim)
    with pytest.raises(AttributeError):
        guard.limits = Limits(max_asset_weight=5.0)


def test_symbols_match_with_or_without_slash():
    lim = Limits(allowed_symbols=["btc/usdt"])
    assert lim.symbol_allowed("BTCUSDT") and lim.symbol_allowed("BTC/USDT")
    assert not lim.symbol_allowed("ETHUSDT")


# --- check: rejections ---------------------------------------------------------------------


def test_valid_targets_pass_unchanged():
    d = decide(0.5, 0.3, 0.2)
    assert LimitGuard().check(d, obs()) is d


def test_hold_passes_unchanged():
    from trimtab.domain.decisions import Decision

    d = Decision.hold()
    assert LimitGuard(Limits(max_asset_weight=0.1)).check(d, obs()) is d


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (float("nan"), "non_finite"),
        (float("inf"), "non_finite"),
        (-float("inf"), "non_finite"),
        (-0.01, "negative"),
        (ABSURD_WEIGHT * 1.01, "absurd"),
        (1e308, "absurd"),
    ],
)
def test_broken_targets_reject_the_decision(bad, rule):
    out = LimitGuard().check(decide(0.2, bad, 0.1), obs())
    assert out.targets is None
    assert out.action == "rejected"
    assert [(g.rule, g.symbols) for g in out.guard] == [(rule, ("ETHUSDT",))]
    assert out.reasons[-1].code == "guard_rejected"


def test_wrong_shape_rejected():
    out = LimitGuard().check(decide(0.2, 0.1), obs())
    assert out.targets is None and rules(out.guard) == ["shape"]


def test_venue_not_allowed_rejects():
    lim = Limits(allowed_venues=["binance"])
    assert LimitGuard(lim, venue="Binance").check(decide(0.1, 0, 0), obs()).targets is not None
    out = LimitGuard(lim, venue="okx").check(decide(0.1, 0, 0), obs())
    assert out.targets is None and rules(out.guard) == ["allowed_venues"]


# --- check: each limit ---------------------------------------------------------------------


def test_unlisted_asset_gets_no_target():
    out = LimitGuard().check(decide(0.3, 0.3, 0.3), obs(closes=(50_000, np.nan, 100)))
    np.testing.assert_allclose(out.targets, [0.3, 0.0, 0.3])
    assert rules(out.guard) == ["not_listed"]


def test_disallowed_symbol_set_to_zero():
    guard = LimitGuard(Limits(allowed_symbols=["BTC/USDT", "SOLUSDT"]))
    out = guard.check(decide(0.3, 0.45, 0.2), obs())
    np.testing.assert_allclose(out.targets, [0.3, 0.0, 0.2])
    (action,) = out.guard
    assert (action.rule, action.symbols, action.before, action.after) == (
        "allowed_symbols",
        ("ETHUSDT",),
        0.45,
        0.0,
    )


def test_asset_weight_clipped():
    out = LimitGuard(Limits(max_asset_weight=0.4)).check(decide(0.7, 0.2, 0.1), obs())
    np.testing.assert_allclose(out.targets, [0.4, 0.2, 0.1])
    (action,) = out.guard
    assert (action.rule, action.symbols, action.before, action.after) == (
        "max_asset_weight",
        ("BTCUSDT",),
        0.7,
        0.4,
    )


def test_cluster_scaled_pro_rata_and_lone_assets_are_their_own_cluster():
    guard = LimitGuard(Limits(max_cluster_weight=0.5), clusters={"ETH/USDT": "l1", "SOLUSDT": "l1"})
    out = guard.check(decide(0.3, 0.4, 0.2), obs())
    # ETH+SOL = 0.6 -> 0.5, in proportion 2:1; BTC alone is under 0.5.
    np.testing.assert_allclose(out.targets, [0.3, 0.4 * 0.5 / 0.6, 0.2 * 0.5 / 0.6])
    (action,) = out.guard
    assert action.rule == "max_cluster_weight" and action.symbols == ("ETHUSDT", "SOLUSDT")
    assert action.before == pytest.approx(0.6) and action.after == 0.5
    out = guard.check(decide(0.6, 0.1, 0.1), obs())
    np.testing.assert_allclose(out.targets, [0.5, 0.1, 0.1])


def test_gross_then_net_scale_everything():
    lim = Limits(max_gross_leverage=0.8, max_net_exposure=0.6)
    out = LimitGuard(lim).check(decide(0.5, 0.3, 0.2), obs())
    np.testing.assert_allclose(out.targets, [0.3, 0.18, 0.12])
    assert rules(out.guard) == ["max_gross_leverage", "max_net_exposure"]
    assert (out.guard[0].before, out.guard[0].after) == (pytest.approx(1.0), 0.8)
    assert (out.guard[1].before, out.guard[1].after) == (pytest.approx(0.8), 0.6)


def test_min_cash_keeps_a_buffer():
    out = LimitGuard(Limits(min_cash=0.1)).check(decide(0.5, 0.3, 0.15), obs())
    np.testing.assert_allclose(out.targets, np.array([0.5, 0.3, 0.15]) * 0.9 / 0.95)
    assert rules(out.guard) == ["min_cash"]
    assert out.guard[0].after == pytest.approx(0.9)


def test_spot_book_cannot_borrow_even_with_leverage_allowed():
    lim = Limits(max_gross_leverage=3, max_net_exposure=3, max_asset_weight=2, max_cluster_weight=2)
    out = LimitGuard(lim).check(decide(1.5, 0.5, 0), obs())
    np.testing.assert_allclose(out.targets, [0.75, 0.25, 0])
    assert rules(out.guard) == ["spot_cash"]
    margin = LimitGuard(lim, spot=False).check(decide(1.5, 0.5, 0), obs())
    np.testing.assert_allclose(margin.targets, [1.5, 0.5, 0])


def test_limits_apply_in_order_and_compose():
    lim = Limits(
        allowed_symbols=["BTCUSDT", "ETHUSDT"],
        max_asset_weight=0.5,
        max_cluster_weight=0.6,
        max_gross_leverage=0.9,
        min_cash=0.2,
    )
    guard = LimitGuard(lim, clusters={"BTCUSDT": "majors", "ETHUSDT": "majors"})
    out = guard.check(decide(0.9, 0.3, 0.4), obs())
    # SOL banned -> 0; BTC clipped to 0.5; majors 0.8 -> 0.6 (0.375, 0.225); gross 0.6 ok;
    # cash: 0.6 <= 0.8 ok.
    np.testing.assert_allclose(out.targets, [0.375, 0.225, 0.0])
    assert rules(out.guard) == ["allowed_symbols", "max_asset_weight", "max_cluster_weight"]


def test_check_is_idempotent_and_never_raises_a_target():
    lim = Limits(
        max_asset_weight=0.35, max_cluster_weight=0.5, max_gross_leverage=0.9, min_cash=0.15
    )
    guard = LimitGuard(lim, clusters={"ETHUSDT": "alt", "SOLUSDT": "alt"})
    d = decide(0.6, 0.5, 0.3)
    once = guard.check(d, obs())
    twice = guard.check(once, obs())
    assert twice is once
    assert np.all(once.targets <= d.targets)


# --- overrides -----------------------------------------------------------------------------


def test_override_swaps_limits_and_keeps_an_audit_trail():
    journal = []
    original = Limits(max_asset_weight=0.5)
    guard = LimitGuard(original, on_override=journal.append)
    rec = guard.override(
        "max_asset_weight", 0.3, by="ana", reason="concentration review", at="2024-03-01 10:00"
    )
    assert (rec.key, rec.old, rec.new, rec.by) == ("max_asset_weight", 0.5, 0.3, "ana")
    assert rec.at == pd.Timestamp("2024-03-01 10:00", tz="UTC")
    assert original.max_asset_weight == 0.5  # never mutated
    assert guard.limits.max_asset_weight == 0.3
    assert guard.overrides == (rec,) and journal == [rec]
    np.testing.assert_allclose(guard.check(decide(0.4, 0, 0), obs()).targets, [0.3, 0, 0])
    guard.override("allowed_symbols", ["BTCUSDT"], by="ana", reason="x", at=T0)
    assert guard.overrides[-1].to_dict()["new"] == ["BTCUSDT"]
    assert len(guard.overrides) == 2


@pytest.mark.parametrize(
    ("key", "value", "by", "reason"),
    [
        ("max_asset_weight", -1, "ana", "r"),
        ("max_asset_weight", float("nan"), "ana", "r"),
        ("max_leverage", 2, "ana", "r"),
        ("max_asset_weight", 0.2, " ", "r"),
        ("max_asset_weight", 0.2, "ana", ""),
    ],
)
def test_bad_overrides_change_nothing(key, value, by, reason):
    guard = LimitGuard()
    with pytest.raises(ValueError):
        guard.override(key, value, by=by, reason=reason, at=T0)
    assert guard.overrides == () and guard.limits == Limits()


def test_breaker_reads_overridden_kill_level_from_the_guard():
    guard = LimitGuard(Limits(max_drawdown=0.3))
    breaker = CircuitBreaker(limits=guard)
    assert breaker.kill_level() == 0.3
    guard.override("max_drawdown", 0.2, by="ana", reason="tighter", at=T0)
    assert breaker.kill_level() == 0.2


# --- check_orders --------------------------------------------------------------------------

PRICES = np.array(CLOSES)


def test_order_notional_scaled_down_keeping_the_id():
    guard = LimitGuard(Limits(max_order_notional=10_000))
    b, s, small = buy("ETHUSDT", 25_000), sell("BTCUSDT", 0.6), buy("SOLUSDT", 5_000)
    out, actions = guard.check_orders([b, s, small], obs(quantities=(1, 0, 0)), PRICES, 0.0)
    assert [o.id for o in out] == [b.id, s.id, small.id]
    assert out[0].quote_quantity == pytest.approx(10_000)
    assert out[1].quantity == pytest.approx(0.2)  # 0.6 BTC = 30k -> 10k
    assert out[2] is small
    assert rules(actions) == ["max_order_notional", "max_order_notional"]
    assert (actions[1].before, actions[1].after) == (pytest.approx(30_000), 10_000)


def test_turnover_budget_shared_pro_rata():
    guard = LimitGuard(Limits(max_daily_turnover=0.5))
    o = obs(cash=100_000)  # equity 100k -> 50k a day
    orders = [buy("ETHUSDT", 20_000), buy("SOLUSDT", 40_000)]
    out, actions = guard.check_orders(orders, o, PRICES, traded_today=20_000)
    # 30k left for 60k asked: everything halves.
    assert [x.quote_quantity for x in out] == pytest.approx([10_000, 20_000])
    (a,) = actions
    assert a.rule == "max_daily_turnover"
    assert (a.before, a.after) == (pytest.approx(0.8), pytest.approx(0.5))
    out, actions = guard.check_orders(orders, o, PRICES, traded_today=50_000)
    assert out == [] and rules(actions) == ["max_daily_turnover", "order_dropped", "order_dropped"]


def test_order_cap_then_turnover():
    guard = LimitGuard(Limits(max_order_notional=15_000, max_daily_turnover=0.2))
    orders = [buy("ETHUSDT", 30_000), buy("SOLUSDT", 15_000)]
    out, actions = guard.check_orders(orders, obs(), PRICES, 0.0)
    # 30k -> 15k; then 30k asked, 20k budget -> x 2/3.
    assert [x.quote_quantity for x in out] == pytest.approx([10_000, 10_000])
    assert rules(actions) == ["max_order_notional", "max_daily_turnover"]


def test_disallowed_symbols_can_only_be_sold_down():
    guard = LimitGuard(Limits(allowed_symbols=["BTCUSDT"]))
    o = obs(quantities=(0, 2, 0))
    ok, too_much, add = sell("ETHUSDT", 2), sell("ETHUSDT", 3), buy("ETHUSDT", 100)
    out, actions = guard.check_orders([ok, too_much, add, buy("BTCUSDT", 100)], o, PRICES, 0)
    assert [x.symbol for x in out] == ["ETHUSDT", "BTCUSDT"] and out[0] is ok
    assert rules(actions) == ["allowed_symbols", "allowed_symbols"]


def test_unknown_symbol_unpriced_order_and_venue_blocked():
    guard = LimitGuard()
    prices = np.array([50_000, np.nan, 100])
    out, actions = guard.check_orders(
        [buy("XRPUSDT", 10), sell("ETHUSDT", 1), buy("ETHUSDT", 10), buy("SOLUSDT", 10)],
        obs(),
        prices,
        0,
    )
    assert [x.symbol for x in out] == ["SOLUSDT"] and out[0].quote_quantity == 10
    assert rules(actions) == ["unknown_symbol", "no_price", "no_price"]
    venue_guard = LimitGuard(Limits(allowed_venues=["binance"]), venue="kraken")
    out, actions = venue_guard.check_orders([buy("BTCUSDT", 10)], obs(), PRICES, 0)
    assert out == [] and rules(actions) == ["allowed_venues"]


def test_scaled_quantities_round_down_to_the_lot():
    guard = LimitGuard(Limits(max_order_notional=10_000))
    inst = {s: spot(s, lot_size=0.001) for s in SYMS}
    out, _ = guard.check_orders(
        [sell("BTCUSDT", 1.0), buy_base("ETHUSDT", 10.0)],
        obs(quantities=(1, 0, 0)),
        PRICES,
        0,
        instrument=inst.__getitem__,
    )
    assert out[0].quantity == 0.2  # 10k / 50k
    assert out[1].quantity == 4.0
    assert "scaled" in out[0].reason


def test_daily_turnover_resets_at_midnight_utc():
    t = DailyTurnover()
    t.record(pd.Timestamp("2024-03-01 22:00", tz="UTC"), 1_000)
    t.record(pd.Timestamp("2024-03-01 23:00", tz="UTC"), -500)
    assert t.today(pd.Timestamp("2024-03-01 23:59", tz="UTC")) == 1_500
    # 01:00 in UTC+3 is 22:00 UTC the day before: same UTC day.
    assert t.today(pd.Timestamp("2024-03-02 01:00", tz="Etc/GMT-3")) == 1_500
    assert t.today(pd.Timestamp("2024-03-02 00:00", tz="UTC")) == 0.0


def test_buys_cannot_breach_cash_when_the_sell_that_paid_for_them_is_missing():
    # 60% in BTC, 40% cash; the plan's BTC sell was skipped, only the ETH buy is left.
    o = obs(quantities=(1.2, 0, 0), cash=40_000)
    guard = LimitGuard(Limits(min_cash=0.1))
    out, actions = guard.check_orders([buy("ETHUSDT", 40_000)], o, PRICES, 0)
    assert out[0].quote_quantity == pytest.approx(30_000)  # invested 90%, 10% cash kept
    assert rules(actions) == ["min_cash"]
    guard = LimitGuard(Limits(max_gross_leverage=0.8))
    out, actions = guard.check_orders([buy("ETHUSDT", 40_000)], o, PRICES, 0)
    assert out[0].quote_quantity == pytest.approx(20_000)
    assert rules(actions) == ["max_gross_leverage"]


def test_buys_fit_what_the_sells_leave():
    # 60% in BTC; sell 10k of it (50% left) and buy 40k of ETH under a 0.7 gross cap:
    # 0.5 + x <= 0.7, so the buy is cut to 20k (it alone would pass every order limit).
    o = obs(quantities=(1.2, 0, 0), cash=40_000)
    guard = LimitGuard(Limits(max_order_notional=50_000, max_gross_leverage=0.7))
    out, actions = guard.check_orders([sell("BTCUSDT", 0.2), buy("ETHUSDT", 40_000)], o, PRICES, 0)
    assert out[0].quantity == 0.2
    assert out[1].quote_quantity == pytest.approx(20_000)
    assert rules(actions) == ["max_gross_leverage"]


# --- check_orders fails closed on numbers it cannot compare --------------------------------


def test_an_overflowing_order_is_blocked_and_the_rest_of_the_plan_still_checked():
    # 1e308 BTC at 50k is an infinite notional. Before the fix, capping it made its value
    # inf * 0 = NaN, the turnover total NaN, and every later check passed: 18k of buys
    # went out against a 10k daily budget.
    guard = LimitGuard(Limits(max_order_notional=20_000, max_daily_turnover=0.1))
    o = obs(quantities=(1, 0, 0), cash=50_000)  # equity 100k -> 10k a day
    huge = Order("BTCUSDT", Side.SELL, quantity=1e308, reason="hostile")
    out, actions = guard.check_orders(
        [huge, buy("ETHUSDT", 9_000), buy("SOLUSDT", 9_000)], o, PRICES, 0.0
    )
    assert [x.symbol for x in out] == ["ETHUSDT", "SOLUSDT"]
    assert sum(x.quote_quantity for x in out) == pytest.approx(10_000)
    assert rules(actions) == ["non_finite", "max_daily_turnover"]
    assert actions[0].symbols == ("BTCUSDT",)


@pytest.mark.parametrize("traded", [float("nan"), float("inf")])
def test_unmeasurable_turnover_blocks_the_plan(traded):
    guard = LimitGuard(Limits(max_daily_turnover=0.5))
    out, actions = guard.check_orders([buy("ETHUSDT", 1_000)], obs(), PRICES, traded)
    assert out == []
    assert rules(actions)[0] == "max_daily_turnover"


def test_unvaluable_book_blocks_the_buys():
    guard = LimitGuard(Limits(min_cash=0.1))
    o = obs(quantities=(float("inf"), 0, 0))
    out, actions = guard.check_orders([buy("ETHUSDT", 1_000)], o, PRICES, 0.0)
    assert out == [] and rules(actions) == ["non_finite", "order_dropped"]


@pytest.mark.parametrize("cap", [1.0, 10.0])
def test_a_sell_larger_than_the_holding_funds_no_phantom_buys(cap):
    # 0.2 BTC (10k) held and 2k cash: equity 12k. The plan sells 2 BTC (100k at the
    # close) and buys 90k of ETH; only 10k can be raised, so min_cash 10% (1.2k) leaves
    # 2k + 10k - 1.2k = 10.8k to buy. Before the fix the phantom 90k of sales either
    # funded a 30k buy (under a 10x gross cap) or, as a -7.5 weight, blocked every buy.
    o = obs(quantities=(0.2, 0, 0), cash=2_000.0)
    caps = dict(max_gross_leverage=cap, max_net_exposure=cap, max_asset_weight=cap)
    guard = LimitGuard(Limits(min_cash=0.1, max_cluster_weight=cap, **caps))
    out, actions = guard.check_orders([sell("BTCUSDT", 2.0), buy("ETHUSDT", 90_000)], o, PRICES, 0)
    assert out[1].quote_quantity == pytest.approx(10_800)
    (action,) = actions
    assert "min_cash" in action.message
