"""The API's commands: ``trimtab serve`` and ``trimtab api-user add|list|remove``.

``register(app)`` adds them to a typer app (``trimtab.cli`` calls it). A password is read
from stdin (``--password-stdin``) or asked at a prompt without echo, never taken from the
command line (which other users of the machine can see in ``ps``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="The runner's store (default: $TRIMTAB_DB, else sqlite:///runs/trimtab.db).",
    ),
]


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A user mistake is one line on stderr and exit code 2 (``TRIMTAB_DEBUG=1``: the
    traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from trimtab.journal.store import StoreError

        try:
            return fn(*args, **kwargs)
        except (ValueError, StoreError, FileNotFoundError, PermissionError) as exc:
            if os.environ.get("TRIMTAB_DEBUG"):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _store(db: str | None) -> Any:
    from trimtab.app import service

    return service.open_store(db or service.default_db())


def _password(stdin: bool) -> str:
    if stdin:
        text = sys.stdin.readline().rstrip("\r\n")
        if not text:
            raise ValueError("--password-stdin: no password on stdin")
        return text
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask the password in: pipe it with --password-stdin")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``api-user`` group to ``app``."""
    users_app = typer.Typer(
        help="Users of the API (viewer, approver, admin).", no_args_is_help=True
    )
    app.add_typer(users_app, name="api-user")

    @app.command("serve")
    @_friendly
    def serve_cmd(
        db: DbOpt = None,
        run_id: Annotated[
            str | None,
            typer.Option(
                "--run-id",
                metavar="NAME",
                help="The run (default: the store's one paper or live run).",
            ),
        ] = None,
        host: Annotated[
            str, typer.Option("--host", help="Address to listen on (loopback by default).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
        allow_remote: Annotated[
            bool,
            typer.Option(
                "--allow-remote", help="Let --host be a non-loopback address (prints a warning)."
            ),
        ] = False,
    ) -> None:
        """Serve the REST API and the dashboard (needs TRIMTAB_API_SECRET, 32+ characters).

        Users log in with a name and password from `trimtab api-user add`; the schema is
        at /api/openapi.json, the dashboard at /. Ctrl-C stops it."""
        from trimtab.api.server import serve

        serve(db or _default_db(), run_id, host, port, allow_remote)

    @users_app.command("add")
    @_friendly
    def add_cmd(
        name: Annotated[str, typer.Argument(metavar="NAME", help="The user's name.")],
        role: Annotated[str, typer.Option("--role", help="viewer, approver or admin.")] = "viewer",
        password_stdin: Annotated[
            bool,
            typer.Option("--password-stdin", help="Read the password from stdin (one line)."),
        ] = False,
        db: DbOpt = None,
    ) -> None:
        """Add a user (or change an existing user's role and password)."""
        from trimtab.app import users

        if role not in users.ROLES:
            raise ValueError(f"--role {role!r}: roles are {', '.join(users.ROLES)}")
        password = _password(password_stdin)
        store = _store(db)
        try:
            done = users.add_user(store, name, role, password)
        finally:
            store.close()
        verb = "added" if done["created"] else "updated"
        typer.echo(f"user {done['username']} {verb} ({done['role']})")

    @users_app.command("list")
    @_friendly
    def list_cmd(
        db: DbOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """The API's users and their roles."""
        from trimtab.app import service, users

        try:
            store = _store(db)
        except service.ControlError as exc:  # no store yet: nobody can log in
            rows: list[dict[str, Any]] = []
            typer.echo(f"no users: {exc}", err=True)
        else:
            try:
                rows = users.users(store)
            finally:
                store.close()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        elif not rows:
            typer.echo("no users yet: trimtab api-user add NAME --role viewer")
        else:
            for r in rows:
                typer.echo(f"{r['username']:<24} {r['role']:<9} added {r['created_at'][:19]}")

    @users_app.command("remove")
    @_friendly
    def remove_cmd(
        name: Annotated[str, typer.Argument(metavar="NAME", help="The user's name.")],
        db: DbOpt = None,
    ) -> None:
        """Remove a user (its tokens stop refreshing; an access token ends within 15 min)."""
        from trimtab.app import users

        store = _store(db)
        try:
            if not users.remove_user(store, name):
                raise ValueError(f"no user {name!r}")
        finally:
            store.close()
        typer.echo(f"user {name} removed")


def _default_db() -> str:
    from trimtab.app import service

    return service.default_db()
