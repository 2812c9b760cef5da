"""Capital moved between a Binance master account's sub-accounts, exactly once.

Each trimtab subaccount of a ccxt venue is one Binance account; the master account's
key moves USDT between them with the sub-account universal transfer (``POST
/sapi/v1/sub-account/universalTransfer``: ``fromEmail``/``toEmail``, absent for the
master itself). The money goes into the target's spot wallet and comes from the source's
spot wallet, or from its USDT-M futures wallet when the spot wallet's free USDT is short
and the futures wallet's (outside margin) covers it: trimtab counts both as one cash,
Binance keeps them apart. A transfer larger than either wallet's free USDT is sent from
the spot wallet and refused by the exchange. The key needs Binance's "enable universal
transfer" permission; it is used for transfers only.

Exactly once. ``transfer(source, target, amount, transfer_id)`` writes the transfer to
the venue's journal as ``sending`` (committed) before the first request, with
``clientTranId`` = ``encode_client_id(transfer_id)``, which Binance refuses to take twice
(-4115). The answer decides:

- accepted -> ``done`` (True), with Binance's ``tranId`` and a ``transfer`` event;
- refused (not enough USDT in the source's spot wallet, the key's permissions, a bad
  parameter: an error body) -> ``refused`` (False), the reason kept;
- "clientTranId is duplicated" -> the exchange has it: looked up, ``done``;
- no answer (a timeout, a dropped connection, a 5xx, a process killed in flight: a
  ``sending`` row found again) -> looked up in the master's transfer history by
  ``clientTranId``; found -> ``done``, else sent again with the same id (the exchange
  cannot take it twice), at most three sends; then ``VenueUnavailable``, the row still
  ``sending``, asked again at the next call (looked up first, then sent again).

A repeated call answers from the journal without a request. Amounts are sent as decimal
text rounded down to 8 decimals (Binance's USDT precision), so a transfer never moves
more than the guard allowed; the difference from the runner's booking is below 1e-8 USDT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pandas as pd

from trimtab.execution.ccxt_journal import Journal
from trimtab.execution.client_ids import encode_client_id

__all__ = ["SubaccountTransfers", "transfer_amount"]

log = logging.getLogger(__name__)

_EIGHT = Decimal("0.00000001")
_TOO_MUCH = Decimal("1e15")  # USDT: no account holds this (and 8 decimals of it fit)
_SENDS = 3


def transfer_amount(amount: float) -> str:
    """``amount`` USDT as the decimal text sent: its shortest repr, rounded down to 8
    decimals (ValueError if it is not a finite number > 0 there)."""
    d = Decimal(repr(float(amount)))
    if not d.is_finite() or d <= 0 or d >= _TOO_MUCH:
        raise ValueError(f"a transfer amount must be a number > 0, got {amount!r}")
    d = d.quantize(_EIGHT, rounding=ROUND_DOWN)
    if d <= 0:
        raise ValueError(f"a transfer amount must be a number > 0, got {amount!r}")
    return format(d, "f")


class SubaccountTransfers:
    """Transfers between the subaccounts of ``emails`` (trimtab name -> Binance email;
    the master's own subaccount, if it trades, maps to None) through ``master`` (a ccxt
    client with the master key). ``journal`` is the venue's; ``bar_now()`` and
    ``now_ms()`` stamp events; ``error(what, exc)`` words a scrubbed error;
    ``unavailable`` is the exception raised when the exchange cannot say;
    ``free_usdt(name)`` reads a subaccount's free USDT in its spot and futures wallets
    (None: every transfer from the spot wallet)."""

    def __init__(
        self,
        ccxt: Any,
        master: Any,
        emails: Mapping[str, str | None],
        journal: Journal,
        *,
        bar_now: Callable[[], int],
        now_ms: Callable[[], int],
        error: Callable[[str, BaseException], str],
        unavailable: type[Exception],
        sleep: Callable[[float], None],
        backoff_s: float,
        free_usdt: Callable[[str], tuple[float, float]] | None = None,
    ) -> None:
        self._ccxt = ccxt
        self._ex = master
        self._emails = dict(emails)
        self._journal = journal
        self._bar_now, self._now_ms = bar_now, now_ms
        self._error, self._unavailable = error, unavailable
        self._sleep, self._backoff = sleep, backoff_s
        self._free_usdt = free_usdt

    def transfer(self, source: str, target: str, amount: float, transfer_id: str) -> bool:
        """Move ``amount`` USDT from ``source`` to ``target``'s spot wallet, once per
        ``transfer_id``: True when made (now or by an earlier call), False when refused
        (kept: a repeat answers False again)."""
        tid = str(transfer_id)
        if not tid:
            raise ValueError("transfer_id must not be empty")
        for name in (source, target):
            if name not in self._emails:
                raise ValueError(
                    f"transfer {tid}: unknown subaccount {name!r}; the venue has "
                    f"{', '.join(self._emails)}"
                )
        row = self._journal.transfer(tid)
        if row is None:
            if source == target:
                raise ValueError(f"transfer {tid}: from {source} to itself")
            try:
                text = transfer_amount(amount)
            except ValueError as exc:
                # Booked by the runner already: an answer (refused, kept), not a crash
                # that would repeat at every start.
                log.warning("transfer %s refused here: %s", tid, exc)
                self._journal.add_transfer(
                    tid,
                    encode_client_id(tid),
                    source,
                    target,
                    "USDT",
                    repr(float(amount)),
                    self._now_ms(),
                )
                self._journal.update_transfer(tid, state="refused", note=str(exc))
                return False
            wallet = self._wallet(source, Decimal(text))
            self._journal.add_transfer(
                tid, encode_client_id(tid), source, target, "USDT", text, self._now_ms(), wallet
            )
            row = self._journal.transfer(tid)
            assert row is not None
        elif (row["source"], row["target"]) != (source, target):
            raise ValueError(
                f"transfer {tid} was asked from {row['source']} to {row['target']}, not "
                f"from {source} to {target}"
            )
        if row["state"] != "sending":
            return row["state"] == "done"
        if row["attempts"] > 0:  # sent before (an answer lost, or a kill): look first
            found = self._find(row)
            if found is not None:
                return self._done(row, found)
        return self._send(row)

    # --- the requests ----------------------------------------------------------------
    def _wallet(self, source: str, amount: Decimal) -> str:
        """The source's wallet to send ``amount`` USDT from (chosen once, kept with the
        transfer, so a resend asks for the same)."""
        if self._free_usdt is None:
            return "SPOT"
        spot, futures = self._free_usdt(source)
        if Decimal(repr(float(spot))) >= amount:
            return "SPOT"
        if Decimal(repr(float(futures))) >= amount:
            return "USDT_FUTURE"
        return "SPOT"

    def _params(self, row: Mapping[str, Any]) -> dict[str, str]:
        params = {
            "fromAccountType": row["from_type"],
            "toAccountType": "SPOT",
            "asset": row["asset"],
            "amount": row["amount"],
            "clientTranId": row["client_tran_id"],
        }
        for key, name in (("fromEmail", row["source"]), ("toEmail", row["target"])):
            email = self._emails[name]
            if email:
                params[key] = email
        return params

    def _send(self, row: dict[str, Any]) -> bool:
        ccxt, ex, tid = self._ccxt, self._ex, row["transfer_id"]
        attempts = int(row["attempts"])
        for send in range(_SENDS):  # a call's sends; a later call has its own
            attempts += 1
            self._journal.update_transfer(tid, state="sending", attempts=attempts)
            ex.last_request_url = None
            ex.last_http_response = None
            try:
                got = ex.sapiPostSubAccountUniversalTransfer(self._params(row))
            except ccxt.ExchangeError as exc:
                message = str(exc)
                # A clock out of the receive window (-1021) says nothing of the transfer.
                answered = not isinstance(exc, ccxt.InvalidNonce) and (
                    ex.last_request_url is None or ex.last_http_response is not None
                )
                duplicate = "-4115" in message or "duplicated" in message.lower()
                # Told duplicate, or refused after a send without a clear answer (which
                # the exchange may have taken, refusing a resend for the money it moved):
                # look before believing it.
                if duplicate or (answered and attempts > 1):
                    found = self._find(row)
                    if found is not None:
                        return self._done(row, found)
                    if duplicate:
                        raise self._unavailable(
                            self._error(f"transfer {tid}: told duplicate, not found", exc)
                        ) from None
                if answered:
                    why = self._error(f"transfer {tid} refused", exc)
                    log.warning("%s", why)
                    self._journal.update_transfer(tid, state="refused", note=why)
                    return False
                log.warning("%s", self._error(f"transfer {tid}: no clear answer", exc))
            except ccxt.BaseError as exc:  # timeouts, dropped connections, 5xx
                log.warning("%s", self._error(f"transfer {tid}: answer lost", exc))
            else:
                return self._done(row, got)
            self._sleep(self._backoff * 2**send)
            found = self._find(row)
            if found is not None:
                return self._done(row, found)
        raise self._unavailable(
            f"transfer {tid}: sent {_SENDS} times with no answer and no trace at the "
            "exchange; it stays unsent and is asked again before anything else"
        )

    def _find(self, row: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The master's transfer with this row's ``clientTranId``, or None."""
        params = {"clientTranId": row["client_tran_id"]}
        email = self._emails[row["source"]]
        if email:
            params["fromEmail"] = email
        elif target_email := self._emails[row["target"]]:
            params["toEmail"] = target_email
        ccxt = self._ccxt
        try:
            got = self._ex.sapiGetSubAccountUniversalTransfer(params)
        except ccxt.BaseError as exc:
            raise self._unavailable(
                self._error(f"transfer {row['transfer_id']}: cannot look it up", exc)
            ) from None
        for t in (got or {}).get("result") or []:
            if t.get("clientTranId") == row["client_tran_id"] and t.get("status") == "SUCCESS":
                return t
        return None

    def _done(self, row: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
        tid = row["transfer_id"]
        if got.get("clientTranId") not in (None, "", row["client_tran_id"]):
            raise self._unavailable(
                f"transfer {tid}: the exchange answered with clientTranId "
                f"{got.get('clientTranId')!r}, not {row['client_tran_id']!r}"
            )
        ns = pd.Timestamp(self._now_ms(), unit="ms").value
        data = {
            "source": row["source"],
            "target": row["target"],
            "amount": float(row["amount"]),
            "id": tid,
            "tran_id": str(got.get("tranId", "")),
        }
        with self._journal.transaction():
            self._journal.update_transfer(tid, state="done", exchange_id=data["tran_id"])
            self._journal.add_event("transfer", self._bar_now(), ns, row["source"], None, data)
        log.info(
            "transfer %s made: %s -> %s, %s USDT", tid, row["source"], row["target"], row["amount"]
        )
        return True
