import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from trimtab.guard.breakers import (
    BreakerBoard,
    BreakerConfig,
    CircuitBreaker,
    TradingState,
    filter_orders,
)
from trimtab.guard.limits import Limits

from ._support import buy, buy_base, decide, make_obs, sell

A, R, H = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED

# Only the trigger under test is on, unless a test turns others on.
QUIET = {"daily_loss_limit": None, "loss_streak": None, "stale_data_bars": None}


class Feed:
    """Drives a breaker bar by bar (hourly), tracking the peak and the UTC day's start."""

    def __init__(self, breaker: CircuitBreaker, start: str = "2024-03-01 00:00") -> None:
        self.b = breaker
        self.t = pd.Timestamp(start, tz="UTC")
        self.peak = None
        self.day_start = None
        self.day = None
        self.states: list[TradingState] = []

    def __call__(self, *equities, fresh=True, errors=0):
        changes = []
        for eq in equities:
            if self.t.normalize() != self.day:
                self.day, self.day_start = self.t.normalize(), eq
            self.peak = eq if self.peak is None else max(self.peak, eq)
            changes += self.b.update(self.t, eq, self.peak, self.day_start, fresh, errors)
            self.states.append(self.b.state)
            self.t += pd.Timedelta("1h")
        return changes


def breaker(limits=None, **cfg):
    return CircuitBreaker(BreakerConfig(**{**QUIET, **cfg}), limits or Limits(max_drawdown=0.2))


def test_config_defaults_and_validation():
    cfg = BreakerConfig()
    assert cfg.daily_loss_limit == 0.10 and cfg.loss_streak == 10
    assert cfg.stale_data_bars == 3 and cfg.max_exchange_errors == 5
    assert cfg.cooldown == 5 and cfg.auto_resume is False
    assert len(cfg.resume_conditions) == 5 and cfg.resume_drawdown is None
    for bad in (
        {"daily_loss_limit": 0},
        {"loss_streak": 0},
        {"cooldown": -1},
        {"resume_conditions": ["moon"]},
        {"resume_drawdown": 1.0},
        {"cooldwn": 3},
    ):
        with pytest.raises(ValidationError):
            BreakerConfig(**bad)


def test_drawdown_at_the_kill_level_halts_and_stays_halted():
    b = breaker()
    feed = Feed(b)
    assert feed(100, 110, 95) == []
    (change,) = feed(88)  # 88 / 110 = 0.8: a 20% drawdown
    assert (change.old, change.new, change.trigger) == (A, H, "max_drawdown")
    assert change.values["drawdown"] == pytest.approx(0.2)
    assert "20.00%" in change.message
    # No auto_resume: a full recovery does not lift a halt.
    assert feed(100, 120, 130, 140, 150, 160) == []
    assert b.state is H


def test_auto_resume_needs_the_cooldown_and_the_drawdown_recovered():
    b = breaker(auto_resume=True, cooldown=3, resume_drawdown=0.1)
    feed = Feed(b)
    feed(100, 75)  # 25% drawdown: halt
    assert b.state is H
    feed(76, 77, 78)  # cooldown over, but the drawdown is still 22%
    assert b.state is H
    (change,) = feed(92)
    assert (change.old, change.new, change.trigger) == (H, A, "resume_conditions")
    assert feed.states == [A, H, H, H, H, A]


def test_default_resume_level_is_eighty_percent_of_the_kill_level():
    b = breaker(auto_resume=True, cooldown=0)
    assert b.resume_level() == pytest.approx(0.16)
    feed = Feed(b)
    feed(100, 80, 83)  # 17% drawdown: not yet
    assert b.state is H
    feed(85)  # 15%
    assert b.state is A


def test_daily_loss_reduces_then_the_new_day_resumes():
    b = breaker(daily_loss_limit=0.05, cooldown=2)
    feed = Feed(b, start="2024-03-01 19:00")
    feed(100, 99)
    (change,) = feed(95)  # 21:00, 5% below the day's start
    assert (change.new, change.trigger) == (R, "daily_loss")
    feed(95, 95)  # 22:00, 23:00: cooldown over, still 5% down today
    assert b.state is R
    (change,) = feed(95)  # 00:00: a new UTC day starts at 95
    assert (change.old, change.new) == (R, A)
    assert feed.states == [A, A, R, R, R, A]


