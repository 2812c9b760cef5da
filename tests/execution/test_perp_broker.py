"""Perpetuals in the simulated broker: the order of a bar's events (gap liquidations
before fills, funding at its own time and mark, the range last), worked by hand."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trimtab.data import panel_from_long
from trimtab.domain import Account, Order, Side, perpetual
from trimtab.execution.costs import CostModel
from trimtab.execution.funding import bar_fraction, funding_with_marks
from trimtab.execution.market import MarketArrays
from trimtab.execution.simulated import SimulatedBroker

SYM = "BTCUSDT-PERP"
DAY = pd.Timedelta("1D")
T = pd.date_range("2021-01-01", periods=3, freq="1D", tz="UTC")


def ohlc_panel(bars):
    """A panel from explicit (open, high, low, close) bars of one perpetual, daily."""
    rows = [
        (T[0] + k * DAY, SYM, o, h, lo, c, 1e9 / c, 1e9) for k, (o, h, lo, c) in enumerate(bars)
    ]
    cols = ["timestamp", "symbol", "open", "high", "low", "close", "volume", "quote_volume"]
    return panel_from_long(pd.DataFrame(rows, columns=cols))


def broker_on(bars, cash, funding=None):
    account = Account.with_cash(cash)
    market = MarketArrays.from_panel(ohlc_panel(bars))
    broker = SimulatedBroker(
        account, market, CostModel.free(), instruments={SYM: perpetual(SYM)}, funding=funding
    )
    return broker, account.subaccount("main")


FLAT = (20_000, 20_100, 19_900, 20_000)


# --- liquidation on a gapping open, before any order fills ----------------------------


def test_a_gap_through_liquidation_is_booked_at_the_open_before_the_pending_close():
    # 1 BTC long at 20,000 and 10x: margin 2,000, liquidation (2000 - 20000) / (0.004 - 1)
    # = 18,072.29. Bar 2 opens at 17,000, under it; a close was pending for that bar.
    broker, sub = broker_on([FLAT, FLAT, (17_000, 17_500, 16_500, 17_200)], cash=2_000)
    broker.submit(Order(SYM, Side.BUY, quantity=1, leverage=10))
    assert broker.on_bar(1).fills and sub.cash == 0
    broker.submit(Order(SYM, Side.SELL, quantity=1, reduce_only=True))
    report = broker.on_bar(2)
    (event,) = report.liquidations
    # The exchange liquidated at the open; the close found no position. Had the close
    # filled first at 17,000 it would have lost 3,000 on 2,000 of margin: cash -1,000.
    assert event.price == 17_000 and event.realized_pnl == pytest.approx(-2_000)
    assert not report.fills and SYM not in sub.positions
    assert sub.cash == 0 and sub.equity({}) == 0
    assert sub.identity_gap({}) == pytest.approx(0, abs=1e-9)


def test_a_short_gapping_up_loses_its_margin_and_not_a_cent_of_cash():
    # Short 1 at 20,000 and 5x: margin 4,000, liquidation 24,000 / 1.004 = 23,904.38.
    broker, sub = broker_on([FLAT, FLAT, (25_000, 26_000, 24_800, 25_500)], cash=4_000)
    broker.submit(Order(SYM, Side.SELL, quantity=1, leverage=5))
    broker.on_bar(1)
    broker.submit(Order(SYM, Side.BUY, quantity=1, reduce_only=True))
    report = broker.on_bar(2)
    (event,) = report.liquidations
    assert event.price == 25_000 and event.margin_forfeited == pytest.approx(0)
    assert sub.cash == 0 and not sub.positions and not report.fills


def test_intrabar_the_open_fills_first_then_the_range_liquidates():
    # The open is fine; a market order fills at it, then the bar trades down through the
    # new position's liquidation price (18,072.29): liquidated at that price, same bar.
    broker, sub = broker_on([FLAT, (20_000, 20_100, 17_900, 18_500), FLAT], cash=2_000)
    broker.submit(Order(SYM, Side.BUY, quantity=1, leverage=10))
    report = broker.on_bar(1)
    (f,) = report.fills
    (event,) = report.liquidations
    assert f.price == 20_000
    assert event.price == pytest.approx((2_000 - 20_000) / (0.004 - 1))
    assert sub.cash == 0 and not sub.positions
    assert sub.liquidation_losses == pytest.approx(event.price * 0.004)


# --- funding at the funding time's mark ------------------------------------------------

RISING = (20_000, 23_500, 19_900, 23_000)  # bar 1: opens 20,000, closes 23,000


def funding_at_8(**extra):
    stamp = T[1] + pd.Timedelta("8h")
    if not extra:
        return {SYM: pd.Series([0.0001], index=[stamp])}
    return {SYM: pd.DataFrame({"funding_rate": [0.0001], **extra}, index=[stamp])}


def test_funding_at_8_00_is_priced_a_third_of_the_way_from_open_to_close():
    broker, sub = broker_on([FLAT, RISING, FLAT], cash=100_000, funding=funding_at_8())
    broker.submit(Order(SYM, Side.BUY, quantity=2, leverage=2))
    report = broker.on_bar(1)
    # 2 BTC long, rate 0.01 %, mark 20,000 + (23,000 - 20,000) * 8 / 24 = 21,000:
    # pays 2 * 21,000 * 0.0001 = 4.20 (at the open's 20,000 it would be 4.00).
    assert report.funding == [("main", SYM, pytest.approx(-4.2, abs=1e-12))]
    assert sub.positions[SYM].margin == pytest.approx(20_000 - 4.2)
    assert sub.identity_gap({SYM: 23_000}) == pytest.approx(0, abs=1e-9)


def test_a_mark_price_column_is_used_as_given():
    funding = funding_at_8(mark_price=[21_500.0])
    broker, _ = broker_on([FLAT, RISING, FLAT], cash=100_000, funding=funding)
    broker.submit(Order(SYM, Side.BUY, quantity=2, leverage=2))
    assert broker.on_bar(1).funding == [("main", SYM, pytest.approx(-4.3, abs=1e-12))]


def test_finer_bars_give_the_mark_at_the_funding_time():
    hours = pd.date_range(T[1], periods=24, freq="1h", tz="UTC")
    opens = np.linspace(20_000, 23_000, 24)
    opens[8] = 20_750.0  # the 08:00 hour opens at 20,750
    hourly = pd.DataFrame({"open": opens, "close": np.append(opens[1:], 23_000)}, index=hours)
    rates = pd.Series([0.0001, 0.0001], index=[hours[8], hours[8] + pd.Timedelta("30min")])
    table = funding_with_marks(rates, hourly)
    # The second stamp is half way through the 08:00 hour: (20,750 + opens[9]) / 2.
    assert table["mark_price"].tolist() == pytest.approx([20_750.0, (20_750 + opens[9]) / 2])
    broker, _ = broker_on([FLAT, RISING, FLAT], cash=100_000, funding={SYM: table.iloc[:1]})
    broker.submit(Order(SYM, Side.BUY, quantity=2, leverage=2))
    assert broker.on_bar(1).funding == [("main", SYM, pytest.approx(-4.15, abs=1e-12))]


def test_a_missing_fine_bar_leaves_the_mark_to_the_broker():
    hours = pd.date_range(T[1], periods=24, freq="1h", tz="UTC").delete(8)  # no 08:00 bar
    hourly = pd.DataFrame({"open": 1.0, "close": 1.0}, index=hours)
    rates = pd.Series([0.0001], index=[T[1] + pd.Timedelta("8h")])
    assert np.isnan(funding_with_marks(rates, hourly)["mark_price"].iloc[0])
    broker, _ = broker_on(
        [FLAT, RISING, FLAT], cash=100_000, funding={SYM: funding_with_marks(rates, hourly)}
    )
    broker.submit(Order(SYM, Side.BUY, quantity=2, leverage=2))
    assert broker.on_bar(1).funding == [("main", SYM, pytest.approx(-4.2, abs=1e-12))]


def test_bar_fraction_places_stamps_in_their_bars():
    edges = pd.date_range("2021-01-01", periods=3, freq="1D", tz="UTC").as_unit("ns").asi8
    stamps = (
        pd.DatetimeIndex(
            [
                "2020-12-31 23:00",
                "2021-01-01 00:00",
                "2021-01-02 16:00",
                "2021-01-03 23:59",
                "2021-01-04 00:00",
            ],
            tz="UTC",
        )
        .as_unit("ns")
        .asi8
    )
    bar, frac = bar_fraction(stamps, edges)
    assert bar.tolist() == [-1, 0, 1, 2, -1]
    assert frac[1:4].tolist() == pytest.approx([0.0, 2 / 3, 1439 / 1440])
    assert np.isnan(frac[[0, 4]]).all()


def test_funding_that_eats_the_margin_liquidates_at_that_mark_and_spares_the_cash():
    # 1 BTC long at 10x: margin 2,000, no cash left. A 15 % rate at 08:00 of bar 2 would
    # cost 3,000: only the 2,000 of margin is taken, and the position, now without
    # margin, is liquidated at once at the 08:00 mark (20,000 on a flat bar).
    stamp = T[2] + pd.Timedelta("8h")
    funding = {SYM: pd.Series([0.15], index=[stamp])}
    broker, sub = broker_on([FLAT, FLAT, FLAT], cash=2_000, funding=funding)
    broker.submit(Order(SYM, Side.BUY, quantity=1, leverage=10))
    broker.on_bar(1)
    report = broker.on_bar(2)
    assert report.funding == [("main", SYM, pytest.approx(-2_000))]
    (event,) = report.liquidations
    assert event.timestamp == stamp and event.price == 20_000
    assert sub.cash == 0 and sub.funding_pnl == pytest.approx(-2_000) and not sub.positions
    assert sub.identity_gap({}) == pytest.approx(0, abs=1e-9)


def test_a_funding_table_without_rates_is_named():
    bad = {SYM: pd.DataFrame({"rate": [0.0001]}, index=[T[1]])}
    with pytest.raises(
        ValueError, match="funding for BTCUSDT-PERP: a table needs a 'funding_rate'"
    ):
        broker_on([FLAT, FLAT, FLAT], cash=1_000, funding=bad)


def test_leverage_above_the_bracket_is_a_rejection_with_the_reason():
    broker, sub = broker_on([FLAT, FLAT, FLAT], cash=10_000)
    broker.submit(Order(SYM, Side.BUY, quantity=3, leverage=125))  # 60,000 at 125x
    report = broker.on_bar(1)
    (rej,) = report.rejections
    assert "maximum 100x" in rej.reason and not report.fills
    assert sub.cash == 10_000 and sub.fees_paid == 0 and not sub.positions


# --- property: hostile paths never make cash negative nor leave a liquidatable position


@st.composite
def hostile_paths(draw):
    n = draw(st.integers(3, 8))
    bars, price = [], 20_000.0
    for _ in range(n):
        gap = draw(st.floats(-0.5, 1.0))  # the open jumps from the last close
        o = price * (1 + gap)
        c = o * (1 + draw(st.floats(-0.3, 0.3)))
        h = max(o, c) * (1 + draw(st.floats(0, 0.2)))
        lo = min(o, c) * (1 - draw(st.floats(0, 0.2)))
        bars.append((o, h, lo, c))
        price = c
    orders = draw(
        st.lists(
            st.tuples(
                st.sampled_from([Side.BUY, Side.SELL]),
                st.floats(0.05, 2.0),  # of what the cash can margin
                st.sampled_from([1.0, 5.0, 20.0, 75.0, 125.0, 150.0]),
            ),
            min_size=n,
            max_size=n,
        )
    )
    hours = draw(st.lists(st.integers(0, 23), min_size=n, max_size=n))
    rates = draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n))
    return bars, orders, hours, rates


# Each example builds a panel (~50 ms): 40 paths of up to 8 bars keep this to seconds.
@settings(max_examples=40, deadline=None)
@given(hostile_paths())
def test_hostile_paths_keep_cash_and_the_identity(path):
    bars, orders, hours, rates = path
    stamps = [T[0] + k * DAY + pd.Timedelta(hours=h) for k, h in enumerate(hours)]
    funding = {SYM: pd.Series(rates, index=stamps)}
    broker, sub = broker_on(bars, cash=10_000, funding=funding)
    for i in range(1, len(bars)):
        side, size, lev = orders[i]
        qty = size * max(sub.cash, 1.0) * lev / bars[i - 1][3]
        broker.submit(Order(SYM, side, quantity=qty, leverage=lev))
        broker.on_bar(i)
        o, h, lo, c = bars[i]
        assert sub.cash >= 0
        assert abs(sub.identity_gap({SYM: c})) <= 1e-9 * max(
            1.0, sub.contributions, sub.gross_exposure({SYM: c})
        )
        pos = sub.positions.get(SYM)
        if pos is not None:
            # Whatever survived the bar was never at its liquidation price in it.
            liq = pos.liquidation_price()
            assert pos.margin >= 0
            assert (liq < lo) if pos.quantity > 0 else (liq > h)


@pytest.mark.real_data
def test_real_btc_funding_priced_at_hourly_marks_and_closer_by_interpolation(daily_bars):
    from tests.conftest import FUNDING_FILE, HOURLY_FILE
    from trimtab.data import read_funding

    funding = read_funding(FUNDING_FILE)
    rates = funding[(funding.symbol == "BTCUSDT") & (funding.venue == "binance")]
    rates = rates.set_index("timestamp")["funding_rate"]
    rates = rates[(rates.index >= "2020-01-01") & (rates.index < "2021-06-30")]
    hourly = pd.read_csv(HOURLY_FILE, parse_dates=["timestamp"])
    hourly = hourly[hourly.symbol == "BTCUSDT"].set_index("timestamp").sort_index()
    truth = funding_with_marks(rates, hourly)["mark_price"]
    # Binance funds at 00:00, 08:00 and 16:00: the mark is the open of that hour's bar.
    assert truth.loc["2021-01-01 08:00+00:00"] == hourly.open.loc["2021-01-01 08:00+00:00"]

    daily = daily_bars[daily_bars.symbol == "BTCUSDT"].set_index("timestamp").sort_index()
    bar, frac = bar_fraction(rates.index.as_unit("ns").asi8, daily.index.as_unit("ns").asi8)
    o, c = daily.open.to_numpy()[bar], daily.close.to_numpy()[bar]
    late = truth.notna().to_numpy() & (frac > 0)  # 08:00 and 16:00, where they differ
    t = truth.to_numpy()[late]
    err_open = np.abs(o[late] / t - 1).mean()
    err_interp = np.abs((o + (c - o) * frac)[late] / t - 1).mean()
    # 1,051 events: the day's open misses the hourly mark by 187 bps on average, the
    # open-to-close interpolation by 120 bps.
    assert late.sum() == 1_051
    assert err_open == pytest.approx(0.01873, abs=1e-4)
    assert err_interp == pytest.approx(0.01195, abs=1e-4)

    # The broker books exactly those marks when given them: 1 BTC long, 2021 Q1.
    q1 = daily_bars[(daily_bars.symbol == "BTCUSDT") & (daily_bars.timestamp >= "2021-01-01")]
    q1 = q1[q1.timestamp <= "2021-03-31"].assign(symbol=SYM)
    panel = panel_from_long(q1)
    table = funding_with_marks(rates, hourly)
    account = Account.with_cash(100_000)
    broker = SimulatedBroker(
        account,
        MarketArrays.from_panel(panel),
        CostModel.free(),
        instruments={SYM: perpetual(SYM)},
        funding={SYM: table},
    )
    broker.submit(Order(SYM, Side.BUY, quantity=1.0, leverage=2))
    booked = sum(a for i in range(1, len(panel.index)) for _, _, a in broker.on_bar(i).funding)
    inside = table[(table.index >= panel.index[1]) & (table.index < panel.index[-1] + DAY)]
    assert inside.mark_price.notna().all()
    expected = -(inside.funding_rate * inside.mark_price).sum()
    assert booked == pytest.approx(expected, rel=1e-12)
