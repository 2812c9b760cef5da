"""What a run computes once over the whole panel, before the per-step loop."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel, to_utc
from trimtab.execution.market import MarketArrays
from trimtab.execution.spreads import bar_half_spread_bps
from trimtab.risk.score import asset_risk
from trimtab.signals.features import compute_features
from trimtab.signals.regime import market_regime


@dataclass(frozen=True)
class MarketContext:
    """Market arrays, causal features and universe membership for one run.

    ``start_i``/``end_i`` are the first and last bars traded (inclusive); bars before
    ``start_i`` are warm-up history for trailing windows. Shared by every policy run over
    the same data, so features are computed once.
    """

    panel: Panel
    market: MarketArrays
    features: dict[str, np.ndarray]
    universe: np.ndarray
    start_i: int
    end_i: int

    @classmethod
    def build(
        cls,
        panel: Panel,
        *,
        universe: pd.DataFrame | None = None,
        start: Any = None,
        end: Any = None,
        with_regime: bool = False,
    ) -> MarketContext:
        """Prepare ``panel`` for a run from ``start`` to ``end`` (UTC, inclusive).

        ``universe`` is a boolean (time x symbol) membership frame; by default every
        listed asset is a member. ``with_regime`` fits the market regime model (a
        filtered HMM on the equal-weight index, refit monthly; ``market_high_vol``).
        """
        market = MarketArrays.from_panel(panel)
        index = panel.index
        start_i = 0 if start is None else int(index.searchsorted(to_utc(start), side="left"))
        end_i = (
            len(index) - 1
            if end is None
            else int(index.searchsorted(to_utc(end), side="right")) - 1
        )
        if start_i >= len(index) or end_i < start_i:
            raise ValueError(
                f"no bars between {start or index[0]} and {end or index[-1]}; "
                f"the data covers {index[0]:%Y-%m-%d} to {index[-1]:%Y-%m-%d}"
            )
        if universe is None:
            members = market.live.copy()
        else:
            members = (
                universe.reindex(index=index, columns=list(market.symbols))
                .fillna(False)
                .to_numpy(bool)
                & market.live
            )
        features = compute_features(panel)
        risk = asset_risk(panel)
        features["risk_score"] = risk.composite.to_numpy(float)
        features["risk_coverage"] = risk.coverage.to_numpy(float)
        features["vol_ratio"] = risk.values["vol_regime"].to_numpy(float)
        spreads = bar_half_spread_bps(panel.high, panel.low, panel.close).to_numpy(float)
        features["half_spread_bps"] = spreads
        market = replace(market, half_spread_bps=spreads)
        if with_regime:
            regime = market_regime(panel.close, periods_per_year=panel.periods_per_year)
            features["market_high_vol"] = regime.high_vol.iloc[:, 0].to_numpy(float)
        return cls(
            panel=panel,
            market=market,
            features=features,
            universe=members,
            start_i=start_i,
            end_i=end_i,
        )

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.market.index[self.start_i : self.end_i + 1]
