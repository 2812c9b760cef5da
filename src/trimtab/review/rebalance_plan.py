"""The order plan that moves real spot holdings toward target weights (monitor mode).

Targets file (YAML), weights as fractions of each subaccount's equity:

```yaml
targets:
  core: {BTC: 0.40, ETH: 0.30, SOL: 0.10}   # the rest stays in cash
```

A flat ``targets: {BTC: 0.5, ETH: 0.5}`` applies when the holdings have one subaccount.
The plan uses the cost-aware rule (``trimtab.policy.rebalance``): assets inside their
no-trade band are left alone, the others are traded to the band's edge when the risk
reduction is worth the cost; orders below the exchange minimum are reported, not sent.
Nothing is sent: this is a plan for a person to read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trimtab.data.panel import Panel
from trimtab.domain import Instrument, MarginTier, Order, Position, Side, perpetual, spot
from trimtab.domain.decisions import Decision, Observation, PortfolioState, Reason
from trimtab.domain.quotes import asset_of, split_quote
from trimtab.domain.valuation import perp_equity, unrealized_pnl
from trimtab.execution.costs import VENUE_FEES_BPS, CostModel
from trimtab.execution.spreads import SPREAD_WINDOW, bar_half_spread_bps, half_spreads
from trimtab.guard.limits import LimitGuard, Limits
from trimtab.policy.orders import plan_orders
from trimtab.policy.rebalance import (
    CostAwareSettings,
    MarketInputs,
    cost_aware_rule,
)
from trimtab.policy.trading import TREND_DAYS, expected_costs, trailing_return
from trimtab.review.holdings import (
    STABLECOINS,
    Holdings,
    HoldingsError,
    market_symbol,
    resolve_holdings,
)
from trimtab.risk.covariance import sample_covariance
from trimtab.risk.score import volatility_regime

COV_WINDOW = 60


def is_perp_key(key: str) -> bool:
    """Is a targets key written as a perpetual (``DOGEUSDT-PERP``, ``DOGE/USDT:USDT``)?"""
    k = str(key).strip().upper()
    return k.endswith("-PERP") or ":" in k


def is_perps_subaccount(holdings: Holdings, sub: str, keys: Any = ()) -> bool:
    """Is ``sub`` planned with perpetuals: a target is written as one, or the
    subaccount holds perpetuals and no spot (stablecoins are cash, not spot)."""
    if any(is_perp_key(k) for k in keys):
        return True
    h = holdings.subaccounts[sub]
    spot_held = any(
        e.quantity > 0
        for k, e in h.spot.items()
        if k not in STABLECOINS and (split_quote(k) or ("", ""))[0] not in STABLECOINS
    )
    spot_held |= any(v > 0 for c, v in h.cash.items() if c not in STABLECOINS)
    return bool(h.perps) and not spot_held


def _read_targets_doc(path: str | Path) -> dict[str, Any]:
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise HoldingsError(f"{source}: targets file not found") from None
    except yaml.YAMLError as exc:
        raise HoldingsError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("targets"), dict):
        raise HoldingsError(f"{source}: expected a mapping 'targets:' of weights")
    return doc


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _raw_targets(path: str | Path, holdings: Holdings) -> dict[str, dict[str, Any]]:
    source = str(path)
    raw = _read_targets_doc(path)["targets"]
    names = list(holdings.subaccounts)
    if all(_number(v) or isinstance(v, dict) and "weight" in v for v in raw.values()):
        if len(names) != 1:
            raise HoldingsError(
                f"{source}: flat targets need one subaccount; the holdings have {', '.join(names)}"
            )
        raw = {names[0]: raw}
    for sub, weights in raw.items():
        if sub not in holdings.subaccounts:
            raise HoldingsError(f"{source}: targets.{sub}: no such subaccount ({', '.join(names)})")
        if not isinstance(weights, dict):
            raise HoldingsError(f"{source}: targets.{sub}: expected asset: weight pairs")
    return raw


def load_targets(path: str | Path, holdings: Holdings) -> dict[str, dict[str, float]]:
    """Target weights per subaccount from a YAML file; errors name the file and key.

    A weight is a fraction of the subaccount's equity: ``BTC: 0.4``, or for a perpetual
    ``DOGE: {weight: -0.5, leverage: 3}`` (negative: short). Spot weights are >= 0 and
    sum to at most 1; perpetual weights are signed and bounded by the limits (gross
    leverage), not here.
    """
    source = str(path)
    out: dict[str, dict[str, float]] = {}
    for sub, weights in _raw_targets(path, holdings).items():
        perps = is_perps_subaccount(holdings, sub, weights)
        clean = {}
        for asset, spec in weights.items():
            where = f"{source}: targets.{sub}.{asset}"
            w = spec.get("weight") if isinstance(spec, dict) else spec
            if isinstance(spec, dict):
                unknown = sorted(set(spec) - {"weight", "leverage"})
                if unknown:
                    raise HoldingsError(
                        f"{where}.{unknown[0]}: unknown key (use weight, and leverage for perpetuals)"
                    )
                if "leverage" in spec and not perps:
                    raise HoldingsError(
                        f"{where}.leverage: leverage is for perpetuals; {sub} is planned as "
                        "spot (write the asset as a perpetual, e.g. BTCUSDT-PERP)"
                    )
            if not _number(w) or (w < 0 and not perps):
                if _number(w) and w < 0:
                    raise HoldingsError(
                        f"{where}: weight must be a number >= 0 in a spot subaccount (got {w!r}); a short "
                        "is a perpetual: write it as e.g. BTCUSDT-PERP"
                    )
                raise HoldingsError(f"{where}: weight must be a number >= 0 (got {w!r})")
            clean[str(asset).upper()] = float(w)
        if not perps and sum(clean.values()) > 1 + 1e-9:
            raise HoldingsError(
                f"{source}: targets.{sub}: weights sum to {sum(clean.values()):.3f} > 1"
            )
        out[sub] = clean
    return out


def load_leverage(path: str | Path, holdings: Holdings) -> dict[str, dict[str, float]]:
    """Leverage per perpetual target (``{weight: .., leverage: 3}``), by subaccount and
    key as written (upper case); errors name the file and key."""
    source = str(path)
    out: dict[str, dict[str, float]] = {}
    for sub, weights in _raw_targets(path, holdings).items():
        for asset, spec in weights.items():
            if not isinstance(spec, dict) or "leverage" not in spec:
                continue
            lev = spec["leverage"]
            if not _number(lev) or not 1 <= lev <= 125:
                raise HoldingsError(
                    f"{source}: targets.{sub}.{asset}.leverage: must be a number from 1 to 125 "
                    f"(got {lev!r})"
                )
            out.setdefault(sub, {})[str(asset).upper()] = float(lev)
    return out


_MARKET_KEYS = ("lot_size", "min_qty", "min_notional")


def load_markets(path: str | Path) -> dict[str, dict[str, float]]:
    """Exchange rules per asset from the optional ``markets:`` section of the targets
    file, e.g. ``markets: {BTC: {lot_size: 0.00001, min_notional: 5}}``."""
    source = str(path)
    doc = yaml.safe_load(Path(path).read_text()) or {}
    raw = doc.get("markets") or {}
    if not isinstance(raw, dict):
        raise HoldingsError(f"{source}: markets: expected asset: {{lot_size, min_notional}} pairs")
    out: dict[str, dict[str, float]] = {}
    for asset, rules in raw.items():
        if not isinstance(rules, dict):
            raise HoldingsError(f"{source}: markets.{asset}: expected a mapping of rules")
        clean = {}
        for key, value in rules.items():
            if key not in _MARKET_KEYS:
                raise HoldingsError(
                    f"{source}: markets.{asset}.{key}: unknown rule (use {', '.join(_MARKET_KEYS)})"
                )
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                raise HoldingsError(
                    f"{source}: markets.{asset}.{key}: must be a number >= 0 (got {value!r})"
                )
            clean[key] = float(value)
        out[str(asset).upper()] = clean
    return out


def plan_rebalance(
    holdings: Holdings,
    targets: dict[str, dict[str, float]],
    panel: Panel,
    *,
    as_of: Any = None,
    costs: CostModel | None = None,
    settings: CostAwareSettings | None = None,
    min_notional: float = 5.0,
    markets: dict[str, dict[str, float]] | None = None,
    exchange_rules: dict[str, dict[str, dict[str, float]]] | None = None,
    quoted_spreads: dict[str, float] | None = None,
    spread: str = "auto",
    limits: Limits | None = None,
    clusters: dict[str, str] | None = None,
    leverage: dict[str, dict[str, float]] | None = None,
    margin_tiers: dict[str, tuple[MarginTier, ...]] | None = None,
    exchange_perps: dict[str, dict[str, Instrument]] | None = None,
) -> dict[str, Any]:
    """The plan per subaccount: orders with reason, cost and benefit, what the guard
    changed, and what was left.

    ``markets`` gives exchange rules per asset or symbol (``lot_size``, ``min_qty``,
    ``min_notional`` in USDT); else ``exchange_rules[venue][symbol]`` for the
    subaccount's exchange (``trimtab.data.markets``); ``min_notional`` is the default
    minimum. Buys never spend more than the cash plus what the plan's sales bring in,
    net of costs; perpetual orders never post more margin than the free cash plus the
    margin they release.

    Guard: the targets pass ``LimitGuard.check`` and the orders ``check_orders`` with
    ``limits`` (default ``Limits()``) and ``clusters`` (symbol -> cluster), one guard per
    subaccount on its ``exchange``; every action is in ``entry["guard"]``. A plan knows
    nothing of the day's earlier trades, so ``max_daily_turnover`` counts this plan only.

    Perpetuals: a subaccount holding perpetuals and no spot, or whose targets are written
    as perpetuals (``DOGEUSDT-PERP``), is planned in perpetuals: signed target weights
    (negative: short) become perpetual buys and sells with leverage (``leverage[sub][key]``,
    else the position's, else 1x; lowered to the margin bracket's maximum) and
    reduce-only where they only shrink a position. Perpetual rules and margin brackets:
    ``margin_tiers`` (symbol -> brackets), else ``exchange_perps[venue]["BTCUSDT-PERP"]``
    (``trimtab.data.markets.cached_perpetuals``), else the built-in schedule of
    ``trimtab.domain.perpetual``. Spot holdings there, and perpetuals
    in a spot subaccount, are left as they are (the plan says so).

    Costs: ``costs`` if given, else the fee schedule of the subaccount's ``exchange``
    (``CostModel.for_venue``), else the default model. Half-spreads are quoted from
    ``quoted_spreads`` (symbol -> bps, from order books) where given, else estimated
    from the bars up to the plan's date (``spread="bars"``, or ``"auto"`` on hourly or
    finer bars: on daily bars the estimate runs far above real spreads of liquid coins),
    never below the model's ``half_spread_bps``; ``"fixed"`` uses that value alone.
    """
    if spread not in ("auto", "bars", "fixed"):
        raise ValueError(f"spread must be auto, bars or fixed, not {spread!r}")
    use_bars = spread == "bars" or (spread == "auto" and panel.periods_per_year >= 365 * 24)
    rules = {k.upper(): v for k, v in (markets or {}).items()}
    lim = limits if limits is not None else Limits()
    book = resolve_holdings(holdings, panel, as_of)
    i = panel.index.get_loc(book.bar)
    close = panel.close
    out: dict[str, Any] = {
        "as_of": book.bar.isoformat(),
        "limits": lim.model_dump(mode="json"),
        "subaccounts": {},
    }
    for sub, weights in targets.items():
        venue = holdings.subaccounts[sub].exchange
        perps = is_perps_subaccount(holdings, sub, weights)
        venue_rules = (exchange_rules or {}).get((venue or "").lower(), {})

        def instrument(symbol: str, venue_rules: dict[str, dict[str, float]] = venue_rules) -> Any:
            own = rules.get(symbol) or rules.get(asset_of(symbol))
            if own is None:
                own = venue_rules.get(symbol, {})
            return spot(symbol, **{"min_notional": min_notional, **own})

        venue_perps = (exchange_perps or {}).get((venue or "").lower(), {})

        def perp_instrument(symbol: str, venue_perps: dict[str, Instrument] = venue_perps) -> Any:
            # Perpetual lots differ from spot ones: only rules of the perpetual apply, a
            # markets: entry written for it (BTCUSDT-PERP), else the exchange's cached ones.
            name = f"{symbol}-PERP"
            cached = venue_perps.get(name)
            base: dict[str, float] = {"min_notional": min_notional}
            if cached is not None:
                base = {k: getattr(cached, k) for k in ("lot_size", "min_qty", "min_notional")}
            tiers = (margin_tiers or {}).get(symbol) or (margin_tiers or {}).get(name)
            if not tiers and cached is not None:
                tiers = cached.margin_tiers
            return perpetual(symbol, margin_tiers=tiers or (), **{**base, **rules.get(name, {})})

        wanted: dict[str, float] = {}
        keys: dict[str, str] = {}
        for asset, w in weights.items():
            symbol = market_symbol(asset, panel.symbols)
            if symbol is None:
                raise HoldingsError(f"targets.{sub}.{asset}: no price for it in the data")
            if symbol in wanted:
                raise HoldingsError(
                    f"targets.{sub}.{asset}: {symbol} is already targeted as {keys[symbol]}"
                )
            wanted[symbol], keys[symbol] = w, asset
        kind = "perp" if perps else "spot"
        held: dict[str, dict[str, float]] = {}
        for p in book.positions:
            if p.subaccount != sub or p.kind != kind:
                continue
            h = held.setdefault(p.symbol, {"quantity": 0.0, "margin": 0.0, "entry_value": 0.0})
            h["quantity"] += p.quantity
            if p.kind == "perp":
                h["margin"] += float(p.margin or 0.0)
                h["entry_value"] += p.quantity * float(p.entry_price or 0.0)
        symbols = tuple(dict.fromkeys([*held, *wanted]))
        cols = list(symbols)
        prices = close[cols].iloc[i].to_numpy(float)
        qty = np.array([held.get(s, {}).get("quantity", 0.0) for s in symbols])
        cash = book.cash.get(sub, 0.0)
        equity = cash + _other_value(book, sub, kind, close, i)
        if kind == "spot":
            equity += float(qty @ prices)
        else:
            equity += sum(_perp_equity(h, prices[symbols.index(s)]) for s, h in held.items())
        if not equity > 0:
            raise HoldingsError(
                f"{holdings.source}: subaccounts.{sub}: equity is {equity:,.2f} USDT; "
                "weights of nothing cannot be planned"
            )
        current = qty * prices / equity
        target = np.array([wanted.get(s, 0.0) for s in symbols])
        window = close[cols].iloc[max(0, i - COV_WINDOW) : i + 1]
        returns = window.pct_change(fill_method=None).iloc[1:].fillna(0.0).to_numpy()
        cov = sample_covariance(returns)
        volume = panel.quote_volume[cols].iloc[i].to_numpy(float)
        sub_costs = costs or (
            CostModel.for_venue(venue) if venue and venue.lower() in VENUE_FEES_BPS else CostModel()
        )
        lo = max(0, i - SPREAD_WINDOW - 1)
        estimate = (
            bar_half_spread_bps(
                panel.high[cols].iloc[lo : i + 1],
                panel.low[cols].iloc[lo : i + 1],
                panel.close[cols].iloc[lo : i + 1],
            )
            .iloc[-1]
            .to_dict()
            if use_bars
            else None
        )
        spreads, spread_sources = half_spreads(
            symbols, sub_costs.half_spread_bps, quoted_spreads, estimate
        )
        unit_costs = expected_costs(sub_costs, np.abs(current - target) * equity, volume, spreads)
        s = settings or CostAwareSettings()
        entry: dict[str, Any] = {
            "venue": venue,
            "instruments": "perpetuals" if perps else "spot",
            "exchange_rules": "; ".join(
                [
                    *(["the targets file's markets: section"] if rules else []),
                    f"the cached {venue} {'perpetual ' if perps else ''}rules"
                    if (venue_perps if perps else venue_rules)
                    else f"otherwise a {min_notional:g} USDT minimum, no lot rounding",
                    *(
                        [
                            "margin brackets: "
                            + (
                                f"the cached {venue} brackets where fetched, else "
                                if venue_perps or margin_tiers
                                else ""
                            )
                            + "built-in (Binance's for BTC and ETH, a conservative "
                            "mid-cap schedule for others)"
                        ]
                        if perps
                        else []
                    ),
                ]
            ),
            "fees_bps": {"taker": sub_costs.taker_fee_bps, "maker": sub_costs.maker_fee_bps},
            "equity": equity,
            "cash": cash,
            "orders": [],
            "untraded": [],
            "guard": [],
            "notes": [],
        }
        guard = LimitGuard(lim, clusters, venue=venue, spot=not perps)
        # The guard values a book as cash + quantity x price; for perpetuals the rest of
        # equity (margin, PnL) stands in as cash, so its weights are notional / equity.
        state = PortfolioState(
            equity, cash if not perps else equity - float(qty @ prices), qty, prices, equity
        )
        obs = _observation(book.bar, symbols, prices, state)
        # Shorts: the guard's weight checks are long-only, so it sees |weights|; a net
        # exposure cap then binds on the gross, which only ever cuts more.
        sign = np.where(target != 0, np.sign(target), np.where(qty < 0, -1.0, 1.0))
        decision = guard.check(
            Decision.rebalance(np.abs(target), Reason("targets", "the targets file")), obs
        )
        entry["guard"] += [{"stage": "targets", **a.to_dict()} for a in decision.guard]
        if decision.targets is None:
            entry["decision"] = "guard rejected the targets: nothing is planned"
            entry["expected_benefit_bps"] = entry["expected_cost_bps"] = 0.0
            why = decision.guard[-1].message if decision.guard else "rejected"
            entry["untraded"] = [{"symbol": sym, "reason": f"guard: {why}"} for sym in symbols]
            del entry["notes"]
            out["subaccounts"][sub] = entry
            continue
        target = sign * decision.targets
        if perps:
            if (target < 0).any() and lim.max_net_exposure < lim.max_gross_leverage:
                entry["notes"].append(
                    "with shorts the guard caps net exposure on the gross (|weights|)"
                )
            # Trade in |weight| space on each target's side: a flip closes and reopens.
            side = sign
            flipped = qty * target < 0
            cur = np.where(flipped, 0.0, side * current)
            tgt = np.abs(target)
            rule_cov = cov * np.outer(side, side)
        else:
            side = np.ones(len(symbols))
            flipped = np.zeros(len(symbols), dtype=bool)
            cur, tgt, rule_cov = current, target, cov
        market = MarketInputs(
            unit_costs,
            rule_cov,
            panel.periods_per_year,
            vol_ratio=volatility_regime(close[cols].iloc[: i + 1], panel.periods_per_year)
            .iloc[-1]
            .to_numpy(float),
            trend=side
            * trailing_return(
                close[cols].iloc[: i + 1].to_numpy(float), panel.periods_per_year, TREND_DAYS
            ),
            # A plan has no memory of earlier plans, so it cannot bound how long a trim
            # has waited: the momentum delay is for the bar-by-bar trader only.
            delayed=np.full(len(symbols), float(s.max_delay_bars)),
        )
        choice = cost_aware_rule(cur, tgt, market, s)
        assert choice.bands is not None and choice.regime_factor is not None
        bands = choice.bands
        regime = [
            " (band tightened: volatility regime stressed)"
            if f < 1
            else " (band widened: calm and rising)"
            if f > 1
            else ""
            for f in choice.regime_factor
        ]
        entry["decision"] = choice.reason
        entry["expected_benefit_bps"] = choice.benefit * 1e4
        entry["expected_cost_bps"] = choice.cost * 1e4
        other = "perp" if kind == "spot" else "spot"
        left_alone = [p.symbol for p in book.positions if p.subaccount == sub and p.kind == other]
        if left_alone:
            entry["notes"].append(
                f"{'perpetuals' if other == 'perp' else 'spot holdings'} "
                f"({', '.join(dict.fromkeys(left_alone))}) are not planned in a "
                f"{'spot' if kind == 'spot' else 'perpetuals'} subaccount: they stay as they "
                "are and count in its equity"
            )
        traded = set(choice.traded) if choice.weights is not None else set()
        ctx = _Ctx(
            sub, symbols, prices, qty, current, target, equity, cash, unit_costs, spreads,
            spread_sources, bands, regime, guard, obs, entry,
        )  # fmt: skip
        if choice.weights is not None:
            new = side * choice.weights
            if perps:
                _plan_perp_orders(
                    ctx, new, held, (leverage or {}).get(sub, {}), keys, perp_instrument
                )
            else:
                _plan_spot_orders(ctx, choice.weights, traded, instrument)
        for j, symbol in enumerate(symbols):
            if j in traded:
                continue
            why = (
                f"within its ±{bands[j]:.1%} no-trade band ({current[j]:.1%} vs target {target[j]:.1%})"
                if abs(cur[j] - tgt[j]) <= bands[j]
                else f"drift {current[j] - target[j]:+.1%} not worth its cost now: {choice.reason}"
            )
            if abs(current[j] - target[j]) > 1e-12 or choice.weights is None:
                entry["untraded"].append({"symbol": symbol, "reason": why})
        entry["note"] = "; ".join(entry.pop("notes"))
        if not entry["note"]:
            del entry["note"]
        out["subaccounts"][sub] = entry
    return out


@dataclass
class _Ctx:
    """One subaccount's arrays and outputs, shared by the spot and perpetual planners."""

    sub: str
    symbols: tuple[str, ...]
    prices: np.ndarray
    qty: np.ndarray
    current: np.ndarray
    target: np.ndarray
    equity: float
    cash: float
    unit_costs: np.ndarray
    spreads: np.ndarray
    spread_sources: list[str]
    bands: np.ndarray
    regime: list[str]
    guard: LimitGuard
    obs: Observation
    entry: dict[str, Any]

    def guard_orders(self, orders: list[Order], instrument: Any) -> list[Order]:
        """The orders through ``check_orders``; its actions go to the plan."""
        passed, actions = self.guard.check_orders(
            orders, self.obs, self.prices, 0.0, instrument=instrument
        )
        self.entry["guard"] += [{"stage": "orders", **a.to_dict()} for a in actions]
        return passed

    def guard_rules(self, symbol: str) -> list[str]:
        """The guard rules that acted on ``symbol`` (targets or orders)."""
        return list(
            dict.fromkeys(
                g["rule"]
                for g in self.entry["guard"]
                if symbol in g.get("symbols", ()) or not g.get("symbols")
            )
        )

    def why(self, j: int, side: Side, reason: str) -> str:
        symbol, target, current = self.symbols[j], self.target[j], self.current[j]
        if target == 0:
            return f"{symbol} is not in the targets: close the position"
        if current == 0:
            return f"{symbol} is in the targets but not held: {'buy' if target > 0 else 'sell'} to {target:.1%}"
        if current * target < 0:
            return (
                f"{symbol} at {current:.1%} is on the other side of its target {target:.1%}: flip"
            )
        return (
            f"{symbol} at {current:.1%} is outside its ±{self.bands[j]:.1%} band "
            f"around {target:.1%}{self.regime[j]}: {reason}"
        )


