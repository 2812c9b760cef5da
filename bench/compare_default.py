"""The default portfolio against BTC held, on several data sets (issue 13's acceptance check).

Runs a portfolio file (default ``examples/portfolio.yaml``) with ``run_portfolio`` over
each data set, overriding only the period (daily bars, taker fee 10 bps, the other costs
at their defaults), and prints per set the total's and each subaccount's CAGR, Sharpe,
max drawdown and Calmar, BTC held over the same bars, and the four checks:

1. the total's Sharpe >= BTC held's;
2. the total's Calmar >= 0.65;
3. the total's max drawdown <= 30 %;
4. the total's Calmar > every single subaccount's Calmar ("better than every single
   strategy"). A subaccount whose NAV never moved in the window (carry without funding
   data holds cash) has Calmar n/a and is left out of this check, which says so.

Metrics (``trimtab.analytics.metrics``, 365-day years, risk-free 0): on the total equity,
on each subaccount's ``nav`` (its equity with transfers taken out) and on BTC's close
over the total's bars (bought at the first bar's close, no fee: one 10 bps buy moves the
figures by less than their printed precision).

Data sets:

* Binance 34-coin daily file, 2019-20, 2021-22, 2022-23, 2019-23: the lead chose the
  defaults on these ("tuned on");
* CoinGecko's 42-coin daily file (closes, market caps and total volumes only), not used
  for tuning: 2015-18 (earlier years), 2019-21 (other source and coin set; its years
  overlap the tuning windows, so it is marked "partly"), and "other coins": the CoinGecko
  coins that are not among the Binance 34, from the first month start at which at least
  ``--min-liquid`` (8) of them have a 30-day median volume >= 10 M USD to the file's end.
  There BTC and ETH are not in the data, so the trend and carry subaccounts are given
  the set's two largest coins by market cap at the window's start (the remap is printed).

CoinGecko bars: open = previous close, high/low = max/min of open and close, quote volume
= CoinGecko's total volume (all venues, so larger than one venue's), base volume = quote
volume / close. Cleaning, documented because the file has bad early rows: rows off the
UTC midnight grid are rounded to the nearest day (two BTC rows in June 2017; a duplicate
day keeps its first row); a coin starts at its first day with volume >= 1 M USD (BNB
before 2017-10-30 traded a few USD a day at a tenth of its price); a one-day spike
(a close more than 3x away from both neighbours, which agree within 1.5x) takes the
previous close.

Carry: the run finds the funding file beside the data (``funding_BTC_ETH_7venues_2020-2022``:
BTC and ETH perpetuals), so the carry is flat before 2020 and after 2022. For "other
coins" (no funding rates for its coins) ``backtest.funding`` is set to a placeholder file
with one zero rate per symbol dated 2000-01-01: the carry's signal is stale at every bar
and it holds cash, as it does where the real file has no rates.

    uv run python bench/compare_default.py [--portfolio examples/portfolio.yaml]
        [--data ../shared/data] [--sets binance,gecko] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from trimtab.analytics.metrics import (
    cagr,
    calmar_ratio,
    max_drawdown,
    returns_from_equity,
    sharpe_ratio,
)
from trimtab.data import load_panel
from trimtab.data.panel import Panel, panel_from_long
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio
from trimtab.execution.costs import CostModel

ROOT = Path(__file__).resolve().parents[1]
DAILY = "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
GECKO = "price_mcap_1d_coingecko_42coins_2013-2021.csv.gz"
FUNDING = "funding_BTC_ETH_7venues_2020-2022.csv.gz"
YEAR = 365.0  # daily bars, crypto trades every day
FEE_BPS = 10.0
# Checks of issue 13.
MIN_CALMAR = 0.65
MAX_MDD = 0.30
# CoinGecko cleaning and the "other coins" liquidity screen (USD per day).
START_VOLUME = 1e6
LIQUID_VOLUME = 10e6
SPIKE = 3.0
SPIKE_NEIGHBOURS = 1.5
REMAPPED = ("trend", "carry")


@dataclass
class DataSet:
    """One run's data: the panel, the period (UTC, inclusive), BTC's close for the
    benchmark, whether the defaults were chosen on it, and the symbols given to the
    trend/carry subaccounts instead of the file's (strategy -> symbols; empty: the
    file's)."""

    name: str
    panel: Panel
    start: str
    end: str
    btc: pd.Series
    sample: str  # "tuned on" | "partly" | "not tuned"
    remap: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- CoinGecko bars ----------------------------------------------------------------------


