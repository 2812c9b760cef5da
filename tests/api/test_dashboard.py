"""The dashboard in a real headless Chromium (Playwright) against the API served by
uvicorn over a real replayed paper run (tests/api/conftest.py), tried as a new user
would: log in, approve one leg of the waiting proposal, see the order in the journal
once the runner has started again, pause a subaccount and see it paused; a viewer sees
no write button; a wrong password is told; a reason full of HTML stays text.

Every page is photographed at a desktop size and at a phone's (390 x 844) into the
test's tmp folder, or into ``$TRIMTAB_DASHBOARD_SHOTS`` when set (to look at them).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import PASSWORDS, SECRET, ApiServer, PaperStore, _copy_sqlite

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y --no-install-recommends chromium)",
)

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PAGES = ("overview", "risk", "proposals", "journal", "alerts", "reports")
#: How long an expectation waits for the page (ms): a cold start renders in well under 1 s.
WAIT = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module: Debian's, since Playwright cannot download
    its own here."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as exc:  # a Chromium too far from Playwright's protocol
            pytest.skip(f"Playwright cannot drive {CHROMIUM}: {exc}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("TRIMTAB_DASHBOARD_SHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        return Path(wanted)
    return tmp_path_factory.mktemp("dashboard_shots")


@pytest.fixture(scope="module", autouse=True)
def pages_server(
    paper_template: PaperStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """The API over a copy of the paper run for the page-by-page test, started with the
    module: it asks at once for the report of backtest ``bt`` in a thread of its own, so
    that the report (a ``trimtab report`` process, seconds) is made while the other
    tests run, and the page test finds it made."""
    from trimtab.api.app import ServerThread, close_store, create_app
    from trimtab.app import users

    folder = tmp_path_factory.mktemp("dashboard_pages")
    for src in paper_template.path.parent.glob("*.db"):
        _copy_sqlite(src, folder / "runs" / src.name)
    store = PaperStore(
        folder, folder / "runs" / paper_template.path.name, paper_template.portfolio,
        pending=list(paper_template.pending),
    )  # fmt: skip
    with store.open() as s:
        for role, password in PASSWORDS.items():
            users.add_user(s, role, role, password)
    app = create_app(store.url, secret=SECRET)
    server = ServerThread(app, "127.0.0.1", 0).start()
    api = ApiServer(server.url, store, {r: (r, p) for r, p in PASSWORDS.items()}, SECRET, app)

    def warm() -> None:
        try:
            httpx.get(f"{api.url}/api/v1/reports/bt/html", headers=api.login("viewer"), timeout=300)
        except httpx.HTTPError:
            pass  # the page test then waits for the report itself, and says why it failed

    warming = threading.Thread(target=warm, name="warm-report", daemon=True)
    warming.start()
    try:
        yield api
    finally:
        warming.join(timeout=300)
        server.stop()
        close_store(app)


class Tab:
    """A page of a fresh browser context, with the script errors it raised."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int]) -> None:
        phone = viewport["width"] < 600
        self.context = browser.new_context(
            viewport=viewport, is_mobile=phone, has_touch=phone, device_scale_factor=1
        )
        self.context.set_default_timeout(WAIT)
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # A 4xx the dashboard handles (a wrong password) is logged by Chromium as a
        # failed resource; anything else on the console is a bug.
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        self.page.goto(base + "/")

    def login(self, username: str, password: str) -> None:
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").click()

    def go(self, name: str) -> None:
        self.page.get_by_role("navigation", name="Pages").get_by_role(
            "link", name=re.compile(f"^{name}", re.I)
        ).click()
        self.page.get_by_role("heading", level=2, name=re.compile(name, re.I)).wait_for()

    def refresh(self) -> None:
        self.page.get_by_role("button", name="Refresh").click()

    def shot(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5_000  # a picture, not a blank
        return path

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def tab(browser: Any, api_server: ApiServer) -> Iterator[Tab]:
    t = Tab(browser, api_server.url, DESKTOP)
    yield t
    t.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def money(x: float) -> str:
    """As the dashboard shows USDT: two decimals, thousands separated."""
    return f"{x:,.2f}"


# --- the walkthrough -----------------------------------------------------------------
def test_approve_one_leg_then_its_order_is_in_the_journal(tab, api_server, shots):
    store: PaperStore = api_server.store
    page = tab.page
    [pid] = store.pending
    with store.open() as s:
        legs = {leg["leg"]: leg for leg in s.proposal(store.run_id, pid)["legs"]}
        last = {}
        for row in s.balances(store.run_id, floats=True):
            last[row["subaccount"]] = row
    assert sorted(legs) == [0, 1]

    name, password = api_server.users["approver"]
    tab.login(name, password)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_text(f"{name} (approver)")).to_be_visible()
    # The account's equity as the store's balance rows give it at the last bar: the sum
    # of the subaccounts' (not the API's figure: the store's rows, added up here).
    subs = {k: v for k, v in last.items() if not k.startswith("*")}
    total = sum(v["equity"] for v in subs.values())
    portfolio = page.get_by_role("region", name="Portfolio")
    expect(portfolio).to_contain_text(money(total))
    for sub, row in subs.items():
        card = page.get_by_role("article", name=f"Subaccount {sub}")
        expect(card).to_contain_text(f"{money(row['equity'])} USDT")

    tab.go("Proposals")
    card = page.get_by_role("article", name=f"Proposal {pid}")
    expect(card).to_contain_text("propose")
    for leg in legs.values():
        expect(card).to_contain_text(leg["symbol"])
    approve_leg0 = card.get_by_role("button", name=f"Approve leg 0 of proposal {pid}")

    # No reason: refused in the page, nothing written.
    approve_leg0.click()
    expect(page.get_by_role("status")).to_contain_text("Give a reason")
    with store.open() as s:
        assert s.pending_commands(store.run_id) == []

    # A reason that is HTML stays text everywhere it is shown.
    reason = 'BTC only <img src=x onerror="window.__pwned=1"> & <b>not</b> ETH'
    card.get_by_label(f"Reason for proposal {pid}").fill(reason)
    approve_leg0.click()
    expect(page.get_by_role("status")).to_contain_text("at its next start")
    with store.open() as s:
        [cmd] = s.pending_commands(store.run_id)
    assert cmd["kind"] == "approve" and cmd["args"] == {"proposal_id": pid, "legs": [0]}
    assert cmd["actor"] == f"api:{name}" and cmd["reason"] == reason
    waiting = card.get_by_role("list", name=f"Pending commands of proposal {pid}")
    expect(waiting).to_contain_text(f"approve proposal {pid} leg 0 by api:{name}")
    tab.shot(shots, "proposals-approved-desktop")
    # The reason was of that command: the field is empty again. A second approval while
    # the first waits: the API refuses it, the page says why.
    reason_box = card.get_by_label(f"Reason for proposal {pid}")
    expect(reason_box).to_have_value("")
    reason_box.fill("ETH too")
    card.get_by_role("button", name=f"Approve leg 1 of proposal {pid}").click()
    expect(page.get_by_role("status")).to_contain_text("Refused:")
    with store.open() as s:
        assert len(s.pending_commands(store.run_id)) == 1

    tab.go("Journal")
    commands = page.get_by_role("table").filter(has_text="Who")
    expect(commands).to_contain_text(reason)
    assert page.locator("main img, main b").count() == 0
    assert page.evaluate("window.__pwned") is None

    # The runner starts again: it applies the approval first, then trades the new bar.
    store.advance("2022-01-11")
    with store.open() as s:
        done = s.proposal(store.run_id, pid)
        [applied] = s.commands(store.run_id)
        orders = [
            o
            for o in s.orders(store.run_id, floats=True)
            if o["subaccount"] == "propose" and o["decision_id"] == done["decision_id"]
        ]
    assert applied["status"] == "applied", applied["outcome"]
    leg0 = next(leg for leg in done["legs"] if leg["leg"] == 0)
    assert [o["client_order_id"] for o in orders] == [leg0["client_order_id"]]
    order = orders[0]

    tab.refresh()
    orders_table = page.get_by_role("table").filter(has_text="Client order id")
    row = orders_table.get_by_role("row").filter(has_text=order["client_order_id"])
    expect(row).to_have_count(1)
    expect(row).to_contain_text("propose")
    expect(row).to_contain_text(f"{order['side']} {legs[0]['symbol']}")
    expect(row).to_contain_text(order["status"])
    expect(commands.get_by_role("row").filter(has_text=reason)).to_contain_text("applied")
    tab.shot(shots, "journal-after-approval-desktop")

    # The proposal is no longer waiting; leg 1 was never approved, so never sent.
    tab.go("Proposals")
    expect(page.get_by_text("No proposal waits for approval.")).to_be_visible()
    assert leg0["client_order_id"] and not any(
        leg["client_order_id"] for leg in done["legs"] if leg["leg"] == 1
    )


