"""Readers for order-book and trade data (tick data), for market-making simulation.

Formats (detected from the file's suffix and column names, so any dump in the same
format reads):

* book, ``read_book``:
  - Tardis ``book_snapshot_5`` / ``book_snapshot_25`` CSV (``asks[0].price``,
    ``asks[0].amount``, ``bids[0].price``, ...; ``timestamp`` in microseconds);
  - Tardis ``quotes`` CSV (``ask_price``, ``ask_amount``, ``bid_price``, ``bid_amount``);
  - Tardis ``incremental_book_L2`` CSV (``is_snapshot``, ``side`` bid/ask, ``price``,
    ``amount``; microseconds): a book after each timestamp's rows;
  - Binance ``bookTicker`` CSV dumps (``best_bid_price``, ``best_bid_qty``,
    ``best_ask_price``, ``best_ask_qty``, ``transaction_time``);
  - Binance depth CSV (``side`` b/a, ``update_type`` snap/set, ``price``, ``qty``;
    ``timestamp`` in milliseconds): a book after each timestamp's rows;
  - parquet top-of-book quotes (``timestamp``, ``bid``, ``ask``, ``bid_size``,
    ``ask_size``);
  - Bybit ``orderbook.N`` JSON lines (``.data``/``.jsonl``, or a ``.zip`` of them):
    a snapshot, then deltas applied to it (size 0 removes a level), a book per message.
* trades, ``read_trades``:
  - Tardis ``trades`` CSV (``id``, ``side`` buy/sell of the aggressor, ``price``,
    ``amount``; microseconds);
  - Binance ``trades`` / ``aggTrades`` CSV dumps, with their header (``id`` or
    ``agg_trade_id``, ``price``, ``qty``/``quantity``, ``time``/``transact_time``,
    ``is_buyer_maker``) or without it (spot dumps: 7 or 8 columns in Binance's order);
  - parquet trades (``timestamp``, ``trade_id``, ``price``, ``quantity``,
    ``buyer_maker`` as a bool or the strings ``True``/``False``).

Conventions: times are int64 nanoseconds since the epoch, UTC (numeric timestamps in
seconds, milliseconds, microseconds or nanoseconds are told apart by their size, Tardis's
are microseconds); prices in the quote currency, sizes in base units; a trade's
``side`` is its aggressor's: +1 a buyer lifted the ask, -1 a seller hit the bid
(``buyer_maker`` true means the seller was the aggressor). Book levels are best first,
NaN where the book shows fewer levels.

Bad input raises ``TickDataError`` naming the file, the line (CSV/JSON lines, the header
is line 1) or row (parquet, from 1) and the column.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError


class TickDataError(DataError):
    """A book or trade file that cannot be read as such: names ``path``, ``where`` (line
    or row) and ``column``."""

    def __init__(
        self, path: str | Path, message: str, *, where: str | None = None, column: str | None = None
    ) -> None:
        self.path = str(path)
        self.where = where
        self.column = column
        at = ", ".join(x for x in (where, f"column {column!r}" if column else None) if x)
        super().__init__(f"{path}: {at + ': ' if at else ''}{message}")


@dataclass(frozen=True, eq=False)
class BookSnapshots:
    """Order-book states in time order. ``ts``: int64 ns UTC (n,); ``bid_px``,
    ``bid_sz``, ``ask_px``, ``ask_sz``: (n, levels), best level first, NaN past the
    levels shown."""

    source: str
    symbol: str
    ts: np.ndarray
    bid_px: np.ndarray
    bid_sz: np.ndarray
    ask_px: np.ndarray
    ask_sz: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def levels(self) -> int:
        return self.bid_px.shape[1]

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.ts, utc=True))

    @property
    def mid(self) -> np.ndarray:
        return (self.bid_px[:, 0] + self.ask_px[:, 0]) / 2.0

    @property
    def micro(self) -> np.ndarray:
        """Micro-price: the touch prices weighted by the opposite side's size."""
        b, a = self.bid_px[:, 0], self.ask_px[:, 0]
        bs, as_ = self.bid_sz[:, 0], self.ask_sz[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (b * as_ + a * bs) / (bs + as_)

    def frame(self) -> pd.DataFrame:
        """One row per state: ``timestamp`` (UTC), then ``bid_px_0``, ``bid_sz_0``, ..."""
        cols: dict[str, object] = {"timestamp": self.times}
        for k in range(self.levels):
            cols[f"bid_px_{k}"] = self.bid_px[:, k]
            cols[f"bid_sz_{k}"] = self.bid_sz[:, k]
            cols[f"ask_px_{k}"] = self.ask_px[:, k]
            cols[f"ask_sz_{k}"] = self.ask_sz[:, k]
        return pd.DataFrame(cols)


@dataclass(frozen=True, eq=False)
class Trades:
    """Trades in time order: ``ts`` int64 ns UTC, ``trade_id`` (str), ``price``,
    ``size`` (base), ``side`` (int8: +1 buyer aggressor, -1 seller aggressor)."""

    source: str
    symbol: str
    ts: np.ndarray
    trade_id: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.ts, utc=True))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "timestamp": self.times,
                "trade_id": self.trade_id,
                "price": self.price,
                "size": self.size,
                "side": self.side,
            }
        )


