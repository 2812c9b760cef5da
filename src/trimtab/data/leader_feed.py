"""Leader feeds for copy trading: the trades of the account being copied, from a CSV,
another trimtab run, or (live) another exchange account read through ccxt.

Every reader returns a ``LeaderFeed``: its ``trades`` frame, one row per leader trade,

* ``timestamp``: when the leader traded (UTC); a copy acts on it no earlier than that;
* ``symbol`` (trimtab form, ``BTCUSDT``), ``side`` (``buy`` / ``sell``), ``quantity``
  (base units, > 0), ``price`` (USDT per base unit; NaN when the feed gives none, e.g. a
  positions feed without prices), ``fee`` (USDT, 0 when unknown);
* ``trade_id``: the leader's id of the trade (given, or ``r<row>`` from the row number),
  unique in the feed; ``note``: the leader's reason or decision, when the feed has one;

and ``equity``: the leader's equity in USDT indexed by the time each value became known
(None: the feed has none). In time order; rows at the same time keep the file's order.

Sources:

* ``read_leader_csv(path, kind=None)``: trades (``timestamp, symbol, side, quantity,
  price[, trade_id][, fee][, equity]``) or positions (``timestamp, symbol, quantity[,
  price][, equity]``: the leader's holding of ``symbol`` from ``timestamp`` on, signed;
  a symbol keeps its last quantity until a later row of it; each change becomes a trade
  of the difference). ``kind`` ``None`` detects: a ``side`` column means trades. Naive
  timestamps are UTC; integers are epoch milliseconds. An ``equity`` value is the
  leader's equity known at that row's time.
* ``read_leader_run(folder, subaccount=None)``: a folder written by ``trimtab backtest
  --out DIR`` (``trades.csv``, ``equity.csv``, ``result.json``), or one subaccount of a
  ``--portfolio`` run folder. A run's equity row at bar ``T`` is its value at the close of
  that bar, known at ``T`` + one bar, so its equity is re-stamped by one bar (no
  lookahead).
* ``feed_from_rows(fills, balances, ...)``: a run recorded in a store (the rows of
  ``Store.fills`` and ``Store.balances``; the command line reads the store), same rule.
* ``CcxtLeaderFeed``: a live account through a real ccxt client, ``fetch_my_trades`` per
  symbol since a cursor that ``state()`` saves.

A bad row is a ``DataError`` naming the file, the row (1-based, with its line in the
file), the column and the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError
from trimtab.data.panel import timeframe_seconds, to_utc
from trimtab.data.symbols import normalize_symbol, to_symbol

Kind = Literal["trades", "positions"]
FEED_COLUMNS = ("timestamp", "symbol", "side", "quantity", "price", "fee", "trade_id", "note")
#: Column names read as the canonical ones (case and surrounding spaces ignored).
ALIASES = {
    "timestamp": ("timestamp", "time", "datetime", "date"),
    "symbol": ("symbol", "pair", "market"),
    "side": ("side",),
    "quantity": ("quantity", "qty", "amount", "size"),
    "price": ("price",),
    "fee": ("fee",),
    "trade_id": ("trade_id", "id"),
    "equity": ("equity",),
    "note": ("reason", "note"),
    "decision_id": ("decision_id",),
}
#: Problems listed in one error before the rest are counted.
MAX_LISTED = 10


@dataclass(frozen=True)
class LeaderFeed:
    """A leader's trades and (optionally) equity; see the module docstring."""

    trades: pd.DataFrame
    equity: pd.Series | None
    source: str
    kind: str

    @property
    def symbols(self) -> list[str]:
        return sorted(map(str, self.trades["symbol"].unique()))

    def until(self, t: Any) -> LeaderFeed:
        """The feed as known at ``t`` (UTC): trades and equity stamped at or before it."""
        t = to_utc(t, what="time")
        trades = self.trades[self.trades["timestamp"] <= t].reset_index(drop=True)
        equity = None if self.equity is None else self.equity[self.equity.index <= t]
        return LeaderFeed(trades, equity, self.source, self.kind)


# --- parsing ---------------------------------------------------------------------------


