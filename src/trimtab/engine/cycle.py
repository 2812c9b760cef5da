"""What one cycle of the runner saw and did, handed to observers (the review, alerts).

The runner (``trimtab.engine.live``) builds a ``CycleReport`` after each bar's cycle has
been committed to the store and passes it to every ``CycleObserver``. The report holds
nothing after the bar's close: ``panel`` is cut at ``timestamp``. Money is USDT,
quantities are base units (signed: negative is short), times are UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from trimtab.data.panel import Panel
from trimtab.domain import Instrument

if TYPE_CHECKING:
    from trimtab.engine.reconcile import Reconciliation
    from trimtab.journal.store import Store


@dataclass(frozen=True)
class SubaccountCycle:
    """One subaccount at the close of the cycle's bar.

    ``trading_state`` and ``previous_trading_state`` are the guard's state names
    (``NORMAL``, ``REDUCE_ONLY``, ``HALTED`` ...) after and before this cycle;
    ``stale`` lists held symbols without a fresh bar at this close; ``rejected`` the
    orders rejected or failed in this cycle (dicts with ``client_order_id``, ``symbol``,
    ``side``, ``reason``); ``proposals_waiting`` the pending proposals (dicts with
    ``proposal_id``, ``expires_at``, ``legs``); ``decision`` this cycle's decision record
    (None when the policy held and holds are not recorded).
    """

    name: str
    mode: str
    paused: bool
    trading_state: str
    previous_trading_state: str
    equity: float
    peak: float
    cash: float
    positions: dict[str, float]
    marks: dict[str, float]
    stale: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    proposals_waiting: list[dict[str, Any]] = field(default_factory=list)
    decision: dict[str, Any] | None = None

    @property
    def drawdown(self) -> float:
        """Fraction below the peak (0 at the peak)."""
        return 0.0 if self.peak <= 0 else max(0.0, 1.0 - self.equity / self.peak)


@dataclass(frozen=True)
class CycleReport:
    """The whole account at the close of bar ``bar`` (the run's index) at ``timestamp``."""

    run_id: str
    bar: int
    timestamp: pd.Timestamp
    account_equity: float
    account_state: str | None
    subaccounts: Mapping[str, SubaccountCycle]
    instruments: Mapping[str, Instrument]
    panel: Panel


class CycleObserver(Protocol):
    """Called after each committed cycle; it may write to the store (reviews, alerts)
    in its own transactions. An exception is logged by the runner, never fatal."""

    def on_cycle(self, report: CycleReport, store: Store) -> None: ...

    def on_tick(self, run_id: str, store: Store) -> None:
        """Between bars (e.g. retry deliveries); may do nothing."""
        ...

    def on_gate(self, run_id: str, reconciliation: Reconciliation, store: Store) -> None:
        """The reconciliation gate changed state (or the runner started HALTED):
        ``reconciliation`` holds the differences; may do nothing."""
        ...
