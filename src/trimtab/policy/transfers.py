"""Transfer decisions: when capital should move between subaccounts, and how much.

A ``TransferSchedule`` is asked once per bar, at the bar's close, with the subaccounts'
equity at that close (USDT); it returns ``TransferRequest``s, which the transfer guard
(``trimtab.guard.transfers``) then lets through, cuts or refuses. It decides from the bar
and the one before it only, so it schedules the same on a wall clock as on a replay.

Two kinds:

* dated transfers (``ScheduledTransfer``): made once, at the first bar stamped at or
  after ``at`` (a date before the run's first bar is never made; the run says so);
* the periodic rule (``CapitalRebalance``): on the first bar of each ``every`` period
  (never the run's first bar: the starting capitals are the person's), when some
  subaccount's share of the named subaccounts' total equity is more than ``band`` away
  from its target share, it asks to move the surplus of those above target to those
  below, largest surplus to largest deficit first. Its requests allow a cut: they can
  move only free cash, and the guard cuts them to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from trimtab.data.calendar import calendar_mask
from trimtab.domain.transfers import TransferRequest

# Share differences below this are float noise, not a deficit to fill.
_EPS = 1e-12


@dataclass(frozen=True)
class ScheduledTransfer:
    """``amount`` USDT from ``source`` to ``target`` at the first bar at or after ``at``
    (UTC). ``allow_partial``: move what the source can free when it cannot free it all."""

    at: pd.Timestamp
    source: str
    target: str
    amount: float
    reason: str = ""
    allow_partial: bool = False


@dataclass(frozen=True)
class CapitalRebalance:
    """Move capital toward ``shares`` (subaccount -> fraction of their total equity,
    summing to 1) on the first bar of each ``every`` period, when a share is off by more
    than ``band`` (a fraction, 0.02 = 2 percentage points)."""

    every: Literal["daily", "weekly", "monthly", "quarterly"]
    shares: Mapping[str, float]
    band: float = 0.02
    reason: str = ""


@dataclass
class TransferSchedule:
    """Dated transfers and an optional periodic rule; ``decide`` is called every bar."""

    scheduled: Sequence[ScheduledTransfer] = field(default_factory=tuple)
    rebalance: CapitalRebalance | None = None

    def decide(
        self,
        ts: pd.Timestamp,
        previous: pd.Timestamp | None,
        equity: Mapping[str, float],
    ) -> list[TransferRequest]:
        """The transfers asked for at the close of bar ``ts`` (``previous``: the bar
        before it, None on the run's first bar), given each subaccount's equity (USDT)."""
        out = [
            TransferRequest(
                ts, t.source, t.target, t.amount, t.reason, "scheduled", t.allow_partial
            )
            for t in self.scheduled
            if (t.at == ts if previous is None else previous < t.at <= ts)
        ]
        rule = self.rebalance
        if rule is not None and previous is not None and _starts_period(ts, previous, rule.every):
            out += capital_moves(ts, rule, equity)
        return out

    def not_made(self, first: pd.Timestamp, last: pd.Timestamp) -> list[str]:
        """Notes on the dated transfers this run will never reach (before ``first`` bar
        or after ``last``)."""
        notes = []
        for t in self.scheduled:
            if t.at < first or t.at > last:
                where = "before the first bar" if t.at < first else "after the last bar"
                notes.append(
                    f"transfer {t.source} -> {t.target} of {t.amount:,.0f} USDT at "
                    f"{t.at:%Y-%m-%d %H:%M} is {where} ({first:%Y-%m-%d} to {last:%Y-%m-%d}): "
                    "not made"
                )
        return notes


def _starts_period(ts: pd.Timestamp, previous: pd.Timestamp, every: str) -> bool:
    """Is ``ts`` the first bar of a new ``every`` period, given the bar before it?"""
    return bool(calendar_mask(pd.DatetimeIndex([previous, ts]), every)[1])


def capital_moves(
    ts: pd.Timestamp, rule: CapitalRebalance, equity: Mapping[str, float]
) -> list[TransferRequest]:
    """The requests that would bring the named subaccounts to ``rule.shares`` of their
    total equity (USDT), or none when every share is within ``rule.band``."""
    names = list(rule.shares)
    values = {n: max(float(equity[n]), 0.0) for n in names}
    total = sum(values.values())
    if not (math.isfinite(total) and total > 0):
        return []
    gap = {n: values[n] - rule.shares[n] * total for n in names}  # > 0: above target
    if max(abs(g) for g in gap.values()) / total <= rule.band:
        return []
    donors = sorted((n for n in names if gap[n] > _EPS * total), key=lambda n: -gap[n])
    takers = sorted((n for n in names if gap[n] < -_EPS * total), key=lambda n: gap[n])
    surplus = {n: gap[n] for n in donors}
    deficit = {n: -gap[n] for n in takers}
    reason = rule.reason or f"{rule.every} capital rebalance toward the target shares"
    out = []
    for taker in takers:
        for donor in donors:
            amount = min(surplus[donor], deficit[taker])
            if amount <= _EPS * total:
                continue
            out.append(TransferRequest(ts, donor, taker, amount, reason, "rebalance_capital", True))
            surplus[donor] -= amount
            deficit[taker] -= amount
            if deficit[taker] <= _EPS * total:
                break
    return out
