"""The perpetual ledger: atomic fills, isolated losses capped at the margin, margin
brackets per symbol with their maximum leverage."""

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.domain import Fill, LedgerError, MarginTier, Side, Subaccount, perpetual
from trimtab.domain.instruments import (
    BINANCE_BTC_MARGIN_TIERS,
    BINANCE_ETH_MARGIN_TIERS,
    FALLBACK_MARGIN_TIERS,
    default_margin_tiers,
)

T0 = pd.Timestamp("2022-01-01", tz="UTC")
PERP = perpetual("BTCUSDT-PERP")


def fill(side, qty, price, fee=0.0, leverage=1.0, symbol="BTCUSDT-PERP"):
    return Fill(1, T0, symbol, Side(side), qty, price, fee, "USDT", leverage=leverage)


def snapshot(sub):
    """Every booked figure of a subaccount, for exact comparison."""
    return (
        sub.cash,
        sub.contributions,
        sub.realized_pnl,
        sub.funding_pnl,
        sub.fees_paid,
        dict(sub.fees_by_currency),
        sub.liquidation_losses,
        {
            s: (p.quantity, p.entry_price, p.margin, p.leverage, p.realized_pnl, p.funding_pnl)
            for s, p in sub.positions.items()
        },
    )


# --- a rejected fill changes nothing ---------------------------------------------------


def test_an_open_without_the_margin_books_no_fee_and_no_position():
    sub = Subaccount("p")
    sub.deposit(1_000)
    before = snapshot(sub)
    # 1 BTC at 20,000 and 10x needs 2,000 of margin; the fee of 8 must not be booked.
    with pytest.raises(LedgerError, match="needs 2000.00 USDT of margin"):
        sub.apply_fill(fill("buy", 1.0, 20_000, fee=8.0, leverage=10), PERP)
    assert snapshot(sub) == before
    assert sub.fees_paid == 0 and sub.cash == 1_000 and not sub.positions


def test_a_flip_without_margin_for_the_new_side_leaves_the_old_position_whole():
    sub = Subaccount("p")
    sub.deposit(2_010)
    sub.apply_fill(fill("buy", 1.0, 20_000, fee=8.0, leverage=10), PERP)
    before = snapshot(sub)
    # Selling 3 closes the long (2,000 margin + 1,000 PnL back) and opens a 2 BTC short
    # at 1x: 42,000 of margin against 3,002 of cash. Nothing of it may be booked.
    with pytest.raises(LedgerError, match="after the close"):
        sub.apply_fill(fill("sell", 3.0, 21_000, fee=25.2, leverage=1), PERP)
    assert snapshot(sub) == before
    pos = sub.positions["BTCUSDT-PERP"]
    assert pos.quantity == 1.0 and pos.margin == pytest.approx(2_000) and sub.realized_pnl == 0


def test_a_flip_with_the_margin_books_close_and_open_together():
    sub = Subaccount("p")
    sub.deposit(10_000)
    sub.apply_fill(fill("buy", 1.0, 20_000, leverage=10), PERP)
    sub.apply_fill(fill("sell", 1.5, 21_000, fee=3.0, leverage=10), PERP)
    pos = sub.positions["BTCUSDT-PERP"]
    # Close 1 at +1,000, then a 0.5 short at 21,000 and 10x: margin 1,050.
    assert pos.quantity == pytest.approx(-0.5) and pos.entry_price == 21_000
    assert pos.margin == pytest.approx(1_050)
    assert sub.realized_pnl == pytest.approx(1_000)
    assert sub.cash == pytest.approx(10_000 + 1_000 - 1_050 - 3)
    assert sub.identity_gap({"BTCUSDT-PERP": 20_500}) == pytest.approx(0, abs=1e-9)


# --- isolated losses stop at the margin ----------------------------------------------


def test_a_close_past_bankruptcy_loses_the_margin_and_no_cash():
    sub = Subaccount("p")
    sub.deposit(2_000)
    sub.apply_fill(fill("buy", 1.0, 20_000, leverage=10), PERP)
    assert sub.cash == 0
    # 5,000 below entry with 2,000 of margin: the exchange would have liquidated it; the
    # loss is the margin, not 5,000 (the insurance fund takes the rest).
    sub.apply_fill(fill("sell", 1.0, 15_000), PERP)
    assert sub.cash == 0 and not sub.positions
    assert sub.realized_pnl == pytest.approx(-2_000)
    assert sub.identity_gap({}) == pytest.approx(0, abs=1e-9)


