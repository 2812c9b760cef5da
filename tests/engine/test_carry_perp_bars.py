"""A carry on the perpetuals' own bars (``backtest.perpetuals`` in a portfolio file): the
basis between spot and perpetual is booked, the legs are hedged in coins, and funding is
marked at the perpetual's prices.

The shared data has no perpetual bars, so the test writes its own: Binance's real BTC and
ETH spot bars times ``1 + basis`` with a known basis path of up to 1.5 %. The equity of
the carry subaccount is then explained bar by bar from the fills, the fees, the funding
the broker paid and the closes of that file (an independent computation); the same
computation with the perpetual marked at spot misses by the basis, so it tells the two
apart.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest

from tests.conftest import DAILY_FILE, FUNDING_FILE, REAL_DATA
from tests.strategies.test_carry import binance_rates, booked_by_hand
from trimtab.config import ConfigError
from trimtab.data import load_panel, read_funding
from trimtab.engine.carry_run import read_funding_file
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio
from trimtab.execution.simulated import SimulatedBroker

pytestmark = pytest.mark.real_data

PAIRS = ("BTCUSDT", "ETHUSDT")
START, END = "2021-01-01", "2021-06-30"
FREQTRADE = REAL_DATA / "freqtrade_testdata"

PORTFOLIO = """
backtest: {{start: {start}, end: {end}, timeframe: 1d, perpetuals: {perps}}}
account:
  limits: {{max_gross_leverage: 2.0, max_drawdown: 0.9}}
  breakers: {{daily_loss_limit: null, loss_streak: null}}
subaccounts:
  carry:
    strategy: carry
    symbols: [BTCUSDT, ETHUSDT]
    capital: 100000
    params: {{enter_apr: 0.08, exit_apr: 0.0, gross: 0.95}}
    limits: {{max_gross_leverage: 2.0, max_drawdown: 0.5}}
    breakers: {{daily_loss_limit: null, loss_streak: null}}
