"""Speed goals of issue 10 (part 6), each against its peer in the same run.

Prints, in one run:

1. target replay (``TargetWeights`` through the real ``Backtest(...).run()``, as a user
   runs one: the pipeline step, ``SafetyLayer.limits_only()``, the simulated broker with
   its array path for a bar's market orders, ``BacktestConfig.vector_fills``) against
   vectorbt's ``Portfolio.from_orders`` on the same targets, 34 coins daily: dense (a target
   on every bar: equal weight, daily) and sparse (equal weight on the first bar of each
   month); and the same run with ``vector_fills=False`` (every order through the broker's
   event path), whose result must be the same to the bit (checked here too);
2. the managed policy of the 34-coin daily comparison run (built as ``run_comparison``
   builds it: the regime model, the default limits, breakers and governor guarding it),
   and vectorbt replaying the targets that run traded to (same work, without the model);
3. the same managed run on synthetic markets of 100, 300 and 1,000 assets x 1,000 days
   (seconds, and seconds per asset: flat when the cost is linear in assets);
4. the 4-subaccount portfolio of ``examples/subaccounts.yaml`` over the 34-coin daily file
   (what ``trimtab backtest --portfolio examples/subaccounts.yaml`` runs): the loop
   (``PortfolioBacktest.run``: every subaccount's decisions, the broker, the account
   breaker, the transfers), without and with a ``RunRecorder`` on SQLite; and the whole
   ``run_portfolio`` (the loop, the market context with the regime model, the plans and
   the metrics). Excluded everywhere: loading and validating the data, parsing the file;
   from the loop also the context and the plans (built before the clock starts).

Times are the median of ``--repeat`` runs after a warm-up run (which absorbs vectorbt's
numba compilation, in vectorbt's favour); ours and the peer's runs alternate, so a load
change on the machine hits both. vectorbt has no cap on an order's share of the bar's
volume: the replays lift trimtab's (10 % by default) so both do the same work.

Run: ``uv sync --extra test --extra bench && uv run python bench/bench_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.config import TrimtabConfig
from trimtab.data import load_panel
from trimtab.data.calendar import calendar_mask
from trimtab.data.panel import Panel, panel_from_long
from trimtab.engine.backtest import Backtest, BacktestConfig, BacktestResult
from trimtab.engine.context import MarketContext
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import (
    PortfolioOptions,
    data_spec,
    portfolio_backtest,
    prepare_portfolio,
    run_portfolio,
)
from trimtab.engine.recording import RunRecorder
from trimtab.engine.runner import RunSpec, load_for_spec
from trimtab.execution.costs import CostModel
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import TargetWeights
from trimtab.policy.policies import Managed

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PORTFOLIO = ROOT / "examples" / "subaccounts.yaml"
DAILY = SHARED / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
FEE = 10e-4


def paired(ours: Callable[[], object], peer: Callable[[], object] | None, repeat: int):
    """Median seconds of ``ours`` and ``peer`` (alternating runs after one warm-up each)
    and the last outputs."""
    out_ours, out_peer = ours(), peer() if peer else None
    t_ours, t_peer = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out_ours = ours()
        t_ours.append(time.perf_counter() - t0)
        if peer is not None:
            t0 = time.perf_counter()
            out_peer = peer()
            t_peer.append(time.perf_counter() - t0)
    return (
        statistics.median(t_ours),
        statistics.median(t_peer) if t_peer else float("nan"),
        out_ours,
        out_peer,
    )


def alternating(fns: list[Callable[[], object]], repeat: int) -> tuple[list[float], list]:
    """Median seconds of each of ``fns`` (one warm-up each, then ``repeat`` rounds running
    them in turn, so a change of load hits all) and their last outputs."""
    outs = [f() for f in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for k, f in enumerate(fns):
            t0 = time.perf_counter()
            outs[k] = f()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], outs


def equal_targets(panel: Panel, frequency: str) -> pd.DataFrame:
    """Equal weight across listed assets on the first bar of each ``frequency`` period,
    NaN (hold) elsewhere."""
    live = panel.live & panel.has_bar
    weights = live.div(live.sum(axis=1), axis=0).fillna(0.0)
    mask = calendar_mask(panel.index, frequency)
    return weights.where(pd.Series(mask, index=panel.index), np.nan)


def traded_targets(result: BacktestResult, panel: Panel) -> pd.DataFrame:
    """The weights a run's decisions traded to (after the guard), NaN on the other bars."""
    frame = pd.DataFrame(np.nan, index=panel.index, columns=panel.close.columns)
    for record in result.decisions:
        if "targets" in record:
            row = pd.Series(record["targets"], dtype=float)
            frame.loc[pd.Timestamp(record["timestamp"])] = row.reindex(frame.columns).fillna(0.0)
    return frame


