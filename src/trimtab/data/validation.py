"""Validation of long OHLCV bars (one row per bar: ``timestamp, symbol, open, ..., quote_volume``).

``validate_bars`` checks, all vectorised:

=================  ===========================================================  ==========
kind               what is wrong                                                severity
=================  ===========================================================  ==========
naive_timestamp    timestamps carry no timezone                                 policy
bad_timestamp      a timestamp is missing or could not be parsed                policy
missing_symbol     the symbol is empty                                          policy
bad_symbol         the symbol has characters trimtab refuses (``[``, ``]``,     policy
                   spaces, a stray ``/``; see ``symbols.SYMBOL_RE``), once per
                   name
symbol_normalized  lower case, spaces or the ccxt form (``btc/usdt``): read     warning
                   as ``BTCUSDT``, once per name
out_of_order       within a symbol, a row goes back in time (file order)        policy
duplicate          several rows for one (timestamp, symbol)                     policy
bad_price          open/high/low/close not a number (the text is quoted),       policy
                   infinite, not positive, or outside the sane range
                   ``[MIN_PRICE, MAX_PRICE]`` = [1e-12, 1e12]
high_below_low     high < low                                                   policy
ohlc_inconsistent  high < max(open, close) or low > min(open, close)            policy
bad_volume         volume or quote_volume not a number, infinite, negative or   policy
                   above ``MAX_VOLUME`` (1e18)
misaligned         timestamp not on the timeframe's UTC grid                    policy
spike              an isolated bar out of line with both neighbours (below)     policy
level_shift        a run of bars shifted by a factor, e.g. a unit error         policy
derived_volume     one volume missing, derived from the other and the close     warning
gap                missing bars inside a symbol's history                       warning
=================  ===========================================================  ==========

"policy" severities are errors under ``policy="fail"`` (which then raises
``DataValidationError`` listing all of them) and warnings saying what was done under
``drop`` and ``repair``:

- ``drop`` removes each offending row. Out-of-order rows are sorted, not dropped (their
  order is the problem, not their values); identical duplicate rows collapse to one,
  duplicates whose values differ are all dropped (nothing says which one is right).
- ``repair`` fixes what has a safe rule and drops the rest: rows are sorted; the last of
  several duplicates (in file order) is kept, as later rows usually correct earlier ones;
  a bar's range is widened to hold its open and close (``high := max(high, open,
  close)``, ``low := min(low, open, close)``) only when that moves high or low by at most
  ``OHLC_REPAIR_TOLERANCE`` (2 %), a rounding or late-tick slip; further out, one of the
  four prices is simply wrong and nothing says which, so the row is dropped (widening the
  high to a mistyped close would turn a typo into a valid spike). ``high < low`` where
  open, close and low agree (within the tolerance) makes the high the odd one out: it
  becomes ``max(open, close)`` (likewise a low above everything becomes ``min(open,
  close)``); other ``high < low`` rows are dropped. A NaN, infinite, negative or absurd volume becomes
  0 (an unknown volume is treated as no liquidity, the conservative reading for
  liquidity filters). Rows with bad timestamps, symbols or prices, misaligned rows,
  spikes and level shifts cannot be repaired and are dropped.
- Naive timestamps are an error under ``fail``; ``drop`` and ``repair`` assume UTC.
- Symbols are upper case: ``btcusdt`` and ``BTC/USDT`` are read as ``BTCUSDT`` with a
  warning under every policy (unambiguous); names with other characters are refused.
- A missing ``quote_volume`` next to a valid ``volume`` is derived as
  ``volume * close`` (and a missing ``volume`` as ``quote_volume / close``) under every
  policy, with a warning: an approximation, but better than a hole that would poison
  trailing volume averages (one such row exists in the real hourly Binance file).
- Gaps are always warnings: real exchange data has outages. ``panel_from_long`` fills
  them with flat, zero-volume bars at the previous close that are marked untradable
  (``has_bar`` False); nothing is invented inside the bar. A dropped spike or level
  shift therefore becomes such an untradable bar.

Spikes and level shifts (``_price_anomalies``), per symbol on log closes, thresholds as
module constants:

- The scale is robust and trailing: sigma at bar t is ``1.4826 * median(|log return|)``
  over the ``SIGMA_WINDOW`` (60) returns before t (at least ``SIGMA_MIN_BARS``, 10, else
  only the factor below applies). A move is *big* when ``|log return| >= max(log
  SPIKE_FACTOR, SPIKE_SIGMAS * sigma)``: at least 3x (or 1/3) and 10 robust sigmas.
- **spike**: the close moves big out and big back on the next bar (opposite signs), and
  the neighbours agree: ``|log(close[t+1] / close[t-1])| <= RETURN_AGREEMENT`` (0.3) x
  the smaller leg. Also an open that does the same between the previous close and its
  own close. A 1000x or 1/1000 typo is a spike; a real +100 % day, or a crash that does
  not come back the next bar, is not.
- **level_shift**: a big jump of at least ``LEVEL_SHIFT_FACTOR`` (5x: decimal and unit
  errors are 10x, 100x, 1000x) that the data did not trade through (the bar's whole
  range lies beyond the midpoint, in log, between the previous close and its close;
  real 24/7 markets open where they closed, so a real crash such as LUNA's in May 2022
  trades through every level on its way down). Either a later opposite jump undoes it
  (within ``RETURN_AGREEMENT``; at least one of the two not traded through): the bars
  in between are the shifted run, however long; or nothing undoes it and the median of
  the ``LEVEL_SHIFT_BARS`` (5) closes from the jump on differs from the median of the 5
  before by the factor too: the bars from the jump on are the shifted run (to the end
  of the data), unless fewer than 5 bars precede the jump, which are then the run.
- Causal: a verdict on bar t uses the trailing window and at most ``LEVEL_SHIFT_BARS``
  bars after t for a one-sided shift, the next bar for a spike; a run undone later is
  known when the undoing bar arrives. High and low wicks are not judged by size: real
  crashes print extreme wicks (LINK's low of 0.0001 on 2020-03-12); close-to-close is
  what trimtab trades on.
- Under ``drop`` and ``repair`` the flagged bars are dropped (there is no safe repair:
  rescaling by a guessed factor would invent prices), and the detection runs again on
  what is left until nothing more is found, so a repaired frame passes ``fail``.

Row numbers in issues are the frame's index when it is named ``row`` (the readers set it
to the line number in a CSV file, header = row 1, so the first data row is row 2; or the
1-based record number in Parquet/Feather/JSON files), otherwise 1-based positions.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError, DataValidationError
from trimtab.data.panel import LONG_COLUMNS, infer_timeframe, timeframe_seconds
from trimtab.data.symbols import normalize_symbol

Severity = Literal["error", "warning"]
Policy = Literal["fail", "drop", "repair"]
POLICIES: tuple[str, ...] = ("fail", "drop", "repair")
PRICE_COLUMNS = ("open", "high", "low", "close")

#: Sane price range (in the quote currency): anything outside is a bad_price. Wide enough
#: for micro-priced tokens quoted in BTC (~1e-10) and BTC quoted in weak currencies (~1e9).
MIN_PRICE = 1e-12
MAX_PRICE = 1e12
#: Largest believable volume (base or quote, per bar); larger is a bad_volume.
MAX_VOLUME = 1e18
#: ``repair`` widens high/low to hold open and close only by this fraction at most.
OHLC_REPAIR_TOLERANCE = 0.02
#: A big move is at least this factor (up or down) ...
SPIKE_FACTOR = 3.0
#: ... and at least this many robust sigmas of the trailing window.
SPIKE_SIGMAS = 10.0
#: Trailing window (returns) and minimum returns for the robust sigma.
SIGMA_WINDOW = 60
SIGMA_MIN_BARS = 10
#: A move "comes back" when what is left is at most this fraction of the smaller leg (log).
RETURN_AGREEMENT = 0.3
#: A level shift is a jump of at least this factor ...
LEVEL_SHIFT_FACTOR = 5.0
#: ... still there in the median of this many bars after it, against as many before.
LEVEL_SHIFT_BARS = 5
#: The repeated detection under drop/repair stops after this many rounds at the latest.
_MAX_ROUNDS = 20
_SIGMA_CHUNK = 50_000  # candidate bars per sigma batch (x SIGMA_WINDOW floats)
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution -> its standard deviation

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


def _numeric(col: pd.Series) -> tuple[np.ndarray, dict[int, object]]:
    """Floats of a column, and ``{position: original value}`` of cells that are no number.

    Text in a number column ("1,234.5", "abc") becomes NaN and is reported as a bad
    value quoting the text; a thousands separator is not guessed at ("1,5" is 1.5 in
    half of the world).
    """
    if pd.api.types.is_float_dtype(col.dtype) or pd.api.types.is_integer_dtype(col.dtype):
        # A copy: pandas may hand out read-only views and callers repair values in place.
        return np.array(col.to_numpy(dtype=float, na_value=np.nan), dtype=float), {}
    if pd.api.types.is_bool_dtype(col.dtype):
        return np.full(len(col), np.nan), dict(enumerate(col.to_numpy(dtype=object)))
    raw = col.to_numpy(dtype=object)
    try:
        x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):  # e.g. lists or dicts in cells
        x = np.array([_to_float(v) for v in raw], dtype=float)
    bad = np.flatnonzero(np.isnan(x) & ~np.asarray(pd.isna(raw), dtype=bool))
    text = {int(p): raw[p] for p in bad if not _is_nan_text(raw[p])}
    return np.array(x, dtype=float), text


def _to_float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return np.nan


def _is_nan_text(v: object) -> bool:
    # "NaN" written out is a missing value, not a typo.
    return isinstance(v, str) and v.strip().lower() in ("nan", "")


def _cell(x: float, text: dict[int, object], p: int) -> str:
    """A value for a message: the original text if it was no number."""
    return f"{text[p]!r} (not a number)" if p in text else _num(x)


def _mask(n: int, positions: dict[int, object]) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[list(positions)] = True
    return m


def _row_numbers(bars: pd.DataFrame) -> np.ndarray:
    if bars.index.name == "row" and pd.api.types.is_integer_dtype(bars.index.dtype):
        return bars.index.to_numpy(dtype=np.int64)
    return np.arange(1, len(bars) + 1, dtype=np.int64)


# --------------------------------------------------------------------------- validation


def _normalize_symbols(
    sym: np.ndarray,
) -> tuple[np.ndarray, list[tuple[int, int, str, bool]], np.ndarray]:
    """Symbols as trimtab writes them; notes ``(first position, rows, note, valid)``.

    Each distinct name is judged once (files hold few). Invalid names stay as written,
    flagged in the returned mask, so that issues quote them.
    """
    codes, uniques = pd.factorize(sym)
    out = np.asarray(uniques, dtype=object).copy()
    invalid_u = np.zeros(len(uniques), dtype=bool)
    notes: list[tuple[int, int, str, bool]] = []
    changed = []
    for u, raw in enumerate(uniques):
        if raw == "":
            continue
        name, note = normalize_symbol(str(raw))
        if name is None:
            invalid_u[u] = True
        else:
            out[u] = name
        if note is not None:
            changed.append((u, note, name is not None))
    if changed:
        counts = np.bincount(codes, minlength=len(uniques))
        first = np.full(len(uniques), len(sym))
        np.minimum.at(first, codes, np.arange(len(sym)))
        notes = [(int(first[u]), int(counts[u]), note, ok) for u, note, ok in changed]
    if not changed:
        return sym, notes, np.zeros(len(sym), dtype=bool)
    return out[codes], notes, invalid_u[codes]


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
    no_sym = np.asarray(pd.isna(sym_raw), dtype=bool)
    sym = np.where(no_sym, "", sym_raw).astype(str).astype(object)
    sym, sym_notes, invalid_sym = _normalize_symbols(sym)
    no_sym |= (sym == "") & ~invalid_sym
    bad_sym = no_sym | invalid_sym
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
    for p in np.flatnonzero(no_sym):
        issues.add("missing_symbol", p, "symbol is empty" + issues.action())
    for p, n_rows, note, valid in sym_notes:
        rows_txt = f"{n_rows} row{'s' if n_rows != 1 else ''}" + (
            ", first here" if n_rows > 1 else ""
        )
        if valid:
            issues.add("symbol_normalized", p, f"{note}; {rows_txt}", severity="warning")
        else:
            issues.add(
                "bad_symbol",
                p,
                f"{note}; {rows_txt}" + issues.action("rows dropped", "rows dropped"),
            )

    # --- prices
    if n:
        parsed = [_numeric(bars[c]) for c in PRICE_COLUMNS]
        price = np.column_stack([x for x, _ in parsed])
        price_text = [t for _, t in parsed]
    else:
        price, price_text = np.empty((0, 4)), [{}, {}, {}, {}]
    with np.errstate(invalid="ignore"):
        out_of_range = (
            np.isfinite(price) & (price > 0) & ((price < MIN_PRICE) | (price > MAX_PRICE))
        )
        bad_each = ~np.isfinite(price) | (price <= 0) | out_of_range
    bad_price = bad_each.any(axis=1)
    for p in np.flatnonzero(bad_price):
        what = ", ".join(
            f"{c} {_cell(price[p, j], price_text[j], p)}"
            for j, c in enumerate(PRICE_COLUMNS)
            if bad_each[p, j]
        )
        why = (
            f"prices must be positive numbers from {MIN_PRICE:g} to {MAX_PRICE:g}"
            if out_of_range[p].any()
            else "prices must be positive numbers"
        )
        issues.add("bad_price", p, f"{what}: {why}" + issues.action())
    o, h, lo, c = (price[:, j].copy() for j in range(4))
    ok = ~bad_price
    with np.errstate(invalid="ignore"):
        hi_oc, lo_oc = np.fmax(o, c), np.fmin(o, c)
        hl = ok & (h < lo)
        oc = ok & ~hl & ((h < hi_oc) | (lo > lo_oc))
    fix_hl = hl | oc
    # Widen the range just enough to cover open and close, and only by a slip's worth:
    # beyond OHLC_REPAIR_TOLERANCE one price is wrong and nothing says which, so the
    # row cannot be repaired (widening the high to a mistyped close would make the typo
    # a valid spike). One exception is well defined: high below low where the other
    # three prices agree, so that high (or low) is the odd one out; it is replaced by
    # the nearest consistent value, max(open, close) (or min), which invents no extreme.
    grow = 1 + OHLC_REPAIR_TOLERANCE
    new_h = np.fmax(h, hi_oc)
    new_l = np.fmin(lo, lo_oc)
    with np.errstate(invalid="ignore", divide="ignore"):
        slip = (new_h <= h * grow) & (new_l >= lo / grow)
        high_odd = hl & (lo <= lo_oc * grow)
        low_odd = hl & ~high_odd & (h >= hi_oc / grow)
    new_h = np.where(high_odd, hi_oc, new_h)
    new_l = np.where(low_odd, lo_oc, new_l)
    repairable = (oc & slip) | high_odd | low_odd
    unrepairable = fix_hl & ~repairable
    for p in np.flatnonzero(fix_hl):
        if hl[p]:
            what = f"high {_num(h[p])} is below low {_num(lo[p])}"
        elif h[p] < hi_oc[p]:
            what = f"high {_num(h[p])} is below max(open, close) {_num(hi_oc[p])}"
        else:
            what = f"low {_num(lo[p])} is above min(open, close) {_num(lo_oc[p])}"
        if repairable[p]:
            fix = f"repaired: high {_num(new_h[p])}, low {_num(new_l[p])}" + (
                " (the high was out of line with open, close and low)"
                if high_odd[p]
                else " (the low was out of line with open, close and high)"
                if low_odd[p]
                else ""
            )
        else:
            fix = (
                f"row dropped: holding open and close would move high or low by more than "
                f"{OHLC_REPAIR_TOLERANCE:.0%}, so one of the prices is wrong and nothing "
                "says which"
            )
        issues.add(
            "high_below_low" if hl[p] else "ohlc_inconsistent", p, what + issues.action(repair=fix)
        )

    # --- volumes
    (vol, vol_text), (qv, qv_text) = _numeric(bars["volume"]), _numeric(bars["quote_volume"])
    close_ok = np.isfinite(c) & (c > 0)
    with np.errstate(invalid="ignore"):
        vol_ok = np.isfinite(vol) & (vol >= 0)
        qv_ok = np.isfinite(qv) & (qv >= 0)
    # Only an empty cell is derived; text where a number should be is a bad_volume.
    derive_qv = np.isnan(qv) & vol_ok & close_ok & ~_mask(n, qv_text)
    derive_v = np.isnan(vol) & qv_ok & close_ok & ~_mask(n, vol_text)
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
            [
                ~(np.isfinite(vol) & (vol >= 0) & (vol <= MAX_VOLUME)),
                ~(np.isfinite(qv) & (qv >= 0) & (qv <= MAX_VOLUME)),
            ]
        )
    bad_vol = vol_bad_each.any(axis=1)
    for p in np.flatnonzero(bad_vol):
        what = ", ".join(
            f"{name} {_cell(x[p], text, p)}"
            for name, x, text, bad in (
                ("volume", vol, vol_text, vol_bad_each[:, 0]),
                ("quote_volume", qv, qv_text, vol_bad_each[:, 1]),
            )
            if bad[p]
        )
        issues.add(
            "bad_volume",
            p,
            f"{what}: volumes must be numbers from 0 to {MAX_VOLUME:g}"
            + issues.action(repair="repaired: set to 0"),
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
        drop = ~key_ok | bad_price | misaligned | unrepairable
        h = np.where(repairable, new_h, h)
        lo = np.where(repairable, new_l, lo)
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

    # --- spikes and level shifts, on what survives (again after each drop, so that a
    # dropped frame validates clean)
    pool = key_ok & ~drop & ~bad_price & ~misaligned
    for _ in range(1 if policy == "fail" else _MAX_ROUNDS):
        found = _price_anomalies(t, codes, o, h, lo, c, pool, rows=rows, ts=ts_idx)
        for a in found:
            n_bars = len(a.positions)
            issues.add(
                a.kind,
                a.at,
                a.message
                + issues.action(
                    drop="bar dropped" if n_bars == 1 else f"{n_bars} bars dropped",
                    repair=("bar dropped" if n_bars == 1 else f"{n_bars} bars dropped")
                    + " (no safe repair: a guessed factor would invent prices); the panel "
                    "marks missing bars untradable",
                ),
            )
            if policy != "fail":
                drop[a.positions] = True
                pool[a.positions] = False
        if not found:
            break

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


# --------------------------------------------------------------------------- spikes, shifts


@dataclass(frozen=True)
class _Anomaly:
    kind: str  # "spike" or "level_shift"
    positions: np.ndarray  # frame positions of the bars judged wrong
    at: int  # frame position the issue is reported at
    message: str


def _px(x: float) -> str:
    return f"{float(x):.8g}"


def _fmt_factor(log_ratio: float) -> str:
    x = float(np.exp(abs(log_ratio)))
    text = f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
    return f"{text}x" if log_ratio > 0 else f"1/{text}"


def _price_anomalies(
    t: np.ndarray,
    codes: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    pool: np.ndarray,
    *,
    rows: np.ndarray,
    ts: pd.DatetimeIndex,
) -> list[_Anomaly]:
    """Spikes and level shifts among the ``pool`` rows (see the module docstring).

    Prices in the pool are finite and positive. Vectorised over all symbols, except the
    pairing of big jumps, which loops over the (rare) jumps only.
    """
    pos = np.flatnonzero(pool)
    if pos.size < 2:
        return []
    srt = pos[np.lexsort((t[pos], codes[pos]))]
    # Under fail, duplicates are still here: judge the last of each (symbol, timestamp).
    keep = np.ones(srt.size, dtype=bool)
    keep[:-1] = ~((codes[srt][1:] == codes[srt][:-1]) & (t[srt][1:] == t[srt][:-1]))
    srt = srt[keep]
    m = srt.size
    g = codes[srt]
    lc, lop, lh, ll = (np.log(x[srt]) for x in (c, o, h, lo))
    has_prev = np.zeros(m, dtype=bool)
    has_prev[1:] = g[1:] == g[:-1]
    has_next = np.zeros(m, dtype=bool)
    has_next[:-1] = has_prev[1:]
    r = np.full(m, np.nan)
    r[1:] = lc[1:] - lc[:-1]
    r[~has_prev] = np.nan

    prev_close = np.full(m, np.nan)
    prev_close[1:] = lc[:-1]
    prev_close[~has_prev] = np.nan
    open_gap = lop - prev_close
    # First sorted position of each bar's symbol.
    starts = np.maximum.accumulate(np.where(has_prev, 0, np.arange(m)))
    # Every test needs a move of at least SPIKE_FACTOR, so the trailing sigma is only
    # computed where one happens (rare in real data): the median |return| of the
    # SIGMA_WINDOW returns before the bar, within its symbol.
    with np.errstate(invalid="ignore"):
        moved = (np.abs(r) >= np.log(SPIKE_FACTOR)) | (np.abs(open_gap) >= np.log(SPIKE_FACTOR))
    thr = np.full(m, np.log(SPIKE_FACTOR))
    abs_r = np.abs(r)
    all_cand = np.flatnonzero(moved)
    for a in range(0, all_cand.size, _SIGMA_CHUNK):  # bounded memory on hostile files
        cand = all_cand[a : a + _SIGMA_CHUNK]
        window = cand[:, None] - SIGMA_WINDOW + np.arange(SIGMA_WINDOW)[None, :]
        inside = window >= starts[cand][:, None]
        vals = np.where(inside, abs_r[np.clip(window, 0, None)], np.nan)
        enough = np.isfinite(vals).sum(axis=1) >= SIGMA_MIN_BARS
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
            med_before = np.where(enough, np.nanmedian(vals, axis=1), np.nan)
        thr[cand] = np.fmax(thr[cand], SPIKE_SIGMAS * _MAD_TO_SIGMA * med_before)

    def out_and_back(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (
                (np.abs(a) >= thr)
                & (np.abs(b) >= thr)
                & (a * b < 0)
                & (np.abs(a + b) <= RETURN_AGREEMENT * np.fmin(np.abs(a), np.abs(b)))
            )

    r_next = np.full(m, np.nan)
    r_next[:-1] = r[1:]
    close_spike = has_prev & has_next & out_and_back(r, np.where(has_next, r_next, np.nan))
    open_spike = has_prev & ~close_spike & out_and_back(open_gap, lc - lop)

    found: list[_Anomaly] = []
    for i in np.flatnonzero(close_spike):
        p = int(srt[i])
        found.append(
            _Anomaly(
                "spike",
                np.array([p]),
                p,
                f"close {_px(c[p])} is {_fmt_factor(r[i])} the close before "
                f"({_px(np.exp(lc[i - 1]))}, row {rows[srt[i - 1]]}) and the next one comes "
                f"back ({_px(np.exp(lc[i + 1]))}, row {rows[srt[i + 1]]}): an isolated "
                "spike, most likely a typo",
            )
        )
    for i in np.flatnonzero(open_spike):
        p = int(srt[i])
        found.append(
            _Anomaly(
                "spike",
                np.array([p]),
                p,
                f"open {_px(o[p])} is {_fmt_factor(lop[i] - lc[i - 1])} the close before "
                f"({_px(np.exp(lc[i - 1]))}) and the bar closes back at {_px(c[p])}: "
                "an isolated spike, most likely a typo",
            )
        )

    # Big jumps that may start or end a shifted run; the legs of spikes are spoken for.
    spoken = close_spike.copy()
    spoken[1:] |= close_spike[:-1]
    with np.errstate(invalid="ignore"):
        big = has_prev & ~spoken & (np.abs(r) >= np.fmax(thr, np.log(LEVEL_SHIFT_FACTOR)))
        mid = prev_close + r / 2
        # Not traded through: the bar's whole range stays beyond the (log) midpoint.
        untraded = np.where(r > 0, ll > mid, lh < mid)
    jumps = np.flatnonzero(big)
    if jumps.size == 0:
        return found

    pairs: list[tuple[int, int]] = []
    lonely: list[int] = []
    stack: list[int] = []
    for i in jumps:
        if stack and g[stack[-1]] != g[i]:
            lonely.extend(stack)
            stack = []
        if stack:
            k = stack[-1]
            if r[k] * r[i] < 0 and abs(r[k] + r[i]) <= RETURN_AGREEMENT * min(abs(r[k]), abs(r[i])):
                stack.pop()
                if untraded[k] or untraded[i]:
                    pairs.append((k, int(i)))
                # else: a real move and its reversal, both traded through
                continue
        stack.append(int(i))
    lonely.extend(stack)

    def shift_anomaly(a: int, b: int, jump: int, how: str) -> _Anomaly:
        seg = srt[a:b]
        n_bars = b - a
        first, last = int(seg[0]), int(seg[-1])
        span = (
            f"the bar at {_fmt_ts(ts[first])}"
            if n_bars == 1
            else f"{n_bars} bars from {_fmt_ts(ts[first])} to {_fmt_ts(ts[last])} "
            f"(rows {rows[first]} to {rows[last]})"
        )
        return _Anomaly(
            "spike" if n_bars == 1 else "level_shift",
            seg.copy(),
            first,
            f"prices shifted by {_fmt_factor(r[jump] if a == jump else -r[jump])} for {span}: "
            f"{how}; this looks like a unit or decimal error (a real move trades through "
            "the levels in between)",
        )

    for k, i in pairs:
        found.append(
            shift_anomaly(
                k,
                i,
                k,
                f"the close jumps {_fmt_factor(r[k])} at row {rows[srt[k]]} and back "
                f"{_fmt_factor(r[i])} at row {rows[srt[i]]}",
            )
        )
    n_side = LEVEL_SHIFT_BARS
    for i in lonely:
        if not untraded[i]:
            continue  # traded through, like a real crash
        s0, s1 = int(starts[i]), int(np.searchsorted(g, g[i], side="right"))
        before = np.median(lc[max(s0, i - n_side) : i])
        after = np.median(lc[i : min(s1, i + n_side)])
        persists = (after - before) * r[i] > 0 and abs(after - before) >= np.log(LEVEL_SHIFT_FACTOR)
        if not persists:
            continue
        how = (
            f"the close jumps {_fmt_factor(r[i])} between bars at row {rows[srt[i]]} "
            f"(previous close {_px(np.exp(lc[i - 1]))}, this bar's range "
            f"{_px(np.exp(ll[i]))} to {_px(np.exp(lh[i]))}) and stays there"
        )
        # The history before the jump set the level, unless there is hardly any: the
        # choice must not depend on bars that come later (a verdict must not flip as a
        # file grows).
        if i - s0 < n_side:
            found.append(shift_anomaly(s0, i, i, how + "; the first bars are off"))
        else:
            found.append(shift_anomaly(i, s1, i, how + "; the bars from the jump on are off"))
    return found
