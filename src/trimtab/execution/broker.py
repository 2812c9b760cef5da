"""The broker protocol: what the engine needs from any exchange, simulated or real."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from trimtab.domain import Account, Fill, Instrument, Liquidation, Order, Rejection


@dataclass
class ExecutionReport:
    """What happened at one step: fills, rejections, liquidations, funding (quote)."""

    fills: list[Fill] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    liquidations: list[Liquidation] = field(default_factory=list)
    funding: list[tuple[str, str, float]] = field(default_factory=list)

    def extend(self, other: ExecutionReport) -> None:
        self.fills.extend(other.fills)
        self.rejections.extend(other.rejections)
        self.liquidations.extend(other.liquidations)
        self.funding.extend(other.funding)


@runtime_checkable
class Broker(Protocol):
    """An exchange connection. A ccxt broker implements the same calls against a venue."""

    account: Account

    def instrument(self, symbol: str) -> Instrument:
        """Exchange rules (lot size, minimums, margin tiers) for ``symbol``."""
        ...

    def submit(self, order: Order) -> Rejection | None:
        """Queue or send an order; a Rejection says why it was not accepted."""
        ...

    def cancel(self, order_id: int) -> bool:
        """Cancel an open order; False if it is not open."""
        ...

    def open_orders(self) -> list[Order]:
        """Orders accepted and not yet filled or cancelled."""
        ...