def test_loss_streak_counts_only_consecutive_losses():
    b = breaker(loss_streak=3, cooldown=1)
    feed = Feed(b)
    feed(100, 99, 98, 98, 97, 96)  # the flat bar breaks the first streak
    assert b.state is A
    (change,) = feed(95)
    assert change.trigger == "loss_streak" and change.values["loss_streak"] == 3
    feed(94)  # still losing: stays REDUCING, no new change
    assert b.state is R and len(b.changes) == 1
    feed(95)  # a winning bar ends the streak; cooldown of 1 bar is met
    assert b.state is A


def test_stale_data_reduces_and_fresh_data_resumes():
    b = breaker(stale_data_bars=2, cooldown=1)
    feed = Feed(b)
    feed(100)
    feed(100, fresh=False)
    assert b.state is A
    (change,) = feed(100, fresh=False)
    assert (change.new, change.trigger) == (R, "stale_data")
    feed(100, fresh=False)
    assert b.state is R
    feed(100)
    assert b.state is A


def test_exchange_errors_halt_and_auto_resume_when_they_stop():
    b = breaker(max_exchange_errors=3, auto_resume=True, cooldown=1)
    feed = Feed(b)
    feed(100, errors=1)
    feed(100, errors=2)
    (change,) = feed(100, errors=3)
    assert (change.new, change.trigger) == (H, "exchange_errors")
    feed(100, errors=4)
    assert b.state is H
    feed(100, errors=0)
    assert b.state is A


def test_only_the_named_resume_conditions_are_required():
    # no_loss_streak is not named, so a streak still running does not keep it REDUCING.
    b = breaker(stale_data_bars=1, loss_streak=2, resume_conditions=["data_fresh"], cooldown=0)
    feed = Feed(b)
    feed(100)
    feed(99, fresh=False)  # stale -> REDUCING
    feed(98)  # a 2-bar loss streak fires while REDUCING: the cooldown restarts
    assert b.state is R
    feed(97)
    assert b.state is A and b.metrics["loss_streak"] == 3
    # With every condition named (the default), the same path waits for the streak to end.
    b = breaker(stale_data_bars=1, loss_streak=2, cooldown=0)
    feed = Feed(b)
    feed(100)
    feed(99, fresh=False)
    feed(98, 97)
    assert b.state is R
    feed(98)
    assert b.state is A


def test_reducing_escalates_to_halted_and_halted_ignores_reducing_triggers():
    b = breaker(daily_loss_limit=0.05, loss_streak=2)
    feed = Feed(b)
    feed(100, 94)
    assert b.state is R
    (change,) = feed(79)  # 21% from the peak
    assert (change.old, change.new, change.trigger) == (R, H, "max_drawdown")
    feed(78, 77)
    assert b.state is H and len(b.changes) == 2


def test_a_new_trigger_restarts_the_cooldown():
    b = breaker(stale_data_bars=1, loss_streak=2, cooldown=3, resume_conditions=[])
    feed = Feed(b)
    feed(100, fresh=False)  # REDUCING
    feed(100, 99)  # quiet 1, 2
    feed(98)  # a 2-bar loss streak: a new trigger, the cooldown restarts
    feed(98, 98)  # quiet 1, 2
    assert b.state is R
    feed(98)  # quiet 3
    assert b.state is A
    assert feed.states == [R, R, R, R, R, R, A]


def test_human_resume_is_recorded_and_rearms_the_kill():
    b = breaker()
    feed = Feed(b)
    feed(100, 75)  # halted at 25% drawdown
    change = b.resume("ana", "reviewed, market stable", pd.Timestamp("2024-03-01 02:30"))
    assert (change.old, change.new, change.trigger, change.by) == (H, A, "human_resume", "ana")
    assert change.at.tz is not None and "reviewed" in change.message
    assert change.values["rearmed_peak"] == 75
    feed(75, 80, 70)  # 12.5% below 80, the high since the resume
    assert b.state is A
    (change,) = feed(64)  # 20% below 80
    assert change.trigger == "max_drawdown" and change.values["drawdown"] == pytest.approx(0.2)


