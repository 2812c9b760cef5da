"""The REST API (FastAPI) over ``trimtab.app.service``: ``create_app(store_url, ...)``.

Every route but ``POST /api/v1/auth/login``, ``POST /api/v1/auth/refresh``, the schema
(``/api/openapi.json``) and the dashboard's static files needs a bearer access token
(401 otherwise); roles are checked per route (403): viewer reads, approver approves,
rejects, pauses, resumes and closes, admin sets modes and limits and reads the audit.
Each write is a recorded command (the CLI's), its actor ``api:<user>`` and its required
``reason``. Errors are JSON ``{"detail": "..."}`` naming the bad field or value; an input
mistake is a 4xx, never a 500.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from trimtab.api.auth import LoginLimiter, TokenError, Tokens
from trimtab.app import service, users
from trimtab.journal.store import RunInfo, Store, StoreError

log = logging.getLogger("trimtab.api")

STATIC = Path(__file__).with_name("static")
PREFIX = "/api/v1"
#: Largest id a path takes (SQLite's integers are 64-bit).
MAX_ID = 2**62
#: Seconds a looked-up run is reused.
RUN_TTL = 1.0
#: Seconds a user's looked-up role is reused (a removal or demotion shows within it).
USER_TTL = 1.0


def _clean(text: str) -> str:
    """Text a person typed: no NUL or lone surrogate (the store cannot keep them)."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return text


def _reason(text: str) -> str:
    text = _clean(text).strip()
    if not text:
        raise ValueError("say why: the reason is recorded with the command")
    return text


Text = Annotated[str, AfterValidator(_clean)]
Reason = Annotated[
    str,
    Field(min_length=1, max_length=2000, description="Why (required, recorded)."),
    AfterValidator(_reason),
]
Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_clean)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    username: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_clean)]
    password: Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_clean)]


class RefreshBody(_Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_clean)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="Seconds the access token lives.")
    refresh_expires_in: int
    role: Literal["viewer", "approver", "admin"]
    username: str


class ReasonBody(_Body):
    reason: Reason


class ApproveBody(_Body):
    legs: list[Annotated[int, Field(ge=0, le=10_000)]] | None = Field(
        default=None, description="Leg numbers to approve; null: every leg."
    )
    reason: Reason


class CloseBody(_Body):
    symbols: list[Annotated[str, Field(min_length=1, max_length=60), AfterValidator(_clean)]] | (
        None
    ) = Field(default=None, description="Symbols to close; null: every position.")
    reason: Reason


class ModeBody(_Body):
    mode: Literal["monitor", "approve", "auto"]
    reason: Reason


class LimitBody(_Body):
    key: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_clean)]
    value: float | Text | list[Text] | None = Field(
        description="The limit's new value in its units (fractions of equity, USDT); "
        "null: no cap; a list of names for allowed_symbols / allowed_venues."
    )
    reason: Reason


class Receipt(BaseModel):
    """A command written to the store; the runner applies it (``takes_effect``)."""

    command_id: int
    run_id: str
    kind: str
    subaccount: str | None
    args: dict[str, Any] | None
    actor: str
    reason: str
    status: str
    notes: list[str]
    runner_alive: bool
    takes_effect: str


class User(BaseModel):
    username: str
    role: str