class _Problems:
    """Bad cells of one table, reported together (file, row, line, column, value)."""

    def __init__(self, where: str, row_word: str, line_offset: int | None) -> None:
        self.where = where
        self.row_word = row_word
        self.line_offset = line_offset
        self.items: list[tuple[int, str]] = []

    def add(self, i: int, column: str, why: str, value: Any) -> None:
        line = f" (line {i + self.line_offset})" if self.line_offset is not None else ""
        self.items.append(
            (i, f"{self.row_word} {i + 1}{line}, column {column!r}: {why}, got {value!r}")
        )

    def raise_if_any(self) -> None:
        if not self.items:
            return
        ordered = [m for _, m in sorted(self.items, key=lambda item: item[0])]
        shown = ordered[:MAX_LISTED]
        more = len(ordered) - len(shown)
        tail = f"; and {more} more" if more else ""
        raise DataError(f"{self.where}: {'; '.join(shown)}{tail}")


def _columns(raw: pd.DataFrame, where: str) -> dict[str, str]:
    """Canonical name -> the table's column, by ``ALIASES``; a name given twice is an error."""
    found: dict[str, str] = {}
    for col in raw.columns:
        key = str(col).strip().lower()
        for name, aliases in ALIASES.items():
            if key in aliases:
                if name in found:
                    raise DataError(
                        f"{where}: columns {found[name]!r} and {col!r} both mean {name!r}"
                    )
                found[name] = str(col)
    return found


def _times(values: pd.Series, column: str, problems: _Problems) -> np.ndarray:
    """UTC nanoseconds per cell; ISO text (naive is UTC) or integer epoch milliseconds."""
    text = values.astype(str).str.strip()
    digits = text.str.fullmatch(r"\d{10,14}")
    out = np.full(len(text), np.iinfo(np.int64).min, dtype=np.int64)
    if digits.any():
        out[digits.to_numpy()] = text[digits].astype(np.int64).to_numpy() * 1_000_000
    rest = ~digits.to_numpy()
    if rest.any():
        parsed = pd.to_datetime(text[rest], utc=True, errors="coerce", format="ISO8601")
        ok = parsed.notna().to_numpy()
        vals = np.full(int(rest.sum()), np.iinfo(np.int64).min, dtype=np.int64)
        vals[ok] = parsed[ok].dt.as_unit("ns").astype(np.int64).to_numpy()
        out[rest] = vals
    for i in np.flatnonzero(out == np.iinfo(np.int64).min):
        problems.add(int(i), column, "not a date/time (ISO 8601, UTC, or epoch ms)", values.iloc[i])
    return out


def _numbers(
    values: pd.Series,
    column: str,
    problems: _Problems,
    *,
    positive: bool,
    optional: bool = False,
) -> np.ndarray:
    text = values.astype(str).str.strip()
    num = np.array(pd.to_numeric(text.where(text != "", "nan"), errors="coerce"), dtype=float)
    empty = (text == "").to_numpy() | values.isna().to_numpy()
    for i in range(len(num)):
        x = num[i]
        if empty[i]:
            if not optional:
                problems.add(i, column, "empty", values.iloc[i])
            num[i] = math.nan
            continue
        if not math.isfinite(x):
            problems.add(i, column, "not a finite number", values.iloc[i])
        elif positive and x <= 0:
            problems.add(i, column, "must be > 0", values.iloc[i])
    return num


def _symbols(values: pd.Series, column: str, problems: _Problems) -> list[str]:
    out = []
    for i, raw in enumerate(values.astype(str)):
        symbol, why = normalize_symbol(raw)
        if symbol is None or raw.strip() == "":
            problems.add(i, column, why or "empty", raw)
            out.append("")
        else:
            out.append(symbol)
    return out