def read_gecko(path: Path) -> pd.DataFrame:
    """The CoinGecko file cleaned (see the module docstring): one row per coin and UTC
    day, ``timestamp, symbol, price, market_cap, total_volume``, coins as ``XUSDT``."""
    raw = pd.read_csv(path, parse_dates=["timestamp"])
    raw["timestamp"] = raw["timestamp"].dt.round("1D")
    raw = raw.drop_duplicates(["timestamp", "symbol"], keep="first")
    raw["symbol"] = raw["symbol"] + "USDT"
    raw = raw.sort_values(["symbol", "timestamp"], kind="stable")
    out = []
    for _, rows in raw.groupby("symbol", sort=True):
        ok = rows["total_volume"].to_numpy() >= START_VOLUME
        if not ok.any():
            continue
        rows = rows.iloc[int(np.argmax(ok)) :].copy()
        price = rows["price"].to_numpy(float).copy()
        for t in range(1, len(price) - 1):
            prev, here, nxt = price[t - 1], price[t], price[t + 1]
            if max(prev, nxt) / min(prev, nxt) > SPIKE_NEIGHBOURS:
                continue
            if here > SPIKE * max(prev, nxt) or here * SPIKE < min(prev, nxt):
                price[t] = prev
        rows["price"] = price
        out.append(rows)
    return pd.concat(out, ignore_index=True)


def gecko_panel(gecko: pd.DataFrame, symbols: list[str] | None = None) -> Panel:
    """Daily bars from CoinGecko closes: open = previous close, high/low = max/min of
    open and close, quote volume = total volume (USD), base volume = quote / close."""
    rows = gecko if symbols is None else gecko[gecko["symbol"].isin(symbols)]
    rows = rows.sort_values(["symbol", "timestamp"], kind="stable")
    close = rows["price"].astype(float)
    open_ = close.groupby(rows["symbol"]).shift(1).fillna(close)
    bars = pd.DataFrame(
        {
            "timestamp": rows["timestamp"],
            "symbol": rows["symbol"],
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "volume": rows["total_volume"] / close,
            "quote_volume": rows["total_volume"].astype(float),
        }
    )
    return panel_from_long(bars, "1d", {"source": "coingecko"})


def located(panel: Panel, path: Path) -> Panel:
    """``panel`` saying it was read from ``path``, as a run loaded from ``--data PATH``
    says: a carry subaccount finds its funding file beside it."""
    return replace(panel, provenance={**panel.provenance, "location": {"path": str(path)}})


def monthly_frame(gecko: pd.DataFrame, column: str) -> pd.DataFrame:
    """``column`` as a day x coin frame."""
    return gecko.pivot(index="timestamp", columns="symbol", values=column).asfreq("1D")


def _base(symbol: str) -> str:
    """The coin of a pair: ``ARBUSD`` -> ``AR`` (Binance's AR trades against BUSD)."""
    for quote in ("USDT", "BUSD", "USDC", "USD"):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return symbol


def other_coins(
    gecko: pd.DataFrame, binance: list[str], min_liquid: int
) -> tuple[list[str], pd.Timestamp | None, pd.Series]:
    """The CoinGecko coins not among the Binance ones, the first month start at which at
    least ``min_liquid`` of them have a 30-day median volume >= ``LIQUID_VOLUME`` (known
    at that day: the window before it), and the count of such coins per month start."""
    have = {_base(s) for s in binance}
    coins = sorted(s for s in gecko["symbol"].unique() if _base(s) not in have)
    volume = monthly_frame(gecko[gecko["symbol"].isin(coins)], "total_volume")
    median = volume.rolling(30, min_periods=20).median().shift(1)
    liquid = (median >= LIQUID_VOLUME).sum(axis=1)
    months = liquid[liquid.index.day == 1]
    enough = months[months >= min_liquid]
    return coins, (enough.index[0] if len(enough) else None), months


def largest(gecko: pd.DataFrame, coins: list[str], at: pd.Timestamp, n: int = 2) -> list[str]:
    """The ``n`` largest of ``coins`` by market cap on the day before ``at``."""
    caps = monthly_frame(gecko[gecko["symbol"].isin(coins)], "market_cap")
    day = caps.loc[: at - pd.Timedelta(days=1)].iloc[-1]
    return list(day[day > 0].sort_values(ascending=False).index[:n])


