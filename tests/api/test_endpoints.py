"""The API's read and write endpoints over real HTTP, on a store holding a real paper
run: each read equals what the store holds (checked against the store itself or a
hand computation), each write is the CLI's recorded command with who and why."""

from __future__ import annotations

import time

import httpx
import pytest


def get(server, path: str, role: str = "viewer", **params) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/v1/{path}", headers=server.login(role), params=params, timeout=120
    )


def post(server, path: str, body: dict, role: str = "approver") -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/{path}", headers=server.login(role), json=body)


def test_status_shows_each_subaccount_mode_breaker_state_and_equity(api_server):
    r = get(api_server, "status")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["run"]["run_id"] == "paper" and doc["as_of"] == "2022-01-10T00:00:00+00:00"
    subs = {s["name"]: s for s in doc["subaccounts"]}
    assert {n: s["mode"] for n, s in subs.items()} == {
        "watch": "monitor", "propose": "approve", "pilot": "auto",
    }  # fmt: skip
    assert all(s["trading_state"] == "active" and s["paused"] is False for s in subs.values())
    # the account's equity is the sum of its subaccounts'
    assert doc["account"]["equity"] == sum(s["equity"] for s in subs.values())
    assert doc["heartbeat"]["alive"] is False  # the runner has stopped
    assert doc["gate"]["state"] == "ACTIVE"
    assert doc["pending_proposals"] == len(api_server.store.pending) == 1


def latest_balances(store, run_id="paper") -> dict[str, dict]:
    rows = store.balances(run_id, floats=True)
    last = max(r["bar"] for r in rows)
    return {r["subaccount"]: r for r in rows if r["bar"] == last}


def test_holdings_values_are_quantity_times_price_and_weights_of_equity(api_server):
    doc = get(api_server, "holdings").json()
    with api_server.store.open() as store:
        books = latest_balances(store)
    pilot = doc["subaccounts"]["pilot"]
    assert pilot["equity"] == pytest.approx(books["pilot"]["equity"], rel=1e-12)
    held = {p["symbol"]: p for p in pilot["positions"]}
    assert {s: p["quantity"] for s, p in held.items()} == {
        s: q for s, q in books["pilot"]["positions"].items() if q
    }
    for p in held.values():
        assert p["value"] == pytest.approx(p["quantity"] * p["price"], rel=1e-12)
        assert p["weight"] == pytest.approx(p["value"] / pilot["equity"], rel=1e-12)
    # cash plus the positions' value is the equity (spot, marked at the review's prices)
    total = pilot["cash"] + sum(p["value"] for p in held.values())
    assert total == pytest.approx(pilot["equity"], rel=1e-6)
    assert doc["subaccounts"]["propose"]["positions"] == []  # nothing approved yet


def test_review_score_is_the_sum_of_its_factor_contributions(api_server):
    doc = get(api_server, "review").json()["reviews"]
    assert set(doc) >= {"account", "pilot"}
    for name, rev in doc.items():
        assert 0 <= rev["risk_score"] <= 100
        assert {f["name"] for f in rev["factors"]} >= {"volatility", "trend", "concentration"}
        total = sum(f["contribution"] for f in rev["factors"])
        assert total == pytest.approx(rev["risk_score"], abs=1e-4), name
        assert all(f["explanation"] for f in rev["factors"])
    with api_server.store.open() as store:
        stored = store.latest_reviews("paper")["account"]["payload"]
    assert doc["account"]["risk_score"] == stored["risk_score"]
    assert doc["account"]["flags"] == stored["flags"]


