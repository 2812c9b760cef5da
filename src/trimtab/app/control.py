"""Human overrides of a running paper or live run: the service functions behind
``trimtab status | proposals | approve | reject | pause | resume | close | limits | mode |
commands`` (and, later, the API's).

A command never acts by itself. Each function here validates what a person asked against
what the store knows (the run, its subaccounts, the proposal and its legs), then writes a
*command row* (``Store.add_command``, status ``pending``). The runner applies pending
commands within one cycle, or at its next start when it is down, and records the outcome
(``applied`` or ``refused``) on the row; commands are never deleted, not even by a rewind.
No model, policy or strategy calls these functions.

Conventions:

* The run is the one named by ``run_id``, else the single run of kind ``paper`` or
  ``live`` in the store (``find_run``).
* ``subaccount=None`` means the whole account: pause/resume/close every subaccount, a
  limit set on every subaccount. A mode is always set on one subaccount.
* ``actor`` is who asked (default: the login name); ``reason`` is required for limits and
  modes, optional elsewhere (stored as ``""`` when not given).
* The read-only views (``status``, ``proposals``, ``commands``) return plain JSON (times
  as ISO strings in UTC, decimals as floats), ready for ``--json`` and the API.
* The runner counts as alive while its heartbeat (wall clock) is younger than
  ``3 x tick_seconds`` of its heartbeat info, or 60 s when it gives none, and it has not
  said it stopped.
"""

from __future__ import annotations

import getpass
import os
import time
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trimtab.domain.decisions import json_ready
from trimtab.domain.quotes import symbol_key
from trimtab.guard.limits import Limits
from trimtab.journal.store import RunInfo, Store, StoreError

#: Where the runner and the control commands find the store without ``--db``/``$TRIMTAB_DB``
#: (relative to the current directory).
DEFAULT_DB = "sqlite:///runs/trimtab.db"
#: Run kinds the control commands act on.
RUN_KINDS = ("paper", "live")
#: A subaccount's modes: monitor sends nothing, approve proposes, auto sends in an envelope.
MODES = ("monitor", "approve", "auto")
#: Heartbeat age (seconds, wall clock) under which the runner counts as alive when its
#: heartbeat gives no ``tick_seconds``.
ALIVE_SECONDS = 60.0
#: How many finished commands ``status`` shows.
RECENT_COMMANDS = 10
#: How many of the run's latest transfers ``status`` shows.
RECENT_TRANSFERS = 10
#: A transfer row's statuses while (or after) it waits for a person, moving nothing.
TRANSFER_WAITING = ("proposed", "approved", "rejected", "expired")


class ControlError(ValueError):
    """A command that cannot be taken as asked; the message names what and where."""


def default_db() -> str:
    """The store's URL: ``$TRIMTAB_DB``, else ``sqlite:///runs/trimtab.db`` (the runner's
    default too)."""
    return os.environ.get("TRIMTAB_DB") or DEFAULT_DB


def open_store(url: str) -> Store:
    """Open the store at ``url`` for a control command. A SQLite file that does not exist
    is an error (opening it would create an empty store the runner never reads)."""
    path = _sqlite_path(url)
    if path is not None and not path.is_file():
        raise ControlError(
            f"no store at {path}: start the runner with `trimtab run --portfolio FILE`, "
            "or pass --db URL (or set TRIMTAB_DB) to the store it writes"
        )
    return Store.open(url)