def vectorbt_value(panel: Panel, targets: pd.DataFrame, cash: float) -> float:
    import vectorbt as vbt

    # trimtab decides at the close of t and fills at the open of t+1: shift the targets one
    # bar and price the orders at the open, as vectorbt expects.
    pf = vbt.Portfolio.from_orders(
        close=panel.close,
        size=targets.shift(1),
        size_type="targetpercent",
        price=panel.open,
        fees=FEE,
        init_cash=cash,
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        freq=pd.Timedelta(panel.index[1] - panel.index[0]),
    )
    return float(np.asarray(pf.value())[-1])


def replay(
    ctx: MarketContext, targets: pd.DataFrame, cash: float, vector_fills: bool = True
) -> BacktestResult:
    costs = CostModel(taker_fee_bps=10, half_spread_bps=0, impact_bps_at_1pct=0)
    config = BacktestConfig(
        initial_cash=cash,
        costs=replace(costs, max_volume_share=None),
        record_holds=False,
        vector_fills=vector_fills,
    )
    return Backtest(ctx, TargetWeights(targets), config).run()


def comparison_managed(ctx: MarketContext, spec: RunSpec) -> BacktestResult:
    """The managed policy of ``run_comparison`` with the default configuration."""
    settings = TrimtabConfig()
    config = BacktestConfig(initial_cash=spec.initial_cash, costs=spec.costs)
    safety = SafetyLayer(
        settings.limits,
        settings.breakers,
        clusters=settings.cluster_map(),
        subaccount=config.subaccount,
    )
    policy = Managed(
        settings.sizing,
        governor=settings.governor,
        costs=spec.costs,
        cost_settings=settings.rebalance,
    )
    return Backtest(ctx, policy, config, safety=safety).run()