def _plan_spot_orders(ctx: _Ctx, weights: np.ndarray, traded: set[int], instrument: Any) -> None:
    """Spot orders toward ``weights``: funded by cash and sales, then through the guard."""
    symbols, prices, entry = ctx.symbols, ctx.prices, ctx.entry
    state = PortfolioState(ctx.equity, ctx.cash, ctx.qty, prices, ctx.equity)
    orders, skipped = plan_orders(
        weights,
        state,
        prices,
        symbols,
        instrument,
        reason="cost-aware rebalance",
        subaccount=ctx.sub,
    )
    orders, short = _fund_buys(orders, symbols, prices, ctx.unit_costs, ctx.cash, instrument)
    if short:
        entry["notes"].append(short)
    planned = {o.symbol for o in orders}
    orders = ctx.guard_orders(orders, instrument)
    left = ctx.qty.copy()
    for o in orders:
        j = symbols.index(o.symbol)
        value = (
            o.quote_quantity if o.quote_quantity is not None else (o.quantity or 0.0) * prices[j]
        )
        if o.side is Side.SELL:
            quantity = o.quantity or 0.0
        else:
            # The exchange fills a quote-sized buy in whole lots.
            quantity = instrument(o.symbol).round_quantity(value / prices[j])
            problem = instrument(o.symbol).order_problem(quantity, prices[j])
            if problem:
                entry["untraded"].append(
                    {
                        "symbol": o.symbol,
                        "reason": f"buy cut by the guard below the exchange minimum: {problem}",
                    }
                )
                continue
            value = quantity * prices[j]
        left[j] += quantity if o.side is Side.BUY else -quantity
        rules = ctx.guard_rules(o.symbol)
        entry["orders"].append(
            {
                "symbol": o.symbol,
                "instrument": "spot",
                "side": str(o.side),
                "quantity": quantity,
                "notional": value,
                "weight_from": ctx.current[j],
                "weight_to": left[j] * prices[j] / ctx.equity,
                "target": ctx.target[j],
                "expected_cost": value * ctx.unit_costs[j],
                "half_spread_bps": float(ctx.spreads[j]),
                "spread_source": ctx.spread_sources[j],
                "guard": rules,
                "reason": ctx.why(j, o.side, o.reason),
            }
        )
    for sk in skipped:
        if sk.dust:
            continue  # the remainder of a full exit: listed once, under "dust" below
        entry["untraded"].append(
            {"symbol": sk.symbol, "reason": f"below the exchange minimum: {sk.reason}"}
        )
    sent = {o["symbol"] for o in entry["orders"]} | {u["symbol"] for u in entry["untraded"]}
    for symbol in planned - sent:
        entry["untraded"].append(
            {
                "symbol": symbol,
                "reason": "blocked by the guard: " + ", ".join(ctx.guard_rules(symbol)),
            }
        )
    sent |= planned
    for j in sorted(traded):
        if symbols[j] not in sent:
            entry["untraded"].append(
                {
                    "symbol": symbols[j],
                    "reason": "buy dropped: after scaling to the cash available it "
                    "fell below the exchange minimum",
                }
            )
    entry["dust"] = _dust(symbols, left, prices, instrument)


