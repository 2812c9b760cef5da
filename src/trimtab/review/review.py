"""The portfolio review: what is risky in the portfolio held, why, and what to do about it.

``review_portfolio(holdings, panel)`` values the holdings at the close of the as-of bar,
scores their risk with ``trimtab.risk.score`` and returns a JSON-ready dict (schema
below, ``SCHEMA_VERSION``). Everything is causal: only bars up to the as-of bar are read.

Valuation
    Every position is valued at the close of the as-of bar. Perpetuals are marked on the
    spot bars of the same symbol (the data has no mark-price series); the gap between a
    perp's mark and spot is usually well under 0.1 %, but not in a squeeze. A perp adds
    ``margin + unrealized PnL`` to equity (never below zero for an isolated perp past its
    liquidation price: only its margin can be lost) and ``size * close`` to exposure.
    Cash is the free stablecoin balance of a subaccount (1 USDT each). Equity, gross
    exposure (sum of |notional|), net exposure and leverage (gross / equity) are given
    for the account and for every subaccount.

Liquidation
    Isolated perps: ``trimtab.domain.Position.liquidation_price`` (Binance USDT-M formula)
    with the default maintenance brackets (Binance's BTCUSDT schedule, used for every
    symbol since the exchange's own is not loaded). Cross perps: the subaccount's free
    stablecoin cash is added to the position's margin (each cross position is assumed to
    have the whole free cash behind it, other positions held at their marks, so with
    several cross positions in one subaccount the estimate is optimistic). Distance is
    in % of the close and in daily volatilities (EWMA volatility / sqrt(365)).

Portfolio factors
    Scored by ``trimtab.risk.portfolio`` (its docstring lists every factor and its
    ramp), the one portfolio score the engine and the allocator use too: the review
    builds its market view once (``portfolio_market``) and re-scores every candidate
    recommendation against it (``score_portfolio``). Weights are net exposure per symbol
    / account equity. The unweighted correlation-shift z-score of the held assets
    (``signals.correlation``) is reported beside the correlation factor; the PCA
    number of bets (``independent_bets``) beside the minimum-torsion one: for long-only
    crypto it is ~1 whatever one holds, so it does not drive the score.

Regime
    A daily index of the holdings with today's weights held through the past (each day,
    the weights of the assets then listed, renormalised; the index starts once half of
    the exposure is listed), last 4 years at most. ``regime_change_score`` (10 vs 90
    days) and a 3-state Gaussian HMM (``fit_regimes``) fitted once on the index up to
    the as-of bar, read through its filtered (forward) probabilities only. The most
    probable state names the regime: calm, elevated or high-vol; a change score >= 3
    (a sudden volatility jump the HMM has not caught yet) raises it one level.

Recommendations
    Candidate actions (add margin to a perp to move its liquidation to
    ``TARGET_LIQUIDATION_VOLS`` daily volatilities; cut its size keeping the margin;
    close it; bring account leverage to 2x; cap a position at ``POSITION_CAP`` of
    equity; halve positions trending against their side or paying heavy funding; cut
    positions too large for their volume; shrink the largest correlated cluster to
    ``CLUSTER_CAP`` of equity; rebalance a subaccount's spot holdings to inverse-volatility weights). Each is
    applied to the holdings and the whole score re-run; those that lower it by at least
    0.5 points (or push a perp's liquidation further away) are kept, sorted by the
    reduction. Trades are at the as-of close, before fees. ``apply_recommendation``
    applies one to a ``Holdings`` so anyone can check the effect.

JSON schema (``SCHEMA_VERSION`` 1; numbers are floats, null when unknown):

    {
      "schema_version": 1,
      "as_of": "2023-06-30",                 # the as-of bar's date (ISO time if intraday)
      "bar": "2023-06-30T00:00:00+00:00",    # its open time (UTC)
      "valued_at": "2023-07-01T00:00:00+00:00",  # its close: the prices used
      "timeframe": "1d",
      "risk_score": 41.2, "risk_level": "moderate",  # low <25 <= moderate <50 <= high <75 <= extreme
      "summary": "one line for a person",
      "probability_of_drawdown": null | 0.12,
      "drawdown_event": {"threshold": 0.10, "horizon_days": 7},
      "equity": USDT, "cash": USDT, "gross_exposure": USDT, "net_exposure": USDT,
      "leverage": gross / equity,
      "factors": [{"name", "value", "score", "weight", "contribution", "explanation",
                   "symbols"?}],           # contributions add up to risk_score
      "omitted_factors": [{"name", "reason"}],
      "flags": [{"severity": critical|high|medium|low, "code", "message", "symbols",
                 "subaccount"}],          # most severe first
      "recommendations": [{"action", "symbol", "symbols", "subaccount", "amount", "unit",
                           "notional", "reason", "expected_score_after", "score_change",
                           "expected_effect", "factor_changes": {name: score delta},
                           "legs": [...]}],   # largest score reduction first
      "positions": [{"subaccount", "symbol", "asset", "kind": spot|perp, "side",
                     "quantity", "price", "notional", "value", "weight", "entry_price",
                     "unrealized_pnl", "leverage", "effective_leverage", "margin",
                     "margin_mode", "liquidation_price", "liquidation_distance_pct",
                     "liquidation_distance_vols", "daily_vol", "risk_score",
                     "factor_scores": {...}, "where", "note"}],
      "subaccounts": {name: {"equity", "cash", "spot_value", "perp_margin",
                             "unrealized_pnl", "gross_exposure", "net_exposure",
                             "leverage", "positions"}},
      "regime": {"label", "probabilities": {"calm", "normal", "turbulent"},
                 "state_volatility": {...}, "change_score", "volatility_10d",
                 "volatility_90d", "history_days", "method", "explanation"},
      "concentration": {"effective_bets", "independent_bets", "hhi",
                        "effective_positions", "largest_position": {"symbol", "weight"},
                        "largest_cluster": {"exposure", "symbols"}, "clusters": [...]},
      "correlation": {"average_30d", "average_180d", "shift", "market_shift_z",
                      "most_correlated": [{"pair", "correlation"}]},
      "data": {"source", "timeframe", "symbols", "funding"},
      "notes": [...]
    }

Units: money in USDT, weights and percentages as fractions, volatilities annualised
fractions except ``daily_vol`` (fraction per day).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel, timeframe_seconds
from trimtab.domain import Position, perpetual
from trimtab.domain.quotes import format_price
from trimtab.domain.valuation import perp_equity, unrealized_pnl
from trimtab.review.holdings import (
    STABLECOINS,
    Book,
    Holding,
    Holdings,
    HoldingsError,
    resolve_holdings,
)
from trimtab.risk.portfolio import (
    FUNDING_DAYS,
    PerpExposure,
    PortfolioMarket,
    portfolio_market,
    score_portfolio,
)
from trimtab.risk.score import (
    ASSET_WEIGHTS,
    PORTFOLIO_WEIGHTS,
    TREND_WINDOWS,
    Calibration,
    FactorReading,
    risk_level,
)
from trimtab.signals.regime import fit_regimes, regime_change_score

__all__ = [
    "SCHEMA_VERSION",
    "HoldingsError",
    "apply_recommendation",
    "fit_holdings_regime",
    "review_portfolio",
]

SCHEMA_VERSION = 1
#: Where "add margin" / "cut leverage" put a perp's liquidation, in daily volatilities.
TARGET_LIQUIDATION_VOLS = 6.0
#: Largest weight a single symbol should keep (fraction of equity) in recommendations.
POSITION_CAP = 0.25
TARGET_LEVERAGE = 2.0
#: Largest exposure one correlated cluster should keep (fraction of equity).
CLUSTER_CAP = 0.8
MIN_SCORE_GAIN = 0.5
MAX_RECOMMENDATIONS = 8
SEVERITIES = ("critical", "high", "medium", "low")

DrawdownInput = float | Callable[[pd.Series, Panel, pd.Timestamp], float] | None
#: The HMM regime fit on the holdings' daily index: ``fit_holdings_regime`` or a stand-in
#: with its contract (``run_review`` passes one that keeps the answer on disk).
RegimeFit = Callable[[pd.Series], tuple[list[float], list[float] | None]]


# --------------------------------------------------------------------------- market view


@dataclass
class _PositionState:
    holding: Holding
    price: float
    notional: float
    value: float
    upnl: float | None
    liquidation_price: float | None = None
    distance_pct: float | None = None
    distance_vols: float | None = None
    loss_if_liquidated: float | None = None
    liquidation_score: float = 0.0
    touched: bool = False
    effective_leverage: float | None = None


@dataclass
class _State:
    """The scored portfolio: positions, accounts, factor readings and the score."""

    positions: list[_PositionState]
    subaccounts: dict[str, dict[str, float]]
    equity: float
    cash: float
    gross: float
    net: float
    leverage: float
    weights: pd.Series  # net exposure per symbol / equity
    invested: float
    readings: list[FactorReading]
    omitted: list[dict[str, str]]
    score: float
    concentration: dict[str, Any]
    correlation: dict[str, Any]
    funding: dict[str, dict[str, Any]] = field(default_factory=dict)


def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _liquidation(h: Holding, price: float, free_cash: float) -> tuple[float | None, float]:
    """Liquidation price of a perp and the margin backing it (cross adds free cash)."""
    margin = float(h.margin or 0.0)
    if h.margin_mode == "cross":
        margin += max(free_cash, 0.0)
    pos = Position(
        instrument=perpetual(h.symbol),
        quantity=h.quantity,
        entry_price=float(h.entry_price or price),
        margin=margin,
        leverage=float(h.leverage or 1.0),
    )
    return pos.liquidation_price(), margin


def _evaluate(
    book: Book,
    m: PortfolioMarket,
    drawdown_probability: float | None,
    threshold: float,
    horizon_days: int,
    cal: Calibration,
) -> _State:
    """Value the book at the market's prices, measure each perp's liquidation distance,
    then score it with ``trimtab.risk.portfolio.score_portfolio``."""
    positions: list[_PositionState] = []
    subs: dict[str, dict[str, float]] = {
        name: {
            "equity": cash,
            "cash": cash,
            "spot_value": 0.0,
            "perp_margin": 0.0,
            "unrealized_pnl": 0.0,
            "gross_exposure": 0.0,
            "net_exposure": 0.0,
            "positions": 0,
        }
        for name, cash in book.cash.items()
    }
    for h in book.positions:
        price = float(m.price[h.symbol])
        notional = h.quantity * price
        upnl = None if h.entry_price is None else unrealized_pnl(h.quantity, price, h.entry_price)
        s = subs[h.subaccount]
        if h.kind == "perp":
            # Margin plus PnL, but a position cannot lose more than its isolated margin
            # (or, in cross mode, the subaccount's cash too): past its liquidation price
            # it is worth nothing, not less.
            floor = 0.0 if h.margin_mode != "cross" else -max(book.cash[h.subaccount], 0.0)
            value = perp_equity(float(h.margin or 0.0), float(upnl or 0.0), floor=floor)
            s["perp_margin"] += float(h.margin or 0.0)
        else:
            value = notional
            s["spot_value"] += value
        if upnl is not None:
            s["unrealized_pnl"] += upnl
        s["equity"] += value
        s["gross_exposure"] += abs(notional)
        s["net_exposure"] += notional
        s["positions"] += 1
        positions.append(_PositionState(h, price, notional, value, upnl))
    for s in subs.values():
        s["leverage"] = s["gross_exposure"] / s["equity"] if s["equity"] > 0 else math.inf
    equity = sum(s["equity"] for s in subs.values())
    cash = sum(s["cash"] for s in subs.values())
    gross = sum(abs(p.notional) for p in positions)
    net = sum(p.notional for p in positions)
    denom = equity if equity > 0 else max(gross, 1.0)
    leverage = gross / equity if equity > 0 else math.inf

    exposure: dict[str, float] = {}
    for p in positions:
        exposure[p.holding.symbol] = exposure.get(p.holding.symbol, 0.0) + p.notional
    w = pd.Series(exposure, dtype=float) / denom
    w = w[w.abs() > 1e-12]

    # Liquidation of every perp.
    for p in positions:
        h = p.holding
        if h.kind != "perp":
            continue
        liq, margin = _liquidation(h, p.price, book.cash.get(h.subaccount, 0.0))
        p.liquidation_price = liq
        equity_in_position = margin + float(p.upnl or 0.0)
        p.effective_leverage = (
            abs(p.notional) / (float(h.margin or 0.0) + float(p.upnl or 0.0))
            if float(h.margin or 0.0) + float(p.upnl or 0.0) > 0
            else math.inf
        )
        p.loss_if_liquidated = max(equity_in_position, 0.0)
        dvol = float(m.daily_vol.get(h.symbol, np.nan))
        if liq is None:
            continue
        side = 1.0 if h.quantity > 0 else -1.0
        p.distance_pct = side * (p.price - liq) / p.price
        p.distance_vols = max(p.distance_pct, 0.0) / dvol if dvol > 0 else None
        lo, hi = float(m.low.get(h.symbol, np.nan)), float(m.high.get(h.symbol, np.nan))
        p.touched = bool((side > 0 and lo <= liq) or (side < 0 and hi >= liq))

    perps = [p for p in positions if p.holding.kind == "perp"]
    risk = score_portfolio(
        m,
        w,
        equity=denom,
        leverage=leverage,
        subaccount_leverage={name: s["leverage"] for name, s in subs.items()},
        perps=[
            PerpExposure(
                symbol=p.holding.symbol,
                side=p.holding.side,
                quantity=p.holding.quantity,
                price=p.price,
                notional=p.notional,
                liquidation_price=p.liquidation_price,
                distance_pct=p.distance_pct,
                distance_vols=p.distance_vols,
                loss_if_liquidated=float(p.loss_if_liquidated or 0.0),
            )
            for p in perps
        ],
        drawdown_probability=drawdown_probability,
        threshold=threshold,
        horizon_days=horizon_days,
        calibration=cal,
    )
    for p, s in zip(perps, risk.liquidation_scores, strict=True):
        p.liquidation_score = s
    return _State(
        positions=positions,
        subaccounts=subs,
        equity=equity,
        cash=cash,
        gross=gross,
        net=net,
        leverage=leverage,
        weights=w,
        invested=risk.invested,
        readings=risk.readings,
        omitted=risk.omitted,
        score=risk.score,
        concentration=risk.concentration,
        correlation=risk.correlation,
        funding=risk.funding,
    )


# --------------------------------------------------------------------------- regime


def fit_holdings_regime(level: pd.Series) -> tuple[list[float], list[float] | None]:
    """The 3-state HMM (``trimtab.signals.regime.fit_regimes``) fitted once on the whole
    daily index ``level`` of the holdings: the filtered probabilities of (calm, normal,
    turbulent) at its last bar, and each state's annualised volatility (fraction) when
    those probabilities are finite (else None). Depends on ``level`` alone."""
    n_feat = len(level) - 10
    res = fit_regimes(level.to_frame(), min_history=n_feat, refit_every=n_feat)
    probs = [float(p.iloc[-1, 0]) for p in res.probs]
    if not all(math.isfinite(p) for p in probs):
        return probs, None
    return probs, [float(v) for v in res.fits[str(level.name)][-1].annual_vol]


def _regime(
    m: PortfolioMarket, weights: pd.Series, regime_fit: RegimeFit | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": None,
        "probabilities": None,
        "state_volatility": None,
        "change_score": None,
        "volatility_10d": None,
        "volatility_90d": None,
        "history_days": 0,
        "method": "3-state Gaussian HMM (filtered probabilities) on a daily index of the holdings, "
        "and regime_change_score (10 vs 90 days)",
        "explanation": "no holdings",
    }
    if weights.empty or m.daily_close.empty:
        return out
    w = weights / weights.abs().sum()
    r = m.daily_close[w.index].pct_change(fill_method=None).iloc[1:]
    x = r.to_numpy(dtype=float)
    avail = np.isfinite(x)
    wa = w.to_numpy()
    cover = (avail * np.abs(wa)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        port = np.where(avail, x * wa, 0.0).sum(axis=1) / cover
    ok = cover >= 0.5
    if not ok.any():
        return out
    first = int(np.argmax(ok))
    # Days where under half the exposure was listed (after the start) count as flat.
    port = np.where(ok, port, 0.0)[first:]
    # r = pct_change().iloc[1:], so r's row k is daily_close's row k + 1.
    level = pd.Series(
        np.concatenate(([1.0], np.cumprod(1.0 + port))),
        index=m.daily_close.index[first:],
        name="holdings",
    )
    out["history_days"] = len(port)
    rets = level.pct_change().iloc[1:]
    if len(rets) >= 10:
        out["volatility_10d"] = float(rets.iloc[-10:].std() * math.sqrt(365))
    if len(rets) >= 90:
        out["volatility_90d"] = float(rets.iloc[-90:].std() * math.sqrt(365))
        z = regime_change_score(level, 10, 90).iloc[-1]
        out["change_score"] = _f(z)
    z = out["change_score"] or 0.0
    names = ("calm", "elevated", "high-vol")
    n_feat = len(level) - 10
    label_idx: int | None = None
    if n_feat >= 150:
        probs, vols = (regime_fit or fit_holdings_regime)(level)
        if vols is not None and all(math.isfinite(p) for p in probs):
            out["probabilities"] = dict(zip(("calm", "normal", "turbulent"), probs, strict=True))
            out["state_volatility"] = dict(
                zip(("calm", "normal", "turbulent"), map(float, vols), strict=True)
            )
            label_idx = int(np.argmax(probs))
    if label_idx is None:
        out["method"] = (
            "regime_change_score and realised volatility (too little history for the HMM)"
        )
        v10 = out["volatility_10d"] or 0.0
        label_idx = 2 if v10 >= 1.0 else 1 if (v10 >= 0.6 or z >= 1.5) else 0
    if z >= 3.0:
        label_idx = min(label_idx + 1, 2)
    out["label"] = names[label_idx]
    parts = []
    if out["probabilities"]:
        p = out["probabilities"]
        sv = out["state_volatility"]
        parts.append(
            f"HMM: calm {p['calm']:.0%} / normal {p['normal']:.0%} / turbulent {p['turbulent']:.0%} "
            f"(states near {sv['calm']:.0%}, {sv['normal']:.0%}, {sv['turbulent']:.0%} a year)"
        )
    if out["volatility_10d"] is not None and out["volatility_90d"] is not None:
        parts.append(
            f"10-day volatility {out['volatility_10d']:.0%} vs 90-day {out['volatility_90d']:.0%}"
            f" (change score {z:+.1f})"
        )
    out["explanation"] = f"{names[label_idx]}: " + "; ".join(parts) if parts else names[label_idx]
    return out


# --------------------------------------------------------------------------- flags


def _name(sym: str, book: Book) -> str:
    for p in book.positions:
        if p.symbol == sym:
            return p.asset
    return sym


def _usd(x: float) -> str:
    return f"{x:,.0f} USDT"


def _lev(h: Holding) -> str:
    return f" {h.leverage:g}x" if h.leverage else ""


def _flags(
    book: Book,
    m: PortfolioMarket,
    st: _State,
    regime: dict[str, Any],
    dd: float | None,
    threshold: float,
    horizon: int,
) -> list[dict[str, Any]]:
    flags: list[tuple[int, float, dict[str, Any]]] = []
    denom = st.equity if st.equity > 0 else max(st.gross, 1.0)

    def add(sev: str, code: str, msg: str, symbols=(), sub: str | None = None, rank: float = 0.0):
        flags.append(
            (
                SEVERITIES.index(sev),
                -rank,
                {
                    "severity": sev,
                    "code": code,
                    "message": msg,
                    "symbols": list(symbols),
                    "subaccount": sub,
                },
            )
        )

    if st.equity <= 0:
        add(
            "critical",
            "EQUITY_NOT_POSITIVE",
            f"account equity is {_usd(st.equity)}: losses exceed the capital",
            rank=1e9,
        )
    for p in st.positions:
        h = p.holding
        if h.kind != "perp" or p.liquidation_price is None:
            continue
        liq = p.liquidation_price
        stake = (p.loss_if_liquidated or 0.0) / denom
        size = abs(p.notional) / denom
        label = f"{h.symbol} {h.side}{_lev(h)}"
        if p.distance_pct is not None and p.distance_pct <= 0:
            add(
                "critical",
                "LIQUIDATED",
                f"{label} is past its liquidation price {format_price(liq)} (close {format_price(p.price)}): the exchange "
                "would have closed it; check the position",
                (h.symbol,),
                h.subaccount,
                1e8,
            )
            continue
        if p.touched:
            add(
                "critical",
                "LIQUIDATION_TOUCHED",
                f"{label}: the bar's {'low' if h.quantity > 0 else 'high'} went through the "
                f"liquidation price {format_price(liq)}; check the position still exists",
                (h.symbol,),
                h.subaccount,
                1e7,
            )
        d = p.distance_vols
        if d is None:
            continue
        sev = (
            "critical"
            if d < 1.5
            else "high"
            if d < 3
            else "medium"
            if d < 5
            else "low"
            if d < 8
            else None
        )
        if sev is None:
            continue
        if size < 0.05 and sev != "low":  # a small punt: one level less
            sev = SEVERITIES[SEVERITIES.index(sev) + 1]
        add(
            sev,
            "LIQUIDATION_NEAR",
            f"{label} is {p.distance_pct:.1%} ({d:.1f} daily moves) from liquidation at {format_price(liq)}"
            f" ({_usd(p.loss_if_liquidated or 0)} of margin at stake, {stake:.0%} of equity)",
            (h.symbol,),
            h.subaccount,
            1000 - d,  # before account-level flags of the same severity
        )
    if math.isfinite(st.leverage) and st.leverage > 1.5:
        lv = st.leverage
        sev = "critical" if lv >= 5 else "high" if lv >= 3 else "medium" if lv >= 2 else "low"
        add(
            sev,
            "LEVERAGE_HIGH",
            f"gross exposure is {lv:.1f}x equity ({_usd(st.gross)} on {_usd(st.equity)})",
            rank=lv,
        )
    for name, s in st.subaccounts.items():
        lv = s["leverage"]
        if (
            len(st.subaccounts) > 1
            and lv >= 3
            and (not math.isfinite(st.leverage) or lv > st.leverage + 0.5)
        ):
            add(
                "high" if lv >= 5 else "medium",
                "SUBACCOUNT_LEVERAGE",
                f"subaccount {name} runs {lv:.1f}x ({_usd(s['gross_exposure'])} of exposure on "
                f"{_usd(s['equity'])} of equity)",
                sub=name,
                rank=lv,
            )
    w = st.weights
    for sym, wt in w.items():
        aw = abs(wt)
        if aw >= 0.3:
            size = f"{aw:.0%} of equity" if aw < 2 else f"{aw:.1f}x equity"
            add(
                "high" if aw >= 0.5 else "medium",
                "POSITION_CONCENTRATION",
                f"{sym} exposure is {size}" + (" (net short)" if wt < 0 else ""),
                (sym,),
                rank=aw,
            )
    conc = st.concentration
    cl = conc.get("largest_cluster")
    if cl and len(cl["symbols"]) >= 2 and cl["exposure"] >= 0.5:
        names = ", ".join(_name(s, book) for s in cl["symbols"][:6]) + (
            f" and {len(cl['symbols']) - 6} more" if len(cl["symbols"]) > 6 else ""
        )
        add(
            "high" if cl["exposure"] > 1.0 else "medium",
            "CLUSTER_CONCENTRATION",
            f"{cl['exposure']:.0%} of equity in one correlated cluster ({names}): they moved "
            "together (correlation above 0.5) over the last 90 days",
            cl["symbols"],
            rank=cl["exposure"],
        )
    if conc.get("independent_bets") is not None and len(w) >= 3 and conc["independent_bets"] < 1.5:
        add(
            "low",
            "FEW_INDEPENDENT_BETS",
            f"{len(w)} holdings but about {conc['independent_bets']:.1f} independent bet(s): "
            "they rise and fall together",
            list(w.index),
        )
    corr = st.correlation
    if corr.get("average_30d") is not None:
        c30, c180 = corr["average_30d"], corr["average_180d"]
        if c30 >= 0.8:
            add(
                "medium",
                "CORRELATION_HIGH",
                f"holdings move together: average correlation {c30:.2f} over 30 days",
                list(w.index),
                rank=c30,
            )
        z = corr.get("market_shift_z")
        if (corr["shift"] or 0) >= 0.15 or (z is not None and z >= 2):
            add(
                "medium",
                "CORRELATION_RISING",
                f"correlations among holdings jumped: {c30:.2f} over 30 days vs {c180:.2f} over 180"
                + (f" (shift z-score {z:+.1f})" if z is not None else ""),
                list(w.index),
                rank=corr["shift"] or 0,
            )
    for sym, wt in w.items():
        aw = abs(wt)
        if aw < 0.02:
            continue
        nm = _name(sym, book)
        below = [win for win in TREND_WINDOWS if bool(m.below[win].get(sym, False))]
        above = [win for win in TREND_WINDOWS if bool(m.above[win].get(sym, False))]
        sev_w = "high" if aw >= 0.25 else "medium" if aw >= 0.10 else "low"
        if wt > 0 and len(below) == len(TREND_WINDOWS):
            add(
                sev_w,
                "DOWNTREND",
                f"{nm} is in a downtrend on all horizons (below its "
                f"{'-, '.join(map(str, TREND_WINDOWS[:-1]))}- and {TREND_WINDOWS[-1]}-day averages); "
                f"it is {aw:.0%} of equity",
                (sym,),
                rank=aw,
            )
        elif wt > 0 and len(below) == len(TREND_WINDOWS) - 1:
            add(
                "low",
                "DOWNTREND",
                f"{nm} is below its {' and '.join(f'{x}-day' for x in below)} averages",
                (sym,),
                rank=aw,
            )
        if wt < 0 and len(above) == len(TREND_WINDOWS):
            add(
                sev_w,
                "UPTREND_AGAINST_SHORT",
                f"{nm} short: price is in an uptrend on all horizons "
                "(above its 20-, 60- and 200-day averages)",
                (sym,),
                rank=aw,
            )
        vol = _f(m.values["volatility"].get(sym))
        if vol is not None and vol >= 1.0 and aw >= 0.10:
            add(
                "medium",
                "HIGH_VOLATILITY",
                f"{nm} swings {vol:.0%} a year (about {vol / math.sqrt(365):.1%} a day) "
                f"and is {aw:.0%} of equity",
                (sym,),
                rank=vol * aw,
            )
        ratio = _f(m.values["vol_regime"].get(sym))
        if ratio is not None and ratio >= 2.0 and aw >= 0.05:
            add(
                "medium",
                "VOLATILITY_SPIKE",
                f"{nm}'s volatility over 10 days is {ratio:.1f}x its 90-day level",
                (sym,),
                rank=ratio,
            )
        ddv = _f(m.values["drawdown"].get(sym))
        if ddv is not None and ddv >= 0.6 and aw >= 0.05:
            add(
                "low", "DEEP_DRAWDOWN", f"{nm} is {ddv:.0%} below its 1-year high", (sym,), rank=ddv
            )
        vol_usd = _f(m.daily_volume.get(sym))
        notional = abs(wt) * denom
        if vol_usd is not None and vol_usd > 0:
            share = notional / vol_usd
            if share >= 0.01:
                add(
                    "high" if share >= 0.05 else "medium",
                    "POSITION_VS_VOLUME",
                    f"the {nm} position ({_usd(notional)}) is {share:.1%} of its daily volume "
                    "(30-day average): exiting quickly will move the price",
                    (sym,),
                    rank=share,
                )
            if vol_usd < 5e6 and aw >= 0.02:
                add(
                    "medium",
                    "ILLIQUID",
                    f"{nm} trades only about ${vol_usd:,.0f} a day",
                    (sym,),
                    rank=-vol_usd,
                )
        hist = _f(m.history_days.get(sym))
        if _f(m.values["trend"].get(sym)) is None and hist is not None:
            add(
                "low",
                "SHORT_HISTORY",
                f"{nm} has only {hist:.0f} days of data: its trend and volatility "
                "regime are not measured",
                (sym,),
            )
        if not bool(m.has_bar.get(sym, True)):
            add(
                "low",
                "STALE_PRICE",
                f"{sym} did not trade on the as-of bar: valued at its previous close",
                (sym,),
            )
    for p in st.positions:
        h = p.holding
        if h.kind != "perp":
            continue
        info = st.funding.get(h.symbol)
        if info is None:
            add(
                "low",
                "FUNDING_UNKNOWN",
                f"no funding data for {h.symbol} around the as-of bar: funding not counted",
                (h.symbol,),
                h.subaccount,
            )
            continue
        side = 1.0 if h.quantity > 0 else -1.0
        paid = side * info["carry"]
        if paid >= 0.10:
            monthly = abs(p.notional) * paid / 12
            add(
                "high" if paid >= 0.30 else "medium",
                "FUNDING_COST",
                f"{h.symbol} {h.side} pays {paid:.0%} a year in funding ({FUNDING_DAYS}-day average, "
                f"{info['venue']}), about {_usd(monthly)} a month",
                (h.symbol,),
                h.subaccount,
                rank=paid,
            )
    label = regime.get("label")
    if label == "high-vol":
        add(
            "high",
            "REGIME_HIGH_VOL",
            f"the holdings are in a high-volatility regime: {regime['explanation']}",
            list(w.index),
        )
    elif label == "elevated":
        add(
            "low",
            "REGIME_ELEVATED",
            f"volatility regime is elevated: {regime['explanation']}",
            list(w.index),
        )
    if dd is not None and dd >= 0.15:
        add(
            "high" if dd >= 0.30 else "medium",
            "DRAWDOWN_PROBABILITY",
            f"the drawdown model gives a {dd:.0%} chance of losing more than {threshold:.0%} within {horizon} days",
            rank=dd,
        )
    if not st.positions:
        add("low", "NO_POSITIONS", "the account holds only cash: nothing is at risk")
    flags.sort(key=lambda t: (t[0], t[1]))
    return [f for _, _, f in flags]


# --------------------------------------------------------------------------- recommendations


def _apply_legs(book: Book, legs: Sequence[dict[str, Any]]) -> Book:
    """The book after the trades of a recommendation (at the as-of close, no fees)."""
    positions = list(book.positions)
    cash = dict(book.cash)

    def find(leg: dict[str, Any]) -> int:
        for i, p in enumerate(positions):
            if (
                p.subaccount == leg["subaccount"]
                and p.section == leg["section"]
                and p.key == leg["key"]
            ):
                return i
        raise KeyError(f"no holding for {leg}")

    for leg in legs:
        op = leg["op"]
        if op == "set_spot":
            i = find(leg)
            h = positions[i]
            cash[h.subaccount] += (h.quantity - leg["quantity"]) * leg["price"]
            positions[i] = replace(h, quantity=leg["quantity"])
        elif op == "set_perp":
            i = find(leg)
            h = positions[i]
            size, new = abs(h.quantity), leg["size"]
            closed = size - new
            side = 1.0 if h.quantity > 0 else -1.0
            pnl = side * closed * (leg["price"] - float(h.entry_price or leg["price"]))
            margin = float(h.margin or 0.0)
            if leg.get("keep_margin") and new > 0:
                cash[h.subaccount] += pnl
                if cash[h.subaccount] < 0:  # a realised loss beyond free cash eats the margin
                    margin += cash[h.subaccount]
                    cash[h.subaccount] = 0.0
            else:
                released = margin * closed / size
                margin -= released
                # An isolated position gives back at worst nothing (see _evaluate).
                back = released + pnl
                cash[h.subaccount] += back if h.margin_mode == "cross" else max(back, 0.0)
            positions[i] = replace(
                h,
                quantity=side * new,
                margin=margin,
                leverage=new * float(h.entry_price or 0.0) / margin if margin > 0 else h.leverage,
            )
        elif op == "add_margin":
            i = find(leg)
            h = positions[i]
            for src in leg.get("sources", []):
                cash[src["subaccount"]] -= src["amount"]
            if h.margin_mode == "cross":
                cash[h.subaccount] += leg["amount"]
            else:
                cash[h.subaccount] -= leg.get("own", 0.0)
                total = float(h.margin or 0.0) + leg["amount"]
                positions[i] = replace(
                    h,
                    margin=total,
                    leverage=abs(h.quantity) * float(h.entry_price or 0.0) / total,
                )
        else:  # pragma: no cover - legs are built here
            raise ValueError(f"unknown leg op {op!r}")
    positions = [p for p in positions if p.quantity != 0]
    return replace(book, positions=positions, cash=cash)


def apply_recommendation(holdings: Holdings, recommendation: dict[str, Any]) -> Holdings:
    """``holdings`` after the trades of one recommendation of ``review_portfolio``.

    Trades happen at the as-of close recorded in the recommendation, before fees;
    proceeds of sales go to (and costs come from) the subaccount's USDT cash.
    """
    subs = {name: sub.model_copy(deep=True) for name, sub in holdings.subaccounts.items()}

    def move_cash(name: str, amount: float) -> None:
        cash = dict(subs[name].cash)
        if amount >= 0:
            cash["USDT"] = cash.get("USDT", 0.0) + amount
        else:
            need = -amount
            for cur in STABLECOINS:
                take = min(cash.get(cur, 0.0), need)
                if take > 0:
                    cash[cur] -= take
                    need -= take
            if need > 1e-9:
                cash["USDT"] = cash.get("USDT", 0.0) - need
        subs[name] = subs[name].model_copy(update={"cash": cash})

    for leg in recommendation.get("legs", []):
        name = leg["subaccount"]
        sub = subs[name]
        if leg["op"] == "set_spot":
            if leg["section"] == "cash":
                old = sub.cash[leg["key"]]
                subs[name] = sub.model_copy(
                    update={"cash": {**sub.cash, leg["key"]: leg["quantity"]}}
                )
            else:
                entry = sub.spot[leg["key"]]
                old = entry.quantity
                spot = dict(sub.spot)
                spot[leg["key"]] = entry.model_copy(update={"quantity": leg["quantity"]})
                subs[name] = sub.model_copy(update={"spot": spot})
            move_cash(name, (old - leg["quantity"]) * leg["price"])
        elif leg["op"] == "set_perp":
            perps = list(sub.perps)
            perp = perps[leg["key"]]
            new, size = leg["size"], perp.size
            closed = size - new
            side = 1.0 if perp.side == "long" else -1.0
            pnl = side * closed * (leg["price"] - perp.entry_price)
            margin = perp.effective_margin
            if leg.get("keep_margin") and new > 0:
                free = sum(sub.cash.get(c, 0.0) for c in STABLECOINS)
                if free + pnl < 0:
                    margin += free + pnl
                    move_cash(name, -free)
                else:
                    move_cash(name, pnl)
            else:
                released = margin * closed / size
                margin -= released
                back = released + pnl
                move_cash(name, back if perp.margin_mode == "cross" else max(back, 0.0))
            sub = subs[name]
            if new > 0:
                perps[leg["key"]] = perp.model_copy(
                    update={"size": new, "margin": margin, "leverage": None}
                )
            else:
                perps[leg["key"]] = None  # type: ignore[call-overload]
            subs[name] = sub.model_copy(update={"perps": perps})
        elif leg["op"] == "add_margin":
            for src in leg.get("sources", []):
                move_cash(src["subaccount"], -src["amount"])
            sub = subs[name]
            perps = list(sub.perps)
            perp = perps[leg["key"]]
            if perp.margin_mode == "cross":
                move_cash(name, leg["amount"])
            else:
                if leg.get("own", 0.0):
                    move_cash(name, -leg["own"])
                sub = subs[name]
                perps[leg["key"]] = perp.model_copy(
                    update={"margin": perp.effective_margin + leg["amount"], "leverage": None}
                )
                subs[name] = sub.model_copy(update={"perps": perps})
    # Closed perps were left as None to keep indices stable while applying legs.
    for name, sub in subs.items():
        if any(p is None for p in sub.perps):
            subs[name] = sub.model_copy(update={"perps": [p for p in sub.perps if p is not None]})
    return holdings.copy_with(subs)


def _nice_up(x: float) -> float:
    """Round an amount up to 2 significant digits (2,345 -> 2,400)."""
    if x <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(x)) - 1)
    return math.ceil(x / step - 1e-9) * step


def _round_qty(q: float) -> float:
    """A quantity to 4 significant digits (down, so sells never exceed the holding)."""
    if q <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(q)) - 3)
    return math.floor(q / step + 1e-9) * step


def _margin_for_price(h: Holding, target: float) -> float:
    """Isolated margin that puts the liquidation price of ``h`` at ``target`` (USDT)."""
    inst = perpetual(h.symbol)
    q = abs(h.quantity)
    side = 1.0 if h.quantity > 0 else -1.0
    tier = inst.margin_tier(q * target)
    entry = float(h.entry_price or target)
    return (
        q * (side * (entry - target) + target * tier.maintenance_margin_rate)
        - tier.maintenance_amount
    )


def _size_for_price(h: Holding, margin: float, target: float) -> float | None:
    """Size that puts the liquidation at ``target`` with ``margin`` kept (base units)."""
    inst = perpetual(h.symbol)
    side = 1.0 if h.quantity > 0 else -1.0
    entry = float(h.entry_price or target)
    for tier in inst.margin_tiers:
        per_unit = side * (entry - target) + target * tier.maintenance_margin_rate
        if per_unit <= 0:
            return None
        q = (margin + tier.maintenance_amount) / per_unit
        if q * target <= tier.max_notional:
            return q
    return None


def _verb(legs: list[dict[str, Any]], weight: float) -> str:
    """How a trader says it: sell spot, close a perp long, buy back a short."""
    if weight < 0:
        return "buy back"
    return "close" if all(leg["op"] == "set_perp" for leg in legs) else "sell"


def _backing_after(h: Holding, size: float, price: float, free_cash: float) -> float:
    """Margin behind a perp cut to ``size`` at ``price`` keeping its margin: the realised
    PnL of the closed part is paid from free cash first, then from the margin."""
    side = 1.0 if h.quantity > 0 else -1.0
    pnl = side * (abs(h.quantity) - size) * (price - float(h.entry_price or price))
    if h.margin_mode == "cross":
        return float(h.margin or 0.0) + free_cash + pnl
    return float(h.margin or 0.0) + min(0.0, free_cash + pnl)


def _candidates(book: Book, m: PortfolioMarket, st: _State) -> list[dict[str, Any]]:
    """Candidate actions (unscored): action, symbol(s), subaccount, amount, reason, legs."""
    out: list[dict[str, Any]] = []
    denom = st.equity if st.equity > 0 else max(st.gross, 1.0)
    by_symbol: dict[str, list[_PositionState]] = {}
    for p in st.positions:
        by_symbol.setdefault(p.holding.symbol, []).append(p)

    def reduce_leg(p: _PositionState, new_abs: float, keep_margin: bool = False) -> dict[str, Any]:
        h = p.holding
        base = {
            "subaccount": h.subaccount,
            "section": h.section,
            "key": h.key,
            "symbol": h.symbol,
            "price": p.price,
            "from": abs(h.quantity),
        }
        if h.kind == "perp":
            return {"op": "set_perp", **base, "size": new_abs, "keep_margin": keep_margin}
        return {"op": "set_spot", **base, "quantity": new_abs}

    def cash_sources(
        sub: str, amount: float, include_own: bool
    ) -> tuple[float, list[dict[str, Any]], float]:
        """Own cash used, transfers from other subaccounts, and the deposit still needed."""
        need = amount
        own = min(max(book.cash.get(sub, 0.0), 0.0), need) if include_own else 0.0
        need -= own
        sources = []
        for name, c in sorted(book.cash.items(), key=lambda kv: -kv[1]):
            if name == sub or need <= 1e-9 or c <= 0:
                continue
            take = min(c, need)
            sources.append({"subaccount": name, "amount": take})
            need -= take
        return own, sources, max(need, 0.0)

    for p in st.positions:
        h = p.holding
        if h.kind != "perp" or p.liquidation_price is None:
            continue
        dvol = float(m.daily_vol.get(h.symbol, np.nan))
        d = p.distance_vols
        if not (dvol > 0) or d is None or d >= TARGET_LIQUIDATION_VOLS:
            continue
        side = 1.0 if h.quantity > 0 else -1.0
        target = p.price * (1.0 - side * TARGET_LIQUIDATION_VOLS * dvol)
        label = f"{h.symbol} {h.side}{_lev(h)}"
        now = (
            f"{label} is {p.distance_pct:.1%} ({d:.1f} daily moves) from "
            f"liquidation at {format_price(p.liquidation_price)}"
            if (p.distance_pct or 0) > 0
            else f"{label} is past its liquidation price {format_price(p.liquidation_price)} "
            f"(close {format_price(p.price)})"
        )
        free = book.cash.get(h.subaccount, 0.0) if h.margin_mode == "cross" else 0.0
        backing = float(h.margin or 0.0) + max(free, 0.0)
        if target > 0:
            extra = _margin_for_price(h, target) - backing
            if extra > 0:
                amount = _nice_up(extra)
                cross = h.margin_mode == "cross"
                own, sources, deposit = cash_sources(h.subaccount, amount, include_own=not cross)
                where = []
                if own > 0:
                    where.append(f"{_usd(own)} from {h.subaccount}'s cash")
                where += [
                    f"{_usd(s['amount'])} transferred from {s['subaccount']}" for s in sources
                ]
                if deposit > 0:
                    where.append(f"{_usd(deposit)} deposited")
                out.append(
                    {
                        "action": "add_margin",
                        "symbol": h.symbol,
                        "subaccount": h.subaccount,
                        "amount": amount,
                        "unit": "USDT",
                        "notional": amount,
                        "reason": f"{now}; {_usd(amount)} more margin ({', '.join(where)}) moves it to about "
                        f"{format_price(target)}, {TARGET_LIQUIDATION_VOLS:.0f} daily moves away",
                        "legs": [
                            {
                                "op": "add_margin",
                                "subaccount": h.subaccount,
                                "section": h.section,
                                "key": h.key,
                                "symbol": h.symbol,
                                "price": p.price,
                                "amount": amount,
                                "own": own,
                                "sources": sources,
                                "deposit": deposit,
                            }
                        ],
                    }
                )
            # Closing part of a losing position realises the loss: it is paid from free
            # cash, then from the margin (see _apply_legs), so solve for the size with
            # the margin that will be left (a few fixed-point steps).
            free_cash = book.cash.get(h.subaccount, 0.0)
            entry = float(h.entry_price or p.price)

            q_new = _size_for_price(h, backing, target)
            for _ in range(30):
                if q_new is None or q_new <= 0:
                    break
                q_new = _size_for_price(h, _backing_after(h, q_new, p.price, free_cash), target)
            if q_new is not None and 0 < q_new < abs(h.quantity):
                q_new = _round_qty(q_new)
                cut = abs(h.quantity) - q_new
                kept = float(h.margin or 0.0) + min(0.0, free_cash + side * cut * (p.price - entry))
                new_lev = q_new * entry / kept if kept > 0 else math.inf
                out.append(
                    {
                        "action": "cut_leverage",
                        "symbol": h.symbol,
                        "subaccount": h.subaccount,
                        "amount": cut,
                        "unit": h.asset,
                        "notional": cut * p.price,
                        "reason": f"{now}; close {cut:,.6g} {h.asset} ({_usd(cut * p.price)}) and leave the "
                        f"margin in the position: leverage {h.leverage or 0:.1f}x -> {new_lev:.1f}x, liquidation "
                        f"about {format_price(target)}, {TARGET_LIQUIDATION_VOLS:.0f} daily moves away",
                        "legs": [reduce_leg(p, q_new, keep_margin=True)],
                    }
                )
        out.append(
            {
                "action": "close",
                "symbol": h.symbol,
                "subaccount": h.subaccount,
                "amount": abs(h.quantity),
                "unit": h.asset,
                "notional": abs(p.notional),
                "reason": f"{now}; closing it removes the liquidation risk and returns "
                f"{_usd(max(p.value, 0))} (margin and PnL) to {h.subaccount}'s cash",
                "legs": [reduce_leg(p, 0.0)],
            }
        )

    # Account leverage above TARGET_LEVERAGE: cut the largest perp (margin released).
    perps = [p for p in st.positions if p.holding.kind == "perp"]
    if perps and math.isfinite(st.leverage) and st.leverage > TARGET_LEVERAGE and st.equity > 0:
        excess = st.gross - TARGET_LEVERAGE * st.equity
        p = max(perps, key=lambda x: abs(x.notional))
        h = p.holding
        q_new = _round_qty(max(abs(h.quantity) - excess / p.price, 0.0))
        if 0 < q_new < abs(h.quantity):
            cut = abs(h.quantity) - q_new
            out.append(
                {
                    "action": "reduce",
                    "symbol": h.symbol,
                    "subaccount": h.subaccount,
                    "amount": cut,
                    "unit": h.asset,
                    "notional": cut * p.price,
                    "reason": f"gross exposure is {st.leverage:.1f}x equity; reducing {h.symbol} by "
                    f"{cut:,.6g} {h.asset} ({_usd(cut * p.price)}) brings it to {TARGET_LEVERAGE:.0f}x",
                    "legs": [reduce_leg(p, q_new)],
                }
            )

    def scale_symbol(sym: str, factor: float) -> list[dict[str, Any]]:
        """Legs scaling every holding of ``sym`` on its net side by ``factor``."""
        wt = st.weights.get(sym, 0.0)
        legs = []
        for p in by_symbol.get(sym, []):
            if np.sign(p.notional) != np.sign(wt):
                continue
            legs.append(reduce_leg(p, _round_qty(abs(p.holding.quantity) * factor)))
        return legs

    def trade_size(legs: list[dict[str, Any]]) -> tuple[float, float]:
        qty = notional = 0.0
        for leg in legs:
            h = next(
                p.holding
                for p in st.positions
                if p.holding.subaccount == leg["subaccount"]
                and p.holding.section == leg["section"]
                and p.holding.key == leg["key"]
            )
            new = leg["size"] if leg["op"] == "set_perp" else leg["quantity"]
            qty += abs(h.quantity) - new
            notional += (abs(h.quantity) - new) * leg["price"]
        return qty, notional

    # Concentration in one symbol.
    for sym, wt in st.weights.items():
        aw = abs(wt)
        if aw > POSITION_CAP + 0.10:
            legs = scale_symbol(sym, POSITION_CAP / aw)
            qty, notional = trade_size(legs)
            if notional > 0:
                out.append(
                    {
                        "action": "reduce",
                        "symbol": sym,
                        "subaccount": legs[0]["subaccount"] if len(legs) == 1 else None,
                        "amount": qty,
                        "unit": _name(sym, book),
                        "notional": notional,
                        "reason": f"{sym} is {aw:.0%} of equity; reduce it to {POSITION_CAP:.0%} "
                        f"({_verb(legs, wt)} {qty:,.6g} {_name(sym, book)}, {_usd(notional)})",
                        "legs": legs,
                    }
                )
    # Trend against the side held, heavy funding, size vs volume: halve or cut.
    for sym, wt in st.weights.items():
        aw = abs(wt)
        if aw < 0.05:
            continue
        v, _ = m.side_trend(sym, np.sign(wt))
        nm = _name(sym, book)
        if math.isfinite(v) and v >= 2 / 3:
            legs = scale_symbol(sym, 0.5)
            qty, notional = trade_size(legs)
            what = "downtrend" if wt > 0 else "uptrend against the short"
            out.append(
                {
                    "action": "reduce",
                    "symbol": sym,
                    "subaccount": legs[0]["subaccount"] if len(legs) == 1 else None,
                    "amount": qty,
                    "unit": nm,
                    "notional": notional,
                    "reason": f"{nm} is in a {what} (strength {v:.0%}); halve it: "
                    f"{_verb(legs, wt)} {qty:,.6g} {nm} ({_usd(notional)})",
                    "legs": legs,
                }
            )
        vol_usd = _f(m.daily_volume.get(sym))
        if vol_usd and aw * denom / vol_usd > 0.02:
            factor = 0.01 * vol_usd / (aw * denom)
            legs = scale_symbol(sym, factor)
            qty, notional = trade_size(legs)
            out.append(
                {
                    "action": "reduce",
                    "symbol": sym,
                    "subaccount": legs[0]["subaccount"] if len(legs) == 1 else None,
                    "amount": qty,
                    "unit": nm,
                    "notional": notional,
                    "reason": f"the {nm} position is {aw * denom / vol_usd:.1%} of its daily volume; "
                    f"cut it to 1% ({qty:,.6g} {nm}, {_usd(notional)}) so it can be exited",
                    "legs": legs,
                }
            )
    for p in perps:
        info = st.funding.get(p.holding.symbol)
        if info is None:
            continue
        paid = (1.0 if p.holding.quantity > 0 else -1.0) * info["carry"]
        if paid >= 0.20:
            q_new = _round_qty(abs(p.holding.quantity) * 0.5)
            cut = abs(p.holding.quantity) - q_new
            out.append(
                {
                    "action": "reduce",
                    "symbol": p.holding.symbol,
                    "subaccount": p.holding.subaccount,
                    "amount": cut,
                    "unit": p.holding.asset,
                    "notional": cut * p.price,
                    "reason": f"{p.holding.symbol} {p.holding.side} pays {paid:.0%} a year in funding; halve it",
                    "legs": [reduce_leg(p, q_new)],
                }
            )
    # The largest correlated cluster above CLUSTER_CAP: shrink it pro rata to the cap.
    cl = st.concentration.get("largest_cluster")
    if cl and len(cl["symbols"]) >= 2 and cl["exposure"] > CLUSTER_CAP + 0.05:
        factor = CLUSTER_CAP / cl["exposure"]
        legs = [leg for s in cl["symbols"] for leg in scale_symbol(s, factor)]
        qty, notional = trade_size(legs)
        names = ", ".join(_name(s, book) for s in cl["symbols"][:6])
        out.append(
            {
                "action": "reduce_cluster",
                "symbol": None,
                "symbols": list(cl["symbols"]),
                "subaccount": None,
                "amount": notional,
                "unit": "USDT",
                "notional": notional,
                "reason": f"{cl['exposure']:.0%} of equity is in one correlated cluster ({names}); "
                f"cut every position in it by {1 - factor:.0%} to bring it to {CLUSTER_CAP:.0%} "
                f"({_usd(notional)} sold)",
                "legs": legs,
            }
        )
    # Diversify within a subaccount: inverse-volatility weights over its spot holdings.
    for sub in book.subaccounts:
        spots = [
            p for p in st.positions if p.holding.subaccount == sub and p.holding.kind == "spot"
        ]
        if len(spots) < 3:
            continue
        total = sum(p.notional for p in spots)
        inv = np.array([1.0 / float(m.daily_vol.get(p.holding.symbol, np.nan)) for p in spots])
        if not np.all(np.isfinite(inv)) or total <= 0:
            continue
        target = inv / inv.sum() * total
        if np.max(np.abs(target - np.array([p.notional for p in spots]))) < 0.05 * total:
            continue
        legs = []
        traded = 0.0
        for p, t in zip(spots, target, strict=True):
            q = t / p.price
            q = _round_qty(q)
            traded += abs(q - p.holding.quantity) * p.price
            legs.append(reduce_leg(p, q))
        out.append(
            {
                "action": "rebalance",
                "symbol": None,
                "symbols": [p.holding.symbol for p in spots],
                "subaccount": sub,
                "amount": traded / 2,
                "unit": "USDT",
                "notional": traded / 2,
                "reason": f"rebalance {sub}'s spot holdings to equal risk (weights inversely "
                f"proportional to volatility): the calmest coins get more, the wildest less",
                "legs": legs,
            }
        )
    return out


def _effect_text(before: _State, after: _State) -> tuple[str, dict[str, float]]:
    """What an action does to the score, in words, and the score change of each factor."""
    b = {r.name: r for r in before.readings}
    a = {r.name: r for r in after.readings}
    changes = {
        name: round(float(a[name].score) - float(b[name].score), 4)
        for name in b
        if name in a and math.isfinite(a[name].score) and math.isfinite(b[name].score)
    }
    parts = []
    ranked = sorted(changes, key=lambda n: -abs(changes[n]) * PORTFOLIO_WEIGHTS.get(n, 0.1))
    for name in ranked[:3]:
        if abs(changes[name]) < 0.5:
            continue
        vb, va = b[name].value, a[name].value
        same = (not math.isfinite(vb) and not math.isfinite(va)) or (
            math.isfinite(vb) and math.isfinite(va) and abs(va - vb) <= 0.005 * max(abs(vb), 1e-9)
        )
        what = f"{name} score {b[name].score:.0f} -> {a[name].score:.0f}"
        if not same:
            what = (
                f"{name} {_fmt_value(name, vb)} -> {_fmt_value(name, va)} ({what.split(' ', 1)[1]})"
            )
        parts.append(what)
    text = f"risk score {before.score:.1f} -> {after.score:.1f} ({after.score - before.score:+.1f})"
    if parts:
        text += ": " + "; ".join(parts)
    if abs(after.invested - before.invested) >= 0.02:
        text += f"; share of equity invested {before.invested:.0%} -> {after.invested:.0%}"
    return text, changes


def _fmt_value(name: str, v: float) -> str:
    if v is None or not math.isfinite(v):
        return "none" if name == "liquidation" else "n/a"
    if name in ("volatility", "drawdown", "trend", "funding", "drawdown_probability"):
        return f"{v:.0%}"
    if name == "liquidation":
        return f"{v:.1f} daily moves"
    if name == "leverage":
        return f"{v:.1f}x"
    if name == "concentration":
        return f"{v:.1f} bets"
    if name == "liquidity":
        return f"${10**v:,.0f}/day"
    if name == "vol_regime":
        return f"{v:.1f}x"
    return f"{v:.2f}"


def _recommend(
    book: Book, m: PortfolioMarket, st: _State, score_fn: Callable[[Book], _State]
) -> list[dict[str, Any]]:
    seen: set[str] = set()
    recs = []
    worst_liq = {
        p.holding.symbol: p.distance_vols for p in st.positions if p.distance_vols is not None
    }
    for cand in _candidates(book, m, st):
        key = repr(cand["legs"])
        if key in seen or not cand["legs"]:
            continue
        seen.add(key)
        after = score_fn(_apply_legs(book, cand["legs"]))
        gain = st.score - after.score
        # A liquidation fix is worth showing even when the score barely moves (a small
        # position's liquidation is scaled down in the score, not in the account).
        liq_fix = cand["action"] in ("add_margin", "cut_leverage", "close") and (
            cand["action"] == "close"
            or any(
                (p.distance_vols or 0) > (worst_liq.get(p.holding.symbol) or 0) + 0.5
                for p in after.positions
                if p.holding.symbol == cand["symbol"]
            )
        )
        if gain < MIN_SCORE_GAIN and not (liq_fix and gain >= 0):
            continue
        text, changes = _effect_text(st, after)
        rec = {
            "action": cand["action"],
            "symbol": cand.get("symbol"),
            "symbols": cand.get("symbols") or ([cand["symbol"]] if cand.get("symbol") else []),
            "subaccount": cand.get("subaccount"),
            "amount": cand["amount"],
            "unit": cand["unit"],
            "notional": cand["notional"],
            "reason": cand["reason"],
            "expected_score_after": after.score,
            "score_change": after.score - st.score,
            "expected_effect": text,
            "factor_changes": changes,
            "legs": cand["legs"],
        }
        recs.append(rec)
    recs.sort(key=lambda r: r["score_change"])
    return recs[:MAX_RECOMMENDATIONS]


# --------------------------------------------------------------------------- the review


def review_portfolio(
    holdings: Holdings,
    panel: Panel,
    *,
    funding: pd.DataFrame | None = None,
    as_of: Any = None,
    threshold: float = 0.10,
    horizon_days: int = 7,
    drawdown_probability: DrawdownInput = None,
    calibration: Calibration | None = None,
    regime_fit: RegimeFit | None = None,
) -> dict[str, Any]:
    """Review ``holdings`` against ``panel`` at the as-of bar; the JSON-ready dict of the
    module docstring.

    ``as_of`` overrides the holdings' own (default: the last bar). ``funding`` is the
    long frame of ``trimtab.data.read_funding``. ``drawdown_probability`` is a
    probability in [0, 1] of losing more than ``threshold`` within ``horizon_days``, or
    a callable ``(weights, panel, bar) -> probability`` (weights: net exposure per symbol
    / equity), or None (then the factor is omitted and ``probability_of_drawdown`` is
    null). ``regime_fit`` replaces ``fit_holdings_regime`` (same contract; ``run_review``
    passes one that keeps its answer on disk). Raises ``HoldingsError`` for holdings that
    do not fit the data.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a fraction in (0, 1), got {threshold}")
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, got {horizon_days}")
    # The matrices here are small (assets x assets): one BLAS thread is faster, and a
    # multi-threaded BLAS on a busy machine can be a hundred times slower.
    with _one_blas_thread():
        return _review(
            holdings,
            panel,
            funding=funding,
            as_of=as_of,
            threshold=threshold,
            horizon_days=horizon_days,
            drawdown_probability=drawdown_probability,
            calibration=calibration,
            regime_fit=regime_fit,
        )