def _frame(
    raw: pd.DataFrame,
    where: str,
    kind: Kind | None,
    *,
    row_word: str = "row",
    line_offset: int | None = 2,
) -> tuple[pd.DataFrame, pd.Series | None, Kind]:
    """Validate a table of text cells into the feed's frame and equity (module docstring)."""
    cols = _columns(raw, where)
    if kind is None:
        kind = "trades" if "side" in cols else "positions"
    if kind not in ("trades", "positions"):
        raise DataError(f"{where}: kind must be trades or positions, not {kind!r}")
    need = (
        ("timestamp", "symbol", "side", "quantity", "price")
        if kind == "trades"
        else (
            "timestamp",
            "symbol",
            "quantity",
        )
    )
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(
            f"{where}: a {kind} feed needs column(s) {', '.join(missing)}; found "
            f"{', '.join(map(str, raw.columns)) or 'none'} (columns: {', '.join(need)})"
        )
    problems = _Problems(where, row_word, line_offset)
    n = len(raw)
    ts = _times(raw[cols["timestamp"]], cols["timestamp"], problems)
    symbols = _symbols(raw[cols["symbol"]], cols["symbol"], problems)
    if kind == "trades":
        qty = _numbers(raw[cols["quantity"]], cols["quantity"], problems, positive=True)
        side = raw[cols["side"]].astype(str).str.strip().str.lower().to_numpy()
        for i in np.flatnonzero(~np.isin(side, ["buy", "sell"])):
            problems.add(int(i), cols["side"], "must be buy or sell", raw[cols["side"]].iloc[i])
    else:
        qty = _numbers(raw[cols["quantity"]], cols["quantity"], problems, positive=False)
        side = np.full(n, "", dtype=object)
    price = (
        _numbers(
            raw[cols["price"]], cols["price"], problems, positive=True, optional=kind != "trades"
        )
        if "price" in cols
        else np.full(n, math.nan)
    )
    fee = (
        _numbers(raw[cols["fee"]], cols["fee"], problems, positive=False, optional=True)
        if "fee" in cols
        else np.zeros(n)
    )
    equity = (
        _numbers(raw[cols["equity"]], cols["equity"], problems, positive=True, optional=True)
        if "equity" in cols
        else None
    )
    if "trade_id" in cols:
        ids = raw[cols["trade_id"]].astype(str).str.strip().tolist()
        first: dict[str, int] = {}
        for i, tid in enumerate(ids):
            if tid == "":
                problems.add(i, cols["trade_id"], "empty", raw[cols["trade_id"]].iloc[i])
            elif tid in first:
                problems.add(
                    i, cols["trade_id"], f"repeats the id of {row_word} {first[tid] + 1}", tid
                )
            else:
                first[tid] = i
    else:
        ids = [f"r{i + 1}" for i in range(n)]
    problems.raise_if_any()
    notes = [""] * n
    if "note" in cols or "decision_id" in cols:
        reason = raw[cols["note"]].astype(str).tolist() if "note" in cols else notes
        dec = raw[cols["decision_id"]].astype(str).tolist() if "decision_id" in cols else notes
        notes = [
            "; ".join(p for p in (r.strip(), f"decision {d.strip()}" if d.strip() else "") if p)
            for r, d in zip(reason, dec, strict=True)
        ]
    stamps = pd.DatetimeIndex(ts.astype("datetime64[ns]")).tz_localize("UTC")
    order = np.argsort(ts, kind="stable")
    base = pd.DataFrame(
        {
            "timestamp": stamps,
            "symbol": symbols,
            "side": side,
            "quantity": qty,
            "price": price,
            "fee": np.nan_to_num(fee, nan=0.0),
            "trade_id": ids,
            "note": notes,
        }
    ).iloc[order]
    eq = None
    if equity is not None:
        e = pd.Series(equity[order], index=stamps[order]).dropna()
        eq = e[~e.index.duplicated(keep="last")] if len(e) else None
    if kind == "positions":
        base = _positions_to_trades(base)
    return base.reset_index(drop=True)[list(FEED_COLUMNS)], eq, kind