def _plan_perp_orders(
    ctx: _Ctx,
    new: np.ndarray,
    held: dict[str, dict[str, float]],
    leverage: dict[str, float],
    keys: dict[str, str],
    instrument: Any,
) -> None:
    """Perpetual orders toward the signed weights ``new``: margin funded by the free cash
    and the margin released, leverage within the bracket, then through the guard."""
    symbols, prices, qty, entry = ctx.symbols, ctx.prices, ctx.qty, ctx.entry
    n = len(symbols)
    margin0 = np.array([held.get(s, {}).get("margin", 0.0) for s in symbols])
    lev = np.ones(n)
    for j, s in enumerate(symbols):
        given = leverage.get(keys.get(s, ""))
        if given is not None:
            lev[j] = given
        elif qty[j] != 0 and margin0[j] > 0:
            lev[j] = max(1.0, abs(held[s]["entry_value"]) / margin0[j])
    goal = new * ctx.equity / prices  # signed base units wanted
    notes: list[str] = []
    for j, s in enumerate(symbols):
        inst = instrument(s)
        cap = inst.margin_tiers[-1].max_notional
        if abs(goal[j]) * prices[j] > cap:
            notes.append(f"{s}: size cut to the largest margin bracket ({cap:,.0f} USDT)")
            goal[j] = np.sign(goal[j]) * cap / prices[j]

    lowered: dict[str, str] = {}

    def build(scale: float) -> list[Order]:
        """Orders with every position increase scaled by ``scale`` (reductions whole)."""
        orders = []
        lowered.clear()
        for j, s in enumerate(symbols):
            if goal[j] == qty[j]:
                continue
            q0, q1 = qty[j], goal[j]
            grows = abs(q1) > abs(q0) or q0 * q1 < 0
            if grows:
                # The part that adds exposure is what margin must pay for.
                base = 0.0 if q0 * q1 < 0 else q0
                q1 = base + scale * (q1 - base)
            delta = q1 - q0
            inst = instrument(s)
            amount = abs(q0) if q1 == 0 else inst.round_quantity(abs(delta))
            if amount <= 0 or inst.order_problem(amount, prices[j]):
                continue
            reduce_only = q1 * q0 >= 0 and abs(q1) < abs(q0)
            # The exchange refuses a position above its bracket's maximum leverage.
            tier = inst.margin_tier(abs(q1) * prices[j])
            use = min(float(lev[j]), tier.max_leverage)
            if use < lev[j]:
                lowered[s] = (
                    f"; leverage lowered from {lev[j]:g}x to {use:g}x, the maximum of the "
                    f"margin bracket up to {tier.max_notional:,.0f} USDT"
                )
            orders.append(
                Order(
                    s,
                    Side.BUY if delta > 0 else Side.SELL,
                    quantity=amount,
                    reduce_only=bool(reduce_only),
                    subaccount=ctx.sub,
                    leverage=use,
                    reason="cost-aware rebalance (perpetual)",
                )
            )
        return orders

    def legs(orders: list[Order]) -> list[dict[str, Any]]:
        out = []
        for o in orders:
            j = symbols.index(o.symbol)
            inst = instrument(o.symbol)
            q0 = qty[j]
            q1 = q0 + (o.quantity or 0.0) * o.side.sign
            if abs(q1) < 1e-12 * max(abs(q0), 1.0):
                q1 = 0.0
            notional = abs(q1) * prices[j]
            tier = inst.margin_tier(notional)
            L = o.leverage
            margin1 = notional / L
            if q0 != 0 and q1 * q0 > 0 and abs(q1) < abs(q0) and L == lev[j]:
                # A reduce-only order releases margin pro rata, as the exchange does.
                margin1 = margin0[j] * abs(q1) / abs(q0)
            if q1 * q0 > 0 and abs(q1) >= abs(q0):
                entry_price = (held[o.symbol]["entry_value"] + (q1 - q0) * prices[j]) / q1
            elif q1 * q0 > 0:
                entry_price = held[o.symbol]["entry_value"] / q0
            else:
                entry_price = prices[j]
            cost = (o.quantity or 0.0) * prices[j] * ctx.unit_costs[j]
            closed = abs(q0) if q1 * q0 <= 0 else max(abs(q0) - abs(q1), 0.0)
            realized = (
                closed * np.sign(q0) * (prices[j] - held[o.symbol]["entry_value"] / q0)
                if closed > 0
                else 0.0
            )
            out.append(
                {
                    "order": o, "j": j, "q1": q1, "leverage": L, "tier": tier,
                    "margin1": margin1, "need": margin1 - margin0[j], "cost": cost,
                    "realized": realized,
                    "entry_price": entry_price, "inst": inst,
                }
            )  # fmt: skip
        return out

    def shortfall(orders: list[Order]) -> float:
        ls = legs(orders)
        # Cash after: free cash - margin posted + margin released + PnL realized - costs.
        return sum(leg["need"] + leg["cost"] - leg["realized"] for leg in ls) - ctx.cash

    orders = build(1.0)
    if shortfall(orders) > 1e-9:
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if shortfall(build(mid)) <= 0 else (lo, mid)
        need = shortfall(orders) + ctx.cash
        orders = build(lo)
        notes.append(
            f"perpetual orders that add exposure cut to {lo:.1%}: they need {need:,.2f} USDT "
            f"of margin and costs with {ctx.cash:,.2f} free (plus the margin they release)"
        )
    planned = {o.symbol for o in orders}
    orders = ctx.guard_orders(orders, instrument)
    if shortfall(orders) > 1e-9:
        # The guard cut a reduction whose released margin was to fund an increase.
        keep = [o for o in orders if o.reduce_only]
        grow = [o for o in orders if not o.reduce_only]
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            trial = keep + [_scaled(o, mid, instrument) for o in grow]
            trial = [o for o in trial if o is not None]
            lo, hi = (mid, hi) if shortfall(trial) <= 0 else (lo, mid)
        orders = keep + [o for o in (_scaled(o, lo, instrument) for o in grow) if o is not None]
        notes.append(f"after the guard's cuts, orders that add exposure cut to {lo:.1%} of it")
    entry["notes"] += notes
    posted = realized = 0.0
    after = qty.copy()
    for leg in legs(orders):
        o, j, q1, inst = leg["order"], leg["j"], leg["q1"], leg["inst"]
        after[j] = q1
        posted += leg["need"]
        realized += leg["realized"]
        notional = (o.quantity or 0.0) * prices[j]
        note = lowered.get(o.symbol, "")
        if q1 * ctx.target[j] < 0:
            note += "; the guard's cuts leave it a reduction on the old side for now"
        # After the guard's cuts an order may no longer cross or close: say what it does.
        reduce_only = q1 * qty[j] >= 0 and abs(q1) < abs(qty[j])
        liq = (
            Position(
                inst, q1, leg["entry_price"], leg["margin1"], leg["leverage"]
            ).liquidation_price()
            if q1 != 0
            else None
        )
        liq = None if liq is None else float(liq) + 0.0  # no "-0.0" for a 1x long
        entry["orders"].append(
            {
                "symbol": o.symbol,
                "instrument": "perpetual",
                "side": str(o.side),
                "quantity": o.quantity,
                "notional": notional,
                "reduce_only": bool(reduce_only),
                "leverage": leg["leverage"],
                "position_from": float(qty[j]),
                "position_to": float(q1),
                "weight_from": ctx.current[j],
                "weight_to": q1 * prices[j] / ctx.equity,
                "target": ctx.target[j],
                "margin_from": float(margin0[j]),
                "margin_to": leg["margin1"],
                "margin_needed": leg["need"],
                "realized_pnl": leg["realized"],
                "maintenance_margin": inst.maintenance_margin(q1 * prices[j]),
                "margin_tier": {
                    "max_notional": leg["tier"].max_notional,
                    "maintenance_margin_rate": leg["tier"].maintenance_margin_rate,
                    "max_leverage": leg["tier"].max_leverage,
                },
                "liquidation_price": liq,
                "expected_cost": leg["cost"],
                "half_spread_bps": float(ctx.spreads[j]),
                "spread_source": ctx.spread_sources[j],
                "guard": ctx.guard_rules(o.symbol),
                "reason": ctx.why(j, o.side, o.reason) + note,
            }
        )
    gross = float(np.abs(after * prices).sum())
    entry["margin"] = {
        "free_cash": ctx.cash,
        "posted": posted,
        "realized_pnl": realized,
        "free_cash_after": ctx.cash
        - posted
        + realized
        - sum(o["expected_cost"] for o in entry["orders"]),
        "gross_leverage_after": gross / ctx.equity,
    }
    cap = ctx.guard.limits.max_gross_leverage
    if gross / ctx.equity > cap * (1 + 1e-9):
        entry["notes"].append(
            f"gross leverage after the plan is {gross / ctx.equity:.2f}x, above the "
            f"{cap:g}x limit: the orders were capped, so later plans must bring it down"
        )
    sent = {o["symbol"] for o in entry["orders"]}
    for symbol in planned - sent:
        entry["untraded"].append(
            {
                "symbol": symbol,
                "reason": "blocked by the guard: " + ", ".join(ctx.guard_rules(symbol)),
            }
        )
    for j, s in enumerate(symbols):
        if s in sent or s in planned or goal[j] == qty[j]:
            continue
        delta = abs(goal[j] - qty[j])
        problem = instrument(s).order_problem(instrument(s).round_quantity(delta), prices[j])
        if problem:
            entry["untraded"].append(
                {"symbol": s, "reason": f"below the exchange minimum: {problem}"}
            )
        else:
            entry["untraded"].append(
                {"symbol": s, "reason": "not enough free cash for the margin it needs"}
            )


