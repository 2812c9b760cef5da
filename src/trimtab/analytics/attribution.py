"""Performance attribution over what a run recorded: PnL lines that add up to the money
made, Brinson-Fachler against a benchmark, timing, beta and alpha.

Everything works from a ``RunLedger`` (built by ``load_run`` from a run folder, or by
``ledger_from_result`` / ``ledger_from_results`` from a backtest in memory), so the
maths does not care where the run came from.

PnL lines, per subaccount, symbol and bar t (quote currency, USDT)::

    price       = q[t-1] * (m[t] - m[t-1]) + sum over fills of dq * (m[t] - ref)
    execution   = sum over fills of dq * (ref - fill price)      (spread and impact)
    fees        = - fees paid (quote; a base-asset fee valued at the fill price)
    funding     = funding received on perpetuals
    liquidation = - margin forfeited in liquidations

``q`` is the quantity held at a close (base units), ``m`` the close mark, ``dq`` a fill's
signed change of the position (a base-asset fee included), ``ref`` the bar's open (the
price a market order fills at before spread and impact; a liquidation's own price).
Their sum is the subaccount's equity change net of transfers, up to float rounding
(``residual``, reported, never folded into a line). A perpetual is marked like spot
here: its equity moves by ``q * dm`` plus funding, as the ledger books it.

A sleeve subaccount (market making, copy trading: a strategy simulated on its own clock,
``trimtab.engine.sleeve_run``) holds no position at the bars: its PnL is its equity change
net of transfers per bar, booked on one row ``sleeve:NAME`` and split into the parts the
sleeve reports. Its trades (intraday) are listed (``Attribution.sleeve_trades``), never
re-priced at bars. Per bar t, from its trade rows in the bar (``(close[t-1], close[t]]``)::

    fees        = - fees of its fills in the bar
    execution   = market making: its spread capture over the run (summary, at the
                  simulated capital) x the bar's filled volume over the run's volume
                  (exact when one bar holds all its fills); copy: sum of dq * (leader's
                  price - fill price), the delay's slippage, spread and impact (0 for an
                  unfollow's closing fill); other sleeves: 0
    price       = pnl - fees - execution   (inventory PnL; the copy's market move)

so its lines add up to its PnL exactly. In Brinson-Fachler a sleeve is its own segment,
weighted by its equity and returning its return, against itself (all allocation); in
timing its PnL counts as held.

Returns are per bar: ``pnl[t] / equity[t-1]`` (transfers are made at a close, after the
bar's PnL). Periods are the bars' UTC stamps (a bar is stamped with its open time), both
ends inclusive. Years are 365 days.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "LINES",
    "Attribution",
    "AttributionError",
    "BrinsonFachler",
    "Regression",
    "RunLedger",
    "SLEEVE_PARTS",
    "sleeve_lines_text",
    "attribute",
    "benchmark_returns",
    "beta_alpha",
    "bf_effects",
    "brinson_fachler",
    "find_caps_file",
    "load_caps",
    "newey_west_lags",
    "henriksson_merton",
    "GROUPS",
    "ledger_from_result",
    "ledger_from_results",
    "load_run",
    "ols",
    "portfolio_returns",
    "timing",
    "treynor_mazuy",
]

#: The PnL lines, in the order they are shown; their sum is the PnL.
LINES = ("price", "execution", "fees", "funding", "liquidation")

#: What each line of a sleeve subaccount is, per sleeve kind (``Attribution.sleeves``).
SLEEVE_PARTS: dict[str, dict[str, str]] = {
    "market-making": {"execution": "spread capture", "price": "inventory", "fees": "fees"},
    "copy": {"execution": "slippage", "price": "market move", "fees": "fees"},
}
#: The ledger symbol of a sleeve subaccount's PnL row.
SLEEVE_PREFIX = "sleeve:"
_LEADER_PRICE = re.compile(r"leader (?:buy|sell) \S+ \S+ at ([-+0-9.eE]+) on ")

_PERP = "-PERP"
_LEDGER_COLUMNS = ("timestamp", "symbol", "quantity", "mark", "open", "funding", "liquidation")

Benchmark = Literal["btc", "equal", "cap"]


class AttributionError(ValueError):
    """A run or an option attribution cannot work with (names what and where)."""


# --------------------------------------------------------------------------------------
# The input: what a run recorded
# --------------------------------------------------------------------------------------


@dataclass
class RunLedger:
    """What attribution reads of a run, per subaccount (quote currency, USDT).

    ``equity``, ``flows``: bars x subaccount, at each close (flows: transfers in > 0, made
    at that close). ``positions``: long rows ``subaccount, timestamp, symbol, quantity,
    mark, open, funding, liquidation`` for every (bar, symbol) held at the close or the
    close before, traded, funded or liquidated in the bar. ``trades``: long rows
    ``subaccount, timestamp, symbol, delta`` (signed change of the position, base units),
    ``price``, ``fee`` (quote), ``liquidation`` (bool) and ``reason``. ``prices``: bars x symbol closes
    of the run's universe (for benchmarks and counterfactuals), or None. ``caps``: bars x
    symbol market caps (causal), or None. ``sleeves``: the sleeve subaccounts, name ->
    ``{"kind", "summary"}`` (result.json's ``sleeve`` entry); ``bar``: the bars' length
    (None: the index's smallest step), to place a sleeve's intraday trades in their bar.
    """

    equity: pd.DataFrame
    flows: pd.DataFrame
    positions: pd.DataFrame
    trades: pd.DataFrame
    prices: pd.DataFrame | None = None
    caps: pd.DataFrame | None = None
    periods_per_year: float = 365.0
    source: str = ""
    sleeves: dict[str, dict[str, Any]] = field(default_factory=dict)
    bar: pd.Timedelta | None = None

    def __post_init__(self) -> None:
        if self.equity.empty:
            raise AttributionError(f"{self.source or 'run'}: no equity recorded")
        if list(self.flows.columns) != list(self.equity.columns):
            raise AttributionError("flows and equity must have the same subaccounts")

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.equity.index)

    @property
    def subaccounts(self) -> list[str]:
        return [str(c) for c in self.equity.columns]

    def bar_length(self) -> pd.Timedelta:
        if self.bar is not None:
            return self.bar
        idx = self.index
        return pd.Timedelta(np.diff(idx.asi8).min()) if len(idx) > 1 else pd.Timedelta(days=1)


def _base_fee(symbol: str, currency: str) -> bool:
    """Was the fee charged in the base asset? (Quote fees: the symbol ends with it.)"""
    return not symbol.removesuffix(_PERP).removesuffix(":" + currency).endswith(currency)


def _trade_rows(trades: pd.DataFrame, subaccount: str) -> pd.DataFrame:
    """A run's trade rows (``trades.csv`` or ``BacktestResult.trades``) as ledger trades."""
    if trades.empty:
        return pd.DataFrame(
            {
                "subaccount": pd.Series(dtype=object),
                "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
                "symbol": pd.Series(dtype=object),
                "delta": pd.Series(dtype=float),
                "price": pd.Series(dtype=float),
                "fee": pd.Series(dtype=float),
                "liquidation": pd.Series(dtype=bool),
                "reason": pd.Series(dtype=object),
            }
        )
    sym = trades["symbol"].astype(str).to_numpy()
    cur = trades["fee_currency"].astype(str).to_numpy()
    fee = trades["fee"].astype(float).to_numpy()
    price = trades["price"].astype(float).to_numpy()
    qty = trades["quantity"].astype(float).to_numpy()
    sign = np.where(trades["side"].astype(str).str.lower().to_numpy() == "buy", 1.0, -1.0)
    base = np.array([_base_fee(s, c) for s, c in zip(sym, cur, strict=True)], dtype=bool)
    base &= fee != 0
    # A base-asset fee leaves the position too: received = bought - fee; sold = sold + fee.
    delta = sign * qty - np.where(base, fee, 0.0)
    fee_quote = np.where(base, fee * price, fee)
    reason = trades["reason"].astype(str).fillna("")
    return pd.DataFrame(
        {
            "subaccount": subaccount,
            "timestamp": pd.to_datetime(trades["timestamp"], utc=True).to_numpy(),
            "symbol": sym,
            "delta": delta,
            "price": price,
            "fee": fee_quote,
            "liquidation": reason.str.startswith("liquidated").to_numpy(),
            "reason": reason.to_numpy(),
        }
    ).assign(timestamp=lambda d: pd.to_datetime(d["timestamp"], utc=True))


def _position_rows(ledger: pd.DataFrame, subaccount: str) -> pd.DataFrame:
    missing = [c for c in _LEDGER_COLUMNS if c not in ledger.columns]
    if missing:
        raise AttributionError(f"subaccount {subaccount!r}: the ledger lacks {', '.join(missing)}")
    out = ledger[list(_LEDGER_COLUMNS)].copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    out.insert(0, "subaccount", subaccount)
    return out


def ledger_from_results(
    results: Mapping[str, Any],
    *,
    prices: pd.DataFrame | None = None,
    caps: pd.DataFrame | None = None,
    periods_per_year: float | None = None,
) -> RunLedger:
    """A ledger from backtest results in memory: ``{subaccount: BacktestResult}`` (a
    ``PortfolioRun.subaccounts`` or ``PortfolioResult.subaccounts``). ``prices``: the
    panel's closes (bars x symbol) for benchmarks; reindexed to the run's bars."""
    if not results:
        raise AttributionError("no subaccount results to attribute")
    equity, flows, positions, trades = {}, {}, [], []
    ppy = periods_per_year
    for name, r in results.items():
        if r.ledger is None:
            raise AttributionError(
                f"subaccount {name!r}: the result has no ledger (a run resumed from a store "
                "written by an older trimtab keeps none); run it again to attribute it"
            )
        equity[name] = r.equity.astype(float)
        flows[name] = r.flows.astype(float) if r.flows is not None else r.equity.astype(float) * 0.0
        positions.append(_position_rows(r.ledger, name))
        trades.append(_trade_rows(r.trades, name))
        ppy = ppy or float(r.periods_per_year)
    eq = pd.DataFrame(equity)
    return RunLedger(
        equity=eq,
        flows=pd.DataFrame(flows).reindex(eq.index).fillna(0.0),
        positions=pd.concat(positions, ignore_index=True),
        trades=pd.concat(trades, ignore_index=True),
        prices=_align(prices, eq.index),
        caps=_align(caps, eq.index),
        periods_per_year=ppy or 365.0,
        source="memory",
    )


def ledger_from_result(
    result: Any,
    *,
    prices: pd.DataFrame | None = None,
    caps: pd.DataFrame | None = None,
) -> RunLedger:
    """A ledger from one ``BacktestResult`` (its subaccount's name)."""
    return ledger_from_results({result.subaccount: result}, prices=prices, caps=caps)


def _align(frame: pd.DataFrame | None, index: pd.DatetimeIndex) -> pd.DataFrame | None:
    if frame is None:
        return None
    return frame.reindex(index).astype(float)


def _read_subaccount(folder: Path, name: str) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    """equity, ledger rows and trade rows of one run folder (or subaccount folder)."""
    for needed in ("equity.csv", "trades.csv"):
        if not (folder / needed).is_file():
            raise AttributionError(f"{folder}: no {needed}; is it a trimtab run folder?")
    if not (folder / "ledger.csv").is_file():
        raise AttributionError(
            f"{folder}: no ledger.csv (quantities, marks and funding per bar): the run was "
            "written by an older trimtab, or read back from a store an older trimtab "
            "recorded, which keeps none; run the backtest again with --out (and a new "
            "--run-id) to attribute it"
        )
    eq = pd.read_csv(folder / "equity.csv", index_col="timestamp")
    eq.index = pd.to_datetime(eq.index, utc=True)
    trades = pd.read_csv(folder / "trades.csv")
    ledger = pd.read_csv(folder / "ledger.csv")
    return eq["equity"].astype(float), _position_rows(ledger, name), _trade_rows(trades, name)


def load_run(
    folder: str | Path,
    *,
    prices: pd.DataFrame | None = None,
    caps: pd.DataFrame | str | Path | None = None,
    load_prices: bool = True,
    data: str | Path | None = None,
) -> RunLedger:
    """A ledger from a run folder (``trimtab backtest --out DIR``, with or without
    ``--portfolio``). Without ``prices``, the closes of the run's symbols are read from
    ``data`` or the data files its ``result.json`` names (``load_prices``; None if they
    are gone). ``caps``: market caps (bars x symbol) or the CoinGecko CSV's path."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AttributionError(f"{root}: no such run folder")
    if not (root / "result.json").is_file():
        raise AttributionError(f"{root}: no result.json; is it a trimtab run folder?")
    try:
        doc = json.loads((root / "result.json").read_text())
    except json.JSONDecodeError as exc:
        raise AttributionError(f"{root / 'result.json'}: not JSON ({exc})") from None
    subs_dir = root / "subaccounts"
    equity, positions, trades = {}, [], []
    if subs_dir.is_dir():
        names = list(doc.get("subaccounts") or sorted(p.name for p in subs_dir.iterdir()))
        for name in names:
            eq, pos, tr = _read_subaccount(subs_dir / name, name)
            equity[name] = eq
            positions.append(pos)
            trades.append(tr)
    else:
        name = str(doc.get("subaccount") or "main")
        eq, pos, tr = _read_subaccount(root, name)
        equity[name] = eq
        positions.append(pos)
        trades.append(tr)
    eq_frame = pd.DataFrame(equity)
    sleeves = {}
    for name, sub in (doc.get("subaccounts") or {}).items():
        sleeve = sub.get("sleeve") if isinstance(sub, Mapping) else None
        if isinstance(sleeve, Mapping) and name in eq_frame.columns:
            sleeves[str(name)] = {
                "kind": str(sleeve.get("kind") or sub.get("strategy") or "sleeve"),
                "summary": dict(sleeve.get("summary") or {}),
            }
    flows = pd.DataFrame(0.0, index=eq_frame.index, columns=eq_frame.columns)
    if (root / "transfers.csv").is_file():
        tr_doc = pd.read_csv(root / "transfers.csv")
        if not tr_doc.empty:
            for _, row in tr_doc.iterrows():
                moved = float(row.get("moved") or 0.0)
                if not moved > 0:
                    continue
                ts = pd.Timestamp(row["timestamp"])
                ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
                for who, sign in ((row["from"], -1.0), (row["to"], 1.0)):
                    if who not in flows.columns or ts not in flows.index:
                        raise AttributionError(
                            f"{root / 'transfers.csv'}: a transfer at {ts} names {who!r}, "
                            "not a subaccount of the run at one of its bars"
                        )
                    flows.loc[ts, who] += sign * moved
    if prices is None and load_prices:
        prices = _recorded_prices(doc, data)
    if isinstance(caps, (str, Path)):
        if prices is None:
            raise AttributionError(f"market caps ({caps}) need the run's prices to align to")
        caps = load_caps(caps, prices)
    timeframe = str(doc.get("timeframe") or "1d")
    from trimtab.data.panel import periods_per_year

    try:
        ppy = periods_per_year(timeframe)
    except (ValueError, KeyError):
        ppy = 365.0
    try:
        from trimtab.data.panel import timeframe_seconds

        bar = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    except (ValueError, KeyError):
        bar = None
    return RunLedger(
        equity=eq_frame,
        flows=flows,
        positions=pd.concat(positions, ignore_index=True),
        trades=pd.concat(trades, ignore_index=True),
        prices=_align(prices, eq_frame.index),
        caps=_align(caps, eq_frame.index),
        periods_per_year=ppy,
        source=str(root),
        sleeves=sleeves,
        bar=bar,
    )


def _recorded_prices(doc: Mapping[str, Any], data: str | Path | None = None) -> pd.DataFrame | None:
    """Closes of the run's symbols from ``data`` or the data files result.json names
    (None if they are not there: the PnL lines do not need them)."""
    source = data if data is not None else (doc.get("data") or {}).get("source")
    symbols = [s for s in (doc.get("symbols") or []) if not str(s).endswith(_PERP)]
    if not source or not symbols or not Path(source).exists():
        return None
    from trimtab.data.readers import load_panel

    try:
        panel = load_panel(
            source,
            timeframe=doc.get("timeframe"),
            symbols=symbols,
            start=doc.get("start"),
            end=doc.get("end"),
            policy=str((doc.get("data") or {}).get("policy") or "fail"),
        )
    except Exception:  # optional: the PnL lines do not need prices
        if data is not None:
            raise
        return None
    return panel.close


def find_caps_file(doc_or_folder: Mapping[str, Any] | str | Path) -> Path | None:
    """The CoinGecko market-cap CSV (``price_mcap*``) in a data folder (or the one a
    run's result.json names), or None."""
    if isinstance(doc_or_folder, Mapping):
        source = (doc_or_folder.get("data") or {}).get("source")
        if not source:
            return None
        folder = Path(source)
    else:
        folder = Path(doc_or_folder)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        return None
    found = sorted(folder.glob("price_mcap*.csv*"))
    return found[0] if found else None


def load_caps(path: str | Path, prices: pd.DataFrame, max_age: str = "7D") -> pd.DataFrame:
    """Market caps (CoinGecko CSV, ``read_market_caps``) aligned causally to ``prices``'
    bars and symbols (``BTCUSDT`` <- ``BTC``), as ``market_cap_panel`` aligns them."""
    from trimtab.data.readers import read_market_caps
    from trimtab.data.symbols import base_asset

    caps = read_market_caps(path)
    wide = caps.pivot_table(index="timestamp", columns="symbol", values="market_cap")
    wide = wide.sort_index()
    out = {}
    for sym in prices.columns:
        col = base_asset(sym)
        if col is None or col not in wide.columns:
            out[sym] = pd.Series(np.nan, index=prices.index)
            continue
        s = wide[col].dropna()
        s = s[~s.index.duplicated(keep="last")]
        out[sym] = s.reindex(prices.index, method="ffill", tolerance=pd.Timedelta(max_age))
    return pd.DataFrame(out, index=prices.index)


# --------------------------------------------------------------------------------------
# PnL lines
# --------------------------------------------------------------------------------------


@dataclass
class Attribution:
    """PnL lines over a period (quote currency, USDT).

    ``lines``: long rows ``timestamp, subaccount, symbol`` + ``LINES`` (one per bar and
    symbol). ``daily``: per UTC day, the lines summed over everything, ``total`` (their
    sum), ``pnl`` (equity change net of transfers) and ``residual`` (pnl - total: float
    rounding). ``cumulative``: ``daily`` summed up. ``by_asset``: (subaccount, symbol) x
    lines + total. ``by_subaccount``: subaccount x lines + total, pnl, residual, start and
    end equity, net transfers, with a ``TOTAL`` row. ``sleeves``: per sleeve subaccount,
    its ``kind``, ``pnl``, ``fills`` and each part under the sleeve's own name (market
    making: spread capture, inventory, fees; copy: market move, slippage, fees; one
    ``part:LINE`` column per line with its name in ``name:LINE``). ``sleeve_trades``: the
    sleeves' trades in the period, listed with the bar they fall in (``bar``), not
    re-priced.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    lines: pd.DataFrame
    daily: pd.DataFrame
    by_asset: pd.DataFrame
    by_subaccount: pd.DataFrame
    daily_by_subaccount: dict[str, pd.DataFrame] = field(default_factory=dict)
    sleeves: pd.DataFrame = field(default_factory=pd.DataFrame)
    sleeve_trades: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def cumulative(self) -> pd.DataFrame:
        return self.daily.cumsum()

    @property
    def total_pnl(self) -> float:
        """Equity change net of transfers over the period (quote)."""
        return float(self.by_subaccount.loc["TOTAL", "pnl"])

    @property
    def by_symbol(self) -> pd.DataFrame:
        """Lines per symbol, summed over subaccounts."""
        return self.by_asset.groupby(level="symbol").sum()


def sleeve_lines_text(a: Attribution) -> list[str]:
    """One line per sleeve subaccount: its PnL in its own parts (USDT, two decimals)."""
    out = []
    for name, row in a.sleeves.iterrows():
        parts = ", ".join(
            f"{row[f'name:{line}']} {row[f'part:{line}']:+,.2f}"
            for line in ("execution", "price", "fees")
        )
        out.append(
            f"sleeve {name} ({row['kind']}): PnL {row['pnl']:+,.2f} USDT = {parts} "
            f"(from its equity per bar; {int(row['fills'])} fills inside the bars, listed, "
            "not re-priced at bars)"
        )
    return out


def _window(index: pd.DatetimeIndex, start: Any, end: Any) -> tuple[int, int]:
    """Positions (first, last) of the bars in [start, end]; first >= 1 (bar 0 has no PnL)."""
    lo = 1
    hi = len(index) - 1
    if start is not None:
        lo = max(int(index.searchsorted(_utc(start), side="left")), 1)
    if end is not None:
        hi = int(index.searchsorted(_utc(end), side="right")) - 1
    if hi < lo:
        first = _utc(start) if start is not None else index[0]
        last = _utc(end) if end is not None else index[-1]
        raise AttributionError(
            f"no bars with PnL from {first:%Y-%m-%d} to {last:%Y-%m-%d}; the run "
            f"covers {index[0]:%Y-%m-%d} to {index[-1]:%Y-%m-%d} (its first bar has none)"
        )
    return lo, hi


def _utc(value: Any) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise AttributionError(f"not a date: {value!r} (use YYYY-MM-DD)") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _bar_lines(ledger: RunLedger) -> pd.DataFrame:
    """Every (bar, subaccount, symbol) row's PnL lines, over the whole run (a sleeve
    subaccount: one ``sleeve:NAME`` row per bar, module docstring)."""
    sleeves = [n for n in ledger.subaccounts if n in ledger.sleeves]
    pos, trades = ledger.positions, ledger.trades
    if sleeves:
        pos = pos[~pos["subaccount"].isin(sleeves)]
        trades = trades[~trades["subaccount"].isin(sleeves)]
    out = _market_lines(ledger, pos, trades)
    if not sleeves:
        return out
    rows = _sleeve_lines(ledger, sleeves)[0]
    frames = [f for f in (out, rows) if not f.empty]
    if not frames:
        return out
    merged = pd.concat(frames, ignore_index=True)
    return merged.sort_values(["k", "subaccount", "symbol"]).reset_index(drop=True)


def _sleeve_bar(ledger: RunLedger, trades: pd.DataFrame) -> np.ndarray:
    """The bar (position in the index) each sleeve trade falls in: the bar whose close
    (open + bar) is the first at or after it, as the engine books them; -1 outside."""
    closes = ledger.index + ledger.bar_length()
    stamps = pd.DatetimeIndex(pd.to_datetime(trades["timestamp"], utc=True))
    k = closes.searchsorted(stamps, side="left")
    return np.where((k >= 1) & (k < len(closes)), k, -1)


def _sleeve_lines(ledger: RunLedger, sleeves: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sleeve subaccounts' rows ``k, subaccount, symbol, LINES, held`` (one per bar
    from bar 1; held: the bar's PnL, all of it the sleeve's return) and their trades
    listed with the bar they fall in (``k``, ``bar``)."""
    pnl = _pnl(ledger)
    n = len(ledger.index)
    rows, listed = [], []
    for name in sleeves:
        info = ledger.sleeves.get(name) or {}
        kind = str(info.get("kind") or "")
        summary = info.get("summary") or {}
        tr = ledger.trades[ledger.trades["subaccount"] == name]
        k = _sleeve_bar(ledger, tr) if not tr.empty else np.zeros(0, dtype=int)
        tr = tr.assign(k=k)
        listed.append(tr)
        tr = tr[tr["k"] >= 1]
        fees = np.zeros(n)
        execution = np.zeros(n)
        if not tr.empty:
            np.add.at(fees, tr["k"].to_numpy(int), -tr["fee"].to_numpy(float))
            if kind == "copy":
                leader = tr["reason"] if "reason" in tr else pd.Series("", index=tr.index)
                ref = leader.fillna("").astype(str).str.extract(_LEADER_PRICE)[0].astype(float)
                ref = ref.to_numpy(float)
                price = tr["price"].to_numpy(float)
                # An unfollow's closing fill names no leader price: no slippage measured.
                ref = np.where(np.isfinite(ref), ref, price)
                np.add.at(
                    execution, tr["k"].to_numpy(int), tr["delta"].to_numpy(float) * (ref - price)
                )
            elif kind == "market-making":
                capture = float(summary.get("spread_capture") or 0.0)
                volume = float(summary.get("volume_usdt") or 0.0)
                if capture and volume > 0:
                    traded = np.abs(tr["delta"].to_numpy(float)) * tr["price"].to_numpy(float)
                    np.add.at(execution, tr["k"].to_numpy(int), capture * traded / volume)
        total = pnl[name].to_numpy(float)
        frame = pd.DataFrame(
            {
                "k": np.arange(1, n),
                "subaccount": name,
                "symbol": SLEEVE_PREFIX + name,
                "price": (total - fees - execution)[1:],
                "execution": execution[1:],
                "fees": fees[1:],
                "funding": 0.0,
                "liquidation": 0.0,
                "held": total[1:],
            }
        )
        rows.append(frame)
    empty = pd.DataFrame(columns=["k", "subaccount", "symbol", *LINES, "held"])
    out = pd.concat(rows, ignore_index=True) if rows else empty
    trades = pd.concat(listed, ignore_index=True) if listed else pd.DataFrame()
    return out, trades


def _market_lines(ledger: RunLedger, pos: pd.DataFrame, trades: pd.DataFrame) -> pd.DataFrame:
    """The lines of the subaccounts trading at the bars (module docstring)."""
    index = ledger.index
    if pos.empty and trades.empty:
        return pd.DataFrame(columns=["k", "subaccount", "symbol", *LINES, "held"])
    pos = pos.assign(k=index.get_indexer(pos["timestamp"]))
    if (pos["k"] < 0).any():
        bad = pos.loc[pos["k"] < 0, "timestamp"].iloc[0]
        raise AttributionError(f"the ledger has a row at {bad}, not a bar of the run")
    pos = pos.sort_values(["subaccount", "symbol", "k"])
    key = ["subaccount", "symbol"]
    prev = pos.groupby(key, sort=False)[["k", "quantity", "mark"]].shift(1)
    # The previous close's quantity only if the previous row is that bar (else 0 held).
    contiguous = prev["k"].to_numpy() == pos["k"].to_numpy() - 1
    q_prev = np.where(contiguous, prev["quantity"].to_numpy(float), 0.0)
    m_prev = np.where(contiguous, prev["mark"].to_numpy(float), np.nan)
    mark = pos["mark"].to_numpy(float)
    holding = np.where(q_prev != 0, q_prev * (mark - m_prev), 0.0)
    out = pos[["k", "subaccount", "symbol"]].copy()
    out["price"] = holding
    out["execution"] = 0.0
    out["fees"] = 0.0
    out["funding"] = pos["funding"].to_numpy(float)
    out["liquidation"] = -pos["liquidation"].to_numpy(float)
    # What the position held at the previous close made (Brinson-Fachler's R_i).
    out["held"] = holding + out["funding"] + out["liquidation"]
    tr = trades
    if not tr.empty:
        tr = tr.assign(k=index.get_indexer(tr["timestamp"]))
        if (tr["k"] < 0).any():
            bad = tr.loc[tr["k"] < 0, "timestamp"].iloc[0]
            raise AttributionError(f"a trade at {bad} is not at a bar of the run")
        merged = tr.merge(
            pos[["k", "subaccount", "symbol", "mark", "open"]],
            on=["k", "subaccount", "symbol"],
            how="left",
            validate="many_to_one",
        )
        if merged["mark"].isna().any():
            bad = merged.loc[merged["mark"].isna()].iloc[0]
            raise AttributionError(
                f"subaccount {bad['subaccount']!r}: a {bad['symbol']} trade at "
                f"{bad['timestamp']} has no ledger row (mark) at its bar"
            )
        ref = merged["open"].to_numpy(float)
        price = merged["price"].to_numpy(float)
        # Market orders fill at the open plus spread and impact; a liquidation (or a bar
        # without an open) is its own reference: no execution cost is invented.
        ref = np.where(merged["liquidation"].to_numpy(bool) | ~np.isfinite(ref), price, ref)
        delta = merged["delta"].to_numpy(float)
        fills = merged[["k", "subaccount", "symbol"]].copy()
        fills["price"] = delta * (merged["mark"].to_numpy(float) - ref)
        fills["execution"] = delta * (ref - price)
        fills["fees"] = -merged["fee"].to_numpy(float)
        fills["funding"] = 0.0
        fills["liquidation"] = 0.0
        fills["held"] = 0.0
        out = pd.concat([out, fills], ignore_index=True)
    return out.groupby(["k", "subaccount", "symbol"], as_index=False, sort=True)[
        [*LINES, "held"]
    ].sum()


def _pnl(ledger: RunLedger) -> pd.DataFrame:
    """Equity change net of transfers per bar and subaccount (bar 0: 0)."""
    eq = ledger.equity
    return (eq - eq.shift(1) - ledger.flows).fillna(0.0)


def attribute(ledger: RunLedger, *, start: Any = None, end: Any = None) -> Attribution:
    """The PnL lines of the bars stamped in [start, end] (UTC dates, inclusive; the
    whole run by default), by subaccount and symbol, daily and cumulative."""
    index = ledger.index
    lo, hi = _window(index, start, end)
    bars = _bar_lines(ledger)
    bars = bars[(bars["k"] >= lo) & (bars["k"] <= hi)]
    lines = bars.assign(timestamp=index[bars["k"].to_numpy(int)]).drop(columns="k")
    lines = lines[["timestamp", "subaccount", "symbol", *LINES]].reset_index(drop=True)
    pnl = _pnl(ledger).iloc[lo : hi + 1]
    days = index[lo : hi + 1].normalize()

    def daily_of(rows: pd.DataFrame, pnl_col: pd.Series) -> pd.DataFrame:
        by_bar = rows.groupby("timestamp")[list(LINES)].sum()
        by_bar = by_bar.reindex(index[lo : hi + 1], fill_value=0.0)
        frame = by_bar.groupby(days).sum()
        frame["total"] = frame[list(LINES)].sum(axis=1)
        frame["pnl"] = pnl_col.groupby(days).sum().to_numpy()
        frame["residual"] = frame["pnl"] - frame["total"]
        frame.index.name = "date"
        return frame

    daily = daily_of(lines, pnl.sum(axis=1))
    per_sub = {
        name: daily_of(lines[lines["subaccount"] == name], pnl[name]) for name in ledger.subaccounts
    }
    by_asset = lines.groupby(["subaccount", "symbol"])[list(LINES)].sum().astype(float)
    by_asset["total"] = by_asset.sum(axis=1)
    rows = {}
    eq = ledger.equity
    for name, d in per_sub.items():
        row = d[[*LINES, "total", "pnl", "residual"]].sum()
        row["start_equity"] = float(eq[name].iloc[lo - 1])
        row["end_equity"] = float(eq[name].iloc[hi])
        row["net_transfers"] = float(ledger.flows[name].iloc[lo : hi + 1].sum())
        rows[name] = row
    table = pd.DataFrame(rows).T.astype(float)
    total = table.sum()
    table.loc["TOTAL"] = total
    table.index.name = "subaccount"
    sleeve_rows, sleeve_trades = {}, pd.DataFrame()
    names = [n for n in ledger.subaccounts if n in ledger.sleeves]
    if names:
        _, listed = _sleeve_lines(ledger, names)
        if not listed.empty:
            listed = listed[(listed["k"] >= lo) & (listed["k"] <= hi)]
            sleeve_trades = listed.assign(bar=index[listed["k"].to_numpy(int)]).drop(columns=["k"])
        for name in names:
            kind = str(ledger.sleeves[name].get("kind") or "sleeve")
            labels = SLEEVE_PARTS.get(kind, {"price": "return"})
            sub = table.loc[name]
            row: dict[str, Any] = {"kind": kind, "pnl": float(sub["pnl"])}
            row["fills"] = (
                int((sleeve_trades["subaccount"] == name).sum()) if len(sleeve_trades) else 0
            )
            for line in ("price", "execution", "fees"):
                row[f"name:{line}"] = labels.get(line, line)
                row[f"part:{line}"] = float(sub[line])
            sleeve_rows[name] = row
    return Attribution(
        start=index[lo],
        end=index[hi],
        lines=lines,
        daily=daily,
        by_asset=by_asset,
        by_subaccount=table,
        daily_by_subaccount=per_sub,
        sleeves=pd.DataFrame.from_dict(sleeve_rows, orient="index"),
        sleeve_trades=sleeve_trades,
    )


# --------------------------------------------------------------------------------------
# Returns, weights, benchmarks
# --------------------------------------------------------------------------------------


def _equity_of(ledger: RunLedger, subaccount: str | None) -> tuple[pd.Series, pd.Series]:
    if subaccount is None:
        return ledger.equity.sum(axis=1), ledger.flows.sum(axis=1)
    if subaccount not in ledger.equity.columns:
        raise AttributionError(
            f"no subaccount {subaccount!r} in the run; it has {', '.join(ledger.subaccounts)}"
        )
    return ledger.equity[subaccount], ledger.flows[subaccount]


def portfolio_returns(ledger: RunLedger, subaccount: str | None = None) -> pd.Series:
    """Per-bar returns (fractions) of a subaccount or of the account (None): the PnL over
    the previous close's equity; a bar after a close with no equity returns 0."""
    eq, flows = _equity_of(ledger, subaccount)
    prev = eq.shift(1)
    pnl = eq - prev - flows
    r = (pnl / prev).where(prev > 0, 0.0)
    return r.iloc[1:].rename("portfolio")


def _segment(symbol: str) -> str:
    """A perpetual belongs to its underlying's segment (BTCUSDT-PERP -> BTCUSDT)."""
    return symbol.removesuffix(_PERP)


def _marks_wide(ledger: RunLedger) -> pd.DataFrame:
    """Close marks per bar and symbol: the ledger's, else the recorded prices (a perpetual
    without its own: its underlying's), carried forward."""
    index = ledger.index
    pos = ledger.positions
    wide = (
        pos.pivot_table(index="timestamp", columns="symbol", values="mark", aggfunc="last")
        .reindex(index)
        .astype(float)
        if not pos.empty
        else pd.DataFrame(index=index)
    )
    if ledger.prices is not None:
        for sym in ledger.prices.columns:
            if sym in wide.columns:
                wide[sym] = wide[sym].fillna(ledger.prices[sym])
            else:
                wide[sym] = ledger.prices[sym]
        for sym in list(wide.columns):
            if sym.endswith(_PERP) and _segment(sym) in ledger.prices.columns:
                wide[sym] = wide[sym].fillna(ledger.prices[_segment(sym)])
    return wide.ffill()


def _holdings_wide(ledger: RunLedger, subaccount: str | None) -> pd.DataFrame:
    """Quantity held at each close per symbol (bars x symbol, base units)."""
    pos = ledger.positions
    if subaccount is not None:
        pos = pos[pos["subaccount"] == subaccount]
    if pos.empty:
        return pd.DataFrame(index=ledger.index)
    k = ledger.index.get_indexer(pos["timestamp"])
    q = pd.DataFrame({"k": k, "symbol": pos["symbol"], "q": pos["quantity"].astype(float)})
    wide = q.pivot_table(index="k", columns="symbol", values="q", aggfunc="sum")
    # Rows exist at every close a symbol is held (and the one after): gaps are 0 held.
    wide = wide.reindex(range(len(ledger.index))).fillna(0.0)
    wide.index = ledger.index
    return wide


def benchmark_returns(
    ledger: RunLedger, benchmark: Benchmark | str = "btc"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The benchmark's weights at each previous close and its segments' returns over
    each bar (both bars x symbol, from bar 1). ``btc``: all in BTCUSDT; ``equal``: equal
    weights over the run's universe (the symbols with a close at both ends of the bar);
    ``cap``: weights by market cap at the previous close (needs ``ledger.caps``)."""
    prices = ledger.prices
    if prices is None or prices.empty:
        raise AttributionError(
            "benchmarks need the run's prices: give them (prices=) or keep the data files "
            "result.json names"
        )
    prices = prices[[c for c in prices.columns if not str(c).endswith(_PERP)]]
    rets = (prices / prices.shift(1) - 1.0).iloc[1:]
    ok = rets.notna()
    kind = str(benchmark).lower()
    if kind == "btc":
        btc = next((c for c in prices.columns if _segment(str(c)) in ("BTCUSDT", "BTC/USDT")), None)
        if btc is None:
            raise AttributionError("the BTC benchmark needs BTCUSDT prices in the run's data")
        w = pd.DataFrame(0.0, index=rets.index, columns=rets.columns)
        w[btc] = 1.0
    elif kind == "equal":
        n = ok.sum(axis=1).replace(0, np.nan)
        w = ok.astype(float).div(n, axis=0).fillna(0.0)
    elif kind in ("cap", "capitalisation", "market_cap"):
        if ledger.caps is None:
            raise AttributionError(
                "the capitalisation-weighted benchmark needs market caps (--caps FILE, the "
                "CoinGecko CSV); none were given, so it is unavailable"
            )
        caps = ledger.caps.reindex(columns=rets.columns).shift(1).iloc[1:]
        caps = caps.where(ok & (caps > 0))
        total = caps.sum(axis=1)
        missing = total <= 0
        if missing.any():
            first = rets.index[missing.to_numpy()][0]
            raise AttributionError(
                f"no market caps for the run's symbols at {first:%Y-%m-%d} "
                f"({int(missing.sum())} bars): the capitalisation benchmark is unavailable "
                "there (the CoinGecko file ends 2021-10-17)"
            )
        w = caps.div(total, axis=0).fillna(0.0)
    else:
        raise AttributionError(f"benchmark must be btc, equal or cap, not {benchmark!r}")
    return w, rets.fillna(0.0)


def _index_returns(w: pd.DataFrame, rets: pd.DataFrame) -> pd.Series:
    return (w * rets).sum(axis=1)


# --------------------------------------------------------------------------------------
# Brinson-Fachler
# --------------------------------------------------------------------------------------


def bf_effects(
    w: np.ndarray, b: np.ndarray, r: np.ndarray, bench_returns: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One period's Brinson-Fachler effects per segment (fractions).

    ``w``, ``b``: portfolio and benchmark weights at the start (the benchmark's sum to 1;
    the portfolio's rest is cash, returning 0); ``r``: each segment's portfolio return
    ``R_i``; ``bench_returns``: its benchmark return ``B_i``. With ``B = sum(b * B_i)``::

        allocation  = (w - b) * (B_i - B)
        selection   = b * (R_i - B_i)
        interaction = (w - b) * (R_i - B_i)

    Over all segments and cash (w_cash = 1 - sum w, R = B_i = b = 0, which adds
    ``-w_cash * B`` to allocation) they sum to ``sum(w * R) - B``.
    """
    w, b = np.asarray(w, float), np.asarray(b, float)
    r, bi = np.asarray(r, float), np.asarray(bench_returns, float)
    big_b = float(b @ bi)
    return (w - b) * (bi - big_b), b * (r - bi), (w - b) * (r - bi)


@dataclass
class BrinsonFachler:
    """Brinson-Fachler effects (fractions of start equity) against ``benchmark``.

    ``periods``: per period (``freq``) ``portfolio`` and ``benchmark`` returns, ``active``
    (their difference) and ``allocation``, ``selection``, ``interaction`` and ``trading``,
    which sum to active. ``trading`` is what the three cannot see, because they price the
    holdings of each bar's start: the trades inside the bar (their price effect, spread,
    impact and fees, funding on a position opened in it) and the float rounding of the
    lines. Daily: the bars' effects summed in each day. Monthly: bar effects linked by
    Carino's method within each month, so a month's effects sum to its compounded active
    return. ``segments``: each segment's effects over the whole window, linked by
    ``link`` (carino: they sum to the window's compounded active return; sum: to the sum
    of bar active returns), with ``cash`` as a row. ``total``: that window's figures.
    """

    benchmark: str
    freq: str
    link: str
    periods: pd.DataFrame
    segments: pd.DataFrame
    total: pd.Series


def _carino(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Carino's coefficients ln(1+R)-ln(1+B) over R-B per period (1/(1+R) where equal)."""
    diff = r - b
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (np.log1p(r) - np.log1p(b)) / diff
    return np.where(np.abs(diff) < 1e-14, 1.0 / (1.0 + r), k)


def _link(
    effects: np.ndarray, r: np.ndarray, b: np.ndarray, method: str
) -> tuple[np.ndarray, float, float]:
    """Effects (bars x ...) of consecutive bars linked into one period; returns the
    linked effects and the period's portfolio and benchmark returns."""
    if method == "sum":
        return effects.sum(axis=0), float(r.sum()), float(b.sum())
    big_r, big_b = float(np.prod(1 + r) - 1), float(np.prod(1 + b) - 1)
    k_t = _carino(r, b)
    k = _carino(np.array([big_r]), np.array([big_b]))[0]
    scale = (k_t / k).reshape((-1,) + (1,) * (effects.ndim - 1))
    return (effects * scale).sum(axis=0), big_r, big_b


#: ``segments="group"``: BTC, ETH and the other coins; each perpetual is its own segment.
GROUPS = {"BTCUSDT": "BTC", "ETHUSDT": "ETH"}


def _segmenter(segments: str | Mapping[str, str]) -> Any:
    """symbol -> segment. A perpetual is always its own segment: a hedge netted with its
    spot leg would leave a segment of near-zero weight and no meaningful return."""
    if isinstance(segments, Mapping):
        mapping = dict(segments)

        def own(sym: str) -> str:
            return sym if sym.endswith(_PERP) else mapping.get(sym, sym)

        inner = own
    elif segments == "asset":
        return lambda sym: sym
    elif segments == "group":

        def inner(sym: str) -> str:
            return sym if sym.endswith(_PERP) else GROUPS.get(sym, "other coins")
    else:
        raise AttributionError(f"segments must be asset, group or a mapping, not {segments!r}")
    # A sleeve subaccount's row is its own segment whatever the grouping.
    return lambda sym: sym if str(sym).startswith(SLEEVE_PREFIX) else inner(sym)


def _by_segment(frame: pd.DataFrame, seg_of: Any, how: str = "sum") -> pd.DataFrame:
    """Columns (symbols) combined per segment (sum, or mean of the finite values)."""
    if frame.shape[1] == 0:
        return pd.DataFrame(index=frame.index)
    grouped = frame.T.groupby(frame.columns.map(seg_of))
    return (grouped.sum() if how == "sum" else grouped.mean()).T


def brinson_fachler(
    ledger: RunLedger,
    benchmark: Benchmark | str = "btc",
    *,
    subaccount: str | None = None,
    freq: Literal["D", "M"] | str = "D",
    link: Literal["carino", "sum"] | str | None = None,
    segments: str | Mapping[str, str] = "asset",
    start: Any = None,
    end: Any = None,
) -> BrinsonFachler:
    """Allocation, selection, interaction (and trading) of the account (or a subaccount)
    against ``benchmark`` (btc, equal, cap), per segment: ``asset`` (each symbol),
    ``group`` (BTC, ETH, other coins) or a mapping symbol -> segment; a perpetual is its
    own segment, measured against its underlying's return.

    Per bar: weights at the previous close (net notional over equity); ``R_i`` what the
    segment's holdings of that close made (price and funding) over their weight; ``B_i``
    the benchmark's return in the segment, or where the benchmark holds none, the equal
    weight of the universe's symbols in it (a perpetual: its underlying's). Aggregated
    per ``freq`` (D: summed; M: Carino-linked); ``link`` for the whole window: ``sum``
    for daily, ``carino`` for monthly by default."""
    freq = str(freq).upper()
    if freq not in ("D", "M"):
        raise AttributionError(f"freq must be D (daily) or M (monthly), not {freq!r}")
    link = link or ("sum" if freq == "D" else "carino")
    if link not in ("sum", "carino"):
        raise AttributionError(f"link must be sum or carino, not {link!r}")
    seg_of = _segmenter(segments)
    index = ledger.index
    lo, hi = _window(index, start, end)
    steps = index[lo : hi + 1]
    bw, _ = benchmark_returns(ledger, benchmark)
    assert ledger.prices is not None  # benchmark_returns refused a run without
    spot = ledger.prices[[c for c in ledger.prices.columns if not str(c).endswith(_PERP)]]
    sym_r = spot / spot.shift(1) - 1.0  # NaN where a symbol has no close
    eq, _ = _equity_of(ledger, subaccount)
    denom = eq.shift(1).reindex(steps).to_numpy(float)
    live = denom > 0
    safe = np.where(live, denom, 1.0)
    bars = _bar_lines(ledger)
    if subaccount is not None:
        bars = bars[bars["subaccount"] == subaccount]
    bars = bars.assign(segment=bars["symbol"].map(seg_of), total=bars[list(LINES)].sum(axis=1))

    def per_bar(values: str) -> pd.DataFrame:
        if bars.empty:
            return pd.DataFrame(index=range(len(index)))
        return (
            bars.pivot_table(index="k", columns="segment", values=values, aggfunc="sum")
            .reindex(range(len(index)))
            .fillna(0.0)
        )

    held_pnl, total_pnl = per_bar("held"), per_bar("total")
    q = _holdings_wide(ledger, subaccount)
    marks = _marks_wide(ledger)
    notional = _by_segment(q * marks.reindex(columns=q.columns).fillna(0.0), seg_of)
    for name in ledger.subaccounts:
        if name in ledger.sleeves and subaccount in (None, name):
            # A sleeve holds its equity in itself: its weight, returning its return.
            notional[SLEEVE_PREFIX + name] = ledger.equity[name].reindex(index).to_numpy(float)
    b_seg = _by_segment(bw, seg_of)
    b_contrib = _by_segment(
        bw * sym_r.reindex(index=bw.index, columns=bw.columns).fillna(0.0), seg_of
    )
    equal_seg = _by_segment(sym_r, seg_of, how="mean")
    names = sorted(set(held_pnl.columns) | set(notional.columns) | set(b_seg.columns))

    def grid(frame: pd.DataFrame, shift: bool = False) -> np.ndarray:
        f = frame.reindex(columns=names)
        if shift:
            f = f.shift(1)
        return f.reindex(steps).to_numpy(float)

    w = np.nan_to_num(grid(notional, shift=True)) / safe[:, None] * live[:, None]
    held_c = np.nan_to_num(grid(held_pnl.set_axis(index, axis=0))) / safe[:, None]
    total_c = np.nan_to_num(grid(total_pnl.set_axis(index, axis=0))) / safe[:, None]
    held_c, total_c = held_c * live[:, None], total_c * live[:, None]
    b = np.nan_to_num(grid(b_seg))
    with np.errstate(invalid="ignore", divide="ignore"):
        bi = np.where(b > 0, grid(b_contrib) / np.where(b > 0, b, 1.0), grid(equal_seg))
    for j, name in enumerate(names):
        if name.endswith(_PERP) or np.isnan(bi[:, j]).any():
            under = _segment(name)
            source = spot[under] if under in spot.columns else marks.get(name)
            if source is not None:
                alt = (source / source.shift(1) - 1.0).reindex(steps).to_numpy(float)
                fill = np.isnan(bi[:, j]) | name.endswith(_PERP)
                bi[:, j] = np.where(fill, alt, bi[:, j])
    held = np.abs(w) > 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(held, held_c / np.where(held, w, 1.0), np.nan)
    # A segment with no benchmark return: measured against itself (no selection).
    bi = np.where(np.isnan(bi), np.where(held, r, 0.0), bi)
    r = np.where(held, r, bi)
    # What the start holdings do not explain: trades in the bar (and PnL of a segment
    # held by nothing at the start, such as funding on a position opened in the bar).
    trading = total_c - np.where(held, held_c, 0.0)
    n, s = w.shape
    eff = np.zeros((n, s + 1, 4))
    for t in range(n):
        eff[t, :s, 0], eff[t, :s, 1], eff[t, :s, 2] = bf_effects(w[t], b[t], r[t], bi[t])
    eff[:, :s, 3] = trading
    r_b = (b * bi).sum(axis=1)
    r_p = portfolio_returns(ledger, subaccount).reindex(steps).to_numpy(float)
    eff[:, s, 0] = -(1.0 - w.sum(axis=1)) * r_b * live
    # The lines' float rounding against equity, in cash's trading (about 1e-15).
    eff[:, s, 3] = r_p - total_c.sum(axis=1)
    keys = pd.Index(steps.normalize() if freq == "D" else steps.tz_localize(None).to_period("M"))
    rows, labels = [], []
    for g in keys.unique():
        m = np.asarray(keys == g)
        e, pr, br = _link(eff[m], r_p[m], r_b[m], "sum" if freq == "D" else "carino")
        rows.append([pr, br, pr - br, *e.sum(axis=0)])
        labels.append(g.to_timestamp().tz_localize("UTC") if freq == "M" else g)
    effects = ["allocation", "selection", "interaction", "trading"]
    cols = ["portfolio", "benchmark", "active", *effects]
    periods = pd.DataFrame(rows, index=pd.DatetimeIndex(labels, name="period"), columns=cols)
    e, pr, br = _link(eff, r_p, r_b, link)
    seg = pd.DataFrame(e, index=[*names, "cash"], columns=effects)
    seg["total"] = seg.sum(axis=1)
    seg = seg[(seg.abs() > 0).any(axis=1)]
    seg.index.name = "segment"
    tot = pd.Series([pr, br, pr - br, *e.sum(axis=0)], index=cols, name=f"{benchmark} ({link})")
    return BrinsonFachler(str(benchmark), freq, link, periods, seg, tot)


# --------------------------------------------------------------------------------------
# Regressions
# --------------------------------------------------------------------------------------


@dataclass
class Regression:
    """An OLS fit: ``params``, standard errors, t-stats, p-values and ``conf_int``
    (level ``level``) per regressor; ``cov`` ``plain`` (homoskedastic) or ``hac``
    (Newey-West, Bartlett kernel, ``maxlags``, no small-sample factor), with
    statsmodels' defaults: t distribution (df n-k) for plain, normal for hac."""

    names: list[str]
    params: np.ndarray
    bse: np.ndarray
    tvalues: np.ndarray
    pvalues: np.ndarray
    conf_int: np.ndarray
    rsquared: float
    resid_std: float
    nobs: int
    cov: str
    maxlags: int | None
    level: float

    def table(self) -> pd.DataFrame:
        lo, hi = self.conf_int[:, 0], self.conf_int[:, 1]
        return pd.DataFrame(
            {
                "coef": self.params,
                "se": self.bse,
                "t": self.tvalues,
                "p": self.pvalues,
                "ci_low": lo,
                "ci_high": hi,
            },
            index=self.names,
        )

    def __getitem__(self, name: str) -> float:
        return float(self.params[self.names.index(name)])


def newey_west_lags(n: int) -> int:
    """The Newey-West (1994) rule: floor(4 (n/100)^(2/9))."""
    return int(math.floor(4 * (n / 100.0) ** (2.0 / 9.0)))


def ols(
    y: np.ndarray,
    x: np.ndarray,
    names: Sequence[str],
    *,
    cov: Literal["plain", "hac"] | str = "plain",
    maxlags: int | None = None,
    level: float = 0.95,
) -> Regression:
    """OLS of ``y`` on ``[1, x]`` (``names``: the regressors' after ``const``)."""
    y = np.asarray(y, float)
    x = np.asarray(x, float).reshape(len(y), -1)
    keep = np.isfinite(y) & np.isfinite(x).all(axis=1)
    y, x = y[keep], x[keep]
    n = len(y)
    X = np.column_stack([np.ones(n), x])
    k = X.shape[1]
    if n <= k:
        raise AttributionError(f"a regression on {k - 1} factors needs more than {k} bars, has {n}")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    dof = n - k
    xtx_inv = np.linalg.pinv(X.T @ X)
    ssr = float(resid @ resid)
    if cov == "plain":
        vcov = xtx_inv * (ssr / dof)
        lags = None
    elif cov == "hac":
        lags = newey_west_lags(n) if maxlags is None else int(maxlags)
        u = X * resid[:, None]
        s = u.T @ u
        for lag in range(1, lags + 1):
            weight = 1.0 - lag / (lags + 1.0)
            g = u[lag:].T @ u[:-lag]
            s += weight * (g + g.T)
        vcov = xtx_inv @ s @ xtx_inv  # no small-sample factor (statsmodels' default)
    else:
        raise AttributionError(f"cov must be plain or hac, not {cov!r}")
    bse = np.sqrt(np.clip(np.diag(vcov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = beta / bse
    dist = stats.t(dof) if cov == "plain" else stats.norm()
    p = 2 * dist.sf(np.abs(t))
    z = dist.ppf(0.5 + level / 2)
    ci = np.column_stack([beta - z * bse, beta + z * bse])
    centred = y - y.mean()
    tss = float(centred @ centred)
    r2 = 1.0 - ssr / tss if tss > 0 else float("nan")
    return Regression(
        ["const", *names], beta, bse, t, p, ci, r2, math.sqrt(ssr / dof), n, cov, lags, level
    )


def _market(ledger: RunLedger, against: str) -> pd.Series:
    w, rets = benchmark_returns(ledger, against)
    return _index_returns(w, rets).rename(against)


def _paired(
    ledger: RunLedger, against: str, subaccount: str | None, start: Any, end: Any
) -> tuple[pd.Series, pd.Series]:
    lo, hi = _window(ledger.index, start, end)
    steps = ledger.index[lo : hi + 1]
    rp = portfolio_returns(ledger, subaccount).reindex(steps)
    rm = _market(ledger, against).reindex(steps)
    return rp, rm


def beta_alpha(
    ledger: RunLedger,
    against: Benchmark | str = "btc",
    *,
    subaccount: str | None = None,
    cov: str = "hac",
    maxlags: int | None = None,
    level: float = 0.95,
    risk_free: float = 0.0,
    start: Any = None,
    end: Any = None,
) -> dict[str, Any]:
    """Beta and alpha of the account (or a subaccount) against BTC (``btc``) or the
    market (``equal``: the equal-weight index of the run's universe; ``cap``): the
    OLS ``r_p - rf = alpha + beta (r_m - rf) + e`` per bar. ``risk_free`` is annual
    (fraction). Alpha is per bar; ``alpha_annual`` = alpha x bars per year (simple, 365-day
    years), with its interval. Beside the raw figures: the alpha's t-stat and p-value,
    the appraisal ratio (annual alpha over annual residual volatility), the information
    ratio (annual mean of r_p - r_m over its annual volatility), the Treynor ratio and
    both Sharpe ratios."""
    rp, rm = _paired(ledger, against, subaccount, start, end)
    ppy = ledger.periods_per_year
    rf = risk_free / ppy
    fit = ols(
        (rp - rf).to_numpy(), (rm - rf).to_numpy(), ["beta"], cov=cov, maxlags=maxlags, level=level
    )
    a, b = fit.params
    active = (rp - rm).to_numpy()

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else float("nan")

    sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")  # noqa: E731
    excess = rp.to_numpy() - rf
    return {
        "against": str(against),
        "nobs": fit.nobs,
        "cov": fit.cov,
        "maxlags": fit.maxlags,
        "level": level,
        "beta": float(b),
        "beta_se": float(fit.bse[1]),
        "beta_ci": (float(fit.conf_int[1, 0]), float(fit.conf_int[1, 1])),
        "beta_t": float(fit.tvalues[1]),
        "alpha": float(a),
        "alpha_se": float(fit.bse[0]),
        "alpha_t": float(fit.tvalues[0]),
        "alpha_p": float(fit.pvalues[0]),
        "alpha_ci": (float(fit.conf_int[0, 0]), float(fit.conf_int[0, 1])),
        "alpha_annual": float(a * ppy),
        "alpha_annual_ci": (float(fit.conf_int[0, 0] * ppy), float(fit.conf_int[0, 1] * ppy)),
        "r2": fit.rsquared,
        "residual_vol_annual": fit.resid_std * math.sqrt(ppy),
        "appraisal_ratio": ratio(a * ppy, fit.resid_std * math.sqrt(ppy)),
        "information_ratio": ratio(float(np.mean(active)) * ppy, sd(active) * math.sqrt(ppy)),
        "treynor_ratio": ratio(float(np.mean(excess)) * ppy, b) if b > 0 else float("nan"),
        "sharpe": ratio(float(np.mean(excess)) * ppy, sd(excess) * math.sqrt(ppy)),
        "benchmark_sharpe": ratio(
            float(np.mean(rm.to_numpy() - rf)) * ppy, sd(rm.to_numpy() - rf) * math.sqrt(ppy)
        ),
        "fit": fit,
    }


def treynor_mazuy(
    ledger: RunLedger,
    against: Benchmark | str = "btc",
    *,
    subaccount: str | None = None,
    cov: str = "plain",
    maxlags: int | None = None,
    risk_free: float = 0.0,
    start: Any = None,
    end: Any = None,
) -> Regression:
    """Treynor-Mazuy: ``r_p - rf = a + b (r_m - rf) + gamma (r_m - rf)^2 + e`` per bar;
    gamma > 0 is market timing (more exposure before rises)."""
    rp, rm = _paired(ledger, against, subaccount, start, end)
    rf = risk_free / ledger.periods_per_year
    x = (rm - rf).to_numpy()
    return ols(
        (rp - rf).to_numpy(),
        np.column_stack([x, x * x]),
        ["beta", "gamma"],
        cov=cov,
        maxlags=maxlags,
    )


def henriksson_merton(
    ledger: RunLedger,
    against: Benchmark | str = "btc",
    *,
    subaccount: str | None = None,
    cov: str = "plain",
    maxlags: int | None = None,
    risk_free: float = 0.0,
    start: Any = None,
    end: Any = None,
) -> Regression:
    """Henriksson-Merton: ``r_p - rf = a + b (r_m - rf) + gamma max(r_m - rf, 0) + e``;
    gamma > 0: a higher beta in up markets than in down ones."""
    rp, rm = _paired(ledger, against, subaccount, start, end)
    rf = risk_free / ledger.periods_per_year
    x = (rm - rf).to_numpy()
    return ols(
        (rp - rf).to_numpy(),
        np.column_stack([x, np.maximum(x, 0.0)]),
        ["beta", "gamma"],
        cov=cov,
        maxlags=maxlags,
    )


# --------------------------------------------------------------------------------------
# Timing against holding
# --------------------------------------------------------------------------------------


def timing(
    ledger: RunLedger,
    *,
    subaccount: str | None = None,
    freq: Literal["D", "W", "M"] | str = "M",
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """The actual trades against holding: per period (``freq``: D, W or M, UTC), the
    run's PnL beside the PnL of holding the quantities of the period's start, unchanged
    (no trades, no costs; priced at the recorded closes), in quote.

    Columns: ``start_equity``, ``pnl`` (actual), ``hold`` (held quantities x mark
    change), ``trades`` (actual price line - hold: what the trades' timing added),
    ``costs`` (execution + fees), ``funding``, ``liquidation``, ``timing`` (pnl - hold)
    and ``timing_return`` (timing / start equity). ``hold`` leaves out funding (a carry's
    funding shows in ``funding``, on the actual side). The start weights are the
    quantities' value at the start; held unchanged, their weights drift with prices.
    """
    index = ledger.index
    lo, hi = _window(index, start, end)
    steps = index[lo : hi + 1]
    freq = str(freq).upper()
    if freq not in ("D", "W", "M"):
        raise AttributionError(f"freq must be D, W or M, not {freq!r}")
    naive = steps.tz_localize(None)
    keys = naive.normalize() if freq == "D" else naive.to_period(freq).start_time
    q = _holdings_wide(ledger, subaccount)
    marks = _marks_wide(ledger).reindex(columns=q.columns)
    eq, flows = _equity_of(ledger, subaccount)
    pnl = (eq - eq.shift(1) - flows).fillna(0.0)
    bars = _bar_lines(ledger)
    if subaccount is not None:
        bars = bars[bars["subaccount"] == subaccount]
    by_k = bars.groupby("k")[list(LINES)].sum().reindex(range(len(index)), fill_value=0.0)
    # A sleeve's PnL counts as held (it has no bar positions to hold or trade).
    sleeve_names = [
        n for n in ledger.subaccounts if n in ledger.sleeves and subaccount in (None, n)
    ]
    sleeve_pnl = _pnl(ledger)[sleeve_names].sum(axis=1)
    sleeve_by_k = bars[bars["symbol"].astype(str).str.startswith(SLEEVE_PREFIX)]
    sleeve_price = (
        sleeve_by_k.groupby("k")["price"].sum().reindex(range(len(index)), fill_value=0.0)
    )
    rows, labels = [], []
    positions = np.arange(lo, hi + 1)
    for key in pd.Index(keys).unique():
        ks = positions[np.asarray(keys == key)]
        k0, k1 = ks[0] - 1, ks[-1]
        held = q.iloc[k0].to_numpy(float)
        m0 = marks.iloc[k0].to_numpy(float)
        m1 = marks.iloc[k1].to_numpy(float)
        move = np.where(held != 0, held * (m1 - m0), 0.0)
        if not np.isfinite(move).all():
            bad = [s for s, v in zip(q.columns, move, strict=True) if not np.isfinite(v)]
            raise AttributionError(
                f"no close for {', '.join(bad)} at {index[k1]:%Y-%m-%d}: the hold cannot be "
                "priced (give the run's prices)"
            )
        hold = float(move.sum()) + float(sleeve_pnl.iloc[ks].sum())
        lines = by_k.iloc[ks].sum()
        actual = float(pnl.iloc[ks].sum())
        rows.append(
            {
                "start_equity": float(eq.iloc[k0]),
                "pnl": actual,
                "hold": hold,
                "trades": float(lines["price"] - sleeve_price.iloc[ks].sum())
                - (hold - float(sleeve_pnl.iloc[ks].sum())),
                "costs": float(lines["execution"] + lines["fees"]),
                "funding": float(lines["funding"]),
                "liquidation": float(lines["liquidation"]),
                "timing": actual - hold,
            }
        )
        labels.append(pd.Timestamp(key).tz_localize("UTC"))
    out = pd.DataFrame(rows, index=pd.DatetimeIndex(labels, name="period"))
    out["timing_return"] = (out["timing"] / out["start_equity"]).where(out["start_equity"] > 0)
    return out
