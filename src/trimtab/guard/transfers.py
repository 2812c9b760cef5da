"""The transfer guard: the last check before cash moves between subaccounts.

Every ``TransferRequest`` becomes a ``Transfer`` record here, and only a record with
``moved > 0`` may be booked (``TransferGuard.apply`` books it). The checks, in order:

==============================  ==================================================
check                           outcome when it fails
==============================  ==================================================
amount finite and > 0           refused
source and target known, differ refused
target's breaker ACTIVE         refused: a REDUCING or HALTED subaccount (or a
                                HALTED account) could not use the cash, and its
                                breaker says something is wrong there
source's free cash              cut (``allow_partial``) or refused
target's ``max_capital``        cut (``allow_partial``) or refused
account's ``max_transfer``      cut (``allow_partial``) or refused
what is left >= ``min_transfer`` refused (a cut to dust moves nothing)
==============================  ==================================================

Transfers *out of* a REDUCING or HALTED subaccount are allowed: moving its free cash
elsewhere cannot raise anyone's risk (cash is cash, and its positions are untouched),
and taking capital away from a broken strategy is what a person would do.

**Free cash** (``free_cash``) is the quote cash a subaccount could hand over at this
moment without breaking its own limits, with equity and weights measured at ``marks``:

* settled cash only: the margin of open perpetual positions is not cash (it sits in the
  positions), nor is the quote ``reserved`` for open buy orders;
* ``min_cash``: cash after the transfer >= ``min_cash`` x equity after it, i.e.
  ``x <= (cash - m E) / (1 - m)``;
* ``max_gross_leverage``, ``max_net_exposure``, ``max_asset_weight``: each measure over
  the equity left after the transfer stays within its cap, i.e. ``x <= E - measure / cap``
  (a subaccount already over a cap frees nothing). Clusters are not checked: moving cash
  changes every weight by the same factor, so the asset and gross caps bind first for
  the usual cluster settings.

A transfer moves cash only: it never sells a position to raise cash, so one
subaccount's loss can never reach another's cash except through a transfer that a
person scheduled (or a rule asked for) and this guard allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from trimtab.domain import Account, Subaccount
from trimtab.domain.transfers import Transfer, TransferRequest
from trimtab.guard.breakers import TradingState
from trimtab.guard.limits import Limits

# Float noise allowed when a cut amount is floored to whole cents (in cents).
_CENT_NOISE = 1e-6


class TransferLimits(BaseModel):
    """Account-wide caps on transfers (``account: transfers:`` in the portfolio file).

    * ``max_transfer`` (None = no cap): USDT per transfer.
    * ``min_transfer`` (1.0): USDT; a transfer cut below this moves nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_transfer: float | None = Field(None, gt=0)
    min_transfer: float = Field(1.0, ge=0)


def free_cash(
    sub: Subaccount,
    marks: Mapping[str, float],
    limits: Limits | None = None,
    reserved: float = 0.0,
) -> tuple[float, str]:
    """The USDT ``sub`` could transfer out now, and the rule that sets it (see the module
    docstring). ``reserved`` is quote committed to open buy orders."""
    limits = limits or Limits()
    cash = sub.cash - max(reserved, 0.0)
    bounds: list[tuple[float, str]] = [
        (cash, "cash" if reserved <= 0 else "cash not reserved for open buy orders")
    ]
    notionals = np.array(
        [p.notional(float(marks[s])) for s, p in sub.positions.items()], dtype=float
    )
    equity = sub.equity(marks)
    m = limits.min_cash
    if m > 0:
        bounds.append(((cash - m * equity) / (1 - m), f"min_cash keeps {m:.0%} of equity"))
    if len(notionals):
        for measure, cap, key in (
            (float(np.abs(notionals).sum()), limits.max_gross_leverage, "max_gross_leverage"),
            (abs(float(notionals.sum())), limits.max_net_exposure, "max_net_exposure"),
            (float(np.abs(notionals).max()), limits.max_asset_weight, "max_asset_weight"),
        ):
            if measure > 0:
                bounds.append((equity - measure / cap, f"{key} {cap:g} on the equity left"))
    amount, rule = min(bounds, key=lambda b: b[0])
    if not math.isfinite(amount) or amount <= 0:
        return 0.0, rule
    return amount, rule