def test_proposals_decisions_orders_fills_alerts_read_back_the_journal(api_server):
    [pid] = api_server.store.pending
    [p] = get(api_server, "proposals").json()
    assert (p["proposal_id"], p["subaccount"], p["status"]) == (pid, "propose", "pending")
    assert [leg["leg"] for leg in p["legs"]] == [0, 1]
    assert {leg["symbol"] for leg in p["legs"]} == {"BTCUSDT", "ETHUSDT"}
    assert all(leg["side"] == "buy" and leg["client_order_id"] is None for leg in p["legs"])
    every = get(api_server, "proposals", all="true").json()
    assert len(every) > 1 and every[-1]["proposal_id"] == pid

    decisions = get(api_server, "decisions", subaccount="propose", limit=2).json()
    assert len(decisions) == 2 and all(d["subaccount"] == "propose" for d in decisions)
    assert decisions[0]["timestamp"] > decisions[1]["timestamp"]  # newest first
    assert decisions[0]["reasons"] and decisions[0]["reasons"][0]["message"]
    with api_server.store.open() as store:
        stored = store.decisions("paper", "propose")
        orders = store.orders("paper", floats=True)
        fills = store.fills("paper", floats=True)
    assert decisions[0]["id"] == stored[-1]["id"]
    assert len(get(api_server, "decisions", limit=1000).json()) == sum(
        len(store_rows) for store_rows in [stored]
    ) + len(get(api_server, "decisions", subaccount="watch", limit=1000).json()) + len(
        get(api_server, "decisions", subaccount="pilot", limit=1000).json()
    )

    api_orders = get(api_server, "orders").json()
    assert [o["client_order_id"] for o in api_orders] == [
        o["client_order_id"] for o in orders[::-1]
    ]
    assert {o["subaccount"] for o in api_orders} == {"pilot"}  # auto mode only sends
    api_fills = get(api_server, "fills", subaccount="pilot").json()
    assert [f["fill_id"] for f in api_fills] == [f["fill_id"] for f in fills[::-1]]
    assert api_fills[-1]["price"] == fills[0]["price"]

    alerts = get(api_server, "alerts").json()
    waiting = [a for a in alerts if a["rule"] == "proposal_waiting"]
    assert waiting[0]["numbers"]["proposal_id"] == pid  # newest first
    assert all("url" not in str(d).lower() for a in alerts for d in a["deliveries"])


def test_equity_total_is_the_sum_of_the_subaccounts_at_every_bar(api_server):
    doc = get(api_server, "equity").json()
    subs = doc["subaccounts"]
    assert set(subs) == {"watch", "propose", "pilot"}
    times = [p["timestamp"] for p in doc["total"]]
    assert times[0] == "2022-01-03T00:00:00+00:00" and times[-1] == "2022-01-10T00:00:00+00:00"
    by_time = {}
    for points in subs.values():
        assert [p["timestamp"] for p in points] == times
        for p in points:
            by_time[p["timestamp"]] = by_time.get(p["timestamp"], 0.0) + p["equity"]
    for p in doc["total"]:
        assert p["equity"] == pytest.approx(by_time[p["timestamp"]], rel=1e-12)
    assert doc["total"][0]["equity"] == 40_000.0  # the file's capital: 20,000 + 10,000 + 10,000
    status = get(api_server, "status").json()
    assert doc["total"][-1]["equity"] == pytest.approx(status["account"]["equity"], rel=1e-12)


def test_reports_list_and_the_html_report_made_once_then_cached(api_server, monkeypatch):
    from trimtab.app import service

    made: list[list[str]] = []
    real_run = service.subprocess.run

    def counted(args, *a, **k):  # the real report command, counted
        made.append(list(args))
        return real_run(args, *a, **k)

    monkeypatch.setattr(service.subprocess, "run", counted)
    runs = get(api_server, "reports").json()
    assert [r["run_id"] for r in runs] == ["bt"]
    first = get(api_server, "reports/bt/html")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"].startswith("text/html")
    assert "<html" in first.text[:2000].lower() and "equal-monthly" in first.text
    assert len(made) == 1 and "report" in made[0]
    again = get(api_server, "reports/bt/html")
    assert again.text == first.text and len(made) == 1  # served from the kept file
    missing = get(api_server, "reports/paper/html")
    assert missing.status_code == 404 and "runs with a report: bt" in missing.json()["detail"]


