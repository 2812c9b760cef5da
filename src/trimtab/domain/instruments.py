"""Tradable instruments: spot pairs and linear (USDT-margined) perpetuals.

Quantities are in base-asset units throughout (a perpetual's contracts times its
``contract_size``); prices and notionals are in the quote currency.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from decimal import Context, Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from trimtab.domain.quotes import split_symbol

# A quantity within this fraction of itself below a whole step is float noise from the
# arithmetic that produced it (0.7 - 0.4 = 0.29999999999999993 is 0.3), not a shortfall:
# it counts as on the step. Far below the ledger's own tolerance (1e-12), so the step
# taken is always one the ledger can book; 2.9999999995 lots stays 2 lots.
_FLOAT_NOISE = 1e-13
# Enough digits that huge quantities over tiny steps divide exactly.
_DECIMAL = Context(prec=60)


class InstrumentKind(StrEnum):
    SPOT = "spot"
    LINEAR_PERPETUAL = "linear_perpetual"


@dataclass(frozen=True)
class MarginTier:
    """One bracket of an exchange's maintenance-margin schedule.

    ``max_notional`` is the bracket's upper bound in quote currency (inclusive);
    ``maintenance_margin_rate`` is a fraction of notional; ``maintenance_amount`` is the
    exchange's cumulative deduction ("cum") so that maintenance margin is
    ``notional * rate - amount``, continuous across brackets.
    """

    max_notional: float
    maintenance_margin_rate: float
    maintenance_amount: float = 0.0
    max_leverage: float = 125.0

    def __post_init__(self) -> None:
        if not self.max_notional > 0:
            raise ValueError(f"margin tier max_notional must be > 0, got {self.max_notional}")
        if not 0 < self.maintenance_margin_rate < 1:
            raise ValueError(
                "margin tier maintenance_margin_rate must be a fraction in (0, 1), "
                f"got {self.maintenance_margin_rate}"
            )
        if not (math.isfinite(self.maintenance_amount) and self.maintenance_amount >= 0):
            raise ValueError(
                f"margin tier maintenance_amount must be a finite number >= 0, "
                f"got {self.maintenance_amount}"
            )
        if not self.max_leverage >= 1:
            raise ValueError(f"margin tier max_leverage must be >= 1, got {self.max_leverage}")


def _tiers(*rows: tuple[float, float, float, float]) -> tuple[MarginTier, ...]:
    return tuple(MarginTier(*row) for row in rows)


# Binance USDT-M maintenance-margin brackets as published in December 2023 (freqtrade's
# snapshot of Binance's leverage brackets, freqtrade commit c9f4358, 2023-12-12): the
# period of the shared data. Rows: (notional cap USDT, maintenance rate, cum, max leverage).
# Above the last cap Binance opens nothing; ``leverage_problem`` says so.
BINANCE_BTC_MARGIN_TIERS = _tiers(
    (50_000, 0.004, 0.0, 125),
    (500_000, 0.005, 50.0, 100),
    (8_000_000, 0.01, 2_550.0, 50),
    (50_000_000, 0.025, 122_550.0, 20),
    (80_000_000, 0.05, 1_372_550.0, 10),
    (100_000_000, 0.1, 5_372_550.0, 5),
    (120_000_000, 0.125, 7_872_550.0, 4),
    (200_000_000, 0.15, 10_872_550.0, 3),
    (300_000_000, 0.25, 30_872_550.0, 2),
    (500_000_000, 0.5, 105_872_550.0, 1),
)
BINANCE_ETH_MARGIN_TIERS = _tiers(
    (200_000, 0.005, 0.0, 100),
    (800_000, 0.0065, 300.0, 75),
    (5_000_000, 0.01, 3_100.0, 50),
    (30_000_000, 0.02, 53_100.0, 20),
    (50_000_000, 0.05, 953_100.0, 10),
    (70_000_000, 0.1, 3_453_100.0, 5),
    (80_000_000, 0.125, 5_203_100.0, 4),
    (100_000_000, 0.15, 7_203_100.0, 3),
    (150_000_000, 0.25, 17_203_100.0, 2),
    (300_000_000, 0.5, 54_703_100.0, 1),
)
#: The conservative fallback for a perpetual whose own schedule is not cached (see
#: ``trimtab data markets``): Binance's DOTUSDT brackets of the same snapshot, a typical
#: mid-cap. Against BTC's: 0.65 % maintenance from the first USDT (BTC 0.4 %), 1 % above
#: 10,000 (BTC from 500,000), 75x at most (BTC 125x), 10x from 250,000 (BTC from
#: 50,000,000), nothing above 100,000,000.
FALLBACK_MARGIN_TIERS = _tiers(
    (10_000, 0.0065, 0.0, 75),
    (50_000, 0.01, 35.0, 50),
    (250_000, 0.02, 535.0, 25),
    (1_000_000, 0.05, 8_035.0, 10),
    (2_000_000, 0.1, 58_035.0, 5),
    (5_000_000, 0.125, 108_035.0, 4),
    (10_000_000, 0.15, 233_035.0, 3),
    (50_000_000, 0.25, 1_233_035.0, 2),
    (100_000_000, 0.5, 13_733_035.0, 1),
)
#: Built-in schedules by base asset; every other base gets ``FALLBACK_MARGIN_TIERS``.
BUILTIN_MARGIN_TIERS: dict[str, tuple[MarginTier, ...]] = {
    "BTC": BINANCE_BTC_MARGIN_TIERS,
    "ETH": BINANCE_ETH_MARGIN_TIERS,
}


def default_margin_tiers(base: str) -> tuple[MarginTier, ...]:
    """The built-in schedule for ``base`` (BTC, ETH), else the conservative fallback."""
    return BUILTIN_MARGIN_TIERS.get(base.upper(), FALLBACK_MARGIN_TIERS)


@dataclass(frozen=True)
class Instrument:
    """Exchange rules for one symbol.

    ``lot_size`` and ``tick_size`` are step sizes (0 means no rounding); ``min_qty`` in
    base units and ``min_notional`` in quote currency are the exchange's order minimums.
    """

    symbol: str
    base: str
    quote: str = "USDT"
    kind: InstrumentKind = InstrumentKind.SPOT
    lot_size: float = 0.0
    tick_size: float = 0.0
    min_qty: float = 0.0
    min_notional: float = 0.0
    contract_size: float = 1.0
    margin_tiers: tuple[MarginTier, ...] = field(default=())
    if TYPE_CHECKING:
        is_perpetual: bool  # set in __post_init__: kind is LINEAR_PERPETUAL

    def __post_init__(self) -> None:
        for name in ("lot_size", "tick_size", "min_qty", "min_notional"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.symbol}: {name} must be a finite number >= 0, got {value}")
        if not (math.isfinite(self.contract_size) and self.contract_size > 0):
            raise ValueError(f"{self.symbol}: contract_size must be > 0, got {self.contract_size}")
        # A plain attribute, not a property: the broker and the guard ask it several
        # times per fill. Not a field, so equality, hashing and saved state ignore it.
        object.__setattr__(self, "is_perpetual", self.kind is InstrumentKind.LINEAR_PERPETUAL)
        if self.is_perpetual:
            tiers = self.margin_tiers or default_margin_tiers(self.base)
            bounds = [t.max_notional for t in tiers]
            if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
                raise ValueError(f"{self.symbol}: margin tiers must have increasing max_notional")
            object.__setattr__(self, "margin_tiers", tuple(tiers))
        elif self.margin_tiers:
            raise ValueError(f"{self.symbol}: spot instruments have no margin tiers")

    def round_quantity(self, quantity: float) -> float:
        """Truncate a quantity (base units, >= 0) to the lot: never rounds up.

        Binance's LOT_SIZE rule: ``(quantity - minQty) % stepSize == 0``, so the steps
        count from ``min_qty`` (from 0 below it; such an order fails ``order_problem``).
        Computed in decimal on the numbers as written (``0.3`` over a ``0.1`` step is 3
        steps, not the 2.9999999999999996 of binary floats); a quantity a hair below a
        step by float noise (``_FLOAT_NOISE``) counts as on it.
        """
        if not (math.isfinite(quantity) and quantity >= 0):
            raise ValueError(
                f"{self.symbol}: quantity to round must be a finite number >= 0, got {quantity}"
            )
        if self.lot_size == 0 or quantity == 0:
            return quantity
        return truncate_to_step(quantity, self.lot_size, self.min_qty)

    def round_price(self, price: float) -> float:
        """Round a price to the nearest tick."""
        if self.tick_size == 0:
            return price
        return round(round(price / self.tick_size) * self.tick_size, 12)

    def order_problem(self, quantity: float, price: float) -> str | None:
        """Why an order of ``quantity`` at ``price`` cannot be sent, or None if it can."""
        if quantity <= 0:
            if self.lot_size:
                return f"rounds to zero at lot size {self.lot_size:g}"
            return "quantity is zero"
        if quantity < self.min_qty:
            return f"quantity {quantity:g} below the minimum {self.min_qty:g}"
        notional = quantity * price
        if notional < self.min_notional:
            return f"notional {notional:.2f} {self.quote} below the minimum {self.min_notional:g}"
        return None

    def margin_tier(self, notional: float) -> MarginTier:
        """The maintenance-margin bracket that applies at ``notional`` (quote)."""
        for tier in self.margin_tiers:
            if notional <= tier.max_notional:
                return tier
        return self.margin_tiers[-1]

    def maintenance_margin(self, notional: float) -> float:
        """Maintenance margin in quote currency for a position of ``notional``."""
        tier = self.margin_tier(abs(notional))
        return max(abs(notional) * tier.maintenance_margin_rate - tier.maintenance_amount, 0.0)

    def leverage_problem(self, notional: float, leverage: float) -> str | None:
        """Why a perpetual position of ``notional`` (quote) cannot be held at ``leverage``,
        or None if it can.

        The exchange rejects, rather than caps, an order whose resulting position is above
        the bracket's maximum leverage (Binance error -2027, "exceeded the maximum
        allowable position at current leverage") or above the last bracket.
        """
        notional = abs(notional)
        cap = self.margin_tiers[-1].max_notional
        if notional > cap:
            return (
                f"a {notional:,.0f} {self.quote} {self.symbol} position is above the "
                f"largest margin bracket ({cap:,.0f} {self.quote})"
            )
        tier = self.margin_tier(notional)
        if leverage > tier.max_leverage * (1 + 1e-12):
            return (
                f"{leverage:g}x on a {notional:,.0f} {self.quote} {self.symbol} position is "
                f"above the bracket's maximum {tier.max_leverage:g}x (positions up to "
                f"{tier.max_notional:,.0f} {self.quote}); lower the leverage or the size"
            )
        return None


def truncate_to_step(quantity: float, step: float, origin: float = 0.0) -> float:
    """The largest ``origin + k * step`` (k a whole number) not above ``quantity``.

    ``origin`` applies only when ``quantity >= origin``. The result is the float nearest
    to that exact decimal multiple, so it never exceeds ``quantity``, except that a
    quantity within ``_FLOAT_NOISE`` (relative, and at most a millionth of a step) below
    the next multiple is that multiple.
    """
    quantity, step = float(quantity), float(step)
    grid = _step_grid(step, float(origin))
    if grid is not None:
        # Fast path, far from a step boundary: the float quotient's floor is exact and
        # k * step printed to the step's decimals is the exact multiple.
        places, units = grid
        r = quantity / step
        k = math.floor(r)
        # Below 1e9 steps the quotient's rounding error (< 1e-6) cannot cross a step;
        # the margin is twice the noise allowance (a millionth of a step) so that a
        # quantity the slow path would call "on the next step" never takes this path.
        if r < 1e9 and k * units < 1e15 and 2e-6 < r - k < 1 - 2e-6:
            return float(f"{k * step:.{places}f}")
    # repr gives the shortest decimal that reads back as the same float: "0.1", not
    # 0.1000000000000000055511151231257827.
    q, s = Decimal(repr(quantity)), Decimal(repr(step))
    o = Decimal(repr(float(origin))) if 0 < origin <= quantity else Decimal(0)
    down = _DECIMAL.add(o, _DECIMAL.multiply(_DECIMAL.divide_int(_DECIMAL.subtract(q, o), s), s))
    up = float(_DECIMAL.add(down, s))
    # Noise is relative to the quantity, and never more than a sliver of a step: 5e10
    # units at a 0.01 step are not one step short at 0.005 below it.
    if up - quantity <= min(quantity * _FLOAT_NOISE, step * 1e-6):
        return up
    return float(down)


@functools.lru_cache(maxsize=1024)
def _step_grid(step: float, origin: float) -> tuple[int, int] | None:
    """(decimal places of ``step``, ``step`` in units of its last place), or None when
    ``origin`` is off the step's grid or the step has too many places for the fast path."""
    s, o = Decimal(repr(step)), Decimal(repr(origin))
    if _DECIMAL.remainder(o, s) != 0:
        return None
    places = max(-int(s.as_tuple().exponent), 0)
    if places > 12:
        return None
    return places, int(s.scaleb(places))


def spot(symbol: str, quote: str | None = None, **rules: float) -> Instrument:
    """A spot instrument, splitting ``BTCUSDT`` into base ``BTC`` and quote ``USDT``."""
    base, q = split_symbol(symbol, quote)
    return Instrument(symbol=symbol, base=base, quote=q, **rules)


def perpetual(
    symbol: str, quote: str | None = None, margin_tiers: tuple[MarginTier, ...] = (), **rules: float
) -> Instrument:
    """A linear perpetual; without ``margin_tiers`` it uses ``default_margin_tiers``
    (Binance's for BTC and ETH, else the conservative ``FALLBACK_MARGIN_TIERS``)."""
    base, q = split_symbol(symbol.removesuffix("-PERP"), quote)
    return Instrument(
        symbol=symbol,
        base=base,
        quote=q,
        kind=InstrumentKind.LINEAR_PERPETUAL,
        margin_tiers=margin_tiers,
        **rules,
    )
