"""The scanner: rank a whole universe by what changed — correlation breakdowns,
volatility regime changes and funding extremes — at one date.

Each signal is a z-score-like reading, so they share a scale: the alert level of an
asset is the largest absolute reading among them, and the report says which it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel
from trimtab.signals.correlation import correlation_shift_scan
from trimtab.signals.funding import funding_signals
from trimtab.signals.regime import regime_change_score

SCAN_COLUMNS = [
    "symbol",
    "alert",
    "driver",
    "corr_shift_z",
    "avg_corr_short",
    "avg_corr_long",
    "vol_regime_z",
    "funding_carry",
    "funding_z",
]


def scan_universe(
    panel: Panel,
    *,
    as_of: Any = None,
    funding: pd.DataFrame | None = None,
    short: int = 30,
    long: int = 180,
    z_window: int = 365,
) -> pd.DataFrame:
    """Rank the assets listed at ``as_of`` (default: the last bar), most alarming first.

    Columns: ``corr_shift_z`` (an asset's short-window average correlation with the rest
    against its long-window level, as a z-score against its own history; positive: it
    moves more with the market than usual), ``vol_regime_z`` (short- against long-window
    volatility; positive: volatility is breaking out), ``funding_z`` (the annualised
    funding carry against its own 90-day history, for symbols in ``funding``), ``alert``
    = the largest absolute of the three and ``driver`` = which one it was.
    """
    close = panel.close if as_of is None else panel.close.loc[:as_of]
    if close.empty:
        raise ValueError(f"no bars at or before {as_of}")
    listed = close.iloc[-1].notna()
    close = close.loc[:, listed]
    returns = close.pct_change(fill_method=None)
    corr = correlation_shift_scan(returns, short=short, long=long, z_window=z_window)
    ppy = panel.periods_per_year
    # Only the last `long` bars affect the latest regime reading.
    regime = regime_change_score(close.iloc[-(long + 2) :], 10, 90, ppy).iloc[-1]
    out = pd.DataFrame(index=close.columns)
    out["corr_shift_z"] = corr["shift_z"]
    out["avg_corr_short"] = corr["avg_corr_short"]
    out["avg_corr_long"] = corr["avg_corr_long"]
    out["vol_regime_z"] = regime
    out["funding_carry"] = np.nan
    out["funding_z"] = np.nan
    if funding is not None and len(funding):
        signals = funding_signals(funding)
        signals = signals[signals["timestamp"] <= close.index[-1]]
        latest = signals.sort_values("timestamp").groupby("symbol").tail(50)
        # Average across venues of each venue's latest reading.
        last = (
            latest.groupby(["symbol", "venue"])
            .tail(1)
            .groupby("symbol")[["carry_annual", "carry_z"]]
            .mean()
        )
        for symbol, row in last.iterrows():
            if symbol in out.index:
                out.loc[symbol, ["funding_carry", "funding_z"]] = [
                    row["carry_annual"],
                    row["carry_z"],
                ]
    readings = out[["corr_shift_z", "vol_regime_z", "funding_z"]].abs()
    out["alert"] = readings.max(axis=1)
    has_any = readings.notna().any(axis=1)
    out["driver"] = readings.fillna(-1.0).idxmax(axis=1).where(has_any)
    out = out.sort_values("alert", ascending=False, na_position="last")
    out.index.name = "symbol"
    out = out.reset_index()[SCAN_COLUMNS]
    out.attrs["as_of"] = close.index[-1]
    return out