def test_approve_one_leg_and_pause_are_recorded_then_applied_by_the_runner(api_server):
    [pid] = api_server.store.pending
    r = post(api_server, f"proposals/{pid}/approve", {"legs": [0], "reason": "BTC only"})
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert (receipt["kind"], receipt["args"], receipt["actor"], receipt["reason"]) == (
        "approve", {"proposal_id": pid, "legs": [0]}, "api:approver", "BTC only",
    )  # fmt: skip
    assert receipt["runner_alive"] is False and "next start" in receipt["takes_effect"]
    again = post(api_server, f"proposals/{pid}/reject", {"reason": "changed my mind"})
    assert again.status_code == 409 and "pending approve" in again.json()["detail"]
    paused = post(api_server, "subaccounts/pilot/pause", {"reason": "news"})
    assert paused.status_code == 200
    assert get(api_server, "status").json()["pending_commands"] == 2

    api_server.store.advance("2022-01-11")  # the runner's next start applies them

    commands = get(api_server, "commands").json()
    assert [(c["kind"], c["status"]) for c in commands] == [
        ("approve", "applied"), ("pause", "applied"),
    ]  # fmt: skip
    [p] = get(api_server, "proposals", all="true").json()[-1:]
    leg0, leg1 = p["legs"]
    assert p["status"] == "sent" and leg0["client_order_id"] and leg1["client_order_id"] is None
    orders = get(api_server, "orders", subaccount="propose").json()
    assert [o["client_order_id"] for o in orders] == [leg0["client_order_id"]]
    assert orders[0]["symbol"] == leg0["symbol"] == "BTCUSDT"
    subs = {s["name"]: s for s in get(api_server, "status").json()["subaccounts"]}
    assert subs["pilot"]["paused"] is True and subs["propose"]["paused"] is False