def test_resume_without_drawdown_keeps_the_normal_kill():
    b = breaker(max_exchange_errors=2)
    feed = Feed(b)
    feed(100, 90, errors=2)
    assert b.state is H
    change = b.resume("ana", "exchange back", feed.t, to=R)
    assert change.new is R and "rearmed_peak" not in change.values
    feed(80)  # 20% below the old peak of 100
    assert b.state is H


def test_human_actions_validate():
    b = breaker()
    with pytest.raises(ValueError):
        b.resume("ana", "nothing to resume", pd.Timestamp("2024-03-01"))
    change = b.halt("ana", "kill switch", pd.Timestamp("2024-03-01"))
    assert (change.new, change.trigger) == (H, "human_halt")
    with pytest.raises(ValueError):
        b.halt("ana", "again", pd.Timestamp("2024-03-01"))
    with pytest.raises(ValueError):
        b.resume("", "why", pd.Timestamp("2024-03-01"))
    with pytest.raises(ValueError):
        b.resume("ana", "up", pd.Timestamp("2024-03-01"), to=H)
    assert b.changes[-1].to_dict()["by"] == "ana"


def test_bad_equity_halts_with_its_own_trigger():
    b = breaker()
    feed = Feed(b)
    feed(100)
    change = b.update(feed.t, float("nan"), 100, 100, True, 0)[0]
    assert (change.new, change.trigger) == (H, "bad_equity")
    assert change.to_dict()["values"]["drawdown"] is None  # JSON-ready


def test_a_condition_that_stays_true_fires_once():
    b = breaker(loss_streak=2, cooldown=100)
    feed = Feed(b)
    feed(100, 99, 98, 97, 96, 95, 94)
    assert [c.trigger for c in b.changes] == ["loss_streak"]


# --- what may go out -----------------------------------------------------------------------


def test_active_lets_everything_through():
    orders = [buy("BTCUSDT", 100), sell("ETHUSDT", 5)]
    assert filter_orders(A, orders, {}, {}) == (orders, [])


def test_reducing_passes_only_reductions_within_the_position():
    pos = {"BTCUSDT": 2.0, "ETHUSDT": -3.0, "SOLUSDT": 0.0}
    px = {"BTCUSDT": 50_000.0, "ETHUSDT": 2_000.0, "SOLUSDT": 100.0}
    s1, s2, s3 = sell("BTCUSDT", 1.0), sell("BTCUSDT", 1.5), sell("BTCUSDT", 1.0)
    add, cover, over, sol = (
        buy("BTCUSDT", 10),
        buy("ETHUSDT", 4_000),  # 2 ETH of a 3 ETH short
        buy_base("ETHUSDT", 1.5),  # 1 ETH left to cover
        sell("SOLUSDT", 1),
    )
    allowed, blocked = filter_orders(R, [s1, s2, s3, add, cover, over, sol], pos, px)
    assert allowed == [s1, s3, cover]
    assert [b.order for b in blocked] == [s2, add, over, sol]
    assert all(b.reason.startswith("REDUCING") for b in blocked)


def test_halted_passes_only_full_closes():
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    qty = np.array([2.0, -3.0, 5.0])
    px = np.array([50_000.0, 2_000.0, 100.0])
    close_btc, close_eth, part_sol, quote_cover = (
        sell("BTCUSDT", 2.0),
        buy_base("ETHUSDT", 3.0),
        sell("SOLUSDT", 4.0),
        buy("ETHUSDT", 6_000),
    )
    orders = [close_btc, quote_cover, close_eth, part_sol, sell("BTCUSDT", 2.0)]
    allowed, blocked = filter_orders(H, orders, qty, px, symbols)
    assert allowed == [close_btc, close_eth]
    assert len(blocked) == 3
    with pytest.raises(ValueError):
        filter_orders(H, orders, qty, px)


