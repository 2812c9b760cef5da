"""Universes: which assets a strategy may hold at each bar, without survivorship bias.

``select_universe`` returns a boolean timestamp x symbol frame. It is causal: membership
at bar t depends only on data up to and including bar t (cutting the panel after t
changes nothing up to t), and it is always ANDed with ``panel.live`` so that an asset is
a member only while it is listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from trimtab.data.calendar import calendar_mask
from trimtab.data.errors import DataError
from trimtab.data.panel import Panel
from trimtab.data.symbols import base_asset, to_symbol

Rebalance = Literal["monthly", "weekly", "daily"]
RankBy = Literal["quote_volume", "market_cap"]
REBALANCE_CHOICES = ("monthly", "weekly", "daily")
RANK_CHOICES = ("quote_volume", "market_cap")


def rebalance_mask(index: pd.DatetimeIndex, rebalance: Rebalance) -> np.ndarray:
    """True on the first bar of each UTC month / ISO week (Monday) / day, and on bar 0."""
    if rebalance not in REBALANCE_CHOICES:
        raise DataError(
            f"rebalance must be one of {', '.join(REBALANCE_CHOICES)}, not {rebalance!r}"
        )
    return calendar_mask(index, rebalance)


def market_cap_panel(
    caps: pd.DataFrame, panel: Panel, *, max_age: str | pd.Timedelta = "7D"
) -> pd.DataFrame:
    """Market caps aligned to ``panel`` (timestamp x panel symbol), causally.

    ``caps`` is long (``timestamp, symbol, market_cap``, as from ``read_market_caps``,
    symbols being base assets such as ``BTC``) or already wide (columns = base assets or
    panel symbols). A panel symbol maps to a base asset by stripping its quote
    (``BTCUSDT`` -> ``BTC``, ``ARBUSD`` -> ``AR``: Arweave against BUSD). Each panel bar
    gets the last value stamped at or before its timestamp, no older than ``max_age``
    (a source that stops updating must not rank an asset forever on its last value).
    """
    if {"timestamp", "symbol", "market_cap"} <= set(caps.columns):
        wide = caps.pivot_table(
            index="timestamp", columns="symbol", values="market_cap", aggfunc="last"
        )
    else:
        wide = caps
    wide = wide.sort_index()
    if wide.index.tz is None:
        raise DataError("market caps need UTC timestamps")
    tolerance = pd.Timedelta(max_age)
    out = {}
    for sym in panel.symbols:
        col = sym if sym in wide.columns else base_asset(sym)
        if col is None or col not in wide.columns:
            out[sym] = pd.Series(np.nan, index=panel.index)
            continue
        s = wide[col].dropna()
        s = s[~s.index.duplicated(keep="last")]
        out[sym] = s.reindex(panel.index, method="ffill", tolerance=tolerance)
    return pd.DataFrame(out, index=panel.index)


def select_universe(
    panel: Panel,
    *,
    symbols: list[str] | None = None,
    top: int | None = None,
    by: RankBy = "quote_volume",
    lookback: int = 30,
    rebalance: Rebalance = "monthly",
    min_history: int | None = None,
    market_caps: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Boolean membership (timestamp x symbol, the panel's shape) of the universe.

    - ``symbols`` only: those symbols, members whenever they are live.
    - ``top=N``: at each rebalance bar (see ``rebalance_mask``) the N eligible assets with
      the highest score are chosen and held until the next rebalance; with ``symbols`` as
      well, only those compete. Score: mean ``quote_volume`` over the trailing
      ``lookback`` bars ending at (and including) the rebalance bar, or with
      ``by="market_cap"`` the latest market cap (``market_caps``: long frame from
      ``read_market_caps`` or a wide timestamp x symbol frame; see ``market_cap_panel``).
      Eligible: live at the rebalance bar, a score, and at least ``min_history`` live bars
      so far (None: no minimum). Ties go to the alphabetically first symbol.
    - neither: every live asset.

    Membership is always ANDed with ``panel.live``: a member that delists mid-period
    leaves at once and its slot stays empty until the next rebalance; a new listing can
    join only at a rebalance.
    """
    live = panel.live
    columns = panel.symbols
    candidates = pd.Series(True, index=columns)
    if symbols is not None:
        wanted = [to_symbol(s) for s in symbols]
        unknown = [s for s in wanted if s not in columns]
        if unknown:
            raise DataError(
                f"unknown symbol(s) {', '.join(unknown)}; available: {', '.join(columns)}"
            )
        candidates[:] = False
        candidates[wanted] = True
    if top is None:
        return live & candidates.to_numpy()[None, :]
    if top < 1:
        raise DataError(f"top must be at least 1, not {top}")
    if lookback < 1:
        raise DataError(f"lookback must be at least 1 bar, not {lookback}")
    if by not in RANK_CHOICES:
        raise DataError(f"by must be one of {', '.join(RANK_CHOICES)}, not {by!r}")

    if by == "quote_volume":
        score = panel.quote_volume.rolling(lookback, min_periods=1).mean()
    else:
        if market_caps is None:
            raise DataError("by='market_cap' needs market_caps (e.g. from read_market_caps)")
        score = market_cap_panel(market_caps, panel)
    history = live.cumsum()
    eligible = live & score.notna() & candidates.to_numpy()[None, :]
    if min_history:
        eligible &= history >= min_history

    at = rebalance_mask(panel.index, rebalance)
    s = score.to_numpy(dtype=float)[at]
    e = eligible.to_numpy()[at]
    s = np.where(e, s, -np.inf)
    # Stable sort on the negated score: ties keep column (alphabetical) order.
    order = np.argsort(-s, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    rank[rows, order] = np.arange(order.shape[1])[None, :]
    chosen = (rank < top) & e
    # Each bar holds the choice of the latest rebalance at or before it (bar 0 always is one).
    held = chosen[np.cumsum(at) - 1] if len(at) else np.zeros(live.shape, dtype=bool)
    return live & held


@dataclass(frozen=True)
class UniverseSpec:
    """A parsed universe description; ``kwargs()`` feeds ``select_universe``."""

    symbols: tuple[str, ...] | None = None
    top: int | None = None
    by: RankBy = "quote_volume"

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"by": self.by}
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        if self.top is not None:
            out["top"] = self.top
        return out


