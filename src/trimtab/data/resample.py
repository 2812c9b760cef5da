"""Resampling bars to a coarser timeframe.

Aggregation per coarse bar: first open, highest high, lowest low, last close, summed base
and quote volumes, over the real bars in the bin only (gap-filled bars are ignored). Bins
are aligned to UTC: 4h bars open at 00, 04, 08, ... UTC, 1d bars at 00:00 UTC, 1w bars on
Mondays 00:00 UTC (as Binance does). A coarse bin with no real bar is a gap, which the
panel fills as usual (flat, zero volume, ``has_bar`` False).

A trailing bin that the data does not cover to its end (the data stops mid-bin) is
dropped by default: such a bar would look final but would still change as data arrives.
``keep_partial=True`` keeps it. Partial bins elsewhere are final and kept: the first bin
of a series that starts mid-bin (a listing) and the last bin of a symbol that stops
before the rest of the data (a delisting).
"""

from __future__ import annotations

import pandas as pd

from trimtab.data.errors import DataError
from trimtab.data.panel import (
    LONG_COLUMNS,
    Panel,
    infer_timeframe,
    panel_from_long,
    timeframe_seconds,
)
from trimtab.data.validation import TIME_UNIT, grid_origin_us

_US = 1_000_000


def _check_target(source_timeframe: str, timeframe: str) -> tuple[int, int]:
    try:
        src, dst = timeframe_seconds(source_timeframe), timeframe_seconds(timeframe)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if dst < src:
        raise DataError(
            f"cannot resample {source_timeframe} bars to the finer timeframe {timeframe}: "
            "resampling only aggregates; load finer data instead"
        )
    if dst % src:
        raise DataError(
            f"cannot resample {source_timeframe} bars to {timeframe}: "
            f"{timeframe} is not a whole number of {source_timeframe} bars"
        )
    return src * _US, dst * _US


def resample_bars(
    bars: pd.DataFrame,
    timeframe: str,
    *,
    source_timeframe: str | None = None,
    keep_partial: bool = False,
) -> pd.DataFrame:
    """Resample clean long bars (``LONG_COLUMNS``) to ``timeframe``; see the module docstring.

    ``source_timeframe`` is inferred from the bar spacing when not given. Returns long bars
    sorted by (symbol, timestamp), one row per coarse bin with at least one real bar.
    """
    missing = [c for c in LONG_COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"bars lack column(s) {', '.join(missing)}")
    if bars.empty:
        return bars[list(LONG_COLUMNS)].copy()
    ts = pd.DatetimeIndex(bars["timestamp"])
    if ts.tz is None:
        raise DataError("bar timestamps have no timezone; validate the bars first")
    if source_timeframe is None:
        source_timeframe = infer_timeframe(ts.unique().sort_values())
    src_step, step = _check_target(source_timeframe, timeframe)
    if src_step == step:
        return bars[list(LONG_COLUMNS)].sort_values(["symbol", "timestamp"], ignore_index=True)

    t = ts.tz_convert("UTC").as_unit(TIME_UNIT).asi8
    origin = grid_origin_us(timeframe)
    bins = origin + (t - origin) // step * step
    work = bars[list(LONG_COLUMNS)].assign(_t=t, _bin=bins)
    work = work.sort_values(["symbol", "_t"], kind="stable")
    out = (
        work.groupby(["symbol", "_bin"], sort=True)
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            quote_volume=("quote_volume", "sum"),
        )
        .reset_index()
    )
    if not keep_partial:
        # The data (all symbols) ends at the close of its last bar; a bin reaching past
        # that is still forming.
        data_end = int(t.max()) + src_step
        last_bin = int(bins.max())
        if last_bin + step > data_end:
            out = out[out["_bin"].to_numpy() != last_bin]
    stamps = pd.DatetimeIndex(
        out["_bin"].to_numpy().astype(f"datetime64[{TIME_UNIT}]")
    ).tz_localize("UTC")
    out = out.drop(columns="_bin").assign(timestamp=stamps)
    return out[list(LONG_COLUMNS)].reset_index(drop=True)


def resample_panel(panel: Panel, timeframe: str, *, keep_partial: bool = False) -> Panel:
    """Resample a panel to a coarser ``timeframe`` (e.g. 1h -> 4h -> 1d).

    Only real bars (``has_bar``) are aggregated; see the module docstring for bins, gaps
    and the trailing partial bin. Provenance is kept with ``resampled_from`` added.
    """
    if timeframe == panel.timeframe:
        return panel
    _check_target(panel.timeframe, timeframe)
    out = resample_bars(
        panel.to_long(), timeframe, source_timeframe=panel.timeframe, keep_partial=keep_partial
    )
    if out.empty:
        raise DataError(
            f"no complete {timeframe} bar in the panel ({panel.index[0]} to {panel.index[-1]})"
            if len(panel.index)
            else "the panel is empty"
        )
    provenance = dict(panel.provenance)
    provenance["resampled_from"] = panel.timeframe
    provenance["timeframe"] = timeframe
    provenance["keep_partial"] = keep_partial
    return panel_from_long(out, timeframe=timeframe, provenance=provenance)