def test_breaker_restricts_targets_to_its_state():
    o = make_obs(("BTCUSDT", "ETHUSDT"), (50_000, 2_000), quantities=(1, 10), cash=30_000)
    # equity 100k: weights 0.5 and 0.2
    b = breaker()
    d = decide(0.7, 0.1)
    assert b.check(d, o) is d
    b.halt("ana", "test", o.timestamp)
    out = b.check(decide(0.0, 0.1), o)
    np.testing.assert_allclose(out.targets, [0.0, 0.2])
    assert out.guard[-1].rule == "breaker_halted" and out.guard[-1].symbols == ("ETHUSDT",)
    b.resume("ana", "test", o.timestamp, to=R)
    out = b.check(decide(0.7, 0.1), o)
    np.testing.assert_allclose(out.targets, [0.5, 0.1])
    out = b.check(decide(float("nan"), 0.1), o)
    np.testing.assert_allclose(out.targets, [0.5, 0.1])  # a broken target holds


# --- the board -----------------------------------------------------------------------------


def test_a_halted_subaccount_does_not_stop_the_others():
    board = BreakerBoard(BreakerConfig(**QUIET), Limits(max_drawdown=0.2), ["trend", "carry"])
    t = pd.Timestamp("2024-03-01", tz="UTC")
    board["trend"].update(t, 70, 100, 100, True, 0)
    assert board.state("trend") is H
    assert board.state("carry") is A and board.state() is A
    sells = [sell("BTCUSDT", 1)]
    assert board.filter_orders("carry", sells, {"BTCUSDT": 2}, {"BTCUSDT": 1.0})[0] == sells
    assert board.filter_orders("trend", sells, {"BTCUSDT": 2}, {"BTCUSDT": 1.0})[0] == []
    with pytest.raises(KeyError, match="known"):
        board["nope"]


def test_a_halted_account_halts_every_subaccount():
    board = BreakerBoard(BreakerConfig(**QUIET), Limits(max_drawdown=0.2), ["trend", "carry"])
    t = pd.Timestamp("2024-03-01", tz="UTC")
    board["carry"].update(t, 100, 100, 100, True, 0)
    board.account.update(t, 79, 100, 100, True, 0)
    assert board.state("trend") is H and board.state("carry") is H
    assert [c.scope for c in board.changes()] == ["account"]
    board.account.resume("ana", "ok", t, to=R)
    assert board.state("carry") is R  # the account's REDUCING applies to all


def test_the_daily_loss_of_a_daily_bar_is_measured_from_the_previous_close():
    """A day starts at midnight: at the previous bar's close. Before 2026-12-02 the guard
    took the day's first close as its start, so on daily bars no day ever lost anything."""
    from trimtab.guard.safety import SafetyLayer

    cfg = BreakerConfig(**{**QUIET, "daily_loss_limit": 0.10, "cooldown": 1})
    guard = SafetyLayer(breakers=cfg)
    days = pd.date_range("2024-03-01", periods=4, freq="D", tz="UTC")
    assert guard.on_bar(days[0], 100.0, 100.0, True) == []
    assert guard.on_bar(days[1], 91.0, 100.0, True) == []  # 9 % down: under the limit
    # 81 / 91 - 1 = -10.99 %: the subaccount's breaker and the account's (one subaccount)
    changes = guard.on_bar(days[2], 81.0, 100.0, True)
    assert changes and {(c.new, c.trigger) for c in changes} == {(R, "daily_loss")}
    assert changes[0].values["daily_loss"] == pytest.approx(1 - 81 / 91)
    # hourly: a loss inside a new day's first bar counts too (from 23:00's close)
    hourly = SafetyLayer(breakers=cfg)
    t = pd.Timestamp("2024-03-01 22:00", tz="UTC")
    hourly.on_bar(t, 100.0, 100.0, True)
    hourly.on_bar(t + pd.Timedelta(hours=1), 100.0, 100.0, True)
    changes = hourly.on_bar(t + pd.Timedelta(hours=2), 89.0, 100.0, True)  # 00:00 bar
    assert changes and {c.trigger for c in changes} == {"daily_loss"}
    # a transfer out at a close is not a loss of the next day
    moved = SafetyLayer(breakers=cfg)
    moved.on_bar(days[0], 100.0, 100.0, True)
    moved.on_transfer(-50.0)
    assert moved.on_bar(days[1], 49.0, 50.0, True) == []  # 2 % down on the 50 left
