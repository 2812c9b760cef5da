"""Hard limits: the person's configured caps, enforced on every decision and order plan.

``Limits`` holds the caps (read from ``limits:`` in the YAML configuration). ``LimitGuard``
applies them at the guard step, after every model and before any order:

* ``check(decision, obs)`` works on target weights (fractions of equity). A target that is
  NaN, infinite, absurd (above ``ABSURD_WEIGHT`` in size) or negative on a spot column
  rejects the whole decision: the portfolio holds and the record says why. Perpetual
  columns (``perpetual``: by default the ``-PERP`` symbols) take signed targets: a
  negative one is a short; every cap reads its size (asset and cluster weights sum
  |w|, gross is sum |w|, net |sum w|), and ``min_cash`` caps the spot weights only (a
  short's margin is the ledger's to refuse when it is above the cash). Otherwise the targets are only ever
  *reduced*, in this order: assets not listed -> 0, symbols not allowed -> 0,
  ``max_asset_weight`` (clip), ``max_cluster_weight`` (members scaled pro rata),
  ``max_gross_leverage`` and ``max_net_exposure`` (all scaled), ``min_cash`` (all scaled so
  a spot book keeps that cash; rule ``spot_cash`` when min_cash is 0 and the targets would
  borrow). Every step only lowers weights, so a later step never undoes an earlier one,
  and a second pass changes nothing (idempotent).
* ``check_orders(orders, obs, prices, traded_today)`` works on the order plan:
  venue and symbol permissions (a symbol not allowed can only be sold down),
  ``max_order_notional`` (an order above it is scaled down, not split: the cap guards
  against fat fingers, and splitting would send the same notional), ``max_daily_turnover``
  (the day's remaining budget shared pro rata), and last a post-trade check: if sells were
  cut or skipped, the buys are scaled so that, after the trades, no weight measure (asset,
  cluster, gross, net, invested share) exceeds the larger of its cap and its value before.
* ``check_fill(fill, instrument, sub, marks, ...)`` asks the same again at the moment of
  each fill, at the price it fills at and with the account as it is then: the broker
  books at most the quantity it returns (see ``trimtab.execution.broker.FillGuard``).

Each change is a ``GuardAction`` whose ``rule`` is the limit key that acted, with the value
before and after.

Limits never change at run time except through ``LimitGuard.override``: an explicit human
act that swaps in a new, validated ``Limits`` object and appends a ``LimitOverride`` to
the guard's audit trail. Convention: only the CLI/API layer calls ``override`` (never a
policy, model or strategy, which only ever see ``Observation``s and return ``Decision``s),
and that layer journals every ``LimitOverride`` (``on_override`` is the hook for it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trimtab.domain import Fill, Instrument, LedgerError, Order, Side, Subaccount
from trimtab.domain.decisions import Decision, GuardAction, Observation, Reason
from trimtab.domain.quotes import symbol_key as normalize_symbol
from trimtab.execution.simulated import SpotBook

# A target weight above this (1e6 x equity) is a broken model, not a position to clip.
ABSURD_WEIGHT = 1e6

# Relative slack before a cap counts as breached: float noise from scaling to a cap
# exactly must not trigger a second action (keeps check() idempotent).
_TOL = 1e-9
# At a fill, what a booking's float rounding may add to a measure (a spot book spending
# all its cash lands at 1.0000000000000002 x equity): relative, and below _TOL so that a
# fill allowed here never reads as a breach once booked.
_FILL_TOL = 1e-10


class Limits(BaseModel):
    """Hard caps from the person's configuration. Immutable.

    Weights and exposures are fractions of account equity (1.0 = 1x equity); notionals
    are in quote currency (USDT). Defaults suit a spot, long-only, unlevered book and cap
    nothing else, except the 50% drawdown kill level.

    * ``max_gross_leverage`` (1.0): sum of |weights|.
    * ``max_net_exposure`` (1.0): |sum of weights|.
    * ``max_asset_weight`` (1.0): any one asset's weight.
    * ``max_cluster_weight`` (1.0): sum of the weights of one correlation cluster; an asset
      in no cluster is a cluster of its own.
    * ``max_order_notional`` (None = no cap): one order's notional, USDT.
    * ``max_daily_turnover`` (None = no cap): one-way turnover per UTC day, the sum of
      |order notional| over equity (2.0 = trade twice the equity).
    * ``min_cash`` (0.0): fraction of equity a spot book keeps in cash.
    * ``allowed_symbols`` (None = all): symbols that may be bought (``BTC/USDT`` and
      ``BTCUSDT`` are the same); others can only be sold down.
    * ``allowed_venues`` (None = all): exchanges the account may trade on.
    * ``max_drawdown`` (0.5): drawdown from the equity peak at which the circuit breaker
      halts trading (the kill level), in (0, 1).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_gross_leverage: float = Field(1.0, gt=0, le=125)
    max_net_exposure: float = Field(1.0, gt=0, le=125)
    max_asset_weight: float = Field(1.0, gt=0, le=125)
    max_cluster_weight: float = Field(1.0, gt=0, le=125)
    max_order_notional: float | None = Field(None, gt=0)
    max_daily_turnover: float | None = Field(None, gt=0)
    min_cash: float = Field(0.0, ge=0, lt=1)
    allowed_symbols: tuple[str, ...] | None = None
    allowed_venues: tuple[str, ...] | None = None
    max_drawdown: float = Field(0.5, gt=0, lt=1)

    @field_validator("allowed_symbols", "allowed_venues")
    @classmethod
    def _names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        for name in value:
            if not name.strip():
                raise ValueError("names must not be empty")
        return tuple(dict.fromkeys(n.strip() for n in value))

    def symbol_allowed(self, symbol: str) -> bool:
        if self.allowed_symbols is None:
            return True
        return normalize_symbol(symbol) in {normalize_symbol(s) for s in self.allowed_symbols}

    def venue_allowed(self, venue: str | None) -> bool:
        """True when no venue list is set, or ``venue`` is on it (case-insensitive)."""
        if self.allowed_venues is None or venue is None:
            return True
        return venue.strip().lower() in {v.lower() for v in self.allowed_venues}


def _only_ledger_bounds(lim: Limits) -> bool:
    """True when the limits cap nothing a spot book's own cash does not already bound:
    every weight cap at 1x or more, and no min cash, order, turnover or symbol limit."""
    return (
        min(
            lim.max_gross_leverage,
            lim.max_net_exposure,
            lim.max_asset_weight,
            lim.max_cluster_weight,
        )
        >= 1.0
        and lim.min_cash == 0
        and lim.max_order_notional is None
        and lim.max_daily_turnover is None
        and lim.allowed_symbols is None
    )


