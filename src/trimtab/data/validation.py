"""Validation of long OHLCV bars (one row per bar: ``timestamp, symbol, open, ..., quote_volume``).

``validate_bars`` checks, all vectorised:

===================  ==========================================================  ==========
kind                 what is wrong                                               severity
===================  ==========================================================  ==========
naive_timestamp      timestamps carry no timezone                                policy
bad_timestamp        a timestamp is missing or could not be parsed               policy
missing_symbol       the symbol is empty                                         policy
out_of_order         within a symbol, a row goes back in time (file order)       policy
duplicate            several rows for one (timestamp, symbol)                    policy
bad_price            open/high/low/close NaN, infinite or not positive           policy
high_below_low       high < low                                                  policy
ohlc_inconsistent    high < max(open, close) or low > min(open, close)           policy
bad_volume           volume or quote_volume NaN, infinite or negative            policy
misaligned           timestamp not on the timeframe's UTC grid                   policy
derived_volume       one volume missing, derived from the other and the close    warning
gap                  missing bars inside a symbol's history                      warning
===================  ==========================================================  ==========

"policy" severities are errors under ``policy="fail"`` (which then raises
``DataValidationError`` listing all of them) and warnings saying what was done under
``drop`` and ``repair``:

- ``drop`` removes each offending row. Out-of-order rows are sorted, not dropped (their
  order is the problem, not their values); identical duplicate rows collapse to one,
  duplicates whose values differ are all dropped (nothing says which one is right).
- ``repair`` fixes what has a safe rule and drops the rest: rows are sorted; the last of
  several duplicates (in file order) is kept, as later rows usually correct earlier ones;
  ``high := max(high, open, close)`` and ``low := min(low, open, close)`` (the bar's
  range is widened just enough to hold open and close); a NaN, infinite or
  negative volume becomes 0 (an unknown volume is treated as no liquidity, the
  conservative reading for liquidity filters). Rows with bad timestamps, symbols or prices
  and misaligned rows cannot be repaired and are dropped.
- Naive timestamps are an error under ``fail``; ``drop`` and ``repair`` assume UTC.
- A missing ``quote_volume`` next to a valid ``volume`` is derived as
  ``volume * close`` (and a missing ``volume`` as ``quote_volume / close``) under every
  policy, with a warning: an approximation, but better than a hole that would poison
  trailing volume averages (one such row exists in the real hourly Binance file).
- Gaps are always warnings: real exchange data has outages. ``panel_from_long`` fills
  them with flat, zero-volume bars at the previous close that are marked untradable
  (``has_bar`` False); nothing is invented inside the bar.

Row numbers in issues are the frame's index when it is named ``row`` (the readers set it
to the line number in a CSV file, header = row 1, so the first data row is row 2; or the
1-based record number in Parquet/Feather/JSON files), otherwise 1-based positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError, DataValidationError
from trimtab.data.panel import LONG_COLUMNS, infer_timeframe, timeframe_seconds

Severity = Literal["error", "warning"]
Policy = Literal["fail", "drop", "repair"]
POLICIES: tuple[str, ...] = ("fail", "drop", "repair")
PRICE_COLUMNS = ("open", "high", "low", "close")

#: ``DataFrame.attrs`` key where readers keep {row: original text} of unparseable timestamps.
UNPARSED_ATTR = "unparsed_timestamps"
#: Timestamps are normalised to this resolution (pandas' default for parsed strings).
TIME_UNIT = "us"
_US_PER_SECOND = 1_000_000
# Weekly bars open on Mondays (Binance, ccxt); 1970-01-05 is the first Monday after the epoch.
_WEEK_ORIGIN_US = 4 * 86400 * _US_PER_SECOND


@dataclass(frozen=True)
class DataIssue:
    """One problem found in market data, located as precisely as the data allows."""

    kind: str
    severity: Severity
    source: str
    symbol: str | None
    timestamp: pd.Timestamp | None
    row: int | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.row is None else f"{self.source}, row {self.row}"
        what = " ".join(
            x
            for x in (self.symbol, _fmt_ts(self.timestamp) if self.timestamp is not None else None)
            if x
        )
        return f"{where}: {what + ': ' if what else ''}{self.message} [{self.kind}]"


def _fmt_ts(ts: pd.Timestamp) -> str:
    if pd.isna(ts):
        return "NaT"
    text = ts.strftime("%Y-%m-%d %H:%M")
    if ts.second or ts.microsecond:
        text = ts.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text + (" UTC" if ts.tzinfo is not None else " (no timezone)")


def count_issues(issues: list[DataIssue]) -> dict[str, int]:
    """``{"errors": n, "warnings": m}``."""
    errors = sum(1 for i in issues if i.severity == "error")
    return {"errors": errors, "warnings": len(issues) - errors}


def grid_origin_us(timeframe: str) -> int:
    """Epoch offset (µs) of the UTC bar grid: midnight 1970-01-01, or a Monday for ``1w``."""
    return _WEEK_ORIGIN_US if timeframe == "1w" else 0


# --------------------------------------------------------------------------- timestamps


_AWARE_RE = r"(?:Z|[+-]\d\d(?::?\d\d)?)\s*$"


def parse_timestamps(
    values: pd.Series, *, source: str, column: str = "timestamp", rows: np.ndarray | None = None
) -> pd.DatetimeIndex:
    """Parse a timestamp column to a DatetimeIndex in µs, UTC if the input had a timezone.

    Accepts datetimes, ISO 8601 strings (any UTC offset, converted to UTC) and epoch
    numbers (unit guessed from magnitude: s, ms, µs or ns). Naive input stays naive so that
    validation can report it. Unparseable entries become NaT (reported by validation);
    input where nothing parses, or that mixes naive and zoned strings, raises DataError.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    rows = np.arange(1, len(s) + 1) if rows is None else rows
    if isinstance(s.dtype, pd.DatetimeTZDtype) or (
        isinstance(s.dtype, np.dtype) and s.dtype.kind == "M"
    ):
        idx = pd.DatetimeIndex(s)
    elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        x = s.to_numpy(dtype=float, na_value=np.nan)
        finite = np.abs(x[np.isfinite(x)])
        med = float(np.median(finite)) if finite.size else 0.0
        unit = "ns" if med > 1e17 else "us" if med > 1e14 else "ms" if med > 1e11 else "s"
        idx = pd.DatetimeIndex(pd.to_datetime(x, unit=unit, utc=True, errors="coerce"))
    elif s.dtype == object:
        # Python objects (datetimes, mixed with text perhaps): pandas coerces a mix of naive
        # and zoned values unpredictably, so check zones per value first.
        idx = _parse_mixed_zones(s, source=source, column=column, rows=rows)
    else:
        try:
            idx = pd.DatetimeIndex(pd.to_datetime(s, format="ISO8601", errors="coerce"))
        except (ValueError, TypeError, OverflowError):
            # e.g. strings with different UTC offsets
            idx = _parse_mixed_zones(s, source=source, column=column, rows=rows)
    if len(idx) and idx.isna().all():
        raise DataError(
            f"{source}: column {column!r}: no timestamp could be parsed "
            f"(row {rows[0]}: {s.iloc[0]!r}); expected ISO 8601 such as "
            "'2021-01-01 00:00:00+00:00' or epoch milliseconds"
        )
    if idx.tz is not None:
        idx = idx.tz_convert("UTC")
    return idx.as_unit(TIME_UNIT)


