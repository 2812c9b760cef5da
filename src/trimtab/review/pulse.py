"""The portfolio pulse: the alert rules of ``alerts:`` evaluated at every cycle.

``evaluate_pulse(settings, inputs, previous, last_alert)`` compares what this cycle saw
(``PulseInputs``) with what the cycle before saw, and returns the ``Alert`` objects to
raise. It is a pure function: the caller (``trimtab.app.monitor``) builds the inputs
from the runner's cycle report and the reviews, stores the alerts and delivers them.

Inputs
    Per subaccount (``SubaccountPulse``): guard state before and after the cycle,
    drawdown from the equity peak, the review's risk score and each perpetual's
    liquidation distance (None when no review ran this cycle), symbols held, how many
    closes in a row each held symbol has had no fresh bar, the orders rejected or failed
    in the cycle, the proposals waiting. The same for the whole account (named
    ``account``). Per held asset (``AssetReading``, ``asset_readings``): the ratio of its
    10-day to 90-day volatility and its correlation-shift z-score (30 vs 180 days of
    daily returns against the rest of the panel's universe, z over 365 days).

Rules (parameters and defaults in ``trimtab.config``) and when they fire
    ==================== ======================================== ================
    kind                 fires when                               severity default
    ==================== ======================================== ================
    risk_score           score crosses ``level`` up (and/or down) warning / info
    liquidation_distance a perp comes within ``daily_moves``      critical
    breaker              a guard state changes                    critical into
                                                                  HALTED, info back
                                                                  to active, else
                                                                  warning
    drawdown             drawdown goes past ``level``             warning
    correlation_shift    a held asset's z goes past ``z``         warning
    volatility_regime    a held asset's regime label changes      warning up, info
                                                                  down
    stale_data           a held symbol reaches ``bars`` closes    warning
                         in a row without a fresh bar
    order_rejected       an order was rejected or failed          warning
    proposal_waiting     a proposal waits (again every cooldown)  info
    ==================== ======================================== ================

    Crossing rules fire on the crossing, not at every bar past the level. With nothing
    seen before (``previous`` None: the first cycle), a condition already met counts as a
    crossing, so a run starts with the alerts of its state; the cooldown keeps a
    restart from repeating them. A reading that is unknown this cycle (no review ran)
    fires nothing; ``PulseInputs.carried`` keeps the last known one for the next
    comparison.

De-duplication
    Every alert has a ``key`` (rule, subaccount, subject and direction, e.g.
    ``risk_score:core:up:60``). ``last_alert(key)`` gives the run-clock timestamp of
    the newest alert with that key (the store's ``last_alert`` in production); an alert
    whose key fired less than its rule's cooldown ago is dropped. A cooldown in bars is
    ``bars x inputs.bar_seconds``.

Subaccount filter: a rule with ``subaccount: NAME`` looks at that subaccount only
(``account``: the whole account only); without one, at every subaccount and the account.
Money is USDT, drawdowns and distances in % are fractions, times are UTC (run clock).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from trimtab.config import AlertSettings, cooldown_seconds
from trimtab.data.panel import Panel, timeframe_seconds
from trimtab.domain.quotes import format_price
from trimtab.risk.score import volatility_regime
from trimtab.signals.correlation import correlation_shift_scan

__all__ = [
    "ACCOUNT",
    "Alert",
    "AssetReading",
    "PerpReading",
    "PulseInputs",
    "SubaccountPulse",
    "asset_readings",
    "evaluate_pulse",
    "regime_label",
    "subaccount_pulse",
]

ACCOUNT = "account"
#: Days of the volatility ratio and of the correlation shift (see ``asset_readings``).
VOL_SHORT_DAYS, VOL_LONG_DAYS = 10, 90
CORR_SHORT_DAYS, CORR_LONG_DAYS, CORR_Z_DAYS = 30, 180, 365
REGIMES = ("calm", "normal", "elevated", "high-vol")

LastAlert = Callable[[str], "pd.Timestamp | None"]


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class PerpReading:
    """A perpetual's liquidation, from the review: ``distance_vols`` in daily
    volatilities, ``distance_pct`` a fraction of the close (<= 0: past it), prices USDT;
    ``action`` the review's recommendation for it (text) if any."""

    symbol: str
    side: str
    price: float | None
    liquidation_price: float | None
    distance_pct: float | None
    distance_vols: float | None
    action: str | None = None


