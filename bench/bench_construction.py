"""Portfolio construction speed: trimtab's hand-written risk parity and HRP against
skfolio's ``RiskBudgeting`` (variance) and ``HierarchicalRiskParity`` on the same input.

Run with ``uv run python bench/bench_construction.py`` (``--repeat``, ``--assets``,
``--days``, ``--work rp|hrp|both``). Each side starts from the same returns and does the same work: the
Ledoit-Wolf covariance, then the weights (skfolio: ``EmpiricalPrior`` with its
``LedoitWolf``; HRP clusters on the Pearson correlation of the returns, skfolio's
default, so trimtab's side is given ``corr=np.corrcoef(returns.T)``). The runs
alternate (trimtab, skfolio, trimtab, ...) so both see the same load on a shared
machine; figures are medians. The weights of the two sides are compared on every run.
On a 2-core machine shared with other work, two-thread OpenBLAS stalls (a thread
waits for its descheduled twin): run with ``OPENBLAS_NUM_THREADS=1`` for steadier
figures (both sides; skfolio's solver, Clarabel, is single-threaded anyway).

Returns: a seeded factor model (10 factors with daily vols 1-4 %, betas N(0, 1), own
noise with daily vols 2-8 %), T days x N assets. With the 34-coin daily file beside the
project, the same comparison runs on its 2021-2023 returns too (the size the allocator
sees).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from trimtab.data import load_panel
from trimtab.risk.construction import hrp_weights, risk_parity_weights, shrunk_covariance

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DAILY = SHARED / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"


def factor_returns(days: int, assets: int, seed: int = 2026) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = 10
    factors = rng.standard_normal((days, k)) * rng.uniform(0.01, 0.04, k)
    betas = rng.standard_normal((k, assets))
    noise = rng.standard_normal((days, assets)) * rng.uniform(0.02, 0.08, assets)
    return factors @ betas / np.sqrt(k) + noise


def real_returns() -> np.ndarray | None:
    if not DAILY.exists():
        return None
    close = load_panel(DAILY).close.loc["2021-01-01":"2023-12-31"]
    returns = close.pct_change().iloc[1:]
    return returns[returns.columns[returns.notna().all()]].to_numpy()


def ours_rp(x: np.ndarray) -> np.ndarray:
    return risk_parity_weights(shrunk_covariance(x))


def ours_hrp(x: np.ndarray) -> np.ndarray:
    return hrp_weights(shrunk_covariance(x), corr=np.corrcoef(x.T))


def skfolio_rp(x: np.ndarray) -> np.ndarray:
    from skfolio.moments import LedoitWolf
    from skfolio.optimization import RiskBudgeting
    from skfolio.prior import EmpiricalPrior

    prior = EmpiricalPrior(covariance_estimator=LedoitWolf())
    return RiskBudgeting(prior_estimator=prior).fit(x).weights_


def skfolio_hrp(x: np.ndarray) -> np.ndarray:
    from skfolio.moments import LedoitWolf
    from skfolio.optimization import HierarchicalRiskParity
    from skfolio.prior import EmpiricalPrior

    prior = EmpiricalPrior(covariance_estimator=LedoitWolf())
    return HierarchicalRiskParity(prior_estimator=prior).fit(x).weights_


def clock(fn, x):
    t0 = time.perf_counter()
    out = fn(x)
    return time.perf_counter() - t0, out


WORK = {
    "rp": ("risk parity (ERC, variance)", ours_rp, skfolio_rp),
    "hrp": ("HRP (Ward, optimal leaf order)", ours_hrp, skfolio_hrp),
}


def compare(label: str, x: np.ndarray, repeat: int, work: list[str]) -> list[str]:
    rows = []
    for name, ours, theirs in (WORK[k] for k in work):
        t_ours, t_theirs, diffs = [], [], []
        for _ in range(repeat):
            a, w_ours = clock(ours, x)
            b, w_theirs = clock(theirs, x)
            t_ours.append(a)
            t_theirs.append(b)
            diffs.append(float(np.abs(w_ours - w_theirs).max()))
            print(f"  {label} {name}: trimtab {a:.3f} s, skfolio {b:.3f} s", flush=True)
        mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
        rows.append(
            f"| {label} | {name} | {mo:.3f} s | {mt:.3f} s | {mt / mo:.1f} | "
            f"{max(diffs):.1e} | {1 / x.shape[1]:.1e} |"
        )
    return rows


def construction_only(x: np.ndarray, repeat: int) -> str:
    """trimtab's seconds for each step alone (covariance given), medians."""
    cov = shrunk_covariance(x)
    corr = np.corrcoef(x.T)
    steps = {
        "Ledoit-Wolf covariance": lambda: shrunk_covariance(x),
        "risk parity from the covariance": lambda: risk_parity_weights(cov),
        "HRP from the covariance": lambda: hrp_weights(cov, corr=corr),
    }
    parts = []
    for name, fn in steps.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        parts.append(f"{name} {statistics.median(times):.3f} s")
    return "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--assets", type=int, default=2000)
    ap.add_argument("--days", type=int, default=1000)
    ap.add_argument("--work", choices=["rp", "hrp", "both"], default="both")
    args = ap.parse_args()

    import skfolio
    from threadpoolctl import threadpool_info

    blas = sorted({f"{p['internal_api']} x{p['num_threads']}" for p in threadpool_info()})
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"skfolio {skfolio.__version__}, BLAS {', '.join(blas)}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    warm = factor_returns(200, 30, seed=1)  # imports, cvxpy's first compile
    for fn in (ours_rp, ours_hrp, skfolio_rp, skfolio_hrp):
        fn(warm)

    work = ["rp", "hrp"] if args.work == "both" else [args.work]
    rows = []
    real = real_returns()
    if real is not None:
        rows += compare(f"34-coin file 2021-23 ({real.shape[0]} x {real.shape[1]})", real, 5, work)
    x = factor_returns(args.days, args.assets)
    label = f"factor model ({args.days} x {args.assets})"
    rows += compare(label, x, args.repeat, work)
    steps = construction_only(x, args.repeat)

    print()
    print(
        "| returns (days x assets) | work | trimtab | skfolio | skfolio / trimtab "
        "| max abs weight difference | 1 / N |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    print()
    print(f"trimtab steps alone at {args.assets} assets: {steps}")


if __name__ == "__main__":
    main()
