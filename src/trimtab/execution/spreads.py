"""Half-spreads for the cost model: quoted from an order book when there is one,
estimated from bars otherwise. All in basis points of the mid price.

The bar estimate is Abdi and Ranaldo's (2017) close-high-low estimator over a trailing
window (``trimtab.signals.liquidity.abdi_ranaldo_spread``), halved: it uses bars up to
and including t only. It is noisy when volatility dwarfs the spread, which on daily bars
of liquid coins it does (tens of bps for ETH, whose real spread is about 1 bp), so a cost
model takes it as ``max(estimate, floor)`` and hourly bars give better estimates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.signals.liquidity import abdi_ranaldo_spread
from trimtab.signals.orderbook import (
    book_metrics,
    read_binance_depth_snapshot,
    read_tardis_book_snapshot,
)

SPREAD_WINDOW = 30


def bar_half_spread_bps(
    high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame, window: int = SPREAD_WINDOW
) -> pd.DataFrame:
    """Half the Abdi-Ranaldo spread estimate over the trailing ``window`` bars, in bps."""
    return abdi_ranaldo_spread(high, low, close, window=window) / 2.0


def quoted_half_spread_bps(books: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Half the quoted spread of the latest book per symbol, in bps."""
    latest: dict[str, tuple[float, float]] = {}
    for book in books:
        m = book_metrics(book)
        symbol = str(book.get("symbol") or "").replace("/", "").replace("-", "").upper()
        ts = m["timestamp"] if np.isfinite(m["timestamp"]) else -np.inf
        if symbol and np.isfinite(m["spread_bps"]) and ts >= latest.get(symbol, (-np.inf, 0))[0]:
            latest[symbol] = (ts, m["spread_bps"] / 2.0)
    return {s: v for s, (_, v) in latest.items()}


def read_books(path: str | Path) -> list[dict[str, Any]]:
    """Order books from a Binance depth snapshot or a Tardis book-snapshot CSV."""
    errors = []
    for reader in (read_tardis_book_snapshot, read_binance_depth_snapshot):
        try:
            return reader(path)
        except (ValueError, KeyError) as exc:
            errors.append(str(exc))
    raise ValueError(
        f"{path}: not a Binance depth snapshot or a Tardis book snapshot ({errors[-1]})"
    )


def half_spreads(
    symbols: Iterable[str],
    floor_bps: float,
    quoted: Mapping[str, float] | None = None,
    estimated: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Per symbol: the quoted half-spread if there is one, else ``max(bar estimate,
    floor)``, else the floor; and where each came from ("book", "bars", "fixed")."""
    values, sources = [], []
    for s in symbols:
        q = (quoted or {}).get(s)
        e = (estimated or {}).get(s)
        if q is not None and np.isfinite(q):
            values.append(float(q))
            sources.append("book")
        elif e is not None and np.isfinite(e):
            values.append(max(float(e), floor_bps))
            sources.append("bars")
        else:
            values.append(floor_bps)
            sources.append("fixed")
    return np.array(values), sources