# --- helpers ------------------------------------------------------------------------------


def _where(kind: str, i: int) -> str:
    # CSV/JSON lines: the header is line 1, data row i (0-based) is line i + 2.
    return f"line {i + 2}" if kind == "csv" else f"row {i + 1}"


def _numeric(
    path: Path, frame: pd.DataFrame, column: str, kind: str, *, positive: bool, allow_nan: bool
) -> np.ndarray:
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if allow_nan:
        bad &= raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TickDataError(
            path, f"not a number: {raw.iloc[i]!r}", where=_where(kind, i), column=column
        )
    low = (values <= 0) if positive else (values < 0)
    low &= np.isfinite(values)
    if low.any():
        i = int(np.flatnonzero(low)[0])
        need = "> 0" if positive else ">= 0"
        raise TickDataError(
            path, f"must be {need}, got {raw.iloc[i]!r}", where=_where(kind, i), column=column
        )
    return values


_UNIT_BY_DIGITS = ((1e17, "ns"), (1e14, "us"), (1e11, "ms"), (0.0, "s"))


def _timestamps(
    path: Path, frame: pd.DataFrame, column: str, kind: str, *, unit: str | None = None
) -> np.ndarray:
    raw = frame[column]
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.to_datetime(raw, utc=True)
        if stamps.isna().any():
            i = int(np.flatnonzero(stamps.isna().to_numpy())[0])
            raise TickDataError(path, "missing timestamp", where=_where(kind, i), column=column)
        ns = stamps.dt.as_unit("ns").astype("int64").to_numpy()
    else:
        numbers = pd.to_numeric(raw, errors="coerce")
        if numbers.notna().all():
            values = numbers.to_numpy(dtype=float)
            if not (values > 0).all():
                i = int(np.flatnonzero(~(values > 0))[0])
                raise TickDataError(
                    path, f"not a time: {raw.iloc[i]!r}", where=_where(kind, i), column=column
                )
            if unit is None:
                top = float(np.median(values))
                unit = next(u for floor, u in _UNIT_BY_DIGITS if top >= floor)
            scale = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[unit]
            ns = numbers.to_numpy(dtype="int64") * scale
        else:
            stamps = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
            if stamps.isna().any():
                i = int(np.flatnonzero(stamps.isna().to_numpy())[0])
                raise TickDataError(
                    path, f"not a time: {raw.iloc[i]!r}", where=_where(kind, i), column=column
                )
            ns = stamps.dt.as_unit("ns").astype("int64").to_numpy()
    back = np.flatnonzero(np.diff(ns) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise TickDataError(
            path,
            "timestamps go back in time (the file must be in time order)",
            where=_where(kind, i),
            column=column,
        )
    return ns


def _read_table(path: Path, *, header: bool = True) -> tuple[pd.DataFrame, str]:
    if not path.is_file():
        raise TickDataError(path, "no such file")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path), "parquet"
        if name.endswith((".csv", ".csv.gz", ".csv.zip")):
            frame = pd.read_csv(
                path, header=0 if header else None, dtype=str, keep_default_na=False
            )
            return frame.replace("", np.nan), "csv"
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise TickDataError(path, f"cannot be read ({exc})") from None
    raise TickDataError(path, "unknown format: expected .csv, .csv.gz, .parquet, .zip or .data")