def _scaled(order: Order, factor: float, instrument: Any) -> Order | None:
    qty = instrument(order.symbol).round_quantity((order.quantity or 0.0) * factor)
    return replace(order, quantity=qty) if qty > 0 else None


def _perp_equity(held: dict[str, float], price: float) -> float:
    """What a perpetual adds to equity: margin plus PnL, never below zero (isolated)."""
    # Several holdings of one symbol: their PnL is quantity * price - sum(qty * entry).
    return perp_equity(held["margin"], held["quantity"] * price - held["entry_value"])


def _other_value(book: Any, sub: str, planned: str, close: Any, i: int) -> float:
    """Equity in the positions of the kind not planned (left as they are)."""
    total = 0.0
    for p in book.positions:
        if p.subaccount != sub or p.kind == planned:
            continue
        price = float(close[p.symbol].iloc[i])
        if p.kind == "perp":
            upnl = unrealized_pnl(p.quantity, price, float(p.entry_price or price))
            total += perp_equity(float(p.margin or 0.0), upnl)
        else:
            total += p.quantity * price
    return total


def _observation(
    ts: Any, symbols: tuple[str, ...], prices: np.ndarray, state: PortfolioState
) -> Observation:
    """The plan's bar as the guard sees it: closes and the book, nothing else."""
    n = len(symbols)
    ones = np.ones(n, dtype=bool)
    return Observation(0, ts, symbols, {"close": prices[None, :]}, {}, ones, ones, state, 0)