@dataclass(frozen=True)
class LimitOverride:
    """One recorded human change of a limit: who, why, when, from what to what."""

    key: str
    old: Any
    new: Any
    by: str
    reason: str
    at: pd.Timestamp

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "old": list(self.old) if isinstance(self.old, tuple) else self.old,
            "new": list(self.new) if isinstance(self.new, tuple) else self.new,
            "by": self.by,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }


class LimitGuard:
    """Applies ``Limits`` to decisions (target weights) and order plans.

    ``clusters`` maps a symbol to its correlation cluster's name (symbols not in it are
    clusters of one). ``venue`` is the exchange this guard's account trades on, checked
    against ``allowed_venues``. ``spot`` says the book's spot weights can never exceed
    ``1 - min_cash`` (they are paid for in cash). ``perpetual`` tells a perpetual symbol
    (which may be short) from a spot one (long only); by default a ``-PERP`` symbol
    (``BTCUSDT-PERP``), the name ``prepare_carry_market`` and the readers give them.
    ``check_orders`` and ``check_fill`` ask their ``instrument`` instead when they get one.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        clusters: Mapping[str, str] | None = None,
        *,
        venue: str | None = None,
        spot: bool = True,
        on_override: Callable[[LimitOverride], None] | None = None,
        perpetual: Callable[[str], bool] | None = None,
    ) -> None:
        self._limits = limits if limits is not None else Limits()
        self._clusters = {normalize_symbol(s): c for s, c in (clusters or {}).items()}
        self.venue = venue
        self.spot = spot
        self._on_override = on_override
        self._overrides: list[LimitOverride] = []
        # Cluster index arrays per symbol tuple, built once per universe.
        self._groups_cache: dict[tuple[str, ...], list[tuple[str, np.ndarray]]] = {}
        self._symbol_codes: dict[str, int] = {}
        self._name_codes: dict[str, int] = {}
        self._codes_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._last_codes: tuple[tuple[str, ...], np.ndarray] | None = None
        self._group_index: dict[tuple[str, ...], np.ndarray | None] = {}
        self._bounds_for: Limits | None = None  # the limits _ledger_bounds was asked of
        self._ledger_bounds = False
        self._is_perpetual = perpetual or is_perp_symbol
        self._perp_masks: dict[tuple[str, ...], np.ndarray] = {}
        self._column_maps: dict[tuple[str, ...], dict[str, int]] = {}

    @property
    def limits(self) -> Limits:
        """The limits in force (read-only; change them only with ``override``)."""
        return self._limits

    @property
    def overrides(self) -> tuple[LimitOverride, ...]:
        """Every override so far, oldest first: the audit trail."""
        return tuple(self._overrides)

    def override(
        self, key: str, value: Any, *, by: str, reason: str, at: pd.Timestamp
    ) -> LimitOverride:
        """A human changes one limit. Validated like the configuration, and recorded.

        Only the CLI/API layer may call this, and it journals the returned record.
        """
        if key not in Limits.model_fields:
            raise ValueError(f"unknown limit {key!r}; limits are {', '.join(Limits.model_fields)}")
        if not by.strip():
            raise ValueError("an override needs the name of the person making it (by=)")
        if not reason.strip():
            raise ValueError("an override needs a reason")
        at = pd.Timestamp(at)
        at = at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")
        old = getattr(self._limits, key)
        new_limits = Limits.model_validate({**self._limits.model_dump(), key: value})
        record = LimitOverride(key, old, getattr(new_limits, key), by.strip(), reason.strip(), at)
        self._limits = new_limits
        self._overrides.append(record)
        if self._on_override is not None:
            self._on_override(record)
        return record

    # --- target weights ------------------------------------------------------------------
    def perpetual_mask(self, symbols: tuple[str, ...]) -> np.ndarray:
        """Which of ``symbols`` are perpetuals (``perpetual`` of the constructor)."""
        mask = self._perp_masks.get(symbols)
        if mask is None:
            mask = np.array([bool(self._is_perpetual(s)) for s in symbols], dtype=bool)
            if len(self._perp_masks) >= 64:
                self._perp_masks.clear()
            self._perp_masks[symbols] = mask
        return mask

    def check(
        self, decision: Decision, obs: Observation, *, perpetual: np.ndarray | None = None
    ) -> Decision:
        """The decision with its targets inside every weight limit, each change recorded.

        ``perpetual`` (bool per symbol): the columns that may be short; by default
        ``perpetual_mask(obs.symbols)``."""
        if decision.targets is None:
            return decision
        lim = self._limits
        symbols = obs.symbols
        if not lim.venue_allowed(self.venue):
            return _reject(decision, "allowed_venues", f"venue {self.venue!r} is not allowed")
        targets = np.asarray(decision.targets, dtype=float)
        if targets.shape != (len(symbols),):
            return _reject(decision, "shape", f"{targets.size} targets for {len(symbols)} symbols")
        # min and max are NaN when any target is: a book passing this is fine throughout.
        if not (targets.size and 0 <= targets.min() and targets.max() <= ABSURD_WEIGHT):
            bad = ~np.isfinite(targets)
            if bad.any():
                return _reject(
                    decision, "non_finite", "target is NaN or infinite", _names(symbols, bad)
                )
            perp = self.perpetual_mask(symbols) if perpetual is None else np.asarray(perpetual)
            negative = (targets < 0) & ~perp
            if negative.any():
                return _reject(
                    decision,
                    "negative",
                    "negative target on a long-only account",
                    _names(symbols, negative),
                )
            absurd = np.abs(targets) > ABSURD_WEIGHT
            if absurd.any():
                return _reject(
                    decision,
                    "absurd",
                    f"target above {ABSURD_WEIGHT:g} x equity",
                    _names(symbols, absurd),
                )
        actions: list[GuardAction] = []
        targets = targets.copy()

        # Targets are >= 0 except on perpetuals, so != 0 and |w| are > 0 and w on spot.
        unlisted = (targets != 0) & np.isnan(obs.close)
        if unlisted.any():
            actions.append(
                GuardAction(
                    "not_listed",
                    "target on an asset that is not listed set to 0",
                    _names(symbols, unlisted),
                    before=float(np.abs(targets[unlisted]).sum()),
                    after=0.0,
                )
            )
            targets[unlisted] = 0.0

        if lim.allowed_symbols is not None:
            banned = (targets != 0) & ~np.array([lim.symbol_allowed(s) for s in symbols])
            if banned.any():
                actions.append(
                    GuardAction(
                        "allowed_symbols",
                        "target on a symbol not in allowed_symbols set to 0",
                        _names(symbols, banned),
                        before=float(np.abs(targets[banned]).sum()),
                        after=0.0,
                    )
                )
                targets[banned] = 0.0

        over = np.abs(targets) > lim.max_asset_weight * (1 + _TOL)
        if over.any():
            before = float(np.abs(targets[over]).max())
            targets[over] = np.copysign(lim.max_asset_weight, targets[over])
            actions.append(
                GuardAction(
                    "max_asset_weight",
                    f"asset weight clipped from {before:.2%} to {lim.max_asset_weight:.2%}",
                    _names(symbols, over),
                    before=before,
                    after=lim.max_asset_weight,
                )
            )

        cap = lim.max_cluster_weight
        groups = self._groups(symbols)
        totals = self._cluster_sums(symbols, np.abs(targets))
        for g in (totals > cap * (1 + _TOL)).nonzero()[0]:
            name, members = groups[g]
            total = float(np.abs(targets[members]).sum())
            if total > cap * (1 + _TOL):
                targets[members] *= cap / total
                held = members[targets[members] != 0]
                actions.append(
                    GuardAction(
                        "max_cluster_weight",
                        f"cluster {name!r} scaled from {total:.2%} to {cap:.2%}",
                        tuple(symbols[j] for j in held),
                        before=total,
                        after=cap,
                    )
                )

        for rule, cap, measure, what in (
            ("max_gross_leverage", lim.max_gross_leverage, _gross, "gross exposure"),
            ("max_net_exposure", lim.max_net_exposure, _net, "net exposure"),
        ):
            value = measure(targets)
            if value > cap * (1 + _TOL):
                targets *= cap / value
                actions.append(
                    GuardAction(
                        rule, f"{what} scaled from {value:.2%} to {cap:.2%}", (), value, cap
                    )
                )

        if self.spot:
            # Spot positions are paid for in cash: whatever is not invested is the buffer.
            # A perpetual is not bought with cash (its margin is the ledger's to check).
            cap = 1.0 - lim.min_cash
            perp = self.perpetual_mask(symbols) if perpetual is None else np.asarray(perpetual)
            gross = _gross(targets[~perp]) if perp.any() else _gross(targets)
            if gross > cap * (1 + _TOL):
                targets *= cap / gross
                if lim.min_cash > 0:
                    rule, why = "min_cash", f"to keep {lim.min_cash:.2%} in cash"
                else:
                    rule, why = "spot_cash", "a spot book cannot invest more than its equity"
                actions.append(
                    GuardAction(
                        rule,
                        f"invested weight scaled from {gross:.2%} to {cap:.2%}: {why}",
                        (),
                        gross,
                        cap,
                    )
                )

        if not actions:
            return decision
        return replace(decision, targets=targets, guard=decision.guard + tuple(actions))

    def _cluster_code(self, symbol: str) -> int:
        """A number per cluster (an asset in none is its own), for array comparisons."""
        code = self._symbol_codes.get(symbol)
        if code is None:
            key = normalize_symbol(symbol)
            name = self._clusters.get(key, key)
            code = self._name_codes.setdefault(name, len(self._name_codes))
            self._symbol_codes[symbol] = code
        return code

    def _cluster_codes(self, symbols: tuple[str, ...]) -> np.ndarray:
        last = self._last_codes
        if last is not None and last[0] is symbols:
            return last[1]
        codes = self._codes_cache.get(symbols)
        if codes is None:
            codes = np.array([self._cluster_code(s) for s in symbols], dtype=np.int64)
            if len(self._codes_cache) >= 64:
                self._codes_cache.clear()
            self._codes_cache[symbols] = codes
        self._last_codes = (symbols, codes)
        return codes

    def _groups(self, symbols: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
        groups = self._groups_cache.get(symbols)
        if groups is None:
            by_name: dict[str, list[int]] = {}
            for j, s in enumerate(symbols):
                name = self._clusters.get(normalize_symbol(s), s)
                by_name.setdefault(name, []).append(j)
            groups = [(n, np.asarray(ix)) for n, ix in by_name.items()]
            self._groups_cache[symbols] = groups
            # Group number of each symbol, for sums in one pass. Only when every group is
            # under 8 members: numpy then sums each group left to right, as bincount does,
            # so the two agree to the bit (larger groups are summed pairwise).
            small = all(len(ix) < 8 for _, ix in groups)
            index = np.empty(len(symbols), dtype=np.int64)
            for g, (_, ix) in enumerate(groups):
                index[ix] = g
            self._group_index[symbols] = index if small else None
        return groups

    def _columns(self, symbols: tuple[str, ...]) -> dict[str, int]:
        """Each symbol's column in ``symbols``, made once per tuple of symbols (callers
        only read it)."""
        column = self._column_maps.get(symbols)
        if column is None:
            if len(self._column_maps) >= 64:
                self._column_maps.clear()
            column = self._column_maps[symbols] = {s: j for j, s in enumerate(symbols)}
        return column

    def _cluster_sums(self, symbols: tuple[str, ...], weights: np.ndarray) -> np.ndarray:
        """Sum of ``weights`` in each group of ``_groups(symbols)`` (the order of that
        list), each as ``weights[members].sum()`` gives it."""
        groups = self._groups(symbols)
        index = self._group_index.get(symbols)
        if index is None:
            return np.array([weights[ix].sum() for _, ix in groups])
        return np.bincount(index, weights=weights, minlength=len(groups))

    # --- order plans -----------------------------------------------------------------------
    def check_orders(
        self,
        orders: Sequence[Order],
        obs: Observation,
        prices: np.ndarray,
        traded_today: float,
        *,
        instrument: Callable[[str], Instrument] | None = None,
    ) -> tuple[list[Order], list[GuardAction]]:
        """The orders that may go out, scaled to the order-level limits, and what changed.

        ``prices`` (aligned with ``obs.symbols``) value orders given in base quantity;
        orders with ``quote_quantity`` are worth that much quote. ``traded_today`` is the
        notional (quote, one-way) already traded this UTC day (``DailyTurnover`` keeps it).
        With ``instrument``, scaled base quantities are rounded down to the lot size and
        the perpetuals are told from spot by it (else by ``perpetual_mask``). A
        scaled order keeps its id and notes the scaling in its reason; an order scaled to
        nothing is dropped. Every order must have a finite price, quote buys included.
        """
        lim = self._limits
        actions: list[GuardAction] = []
        if not orders:
            return [], actions
        if not lim.venue_allowed(self.venue):
            actions.append(
                GuardAction(
                    "allowed_venues",
                    f"{len(orders)} orders blocked: venue {self.venue!r} is not allowed",
                    tuple(dict.fromkeys(o.symbol for o in orders)),
                )
            )
            return [], actions
        column = self._columns(obs.symbols)
        held = obs.portfolio.quantities
        # Python floats (the same doubles): a NumPy scalar per order costs more.
        price_list = np.asarray(prices, dtype=float).tolist()
        every_symbol = lim.allowed_symbols is None
        kept: list[Order] = []
        values: list[float] = []
        cols: list[int] = []
        for order in orders:
            j = column.get(order.symbol)
            if j is None:
                actions.append(
                    GuardAction(
                        "unknown_symbol",
                        "order blocked: symbol not in the universe",
                        (order.symbol,),
                    )
                )
                continue
            price = price_list[j]
            if not (math.isfinite(price) and price > 0):
                # No price: the order cannot be valued against any limit (nor is the
                # asset trading), so it does not go out.
                actions.append(
                    GuardAction("no_price", "order blocked: no price to value it", (order.symbol,))
                )
                continue
            if order.quote_quantity is not None:
                value = float(order.quote_quantity)
            else:
                value = float(order.quantity) * price
            if not math.isfinite(value):
                # 1e308 units at any real price overflow: no limit can be checked against
                # an infinite notional, so the order does not go out (fail closed).
                actions.append(
                    GuardAction(
                        "non_finite",
                        "order blocked: its notional is not a finite number",
                        (order.symbol,),
                    )
                )
                continue
            if (
                not every_symbol
                and not lim.symbol_allowed(order.symbol)
                and not _reduces(order, float(held[j]))
            ):
                actions.append(
                    GuardAction(
                        "allowed_symbols",
                        "order blocked: symbol not in allowed_symbols (only reductions pass)",
                        (order.symbol,),
                        before=value,
                        after=0.0,
                    )
                )
                continue
            kept.append(order)
            values.append(value)
            cols.append(j)

        scale = np.ones(len(kept))
        if lim.max_order_notional is not None:
            cap = lim.max_order_notional
            for k, order in enumerate(kept):
                if values[k] > cap * (1 + _TOL):
                    scale[k] = cap / values[k]
                    actions.append(
                        GuardAction(
                            "max_order_notional",
                            f"order notional scaled from {values[k]:,.2f} to {cap:,.2f}",
                            (order.symbol,),
                            before=values[k],
                            after=cap,
                        )
                    )

        if lim.max_daily_turnover is not None and kept:
            equity = float(obs.portfolio.equity)
            traded = float(traded_today)
            measurable = math.isfinite(equity) and equity > 0 and math.isfinite(traded)
            budget_total = lim.max_daily_turnover * equity if measurable else 0.0
            budget = max(budget_total - max(traded, 0.0), 0.0)
            total = float(np.dot(values, scale))
            # Written so that a NaN or an overflow blocks (factor 0) instead of passing.
            if not (total <= budget * (1 + _TOL)):
                factor = budget / total if math.isfinite(total) and total > 0 else 0.0
                scale *= factor
                actions.append(
                    GuardAction(
                        "max_daily_turnover",
                        f"orders scaled by {factor:.4f}: the day's turnover budget "
                        f"({lim.max_daily_turnover:.2%} of equity) has {budget:,.2f} left",
                        tuple(dict.fromkeys(o.symbol for o in kept)),
                        before=(traded + total) / equity if measurable else None,
                        after=(traded + total * factor) / equity if measurable else None,
                    )
                )

        if kept:
            perp = self._plan_perps(obs, cols, instrument)
            if perp is None:
                self._fit_buys(kept, values, cols, scale, obs, prices, actions)
            else:
                self._fit_signed(kept, values, cols, scale, obs, prices, actions, perp)

        out: list[Order] = []
        for k, (order, factor) in enumerate(zip(kept, scale.tolist(), strict=True)):
            if factor == 1.0:
                out.append(order)
                continue
            scaled = _scale_order(order, factor, instrument)
            if scaled is None:
                actions.append(
                    GuardAction(
                        "order_dropped",
                        "order scaled to nothing by the limits above and dropped",
                        (order.symbol,),
                        before=values[k],
                        after=0.0,
                    )
                )
            else:
                out.append(scaled)
        return out, actions

    def _fit_buys(
        self,
        kept: list[Order],
        values: list[float],
        cols: list[int],
        scale: np.ndarray,
        obs: Observation,
        prices: np.ndarray,
        actions: list[GuardAction],
    ) -> None:
        """Scale the buys (in place) so the trades create or worsen no weight breach.

        Targets that passed ``check`` already fit, but sells cut by the order limits (or
        skipped by the planner) would leave the buys they were to pay for above the gross,
        asset, cluster or cash limits. Each measure after the trades (filled at
        ``prices``, no costs) must stay under the larger of its cap and its value before.
        On a spot book a sell counts only up to the holding: selling more than is held
        raises no cash. Fails closed: if the book cannot be valued (a NaN or infinite
        cash, quantity or equity, or equity <= 0), every buy is blocked.
        """
        lim = self._limits
        n = len(obs.symbols)
        is_buy = np.array([o.side is Side.BUY for o in kept]) & (scale > 0)
        if not is_buy.any():
            return
        px = np.where(np.isfinite(prices) & (prices > 0), prices, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            pre = obs.portfolio.quantities * px
            cash = float(obs.portfolio.cash)
            equity = cash + float(pre.sum())
        if not (np.all(np.isfinite(pre)) and math.isfinite(equity) and equity > 0):
            scale[is_buy] = 0.0
            actions.append(
                GuardAction(
                    "non_finite",
                    f"buys blocked: the book cannot be valued (cash {cash!r}, equity {equity!r})",
                    tuple(dict.fromkeys(o.symbol for o, b in zip(kept, is_buy, strict=True) if b)),
                )
            )
            return
        signed = np.array(
            [v if o.side is Side.BUY else -v for o, v in zip(kept, values, strict=True)]
        )
        amounts = signed * scale
        sells = np.bincount(cols, weights=np.where(is_buy, 0.0, amounts), minlength=n)
        buys = np.bincount(cols, weights=np.where(is_buy, amounts, 0.0), minlength=n)
        if self.spot:
            # A sale beyond the holding would fund phantom buys: count it up to the holding.
            sells = np.maximum(sells, -np.maximum(pre, 0.0))
        w0 = pre / equity
        symbols = obs.symbols
        base = pre + sells  # the weights after the trades are (base + f * buys) / equity

        def gross(w: np.ndarray) -> Any:
            return np.abs(w).sum()

        def net(w: np.ndarray) -> Any:
            return abs(w.sum())

        def invested(w: np.ndarray) -> Any:
            # Cash after the trades is 1 - invested weight: keeping min_cash caps it.
            return 1.0 - (cash - (w * equity - pre).sum()) / equity

        # (rule, measure of the weights after the trades, its cap: the larger of the limit
        # and the measure before the trades, per asset or cluster for the first two).
        checks: list[tuple[str, Callable[[np.ndarray], Any], Any]] = [
            ("max_asset_weight", _same, np.maximum(lim.max_asset_weight, w0)),
            (
                "max_cluster_weight",
                lambda w: self._cluster_sums(symbols, w),
                np.maximum(lim.max_cluster_weight, self._cluster_sums(symbols, w0)),
            ),
            ("max_gross_leverage", gross, float(np.maximum(lim.max_gross_leverage, gross(w0)))),
            ("max_net_exposure", net, float(np.maximum(lim.max_net_exposure, net(w0)))),
        ]
        if self.spot:
            rule = "min_cash" if lim.min_cash > 0 else "spot_cash"
            checks.append((rule, invested, float(np.maximum(1.0 - lim.min_cash, invested(w0)))))

        def fits(value: Any, cap: Any) -> bool:
            # ``<=`` so that a NaN measure counts as a breach (fail closed).
            ok = value <= cap
            return bool(ok.all()) if isinstance(ok, np.ndarray) else bool(ok)

        w1 = (base + buys) / equity  # f = 1
        at_one = [(rule, measure, cap, measure(w1)) for rule, measure, cap in checks]
        broken = [rule for rule, _, cap, value in at_one if not fits(value, cap * (1 + _TOL))]
        if not broken:
            return
        # Every measure grows with the buys on a long book: bisect for the largest factor
        # that meets the caps exactly (no slack), so float noise downstream stays inside.
        # False on a NaN or an infinity.
        monotone = bool(
            (base >= 0).all()
            and (buys >= 0).all()
            and np.isfinite(base).all()
            and np.isfinite(buys).all()
        )

        def fit(f: float) -> bool:
            w = (base + f * buys) / equity
            return all(fits(measure(w), cap) for _, measure, cap in checks)

        # ``fit`` is known to hold for f <= known_fit and to fail for f >= known_break.
        known_fit, known_break = -math.inf, math.inf
        if monotone:
            # Weights >= 0 that only grow with f, in float arithmetic too (each operation
            # rounds monotonically), so ``fit`` holds up to some f and fails beyond: a
            # measure within its cap at f = 1 is within it at every f < 1 (the search asks
            # only the measures that break at f = 1), and one answer settles every f on
            # its side. Two questions either side of the linear estimate of the boundary
            # settle most of the search's sixty: it asks only inside that bracket.
            checks = [(rule, m, cap) for rule, m, cap, value in at_one if not fits(value, cap)]
            estimate = self._boundary_estimate(checks, base, buys, pre, cash, equity, symbols)
            if estimate is not None:
                for f in (estimate * (1 - 1e-11), estimate * (1 + 1e-11)):
                    if fit(f):
                        known_fit = max(known_fit, f)
                    else:
                        known_break = min(known_break, f)
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if mid <= known_fit:
                ok = True
            elif mid >= known_break:
                ok = False
            else:
                ok = fit(mid)
                if monotone:
                    if ok:
                        known_fit = mid
                    else:
                        known_break = mid
            if ok:
                lo = mid
            else:
                hi = mid
        factor = lo
        scale[is_buy] *= factor
        actions.append(
            GuardAction(
                broken[0],
                f"buys scaled by {factor:.4f}: after the trades {', '.join(dict.fromkeys(broken))} "
                "would exceed the limit (sells were cut or skipped)",
                tuple(dict.fromkeys(o.symbol for o, b in zip(kept, is_buy, strict=True) if b)),
                before=float(buys.sum()),
                after=float(buys.sum() * factor),
            )
        )

    def _plan_perps(
        self,
        obs: Observation,
        cols: list[int],
        instrument: Callable[[str], Instrument] | None,
    ) -> np.ndarray | None:
        """The perpetual columns (bool per symbol) when a plan trades or its book holds
        one, else None (a spot plan: ``_fit_buys`` as it always was)."""
        symbols = obs.symbols
        if instrument is None:
            mask = self.perpetual_mask(symbols)
            return mask if mask.any() else None
        involved = set(cols) | set(np.flatnonzero(obs.portfolio.quantities).tolist())
        perps = [j for j in involved if instrument(symbols[j]).is_perpetual]
        if not perps:
            return None
        mask = np.zeros(len(symbols), dtype=bool)
        mask[perps] = True
        return mask

    def _fit_signed(
        self,
        kept: list[Order],
        values: list[float],
        cols: list[int],
        scale: np.ndarray,
        obs: Observation,
        prices: np.ndarray,
        actions: list[GuardAction],
        perp: np.ndarray,
    ) -> None:
        """``_fit_buys`` for a plan or book with perpetuals (``perp``: bool per symbol).

        The orders that add exposure (spot buys; perpetual orders moving away from zero
        or from flat) are scaled together, the others (sales, buy-backs of a short) are
        kept. Weights are signed notionals over equity; asset and cluster weights are
        read as |w|, gross as sum |w|, net as |sum w|, and the invested share (``spot``)
        is the spot weights' sum: a short-opening sell uses margin, it raises no cash,
        and it funds nothing. Equity is the book's (``obs.portfolio.equity``: cash plus
        spot at its marks plus each perpetual's margin and unrealized PnL). A spot sale
        counts only up to the holding. Fails closed as ``_fit_buys``.
        """
        lim = self._limits
        n = len(obs.symbols)
        held = obs.portfolio.quantities
        px = np.where(np.isfinite(prices) & (prices > 0), prices, 0.0)
        adds = np.array(
            [
                (o.side.sign * float(held[j]) >= 0) if perp[j] else o.side is Side.BUY
                for o, j in zip(kept, cols, strict=True)
            ],
            dtype=bool,
        ) & (scale > 0)
        if not adds.any():
            return
        names = tuple(dict.fromkeys(o.symbol for o, a in zip(kept, adds, strict=True) if a))
        with np.errstate(invalid="ignore", over="ignore"):
            pre = held * px
            equity = float(obs.portfolio.equity)
        if not (np.all(np.isfinite(pre)) and math.isfinite(equity) and equity > 0):
            scale[adds] = 0.0
            actions.append(
                GuardAction(
                    "non_finite",
                    f"orders adding exposure blocked: the book cannot be valued "
                    f"(equity {equity!r})",
                    names,
                )
            )
            return
        signed = np.array(
            [v if o.side is Side.BUY else -v for o, v in zip(kept, values, strict=True)]
        )
        amounts = signed * scale
        fixed = np.bincount(cols, weights=np.where(adds, 0.0, amounts), minlength=n)
        grow = np.bincount(cols, weights=np.where(adds, amounts, 0.0), minlength=n)
        spot = ~perp
        # A spot sale beyond the holding would fund phantom buys: count it up to it.
        fixed[spot] = np.maximum(fixed[spot], -np.maximum(pre[spot], 0.0))
        base = pre + fixed
        symbols = obs.symbols
        w0 = pre / equity

        def cluster(w: np.ndarray) -> Any:
            return self._cluster_sums(symbols, np.abs(w))

        def gross(w: np.ndarray) -> Any:
            return np.abs(w).sum()

        def net(w: np.ndarray) -> Any:
            return abs(w.sum())

        def invested(w: np.ndarray) -> Any:
            return w[spot].sum()

        checks: list[tuple[str, Callable[[np.ndarray], Any], Any]] = [
            ("max_asset_weight", np.abs, np.maximum(lim.max_asset_weight, np.abs(w0))),
            ("max_cluster_weight", cluster, np.maximum(lim.max_cluster_weight, cluster(w0))),
            ("max_gross_leverage", gross, max(lim.max_gross_leverage, float(gross(w0)))),
            ("max_net_exposure", net, max(lim.max_net_exposure, float(net(w0)))),
        ]
        if self.spot:
            rule = "min_cash" if lim.min_cash > 0 else "spot_cash"
            checks.append((rule, invested, max(1.0 - lim.min_cash, float(invested(w0)))))

        def fits(value: Any, cap: Any) -> bool:
            ok = value <= cap  # a NaN measure is a breach (fail closed)
            return bool(ok.all()) if isinstance(ok, np.ndarray) else bool(ok)

        w1 = (base + grow) / equity
        broken = [rule for rule, m, cap in checks if not fits(m(w1), cap * (1 + _TOL))]
        if not broken:
            return
        # Shorts make the measures non-monotone in f in general: a plain bisection.
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            w = (base + mid * grow) / equity
            if all(fits(m(w), cap) for _, m, cap in checks):
                lo = mid
            else:
                hi = mid
        factor = lo
        scale[adds] *= factor
        size = float(np.abs(grow).sum())
        actions.append(
            GuardAction(
                broken[0],
                f"orders adding exposure scaled by {factor:.4f}: after the trades "
                f"{', '.join(dict.fromkeys(broken))} would exceed the limit "
                "(sells were cut or skipped)",
                names,
                before=size,
                after=size * factor,
            )
        )

    def _boundary_estimate(
        self,
        checks: list[tuple[str, Callable[[np.ndarray], Any], Any]],
        base: np.ndarray,
        buys: np.ndarray,
        pre: np.ndarray,
        cash: float,
        equity: float,
        symbols: tuple[str, ...],
    ) -> float | None:
        """The factor f in (0, 1) at which the first of ``checks`` reaches its cap, each
        measure taken as linear in f (weights ``(base + f * buys) / equity``); None when
        there is none. Only a starting point for the exact search."""
        best = math.inf
        total_buys = float(buys.sum())
        if not total_buys > 0:
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            for rule, _, cap in checks:
                if rule == "max_asset_weight":
                    room = np.where(buys > 0, (cap * equity - base) / buys, np.inf)
                elif rule == "max_cluster_weight":
                    grown = self._cluster_sums(symbols, buys)
                    room = np.where(
                        grown > 0,
                        (cap * equity - self._cluster_sums(symbols, base)) / grown,
                        np.inf,
                    )
                elif rule in ("max_gross_leverage", "max_net_exposure"):
                    room = (cap * equity - float(base.sum())) / total_buys
                else:  # the invested share (min_cash, spot_cash)
                    room = (
                        cash - float(base.sum()) + float(pre.sum()) - (1.0 - cap) * equity
                    ) / total_buys
                best = min(best, float(np.min(room)))
        return best if 0 < best < 1 else None

    # --- fills ------------------------------------------------------------------------------
    def check_fill(
        self,
        fill: Fill,
        instrument: Instrument,
        sub: Subaccount,
        marks: Mapping[str, float],
        *,
        traded_today: float,
        order_filled: float = 0.0,
    ) -> tuple[float, list[GuardAction]]:
        """The largest quantity of ``fill`` (base units) that breaks no limit at its price.

        The limits again, at the moment of the fill: the account is ``sub`` as it is now,
        valued at ``marks`` (its positions at this moment, the fill's symbol at the fill
        price, so that equity before the fill is ``sub.equity(marks)`` and after it is
        that less the fee). ``traded_today`` is the notional already traded this UTC day
        and ``order_filled`` what earlier fills of the same order traded (quote).

        * ``max_order_notional``: ``order_filled + q * price <= cap``;
        * ``max_daily_turnover``: ``traded_today + q * price <= cap * equity``;
        * a fill that adds exposure (a spot buy; a perpetual moving away from zero) must,
          once booked, leave the asset's weight, its cluster's, gross and net exposure
          and (spot) the cash share within the larger of their cap and their value
          before the fill: it neither creates nor worsens a breach.

        Fails closed: a quantity, price, fee, cash or equity that is not a finite number
        (or equity <= 0) allows nothing. Fees scale with the quantity, as booked.
        """
        lim = self._limits
        asked = float(fill.quantity)
        price = float(fill.price)
        symbol = fill.symbol

        def blocked(rule: str, why: str) -> tuple[float, list[GuardAction]]:
            value = asked * price if math.isfinite(asked * price) else None
            return 0.0, [GuardAction(rule, f"fill blocked: {why}", (symbol,), value, 0.0)]

        if lim.allowed_venues is not None and not lim.venue_allowed(self.venue):
            return blocked("allowed_venues", f"venue {self.venue!r} is not allowed")
        if not (math.isfinite(asked) and asked > 0 and math.isfinite(price) and price > 0):
            return blocked("non_finite", f"quantity {asked!r} at price {price!r}")
        if self._bounds_for is not lim:
            # Limits are immutable: asked once per Limits object in force.
            self._bounds_for, self._ledger_bounds = lim, _only_ledger_bounds(lim)
        if (
            not instrument.is_perpetual
            and self._ledger_bounds
            # The broker's SpotBook exists only for a book without perpetuals.
            and (
                isinstance(marks, SpotBook)
                or not any(p.instrument.is_perpetual for p in sub.positions.values())
            )
        ):
            # A spot-only book cannot overdraw its cash (the ledger refuses it), so every
            # position is >= 0 and gross = net = 1 - cash/equity <= 1: with no cap below
            # 1x and no other limit set, no fill can break one. Skipping the search keeps
            # a reference run's fills at the ledger's cost.
            return asked, []
        book = marks if isinstance(marks, SpotBook) else None
        try:
            if book is not None:
                equity = float(book.equity(sub.quantity(symbol)))
            else:
                equity = float(sub.equity(marks))
        except LedgerError as exc:
            return blocked("no_price", str(exc))
        cash = float(sub.cash)
        fee = float(fill.fee)
        traded = float(traded_today)
        done = float(order_filled)
        if not all(math.isfinite(x) for x in (equity, cash, fee, traded, done)) or equity <= 0:
            return blocked(
                "non_finite", f"the account cannot be valued (cash {cash!r}, equity {equity!r})"
            )
        q_max = asked
        binding: list[tuple[str, str]] = []

        def bound(rule: str, room: float, what: str) -> None:
            nonlocal q_max
            allowed = max(room, 0.0) / price
            if allowed < q_max:
                q_max = allowed
                binding.append((rule, what))

        if lim.max_order_notional is not None:
            bound(
                "max_order_notional",
                lim.max_order_notional - done,
                f"order notional capped at {lim.max_order_notional:,.2f}",
            )
        if lim.max_daily_turnover is not None:
            bound(
                "max_daily_turnover",
                lim.max_daily_turnover * equity - max(traded, 0.0),
                f"the day's turnover budget ({lim.max_daily_turnover:.2%} of equity "
                f"{equity:,.2f}) has {max(lim.max_daily_turnover * equity - traded, 0.0):,.2f} left",
            )
        held = sub.quantity(symbol)
        sign = fill.side.sign
        adds = (sign > 0 and held >= 0) if not instrument.is_perpetual else sign * held >= 0
        if adds and q_max > 0:
            measure = self._fill_measures(fill, instrument, sub, marks, equity, cash, asked)
            caps = self._fill_caps(instrument)
            before = measure(0.0)
            limits_now = {rule: max(cap, before[rule]) for rule, cap in caps.items()}

            def broken(q: float) -> list[str]:
                after = measure(q)
                # ``not <=`` so that a NaN counts as a breach; rounding is not one
                # (cutting such a fill would leave a remainder no exchange accepts).
                return [
                    rule
                    for rule, cap in limits_now.items()
                    if not after[rule] <= cap * (1 + _FILL_TOL)
                ]

            rules = broken(q_max)
            if rules:
                lo, hi = 0.0, q_max
                for _ in range(80):
                    mid = 0.5 * (lo + hi)
                    lo, hi = (mid, hi) if not broken(mid) else (lo, mid)
                q_max = lo
                binding += [(r, "would be exceeded after the fill") for r in rules]
        if not binding:
            return asked, []
        q = min(q_max, asked)
        message = "; ".join(f"{rule}: {what}" for rule, what in binding)
        scaled = f"fill at {price:,.6g} scaled from {asked:g} to {q:g}"
        return q, [
            GuardAction(
                binding[0][0],
                f"{scaled}: {message}",
                (symbol,),
                before=asked * price,
                after=q * price,
            )
        ]

    def _fill_caps(self, instrument: Instrument) -> dict[str, float]:
        lim = self._limits
        caps = {
            "max_asset_weight": lim.max_asset_weight,
            "max_cluster_weight": lim.max_cluster_weight,
            "max_gross_leverage": lim.max_gross_leverage,
            "max_net_exposure": lim.max_net_exposure,
        }
        if self.spot and not instrument.is_perpetual:
            caps["min_cash" if lim.min_cash > 0 else "spot_cash"] = 1.0 - lim.min_cash
        return caps

    def _fill_measures(
        self,
        fill: Fill,
        instrument: Instrument,
        sub: Subaccount,
        marks: Mapping[str, float],
        equity: float,
        cash: float,
        asked: float,
    ) -> Callable[[float], dict[str, float]]:
        """Weight measures after booking ``q`` of ``fill`` (the ledger's arithmetic)."""
        symbol = fill.symbol
        price = float(fill.price)
        fee_base = fill.fee_currency == instrument.base and not instrument.is_perpetual
        fee_per_unit = float(fill.fee) / asked  # in the fee's currency
        fee_quote_per_unit = fee_per_unit * price if fee_base else fee_per_unit
        book = marks if isinstance(marks, SpotBook) else None
        spot_others: float | None = None
        if book is not None:
            # The broker's book: the same values, in the same order, without a loop.
            other_values, keep = book.others()
            columns = marks.columns[keep]
            if len(columns) and columns.min() >= 0:
                in_cluster = self._cluster_codes(marks.universe)[columns] == self._cluster_code(
                    symbol
                )
            else:
                in_cluster = np.array(
                    [self._cluster_code(s) for s in marks.symbols if s != symbol], dtype=np.int64
                ) == self._cluster_code(symbol)
        else:
            key = normalize_symbol(symbol)
            cluster = self._clusters.get(key, key)
            others = [s for s in sub.positions if s != symbol]
            other_values = np.array([sub.quantity(s) * float(marks[s]) for s in others])
            in_cluster = np.array(
                [
                    self._clusters.get(normalize_symbol(s), normalize_symbol(s)) == cluster
                    for s in others
                ],
                dtype=bool,
            )
            if not instrument.is_perpetual:
                # With perpetuals in the book the invested share is the spot weights'
                # (their margin is out of the cash but buys nothing): min_cash counts
                # for spot only.
                perp = np.array(
                    [sub.positions[s].instrument.is_perpetual for s in others], dtype=bool
                )
                if perp.any():
                    spot_others = float(other_values[~perp].sum())
        held = sub.quantity(symbol)
        sign = fill.side.sign

        def measure(q: float) -> dict[str, float]:
            received = q - (q * fee_per_unit if fee_base else 0.0)
            own = (held + sign * received) * price
            eq = equity - q * fee_quote_per_unit
            out = {
                "max_asset_weight": abs(own) / eq,
                "max_cluster_weight": (abs(own) + float(np.abs(other_values[in_cluster]).sum()))
                / eq,
                "max_gross_leverage": (abs(own) + float(np.abs(other_values).sum())) / eq,
                "max_net_exposure": abs(own + float(other_values.sum())) / eq,
            }
            if not instrument.is_perpetual:
                if spot_others is not None:
                    out["min_cash"] = out["spot_cash"] = (own + spot_others) / eq
                    return out
                cash_fee = 0.0 if fee_base else q * fee_per_unit
                cash_after = cash - sign * q * price - cash_fee
                out["min_cash"] = out["spot_cash"] = 1.0 - cash_after / eq
            return out

        return measure

    # --- saved state ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The limits in force (after any override) and the overrides' audit trail."""
        return {
            "limits": self._limits.model_dump(mode="json"),
            "overrides": [o.to_dict() for o in self._overrides],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take up saved limits and overrides (validated again; no hook is called: these
        overrides were journaled when they were made)."""
        self._limits = Limits.model_validate(state["limits"])
        self._overrides = [
            LimitOverride(
                key=o["key"],
                old=tuple(o["old"]) if isinstance(o["old"], list) else o["old"],
                new=tuple(o["new"]) if isinstance(o["new"], list) else o["new"],
                by=o["by"],
                reason=o["reason"],
                at=pd.Timestamp(o["at"]).tz_convert("UTC"),
            )
            for o in state["overrides"]
        ]


_DAY_NS = 86_400 * 10**9  # a UTC day in nanoseconds (no leap seconds in Timestamps)


@dataclass
class DailyTurnover:
    """Notional traded per UTC day (quote, one-way), for ``check_orders(traded_today=)``."""

    day: pd.Timestamp | None = None
    traded: float = 0.0
    # The last instant rolled to and the day it gave: a broker asks once per fill with
    # its bar's timestamp, and converting it each time was a tenth of a managed run.
    _seen: tuple[Any, Any] = field(default=(None, None), repr=False, compare=False)

    def record(self, at: pd.Timestamp, notional: float) -> None:
        """Add ``|notional|`` traded at ``at``; a new UTC day starts from zero."""
        seen_at, seen_day = self._seen
        if not (at is seen_at and at is not None and self.day is seen_day):
            self._roll(at)
        self.traded += abs(float(notional))

    def today(self, at: pd.Timestamp) -> float:
        """Notional traded so far on ``at``'s UTC day."""
        seen_at, seen_day = self._seen
        if not (at is seen_at and at is not None and self.day is seen_day):
            self._roll(at)
        return self.traded

    def _roll(self, at: pd.Timestamp) -> None:
        seen_at, seen_day = self._seen
        if at is seen_at and at is not None and self.day is seen_day:
            return
        if type(at) is pd.Timestamp and at.tzinfo is UTC:
            # A UTC Timestamp (every bar of a run): on the day counted when its
            # nanoseconds are less than a day past that midnight, without pandas' calls.
            day = self.day
            if day is not None and day.tzinfo is UTC and 0 <= at.value - day.value < _DAY_NS:
                self._seen = (at, day)
                return
            ts = at
        else:
            ts = pd.Timestamp(at)
            ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        day = ts.normalize()
        if day != self.day:
            self.day, self.traded = day, 0.0
        self._seen = (at, self.day)

    def state(self) -> dict[str, Any]:
        """The UTC day counted (ISO) and the notional traded on it (quote)."""
        return {
            "day": None if self.day is None else self.day.isoformat(),
            "traded": float(self.traded),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        day = state["day"]
        self.day = None if day is None else pd.Timestamp(day).tz_convert("UTC")
        self.traded = float(state["traded"])


def _same(w: np.ndarray) -> np.ndarray:
    return w


def _gross(targets: np.ndarray) -> float:
    return float(np.abs(targets).sum())


def _net(targets: np.ndarray) -> float:
    return abs(float(targets.sum()))


def is_perp_symbol(symbol: str) -> bool:
    """Is ``symbol`` a perpetual's column (``BTCUSDT-PERP``, any case)?"""
    return symbol.upper().endswith("-PERP")


def _names(symbols: tuple[str, ...], mask: np.ndarray) -> tuple[str, ...]:
    return tuple(symbols[j] for j in np.flatnonzero(mask))


def _reduces(order: Order, position: float) -> bool:
    """Does the order only move ``position`` (base units) towards zero, without crossing?"""
    if order.side is Side.SELL:
        return position > 0 and order.quantity is not None and order.quantity <= position
    return position < 0 and order.quantity is not None and order.quantity <= -position


def _scale_order(
    order: Order, factor: float, instrument: Callable[[str], Instrument] | None
) -> Order | None:
    note = f"{order.reason} [scaled x{factor:.4f} by guard]".strip()
    if order.quote_quantity is not None:
        amount = order.quote_quantity * factor
        return replace(order, quote_quantity=amount, reason=note) if amount > 0 else None
    qty = order.quantity * factor
    if instrument is not None:
        qty = instrument(order.symbol).round_quantity(qty)
    return replace(order, quantity=qty, reason=note) if qty > 0 else None


def _reject(decision: Decision, rule: str, message: str, symbols: tuple[str, ...] = ()) -> Decision:
    """The decision turned into a hold: nothing is traded on a broken or forbidden target."""
    action = GuardAction(rule, f"decision rejected: {message}", symbols)
    return Decision(
        None,
        decision.reasons + (Reason("guard_rejected", f"guard rejected the targets: {message}"),),
        action="rejected",
        guard=decision.guard + (action,),
    )
