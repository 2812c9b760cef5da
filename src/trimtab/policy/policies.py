"""Allocation policies: from an observation to target weights, with reasons.

A policy sees one ``Observation`` at a time (nothing after the decision bar) and
returns a ``Decision``. ``prepare`` is called once per run with the bar index, so that
calendars are computed once rather than at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from trimtab.data.calendar import calendar_mask
from trimtab.domain.decisions import Assessment, Decision, Observation, Reason


@runtime_checkable
class Policy(Protocol):
    name: str

    def prepare(self, index: pd.DatetimeIndex, symbols: tuple[str, ...]) -> None: ...

    def decide(self, obs: Observation, assessment: Assessment) -> Decision: ...


def _equal_weights(members: np.ndarray) -> np.ndarray:
    n = int(members.sum())
    return members / n if n else np.zeros(len(members))


class EqualWeight:
    """Equal weight across the tradable universe, rebalanced on a calendar or never.

    With ``rebalance=None`` it buys once (at the first bar with any member) and holds:
    delisted assets turn into cash and new listings are never bought.
    """

    def __init__(self, rebalance: str | None = "monthly", name: str | None = None) -> None:
        self.rebalance = rebalance
        self.name = name or (f"equal-{rebalance}" if rebalance else "equal-hold")
        self._dates: np.ndarray | None = None
        self._invested = False

    def prepare(self, index: pd.DatetimeIndex, symbols: tuple[str, ...]) -> None:
        self._dates = calendar_mask(index, self.rebalance) if self.rebalance else None
        self._invested = False

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        members = obs.universe & obs.tradable
        n = int(members.sum())
        if not self._invested:
            if n == 0:
                return Decision.hold(Reason("no_universe", "no tradable asset in the universe yet"))
            self._invested = True
            return Decision.rebalance(
                _equal_weights(members),
                Reason("initial", f"initial allocation: 1/{n} in each of {n} assets", {"n": n}),
                action="initial",
            )
        if self._dates is None:
            return Decision.hold(Reason("buy_and_hold", "buy and hold: never rebalanced"))
        if not self._dates[obs.i]:
            return Decision.hold(Reason("calendar", f"not a {self.rebalance} rebalance date"))
        if n == 0:
            return Decision.hold(Reason("no_universe", "no tradable asset in the universe"))
        return Decision.rebalance(
            _equal_weights(members),
            Reason(
                "calendar",
                f"{self.rebalance} rebalance to 1/{n} in each of {n} assets",
                {"n": n, "frequency": self.rebalance},
            ),
        )


class FixedWeights:
    """Fixed weights per symbol (e.g. 100 % BTC), bought once or on a calendar."""

    def __init__(
        self, weights: Mapping[str, float], rebalance: str | None = None, name: str | None = None
    ) -> None:
        if not weights:
            raise ValueError("FixedWeights needs at least one symbol")
        bad = {s: w for s, w in weights.items() if not (np.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if sum(weights.values()) > 1 + 1e-9:
            raise ValueError(f"weights sum to {sum(weights.values()):.4f} > 1")
        self.weights = dict(weights)
        self.rebalance = rebalance
        self.name = name or "fixed"
        self._dates: np.ndarray | None = None
        self._target = np.zeros(0)
        self._invested = False

    def prepare(self, index: pd.DatetimeIndex, symbols: tuple[str, ...]) -> None:
        missing = [s for s in self.weights if s not in symbols]
        if missing:
            raise ValueError(f"policy {self.name}: symbols not in the data: {', '.join(missing)}")
        self._target = np.array([self.weights.get(s, 0.0) for s in symbols])
        self._dates = calendar_mask(index, self.rebalance) if self.rebalance else None
        self._invested = False

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        listed = obs.tradable[self._target > 0]
        if not self._invested:
            if not listed.all():
                return Decision.hold(
                    Reason("not_listed", "waiting for every target asset to trade")
                )
            self._invested = True
            return Decision.rebalance(
                self._target,
                Reason("initial", "initial allocation to fixed weights"),
                action="initial",
            )
        if self._dates is not None and self._dates[obs.i]:
            return Decision.rebalance(
                self._target, Reason("calendar", f"{self.rebalance} rebalance to fixed weights")
            )
        return Decision.hold(Reason("buy_and_hold", "holding fixed weights"))


class TargetWeights:
    """Replays a precomputed (time x symbol) weight frame: NaN rows mean hold.

    Used to run the same target-weight simulation as other backtesters.
    """

    def __init__(self, weights: pd.DataFrame, name: str = "targets") -> None:
        self.frame = weights
        self.name = name
        self._rows: np.ndarray = np.zeros((0, 0))
        self._active: np.ndarray = np.zeros(0, dtype=bool)

    def prepare(self, index: pd.DatetimeIndex, symbols: tuple[str, ...]) -> None:
        unknown = [c for c in self.frame.columns if c not in symbols]
        if unknown:
            raise ValueError(f"target weights name unknown symbols: {', '.join(unknown)}")
        aligned = self.frame.reindex(index=index, columns=list(symbols))
        self._active = aligned.notna().any(axis=1).to_numpy()
        self._rows = aligned.fillna(0.0).to_numpy(float)

    _HOLD = Decision.hold(Reason("no_target", "no target on this bar"))

    def decide(self, obs: Observation, assessment: Assessment) -> Decision:
        if not self._active[obs.i]:
            return self._HOLD
        return Decision.rebalance(
            self._rows[obs.i], Reason("target", "rebalance to the given targets")
        )


class Managed(EqualWeight):
    """trimtab's own policy.

    For now: equal weight across the tradable universe with a calendar rebalance. The
    risk engine (sizing), the drawdown governor and the cost-aware rebalancer plug in
    here in later releases.
    """

    def __init__(self, rebalance: str = "monthly") -> None:
        super().__init__(rebalance=rebalance, name="managed")


BASELINES = ("equal-hold", "equal-monthly", "btc-hold")
POLICIES = ("managed", *BASELINES)


def make_policy(name: str, btc_symbol: str | None = None) -> Policy:
    """A policy by its CLI name."""
    if name == "managed":
        return Managed()
    if name == "equal-hold":
        return EqualWeight(rebalance=None)
    if name == "equal-monthly":
        return EqualWeight(rebalance="monthly")
    if name == "btc-hold":
        if btc_symbol is None:
            raise ValueError("btc-hold needs BTC in the data (BTCUSDT or another BTC pair)")
        return FixedWeights({btc_symbol: 1.0}, name="btc-hold")
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
