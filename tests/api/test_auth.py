"""The API's security over real HTTP: login and refresh tokens (HS256, typed, short-lived,
rotated), roles, login rate limits per client IP and per user name, the secret that must
be set, loopback by default, users managed by the CLI with salted scrypt hashes, and no
secret, password or token in any response or log line."""

from __future__ import annotations

import logging
import time

import httpx
import jwt
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.api.conftest import PASSWORDS, SECRET
from trimtab.api.auth import SecretError, Tokens
from trimtab.api.server import check_host
from trimtab.journal import models as m

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"


def login(url: str, user: str, password: str, source: str | None = None) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(base_url=url, transport=transport) as c:
        return c.post(LOGIN, json={"username": user, "password": password})


def test_login_gives_a_short_lived_access_token_and_a_refresh_token(api_server):
    r = login(api_server.url, "approver", PASSWORDS["approver"])
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["token_type"], doc["role"], doc["expires_in"]) == ("bearer", "approver", 900)
    access = jwt.decode(doc["access_token"], SECRET, algorithms=["HS256"], issuer="trimtab")
    refresh = jwt.decode(doc["refresh_token"], SECRET, algorithms=["HS256"], issuer="trimtab")
    assert (access["sub"], access["role"], access["typ"]) == ("approver", "approver", "access")
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["typ"] == "refresh" and refresh["exp"] - refresh["iat"] == 8 * 3600
    assert access["jti"] != refresh["jti"]
    assert PASSWORDS["approver"] not in r.text and SECRET not in r.text
    me = httpx.get(
        f"{api_server.url}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {doc['access_token']}"},
    )
    assert me.json() == {"username": "approver", "role": "approver"}


def test_a_wrong_password_or_user_is_the_same_401(api_server):
    wrong = login(api_server.url, "viewer", "not-the-password")
    nobody = login(api_server.url, "nobody", "not-the-password")
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json() == {"detail": "wrong user name or password"}


