"""The human-override commands of the command line, thin over ``trimtab.app.service``:
``status``, ``proposals``, ``approve``, ``reject``, ``pause``, ``resume``, ``close``,
``limits set|show``, ``mode set``, ``adopt``, ``accept``, ``reconcile`` and ``commands``.

``register(app)`` adds them to a typer app (``trimtab.cli`` calls it). Every command takes
``--db URL`` (default ``$TRIMTAB_DB``, else ``sqlite:///runs/trimtab.db``), ``--run-id``
(default: the store's single paper or live run) and ``--json`` (the machine-readable
document, nothing else on stdout); those that write a command also take ``--by NAME`` and
``--reason TEXT``. A command is written to the store and applied by the runner within one
cycle, or at its next start when it is down. Mistakes a user can make are one line on
stderr and exit code 2 (``TRIMTAB_DEBUG=1`` shows tracebacks).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from trimtab.journal.store import RunInfo, Store

# Tables stay readable when output goes to a file or a pipe (rich would use 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
err = Console(stderr=True)

_USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    FileNotFoundError,
    PermissionError,
)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes into a one-line error and exit code 2 (``TRIMTAB_DEBUG=1`` shows
    tracebacks). The same rule as ``trimtab.cli``'s, which this module sits below."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from trimtab.journal.store import StoreError

        try:
            return fn(*args, **kwargs)
        except (*_USER_ERRORS, StoreError) as exc:
            if os.environ.get("TRIMTAB_DEBUG"):
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            # Messages quote names and symbols, which may hold "[...]": print, not markup.
            err.print(
                f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper


def _control() -> Any:
    """The service layer (``trimtab.app.service``, which the API calls too), imported
    when a command runs (not when the CLI starts: it brings SQLAlchemy and the guard,
    half a second of start-up for every command)."""
    from trimtab.app import service

    return service


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="The runner's store (default: $TRIMTAB_DB, else sqlite:///runs/trimtab.db).",
    ),
]
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run-id", metavar="NAME", help="The run (default: the store's one paper or live run)."
    ),
]
ByOpt = Annotated[
    str | None,
    typer.Option("--by", metavar="NAME", help="Who gives the command (default: your login)."),
]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", metavar="TEXT", help="Why (recorded with the command).")
]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (nothing else on stdout).")
]
SubOpt = Annotated[
    str | None,
    typer.Option(
        "--subaccount", metavar="NAME", help="One subaccount (default: the whole account)."
    ),
]


@contextlib.contextmanager
def _session(db: str | None, run_id: str | None) -> Iterator[tuple[Store, RunInfo]]:
    store = _control().open_store(db or _control().default_db())
    try:
        yield store, _control().find_run(store, run_id)
    finally:
        store.close()


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _written(store: Store, run: RunInfo, receipt: dict[str, Any], as_json: bool) -> None:
    """Say what was written and when the runner takes it up."""
    doc = _control().written(store, run, receipt)
    when = doc["takes_effect"]
    if as_json:
        _print_json(doc)
        return
    where = f" for {receipt['subaccount']}" if receipt["subaccount"] else ""
    console.print(
        f"command #{receipt['command_id']} written: {receipt['kind']}{where}"
        f"{_args_text(receipt['kind'], receipt['args'])} in run {run.run_id!r}",
        markup=False,
    )
    for note in receipt["notes"]:
        console.print(f"note: {note}", markup=False)
    console.print(when, markup=False)


def _args_text(kind: str, args: dict[str, Any] | None) -> str:
    if not args:
        return ""
    if kind == "close":
        return " (every position)" if args.get("all") else f" ({', '.join(args['symbols'])})"
    if kind == "limits":
        return f" ({args['key']} = {_value(args['value'])})"
    if kind == "mode":
        return f" ({args['mode']})"
    if kind == "approve":
        legs = args.get("legs")
        return f" (proposal {args['proposal_id']}, " + (
            "whole)" if legs is None else f"legs {', '.join(map(str, legs))})"
        )
    if kind == "reject":
        return f" (proposal {args['proposal_id']})"
    return f" ({json.dumps(args)})"


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _num(value: Any, fmt: str = ",.2f") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return format(value, fmt) if isinstance(value, int | float) else str(value)


def _when(value: Any) -> str:
    """An ISO time shortened for a table (UTC)."""
    if not value:
        return ""
    text = str(value).replace("T", " ")
    return text[:19]


def _parse_legs(text: str | None) -> list[int] | None:
    if text is None:
        return None
    legs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            legs.append(int(part))
        except ValueError:
            raise ValueError(f"--legs takes leg numbers like 0,2, not {text!r}") from None
    if not legs:
        raise ValueError(f"--legs takes leg numbers like 0,2, not {text!r}")
    return legs


# --- rendering ---------------------------------------------------------------------------
def _runner_line(beat: dict[str, Any]) -> str:
    if beat.get("at") is None:
        return "runner: not running (no heartbeat yet)"
    age = beat.get("age_seconds") or 0.0
    pid = f", pid {beat['pid']}" if beat.get("pid") is not None else ""
    nxt = f", next bar {_when(beat['next_bar'])}" if beat.get("next_bar") else ""
    if beat["alive"]:
        return f"runner: alive (heartbeat {age:.0f} s ago{pid}{nxt})"
    said = f", it said {beat['status']}" if beat.get("status") else ""
    return f"runner: not running (last heartbeat {_when(beat['at'])} UTC, {age:.0f} s ago{said})"


def _proposal_tables(rows: list[dict[str, Any]], title: str) -> list[Table]:
    """Order proposals (a line per leg) and transfer proposals (a line each: from -> to,
    the USDT asked) in tables of their own."""
    orders = [p for p in rows if (p.get("kind") or "orders") != "transfer"]
    transfers = [p for p in rows if p.get("kind") == "transfer"]
    out = [_proposal_table(orders, title)] if orders else []
    if transfers:
        out.append(_transfer_proposal_table(transfers, f"{title}: transfers"))
    return out


def _proposal_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in (
        "id",
        "subaccount",
        "at",
        "expires",
        "status",
        "leg",
        "side",
        "symbol",
        "quantity",
        "notional",
        "price",
        "leg status",
        "reason",
    ):
        right = col in ("id", "leg", "quantity", "notional", "price")
        table.add_column(col, justify="right" if right else "left")
    for p in rows:
        legs = p.get("legs") or [{}]
        for i, leg in enumerate(legs):
            head = (
                (
                    str(p["proposal_id"]),
                    p.get("subaccount") or "",
                    _when(p.get("timestamp")),
                    _when(p.get("expires_at")),
                    p.get("status") or "",
                )
                if i == 0
                else ("",) * 5
            )
            quantity = leg.get("quantity")
            if quantity is None and leg.get("quote_quantity") is not None:
                quantity = f"{_num(leg['quote_quantity'])} quote"
            table.add_row(
                *head,
                _num(leg.get("leg"), "d") if isinstance(leg.get("leg"), int) else "",
                str(leg.get("side") or ""),
                str(leg.get("symbol") or ""),
                _num(quantity, ".6g"),
                _num(leg.get("notional")),
                _num(leg.get("planned_price"), ",.6g"),
                str(leg.get("status") or ""),
                str(leg.get("reason") or ""),
            )
    return table


def _transfer_proposal_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in (
        "id",
        "kind",
        "at",
        "expires",
        "status",
        "from -> to",
        "asked USDT",
        "moved USDT",
        "who asked",
        "reason",
    ):
        table.add_column(col, justify="right" if col == "id" or "USDT" in col else "left")
    for p in rows:
        doc = p.get("transfer") or {}
        table.add_row(
            str(p["proposal_id"]),
            "transfer",
            _when(p.get("timestamp")),
            _when(p.get("expires_at")),
            p.get("status") or "",
            f"{doc.get('source', '?')} -> {doc.get('target', '?')}",
            _num(doc.get("amount")),
            _num(doc.get("moved")),
            str(doc.get("origin") or ""),
            str(doc.get("reason") or ""),
        )
    return table


def _command_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in (
        "id",
        "written (UTC)",
        "kind",
        "subaccount",
        "what",
        "by",
        "reason",
        "status",
        "outcome",
        "applied (UTC)",
    ):
        table.add_column(col, justify="right" if col == "id" else "left")
    for c in rows:
        table.add_row(
            str(c.get("command_id")),
            _when(c.get("created_at")),
            str(c.get("kind")),
            c.get("subaccount") or "all",
            _args_text(str(c.get("kind")), c.get("args")).strip(" ()"),
            str(c.get("actor") or ""),
            str(c.get("reason") or ""),
            str(c.get("status") or ""),
            str(c.get("outcome") or ""),
            _when(c.get("applied_at")),
        )
    return table


def _print_status(doc: dict[str, Any]) -> None:
    run = doc["run"]
    state = doc.get("state") or {}
    console.print(
        f"run {run['run_id']} ({run['kind']}, {run['status']}) in {doc['store']}", markup=False
    )
    console.print(_runner_line(doc["heartbeat"]), markup=False)
    if state:
        account = state.get("account") or {}
        console.print(
            f"last cycle: bar {state.get('bar')} at {_when(state.get('timestamp'))} UTC, "
            f"account equity {_num(account.get('equity'))} USDT, "
            f"state {account.get('state') or 'n/a'}",
            markup=False,
        )
    else:
        console.print("last cycle: none recorded yet", markup=False)
    gate = state.get("gate") or {}
    if gate:
        console.print(f"reconciliation: {gate.get('summary') or gate.get('state')}", markup=False)
    subs = state.get("subaccounts") or {}
    table = Table(title="Subaccounts", title_justify="left")
    for col in (
        "subaccount",
        "mode",
        "paused",
        "trading",
        "equity",
        "cash",
        "positions",
        "turnover today",
        "risk score",
        "top flags",
    ):
        table.add_column(
            col, justify="right" if col in ("equity", "cash", "risk score") else "left"
        )
    names = list(dict.fromkeys([*run["subaccounts"], *subs, *doc["reviews"]]))
    for name in names:
        s = subs.get(name) or {}
        review = doc["reviews"].get(name) or {}
        positions = s.get("positions") or {}
        held = ", ".join(f"{sym} {_num(q, '.6g')}" for sym, q in positions.items() if q)
        flags = review.get("flags") or []
        table.add_row(
            name,
            str(s.get("mode") or ""),
            {True: "yes", False: "no"}.get(s.get("paused"), ""),
            str(s.get("trading_state") or ""),
            _num(s.get("equity")),
            _num(s.get("cash")),
            held,
            _num(s.get("turnover_today")),
            _num(review.get("risk_score"), ".1f"),
            "; ".join(
                f"{f.get('severity', '')}: {f.get('message') or f.get('code', '')}"
                for f in flags[:2]
            ),
        )
    if names:
        console.print(table)
    if "account" in doc["reviews"]:
        review = doc["reviews"]["account"]
        console.print(
            f"account review at {_when(review.get('timestamp'))} UTC: risk score "
            f"{_num(review.get('risk_score'), '.1f')} ({review.get('risk_level') or 'n/a'}), "
            f"{len(review.get('flags') or [])} flags",
            markup=False,
        )
    if doc["pending_proposals"]:
        for table in _proposal_tables(doc["pending_proposals"], "Pending proposals"):
            console.print(table)
    else:
        console.print("no pending proposals", markup=False)
    if doc["pending_commands"]:
        console.print(_command_table(doc["pending_commands"], "Pending commands"))
    if doc["recent_commands"]:
        console.print(_command_table(doc["recent_commands"], "Recent commands (newest first)"))
    if doc.get("recent_transfers"):
        console.print(_transfer_table(doc["recent_transfers"]))


def _transfer_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Recent transfers (newest first)", title_justify="left")
    for col in ("at (UTC)", "from", "to", "asked USDT", "moved USDT", "status", "by", "why"):
        table.add_column(col, justify="right" if "USDT" in col else "left")
    for t in rows:
        table.add_row(
            _when(t.get("timestamp")),
            str(t.get("from")),
            str(t.get("to")),
            f"{float(t.get('requested') or 0.0):,.2f}",
            f"{float(t.get('moved') or 0.0):,.2f}",
            str(t.get("status"))
            + (f" (proposal {t['proposal_id']})" if t.get("proposal_id") is not None else ""),
            str(t.get("origin") or ""),
            str(t.get("why") or t.get("reason") or ""),
        )
    return table


def _print_gate(gate: dict[str, Any]) -> None:
    console.print(str(gate.get("summary") or gate.get("state")), markup=False)
    diffs = gate.get("differences") or []
    if diffs:
        table = Table(title="Differences (ours / the exchange's)", title_justify="left")
        for col in ("subaccount", "item", "key", "ours", "exchange", "tolerance", "within", "note"):
            table.add_column(col, justify="right" if col in ("ours", "exchange") else "left")
        for d in diffs:
            table.add_row(
                str(d.get("subaccount")),
                str(d.get("item")),
                str(d.get("key")),
                _value(d.get("ours")),
                _value(d.get("theirs")),
                "" if d.get("allowed") is None else f"{d['allowed']:g}",
                "yes" if d.get("within") else "NO",
                str(d.get("note") or ""),
            )
        console.print(table)
    external = gate.get("external") or []
    held = gate.get("held_fills") or []
    if external or held:
        table = Table(
            title="Orders the runner did not send (adopt with `trimtab adopt ORDER --reason ...`)",
            title_justify="left",
        )
        for col in ("subaccount", "order", "symbol", "side", "quantity", "status"):
            table.add_column(col)
        for o in external:
            table.add_row(
                str(o.get("subaccount")),
                str(o.get("client_order_id") or o.get("exchange_order_id")),
                str(o.get("symbol")),
                str(o.get("side")),
                _value(o.get("quantity")),
                str(o.get("status")),
            )
        for h in held:
            data = h.get("data") or {}
            table.add_row(
                str(h.get("subaccount")),
                str(h.get("client_order_id") or data.get("exchange_order_id")),
                str(data.get("symbol")),
                str(data.get("side")),
                _value(data.get("quantity")),
                "filled (held, not booked)",
            )
        console.print(table)
    pending = gate.get("pending_events") or 0
    if pending:
        console.print(
            f"{pending} exchange event(s) not booked yet (counted in above; the next cycle "
            "books them)",
            markup=False,
        )


# --- commands ----------------------------------------------------------------------------
def register(app: typer.Typer) -> None:
    """Add the control commands (and the ``limits`` and ``mode`` groups) to ``app``."""
    limits_app = typer.Typer(help="Show or change a run's hard limits.", no_args_is_help=True)
    mode_app = typer.Typer(help="Change a subaccount's mode.", no_args_is_help=True)
    app.add_typer(limits_app, name="limits")
    app.add_typer(mode_app, name="mode")

    @app.command("status")
    @_friendly
    def status_cmd(db: DbOpt = None, run_id: RunOpt = None, as_json: JsonFlag = False) -> None:
        """The run at a glance: runner alive, modes, equity, risk, pending proposals.

        Each subaccount's mode, trading state, equity, positions and latest risk review;
        pending proposals and commands, and the last ones the runner applied."""
        with _session(db, run_id) as (store, run):
            doc = _control().status(store, run)
        if as_json:
            _print_json(doc)
        else:
            _print_status(doc)

    @app.command("proposals")
    @_friendly
    def proposals_cmd(
        db: DbOpt = None,
        run_id: RunOpt = None,
        all: Annotated[
            bool, typer.Option("--all", help="Every proposal, not only pending.")
        ] = False,
        as_json: JsonFlag = False,
    ) -> None:
        """Proposals waiting for `trimtab approve ID` or `trimtab reject ID`.

        From approve-mode subaccounts (order plans, and transfers between subaccounts:
        kind transfer, from -> to and the USDT asked), and auto-mode orders beyond their
        envelope."""
        with _session(db, run_id) as (store, run):
            rows = _control().proposals(store, run, all=all)
        if as_json:
            _print_json(rows)
        elif rows:
            for table in _proposal_tables(rows, "Proposals" if all else "Pending proposals"):
                console.print(table)
        else:
            console.print("no proposals" if all else "no pending proposals", markup=False)

    @app.command("approve")
    @_friendly
    def approve_cmd(
        proposal_id: Annotated[int, typer.Argument(metavar="ID", help="The proposal's id.")],
        legs: Annotated[
            str | None,
            typer.Option("--legs", metavar="0,2", help="Approve only these legs (default: all)."),
        ] = None,
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Approve a pending proposal (all legs or some; a transfer whole, no --legs).

        The guard checks the approved legs again before they are sent; a transfer is
        checked by the transfer guard and made at the runner's next close."""
        chosen = _parse_legs(legs)
        with _session(db, run_id) as (store, run):
            receipt = _control().approve(store, run, proposal_id, chosen, actor=by, reason=reason)
            _written(store, run, receipt, as_json)

    @app.command("reject")
    @_friendly
    def reject_cmd(
        proposal_id: Annotated[int, typer.Argument(metavar="ID", help="The proposal's id.")],
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Reject a pending proposal: none of its orders is sent (a transfer: nothing moves)."""
        with _session(db, run_id) as (store, run):
            receipt = _control().reject(store, run, proposal_id, actor=by, reason=reason)
            _written(store, run, receipt, as_json)

    @app.command("pause")
    @_friendly
    def pause_cmd(
        subaccount: SubOpt = None,
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Stop sending new orders (one subaccount or all) until `trimtab resume`."""
        with _session(db, run_id) as (store, run):
            receipt = _control().pause(store, run, subaccount, actor=by, reason=reason)
            _written(store, run, receipt, as_json)

    @app.command("resume")
    @_friendly
    def resume_cmd(
        subaccount: SubOpt = None,
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Trade again after a pause or a halt (one subaccount or all)."""
        with _session(db, run_id) as (store, run):
            receipt = _control().resume(store, run, subaccount, actor=by, reason=reason)
            _written(store, run, receipt, as_json)

    @app.command("close")
    @_friendly
    def close_cmd(
        symbols: Annotated[
            list[str] | None,
            typer.Argument(metavar="[SYMBOL]...", help="Symbols to close, e.g. BTCUSDT."),
        ] = None,
        all: Annotated[bool, typer.Option("--all", help="Close every position.")] = False,
        subaccount: SubOpt = None,
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Close positions (some symbols, or --all) in one subaccount or all."""
        with _session(db, run_id) as (store, run):
            receipt = _control().close(
                store, run, symbols, all=all, subaccount=subaccount, actor=by, reason=reason
            )
            _written(store, run, receipt, as_json)

    @limits_app.command("set")
    @_friendly
    def limits_set_cmd(
        key: Annotated[str, typer.Argument(metavar="KEY", help="A limit, e.g. max_asset_weight.")],
        value: Annotated[
            str,
            typer.Argument(
                metavar="VALUE", help="Its new value in the limit's units, e.g. 0.2; null: no cap."
            ),
        ],
        subaccount: Annotated[
            str | None,
            typer.Option(
                "--subaccount", metavar="NAME", help="One subaccount (default: every subaccount)."
            ),
        ] = None,
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Change a hard limit (validated like the configuration; --reason is required)."""
        with _session(db, run_id) as (store, run):
            receipt = _control().set_limit(
                store, run, key, value, subaccount=subaccount, actor=by, reason=reason
            )
            _written(store, run, receipt, as_json)

    @limits_app.command("show")
    @_friendly
    def limits_show_cmd(db: DbOpt = None, run_id: RunOpt = None, as_json: JsonFlag = False) -> None:
        """The limits in force in each subaccount, and changes waiting to be applied."""
        with _session(db, run_id) as (store, run):
            doc = _control().limits(store, run)
        if as_json:
            _print_json(doc)
            return
        subs = {name: lim for name, lim in doc["subaccounts"].items() if lim}
        if not subs:
            console.print(
                "no limits recorded yet: the runner has not finished a cycle", markup=False
            )
        else:
            table = Table(title=f"Limits at {_when(doc['timestamp'])} UTC", title_justify="left")
            table.add_column("limit")
            for name in subs:
                table.add_column(name, justify="right")
            keys = list(dict.fromkeys(k for lim in subs.values() for k in lim))
            for key in keys:
                table.add_row(key, *[_value(lim.get(key)) for lim in subs.values()])
            console.print(table)
        if doc["pending"]:
            console.print(_command_table(doc["pending"], "Pending limit changes"))

    @mode_app.command("set")
    @_friendly
    def mode_set_cmd(
        subaccount: Annotated[str, typer.Argument(metavar="SUBACCOUNT", help="The subaccount.")],
        mode: Annotated[str, typer.Argument(metavar="MODE", help="monitor | approve | auto")],
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Set a subaccount's mode: monitor, approve or auto (--reason is required).

        monitor sends nothing, approve proposes orders for a person to approve, auto
        sends within its envelope."""
        with _session(db, run_id) as (store, run):
            receipt = _control().set_mode(store, run, subaccount, mode, actor=by, reason=reason)
            _written(store, run, receipt, as_json)

    @app.command("adopt")
    @_friendly
    def adopt_cmd(
        order: Annotated[
            str,
            typer.Argument(
                metavar="ORDER",
                help="The external order: its client order id or the exchange's order id "
                "(trimtab reconcile lists them).",
            ),
        ],
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Take an order the runner did not send into its books: its fills are booked, and
        the runner compares its books with the exchange again (needs --reason)."""
        with _session(db, run_id) as (store, run):
            receipt = _control().adopt(store, run, order, actor=by, reason=reason)
            _written(store, run, receipt, as_json)

    @app.command("accept")
    @_friendly
    def accept_cmd(
        subaccount: SubOpt = None,
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        reason: ReasonOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Take the exchange's balances as the books (a deposit or withdrawal made outside
        trimtab, which no order explains); needs --reason, each change is recorded."""
        with _session(db, run_id) as (store, run):
            receipt = _control().accept_balances(store, run, subaccount, actor=by, reason=reason)
            _written(store, run, receipt, as_json)

    @app.command("reconcile")
    @_friendly
    def reconcile_cmd(
        portfolio: Annotated[
            Path | None,
            typer.Option(
                "--portfolio",
                metavar="FILE",
                help="When no runner runs: build the run as `trimtab run` does (same "
                "options) and compare its saved books with the exchange.",
            ),
        ] = None,
        replay: Annotated[
            str | None,
            typer.Option("--replay", metavar="DATA", help="As for `trimtab run`."),
        ] = None,
        start: Annotated[
            str | None, typer.Option("--from", metavar="DATE", help="As for `trimtab run`.")
        ] = None,
        end: Annotated[
            str | None, typer.Option("--to", metavar="DATE", help="As for `trimtab run`.")
        ] = None,
        paper_db: Annotated[
            str | None,
            typer.Option("--paper-db", metavar="FILE", help="As for `trimtab run`."),
        ] = None,
        db: DbOpt = None,
        run_id: RunOpt = None,
        by: ByOpt = None,
        as_json: JsonFlag = False,
    ) -> None:
        """Compare the run's books with the exchange: balances, positions, open orders and
        orders it did not send. A running runner is asked (within a tick); else, with
        --portfolio, the comparison is made here, sending nothing. Exit code 1 when the
        books differ beyond tolerance (the runner stays HALTED)."""
        if portfolio is None:
            with _session(db, run_id) as (store, run):
                if _control().runner_alive(store, run):
                    doc = _control().request_reconcile(store, run, actor=by)
                    gate = doc.get("gate") or {}
                    if doc["status"] == "pending":
                        raise ValueError(
                            f"the runner of {run.run_id} did not answer within 30 s: "
                            "`trimtab commands` shows when it does"
                        )
                else:
                    gate = _control().last_gate(store, run)
                    if gate is None:
                        raise ValueError(
                            f"run {run.run_id} has no reconciliation yet and no runner runs: "
                            "give --portfolio FILE (and the options of `trimtab run`)"
                        )
                    err.print(
                        f"no runner runs {run.run_id}: its last reconciliation, at its last "
                        "status (--portfolio FILE compares now)"
                    )
        else:
            from trimtab.app.run import RunOptions, inspect_run
            from trimtab.engine.portfolio_file import load_portfolio

            rec = inspect_run(
                load_portfolio(portfolio),
                RunOptions(
                    db=db, run_id=run_id, replay=replay, start=start, end=end, paper_db=paper_db
                ),
            )
            gate = {**rec.to_dict(), "summary": rec.summary()}
        if as_json:
            _print_json(gate)
        else:
            _print_gate(gate)
        if gate.get("state") != "ACTIVE":
            raise typer.Exit(1)

    @app.command("commands")
    @_friendly
    def commands_cmd(db: DbOpt = None, run_id: RunOpt = None, as_json: JsonFlag = False) -> None:
        """The journal of human commands: who asked what, why, and what the runner did."""
        with _session(db, run_id) as (store, run):
            rows = _control().commands(store, run)
        if as_json:
            _print_json(rows)
        elif rows:
            console.print(_command_table(rows, f"Commands of run {run.run_id}"))
        else:
            console.print("no commands yet", markup=False)
