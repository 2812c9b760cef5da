"""A carry above 1x: the short legs open at the strategy's leverage (isolated margin =
notional / leverage), the pairs are sized so spot plus margin fit ``gross``, and the
short is liquidated where Binance's isolated formula puts it at that leverage, each
checked against a computation by hand (engine runs as in ``test_carry``)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import DAILY_FILE, FUNDING_FILE, REAL_DATA
from tests.strategies.test_carry import engine_run, perp_bars_with, short_margin_by_hand
from trimtab.data import load_panel, read_funding
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio
from trimtab.strategies.carry import build_carry, prepare_carry_market

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def spot():
    return load_panel(
        DAILY_FILE, symbols=["BTCUSDT", "ETHUSDT"], start="2020-06-01", end="2021-12-31"
    )


@pytest.fixture(scope="module")
def funding():
    return read_funding(FUNDING_FILE)


def test_a_2x_short_posts_half_its_notional_and_the_pair_fits_gross(spot, funding):
    btc = spot.select(["BTCUSDT"]).slice("2021-01-01", "2021-03-31")
    market = prepare_carry_market(btc, ["BTCUSDT"], funding)
    params = {"leverage": 2, "reset_move": 0.3, "gross": 0.9}
    run = engine_run(build_carry(params, symbols=("BTCUSDT",)), market, start="2021-01-22")
    trades = run.trades
    first = trades.iloc[0]["timestamp"]
    opened = trades[trades["timestamp"] == first].set_index("symbol")
    q_spot = opened.at["BTCUSDT", "quantity"]
    q_perp = opened.at["BTCUSDT-PERP", "quantity"]
    assert opened.at["BTCUSDT-PERP", "side"] == "sell"
    # w = gross / (1 + 1 / leverage) of equity in spot, as much short: 0.9 / 1.5 = 0.6.
    equity = run.equity.loc[:first].iloc[-2]  # the close the pair was decided at
    close = btc.close["BTCUSDT"].loc[:first].iloc[-2]
    assert q_spot * close / equity == pytest.approx(0.6, rel=2e-3)
    assert q_perp == pytest.approx(q_spot, rel=2e-3)
    # The short's isolated margin: half its entry notional, plus the funding it received
    # since it was (last) opened (funding is paid into an isolated position's margin).
    position = run.sub.positions["BTCUSDT-PERP"]
    assert position.quantity < 0 and position.leverage == 2
    perp_trades = trades[trades["symbol"] == "BTCUSDT-PERP"]
    last_open = perp_trades[perp_trades["side"] == "sell"]["timestamp"].iloc[-1]
    since = run.funding[run.funding["timestamp"] >= last_open]["amount"].sum()
    notional = abs(position.quantity) * position.entry_price
    assert position.margin == pytest.approx(notional / 2 + since, rel=1e-9)


def test_a_squeeze_liquidates_a_2x_short_where_a_1x_short_survives(spot, funding):
    # The perpetual's high on 2021-02-01 is 1.7 x its open: a 2x short is liquidated
    # (about 50 % above its entry), a 1x short (about 100 %) is not.
    btc = spot.select(["BTCUSDT"]).slice("2021-01-15", "2021-02-10")
    perp = perp_bars_with(btc, "BTCUSDT", high=("2021-02-01", "2021-02-01", 1.7))
    market = prepare_carry_market(btc, ["BTCUSDT"], funding, perp_bars=perp)
    one = engine_run(build_carry(symbols=("BTCUSDT",)), market, start="2021-01-19")
    assert not one.liquidations
    params = {"leverage": 2, "reset_move": 0.3}
    run = engine_run(build_carry(params, symbols=("BTCUSDT",)), market, start="2021-01-19")
    q, entry, margin = short_margin_by_hand(run, market, funding, leverage=2.0)
    # Binance's isolated short: margin + q (entry - P) = q P mmr - cum, with the bracket of
    # the notional at the liquidation price (under 50k USDT: 0.4 %, cum 0).
    liq = None
    for mmr, cum, low, high in ((0.004, 0.0, 0, 50_000), (0.005, 50.0, 50_000, 500_000)):
        price = (margin + cum + q * entry) / (q * (1 + mmr))
        if low < q * price <= high:
            liq = (price, mmr, cum)
    assert liq is not None
    price, mmr, cum = liq
    assert price == pytest.approx(entry * 1.5, rel=0.02)  # about 50 % above the entry
    (event,) = run.liquidations
    assert event.timestamp == pd.Timestamp("2021-02-01", tz="UTC")
    assert event.price == pytest.approx(price, rel=1e-12)
    assert event.margin_forfeited == pytest.approx(q * price * mmr - cum, rel=1e-9)


def test_a_portfolio_file_runs_a_2x_carry(tmp_path):
    text = """
backtest: {start: 2021-01-01, end: 2021-03-31, timeframe: 1d}
account:
  limits: {max_gross_leverage: 2.0, max_drawdown: 0.9}
  breakers: {daily_loss_limit: null, loss_streak: null}
subaccounts:
  carry:
    strategy: carry
    symbols: [BTCUSDT, ETHUSDT]
    capital: 20000
    params: {leverage: 2, reset_move: 0.3}
    limits: {max_gross_leverage: 2.0}
    breakers: {daily_loss_limit: null, loss_streak: null}
"""
    run = run_portfolio(
        parse_portfolio(text, source="x.yaml"), PortfolioOptions(data=str(REAL_DATA))
    )
    carry = run.subaccounts["carry"]
    sub = carry.account.subaccount("carry")
    perps = {s: p for s, p in sub.positions.items() if s.endswith("-PERP") and p.quantity}
    assert perps
    for p in perps.values():
        # Half the notional, plus the funding received since it opened (a few % here).
        assert p.leverage == 2
        assert 0.5 <= p.margin / (abs(p.quantity) * p.entry_price) < 0.6
    # Hedged in coins, whatever the leverage.
    for perp, position in perps.items():
        spot_qty = sub.positions[perp.removesuffix("-PERP")].quantity
        assert -position.quantity == pytest.approx(spot_qty, rel=5e-3)
