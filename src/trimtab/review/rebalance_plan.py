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

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trimtab.data.panel import Panel
from trimtab.domain import Side, spot
from trimtab.domain.decisions import PortfolioState
from trimtab.execution.costs import CostModel
from trimtab.policy.orders import plan_orders
from trimtab.policy.rebalance import CostAwareSettings, cost_aware_rule, no_trade_bands
from trimtab.review.holdings import Holdings, HoldingsError, market_symbol, resolve_holdings

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


def plan_rebalance(
    holdings: Holdings,
    targets: dict[str, dict[str, float]],
    panel: Panel,
    *,
    as_of: Any = None,
    costs: CostModel | None = None,
    settings: CostAwareSettings | None = None,
    min_notional: float = 5.0,
) -> dict[str, Any]:
    """The plan per subaccount: orders with reason, cost and benefit, and what was left."""
    costs = costs or CostModel()
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
        vols = np.sqrt(np.clip(np.diag(cov), 0, None))
        volume = panel.quote_volume[list(symbols)].iloc[i].to_numpy(float)
        notional = np.abs(current - target) * equity
        unit_costs = np.array(
            [
                costs.fee_rate(maker=False) + costs.slippage(n, v)
                for n, v in zip(notional, volume, strict=True)
            ]
        )
        s = settings or CostAwareSettings()
        choice = cost_aware_rule(current, target, unit_costs, vols, cov, s)
        bands = no_trade_bands(unit_costs, vols, s)
        entry: dict[str, Any] = {
            "equity": equity,
            "cash": cash,
            "decision": choice.reason,
            "expected_benefit_bps": choice.benefit * 1e4,
            "expected_cost_bps": choice.cost * 1e4,
            "orders": [],
            "untraded": [],
        }
        traded = set(choice.traded) if choice.weights is not None else set()
        if choice.weights is not None:
            state = PortfolioState(equity, cash, qty, prices, equity)
            orders, skipped = plan_orders(
                choice.weights,
                state,
                prices,
                symbols,
                lambda sym: spot(sym, min_notional=min_notional),
                reason="cost-aware rebalance",
                subaccount=sub,
            )
            for o in orders:
                j = symbols.index(o.symbol)
                value = (
                    o.quote_quantity
                    if o.quote_quantity is not None
                    else (o.quantity or 0.0) * prices[j]
                )
                entry["orders"].append(
                    {
                        "symbol": o.symbol,
                        "side": str(o.side),
                        "quantity": o.quantity if o.side is Side.SELL else value / prices[j],
                        "notional": value,
                        "weight_from": current[j],
                        "weight_to": choice.weights[j],
                        "target": target[j],
                        "expected_cost": value * unit_costs[j],
                        "reason": (
                            f"{o.symbol} at {current[j]:.1%} is outside its ±{bands[j]:.1%} band around "
                            f"{target[j]:.1%}: {o.reason}"
                        ),
                    }
                )
            for sk in skipped:
                entry["untraded"].append(
                    {"symbol": sk.symbol, "reason": f"below the exchange minimum: {sk.reason}"}
                )
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


def render_plan(plan: dict[str, Any]) -> str:
    """The plan as text a trader reads."""
    lines = [f"Rebalance plan as of {plan['as_of'][:10]} (monitor mode: nothing is sent)", ""]
    for sub, e in plan["subaccounts"].items():
        lines.append(f"{sub}: equity {e['equity']:,.0f} USDT, cash {e['cash']:,.0f}")
        lines.append(f"  decision: {e['decision']}")
        for o in e["orders"]:
            lines.append(
                f"  {o['side'].upper():4s} {o['quantity']:.6g} {o['symbol']} (~{o['notional']:,.0f} USDT, "
                f"cost ~{o['expected_cost']:,.2f}): {o['reason']}"
            )
        for u in e["untraded"]:
            lines.append(f"  left: {u['symbol']}: {u['reason']}")
        lines.append("")
    return "\n".join(lines)