def _sqlite_path(url: str) -> Path | None:
    text = str(url)
    if "://" not in text:
        return Path(text).expanduser()
    try:
        parsed = make_url(text)
    except ArgumentError:
        return None  # Store.open says what is wrong with it
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def find_run(store: Store, run_id: str | None = None) -> RunInfo:
    """The run ``run_id``, else the single paper or live run in the store.

    Raises ControlError when the named run is missing or not a paper/live run, and when
    there is no such run or several (listing them, newest updated first)."""
    if run_id is not None:
        info = store.run(run_id)
        if info is None:
            known = _listing(store.runs())
            raise ControlError(
                f"no run {run_id!r} in {store.url}" + (f"; its runs: {known}" if known else "")
            )
        if info.kind not in RUN_KINDS:
            raise ControlError(
                f"run {run_id!r} in {store.url} is a {info.kind} run; control commands act on "
                "paper or live runs"
            )
        return info
    runs = store.runs()
    live = [r for r in runs if r.kind in RUN_KINDS]
    if len(live) == 1:
        return live[0]
    if not live:
        others = _listing(runs)
        raise ControlError(
            f"no paper or live run in {store.url}"
            + (f" (it holds: {others})" if others else "")
            + "; start one with `trimtab run --portfolio FILE`, or pass --run-id NAME"
        )
    raise ControlError(
        f"{len(live)} paper/live runs in {store.url}: {_listing(live)}; "
        "pass --run-id NAME to choose one"
    )


def _listing(runs: Sequence[RunInfo]) -> str:
    newest = sorted(runs, key=lambda r: r.updated_at, reverse=True)
    return ", ".join(
        f"{r.run_id} ({r.kind}, {r.status}, updated {_iso(r.updated_at)})" for r in newest
    )


def subaccounts(store: Store, run: RunInfo) -> list[str]:
    """The run's subaccount names: its spec's ``subaccounts``, else those of the runner's
    last status."""
    names = run.spec.get("subaccounts")
    if isinstance(names, Mapping):
        return [str(n) for n in names]
    if isinstance(names, Sequence) and not isinstance(names, str):
        return [n if isinstance(n, str) else str(n.get("name")) for n in names]
    state = store.load_state(run.run_id, "status") or {}
    return list(state.get("subaccounts") or {})


def _check_subaccount(store: Store, run: RunInfo, name: str | None) -> str | None:
    if name is None:
        return None
    known = subaccounts(store, run)
    if name not in known:
        listed = ", ".join(known) if known else "none recorded"
        raise ControlError(
            f"unknown subaccount {name!r} in run {run.run_id!r}; its subaccounts: {listed}"
        )
    return name


def _actor(actor: str | None) -> str:
    if actor is None:
        try:
            actor = getpass.getuser()
        except (KeyError, OSError):
            raise ControlError("cannot tell who you are: pass --by NAME") from None
    actor = actor.strip()
    if not actor:
        raise ControlError("--by needs a name: who gives this command")
    return actor


def _reason(reason: str | None, *, required: str | None = None) -> str:
    text = (reason or "").strip()
    if required and not text:
        raise ControlError(f"{required} needs --reason TEXT: say why (it is recorded)")
    return text