class TransferGuard:
    """Checks transfer requests against the subaccounts' limits and the account's caps.

    ``limits``: each subaccount's ``Limits`` (defaults for one not named);
    ``max_capital``: USDT a subaccount's equity may reach through transfers in (None: no
    cap); ``account``: the account-wide ``TransferLimits``.
    """

    def __init__(
        self,
        limits: Mapping[str, Limits] | None = None,
        max_capital: Mapping[str, float | None] | None = None,
        account: TransferLimits | None = None,
    ) -> None:
        self.limits = dict(limits or {})
        self.max_capital = dict(max_capital or {})
        self.account = account or TransferLimits()

    def check(
        self,
        request: TransferRequest,
        account: Account,
        marks: Mapping[str, float],
        states: Mapping[str, TradingState] | None = None,
        reserved: Mapping[str, float] | None = None,
    ) -> Transfer:
        """The record of ``request``: how much may move, and why not more. Books nothing.

        ``states``: each subaccount's effective breaker state (ACTIVE when not given);
        ``reserved``: quote committed to each subaccount's open buy orders.
        """
        src, dst = request.source, request.target
        amount = request.amount
        if not (isinstance(amount, int | float) and math.isfinite(amount) and amount > 0):
            return Transfer.decided(request, 0.0, [f"amount must be > 0 USDT (got {amount!r})"])
        unknown = [n for n in (src, dst) if n not in account.subaccounts]
        if unknown:
            known = ", ".join(account.subaccounts)
            return Transfer.decided(
                request, 0.0, [f"no subaccount {n!r} (have {known})" for n in unknown]
            )
        if src == dst:
            return Transfer.decided(request, 0.0, [f"from and to are both {src!r}"])
        state = TradingState((states or {}).get(dst, TradingState.ACTIVE))
        if state != TradingState.ACTIVE:
            return Transfer.decided(
                request, 0.0, [f"{dst} is {state.name}: a transfer in needs an ACTIVE breaker"]
            )
        checks: list[str] = []
        allowed = amount

        def cap(bound: float, why: str) -> None:
            nonlocal allowed
            bound = max(bound, 0.0)
            if allowed > bound:
                allowed = bound
                checks.append(why)

        free, rule = free_cash(
            account.subaccounts[src], marks, self.limits.get(src), (reserved or {}).get(src, 0.0)
        )
        cap(free, f"{src} has {free:,.2f} USDT free ({rule})")
        ceiling = self.max_capital.get(dst)
        if ceiling is not None:
            room = ceiling - account.subaccounts[dst].equity(marks)
            cap(room, f"{dst} max_capital {ceiling:,.0f} USDT leaves room for {max(room, 0):,.2f}")
        if self.account.max_transfer is not None:
            cap(self.account.max_transfer, f"max_transfer {self.account.max_transfer:,.0f} USDT")
        if allowed < amount:
            # Down to whole cents (a bound a hair under a cent from float noise keeps the
            # cent), and never above the cash: the ledger refuses a withdrawal beyond it.
            cents = math.floor(allowed * 100 + _CENT_NOISE) / 100
            allowed = min(cents, account.subaccounts[src].cash)
            if not request.allow_partial:
                return Transfer.decided(
                    request, 0.0, [*checks, "refused whole: the transfer does not allow a cut"]
                )
            if allowed < self.account.min_transfer:
                return Transfer.decided(
                    request,
                    0.0,
                    [*checks, f"cut below min_transfer {self.account.min_transfer:g} USDT"],
                )
        return Transfer.decided(request, allowed, checks)

    def apply(
        self,
        request: TransferRequest,
        account: Account,
        marks: Mapping[str, float],
        states: Mapping[str, TradingState] | None = None,
        reserved: Mapping[str, float] | None = None,
    ) -> Transfer:
        """``check`` the request and book what it allows (cash from source to target)."""
        record = self.check(request, account, marks, states, reserved)
        if record.moved > 0:
            account.transfer(record.source, record.target, record.moved)
        return record