def test_the_cli_and_the_api_write_the_same_command(api_server):
    from typer.testing import CliRunner

    from trimtab.cli import app

    r = CliRunner().invoke(
        app,
        ["limits", "set", "max_asset_weight", "0.2", "--subaccount", "pilot", "--reason", "cap",
         "--by", "ana", "--db", api_server.store.url],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    api = post(
        api_server,
        "subaccounts/pilot/limits",
        {"key": "max_asset_weight", "value": 0.2, "reason": "cap"},
        role="admin",
    )
    assert api.status_code == 200, api.text
    cli_row, api_row = get(api_server, "commands").json()
    for key in ("kind", "subaccount", "args", "reason", "status"):
        assert cli_row[key] == api_row[key]
    assert (cli_row["actor"], api_row["actor"]) == ("ana", "api:admin")
    assert api.json()["notes"] == ["pilot: max_asset_weight 0.3 -> 0.2"]


def test_bad_input_is_a_clear_4xx_naming_the_field(api_server):
    pid = api_server.store.pending[0]
    cases = [
        (post, f"proposals/{pid}/approve", {"legs": [0]}, 422, "reason: Field required"),
        (post, f"proposals/{pid}/approve", {"legs": [0], "reason": "  "}, 422, "reason"),
        (post, f"proposals/{pid}/approve", {"legs": [7], "reason": "x"}, 400, "no leg 7"),
        (post, "proposals/987654/approve", {"reason": "x"}, 404, "pending proposals: 3"),
        (post, "proposals/0/approve", {"reason": "x"}, 422, "proposal_id"),
        (post, "proposals/99999999999999999999/reject", {"reason": "x"}, 422, "proposal_id"),
        (post, "subaccounts/nope/pause", {"reason": "x"}, 404, "its subaccounts: watch"),
        (post, "subaccounts/pilot/pause", {"reason": "x", "extra": 1}, 422, "extra"),
        (post, "subaccounts/pilot/mode", {"mode": "yolo", "reason": "x"}, 422, "mode"),
        (post, "subaccounts/propose/mode", {"mode": "auto", "reason": "x"}, 400, "envelope"),
        (post, "subaccounts/pilot/limits", {"key": "max_coffee", "value": 1, "reason": "x"},
         400, "unknown limit 'max_coffee'"),
        (post, "subaccounts/pilot/limits", {"key": "max_asset_weight", "value": -1, "reason": "x"},
         400, "limit max_asset_weight"),
        (post, "subaccounts/pilot/close", {"symbols": [], "reason": "x"}, 400, "close needs"),
        (get, "decisions?limit=0", None, 422, "limit"),
        (get, "orders?subaccount=nope", None, 404, "unknown subaccount 'nope'"),
    ]  # fmt: skip
    for fn, path, body, code, words in cases:
        if fn is post:
            r = post(api_server, path, body, role="admin")
        else:
            r = httpx.get(f"{api_server.url}/api/v1/{path}", headers=api_server.login("admin"))
        assert r.status_code == code, (path, body, r.status_code, r.text)
        assert words in r.json()["detail"], (path, r.text)
    raw = httpx.post(
        f"{api_server.url}/api/v1/subaccounts/pilot/pause",
        headers={**api_server.login("admin"), "content-type": "application/json"},
        content=b"{not json",
    )
    assert raw.status_code == 422 and "JSON" in raw.json()["detail"]
    nul = post(api_server, "subaccounts/pilot/pause", {"reason": "a\x00b"}, role="admin")
    assert nul.status_code == 422 and "NUL" in nul.json()["detail"]


def test_the_dashboard_page_and_static_files_are_served_without_a_token(api_server):
    page = httpx.get(f"{api_server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-frame-options"] == "DENY"
    api = httpx.get(f"{api_server.url}/api/v1/status", headers=api_server.login("viewer"))
    assert api.headers["cache-control"] == "no-store"
    from trimtab.api.app import STATIC

    for path in STATIC.glob("*.*"):
        r = httpx.get(f"{api_server.url}/static/{path.name}")
        assert r.status_code == 200 and r.content == path.read_bytes()
    assert httpx.get(f"{api_server.url}/static/../app.py").status_code == 404


def test_trimtab_run_api_serves_beside_a_running_runner_which_applies_a_pause(
    paper_template, tmp_path
):
    """``trimtab run --api``: the API in a thread of the runner's process; a pause sent
    through it while the runner replays (a bar a second) is applied within a cycle."""
    import os
    import socket
    import subprocess
    import sys

    from tests.api.conftest import SECRET
    from tests.conftest import SHARED_DATA
    from trimtab.app import users
    from trimtab.journal.store import Store

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "runs" / "live.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from trimtab.cli import main; main()", "run",
         "--portfolio", str(paper_template.portfolio), "--replay", str(SHARED_DATA),
         "--from", "2022-01-03", "--to", "2022-01-31", "--speed", "86400",
         "--db", f"sqlite:///{db}", "--api", "--api-port", str(port)],
        env={**os.environ, "TRIMTAB_API_SECRET": SECRET, "TRIMTAB_DEBUG": ""},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while True:  # the store exists once the runner started, the API once it listens
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the API did not start"
            try:
                if db.exists() and httpx.get(f"{base}/status").status_code == 401:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        with Store.open(f"sqlite:///{db}") as store:
            users.add_user(store, "ana", "approver", "ana-pass-123")
        token = httpx.post(
            f"{base}/auth/login", json={"username": "ana", "password": "ana-pass-123"}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        receipt = httpx.post(
            f"{base}/subaccounts/pilot/pause", headers=auth, json={"reason": "news"}
        ).json()
        assert receipt["runner_alive"] is True and "within one cycle" in receipt["takes_effect"]
        while True:
            assert time.monotonic() < deadline, "the pause was not applied"
            [cmd] = httpx.get(f"{base}/commands", headers=auth).json()
            subs = {
                s["name"]: s
                for s in httpx.get(f"{base}/status", headers=auth).json()["subaccounts"]
            }
            if cmd["status"] == "applied" and subs["pilot"]["paused"]:
                break
            time.sleep(0.3)
        assert cmd["actor"] == "api:ana" and subs["propose"]["paused"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=30)