def test_pause_a_subaccount_and_see_it_paused(tab, api_server, shots):
    store: PaperStore = api_server.store
    page = tab.page
    tab.login(*api_server.users["approver"])
    card = page.get_by_role("article", name="Subaccount pilot")
    expect(card).to_contain_text("running")
    card.get_by_label("Reason for pilot").fill("volatile week: no new orders")
    # The page is drawn again (a refresh, or the poll every 5 s): what was typed stays.
    tab.refresh()
    expect(card.get_by_label("Reason for pilot")).to_have_value("volatile week: no new orders")
    card.get_by_role("button", name="Pause pilot").click()
    expect(page.get_by_role("status")).to_contain_text("pause pilot")
    expect(card.get_by_role("list", name="Pending commands of pilot")).to_contain_text(
        "pause by api:approver"
    )
    tab.shot(shots, "overview-pause-pending-desktop")

    store.advance("2022-01-11")
    with store.open() as s:
        [cmd] = s.commands(store.run_id)
        status = s.load_state(store.run_id, "status")
    assert cmd["kind"] == "pause" and cmd["status"] == "applied"
    assert status["subaccounts"]["pilot"]["paused"] is True

    tab.refresh()
    expect(card.get_by_role("button", name="Resume pilot")).to_be_visible()
    expect(card).to_contain_text("paused")
    expect(card.get_by_role("button", name="Pause pilot")).to_have_count(0)
    expect(card.get_by_role("list", name="Pending commands of pilot")).to_have_count(0)
    # the other subaccounts carry on
    expect(page.get_by_role("article", name="Subaccount propose")).not_to_contain_text("paused")
    tab.shot(shots, "overview-paused-desktop")