def test_funding_never_takes_more_than_the_isolated_margin():
    sub = Subaccount("p")
    sub.deposit(2_500)
    sub.apply_fill(fill("buy", 1.0, 20_000, leverage=10), PERP)
    # A 15 % funding rate on 20,000 is 3,000: only the 2,000 of margin can be taken.
    paid = sub.apply_funding("BTCUSDT-PERP", 0.15, 20_000)
    assert paid == pytest.approx(-2_000)
    pos = sub.positions["BTCUSDT-PERP"]
    assert pos.margin == 0 and sub.cash == pytest.approx(500)
    assert pos.margin_ratio(20_000) == math.inf  # liquidated at once by the broker
    event = sub.liquidate("BTCUSDT-PERP", 19_000, T0)
    assert event.realized_pnl == 0 and sub.cash == pytest.approx(500)
    assert sub.identity_gap({}) == pytest.approx(0, abs=1e-9)


def test_a_close_that_cannot_pay_its_fee_is_rejected_whole():
    sub = Subaccount("p")
    sub.deposit(2_000)
    sub.apply_fill(fill("buy", 1.0, 20_000, leverage=10), PERP)
    before = snapshot(sub)
    # Closing at 18,100 returns 2,000 - 1,900 = 100; a fee of 150 cannot be paid.
    with pytest.raises(LedgerError, match="fee 150.00 USDT exceeds the cash"):
        sub.apply_fill(fill("sell", 1.0, 18_100, fee=150.0), PERP)
    assert snapshot(sub) == before


# --- brackets per symbol, their maximum leverage ------------------------------------


def test_each_symbol_gets_its_own_brackets_and_others_the_conservative_fallback():
    assert perpetual("BTCUSDT-PERP").margin_tiers == BINANCE_BTC_MARGIN_TIERS
    assert perpetual("ETHUSDT").margin_tiers == BINANCE_ETH_MARGIN_TIERS
    doge = perpetual("DOGEUSDT-PERP")
    assert doge.margin_tiers == FALLBACK_MARGIN_TIERS == default_margin_tiers("DOGE")
    btc = BINANCE_BTC_MARGIN_TIERS
    # Conservative against BTC at every size: more maintenance, less leverage.
    for notional in (1_000, 10_000, 60_000, 300_000, 2e6, 9e6, 6e7, 1e8):
        assert doge.maintenance_margin(notional) >= PERP.maintenance_margin(notional)
        assert doge.margin_tier(notional).max_leverage <= PERP.margin_tier(notional).max_leverage
    assert FALLBACK_MARGIN_TIERS[0].max_leverage < btc[0].max_leverage


@pytest.mark.parametrize(
    "tiers", [BINANCE_BTC_MARGIN_TIERS, BINANCE_ETH_MARGIN_TIERS, FALLBACK_MARGIN_TIERS]
)
def test_builtin_brackets_are_continuous(tiers):
    # Binance's "cum" makes maintenance margin continuous at every bracket edge.
    for lower, upper in zip(tiers, tiers[1:], strict=False):
        edge = lower.max_notional
        below = edge * lower.maintenance_margin_rate - lower.maintenance_amount
        above = edge * upper.maintenance_margin_rate - upper.maintenance_amount
        assert above == pytest.approx(below, rel=1e-12)


