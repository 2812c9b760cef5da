"""A review of 100 assets on two years of hourly bars (timed in bench/bench_review.py).

The 100 assets are synthetic but built from real hourly bars (the shared BTC/ETH file):
asset k's log return at hour t is ``beta_k * r_BTC(t) + s_k * r_ETH(t - lag_k)`` with
``beta_k`` in [0.5, 1.5], ``s_k`` in [0.3, 1.2] and a lag of 30 days to two years, so
every asset shares BTC's market moves at t and carries a real (fat-tailed, volatility-
clustered) idiosyncratic series that is uncorrelated with the market at t. Prices start
at log-uniform levels (0.01 to 1,000 USDT); quote volume is BTC's at the lagged hour
times a log-uniform factor (0.1 % to 100 %); wicks are BTC's lagged relative wicks. Ten
assets list during the second year (NaN before), as new listings do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trimtab.data.panel import Panel
from trimtab.review import review_portfolio
from trimtab.risk.score import asset_risk

from .conftest import HOURLY_FILE, _require, yaml_holdings

N_ASSETS = 100
DAYS = 730


def synthetic_hourly_panel(n_assets: int = N_ASSETS, days: int = DAYS, seed: int = 7) -> Panel:
    bars = pd.read_csv(_require(HOURLY_FILE), parse_dates=["timestamp"])
    bars = (
        bars[bars["symbol"] == "BTCUSDT"]
        .set_index("timestamp")[["open", "high", "low", "close", "volume_quote"]]
        .join(
            pd.read_csv(HOURLY_FILE, parse_dates=["timestamp"])
            .query("symbol == 'ETHUSDT'")
            .set_index("timestamp")[["close"]]
            .rename(columns={"close": "eth"})
        )
    )
    idx = pd.date_range(bars.index.min(), bars.index.max(), freq="1h")
    bars = bars.reindex(idx)
    close, eth = bars["close"].ffill(), bars["eth"].ffill()
    r_btc = np.log(close).diff().fillna(0.0).to_numpy()
    r_eth = np.log(eth).diff().fillna(0.0).to_numpy()
    prev = close.shift(1)
    up = np.log(bars["high"] / np.maximum(close, prev)).clip(lower=0).fillna(0).to_numpy()
    dn = np.log(np.minimum(close, prev) / bars["low"]).clip(lower=0).fillna(0).to_numpy()
    qv = bars["volume_quote"].fillna(0.0).to_numpy()
    n0 = len(idx) - days * 24
    t = len(idx) - n0
    rng = np.random.default_rng(seed)
    c, v, hw, lw = (np.empty((t, n_assets)) for _ in range(4))
    for k in range(n_assets):
        lag = int(rng.integers(24 * 30, n0))
        window = slice(n0 - lag, len(idx) - lag)
        r = rng.uniform(0.5, 1.5) * r_btc[n0:] + rng.uniform(0.3, 1.2) * r_eth[window]
        c[:, k] = np.exp(rng.uniform(np.log(0.01), np.log(1000)) + np.cumsum(r))
        v[:, k] = qv[window] * np.exp(rng.uniform(np.log(1e-3), 0.0))
        hw[:, k], lw[:, k] = up[window], dn[window]
    for k in range(n_assets - 10, n_assets):  # late listings
        c[: int(rng.integers(t // 2, t - 24 * 120)), k] = np.nan
    o = np.vstack([c[:1], c[:-1]])
    o = np.where(np.isnan(o), c, o)
    index = pd.DatetimeIndex(idx[n0:], name="timestamp")
    cols = pd.Index([f"SYN{k:03d}USDT" for k in range(n_assets)], name="symbol")

    def frame(a: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(a, index=index, columns=cols)

    live = frame(c).notna()
    return Panel(
        open=frame(o).where(live),
        high=frame(np.fmax(o, c) * np.exp(hw)).where(live),
        low=frame(np.fmin(o, c) * np.exp(-lw)).where(live),
        close=frame(c),
        volume=frame(v / c),
        quote_volume=frame(v).where(live),
        has_bar=live,
        timeframe="1h",
    )


@pytest.fixture(scope="module")
def hourly_100():
    return synthetic_hourly_panel()


def _holdings(panel: Panel):
    px = panel.close.iloc[-1]
    syms = list(panel.symbols)
    a = ", ".join(f"{s}: {1000 / px[s]:.8g}" for s in syms[:60])
    b = ", ".join(f"{s}: {1000 / px[s]:.8g}" for s in syms[60:])
    return yaml_holdings(
        f"""
subaccounts:
  a: {{cash: {{USDT: 10000}}, spot: {{{a}}}}}
  b:
    cash: {{USDT: 3000}}
    spot: {{{b}}}
    perps:
      - {{symbol: {syms[0]}, side: long, size: {5000 / px[syms[0]]:.8g},
          entry_price: {px[syms[0]] * 1.02:.8g}, leverage: 10}}
      - {{symbol: {syms[1]}, side: short, size: {3000 / px[syms[1]]:.8g},
          entry_price: {px[syms[1]]:.8g}, leverage: 5}}
"""
    )


def test_review_of_100_assets_on_two_years_of_hourly_bars(hourly_100):
    panel = hourly_100
    assert panel.close.shape == (DAYS * 24, N_ASSETS)
    r = review_portfolio(_holdings(panel), panel)
    assert len(r["positions"]) == 102 and r["timeframe"] == "1h"
    assert r["regime"]["label"] in ("calm", "elevated", "high-vol")
    assert 0 <= r["risk_score"] <= 100


def test_truncated_window_reads_the_same_numbers_on_hourly_bars(hourly_100):
    panel = hourly_100
    five = list(panel.symbols[:3]) + list(panel.symbols[-2:])  # incl. two late listings
    h = yaml_holdings("subaccounts: {a: {spot: {" + ", ".join(f"{s}: 1" for s in five) + "}}}")
    r = review_portfolio(h, panel)
    full = asset_risk(panel.select(five))
    bar = panel.index[-1]
    for p in r["positions"]:
        for name, score in p["factor_scores"].items():
            expected = full.scores[name].at[bar, p["symbol"]]
            assert score == pytest.approx(expected, abs=1e-6), (p["symbol"], name)
