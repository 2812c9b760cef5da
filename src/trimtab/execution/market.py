"""Bars as NumPy arrays for per-step loops, built once per run from a panel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel


@dataclass(frozen=True)
class MarketArrays:
    """A panel's fields as (time x symbol) float arrays, plus lookups.

    ``live[i, j]``: the asset is listed at bar i; ``tradable[i, j]``: it has a real bar.
    ``delisted_at[i]`` lists the columns whose first bar after delisting is i;
    ``close_filled`` is ``close`` with 0 where not listed, for marking positions (a
    position is never held where the asset is not listed).
    """

    index: pd.DatetimeIndex
    symbols: tuple[str, ...]
    column: dict[str, int]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    quote_volume: np.ndarray
    live: np.ndarray
    tradable: np.ndarray
    delisted_at: dict[int, list[int]]
    timestamps: tuple[pd.Timestamp, ...]
    close_filled: np.ndarray
    # Estimated half-spread per bar (bps), used by fills when costs.spread == "bars".
    half_spread_bps: np.ndarray | None = None

    @classmethod
    def from_panel(cls, panel: Panel) -> MarketArrays:
        live = panel.live.to_numpy()
        n = len(panel.index)
        delisted_at: dict[int, list[int]] = {}
        for j in range(live.shape[1]):
            rows = np.flatnonzero(live[:, j])
            if len(rows) and rows[-1] + 1 < n:
                delisted_at.setdefault(int(rows[-1] + 1), []).append(j)
        return cls(
            index=panel.index,
            symbols=tuple(panel.symbols),
            column={s: j for j, s in enumerate(panel.symbols)},
            open=panel.open.to_numpy(float),
            high=panel.high.to_numpy(float),
            low=panel.low.to_numpy(float),
            close=panel.close.to_numpy(float),
            quote_volume=panel.quote_volume.to_numpy(float),
            live=live,
            tradable=panel.has_bar.to_numpy() & live,
            delisted_at=delisted_at,
            timestamps=tuple(panel.index),
            close_filled=np.nan_to_num(panel.close.to_numpy(float)),
        )

    def last_close(self, i: int, j: int) -> float:
        """The most recent close at or before bar i (NaN if never listed)."""
        col = self.close[: i + 1, j]
        valid = np.flatnonzero(~np.isnan(col))
        return float(col[valid[-1]]) if len(valid) else float("nan")