def _fund_buys(
    orders: list[Any],
    symbols: tuple[str, ...],
    prices: np.ndarray,
    unit_costs: np.ndarray,
    cash: float,
    instrument: Any,
) -> tuple[list[Any], str]:
    """Scale the buys down to the cash plus the sales' proceeds, net of expected costs;
    buys that fall below the exchange minimum are dropped."""
    proceeds = sum(
        (o.quantity or 0.0)
        * prices[symbols.index(o.symbol)]
        * (1 - unit_costs[symbols.index(o.symbol)])
        for o in orders
        if o.side is Side.SELL
    )
    spend = sum(
        (o.quote_quantity or 0.0) * (1 + unit_costs[symbols.index(o.symbol)])
        for o in orders
        if o.side is Side.BUY
    )
    available = cash + proceeds
    if spend <= available or spend <= 0:
        return orders, ""
    scale = max(available, 0.0) / spend
    kept = []
    for o in orders:
        if o.side is Side.BUY:
            j = symbols.index(o.symbol)
            amount = (o.quote_quantity or 0.0) * scale
            inst = instrument(o.symbol)
            if inst.order_problem(inst.round_quantity(amount / prices[j]), prices[j]):
                continue
            o = replace(o, quote_quantity=amount)
        kept.append(o)
    return kept, (
        f"buys cut to {scale:.1%}: they would spend {spend:,.2f} USDT with "
        f"{available:,.2f} available (cash plus sales, net of costs)"
    )


