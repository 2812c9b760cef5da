"""The runner's monitor: the scheduled review, the portfolio pulse and alert delivery,
after every committed cycle (a ``trimtab.engine.cycle.CycleObserver``).

At each cycle ``Monitor.on_cycle(report, store)``:

1. every ``review_every`` bars (0: never), reviews the holdings of each subaccount that
   holds a position, and of the whole account (``review_portfolio`` on the report's
   panel, as of the report's bar: nothing after its close);
2. builds the pulse's inputs (``trimtab.review.pulse``) from the report and those
   reviews, and evaluates the rules of ``alerts:`` against the inputs of the cycle before
   (kept in the store as component state ``pulse``, so a restart compares with what the
   killed process saw last), with the store's ``last_alert`` for cooldowns;
3. writes the reviews (one per reviewed subaccount, and ``account``), the alerts with one
   outbox row per target name, and the pulse state in ONE transaction at the report's
   bar;
4. delivers the outbox rows that are due (``trimtab.app.notify``); a delivery failure
   never raises (the outbox retries).

Holdings from the report: free cash (USDT, never below 0), spot quantities by symbol, and
perpetuals at their marks. The report gives a perp's size but not its entry price or
margin; a report that carries ``perps`` details on a subaccount (symbol -> ``entry_price``,
``margin`` or ``leverage``, ``margin_mode``) is used, else a perp is taken as 1x at its
mark (so its liquidation distance is not measured honestly: the review notes it).
The account's drawdown is measured from the highest account equity the monitor has
seen (kept in the pulse state), since the report carries subaccount peaks only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from trimtab.app.notify import DeliveryPolicy, DeliveryReport, deliver_due
from trimtab.config import AlertSettings
from trimtab.data.panel import timeframe_seconds
from trimtab.engine.cycle import CycleReport, SubaccountCycle
from trimtab.review.holdings import Holdings, HoldingsError, PerpPosition, SubaccountHoldings
from trimtab.review.pulse import (
    ACCOUNT,
    Alert,
    PulseInputs,
    SubaccountPulse,
    asset_readings,
    evaluate_pulse,
    subaccount_pulse,
)
from trimtab.review.review import review_portfolio

__all__ = ["PULSE_STATE", "Monitor", "holdings_of"]

log = logging.getLogger(__name__)

#: The component name of the pulse's state in the store.
PULSE_STATE = "pulse"


def holdings_of(report: CycleReport, names: list[str] | None = None) -> Holdings | None:
    """The holdings of subaccounts ``names`` (default all) in the review's terms, or None
    when there is nothing to review."""
    subs: dict[str, SubaccountHoldings] = {}
    for name, sc in report.subaccounts.items():
        if names is not None and name not in names:
            continue
        subs[name] = _subaccount_holdings(report, sc)
    if not subs:
        return None
    return Holdings(subaccounts=subs).with_source(f"run {report.run_id}, bar {report.bar}")


def _subaccount_holdings(report: CycleReport, sc: SubaccountCycle) -> SubaccountHoldings:
    spot: dict[str, float] = {}
    perps: list[PerpPosition] = []
    details: Mapping[str, Mapping[str, Any]] = getattr(sc, "perps", None) or {}
    for sym, qty in sc.positions.items():
        if not qty or not math.isfinite(qty):
            continue
        inst = report.instruments.get(sym)
        if inst is not None and inst.is_perpetual:
            d = details.get(sym, {})
            mark = float(sc.marks.get(sym) or d.get("entry_price") or 0.0)
            entry = float(d.get("entry_price") or mark)
            if not entry > 0:
                continue
            perps.append(
                PerpPosition(
                    symbol=sym,
                    side="long" if qty > 0 else "short",
                    size=abs(qty),
                    entry_price=entry,
                    leverage=d.get("leverage") or (None if d.get("margin") else 1.0),
                    margin=d.get("margin"),
                    margin_mode=d.get("margin_mode", "isolated"),
                )
            )
        elif qty > 0:  # a spot book cannot be short
            spot[sym] = float(qty)
    return SubaccountHoldings(cash={"USDT": max(float(sc.cash), 0.0)}, spot=spot, perps=perps)


class Monitor:
    """The scheduled review and the alerts of one run (a ``CycleObserver``).

    ``settings``: the ``alerts:`` section. ``review_every``: bars between reviews (1:
    every cycle; 0: never, then the score and liquidation rules have nothing to read).
    ``funding``: the long funding frame for the review. ``deliver``: send due outbox
    rows after each cycle. ``wall_clock``: the time deliveries are due by (UTC).
    """

    def __init__(
        self,
        settings: AlertSettings | None = None,
        *,
        review_every: int = 1,
        funding: pd.DataFrame | None = None,
        deliver: bool = True,
        policy: DeliveryPolicy | None = None,
        wall_clock: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        if review_every < 0:
            raise ValueError(f"review_every must be >= 0, got {review_every}")
        self.settings = settings or AlertSettings()
        self.review_every = int(review_every)
        self.funding = funding
        self.deliver = deliver
        self.policy = policy or DeliveryPolicy()
        self.wall_clock = wall_clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self._previous: PulseInputs | None = None
        self._loaded = False
        self._reviewed_bar: int | None = None
        self.last_alerts: list[Alert] = []
        self.last_delivery: DeliveryReport | None = None

    def __repr__(self) -> str:
        return f"Monitor(review_every={self.review_every}, rules={len(self.settings.rules)})"

    # --- the cycle ------------------------------------------------------------------
    def on_cycle(self, report: CycleReport, store: Any) -> None:
        """Review, evaluate, record and deliver (see the module docstring)."""
        if not self._loaded:
            self._loaded = True
            saved = store.load_state(report.run_id, PULSE_STATE)
            if saved:
                try:
                    self._previous = PulseInputs.from_state(saved)
                except (KeyError, TypeError, ValueError):
                    log.warning(
                        "pulse: saved state of run %s unreadable; starting afresh", report.run_id
                    )
        reviews = self.reviews(report) if self._due(report.bar) else {}
        inputs = self.inputs(report, reviews)

        def last_alert(key: str) -> pd.Timestamp | None:
            row = store.last_alert(report.run_id, key)
            return None if row is None else row["timestamp"]

        found = evaluate_pulse(self.settings, inputs, self._previous, last_alert)
        state = inputs.carried(self._previous)
        with store.transaction(report.run_id, bar=report.bar, timestamp=report.timestamp) as tx:
            for name, payload in reviews.items():
                tx.add_review(name, report.timestamp, payload)
            for alert, targets in found:
                tx.add_alert(alert.to_dict(), list(targets))
            tx.save_state(PULSE_STATE, state.to_state())
        self._previous = state
        self.last_alerts = [a for a, _ in found]
        for a in self.last_alerts:
            log.info("alert %s [%s] %s", a.key, a.severity, a.title)
        if self.deliver and self.settings.notify:
            self.last_delivery = deliver_due(
                store,
                self.settings.notify,
                now=self.wall_clock(),
                run_id=report.run_id,
                policy=self.policy,
            )

    def on_tick(self, run_id: str, store: Any) -> None:
        """Between bars: retry the outbox rows now due (a failed alert is not left
        waiting for the next bar)."""
        if self.deliver and self.settings.notify:
            self.last_delivery = deliver_due(
                store,
                self.settings.notify,
                now=self.wall_clock(),
                run_id=run_id,
                policy=self.policy,
            )

    def on_gate(self, run_id: str, reconciliation: Any, store: Any) -> None:
        """The reconciliation gate: an alert to every target when the runner is HALTED
        (with the differences), and when it goes ACTIVE again."""
        now = self.wall_clock()
        halted = not reconciliation.ok
        beyond = reconciliation.beyond
        alert = {
            "rule": "reconciliation",
            "key": f"reconciliation:{'halted' if halted else 'active'}",
            "timestamp": now,
            "severity": "critical" if halted else "info",
            "title": "Runner halted: books differ from the exchange"
            if halted
            else "Runner active: books agree with the exchange",
            "message": "\n".join([reconciliation.summary(), *(d.line() for d in beyond[:20])]),
            "numbers": {
                "differences": len(beyond),
                "external_orders": len(reconciliation.external),
                "held_fills": len(reconciliation.held_fills),
            },
            "action": "trimtab reconcile shows the differences; trimtab adopt takes an "
            "external order into the books"
            if halted
            else None,
        }
        with store.transaction(run_id, timestamp=now) as tx:
            tx.add_alert(alert, sorted(self.settings.notify))
        if self.deliver and self.settings.notify:
            self.last_delivery = deliver_due(
                store, self.settings.notify, now=now, run_id=run_id, policy=self.policy
            )

    def _due(self, bar: int) -> bool:
        if self.review_every == 0:
            return False
        if self._reviewed_bar is None or bar - self._reviewed_bar >= self.review_every:
            self._reviewed_bar = bar
            return True
        return False

    # --- parts ----------------------------------------------------------------------
    def reviews(self, report: CycleReport) -> dict[str, dict[str, Any]]:
        """The review of each subaccount holding a position, and ``account``'s; a
        review that cannot be made (holdings the data cannot price) is logged and left
        out."""
        out: dict[str, dict[str, Any]] = {}
        as_of = report.timestamp if report.timestamp in report.panel.index else None
        held = [n for n, sc in report.subaccounts.items() if any(q for q in sc.positions.values())]
        for name in [*held, ACCOUNT]:
            holdings = holdings_of(report, None if name == ACCOUNT else [name])
            if holdings is None:
                continue
            try:
                out[name] = review_portfolio(
                    holdings, report.panel, funding=self.funding, as_of=as_of
                )
            except (HoldingsError, ValueError) as exc:
                log.warning("review of %s at bar %s skipped: %s", name, report.bar, exc)
        return out

    def inputs(self, report: CycleReport, reviews: Mapping[str, Mapping[str, Any]]) -> PulseInputs:
        """The pulse's inputs of this cycle (``reviews`` by subaccount and ``account``)."""
        prev = self._previous
        subs: dict[str, SubaccountPulse] = {}
        for name, sc in report.subaccounts.items():
            subs[name] = subaccount_pulse(
                name,
                review=reviews.get(name),
                trading_state=sc.trading_state,
                previous_trading_state=sc.previous_trading_state,
                equity=sc.equity,
                peak=sc.peak,
                positions=sc.positions,
                stale=[s for s in sc.stale if sc.positions.get(s)],
                rejected=sc.rejected,
                proposals_waiting=sc.proposals_waiting,
                previous=None if prev is None else prev.subaccounts.get(name),
            )
        before = None if prev is None else prev.account.peak
        equity = float(report.account_equity)
        peak = equity if before is None else max(float(before), equity)
        account = subaccount_pulse(
            ACCOUNT,
            review=reviews.get(ACCOUNT),
            trading_state=report.account_state,
            equity=equity,
            peak=peak,
            positions={
                s: q for sc in report.subaccounts.values() for s, q in sc.positions.items() if q
            },
        )
        held = sorted({s for u in subs.values() for s in u.held})
        bar = report.timestamp if report.timestamp in report.panel.index else report.panel.index[-1]
        assets = asset_readings(report.panel, held, bar) if held and self._asset_rules() else {}
        return PulseInputs(
            timestamp=pd.Timestamp(report.timestamp),
            bar_seconds=float(timeframe_seconds(report.panel.timeframe)),
            account=account,
            subaccounts=subs,
            assets=assets,
        )

    def _asset_rules(self) -> bool:
        return any(
            r.kind in ("correlation_shift", "volatility_regime") for r in self.settings.rules
        )