def _parse_mixed_zones(
    s: pd.Series, *, source: str, column: str, rows: np.ndarray
) -> pd.DatetimeIndex:
    # Converting to UTC is only safe if every value has an offset: a naive one would be
    # silently taken as UTC.
    pattern = re.compile(_AWARE_RE)

    def has_zone(v: object) -> bool:
        if isinstance(v, str):
            return pattern.search(v) is not None
        return getattr(v, "tzinfo", None) is not None  # datetime / Timestamp objects

    aware = s.map(has_zone).astype(bool)
    naive = s.notna() & ~aware
    if naive.any() and aware.any():
        # Only values that read as dates count as naive; text like "n/a" is just bad.
        readable = pd.to_datetime(s[naive], format="ISO8601", errors="coerce").notna()
        naive = naive & readable.reindex(s.index, fill_value=False)
    if naive.any() and aware.any():
        i, j = int(np.argmax(naive.to_numpy())), int(np.argmax(aware.to_numpy()))
        raise DataError(
            f"{source}: column {column!r} mixes timestamps without a timezone "
            f"(row {rows[i]}: {s.iloc[i]!r}) and with one (row {rows[j]}: {s.iloc[j]!r}); "
            "write them all in UTC, e.g. '2021-01-01 00:00:00+00:00'"
        )
    try:
        return pd.DatetimeIndex(
            pd.to_datetime(s, format="ISO8601", errors="coerce", utc=bool(aware.any()))
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{source}: column {column!r}: cannot parse timestamps ({exc})") from None


def _num(x: float) -> str:
    return repr(float(x))  # "-5.0", "nan": plain Python, not numpy's "np.float64(-5.0)"


def _numeric(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_float_dtype(col.dtype) or pd.api.types.is_integer_dtype(col.dtype):
        # A copy: pandas may hand out read-only views and callers repair values in place.
        return np.array(col.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    # Text in a number column (e.g. "n/a") becomes NaN and is then reported as a bad value.
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _row_numbers(bars: pd.DataFrame) -> np.ndarray:
    if bars.index.name == "row" and pd.api.types.is_integer_dtype(bars.index.dtype):
        return bars.index.to_numpy(dtype=np.int64)
    return np.arange(1, len(bars) + 1, dtype=np.int64)


# --------------------------------------------------------------------------- validation


class _Issues:
    """Collects issues; the severity of policy-dependent kinds follows the policy."""

    def __init__(self, source: str, policy: str, rows: np.ndarray, symbols: np.ndarray, ts):
        self.source, self.policy = source, policy
        self.rows, self.symbols, self.ts = rows, symbols, ts
        self.items: list[DataIssue] = []

    @property
    def severity(self) -> Severity:
        return "error" if self.policy == "fail" else "warning"

    def add(
        self, kind: str, pos: int | None, message: str, *, severity: Severity | None = None
    ) -> None:
        if pos is None:
            symbol, ts, row = None, None, None
        else:
            symbol = self.symbols[pos] or None
            ts = self.ts[pos]
            ts = None if pd.isna(ts) else ts
            row = int(self.rows[pos])
        self.items.append(
            DataIssue(kind, severity or self.severity, self.source, symbol, ts, row, message)
        )

    def action(self, drop: str = "row dropped", repair: str = "row dropped") -> str:
        return {"fail": "", "drop": f"; {drop}", "repair": f"; {repair}"}[self.policy]


def validate_bars(
    bars: pd.DataFrame,
    *,
    source: str,
    policy: Policy = "fail",
    timeframe: str | None = None,
) -> tuple[pd.DataFrame, list[DataIssue]]:
    """Check long bars and return ``(clean bars, issues)``; see the module docstring.

    ``source`` names the file (or feed) in every issue. ``timeframe`` (e.g. ``"1h"``)
    enables the grid-alignment and gap checks; when None it is inferred from the most
    common spacing, and those checks are skipped if that fails. The clean frame has
    exactly ``LONG_COLUMNS``, UTC timestamps in µs, a RangeIndex, and is sorted by
    ``(symbol, timestamp)`` with unique pairs. Under ``fail`` any error-severity problem
    raises ``DataValidationError`` carrying all of them.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    missing = [c for c in LONG_COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(
            f"{source}: bars lack column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, bars.columns))}"
        )
    n = len(bars)
    rows = _row_numbers(bars)
    ts_idx = parse_timestamps(bars["timestamp"], source=source, rows=rows)

    sym_raw = bars["symbol"].to_numpy(dtype=object)
    bad_sym = np.asarray(pd.isna(sym_raw), dtype=bool)
    sym = np.where(bad_sym, "", sym_raw).astype(str).astype(object)
    bad_sym |= sym == ""
    codes, _ = pd.factorize(sym, sort=True)

    naive = ts_idx.tz is None
    if naive:
        ts_idx = ts_idx.tz_localize("UTC")
    issues = _Issues(source, policy, rows, sym, ts_idx)
    if naive and n:
        issues.add(
            "naive_timestamp",
            None,
            "timestamps have no timezone; trimtab works in UTC"
            + (
                ": write them with an offset ('2021-01-01 00:00:00+00:00') or load with "
                "policy='repair' (--on-bad-data repair) to assume UTC"
                if policy == "fail"
                else "; assumed UTC"
            ),
        )
    bad_ts = np.asarray(ts_idx.isna())
    t = ts_idx.asi8.copy()  # µs since epoch; NaT is the minimum int64

    # Readers parse timestamps themselves and keep the text they could not parse here.
    unparsed = bars.attrs.get(UNPARSED_ATTR, {})
    for p in np.flatnonzero(bad_ts):
        raw = unparsed.get(int(rows[p]), bars["timestamp"].iloc[p])
        raw = raw.item() if isinstance(raw, np.generic) else raw
        issues.add(
            "bad_timestamp", p, f"timestamp {raw!r} is missing or unparseable" + issues.action()
        )
    for p in np.flatnonzero(bad_sym):
        issues.add("missing_symbol", p, "symbol is empty" + issues.action())

    # --- prices
    price = np.column_stack([_numeric(bars[c]) for c in PRICE_COLUMNS]) if n else np.empty((0, 4))
    bad_each = ~np.isfinite(price) | (price <= 0)
    bad_price = bad_each.any(axis=1)
    for p in np.flatnonzero(bad_price):
        what = ", ".join(
            f"{c} {_num(price[p, j])}" for j, c in enumerate(PRICE_COLUMNS) if bad_each[p, j]
        )
        issues.add("bad_price", p, f"{what}: prices must be positive numbers" + issues.action())
    o, h, lo, c = (price[:, j].copy() for j in range(4))
    ok = ~bad_price
    with np.errstate(invalid="ignore"):
        hi_oc, lo_oc = np.fmax(o, c), np.fmin(o, c)
        hl = ok & (h < lo)
        oc = ok & ~hl & ((h < hi_oc) | (lo > lo_oc))
    fix_hl = hl | oc
    # Widen the range just enough to cover open and close; never take the extremes from
    # the other (possibly mistyped) field, which could invent a huge range.
    new_h = np.fmax(h, hi_oc)
    new_l = np.fmin(lo, lo_oc)
    for p in np.flatnonzero(fix_hl):
        if hl[p]:
            what = f"high {_num(h[p])} is below low {_num(lo[p])}"
        elif h[p] < hi_oc[p]:
            what = f"high {_num(h[p])} is below max(open, close) {_num(hi_oc[p])}"
        else:
            what = f"low {_num(lo[p])} is above min(open, close) {_num(lo_oc[p])}"
        fix = f"repaired: high {_num(new_h[p])}, low {_num(new_l[p])}"
        issues.add(
            "high_below_low" if hl[p] else "ohlc_inconsistent", p, what + issues.action(repair=fix)
        )

    # --- volumes
    vol, qv = _numeric(bars["volume"]), _numeric(bars["quote_volume"])
    close_ok = np.isfinite(c) & (c > 0)
    with np.errstate(invalid="ignore"):
        vol_ok = np.isfinite(vol) & (vol >= 0)
        qv_ok = np.isfinite(qv) & (qv >= 0)
    derive_qv = np.isnan(qv) & vol_ok & close_ok
    derive_v = np.isnan(vol) & qv_ok & close_ok
    qv[derive_qv] = vol[derive_qv] * c[derive_qv]
    vol[derive_v] = qv[derive_v] / c[derive_v]
    for p in np.flatnonzero(derive_qv & ~bad_ts & ~bad_sym):
        issues.add(
            "derived_volume",
            p,
            f"quote_volume missing; set to volume * close = {qv[p]:.6g} (approximation)",
            severity="warning",
        )
    for p in np.flatnonzero(derive_v & ~bad_ts & ~bad_sym):
        issues.add(
            "derived_volume",
            p,
            f"volume missing; set to quote_volume / close = {vol[p]:.6g} (approximation)",
            severity="warning",
        )
    with np.errstate(invalid="ignore"):
        vol_bad_each = np.column_stack(
            [~(np.isfinite(vol) & (vol >= 0)), ~(np.isfinite(qv) & (qv >= 0))]
        )
    bad_vol = vol_bad_each.any(axis=1)
    for p in np.flatnonzero(bad_vol):
        what = ", ".join(
            f"{name} {_num(x[p])}"
            for name, x, bad in (
                ("volume", vol, vol_bad_each[:, 0]),
                ("quote_volume", qv, vol_bad_each[:, 1]),
            )
            if bad[p]
        )
        issues.add(
            "bad_volume",
            p,
            f"{what}: volumes must be numbers >= 0" + issues.action(repair="repaired: set to 0"),
        )

    # --- grid alignment (needs a timeframe)
    key_ok = ~bad_ts & ~bad_sym
    if timeframe is None and key_ok.sum() > 1:
        try:
            timeframe = infer_timeframe(
                pd.DatetimeIndex(np.unique(t[key_ok]).astype("datetime64[us]"))
            )
        except ValueError:
            timeframe = None
    step = timeframe_seconds(timeframe) * _US_PER_SECOND if timeframe else None
    misaligned = np.zeros(n, dtype=bool)
    if step:
        misaligned = key_ok & ((t - grid_origin_us(timeframe)) % step != 0)
        for p in np.flatnonzero(misaligned):
            issues.add(
                "misaligned",
                p,
                f"timestamp is not on the {timeframe} grid (bars open at whole multiples of "
                f"{timeframe} from {'a Monday ' if timeframe == '1w' else ''}00:00 UTC)"
                + issues.action(),
            )

    # --- out of order: in file order, within each symbol
    pos = np.flatnonzero(key_ok)
    in_file = pos[np.argsort(codes[pos], kind="stable")]
    back = (codes[in_file][1:] == codes[in_file][:-1]) & (t[in_file][1:] < t[in_file][:-1])
    if back.any():
        prev_pos, cur_pos = in_file[:-1][back], in_file[1:][back]
        cur_codes = codes[cur_pos]
        for code in np.unique(cur_codes):
            sel = np.flatnonzero(cur_codes == code)
            first, prev = int(cur_pos[sel[0]]), int(prev_pos[sel[0]])
            issues.add(
                "out_of_order",
                first,
                f"rows of this symbol are not in time order: {len(sel)} row(s) go back in "
                f"time, first here (after row {rows[prev]} at {_fmt_ts(ts_idx[prev])})"
                + issues.action(drop="rows sorted", repair="rows sorted"),
            )

    # --- which rows survive before duplicate handling
    if policy == "fail":
        drop = np.zeros(n, dtype=bool)
    elif policy == "drop":
        drop = ~key_ok | bad_price | fix_hl | bad_vol | misaligned
    else:
        drop = ~key_ok | bad_price | misaligned
        h = np.where(fix_hl, new_h, h)
        lo = np.where(fix_hl, new_l, lo)
        vol = np.where(vol_bad_each[:, 0], 0.0, vol)
        qv = np.where(vol_bad_each[:, 1], 0.0, qv)
    pool = key_ok & ~drop

    # --- duplicates among surviving rows, grouped by (symbol, timestamp), file order kept
    pos = np.flatnonzero(pool)
    srt = pos[np.lexsort((t[pos], codes[pos]))]  # lexsort is stable
    same = (codes[srt][1:] == codes[srt][:-1]) & (t[srt][1:] == t[srt][:-1])
    if same.any():
        values = np.column_stack([o, h, lo, c, vol, qv])[srt]
        differs = ~(
            (values[1:] == values[:-1]) | (np.isnan(values[1:]) & np.isnan(values[:-1]))
        ).all(axis=1)
        group = np.concatenate([[0], np.cumsum(~same)])
        dup_groups = np.unique(group[1:][same])
        conflicting = np.zeros(group[-1] + 1, dtype=bool)
        np.logical_or.at(conflicting, group[1:][same], differs[same])
        starts = np.searchsorted(group, dup_groups, side="left")
        ends = np.searchsorted(group, dup_groups, side="right")
        for g, a, b in zip(dup_groups, starts, ends, strict=True):
            members = srt[a:b]
            where = ", ".join(str(rows[m]) for m in members)
            kind_txt = "with different values" if conflicting[g] else "identical"
            if policy == "drop" and conflicting[g]:
                drop[members] = True
                act = "; all dropped (no way to tell which is right)"
            elif policy == "fail":
                act = ""
            else:
                drop[members[:-1]] = True
                act = f"; kept the last (row {rows[members[-1]]})"
            issues.add(
                "duplicate",
                int(members[-1]),
                f"{b - a} rows for this bar ({kind_txt}) at rows {where}{act}",
            )

    items = sorted(issues.items, key=lambda i: -1 if i.row is None else i.row)
    errors = [i for i in items if i.severity == "error"]
    if errors:
        raise DataValidationError(errors, source=source)

    keep = np.flatnonzero(key_ok & ~drop)
    keep = keep[np.lexsort((t[keep], codes[keep]))]
    out = pd.DataFrame(
        {
            "timestamp": ts_idx[keep],
            "symbol": pd.array(sym[keep], dtype="str"),
            "open": o[keep],
            "high": h[keep],
            "low": lo[keep],
            "close": c[keep],
            "volume": vol[keep],
            "quote_volume": qv[keep],
        }
    )

    # --- gaps, on the clean result
    if step and len(keep) > 1:
        kt, kc = t[keep], codes[keep]
        d = np.diff(kt)
        gap = (kc[1:] == kc[:-1]) & (d > step)
        for i in np.flatnonzero(gap):
            after = int(keep[i + 1])
            missing_n = int(d[i] // step) - 1
            first_missing = ts_idx[keep[i]] + pd.Timedelta(microseconds=int(step))
            last_missing = ts_idx[after] - pd.Timedelta(microseconds=int(step))
            items.append(
                DataIssue(
                    "gap",
                    "warning",
                    source,
                    sym[after],
                    first_missing,
                    int(rows[after]),
                    (
                        f"1 missing bar at {_fmt_ts(first_missing)}"
                        if missing_n == 1
                        else f"{missing_n} missing bars from {_fmt_ts(first_missing)} "
                        f"to {_fmt_ts(last_missing)}"
                    )
                    + "; the panel fills gaps with flat zero-volume bars that cannot be traded",
                )
            )
        items.sort(key=lambda i: -1 if i.row is None else i.row)
    return out, items