def _need(path: Path, frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TickDataError(
            path,
            f"not a {what} file: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})",
        )


def _symbol(frame: pd.DataFrame, given: str | None, path: Path) -> str:
    if given:
        return given
    if "symbol" in frame.columns and len(frame):
        return str(frame["symbol"].iloc[0]).replace("/", "")
    return path.name.split("-")[0].split("_")[0].upper()


def _first(frame: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in frame.columns), None)


# --- books --------------------------------------------------------------------------------

# Column pairs that make a file top-of-book quotes (parquet, Tardis quotes, Binance bookTicker).
_QUOTE_PAIRS = ({"bid", "ask"}, {"bid_price", "ask_price"}, {"best_bid_price", "best_ask_price"})


def read_book(path: str | Path, *, symbol: str | None = None, depth: int = 25) -> BookSnapshots:
    """Order-book states from a Tardis, Binance, Bybit or top-of-book quotes file (see the
    module docstring). ``depth``: levels kept per side (incremental formats)."""
    path = Path(path)
    name = path.name.lower()
    if depth < 1:
        raise ValueError(f"depth must be at least 1 level, got {depth}")
    if name.endswith((".zip", ".data", ".jsonl", ".json")) and not name.endswith(".csv.zip"):
        return _read_bybit(path, symbol, depth)
    frame, kind = _read_table(path)
    if "asks[0].price" in frame.columns:
        return _read_tardis_snapshot(path, frame, symbol)
    if {"side", "update_type", "price", "qty"} <= set(frame.columns):
        return _read_binance_depth(path, frame, symbol, depth)
    if {"side", "is_snapshot", "price", "amount"} <= set(frame.columns):
        return _read_tardis_incremental(path, frame, symbol, depth)
    cols = set(frame.columns)
    if any(pair <= cols for pair in _QUOTE_PAIRS):
        return _read_quotes(path, frame, kind, symbol)
    raise TickDataError(
        path,
        "not an order-book file: expected Tardis book_snapshot columns (asks[0].price, ...), "
        "Tardis incremental_book_L2 (is_snapshot, side, price, amount), Binance depth columns "
        "(side, update_type, price, qty) or quotes (bid, ask, bid_size, "
        f"ask_size); found {', '.join(map(str, frame.columns))}",
    )


def _read_quotes(path: Path, frame: pd.DataFrame, kind: str, symbol: str | None) -> BookSnapshots:
    names = {
        "bid": _first(frame, "bid", "bid_price", "best_bid_price"),
        "ask": _first(frame, "ask", "ask_price", "best_ask_price"),
        "bid_size": _first(frame, "bid_size", "bid_amount", "bid_qty", "best_bid_qty"),
        "ask_size": _first(frame, "ask_size", "ask_amount", "ask_qty", "best_ask_qty"),
        "ts": _first(frame, "timestamp", "time", "ts", "transaction_time", "event_time"),
    }
    for role, col in names.items():
        if col is None:
            raise TickDataError(path, f"not a quotes file: no {role} column")
    unit = "us" if "local_timestamp" in frame.columns else None  # Tardis: microseconds
    ts = _timestamps(path, frame, names["ts"], kind, unit=unit)  # type: ignore[arg-type]
    cols = {
        role: _numeric(path, frame, col, kind, positive=role in ("bid", "ask"), allow_nan=False)  # type: ignore[arg-type]
        for role, col in names.items()
        if role != "ts"
    }
    return BookSnapshots(
        str(path),
        _symbol(frame, symbol, path),
        ts,
        cols["bid"][:, None],
        cols["bid_size"][:, None],
        cols["ask"][:, None],
        cols["ask_size"][:, None],
    )