@dataclass(frozen=True)
class AssetReading:
    """One held asset: ``volatility_ratio`` (10-day / 90-day volatility, 1 = usual) and
    ``correlation_shift_z`` (z-score of its 30- minus 180-day average correlation with
    the universe); None when the history is too short."""

    volatility_ratio: float | None = None
    correlation_shift_z: float | None = None


@dataclass(frozen=True)
class SubaccountPulse:
    """What the pulse reads of one subaccount (or of the account, ``name == "account"``)
    at one close. ``risk_score`` (0-100), ``risk_level``, ``summary``, ``top_action`` and
    ``perps`` come from the review and are None when none ran this cycle."""

    name: str
    trading_state: str | None = None
    previous_trading_state: str | None = None
    equity: float | None = None
    peak: float | None = None
    risk_score: float | None = None
    risk_level: str | None = None
    summary: str | None = None
    top_action: str | None = None
    perps: Mapping[str, PerpReading] | None = None
    held: tuple[str, ...] = ()
    stale: Mapping[str, int] = field(default_factory=dict)
    rejected: tuple[Mapping[str, Any], ...] = ()
    proposals_waiting: tuple[Mapping[str, Any], ...] = ()

    @property
    def drawdown(self) -> float | None:
        """Fraction below the peak (0 at the peak), None when unknown."""
        if self.equity is None or self.peak is None or not self.peak > 0:
            return None
        return max(0.0, 1.0 - self.equity / self.peak)