def _positions_to_trades(rows: pd.DataFrame) -> pd.DataFrame:
    """Holdings rows (time order) -> one trade per change of a symbol's quantity."""
    held: dict[str, float] = {}
    out = []
    for r in rows.itertuples(index=False):
        before = held.get(r.symbol, 0.0)
        delta = float(r.quantity) - before
        held[r.symbol] = float(r.quantity)
        if abs(delta) <= 1e-12 * max(1.0, abs(before)):
            continue
        out.append(
            {
                "timestamp": r.timestamp,
                "symbol": r.symbol,
                "side": "buy" if delta > 0 else "sell",
                "quantity": abs(delta),
                "price": r.price,
                "fee": r.fee,
                "trade_id": r.trade_id,
                "note": f"position {before:g} -> {float(r.quantity):g}",
            }
        )
    if not out:
        return (
            pd.DataFrame({c: [] for c in FEED_COLUMNS})
            .astype({"quantity": float, "price": float, "fee": float})
            .assign(timestamp=pd.DatetimeIndex([], tz="UTC"))
        )
    return pd.DataFrame(out)


def _read_text_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"leader feed {path}: no such file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"leader feed {path}: not a readable CSV ({first})") from None


def read_leader_csv(path: str | Path, kind: Kind | None = None) -> LeaderFeed:
    """A CSV of timestamped trades or positions (module docstring)."""
    p = Path(path).expanduser()
    raw = _read_text_csv(p)
    trades, equity, got = _frame(raw, str(p), kind)
    return LeaderFeed(trades, equity, f"csv {p}", got)


def _known_at(equity: pd.Series, timeframe: str | None) -> pd.Series:
    """A run's equity per bar stamp (its value at that bar's close) re-stamped at the time
    it is known: the bar's open plus one bar."""
    if timeframe is None:
        if len(equity) < 2:
            raise DataError("cannot tell the run's bar length from fewer than two equity rows")
        step = pd.Series(equity.index).diff().dropna().min()
    else:
        step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    return pd.Series(equity.to_numpy(dtype=float), index=equity.index + step, name="equity")


def read_leader_run(folder: str | Path, subaccount: str | None = None) -> LeaderFeed:
    """The trades and equity of a run folder of ``trimtab backtest --out DIR`` (module
    docstring); ``subaccount`` picks one of a ``--portfolio`` run's subaccounts."""
    root = Path(folder).expanduser()
    result = root / "result.json"
    if not result.is_file():
        raise DataError(f"leader run {root}: not a trimtab run folder (no result.json)")
    try:
        doc = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"leader run {root}: result.json is unreadable ({exc})") from None
    timeframe = doc.get("timeframe") if isinstance(doc.get("timeframe"), str) else None
    here = root
    subs = root / "subaccounts"
    if subs.is_dir():
        names = sorted(p.name for p in subs.iterdir() if p.is_dir())
        if subaccount is None:
            if len(names) != 1:
                raise DataError(
                    f"leader run {root} is a portfolio run with subaccounts {', '.join(names)}: "
                    "name the one to copy (--subaccount NAME)"
                )
            subaccount = names[0]
        if subaccount not in names:
            raise DataError(
                f"leader run {root} has no subaccount {subaccount!r}; it has {', '.join(names)}"
            )
        here = subs / subaccount
        sub_doc = here / "result.json"
        if timeframe is None and sub_doc.is_file():
            timeframe = json.loads(sub_doc.read_text(encoding="utf-8")).get("timeframe")
    elif subaccount is not None:
        raise DataError(f"leader run {root} is a one-policy run: it has no subaccounts")
    trades_path = here / "trades.csv"
    raw = _read_text_csv(trades_path)
    trades, _, _ = _frame(raw, str(trades_path), "trades")
    equity_path = here / "equity.csv"
    equity = None
    if equity_path.is_file():
        eraw = _read_text_csv(equity_path)
        cols = _columns(eraw, str(equity_path))
        if "timestamp" not in cols or "equity" not in cols:
            raise DataError(f"{equity_path}: needs columns timestamp and equity")
        problems = _Problems(str(equity_path), "row", 2)
        ts = _times(eraw[cols["timestamp"]], cols["timestamp"], problems)
        vals = _numbers(eraw[cols["equity"]], cols["equity"], problems, positive=True)
        problems.raise_if_any()
        idx = pd.DatetimeIndex(ts.astype("datetime64[ns]")).tz_localize("UTC")
        equity = _known_at(pd.Series(vals, index=idx).sort_index(), timeframe)
    label = f"run {root}" + (f" subaccount {subaccount}" if subaccount else "")
    return LeaderFeed(trades, equity, label, "run")


