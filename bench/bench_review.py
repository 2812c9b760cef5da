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
floor of a process that only imports pandas, typer and rich. Two cases: the same review
again (its report read back from the report cache, ``trimtab.review.report_cache``, with
no pandas imported) and the review computed (the report cache emptied before each run;
the parsed data, the drawdown model's and the regime HMM's fits still cached). Bytecode
is cached in a temporary folder (as after a first run on a person's machine; this
environment may forbid writing it), and so are the caches; the first run, which fits
both models, is reported apart. ``--base DIR`` times older code (its ``src``) in the same
loop. ``--startup`` runs only this part. A third case, "cold", empties every cache
(parsed data, model fits, report; bytecode kept) before each run: a person's first
review. Goal (issue 10): under 1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def startup(repeat: int, base: str | None = None, data: str | None = None) -> None:
    """Wall time of ``trimtab review`` of the example holdings as a new process.

    Three cases, alternated run by run so that load on the machine hits them alike: the
    report read back from the report cache (the same review again); the review computed
    (the report cache emptied before each run, the parsed data and the model fits still
    cached: a changed holdings file of the same weights, or a first review after an
    edit); the floor. With ``base`` (a checkout of older code, e.g. ``git worktree add``),
    its ``src`` runs the same command in the same loop, with its own warm caches.
    """
    script = Path(sys.executable).with_name("trimtab")
    if data is None:
        from trimtab.data import find_data_dir

        data = str(find_data_dir(None).path)
    command = [
        "review",
        "--portfolio",
        str(ROOT / "examples" / "holdings.yaml"),
        "--data",
        data,
    ]
    trees = {"new": ROOT, **({"base": Path(base).resolve()} if base else {})}
    with tempfile.TemporaryDirectory() as tmp:
        clean = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
        }
        envs = {
            name: dict(
                clean,
                PYTHONPATH=str(tree / "src"),
                PYTHONPYCACHEPREFIX=f"{tmp}/pyc-{name}",
                TRIMTAB_CACHE=f"{tmp}/cache-{name}",
            )
            for name, tree in trees.items()
        }

        cpu: dict[str, list[float]] = {}

        def run(argv: list[str], env: dict[str, str], name: str | None = None) -> float:
            """Wall time; with ``name``, the CPU time (user + system) is kept too: it
            varies less than wall time when other work shares the cores."""
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if name is not None:
                used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                cpu.setdefault(name, []).append(used)
            return wall

        for env in envs.values():
            # One review first, as a person's first run would: it writes the bytecode of
            # every module a review imports (lazy imports too, which importing a list of
            # modules missed); its caches are emptied again below.
            subprocess.run(
                [str(script), *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
            )
        times: dict[str, list[float]] = {}
        for _ in range(repeat):
            for name, env in envs.items():
                # Cold: every cache emptied (parsed data, model fits, report), bytecode kept.
                shutil.rmtree(env["TRIMTAB_CACHE"], ignore_errors=True)
                label = f"{name} cold"
                times.setdefault(label, []).append(run([str(script), *command], env, label))
                label = f"{name} warm"
                times.setdefault(label, []).append(run([str(script), *command], env, label))
                if name == "new":
                    shutil.rmtree(Path(env["TRIMTAB_CACHE"]) / "review", ignore_errors=True)
                    label = "new computed"
                    times.setdefault(label, []).append(run([str(script), *command], env, label))
            times.setdefault("floor", []).append(run([sys.executable, "-c", FLOOR], clean, "floor"))
        uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
        via_uv = None
        if Path(uv).exists() and (ROOT / ".venv").is_dir():  # not in a bare worktree
            uv_env = dict(clean)
            uv_env.update({k: envs["new"][k] for k in ("PYTHONPYCACHEPREFIX", "TRIMTAB_CACHE")})
            via_uv = run([uv, "run", "--quiet", "trimtab", *command], uv_env)
    what = {
        "new cold": "first review, every cache emptied (bytecode kept)",
        "base cold": f"{base}: first review, every cache emptied",
        "new warm": "report read back from the report cache",
        "new computed": "review computed (report cache emptied; parsed data, model fits cached)",
        "base warm": f"{base}: its review with its caches warm",
        "floor": f"floor, a process running {FLOOR!r}",
    }
    floor = statistics.median(times["floor"])
    for name, ts in times.items():
        print(
            f"[review start-up] {what[name]}: median {statistics.median(ts):.2f} s"
            f" (min {min(ts):.2f}, max {max(ts):.2f}, {len(ts)} runs);"
            f" CPU median {statistics.median(cpu[name]):.2f} s;"
            f" wall / floor {statistics.median(ts) / floor:.2f}"
        )
    if via_uv is not None:
        print(f"[review start-up] through uv run (report read back): {via_uv:.2f} s")
    if "base warm" in times:
        for name in ("new cold", "new warm", "new computed"):
            ref = "base cold" if name == "new cold" else "base warm"
            b = statistics.median(times[ref])
            c = statistics.median(cpu[name]) / statistics.median(cpu[ref])
            print(
                f"[review start-up] {name} / {ref}: wall {statistics.median(times[name]) / b:.2f},"
                f" CPU {c:.2f}"
            )
    for name in ("new cold", "new warm"):
        t = statistics.median(times[name])
        print(f"[review start-up] goal < 1 s, {what[name]}: {'met' if t < 1.0 else 'NOT met'}")


#: What every ``trimtab`` command imports before any code of ours runs.
FLOOR = "import pandas, typer, rich.console"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--startup", action="store_true", help="time trimtab review as a new process"
    )
    parser.add_argument(
        "--base", metavar="DIR", help="a checkout of older code to time beside (start-up)"
    )
    parser.add_argument("--data", metavar="DIR", help="market data (default: find_data_dir)")
    args = parser.parse_args()
    if args.startup:
        startup(args.repeat, args.base, args.data)
        return
    in_process(args.repeat)
    startup(args.repeat, args.base, args.data)


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
