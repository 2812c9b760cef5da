"""The broker protocol: what the engine needs from any exchange, simulated or real."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from trimtab.domain import Account, Fill, Instrument, Liquidation, Order, Rejection, Subaccount
from trimtab.domain.decisions import GuardAction


@dataclass
class ExecutionReport:
    """What happened at one step: fills, rejections (and expiries), liquidations, funding
    (quote), and what the fill-time guard changed (order, action)."""

    fills: list[Fill] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    liquidations: list[Liquidation] = field(default_factory=list)
    funding: list[tuple[str, str, float]] = field(default_factory=list)
    guard: list[tuple[Order, GuardAction]] = field(default_factory=list)

    def extend(self, other: ExecutionReport) -> None:
        self.fills.extend(other.fills)
        self.rejections.extend(other.rejections)
        self.liquidations.extend(other.liquidations)
        self.funding.extend(other.funding)
        self.guard.extend(other.guard)


@runtime_checkable
class FillGuard(Protocol):
    """The hard limits asked again at the moment of each fill, at its actual price.

    A broker calls ``check_fill`` with the fill it is about to book and books at most the
    quantity returned; it calls ``on_fill`` for every fill it books (forced ones too), so
    the guard can count the day's turnover and each order's notional. The broker holds no
    limit logic of its own: the engine supplies this object (``SafetyLayer``).
    """

    def check_fill(
        self,
        fill: Fill,
        instrument: Instrument,
        sub: Subaccount,
        marks: Mapping[str, float],
    ) -> tuple[float, list[GuardAction]]:
        """The largest quantity (base units, <= ``fill.quantity``) that breaks no limit,
        and the actions taken. ``marks`` prices every position of ``sub`` at this moment,
        the fill's own symbol at the fill price."""
        ...

    def on_fill(self, fill: Fill) -> None:
        """Count a booked fill."""
        ...


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