# --- the data sets -----------------------------------------------------------------------


def data_sets(root: Path, wanted: list[str] | None, min_liquid: int) -> list[DataSet]:
    """Every data set of the module docstring (only those whose name starts with one of
    ``wanted``)."""

    def chosen(name: str) -> bool:
        return not wanted or any(name.lower().startswith(w.lower()) for w in wanted)

    out: list[DataSet] = []
    daily = located(load_panel(root / DAILY), root / DAILY)
    btc = daily.close["BTCUSDT"]
    for start, end in (
        ("2019-01-01", "2020-12-31"),
        ("2021-01-01", "2022-12-31"),
        ("2022-01-01", "2023-12-31"),
        ("2019-01-01", "2023-12-31"),
    ):
        name = f"binance {start[:4]}-{end[2:4]}"
        if chosen(name):
            out.append(DataSet(name, daily, start, end, btc, "tuned on"))
    if not any(chosen(n) for n in ("gecko 2015-18", "gecko 2019-21", "other coins")):
        return out
    gecko = read_gecko(root / GECKO)
    everything = located(gecko_panel(gecko), root / GECKO)
    gbtc = monthly_frame(gecko, "price")["BTCUSDT"]
    end = gecko["timestamp"].max().strftime("%Y-%m-%d")
    if chosen("gecko 2015-18"):
        out.append(
            DataSet(
                "gecko 2015-18",
                everything,
                "2015-01-01",
                "2018-12-31",
                gbtc,
                "not tuned",
                notes=["CoinGecko, all 42 coins; earlier years than any tuning window"],
            )
        )
    if chosen("gecko 2019-21"):
        out.append(
            DataSet(
                "gecko 2019-21",
                everything,
                "2019-01-01",
                end,
                gbtc,
                "partly",
                notes=["CoinGecko, all 42 coins; its years overlap the tuning windows"],
            )
        )
    if chosen("other coins"):
        coins, first, months = other_coins(gecko, daily.symbols, min_liquid)
        counts = ", ".join(f"{t:%Y-%m} {n}" for t, n in months.loc["2020-01-01":].items())
        if first is None:
            print(f"other coins: fewer than {min_liquid} liquid coins in any month; skipped")
        else:
            start = first.strftime("%Y-%m-%d")
            two = tuple(largest(gecko, coins, first))
            out.append(
                DataSet(
                    f"other coins {start[:7]}..{end[:7]}",
                    located(gecko_panel(gecko, coins), root / GECKO),
                    start,
                    end,
                    gbtc,
                    "not tuned",
                    remap={kind: two for kind in REMAPPED},
                    notes=[
                        f"CoinGecko coins not among the Binance 34: {', '.join(coins)}",
                        f"liquid coins (30-day median volume >= {LIQUID_VOLUME / 1e6:.0f} M "
                        f"USD) per month start: {counts}",
                        f"trend and carry given {', '.join(two)} (largest by market cap "
                        f"on {first - pd.Timedelta(days=1):%Y-%m-%d}) instead of the file's "
                        "symbols; BTC held from CoinGecko's BTC (not in this set's data)",
                    ],
                )
            )
    return out


# --- running and measuring ---------------------------------------------------------------


def portfolio_text(
    text: str, remap: dict[str, tuple[str, ...]], no_funding: Path | None
) -> tuple[str, list[str]]:
    """The file's text, with ``symbols:`` of every subaccount whose strategy is in
    ``remap`` replaced, and ``backtest.funding`` set to ``no_funding`` when the carry's
    new symbols have no funding rates (see ``placeholder_funding``); what was changed."""
    if not remap:
        return text, []
    doc = yaml.safe_load(text)
    changed = []
    for name, sub in (doc.get("subaccounts") or {}).items():
        kind = (sub or {}).get("strategy")
        if kind in remap and sub.get("symbols") is not None:
            changed.append(f"{name} ({kind}): {sub['symbols']} -> {list(remap[kind])}")
            sub["symbols"] = list(remap[kind])
            if kind == "carry" and no_funding is not None:
                doc.setdefault("backtest", {})["funding"] = str(no_funding)
                changed.append(
                    f"{name} ({kind}): no funding rates for {', '.join(remap[kind])}: "
                    "backtest.funding set to a placeholder (one zero rate per symbol on "
                    "2000-01-01), so its signal is stale and it holds cash"
                )
    return yaml.safe_dump(doc, sort_keys=False), changed


