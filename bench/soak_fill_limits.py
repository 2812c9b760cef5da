"""Soak run of the hostile fill-limit property: many sequences, counts printed.

Runs the property of ``tests/guard/test_fill_limits.py`` (hostile targets and price
paths through the real Backtest with a SafetyLayer; every fill checked against the
limits at its fill price and the equity of that moment) over ``--examples`` sequences
drawn by Hypothesis, and prints how many sequences ran, how many fills were checked,
how many breaches were found (with the first few), and the wall time.

    uv run python bench/soak_fill_limits.py --examples 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.guard.test_fill_limits import check_fills, run_scenario, scenarios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="sequences to run")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (reproducible)")
    args = parser.parse_args()
    counts = {"sequences": 0, "fills": 0, "breaches": 0, "rejections": 0, "crashes": 0}
    first: list[str] = []

    # Generate only (no shrinking): every breach found is counted and reported as drawn.
    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(scenarios())
    def soak(scenario) -> None:
        counts["sequences"] += 1
        try:
            result, opens = run_scenario(scenario)
        except Exception as exc:  # a crash is a finding too: count it, show the first
            counts["crashes"] += 1
            first.extend([f"crash: {exc!r}"][: max(0, 5 - len(first))])
            return
        checked = check_fills(result, opens, scenario.limits)
        counts["fills"] += checked.fills
        counts["rejections"] += len(result.rejections)
        counts["breaches"] += len(checked.breaches)
        first.extend(checked.breaches[: max(0, 5 - len(first))])

    start = time.perf_counter()
    seed(args.seed)(soak)()
    wall = time.perf_counter() - start
    print(
        f"sequences {counts['sequences']:,}  fills checked {counts['fills']:,}  "
        f"rejections/expiries {counts['rejections']:,}  breaches {counts['breaches']:,}  "
        f"crashes {counts['crashes']:,}  wall {wall:,.1f} s"
    )
    for line in first:
        print("  found:", line)
    return 1 if counts["breaches"] or counts["crashes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