@dataclass(frozen=True)
class PulseInputs:
    """One cycle as the pulse sees it: the close ``timestamp`` (UTC, run clock), the
    bar's length in seconds, the account, the subaccounts and the held assets."""

    timestamp: pd.Timestamp
    bar_seconds: float
    account: SubaccountPulse
    subaccounts: Mapping[str, SubaccountPulse]
    assets: Mapping[str, AssetReading] = field(default_factory=dict)

    def units(self) -> list[SubaccountPulse]:
        """The subaccounts, then the account."""
        return [*self.subaccounts.values(), self.account]

    def carried(self, previous: PulseInputs | None) -> PulseInputs:
        """These inputs with the readings unknown this cycle (no review, no asset reading)
        taken from ``previous``: what the next cycle compares with."""
        if previous is None:
            return self

        def carry(cur: SubaccountPulse, old: SubaccountPulse | None) -> SubaccountPulse:
            if old is None or cur.risk_score is not None:
                return cur
            return replace(
                cur,
                risk_score=old.risk_score,
                risk_level=old.risk_level,
                summary=old.summary,
                top_action=old.top_action,
                perps=old.perps if cur.perps is None else cur.perps,
            )

        assets = dict(previous.assets)
        assets.update(self.assets)
        return replace(
            self,
            account=carry(self.account, previous.account),
            subaccounts={
                n: carry(s, previous.subaccounts.get(n)) for n, s in self.subaccounts.items()
            },
            assets={s: assets[s] for s in assets if s in self.assets or s in _held(self)},
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-ready form (for the store's component state)."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "bar_seconds": self.bar_seconds,
            "account": _unit_state(self.account),
            "subaccounts": {n: _unit_state(s) for n, s in self.subaccounts.items()},
            "assets": {
                s: {
                    "volatility_ratio": a.volatility_ratio,
                    "correlation_shift_z": a.correlation_shift_z,
                }
                for s, a in self.assets.items()
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PulseInputs:
        """The inverse of ``to_state``."""
        return cls(
            timestamp=pd.Timestamp(state["timestamp"]),
            bar_seconds=float(state["bar_seconds"]),
            account=_unit_from(state["account"]),
            subaccounts={n: _unit_from(s) for n, s in state["subaccounts"].items()},
            assets={s: AssetReading(**a) for s, a in state.get("assets", {}).items()},
        )


def _unit_state(u: SubaccountPulse) -> dict[str, Any]:
    return {
        "name": u.name,
        "trading_state": u.trading_state,
        "previous_trading_state": u.previous_trading_state,
        "equity": u.equity,
        "peak": u.peak,
        "risk_score": u.risk_score,
        "risk_level": u.risk_level,
        "summary": u.summary,
        "top_action": u.top_action,
        "perps": None if u.perps is None else {s: p.__dict__.copy() for s, p in u.perps.items()},
        "held": list(u.held),
        "stale": dict(u.stale),
        # Events of one cycle: never compared across cycles, not kept.
    }


def _unit_from(d: Mapping[str, Any]) -> SubaccountPulse:
    perps = d.get("perps")
    return SubaccountPulse(
        name=d["name"],
        trading_state=d.get("trading_state"),
        previous_trading_state=d.get("previous_trading_state"),
        equity=d.get("equity"),
        peak=d.get("peak"),
        risk_score=d.get("risk_score"),
        risk_level=d.get("risk_level"),
        summary=d.get("summary"),
        top_action=d.get("top_action"),
        perps=None if perps is None else {s: PerpReading(**p) for s, p in perps.items()},
        held=tuple(d.get("held") or ()),
        stale={s: int(n) for s, n in (d.get("stale") or {}).items()},
    )


def _held(inputs: PulseInputs) -> set[str]:
    return {s for u in inputs.units() for s in u.held}


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def subaccount_pulse(
    name: str,
    *,
    review: Mapping[str, Any] | None = None,
    trading_state: str | None = None,
    previous_trading_state: str | None = None,
    equity: float | None = None,
    peak: float | None = None,
    positions: Mapping[str, float] | None = None,
    stale: Iterable[str] = (),
    rejected: Sequence[Mapping[str, Any]] = (),
    proposals_waiting: Sequence[Mapping[str, Any]] = (),
    previous: SubaccountPulse | None = None,
) -> SubaccountPulse:
    """A ``SubaccountPulse`` from a cycle's numbers and the review dict of
    ``trimtab.review.review`` (None: no review this cycle). ``stale`` lists the held
    symbols without a fresh bar now; with ``previous`` (the same unit a cycle before)
    their counts of closes in a row continue. ``positions``: symbol -> signed quantity."""
    held = tuple(sorted(s for s, q in (positions or {}).items() if q != 0))
    before = previous.stale if previous is not None else {}
    stale_now = {s: int(before.get(s, 0)) + 1 for s in stale}
    risk = perps = level = summary = top = None
    if review is not None:
        risk = _num(review.get("risk_score"))
        level = review.get("risk_level")
        summary = review.get("summary")
        recs = list(review.get("recommendations") or [])
        top = _rec_text(recs[0]) if recs else None
        perps = {}
        for p in review.get("positions") or []:
            if p.get("kind") != "perp" or (
                p.get("subaccount") not in (None, name) and name != ACCOUNT
            ):
                continue
            sym = p["symbol"]
            rec = next(
                (
                    r
                    for r in recs
                    if r.get("symbol") == sym
                    and r.get("action") in ("add_margin", "cut_leverage", "close")
                ),
                None,
            )
            perps[sym] = PerpReading(
                symbol=sym,
                side=str(p.get("side")),
                price=_num(p.get("price")),
                liquidation_price=_num(p.get("liquidation_price")),
                distance_pct=_num(p.get("liquidation_distance_pct")),
                distance_vols=_num(p.get("liquidation_distance_vols")),
                action=None if rec is None else _rec_text(rec),
            )
    return SubaccountPulse(
        name=name,
        trading_state=trading_state,
        previous_trading_state=previous_trading_state,
        equity=equity,
        peak=peak,
        risk_score=risk,
        risk_level=level,
        summary=summary,
        top_action=top,
        perps=perps,
        held=held,
        stale=stale_now,
        rejected=tuple(rejected),
        proposals_waiting=tuple(proposals_waiting),
    )


def _rec_text(rec: Mapping[str, Any]) -> str:
    reason = rec.get("reason") or rec.get("action")
    effect = rec.get("expected_effect")
    return f"{reason} ({effect})" if effect else str(reason)


def asset_readings(
    panel: Panel, symbols: Iterable[str], bar: pd.Timestamp
) -> dict[str, AssetReading]:
    """The volatility ratio and correlation-shift z of ``symbols`` at ``bar`` (a bar of
    ``panel``), reading nothing after it. Volatilities are ``risk.score.volatility_regime``
    (10 vs 90 days of bar returns); the correlation shift uses daily closes (the last
    close of each UTC day) of every symbol of the panel, 30 vs 180 days, z over 365."""
    symbols = [s for s in dict.fromkeys(symbols) if s in panel.close.columns]
    if not symbols:
        return {}
    pos = panel.index.get_loc(bar)
    bpd = 86400 / timeframe_seconds(panel.timeframe)
    close = panel.close.iloc[: pos + 1]
    n_vol = int((VOL_LONG_DAYS + 1) * bpd) + 1
    ratio = volatility_regime(close[symbols].iloc[-n_vol:], panel.periods_per_year).iloc[-1]
    daily = close if bpd <= 1 else close.resample("1D").last()
    need = CORR_Z_DAYS + CORR_LONG_DAYS + 1
    rets = daily.iloc[-need:].pct_change(fill_method=None).iloc[1:]
    z: pd.Series = pd.Series(np.nan, index=symbols, dtype=float)
    if rets.shape[1] >= 2 and len(rets) > CORR_LONG_DAYS:
        scan = correlation_shift_scan(rets, CORR_SHORT_DAYS, CORR_LONG_DAYS, CORR_Z_DAYS)
        z = scan["shift_z"].reindex(symbols)
    return {
        s: AssetReading(volatility_ratio=_num(ratio.get(s)), correlation_shift_z=_num(z.get(s)))
        for s in symbols
    }


def regime_label(ratio: float | None, calm: float, elevated: float, high: float) -> str | None:
    """calm (< ``calm``), normal, elevated (>= ``elevated``) or high-vol (>= ``high``)."""
    if ratio is None:
        return None
    if ratio >= high:
        return "high-vol"
    if ratio >= elevated:
        return "elevated"
    return "calm" if ratio < calm else "normal"


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """One alert: ``rule`` (its kind), ``key`` (de-duplication), ``severity`` (info |
    warning | critical), ``title`` (one line), ``message`` (what changed, with numbers),
    ``numbers`` (the same numbers by name), ``action`` (what to do), ``subaccount``
    (None: the account), ``timestamp`` (the close, run clock, UTC)."""

    rule: str
    key: str
    timestamp: pd.Timestamp
    severity: str
    title: str
    message: str
    numbers: dict[str, Any]
    action: str
    subaccount: str | None

    def to_dict(self) -> dict[str, Any]:
        """The mapping ``Transaction.add_alert`` takes."""
        return {
            "rule": self.rule,
            "key": self.key,
            "timestamp": self.timestamp,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "numbers": dict(self.numbers),
            "action": self.action,
            "subaccount": self.subaccount,
        }


@dataclass
class _Ctx:
    rule: Any
    inputs: PulseInputs
    previous: PulseInputs | None
    out: list[Alert]

    def add(
        self,
        key: str,
        severity: str,
        title: str,
        message: str,
        numbers: dict[str, Any],
        action: str,
        unit: str,
    ) -> None:
        self.out.append(
            Alert(
                rule=self.rule.kind,
                key=key,
                timestamp=self.inputs.timestamp,
                severity=self.rule.severity or severity,
                title=title,
                message=message,
                numbers={k: v for k, v in numbers.items()},
                action=action,
                subaccount=None if unit == ACCOUNT else unit,
            )
        )

    def units(self) -> list[tuple[SubaccountPulse, SubaccountPulse | None]]:
        """(now, a cycle before) of each unit the rule looks at."""
        want = self.rule.subaccount
        out = []
        for u in self.inputs.units():
            if want is not None and u.name != want:
                continue
            old = None
            if self.previous is not None:
                old = (
                    self.previous.account
                    if u.name == ACCOUNT
                    else self.previous.subaccounts.get(u.name)
                )
            out.append((u, old))
        return out


def _who(name: str) -> str:
    return "the account" if name == ACCOUNT else f"subaccount {name}"


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _risk_score(c: _Ctx) -> None:
    r = c.rule
    for u, old in c.units():
        now = u.risk_score
        if now is None:
            continue
        was = None if old is None else old.risk_score
        numbers = {"risk_score": now, "previous_risk_score": was, "level": r.level}
        if r.direction in ("up", "both") and now >= r.level and (was is None or was < r.level):
            frm = f"rose from {was:.1f} to {now:.1f}" if was is not None else f"is {now:.1f}"
            c.add(
                f"risk_score:{u.name}:up:{r.level:g}",
                "warning",
                f"{u.name}: risk score {now:.0f} crossed above {r.level:g}",
                f"The risk score of {_who(u.name)} {frm} (0-100, {u.risk_level or 'n/a'}), at or "
                f"above the alert level {r.level:g}. {u.summary or ''}".strip(),
                numbers,
                u.top_action or "read the review (trimtab status) and reduce what drives the score",
                u.name,
            )
        if r.direction in ("down", "both") and was is not None and was >= r.level > now:
            c.add(
                f"risk_score:{u.name}:down:{r.level:g}",
                "info",
                f"{u.name}: risk score {now:.0f} back below {r.level:g}",
                f"The risk score of {_who(u.name)} fell from {was:.1f} to {now:.1f}, below the "
                f"alert level {r.level:g} ({u.risk_level or 'n/a'}).",
                numbers,
                "none needed",
                u.name,
            )


def _liquidation(c: _Ctx) -> None:
    r = c.rule
    for u, old in c.units():
        if u.name == ACCOUNT or u.perps is None:
            continue  # perps belong to subaccounts; the account's review repeats them
        for sym, p in u.perps.items():
            d = _liq_distance(p)
            if d is None or d >= r.daily_moves:
                continue
            before = None if old is None or old.perps is None else old.perps.get(sym)
            was = None if before is None else _liq_distance(before)
            if was is not None and was < r.daily_moves:
                continue  # still inside: fired when it came in
            past = p.distance_pct is not None and p.distance_pct <= 0
            where = (
                f"is past its liquidation price {format_price(p.liquidation_price)}"
                if past
                else f"is {d:.1f} daily moves ({_pct(p.distance_pct or 0.0)}) from its "
                f"liquidation price {format_price(p.liquidation_price)}"
            )
            prior = f"; a cycle before it was {was:.1f} daily moves away" if was is not None else ""
            c.add(
                f"liquidation_distance:{u.name}:{sym}",
                "critical",
                f"{u.name}: {sym} {p.side} within {r.daily_moves:g} daily moves of liquidation",
                f"{sym} {p.side} in {_who(u.name)} {where} (close {format_price(p.price)}), "
                f"inside the alert distance of {r.daily_moves:g} daily moves{prior}.",
                {
                    "symbol": sym,
                    "distance_vols": d,
                    "previous_distance_vols": was,
                    "distance_pct": p.distance_pct,
                    "liquidation_price": p.liquidation_price,
                    "price": p.price,
                    "daily_moves": r.daily_moves,
                },
                p.action
                or f"add margin or cut the {sym} position so that its liquidation is at least "
                f"{r.daily_moves:g} daily moves away",
                u.name,
            )


def _liq_distance(p: PerpReading) -> float | None:
    if p.distance_pct is not None and p.distance_pct <= 0:
        return 0.0
    return p.distance_vols


def _state_severity(state: str) -> str:
    s = state.lower()
    if s == "halted":
        return "critical"
    if s in ("active", "normal"):
        return "info"
    return "warning"


def _breaker(c: _Ctx) -> None:
    for u, old in c.units():
        new = u.trading_state
        was = u.previous_trading_state
        if was is None and old is not None:
            was = old.trading_state
        if new is None or was is None or new == was:
            continue
        action = {
            "critical": f"find the cause (trimtab status); trading stays halted until a person "
            f"resumes {_who(u.name)}",
            "info": "none needed: trading is back to normal",
        }.get(_state_severity(new), f"check why {_who(u.name)} is de-risking (trimtab status)")
        c.add(
            f"breaker:{u.name}:{was}->{new}",
            _state_severity(new),
            f"{u.name}: guard {was} -> {new}",
            f"The guard of {_who(u.name)} moved from {was} to {new}"
            + (
                f" (drawdown {_pct(u.drawdown)}, equity {u.equity:,.0f} USDT)."
                if u.drawdown is not None and u.equity is not None
                else "."
            ),
            {"from": was, "to": new, "drawdown": u.drawdown, "equity": u.equity},
            action,
            u.name,
        )


def _drawdown(c: _Ctx) -> None:
    r = c.rule
    for u, old in c.units():
        dd = u.drawdown
        if dd is None or dd < r.level:
            continue
        was = None if old is None else old.drawdown
        if was is not None and was >= r.level:
            continue
        frm = f"from {_pct(was)} " if was is not None else ""
        c.add(
            f"drawdown:{u.name}:{r.level:g}",
            "warning",
            f"{u.name}: drawdown {_pct(dd)} past {_pct(r.level)}",
            f"The drawdown of {_who(u.name)} went {frm}to {_pct(dd)} below its peak "
            f"({u.equity:,.0f} USDT against a peak of {u.peak:,.0f} USDT), past the alert level "
            f"{_pct(r.level)}.",
            {
                "drawdown": dd,
                "previous_drawdown": was,
                "equity": u.equity,
                "peak": u.peak,
                "level": r.level,
            },
            "check the positions losing most; the drawdown governor cuts exposure further down",
            u.name,
        )


def _held_by(c: _Ctx) -> dict[str, list[str]]:
    """Held symbol -> the subaccounts (in the rule's filter) holding it."""
    out: dict[str, list[str]] = {}
    for u, _ in c.units():
        if u.name == ACCOUNT:
            continue
        for s in u.held:
            out.setdefault(s, []).append(u.name)
    return out


def _asset_unit(c: _Ctx) -> str:
    return c.rule.subaccount or ACCOUNT


def _correlation(c: _Ctx) -> None:
    r = c.rule
    for sym, holders in sorted(_held_by(c).items()):
        a = c.inputs.assets.get(sym)
        z = None if a is None else a.correlation_shift_z
        if z is None or z < r.z:
            continue
        old = None if c.previous is None else c.previous.assets.get(sym)
        was = None if old is None else old.correlation_shift_z
        if was is not None and was >= r.z:
            continue
        frm = f"rose from {was:+.1f} to {z:+.1f}" if was is not None else f"is {z:+.1f}"
        unit = _asset_unit(c)
        c.add(
            f"correlation_shift:{unit}:{sym}",
            "warning",
            f"{sym}: correlation shift z {z:+.1f} past {r.z:g}",
            f"{sym} (held in {', '.join(holders)}) moves with the market more than usual: its "
            f"correlation-shift z-score {frm} (30- vs 180-day average correlation), past the "
            f"alert level {r.z:g}. Diversification across the holdings is weaker than it looks.",
            {"symbol": sym, "z": z, "previous_z": was, "level": r.z, "holders": holders},
            "check how much of the book moves with it; consider trimming the correlated cluster",
            unit,
        )


def _volatility(c: _Ctx) -> None:
    r = c.rule
    for sym, holders in sorted(_held_by(c).items()):
        a = c.inputs.assets.get(sym)
        ratio = None if a is None else a.volatility_ratio
        label = regime_label(ratio, r.calm, r.elevated, r.high)
        if label is None:
            continue
        old = None if c.previous is None else c.previous.assets.get(sym)
        was_ratio = None if old is None else old.volatility_ratio
        was = regime_label(was_ratio, r.calm, r.elevated, r.high)
        if was is None:
            # Nothing to compare with: only an unusual regime is worth a word.
            if label not in ("elevated", "high-vol"):
                continue
        elif label == was:
            continue
        up = was is None or REGIMES.index(label) > REGIMES.index(was)
        unit = _asset_unit(c)
        change = f"from {was} to {label}" if was is not None else f"is {label}"
        c.add(
            f"volatility_regime:{unit}:{sym}:{label}",
            "warning" if up else "info",
            f"{sym}: volatility regime {change}",
            f"{sym} (held in {', '.join(holders)}): volatility regime {change}; its 10-day "
            f"volatility is {ratio:.2f}x its 90-day level"
            + (f" (was {was_ratio:.2f}x)" if was_ratio is not None else "")
            + f" (calm < {r.calm:g}x, elevated >= {r.elevated:g}x, high-vol >= {r.high:g}x).",
            {
                "symbol": sym,
                "regime": label,
                "previous_regime": was,
                "volatility_ratio": ratio,
                "previous_volatility_ratio": was_ratio,
                "holders": holders,
            },
            "size positions for the new volatility: stops and liquidation distances shrink"
            if up
            else "none needed",
            unit,
        )


def _stale(c: _Ctx) -> None:
    r = c.rule
    for u, old in c.units():
        for sym, n in sorted(u.stale.items()):
            if n < r.bars or sym not in u.held:
                continue
            was = 0 if old is None else int(old.stale.get(sym, 0))
            if old is not None and was >= r.bars:
                continue
            c.add(
                f"stale_data:{u.name}:{sym}",
                "warning",
                f"{u.name}: no fresh {sym} bar for {n} closes",
                f"{sym}, held in {_who(u.name)}, has had no fresh bar for {n} closes in a row "
                f"(alert after {r.bars}); it is valued at its last price.",
                {"symbol": sym, "bars": n, "threshold": r.bars},
                "check the data feed and the exchange's status for this symbol",
                u.name,
            )


def _rejected(c: _Ctx) -> None:
    for u, _ in c.units():
        for k, o in enumerate(u.rejected):
            ref = (
                o.get("client_order_id")
                or f"{o.get('symbol')}:{c.inputs.timestamp.isoformat()}:{k}"
            )
            status = o.get("status") or "rejected"
            c.add(
                f"order_rejected:{u.name}:{ref}",
                "warning",
                f"{u.name}: {o.get('side', '')} {o.get('symbol', '')} order {status}".replace(
                    "  ", " "
                ),
                f"An order of {_who(u.name)} was {status}: {o.get('side', '?')} {o.get('symbol', '?')}"
                + (f" ({o.get('client_order_id')})" if o.get("client_order_id") else "")
                + f"; reason: {o.get('reason') or 'not given'}.",
                {
                    k2: o.get(k2)
                    for k2 in (
                        "client_order_id",
                        "symbol",
                        "side",
                        "reason",
                        "quantity",
                        "notional",
                    )
                    if k2 in o
                },
                "read the reason; the next cycle plans again from the positions held",
                u.name,
            )


def _proposals(c: _Ctx) -> None:
    for u, _ in c.units():
        for p in u.proposals_waiting:
            pid = p.get("proposal_id")
            if p.get("kind") == "transfer":
                _transfer_proposal(c, u.name, p)
                continue
            legs = p.get("legs") or []
            # The runner gives the legs, or only how many there are.
            count = legs if isinstance(legs, int) else len(legs)
            notional = (
                None
                if isinstance(legs, int)
                else sum(abs(_num(leg.get("notional")) or 0.0) for leg in legs)
            )
            expires = p.get("expires_at")
            c.add(
                f"proposal_waiting:{u.name}:{pid}",
                "info",
                f"{u.name}: proposal {pid} waits for approval",
                f"Proposal {pid} of {_who(u.name)} waits: {count} order(s)"
                + (f", {notional:,.0f} USDT in all" if notional is not None else "")
                + (f", expires {pd.Timestamp(expires).isoformat()}" if expires is not None else "")
                + (f". {p.get('summary')}" if p.get("summary") else "."),
                {
                    "proposal_id": pid,
                    "legs": count,
                    "notional": notional,
                    "expires_at": None if expires is None else pd.Timestamp(expires).isoformat(),
                },
                f"trimtab proposals; then trimtab approve {pid} (all or some legs) or "
                f"trimtab reject {pid}",
                u.name,
            )


def _transfer_proposal(c: _Ctx, name: str, p: Mapping[str, Any]) -> None:
    """A transfer between subaccounts waiting for approval (approved whole)."""
    pid = p.get("proposal_id")
    expires = p.get("expires_at")
    c.add(
        f"proposal_waiting:{name}:{pid}",
        "info",
        f"{name}: proposal {pid} waits for approval",
        f"Proposal {pid} of {_who(name)} waits: a transfer between subaccounts"
        + (f", expires {pd.Timestamp(expires).isoformat()}" if expires is not None else "")
        + (f". {p.get('summary')}" if p.get("summary") else "."),
        {
            "proposal_id": pid,
            "legs": 0,
            "notional": None,
            "expires_at": None if expires is None else pd.Timestamp(expires).isoformat(),
        },
        f"trimtab proposals; then trimtab approve {pid} (the whole transfer) or "
        f"trimtab reject {pid}",
        name,
    )


_RULES: dict[str, Callable[[_Ctx], None]] = {
    "risk_score": _risk_score,
    "liquidation_distance": _liquidation,
    "breaker": _breaker,
    "drawdown": _drawdown,
    "correlation_shift": _correlation,
    "volatility_regime": _volatility,
    "stale_data": _stale,
    "order_rejected": _rejected,
    "proposal_waiting": _proposals,
}


def evaluate_pulse(
    settings: AlertSettings,
    inputs: PulseInputs,
    previous: PulseInputs | None,
    last_alert: LastAlert,
) -> list[tuple[Alert, tuple[str, ...]]]:
    """The alerts of this cycle, each with the target names it goes to, in rule order.

    ``previous``: the (carried) inputs of the cycle before, None on the first.
    ``last_alert(key)``: run-clock time of the newest alert with that key, or None; an
    alert within its rule's cooldown of it is dropped. Two rules raising the same key
    give one alert, sent to the targets of both.
    """
    out: dict[str, tuple[Alert, tuple[str, ...]]] = {}
    now = pd.Timestamp(inputs.timestamp)
    for rule in settings.rules:
        found: list[Alert] = []
        _RULES[rule.kind](_Ctx(rule, inputs, previous, found))
        wait = cooldown_seconds(settings.cooldown_of(rule), inputs.bar_seconds)
        targets = settings.targets_of(rule)
        for alert in found:
            if alert.key in out:  # two rules, one alert: it goes to both rules' targets
                first, before = out[alert.key]
                out[alert.key] = (first, tuple(dict.fromkeys((*before, *targets))))
                continue
            last = last_alert(alert.key)
            if last is not None and (now - pd.Timestamp(last)).total_seconds() < wait:
                continue
            out[alert.key] = (alert, targets)
    return list(out.values())
