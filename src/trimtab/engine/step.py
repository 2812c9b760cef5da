"""The pipeline step: observe -> assess -> decide -> guard -> record, for one subaccount.

A ``PipelineStep`` holds no clock, broker or file. A loop around it (the backtest's
historical clock, the live runner's wall clock) gives it each bar's ``Observation`` and
sends the orders it returns; the same step, fed the same bars, makes the same decisions
on either clock. The guard (a ``SafetyLayer``: the person's limits, and its breakers when
it has them) is required and sees every target and every order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trimtab.domain import Instrument, Order
from trimtab.domain.decisions import Assessment, Decision, Observation
from trimtab.guard.breakers import StateChange
from trimtab.guard.safety import SafetyLayer
from trimtab.policy import Policy, plan_orders
from trimtab.policy.policies import Telemetry


class Assessor(Protocol):
    def assess(self, obs: Observation) -> Assessment: ...


class FeatureAssessor:
    """The default assess step: reads the run's features at the decision bar."""

    def assess(self, obs: Observation) -> Assessment:
        return Assessment(values=obs.features_at())


@dataclass
class StepResult:
    """One bar's outcome for a subaccount.

    ``record`` is the decision record (None for an unrecorded hold); the loop adds what
    the broker did with ``orders`` (``orders`` sent, rejections). ``replaces_open`` means
    the subaccount's leftover orders must be cancelled before these are sent: a new plan
    replaces what is left of the earlier ones.
    """

    decision: Decision
    telemetry: Telemetry
    record: dict[str, Any] | None = None
    orders: list[Order] = field(default_factory=list)
    replaces_open: bool = False


class PipelineStep:
    """The decision pipeline of one subaccount.

    ``safety`` is required: a run with the person's configuration passes its limits and
    breakers; a reference policy (a baseline) passes limits only
    (``SafetyLayer.limits_only()``). ``record_holds`` records bars that decide to hold.
    """

    def __init__(
        self,
        policy: Policy,
        safety: SafetyLayer,
        *,
        subaccount: str = "main",
        assessor: Assessor | None = None,
        record_holds: bool = True,
    ) -> None:
        if safety is None:
            raise ValueError("the pipeline step needs a guard: give it a SafetyLayer")
        self.policy = policy
        self.safety = safety
        self.subaccount = subaccount
        self.assessor = assessor or FeatureAssessor()
        self.record_holds = record_holds

    def reset(self, symbols: tuple[str, ...], periods_per_year: float) -> None:
        """Start a run: the policy's state back to its start."""
        self.policy.reset(symbols, periods_per_year)

    def mark(self, ts: pd.Timestamp, equity: float, peak: float, fresh: bool) -> list[StateChange]:
        """Observe the account at the bar's close (equity and its peak in quote; ``fresh``:
        every held asset has a real bar): the breakers update; returns their changes."""
        return self.safety.on_bar(ts, equity, peak, fresh)

    def step(
        self,
        obs: Observation,
        instrument: Callable[[str], Instrument],
        decision_id: int,
        changes: list[StateChange] | None = None,
    ) -> StepResult:
        """Decide at ``obs`` and guard the decision and its orders.

        ``instrument`` gives each symbol's exchange rules (lots, minimums); ``decision_id``
        numbers the record and its orders; ``changes`` are this bar's breaker changes
        (from ``mark``), recorded with the decision.
        """
        safety = self.safety
        assessment = self.assessor.assess(obs)
        decision = self.policy.decide(obs, assessment)
        telemetry = self.policy.telemetry()
        decision = safety.check(decision, obs)
        if decision.targets is None and not (self.record_holds or decision.guard or changes):
            return StepResult(decision, telemetry)
        portfolio = obs.portfolio
        record: dict[str, Any] = {
            "id": decision_id,
            "timestamp": obs.timestamp.isoformat(),
            "policy": self.policy.name,
            "action": decision.action,
            "inputs": {
                "digest": input_digest(obs.close, portfolio.quantities, portfolio.equity),
                "equity": portfolio.equity,
            },
            "reasons": [r.to_dict() for r in decision.reasons],
        }
        if decision.guard:
            record["guard"] = [g.to_dict() for g in decision.guard]
        if changes:
            record["state_changes"] = [c.to_dict() for c in changes]
        if safety.has_breakers:
            record["state"] = str(safety.trading_state)
        if decision.targets is None:
            return StepResult(decision, telemetry, record)
        close = obs.close
        orders, skipped = plan_orders(
            decision.targets,
            portfolio,
            close,
            obs.symbols,
            instrument,
            reason=decision.action,
            subaccount=self.subaccount,
            decision_id=decision_id,
            leverage=telemetry.leverage,
        )
        orders, actions, blocked = safety.check_orders(orders, obs, close, instrument)
        if actions:
            record.setdefault("guard", []).extend(a.to_dict() for a in actions)
        if blocked:
            record["blocked"] = blocked
        targets = np.asarray(decision.targets, dtype=float)
        held = targets.nonzero()[0]  # NaN counts as held, as ``if w`` counted it
        symbols = obs.symbols
        record["targets"] = dict(
            zip(
                [symbols[j] for j in held.tolist()],
                targets[held].tolist(),
                strict=True,
            )
        )
        record["orders"] = []
        if skipped:
            record["skipped"] = [s.to_dict() for s in skipped]
        return StepResult(decision, telemetry, record, orders, replaces_open=True)

    def state(self) -> dict[str, Any]:
        """The step's saved state: its policy's and its guard's."""
        return {"policy": self.policy.state(), "safety": self.safety.state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.policy.restore(state["policy"])
        self.safety.restore(state["safety"])


def input_digest(close_row: np.ndarray, qty: np.ndarray, equity: float) -> str:
    """A short digest of what a decision saw: closes, holdings and equity."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.ascontiguousarray(close_row, dtype=float).tobytes())
    h.update(np.ascontiguousarray(qty, dtype=float).tobytes())
    h.update(np.float64(equity).tobytes())
    return h.hexdigest()