def _write(
    store: Store,
    run: RunInfo,
    kind: str,
    *,
    subaccount: str | None,
    args: Mapping[str, Any] | None,
    actor: str | None,
    reason: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    who = _actor(actor)
    command_id = store.add_command(
        run.run_id,
        kind,
        subaccount=subaccount,
        args=None if args is None else dict(args),
        actor=who,
        reason=reason,
    )
    return {
        "command_id": int(command_id),
        "run_id": run.run_id,
        "kind": kind,
        "subaccount": subaccount,
        "args": None if args is None else json_ready(dict(args)),
        "actor": who,
        "reason": reason,
        "status": "pending",
        "notes": list(notes),
    }


# --- commands ----------------------------------------------------------------------------
def pause(
    store: Store,
    run: RunInfo,
    subaccount: str | None = None,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Stop new orders in ``subaccount`` (None: the whole account) until ``resume``.
    Returns the command written (``command_id``, ``kind``, ``args``, ...)."""
    sub = _check_subaccount(store, run, subaccount)
    return _write(
        store, run, "pause", subaccount=sub, args=None, actor=actor, reason=_reason(reason)
    )


def resume(
    store: Store,
    run: RunInfo,
    subaccount: str | None = None,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Let ``subaccount`` (None: the whole account) trade again after a pause or a halt."""
    sub = _check_subaccount(store, run, subaccount)
    return _write(
        store, run, "resume", subaccount=sub, args=None, actor=actor, reason=_reason(reason)
    )


def close(
    store: Store,
    run: RunInfo,
    symbols: Sequence[str] | None = None,
    *,
    all: bool = False,
    subaccount: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Close the positions in ``symbols`` (``BTC/USDT`` and ``btcusdt`` are ``BTCUSDT``),
    or every position with ``all=True``, in ``subaccount`` (None: every subaccount)."""
    sub = _check_subaccount(store, run, subaccount)
    wanted = list(dict.fromkeys(symbol_key(s) for s in symbols or () if s.strip()))
    if all and wanted:
        raise ControlError("close takes SYMBOL ... or --all, not both")
    if not all and not wanted:
        raise ControlError("close needs the symbols to close (e.g. BTCUSDT) or --all")
    notes: list[str] = []
    state = store.load_state(run.run_id, "status")
    if wanted and state:
        # The last status is at most a cycle old: a symbol held nowhere is most likely a
        # typo. Still written (a person closing must never be blocked by a stale view).
        held = _held(state, sub)
        missing = [s for s in wanted if s not in held]
        if missing:
            where = f"subaccount {sub!r}" if sub else "any subaccount"
            notes.append(
                f"no position in {', '.join(missing)} in {where} at the runner's last status "
                f"({state.get('timestamp')}): nothing to close there unless one opens first"
            )
    args: dict[str, Any] = {"all": True} if all else {"symbols": wanted}
    return _write(
        store,
        run,
        "close",
        subaccount=sub,
        args=args,
        actor=actor,
        reason=_reason(reason),
        notes=notes,
    )


def _held(state: Mapping[str, Any], subaccount: str | None) -> set[str]:
    subs = state.get("subaccounts") or {}
    out: set[str] = set()
    for name, doc in subs.items():
        if subaccount is None or name == subaccount:
            for symbol, quantity in (doc.get("positions") or {}).items():
                if quantity:
                    out.add(symbol_key(symbol))
    return out


def parse_limit(key: str, value: Any) -> Any:
    """``value`` for limit ``key``, validated by ``Limits`` itself and in its JSON form.

    Text is read as YAML: ``"0.2"`` is 0.2, ``"null"`` (or ``none``, ``~``) is no cap,
    ``"[BTCUSDT, ETHUSDT]"`` or ``"BTCUSDT,ETHUSDT"`` a list of names. Raises ControlError
    naming the key and the value."""
    if key not in Limits.model_fields:
        raise ControlError(f"unknown limit {key!r}; limits are {', '.join(Limits.model_fields)}")
    parsed = value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null", "~", ""):
            parsed = None
        else:
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                parsed = text
            if isinstance(parsed, str) and _is_list(key):
                parsed = [p.strip() for p in parsed.split(",") if p.strip()]
    if isinstance(parsed, bool):
        raise ControlError(f"limit {key}: {value!r} is not a valid value (a yes/no is not one)")
    try:
        limits = Limits.model_validate({key: parsed})
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise ControlError(f"limit {key}: {value!r} is not a valid value ({problems})") from None
    return limits.model_dump(mode="json")[key]


def _is_list(key: str) -> bool:
    annotation = Limits.model_fields[key].annotation
    return any(typing.get_origin(a) is tuple for a in typing.get_args(annotation))


def set_limit(
    store: Store,
    run: RunInfo,
    key: str,
    value: Any,
    *,
    subaccount: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Set hard limit ``key`` (a ``Limits`` field, in its units: fractions of equity,
    USDT) to ``value`` in ``subaccount`` (None: every subaccount). Needs a reason."""
    sub = _check_subaccount(store, run, subaccount)
    new = parse_limit(key, value)
    why = _reason(reason, required="limits set")
    notes = []
    state = store.load_state(run.run_id, "status") or {}
    for name, doc in (state.get("subaccounts") or {}).items():
        if sub is None or name == sub:
            old = (doc.get("limits") or {}).get(key)
            if key in (doc.get("limits") or {}) and old != new:
                notes.append(f"{name}: {key} {_show(old)} -> {_show(new)}")
            elif key in (doc.get("limits") or {}):
                notes.append(f"{name}: {key} is already {_show(new)}")
    return _write(
        store,
        run,
        "limits",
        subaccount=sub,
        args={"key": key, "value": new},
        actor=actor,
        reason=why,
        notes=notes,
    )


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def set_mode(
    store: Store,
    run: RunInfo,
    subaccount: str,
    mode: str,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Set ``subaccount``'s mode to ``monitor``, ``approve`` or ``auto``. Needs a reason."""
    if not subaccount:
        raise ControlError("mode set needs the subaccount")
    sub = _check_subaccount(store, run, subaccount)
    wanted = mode.strip().lower()
    if wanted not in MODES:
        raise ControlError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")
    why = _reason(reason, required="mode set")
    notes = []
    state = store.load_state(run.run_id, "status") or {}
    doc = (state.get("subaccounts") or {}).get(sub) or {}
    if wanted == "auto" and "envelope" in doc and doc["envelope"] is None:
        # The envelope comes from the portfolio file, fixed for the run: the runner
        # would refuse this one, so say it now.
        raise ControlError(
            f"{sub} has no envelope, so it cannot trade in auto mode: set envelope "
            "(max_order_notional, max_daily_turnover) in the portfolio file and restart the run"
        )
    now = doc.get("mode")
    if now == wanted:
        notes.append(f"{sub} is already in {wanted} mode at the runner's last status")
    elif now:
        notes.append(f"{sub}: {now} -> {wanted}")
    return _write(
        store,
        run,
        "mode",
        subaccount=sub,
        args={"mode": wanted},
        actor=actor,
        reason=why,
        notes=notes,
    )


def _pending_proposal(store: Store, run: RunInfo, proposal_id: int, verb: str) -> dict[str, Any]:
    try:
        proposal = store.proposal(run.run_id, int(proposal_id))
    except StoreError:
        proposal = None  # the store's message names no alternatives; this one does
    if proposal is None:
        pending = [p["proposal_id"] for p in store.proposals(run.run_id, status="pending")]
        listed = ", ".join(map(str, pending)) if pending else "none"
        raise ControlError(
            f"no proposal {proposal_id} in run {run.run_id!r}; pending proposals: {listed}"
        )
    if proposal["status"] != "pending":
        by = proposal.get("decided_by")
        raise ControlError(
            f"proposal {proposal_id} is {proposal['status']}"
            + (f" (by {by})" if by else "")
            + f", not pending: nothing to {verb}"
        )
    for cmd in store.pending_commands(run.run_id):
        if cmd["kind"] in ("approve", "reject") and _args(cmd).get("proposal_id") == proposal_id:
            raise ControlError(
                f"proposal {proposal_id} already has a pending {cmd['kind']} command "
                f"(#{cmd['command_id']} by {cmd.get('actor')}); the runner applies it first"
            )
    return proposal


def transfer_text(proposal: Mapping[str, Any]) -> str:
    """A transfer proposal in a few words: ``core -> trend, 2,500.00 USDT``."""
    doc = proposal.get("transfer") or {}
    amount = doc.get("amount")
    money = f"{float(amount):,.2f} USDT" if amount is not None else "? USDT"
    return f"{doc.get('source', '?')} -> {doc.get('target', '?')}, {money}"


def _args(cmd: Mapping[str, Any]) -> Mapping[str, Any]:
    return cmd.get("args") or {}


def _expiry_note(store: Store, run: RunInfo, proposal: Mapping[str, Any]) -> list[str]:
    state = store.load_state(run.run_id, "status") or {}
    expires, clock = proposal.get("expires_at"), state.get("timestamp")
    if expires is None or clock is None:
        return []
    if pd.Timestamp(expires) <= pd.Timestamp(clock):
        return [
            f"proposal {proposal['proposal_id']} expires at {_iso(expires)} and the runner's "
            f"clock is at {_iso(clock)}: if it expires first, nothing is sent"
        ]
    return []


def approve(
    store: Store,
    run: RunInfo,
    proposal_id: int,
    legs: Sequence[int] | None = None,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Approve pending proposal ``proposal_id``: every leg, or only ``legs`` (leg numbers).
    The runner re-checks the approved legs with the guard before sending them. A
    transfer proposal has no legs (``legs`` must be None): the runner checks it with the
    transfer guard at its next close and makes it."""
    proposal = _pending_proposal(store, run, proposal_id, "approve")
    chosen: list[int] | None = None
    if legs is not None and proposal.get("kind") == "transfer":
        raise ControlError(
            f"proposal {proposal_id} is a transfer ({transfer_text(proposal)}): it has no "
            f"legs to choose; approve it whole: trimtab approve {proposal_id} (without --legs)"
        )
    if legs is not None:
        chosen = list(dict.fromkeys(int(leg) for leg in legs))
        if not chosen:
            raise ControlError("--legs is empty: give leg numbers like 0,2, or leave it out")
        known = [int(leg["leg"]) for leg in proposal.get("legs") or ()]
        unknown = [leg for leg in chosen if leg not in known]
        if unknown:
            raise ControlError(
                f"proposal {proposal_id} has no leg {', '.join(map(str, unknown))}; "
                f"its legs: {', '.join(map(str, known)) or 'none'}"
            )
    return _write(
        store,
        run,
        "approve",
        subaccount=proposal.get("subaccount"),
        args={"proposal_id": int(proposal_id), "legs": chosen},
        actor=actor,
        reason=_reason(reason),
        notes=_expiry_note(store, run, proposal),
    )


def reject(
    store: Store,
    run: RunInfo,
    proposal_id: int,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Reject pending proposal ``proposal_id``: none of its legs is sent."""
    proposal = _pending_proposal(store, run, proposal_id, "reject")
    return _write(
        store,
        run,
        "reject",
        subaccount=proposal.get("subaccount"),
        args={"proposal_id": int(proposal_id)},
        actor=actor,
        reason=_reason(reason),
    )


# --- views -------------------------------------------------------------------------------
def adopt(
    store: Store,
    run: RunInfo,
    order: str,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Take an order the runner did not send (placed by hand, or by another tool) into
    its books: its fills, held apart, are booked and the books compared again. ``order``:
    its client order id, or the exchange's order id. Needs a reason."""
    key = str(order or "").strip()
    if not key:
        raise ControlError("adopt needs the order: its client order id or exchange order id")
    why = _reason(reason, required="adopt")
    notes = []
    gate = (store.load_state(run.run_id, "status") or {}).get("gate") or {}
    known = {
        str(x.get("client_order_id") or x.get("exchange_order_id"))
        for x in [*(gate.get("external") or []), *(gate.get("held_fills") or [])]
    }
    if gate and key not in known:
        listing = ", ".join(sorted(known)) or "none"
        notes.append(
            f"{key} is not among the external orders at the runner's last status ({listing}); "
            "the runner checks again when it applies the command"
        )
    return _write(
        store,
        run,
        "adopt",
        subaccount=None,
        args={"order": key},
        actor=actor,
        reason=why,
        notes=notes,
    )


def accept_balances(
    store: Store,
    run: RunInfo,
    subaccount: str | None = None,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Take the exchange's balances as the books of ``subaccount`` (None: all), for money
    moved outside trimtab (a deposit, a withdrawal) that no order explains. Needs a
    reason; each change is recorded as an override."""
    sub = _check_subaccount(store, run, subaccount)
    return _write(
        store,
        run,
        "accept",
        subaccount=sub,
        args=None,
        actor=actor,
        reason=_reason(reason, required="accept"),
    )


def request_reconcile(
    store: Store, run: RunInfo, *, actor: str | None = None, wait_seconds: float = 30.0
) -> dict[str, Any]:
    """Ask the running runner to compare its books with the exchange now; waits for its
    answer (up to ``wait_seconds``) and returns the command with its outcome and the
    gate from the runner's status."""
    receipt = _write(store, run, "reconcile", subaccount=None, args=None, actor=actor, reason="")
    deadline = time.monotonic() + wait_seconds
    row: Mapping[str, Any] | None = None
    while time.monotonic() < deadline:
        row = next(
            (c for c in store.commands(run.run_id) if c["command_id"] == receipt["command_id"]),
            None,
        )
        if row is not None and row.get("status") != "pending":
            break
        time.sleep(0.2)
    done = row is not None and row.get("status") != "pending"
    return _plain(
        {
            **receipt,
            "status": row.get("status") if done and row else "pending",
            "outcome": row.get("outcome") if done and row else None,
            "gate": (store.load_state(run.run_id, "status") or {}).get("gate"),
        }
    )


def last_gate(store: Store, run: RunInfo) -> dict[str, Any] | None:
    """The reconciliation gate at the runner's last saved status (None: never saved)."""
    return _plain((store.load_state(run.run_id, "status") or {}).get("gate"))


def heartbeat(store: Store, run: RunInfo, now: pd.Timestamp | None = None) -> dict[str, Any]:
    """The runner's heartbeat with its age (seconds, wall clock) and ``alive``."""
    beat = store.heartbeat(run.run_id)
    if beat is None:
        return {"alive": False, "at": None, "age_seconds": None}
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    at = beat.get("at")
    age = None if at is None else max((now - _utc(at)).total_seconds(), 0.0)
    tick = beat.get("tick_seconds")
    window = 3.0 * float(tick) if isinstance(tick, int | float) and tick > 0 else ALIVE_SECONDS
    stopped = beat.get("status") in ("stopped", "finished", "failed")
    alive = age is not None and age < window and not stopped
    return {**_plain(beat), "age_seconds": age, "alive_window_seconds": window, "alive": alive}


def runner_alive(store: Store, run: RunInfo) -> bool:
    """True when the runner's heartbeat is fresh: it applies a command within one cycle."""
    return bool(heartbeat(store, run)["alive"])


def status(store: Store, run: RunInfo) -> dict[str, Any]:
    """The run at a glance: the run, the heartbeat (``alive``), the runner's last saved
    status, the latest review of each subaccount (risk score 0-100, factors, flags), the
    pending proposals and commands, the last finished commands and the last transfers
    between subaccounts (newest first)."""
    reviews = {}
    for name, row in store.latest_reviews(run.run_id).items():
        payload = row.get("payload") or {}
        reviews[name] = {
            "timestamp": _iso(row.get("timestamp")),
            "risk_score": payload.get("risk_score"),
            "risk_level": payload.get("risk_level"),
            "factors": payload.get("factors") or [],
            "flags": payload.get("flags") or [],
        }
    done = [c for c in store.commands(run.run_id) if c.get("status") != "pending"]
    return _plain(
        {
            "run": _run_doc(store, run),
            "store": store.url,
            "heartbeat": heartbeat(store, run),
            "state": store.load_state(run.run_id, "status"),
            "reviews": reviews,
            "pending_proposals": proposals(store, run),
            "pending_commands": [_command_doc(c) for c in store.pending_commands(run.run_id)],
            "recent_commands": [_command_doc(c) for c in done[::-1][:RECENT_COMMANDS]],
            "recent_transfers": recent_transfers(store, run),
        }
    )


def recent_transfers(
    store: Store, run: RunInfo, limit: int = RECENT_TRANSFERS
) -> list[dict[str, Any]]:
    """The run's last ``limit`` transfers between subaccounts, newest first: when, from,
    to, the amount asked for and moved (USDT), its status (``done``, ``cut``,
    ``refused``, ``not_made``, ``new`` while in flight; a transfer proposed to a person
    ``proposed``, ``approved``, ``rejected`` or ``expired``, with its ``proposal_id`` and
    ``approved_by``), who asked (``scheduled``, ``rebalance_capital``, ``allocator``),
    why it moved less or nothing, and ``transfer_id`` (``RUN:t<bar>:<n>``, the id the
    exchange knows it by; None for one never booked)."""
    out = []
    for row in store.transfers(run.run_id, floats=True)[::-1][:limit]:
        guard = row.get("guard") or {}
        why = guard.get("not_made") or "; ".join(guard.get("checks") or [])
        if not why and row["status"] in TRANSFER_WAITING:
            why = str(guard.get("proposed") or "")
            if row["status"] == "rejected" and guard.get("rejected_by"):
                why = f"rejected by {guard['rejected_by']}"
            elif row["status"] == "expired":
                why = "expired unapproved"
            elif row["status"] == "approved":
                why = f"approved by {guard.get('approved_by')}: made at the next close"
        elif guard.get("approved_by"):
            why = "; ".join(x for x in (f"approved by {guard['approved_by']}", why) if x)
        out.append(
            {
                "timestamp": row["timestamp"],
                "from": row["source"],
                "to": row["target"],
                "requested": guard.get("requested", row["amount"]),
                # A not_made or proposed row keeps the amount asked for; a refused one
                # says 0; only a booked one (new, done) moved it.
                "moved": row["amount"] if row["status"] in ("new", "done") else 0.0,
                "status": row["status"],
                "origin": guard.get("origin"),
                "reason": row.get("reason") or "",
                "why": why,
                "proposal_id": guard.get("proposal_id"),
                "approved_by": guard.get("approved_by"),
                # The id it is made under at the exchange (None when never booked).
                "transfer_id": guard.get("transfer_id"),
            }
        )
    return _plain(out)


def proposals(store: Store, run: RunInfo, all: bool = False) -> list[dict[str, Any]]:
    """The run's pending proposals (every one with ``all``), oldest first."""
    rows = store.proposals(run.run_id) if all else store.proposals(run.run_id, status="pending")
    return _plain(rows)


def commands(store: Store, run: RunInfo) -> list[dict[str, Any]]:
    """Every human command of the run, oldest first, with its status and outcome."""
    return [_command_doc(c) for c in store.commands(run.run_id)]


def limits(store: Store, run: RunInfo) -> dict[str, Any]:
    """The limits in force per subaccount at the runner's last status, and the pending
    limit commands."""
    state = store.load_state(run.run_id, "status") or {}
    return _plain(
        {
            "timestamp": state.get("timestamp"),
            "subaccounts": {
                name: doc.get("limits") for name, doc in (state.get("subaccounts") or {}).items()
            },
            "pending": [
                _command_doc(c) for c in store.pending_commands(run.run_id) if c["kind"] == "limits"
            ],
        }
    )


def _run_doc(store: Store, run: RunInfo) -> dict[str, Any]:
    cp = run.checkpoint
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "status": run.status,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "checkpoint": None if cp is None else {"bar": cp[0], "timestamp": cp[1]},
        "subaccounts": subaccounts(store, run),
    }


def _command_doc(row: Mapping[str, Any]) -> dict[str, Any]:
    return _plain(dict(row))


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return _utc(value).isoformat()
    except (TypeError, ValueError):
        return str(value)


def _plain(value: Any) -> Any:
    """Plain JSON: timestamps as ISO strings (UTC), decimals as floats."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return _iso(value)
    if isinstance(value, Decimal):
        return float(value)
    return json_ready(value)
