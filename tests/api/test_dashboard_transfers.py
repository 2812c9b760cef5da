"""The dashboard's transfers panel (Overview) in a real headless Chromium, over the API
served by uvicorn on a real replayed paper run whose portfolio file asks for transfers
that the transfer guard makes, cuts and refuses, and one that monitor mode does not
make: each row as the API gives it, its amounts formatted here by hand, newest first,
the rows that moved nothing marked by a class (and by their status's text); the rows of
bars replayed after the page opened appear on the page's own poll; a run without
transfers says so, then shows a row of a status the page does not know as the API spells
it; a reason or a why holding markup stays text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.api import test_dashboard
from tests.api.conftest import PASSWORDS, SECRET, bearer
from tests.api.test_dashboard import CHROMIUM, DESKTOP, PHONE, WAIT, Tab, expect, money
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y --no-install-recommends chromium)",
)

# test_dashboard's fixtures: one headless Chromium for this module too, and the folder of
# the screenshots ($TRIMTAB_DASHBOARD_SHOTS when set).
browser = test_dashboard.browser
shots = test_dashboard.shots

START, MIDDLE, END = "2021-01-04", "2021-01-16", "2021-02-05"
RUN_ID = "tx"
MARKUP = "<b>x</b>"

# core and satellite trade in auto mode, watch in monitor mode; the account caps a
# transfer at 2,000 USDT. The dated transfers: one made whole, one cut to the cap, one
# refused whole (over the cap, no cut allowed), one not made (watch is in monitor mode);
# the rule asks for a move at February's first close (cut to the cap if larger).
FILE = """
backtest: {timeframe: 1d}
runner: {tick_seconds: 0.05, review_every: 0}
account:
  transfers: {max_transfer: 2000}
subaccounts:
  core:
    strategy: fixed
    rule: calendar:weekly
    weights: {BTCUSDT: 0.2, ETHUSDT: 0.2}
    symbols: [BTCUSDT, ETHUSDT]
    capital: 30000
    mode: auto
    envelope: {max_order_notional: 1000000}
  satellite:
    strategy: fixed
    rule: calendar:weekly
    weights: {ETHUSDT: 0.4}
    symbols: [BTCUSDT, ETHUSDT]
    capital: 10000
    mode: auto
    envelope: {max_order_notional: 1000000}
  watch:
    strategy: fixed
    rule: calendar:weekly
    weights: {BTCUSDT: 0.4}
    symbols: [BTCUSDT]
    capital: 5000
    mode: monitor
TRANSFERS
"""
TRANSFERS = f"""
transfers:
  - {{at: 2021-01-12, from: core, to: satellite, amount: 1234.56, reason: seed}}
  - {{at: 2021-01-15, from: core, to: satellite, amount: 2500, reason: top up, partial: true}}
  - {{at: 2021-01-19, from: satellite, to: core, amount: 3000.5, reason: "{MARKUP}"}}
  - {{at: 2021-01-21, from: core, to: watch, amount: 750, reason: watch it}}
rebalance_capital: {{every: monthly, shares: {{core: 0.7, satellite: 0.3}}, band: 0.01}}
"""


def settle() -> None:
    """Wait out the API's read cache (0.5 s), which may hold an answer from before the
    store was written to, so that the next read (the test's) sees the writes."""
    time.sleep(0.6)


class Served:
    """A portfolio file replayed into a store, and the API over that store."""

    def __init__(self, folder: Path, transfers: str) -> None:
        from trimtab.api.app import ServerThread, create_app
        from trimtab.app import users
        from trimtab.journal.store import Store

        folder.mkdir()
        self.portfolio = folder / "portfolio.yaml"
        self.portfolio.write_text(FILE.replace("TRANSFERS", transfers))
        self.url = f"sqlite:///{folder / 'store.db'}"
        self.replay(MIDDLE)
        with Store.open(self.url) as store:
            users.add_user(store, "viewer", "viewer", PASSWORDS["viewer"])
        self.app = create_app(self.url, secret=SECRET)
        self.server = ServerThread(self.app, "127.0.0.1", 0).start()

    def replay(self, end: str) -> None:
        """The real runner from START to ``end`` (UTC date), carrying on the run."""
        from trimtab.app.run import RunOptions, build_run
        from trimtab.engine.portfolio_file import load_portfolio

        options = RunOptions(
            db=self.url, run_id=RUN_ID, replay=str(SHARED_DATA), start=START, end=end
        )
        build_run(load_portfolio(self.portfolio), options).run()
        settle()

    def store_rows(self) -> list[dict[str, Any]]:
        from trimtab.journal.store import Store

        with Store.open(self.url) as store:
            return store.transfers(RUN_ID, floats=True)

    def api_rows(self) -> list[dict[str, Any]]:
        auth = bearer(self.server.url, "viewer")
        r = httpx.get(f"{self.server.url}/api/v1/transfers", headers=auth)
        assert r.status_code == 200, r.text
        return r.json()

    def close(self) -> None:
        from trimtab.api.app import close_store

        self.server.stop()
        close_store(self.app)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "transfers", TRANSFERS)
    yield s
    s.close()


