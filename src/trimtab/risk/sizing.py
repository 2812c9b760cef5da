"""Risk-driven sizing: how much of each asset to hold given its risk and the portfolio's.

Three steps, each recorded as a reason:

1. asset risk: an asset's weight is scaled by ``clip((full_cut - score) / (full_cut -
   no_cut), 0, 1)``: full size at or below ``no_cut``, nothing at or above ``full_cut``;
2. volatility targeting: the uncut book (the base weights before step 1) is scaled so
   that its forecast volatility (trailing covariance, optionally downside only) is
   ``target_vol``, never above ``max_gross`` (the leverage cap); the risk cuts of step 1
   then come out of that exposure rather than being bought back elsewhere;
3. stops: a stop distance per asset of ``k * ATR``, with ``k`` tighter when the asset's
   volatility regime is elevated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SizingConfig:
    """Sizing settings. Volatilities are annualised fractions; scores 0-100."""

    target_vol: float = 0.45
    downside: bool = False
    max_gross: float = 1.0
    no_cut_score: float = 15.0
    full_cut_score: float = 50.0
    cov_window: int = 60
    min_history: int = 30
    stop_atr_calm: float = 3.0
    stop_atr_stressed: float = 2.0
    stressed_vol_ratio: float = 1.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.target_vol) and self.target_vol > 0):
            raise ValueError(f"target_vol must be > 0, got {self.target_vol}")
        if not (np.isfinite(self.max_gross) and self.max_gross > 0):
            raise ValueError(f"max_gross must be > 0, got {self.max_gross}")
        if not 0 <= self.no_cut_score < self.full_cut_score <= 100:
            raise ValueError("need 0 <= no_cut_score < full_cut_score <= 100")
        if self.cov_window < 2 or self.min_history < 2:
            raise ValueError("cov_window and min_history must be at least 2 bars")


def risk_multiplier(scores: np.ndarray, config: SizingConfig) -> np.ndarray:
    """Per-asset size multiplier in [0, 1] from 0-100 risk scores (NaN -> 0: unknown risk)."""
    span = config.full_cut_score - config.no_cut_score
    m = np.clip((config.full_cut_score - np.asarray(scores, dtype=float)) / span, 0.0, 1.0)
    return np.where(np.isnan(m), 0.0, m)


def _zero_missing(values: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(values)`` (NaN -> 0, +-inf -> the largest floats) without its
    overhead on the common all-finite-but-NaN window."""
    out = np.array(values, dtype=float)
    out[np.isnan(out)] = 0.0
    if not np.isfinite(out).all():
        out = np.nan_to_num(out)
    return out


def portfolio_volatility(
    weights: np.ndarray, returns: np.ndarray, periods_per_year: float, downside: bool = False
) -> float:
    """Annualised volatility of ``weights`` applied to a (bars x assets) window of returns.

    Missing returns count as 0 (the asset was not trading). ``downside`` uses the root
    mean square of negative portfolio returns instead of the standard deviation.
    """
    r = _zero_missing(returns) @ weights
    if len(r) < 2:
        return float("nan")
    if downside:
        neg = np.minimum(r, 0.0)
        return float(np.sqrt(np.mean(neg * neg) * periods_per_year))
    return float(np.std(r, ddof=1) * np.sqrt(periods_per_year))


def vol_target_scale(forecast_vol: float, config: SizingConfig, gross: float) -> float:
    """Factor that brings a book of gross weight ``gross`` to the vol target, capped at
    ``max_gross`` in total."""
    if gross <= 0:
        return 0.0
    cap = config.max_gross / gross
    if not np.isfinite(forecast_vol) or forecast_vol <= 0:
        return min(1.0, cap)
    return float(min(config.target_vol / forecast_vol, cap))


def stop_distance(atr: np.ndarray, vol_ratio: np.ndarray, config: SizingConfig) -> np.ndarray:
    """Stop distances in price units: ``k * ATR``, tighter when volatility is stressed."""
    k = np.where(
        np.asarray(vol_ratio) >= config.stressed_vol_ratio,
        config.stop_atr_stressed,
        config.stop_atr_calm,
    )
    return k * np.asarray(atr, dtype=float)
