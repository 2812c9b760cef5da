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

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trimtab.data.panel import Panel
from trimtab.domain import Side, spot
from trimtab.domain.decisions import PortfolioState
from trimtab.execution.costs import VENUE_FEES_BPS, CostModel
from trimtab.execution.spreads import SPREAD_WINDOW, bar_half_spread_bps, half_spreads
from trimtab.policy.orders import plan_orders
from trimtab.policy.rebalance import (
    CostAwareSettings,
    MarketInputs,
    cost_aware_rule,
)
from trimtab.policy.trading import TREND_DAYS, expected_costs, trailing_return
from trimtab.review.holdings import (
    Holdings,
    HoldingsError,
    _asset_of,
    market_symbol,
    resolve_holdings,
)
from trimtab.risk.score import volatility_regime

COV_WINDOW = 60


def load_targets(path: str | Path, holdings: Holdings) -> dict[str, dict[str, float]]:
    """Target weights per subaccount from a YAML file; errors name the file and key."""
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise HoldingsError(f"{source}: targets file not found") from None
    except yaml.YAMLError as exc:
        raise HoldingsError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("targets"), dict):
        raise HoldingsError(f"{source}: expected a mapping 'targets:' of weights")
    raw = doc["targets"]
    names = list(holdings.subaccounts)
    if all(isinstance(v, int | float) for v in raw.values()):
        if len(names) != 1:
            raise HoldingsError(
                f"{source}: flat targets need one subaccount; the holdings have {', '.join(names)}"
            )
        raw = {names[0]: raw}
    out: dict[str, dict[str, float]] = {}
    for sub, weights in raw.items():
        if sub not in holdings.subaccounts:
            raise HoldingsError(f"{source}: targets.{sub}: no such subaccount ({', '.join(names)})")
        if not isinstance(weights, dict):
            raise HoldingsError(f"{source}: targets.{sub}: expected asset: weight pairs")
        clean = {}
        for asset, w in weights.items():
            if not isinstance(w, int | float) or not np.isfinite(w) or w < 0:
                raise HoldingsError(
                    f"{source}: targets.{sub}.{asset}: weight must be a number >= 0 (got {w!r})"
                )
            clean[str(asset).upper()] = float(w)
        if sum(clean.values()) > 1 + 1e-9:
            raise HoldingsError(
                f"{source}: targets.{sub}: weights sum to {sum(clean.values()):.3f} > 1"
            )
        out[sub] = clean
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
) -> dict[str, Any]:
    """The plan per subaccount: orders with reason, cost and benefit, and what was left.

    ``markets`` gives exchange rules per asset or symbol (``lot_size``, ``min_qty``,
    ``min_notional`` in USDT); else ``exchange_rules[venue][symbol]`` for the
    subaccount's exchange (``trimtab.data.markets``); ``min_notional`` is the default
    minimum. Buys never spend
    more than the cash plus what the plan's sales bring in, net of costs.

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
    venue_rules: dict[str, dict[str, float]] = {}

    def instrument(symbol: str) -> Any:
        own = rules.get(symbol) or rules.get(_asset_of(symbol))
        if own is None:
            own = venue_rules.get(symbol, {})
        return spot(symbol, **{"min_notional": min_notional, **own})

    book = resolve_holdings(holdings, panel, as_of)
    i = panel.index.get_loc(book.bar)
    close = panel.close
    out: dict[str, Any] = {"as_of": book.bar.isoformat(), "subaccounts": {}}
    for sub, weights in targets.items():
        spot_pos = {
            p.symbol: p.quantity for p in book.positions if p.subaccount == sub and p.kind == "spot"
        }
        wanted = {}
        for asset, w in weights.items():
            symbol = market_symbol(asset, panel.symbols)
            if symbol is None:
                raise HoldingsError(f"targets.{sub}.{asset}: no price for it in the data")
            wanted[symbol] = w
        symbols = tuple(dict.fromkeys([*spot_pos, *wanted]))
        prices = close[list(symbols)].iloc[i].to_numpy(float)
        qty = np.array([spot_pos.get(s, 0.0) for s in symbols])
        cash = book.cash.get(sub, 0.0)
        equity = cash + float(qty @ prices)
        current = qty * prices / equity
        target = np.array([wanted.get(s, 0.0) for s in symbols])
        window = close[list(symbols)].iloc[max(0, i - COV_WINDOW) : i + 1]
        returns = window.pct_change(fill_method=None).iloc[1:].fillna(0.0).to_numpy()
        cov = (
            np.atleast_2d(np.cov(returns, rowvar=False))
            if len(returns) > 2
            else np.zeros((len(symbols),) * 2)
        )
        volume = panel.quote_volume[list(symbols)].iloc[i].to_numpy(float)
        venue = holdings.subaccounts[sub].exchange
        venue_rules = (exchange_rules or {}).get((venue or "").lower(), {})
        sub_costs = costs or (
            CostModel.for_venue(venue) if venue and venue.lower() in VENUE_FEES_BPS else CostModel()
        )
        lo = max(0, i - SPREAD_WINDOW - 1)
        cols = list(symbols)
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
        market = MarketInputs(
            unit_costs,
            cov,
            panel.periods_per_year,
            vol_ratio=volatility_regime(close[cols].iloc[: i + 1], panel.periods_per_year)
            .iloc[-1]
            .to_numpy(float),
            trend=trailing_return(
                close[cols].iloc[: i + 1].to_numpy(float), panel.periods_per_year, TREND_DAYS
            ),
            # A plan has no memory of earlier plans, so it cannot bound how long a trim
            # has waited: the momentum delay is for the bar-by-bar trader only.
            delayed=np.full(len(symbols), float(s.max_delay_bars)),
        )
        choice = cost_aware_rule(current, target, market, s)
        assert choice.bands is not None
        bands = choice.bands
        assert choice.regime_factor is not None
        regime = [
            " (band tightened: volatility regime stressed)"
            if f < 1
            else " (band widened: calm and rising)"
            if f > 1
            else ""
            for f in choice.regime_factor
        ]
        entry: dict[str, Any] = {
            "venue": venue,
            "exchange_rules": "; ".join(
                [
                    *(["the targets file's markets: section"] if rules else []),
                    f"the cached {venue} rules"
                    if venue_rules
                    else f"otherwise a {min_notional:g} USDT minimum, no lot rounding",
                ]
            ),
            "fees_bps": {"taker": sub_costs.taker_fee_bps, "maker": sub_costs.maker_fee_bps},
            "equity": equity,
            "cash": cash,
            "decision": choice.reason,
            "expected_benefit_bps": choice.benefit * 1e4,
            "expected_cost_bps": choice.cost * 1e4,
            "orders": [],
            "untraded": [],
        }
        perps = [p.symbol for p in book.positions if p.subaccount == sub and p.kind != "spot"]
        if perps:
            entry["note"] = (
                f"perpetuals ({', '.join(perps)}) are not planned: the plan moves spot "
                "holdings and free cash only; their margin stays where it is"
            )
        traded = set(choice.traded) if choice.weights is not None else set()
        if choice.weights is not None:
            state = PortfolioState(equity, cash, qty, prices, equity)
            orders, skipped = plan_orders(
                choice.weights,
                state,
                prices,
                symbols,
                instrument,
                reason="cost-aware rebalance",
                subaccount=sub,
            )
            orders, short = _fund_buys(orders, symbols, prices, unit_costs, cash, instrument)
            if short:
                entry["note"] = f"{entry['note']}; {short}" if entry.get("note") else short
            left = qty.copy()
            for o in orders:
                j = symbols.index(o.symbol)
                value = (
                    o.quote_quantity
                    if o.quote_quantity is not None
                    else (o.quantity or 0.0) * prices[j]
                )
                if o.side is Side.SELL:
                    left[j] -= o.quantity or 0.0
                    quantity = o.quantity or 0.0
                else:
                    # The exchange fills a quote-sized buy in whole lots.
                    quantity = instrument(o.symbol).round_quantity(value / prices[j])
                    value = quantity * prices[j]
                why = (
                    f"{o.symbol} is not in the targets: close the position"
                    if target[j] == 0 and o.side is Side.SELL
                    else f"{o.symbol} is in the targets but not held: buy to {target[j]:.1%}"
                    if current[j] == 0
                    else f"{o.symbol} at {current[j]:.1%} is outside its ±{bands[j]:.1%} band "
                    f"around {target[j]:.1%}{regime[j]}: {o.reason}"
                )
                entry["orders"].append(
                    {
                        "symbol": o.symbol,
                        "side": str(o.side),
                        "quantity": quantity,
                        "notional": value,
                        "weight_from": current[j],
                        "weight_to": choice.weights[j],
                        "target": target[j],
                        "expected_cost": value * unit_costs[j],
                        "half_spread_bps": float(spreads[j]),
                        "spread_source": spread_sources[j],
                        "reason": why,
                    }
                )
            for sk in skipped:
                entry["untraded"].append(
                    {"symbol": sk.symbol, "reason": f"below the exchange minimum: {sk.reason}"}
                )
            sent = {o.symbol for o in orders} | {sk.symbol for sk in skipped}
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
        for j, symbol in enumerate(symbols):
            if j in traded:
                continue
            why = (
                f"within its ±{bands[j]:.1%} no-trade band ({current[j]:.1%} vs target {target[j]:.1%})"
                if abs(current[j] - target[j]) <= bands[j]
                else f"drift {current[j] - target[j]:+.1%} not worth its cost now: {choice.reason}"
            )
            if abs(current[j] - target[j]) > 1e-12 or choice.weights is None:
                entry["untraded"].append({"symbol": symbol, "reason": why})
        out["subaccounts"][sub] = entry
    return out


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
    """The plan as text a trader reads."""
    lines = [f"Rebalance plan as of {plan['as_of'][:10]} (monitor mode: nothing is sent)", ""]
    for sub, e in plan["subaccounts"].items():
        lines.append(f"{sub}: equity {e['equity']:,.0f} USDT, cash {e['cash']:,.0f}")
        lines.append(f"  exchange rules: {e['exchange_rules']}")
        lines.append(f"  decision: {e['decision']}")
        for o in e["orders"]:
            lines.append(
                f"  {o['side'].upper():4s} {o['quantity']:.6g} {o['symbol']} (~{o['notional']:,.0f} USDT, "
                f"cost ~{o['expected_cost']:,.2f} incl. half-spread {o['half_spread_bps']:.2f} bps "
                f"from {o['spread_source']}): {o['reason']}"
            )
        for u in e["untraded"]:
            lines.append(f"  left: {u['symbol']}: {u['reason']}")
        for d in e.get("dust", []):
            lines.append(
                f"  dust: {d['quantity']:.8g} {d['symbol']} (~{d['value']:,.2f} USDT), {d['reason']}"
            )
        if e.get("note"):
            lines.append(f"  note: {e['note']}")
        lines.append("")
    return "\n".join(lines)
