"""The mark price a funding payment is priced at.

A perpetual's funding at time t pays ``quantity * mark(t) * rate``. Backtests rarely have
the exchange's mark at t, so the best estimate available is used, in this order:

1. a ``mark_price`` column given with the rates (the exchange's own mark at t);
2. a finer bar series (e.g. hourly bars under daily ones): ``funding_with_marks`` puts the
   mark of the fine bar that contains t beside each rate, so with hourly bars the mark at
   08:00 is the open of the 08:00 bar;
3. otherwise the bar that contains t, interpolated linearly in time from its open to its
   close: at 00:00 of a daily bar the open, at 08:00 ``open + (close - open) / 3``. For a
   price path that is a random walk this is the expected price at t given the bar's open
   and close (a Brownian bridge), closer than the open for events late in the bar.

Using the bar's close is no lookahead: the payment is booked in the bar it falls in and
the bar's ledger is first seen by a decision at that bar's close.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def bar_fraction(stamps_ns: np.ndarray, edges_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each stamp (ns since epoch, UTC), the bar that contains it and how far into
    the bar it lies (a fraction in [0, 1), NaN outside); bar -1 where no bar contains it.

    Bars open at ``edges_ns`` and last the series' bar length (its shortest step), so a
    stamp in a gap of the series (a missing hour) belongs to no bar.
    """
    edges_ns = np.asarray(edges_ns, dtype=np.int64)
    stamps_ns = np.asarray(stamps_ns, dtype=np.int64)
    steps = np.diff(edges_ns)
    step = int(steps[steps > 0].min()) if (steps > 0).any() else 0
    bar = np.searchsorted(edges_ns, stamps_ns, side="right") - 1
    k = np.clip(bar, 0, max(len(edges_ns) - 1, 0))
    inside = (bar >= 0) & (stamps_ns < edges_ns[k] + step) if len(edges_ns) else bar < -1
    frac = (stamps_ns - edges_ns[k]) / step if step else np.zeros(len(stamps_ns))
    return np.where(inside, bar, -1), np.where(inside, frac, np.nan)


def interpolated_mark(open_: np.ndarray, close: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """The price at ``frac`` of the way through a bar, linear from open to close."""
    return open_ + (close - open_) * frac


def funding_with_marks(rates: pd.Series, bars: pd.DataFrame) -> pd.DataFrame:
    """``rates`` (fractions per interval, UTC index) with a ``mark_price`` column taken
    from the finer ``bars`` (columns ``open`` and ``close``, indexed by UTC open time):
    the open-to-close interpolation in the fine bar that contains each funding time, NaN
    where no fine bar covers it (the broker then interpolates in its own bar).

    The result can be passed as a symbol's funding to ``SimulatedBroker``.
    """
    for column in ("open", "close"):
        if column not in bars.columns:
            raise ValueError(
                f"funding marks: the finer bars need an {column!r} column, have "
                f"{', '.join(map(str, bars.columns)) or 'none'}"
            )
    stamps = pd.DatetimeIndex(rates.index).tz_convert("UTC").as_unit("ns").asi8
    edges = pd.DatetimeIndex(bars.index).tz_convert("UTC").as_unit("ns").asi8
    if len(edges) == 0:
        marks = np.full(len(stamps), np.nan)
    else:
        bar, frac = bar_fraction(stamps, edges)
        k = np.clip(bar, 0, len(edges) - 1)
        opens = bars["open"].to_numpy(float)[k]
        closes = bars["close"].to_numpy(float)[k]
        marks = np.where(bar >= 0, interpolated_mark(opens, closes, frac), np.nan)
    return pd.DataFrame(
        {"funding_rate": rates.to_numpy(float), "mark_price": marks}, index=rates.index
    )