def _read_tardis_snapshot(path: Path, frame: pd.DataFrame, symbol: str | None) -> BookSnapshots:
    levels = 0
    while f"asks[{levels}].price" in frame.columns:
        levels += 1
    for side in ("asks", "bids"):
        _need(
            path,
            frame,
            [f"{side}[{k}].{f}" for k in range(levels) for f in ("price", "amount")],
            "Tardis book_snapshot",
        )
    _need(path, frame, ["timestamp"], "Tardis book_snapshot")
    ts = _timestamps(path, frame, "timestamp", "csv", unit="us")
    out = {}
    for side in ("bids", "asks"):
        px = np.column_stack(
            [
                _numeric(path, frame, f"{side}[{k}].price", "csv", positive=True, allow_nan=True)
                for k in range(levels)
            ]
        )
        sz = np.column_stack(
            [
                _numeric(path, frame, f"{side}[{k}].amount", "csv", positive=False, allow_nan=True)
                for k in range(levels)
            ]
        )
        out[side] = (px, sz)
    return BookSnapshots(str(path), _symbol(frame, symbol, path), ts, *out["bids"], *out["asks"])


def _levels_from(
    bids: dict[float, float], asks: dict[float, float], depth: int
) -> tuple[np.ndarray, ...]:
    b = sorted(bids.items(), key=lambda kv: -kv[0])[:depth]
    a = sorted(asks.items())[:depth]
    rows = []
    for side in (b, a):
        px = np.full(depth, np.nan)
        sz = np.full(depth, np.nan)
        if side:
            px[: len(side)] = [p for p, _ in side]
            sz[: len(side)] = [s for _, s in side]
        rows += [px, sz]
    return tuple(rows)


def _stack(
    path: Path, symbol: str, stamps: list[int], rows: list[tuple[np.ndarray, ...]]
) -> BookSnapshots:
    if not rows:
        raise TickDataError(path, "holds no order-book state")
    cols = [np.vstack([r[k] for r in rows]) for k in range(4)]
    return BookSnapshots(str(path), symbol, np.asarray(stamps, dtype="int64"), *cols)


def _read_binance_depth(
    path: Path, frame: pd.DataFrame, symbol: str | None, depth: int
) -> BookSnapshots:
    return _read_incremental(
        path,
        frame,
        symbol,
        depth,
        qty="qty",
        kind="update_type",
        snap=("snap",),
        update=("set",),
        unit=None,
        what="Binance depth",
    )


def _read_tardis_incremental(
    path: Path, frame: pd.DataFrame, symbol: str | None, depth: int
) -> BookSnapshots:
    return _read_incremental(
        path,
        frame,
        symbol,
        depth,
        qty="amount",
        kind="is_snapshot",
        snap=("true",),
        update=("false",),
        unit="us",
        what="Tardis incremental_book_L2",
    )


def _read_incremental(
    path: Path,
    frame: pd.DataFrame,
    symbol: str | None,
    depth: int,
    *,
    qty: str,
    kind: str,
    snap: tuple[str, ...],
    update: tuple[str, ...],
    unit: str | None,
    what: str,
) -> BookSnapshots:
    """A book of levels set (size 0: removed) row by row; a run of snapshot rows
    replaces the book; one book state after each timestamp's rows."""
    _need(path, frame, ["timestamp", "side", kind, "price", qty], what)
    ts = _timestamps(path, frame, "timestamp", "csv", unit=unit)
    price = _numeric(path, frame, "price", "csv", positive=True, allow_nan=False)
    size = _numeric(path, frame, qty, "csv", positive=False, allow_nan=False)
    sides = frame["side"].astype(str).str.strip().str.lower().to_numpy()
    kinds = frame[kind].astype(str).str.strip().str.lower().to_numpy()
    for col, values, allowed in (
        ("side", sides, ("b", "a", "bid", "ask")),
        (kind, kinds, snap + update),
    ):
        bad = ~np.isin(values, allowed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TickDataError(
                path,
                f"{frame[col].iloc[i]!r}, expected one of {', '.join(allowed)}",
                where=_where("csv", i),
                column=col,
            )
    is_snap = np.isin(kinds, snap)
    if not len(frame) or not is_snap[0]:
        raise TickDataError(
            path,
            f"the first row must be a snapshot ({kind} {snap[0]})",
            where="line 2",
            column=kind,
        )
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    stamps: list[int] = []
    rows: list[tuple[np.ndarray, ...]] = []
    in_snap = False
    for i in range(len(frame)):
        if is_snap[i] and not in_snap:
            bids, asks = {}, {}  # a new snapshot replaces the book
        in_snap = bool(is_snap[i])
        book = bids if sides[i].startswith("b") else asks
        if size[i] == 0:
            book.pop(price[i], None)
        else:
            book[price[i]] = size[i]
        if i + 1 == len(frame) or ts[i + 1] != ts[i]:
            stamps.append(int(ts[i]))
            rows.append(_levels_from(bids, asks, depth))
    return _stack(path, _symbol(frame, symbol, path), stamps, rows)


def _json_lines(path: Path) -> Iterator[tuple[str, int, str]]:
    if not path.is_file():
        raise TickDataError(path, "no such file")
    if path.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if not m.endswith("/")]
                if not members:
                    raise TickDataError(path, "the zip archive is empty")
                for member in sorted(members):
                    with archive.open(member) as raw:
                        for n, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), 1):
                            yield f"{path}!{member}", n, line
        except zipfile.BadZipFile as exc:
            raise TickDataError(path, f"not a zip archive ({exc})") from None
    else:
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                yield str(path), n, line


