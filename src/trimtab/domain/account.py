"""The ledger: positions, isolated subaccounts and the account that holds them.

Every subaccount keeps its own cash (quote currency), positions and PnL, and satisfies
at every mark::

    equity = cash + sum(spot quantity * mark) + sum(perp isolated margin + unrealized PnL)
           = contributions + realized PnL + unrealized PnL + funding - fees - liquidation losses

Fees are booked in the currency the exchange charges them in (quote, or the base asset
received on a spot buy) and valued in quote at the fill price for the identity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from trimtab.domain.instruments import Instrument, InstrumentKind, MarginTier
from trimtab.domain.orders import Fill, Side

# Relative tolerance for "sell everything": 1e-12 of the position is rounding, not a short.
_DUST = 1e-12


class LedgerError(Exception):
    """An operation that would break the ledger (overdraft, spot short, unknown symbol)."""


@dataclass
class Position:
    """An open position. ``quantity`` is signed base units (spot is never negative)."""

    instrument: Instrument
    quantity: float = 0.0
    entry_price: float = 0.0
    margin: float = 0.0
    leverage: float = 1.0
    realized_pnl: float = 0.0
    funding_pnl: float = 0.0

    @property
    def symbol(self) -> str:
        return self.instrument.symbol

    def unrealized_pnl(self, mark: float) -> float:
        return self.quantity * (mark - self.entry_price) if self.quantity else 0.0

    def notional(self, mark: float) -> float:
        """Signed position value at ``mark`` (quote)."""
        return self.quantity * mark

    def value(self, mark: float) -> float:
        """What the position adds to equity: spot at mark, perps as margin plus PnL."""
        if self.instrument.is_perpetual:
            return self.margin + self.unrealized_pnl(mark)
        return self.quantity * mark

    def liquidation_price(self) -> float | None:
        """Isolated-margin liquidation price (Binance USDT-M formula), None if flat or spot.

        Solves ``margin + qty * (P - entry) = |qty| * P * mmr - cum`` for P, choosing the
        maintenance bracket that contains the notional at P.
        """
        if not self.instrument.is_perpetual or self.quantity == 0:
            return None
        side = 1.0 if self.quantity > 0 else -1.0
        q = abs(self.quantity)
        candidates = []
        for tier in self.instrument.margin_tiers:
            mmr, cum = tier.maintenance_margin_rate, tier.maintenance_amount
            price = (self.margin + cum - side * q * self.entry_price) / (q * mmr - side * q)
            price = max(price, 0.0)
            candidates.append(price)
            if q * price <= tier.max_notional:
                return price
        return candidates[-1]

    def margin_ratio(self, mark: float) -> float:
        """Maintenance margin over margin balance; the position is liquidated at >= 1."""
        balance = self.margin + self.unrealized_pnl(mark)
        maintenance = self.instrument.maintenance_margin(self.notional(mark))
        return math.inf if balance <= 0 else maintenance / balance

    # --- saved state -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every field, JSON-ready (floats as Python floats: ``json`` keeps them exact)."""
        return {
            "instrument": instrument_state(self.instrument),
            "quantity": float(self.quantity),
            "entry_price": float(self.entry_price),
            "margin": float(self.margin),
            "leverage": float(self.leverage),
            "realized_pnl": float(self.realized_pnl),
            "funding_pnl": float(self.funding_pnl),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Position:
        return cls(
            instrument=instrument_from_state(state["instrument"]),
            quantity=float(state["quantity"]),
            entry_price=float(state["entry_price"]),
            margin=float(state["margin"]),
            leverage=float(state["leverage"]),
            realized_pnl=float(state["realized_pnl"]),
            funding_pnl=float(state["funding_pnl"]),
        )


@dataclass(frozen=True)
class Liquidation:
    """A position closed by the exchange; ``loss`` is the margin forfeited (quote)."""

    timestamp: pd.Timestamp
    symbol: str
    subaccount: str
    quantity: float
    price: float
    realized_pnl: float
    margin_forfeited: float


@dataclass
class Subaccount:
    """An isolated pool of capital: its own cash, positions and PnL."""

    name: str
    quote: str = "USDT"
    cash: float = 0.0
    positions: dict[str, Position] = field(default_factory=dict)
    contributions: float = 0.0
    realized_pnl: float = 0.0
    funding_pnl: float = 0.0
    fees_paid: float = 0.0
    fees_by_currency: dict[str, float] = field(default_factory=dict)
    liquidation_losses: float = 0.0

    # --- capital -------------------------------------------------------------------
    def deposit(self, amount: float) -> None:
        if not (math.isfinite(amount) and amount > 0):
            raise LedgerError(f"{self.name}: deposit must be > 0, got {amount}")
        self.cash += amount
        self.contributions += amount

    def withdraw(self, amount: float) -> None:
        if not (math.isfinite(amount) and amount > 0):
            raise LedgerError(f"{self.name}: withdrawal must be > 0, got {amount}")
        if amount > self.cash:
            raise LedgerError(
                f"{self.name}: cannot withdraw {amount:.2f} {self.quote}, cash is {self.cash:.2f}"
            )
        self.cash -= amount
        self.contributions -= amount

    # --- valuation -----------------------------------------------------------------
    def position(self, symbol: str) -> Position | None:
        return self.positions.get(symbol)

    def quantity(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.quantity if pos else 0.0

    def equity(self, marks: Mapping[str, float]) -> float:
        """Cash plus every position at its mark (quote)."""
        return self.cash + sum(p.value(_mark(marks, s)) for s, p in self.positions.items())

    def unrealized_pnl(self, marks: Mapping[str, float]) -> float:
        return sum(p.unrealized_pnl(_mark(marks, s)) for s, p in self.positions.items())

    def gross_exposure(self, marks: Mapping[str, float]) -> float:
        """Sum of absolute position notionals (quote)."""
        return sum(abs(p.notional(_mark(marks, s))) for s, p in self.positions.items())

    def identity_gap(self, marks: Mapping[str, float]) -> float:
        """Equity from balances minus equity from the PnL accounts; zero up to rounding."""
        from_pnl = (
            self.contributions
            + self.realized_pnl
            + self.unrealized_pnl(marks)
            + self.funding_pnl
            - self.fees_paid
            - self.liquidation_losses
        )
        return self.equity(marks) - from_pnl

    # --- trading -------------------------------------------------------------------
    def apply_fill(self, fill: Fill, instrument: Instrument) -> None:
        """Book a fill: cash, position, fees, realized PnL."""
        symbol = fill.symbol
        if symbol != instrument.symbol:
            raise LedgerError(f"fill for {symbol} booked against {instrument.symbol}")
        currency = fill.fee_currency
        if currency != instrument.quote and currency != instrument.base:
            raise LedgerError(
                f"{symbol}: fee currency {currency} is neither "
                f"{instrument.base} nor {instrument.quote}"
            )
        positions = self.positions
        pos = positions.get(symbol)
        if pos is None:
            pos = Position(instrument=instrument)
        if instrument.is_perpetual:
            self._apply_perp_fill(pos, fill)
        else:
            self._apply_spot_fill(pos, fill)
        fees = self.fees_by_currency
        fees[currency] = fees.get(currency, 0.0) + fill.fee
        if pos.quantity == 0 and pos.margin == 0:
            positions.pop(symbol, None)
        else:
            positions[symbol] = pos

    def _fee_in_quote(self, fill: Fill, instrument: Instrument) -> float:
        return fill.fee if fill.fee_currency == instrument.quote else fill.fee * fill.price

    def _apply_spot_fill(self, pos: Position, fill: Fill) -> None:
        inst = pos.instrument
        fee, price, quantity = fill.fee, fill.price, fill.quantity
        notional = quantity * price  # fill.notional
        in_quote = fill.fee_currency == inst.quote
        fee_quote = fee if in_quote else fee * price
        fee_base = fee if fill.fee_currency == inst.base else 0.0
        cash_fee = fee if in_quote else 0.0
        if fill.side is Side.BUY:
            cost = notional + cash_fee
            cash = self.cash
            if cost > cash * (1 + _DUST) + _DUST:
                raise LedgerError(
                    f"{self.name}: buying {quantity:g} {fill.symbol} costs {cost:.2f} "
                    f"{inst.quote}, cash is {cash:.2f}"
                )
            received = quantity - fee_base
            if received <= 0:
                raise LedgerError(f"{fill.symbol}: base fee {fee_base} exceeds quantity bought")
            new_qty = pos.quantity + received
            pos.entry_price = (pos.quantity * pos.entry_price + received * price) / new_qty
            pos.quantity = new_qty
            self.cash = max(cash - cost, 0.0) if cost > cash else cash - cost
        else:
            needed = quantity + fee_base
            if needed > pos.quantity * (1 + _DUST) + _DUST:
                raise LedgerError(
                    f"{self.name}: cannot sell {needed:g} {fill.symbol}, holding {pos.quantity:g}"
                )
            # A fee paid in the base asset leaves the holding like the coins sold: it is
            # disposed of at the fill price (realizing its gain over entry) and counted
            # as a fee at that price, so the equity identity stays exact.
            disposed = min(needed, pos.quantity)
            pnl = disposed * (price - pos.entry_price)
            pos.realized_pnl += pnl
            self.realized_pnl += pnl
            left = pos.quantity - disposed
            if left <= needed * _DUST:
                left = 0.0
            pos.quantity = left
            if left == 0.0:
                pos.entry_price = 0.0
            self.cash += notional - cash_fee
        self.fees_paid += fee_quote

    def _apply_perp_fill(self, pos: Position, fill: Fill) -> None:
        """Book a perpetual fill atomically: the whole fill (fee, the closing part, the
        opening part of a flip, the bracket's leverage cap) is checked before anything is
        booked, so a rejected fill raises LedgerError and changes nothing.

        Isolated margin: a close returns its share of the margin plus its PnL, and a loss
        past that margin (a close beyond bankruptcy, which the exchange would have
        liquidated) stops at it, so cash never goes below zero from a position.
        """
        inst = pos.instrument
        if fill.fee_currency != inst.quote:
            raise LedgerError(f"{fill.symbol}: perpetual fees are charged in {inst.quote}")
        price, delta = fill.price, fill.side.sign * fill.quantity
        qty, entry, margin, leverage = pos.quantity, pos.entry_price, pos.margin, pos.leverage
        cash_change, pnl, opening = -fill.fee, 0.0, abs(delta)
        if qty != 0 and (qty > 0) != (delta > 0):
            side = 1.0 if qty > 0 else -1.0
            closing = min(abs(delta), abs(qty))
            flat = abs(qty) - closing <= closing * _DUST
            released = margin if flat else margin * closing / abs(qty)
            pnl = max(side * closing * (price - entry), -max(released, 0.0))
            cash_change += released + pnl
            if flat:
                qty, entry, margin = 0.0, 0.0, 0.0
            else:
                qty, margin = qty - side * closing, margin - released
            opening = abs(delta) - closing
            if opening <= abs(delta) * _DUST:
                opening = 0.0
        if opening:
            new_abs = abs(qty) + opening
            problem = inst.leverage_problem(new_abs * price, fill.leverage)
            if problem:
                raise LedgerError(f"{self.name}: {problem}")
            new_margin = opening * price / fill.leverage
            available = self.cash + cash_change
            if new_margin > available * (1 + _DUST) + _DUST:
                after = "the fee" if opening == abs(delta) else "the close and the fee"
                raise LedgerError(
                    f"{self.name}: opening {opening:g} {pos.symbol} at {fill.leverage:g}x needs "
                    f"{new_margin:.2f} {inst.quote} of margin, cash is {available:.2f} "
                    f"after {after}"
                )
            entry = (abs(qty) * entry + opening * price) / new_abs
            qty = math.copysign(new_abs, delta)
            margin += new_margin
            leverage = fill.leverage
            cash_change -= new_margin
        new_cash = self.cash + cash_change
        if new_cash < -(abs(self.cash) + fill.notional) * _DUST - _DUST:
            raise LedgerError(
                f"{self.name}: {fill.symbol} fee {fill.fee:.2f} {inst.quote} exceeds the cash "
                f"{self.cash:.2f} plus what the close returns"
            )
        # Everything checked: book it all at once.
        pos.quantity, pos.entry_price, pos.margin, pos.leverage = qty, entry, margin, leverage
        pos.realized_pnl += pnl
        self.realized_pnl += pnl
        self.fees_paid += fill.fee
        self.cash = max(new_cash, 0.0)  # a negative within the tolerance is rounding

    def apply_funding(self, symbol: str, rate: float, mark: float) -> float:
        """Book one funding payment on a perpetual; returns the amount received (quote).

        Longs pay shorts when ``rate`` (a fraction per funding interval) > 0; the payment
        is ``quantity * mark * rate`` at the funding time's ``mark``. In isolated mode it
        moves the position's margin, and a payment never takes more than that margin: the
        position is then liquidated (the broker checks right after), and cash is never
        touched.
        """
        pos = self.positions.get(symbol)
        if pos is None or not pos.instrument.is_perpetual or pos.quantity == 0:
            return 0.0
        if not (math.isfinite(rate) and math.isfinite(mark) and mark > 0):
            raise LedgerError(f"{symbol}: funding needs a finite rate and a positive mark")
        amount = max(-pos.quantity * mark * rate, -max(pos.margin, 0.0))
        pos.margin += amount
        pos.funding_pnl += amount
        self.funding_pnl += amount
        return amount

    def liquidate(self, symbol: str, price: float, timestamp: pd.Timestamp) -> Liquidation:
        """Close an isolated perpetual at ``price``; its remaining margin is forfeited.

        If the price gapped beyond bankruptcy, the loss stops at the margin (the
        exchange's insurance fund takes the rest), as on Binance. Cash is not touched.
        """
        pos = self.positions.get(symbol)
        if pos is None or not pos.instrument.is_perpetual or pos.quantity == 0:
            raise LedgerError(f"{self.name}: no perpetual position in {symbol} to liquidate")
        margin = max(pos.margin, 0.0)
        pnl = max(pos.unrealized_pnl(price), -margin)
        remaining = pos.margin + pnl
        pos.realized_pnl += pnl
        self.realized_pnl += pnl
        self.liquidation_losses += remaining
        event = Liquidation(timestamp, symbol, self.name, pos.quantity, price, pnl, remaining)
        del self.positions[symbol]
        return event

    # --- saved state -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Cash, PnL accounts, fees and every position (in their order), JSON-ready."""
        return {
            "name": self.name,
            "quote": self.quote,
            "cash": float(self.cash),
            "contributions": float(self.contributions),
            "realized_pnl": float(self.realized_pnl),
            "funding_pnl": float(self.funding_pnl),
            "fees_paid": float(self.fees_paid),
            "fees_by_currency": {k: float(v) for k, v in self.fees_by_currency.items()},
            "liquidation_losses": float(self.liquidation_losses),
            # A list, not a mapping: the order of positions is the order equity sums them.
            "positions": [p.state() for p in self.positions.values()],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Subaccount:
        positions = [Position.from_state(p) for p in state["positions"]]
        return cls(
            name=str(state["name"]),
            quote=str(state["quote"]),
            cash=float(state["cash"]),
            positions={p.symbol: p for p in positions},
            contributions=float(state["contributions"]),
            realized_pnl=float(state["realized_pnl"]),
            funding_pnl=float(state["funding_pnl"]),
            fees_paid=float(state["fees_paid"]),
            fees_by_currency={str(k): float(v) for k, v in state["fees_by_currency"].items()},
            liquidation_losses=float(state["liquidation_losses"]),
        )


def _mark(marks: Mapping[str, float], symbol: str) -> float:
    try:
        return marks[symbol]
    except KeyError:
        raise LedgerError(f"no mark price for {symbol}") from None


@dataclass
class Account:
    """Isolated subaccounts under one owner; account equity is their sum."""

    subaccounts: dict[str, Subaccount] = field(default_factory=dict)

    @classmethod
    def with_cash(cls, cash: float, name: str = "main", quote: str = "USDT") -> Account:
        sub = Subaccount(name=name, quote=quote)
        sub.deposit(cash)
        return cls({name: sub})

    def subaccount(self, name: str) -> Subaccount:
        try:
            return self.subaccounts[name]
        except KeyError:
            raise LedgerError(
                f"no subaccount {name!r}; have {', '.join(self.subaccounts) or 'none'}"
            ) from None

    def add_subaccount(self, name: str, cash: float = 0.0, quote: str = "USDT") -> Subaccount:
        if name in self.subaccounts:
            raise LedgerError(f"subaccount {name!r} exists")
        sub = Subaccount(name=name, quote=quote)
        if cash:
            sub.deposit(cash)
        self.subaccounts[name] = sub
        return sub

    def transfer(self, source: str, target: str, amount: float) -> None:
        """Move cash between subaccounts (counts as a withdrawal and a deposit)."""
        self.subaccount(source).withdraw(amount)
        self.subaccount(target).deposit(amount)

    def equity(self, marks: Mapping[str, float]) -> float:
        return sum(s.equity(marks) for s in self.subaccounts.values())

    # --- saved state -----------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every subaccount's ledger (``Subaccount.state``), in order, JSON-ready."""
        return {"subaccounts": [s.state() for s in self.subaccounts.values()]}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Replace the ledger with a saved one, in place (brokers holding this account
        see the restored subaccounts)."""
        subs = [Subaccount.from_state(s) for s in state["subaccounts"]]
        self.subaccounts.clear()
        self.subaccounts.update((s.name, s) for s in subs)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Account:
        account = cls()
        account.restore(state)
        return account


def instrument_state(instrument: Instrument) -> dict[str, Any]:
    """An instrument's exchange rules as plain JSON (margin tiers as a list)."""
    out = dataclasses.asdict(instrument)
    out["kind"] = str(instrument.kind)
    out["margin_tiers"] = [dataclasses.asdict(t) for t in instrument.margin_tiers]
    return out


def instrument_from_state(state: Mapping[str, Any]) -> Instrument:
    fields = dict(state)
    fields["kind"] = InstrumentKind(fields["kind"])
    fields["margin_tiers"] = tuple(MarginTier(**t) for t in fields.get("margin_tiers", ()))
    return Instrument(**fields)
