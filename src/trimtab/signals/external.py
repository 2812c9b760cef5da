"""External per-asset series (on-chain flows, sentiment, ...) from CSV, aligned to bars.

File format
-----------
A CSV (optionally gzip/bz2/xz/zip compressed) in one of two layouts:

- **long**: ``timestamp,symbol,<value columns...>``, one row per (timestamp, symbol),
  any number of numeric value columns, e.g.::

      timestamp,symbol,inflow,outflow
      2021-01-01T00:00:00Z,BTCUSDT,1520.5,1710.0
      2021-01-01T00:00:00Z,ETHUSDT,30211,29876

- **wide**: ``timestamp,<SYMBOL1>,<SYMBOL2>,...``, one numeric value per symbol per row
  (named by ``value_name``, default ``"value"``). A market-wide series is a wide file
  with one column (e.g. ``timestamp,ALL``).

The layout is detected from the header: a ``symbol`` column means long. Timestamps must
carry their timezone (ISO 8601 with an offset such as ``+00:00`` or ``Z``; converted to
UTC) or be epoch numbers (seconds, ms, µs or ns, guessed from magnitude; UTC by
definition). Empty value cells are missing values (NaN). ``read_external`` raises
``trimtab.data.errors.DataError`` naming the file, the row (line number in the file,
the header being line 1) and the column for: unparseable timestamps, timestamps without
a timezone, duplicate (timestamp, symbol) rows, and non-numeric values.

What a timestamp means
----------------------
A row's timestamp must be the time its value **became known** (was published), not the
start of the period it describes. Daily on-chain totals for 1 January stamped
``2021-01-01T00:00:00Z`` are only known at the end of that day: pass ``delay="1D"`` (or
more, for a publication lag) to ``align_external``.

Alignment rule (no lookahead)
-----------------------------
A bar is stamped at its open ``t`` and closes at ``t + bar``. A value stamped ``s``
becomes usable at the first bar whose close is at or after ``s + delay``: at bar t the
aligned value is the latest value with ``s + delay <= t + bar`` (an as-of join on bar
closes, exact matches included). Optionally a value older than ``max_age`` at the close
is treated as missing. Nothing stamped after a bar's close can reach that bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError
from trimtab.data.panel import infer_timeframe, timeframe_seconds

__all__ = [
    "align_external",
    "asof_positions",
    "bar_closes",
    "read_external",
    "to_wide",
    "zscore_by_observation",
]

_AWARE = r"(?:Z|[+-]\d\d(?::?\d\d)?)\s*$"


def _rows(mask: np.ndarray) -> list[int]:
    """Line numbers (header = 1) of the True entries of a per-data-row mask."""
    return (np.flatnonzero(mask) + 2).tolist()


def _fmt_rows(rows: list[int], limit: int = 5) -> str:
    head = ", ".join(str(r) for r in rows[:limit])
    return head + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _parse_times(raw: pd.Series, path: str, column: str = "timestamp") -> pd.DatetimeIndex:
    if raw.isna().any():
        rows = _rows(raw.isna().to_numpy())
        raise DataError(f"{path}: column {column!r}: empty timestamp in row(s) {_fmt_rows(rows)}")
    as_num = pd.to_numeric(raw, errors="coerce")
    if as_num.notna().all():
        x = as_num.to_numpy(dtype=float)
        med = float(np.median(np.abs(x))) if len(x) else 0.0
        unit = "ns" if med > 1e17 else "us" if med > 1e14 else "ms" if med > 1e11 else "s"
        return pd.DatetimeIndex(pd.to_datetime(x, unit=unit, utc=True))
    s = raw.astype(str).str.strip()
    aware = s.str.contains(_AWARE, regex=True).to_numpy()
    parsed = pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        rows = _rows(bad)
        first = s.iloc[int(np.flatnonzero(bad)[0])]
        raise DataError(
            f"{path}: column {column!r}: cannot read timestamp {first!r} in row(s) "
            f"{_fmt_rows(rows)}; write ISO 8601 with a timezone, e.g. '2021-01-01T00:00:00Z'"
        )
    if not aware.all():
        rows = _rows(~aware)
        first = s.iloc[int(np.flatnonzero(~aware)[0])]
        raise DataError(
            f"{path}: column {column!r}: timestamp {first!r} in row(s) {_fmt_rows(rows)} has no "
            "timezone; write it in UTC with an offset, e.g. '2021-01-01T00:00:00+00:00'"
        )
    return pd.DatetimeIndex(parsed)


def _numeric(df: pd.DataFrame, cols: list[str], path: str) -> pd.DataFrame:
    out = {}
    for c in cols:
        raw = df[c]
        num = pd.to_numeric(raw, errors="coerce")
        bad = (num.isna() & raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy()
        if bad.any():
            rows = _rows(bad)
            first = raw.iloc[int(np.flatnonzero(bad)[0])]
            raise DataError(
                f"{path}: column {c!r}: {first!r} in row(s) {_fmt_rows(rows)} is not a number"
            )
        vals = num.to_numpy(dtype=float, na_value=np.nan)
        inf = np.isinf(vals)
        if inf.any():
            raise DataError(
                f"{path}: column {c!r}: infinite value in row(s) {_fmt_rows(_rows(inf))}"
            )
        out[c] = vals
    return pd.DataFrame(out, index=df.index)


def read_external(path: str | Path, value_name: str = "value") -> pd.DataFrame:
    """Read and validate an external series CSV (format in the module docstring).

    Returns long data: columns ``timestamp`` (UTC), ``symbol`` and the value columns
    (float), sorted by symbol then timestamp, with ``attrs["source"]`` the path and
    ``attrs["layout"]`` ``"long"`` or ``"wide"``. Raises ``DataError`` on any problem.
    """
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise DataError(f"{src}: no such file")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=True, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{src}: the file is empty") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{src}: cannot read as CSV: {exc}") from None
    df.columns = [str(c).strip() for c in df.columns]
    if "timestamp" not in df.columns:
        raise DataError(
            f"{src}: no 'timestamp' column (found: {', '.join(df.columns)}); expected "
            "'timestamp,symbol,<values...>' or 'timestamp,<SYMBOL1>,<SYMBOL2>,...'"
        )
    dupe_cols = [c for c in set(df.columns) if list(df.columns).count(c) > 1]
    if dupe_cols:
        raise DataError(f"{src}: repeated column name(s) {', '.join(sorted(dupe_cols))}")
    if df.empty:
        raise DataError(f"{src}: the file has a header but no rows")
    ts = _parse_times(df["timestamp"], src)
    if "symbol" in df.columns:
        layout = "long"
        value_cols = [c for c in df.columns if c not in ("timestamp", "symbol")]
        if not value_cols:
            raise DataError(f"{src}: long layout needs at least one value column after 'symbol'")
        sym = df["symbol"]
        if sym.isna().any() or (sym.str.strip() == "").any():
            rows = _rows((sym.isna() | (sym.str.strip() == "")).to_numpy())
            raise DataError(f"{src}: column 'symbol': empty in row(s) {_fmt_rows(rows)}")
        vals = _numeric(df, value_cols, src)
        out = pd.DataFrame({"timestamp": ts, "symbol": sym.str.strip().to_numpy()})
        for c in value_cols:
            out[c] = vals[c].to_numpy()
        dup = out.duplicated(["timestamp", "symbol"], keep=False).to_numpy()
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            raise DataError(
                f"{src}: duplicate (timestamp, symbol) ({out['timestamp'].iloc[i]}, "
                f"{out['symbol'].iloc[i]}) in row(s) {_fmt_rows(_rows(dup))}"
            )
    else:
        layout = "wide"
        symbols = [c for c in df.columns if c != "timestamp"]
        if not symbols:
            raise DataError(f"{src}: wide layout needs at least one symbol column")
        dup = pd.Index(ts).duplicated(keep=False)
        if dup.any():
            raise DataError(
                f"{src}: column 'timestamp': duplicate timestamp {ts[int(np.flatnonzero(dup)[0])]} "
                f"in row(s) {_fmt_rows(_rows(dup))}"
            )
        vals = _numeric(df, symbols, src)
        vals.index = ts
        out = (
            vals.rename_axis(index="timestamp", columns="symbol")
            .stack(future_stack=True)
            .rename(value_name)
            .reset_index()
        )
        out = out[out[value_name].notna()]
    out = out.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    out.attrs["source"] = src
    out.attrs["layout"] = layout
    return out


def to_wide(data: pd.DataFrame, column: str) -> pd.DataFrame:
    """One value column of long data as a (timestamp x symbol) frame, unaligned."""
    if column not in data.columns:
        raise KeyError(f"no column {column!r}; value columns: {_value_columns(data)}")
    return data.pivot(index="timestamp", columns="symbol", values=column).sort_index()


def _value_columns(data: pd.DataFrame) -> list[str]:
    return [c for c in data.columns if c not in ("timestamp", "symbol")]


# --------------------------------------------------------------------------- alignment


def _bar_delta(index: pd.DatetimeIndex, timeframe: str | pd.Timedelta | None) -> pd.Timedelta:
    if timeframe is None:
        timeframe = infer_timeframe(index)
    if isinstance(timeframe, str):
        return pd.Timedelta(seconds=timeframe_seconds(timeframe))
    return pd.Timedelta(timeframe)


def bar_closes(
    index: pd.DatetimeIndex, timeframe: str | pd.Timedelta | None = None
) -> pd.DatetimeIndex:
    """Close times of bars stamped at their open: ``index + bar length``.

    ``timeframe`` is a name (``"1d"``), a Timedelta, or None to infer from ``index``.
    The index must be UTC (timezone-aware) and increasing.
    """
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError("the bar index must be a timezone-aware (UTC) DatetimeIndex")
    if not index.is_monotonic_increasing:
        raise ValueError("the bar index must be increasing")
    return index + _bar_delta(index, timeframe)


def asof_positions(source_times: np.ndarray, query_times: np.ndarray) -> np.ndarray:
    """For each query time, the position of the latest source time ``<=`` it (-1: none).

    Both arrays as int64 nanoseconds (or datetime64); ``source_times`` sorted ascending.
    """
    return np.searchsorted(source_times, query_times, side="right") - 1


def zscore_by_observation(
    data: pd.DataFrame, column: str, window: int, min_periods: int | None = None
) -> pd.DataFrame:
    """Per-symbol trailing z-score of a value over its own last ``window`` observations.

    ``(x - mean) / std`` (ddof=1) with the window including the observation itself, on
    the series' own clock (before any alignment, so a weekly value is not repeated 7
    times on daily bars). ``min_periods`` defaults to ``window``. Returns ``data`` with
    ``column`` replaced by its z-score.
    """
    mp = window if min_periods is None else min_periods
    out = data.sort_values(["symbol", "timestamp"], kind="stable").copy()
    g = out.groupby("symbol", sort=False)[column]
    mean = g.transform(lambda s: s.rolling(window, min_periods=mp).mean())
    std = g.transform(lambda s: s.rolling(window, min_periods=mp).std(ddof=1))
    out[column] = (out[column] - mean) / std.where(std > 0)
    return out


def align_external(
    data: pd.DataFrame,
    index: pd.DatetimeIndex,
    column: str | None = None,
    timeframe: str | pd.Timedelta | None = None,
    delay: str | pd.Timedelta | None = None,
    max_age: str | pd.Timedelta | None = None,
    zscore_window: int | None = None,
    zscore_min_periods: int | None = None,
    symbols: list[str] | None = None,
    live: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Align one value column of long data to a bar index, causally (as-of bar close).

    At bar t (open ``t``, close ``t + bar``) the value is the latest one with
    ``timestamp + delay <= t + bar`` (see the module docstring); NaN before the first,
    and when it is older than ``max_age`` at the close. ``column`` defaults to the only
    value column. With ``zscore_window`` the value is first z-scored per symbol over its
    own trailing observations (``zscore_by_observation``), making a factor. ``symbols``
    reindexes the output columns (e.g. to a panel's); ``live`` (e.g. ``Panel.live``)
    blanks bars where the asset is not listed. Returns a (bar x symbol) frame.
    """
    cols = _value_columns(data)
    if column is None:
        if len(cols) != 1:
            raise ValueError(f"several value columns ({', '.join(cols)}); name one as column=")
        column = cols[0]
    elif column not in cols:
        raise KeyError(f"no value column {column!r}; found: {', '.join(cols)}")
    closes = bar_closes(index, timeframe)
    d = data[["timestamp", "symbol", column]].dropna(subset=[column])
    if zscore_window is not None:
        d = zscore_by_observation(d, column, zscore_window, zscore_min_periods)
    lag = pd.Timedelta(delay) if delay is not None else pd.Timedelta(0)
    age_limit = pd.Timedelta(max_age) if max_age is not None else None
    q = closes.as_unit("ns").asi8
    names = sorted(d["symbol"].unique()) if symbols is None else list(symbols)
    out = np.full((len(index), len(names)), np.nan)
    groups = {k: g for k, g in d.groupby("symbol", sort=False)}
    for j, name in enumerate(names):
        g = groups.get(name)
        if g is None:
            continue
        g = g.sort_values("timestamp", kind="stable")
        avail = (pd.DatetimeIndex(g["timestamp"]) + lag).as_unit("ns").asi8
        vals = g[column].to_numpy(dtype=float)
        pos = asof_positions(avail, q)
        have = pos >= 0
        col = np.where(have, vals[np.maximum(pos, 0)], np.nan)
        if age_limit is not None:
            age = q - avail[np.maximum(pos, 0)]
            col = np.where(have & (age <= age_limit.value), col, np.nan)
        out[:, j] = col
    frame = pd.DataFrame(out, index=index, columns=pd.Index(names, name="symbol"))
    if live is not None:
        frame = frame.where(
            live.reindex(index=index, columns=frame.columns).fillna(False).astype(bool)
        )
    return frame