def placeholder_funding(symbols: tuple[str, ...], folder: Path) -> Path:
    """A funding file with one zero rate per symbol (Binance, 2000-01-01): the carry's
    trailing signal is stale at every bar of the data, so it stays flat, as it does
    where the real file has no rates."""
    path = folder / "funding_placeholder.csv.gz"
    pd.DataFrame(
        {
            "timestamp": ["2000-01-01T00:00:00+00:00"] * len(symbols),
            "symbol": list(symbols),
            "venue": ["binance"] * len(symbols),
            "funding_rate": [0.0] * len(symbols),
        }
    ).to_csv(path, index=False)
    return path


def measure(equity: pd.Series) -> dict[str, float]:
    """CAGR, Sharpe, max drawdown and Calmar of an equity curve (365-day years)."""
    r = returns_from_equity(equity)
    return {
        "cagr": cagr(r, YEAR),
        "sharpe": sharpe_ratio(r, YEAR),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar_ratio(r, YEAR),
    }


def run_set(
    ds: DataSet, text: str, source: str, folder: Path, funded: set[str], scratch: Path
) -> dict[str, Any]:
    """Run the file over one data set; the figures and checks as a dict. ``funded``: the
    symbols the shared funding file has rates for."""
    carry = ds.remap.get("carry", ())
    no_funding = None
    if carry and not set(carry) & funded:
        no_funding = placeholder_funding(carry, scratch)
    body, changed = portfolio_text(text, ds.remap, no_funding)
    portfolio = parse_portfolio(body, source, folder)
    options = PortfolioOptions(
        start=ds.start,
        end=ds.end,
        timeframe="1d",
        costs=CostModel(taker_fee_bps=FEE_BPS),
    )
    t0 = time.perf_counter()
    run = run_portfolio(portfolio, options, panel=ds.panel)
    seconds = time.perf_counter() - t0
    index = run.equity.index
    rows: dict[str, dict[str, Any]] = {"total": {**measure(run.equity), "strategy": "allocator"}}
    excluded = []
    for name, r in run.subaccounts.items():
        kind = run.plans[name].settings.strategy
        nav = r.nav.reindex(index)
        flat = bool(np.allclose(nav.to_numpy(float), float(nav.iloc[0]), rtol=1e-12, atol=0))
        row = {**measure(nav), "strategy": kind, "flat": flat, "trades": len(r.trades)}
        if flat:
            # Float dust of transfers (1e-12 USDT) would give a Sharpe of noise.
            row.update(sharpe=float("nan"), calmar=float("nan"))
            excluded.append(f"{name} ({kind}): NAV never moved (held cash), Calmar n/a")
        elif not math.isfinite(row["calmar"]):
            excluded.append(f"{name} ({kind}): Calmar undefined (no drawdown)")
        rows[name] = row
    btc = ds.btc.reindex(index).ffill()
    rows["BTC held"] = {**measure(btc.dropna()), "strategy": "benchmark"}
    total = rows["total"]
    singles = {
        n: row["calmar"]
        for n, row in rows.items()
        if n not in ("total", "BTC held") and math.isfinite(row["calmar"])
    }
    best = max(singles.items(), key=lambda kv: kv[1]) if singles else (None, float("nan"))
    checks = {
        "sharpe_ge_btc": bool(total["sharpe"] >= rows["BTC held"]["sharpe"]),
        "calmar_ge_0.65": bool(total["calmar"] >= MIN_CALMAR),
        "mdd_le_30pct": bool(total["max_drawdown"] <= MAX_MDD),
        "beats_every_single": bool(singles) and all(total["calmar"] > c for c in singles.values()),
    }
    return {
        "set": ds.name,
        "sample": ds.sample,
        "start": index[0].strftime("%Y-%m-%d"),
        "end": index[-1].strftime("%Y-%m-%d"),
        "bars": len(index),
        "symbols_traded": len(run.symbols),
        "rows": rows,
        "best_single": {"name": best[0], "calmar": best[1]},
        "excluded_from_single_check": excluded,
        "remapped": changed,
        "notes": ds.notes + list(run.notes),
        "checks": checks,
        "seconds": seconds,
    }


# --- printing ----------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.1%}"


