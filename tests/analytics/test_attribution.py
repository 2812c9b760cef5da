"""Attribution: the PnL lines add up to the equity change net of transfers (to the cent)
on the default portfolio (core, trend and a funding carry on perpetuals) over the first
half of 2021; BTC held has beta 1 and alpha 0 against BTC; a cash run has zero of
everything; every regression figure equals statsmodels'; Brinson-Fachler equals a
hand-worked two-asset example."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from typer.testing import CliRunner

from tests.conftest import REAL_DATA
from trimtab.analytics import attribution as A
from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, data_spec, run_portfolio
from trimtab.engine.runner import load_for_spec
from trimtab.execution.costs import CostModel
from trimtab.journal.files import RunFiles, write_portfolio_run
from trimtab.policy.policies import FixedWeights

ROOT = Path(__file__).resolve().parents[2]
START, END = "2021-01-01", "2021-06-30"
CENT = 0.005
FREE = CostModel(
    taker_fee_bps=0,
    maker_fee_bps=0,
    half_spread_bps=0,
    impact_bps_at_1pct=0,
    max_volume_share=None,
)

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def portfolio_run():
    portfolio = load_portfolio(ROOT / "examples" / "portfolio.yaml")
    options = PortfolioOptions(data=str(REAL_DATA), start=START, end=END)
    panel = load_for_spec(data_spec(portfolio, options))
    run = run_portfolio(portfolio, options, panel=panel)
    return run, panel


@pytest.fixture(scope="module")
def ledger(portfolio_run):
    run, panel = portfolio_run
    return A.ledger_from_results(run.subaccounts, prices=panel.close)


@pytest.fixture(scope="module")
def context(portfolio_run):
    _, panel = portfolio_run
    return MarketContext.build(panel, start=START, end=END)


def _net_transfers(transfers, name):
    return sum(
        (t["moved"] if t["to"] == name else -t["moved"] if t["from"] == name else 0.0)
        for t in transfers
        if t["moved"] > 0
    )


def test_lines_add_to_the_equity_change_to_the_cent(portfolio_run, ledger):
    run, _ = portfolio_run
    at = A.attribute(ledger)
    table = at.by_subaccount
    assert list(table.index) == ["core", "trend", "carry", "TOTAL"]
    for name, r in run.subaccounts.items():
        row = table.loc[name]
        # The PnL, independently: equity change minus the transfers the run recorded.
        want = r.equity.iloc[-1] - r.equity.iloc[0] - _net_transfers(run.transfers, name)
        assert abs(row["pnl"] - want) < 1e-6
        assert abs(row[list(A.LINES)].sum() - want) < CENT, name
        assert abs(row["residual"]) < CENT
        # Fees and funding are the ledger's own totals.
        sub = r.account.subaccounts[name]
        assert row["fees"] == pytest.approx(-sub.fees_paid, abs=1e-6)
        assert row["funding"] == pytest.approx(sub.funding_pnl, abs=1e-6)
        assert row["liquidation"] == pytest.approx(-sub.liquidation_losses, abs=1e-6)
        # Each asset's lines add up to the subaccount's.
        assets = at.by_asset.loc[name]
        assert abs(assets["total"].sum() - row["total"]) < 1e-6
    total = run.equity.iloc[-1] - run.equity.iloc[0]
    assert abs(at.total_pnl - total) < 1e-6
    assert abs(table.loc["TOTAL", list(A.LINES)].sum() - total) < CENT
    # The carry earned funding on its perpetuals, and every strategy paid spread + fees.
    carry = at.by_asset.loc["carry"]
    assert carry.loc["BTCUSDT-PERP", "funding"] > 0 and carry.loc["ETHUSDT-PERP", "funding"] > 0
    assert (table.loc[["core", "trend", "carry"], "execution"] < 0).all()
    # Daily: every day's lines add to that day's PnL; cumulative ends at the total.
    assert at.daily["residual"].abs().max() < CENT
    assert abs(at.cumulative["total"].iloc[-1] - total) < CENT
    assert len(at.daily) == len(run.equity) - 1


def test_any_period_adds_up(portfolio_run, ledger):
    run, _ = portfolio_run
    at = A.attribute(ledger, start="2021-03-01", end="2021-04-30")
    eq = run.equity
    want = (
        eq[eq.index.normalize() == "2021-04-30"].iloc[0]
        - eq[eq.index.normalize() == "2021-02-28"].iloc[0]
    )
    assert abs(at.by_subaccount.loc["TOTAL", list(A.LINES)].sum() - want) < CENT
    assert at.start == pd.Timestamp("2021-03-01", tz="UTC")
    assert at.end == pd.Timestamp("2021-04-30", tz="UTC")


def test_a_run_folder_gives_the_same_lines(portfolio_run, ledger, tmp_path):
    run, panel = portfolio_run
    files = {
        name: RunFiles(
            run.subaccount_json(name),
            r.equity,
            r.weights,
            r.trades,
            r.decisions,
            r.rejections,
            r.states,
            r.ledger,
        )
        for name, r in run.subaccounts.items()
    }
    out = write_portfolio_run(
        tmp_path / "run", run.to_json(), run.equity_frame(), files, run.transfers
    )
    loaded = A.load_run(out, prices=panel.close)
    pd.testing.assert_frame_equal(
        loaded.flows, ledger.flows, check_freq=False, check_names=False, atol=1e-6
    )
    got = A.attribute(loaded).by_subaccount
    want = A.attribute(ledger).by_subaccount
    pd.testing.assert_frame_equal(got, want, atol=1e-4, rtol=0)
    assert abs(got.loc["TOTAL", "residual"]) < CENT


def test_btc_held_has_beta_one_and_alpha_zero(context, portfolio_run):
    _, panel = portfolio_run
    r = Backtest(context, FixedWeights({"BTCUSDT": 1.0}), BacktestConfig(costs=FREE)).run()
    assert r.account.subaccounts["main"].cash == 0.0  # all in from the first fill
    ledger = A.ledger_from_result(r, prices=panel.close)
    # From the first close after the buy (bought at the open of 2021-01-02).
    for cov in ("plain", "hac"):
        ba = A.beta_alpha(ledger, "btc", start="2021-01-03", cov=cov)
        assert abs(ba["beta"] - 1.0) < 1e-9 and abs(ba["alpha"]) < 1e-9
        assert abs(ba["alpha_annual"]) < 1e-9 and ba["r2"] == pytest.approx(1.0, abs=1e-9)
    # Held, nothing traded after the first month: its timing is nil.
    t = A.timing(ledger)
    assert (t["timing"].iloc[1:].abs() < 1e-6).all()
    assert (t["trades"].iloc[1:].abs() < 1e-6).all()
    # Against BTC itself, no active return, hence no Brinson-Fachler effects.
    bf = A.brinson_fachler(ledger, "btc", start="2021-01-03")
    assert (
        np.abs(bf.periods[["active", "allocation", "selection", "interaction"]]).max().max() < 1e-12
    )


def test_a_cash_run_has_zero_of_everything(context, portfolio_run):
    _, panel = portfolio_run
    r = Backtest(context, FixedWeights({"BTCUSDT": 0.0})).run()
    assert r.trades.empty
    ledger = A.ledger_from_result(r, prices=panel.close)
    at = A.attribute(ledger)
    assert (at.by_subaccount.abs().drop(columns=["start_equity", "end_equity"]) == 0).all().all()
    assert (at.daily.abs() == 0).all().all()
    ba = A.beta_alpha(ledger, "equal", cov="plain")
    assert ba["beta"] == 0 and ba["alpha"] == 0 and ba["alpha_annual"] == 0
    tm = A.treynor_mazuy(ledger)
    assert np.all(tm.params == 0)
    t = A.timing(ledger)
    assert (t[["pnl", "hold", "trades", "costs", "funding", "timing"]] == 0).all().all()
    bf = A.brinson_fachler(ledger, "btc")
    # All in cash: every bit of the active return is allocation (cash against BTC).
    assert (bf.periods["portfolio"] == 0).all()
    assert np.allclose(bf.periods["allocation"], -bf.periods["benchmark"], atol=1e-15)
    assert (bf.periods[["selection", "interaction", "trading"]] == 0).all().all()


def _check_fit(fit: A.Regression, res, level=0.95):
    np.testing.assert_allclose(fit.params, res.params, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.bse, res.bse, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fit.tvalues, res.tvalues, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fit.pvalues, res.pvalues, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fit.conf_int, res.conf_int(alpha=1 - level), rtol=0, atol=1e-8)
    assert fit.rsquared == pytest.approx(res.rsquared, abs=1e-8)


@pytest.mark.parametrize("against", ["btc", "equal"])
@pytest.mark.parametrize("cov", ["plain", "hac"])
def test_regressions_equal_statsmodels(ledger, against, cov):
    rp = A.portfolio_returns(ledger).to_numpy()
    w, rets = A.benchmark_returns(ledger, against)
    rm = (w * rets).sum(axis=1).to_numpy()
    kw = {} if cov == "plain" else {"cov_type": "HAC", "cov_kwds": {"maxlags": 4}}
    assert A.newey_west_lags(len(rp)) == 4
    # Beta and alpha.
    ba = A.beta_alpha(ledger, against, cov=cov)
    res = sm.OLS(rp, sm.add_constant(rm)).fit(**kw)
    _check_fit(ba["fit"], res)
    assert ba["alpha_annual"] == pytest.approx(res.params[0] * 365, abs=1e-8)
    assert ba["alpha_t"] == pytest.approx(res.tvalues[0], rel=1e-8)
    assert ba["alpha_annual_ci"][0] == pytest.approx(res.conf_int()[0, 0] * 365, abs=1e-8)
    # Treynor-Mazuy and Henriksson-Merton.
    tm = A.treynor_mazuy(ledger, against, cov=cov)
    _check_fit(tm, sm.OLS(rp, sm.add_constant(np.column_stack([rm, rm**2]))).fit(**kw))
    hm = A.henriksson_merton(ledger, against, cov=cov)
    x = np.column_stack([rm, np.maximum(rm, 0)])
    _check_fit(hm, sm.OLS(rp, sm.add_constant(x)).fit(**kw))
    # The information ratio by hand.
    active = rp - rm
    ir = active.mean() * 365 / (active.std(ddof=1) * math.sqrt(365))
    assert ba["information_ratio"] == pytest.approx(ir, rel=1e-12)


def test_brinson_fachler_hand_example():
    # Portfolio 70 % A (+10 %), 30 % B (-5 %); benchmark 50/50 with A +8 %, B -2 %.
    # B = 3 %, R = 5.5 %. Allocation: A 0.2*(8-3) = 1 %, B -0.2*(-2-3) = 1 %. Selection:
    # A 0.5*(10-8) = 1 %, B 0.5*(-5+2) = -1.5 %. Interaction: A 0.2*2 = 0.4 %,
    # B -0.2*-3 = 0.6 %. Together 2.5 % = R - B.
    w, b = np.array([0.7, 0.3]), np.array([0.5, 0.5])
    alloc, sel, inter = A.bf_effects(w, b, np.array([0.10, -0.05]), np.array([0.08, -0.02]))
    np.testing.assert_allclose(alloc, [0.01, 0.01], atol=1e-15)
    np.testing.assert_allclose(sel, [0.01, -0.015], atol=1e-15)
    np.testing.assert_allclose(inter, [0.004, 0.006], atol=1e-15)
    assert (alloc + sel + inter).sum() == pytest.approx(0.055 - 0.03, abs=1e-15)


def _two_asset_ledger(cash: float) -> A.RunLedger:
    """70 units of A at 10 and 30 of B at 10 (700 + 300), plus ``cash``; one bar: A +10 %,
    B -5 %; no trades."""
    index = pd.DatetimeIndex(["2021-01-01", "2021-01-02"], tz="UTC")
    eq = pd.DataFrame({"main": [1000.0 + cash, 770.0 + 285.0 + cash]}, index=index)
    rows = []
    for k, ts in enumerate(index):
        for sym, q, marks in (("AUSDT", 70.0, (10.0, 11.0)), ("BUSDT", 30.0, (10.0, 9.5))):
            rows.append(("main", ts, sym, q, marks[k], marks[k], 0.0, 0.0))
    positions = pd.DataFrame(rows, columns=["subaccount", *A._LEDGER_COLUMNS])
    prices = pd.DataFrame({"AUSDT": [10.0, 11.0], "BUSDT": [10.0, 9.5]}, index=index)
    return A.RunLedger(
        equity=eq,
        flows=eq * 0.0,
        positions=positions,
        trades=A._trade_rows(pd.DataFrame(), "main"),
        prices=prices,
    )


def test_brinson_fachler_on_a_two_asset_ledger():
    # Equal-weight benchmark: B = (10 - 5)/2 = 2.5 %; R = 5.5 %. Same prices, so no
    # selection: allocation A 0.2*(10-2.5) = 1.5 %, B -0.2*(-5-2.5) = 1.5 %.
    bf = A.brinson_fachler(_two_asset_ledger(0.0), "equal")
    seg = bf.segments
    assert seg.loc["AUSDT", "allocation"] == pytest.approx(0.015, abs=1e-12)
    assert seg.loc["BUSDT", "allocation"] == pytest.approx(0.015, abs=1e-12)
    assert bf.total["portfolio"] == pytest.approx(0.055, abs=1e-12)
    assert bf.total["active"] == pytest.approx(0.03, abs=1e-12)
    assert seg["selection"].abs().max() < 1e-12 and seg["interaction"].abs().max() < 1e-12
    assert seg["trading"].abs().max() < 1e-12
    # With 1000 in cash too: weights 35/15/50, R = 2.75 %; cash's allocation -0.5*2.5 %.
    bf = A.brinson_fachler(_two_asset_ledger(1000.0), "equal")
    seg = bf.segments
    assert seg.loc["AUSDT", "allocation"] == pytest.approx((0.35 - 0.5) * 0.075, abs=1e-12)
    assert seg.loc["BUSDT", "allocation"] == pytest.approx((0.15 - 0.5) * -0.075, abs=1e-12)
    assert seg.loc["cash", "allocation"] == pytest.approx(-0.5 * 0.025, abs=1e-12)
    assert bf.total["active"] == pytest.approx(0.0275 - 0.025, abs=1e-12)
    assert seg["total"].sum() == pytest.approx(bf.total["active"], abs=1e-12)


def test_brinson_fachler_selection_within_a_group():
    # A and B in one segment: weight 1 against the benchmark's 1, R = 5.5 % against
    # B = 2.5 %: all selection, 3 %.
    bf = A.brinson_fachler(_two_asset_ledger(0.0), "equal", segments={"AUSDT": "x", "BUSDT": "x"})
    assert bf.segments.loc["x", "selection"] == pytest.approx(0.03, abs=1e-12)
    assert bf.segments.loc["x", ["allocation", "interaction", "trading"]].abs().max() < 1e-12


def test_brinson_fachler_effects_sum_to_the_active_return(ledger):
    rp = A.portfolio_returns(ledger)
    for bench in ("btc", "equal"):
        daily = A.brinson_fachler(ledger, bench, freq="D")
        p = daily.periods
        effects = p[["allocation", "selection", "interaction", "trading"]].sum(axis=1)
        np.testing.assert_allclose(effects, p["active"], atol=1e-12)
        np.testing.assert_allclose(p["portfolio"].to_numpy(), rp.to_numpy(), atol=1e-15)
        # Monthly, Carino-linked: each month's effects sum to its compounded active return.
        monthly = A.brinson_fachler(ledger, bench, freq="M")
        m = monthly.periods
        assert len(m) == 6
        np.testing.assert_allclose(
            m[["allocation", "selection", "interaction", "trading"]].sum(axis=1),
            m["active"],
            atol=1e-12,
        )
        jan = rp.loc["2021-01"]
        assert m["portfolio"].iloc[0] == pytest.approx(np.prod(1 + jan) - 1, abs=1e-12)
        whole = np.prod(1 + rp) - 1
        assert monthly.total["portfolio"] == pytest.approx(whole, abs=1e-12)
        assert monthly.segments["total"].sum() == pytest.approx(monthly.total["active"], abs=1e-12)


def test_a_subaccount_s_effects_sum_to_its_active_return(ledger):
    # The carry alone, by group: its hedged perpetuals are segments of their own.
    bf = A.brinson_fachler(ledger, "btc", subaccount="carry", segments="group", freq="M")
    p = bf.periods
    effects = ["allocation", "selection", "interaction", "trading"]
    np.testing.assert_allclose(p[effects].sum(axis=1), p["active"], atol=1e-12)
    rp = A.portfolio_returns(ledger, "carry")
    assert bf.total["portfolio"] == pytest.approx(np.prod(1 + rp) - 1, abs=1e-12)
    assert {"BTCUSDT-PERP", "ETHUSDT-PERP"} <= set(bf.segments.index)
    # Every effect is a fraction of equity no larger than the moves of the assets.
    assert bf.segments[effects].abs().max().max() < 1.0


def test_cap_benchmark_needs_caps(ledger, portfolio_run):
    with pytest.raises(A.AttributionError, match="market caps"):
        A.brinson_fachler(ledger, "cap")
    _, panel = portfolio_run
    caps_file = REAL_DATA / "price_mcap_1d_coingecko_42coins_2013-2021.csv.gz"
    caps = A.load_caps(caps_file, panel.close)
    with_caps = A.RunLedger(
        equity=ledger.equity,
        flows=ledger.flows,
        positions=ledger.positions,
        trades=ledger.trades,
        prices=ledger.prices,
        caps=caps.reindex(ledger.index),
    )
    w, _ = A.benchmark_returns(with_caps, "cap")
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    # BTC is the largest cap of the universe.
    assert (w.idxmax(axis=1) == "BTCUSDT").all()
    bf = A.brinson_fachler(with_caps, "cap")
    assert bf.total[["allocation", "selection", "interaction", "trading"]].sum() == pytest.approx(
        bf.total["active"], abs=1e-12
    )


def test_attribution_command(portfolio_run, tmp_path):
    from trimtab.cli import app

    run, _ = portfolio_run
    files = {
        name: RunFiles(
            run.subaccount_json(name),
            r.equity,
            r.weights,
            r.trades,
            r.decisions,
            r.rejections,
            r.states,
            r.ledger,
        )
        for name, r in run.subaccounts.items()
    }
    out = write_portfolio_run(
        tmp_path / "run", run.to_json(), run.equity_frame(), files, run.transfers
    )
    done = CliRunner().invoke(app, ["attribution", str(out)], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    total = run.equity.iloc[-1] - run.equity.iloc[0]
    assert f"{total:,.2f}" in done.output
    for word in (
        "price",
        "execution",
        "fees",
        "funding",
        "Brinson-Fachler",
        "Treynor-Mazuy",
        "alpha",
        "carry",
        "BTCUSDT-PERP",
    ):
        assert word in done.output, word
    bad = CliRunner().invoke(app, ["attribution", str(tmp_path / "nothing")])
    assert bad.exit_code != 0 and "no such run folder" in bad.output


def test_an_asset_s_lines_by_hand_from_the_panel_and_the_trades(portfolio_run, ledger):
    # trend's BTCUSDT, recomputed from the data's opens and closes and trades.csv alone:
    # quantities cumulated from the fills (fees in USDT), price = held x close change +
    # each fill's quantity x (close - open), execution = quantity x (open - fill price).
    run, panel = portfolio_run
    r = run.subaccounts["trend"]
    close = panel.close["BTCUSDT"].reindex(r.equity.index)
    open_ = panel.open["BTCUSDT"].reindex(r.equity.index)
    fills = r.trades[r.trades["symbol"] == "BTCUSDT"]
    assert (fills["fee_currency"] == "USDT").all() and len(fills) > 10
    signed = np.where(fills["side"] == "buy", 1.0, -1.0) * fills["quantity"]
    held, price, execution, fees = 0.0, 0.0, 0.0, 0.0
    for k in range(1, len(close)):
        ts = close.index[k]
        price += held * (close.iloc[k] - close.iloc[k - 1])
        today = fills["timestamp"] == ts
        for q, p, fee in zip(
            signed[today], fills["price"][today], fills["fee"][today], strict=True
        ):
            price += q * (close.iloc[k] - open_.iloc[k])
            execution += q * (open_.iloc[k] - p)
            fees -= fee
            held += q
    assert held == pytest.approx(
        r.ledger.query("symbol == 'BTCUSDT'")["quantity"].iloc[-1], abs=1e-12
    )
    got = A.attribute(ledger).by_asset.loc[("trend", "BTCUSDT")]
    assert got["price"] == pytest.approx(price, abs=1e-6)
    assert got["execution"] == pytest.approx(execution, abs=1e-6)
    assert got["fees"] == pytest.approx(fees, abs=1e-9)
    assert execution < 0  # spread and impact cost, never a gain, on market orders


def test_a_liquidation_is_its_own_line_and_funding_is_the_broker_s():
    # The carry's 1x short squeezed through its liquidation price (the test of the
    # strategy's liquidation): the forfeited margin is the liquidation line, every
    # funding payment the broker reported is in the funding line at its bar and symbol,
    # and the lines still add up to the equity change.
    from tests.strategies.test_carry import (
        DAILY_FILE,
        FUNDING_FILE,
        build_carry,
        engine_run,
        load_panel,
        perp_bars_with,
        prepare_carry_market,
        read_funding,
    )

    spot = load_panel(DAILY_FILE, symbols=["BTCUSDT"], start="2021-01-15", end="2021-02-10")
    perp = perp_bars_with(spot, "BTCUSDT", high=("2021-02-01", "2021-02-01", 2.5))
    market = prepare_carry_market(spot, ["BTCUSDT"], read_funding(FUNDING_FILE), perp_bars=perp)
    run = engine_run(build_carry(symbols=("BTCUSDT",)), market, start="2021-01-19")
    (event,) = run.liquidations
    ledger = A.ledger_from_result(run.result, prices=market.panel.close)
    at = A.attribute(ledger)
    perp_row = at.by_asset.loc[("carry", "BTCUSDT-PERP")]
    assert perp_row["liquidation"] == pytest.approx(-event.margin_forfeited, abs=1e-9)
    assert event.margin_forfeited > 0
    row = at.by_subaccount.loc["carry"]
    assert abs(row[list(A.LINES)].sum() - (run.equity.iloc[-1] - run.equity.iloc[0])) < CENT
    assert row["funding"] == pytest.approx(run.funding_received, abs=1e-9)
    # Per bar: the ledger's funding equals the broker's reports.
    reported = run.funding.groupby("timestamp")["amount"].sum()
    lines = at.lines.groupby("timestamp")["funding"].sum()
    pd.testing.assert_series_equal(
        lines[lines != 0],
        reported[reported != 0],
        check_names=False,
        check_index_type=False,
        atol=1e-12,
    )
    # The liquidation's bar: the short's price line is q x (liquidation price - last close),
    # the fill at the liquidation price its own reference (no execution cost).
    day = at.lines[
        (at.lines["timestamp"] == event.timestamp) & (at.lines["symbol"] == "BTCUSDT-PERP")
    ]
    close = market.panel.close["BTCUSDT-PERP"]
    before = close.loc[: event.timestamp].iloc[-2]
    assert day["price"].iloc[0] == pytest.approx(event.quantity * (event.price - before), rel=1e-9)
    assert day["execution"].iloc[0] == 0.0