"""


def basis_path(index: pd.DatetimeIndex) -> np.ndarray:
    """Perpetual / spot - 1 at each bar: a 1.5 % swing over about a month."""
    t = np.arange(len(index), dtype=float)
    return 0.015 * np.sin(2 * np.pi * t / 29.0) + 0.002


def write_perp_bars(path, spot: pd.DataFrame, symbols=PAIRS, end=None) -> pd.DataFrame:
    """Perpetual bars in the shared CSV format: each spot bar times ``1 + basis``."""
    rows = []
    for s in symbols:
        bars = spot[spot["symbol"] == s].sort_values("timestamp").reset_index(drop=True)
        if end is not None:
            bars = bars[bars["timestamp"] <= pd.Timestamp(end, tz="UTC")]
        b = basis_path(pd.DatetimeIndex(bars["timestamp"]))
        out = bars.copy()
        out["symbol"] = f"{s}-PERP"
        for col in ("open", "high", "low", "close"):
            out[col] = bars[col] * (1.0 + b)
        rows.append(out)
    frame = pd.concat(rows, ignore_index=True)
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def spot_rows() -> pd.DataFrame:
    raw = pd.read_csv(DAILY_FILE, parse_dates=["timestamp"])
    raw = raw[raw["symbol"].isin(PAIRS)]
    return raw[(raw["timestamp"] >= "2020-10-01") & (raw["timestamp"] <= "2021-07-31")]


@contextmanager
def funding_reports():
    """Every funding payment the simulated broker reports meanwhile, with its bar."""
    rows: list[dict] = []
    original = SimulatedBroker.on_bar

    def on_bar(self, i):
        report = original(self, i)
        ts = self.market.timestamps[i]
        rows.extend({"timestamp": ts, "symbol": p, "amount": a} for _, p, a in report.funding)
        return report

    with patch.object(SimulatedBroker, "on_bar", on_bar):
        yield rows


@pytest.fixture(scope="module")
def perp_run(tmp_path_factory, spot_rows):
    folder = tmp_path_factory.mktemp("perps")
    written = write_perp_bars(folder / "perps.csv", spot_rows)
    text = PORTFOLIO.format(start=START, end=END, perps="perps.csv")
    portfolio = parse_portfolio(text, source="carry.yaml", folder=folder)
    with funding_reports() as paid:
        run = run_portfolio(portfolio, PortfolioOptions(data=str(REAL_DATA)))
    return run, written, pd.DataFrame(paid, columns=["timestamp", "symbol", "amount"])


def test_the_basis_is_booked_bar_by_bar_from_the_perpetuals_own_closes(perp_run):
    run, written, paid = perp_run
    carry = run.subaccounts["carry"]
    equity = carry.equity
    idx = equity.index
    trades = carry.trades
    assert trades["symbol"].isin([f"{s}-PERP" for s in PAIRS]).any()
    perp_close = (
        written.assign(timestamp=pd.to_datetime(written["timestamp"], utc=True))
        .pivot(index="timestamp", columns="symbol", values="close")
        .reindex(idx)
    )
    spot = load_panel(DAILY_FILE, symbols=list(PAIRS), start="2020-10-01", end=END)
    spot_close = spot.close.reindex(idx)
    signed = np.where(trades["side"] == "buy", 1.0, -1.0) * trades["quantity"]
    flows = pd.DataFrame(
        {"t": trades["timestamp"], "s": trades["symbol"], "q": signed, "p": trades["price"]}
    )
    moved = flows.pivot_table(index="t", columns="s", values="q", aggfunc="sum")
    symbols = [*PAIRS, *(f"{s}-PERP" for s in PAIRS)]
    moved = moved.reindex(index=idx, columns=symbols).fillna(0.0)
    held = moved.cumsum()
    fees = trades.groupby("timestamp")["fee"].sum().reindex(idx, fill_value=0.0)
    funding = paid.groupby("timestamp")["amount"].sum().reindex(idx, fill_value=0.0)

    def explained(closes: pd.DataFrame) -> pd.Series:
        # What was held from the last close, plus each fill from its price to the close.
        carried = (held.shift(1) * closes.diff()).sum(axis=1)
        fill_gain = pd.Series(
            [q * (closes.at[t, s] - p) for t, s, q, p in flows.itertuples(index=False, name=None)],
            index=flows["t"],
        )
        fill_gain = fill_gain.groupby(level=0).sum().reindex(idx, fill_value=0.0)
        return carried + fill_gain - fees + funding

    with_perp = pd.concat([spot_close, perp_close], axis=1)[symbols]
    at_spot = pd.concat(
        [spot_close, spot_close.set_axis([f"{s}-PERP" for s in PAIRS], axis=1)], axis=1
    )[symbols]
    change = equity.diff().iloc[1:]
    np.testing.assert_allclose(change, explained(with_perp).iloc[1:], atol=1e-6)
    # Marked at spot the perpetual would earn a different bar-by-bar path: the basis.
    miss = (change - explained(at_spot).iloc[1:]).abs().max()
    assert miss > 100.0
    # Funding is marked at the perpetual's bars (open to close), as the broker's rule says.
    rates_from = read_funding(FUNDING_FILE)
    for s in PAIRS:
        p = f"{s}-PERP"
        bars = written[written["symbol"] == p].assign(
            timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True)
        )
        perp = _PerpPanel(bars.set_index("timestamp"), p)
        by_hand = booked_by_hand(perp, p, binance_rates(rates_from, s), held[p])
        booked = paid[paid["symbol"] == p].groupby("timestamp")["amount"].sum()
        pd.testing.assert_series_equal(
            booked.reindex(by_hand.index, fill_value=0.0),
            by_hand,
            check_names=False,
            rtol=1e-9,
        )


class _PerpPanel:
    """The three fields of a ``Panel`` that ``booked_by_hand`` reads, for one column."""

    def __init__(self, bars: pd.DataFrame, column: str) -> None:
        self.index = bars.index
        self.open = bars[["open"]].set_axis([column], axis=1)
        self.close = bars[["close"]].set_axis([column], axis=1)


def test_the_legs_are_hedged_in_coins_whatever_the_basis(perp_run):
    run, written, _ = perp_run
    carry = run.subaccounts["carry"]
    trades = carry.trades
    signed = np.where(trades["side"] == "buy", 1.0, -1.0) * trades["quantity"]
    held = (
        pd.DataFrame({"t": trades["timestamp"], "s": trades["symbol"], "q": signed})
        .pivot_table(index="t", columns="s", values="q", aggfunc="sum")
        .fillna(0.0)
        .cumsum()
    )
    ts = pd.to_datetime(written["timestamp"], utc=True)
    for s in PAIRS:
        p = f"{s}-PERP"
        long = held[s] > 0
        assert long.any()
        # Apart by the fills' costs only (each leg's quantity is set at its fill price,
        # the spot bought and the perp sold across the spread: about 2 x 6 bps here).
        gap = (held[s][long] + held[p][long]).abs() / held[s][long]
        assert gap.max() < 2e-3
        # The basis where the pair was struck was far larger than that gap: a hedge at
        # equal weights would have left the legs |basis| apart.
        entries = held.index[long & ~long.shift(1, fill_value=False)]
        rows = written[(written["symbol"] == p)].set_index(ts[written["symbol"] == p])
        spot = load_panel(DAILY_FILE, symbols=[s], start="2020-10-01", end=END).close[s]
        before = [rows.index[rows.index < e][-1] for e in entries]
        struck = [rows.at[t, "close"] / spot.at[t] - 1 for t in before]
        assert max(abs(b) for b in struck) > 6e-3, struck


def test_perpetual_bars_that_cannot_mark_the_run_are_one_clear_error(tmp_path, spot_rows):
    def run(perps_name: str):
        text = PORTFOLIO.format(start=START, end=END, perps=perps_name)
        portfolio = parse_portfolio(text, source="carry.yaml", folder=tmp_path)
        return run_portfolio(portfolio, PortfolioOptions(data=str(REAL_DATA)))

    with pytest.raises(ConfigError, match=r"backtest.perpetuals: no such file or folder"):
        run("nowhere.csv")
    write_perp_bars(tmp_path / "btc_only.csv", spot_rows, symbols=("BTCUSDT",))
    with pytest.raises(ConfigError, match=r"has no bars for ETHUSDT-PERP \(or ETHUSDT\)"):
        run("btc_only.csv")
    write_perp_bars(tmp_path / "short.csv", spot_rows, end="2021-05-31")
    with pytest.raises(ConfigError, match=r"BTCUSDT-PERP in .* ends before the run"):
        run("short.csv")


def test_a_freqtrade_funding_file_is_read_under_the_carrys_venue():
    path = FREQTRADE / "XRP_USDT_USDT-8h-funding_rate.feather"
    rows = read_funding_file(path, venue="binance")
    assert list(rows.columns) == ["timestamp", "symbol", "venue", "funding_rate"]
    assert set(rows["symbol"]) == {"XRPUSDT"} and set(rows["venue"]) == {"binance"}
    assert len(rows) == 91
    raw = pd.read_feather(path)
    np.testing.assert_array_equal(rows["funding_rate"].to_numpy(), raw["open"].to_numpy())
    assert rows["timestamp"].iloc[0] == pd.Timestamp("2021-11-18 00:00:00", tz="UTC")