def test_a_viewer_sees_no_write_button(tab, api_server):
    page = tab.page
    tab.login(*api_server.users["viewer"])
    expect(page.get_by_text("viewer (viewer)")).to_be_visible()
    expect(page.get_by_role("article", name="Subaccount pilot")).to_be_visible()
    [pid] = api_server.store.pending
    writes = re.compile(r"^(Pause|Resume|Approve|Reject|Set mode)")
    assert page.get_by_role("button", name=writes).count() == 0
    assert page.get_by_role("textbox").count() == 0
    tab.go("Proposals")
    card = page.get_by_role("article", name=f"Proposal {pid}")
    expect(card).to_contain_text("BTCUSDT")  # the viewer sees the proposal ...
    assert page.get_by_role("button", name=writes).count() == 0  # ... and cannot act
    assert page.get_by_role("textbox").count() == 0


def test_a_wrong_password_is_told_and_logout_forgets_the_session(tab, api_server, shots):
    page = tab.page
    name, password = api_server.users["approver"]
    tab.login(name, "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Login failed: wrong user name or password")
    expect(page.get_by_role("navigation", name="Pages")).to_be_hidden()
    expect(page.get_by_label("Password")).to_have_value("")
    tab.shot(shots, "login-wrong-password-desktop")

    tab.login(name, password)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    stored = page.evaluate("sessionStorage.getItem('trimtab.session')")
    assert stored and password not in stored  # tokens only, never the password
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('trimtab.session')") is None
    # Back to a page by its address: the login again, no data.
    page.goto(api_server.url + "/#journal")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(page.get_by_role("heading", name="Journal")).to_be_hidden()


