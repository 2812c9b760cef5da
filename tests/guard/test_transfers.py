"""The transfer guard on real ledgers: free cash, cuts, refusals, breaker states."""

import math

import pandas as pd
import pytest

from trimtab.domain import Account, Fill, Side, perpetual, spot
from trimtab.domain.transfers import TransferRequest, TransferStatus
from trimtab.guard.breakers import TradingState
from trimtab.guard.limits import Limits
from trimtab.guard.transfers import TransferGuard, TransferLimits, free_cash
from trimtab.policy.transfers import (
    CapitalRebalance,
    ScheduledTransfer,
    TransferSchedule,
    capital_moves,
)

T = pd.Timestamp("2021-03-01", tz="UTC")
BTC = spot("BTCUSDT")
BTC_PERP = perpetual("BTCUSDT-PERP")


def account_with_btc(cash=10_000.0, btc=0.1, price=20_000.0) -> Account:
    """``core`` holds ``btc`` BTC bought at ``price`` and the rest of ``cash``; ``trend`` 5,000."""
    account = Account.with_cash(cash, name="core")
    account.add_subaccount("trend", 5_000.0)
    if btc:
        fill = Fill(1, T, "BTCUSDT", Side.BUY, btc, price, 0.0, "USDT", subaccount="core")
        account.subaccount("core").apply_fill(fill, BTC)
    return account


def ask(amount, source="core", target="trend", partial=False) -> TransferRequest:
    return TransferRequest(T, source, target, amount, "test", allow_partial=partial)


MARKS = {"BTCUSDT": 20_000.0}


def test_a_transfer_within_free_cash_moves_whole_and_books_both_sides():
    account = account_with_btc()  # core: 8,000 cash + 2,000 BTC
    record = TransferGuard().apply(ask(3_000), account, MARKS)
    assert record.status is TransferStatus.DONE and record.moved == 3_000 and not record.checks
    core, trend = account.subaccount("core"), account.subaccount("trend")
    assert core.cash == 5_000 and trend.cash == 8_000
    # Contributions move with the cash, so each ledger's identity still holds exactly.
    assert core.identity_gap(MARKS) == pytest.approx(0, abs=1e-9)
    assert trend.identity_gap({}) == pytest.approx(0, abs=1e-9)
    assert account.equity(MARKS) == pytest.approx(15_000)


def test_more_than_free_cash_is_refused_whole_by_default_and_nothing_moves():
    account = account_with_btc()
    record = TransferGuard().apply(ask(9_000), account, MARKS)
    assert record.status is TransferStatus.REFUSED and record.moved == 0
    assert record.requested == 9_000
    assert "core has 8,000.00 USDT free (cash)" in record.checks[0]
    assert "refused whole" in record.checks[-1]
    assert account.subaccount("core").cash == 8_000 and account.subaccount("trend").cash == 5_000


def test_a_partial_transfer_is_cut_to_free_cash_with_the_rule_that_cut_it():
    account = account_with_btc()
    record = TransferGuard().apply(ask(9_000, partial=True), account, MARKS)
    assert record.status is TransferStatus.CUT
    assert record.moved == 8_000
    assert account.subaccount("core").cash == pytest.approx(0, abs=1e-4)


def test_min_cash_keeps_its_share_of_the_equity_left_after_the_transfer():
    # Equity 10,000, cash 8,000, min_cash 20 %: x <= (8,000 - 2,000) / 0.8 = 7,500, after
    # which cash 500... no: cash 500 of equity 2,500 is exactly 20 %.
    account = account_with_btc()
    limits = Limits(min_cash=0.2)
    amount, rule = free_cash(account.subaccount("core"), MARKS, limits)
    assert rule.startswith("min_cash") and amount == pytest.approx(7_500)
    guard = TransferGuard(limits={"core": limits})
    record = guard.apply(ask(7_600, partial=True), account, MARKS)
    core = account.subaccount("core")
    assert record.moved == pytest.approx(7_500, abs=0.01) and record.moved <= 7_500
    assert core.cash / core.equity(MARKS) == pytest.approx(0.2, rel=1e-6)


def test_weight_caps_bind_on_the_equity_left():
    # BTC 2,000 of 10,000 with max_asset_weight 0.5: the equity left must stay >= 4,000.
    account = account_with_btc()
    amount, rule = free_cash(account.subaccount("core"), MARKS, Limits(max_asset_weight=0.5))
    assert amount == pytest.approx(6_000) and rule.startswith("max_asset_weight")


def test_perpetual_margin_and_reserved_cash_are_not_free():
    account = Account.with_cash(10_000.0, name="core")
    account.add_subaccount("trend", 0.0)
    core = account.subaccount("core")
    fill = Fill(1, T, "BTCUSDT-PERP", Side.BUY, 0.5, 20_000.0, 0.0, "USDT", leverage=5)
    core.apply_fill(fill, BTC_PERP)  # margin 2,000 leaves the cash
    marks = {"BTCUSDT-PERP": 20_000.0}
    assert core.equity(marks) == pytest.approx(10_000)
    levered = Limits(max_gross_leverage=5.0, max_net_exposure=5.0, max_asset_weight=5.0)
    amount, rule = free_cash(core, marks, levered, reserved=1_000)
    assert amount == pytest.approx(7_000) and "reserved" in rule
    record = TransferGuard().apply(ask(9_000), account, marks, reserved={"core": 1_000})
    assert record.status is TransferStatus.REFUSED
    # Gross 10,000 at the default 1x caps: nothing may leave at all.
    assert free_cash(core, marks)[0] == 0