def portfolio_rows(repeat: int, store: bool = True) -> None:
    """Print the portfolio rows (see the module docstring, item 4)."""
    from trimtab.journal.store import Store

    portfolio = load_portfolio(PORTFOLIO)
    options = PortfolioOptions(data=str(DAILY))
    panel = load_for_spec(data_spec(portfolio, options))
    t0 = time.perf_counter()
    prep = prepare_portfolio(portfolio, options, panel)
    t_prep = time.perf_counter() - t0

    def fresh():
        # New policies and guards each run (they keep state); the context is shared.
        return portfolio_backtest(
            portfolio, prepare_portfolio(portfolio, options, panel, reuse=prep), options
        )

    plain, stored, commits = [], [], 0
    result = fresh().run()  # warm-up
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-") as tmp:
        for r in range(repeat):
            loop = fresh()
            t0 = time.perf_counter()
            result = loop.run()
            plain.append(time.perf_counter() - t0)
            if not store:
                continue
            loop = fresh()
            with Store.open(Path(tmp) / f"run{r}.db") as db:
                recorder = RunRecorder(db, "bench", {"bench": r})
                t0 = time.perf_counter()
                loop.run(recorder=recorder)
                stored.append(time.perf_counter() - t0)
                commits = recorder.commits
    t_plain = statistics.median(plain)
    bars = len(result.equity)
    fills = sum(len(r.trades) for r in result.subaccounts.values())
    print(
        f"portfolio {PORTFOLIO.name}, {len(result.subaccounts)} subaccounts x "
        f"{len(prep.context.market.symbols)} symbols x {bars} days, loop: {t_plain:.3f} s "
        f"({fills} fills, {len(result.transfers)} transfers; context and plans "
        f"{t_prep:.3f} s, once, not in it)"
    )
    if store:
        t_stored = statistics.median(stored)
        print(
            f"portfolio loop with a SQLite store: {t_stored:.3f} s ({commits} transactions), "
            f"ratio {t_stored / t_plain:.2f}x the loop without it"
        )
    whole = []
    for _ in range(max(1, repeat // 2)):
        t0 = time.perf_counter()
        run_portfolio(portfolio, options, panel=panel)
        whole.append(time.perf_counter() - t0)
    print(
        f"portfolio, whole run_portfolio (context with the regime model, plans, loop, "
        f"metrics; data loaded before): {statistics.median(whole):.3f} s"
    )


def synthetic_panel(n_assets: int, n_days: int, seed: int = 0) -> Panel:
    """A daily market of ``n_assets`` from 2020-01-01: a fat-tailed market factor plus
    idiosyncratic noise, a fifth of the assets listed later, quote volumes spread over two
    orders of magnitude."""
    rng = np.random.default_rng(seed)
    market = 0.03 * rng.standard_t(4, n_days) / np.sqrt(2)
    beta = rng.uniform(0.5, 1.5, n_assets)
    idio = (
        rng.uniform(0.02, 0.06, n_assets) * rng.standard_t(5, (n_days, n_assets)) / np.sqrt(5 / 3)
    )
    returns = np.clip(market[:, None] * beta + idio, -0.6, 1.5)
    close = rng.uniform(0.1, 1000.0, n_assets) * np.exp(np.cumsum(np.log1p(returns), axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, 0.002, (n_days, n_assets)))
    spread = np.abs(rng.normal(0, 0.02, (n_days, n_assets)))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) / (1 + spread)
    quote_volume = np.exp(rng.uniform(np.log(2e6), np.log(2e8), n_assets)) * np.exp(
        rng.normal(0, 0.5, (n_days, n_assets))
    )
    first = np.where(rng.random(n_assets) < 0.2, rng.integers(1, n_days // 2, n_assets), 0)
    index = pd.date_range("2020-01-01", periods=n_days, freq="1D", tz="UTC", name="timestamp")
    symbols = [f"S{j:04d}USDT" for j in range(n_assets)]
    rows = np.arange(n_days)[:, None] >= first[None, :]
    t, j = np.nonzero(rows)
    bars = pd.DataFrame(
        {
            "timestamp": index[t],
            "symbol": np.asarray(symbols)[j],
            "open": open_[t, j],
            "high": high[t, j],
            "low": low[t, j],
            "close": close[t, j],
            "volume": quote_volume[t, j] / close[t, j],
            "quote_volume": quote_volume[t, j],
        }
    )
    return panel_from_long(bars, "1d")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--assets", default="100,300,1000", help="synthetic sizes (comma list)")
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument(
        "--only",
        choices=("replay", "managed", "synthetic", "portfolio"),
        action="append",
        help="run only these parts (repeatable; default all)",
    )
    parser.add_argument("--no-store", action="store_true", help="skip the store row")
    args = parser.parse_args()
    parts = set(args.only or ("replay", "managed", "synthetic", "portfolio"))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; date: {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC"
    )
    spec = RunSpec(data=str(DAILY))
    panel = load_panel(DAILY)
    cash = spec.initial_cash
    plain = MarketContext.build(panel)
    if "replay" in parts:
        for label, frequency in (("dense (daily)", "daily"), ("sparse (monthly)", "monthly")):
            targets = equal_targets(panel, frequency)
            (t_ours, t_peer, t_event), (ours, peer, event) = alternating(
                [
                    lambda t=targets: replay(plain, t, cash),
                    lambda t=targets: vectorbt_value(panel, t, cash),
                    lambda t=targets: replay(plain, t, cash, vector_fills=False),
                ],
                args.repeat,
            )
            same = ours.trades.equals(event.trades) and ours.equity.equals(event.equity)
            end = float(ours.equity.iloc[-1])
            print(
                f"target replay {label}, 34 coins x {len(panel.index)} days, "
                f"{len(ours.trades)} fills: trimtab {t_ours:.3f} s, vectorbt {t_peer:.3f} s, "
                f"ratio {t_ours / t_peer:.2f}; event path {t_event:.3f} s (array path / event "
                f"{t_ours / t_event:.2f}, same trades and equity: {same}); end equity "
                f"{end:,.0f} vs {peer:,.0f} ({end / peer - 1:+.3%})"
            )

    if "managed" in parts:
        t0 = time.perf_counter()
        ctx = MarketContext.build(panel, with_regime=True)
        t_ctx = time.perf_counter() - t0
        t_managed, _, managed, _ = paired(lambda: comparison_managed(ctx, spec), None, args.repeat)
        targets = traded_targets(managed, panel)
        bars_traded = int(targets.notna().any(axis=1).sum())
        t_ours, t_peer, _, _ = paired(
            lambda: replay(plain, targets, cash),
            lambda: vectorbt_value(panel, targets, cash),
            args.repeat,
        )
        print(
            f"managed, comparison run, 34 coins daily: {t_managed:.3f} s (context with the "
            f"regime model {t_ctx:.3f} s, once); trades on {bars_traded} of {len(panel.index)} "
            f"bars; replaying its targets: trimtab {t_ours:.3f} s, vectorbt {t_peer:.3f} s; "
            f"ratio managed / vectorbt replay {t_managed / t_peer:.1f}"
        )

    if "synthetic" in parts:
        for n in (int(a) for a in args.assets.split(",")):
            synthetic = synthetic_panel(n, args.days)
            t0 = time.perf_counter()
            ctx = MarketContext.build(synthetic, with_regime=True)
            t_ctx = time.perf_counter() - t0
            t_run, _, result, _ = paired(
                lambda c=ctx: comparison_managed(c, spec), None, max(1, args.repeat // 2)
            )
            print(
                f"managed, synthetic {n} assets x {args.days} days: {t_run:.3f} s "
                f"({t_run / n * 1e3:.2f} ms per asset; context {t_ctx:.3f} s, "
                f"{t_ctx / n * 1e3:.2f} ms per asset); {len(result.trades)} fills"
            )

    if "portfolio" in parts:
        portfolio_rows(args.repeat, store=not args.no_store)


if __name__ == "__main__":
    main()
