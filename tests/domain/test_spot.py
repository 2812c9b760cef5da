"""Spot money paths: base-asset fees, lot truncation, quotes at par (hand-worked)."""

from decimal import Decimal, localcontext

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trimtab.domain import Fill, LedgerError, Side, Subaccount, spot
from trimtab.domain.quotes import (
    STABLECOINS,
    QuoteError,
    at_par,
    check_quotes,
    quote_problem,
)

T0 = pd.Timestamp("2022-01-01", tz="UTC")
BTC = spot("BTCUSDT")


def fill(side, qty, price, fee=0.0, fee_currency="USDT", symbol="BTCUSDT"):
    return Fill(1, T0, symbol, Side(side), qty, price, fee, fee_currency)


def holding_one_btc_at_100() -> Subaccount:
    sub = Subaccount("core")
    sub.deposit(1_000)
    sub.apply_fill(fill("buy", 1.0, 100.0), BTC)
    return sub


# --- a sell paying its fee in the base asset ---------------------------------------


def test_spot_sell_with_fee_in_base_keeps_the_identity_exact():
    # Hold 1 BTC bought at 100 (cash 900); sell 0.5 at 200 with a 0.1 % fee in BTC.
    sub = holding_one_btc_at_100()
    sub.apply_fill(fill("sell", 0.5, 200.0, fee=0.0005, fee_currency="BTC"), BTC)
    # Cash: 900 + 0.5 * 200 = 1000 (the fee comes out of the BTC, not the USDT).
    assert sub.cash == pytest.approx(1_000.0, abs=1e-12)
    # BTC left: 1 - 0.5 sold - 0.0005 fee = 0.4995, still at entry 100.
    assert sub.quantity("BTCUSDT") == pytest.approx(0.4995, abs=1e-15)
    assert sub.position("BTCUSDT").entry_price == 100.0
    # The fee's 0.0005 BTC leaves the book at 200 like the coins sold: realized
    # 0.5005 * (200 - 100) = 50.05; the fee is 0.0005 * 200 = 0.10 USDT.
    assert sub.realized_pnl == pytest.approx(50.05, abs=1e-12)
    assert sub.fees_paid == pytest.approx(0.10, abs=1e-12)
    assert sub.fees_by_currency["BTC"] == 0.0005
    # Equity at 200: 1000 + 0.4995 * 200 = 1099.90
    # = contributions 1000 + realized 50.05 + unrealized 0.4995 * 100 - fees 0.10.
    marks = {"BTCUSDT": 200.0}
    assert sub.equity(marks) == pytest.approx(1_099.90, abs=1e-9)
    assert sub.identity_gap(marks) == pytest.approx(0.0, abs=1e-12)
    assert sub.identity_gap({"BTCUSDT": 57.0}) == pytest.approx(0.0, abs=1e-12)


def test_spot_buy_with_fee_in_base_keeps_the_identity_exact():
    # Buy 1 BTC at 100 with a 0.1 % fee in BTC: 0.999 BTC received, 100 USDT paid.
    sub = Subaccount("core")
    sub.deposit(1_000)
    sub.apply_fill(fill("buy", 1.0, 100.0, fee=0.001, fee_currency="BTC"), BTC)
    assert sub.cash == 900.0
    assert sub.quantity("BTCUSDT") == pytest.approx(0.999, abs=1e-15)
    assert sub.fees_paid == pytest.approx(0.1, abs=1e-12)
    # Equity at 120: 900 + 0.999 * 120 = 1019.88 = 1000 + 0.999 * 20 - 0.1.
    assert sub.equity({"BTCUSDT": 120.0}) == pytest.approx(1_019.88, abs=1e-9)
    assert sub.identity_gap({"BTCUSDT": 120.0}) == pytest.approx(0.0, abs=1e-12)
    # Selling all that is left, fee in base too: nothing left, the identity still holds.
    sub.apply_fill(fill("sell", 0.998001, 120.0, fee=0.000999, fee_currency="BTC"), BTC)
    assert "BTCUSDT" not in sub.positions
    assert sub.cash == pytest.approx(900 + 0.998001 * 120, abs=1e-9)
    assert sub.identity_gap({}) == pytest.approx(0.0, abs=1e-9)


def test_spot_sell_with_base_fee_cannot_take_more_than_held():
    sub = holding_one_btc_at_100()
    with pytest.raises(LedgerError, match="cannot sell 1.001"):
        sub.apply_fill(fill("sell", 1.0, 200.0, fee=0.001, fee_currency="BTC"), BTC)
    assert sub.quantity("BTCUSDT") == 1.0 and sub.cash == 900.0


prices = st.floats(min_value=0.01, max_value=100_000.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.floats(min_value=0.0, max_value=1.0),
            prices,
            st.floats(min_value=0.0, max_value=0.01),
            st.sampled_from(["USDT", "BTC"]),
        ),
        min_size=1,
        max_size=40,
    ),
    prices,
)
def test_spot_fills_keep_the_identity_whatever_the_fee_currency(ops, final_mark):
    sub = Subaccount("p")
    sub.deposit(10_000)
    for side, frac, price, rate, ccy in ops:
        if side == "buy":
            qty = frac * sub.cash / (price * (1 + rate))
            fee = qty * rate if ccy == "BTC" else qty * price * rate
        else:
            held = sub.quantity("BTCUSDT")
            # With the fee in base, the sale and its fee together fit in the holding.
            qty = frac * held / (1 + rate) if ccy == "BTC" else frac * held
            fee = qty * rate if ccy == "BTC" else qty * price * rate
        if qty <= 0 or (ccy == "BTC" and side == "buy" and fee >= qty):
            continue
        sub.apply_fill(fill(side, qty, price, fee, ccy), BTC)
        assert sub.quantity("BTCUSDT") >= 0
        assert sub.cash >= 0
        for mark in (price, final_mark):
            marks = {"BTCUSDT": mark}
            scale = max(sub.contributions, sub.equity(marks), sub.fees_paid, 1.0)
            assert abs(sub.identity_gap(marks)) <= 1e-9 * scale