def feed_from_rows(
    fills: Iterable[Mapping[str, Any]],
    balances: Iterable[Mapping[str, Any]],
    *,
    source: str,
    timeframe: str | None = None,
    subaccount: str | None = None,
) -> LeaderFeed:
    """A feed from a store's rows of one run: ``fills`` (``timestamp, symbol, side,
    quantity, price, fee, trade_id, reason, subaccount``) and ``balances`` (``subaccount,
    timestamp, equity``). ``subaccount`` None: the run's only one (else an error listing
    them). Equity re-stamped by one bar as a run folder's."""
    fill_rows = list(fills)
    bal_rows = [b for b in balances if not str(b.get("subaccount", "")).startswith("*")]
    names = sorted({str(r.get("subaccount") or "main") for r in fill_rows + bal_rows})
    if subaccount is None:
        if len(names) > 1:
            raise DataError(
                f"{source} has subaccounts {', '.join(names)}: name the one to copy "
                "(--subaccount NAME)"
            )
        subaccount = names[0] if names else "main"
    elif names and subaccount not in names:
        raise DataError(f"{source} has no subaccount {subaccount!r}; it has {', '.join(names)}")
    mine = [r for r in fill_rows if str(r.get("subaccount") or "main") == subaccount]
    raw = pd.DataFrame(
        {
            "timestamp": [pd.Timestamp(r["timestamp"]).isoformat() for r in mine],
            "symbol": [str(r["symbol"]) for r in mine],
            "side": [str(r["side"]) for r in mine],
            "quantity": [repr(float(r["quantity"])) for r in mine],
            "price": [repr(float(r["price"])) for r in mine],
            "fee": [repr(float(r.get("fee") or 0.0)) for r in mine],
            "reason": [str(r.get("reason") or "") for r in mine],
        }
    )
    if mine and all(r.get("trade_id") for r in mine):
        raw["trade_id"] = [str(r["trade_id"]) for r in mine]
    if raw.empty:
        raw = pd.DataFrame(columns=["timestamp", "symbol", "side", "quantity", "price"])
    trades, _, _ = _frame(raw, source, "trades", row_word="fill", line_offset=None)
    bal = [b for b in bal_rows if str(b.get("subaccount") or "main") == subaccount]
    equity = None
    if bal:
        idx = pd.DatetimeIndex([pd.Timestamp(b["timestamp"]) for b in bal])
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        series = pd.Series([float(b["equity"]) for b in bal], index=idx).sort_index()
        equity = _known_at(series[~series.index.duplicated(keep="last")], timeframe)
    return LeaderFeed(trades, equity, source + f" subaccount {subaccount}", "store")


# --- live: another account through ccxt ------------------------------------------------


