"""Out-of-sample checks of the risk models on a portfolio: VaR coverage backtests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel
from trimtab.data.readers import to_utc
from trimtab.risk.var import portfolio_returns, portfolio_var
from trimtab.risk.var_backtest import backtest_var

# Method name in reports -> portfolio_var keyword arguments. The EWMA-t model rescales
# its volatility by the trailing RMS of standardised returns (see var.ewma_t_var):
# without it the EWMA under-forecasts crypto volatility and the 99 % VaR fails Kupiec.
VAR_METHODS: dict[str, dict[str, Any]] = {
    "historical": {"method": "historical"},
    "ewma_normal": {"method": "ewma_normal"},
    "ewma_t": {"method": "ewma_t", "scale_correction": True},
    "ewma_cornish_fisher": {"method": "ewma_cf"},
}


def equal_weights(panel: Panel, members: pd.DataFrame | None = None) -> pd.DataFrame:
    """Equal weights over the listed members at each bar (known at that bar's close)."""
    held = panel.live if members is None else (members & panel.live)
    count = held.sum(axis=1)
    return held.astype(float).div(count.where(count > 0), axis=0).fillna(0.0)


def var_coverage(
    panel: Panel,
    weights: pd.DataFrame,
    *,
    start: Any = None,
    end: Any = None,
    levels: tuple[float, ...] = (0.95, 0.99),
) -> dict[str, Any]:
    """Forecast one-bar VaR/CVaR of the weighted portfolio with every method and test
    coverage (Kupiec, Christoffersen) on the bars between ``start`` and ``end``.

    Bars before ``start`` are history for the models; the weights at t are applied to
    the returns of t+1. Returns ``{"methods": {method: {level: {...}}}, "n_bars", ...}``.
    """
    returns = panel.close.pct_change(fill_method=None)
    realised = portfolio_returns(returns, weights)
    forecasts = {
        name: portfolio_var(returns, weights, levels=levels, **kwargs).var
        for name, kwargs in VAR_METHODS.items()
    }
    lo = None if start is None else to_utc(start, what="start")
    hi = None if end is None else to_utc(end, what="end")
    window = realised.loc[lo:hi]
    # Only bars on which the portfolio held something: an empty book has no risk to test.
    window = window[weights.shift(1).reindex(window.index).abs().sum(axis=1) > 0]
    trimmed = {
        name: {level: series.reindex(window.index) for level, series in by_level.items()}
        for name, by_level in forecasts.items()
    }
    table = backtest_var(window, trimmed, common_sample=True)
    return {
        "start": window.index[0].isoformat() if len(window) else None,
        "end": window.index[-1].isoformat() if len(window) else None,
        "n_bars": int(len(window)),
        "levels": list(levels),
        "methods": {
            name: {
                f"{level:g}": {k: _plain(v) for k, v in row.items()}
                for level, row in by_level.items()
            }
            for name, by_level in table.items()
        },
    }


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
