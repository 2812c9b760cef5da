"""Calendar schedules: which bars are rebalance dates (UTC calendar)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from trimtab.data.errors import DataError

Frequency = Literal["daily", "weekly", "monthly", "quarterly"]
FREQUENCIES: tuple[str, ...] = ("daily", "weekly", "monthly", "quarterly")


def calendar_mask(index: pd.DatetimeIndex, frequency: str) -> np.ndarray:
    """True on the first bar of each UTC day, ISO week, month or quarter in ``index``.

    The first bar of the index is always True. Depends only on timestamps, so it is
    the same whatever the end of the data.
    """
    if frequency not in FREQUENCIES:
        raise DataError(
            f"unknown rebalance frequency {frequency!r}; use one of {', '.join(FREQUENCIES)}"
        )
    if len(index) == 0:
        return np.zeros(0, dtype=bool)
    idx = index.tz_convert("UTC") if index.tz is not None else index
    if frequency == "daily":
        key = idx.normalize().asi8
    elif frequency == "weekly":
        key = (idx.normalize() - pd.to_timedelta(idx.day_of_week, unit="D")).asi8
    elif frequency == "monthly":
        key = (idx.year * 12 + idx.month).to_numpy()
    else:
        key = (idx.year * 4 + idx.quarter).to_numpy()
    key = np.asarray(key)
    mask = np.empty(len(key), dtype=bool)
    mask[0] = True
    mask[1:] = key[1:] != key[:-1]
    return mask


def _period_key(ts: pd.Timestamp, frequency: str) -> int:
    ts = ts.tz_convert("UTC") if ts.tzinfo is not None else ts
    if frequency == "daily":
        return ts.normalize().value
    if frequency == "weekly":
        return (ts.normalize() - pd.Timedelta(days=ts.day_of_week)).value
    if frequency == "monthly":
        return ts.year * 12 + ts.month
    return ts.year * 4 + ts.quarter


def starts_period(ts: pd.Timestamp, previous: pd.Timestamp | None, frequency: str) -> bool:
    """True when bar ``ts`` is the first of a UTC day, ISO week, month or quarter, given
    the bar before it (``previous``; None for the first bar ever seen, which is a start).

    The causal form of ``calendar_mask``: it needs nothing after ``ts``, so a policy on a
    wall clock schedules exactly as one replaying history.
    """
    if frequency not in FREQUENCIES:
        raise DataError(
            f"unknown rebalance frequency {frequency!r}; use one of {', '.join(FREQUENCIES)}"
        )
    if previous is None:
        return True
    return _period_key(ts, frequency) != _period_key(previous, frequency)
