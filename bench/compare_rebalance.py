"""Compare rebalancing rules on the same equal-weight targets, over several data sets.

For each data set: turnover, fees, tracking error to the targets and net return of
``calendar:daily|weekly|monthly``, ``threshold:0.05|0.10`` and ``cost-aware``, and the
issue-5 checks for cost-aware (at most half the rebalancing turnover and fees of
monthly, tracking error no worse than monthly, net return no worse than any other rule)
and issue 13's (the same, but net return no worse than monthly's). Turnover and fees are
shown with and without the initial buy-in, which every rule pays alike; the checks use
the rebalancing part (``rebal_*``).

Data sets: windows of the Binance daily file (top-10 and top-20 universes, a fixed set
of 8 coins), the four-coin hourly file, and two sets the rules were not tuned on, built
from CoinGecko daily prices: earlier years (2015-2017) and other coins (2020-2021).
CoinGecko has closes only; bars are made with open = previous close. Issue 13 adds later
years of the Binance file (2022-23) and a top-20 of CoinGecko's 42 coins (2020-21).

``--universe-buffer 20/30`` (repeatable; ``20/30,stay:30`` adds a minimum stay in bars)
runs each ``top:20`` set a second time with the universe ``top:20/30``: enter at rank 20,
leave past 30 (see ``trimtab.data.universe.buffered_membership``). Each set also prints
how often its universe changes (entries + exits in the window) and its mean size.

    uv run python bench/compare_rebalance.py [--data ../shared/data] [--sets a,b]
        [--rules calendar:monthly,cost-aware] [--universe-buffer 20/30 ...]
        [--set rebalance.band_scale=2 ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.config import TrimtabConfig
from trimtab.data import load_panel
from trimtab.data.panel import Panel
from trimtab.engine.runner import RunSpec, run_comparison, select_members

RULES = (
    "calendar:daily",
    "calendar:weekly",
    "calendar:monthly",
    "threshold:0.05",
    "threshold:0.10",
    "cost-aware",
)
DAILY = "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
HOURLY = "ohlcv_1h_binance_spot_BTC_ETH_BNB_ADA_2017-2021.csv.gz"
GECKO = "price_mcap_1d_coingecko_42coins_2013-2021.csv.gz"
EIGHT = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "LTCUSDT", "TRXUSDT", "XLMUSDT")
EARLY = ("BTC", "LTC", "XRP", "DOGE", "XLM", "ETH")
OTHER = ("FTT", "LUNA", "KSM", "FTM", "HNT", "LRC", "REN", "KNCL", "SRM", "CAKE", "SUSHI", "GRT")


def gecko_panel(path: Path, symbols: tuple[str, ...]) -> Panel:
    raw = pd.read_csv(path, parse_dates=["timestamp"])
    raw = raw[raw["symbol"].isin(symbols)]
    raw = raw.assign(symbol=raw["symbol"] + "USDT")
    close = raw.pivot_table(index="timestamp", columns="symbol", values="price").sort_index()
    close = close.asfreq("1D")
    volume = raw.pivot_table(index="timestamp", columns="symbol", values="total_volume")
    volume = volume.reindex(close.index)
    open_ = close.shift(1).where(close.notna())
    open_ = open_.fillna(close)
    frames = {
        "open": open_,
        "high": np.maximum(open_, close),
        "low": np.minimum(open_, close),
        "close": close,
        "volume": volume / close,
        "quote_volume": volume,
        "has_bar": close.notna(),
    }
    return Panel(**frames, timeframe="1d", provenance={"source": "coingecko"})


def data_sets(root: Path) -> dict[str, tuple[Panel, dict]]:
    daily = load_panel(root / DAILY)
    out = {
        "top10 2018-20": (daily, dict(universe="top:10", start="2018-01-01", end="2020-12-31")),
        "top10 2021-23": (daily, dict(universe="top:10", start="2021-01-01", end="2023-12-31")),
        "top20 2018-20": (daily, dict(universe="top:20", start="2018-01-01", end="2020-12-31")),
        "top20 2021-23": (daily, dict(universe="top:20", start="2021-01-01", end="2023-12-31")),
        "8 coins 2019-23": (daily, dict(symbols=EIGHT, start="2019-01-01", end="2023-12-31")),
        # Later years (issue 13): inside the 2021-23 window the defaults were chosen on.
        "top10 2022-23": (daily, dict(universe="top:10", start="2022-01-01", end="2023-12-31")),
        "top20 2022-23": (daily, dict(universe="top:20", start="2022-01-01", end="2023-12-31")),
    }
    hourly = load_panel(root / HOURLY)
    out["hourly 2020-21"] = (hourly, dict(start="2020-09-01", end="2021-06-30"))
    out["early 2015-17*"] = (
        gecko_panel(root / GECKO, EARLY),
        dict(start="2015-09-01", end="2017-08-31"),
    )
    out["other 2020-21*"] = (
        gecko_panel(root / GECKO, OTHER),
        dict(start="2020-11-01", end="2021-10-17"),
    )
    gecko = gecko_panel(root / GECKO, tuple(pd.read_csv(root / GECKO)["symbol"].unique()))
    out["gecko top20 2020-21*"] = (
        gecko,
        dict(universe="top:20", start="2020-01-01", end="2021-10-17"),
    )
    return out


def with_buffers(
    sets: dict[str, tuple[Panel, dict]], buffers: list[str]
) -> dict[str, tuple[Panel, dict]]:
    """Each ``top:N`` set, then its twin with the universe ``top:N/M[,stay:K]`` for every
    buffer ``N/M[,stay:K]`` of the same entry rank N."""
    out = {}
    for name, (panel, window) in sets.items():
        out[name] = (panel, window)
        for buffer in buffers:
            enter = buffer.split("/")[0].split(",")[0].strip()
            if window.get("universe") == f"top:{enter}":
                out[f"{name} [{buffer}]"] = (panel, {**window, "universe": f"top:{buffer}"})
    return out


def universe_changes(panel: Panel, window: dict) -> tuple[int, float] | None:
    """Entries + exits of the run's universe inside the window, and its mean size."""
    if not window.get("universe"):
        return None
    _, members = select_members(panel, RunSpec(universe=window["universe"]))
    if members is None:
        return None
    x = members.loc[window["start"] : window["end"]].to_numpy().astype(int)
    return int(np.abs(np.diff(x, axis=0)).sum()), float(x.sum(axis=1).mean())


