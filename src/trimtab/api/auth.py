"""Tokens and login limits of the API.

* Tokens are JWTs signed with HS256 and the server's secret (``TRIMTAB_API_SECRET``):
  claims ``sub`` (user), ``role``, ``typ`` (``access`` or ``refresh``), ``iss``
  (``trimtab``), ``iat``, ``exp`` and ``jti``. Access tokens live ``access_seconds``
  (15 min by default), refresh tokens ``refresh_seconds`` (8 h). A refresh token is used
  once: the API's refresh rotates it and records its jti in the store
  (``users.use_refresh``, so a second use is refused also after a restart), and re-reads
  the user's role from the store (a removed user cannot refresh). ``Tokens.use_refresh``
  is the same check in memory only (one process' lifetime).
* ``LoginLimiter``: at most ``failures`` failed logins per ``window`` seconds per client
  IP and per user name; beyond, logins are refused (429) until the oldest failure is
  older than the window, even with the right password.

Nothing here logs or returns the secret, a password or a hash.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jwt

#: The shortest secret the server takes (characters).
MIN_SECRET = 32
ISSUER = "trimtab"
ALGORITHM = "HS256"


class SecretError(ValueError):
    """The API's secret is missing or too short; the message says how to set it."""


def check_secret(secret: str | None) -> str:
    """``secret`` when it is usable (at least 32 characters), else SecretError."""
    if not secret:
        raise SecretError(
            "TRIMTAB_API_SECRET is not set: the API signs its tokens with it and has no "
            f"default. Set it to a random text of at least {MIN_SECRET} characters, e.g. "
            "export TRIMTAB_API_SECRET=\"$(python -c 'import secrets; print(secrets.token_urlsafe(48))')\""
        )
    if len(secret) < MIN_SECRET:
        raise SecretError(
            f"TRIMTAB_API_SECRET is {len(secret)} characters: it needs at least {MIN_SECRET} "
            "(a random text, e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    return secret


class TokenError(Exception):
    """A token that is missing, malformed, expired, of the wrong type or used twice."""


@dataclass
class Tokens:
    """Issues and checks the API's tokens (see the module docstring)."""

    secret: str
    access_seconds: int = 15 * 60
    refresh_seconds: int = 8 * 3600
    _used: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        check_secret(self.secret)

    def _make(self, user: str, role: str, typ: str, seconds: int) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "role": role,
            "typ": typ,
            "iss": ISSUER,
            "iat": now,
            "exp": now + seconds,
            "jti": secrets.token_hex(12),
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def issue(self, user: str, role: str) -> dict[str, Any]:
        """A new pair: ``access_token``, ``refresh_token``, ``token_type`` (bearer),
        ``expires_in`` (seconds of the access token), ``refresh_expires_in``, ``role``."""
        return {
            "access_token": self._make(user, role, "access", self.access_seconds),
            "refresh_token": self._make(user, role, "refresh", self.refresh_seconds),
            "token_type": "bearer",
            "expires_in": self.access_seconds,
            "refresh_expires_in": self.refresh_seconds,
            "role": role,
            "username": user,
        }

    def check(self, token: str, typ: str) -> dict[str, Any]:
        """The claims of ``token`` when it is valid and of type ``typ``; TokenError else."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "role", "typ", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("the token has expired: log in again or refresh it") from None
        except jwt.PyJWTError:
            raise TokenError("the token is not valid") from None
        if claims.get("typ") != typ:
            raise TokenError(f"a {claims.get('typ')} token was given where a {typ} token is needed")
        return claims

    def use_refresh(self, token: str) -> dict[str, Any]:
        """The claims of refresh token ``token``, which cannot be used again after this."""
        claims = self.check(token, "refresh")
        now = time.time()
        with self._lock:
            for jti, exp in list(self._used.items()):
                if exp < now:
                    del self._used[jti]
            if claims["jti"] in self._used:
                raise TokenError("this refresh token was used already: log in again")
            self._used[claims["jti"]] = float(claims["exp"])
        return claims


@dataclass
class LoginLimiter:
    """Failed logins per key (``ip:...``, ``user:...``) in a sliding window."""

    failures: int = 5
    window: float = 60.0
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _prune(self, key: str, now: float) -> deque[float]:
        times = self._seen.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._seen[key]
        return times

    def retry_after(self, *keys: str) -> int | None:
        """Seconds to wait when any of ``keys`` has used up its failures, else None."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._prune(key, now)
                if len(times) >= self.failures:
                    wait = max(wait, times[0] + self.window - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:  # a flood of names: forget the quiet ones
                for key in list(self._seen):
                    self._prune(key, now)
            for key in keys:
                self._seen.setdefault(key, deque()).append(now)
