"""Backtest speed: trimtab against vectorbt on the same target-weight simulation.

Run with ``make bench`` (installs the ``bench`` extra). Prints one line per figure;
copy them into bench/RESULTS.md with the date and machine. Timings are the median of
``--repeat`` runs after one warm-up run (vectorbt compiles with numba on first use,
which the warm-up excludes, in vectorbt's favour).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.data import load_panel
from trimtab.data.calendar import calendar_mask
from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.execution.costs import CostModel
from trimtab.policy import TargetWeights, make_policy

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DAILY = SHARED / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
HOURLY = SHARED / "ohlcv_1h_binance_spot_BTC_ETH_BNB_ADA_2017-2021.csv.gz"


def timed(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def monthly_equal_targets(panel) -> pd.DataFrame:
    """Equal weight across listed assets on the first bar of each month, NaN elsewhere."""
    live = panel.live & panel.has_bar
    weights = live.div(live.sum(axis=1), axis=0).fillna(0.0)
    mask = calendar_mask(panel.index, "monthly")
    return weights.where(pd.Series(mask, index=panel.index), np.nan)


def vectorbt_run(panel, targets: pd.DataFrame, fee: float, cash: float):
    import vectorbt as vbt

    # trimtab decides at the close of t and fills at the open of t+1: shift targets one
    # bar and price the orders at the open, as vectorbt expects.
    size = targets.shift(1)
    return vbt.Portfolio.from_orders(
        close=panel.close,
        size=size,
        size_type="targetpercent",
        price=panel.open,
        fees=fee,
        init_cash=cash,
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        freq=pd.Timedelta(seconds=pd.Timedelta(panel.index[1] - panel.index[0]).total_seconds()),
    )


def bench_file(path: Path, label: str, repeat: int) -> None:
    t0 = time.perf_counter()
    panel = load_panel(path)
    load_s = time.perf_counter() - t0
    n_bars, n_sym = panel.close.shape
    print(
        f"[{label}] {n_sym} symbols x {n_bars} bars ({panel.timeframe}); load+validate {load_s:.3f} s"
    )

    costs = CostModel(taker_fee_bps=10, half_spread_bps=0, impact_bps_at_1pct=0)
    config = BacktestConfig(costs=costs, record_holds=True)

    def full_managed():
        ctx = MarketContext.build(panel)
        return Backtest(ctx, make_policy("managed"), config).run()

    t_full, res = timed(full_managed, repeat)
    print(
        f"[{label}] trimtab full backtest, managed policy (context + pipeline + journal): {t_full:.3f} s"
    )

    targets = monthly_equal_targets(panel)
    ctx = MarketContext.build(panel)
    # vectorbt has no cap on an order's share of the bar's volume: lift trimtab's
    # (10 % by default) so that both do the same work.
    uncapped = replace(costs, max_volume_share=None)

    def ours():
        return Backtest(
            ctx, TargetWeights(targets), BacktestConfig(costs=uncapped, record_holds=False)
        ).run()

    def peer():
        return vectorbt_run(panel, targets, fee=10e-4, cash=config.initial_cash).value()

    t_ours, ours_res = timed(ours, repeat)
    t_peer, peer_value = timed(peer, repeat)
    ours_end = float(ours_res.equity.iloc[-1])
    peer_end = float(np.asarray(peer_value)[-1])
    print(
        f"[{label}] target-weight simulation: trimtab {t_ours:.3f} s, vectorbt from_orders {t_peer:.3f} s, ratio trimtab/vectorbt {t_ours / t_peer:.2f}"
    )
    print(
        f"[{label}] same work check: end equity trimtab {ours_end:,.2f} vs vectorbt {peer_end:,.2f} ({ours_end / peer_end - 1:+.4%})"
    )
    del res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"date: {pd.Timestamp.now(tz='UTC'):%Y-%m-%d}")
    bench_file(DAILY, "daily 34 coins", args.repeat)
    bench_file(HOURLY, "hourly 4 coins", args.repeat)


if __name__ == "__main__":
    main()
