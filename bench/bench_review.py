"""Portfolio review speed: 100 assets, two years of hourly bars made from real bars.

Run with ``uv run python bench/bench_review.py``. The panel is the one the tests use
(tests/review/test_hourly.py: each asset is real BTC hourly returns scaled plus real
lagged ETH returns, with real volume and wicks; ten assets list in the second year).

Peer, in the same run: the obvious pandas / scikit-learn way of getting the same inputs
— every asset factor over the whole two-year panel with pandas rolling windows, the
30-day rolling correlation matrix of the holdings with ``DataFrame.rolling().corr()``,
and a Ledoit-Wolf covariance with scikit-learn — without the review's truncation to the
history the as-of bar needs.

After the in-process review, the same run measures what a person waits for:
``trimtab review --portfolio examples/holdings.yaml`` as a new process (Python start-up,
imports, data loading, review, rendering), median wall time of ``--repeat`` runs through
the installed script (``.venv/bin/trimtab``) and one through ``uv run``; beside it the
floor no code of ours can go under, a process that only imports pandas, typer and rich.
Bytecode is cached in a temporary folder (as after a first run on a person's machine;
this environment may forbid writing it), and so are the drawdown model's and the regime
HMM's fits (``trimtab.review.run``): the first run, which fits both, is reported apart.
``--startup`` runs only this part. Goal (issue 10): under 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


ROOT = Path(__file__).resolve().parents[1]


def startup(repeat: int) -> None:
    """Wall time of ``trimtab review`` of the example holdings as a new process."""
    script = Path(sys.executable).with_name("trimtab")
    command = ["review", "--portfolio", str(ROOT / "examples" / "holdings.yaml")]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=f"{tmp}/pyc", TRIMTAB_CACHE=f"{tmp}/cache")

        def run(argv: list[str]) -> float:
            t0 = time.perf_counter()
            subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - t0

        subprocess.run(  # compile the bytecode once, as a first run would
            [
                sys.executable,
                "-c",
                "import trimtab.cli, trimtab.review.run, trimtab.risk.drawdown_model",
            ],
            env=env,
            check=True,
        )
        cold = run([str(script), *command])
        warm, floor = [], []
        for _ in range(repeat):  # alternated, so that load on the machine hits both alike
            warm.append(run([str(script), *command]))
            floor.append(run([sys.executable, "-c", FLOOR]))
        uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
        via_uv = run([uv, "run", "--quiet", "trimtab", *command]) if Path(uv).exists() else None
    t_warm, t_floor = statistics.median(warm), statistics.median(floor)
    print(
        f"[review start-up] trimtab review examples/holdings.yaml, new process: {t_warm:.2f} s"
        f" (median of {repeat}; models cached, bytecode written)"
    )
    print(f"[review start-up] first run, drawdown model and regime HMM fitted: {cold:.2f} s")
    if via_uv is not None:
        print(f"[review start-up] through uv run: {via_uv:.2f} s")
    print(f"[review start-up] floor, a process importing pandas, typer and rich: {t_floor:.2f} s")
    print(f"[review start-up] goal < 1 s: {'met' if t_warm < 1.0 else 'NOT met'}")


#: What every ``trimtab`` command imports before any code of ours runs.
FLOOR = "import pandas, typer, rich.console"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--startup", action="store_true", help="time trimtab review as a new process"
    )
    args = parser.parse_args()
    if args.startup:
        startup(args.repeat)
        return
    in_process(args.repeat)
    startup(args.repeat)


def in_process(repeat: int) -> None:
    """``review_portfolio`` on the hourly panel in this process, and the naive peer."""
    panel = synthetic_hourly_panel()
    holdings = _holdings(panel)
    t_review = timed(lambda: review_portfolio(holdings, panel), repeat)

    def naive() -> None:
        asset_risk(panel)
        returns = panel.close.pct_change(fill_method=None)
        returns.iloc[-24 * 90 :].rolling(24 * 30).corr()
        LedoitWolf().fit(returns.iloc[-24 * 90 :].fillna(0.0).to_numpy())

    t_naive = timed(naive, max(1, repeat // 2))
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