def _num(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def _ok(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def print_set(res: dict[str, Any]) -> None:
    print(
        f"\n== {res['set']} [{res['sample']}]: {res['start']} to {res['end']}, "
        f"{res['bars']} bars, {res['symbols_traded']} symbols traded, {res['seconds']:.1f} s"
    )
    for note in res["notes"]:
        print(f"   {note}")
    for line in res["remapped"]:
        print(f"   remapped: {line}")
    print(f"   {'':<12} {'strategy':<15} {'CAGR':>9} {'Sharpe':>7} {'max DD':>8} {'Calmar':>7}")
    for name, row in res["rows"].items():
        print(
            f"   {name:<12} {row['strategy']:<15} {_pct(row['cagr']):>9} "
            f"{_num(row['sharpe']):>7} {_pct(row['max_drawdown']):>8} {_num(row['calmar']):>7}"
        )
    for line in res["excluded_from_single_check"]:
        print(f"   left out of the single-strategy check: {line}")
    c = res["checks"]
    print(
        "   checks: "
        + ", ".join(
            f"{label} {_ok(c[key])}"
            for key, label in (
                ("sharpe_ge_btc", "Sharpe >= BTC"),
                ("calmar_ge_0.65", "Calmar >= 0.65"),
                ("mdd_le_30pct", "MDD <= 30 %"),
                ("beats_every_single", "Calmar > every single"),
            )
        )
    )


def summary_table(results: list[dict[str, Any]]) -> list[str]:
    """The summary as Markdown lines (one row per data set)."""
    lines = [
        "| data set | sample | Sharpe (total / BTC) | Calmar | max DD | best single Calmar "
        "| Sharpe >= BTC | Calmar >= 0.65 | MDD <= 30 % | > every single |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        t, b, c = res["rows"]["total"], res["rows"]["BTC held"], res["checks"]
        best = res["best_single"]
        single = f"{_num(best['calmar'])} ({best['name']})" if best["name"] else "n/a"
        lines.append(
            f"| {res['set']} | {res['sample']} | {_num(t['sharpe'])} / {_num(b['sharpe'])} | "
            f"{_num(t['calmar'])} | {_pct(t['max_drawdown'])} | {single} | "
            f"{_ok(c['sharpe_ge_btc'])} | {_ok(c['calmar_ge_0.65'])} | "
            f"{_ok(c['mdd_le_30pct'])} | {_ok(c['beats_every_single'])} |"
        )
    return lines


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portfolio", default=str(ROOT / "examples" / "portfolio.yaml"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--sets", default=None, help="comma-separated name prefixes, e.g. binance")
    ap.add_argument("--min-liquid", type=int, default=8, help="other coins: liquid coins needed")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    args = ap.parse_args()
    path = Path(args.portfolio)
    if not path.is_file():
        raise SystemExit(f"compare_default: no portfolio file at {path}")
    text = path.read_text(encoding="utf-8")
    root = Path(args.data)
    wanted = [w.strip() for w in args.sets.split(",")] if args.sets else None
    t0 = time.perf_counter()
    sets = data_sets(root, wanted, args.min_liquid)
    funded = set(pd.read_csv(root / FUNDING, usecols=["symbol"])["symbol"].unique())
    print(
        f"portfolio {path}; daily bars, taker fee {FEE_BPS:g} bps, other costs default; a "
        f"carry subaccount reads the funding file beside the data ({FUNDING}: "
        f"{', '.join(sorted(funded))}), flat where it has no rate"
    )
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for ds in sets:
            res = run_set(ds, text, str(path), path.parent, funded, Path(scratch))
            print_set(res)
            results.append(res)
    lines = summary_table(results)
    print("\nsummary (issue 13: Sharpe >= BTC held, Calmar >= 0.65, MDD <= 30 %, Calmar above")
    print("every single subaccount's; 'tuned on' = the defaults were chosen on these windows):")
    print("\n".join(lines))
    for key in ("sharpe_ge_btc", "calmar_ge_0.65", "mdd_le_30pct", "beats_every_single"):
        n = sum(r["checks"][key] for r in results)
        print(f"   {key}: {n} of {len(results)} sets")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        doc = {
            "portfolio": str(path),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "taker_fee_bps": FEE_BPS,
            "sets": results,
            "summary": lines,
        }
        Path(args.json).write_text(json.dumps(_json_ready(doc), indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
