"""What recording a backtest in the store costs: the demo's managed run (``trimtab demo``:
top 10 coins from 2019 on, ~1,825 daily bars) with and without a ``RunRecorder`` on
SQLite, in the same process, alternating; then the whole command with and without --db.

    uv run python bench/bench_recording.py                  # 3 rounds
    uv run python bench/bench_recording.py --rounds 5 --no-cli

The in-process figure times ``Backtest.run`` alone (the market context is built once);
the recorder writes a batch every 0.5 s of run time (the CLI's default). The command's
figure is ``trimtab backtest --start 2019-01-01 --universe top:10`` with and without
``--db sqlite:///... --run-id demo`` (start-up, data, baselines included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trimtab.config import TrimtabConfig
from trimtab.engine.backtest import Backtest, BacktestConfig
from trimtab.engine.context import MarketContext
from trimtab.engine.recording import RunRecorder
from trimtab.engine.runner import RunSpec, find_btc, load_for_spec, select_members
from trimtab.guard.safety import SafetyLayer
from trimtab.journal.store import Store
from trimtab.policy import Managed

SPEC = RunSpec(policy="managed", start="2019-01-01", universe="top:10")


def managed(context: MarketContext) -> Backtest:
    cfg = TrimtabConfig()
    policy = Managed(
        cfg.sizing, governor=cfg.governor, costs=SPEC.costs, cost_settings=cfg.rebalance
    )
    safety = SafetyLayer(cfg.limits, cfg.breakers, clusters=cfg.cluster_map())
    config = BacktestConfig(initial_cash=SPEC.initial_cash, costs=SPEC.costs)
    return Backtest(context, policy, config, safety=safety)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the command's timing")
    args = parser.parse_args()
    panel = load_for_spec(SPEC)
    btc = find_btc(panel.symbols)
    panel, members = select_members(panel, SPEC, extra=[btc] if btc else [])
    context = MarketContext.build(panel, universe=members, start=SPEC.start, with_regime=True)
    bars = context.end_i - context.start_i + 1
    plain, stored, commits = [], [], 0
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-") as tmp:
        for r in range(args.rounds):
            t = time.perf_counter()
            managed(context).run()
            plain.append(time.perf_counter() - t)
            with Store.open(Path(tmp) / f"run{r}.db") as store:
                recorder = RunRecorder(store, "demo", {"bench": r})
                t = time.perf_counter()
                managed(context).run(recorder=recorder)
                stored.append(time.perf_counter() - t)
                commits = recorder.commits
        a, b = statistics.median(plain), statistics.median(stored)
        print(
            f"managed, {bars} bars x {len(context.market.symbols)} symbols: without store "
            f"{a:.2f} s, with SQLite store {b:.2f} s ({commits} transactions), "
            f"ratio {b / a:.2f}x (median of {args.rounds})"
        )
        if args.no_cli:
            return
        base = [sys.executable, "-m", "trimtab.cli", "backtest", "--start", "2019-01-01"]
        base += ["--universe", "top:10"]
        env = {**os.environ, "COLUMNS": "200"}
        timings = {}
        for label, extra in (
            ("without --db", []),
            ("with --db", ["--db", f"sqlite:///{tmp}/cli.db", "--run-id", "demo"]),
        ):
            t = time.perf_counter()
            subprocess.run([*base, *extra], check=True, capture_output=True, env=env)
            timings[label] = time.perf_counter() - t
        a, b = timings["without --db"], timings["with --db"]
        print(
            f"trimtab backtest --start 2019-01-01 --universe top:10: without --db {a:.2f} s, "
            f"with --db {b:.2f} s, ratio {b / a:.2f}x"
        )


if __name__ == "__main__":
    main()