def test_an_expired_access_token_is_refreshed_without_a_new_login(browser, paper_store, api_users):
    """Access tokens living 2 s: the page refreshes them (the refresh token is used up
    each time) and carries on reading."""
    from trimtab.api.app import ServerThread, close_store, create_app

    app = create_app(paper_store.url, secret=SECRET, access_seconds=2)
    server = ServerThread(app, "127.0.0.1", 0).start()
    t = Tab(browser, server.url, DESKTOP)
    try:
        page = t.page
        t.login(*api_users["viewer"])
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        first = page.evaluate("JSON.parse(sessionStorage.getItem('trimtab.session'))")
        page.wait_for_timeout(2_500)
        t.go("Alerts")
        expect(page.get_by_role("list").filter(has_text="What to do").first).to_be_visible()
        now = page.evaluate("JSON.parse(sessionStorage.getItem('trimtab.session'))")
        assert now["access_token"] != first["access_token"]
        assert now["refresh_token"] != first["refresh_token"]
        expect(page.get_by_role("button", name="Log in")).to_be_hidden()
    finally:
        t.close()
        server.stop()
        close_store(app)


# --- every page, on a desktop and on a phone -------------------------------------------
def test_every_page_renders_and_fits_a_desktop_and_a_phone(browser, pages_server, shots):
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        t = Tab(browser, pages_server.url, viewport)
        try:
            visit_every_page(t, pages_server, shots, size, viewport)
        finally:
            t.close()


def visit_every_page(t: Tab, api_server: ApiServer, shots: Path, size: str, viewport) -> None:
    page = t.page
    t.shot(shots, f"login-{size}")
    t.login(*api_server.users["admin"])
    page.get_by_role("heading", name="Overview").wait_for()
    for name in PAGES:
        t.go(name)
        body = page.locator(f"#{name}-body")
        expect(body.get_by_text("Loading…")).to_have_count(0)
        if name == "overview":
            expect(body.get_by_role("img", name=re.compile("^Account equity"))).to_be_visible()
            expect(body.get_by_role("article")).to_have_count(3)
        elif name == "risk":
            expect(body.get_by_role("article", name="Risk of account")).to_contain_text(
                "volatility"
            )
        elif name == "proposals":
            expect(body.get_by_role("button", name=re.compile("^Approve leg 0"))).to_be_visible()
        elif name == "journal":
            decisions = body.get_by_role("table").filter(has_text="Targets")
            expect(decisions).to_contain_text("watch")
            if size == "desktop":  # the filter: only pilot's decisions, as the store has them
                with api_server.store.open() as s:
                    n = len(s.decisions(api_server.store.run_id, "pilot"))
                page.get_by_role("combobox", name="Subaccount").select_option("pilot")
                expect(decisions.locator("tbody tr")).to_have_count(n)
                expect(decisions).not_to_contain_text("watch")
                page.get_by_role("combobox", name="Subaccount").select_option("")
                expect(decisions).to_contain_text("watch")
        elif name == "alerts":
            expect(body.get_by_role("listitem").first).to_be_visible()
        elif name == "reports" and size == "phone":
            expect(body.get_by_role("button", name="Show report of bt")).to_be_visible()
        elif name == "reports":
            body.get_by_role("button", name="Show report of bt").click()
            frame = page.frame_locator("iframe[title='Report of bt']")
            # made on the first request (seconds; pages_server asked for it early)
            expect(frame.get_by_role("heading", level=1)).to_contain_text(
                "equal-monthly", timeout=120_000
            )
        # Nothing wider than the screen: no sideways scrolling on a phone.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], (name, width)
        t.shot(shots, f"{name}-{size}")
