"""Risk engine speed: the correlation-shift scan and the portfolio review.

Run with ``uv run python bench/bench_risk.py``. Each figure is the median of
``--repeat`` runs after a warm-up, beside the obvious pandas / scikit-learn way of doing
the same work in the same run.

Panels are made from real bars: each synthetic asset is a real coin's daily (or hourly)
return series, shifted in time by a random offset and mixed with a common market factor
drawn from the real BTC returns, so returns keep the fat tails and volatility
clustering of the data while there are as many assets as the benchmark needs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.data import load_panel
from trimtab.signals.correlation import correlation_shift_scan

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DAILY = SHARED / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"


def timed(fn, repeat: int):
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def real_return_pool(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every listed coin's close-to-close returns (rows with NaN dropped per coin)."""
    panel = load_panel(path)
    rets = panel.close.pct_change(fill_method=None)
    pool = [rets[c].dropna().to_numpy() for c in rets.columns if rets[c].notna().sum() > 400]
    btc = rets["BTCUSDT"].dropna().to_numpy()
    return pool, btc


def synthetic_returns(pool, market, n_assets: int, n_bars: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = np.empty((n_bars, n_assets))
    for j in range(n_assets):
        src = pool[j % len(pool)]
        start = rng.integers(0, len(src) - n_bars) if len(src) > n_bars else 0
        own = np.resize(src[start : start + n_bars], n_bars)
        m0 = rng.integers(0, len(market) - n_bars) if len(market) > n_bars else 0
        beta = rng.uniform(0.2, 0.8)
        out[:, j] = beta * np.resize(market[m0 : m0 + n_bars], n_bars) + (1 - beta) * own
    index = pd.date_range("2020-01-01", periods=n_bars, freq="1D", tz="UTC")
    return pd.DataFrame(out, index=index, columns=[f"A{j:04d}" for j in range(n_assets)])


def pandas_shift_scan(returns: pd.DataFrame, short: int, long: int, z_window: int) -> pd.Series:
    """The obvious way: rolling correlation matrices, each asset's mean correlation with
    the others, short minus long, z-scored over its own history; latest value."""
    n = returns.shape[1]

    def avg_corr(window: int) -> pd.DataFrame:
        corr = returns.rolling(window).corr()
        total = corr.groupby(level=0).sum()
        return (total - 1.0) / (n - 1)

    shift = avg_corr(short) - avg_corr(long)
    z = (shift - shift.rolling(z_window, min_periods=30).mean()) / shift.rolling(
        z_window, min_periods=30
    ).std()
    return z.iloc[-1]


def bench_scan(repeat: int) -> None:
    pool, btc = real_return_pool(DAILY)
    short, long, z_window = 30, 180, 365
    big = synthetic_returns(pool, btc, 2000, 1000)
    t_ours, scan = timed(lambda: correlation_shift_scan(big, short, long, z_window), repeat)
    print(f"[scan 2000 x 1000] trimtab correlation_shift_scan: {t_ours:.3f} s")
    # pandas needs the full rolling correlation cube (2000^2 x 1000 floats = 32 GB), so
    # it is timed on a slice it can hold and scaled: its cost grows with assets^2.
    for n in (100, 200):
        small = big.iloc[:, :n]
        t_pd, ref = timed(lambda s=small: pandas_shift_scan(s, short, long, z_window), 1)
        t_small, ours = timed(
            lambda s=small: correlation_shift_scan(s, short, long, z_window), repeat
        )
        diff = float(np.nanmax(np.abs(ours["shift_z"].reindex(ref.index) - ref)))
        print(
            f"[scan {n} x 1000] pandas rolling corr {t_pd:.2f} s, trimtab {t_small:.3f} s, "
            f"ratio trimtab/pandas {t_small / t_pd:.4f}, max |z diff| {diff:.1e}"
        )
    est = t_pd * (2000 / 200) ** 2
    print(
        f"[scan 2000 x 1000] pandas extrapolated from 200 assets (x{(2000 / 200) ** 2:.0f}): ~{est:.0f} s; ratio trimtab/pandas ~{t_ours / est:.5f}"
    )
    del scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bench_scan(args.repeat)


if __name__ == "__main__":
    main()
