"""Starting the API: ``trimtab serve`` and ``trimtab run --api``.

The server listens on 127.0.0.1 unless told otherwise: another host needs
``allow_remote`` (``--allow-remote``) and prints a warning (tokens and passwords then
cross the network: put TLS in front). It refuses to start without
``TRIMTAB_API_SECRET`` (at least 32 characters; there is no default).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from trimtab.api.auth import check_secret

SECRET_ENV = "TRIMTAB_API_SECRET"
#: Seconds a read's answer is reused (default 0.5; 0: never).
CACHE_ENV = "TRIMTAB_API_CACHE_SECONDS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> str | None:
    """None when ``host`` is loopback; the warning to print when it is not and
    ``allow_remote`` is set; ValueError when it is not and ``allow_remote`` is not."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ValueError(
            f"--host {host} is not a loopback address: the API would be reachable from "
            "other machines. Pass --allow-remote as well if you mean it (and put TLS in front)"
        )
    return (
        f"warning: the API listens on {host}, reachable from other machines; tokens and "
        "passwords cross the network in clear unless TLS (a reverse proxy) is in front"
    )


def secret_from_env() -> str:
    """``$TRIMTAB_API_SECRET`` when usable; SecretError (with how to set it) else."""
    return check_secret(os.environ.get(SECRET_ENV))


def make_app(store_url: str, run_id: str | None = None, **kwargs: Any) -> Any:
    """The app with the secret from the environment."""
    from trimtab.api.app import create_app

    cache = os.environ.get(CACHE_ENV)
    if cache is not None and "read_cache_seconds" not in kwargs:
        try:
            kwargs["read_cache_seconds"] = float(cache)
        except ValueError:
            raise ValueError(
                f"{CACHE_ENV}={cache!r}: give seconds, e.g. 0.5 (0: no cache)"
            ) from None
    return create_app(store_url, secret=secret_from_env(), run_id=run_id, **kwargs)


def serve(
    store_url: str,
    run_id: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
) -> None:
    """Serve the API (blocking) until interrupted."""
    import uvicorn

    warning = check_host(host, allow_remote)
    app = make_app(store_url, run_id)
    if warning:
        print(warning, file=sys.stderr)
    print(f"trimtab API on http://{host}:{port} (dashboard /, schema /api/openapi.json)")
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)


def start_beside(
    store_url: str,
    run_id: str | None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
) -> Any:
    """Serve the API in a daemon thread (``trimtab run --api``); returns the
    ``ServerThread`` (``stop()`` it when the run ends)."""
    from trimtab.api.app import ServerThread

    warning = check_host(host, allow_remote)
    app = make_app(store_url, run_id)
    if warning:
        print(warning, file=sys.stderr)
    return ServerThread(app, host, port).start()
