"""A transfer proposal over the API (a real uvicorn server on the run's SQLite store):
``GET /api/v1/proposals`` gives its kind and its transfer beside the fields an order
proposal has; an approval with legs is refused naming why; the approval without legs is
the same recorded command as ``trimtab approve``, and the runner's next close makes the
transfer (``GET /api/v1/transfers``: done, its proposal, approved by ``api:approver``)."""

from __future__ import annotations

import httpx

from tests.api.conftest import PASSWORDS, SECRET, bearer
from tests.app._transfer_proposals import ALLOWED, PROPOSED_AT, db_url, make_run, write_file


def test_the_api_shows_and_approves_a_transfer_proposal(tmp_path):
    from trimtab.api.app import ServerThread, close_store, create_app
    from trimtab.app import users
    from trimtab.journal.store import Store

    write_file(tmp_path)
    make_run(tmp_path, PROPOSED_AT).run()
    url = db_url(tmp_path)
    with Store.open(url) as store:
        users.add_user(store, "approver", "approver", PASSWORDS["approver"])
    app = create_app(url, secret=SECRET)
    server = ServerThread(app, "127.0.0.1", 0).start()
    try:
        auth = bearer(server.url, "approver")
        shown = httpx.get(f"{server.url}/api/v1/proposals", headers=auth).json()
        [p] = [p for p in shown if p["kind"] == "transfer"]
        # The order proposals' fields are all there (the dashboard reads them), kind orders.
        every = httpx.get(f"{server.url}/api/v1/proposals", params={"all": "true"}, headers=auth)
        orders = [q for q in every.json() if q["kind"] == "orders"]
        assert orders and set(orders[0]) <= set(p)
        assert (p["legs"], p["status"], p["subaccount"]) == ([], "pending", "core")
        assert {k: p["transfer"][k] for k in ("source", "target", "amount", "origin")} == {
            "source": "core",
            "target": "satellite",
            "amount": 2500.0,
            "origin": "scheduled",
        }
        pid = p["proposal_id"]
        path = f"{server.url}/api/v1/proposals/{pid}/approve"
        bad = httpx.post(path, json={"legs": [0], "reason": "one leg"}, headers=auth)
        assert bad.status_code == 400
        assert f"proposal {pid} is a transfer" in bad.json()["detail"]
        good = httpx.post(path, json={"legs": None, "reason": "go"}, headers=auth)
        assert good.status_code == 200, good.text
    finally:
        server.stop()
        close_store(app)
    make_run(tmp_path).run()  # the runner applies it, then makes it at the next close
    app = create_app(url, secret=SECRET)
    server = ServerThread(app, "127.0.0.1", 0).start()
    try:
        auth = bearer(server.url, "approver")
        [t] = httpx.get(f"{server.url}/api/v1/transfers", headers=auth).json()
        assert (t["status"], t["moved"], t["requested"]) == ("done", ALLOWED, 2500.0)
        assert (t["proposal_id"], t["approved_by"]) == (pid, "api:approver")
        every = httpx.get(f"{server.url}/api/v1/proposals", params={"all": "true"}, headers=auth)
        [made] = [q for q in every.json() if q["proposal_id"] == pid]
        assert (made["status"], made["transfer"]["moved"]) == ("made", ALLOWED)
    finally:
        server.stop()
        close_store(app)
