"""Trading costs: exchange fees and slippage (half-spread plus market impact)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

BPS = 1e-4

# Spot (taker, maker) fees in bps at each venue's entry tier, as published by the
# venues; discounts (volume tiers, fee tokens) lower them, so give your own when known.
VENUE_FEES_BPS: dict[str, tuple[float, float]] = {
    "binance": (10.0, 10.0),
    "bybit": (10.0, 10.0),
    "okx": (10.0, 8.0),
    "kucoin": (10.0, 10.0),
    "kraken": (40.0, 25.0),
}


@dataclass(frozen=True)
class CostModel:
    """Fees and slippage for one venue, all in basis points.

    Slippage on a market order is ``half_spread_bps + impact_bps_at_1pct *
    sqrt(participation / 1 %)``, where participation is the order's notional over the
    bar's quote volume: the square-root law, scaled so that trading 1 % of a bar's volume
    costs ``impact_bps_at_1pct``. ``fee_currency="received"`` charges spot buy fees in the
    base asset received (Binance's default); ``"quote"`` charges every fee in quote.
    ``spread="bars"`` takes each bar's half-spread from the bars themselves (see
    ``trimtab.execution.spreads``), with ``half_spread_bps`` as its floor.
    ``max_volume_share`` (fraction, default 0.10) caps one order's fill in a bar at that
    share of the bar's quote volume: the rest waits within its time in force; ``None``
    lifts the cap.
    """

    taker_fee_bps: float = 10.0
    maker_fee_bps: float = 2.0
    half_spread_bps: float = 2.0
    impact_bps_at_1pct: float = 10.0
    fee_currency: Literal["quote", "received"] = "quote"
    spread: Literal["fixed", "bars"] = "fixed"
    max_volume_share: float | None = 0.10

    def __post_init__(self) -> None:
        share = self.max_volume_share
        if share is not None and not (math.isfinite(share) and 0 < share <= 1):
            raise ValueError(f"max_volume_share must be a fraction in (0, 1], got {share}")
        for name in ("taker_fee_bps", "maker_fee_bps", "half_spread_bps", "impact_bps_at_1pct"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value < 10_000):
                raise ValueError(f"{name} must be in [0, 10000) bps, got {value}")
        if self.spread not in ("fixed", "bars"):
            raise ValueError(f"spread must be 'fixed' or 'bars', got {self.spread!r}")
        if self.fee_currency not in ("quote", "received"):
            raise ValueError(
                f"fee_currency must be 'quote' or 'received', got {self.fee_currency!r}"
            )

    @classmethod
    def for_venue(cls, venue: str, **overrides: Any) -> CostModel:
        """The regular-tier spot fees of a venue (``VENUE_FEES_BPS``), with overrides."""
        key = venue.strip().lower()
        if key not in VENUE_FEES_BPS:
            raise ValueError(
                f"no fee schedule for venue {venue!r}; known: {', '.join(sorted(VENUE_FEES_BPS))} "
                "(or give the fees in bps)"
            )
        taker, maker = VENUE_FEES_BPS[key]
        return cls(**{"taker_fee_bps": taker, "maker_fee_bps": maker, **overrides})

    @classmethod
    def free(cls) -> CostModel:
        """No fees and no slippage: for checks that must track prices exactly."""
        return cls(0.0, 0.0, 0.0, 0.0)

    def fee_rate(self, maker: bool) -> float:
        """Fee as a fraction of notional."""
        return (self.maker_fee_bps if maker else self.taker_fee_bps) * BPS

    def slippage(
        self, notional: float, bar_quote_volume: float, half_spread_bps: float | None = None
    ) -> float:
        """Adverse price move for a market order, as a fraction of the reference price.

        ``half_spread_bps`` replaces the model's fixed half-spread, e.g. one quoted from a
        book or estimated from bars.
        """
        impact = 0.0
        if self.impact_bps_at_1pct and notional > 0:
            if bar_quote_volume > 0 and math.isfinite(bar_quote_volume):
                participation = notional / bar_quote_volume
            else:
                participation = 1.0
            impact = self.impact_bps_at_1pct * math.sqrt(participation / 0.01)
        spread = self.half_spread_bps if half_spread_bps is None else half_spread_bps
        return (spread + impact) * BPS
