"""Orders, fills and rejections: plain immutable records."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd

_order_ids = itertools.count(1)


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    """How long an order may wait for its fill.

    * ``next_bar`` (the default): good for the first bar after it is sent only; what is
      not filled in that bar (no bar, a limit not traded through, a partial fill) expires.
    * ``gtc``: good till cancelled.
    * ``gtd``: good till ``expires_at`` (UTC): it may fill in any bar that opens at or
      before that time.
    """

    NEXT_BAR = "next_bar"
    GTC = "gtc"
    GTD = "gtd"


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, init=False)
class Order:
    """An instruction to trade.

    Exactly one of ``quantity`` (base units) and ``quote_quantity`` (quote currency to
    spend, market buys only, like Binance's ``quoteOrderQty``) is set. ``reason`` is the
    decision's explanation and travels to the fill. ``time_in_force`` says how long it
    waits (default: the next bar only); ``expires_at`` is set exactly for ``gtd``.
    ``post_only`` (limit orders only): the venue must reject it rather than let it take
    liquidity (Binance GTX on futures, LIMIT_MAKER on spot).
    """

    symbol: str
    side: Side
    quantity: float | None = None
    quote_quantity: float | None = None
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    reduce_only: bool = False
    subaccount: str = "main"
    leverage: float = 1.0
    reason: str = ""
    decision_id: int | None = None
    id: int = field(default_factory=lambda: next(_order_ids))
    time_in_force: TimeInForce = TimeInForce.NEXT_BAR
    expires_at: pd.Timestamp | None = None
    post_only: bool = False

    # Written out (not generated): a frozen dataclass's own __init__ sets each field
    # through object.__setattr__, which made building orders a visible share of a run.
    def __init__(
        self,
        symbol: str,
        side: Side,
        quantity: float | None = None,
        quote_quantity: float | None = None,
        type: OrderType = OrderType.MARKET,
        limit_price: float | None = None,
        reduce_only: bool = False,
        subaccount: str = "main",
        leverage: float = 1.0,
        reason: str = "",
        decision_id: int | None = None,
        id: int | None = None,
        time_in_force: TimeInForce = TimeInForce.NEXT_BAR,
        expires_at: pd.Timestamp | None = None,
        post_only: bool = False,
    ) -> None:
        self.__dict__.update(
            symbol=symbol,
            side=side,
            quantity=quantity,
            quote_quantity=quote_quantity,
            type=type,
            limit_price=limit_price,
            reduce_only=reduce_only,
            subaccount=subaccount,
            leverage=leverage,
            reason=reason,
            decision_id=decision_id,
            id=next(_order_ids) if id is None else id,
            time_in_force=time_in_force,
            expires_at=expires_at,
            post_only=post_only,
        )
        self.__post_init__()

    def __post_init__(self) -> None:
        tif = self.time_in_force
        if tif.__class__ is not TimeInForce:
            tif = TimeInForce(tif)  # a plain string is accepted, and checked
            object.__setattr__(self, "time_in_force", tif)
        if tif is TimeInForce.GTD:
            if self.expires_at is None:
                raise ValueError(f"order {self.symbol}: a gtd order needs expires_at")
            at = pd.Timestamp(self.expires_at)
            object.__setattr__(
                self, "expires_at", at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")
            )
        elif self.expires_at is not None:
            raise ValueError(f"order {self.symbol}: expires_at is only for gtd orders")
        quantity, quote_quantity = self.quantity, self.quote_quantity
        if (quantity is None) == (quote_quantity is None):
            raise ValueError(f"order {self.symbol}: set exactly one of quantity and quote_quantity")
        amount = quantity if quantity is not None else quote_quantity
        if not (math.isfinite(amount) and amount > 0):
            raise ValueError(
                f"order {self.symbol}: amount must be a finite number > 0, got {amount}"
            )
        if quote_quantity is not None and (
            self.side is not Side.BUY or self.type is not OrderType.MARKET
        ):
            raise ValueError(f"order {self.symbol}: quote_quantity is only for market buys")
        if self.type is OrderType.LIMIT:
            if self.limit_price is None or not (
                math.isfinite(self.limit_price) and self.limit_price > 0
            ):
                raise ValueError(f"limit order {self.symbol}: limit_price must be > 0")
        elif self.limit_price is not None:
            raise ValueError(f"market order {self.symbol}: limit_price must not be set")
        elif self.post_only:
            raise ValueError(f"market order {self.symbol}: post_only is for limit orders")
        leverage = self.leverage
        if not (leverage == 1.0 or (math.isfinite(leverage) and leverage >= 1)):
            raise ValueError(f"order {self.symbol}: leverage must be >= 1, got {leverage}")

    def with_amount(self, amount: float) -> Order:
        """This order (same id and fields) for ``amount`` in its own units (base, or quote
        for a quote buy): an unfilled remainder. ``amount`` must be finite and > 0, which
        the caller has checked, so the copy skips validation."""
        new = object.__new__(Order)
        fields = new.__dict__
        fields.update(self.__dict__)
        fields["quantity" if self.quantity is not None else "quote_quantity"] = amount
        return new


@dataclass(frozen=True, init=False)
class Fill:
    """An executed trade. ``fee`` is in ``fee_currency`` and never negative."""

    order_id: int
    timestamp: pd.Timestamp
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    fee_currency: str
    liquidity: Liquidity = Liquidity.TAKER
    subaccount: str = "main"
    reason: str = ""
    leverage: float = 1.0

    # Written out for speed, like Order's.
    def __init__(
        self,
        order_id: int,
        timestamp: pd.Timestamp,
        symbol: str,
        side: Side,
        quantity: float,
        price: float,
        fee: float,
        fee_currency: str,
        liquidity: Liquidity = Liquidity.TAKER,
        subaccount: str = "main",
        reason: str = "",
        leverage: float = 1.0,
    ) -> None:
        self.__dict__.update(
            order_id=order_id,
            timestamp=timestamp,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            fee=fee,
            fee_currency=fee_currency,
            liquidity=liquidity,
            subaccount=subaccount,
            reason=reason,
            leverage=leverage,
        )
        self.__post_init__()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.quantity) and self.quantity > 0):
            raise ValueError(f"fill {self.symbol}: quantity must be > 0, got {self.quantity}")
        if not (math.isfinite(self.price) and self.price > 0):
            raise ValueError(f"fill {self.symbol}: price must be > 0, got {self.price}")
        if not (math.isfinite(self.fee) and self.fee >= 0):
            raise ValueError(f"fill {self.symbol}: fee must be >= 0, got {self.fee}")

    @property
    def notional(self) -> float:
        return self.quantity * self.price


@dataclass(frozen=True)
class Rejection:
    """An order (or what was left of it) not sent or not filled, and why.

    ``kind`` is ``rejected`` (refused: rules, limits, cash), ``expired`` (its time in
    force ran out unfilled) or ``cancelled`` (withdrawn, e.g. replaced by a new plan).
    """

    order: Order
    timestamp: pd.Timestamp
    reason: str
    kind: str = "rejected"

    def __post_init__(self) -> None:
        if self.kind not in ("rejected", "expired", "cancelled"):
            raise ValueError(
                f"rejection kind must be rejected, expired or cancelled: {self.kind!r}"
            )


def next_order_id() -> int:
    """The id the next ``Order`` will get, without using it up (for saved state)."""
    global _order_ids
    upcoming = next(_order_ids)
    _order_ids = itertools.count(upcoming)
    return upcoming


def set_next_order_id(value: int) -> None:
    """Make the next ``Order`` get id ``value``: a restored run then numbers its orders
    as the interrupted one did."""
    global _order_ids
    if int(value) < 1:
        raise ValueError(f"order ids start at 1, got {value}")
    _order_ids = itertools.count(int(value))