class CcxtLeaderFeed:
    """A leader account's trades, read live through a ccxt client (``fetch_my_trades``
    per symbol, since a cursor).

    ``exchange``: a ccxt exchange with the leader's (read-only) keys; ``symbols``: what
    to follow (``BTCUSDT`` or ``BTC/USDT``); ``since``: the first trade time to read
    (UTC; epoch ms or a date). ``poll()`` returns the trades after the cursor (a feed
    frame, time order) and moves the cursor past them; trades at the cursor's millisecond
    already returned are not returned again (ids remembered). ``state()`` is the cursor,
    JSON-ready; ``CcxtLeaderFeed(exchange, symbols, state=...)`` resumes from it. Fees
    are converted to USDT when charged in the quote or the base asset; others count 0.
    """

    def __init__(
        self,
        exchange: Any,
        symbols: Sequence[str],
        *,
        since: Any = None,
        state: Mapping[str, Any] | None = None,
        limit: int = 500,
    ) -> None:
        if not symbols:
            raise ValueError("a ccxt leader feed needs at least one symbol to follow")
        self.exchange = exchange
        self.limit = int(limit)
        self._markets = {to_symbol(s.upper()) if "/" in s else s.upper(): s for s in symbols}
        start = 0 if since is None else _ms(since)
        self._cursor: dict[str, list[Any]] = {s: [start, []] for s in self._markets}
        if state is not None:
            for s, (ms, ids) in dict(state.get("cursor", {})).items():
                if s in self._cursor:
                    self._cursor[s] = [int(ms), [str(i) for i in ids]]

    def _ccxt_symbol(self, symbol: str) -> str:
        given = self._markets[symbol]
        if "/" in given:
            return given
        markets = getattr(self.exchange, "markets", None) or self.exchange.load_markets()
        for name, m in markets.items():
            if m.get("spot") and to_symbol(name) == symbol:
                return name
        raise DataError(f"{self.exchange.id}: no spot market for {symbol}")

    def state(self) -> dict[str, Any]:
        return {"cursor": {s: [int(ms), list(ids)] for s, (ms, ids) in self._cursor.items()}}

    def poll(self) -> pd.DataFrame:
        """New trades since the cursor, all followed symbols, as a feed frame."""
        rows: list[dict[str, Any]] = []
        for symbol in self._markets:
            market = self._ccxt_symbol(symbol)
            ms, seen = self._cursor[symbol]
            seen_set = set(seen)
            while True:
                page = self.exchange.fetch_my_trades(market, since=int(ms), limit=self.limit)
                fresh = [t for t in page if str(t["id"]) not in seen_set]
                for t in fresh:
                    rows.append(self._row(symbol, t))
                    if int(t["timestamp"]) > ms:
                        ms, seen_set = int(t["timestamp"]), set()
                    seen_set.add(str(t["id"]))
                if len(page) < self.limit or not fresh:
                    break
            self._cursor[symbol] = [int(ms), sorted(seen_set)]
        if not rows:
            return pd.DataFrame({c: [] for c in FEED_COLUMNS}).assign(
                timestamp=pd.DatetimeIndex([], tz="UTC")
            )
        frame = pd.DataFrame(rows)
        order = np.lexsort((frame["trade_id"].to_numpy(), frame["timestamp"].to_numpy()))
        return frame.iloc[order].reset_index(drop=True)[list(FEED_COLUMNS)]

    def _row(self, symbol: str, t: Mapping[str, Any]) -> dict[str, Any]:
        price = float(t["price"])
        fee = 0.0
        f = t.get("fee") or {}
        market = self.exchange.markets.get(t.get("symbol")) if self.exchange.markets else None
        base = market.get("base") if market else None
        quote = market.get("quote") if market else None
        if f.get("cost") is not None:
            if f.get("currency") == quote:
                fee = float(f["cost"])
            elif f.get("currency") == base:
                fee = float(f["cost"]) * price
        return {
            "timestamp": pd.Timestamp(int(t["timestamp"]), unit="ms", tz="UTC"),
            "symbol": symbol,
            "side": str(t["side"]).lower(),
            "quantity": float(t["amount"]),
            "price": price,
            "fee": fee,
            "trade_id": str(t["id"]),
            "note": f"order {t.get('order')}" if t.get("order") else "",
        }

    def equity(self, quote: str = "USDT") -> float:
        """The leader account's spot equity in ``quote``: each balance's total valued at
        the last price of its ``ASSET/quote`` market (``fetch_ticker``)."""
        balance = self.exchange.fetch_balance()
        total = 0.0
        for asset, amount in (balance.get("total") or {}).items():
            amount = float(amount or 0.0)
            if amount == 0.0:
                continue
            if asset == quote:
                total += amount
                continue
            ticker = self.exchange.fetch_ticker(f"{asset}/{quote}")
            total += amount * float(ticker["last"])
        return total

    def feed(self, frames: Sequence[pd.DataFrame], equity: pd.Series | None = None) -> LeaderFeed:
        """The polled frames as one ``LeaderFeed``."""
        kept = [f for f in frames if len(f)]
        trades = (
            pd.concat(kept, ignore_index=True)
            if kept
            else pd.DataFrame({c: [] for c in FEED_COLUMNS})
        )
        return LeaderFeed(trades, equity, f"ccxt {self.exchange.id}", "ccxt")


def _ms(value: Any) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    t = pd.Timestamp(value)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.value // 1_000_000)