@pytest.fixture
def served_empty(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "none", "")
    yield s
    s.close()


def utc(ts: Any) -> str:
    """As the dashboard shows a time: minutes, UTC."""
    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")


def cells(row: dict[str, Any]) -> list[str]:
    """A transfer as the panel's row should read, cell by cell, from the API's row."""
    status = row["status"]
    return [
        utc(row["timestamp"]),
        f"{row['from']} → {row['to']}",
        money(row["requested"]),
        money(row["moved"]),
        status,
        f"{row['origin']}\n{row['reason']}" if row["reason"] else row["origin"],
        row["why"],
    ]


def panel_rows(page: Any) -> Any:
    return page.get_by_role("region", name="Transfers").locator("tbody tr")


def test_the_panel_shows_the_runs_transfers_newest_first(browser, served, shots):
    stored = served.store_rows()
    # What the panel must tell apart (else this test proves little): one made whole, one
    # cut to the account's 2,000 cap.
    asked_moved = [(r["guard"]["requested"], r["amount"]) for r in stored]
    assert asked_moved == [(1234.56, 1234.56), (2500.0, 2000.0)]

    t = Tab(browser, served.server.url, DESKTOP)
    try:
        page = t.page
        t.login("viewer", PASSWORDS["viewer"])
        rows = panel_rows(page)
        expect(rows).to_have_count(2)
        want = [cells(r) for r in served.api_rows()]
        assert want == [
            ["2021-01-15 00:00 UTC", "core → satellite", "2,500.00", "2,000.00", "done",
             "scheduled\ntop up", "max_transfer 2,000 USDT"],
            ["2021-01-12 00:00 UTC", "core → satellite", "1,234.56", "1,234.56", "done",
             "scheduled\nseed", ""],
        ]  # fmt: skip
        assert [[td.inner_text() for td in r.locator("td").all()] for r in rows.all()] == want
        assert page.locator("tr.nothing-moved").count() == 0
        expect(page.locator("tr.moved-less")).to_contain_text("2,500.00")

        # The bars after the page opened: the page's own poll shows the new rows, newest
        # first, without a click.
        served.replay(END)
        stored = served.store_rows()
        assert [r["status"] for r in stored] == ["done", "done", "refused", "not_made", "done"]
        want = [cells(r) for r in served.api_rows()]
        expect(rows).to_have_count(len(stored), timeout=3 * WAIT)
        got = [[td.inner_text() for td in r.locator("td").all()] for r in rows.all()]
        assert got == want
        newest_first = sorted(stored, key=lambda r: pd.Timestamp(r["timestamp"]), reverse=True)
        assert [g[0] for g in got] == [utc(r["timestamp"]) for r in newest_first]
        # The rule's move (not a round number) to two decimals, thousands separated.
        rule = newest_first[0]
        assert rule["guard"]["origin"] == "rebalance_capital"
        assert got[0][2:4] == [f"{rule['guard']['requested']:,.2f}", f"{rule['amount']:,.2f}"]
        # The two that moved nothing stand out, and say so.
        unmade = page.locator("tr.nothing-moved")
        expect(unmade).to_have_count(2)
        expected = (("not_made", "750.00"), ("refused", "3,000.50"))
        for row, (status, asked) in zip(unmade.all(), expected, strict=True):
            tds = row.locator("td")
            expect(tds.nth(4)).to_have_text(status)
            expect(tds.nth(2)).to_have_text(asked)
            expect(tds.nth(3)).to_have_text("0.00")
            expect(tds.nth(6)).not_to_have_text("")
        # The reason that is markup: text in its cell, no element made of it.
        refused = rows.filter(has_text="refused")
        expect(refused).to_have_count(1)
        assert refused.locator("td").nth(5).inner_text() == f"scheduled\n{MARKUP}"
        assert page.locator("#overview-body b").count() == 0
        t.shot(shots, "transfers-desktop")
    finally:
        t.close()

    # On a phone: labelled rows, nothing wider than the screen, the same rows marked.
    t = Tab(browser, served.server.url, PHONE)
    try:
        page = t.page
        t.login("viewer", PASSWORDS["viewer"])
        expect(panel_rows(page)).to_have_count(len(stored))
        expect(page.locator("tr.nothing-moved")).to_have_count(2)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        t.shot(shots, "transfers-phone")
    finally:
        t.close()


