"""Rebalancing rules: when and how far to trade from holdings toward target weights.

All rules see the same inputs (current weights, target weights, and for the cost-aware
rule the assets' volatilities, covariance and trading costs) and return the weights to
trade to, with a reason per asset. Weights are fractions of equity; costs are fractions
of traded notional; volatilities are per bar.

- ``calendar:F``: trade all the way to target on the first bar of each UTC period F
  (daily, weekly, monthly), never in between.
- ``threshold:X``: trade all the way to target whenever any asset's absolute weight drift
  exceeds X (e.g. 0.05).
- ``cost-aware``: a no-trade band per asset whose half-width grows with its trading cost
  and volatility as in Leland's no-trade region, ``k * cost**(1/3) * vol**(2/3)``; an asset
  outside its band is traded to the band's edge (or part of the way to target), and the
  whole trade is kept only if the reduction in tracking variance it buys (from the
  covariance, over ``horizon`` bars, priced at ``risk_aversion``) exceeds its cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trimtab.data.calendar import FREQUENCIES


@dataclass(frozen=True)
class RebalanceDecision:
    """Weights to trade to (None: no trade) and the numbers behind the choice."""

    weights: np.ndarray | None
    reason: str
    benefit: float = 0.0
    cost: float = 0.0
    traded: tuple[int, ...] = ()


@dataclass(frozen=True)
class CostAwareSettings:
    """``band_scale`` is Leland's constant k; ``to_edge`` trades to the band's edge
    (True) or all the way to target (False); ``risk_aversion`` prices a unit of tracking
    variance over ``horizon`` bars in return units."""

    band_scale: float = 2.0
    min_band: float = 0.005
    to_edge: bool = True
    risk_aversion: float = 10.0
    horizon: int = 30

    def __post_init__(self) -> None:
        if not (
            self.band_scale > 0
            and self.min_band >= 0
            and self.risk_aversion > 0
            and self.horizon >= 1
        ):
            raise ValueError(
                "cost-aware settings must be positive (band_scale, risk_aversion, horizon >= 1)"
            )


def parse_rule(text: str) -> tuple[str, str | float | None]:
    """``calendar:monthly`` -> ("calendar", "monthly"); ``threshold:0.05`` ->
    ("threshold", 0.05); ``cost-aware`` -> ("cost-aware", None)."""
    kind, _, arg = text.strip().partition(":")
    if kind == "calendar" and arg in FREQUENCIES:
        return kind, arg
    if kind == "threshold":
        try:
            x = float(arg)
        except ValueError:
            x = -1.0
        if 0 < x < 1:
            return kind, x
    if kind == "cost-aware" and not arg:
        return kind, None
    raise ValueError(
        f"bad --rebalance {text!r}: use calendar:daily|weekly|monthly|quarterly, "
        "threshold:X with 0 < X < 1 (absolute weight drift), or cost-aware"
    )


def threshold_rule(current: np.ndarray, target: np.ndarray, threshold: float) -> RebalanceDecision:
    drift = np.abs(current - target)
    worst = int(np.argmax(drift)) if len(drift) else 0
    if len(drift) and drift[worst] > threshold:
        return RebalanceDecision(
            target,
            f"drift {drift[worst]:.1%} above the {threshold:.0%} threshold",
            traded=tuple(np.flatnonzero(drift > 1e-12)),
        )
    return RebalanceDecision(
        None, f"largest drift {drift.max(initial=0):.1%} within the {threshold:.0%} threshold"
    )


def no_trade_bands(costs: np.ndarray, vols: np.ndarray, settings: CostAwareSettings) -> np.ndarray:
    """Half-widths of the no-trade bands (weight units), Leland's scaling."""
    raw = (
        settings.band_scale * np.cbrt(np.maximum(costs, 0.0)) * np.maximum(vols, 0.0) ** (2.0 / 3.0)
    )
    return np.maximum(np.nan_to_num(raw, nan=settings.min_band), settings.min_band)


def cost_aware_rule(
    current: np.ndarray,
    target: np.ndarray,
    costs: np.ndarray,
    vols: np.ndarray,
    cov: np.ndarray,
    settings: CostAwareSettings | None = None,
) -> RebalanceDecision:
    """Trade the assets outside their bands, if the risk reduction is worth the cost."""
    s = settings or CostAwareSettings()
    bands = no_trade_bands(costs, vols, s)
    drift = current - target
    outside = np.abs(drift) > bands
    # A change of the universe is a new target, not drift: assets leaving the book close
    # fully and assets entering it are bought to target.
    leaving = (target == 0) & (current != 0)
    entering = (current == 0) & (target > 0)
    outside |= leaving | entering
    if not outside.any():
        return RebalanceDecision(None, "every asset within its no-trade band")
    new = current.copy()
    edge = target + np.sign(drift) * bands
    new[outside] = (edge if s.to_edge else target)[outside]
    new[leaving] = 0.0
    new[entering] = target[entering]
    trade = np.abs(new - current)
    cost = float(trade @ np.nan_to_num(costs))
    cov = np.nan_to_num(cov)
    before = float(drift @ cov @ drift)
    after_drift = new - target
    after = float(after_drift @ cov @ after_drift)
    benefit = s.risk_aversion * 0.5 * (before - after) * s.horizon
    traded = tuple(int(j) for j in np.flatnonzero(trade > 1e-12))
    if benefit <= cost:
        return RebalanceDecision(
            None,
            f"trade would cost {cost * 1e4:.1f} bps of equity for {benefit * 1e4:.1f} bps of risk reduction",
            benefit,
            cost,
        )
    return RebalanceDecision(
        new,
        f"{len(traded)} assets outside their bands: risk reduction {benefit * 1e4:.1f} bps > cost {cost * 1e4:.1f} bps",
        benefit,
        cost,
        traded,
    )
