"""``GET /api/v1/transfers``: the runner's transfers between subaccounts, newest first,
as ``trimtab status`` lists them, on a run that made some (tests/app/test_run_transfers)."""

from __future__ import annotations

import httpx

from tests.api.conftest import PASSWORDS, SECRET, bearer
from tests.app.test_run_transfers import run


def test_the_api_serves_the_runs_transfers_newest_first(tmp_path):
    from trimtab.api.app import ServerThread, close_store, create_app
    from trimtab.app import users
    from trimtab.journal.store import Store

    made, _ = run(tmp_path / "auto", "auto")
    url = f"sqlite:///{tmp_path / 'auto' / 'store.db'}"
    with Store.open(url) as store:
        users.add_user(store, "viewer", "viewer", PASSWORDS["viewer"])
    app = create_app(url, secret=SECRET)
    server = ServerThread(app, "127.0.0.1", 0).start()
    try:
        auth = bearer(server.url, "viewer")
        r = httpx.get(f"{server.url}/api/v1/transfers", headers=auth)
        assert r.status_code == 200, r.text
        rows = r.json()
        assert [(t["from"], t["to"], t["moved"], t["status"], t["origin"]) for t in rows] == [
            (t["source"], t["target"], t["amount"], t["status"], t["guard"]["origin"])
            for t in made[::-1]
        ]
        assert rows[-1]["reason"] == "top up" and rows[-1]["requested"] == 2500.0
        assert [t["transfer_id"] for t in rows] == [t["guard"]["transfer_id"] for t in made[::-1]]
        assert all(":t" in t["transfer_id"] for t in rows)
        one = httpx.get(f"{server.url}/api/v1/transfers", params={"limit": 1}, headers=auth)
        assert one.json() == rows[:1]
        assert httpx.get(f"{server.url}/api/v1/transfers").status_code == 401
    finally:
        server.stop()
        close_store(app)