def _read_bybit(path: Path, symbol: str | None, depth: int) -> BookSnapshots:
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    stamps: list[int] = []
    rows: list[tuple[np.ndarray, ...]] = []
    sym = symbol
    last_u: int | None = None
    have_snapshot = False
    for source, n, line in _json_lines(path):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            msg = json.loads(line)
            kind = msg["type"]
            data = msg["data"]
            ts = int(msg["ts"]) * 1_000_000
        except (ValueError, KeyError, TypeError) as exc:
            raise TickDataError(
                source, f"not a Bybit order-book message ({type(exc).__name__}: {exc})", where=where
            ) from None
        if kind == "snapshot":
            bids, asks, have_snapshot = {}, {}, True
        elif kind == "delta":
            if not have_snapshot:
                raise TickDataError(
                    source, "a delta before any snapshot", where=where, column="type"
                )
            u = data.get("u")
            if last_u is not None and u is not None and int(u) != last_u + 1:
                raise TickDataError(
                    source,
                    f"update id {u} follows {last_u}: a message is missing, the book cannot be rebuilt",
                    where=where,
                    column="u",
                )
        else:
            raise TickDataError(
                source, f"unknown message type {kind!r}", where=where, column="type"
            )
        last_u = int(data["u"]) if data.get("u") is not None else None
        sym = sym or str(data.get("s", ""))
        for key, book in (("b", bids), ("a", asks)):
            for level in data.get(key, []):
                try:
                    p, s = float(level[0]), float(level[1])
                except (ValueError, TypeError, IndexError):
                    raise TickDataError(
                        source, f"bad price level {level!r}", where=where, column=key
                    ) from None
                if not (np.isfinite(p) and p > 0 and np.isfinite(s) and s >= 0):
                    raise TickDataError(
                        source, f"bad price level {level!r}", where=where, column=key
                    )
                if s == 0:
                    book.pop(p, None)
                else:
                    book[p] = s
        if stamps and ts < stamps[-1]:
            raise TickDataError(source, "timestamps go back in time", where=where, column="ts")
        stamps.append(ts)
        rows.append(_levels_from(bids, asks, depth))
    if not sym:
        parts = path.name.split("_")
        sym = parts[1] if len(parts) > 1 else path.stem.upper()
    return _stack(path, sym, stamps, rows)


# --- trades -------------------------------------------------------------------------------

# Binance's spot dumps come without a header: these are their columns, in order.
_BINANCE_TRADES = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
_BINANCE_AGG = [
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "transact_time",
    "is_buyer_maker",
    "is_best_match",
]
_TRUE = {"true", "1", "t", "yes"}
_FALSE = {"false", "0", "f", "no"}


