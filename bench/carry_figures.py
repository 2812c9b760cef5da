"""The funding carry (long spot, short perpetual) on BTC and ETH, 2020-2022: figures.

Binance funding rates (real, per 8 h) and Binance daily spot bars; the perpetual is
marked at the spot bars (the shared data has no perpetual bars: basis zero), so the
figures are funding minus fees and the hedge's residual, not a basis trade.

    uv run python bench/carry_figures.py [--fees-bps 10] [--slippage]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trimtab.analytics.metrics import cagr, max_drawdown, returns_from_equity, sharpe_ratio
from trimtab.data import load_panel, read_funding
from trimtab.execution.costs import CostModel
from trimtab.strategies.carry import build_carry, prepare_carry_market, simulate_carry

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fees-bps", type=float, default=10.0, help="taker fee, both legs")
    parser.add_argument("--slippage", action="store_true", help="default half-spread, impact")
    args = parser.parse_args()
    symbols = ("BTCUSDT", "ETHUSDT")
    spot = load_panel(
        DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz",
        symbols=list(symbols),
        start="2020-01-01",
        end="2022-12-31",
    )
    funding = read_funding(DATA / "funding_BTC_ETH_7venues_2020-2022.csv.gz")
    market = prepare_carry_market(spot, symbols, funding, venue="binance")
    extra = {} if args.slippage else {"half_spread_bps": 0.0, "impact_bps_at_1pct": 0.0}
    costs = CostModel(taker_fee_bps=args.fees_bps, maker_fee_bps=args.fees_bps, **extra)
    strategy = build_carry(symbols=symbols)
    run = simulate_carry(strategy, market, costs=costs, initial_cash=100_000.0)
    r = returns_from_equity(run.equity)
    start, end = run.equity.iloc[0], run.equity.iloc[-1]
    residual = end - start - (run.funding_received - run.fees_paid)
    held = (run.quantities[[s for s in symbols]] > 0).any(axis=1).mean()
    print(
        f"carry {', '.join(symbols)} on binance, {run.equity.index[0]:%Y-%m-%d} to "
        f"{run.equity.index[-1]:%Y-%m-%d}; perp marked at spot bars: basis zero"
    )
    print(f"costs: taker {args.fees_bps:g} bps, slippage {'on' if args.slippage else 'off'}")
    print(f"equity {start:,.0f} -> {end:,.0f} USDT")
    print(
        f"CAGR {cagr(r, 365):.2%}  Sharpe {sharpe_ratio(r, 365):.2f}  "
        f"max drawdown {max_drawdown(r):.2%}"
    )
    print(
        f"funding received {run.funding_received:,.2f}  fees {run.fees_paid:,.2f}  "
        f"residual (hedge, slippage) {residual:,.2f} USDT"
    )
    print(
        f"fills {len(run.trades)}  liquidations {len(run.liquidations)}  "
        f"rejections {len(run.rejections)}  days with a pair held {held:.0%}"
    )


if __name__ == "__main__":
    main()
