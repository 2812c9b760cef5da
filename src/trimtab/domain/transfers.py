"""Transfers of cash between the isolated subaccounts of one account.

Capital moves between subaccounts only as a transfer decision: a ``TransferRequest``
(what a schedule or an allocation rule asks for) goes through the transfer guard
(``trimtab.guard.transfers``), which turns it into a ``Transfer``, the record of what
happened: moved whole (``done``), cut to what the source could free (``cut``), or not
at all (``refused``), with the guard's reasons. Amounts are in the account's quote
currency (USDT); timestamps are UTC, the close of the bar at which the transfer is
decided and booked (between the bar's marking and its trading decisions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd


class TransferStatus(StrEnum):
    DONE = "done"  # moved as requested
    CUT = "cut"  # moved in part: the guard cut it to what was allowed
    REFUSED = "refused"  # nothing moved


@dataclass(frozen=True)
class TransferRequest:
    """A transfer asked for: ``amount`` USDT from subaccount ``source`` to ``target``.

    ``reason`` is the person's or the rule's words for it; ``origin`` says who asked
    (``scheduled`` for a dated line of the portfolio file, ``rebalance_capital`` for the
    periodic rule). ``allow_partial``: when the source cannot free the whole amount, move
    what it can (True) or nothing (False, the default for dated transfers).
    """

    timestamp: pd.Timestamp
    source: str
    target: str
    amount: float
    reason: str = ""
    origin: str = "scheduled"
    allow_partial: bool = False


@dataclass(frozen=True)
class Transfer:
    """The record of one transfer decision after the guard: ``requested`` and ``moved``
    in USDT, ``status``, and ``checks``: one line per guard rule that cut or refused it
    (empty when it moved whole)."""

    timestamp: pd.Timestamp
    source: str
    target: str
    requested: float
    moved: float
    status: TransferStatus
    reason: str = ""
    origin: str = "scheduled"
    checks: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def decided(cls, request: TransferRequest, moved: float, checks: list[str]) -> Transfer:
        """The record of ``request`` moving ``moved`` USDT (0: refused)."""
        if not (math.isfinite(moved) and moved > 0):
            status, moved = TransferStatus.REFUSED, 0.0
        elif checks:
            status = TransferStatus.CUT
        else:
            status = TransferStatus.DONE
        return cls(
            timestamp=request.timestamp,
            source=request.source,
            target=request.target,
            requested=request.amount,
            moved=moved,
            status=status,
            reason=request.reason,
            origin=request.origin,
            checks=tuple(checks),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the keys of ``transfers.csv``, with ``checks`` as a list."""
        requested = self.requested if math.isfinite(self.requested) else None
        return {
            "timestamp": self.timestamp.isoformat(),
            "from": self.source,
            "to": self.target,
            "requested": requested,
            "moved": self.moved,
            "status": str(self.status),
            "reason": self.reason,
            "origin": self.origin,
            "checks": list(self.checks),
        }


#: Columns of ``transfers.csv`` (``checks`` joined with "; ").
TRANSFER_COLUMNS = (
    "timestamp",
    "from",
    "to",
    "requested",
    "moved",
    "status",
    "reason",
    "origin",
    "checks",
)