def read_trades(path: str | Path, *, symbol: str | None = None) -> Trades:
    """Trades from a Tardis or Binance dump or a parquet file (see the module docstring)."""
    path = Path(path)
    frame, kind = _read_table(path)
    if kind == "csv" and len(frame.columns) in (7, 8) and _numeric_header(frame.columns):
        frame, _ = _read_table(path, header=False)
        frame.columns = _BINANCE_TRADES if len(frame.columns) == 7 else _BINANCE_AGG
        kind = "csv-noheader"
    ts_col = _first(frame, "timestamp", "time", "transact_time", "T")
    id_col = _first(frame, "trade_id", "id", "agg_trade_id", "a")
    size_col = _first(frame, "quantity", "qty", "amount", "size", "q")
    price_col = _first(frame, "price", "p")
    side_col = _first(frame, "side", "buyer_maker", "is_buyer_maker", "isBuyerMaker", "m")
    for role, col in (
        ("timestamp", ts_col),
        ("trade id", id_col),
        ("price", price_col),
        ("quantity", size_col),
        ("aggressor side (side or is_buyer_maker)", side_col),
    ):
        if col is None:
            raise TickDataError(
                path,
                f"not a trades file: no {role} column (columns: {', '.join(map(str, frame.columns))})",
            )
    assert ts_col and id_col and size_col and price_col and side_col
    where_kind = "csv" if kind == "csv" else ("parquet" if kind == "parquet" else "raw")
    unit = "us" if "local_timestamp" in frame.columns else None  # Tardis: microseconds
    ts = _timestamps(path, frame, ts_col, where_kind, unit=unit)
    price = _numeric(path, frame, price_col, where_kind, positive=True, allow_nan=False)
    size = _numeric(path, frame, size_col, where_kind, positive=True, allow_nan=False)
    side = _aggressor(path, frame, side_col, where_kind)
    ids = frame[id_col]
    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise TickDataError(path, "missing trade id", where=_where(where_kind, i), column=id_col)
    trade_id = ids.astype(str).to_numpy(dtype=object)
    return Trades(str(path), _symbol(frame, symbol, path), ts, trade_id, price, size, side)


def _numeric_header(columns: Iterable[object]) -> bool:
    try:
        float(str(next(iter(columns))))
        return True
    except ValueError:
        return False


def _aggressor(path: Path, frame: pd.DataFrame, column: str, kind: str) -> np.ndarray:
    raw = frame[column]
    if column == "side":
        text = raw.astype(str).str.strip().str.lower().to_numpy()
        out = np.where(text == "buy", 1, np.where(text == "sell", -1, 0)).astype("int8")
        what = "buy or sell"
    else:  # buyer is the maker: the seller hit the bid
        if raw.dtype == bool:
            return np.where(raw.to_numpy(), -1, 1).astype("int8")
        text = raw.astype(str).str.strip().str.lower().to_numpy()
        out = np.where(np.isin(text, list(_TRUE)), -1, np.where(np.isin(text, list(_FALSE)), 1, 0))
        out = out.astype("int8")
        what = "True or False"
    bad = out == 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TickDataError(
            path,
            f"aggressor side {raw.iloc[i]!r}, expected {what} (a trade without a known "
            "aggressor cannot say which quote it fills)",
            where=_where(kind, i),
            column=column,
        )
    return out


def find_tick_files(folder: str | Path) -> dict[str, Path]:
    """Book and trade files for a simulation in ``folder`` (or its ``orderbook_samples``
    subfolder): ``{"book": ..., "trades": ...}`` where found. A trades file is one whose
    name holds ``trade``; the book is the quotes or book file of the same symbol prefix
    (e.g. ``btcusdt-quotes.parquet`` beside ``btcusdt-trades.parquet``)."""
    base = Path(folder)
    candidates = [base, base / "orderbook_samples"]
    for where in candidates:
        if not where.is_dir():
            continue
        trades = sorted(p for p in where.iterdir() if "trade" in p.name.lower() and p.is_file())
        for t in trades:
            prefix = t.name.lower().split("trade")[0]
            near = [p for p in sorted(where.iterdir()) if p.is_file() and p != t]
            near = [p for p in near if p.name.lower().startswith(prefix)]
            # Quotes move with the trades; a depth file may be a single snapshot.
            for key in ("quote", "book", "depth"):
                books = [p for p in near if key in p.name.lower()]
                if books:
                    return {"book": books[0], "trades": t}
    return {}