def test_leverage_above_the_brackets_maximum_is_rejected_with_the_reason():
    sub = Subaccount("p")
    sub.deposit(1_000_000)
    before = snapshot(sub)
    # 3 BTC at 20,000 is 60,000: bracket 2 (50,000-500,000) allows 100x, not 125x.
    with pytest.raises(LedgerError, match=r"125x on a 60,000 USDT BTCUSDT-PERP.*maximum 100x"):
        sub.apply_fill(fill("buy", 3.0, 20_000, fee=1.0, leverage=125), PERP)
    assert snapshot(sub) == before
    sub.apply_fill(fill("buy", 2.0, 20_000, leverage=125), PERP)  # 40,000: 125x is fine
    # Adding 1 more at 125x makes the position 60,000: rejected too.
    with pytest.raises(LedgerError, match="maximum 100x"):
        sub.apply_fill(fill("buy", 1.0, 20_000, leverage=125), PERP)
    # The fallback allows 75x at most, even on the smallest DOGE position.
    doge = perpetual("DOGEUSDT-PERP")
    with pytest.raises(LedgerError, match="maximum 75x"):
        sub.apply_fill(fill("buy", 1_000, 0.1, leverage=100, symbol="DOGEUSDT-PERP"), doge)
    # Above the last bracket nothing opens, whatever the leverage.
    with pytest.raises(LedgerError, match="above the largest margin bracket"):
        sub.apply_fill(fill("buy", 2e9, 0.1, leverage=1, symbol="DOGEUSDT-PERP"), doge)
    # Reducing is never refused for leverage.
    sub.apply_fill(fill("sell", 2.0, 20_000, leverage=125), PERP)
    assert not sub.positions


def test_liquidation_price_on_the_fallback_brackets_by_hand():
    doge = perpetual("DOGEUSDT-PERP")
    sub = Subaccount("p")
    sub.deposit(10_000)
    sub.apply_fill(fill("buy", 200_000, 0.07, leverage=10, symbol="DOGEUSDT-PERP"), doge)
    pos = sub.positions["DOGEUSDT-PERP"]
    # Margin 1,400. At the liquidation price the notional (~12,700) is in the fallback's
    # bracket 2 (mmr 1 %, cum 35): 1400 + q (P - 0.07) = 0.01 q P - 35.
    q = 200_000
    assert pos.liquidation_price() == pytest.approx((1_400 + 35 - q * 0.07) / (0.01 * q - q))
    assert pos.margin_ratio(pos.liquidation_price()) == pytest.approx(1.0)


def test_tier_validation_names_the_problem():
    with pytest.raises(ValueError, match="increasing max_notional"):
        perpetual("XUSDT", margin_tiers=(MarginTier(10, 0.01), MarginTier(5, 0.02)))


# --- property: rejected fills leave no trace -----------------------------------------

LEVERAGES = [1.0, 3.0, 10.0, 50.0, 100.0, 125.0, 150.0]


@st.composite
def perp_sequences(draw):
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["buy", "sell", "funding"]),
                st.floats(0.01, 3.0),  # size as a multiple of what the cash can margin
                st.floats(1_000.0, 60_000.0),
                st.floats(0.0, 50.0),  # fee, bps
                st.sampled_from(LEVERAGES),
            ),
            min_size=1,
            max_size=25,
        )
    )


@settings(max_examples=300, deadline=None)
@given(perp_sequences())
def test_rejected_perp_fills_change_nothing(ops):
    """Every fill is tried on one ledger; the accepted ones alone are replayed on a
    second: both end identical, bit for bit, with the equity identity exact and cash
    never negative."""
    tried, replay = Subaccount("p"), Subaccount("p")
    tried.deposit(20_000)
    replay.deposit(20_000)
    accepted = []
    rejected = 0
    for kind, size, price, bps, lev in ops:
        if kind == "funding":
            accepted.append(("funding", size, price))
            tried.apply_funding("BTCUSDT-PERP", (size - 1.5) * 0.01, price)
            continue
        qty = size * max(tried.cash, 1.0) * lev / price
        f = fill(kind, qty, price, fee=qty * price * bps / 1e4, leverage=lev)
        before = snapshot(tried)
        try:
            tried.apply_fill(f, PERP)
        except LedgerError:
            rejected += 1
            assert snapshot(tried) == before
            continue
        accepted.append(("fill", f, None))
        assert tried.cash >= 0
        marks = {"BTCUSDT-PERP": price}
        assert abs(tried.identity_gap(marks)) <= 1e-9 * max(
            1.0, tried.gross_exposure(marks), tried.contributions + tried.fees_paid
        )
    for kind, a, b in accepted:
        if kind == "funding":
            replay.apply_funding("BTCUSDT-PERP", (a - 1.5) * 0.01, b)
        else:
            replay.apply_fill(a, PERP)
    assert snapshot(replay) == snapshot(tried)
    assert "BTCUSDT-PERP" not in tried.positions or tried.positions["BTCUSDT-PERP"].quantity != 0