def _one_blas_thread() -> AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _review(
    holdings: Holdings,
    panel: Panel,
    *,
    funding: pd.DataFrame | None,
    as_of: Any,
    threshold: float,
    horizon_days: int,
    drawdown_probability: DrawdownInput,
    calibration: Calibration | None,
    regime_fit: RegimeFit | None = None,
) -> dict[str, Any]:
    cal = calibration or Calibration()
    book = resolve_holdings(holdings, panel, as_of)
    m = portfolio_market(
        panel,
        book.symbols or [],
        book.bar,
        perp_symbols=[p.symbol for p in book.positions if p.kind == "perp"],
        funding=funding,
    )

    def score(b: Book, p_dd: float | None) -> _State:
        return _evaluate(b, m, p_dd, threshold, horizon_days, cal)

    st0 = score(book, None)
    p_dd: float | None = None
    if drawdown_probability is not None:
        raw = (
            drawdown_probability(st0.weights, panel, book.bar)
            if callable(drawdown_probability)
            else drawdown_probability
        )
        p_dd = _f(raw)
        if p_dd is not None and not 0.0 <= p_dd <= 1.0:
            raise ValueError(f"drawdown_probability must be a probability in [0, 1], got {raw!r}")
        if p_dd is not None:  # None: the model had too little history to say
            st0 = score(book, p_dd)
    st = st0
    regime = _regime(m, st.weights, regime_fit)
    flags = _flags(book, m, st, regime, p_dd, threshold, horizon_days)
    recs = _recommend(book, m, st, lambda b: score(b, p_dd))

    bar_len = pd.Timedelta(seconds=timeframe_seconds(panel.timeframe))
    daily = panel.timeframe == "1d"
    positions = []
    denom = st.equity if st.equity > 0 else max(st.gross, 1.0)
    for p in st.positions:
        h = p.holding
        sign = 1.0 if h.quantity > 0 else -1.0
        fs = {}
        for name in ASSET_WEIGHTS:
            if name == "trend":
                fs[name] = m.side_trend(h.symbol, sign)[1]
            else:
                fs[name] = float(m.scores[name].get(h.symbol, np.nan))
        valid = {k: v for k, v in fs.items() if math.isfinite(v)}
        risk = (
            sum(ASSET_WEIGHTS[k] * v for k, v in valid.items())
            / sum(ASSET_WEIGHTS[k] for k in valid)
            if len(valid) == len(ASSET_WEIGHTS)
            else None
        )
        positions.append(
            {
                "subaccount": h.subaccount,
                "symbol": h.symbol,
                "asset": h.asset,
                "kind": h.kind,
                "side": h.side,
                "quantity": abs(h.quantity),
                "price": p.price,
                "notional": p.notional,
                "value": p.value,
                "weight": p.notional / denom,
                "entry_price": h.entry_price,
                "unrealized_pnl": p.upnl,
                "leverage": h.leverage if h.kind == "perp" else 1.0,
                "effective_leverage": p.effective_leverage if h.kind == "perp" else 1.0,
                "margin": h.margin,
                "margin_mode": h.margin_mode,
                "liquidation_price": p.liquidation_price,
                "liquidation_distance_pct": p.distance_pct,
                "liquidation_distance_vols": p.distance_vols,
                "daily_vol": _f(m.daily_vol.get(h.symbol)),
                "risk_score": risk,
                "factor_scores": fs,
                "where": h.where,
                "note": h.note,
            }
        )
    factors = [r.to_dict() for r in st.readings]
    top_flag = flags[0]["message"] if flags else "no flags"
    notes = [
        "valued at the close of the as-of bar; perpetuals are marked on the spot close of the same symbol",
        "liquidation prices use Binance's maintenance-margin brackets (December 2023) for BTC "
        "and ETH, and a conservative mid-cap schedule (Binance's DOTUSDT) for other perpetuals",
        "recommendations trade at the as-of close, before fees and slippage",
        *book.notes,
    ]
    if any(p.holding.margin_mode == "cross" for p in st.positions):
        notes.append(
            "cross-margin perpetuals: the subaccount's free cash counts as their margin (other "
            "positions held at their marks)"
        )
    funding_desc: dict[str, Any] | None = None
    if funding is not None:
        funding_desc = {
            "symbols": {
                k: {"carry_annual": v["carry"], "venue": v["venue"], "events": v["events"]}
                for k, v in m.carry.items()
            },
            "window_days": FUNDING_DAYS,
        }
    result = {
        "schema_version": SCHEMA_VERSION,
        "as_of": book.bar.strftime("%Y-%m-%d") if daily else book.bar.isoformat(),
        "bar": book.bar.isoformat(),
        "valued_at": (book.bar + bar_len).isoformat(),
        "timeframe": panel.timeframe,
        "risk_score": st.score,
        "risk_level": risk_level(st.score),
        "summary": f"risk {st.score:.0f}/100 ({risk_level(st.score)}): {top_flag}",
        "probability_of_drawdown": p_dd,
        "drawdown_event": {"threshold": threshold, "horizon_days": horizon_days},
        "equity": st.equity,
        "cash": st.cash,
        "gross_exposure": st.gross,
        "net_exposure": st.net,
        "leverage": st.leverage,
        "factors": factors,
        "omitted_factors": st.omitted,
        "flags": flags,
        "recommendations": recs,
        "positions": positions,
        "subaccounts": st.subaccounts,
        "regime": regime,
        "concentration": st.concentration,
        "correlation": st.correlation,
        "data": {
            "source": panel.provenance.get("source"),
            "timeframe": panel.timeframe,
            "symbols": m.symbols,
            "funding": funding_desc,
        },
        "notes": notes,
    }
    return _clean(result)


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, floats to 10 significant digits."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return float(f"{v:.10g}") if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return str(obj)
