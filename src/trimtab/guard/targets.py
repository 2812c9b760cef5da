"""The guard step: the last check on every decision before any order.

It never trusts a model: non-finite or negative targets reject the decision (the
portfolio holds), gross weight above the configured cap is scaled down, and assets
that do not trade get no new target. Every change is recorded as a ``GuardAction``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from trimtab.domain.decisions import Decision, GuardAction, Observation, Reason


@dataclass(frozen=True)
class TargetGuard:
    """Sanity limits on target weights (spot, long only, no leverage by default)."""

    max_gross: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.max_gross) and self.max_gross > 0):
            raise ValueError(f"max_gross must be > 0, got {self.max_gross}")

    def check(self, decision: Decision, obs: Observation) -> Decision:
        targets = decision.targets
        if targets is None:
            return decision
        actions: list[GuardAction] = []
        targets = np.asarray(targets, dtype=float)
        if targets.shape != obs.close.shape:
            return self._reject(
                decision, "shape", f"{targets.shape[0]} targets for {obs.close.shape[0]} symbols"
            )
        bad = ~np.isfinite(targets)
        if bad.any():
            names = tuple(obs.symbols[j] for j in np.flatnonzero(bad))
            return self._reject(decision, "non_finite", "target is NaN or infinite", names)
        negative = targets < 0
        if negative.any():
            names = tuple(obs.symbols[j] for j in np.flatnonzero(negative))
            return self._reject(
                decision, "negative", "negative target on a long-only account", names
            )
        unlisted = (targets > 0) & np.isnan(obs.close)
        if unlisted.any():
            names = tuple(obs.symbols[j] for j in np.flatnonzero(unlisted))
            actions.append(
                GuardAction("not_listed", "target on an asset that is not listed set to 0", names)
            )
            targets = np.where(unlisted, 0.0, targets)
        gross = float(targets.sum())
        if gross > self.max_gross * (1 + 1e-9):
            actions.append(
                GuardAction(
                    "max_gross",
                    f"gross weight scaled to {self.max_gross:.2f}",
                    before=gross,
                    after=self.max_gross,
                )
            )
            targets = targets * (self.max_gross / gross)
        if not actions:
            return decision
        return replace(decision, targets=targets, guard=decision.guard + tuple(actions))

    @staticmethod
    def _reject(
        decision: Decision, rule: str, message: str, symbols: tuple[str, ...] = ()
    ) -> Decision:
        action = GuardAction(rule, f"decision rejected: {message}", symbols)
        return Decision(
            None,
            decision.reasons
            + (Reason("guard_rejected", f"guard rejected the targets: {message}"),),
            action="rejected",
            guard=decision.guard + (action,),
        )