# --- lots: truncated, never rounded up (Binance LOT_SIZE) ---------------------------


@pytest.mark.parametrize(
    "step, min_qty, quantity, expected",
    [
        # BTCUSDT: stepSize 0.00001; 0.123456789 BTC is 12345 steps.
        (0.00001, 0.00001, 0.123456789, 0.12345),
        # Binary floats: 0.3 / 0.1 = 2.9999999999999996, still 3 steps of 0.1.
        (0.1, 0.0, 0.3, 0.3),
        (0.1, 0.0, 0.1 + 0.2, 0.3),
        (0.1, 0.0, 0.7 - 0.4, 0.3),  # 0.29999999999999993: float noise under 0.3
        (0.1, 0.0, 0.35, 0.3),
        # A real shortfall is not noise: 0.29999999995 is 2 steps, not 3.
        (0.1, 0.0, 0.29999999995, 0.2),
        (1.0, 0.0, 2.9999999995, 2.0),
        (1.0, 1.0, 12.9999, 12.0),
        # (quantity - minQty) % stepSize == 0: steps count from minQty.
        (0.1, 0.05, 0.3, 0.25),
        (0.1, 0.05, 0.26, 0.25),
        (0.01, 0.0, 1e-300, 0.0),
        (0.00000001, 0.0, 1_234.123456789, 1_234.12345678),
    ],
)
def test_quantities_are_truncated_to_the_lot(step, min_qty, quantity, expected):
    inst = spot("XUSDT", lot_size=step, min_qty=min_qty)
    got = inst.round_quantity(quantity)
    assert got == expected
    assert got <= quantity * (1 + 1e-13)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.00001, 0.00000001, 5.0, 0.5, 0.25]),
)
def test_truncation_never_exceeds_the_quantity_beyond_float_noise(quantity, step):
    got = spot("XUSDT", lot_size=step).round_quantity(quantity)
    assert 0 <= got <= quantity * (1 + 1e-13)
    assert quantity - got < step * (1 + 1e-9) + quantity * 1e-15


def _oracle(quantity: float, step: float, origin: float) -> float:
    """Binance's rule in exact decimals on the numbers as written, float noise aside."""
    q, s = Decimal(repr(quantity)), Decimal(repr(step))
    o = Decimal(repr(origin)) if 0 < origin <= quantity else Decimal(0)
    with localcontext() as ctx:
        ctx.prec = 80
        down = o + ((q - o) // s) * s
        up = down + s
    noise = min(quantity * 1e-13, step * 1e-6)
    return float(up) if float(up) - quantity <= noise else float(down)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.floats(min_value=0, max_value=1e12, allow_nan=False),
        # Near a step boundary, where float arithmetic is most tempted to round.
        st.tuples(st.integers(0, 10**9), st.sampled_from([-1e-12, -1e-15, 0.0, 1e-15])).map(
            lambda t: max(t[0] * 0.01 * (1 + t[1]), 0.0)
        ),
    ),
    st.sampled_from(
        [(1.0, 0.0), (0.1, 0.0), (0.01, 0.01), (0.00001, 0.00001), (1e-8, 0.0), (0.25, 0.0)]
        + [(5.0, 0.0), (0.1, 0.05), (0.001, 0.0015), (123.456, 0.0), (1e-14, 0.0)]
    ),
)
@example(8192.04999999999, (0.00001, 0.00001))  # a hair below a step: fast and slow paths agree
def test_truncation_matches_exact_decimal_arithmetic(quantity, rule):
    step, min_qty = rule
    inst = spot("XUSDT", lot_size=step, min_qty=min_qty)
    assert inst.round_quantity(quantity) == _oracle(quantity, step, min_qty)


def test_rounding_refuses_negative_and_non_finite_quantities():
    inst = spot("XUSDT", lot_size=0.1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="XUSDT: quantity to round"):
            inst.round_quantity(bad)


# --- quotes: at par only from the list -------------------------------------------


def test_stablecoins_at_par_only_from_the_list():
    assert STABLECOINS == ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI", "USDP")
    assert at_par("USDT", "USDT") and at_par("BUSD", "USDT") and at_par("usdc", "USDT")
    # US dollars, euros, TerraUSD and BTC are not stablecoins at par with USDT.
    for quote in ("USD", "EUR", "UST", "BTC", "ETH"):
        assert not at_par(quote, "USDT")
    assert at_par("BTC", "BTC") and not at_par("USDT", "BTC")


def test_cross_quoted_pairs_are_refused_naming_symbol_and_quotes():
    assert quote_problem("ARBUSD", "BUSD", "USDT") is None
    msg = quote_problem("ADABTC", "BTC", "USDT")
    assert msg is not None and "ADABTC is quoted in BTC" in msg and "USDT" in msg
    with pytest.raises(QuoteError, match="ADABTC is quoted in BTC.*XRPETH is quoted in ETH"):
        check_quotes(
            [("BTCUSDT", "USDT"), ("ADABTC", "BTC"), ("XRPETH", "ETH")], "USDT", where="backtest"
        )
    check_quotes([("BTCUSDT", "USDT"), ("ARBUSD", "BUSD")], "USDT")