#: The dashboard's policy: scripts, styles, fetches and everything else from its own
#: origin; images also from data:/blob:; frames only from blob: (the report, fetched
#: with the token and shown in a sandboxed iframe; a blob document has no headers of its
#: own, so X-Frame-Options DENY does not stop it, while it stops anyone framing us).
#: A blob document inherits this policy, and the report is self-contained (inline
#: <script> and <style>, plotly), so inline script and style *elements* are allowed
#: (``-elem``); inline event handlers stay refused (``script-src-attr 'none'``), and
#: the dashboard never uses innerHTML (a script put in that way would not run anyway).
#: Style attributes are allowed: the dashboard sets widths and colours with them.
CSP = (
    "default-src 'self'; script-src 'self'; script-src-elem 'self' 'unsafe-inline'; "
    "script-src-attr 'none'; style-src 'self'; style-src-elem 'self' 'unsafe-inline'; "
    "style-src-attr 'unsafe-inline'; img-src 'self' data: blob:; frame-src blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class _SecurityHeaders:
    """Plain ASGI middleware: security headers on every response, ``no-store`` on the
    API's (tokens and positions stay out of caches)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope.get("path", "").startswith("/api/")

        async def send_with(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                headers += _HEADERS
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with)


def _json(doc: Any) -> Response:
    """``doc`` (plain JSON already: the service's) as a response, without FastAPI's
    per-value encoder (a third of a read's time)."""
    body = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    return Response(body, media_type="application/json")


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body",) or len(loc) == 1]
    return ".".join(parts) or "body"


def create_app(
    store_url: str,
    *,
    secret: str,
    run_id: str | None = None,
    access_seconds: int = 15 * 60,
    refresh_seconds: int = 8 * 3600,
    login_failures: int = 5,
    login_window: float = 60.0,
    read_cache_seconds: float = 0.5,
    user_cache_seconds: float = USER_TTL,
) -> FastAPI:
    """The API over the store at ``store_url`` (opened here, kept open), acting on run
    ``run_id`` (default: the store's single paper or live run, looked up per request, so
    a server started before its runner finds the run when it starts). ``secret``: the
    signing key (at least 32 characters). ``read_cache_seconds``: how long a read's
    answer is reused (0: never). ``user_cache_seconds``: how long a user's role, checked
    on each request, is reused (a removal or demotion takes effect within it)."""
    tokens = Tokens(secret, access_seconds=access_seconds, refresh_seconds=refresh_seconds)
    limiter = LoginLimiter(login_failures, login_window)
    store = service.open_store(store_url)
    app = FastAPI(
        title="trimtab",
        version="1",
        summary="Watch, approve and override a trimtab paper or live run.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.tokens = tokens
    app.state.limiter = limiter
    bearer = HTTPBearer(auto_error=False, description="An access token from /api/v1/auth/login")

    # --- errors: always {"detail": text} ---------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{_field(e.get('loc', ()))}: {msg}")
        return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(service.ControlError)
    async def _control(request: Request, exc: service.ControlError) -> JSONResponse:
        text = str(exc)
        missing = text.startswith(("no proposal", "unknown subaccount", "no report", "no run"))
        taken = "not pending" in text or "already has a pending" in text
        return JSONResponse({"detail": text}, 404 if missing else 409 if taken else 400)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 400)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # The type only: a message could quote a value from the request or the store.
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc))
        return JSONResponse({"detail": "internal error (see the server's log)"}, 500)

    app.add_middleware(_SecurityHeaders)

    # --- who is asking ---------------------------------------------------------------
    roles: dict[str, tuple[float, str | None]] = {}

    def current_role(name: str) -> str | None:
        # Looked up at most once per user_cache_seconds per user: a read stays one store query.
        hit = roles.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < user_cache_seconds:
            return hit[1]
        got = users.user_role(store, name)
        if len(roles) > 10_000:
            roles.clear()
        roles[name] = (now, got)
        return got

    async def _claims(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> dict[str, Any]:
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(
                401,
                "log in first: POST /api/v1/auth/login, then send Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            claims = tokens.check(creds.credentials, "access")
        except TokenError as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        # The user as the store has it now, not as the token was issued: a removed user
        # is refused and a demoted one gets the new role's rights within user_cache_seconds.
        now_role = current_role(claims["sub"])
        if now_role is None:
            raise HTTPException(
                401, "this user no longer exists", headers={"WWW-Authenticate": "Bearer"}
            )
        return {**claims, "role": now_role}

    def role(needed: str) -> Callable[..., dict[str, Any]]:
        async def dep(claims: Annotated[dict[str, Any], Depends(_claims)]) -> dict[str, Any]:
            have = claims.get("role")
            if have not in users.ROLES or users.role_rank(have) < users.role_rank(needed):
                raise HTTPException(403, f"this needs the {needed} role; you are {have}")
            return claims

        return dep

    Viewer = Annotated[dict[str, Any], Depends(role("viewer"))]
    Approver = Annotated[dict[str, Any], Depends(role("approver"))]
    Admin = Annotated[dict[str, Any], Depends(role("admin"))]

    found: dict[str, tuple[float, RunInfo]] = {}

    async def the_run() -> RunInfo:
        # Looked up at most once a second: the run's row changes once a bar.
        hit = found.get("run")
        if hit is not None and time.monotonic() - hit[0] < RUN_TTL:
            return hit[1]
        run = service.find_run(store, run_id)
        found["run"] = (time.monotonic(), run)
        return run

    RunDep = Annotated[RunInfo, Depends(the_run)]
    SubQuery = Annotated[Name | None, Query(description="Only this subaccount (default: all).")]
    LimitQuery = Annotated[int, Query(ge=1, le=service.MAX_LIMIT, description="Rows at most.")]
    SubPath = Annotated[
        str,
        PathParam(min_length=1, max_length=100, description="Subaccount."),
        AfterValidator(_clean),
    ]

    def _sub_path(name: str) -> str:
        return name

    def actor(claims: dict[str, Any]) -> str:
        return f"api:{claims['sub']}"

    def done(run: RunInfo, receipt: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
        cache.clear()
        out = service.written(store, run, receipt)
        log.info(
            "command #%s %s by %s on run %s",
            out["command_id"],
            out["kind"],
            claims["sub"],
            run.run_id,
        )
        return out

    # Reads are kept ``read_cache_seconds`` (by route and parameters) and all dropped
    # at any write here: a dashboard polling every few seconds, or many of them, then
    # costs the store a query per interval. The runner's own writes show within it.
    cache: dict[str, tuple[float, Response]] = {}

    def read(request: Request, make: Callable[[], Any]) -> Response:
        if read_cache_seconds <= 0:
            return _json(make())
        key = f"{request.url.path}?{sorted(request.query_params.multi_items())}"
        hit = cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < read_cache_seconds:
            return Response(hit[1].body, media_type="application/json")
        response = _json(make())
        if len(cache) > 1000:
            cache.clear()
        cache[key] = (now, response)
        return response

    # --- auth ------------------------------------------------------------------------
    @app.post(f"{PREFIX}/auth/login", response_model=TokenPair, tags=["auth"])
    def login(body: LoginBody, request: Request) -> dict[str, Any]:
        """Trade a user name and password for an access token (short-lived) and a
        refresh token. 5 failures a minute per client IP or per user name: 429."""
        ip = request.client.host if request.client else "unknown"
        keys = (f"ip:{ip}", f"user:{body.username.lower()}")
        wait = limiter.retry_after(*keys)
        if wait is not None:
            raise HTTPException(
                429,
                f"too many failed logins: try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        got = users.authenticate(store, body.username, body.password)
        if got is None:
            limiter.failed(*keys)
            log.warning("failed login for a user name from %s", ip)
            raise HTTPException(401, "wrong user name or password")
        log.info("login: %s (%s)", body.username, got)
        return tokens.issue(body.username, got)

    @app.post(f"{PREFIX}/auth/refresh", response_model=TokenPair, tags=["auth"])
    def refresh(body: RefreshBody) -> dict[str, Any]:
        """A new token pair for a refresh token, which is then used up (rotation; its
        jti is recorded in the store, so it stays used after a restart). The role is
        read again from the store."""
        try:
            claims = tokens.check(body.refresh_token, "refresh")
        except TokenError as exc:
            raise HTTPException(401, str(exc)) from None
        if not users.use_refresh(store, claims["jti"], claims["sub"], float(claims["exp"])):
            raise HTTPException(401, "this refresh token was used already: log in again")
        now = users.user_role(store, claims["sub"])
        if now is None:
            raise HTTPException(401, "this user no longer exists")
        return tokens.issue(claims["sub"], now)

    @app.get(f"{PREFIX}/auth/me", response_model=User, tags=["auth"])
    async def me(claims: Viewer) -> dict[str, Any]:
        """Who the token is of, and its role."""
        return {"username": claims["sub"], "role": claims["role"]}

    # --- reads -----------------------------------------------------------------------
    # Async: a read is a few ms of SQLite on the event loop, cheaper than a hop to the
    # thread pool and back (the process is CPU-bound either way). The report and the
    # writes stay in the pool.
    @app.get(f"{PREFIX}/status", tags=["read"])
    async def status(request: Request, claims: Viewer, run: RunDep) -> Any:
        """The run, the runner's heartbeat (``alive``), the account's equity and state,
        the reconciliation gate, each subaccount's mode, pause, breaker state, equity
        and risk score, and the pending counts."""
        return read(request, lambda: service.overview(store, run))

    @app.get(f"{PREFIX}/holdings", tags=["read"])
    async def holdings(request: Request, claims: Viewer, run: RunDep) -> Any:
        """Equity, cash and positions of each subaccount (quantity, price, value USDT,
        weight as a fraction of the subaccount's equity)."""
        return read(request, lambda: service.holdings(store, run))

    @app.get(f"{PREFIX}/review", tags=["read"])
    async def review(request: Request, claims: Viewer, run: RunDep) -> Any:
        """The latest risk review per subaccount and the account: risk score 0-100,
        level, factors (value, score, weight, contribution, explanation), flags."""
        return read(request, lambda: service.review(store, run))

    @app.get(f"{PREFIX}/proposals", tags=["read"])
    async def proposals(
        request: Request,
        claims: Viewer,
        run: RunDep,
        all: Annotated[bool, Query(description="Every proposal, not only pending.")] = False,
    ) -> Any:
        """Proposals waiting for approval (oldest first), each with its legs."""
        return read(request, lambda: service.proposals(store, run, all=all))

    @app.get(f"{PREFIX}/decisions", tags=["read"])
    async def decisions(
        request: Request,
        claims: Viewer,
        run: RunDep,
        subaccount: SubQuery = None,
        limit: LimitQuery = 100,
    ) -> Any:
        """The decision journal, newest first, each decision with its reasons."""
        return read(
            request,
            lambda: service.decisions(store, run, subaccount, limit),
        )

    @app.get(f"{PREFIX}/orders", tags=["read"])
    async def orders(
        request: Request,
        claims: Viewer,
        run: RunDep,
        subaccount: SubQuery = None,
        limit: LimitQuery = 100,
    ) -> Any:
        """Orders, newest first."""
        return read(
            request,
            lambda: service.orders(store, run, subaccount, limit),
        )

    @app.get(f"{PREFIX}/fills", tags=["read"])
    async def fills(
        request: Request,
        claims: Viewer,
        run: RunDep,
        subaccount: SubQuery = None,
        limit: LimitQuery = 100,
    ) -> Any:
        """Fills, newest first."""
        return read(
            request,
            lambda: service.fills(store, run, subaccount, limit),
        )

    @app.get(f"{PREFIX}/alerts", tags=["read"])
    async def alerts(request: Request, claims: Viewer, run: RunDep, limit: LimitQuery = 100) -> Any:
        """Alerts, newest first, with their deliveries (target names, never URLs)."""
        return read(request, lambda: service.alerts(store, run, limit))

    @app.get(f"{PREFIX}/equity", tags=["read"])
    async def equity(request: Request, claims: Viewer, run: RunDep) -> Any:
        """Equity (USDT) by bar per subaccount and for the whole account (``total``)."""
        return read(request, lambda: service.equity(store, run))

    @app.get(f"{PREFIX}/commands", tags=["read"])
    async def commands(request: Request, claims: Viewer, run: RunDep) -> Any:
        """Every human command of the run (oldest first): who, what, why, outcome."""
        return read(request, lambda: service.commands(store, run))

    @app.get(f"{PREFIX}/transfers", tags=["read"])
    async def transfers(
        request: Request, claims: Viewer, run: RunDep, limit: LimitQuery = 100
    ) -> Any:
        """Transfers between subaccounts, newest first: when, from, to, asked and moved
        (USDT), status, who asked (scheduled, rebalance_capital, allocator) and why it
        moved less or nothing."""
        return read(request, lambda: service.recent_transfers(store, run, limit))

    @app.get(f"{PREFIX}/limits", tags=["read"])
    async def limits(request: Request, claims: Viewer, run: RunDep) -> Any:
        """The hard limits in force per subaccount, and pending limit changes."""
        return read(request, lambda: service.limits(store, run))

    @app.get(f"{PREFIX}/reports", tags=["read"])
    async def reports(request: Request, claims: Viewer) -> Any:
        """Runs with an HTML report (finished backtests in the store)."""
        return read(request, lambda: service.reports(store))

    @app.get(
        f"{PREFIX}/reports/{{report_run}}/html",
        response_class=HTMLResponse,
        tags=["read"],
        responses={200: {"content": {"text/html": {}}}},
    )
    def report(
        claims: Viewer,
        report_run: Annotated[str, PathParam(min_length=1, max_length=200), AfterValidator(_clean)],
    ) -> FileResponse:
        """The run's self-contained HTML report (made once, then cached; the first
        request takes seconds)."""
        path = service.report_html(store_url, store, report_run)
        return FileResponse(path, media_type="text/html")

    @app.get(f"{PREFIX}/audit", tags=["admin"])
    async def audit(request: Request, claims: Admin, run: RunDep, limit: LimitQuery = 100) -> Any:
        """The audit of writes, newest first: every command with who, why, when, and
        what the runner did (the CLI's and the API's)."""
        return read(
            request,
            lambda: service.commands(store, run)[::-1][:limit],
        )

    # --- writes ----------------------------------------------------------------------
    ProposalId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="The proposal's id.")]

    @app.post(f"{PREFIX}/proposals/{{proposal_id}}/approve", response_model=Receipt, tags=["write"])
    def approve(
        proposal_id: ProposalId, body: ApproveBody, claims: Approver, run: RunDep
    ) -> dict[str, Any]:
        """Approve a pending proposal: every leg (``legs`` null) or some legs."""
        receipt = service.approve(
            store, run, proposal_id, body.legs, actor=actor(claims), reason=body.reason
        )
        return done(run, receipt, claims)

    @app.post(f"{PREFIX}/proposals/{{proposal_id}}/reject", response_model=Receipt, tags=["write"])
    def reject(
        proposal_id: ProposalId, body: ReasonBody, claims: Approver, run: RunDep
    ) -> dict[str, Any]:
        """Reject a pending proposal: none of its legs is sent."""
        receipt = service.reject(store, run, proposal_id, actor=actor(claims), reason=body.reason)
        return done(run, receipt, claims)

    @app.post(f"{PREFIX}/subaccounts/{{name}}/pause", response_model=Receipt, tags=["write"])
    def pause(name: SubPath, body: ReasonBody, claims: Approver, run: RunDep) -> dict[str, Any]:
        """Stop new orders in the subaccount until resumed."""
        receipt = service.pause(
            store, run, _sub_path(name), actor=actor(claims), reason=body.reason
        )
        return done(run, receipt, claims)

    @app.post(f"{PREFIX}/subaccounts/{{name}}/resume", response_model=Receipt, tags=["write"])
    def resume(name: SubPath, body: ReasonBody, claims: Approver, run: RunDep) -> dict[str, Any]:
        """Let the subaccount trade again after a pause or a halt."""
        receipt = service.resume(
            store, run, _sub_path(name), actor=actor(claims), reason=body.reason
        )
        return done(run, receipt, claims)

    @app.post(f"{PREFIX}/subaccounts/{{name}}/close", response_model=Receipt, tags=["write"])
    def close(name: SubPath, body: CloseBody, claims: Approver, run: RunDep) -> dict[str, Any]:
        """Close the subaccount's positions: ``symbols``, or every one (null)."""
        receipt = service.close(
            store,
            run,
            body.symbols,
            all=body.symbols is None,
            subaccount=_sub_path(name),
            actor=actor(claims),
            reason=body.reason,
        )
        return done(run, receipt, claims)

    @app.post(f"{PREFIX}/subaccounts/{{name}}/mode", response_model=Receipt, tags=["write"])
    def mode(name: SubPath, body: ModeBody, claims: Admin, run: RunDep) -> dict[str, Any]:
        """Set the subaccount's mode: monitor, approve or auto."""
        receipt = service.set_mode(
            store, run, _sub_path(name), body.mode, actor=actor(claims), reason=body.reason
        )
        return done(run, receipt, claims)

    @app.post(f"{PREFIX}/subaccounts/{{name}}/limits", response_model=Receipt, tags=["write"])
    def set_limit(name: SubPath, body: LimitBody, claims: Admin, run: RunDep) -> dict[str, Any]:
        """Set one hard limit of the subaccount (validated as in the portfolio file)."""
        value = body.value
        if isinstance(value, list):
            value = ",".join(value)
        receipt = service.set_limit(
            store,
            run,
            body.key,
            value,
            subaccount=_sub_path(name),
            actor=actor(claims),
            reason=body.reason,
        )
        return done(run, receipt, claims)

    # --- the dashboard ---------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> Any:
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return HTMLResponse(
            "<!doctype html><title>trimtab</title><p>trimtab API: the dashboard is not "
            "installed; the API's schema is at <a href='/api/openapi.json'>/api/openapi.json</a>."
        )

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


class ServerThread:
    """``uvicorn`` serving ``app`` on ``host:port`` in a daemon thread (beside the
    runner's loop, or in tests); ``start()`` waits until it listens, ``stop()`` ends it."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="trimtab-api", daemon=True)

    def start(self, timeout: float = 20.0) -> "ServerThread":
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the API did not start on {self.config.host}:{self.config.port}"
                )
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.config.port)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def close_store(app: FastAPI) -> None:
    """Close the store the app opened."""
    store: Store = app.state.store
    store.close()
