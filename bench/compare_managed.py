"""The managed policy trading by the cost-aware rebalancer against the older drift band.

Five windows of the Binance daily file (top-10 and top-20 universes); for each, Sharpe,
max drawdown, Calmar, turnover and fees of `managed` with `sizing.trading: band` and
`cost-aware` (the default), beside equal-hold and equal-monthly.

    uv run python bench/compare_managed.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trimtab.config import TrimtabConfig
from trimtab.data import load_panel
from trimtab.engine.runner import RunSpec, run_comparison

WINDOWS = (
    ("top:10", "2018-01-01", "2020-12-31"),
    ("top:10", "2021-01-01", "2023-12-31"),
    ("top:20", "2018-01-01", "2020-12-31"),
    ("top:20", "2021-01-01", "2023-12-31"),
    ("top:10", "2019-01-01", None),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = ap.parse_args()
    panel = load_panel(Path(args.data) / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz")
    print(
        "window | trading | Sharpe | max DD | Calmar | turnover | fees || equal-hold Sharpe / max DD / Calmar | equal-monthly Sharpe / Calmar"
    )
    for universe, start, end in WINDOWS:
        for trading in ("band", "cost-aware"):
            spec = RunSpec(universe=universe, start=start, end=end)
            c = run_comparison(
                spec, panel=panel, settings=TrimtabConfig(sizing={"trading": trading})
            )
            m, h, e = (c.metrics[k] for k in ("managed", "equal-hold", "equal-monthly"))
            print(
                f"{universe} {start[:4]}-{(end or '2023')[:4]} | {trading} | {m['sharpe']:.2f} | "
                f"{m['max_drawdown']:.1%} | {m['calmar']:.2f} | {m['turnover']:.2f} | {m['fees_paid']:,.0f} || "
                f"{h['sharpe']:.2f} / {h['max_drawdown']:.1%} / {h['calmar']:.2f} | {e['sharpe']:.2f} / {e['calmar']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
