"""Fixtures of the API's tests (and the dashboard's browser tests): a real paper run in
a real SQLite store, the API's users, and the API served by uvicorn on a free loopback
port.

* ``paper_template`` (session): ``examples/paper.yaml`` replayed by the real runner from
  2022-01-03 to 2022-01-10 (the review every bar, the alerts), which leaves proposal 3 of
  the approve-mode subaccount ``propose`` pending (2 legs, BTCUSDT and ETHUSDT), plus a
  finished backtest ``bt`` (for the reports) in the same store.
* ``paper_store``: a fresh copy of it per test (``.url``, ``.run_id``, ``.pending``,
  ``.advance(to)`` runs the real runner on, which applies the pending commands).
* ``api_users``: viewer, approver and admin with known passwords, in that store.
* ``api_server``: the API over that store (``.url``, ``.login(role)``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA
from trimtab.journal.store import Store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "paper.yaml"
START, END = "2022-01-03", "2022-01-10"
SECRET = "test-secret-" + "s" * 40
PASSWORDS = {
    "viewer": "viewer-pass-123",
    "approver": "approver-pass-123",
    "admin": "admin-pass-123",
}


def _run_paper(portfolio: Path, url: str, end: str) -> None:
    """The real runner, in this process, from START to ``end`` (carrying on a run)."""
    from trimtab.app.run import RunOptions, build_run, make_observers
    from trimtab.engine.portfolio_file import load_portfolio

    run = build_run(
        load_portfolio(portfolio),
        RunOptions(db=url, replay=str(SHARED_DATA), start=START, end=end),
        make_observers=make_observers,
    )
    run.run()


def _copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy (WAL included) through SQLite's backup API."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


@dataclass
class PaperStore:
    """A store holding paper run ``run_id`` (and backtest ``bt``)."""

    folder: Path
    path: Path
    portfolio: Path
    run_id: str = "paper"
    pending: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def advance(self, to: str = "2022-01-11") -> None:
        """Run the real runner on to ``to`` (UTC date): it applies the pending commands
        at its start, then trades the new bars; then waits out the API's read cache
        (0.5 s), within which the runner's writes show, so that the next read sees them."""
        _run_paper(self.portfolio, self.url, to)
        time.sleep(0.6)

    def open(self) -> Store:
        return Store.open(self.url)


@pytest.fixture(scope="session")
def paper_template(tmp_path_factory: pytest.TempPathFactory) -> PaperStore:
    folder = tmp_path_factory.mktemp("paper-template")
    portfolio = folder / "paper.yaml"
    portfolio.write_text(EXAMPLE.read_text())
    path = folder / "runs" / "paper.db"
    url = f"sqlite:///{path}"
    _run_paper(portfolio, url, END)
    from trimtab.cli import app

    done = CliRunner().invoke(
        app,
        [
            "backtest",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--policy",
            "equal-monthly",
            "--start",
            "2022-01-01",
            "--end",
            "2022-03-31",
            "--data",
            str(SHARED_DATA),
            "--db",
            url,
            "--run-id",
            "bt",
            "--out",
            str(folder / "bt"),
        ],  # fmt: skip
    )
    assert done.exit_code == 0, done.output
    with Store.open(url) as store:
        pending = [p["proposal_id"] for p in store.proposals("paper", status="pending")]
    assert pending, "the paper run left no pending proposal"
    return PaperStore(folder, path, portfolio, pending=pending)


@pytest.fixture
def paper_store(paper_template: PaperStore, tmp_path: Path) -> PaperStore:
    """A fresh copy of the template: the store and the paper exchange's file beside it
    (same names, so the runner carries on the copy), the portfolio file shared."""
    runs = tmp_path / "runs"
    for src in paper_template.path.parent.glob("*.db"):
        _copy_sqlite(src, runs / src.name)
    return PaperStore(
        tmp_path,
        runs / paper_template.path.name,
        paper_template.portfolio,
        pending=list(paper_template.pending),
    )


@pytest.fixture
def api_users(paper_store: PaperStore) -> dict[str, tuple[str, str]]:
    """role -> (user name, password): ``viewer``, ``approver``, ``admin``."""
    from trimtab.app import users

    with paper_store.open() as store:
        for role, password in PASSWORDS.items():
            users.add_user(store, role, role, password)
    return {role: (role, password) for role, password in PASSWORDS.items()}


def bearer(base_url: str, username: str, password: str | None = None) -> dict[str, str]:
    """Authorization headers of ``username`` (password ``PASSWORDS[username]`` unless
    given), from a real login at ``base_url``."""
    r = httpx.post(
        f"{base_url}/api/v1/auth/login",
        json={"username": username, "password": password or PASSWORDS[username]},
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@dataclass
class ApiServer:
    url: str
    store: PaperStore
    users: dict[str, tuple[str, str]]
    secret: str
    app: Any = None
    _tokens: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tokens(self, role: str) -> dict[str, Any]:
        """A fresh login of ``role``'s user: the token pair."""
        name, password = self.users[role]
        r = httpx.post(
            f"{self.url}/api/v1/auth/login", json={"username": name, "password": password}
        )
        assert r.status_code == 200, r.text
        return r.json()

    def login(self, role: str) -> dict[str, str]:
        """Authorization headers of ``role`` (logged in once per server)."""
        if role not in self._tokens:
            self._tokens[role] = self.tokens(role)
        return {"Authorization": f"Bearer {self._tokens[role]['access_token']}"}


@pytest.fixture
def api_server(
    paper_store: PaperStore, api_users: dict[str, tuple[str, str]]
) -> Iterator[ApiServer]:
    """The API over ``paper_store`` on a free 127.0.0.1 port (uvicorn in a thread)."""
    from trimtab.api.app import ServerThread, close_store, create_app

    app = create_app(paper_store.url, secret=SECRET)
    server = ServerThread(app, "127.0.0.1", 0).start()
    try:
        yield ApiServer(server.url, paper_store, api_users, SECRET, app)
    finally:
        server.stop()
        close_store(app)
