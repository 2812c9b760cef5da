"""Readers for market-data files, and ``load_panel``, the one entry point to get bars.

Formats read:

- the shared OHLCV CSV (``timestamp,symbol,open,high,low,close,volume_base,volume_quote,
  trades,source``; gzip, bz2, xz or zip compressed or plain);
- freqtrade OHLCV files (``.feather``, ``.parquet``, ``.json``, ``.json.gz``) named
  ``PAIR-TIMEFRAME[-CANDLETYPE].ext``, e.g. ``ADA_BTC-5m.feather`` (spot ``ADABTC``) or
  ``XRP_USDT_USDT-1h-futures.feather`` (perpetual ``XRPUSDT-PERP``);
- trimtab's own Parquet bars (the ccxt download cache), columns ``LONG_COLUMNS``;
- funding rates (``read_funding``, ``read_freqtrade_funding``) and CoinGecko market caps
  (``read_market_caps``), which are not bars.

Every mistake a user can make with a file (missing, empty, corrupt or truncated, wrong
columns, unparseable timestamps) raises ``DataError`` naming the file and, where it can,
the row and column. Row numbers for CSV files are line numbers (the header is row 1, the
first data row row 2); for Parquet, Feather and JSON files, 1-based record numbers.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError, DataValidationError
from trimtab.data.panel import (
    _TIMEFRAME_SECONDS,
    FIELDS,
    LONG_COLUMNS,
    Panel,
    infer_timeframe,
    panel_from_long,
    timeframe_seconds,
    to_utc,
)
from trimtab.data.resample import resample_panel
from trimtab.data.symbols import normalize_symbol, to_symbol
from trimtab.data.validation import (
    POLICIES,
    UNPARSED_ATTR,
    DataIssue,
    Policy,
    count_issues,
    parse_timestamps,
    validate_bars,
)

#: Shared-CSV volume columns and their names in trimtab's long bars.
VOLUME_ALIASES = {"volume_base": "volume", "volume_quote": "quote_volume"}
SHARED_CSV_COLUMNS = (
    "timestamp",
    "symbol",
    "open",
    "high",
    "low",
    "close",
    "volume_base",
    "volume_quote",
)
FREQTRADE_COLUMNS = ("date", "open", "high", "low", "close", "volume")
#: freqtrade candle types that are tradable price bars; the others (mark, index,
#: premiumIndex, funding_rate) are reference series, not bars.
FREQTRADE_BAR_TYPES = ("spot", "futures")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".tsv", ".tsv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_FEATHER_SUFFIXES = (".feather", ".arrow")
_JSON_SUFFIXES = (".json", ".json.gz", ".jsongz")
_PRICE_NAMES = {"open", "high", "low", "close"}
#: Warnings kept verbatim in a panel's provenance; the rest are only counted.
PROVENANCE_WARNING_LIMIT = 50


# --------------------------------------------------------------------------- file basics


def _existing_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    return p


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` with every failure turned into a DataError naming the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header, no rows)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a valid CSV file ({_first_line(exc)})") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not a text CSV file (undecodable byte at offset {exc.start})"
        ) from None
    except (EOFError, OSError, zlib.error) as exc:
        # A truncated gzip raises EOFError, a non-gzip '.gz' BadGzipFile (an OSError).
        raise DataError(
            f"{path}: cannot read the file, it looks corrupt or truncated ({exc})"
        ) from None
    except ValueError as exc:  # e.g. usecols or dtype mismatches
        raise DataError(f"{path}: cannot read the CSV ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _csv_header(path: Path) -> list[str]:
    return [str(c).strip() for c in _read_csv(path, nrows=0).columns]


def _csv_rows(n: int) -> np.ndarray:
    return np.arange(2, n + 2, dtype=np.int64)


def _records(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.int64)


def _require_columns(path: Path, found: list[str], required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in found]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; {what} needs "
            f"{', '.join(required)} (found: {', '.join(found) or 'none'})"
        )


def _fail_rows(path: Path, mask: np.ndarray, rows: np.ndarray, what: str, values=None) -> None:
    bad = np.flatnonzero(mask)
    if bad.size:
        shown = ", ".join(
            f"row {rows[i]}" + (f" ({values[i]!r})" if values is not None else "") for i in bad[:5]
        )
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise DataError(f"{path}: {what} at {shown}{more}")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (for provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- shared CSV


def read_shared_csv(path: str | Path) -> pd.DataFrame:
    """Read a shared-format OHLCV CSV into long bars (``LONG_COLUMNS``), unvalidated.

    ``volume_base`` becomes ``volume`` and ``volume_quote`` ``quote_volume`` (files that
    already use the trimtab names are read too); ``trades`` and ``source`` are dropped.
    The index, named ``row``, holds each bar's line number in the file.
    """
    path = _existing_file(path)
    header = _csv_header(path)
    found = [VOLUME_ALIASES.get(c, c) for c in header]
    required = tuple(VOLUME_ALIASES.get(c, c) for c in SHARED_CSV_COLUMNS)
    missing = [c for c in required if c not in found]
    if missing:
        names = {v: k for k, v in VOLUME_ALIASES.items()}
        raise DataError(
            f"{path}: missing column(s) {', '.join(names.get(c, c) for c in missing)}; "
            f"an OHLCV CSV needs {','.join(SHARED_CSV_COLUMNS)} (found: {','.join(header)})"
        )
    wanted = {c for c in header if VOLUME_ALIASES.get(c, c) in required}
    df = _read_csv(
        path,
        usecols=lambda c: str(c).strip() in wanted,
        dtype={"symbol": str},
        low_memory=False,
    )
    df.columns = [VOLUME_ALIASES.get(str(c).strip(), str(c).strip()) for c in df.columns]
    if df.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    rows = _csv_rows(len(df))
    raw_ts = df["timestamp"]
    df["timestamp"] = parse_timestamps(raw_ts, source=str(path), rows=rows)
    df.index = pd.Index(rows, name="row")
    out = df[list(LONG_COLUMNS)]
    _keep_unparsed(out, raw_ts)
    return out


def _keep_unparsed(bars: pd.DataFrame, raw: pd.Series) -> None:
    # So that validation can quote the text it could not read, not just "NaT".
    bad = np.flatnonzero(bars["timestamp"].isna().to_numpy() & raw.notna().to_numpy())
    if bad.size:
        bars.attrs[UNPARSED_ATTR] = {int(bars.index[i]): raw.iloc[i] for i in bad}


# --------------------------------------------------------------------------- freqtrade


_FT_NAME = re.compile(
    r"^(?P<pair>[A-Za-z0-9.]+(?:_[A-Za-z0-9.]+)*?)-(?P<tf>\d+[smhdwM])"
    r"(?:-(?P<ctype>spot|futures|mark|index|premiumIndex|funding_rate))?"
    r"\.(?P<ext>feather|parquet|json|json\.gz|jsongz)$"
)


@dataclass(frozen=True)
class FreqtradeName:
    """What a freqtrade data file name says: ``XRP_USDT_USDT-1h-futures.feather``."""

    pair: str  # ccxt form, e.g. "XRP/USDT:USDT"
    symbol: str  # trimtab form, e.g. "XRPUSDT-PERP"
    timeframe: str
    candle_type: str  # spot, futures, mark, index, premiumIndex or funding_rate


def parse_freqtrade_name(path: str | Path) -> FreqtradeName | None:
    """Parse a freqtrade OHLCV file name; None if the name is not one (e.g. trades files).

    ``ADA_BTC-5m.feather`` -> ``ADA/BTC``, ``ADABTC``, 5m, spot.
    ``XRP_USDT_USDT-1h-futures.feather`` -> ``XRP/USDT:USDT``, ``XRPUSDT-PERP``, 1h, futures.
    """
    m = _FT_NAME.match(Path(path).name)
    if not m:
        return None
    parts = m["pair"].split("_")
    ctype = m["ctype"] or "spot"
    if len(parts) == 3:
        pair = f"{parts[0]}/{parts[1]}:{parts[2]}"
    elif len(parts) == 2:
        pair = f"{parts[0]}/{parts[1]}" + (f":{parts[1]}" if ctype != "spot" else "")
    else:
        pair = m["pair"]
    return FreqtradeName(pair, to_symbol(pair), m["tf"], ctype)


def _read_table(path: Path) -> pd.DataFrame:
    """A Feather, Parquet or freqtrade JSON file as a DataFrame (DataError if unreadable)."""
    name = path.name.lower()
    try:
        if name.endswith(_FEATHER_SUFFIXES):
            return pd.read_feather(path)
        if name.endswith(_PARQUET_SUFFIXES):
            return pd.read_parquet(path)
        if name.endswith(_JSON_SUFFIXES):
            opener = gzip.open if name.endswith((".gz", "jsongz")) else open
            with opener(path, "rt", encoding="utf-8") as fh:
                data = json.load(fh)
            if data and isinstance(data[0], list):
                # freqtrade's default JSON layout: [[date_ms, open, high, low, close, volume], ...]
                return pd.DataFrame(data, columns=list(FREQTRADE_COLUMNS[: len(data[0])]))
            return pd.DataFrame(data)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error, ValueError, TypeError, KeyError, IndexError) as exc:
        raise DataError(
            f"{path}: cannot read the file, it looks corrupt or not of its type "
            f"({_first_line(exc)})"
        ) from None
    except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, ...)
        raise DataError(f"{path}: cannot read the file ({_first_line(exc)})") from None
    raise DataError(f"{path}: unsupported file type")


def read_freqtrade(path: str | Path) -> pd.DataFrame:
    """Read a freqtrade OHLCV file into long bars (``LONG_COLUMNS``), unvalidated.

    Symbol and timeframe come from the file name (see ``parse_freqtrade_name``).
    freqtrade stores base volume only: ``quote_volume`` is approximated as
    ``volume * close``. Mark-price and funding-rate files are not price bars and raise
    DataError (use ``read_freqtrade_funding`` for funding rates). The index, named
    ``row``, holds 1-based record numbers.
    """
    path = _existing_file(path)
    name = parse_freqtrade_name(path)
    if name is None:
        raise DataError(
            f"{path}: not a freqtrade OHLCV file name; expected PAIR-TIMEFRAME[-TYPE].feather "
            "such as ADA_BTC-5m.feather or XRP_USDT_USDT-1h-futures.feather"
        )
    if name.candle_type not in FREQTRADE_BAR_TYPES:
        raise DataError(
            f"{path}: holds {name.candle_type} candles, not tradable price bars"
            + (
                "; read it with read_freqtrade_funding"
                if name.candle_type == "funding_rate"
                else ""
            )
        )
    raw = _read_table(path)
    _require_columns(
        path, [str(c) for c in raw.columns], FREQTRADE_COLUMNS, "a freqtrade OHLCV file"
    )
    if raw.empty:
        raise DataError(f"{path}: the file holds no rows")
    rows = _records(len(raw))
    close = pd.to_numeric(raw["close"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    volume = pd.to_numeric(raw["volume"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    out = pd.DataFrame(
        {
            "timestamp": parse_timestamps(raw["date"], source=str(path), column="date", rows=rows),
            "symbol": name.symbol,
            "open": raw["open"].to_numpy(),
            "high": raw["high"].to_numpy(),
            "low": raw["low"].to_numpy(),
            "close": close,
            "volume": volume,
            "quote_volume": volume * close,
        },
        index=pd.Index(rows, name="row"),
    )
    return out


def read_freqtrade_funding(path: str | Path, *, venue: str | None = None) -> pd.DataFrame:
    """Read a freqtrade ``-funding_rate`` file: ``timestamp, symbol, venue, funding_rate``.

    freqtrade keeps the rate (per funding interval, as a fraction) in the ``open`` column.
    Its timestamps carry the exchange's millisecond jitter (``00:00:00.017``) and are
    rounded to the second. ``venue`` defaults to the exchange folder of freqtrade's layout
    (``<exchange>/futures/<file>``), else ``"unknown"``.
    """
    path = _existing_file(path)
    name = parse_freqtrade_name(path)
    if name is None or name.candle_type != "funding_rate":
        raise DataError(
            f"{path}: not a freqtrade funding-rate file (expected a name like "
            "XRP_USDT_USDT-8h-funding_rate.feather)"
        )
    raw = _read_table(path)
    _require_columns(path, [str(c) for c in raw.columns], ("date", "open"), "a funding-rate file")
    if raw.empty:
        raise DataError(f"{path}: the file holds no rows")
    rows = _records(len(raw))
    ts = parse_timestamps(raw["date"], source=str(path), column="date", rows=rows).round("s")
    if venue is None:
        venue = path.parent.parent.name if path.parent.name == "futures" else "unknown"
    rate = pd.to_numeric(raw["open"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    _fail_rows(path, np.asarray(ts.isna()), rows, "unparseable date")
    _fail_rows(path, np.isnan(rate), rows, "funding rate is not a number")
    return pd.DataFrame(
        {"timestamp": ts, "symbol": name.symbol, "venue": venue, "funding_rate": rate}
    ).sort_values("timestamp", ignore_index=True)


# --------------------------------------------------------------------------- parquet bars


def read_parquet_bars(path: str | Path) -> pd.DataFrame:
    """Read trimtab Parquet/Feather bars (columns ``LONG_COLUMNS``), unvalidated."""
    path = _existing_file(path)
    raw = _read_table(path)
    _require_columns(path, [str(c) for c in raw.columns], LONG_COLUMNS, "a bars file")
    if raw.empty:
        raise DataError(f"{path}: the file holds no rows")
    rows = _records(len(raw))
    out = raw[list(LONG_COLUMNS)].copy()
    out["timestamp"] = parse_timestamps(raw["timestamp"], source=str(path), rows=rows)
    out.index = pd.Index(rows, name="row")
    return out


# --------------------------------------------------------------------------- other series


def read_funding(path: str | Path, *, cache: Path | bool = False) -> pd.DataFrame:
    """Read the shared funding CSV: ``timestamp, symbol, venue, funding_rate``.

    The rate is per funding interval (8 h on most venues, 1 h on dYdX), as a fraction.
    Timestamps must carry a timezone and are returned in UTC; the shared file's
    ``ts_shifted_from_utc3`` flag (already applied) is dropped. Sorted by venue, symbol,
    timestamp. Missing or unparseable values and duplicate (timestamp, symbol, venue)
    rows raise DataError naming the rows. ``cache``: keep the parsed frame on disk (see
    ``load_panel``).
    """
    path = _existing_file(path)
    if cache is not False:
        return _parse_cached(
            "funding",
            cache,
            [path],
            "",
            lambda: read_funding(path),
            _long_frame_arrays,
            _long_frame_from_arrays,
        )
    header = _csv_header(path)
    required = ("timestamp", "symbol", "venue", "funding_rate")
    _require_columns(path, header, required, "a funding CSV")
    df = _read_csv(path, usecols=list(required), dtype={"symbol": str, "venue": str})
    if df.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    rows = _csv_rows(len(df))
    ts = parse_timestamps(df["timestamp"], source=str(path), rows=rows)
    if ts.tz is None:
        raise DataError(f"{path}: timestamps have no timezone; write them in UTC ('+00:00')")
    _fail_rows(path, np.asarray(ts.isna()), rows, "missing or unparseable timestamp")
    rate = pd.to_numeric(df["funding_rate"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    _fail_rows(
        path,
        ~np.isfinite(rate),
        rows,
        "funding_rate is not a number",
        df["funding_rate"].to_numpy(),
    )
    _fail_rows(
        path, np.asarray(df["symbol"].isna() | df["venue"].isna()), rows, "empty symbol or venue"
    )
    out = pd.DataFrame(
        {
            "timestamp": ts,
            "symbol": df["symbol"].to_numpy(),
            "venue": df["venue"].to_numpy(),
            "funding_rate": rate,
        },
        index=pd.Index(rows, name="row"),
    )
    dup = out.duplicated(["timestamp", "symbol", "venue"], keep=False).to_numpy()
    _fail_rows(path, dup, rows, "duplicate (timestamp, symbol, venue)")
    return out.sort_values(["venue", "symbol", "timestamp"]).reset_index(drop=True)


def read_market_caps(path: str | Path) -> pd.DataFrame:
    """Read the CoinGecko CSV: ``timestamp, symbol, market_cap, price, total_volume``.

    Symbols are base assets (``BTC``); to match panel symbols (``BTCUSDT``), strip the
    quote from the panel's names (``trimtab.data.symbols.base_asset``), which is what
    ``trimtab.data.universe.market_cap_panel`` does. Values that are zero or negative
    (CoinGecko writes 0 for an unknown market cap in early rows) become NaN. Timestamps
    are kept exactly as written: a few rows are stamped minutes after midnight or late the
    previous evening, and moving them to midnight could leak a later value into an earlier
    bar; align them causally with ``market_cap_panel``. Sorted by symbol, timestamp.
    """
    path = _existing_file(path)
    header = _csv_header(path)
    _require_columns(path, header, ("timestamp", "symbol", "market_cap"), "a market-cap CSV")
    df = _read_csv(path, dtype={"symbol": str})
    if df.empty:
        raise DataError(f"{path}: the file has a header but no rows")
    df.columns = [str(c).strip() for c in df.columns]
    rows = _csv_rows(len(df))
    ts = parse_timestamps(df["timestamp"], source=str(path), rows=rows)
    if ts.tz is None:
        raise DataError(f"{path}: timestamps have no timezone; write them in UTC ('+00:00')")
    _fail_rows(path, np.asarray(ts.isna()), rows, "missing or unparseable timestamp")
    out = pd.DataFrame(
        {"timestamp": ts, "symbol": df["symbol"].to_numpy()}, index=pd.Index(rows, name="row")
    )
    for col in ("market_cap", "price", "total_volume"):
        if col in df.columns:
            x = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = (x <= 0) if col != "total_volume" else (x < 0)
            out[col] = np.where(bad | ~np.isfinite(x), np.nan, x)
        else:
            out[col] = np.nan
    _fail_rows(path, np.asarray(out["symbol"].isna()), rows, "empty symbol")
    dup = out.duplicated(["timestamp", "symbol"], keep=False).to_numpy()
    _fail_rows(path, dup, rows, "duplicate (timestamp, symbol)")
    return out.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


# --------------------------------------------------------------------------- file discovery


@dataclass(frozen=True)
class DataFile:
    """A file found in a data folder and what it holds."""

    path: Path
    kind: str  # "bars" or "skip"
    format: str  # "csv", "freqtrade", "parquet" (trimtab bars) or "" when skipped
    timeframe: str | None = None  # from the file name, if it says
    reason: str = ""  # why it was skipped


_TF_TOKEN = re.compile(r"(?<![0-9A-Za-z])(\d+[mhdw])(?![0-9A-Za-z])")


def timeframe_from_name(name: str) -> str | None:
    """The one known timeframe token in a file name (``ohlcv_1h_...`` -> ``1h``), else None."""
    found = {t for t in _TF_TOKEN.findall(name) if t in _TIMEFRAME_SECONDS}
    return found.pop() if len(found) == 1 else None


def _table_columns(path: Path) -> list[str]:
    import pyarrow.ipc
    import pyarrow.parquet

    try:
        if path.name.lower().endswith(_PARQUET_SUFFIXES):
            return list(pyarrow.parquet.read_schema(path).names)
        with pyarrow.ipc.open_file(path) as reader:
            return list(reader.schema.names)
    except Exception as exc:  # pyarrow's error types vary by version
        raise DataError(
            f"{path}: cannot read the file, it looks corrupt ({_first_line(exc)})"
        ) from None


def classify_file(path: str | Path) -> DataFile:
    """Tell OHLCV bar files from everything else, from the name and the columns only.

    Funding rates, market caps, universes, order books, trade lists, mark-price and
    funding candles and non-data files are skipped with a reason. A file that looks like
    bars (a time column and at least two of open/high/low/close) is taken as bars even if
    a column is missing, so that the mistake is reported instead of silently skipped.
    """
    p = Path(path)
    name = p.name.lower()
    tf = timeframe_from_name(p.name)
    if name.endswith(_CSV_SUFFIXES):
        cols = {c.lower() for c in _csv_header(p)}
        if "funding_rate" in cols:
            return DataFile(p, "skip", "", reason="funding rates (read with read_funding)")
        if "market_cap" in cols or "market cap" in cols:
            return DataFile(
                p, "skip", "", reason="market caps or a universe list (read_market_caps)"
            )
        if len(cols & _PRICE_NAMES) >= 2 and {"timestamp", "symbol"} & cols:
            return DataFile(p, "bars", "csv", tf)
        return DataFile(
            p, "skip", "", reason=f"not OHLCV bars (columns: {', '.join(sorted(cols))})"
        )
    ft = parse_freqtrade_name(p)
    if ft is not None:
        if ft.candle_type not in FREQTRADE_BAR_TYPES:
            return DataFile(
                p, "skip", "", reason=f"freqtrade {ft.candle_type} candles, not price bars"
            )
        return DataFile(p, "bars", "freqtrade", ft.timeframe)
    if name.endswith(_PARQUET_SUFFIXES + _FEATHER_SUFFIXES):
        cols = {c.lower() for c in _table_columns(p)}
        if set(LONG_COLUMNS) <= cols:
            return DataFile(p, "bars", "parquet", tf)
        return DataFile(
            p, "skip", "", reason=f"not OHLCV bars (columns: {', '.join(sorted(cols))})"
        )
    return DataFile(p, "skip", "", reason="not a bars file type")


def _read_bars_file(f: DataFile) -> pd.DataFrame:
    if f.format == "csv":
        return read_shared_csv(f.path)
    if f.format == "freqtrade":
        return read_freqtrade(f.path)
    return read_parquet_bars(f.path)


def _infer_file_timeframe(bars: pd.DataFrame) -> str | None:
    ts = pd.DatetimeIndex(bars["timestamp"]).dropna().unique().sort_values()
    if len(ts) < 2:
        return None
    try:
        return infer_timeframe(ts)
    except ValueError:
        return None


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedBars:
    """Validated long bars from one or more files, with what was found on the way."""

    bars: pd.DataFrame
    issues: list[DataIssue]
    timeframe: str
    provenance: dict[str, Any] = field(default_factory=dict)


def _window(lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> str:
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f"from {lo} on" if lo is not None else f"up to {hi}"


def _sort_tfs(tfs) -> list[str]:
    return sorted(tfs, key=lambda t: _TIMEFRAME_SECONDS.get(t, 10**12))


def _choose_timeframe(
    source: Path, by_tf: dict[str, list[DataFile]], timeframe: str | None, allow_finer: bool = False
) -> str:
    """The timeframe to read; with ``allow_finer``, the coarsest finer one that divides
    a requested timeframe that is not on disk (the caller resamples)."""
    available = _sort_tfs(by_tf)
    listing = "; ".join(f"{tf}: {', '.join(f.path.name for f in by_tf[tf])}" for tf in available)
    if timeframe is not None:
        if timeframe in by_tf:
            return timeframe
        finer = [
            tf
            for tf in available
            if tf in _TIMEFRAME_SECONDS
            and timeframe_seconds(timeframe) % _TIMEFRAME_SECONDS[tf] == 0
        ]
        if finer and allow_finer:
            return finer[-1]
        hint = (
            f"; resample finer bars: resample_panel(load_panel(..., timeframe={finer[-1]!r}), "
            f"{timeframe!r})"
            if finer
            else ""
        )
        raise DataError(f"{source}: no {timeframe} bars (available: {listing}){hint}")
    if "1d" in by_tf:
        return "1d"
    if len(available) == 1:
        return available[0]
    raise DataError(
        f"{source}: bars at several timeframes and no 1d; pick one with timeframe= "
        f"(available: {listing})"
    )


def load_bars(
    source: str | Path,
    *,
    timeframe: str | None = None,
    symbols: list[str] | None = None,
    start: Any = None,
    end: Any = None,
    policy: Policy = "fail",
    recursive: bool = False,
) -> LoadedBars:
    """Find, read and validate OHLCV bars in a file or folder; long frame plus issues.

    Same arguments as ``load_panel``; ``start``/``end`` (inclusive, UTC) filter the rows.
    """
    loaded = _load(source, timeframe=timeframe, symbols=symbols, policy=policy, recursive=recursive)
    bars = loaded.bars
    if start is not None or end is not None:
        lo = to_utc(start, what="start") if start is not None else None
        hi = to_utc(end, what="end") if end is not None else None
        mask = np.ones(len(bars), dtype=bool)
        if lo is not None:
            mask &= (bars["timestamp"] >= lo).to_numpy()
        if hi is not None:
            mask &= (bars["timestamp"] <= hi).to_numpy()
        bars = bars[mask].reset_index(drop=True)
        if bars.empty:
            raise DataError(f"{source}: no bars {_window(lo, hi)}")
        prov = dict(
            loaded.provenance,
            start=str(lo) if lo is not None else None,
            end=str(hi) if hi is not None else None,
        )
        loaded = LoadedBars(bars, loaded.issues, loaded.timeframe, prov)
    return loaded


def _load(
    source: str | Path,
    *,
    timeframe: str | None,
    symbols: list[str] | None,
    policy: Policy,
    recursive: bool,
    allow_finer: bool = False,
) -> LoadedBars:
    if policy not in POLICIES:
        raise DataError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if timeframe is not None and timeframe not in _TIMEFRAME_SECONDS:
        raise DataError(
            f"unknown timeframe {timeframe!r}; expected one of {', '.join(_TIMEFRAME_SECONDS)}"
        )
    root = Path(source).expanduser()
    if not root.exists():
        raise DataError(f"data source {root} does not exist")
    if root.is_dir():
        found = [classify_file(p) for p in _listing(root, recursive)]
        candidates = [f for f in found if f.kind == "bars"]
        skipped = [f for f in found if f.kind == "skip"]
        if not candidates:
            why = "; ".join(f"{f.path.name}: {f.reason}" for f in skipped) or "the folder is empty"
            raise DataError(f"{root}: no OHLCV bar files found ({why})")
    else:
        f = classify_file(root)
        if f.kind == "skip":
            raise DataError(f"{root}: not an OHLCV bars file: {f.reason}")
        candidates, skipped = [f], []

    # Files whose name does not say their timeframe are read now to infer it.
    frames: dict[Path, pd.DataFrame] = {}
    by_tf: dict[str, list[DataFile]] = {}
    for f in candidates:
        tf = f.timeframe
        if tf is None:
            frames[f.path] = _read_bars_file(f)
            tf = _infer_file_timeframe(frames[f.path]) or timeframe
            if tf is None:
                raise DataError(
                    f"{f.path}: cannot tell the bars' timeframe (too few bars, or an irregular "
                    "spacing); put it in "
                    "the file name (e.g. 'BTCUSDT-1h.parquet') or pass timeframe="
                )
        if tf not in _TIMEFRAME_SECONDS:
            skipped.append(DataFile(f.path, "skip", "", tf, f"timeframe {tf} not supported"))
            continue
        by_tf.setdefault(tf, []).append(DataFile(f.path, f.kind, f.format, tf))
    if not by_tf:
        raise DataError(f"{root}: no OHLCV bars at a supported timeframe")
    chosen = _choose_timeframe(root, by_tf, timeframe, allow_finer)

    cleans: list[pd.DataFrame] = []
    issues: list[DataIssue] = []
    errors: list[DataIssue] = []
    file_prov: list[dict[str, Any]] = []
    owner: dict[str, Path] = {}
    for f in by_tf[chosen]:
        raw = frames.pop(f.path, None)
        if raw is None:
            raw = _read_bars_file(f)
        inferred = _infer_file_timeframe(raw)
        if inferred is not None and inferred != chosen:
            raise DataError(
                f"{f.path}: the file name says {chosen} bars but they are {inferred} apart; "
                "rename the file"
            )
        try:
            clean, file_issues = validate_bars(
                raw, source=str(f.path), policy=policy, timeframe=chosen
            )
        except DataValidationError as exc:
            errors.extend(exc.issues)
            continue
        issues.extend(file_issues)
        file_symbols = sorted(clean["symbol"].unique())
        for s in file_symbols:
            if s in owner:
                raise DataError(
                    f"symbol {s} at {chosen} is in two files: {owner[s]} and {f.path}; "
                    "keep one of them (or load a single file)"
                )
            owner[s] = f.path
        cleans.append(clean)
        file_prov.append(
            {
                "path": str(f.path),
                "sha256": file_sha256(f.path),
                "format": f.format,
                "rows": len(raw),
                "rows_kept": len(clean),
                "symbols": file_symbols,
                "first": str(clean["timestamp"].min()) if len(clean) else None,
                "last": str(clean["timestamp"].max()) if len(clean) else None,
            }
        )
    if errors:
        raise DataValidationError(errors, source=str(root) if len(by_tf[chosen]) > 1 else None)
    bars = pd.concat(cleans, ignore_index=True) if len(cleans) > 1 else cleans[0]
    if len(cleans) > 1:
        bars = bars.sort_values(["symbol", "timestamp"], ignore_index=True)
    if bars.empty:
        shown = "".join(f"\n  - {i}" for i in issues[:5])
        more = f"\n  ... and {len(issues) - 5} more" if len(issues) > 5 else ""
        raise DataError(
            f"{root}: no valid bars left after validation (policy {policy!r}):{shown}{more}"
        )

    if symbols is not None:
        wanted = [_wanted_symbol(s) for s in symbols]
        available = sorted(owner)
        unknown = [s for s in wanted if s not in owner]
        if unknown:
            raise DataError(
                f"unknown symbol(s) {', '.join(unknown)} at {chosen} in {root}; "
                f"available: {', '.join(available)}"
            )
        bars = bars[bars["symbol"].isin(wanted)].reset_index(drop=True)

    provenance: dict[str, Any] = {
        "source": str(root),
        "files": file_prov,
        "policy": policy,
        "timeframe": chosen,
        "symbols": None if symbols is None else [_wanted_symbol(s) for s in symbols],
        "issues": count_issues(issues),
        "issue_kinds": dict(Counter(i.kind for i in issues).most_common()),
        "warnings": [str(i) for i in issues[:PROVENANCE_WARNING_LIMIT]],
        "skipped": [{"path": str(f.path), "reason": f.reason} for f in skipped],
    }
    return LoadedBars(bars, issues, chosen, provenance)


def _wanted_symbol(name: str) -> str:
    """A requested symbol as the data writes it (``btc/usdt`` -> ``BTCUSDT``)."""
    symbol, _ = normalize_symbol(name)
    return symbol if symbol is not None else to_symbol(name)


def load_panel(
    source: str | Path,
    *,
    timeframe: str | None = None,
    symbols: list[str] | None = None,
    start: Any = None,
    end: Any = None,
    policy: Policy = "fail",
    recursive: bool = False,
    cache: Path | bool = False,
) -> Panel:
    """Load OHLCV bars from a file or a folder into a validated ``Panel``.

    A folder is scanned (not recursively unless ``recursive``) for bar files: shared CSVs,
    freqtrade files and trimtab Parquet (the ccxt cache); everything else is skipped and
    listed in ``provenance["skipped"]``. Of the timeframes found, ``timeframe`` is used;
    by default ``1d`` if present, else the only one (several and no ``1d`` is an error
    listing them). Every file is validated with ``policy`` (see ``validate_bars``); two
    files with the same symbol at the same timeframe are an error naming both.
    ``symbols`` (``BTCUSDT`` or ``BTC/USDT``) selects columns, ``start``/``end`` (UTC,
    inclusive) slice rows. ``panel.provenance`` records files (path, sha256, rows,
    symbols, first, last), policy, timeframe, issue counts and the first 50 warnings.
    A ``timeframe`` with no files of its own is built by resampling the coarsest finer
    bars that divide it (``provenance["resampled_from"]`` says which).

    ``cache`` (True: ``<download cache>/parsed``, or a folder) keeps the panel on disk as
    NumPy arrays, keyed by the bytes of every file the folder holds, the arguments and
    the readers' code, and reads it back instead of parsing and validating again; any
    change of a file, an argument or the code is a new key (see ``_parse_key``). A cache
    that cannot be read or written is skipped.
    """
    if cache is not False:
        root = Path(source).expanduser()
        settings = (
            f"timeframe={timeframe!r} symbols={symbols!r} start={start!r} end={end!r} "
            f"policy={policy!r} recursive={recursive!r}"
        )
        return _parse_cached(
            "panel",
            cache,
            _listing(root, recursive) if root.is_dir() else [root],
            f"{root.resolve()}|{settings}",
            lambda: load_panel(
                source,
                timeframe=timeframe,
                symbols=symbols,
                start=start,
                end=end,
                policy=policy,
                recursive=recursive,
            ),
            _panel_arrays,
            _panel_from_arrays,
        )
    loaded = _load(
        source,
        timeframe=timeframe,
        symbols=symbols,
        policy=policy,
        recursive=recursive,
        allow_finer=True,
    )
    provenance = dict(loaded.provenance)
    lo = to_utc(start, what="start") if start is not None else None
    hi = to_utc(end, what="end") if end is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise DataError(f"start {lo} is after end {hi}")
    provenance["start"] = None if lo is None else str(lo)
    provenance["end"] = None if hi is None else str(hi)
    panel = panel_from_long(loaded.bars, timeframe=loaded.timeframe, provenance=provenance)
    if timeframe is not None and loaded.timeframe != timeframe:
        panel = resample_panel(panel, timeframe)
        panel.provenance.update(timeframe=timeframe, resampled_from=loaded.timeframe)
    if lo is not None or hi is not None:
        covered = f"{panel.index[0]} to {panel.index[-1]}"
        panel = panel.slice(lo, hi)
        if len(panel.index) == 0 or not panel.symbols:
            raise DataError(f"{source}: no bars {_window(lo, hi)}; the data covers {covered}")
        if symbols is not None:
            absent = [s for s in provenance["symbols"] if s not in panel.symbols]
            if absent:
                raise DataError(f"{source}: no bars for {', '.join(absent)} {_window(lo, hi)}")
    return panel


# --------------------------------------------------------------------------- parse cache
#
# Parsing and validating the shared CSVs is most of a review's data loading (about 0.5 s
# for the 34-coin daily file, every call). ``load_panel(..., cache=True)`` and
# ``read_funding(..., cache=True)`` keep what they return under ``<download cache>/parsed``
# as NumPy arrays (``.npz``, no pickle) and read it back when nothing it came from has
# changed.

#: Bump when a parsed result for the same files and code changes for another reason.
PARSE_CACHE_VERSION = 1
#: Parsed results kept per kind (panel, funding); the least recently used go first.
PARSE_CACHE_KEEP = 8
#: The code a parsed result comes from (relative to the package): its source is in the key.
_PARSE_SOURCES = (
    "data/readers.py",
    "data/validation.py",
    "data/panel.py",
    "data/resample.py",
    "data/symbols.py",
    "data/errors.py",
    "domain/quotes.py",
)


def _listing(root: Path, recursive: bool) -> list[Path]:
    """The files ``load_panel`` considers in a folder: not hidden, sorted."""
    paths = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def _parse_key(kind: str, files: list[Path], settings: str) -> str:
    """A digest of everything a parsed result depends on: each file's name, size and
    bytes (a file rewritten with the same size and mtime is still a new key), the
    arguments, the readers' source, trimtab's, pandas' and NumPy's versions."""
    from trimtab import __version__

    h = hashlib.blake2b(digest_size=20)
    h.update(
        f"{PARSE_CACHE_VERSION}|{kind}|{__version__}|{pd.__version__}|{np.__version__}|"
        f"{settings}".encode()
    )
    package = Path(__file__).resolve().parents[1]
    for source in _PARSE_SOURCES:
        try:
            h.update((package / source).read_bytes())
        except OSError:  # an installed copy without sources: the version stands for them
            h.update(source.encode())
    for f in files:
        content = f.read_bytes()
        h.update(f"\0{f.resolve()} {len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


def _parse_cached(kind, cache, files, settings, build, to_arrays, from_arrays):
    """``build()``, or what an earlier ``build()`` of the same inputs kept on disk."""
    from trimtab.data.discovery import cache_dir

    folder = (cache_dir() / "parsed" if cache is True else Path(cache)) / kind
    try:
        path = folder / f"{_parse_key(kind, files, settings)}.npz"
    except OSError:  # a file cannot be read: the reader says so
        return build()
    try:
        with np.load(path, allow_pickle=False) as got:
            result = from_arrays({name: got[name] for name in got.files})
        os.utime(path)  # least recently used goes first when the folder is pruned
        return result
    except (OSError, ValueError, KeyError, TypeError):
        pass
    result = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **to_arrays(result))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        kept = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in kept[PARSE_CACHE_KEEP:]:
            old.unlink(missing_ok=True)
    except (OSError, ValueError, TypeError):
        pass  # a read-only cache costs the speed, not the result
    return result


def _meta(doc: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)


def _read_meta(arr: np.ndarray) -> dict[str, Any]:
    return json.loads(arr.tobytes().decode())


def _index_arrays(index: pd.DatetimeIndex) -> tuple[np.ndarray, dict[str, Any]]:
    return index.asi8, {"dtype": str(index.dtype), "name": index.name, "freq": index.freqstr}


def _index_from_arrays(values: np.ndarray, meta: dict[str, Any]) -> pd.DatetimeIndex:
    dtype = pd.api.types.pandas_dtype(meta["dtype"])
    idx = pd.DatetimeIndex(values.view(f"datetime64[{dtype.unit}]")).tz_localize(dtype.tz)
    return pd.DatetimeIndex(idx, name=meta["name"], freq=meta["freq"])


def _panel_arrays(panel: Panel) -> dict[str, np.ndarray]:
    """A panel as arrays: each frame's values in their own memory order (so the frames
    read back sum and reduce bit for bit like the parsed ones), the index, the symbols."""
    index, index_meta = _index_arrays(panel.index)
    columns = panel.close.columns
    meta = {
        "timeframe": panel.timeframe,
        "provenance": panel.provenance,
        "index": index_meta,
        "columns": {"dtype": str(columns.dtype), "name": columns.name},
    }
    arrays = {name: frame.to_numpy() for name, frame in panel.frames().items()}
    return {
        **arrays,
        "index": index,
        "symbols": np.array(list(columns), dtype=str),
        "meta": _meta(meta),
    }


def _panel_from_arrays(got: dict[str, np.ndarray]) -> Panel:
    meta = _read_meta(got["meta"])
    index = _index_from_arrays(got["index"], meta["index"])
    columns = pd.Index(
        got["symbols"].tolist(), dtype=meta["columns"]["dtype"], name=meta["columns"]["name"]
    )
    frames = {
        # copy=False: the frame's block is the array as stored, in the parsed frame's order
        name: pd.DataFrame(got[name], index=index, columns=columns, copy=False)
        for name in (*FIELDS, "has_bar")
    }
    return Panel(**frames, timeframe=meta["timeframe"], provenance=meta["provenance"])


def _long_frame_arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """A long frame (a RangeIndex; datetime, string and number columns) as arrays."""
    if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
        raise TypeError("only frames with a default index are kept")
    arrays, columns = {}, []
    for i, (name, col) in enumerate(df.items()):
        key = f"c{i}"
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            arrays[key] = (
                col.array.asi8 if hasattr(col.array, "asi8") else col.to_numpy().view("i8")
            )
            columns.append({"name": name, "kind": "datetime", "dtype": str(col.dtype)})
        elif pd.api.types.is_string_dtype(col.dtype):
            if col.isna().any():
                raise TypeError("string columns with missing values are not kept")
            arrays[key] = col.to_numpy(dtype=str)
            columns.append({"name": name, "kind": "string", "dtype": str(col.dtype)})
        elif pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_extension_array_dtype(
            col.dtype
        ):
            arrays[key] = col.to_numpy()
            columns.append({"name": name, "kind": "number", "dtype": str(col.dtype)})
        else:
            raise TypeError(f"column {name!r} of dtype {col.dtype} is not kept")
    return {**arrays, "meta": _meta({"columns": columns, "rows": len(df)})}


def _long_frame_from_arrays(got: dict[str, np.ndarray]) -> pd.DataFrame:
    meta = _read_meta(got["meta"])
    data = {}
    for i, col in enumerate(meta["columns"]):
        values = got[f"c{i}"]
        if col["kind"] == "datetime":
            dtype = pd.api.types.pandas_dtype(col["dtype"])
            data[col["name"]] = pd.DatetimeIndex(
                values.view(f"datetime64[{dtype.unit}]")
            ).tz_localize(dtype.tz)
        elif col["kind"] == "string":
            data[col["name"]] = pd.array(values.tolist(), dtype=col["dtype"])
        else:
            data[col["name"]] = values
    return pd.DataFrame(data, index=pd.RangeIndex(meta["rows"]))
