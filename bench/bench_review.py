"""Portfolio review speed: 100 assets, two years of hourly bars made from real bars.

Run with ``uv run python bench/bench_review.py``. The panel is the one the tests use
(tests/review/test_hourly.py: each asset is real BTC hourly returns scaled plus real
lagged ETH returns, with real volume and wicks; ten assets list in the second year).

Peer, in the same run: the obvious pandas / scikit-learn way of getting the same inputs
— every asset factor over the whole two-year panel with pandas rolling windows, the
30-day rolling correlation matrix of the holdings with ``DataFrame.rolling().corr()``,
and a Ledoit-Wolf covariance with scikit-learn — without the review's truncation to the
history the as-of bar needs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.covariance import LedoitWolf
from tests.review.test_hourly import _holdings, synthetic_hourly_panel

from trimtab.review import review_portfolio
from trimtab.risk.score import asset_risk


def timed(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    panel = synthetic_hourly_panel()
    holdings = _holdings(panel)
    t_review = timed(lambda: review_portfolio(holdings, panel), args.repeat)

    def naive() -> None:
        asset_risk(panel)
        returns = panel.close.pct_change(fill_method=None)
        returns.iloc[-24 * 90 :].rolling(24 * 30).corr()
        LedoitWolf().fit(returns.iloc[-24 * 90 :].fillna(0.0).to_numpy())

    t_naive = timed(naive, max(1, args.repeat // 2))
    n_bars, n_assets = panel.close.shape
    print(
        f"[review {n_assets} assets x {n_bars} hourly bars] trimtab review_portfolio: {t_review:.3f} s"
    )
    print(
        f"[review] pandas/sklearn inputs only (full-panel factors, rolling corr, Ledoit-Wolf): {t_naive:.3f} s"
    )
    print(f"[review] ratio trimtab/peer {t_review / t_naive:.2f}")


if __name__ == "__main__":
    main()