def test_transfers_into_a_subaccount_that_is_not_active_are_refused_out_of_one_allowed():
    account = account_with_btc()
    states = {"core": TradingState.HALTED, "trend": TradingState.REDUCING}
    into = TransferGuard().apply(ask(1_000), account, MARKS, states=states)
    assert into.status is TransferStatus.REFUSED and "REDUCING" in into.checks[0]
    out = TransferGuard().apply(ask(1_000), account, MARKS, {"core": TradingState.HALTED})
    assert out.status is TransferStatus.DONE  # out of a halted subaccount: allowed
    back = TransferGuard().apply(ask(500, "trend", "core"), account, MARKS, states=states)
    assert back.status is TransferStatus.REFUSED and "HALTED" in back.checks[0]


@pytest.mark.parametrize("amount", [0, -5, math.nan, math.inf])
def test_an_amount_that_is_not_a_finite_positive_number_is_refused(amount):
    account = account_with_btc()
    record = TransferGuard().apply(ask(amount), account, MARKS)
    assert record.status is TransferStatus.REFUSED and record.moved == 0
    assert "amount must be > 0" in record.checks[0]
    requested = record.to_dict()["requested"]
    assert requested == amount if math.isfinite(amount) else requested is None


def test_unknown_and_identical_subaccounts_are_refused():
    account = account_with_btc()
    assert (
        "no subaccount 'carry'" in TransferGuard().check(ask(1, "carry"), account, MARKS).checks[0]
    )
    assert "both" in TransferGuard().check(ask(1, "core", "core"), account, MARKS).checks[0]


def test_max_capital_of_the_target_and_max_transfer_of_the_account():
    account = account_with_btc()
    guard = TransferGuard(max_capital={"trend": 6_000}, account=TransferLimits(max_transfer=500))
    record = guard.apply(ask(3_000, partial=True), account, MARKS)
    assert record.status is TransferStatus.CUT and record.moved == pytest.approx(500)
    assert any("max_capital" in c for c in record.checks)
    assert record.checks[-1].startswith("max_transfer")
    # trend is now 5,500 of its 6,000 cap.
    assert guard.apply(ask(3_000), account, MARKS).status is TransferStatus.REFUSED


def test_a_cut_below_min_transfer_moves_nothing():
    account = account_with_btc(cash=2_000.5, btc=0.1)  # 0.5 USDT of cash left
    guard = TransferGuard(account=TransferLimits(min_transfer=1.0))
    record = guard.apply(ask(100, partial=True), account, MARKS)
    assert record.status is TransferStatus.REFUSED and "min_transfer" in record.checks[-1]


# --- the transfer schedule ----------------------------------------------------------------


def test_dated_transfers_fire_once_at_the_first_bar_at_or_after_their_time():
    days = pd.date_range("2021-01-01", periods=5, freq="1D", tz="UTC")
    schedule = TransferSchedule(
        [
            ScheduledTransfer(days[0], "core", "trend", 10.0),
            ScheduledTransfer(days[2] + pd.Timedelta("6h"), "trend", "core", 20.0, "noon"),
            ScheduledTransfer(days[0] - pd.Timedelta("1D"), "core", "trend", 30.0),
        ]
    )
    fired = {}
    previous = None
    for ts in days:
        fired[ts] = [(r.source, r.amount) for r in schedule.decide(ts, previous, {})]
        previous = ts
    assert fired[days[0]] == [("core", 10.0)]
    assert fired[days[3]] == [("trend", 20.0)]
    assert sum(len(v) for v in fired.values()) == 2  # the one before the run never fires
    (note,) = schedule.not_made(days[0], days[-1])
    assert "before the first bar" in note and "30 USDT" in note


def test_capital_rebalance_moves_surplus_to_deficit_only_past_its_band():
    rule = CapitalRebalance("monthly", {"a": 0.5, "b": 0.3, "c": 0.2}, band=0.02)
    moves = capital_moves(T, rule, {"a": 70.0, "b": 25.0, "c": 5.0})
    assert [(m.source, m.target, round(m.amount, 9)) for m in moves] == [
        ("a", "c", 15.0),
        ("a", "b", 5.0),
    ]
    assert all(m.allow_partial and m.origin == "rebalance_capital" for m in moves)
    assert capital_moves(T, rule, {"a": 51.0, "b": 29.0, "c": 20.0}) == []
    schedule = TransferSchedule(rebalance=rule)
    equity = {"a": 70.0, "b": 20.0, "c": 10.0}
    feb, mar = pd.Timestamp("2021-02-28", tz="UTC"), pd.Timestamp("2021-03-01", tz="UTC")
    assert schedule.decide(mar, None, equity) == []  # never on the run's first bar
    assert schedule.decide(feb, feb - pd.Timedelta("1D"), equity) == []
    assert len(schedule.decide(mar, feb, equity)) == 2
