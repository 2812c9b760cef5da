"""The service layer: the one set of functions the command line, the REST API and the
alerts call, so that none of them has logic of its own.

The commands (``pause``, ``resume``, ``close``, ``set_limit``, ``set_mode``, ``approve``,
``reject``, ``adopt``, ``accept_balances``, ``request_reconcile``) and the control views
(``status``, ``proposals``, ``commands``, ``limits``, ``heartbeat``) are those of
``trimtab.app.control``, re-exported here; this module adds the views a dashboard needs
(``overview``, ``holdings``, ``review``, ``decisions``, ``orders``, ``fills``, ``alerts``,
``equity``, ``reports``, ``report_html``) and ``written`` (a command's receipt with when
the runner applies it).

Conventions: every function takes the open ``Store`` and the ``RunInfo`` (``find_run``)
and returns plain JSON (times as ISO strings in UTC, money and quantities as floats in
the quote currency, USDT; weights as fractions of equity). Lists are newest first and
cut to ``limit`` rows where a function takes one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trimtab.app.control import (
    MODES,
    RUN_KINDS,
    ControlError,
    accept_balances,
    adopt,
    approve,
    close,
    commands,
    default_db,
    find_run,
    heartbeat,
    last_gate,
    limits,
    open_store,
    parse_limit,
    pause,
    proposals,
    recent_transfers,
    reject,
    request_reconcile,
    resume,
    runner_alive,
    set_limit,
    set_mode,
    status,
    subaccounts,
)
from trimtab.app.control import _plain as plain
from trimtab.journal.store import RunInfo, Store

__all__ = [
    "MODES",
    "RUN_KINDS",
    "ControlError",
    "accept_balances",
    "adopt",
    "alerts",
    "approve",
    "close",
    "commands",
    "decisions",
    "default_db",
    "equity",
    "fills",
    "find_run",
    "heartbeat",
    "holdings",
    "last_gate",
    "limits",
    "open_store",
    "orders",
    "overview",
    "parse_limit",
    "pause",
    "plain",
    "proposals",
    "recent_transfers",
    "reject",
    "report_html",
    "reports",
    "request_reconcile",
    "resume",
    "review",
    "runner_alive",
    "set_limit",
    "set_mode",
    "status",
    "subaccounts",
    "written",
]

#: The most rows a list view returns.
MAX_LIMIT = 1000


def written(store: Store, run: RunInfo, receipt: Mapping[str, Any]) -> dict[str, Any]:
    """A command's receipt with ``runner_alive`` and ``takes_effect`` (when the runner
    applies it: within one cycle, or at its next start)."""
    alive = runner_alive(store, run)
    when = (
        "the runner applies it within one cycle"
        if alive
        else "the runner is not running: it applies this at its next start"
    )
    return {**receipt, "runner_alive": alive, "takes_effect": when}


def _limit(limit: int | None) -> int:
    if limit is None:
        return MAX_LIMIT
    if limit < 1 or limit > MAX_LIMIT:
        raise ControlError(f"limit {limit}: give 1 to {MAX_LIMIT} rows")
    return int(limit)


def _sub(store: Store, run: RunInfo, name: str | None) -> str | None:
    if name is None:
        return None
    known = subaccounts(store, run)
    if name not in known:
        raise ControlError(
            f"unknown subaccount {name!r} in run {run.run_id!r}; its subaccounts: "
            + (", ".join(known) or "none recorded")
        )
    return name


def overview(store: Store, run: RunInfo) -> dict[str, Any]:
    """The run at a glance for a dashboard: the run, the runner's heartbeat, the
    account's equity and trading state, the reconciliation gate, and each subaccount's
    mode, pause, breaker (trading) state, equity, cash, envelope, turnover today and
    latest risk score; with the counts of pending proposals and commands."""
    state = store.load_state(run.run_id, "status") or {}
    reviews = store.latest_reviews(run.run_id)
    subs_state = state.get("subaccounts") or {}
    names = list(dict.fromkeys([*subaccounts(store, run), *subs_state]))
    subs = []
    for name in names:
        doc = subs_state.get(name) or {}
        payload = (reviews.get(name) or {}).get("payload") or {}
        subs.append(
            {
                "name": name,
                "mode": doc.get("mode"),
                "paused": doc.get("paused"),
                "trading_state": doc.get("trading_state"),
                "equity": doc.get("equity"),
                "cash": doc.get("cash"),
                "positions": doc.get("positions") or {},
                "envelope": doc.get("envelope"),
                "turnover_today": doc.get("turnover_today"),
                "risk_score": payload.get("risk_score"),
                "risk_level": payload.get("risk_level"),
            }
        )
    account = state.get("account") or {}
    account_review = (reviews.get("account") or {}).get("payload") or {}
    gate = state.get("gate") or None
    return plain(
        {
            "run": {
                "run_id": run.run_id,
                "kind": run.kind,
                "status": run.status,
                "checkpoint": None
                if run.checkpoint is None
                else {"bar": run.checkpoint[0], "timestamp": run.checkpoint[1]},
            },
            "as_of": state.get("timestamp"),
            "bar": state.get("bar"),
            "heartbeat": heartbeat(store, run),
            "account": {
                "equity": account.get("equity"),
                "trading_state": account.get("state"),
                "risk_score": account_review.get("risk_score"),
                "risk_level": account_review.get("risk_level"),
            },
            "gate": None
            if gate is None
            else {"state": gate.get("state"), "summary": gate.get("summary")},
            "subaccounts": subs,
            "pending_proposals": len(store.proposals(run.run_id, status="pending")),
            "pending_commands": len(store.pending_commands(run.run_id)),
        }
    )


def holdings(store: Store, run: RunInfo) -> dict[str, Any]:
    """Each subaccount's equity, cash and positions at the runner's last status; each
    position with its quantity and, when the latest review priced it, its price,
    value (USDT) and weight (fraction of the subaccount's equity)."""
    state = store.load_state(run.run_id, "status") or {}
    priced: dict[tuple[str, str], Mapping[str, Any]] = {}
    priced_at = None
    for name, row in store.latest_reviews(run.run_id).items():
        payload = row.get("payload") or {}
        for pos in payload.get("positions") or ():
            key = (str(pos.get("subaccount") or name), str(pos.get("symbol")))
            if name == "account" or key not in priced:
                priced[key] = pos
                priced_at = payload.get("valued_at") or priced_at
    out = {}
    for name, doc in (state.get("subaccounts") or {}).items():
        equity_ = doc.get("equity")
        rows = []
        for symbol, quantity in (doc.get("positions") or {}).items():
            if not quantity:
                continue
            pos = priced.get((name, symbol)) or {}
            price = pos.get("price")
            value = None if price is None else float(quantity) * float(price)
            rows.append(
                {
                    "symbol": symbol,
                    "quantity": quantity,
                    "price": price,
                    "value": value,
                    "weight": None if value is None or not equity_ else value / float(equity_),
                    "side": pos.get("side"),
                    "kind": pos.get("kind"),
                }
            )
        out[name] = {"equity": equity_, "cash": doc.get("cash"), "positions": rows}
    return plain(
        {
            "as_of": state.get("timestamp"),
            "priced_at": priced_at,
            "account": {"equity": (state.get("account") or {}).get("equity")},
            "subaccounts": out,
        }
    )


def review(store: Store, run: RunInfo) -> dict[str, Any]:
    """The latest risk review of each subaccount (``account``: the whole account): the
    risk score (0-100) and level, its factors (each with value, score 0-100, weight,
    contribution to the score and an explanation), flags and recommendations."""
    out = {}
    for name, row in store.latest_reviews(run.run_id).items():
        p = row.get("payload") or {}
        out[name] = {
            "timestamp": row.get("timestamp"),
            "risk_score": p.get("risk_score"),
            "risk_level": p.get("risk_level"),
            "summary": p.get("summary"),
            "factors": p.get("factors") or [],
            "omitted_factors": p.get("omitted_factors") or [],
            "flags": p.get("flags") or [],
            "recommendations": p.get("recommendations") or [],
            "equity": p.get("equity"),
            "leverage": p.get("leverage"),
            "regime": (p.get("regime") or {}).get("label"),
        }
    return plain({"reviews": out})


def decisions(
    store: Store, run: RunInfo, subaccount: str | None = None, limit: int | None = 100
) -> list[dict[str, Any]]:
    """The decision journal, newest first: each decision's subaccount, time, policy,
    action, targets (weights), mode, the orders it sent and its ``reasons``."""
    n = _limit(limit)
    names = [_sub(store, run, subaccount)] if subaccount else subaccounts(store, run)
    rows = []
    for name in names:
        for record in store.decisions(run.run_id, name):
            rows.append({"subaccount": name, **record})
    rows.sort(key=lambda r: (str(r.get("timestamp")), r.get("id") or 0), reverse=True)
    return plain(rows[:n])


def _newest(
    rows: list[dict[str, Any]], subaccount: str | None, limit: int | None
) -> list[dict[str, Any]]:
    n = _limit(limit)
    if subaccount is not None:
        rows = [r for r in rows if r.get("subaccount") == subaccount]
    return plain(rows[::-1][:n])


def orders(
    store: Store, run: RunInfo, subaccount: str | None = None, limit: int | None = 100
) -> list[dict[str, Any]]:
    """The run's orders, newest first (status, filled quantity, reason)."""
    return _newest(store.orders(run.run_id, floats=True), _sub(store, run, subaccount), limit)


def fills(
    store: Store, run: RunInfo, subaccount: str | None = None, limit: int | None = 100
) -> list[dict[str, Any]]:
    """The run's fills, newest first (price, quantity, fee in its currency)."""
    return _newest(store.fills(run.run_id, floats=True), _sub(store, run, subaccount), limit)


def alerts(store: Store, run: RunInfo, limit: int | None = 100) -> list[dict[str, Any]]:
    """The run's alerts, newest first, each with its deliveries (target name, status,
    attempts; a target's URL is a secret and is never shown)."""
    deliveries: dict[int, list[dict[str, Any]]] = {}
    for d in store.outbox(run.run_id):
        deliveries.setdefault(int(d["alert_id"]), []).append(
            {"target": d["target"], "status": d["status"], "attempts": d["attempts"]}
        )
    rows = [
        {**a, "deliveries": deliveries.get(int(a["alert_id"]), [])}
        for a in store.alerts(run.run_id)
    ]
    return _newest(rows, None, limit)


def equity(store: Store, run: RunInfo) -> dict[str, Any]:
    """Equity (USDT) by bar: ``subaccounts`` name -> [{timestamp, equity, cash}] and
    ``total`` (the whole account), oldest first."""
    subs: dict[str, list[dict[str, Any]]] = {}
    total: list[dict[str, Any]] = []
    for row in store.balances(run.run_id, floats=True):
        point = {"timestamp": row["timestamp"], "equity": row["equity"], "cash": row["cash"]}
        if row["subaccount"] == "*account":
            total.append(point)
        else:
            subs.setdefault(row["subaccount"], []).append(point)
    if not total and subs:  # a store written without the account's row: the sum
        sums: dict[Any, list[float]] = {}
        for points in subs.values():
            for p in points:
                acc = sums.setdefault(p["timestamp"], [0.0, 0.0])
                acc[0] += p["equity"] or 0.0
                acc[1] += p["cash"] or 0.0
        total = [{"timestamp": t, "equity": e, "cash": c} for t, (e, c) in sorted(sums.items())]
    return plain({"subaccounts": subs, "total": total})


# --- reports -------------------------------------------------------------------------
_REPORTS: dict[tuple[str, str, str], Path] = {}

_REPORT_LOCK = threading.Lock()


def reports(store: Store) -> list[dict[str, Any]]:
    """The runs of the store that ``trimtab report`` can render (finished backtest
    runs), newest updated first: run id, kind, status, when updated, bars."""
    out = []
    for r in sorted(store.runs(), key=lambda r: r.updated_at, reverse=True):
        spec = r.spec or {}
        clock = spec.get("clock")
        bars = clock.get("bars") if isinstance(clock, Mapping) else None
        done = r.checkpoint[0] + 1 if r.checkpoint is not None else 0
        if r.kind != "backtest" or bars is None or done != bars:
            continue
        out.append(
            {
                "run_id": r.run_id,
                "kind": r.kind,
                "status": r.status,
                "command": spec.get("command"),
                "updated_at": r.updated_at,
                "bars": bars,
            }
        )
    return plain(out)


def report_html(store_url: str, store: Store, run_id: str, timeout: float = 300.0) -> Path:
    """The HTML report (issue 14) of finished backtest run ``run_id``, as
    ``trimtab report --db URL --run-id NAME`` writes it; made once per run version and
    kept (a report takes seconds). Raises ControlError for a run it cannot report on."""
    info = store.run(run_id)
    if info is None or run_id not in {r["run_id"] for r in reports(store)}:
        known = ", ".join(r["run_id"] for r in reports(store)) or "none"
        raise ControlError(f"no report for run {run_id!r}: runs with a report: {known}")
    # Not updated_at: reading the run back (what the report does) touches it. A finished
    # backtest's rows never change; a run recorded again under its id is created anew.
    key = (store.url, run_id, str(info.created_at))
    with _REPORT_LOCK:
        path = _REPORTS.get(key)
        if path is not None and path.is_file():
            return path
        folder = Path(tempfile.mkdtemp(prefix="trimtab-api-report-"))
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip(".") or "run"
        path = folder / f"{safe}.html"
        # The report command's own code path (it reads the run back from the store).
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from trimtab.cli import main; main()",
                "report",
                "--db",
                store_url,
                "--run-id",
                run_id,
                "--out",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TRIMTAB_DEBUG": ""},
            cwd=folder,
        )
        if done.returncode != 0 or not path.is_file():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ControlError(f"the report of run {run_id!r} failed: {last[0]}")
        _REPORTS[key] = path
        return path