def parse_overrides(items: list[str]) -> TrimtabConfig:
    """A configuration with the overrides and no safety layer in the way: every rule
    must run unguarded, like the calendar and threshold ones."""
    sections: dict[str, dict] = {
        "limits": {"max_drawdown": 0.999},
        "breakers": {"daily_loss_limit": None, "loss_streak": None, "stale_data_bars": None},
    }
    for item in items:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        sections.setdefault(section, {})[field] = float(value)
    return TrimtabConfig(**sections)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sets", default=None, help="comma-separated data set names (prefixes)")
    ap.add_argument(
        "--set", action="append", default=[], help="config override, e.g. rebalance.band_scale=2"
    )
    ap.add_argument(
        "--rules",
        default=",".join(RULES),
        help="comma-separated rules (calendar:monthly and cost-aware are always run)",
    )
    ap.add_argument(
        "--universe-buffer",
        action="append",
        default=[],
        metavar="N/M[,stay:K]",
        help="also run each top:N set with the universe top:N/M[,stay:K]",
    )
    args = ap.parse_args()
    config = parse_overrides(args.set)
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    rules += [r for r in ("calendar:monthly", "cost-aware") if r not in rules]
    sets = data_sets(Path(args.data))
    if args.sets:
        wanted = [w.strip() for w in args.sets.split(",")]
        sets = {k: v for k, v in sets.items() if any(k.startswith(w) for w in wanted)}
    sets = with_buffers(sets, args.universe_buffer)
    passed = {"turnover": 0, "fees": 0, "tracking": 0, "return": 0, "return_best": 0}
    seconds = dict.fromkeys(rules, 0.0)
    summary = []
    t0 = time.perf_counter()
    for name, (panel, window) in sets.items():
        rows = {}
        for rule in rules:
            spec = RunSpec(policy="equal-weight", rebalance=rule, baselines=(), **window)
            t = time.perf_counter()
            m = run_comparison(spec, panel=panel, settings=config).metrics["equal-weight"]
            seconds[rule] += time.perf_counter() - t
            rows[rule] = {
                "turnover": m["turnover"],
                "rebal_turnover": m["rebalance_turnover"],
                "fees": m["fees_paid"],
                "rebal_fees": m["rebalance_fees"],
                "tracking_error": m["tracking_error"],
                "net_return": m["total_return"],
                "sharpe": m["sharpe"],
            }
        table = pd.DataFrame(rows).T
        ca, monthly = table.loc["cost-aware"], table.loc["calendar:monthly"]
        others = table.drop(index="cost-aware")
        checks = {
            "turnover": ca.rebal_turnover <= 0.5 * monthly.rebal_turnover,
            "fees": ca.rebal_fees <= 0.5 * monthly.rebal_fees,
            "tracking": ca.tracking_error <= monthly.tracking_error,
            "return": ca.net_return >= monthly.net_return,
            "return_best": ca.net_return >= others.net_return.max(),
        }
        for k, ok in checks.items():
            passed[k] += int(ok)
        churn = universe_changes(panel, window)
        print(f"\n== {name}")
        if churn:
            print(f"   universe: {churn[0]} entries + exits, {churn[1]:.1f} members on average")
        print(table.to_string(float_format=lambda v: f"{v:,.3f}"))
        print("   checks:", ", ".join(f"{k} {'ok' if ok else 'FAIL'}" for k, ok in checks.items()))
        issue = all(checks[k] for k in ("turnover", "fees", "tracking", "return"))
        summary.append(
            f"| {name} | {churn[0] if churn else '-'} | "
            f"{ca.rebal_turnover / monthly.rebal_turnover:.2f} | "
            f"{ca.rebal_fees / monthly.rebal_fees:.2f} | "
            f"{ca.tracking_error:.2%} / {monthly.tracking_error:.2%} | "
            f"{ca.net_return:,.0%} / {monthly.net_return:,.0%} | {'pass' if issue else 'fail'} |"
        )
    n = len(sets)
    print(f"\npassed of {n}: " + ", ".join(f"{k} {v}" for k, v in passed.items()))
    print("\ncost-aware against calendar:monthly (issue 13's check: turnover and fees <= 0.5,")
    print("tracking error and net return no worse):")
    print("| data set | universe changes | turnover | fees | tracking error | net return | check |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    print("seconds per rule, all data sets (data preparation included):")
    print("   " + ", ".join(f"{r} {t:.2f}" for r, t in seconds.items()))
    print(f"({time.perf_counter() - t0:.0f} s; * = data sets not used to choose the defaults)")


if __name__ == "__main__":
    main()