def _dust(
    symbols: tuple[str, ...], left: np.ndarray, prices: np.ndarray, instrument: Any
) -> list[dict[str, Any]]:
    """Holdings left after the plan that are too small to sell on the exchange."""
    out = []
    for j, symbol in enumerate(symbols):
        if left[j] <= 0:
            continue
        inst = instrument(symbol)
        problem = inst.order_problem(inst.round_quantity(left[j]), prices[j])
        if problem:
            out.append(
                {
                    "symbol": symbol,
                    "quantity": float(left[j]),
                    "value": float(left[j] * prices[j]),
                    "reason": f"too small to sell: {problem}",
                }
            )
    return out


def render_plan(plan: dict[str, Any]) -> str:
    """The plan as text a trader reads: orders, what the guard changed, what was left."""
    lines = [f"Rebalance plan as of {plan['as_of'][:10]} (monitor mode: nothing is sent)", ""]
    for sub, e in plan["subaccounts"].items():
        lines.append(
            f"{sub} ({e.get('instruments', 'spot')}): equity {e['equity']:,.0f} USDT, "
            f"cash {e['cash']:,.0f}"
        )
        lines.append(f"  exchange rules: {e['exchange_rules']}")
        lines.append(f"  decision: {e['decision']}")
        for o in e["orders"]:
            head = f"  {o['side'].upper():4s} {o['quantity']:.6g} {o['symbol']}"
            if o.get("instrument") == "perpetual":
                head += (
                    f" perpetual ({'reduce-only, ' if o['reduce_only'] else ''}"
                    f"{o['leverage']:g}x, position {o['position_from']:.6g} -> "
                    f"{o['position_to']:.6g}, margin {o['margin_from']:,.2f} -> "
                    f"{o['margin_to']:,.2f} USDT"
                    + (
                        f", liquidation ~{o['liquidation_price']:.6g}"
                        if o.get("liquidation_price")
                        else ""
                    )
                    + ")"
                )
            guard = f" [guard: {', '.join(o['guard'])}]" if o.get("guard") else ""
            lines.append(
                f"{head} (~{o['notional']:,.0f} USDT, cost ~{o['expected_cost']:,.2f} incl. "
                f"half-spread {o['half_spread_bps']:.2f} bps from {o['spread_source']}): "
                f"{o['reason']}{guard}"
            )
        for u in e["untraded"]:
            lines.append(f"  left: {u['symbol']}: {u['reason']}")
        for d in e.get("dust", []):
            lines.append(
                f"  dust: {d['quantity']:.8g} {d['symbol']} (~{d['value']:,.2f} USDT), {d['reason']}"
            )
        if e.get("margin"):
            m = e["margin"]
            lines.append(
                f"  margin: {m['posted']:+,.2f} USDT posted, free cash {m['free_cash']:,.2f} -> "
                f"{m['free_cash_after']:,.2f}, gross leverage after {m['gross_leverage_after']:.2f}x"
            )
        if e.get("guard"):
            for g in e["guard"]:
                names = f" ({', '.join(g['symbols'])})" if g.get("symbols") else ""
                lines.append(f"  guard, {g['stage']}: {g['rule']}: {g['message']}{names}")
        else:
            lines.append("  guard: every target and order within the limits")
        if e.get("note"):
            lines.append(f"  note: {e['note']}")
        lines.append("")
    return "\n".join(lines)
