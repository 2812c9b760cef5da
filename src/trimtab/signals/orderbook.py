"""Order book liquidity: spread, mid, depth near the mid, imbalance; sample-file readers.

A book is ccxt's ``fetch_order_book`` dict::

    {"symbol": "BTCUSDT", "timestamp": 1598918403696, "datetime": "2020-09-01T00:00:03.696Z",
     "nonce": None, "bids": [[price, amount], ...], "asks": [[price, amount], ...]}

``bids`` best (highest) first, ``asks`` best (lowest) first, amounts in the base asset,
``timestamp`` in milliseconds since the epoch (UTC). ``book_metrics`` sorts the levels
itself and ignores levels with a non-positive or non-finite price or amount, so it also
takes books assembled by hand. The readers keep the file's own symbol (``BTCUSDT``).

Metrics (``book_metrics``), all for one book:

- ``mid = (best_bid + best_ask) / 2`` (quote currency);
- ``spread_bps = (best_ask - best_bid) / mid * 1e4`` (zero or negative if the book is
  locked or crossed, which real feeds do show for an instant);
- ``bid_depth`` / ``ask_depth``: quote-currency value ``sum(price * amount)`` of the
  levels with price within ``band`` (default 1 %) of the mid, i.e. bids at or above
  ``mid * (1 - band)`` and asks at or below ``mid * (1 + band)``;
- ``imbalance = (bid_depth - ask_depth) / (bid_depth + ask_depth)`` in [-1, 1], positive
  when buyers dominate;
- ``bid_complete`` / ``ask_complete``: whether that side has a level beyond the band.
  A truncated book (e.g. the 5 or 25 best levels) that ends inside the band
  understates depth; these flags say so.

A book with an empty side has no mid: every metric that needs one is NaN.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError

__all__ = [
    "book_metrics",
    "book_metrics_frame",
    "read_binance_depth_snapshot",
    "read_bybit_orderbook",
    "read_tardis_book_snapshot",
]

_METRIC_KEYS = (
    "mid",
    "best_bid",
    "best_ask",
    "spread_bps",
    "bid_depth",
    "ask_depth",
    "imbalance",
    "bid_complete",
    "ask_complete",
)


def _levels(side: Any, descending: bool) -> np.ndarray:
    a = np.asarray(side if side is not None and len(side) else np.empty((0, 2)), dtype=float)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"book levels must be [[price, amount], ...], got shape {a.shape}")
    a = a[:, :2]
    a = a[np.isfinite(a).all(axis=1) & (a[:, 0] > 0) & (a[:, 1] > 0)]
    order = np.argsort(-a[:, 0] if descending else a[:, 0], kind="stable")
    return a[order]


def book_metrics(book: Mapping[str, Any], band: float = 0.01) -> dict[str, float]:
    """Spread (bps), mid, depth within ``band`` of the mid (quote currency) and imbalance.

    See the module docstring for the definitions. ``band`` is a fraction (0.01 = 1 %).
    Also returns ``timestamp`` (ms, as given, or NaN).
    """
    if not 0 < band < 1:
        raise ValueError(f"band must be a fraction in (0, 1), got {band!r}")
    bids = _levels(book.get("bids"), descending=True)
    asks = _levels(book.get("asks"), descending=False)
    ts = book.get("timestamp")
    out: dict[str, float] = dict.fromkeys(_METRIC_KEYS, float("nan"))
    out["timestamp"] = float(ts) if ts is not None else float("nan")
    if len(bids):
        out["best_bid"] = float(bids[0, 0])
    if len(asks):
        out["best_ask"] = float(asks[0, 0])
    if not (len(bids) and len(asks)):
        return out
    mid = 0.5 * (bids[0, 0] + asks[0, 0])
    lo, hi = mid * (1.0 - band), mid * (1.0 + band)
    in_bid = bids[:, 0] >= lo
    in_ask = asks[:, 0] <= hi
    bid_depth = float((bids[in_bid, 0] * bids[in_bid, 1]).sum())
    ask_depth = float((asks[in_ask, 0] * asks[in_ask, 1]).sum())
    total = bid_depth + ask_depth
    out.update(
        mid=float(mid),
        spread_bps=float((asks[0, 0] - bids[0, 0]) / mid * 1e4),
        bid_depth=bid_depth,
        ask_depth=ask_depth,
        imbalance=(bid_depth - ask_depth) / total if total > 0 else float("nan"),
        bid_complete=float(not in_bid.all()),
        ask_complete=float(not in_ask.all()),
    )
    return out


def book_metrics_frame(books: Iterable[Mapping[str, Any]], band: float = 0.01) -> pd.DataFrame:
    """``book_metrics`` of many books, one row each, indexed by UTC time of the book.

    Columns ``symbol`` and the metrics; the ``*_complete`` flags as booleans.
    """
    rows = []
    for b in books:
        m = book_metrics(b, band)
        m["symbol"] = b.get("symbol")
        rows.append(m)
    df = pd.DataFrame(rows, columns=["timestamp", "symbol", *_METRIC_KEYS])
    df.index = pd.DatetimeIndex(
        pd.to_datetime(df.pop("timestamp"), unit="ms", utc=True), name="timestamp"
    )
    for k in ("bid_complete", "ask_complete"):
        df[k] = df[k].map(lambda v: bool(v) if np.isfinite(v) else pd.NA).astype("boolean")
    return df


# --------------------------------------------------------------------------- readers


def _book(symbol: Any, ts_ms: int, bids: list, asks: list, nonce: Any = None) -> dict[str, Any]:
    ts_ms = int(ts_ms)
    dt = pd.Timestamp(ts_ms, unit="ms", tz="UTC")
    return {
        "symbol": None if symbol is None else str(symbol),
        "timestamp": ts_ms,
        "datetime": dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z",
        "nonce": nonce,
        "bids": sorted(bids, key=lambda lv: -lv[0]),
        "asks": sorted(asks, key=lambda lv: lv[0]),
    }


def _read(path: str | Path, what: str, **kw: Any) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file ({what})")
    try:
        df = pd.read_csv(p, **kw)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read as {what}: {exc}") from None
    if df.empty:
        raise DataError(f"{p}: no rows ({what})")
    return df


def _require(p: str | Path, df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{p}: not {what}: missing column(s) {', '.join(missing)}")


def read_binance_depth_snapshot(path: str | Path) -> list[dict[str, Any]]:
    """Books from a Binance depth snapshot CSV, one per snapshot, in time order.

    Layout (Binance USD-M data, one row per level)::

        symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu

    ``timestamp`` in ms, ``side`` ``b``/``a``; rows are grouped into books by
    ``(timestamp, last_update_id)``, which becomes the ``nonce``. The shared sample has
    only its bid side, so its books have no asks (and no mid).
    """
    what = "a Binance depth snapshot CSV"
    df = _read(path, what)
    _require(path, df, ("symbol", "timestamp", "last_update_id", "side", "price", "qty"), what)
    bad = ~df["side"].isin(["b", "a"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise DataError(
            f"{path}: row {row}, column 'side': {df['side'].iloc[row - 2]!r} is not 'b' or 'a'"
        )
    books = []
    for (ts, uid), g in df.groupby(["timestamp", "last_update_id"], sort=True):
        lv = g[["price", "qty"]].to_numpy(float)
        is_bid = (g["side"] == "b").to_numpy()
        books.append(
            _book(g["symbol"].iloc[0], ts, lv[is_bid].tolist(), lv[~is_bid].tolist(), int(uid))
        )
    return books


def read_tardis_book_snapshot(path: str | Path) -> list[dict[str, Any]]:
    """Books from a Tardis ``book_snapshot_N`` CSV (N = 5, 25, ...), one per row.

    Layout: ``exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,
    bids[0].price,bids[0].amount,asks[1].price,...``; timestamps in microseconds (the
    exchange's ``timestamp`` becomes the book's, in ms). Empty level cells (a thin book)
    are skipped.
    """
    what = "a Tardis book_snapshot CSV"
    df = _read(path, what)
    _require(path, df, ("symbol", "timestamp"), what)
    n = 0
    while f"asks[{n}].price" in df.columns or f"bids[{n}].price" in df.columns:
        n += 1
    if n == 0:
        raise DataError(f"{path}: not {what}: no 'asks[0].price' / 'bids[0].price' columns")

    def side(name: str) -> np.ndarray:
        cols = []
        for i in range(n):
            for f in ("price", "amount"):
                c = f"{name}[{i}].{f}"
                cols.append(df[c] if c in df.columns else pd.Series(np.nan, index=df.index))
        arr = pd.concat(cols, axis=1).apply(pd.to_numeric, errors="coerce").to_numpy(float)
        return arr.reshape(len(df), n, 2)

    asks, bids = side("asks"), side("bids")
    ts = pd.to_numeric(df["timestamp"], errors="coerce")
    if ts.isna().any():
        row = int(np.flatnonzero(ts.isna().to_numpy())[0]) + 2
        raise DataError(f"{path}: row {row}, column 'timestamp': not a number of microseconds")
    books = []
    for k in range(len(df)):
        b = bids[k][np.isfinite(bids[k]).all(axis=1)].tolist()
        a = asks[k][np.isfinite(asks[k]).all(axis=1)].tolist()
        books.append(_book(df["symbol"].iloc[k], int(ts.iloc[k]) // 1000, b, a))
    return books


def read_bybit_orderbook(path: str | Path) -> list[dict[str, Any]]:
    """Books from a Bybit ``orderbook.N`` websocket recording (``.data`` lines or zipped).

    Each line is a JSON message ``{"topic", "type": "snapshot"|"delta", "ts", "data":
    {"s", "b", "a", "u", "seq"}}``; a snapshot replaces the book, a delta sets the
    amount of each listed price (amount 0 removes the level). Returns the book after
    every message (``timestamp`` = the message's ``ts`` in ms, ``nonce`` = ``u``).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file (a Bybit order book recording)")
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise DataError(f"{p}: expected one file in the zip, found {len(names)}")
            text = z.read(names[0]).decode()
    else:
        text = p.read_text()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    books = []
    started = False
    for lineno, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            kind, data, ts = msg["type"], msg["data"], msg["ts"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{p}: line {lineno}: not a Bybit order book message ({exc})") from None
        if kind == "snapshot":
            bids.clear()
            asks.clear()
            started = True
        elif kind != "delta":
            raise DataError(f"{p}: line {lineno}: unknown message type {kind!r}")
        elif not started:
            continue  # deltas before the first snapshot cannot be applied
        for levels, book_side in ((data.get("b", []), bids), (data.get("a", []), asks)):
            for price, amount in levels:
                pr, am = float(price), float(amount)
                if am == 0:
                    book_side.pop(pr, None)
                else:
                    book_side[pr] = am
        books.append(
            _book(
                data.get("s"),
                ts,
                [[k, v] for k, v in bids.items()],
                [[k, v] for k, v in asks.items()],
                data.get("u"),
            )
        )
    if not books:
        raise DataError(f"{p}: no order book snapshot found")
    return books