def parse_universe(text: str) -> UniverseSpec:
    """Parse ``"all"``, ``"top:20"``, ``"top:20:market_cap"`` or ``"BTCUSDT,ETH/USDT"``.

    ``select_universe(panel, **parse_universe("top:20").kwargs())``.
    """
    raw = text.strip()
    if not raw:
        raise DataError("empty universe; use 'all', 'top:N' or a list like 'BTCUSDT,ETHUSDT'")
    if raw.lower() == "all":
        return UniverseSpec()
    if raw.lower().startswith("top:"):
        parts = raw.split(":")
        try:
            n = int(parts[1])
        except (ValueError, IndexError):
            n = 0
        if n < 1 or len(parts) > 3:
            raise DataError(f"bad universe {text!r}: expected 'top:N' with N >= 1, e.g. 'top:20'")
        by = parts[2].strip().lower() if len(parts) == 3 else "quote_volume"
        by = {"volume": "quote_volume", "mcap": "market_cap", "marketcap": "market_cap"}.get(by, by)
        if by not in RANK_CHOICES:
            raise DataError(
                f"bad universe {text!r}: rank by {', '.join(RANK_CHOICES)}, not {parts[2]!r}"
            )
        return UniverseSpec(top=n, by=by)  # type: ignore[arg-type]
    symbols = tuple(to_symbol(s.strip()) for s in raw.split(",") if s.strip())
    if not symbols:
        raise DataError(f"bad universe {text!r}")
    return UniverseSpec(symbols=symbols)
