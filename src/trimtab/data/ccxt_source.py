"""Downloading OHLCV bars through ccxt into a Parquet cache that ``load_panel`` reads.

Cache layout: one file per (exchange, symbol, timeframe) directly in ``cache_dir``:
``<exchange>-<SYMBOL>-<timeframe>.parquet`` (e.g. ``binance-BTCUSDT-1h.parquet``), columns
``LONG_COLUMNS``, so ``load_panel(cache_dir, timeframe="1h")`` loads the downloads like
any data folder. The file's Parquet metadata (key ``trimtab``) records the exchange, the
ccxt symbol, the timeframe and ``covered_from_ms``, the earliest start ever requested, so
that a later run knows the exchange has nothing before the first cached bar and does not
ask again.

A run asks only for what the cache lacks: bars before ``covered_from_ms`` if ``since`` is
earlier, and bars after the last cached one up to ``until`` (or up to the last closed
bar). A second identical run with a past ``until`` therefore makes no request at all.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError
from trimtab.data.panel import LONG_COLUMNS, timeframe_seconds
from trimtab.data.readers import to_utc
from trimtab.data.symbols import to_symbol
from trimtab.data.validation import TIME_UNIT, grid_origin_us

_META_KEY = b"trimtab"
ProgressFn = Callable[[str, int], None]


def cache_path(cache_dir: str | Path, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """Cache file of one (exchange, symbol, timeframe); ``symbol`` as ccxt or trimtab writes it."""
    return Path(cache_dir) / f"{exchange_id}-{to_symbol(symbol)}-{timeframe}.parquet"


def _to_ms(value: Any, what: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)  # already epoch milliseconds, as ccxt uses
    return int(to_utc(value, what=what).value // 1_000_000)  # .value is always ns


def read_cache(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Cached bars and their metadata; an empty frame and {} if there is no cache yet."""
    import pyarrow.parquet as pq

    if not path.exists():
        return pd.DataFrame(columns=list(LONG_COLUMNS)), {}
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow's error types vary by version
        raise DataError(
            f"{path}: cache file is unreadable ({exc}); delete it to download again"
        ) from None
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    return table.to_pandas(), meta