def test_a_run_without_transfers_says_so_then_shows_a_status_it_does_not_know(
    browser, served_empty
):
    from trimtab.journal.store import Store

    assert served_empty.store_rows() == []
    t = Tab(browser, served_empty.server.url, DESKTOP)
    try:
        page = t.page
        t.login("viewer", PASSWORDS["viewer"])
        panel = page.get_by_role("region", name="Transfers")
        expect(panel).to_contain_text("No transfers yet.")
        expect(panel.locator("table")).to_have_count(0)

        # A row of a status this page was not written for (a proposal's), written to the
        # store as the runner writes its rows, with a why that is markup: shown on the
        # next poll as the API spells it, as text, not marked as one that moved nothing.
        with Store.open(served_empty.url) as store:
            bar, _ = store.checkpoint(RUN_ID)
            with store.transaction(RUN_ID, bar=bar + 1, timestamp="2021-01-17") as tx:
                tx.add_transfers(
                    [
                        {
                            "source": "satellite",
                            "target": "core",
                            "amount": 12345.678,
                            "status": "proposed",
                            "reason": "the allocator's monthly move",
                            "guard": {"origin": "allocator", "not_made": "<i>y</i> waits"},
                        }
                    ]
                )
        settle()
        [row] = served_empty.api_rows()
        assert (row["status"], row["why"]) == ("proposed", "<i>y</i> waits")
        rows = panel.locator("tbody tr")
        expect(rows).to_have_count(1, timeout=3 * WAIT)
        assert [td.inner_text() for td in rows.first.locator("td").all()] == [
            "2021-01-17 00:00 UTC",
            "satellite → core",
            "12,345.68",
            "0.00",  # a proposal has moved nothing yet
            "proposed",
            "allocator\nthe allocator's monthly move",
            "<i>y</i> waits",
        ]
        assert page.locator("tr.nothing-moved, tr.moved-less, #overview-body i").count() == 0
        assert "status-proposed" in (rows.first.get_attribute("class") or "")
    finally:
        t.close()


def test_a_transfer_proposal_is_approved_whole_from_the_proposals_page(browser, tmp_path, shots):
    """Both subaccounts in approve mode: the dated transfer waits as a proposal. Its card
    shows the transfer (no legs); the approver approves it whole, with a reason, as
    ``trimtab approve ID`` does; the runner's next close makes what the guard allows."""
    from tests.app import _transfer_proposals as tp
    from trimtab.api.app import ServerThread, close_store, create_app
    from trimtab.app import users
    from trimtab.journal.store import Store

    folder = tmp_path / "approve"
    tp.write_file(folder)
    tp.make_run(folder, tp.PROPOSED_AT).run()
    url = tp.db_url(folder)
    with Store.open(url) as store:
        users.add_user(store, "approver", "approver", PASSWORDS["approver"])
        [p] = [q for q in store.proposals(tp.RUN_ID, status="pending") if q["kind"] == "transfer"]
    pid = p["proposal_id"]
    app = create_app(url, secret=SECRET)
    server = ServerThread(app, "127.0.0.1", 0).start()
    t = Tab(browser, server.url, DESKTOP)
    try:
        page = t.page
        t.login("approver", PASSWORDS["approver"])
        t.go("Proposals")
        card = page.get_by_role("article", name=f"Proposal {pid}")
        fields = card.get_by_role("definition")
        transfer = card.locator(f'dl[aria-label="Transfer of proposal {pid}"]')
        expect(transfer).to_contain_text("core → satellite")
        expect(transfer).to_contain_text("2,500.00")
        expect(transfer).to_contain_text("scheduled")
        expect(transfer).to_contain_text("top up")
        assert fields.count() > 0
        # No legs to choose, and no leg or all-legs button: the transfer goes whole.
        assert card.locator("ol.legs").count() == 0
        assert card.get_by_role("button", name=re.compile("leg")).count() == 0
        approve = card.get_by_role("button", name=f"Approve the transfer of proposal {pid}")
        approve.click()
        expect(page.get_by_role("status")).to_contain_text("Give a reason")
        card.get_by_label(f"Reason for proposal {pid}").fill("satellite needs it <b>now</b>")
        approve.click()
        expect(page.get_by_role("status")).to_contain_text("at its next start")
        with Store.open(url) as store:
            [cmd] = store.pending_commands(tp.RUN_ID)
        assert cmd["kind"] == "approve"
        assert cmd["args"] == {"proposal_id": pid, "legs": None}
        assert cmd["actor"] == "api:approver"
        t.shot(shots, "transfer-proposal-approved-desktop")
        assert page.locator("main b").count() == 0
        assert t.errors == []
    finally:
        t.close()
        server.stop()
        close_store(app)
    tp.make_run(folder).run()  # the approval applied, then the transfer made at a close
    with Store.open(url) as store:
        [row] = store.transfers(tp.RUN_ID, floats=True)
        done = store.proposal(tp.RUN_ID, pid)
    assert (row["status"], row["amount"], row["guard"]["approved_by"]) == (
        "done",
        tp.ALLOWED,
        "api:approver",
    )
    assert done["status"] == "made"
