from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.data import (
    DataError,
    market_cap_panel,
    parse_universe,
    read_market_caps,
    select_universe,
)
from trimtab.data.universe import UniverseSpec, rebalance_mask

from ._support import CAPS

UTC = "UTC"


def test_explicit_symbols_follow_listing(daily_panel):
    u = select_universe(daily_panel, symbols=["BTC/USDT", "ARBUSD"])
    assert u.shape == daily_panel.close.shape and u.dtypes.eq(bool).all()
    pd.testing.assert_series_equal(u["ARBUSD"], daily_panel.live["ARBUSD"])
    assert u["BTCUSDT"].all()
    assert not u.drop(columns=["BTCUSDT", "ARBUSD"]).any().any()
    with pytest.raises(DataError, match="unknown symbol.*LUNAUSDT.*available: AAVEUSDT"):
        select_universe(daily_panel, symbols=["LUNAUSDT"])


def test_all_live_by_default(daily_panel):
    pd.testing.assert_frame_equal(select_universe(daily_panel), daily_panel.live)


def test_top_by_trailing_quote_volume(daily_panel):
    p = daily_panel
    u = select_universe(p, top=5, lookback=30, rebalance="monthly")
    assert (u.sum(axis=1) <= 5).all()
    assert (u.sum(axis=1).loc["2021":] == 5).all()
    # recompute one rebalance by hand: 2022-06-01, 30 bars up to and including it
    t = pd.Timestamp("2022-06-01", tz=UTC)
    window = p.quote_volume.loc[t - pd.Timedelta(days=29) : t]
    expected = window.mean()[p.live.loc[t]].sort_values(ascending=False).index[:5]
    assert set(u.loc[t][u.loc[t]].index) == set(expected)
    # held unchanged through the month
    month = u.loc["2022-06-01":"2022-06-30"]
    assert (month == month.iloc[0]).all().all()


def test_membership_is_anded_with_live(daily_panel):
    u = select_universe(daily_panel, top=34, rebalance="monthly")
    assert not (u & ~daily_panel.live).any().any()
    arb = u["ARBUSD"]
    assert arb.loc["2023-10-01":"2023-10-20"].all()
    assert not arb.loc["2023-10-21":].any()  # leaves at once when it stops trading
    # a listing joins only at the next rebalance
    sol = u["SOLUSDT"]
    assert not sol.loc["2020-08-11":"2020-08-31"].any() and sol.loc["2020-09-01"]


def test_min_history_and_weekly(daily_panel):
    u = select_universe(daily_panel, top=34, rebalance="weekly", min_history=60)
    sol = u["SOLUSDT"]
    first = sol[sol].index[0]
    assert first.day_of_week == 0  # a Monday
    assert daily_panel.live["SOLUSDT"].loc[:first].sum() >= 60
    assert first - pd.Timestamp("2020-08-11", tz=UTC) < pd.Timedelta(days=60 + 7)


@pytest.mark.parametrize(
    ("kwargs", "panel_name"),
    [
        ({"top": 5, "rebalance": "monthly"}, "daily_panel"),
        ({"top": 8, "rebalance": "weekly", "lookback": 7, "min_history": 20}, "daily_panel"),
        ({"top": 2, "rebalance": "daily", "lookback": 24}, "hourly_panel"),
    ],
)
def test_causal_truncation_changes_nothing_before(kwargs, panel_name, request):
    panel = request.getfixturevalue(panel_name)
    full = select_universe(panel, **kwargs)
    cuts = panel.index[[len(panel.index) // 7, len(panel.index) // 2, -40]]
    for t in cuts:
        cut = panel.slice(end=t)
        part = select_universe(cut, **kwargs)
        pd.testing.assert_frame_equal(part, full.loc[:t, part.columns])
        # symbols missing from the cut panel were not listed yet, hence not members
        assert not full.loc[:t, full.columns.difference(part.columns)].any().any()


@pytest.mark.real_data
def test_by_market_cap(daily_panel):
    caps = read_market_caps(CAPS)
    mc = market_cap_panel(caps, daily_panel)
    # BTCUSDT <- BTC, ARBUSD <- AR (Arweave against BUSD)
    t = pd.Timestamp("2021-06-01", tz=UTC)
    btc = caps[(caps.symbol == "BTC") & (caps.timestamp == t)]["market_cap"].iloc[0]
    assert mc.loc[t, "BTCUSDT"] == btc
    assert mc["ARBUSD"].notna().any()
    # CoinGecko ends 2021-10-17: values go stale, then missing after max_age
    assert mc.loc["2021-10-24", "BTCUSDT"] == mc.loc["2021-10-17", "BTCUSDT"]
    assert np.isnan(mc.loc["2021-10-25", "BTCUSDT"])
    u = select_universe(daily_panel, top=3, by="market_cap", market_caps=caps)
    chosen = set(u.loc[t][u.loc[t]].index)
    assert chosen == set(mc.loc[t].nlargest(3).index) and {"BTCUSDT", "ETHUSDT"} <= chosen
    assert not u.loc["2021-11-01":].any().any()  # no caps, no ranking
    with pytest.raises(DataError, match="needs market_caps"):
        select_universe(daily_panel, top=3, by="market_cap")


def test_market_cap_alignment_is_causal(daily_panel):
    """A value stamped late in a day only counts from the next bar on."""
    t = pd.Timestamp("2021-01-05", tz=UTC)
    caps = pd.DataFrame(
        {
            "timestamp": [t - pd.Timedelta(days=1), t + pd.Timedelta(hours=23)],
            "symbol": ["BTC", "BTC"],
            "market_cap": [1.0, 2.0],
        }
    )
    mc = market_cap_panel(caps, daily_panel)
    assert mc.loc[t, "BTCUSDT"] == 1.0
    assert mc.loc[t + pd.Timedelta(days=1), "BTCUSDT"] == 2.0


def test_rebalance_mask():
    idx = pd.date_range("2021-01-30", "2021-02-09", freq="D", tz=UTC)
    days = lambda m: [d.strftime("%m-%d") for d in idx[m]]  # noqa: E731
    assert days(rebalance_mask(idx, "monthly")) == ["01-30", "02-01"]
    assert days(rebalance_mask(idx, "weekly")) == ["01-30", "02-01", "02-08"]  # Mondays
    assert rebalance_mask(idx, "daily").all()
    hours = pd.date_range("2021-01-31 22:00", periods=4, freq="h", tz=UTC)
    assert rebalance_mask(hours, "daily").tolist() == [True, False, True, False]
    with pytest.raises(DataError, match="rebalance must be"):
        rebalance_mask(idx, "yearly")  # type: ignore[arg-type]


def test_parse_universe():
    assert parse_universe("all") == UniverseSpec()
    assert parse_universe("top:20") == UniverseSpec(top=20)
    assert parse_universe(" top:5:mcap ").kwargs() == {"by": "market_cap", "top": 5}
    assert parse_universe("BTC/USDT, ETHUSDT").kwargs() == {
        "by": "quote_volume",
        "symbols": ["BTCUSDT", "ETHUSDT"],
    }
    for bad in ("", "top:", "top:0", "top:x", "top:3:price"):
        with pytest.raises(DataError, match="universe"):
            parse_universe(bad)


def test_parse_universe_feeds_select_universe(daily_panel):
    spec = parse_universe("top:4")
    u = select_universe(daily_panel, **spec.kwargs())
    assert (u.sum(axis=1).loc["2020":] == 4).all()
