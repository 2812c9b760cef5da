"""The API's read and write endpoints over real HTTP, on a store holding a real paper
run: each read equals what the store holds (checked against the store itself or a
hand computation), each write is the CLI's recorded command with who and why."""

from __future__ import annotations

import httpx


def get(server, path: str, role: str = "viewer", **params) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/{path}", headers=server.login(role), params=params)


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