def test_refresh_rotates_and_a_used_refresh_token_is_refused(api_server):
    first = api_server.tokens("viewer")
    r = httpx.post(f"{api_server.url}{REFRESH}", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    ok = httpx.get(
        f"{api_server.url}/api/v1/status",
        headers={"Authorization": f"Bearer {second['access_token']}"},
    )
    assert ok.status_code == 200
    again = httpx.post(f"{api_server.url}{REFRESH}", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 401 and "used already" in again.json()["detail"]
    # an access token is no refresh token, and the other way round
    swapped = httpx.post(
        f"{api_server.url}{REFRESH}", json={"refresh_token": first["access_token"]}
    )
    assert swapped.status_code == 401 and "refresh token is needed" in swapped.json()["detail"]
    as_access = httpx.get(
        f"{api_server.url}/api/v1/status",
        headers={"Authorization": f"Bearer {second['refresh_token']}"},
    )
    assert as_access.status_code == 401 and "access token is needed" in as_access.json()["detail"]


def test_a_removed_user_cannot_refresh(api_server):
    from trimtab.app import users

    pair = api_server.tokens("viewer")
    with api_server.store.open() as store:
        assert users.remove_user(store, "viewer")
    r = httpx.post(f"{api_server.url}{REFRESH}", json={"refresh_token": pair["refresh_token"]})
    assert r.status_code == 401 and "no longer exists" in r.json()["detail"]
    assert login(api_server.url, "viewer", PASSWORDS["viewer"]).status_code == 401


def test_expired_forged_and_unsigned_tokens_are_401(api_server):
    now = int(time.time())
    claims = {"sub": "admin", "role": "admin", "typ": "access", "iss": "trimtab", "jti": "x"}
    expired = jwt.encode({**claims, "iat": now - 1000, "exp": now - 10}, SECRET, "HS256")
    forged = jwt.encode({**claims, "iat": now, "exp": now + 60}, "another-" + SECRET, "HS256")
    unsigned = jwt.encode({**claims, "iat": now, "exp": now + 60}, None, "none")
    for token, words in ((expired, "expired"), (forged, "not valid"), (unsigned, "not valid")):
        r = httpx.get(
            f"{api_server.url}/api/v1/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401 and words in r.json()["detail"], r.text
        assert r.headers["www-authenticate"] == "Bearer"


def test_every_route_but_login_refresh_and_the_dashboard_needs_a_token(api_server):
    schema = httpx.get(f"{api_server.url}/api/openapi.json").json()
    checked = 0
    for path, ops in schema["paths"].items():
        for method in ops:
            concrete = path.replace("{proposal_id}", "3").replace("{name}", "pilot")
            concrete = concrete.replace("{report_run}", "bt")
            r = httpx.request(method, f"{api_server.url}{concrete}", json={"reason": "x"})
            if path in (LOGIN, REFRESH):
                assert r.status_code == 422, (method, path, r.text)  # a body, no token
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                checked += 1
    assert checked >= 20
    # the dashboard's page is public; the API's schema too
    assert httpx.get(f"{api_server.url}/").status_code == 200


def test_roles_viewer_reads_approver_approves_admin_sets_modes(api_server):
    url = api_server.url
    pid = api_server.store.pending[0]
    body = {"reason": "test"}

    def post(role, path, extra=None):
        return httpx.post(
            f"{url}/api/v1/{path}", headers=api_server.login(role), json={**body, **(extra or {})}
        )

    assert post("viewer", "subaccounts/pilot/pause").status_code == 403
    assert "approver role; you are viewer" in post("viewer", f"proposals/{pid}/reject").text
    assert post("approver", "subaccounts/pilot/mode", {"mode": "monitor"}).status_code == 403
    assert post("approver", "subaccounts/pilot/pause").status_code == 200
    assert post("admin", "subaccounts/pilot/mode", {"mode": "monitor"}).status_code == 200
    audit = httpx.get(f"{url}/api/v1/audit", headers=api_server.login("approver"))
    assert audit.status_code == 403
    audit = httpx.get(f"{url}/api/v1/audit", headers=api_server.login("admin")).json()
    assert [(a["kind"], a["actor"], a["reason"]) for a in audit] == [
        ("mode", "api:admin", "test"),
        ("pause", "api:approver", "test"),
    ]


def test_five_failed_logins_a_minute_per_ip_and_per_user_then_429(api_server):
    url = api_server.url
    for _ in range(5):
        assert login(url, "viewer", "wrong-password").status_code == 401
    # the right password is refused too, for a while
    blocked = login(url, "viewer", PASSWORDS["viewer"])
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert "too many failed logins" in blocked.json()["detail"]
    # per client IP: another user from the same address is refused ...
    assert login(url, "admin", PASSWORDS["admin"]).status_code == 429
    # ... and from another loopback address, the same user still is, another user is not
    assert login(url, "viewer", PASSWORDS["viewer"], source="127.0.0.2").status_code == 429
    assert login(url, "admin", PASSWORDS["admin"], source="127.0.0.2").status_code == 200


def test_the_secret_must_be_set_and_long(tmp_path, monkeypatch):
    for bad in (None, "", "short-secret"):
        with pytest.raises(SecretError, match="TRIMTAB_API_SECRET"):
            Tokens(bad)  # type: ignore[arg-type]
    from trimtab.cli import app

    monkeypatch.delenv("TRIMTAB_API_SECRET", raising=False)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    r = CliRunner().invoke(app, ["serve", "--db", db])
    assert r.exit_code == 2 and "TRIMTAB_API_SECRET is not set" in r.output
    monkeypatch.setenv("TRIMTAB_API_SECRET", "x" * 31)
    r = CliRunner().invoke(app, ["serve", "--db", db])
    assert r.exit_code == 2 and "at least 32" in r.output and "x" * 31 not in r.output


def test_loopback_by_default_another_host_needs_a_flag_and_warns(tmp_path, monkeypatch):
    assert check_host("127.0.0.1", False) is None and check_host("::1", False) is None
    with pytest.raises(ValueError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert "reachable from other machines" in check_host("0.0.0.0", True)
    from trimtab.cli import app

    monkeypatch.setenv("TRIMTAB_API_SECRET", SECRET)
    r = CliRunner().invoke(
        app, ["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--host", "0.0.0.0"]
    )
    assert r.exit_code == 2 and "--allow-remote" in r.output


def test_api_user_add_list_remove_keep_salted_scrypt_hashes_only(paper_store):
    from trimtab.cli import app

    db = ["--db", paper_store.url]
    runner = CliRunner()
    for name in ("ana", "bob"):
        r = runner.invoke(
            app, ["api-user", "add", name, "--role", "approver", "--password-stdin", *db],
            input="same-password-1\n",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        assert "same-password-1" not in r.output
    listed = runner.invoke(app, ["api-user", "list", "--json", *db])
    assert '"username": "ana"' in listed.output and "scrypt" not in listed.output
    with paper_store.open() as store, store.engine.connect() as conn:
        rows = conn.execute(sa.select(m.api_users.c.username, m.api_users.c.password_hash))
        hashes = {name: digest for name, digest in rows}
    assert hashes["ana"] != hashes["bob"]  # salted
    assert all(h.startswith("scrypt$16384$8$1$") for h in hashes.values())
    assert not any("same-password-1" in h for h in hashes.values())
    bad = runner.invoke(
        app, ["api-user", "add", "eve", "--role", "root", "--password-stdin", *db], input="x" * 9
    )
    assert bad.exit_code == 2 and "roles are viewer, approver, admin" in bad.output
    short = runner.invoke(app, ["api-user", "add", "eve", "--password-stdin", *db], input="short\n")
    assert short.exit_code == 2 and "at least 8" in short.output
    assert runner.invoke(app, ["api-user", "remove", "bob", *db]).exit_code == 0
    gone = runner.invoke(app, ["api-user", "remove", "bob", *db])
    assert gone.exit_code == 2 and "no user 'bob'" in gone.output


def test_no_password_secret_or_token_in_the_log(api_server, caplog):
    caplog.set_level(logging.DEBUG)
    good = api_server.tokens("approver")
    login(api_server.url, "approver", "wrong-password-9")
    httpx.post(
        f"{api_server.url}/api/v1/subaccounts/pilot/pause",
        headers={"Authorization": f"Bearer {good['access_token']}"},
        json={"reason": "log check"},
    )
    text = caplog.text
    assert "login: approver (approver)" in text and "pause by approver" in text
    for secret in (SECRET, PASSWORDS["approver"], "wrong-password-9", good["access_token"]):
        assert secret not in text
    assert good["refresh_token"] not in text


def test_a_used_refresh_token_stays_refused_after_a_restart(paper_store, api_users):
    from trimtab.api.app import ServerThread, close_store, create_app

    def serve():
        app = create_app(paper_store.url, secret=SECRET)
        return app, ServerThread(app, "127.0.0.1", 0).start()

    app, server = serve()
    try:
        first = login(server.url, "viewer", PASSWORDS["viewer"]).json()
        r = httpx.post(f"{server.url}{REFRESH}", json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200, r.text
        second = r.json()
    finally:
        server.stop()
        close_store(app)
    with paper_store.open() as store, store.engine.connect() as conn:
        used = conn.execute(sa.select(m.api_refresh_used.c.jti, m.api_refresh_used.c.username))
        jti = jwt.decode(first["refresh_token"], SECRET, algorithms=["HS256"], issuer="trimtab")
        assert [tuple(row) for row in used] == [(jti["jti"], "viewer")]
    app, server = serve()  # a new process' memory: only the store remembers
    try:
        again = httpx.post(f"{server.url}{REFRESH}", json={"refresh_token": first["refresh_token"]})
        assert again.status_code == 401 and "used already" in again.json()["detail"]
        # the rotated one was never used: it still works, once
        fresh = httpx.post(
            f"{server.url}{REFRESH}", json={"refresh_token": second["refresh_token"]}
        )
        assert fresh.status_code == 200, fresh.text
    finally:
        server.stop()
        close_store(app)


def test_a_removed_or_demoted_user_loses_its_rights_within_the_cache_time(paper_store, api_users):
    from trimtab.api.app import USER_TTL, ServerThread, close_store, create_app
    from trimtab.app import users

    assert USER_TTL <= 1.0  # the default: a change shows within a second
    ttl = 0.3
    app = create_app(paper_store.url, secret=SECRET, user_cache_seconds=ttl)
    server = ServerThread(app, "127.0.0.1", 0).start()
    url = server.url
    try:
        admin, viewer = (
            {"Authorization": f"Bearer {login(url, r, PASSWORDS[r]).json()['access_token']}"}
            for r in ("admin", "viewer")
        )
        assert httpx.get(f"{url}/api/v1/audit", headers=admin).status_code == 200
        assert httpx.get(f"{url}/api/v1/auth/me", headers=viewer).status_code == 200
        with paper_store.open() as store:
            users.add_user(store, "admin", "viewer", PASSWORDS["admin"])  # demoted
            assert users.remove_user(store, "viewer")
        time.sleep(ttl + 0.1)
        demoted = httpx.get(f"{url}/api/v1/audit", headers=admin)
        assert demoted.status_code == 403 and "you are viewer" in demoted.json()["detail"]
        me = httpx.get(f"{url}/api/v1/auth/me", headers=admin).json()
        assert me == {"username": "admin", "role": "viewer"}
        gone = httpx.get(f"{url}/api/v1/auth/me", headers=viewer)
        assert gone.status_code == 401 and "no longer exists" in gone.json()["detail"]
        # promoted back: the admin's rights return with the same token
        with paper_store.open() as store:
            users.add_user(store, "admin", "admin", PASSWORDS["admin"])
        time.sleep(ttl + 0.1)
        assert httpx.get(f"{url}/api/v1/audit", headers=admin).status_code == 200
    finally:
        server.stop()
        close_store(app)


def test_security_headers_on_every_response(api_server):
    url = api_server.url
    for path, headers, code in [
        ("/", {}, 200),
        ("/static/app.js", {}, 200),
        ("/api/openapi.json", {}, 200),
        ("/api/v1/status", {}, 401),
        ("/api/v1/status", api_server.login("viewer"), 200),
        ("/api/v1/nowhere", {}, 404),
    ]:
        r = httpx.get(f"{url}{path}", headers=headers)
        assert r.status_code == code, (path, r.status_code)
        csp = dict(
            part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";")
        )
        assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'", path
        assert csp["style-src"] == "'self'" and csp["img-src"] == "'self' data: blob:", path
        assert csp["frame-src"] == "blob:" and csp["frame-ancestors"] == "'none'", path
        # the report (a blob document) inherits the policy: inline <script>/<style>
        # elements for it, never inline event handlers
        assert csp["script-src-elem"] == "'self' 'unsafe-inline'", path
        assert csp["script-src-attr"] == "'none'" and csp["object-src"] == "'none'", path
        assert csp["connect-src" if "connect-src" in csp else "default-src"] == "'self'", path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["x-frame-options"] == "DENY", path