def _write_cache(path: Path, bars: pd.DataFrame, meta: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(bars[list(LONG_COLUMNS)], preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache file


def _rows_to_frame(rows: list[list[float]], symbol: str) -> pd.DataFrame:
    arr = np.asarray(rows, dtype=float).reshape(-1, 6)
    ts = pd.DatetimeIndex(arr[:, 0].astype("int64").astype("datetime64[ms]")).tz_localize("UTC")
    return pd.DataFrame(
        {
            "timestamp": ts.as_unit(TIME_UNIT),
            "symbol": symbol,
            "open": arr[:, 1],
            "high": arr[:, 2],
            "low": arr[:, 3],
            "close": arr[:, 4],
            "volume": arr[:, 5],
            # ccxt returns base volume only; quote volume is approximated from the close.
            "quote_volume": arr[:, 5] * arr[:, 4],
        }
    )


def _make_exchange(exchange_id: str) -> Any:
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise DataError(f"unknown exchange {exchange_id!r} for ccxt (e.g. binance, bybit, okx)")
    # enableRateLimit makes ccxt space requests to the exchange's published limits.
    return getattr(ccxt, exchange_id)({"enableRateLimit": True})


def _resolve_market(exchange: Any, symbol: str) -> str:
    """The ccxt market symbol for ``BTC/USDT`` or ``BTCUSDT`` (spot preferred)."""
    markets = exchange.markets or {}
    if symbol in markets:
        return symbol
    matches = [m for m in markets if to_symbol(m) == symbol]
    if not matches:
        raise DataError(f"{exchange.id}: no market {symbol!r}")
    return sorted(matches, key=lambda m: (":" in m, m))[0]


def download_ohlcv(
    exchange_id: str,
    symbols: list[str],
    timeframe: str,
    since: Any,
    until: Any = None,
    *,
    cache_dir: str | Path,
    exchange: Any = None,
    progress: ProgressFn | None = None,
    limit: int = 1000,
    retries: int = 5,
    backoff: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, pd.DataFrame]:
    """Download closed OHLCV bars for ``symbols`` into the cache and return them.

    ``since`` (inclusive) and ``until`` (exclusive; default: now) are UTC times (strings,
    datetimes or epoch ms). Pages through ``fetch_ohlcv(symbol, timeframe, since, limit)``
    until caught up; the still-forming last candle is never kept. Network errors and rate
    limits are retried ``retries`` times with exponential backoff (``backoff`` seconds,
    doubled each time); other exchange errors raise DataError. ``exchange`` (a ccxt
    instance) can be injected, e.g. for tests. ``progress(symbol, bars_so_far)`` is
    called after every page.

    Returns ``{symbol: long bars}`` with trimtab symbols (``BTC/USDT`` -> ``BTCUSDT``),
    covering ``[since, until)``; each frame's ``attrs`` holds ``path``, ``new_bars`` and
    ``requests``. ``quote_volume`` is approximated as ``volume * close`` (ccxt's OHLCV
    has base volume only).
    """
    import ccxt

    try:
        step = timeframe_seconds(timeframe) * 1000
    except ValueError as exc:
        raise DataError(str(exc)) from None
    origin = grid_origin_us(timeframe) // 1000
    since_ms = _to_ms(since, "since")
    since_ms = origin + -((origin - since_ms) // step) * step  # first bar opening at or after since
    until_ms = None if until is None else _to_ms(until, "until")
    if until_ms is not None and until_ms <= since_ms:
        raise DataError(f"until ({until}) must be after since ({since})")
    ex = exchange if exchange is not None else _make_exchange(exchange_id)
    cache_dir = Path(cache_dir).expanduser()

    def call(fn: Callable[[], Any], what: str) -> Any:
        for attempt in range(retries + 1):
            try:
                return fn()
            except (ccxt.RateLimitExceeded, ccxt.NetworkError) as exc:
                if attempt == retries:
                    raise DataError(
                        f"{exchange_id}: {what} failed after {retries + 1} attempts: {exc}"
                    ) from None
                sleep(backoff * 2**attempt)
            except ccxt.BaseError as exc:
                raise DataError(f"{exchange_id}: {what} failed: {exc}") from None
        raise AssertionError("unreachable")

    call(ex.load_markets, "loading markets")
    if getattr(ex, "timeframes", None) and timeframe not in ex.timeframes:
        raise DataError(
            f"{exchange_id} has no {timeframe} bars; it offers {', '.join(ex.timeframes)}"
        )

    results: dict[str, pd.DataFrame] = {}
    for requested in symbols:
        market = _resolve_market(ex, requested)
        symbol = to_symbol(market)
        path = cache_path(cache_dir, exchange_id, symbol, timeframe)
        cached, meta = read_cache(path)
        now = int(ex.milliseconds())
        # Bars opening before end_ms are closed (and before until, if given).
        end_ms = origin + ((now - origin) // step) * step
        if until_ms is not None:
            end_ms = min(end_ms, until_ms)

        ranges: list[tuple[int, int]] = []
        covered_from = int(meta.get("covered_from_ms", since_ms))
        if cached.empty:
            ranges.append((since_ms, end_ms))
            covered_from = since_ms
        else:
            cached_ts = pd.DatetimeIndex(cached["timestamp"]).as_unit("ms").asi8
            if since_ms < covered_from:
                ranges.append((since_ms, min(covered_from, end_ms)))
            nxt = int(cached_ts.max()) + step
            if nxt < end_ms:
                ranges.append((nxt, end_ms))
            covered_from = min(covered_from, since_ms)

        new_rows: list[list[float]] = []
        requests = 0
        for start, stop in ranges:
            cursor = start
            while cursor < stop:
                page = call(
                    lambda m=market, c=cursor: ex.fetch_ohlcv(m, timeframe, since=c, limit=limit),
                    f"fetch_ohlcv({market}, {timeframe}, since={cursor})",
                )
                requests += 1
                if not page:
                    break
                new_rows.extend(r[:6] for r in page if cursor <= r[0] < stop)
                if progress is not None:
                    progress(symbol, len(cached) + len(new_rows))
                last = max(int(r[0]) for r in page)
                if last < cursor:
                    break  # the exchange returned nothing newer: caught up
                cursor = last + step

        fresh = _rows_to_frame(new_rows, symbol) if new_rows else None
        if fresh is None:
            merged = cached
        elif cached.empty:
            merged = fresh
        else:
            merged = pd.concat([cached, fresh], ignore_index=True)
        merged = (
            merged.drop_duplicates("timestamp", keep="last")
            .sort_values("timestamp")
            .reset_index(drop=True)
        )
        changed = fresh is not None or meta.get("covered_from_ms") != covered_from
        if changed and len(merged):
            _write_cache(
                path,
                merged,
                {
                    "exchange": exchange_id,
                    "symbol": market,
                    "timeframe": timeframe,
                    "covered_from_ms": covered_from,
                },
            )
        ts_ms = (
            pd.DatetimeIndex(merged["timestamp"]).as_unit("ms").asi8
            if len(merged)
            else np.array([])
        )
        keep = ts_ms >= since_ms
        if until_ms is not None:
            keep &= ts_ms < until_ms
        out = merged[keep].reset_index(drop=True)
        out.attrs.update(
            path=str(path), new_bars=0 if fresh is None else len(fresh), requests=requests
        )
        results[symbol] = out
    return results
