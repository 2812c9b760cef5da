"""The API's users, kept in the store (table ``api_users``, migration 0003).

A user has a name, a role (``viewer`` < ``approver`` < ``admin``) and a password kept
only as a salted scrypt hash (``hashlib.scrypt``, n=2**14, r=8, p=1, 16-byte salt,
32-byte key; stored as ``scrypt$n$r$p$salt$key`` in hex). Nothing here prints, logs or
returns a password or a hash: ``users()`` gives names and roles only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

import pandas as pd
import sqlalchemy as sa

from trimtab.journal import models as m
from trimtab.journal.store import Store

#: Roles, weakest first: each may do what the ones before it may.
ROLES = ("viewer", "approver", "admin")
#: The shortest password ``add_user`` takes.
MIN_PASSWORD = 8
_N, _R, _P, _SALT, _KEY = 2**14, 8, 1, 16, 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
# A hash of a random password: checked against when the user is unknown, so that a
# wrong name takes as long as a wrong password (no user enumeration by timing).
_DUMMY: str | None = None


class UserError(ValueError):
    """A user that cannot be added or removed as asked; the message says why."""


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password`` (``scrypt$n$r$p$salt$key``, hex)."""
    salt = secrets.token_bytes(_SALT)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_KEY)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${key.hex()}"


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time comparison)."""
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(bytes.fromhex(key)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(key))


def role_rank(role: str) -> int:
    """0 for viewer, 1 for approver, 2 for admin."""
    return ROLES.index(role)


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise UserError(
            f"user name {name!r}: 1 to 100 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def add_user(store: Store, name: str, role: str, password: str) -> dict[str, Any]:
    """Add user ``name`` with ``role``, or change the role and password of an existing
    one. Returns ``{"username", "role", "created"}`` (True when new)."""
    name = _check_name(name)
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"the password needs at least {MIN_PASSWORD} characters")
    now = pd.Timestamp.now(tz="UTC")
    u = m.api_users
    digest = hash_password(password)
    with store.engine.begin() as conn:
        found = conn.execute(sa.select(u.c.username).where(u.c.username == name)).first()
        if found is None:
            conn.execute(
                sa.insert(u).values(
                    username=name, role=role, password_hash=digest, created_at=now, updated_at=now
                )
            )
        else:
            conn.execute(
                sa.update(u)
                .where(u.c.username == name)
                .values(role=role, password_hash=digest, updated_at=now)
            )
    return {"username": name, "role": role, "created": found is None}


def remove_user(store: Store, name: str) -> bool:
    """Remove user ``name``; False when there was none."""
    u = m.api_users
    with store.engine.begin() as conn:
        done = conn.execute(sa.delete(u).where(u.c.username == (name or "").strip()))
    return bool(done.rowcount)


def users(store: Store) -> list[dict[str, Any]]:
    """Every user's name, role and times (ISO, UTC), by name; never the hash."""
    u = m.api_users
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(u.c.username, u.c.role, u.c.created_at, u.c.updated_at).order_by(u.c.username)
        ).all()
    return [
        {
            "username": r.username,
            "role": r.role,
            "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(),
        }
        for r in rows
    ]


def user_role(store: Store, name: str) -> str | None:
    """The role of user ``name``, or None when there is no such user."""
    u = m.api_users
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(u.c.role).where(u.c.username == name)).first()
    return None if row is None else str(row.role)


def authenticate(store: Store, name: str, password: str) -> str | None:
    """The role of ``name`` when ``password`` is right, else None (same cost either way)."""
    global _DUMMY
    u = m.api_users
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(u.c.role, u.c.password_hash).where(u.c.username == name)
        ).first()
    if row is None:
        if _DUMMY is None:
            _DUMMY = hash_password(secrets.token_hex(16))
        check_password(password, _DUMMY)
        return None
    return str(row.role) if check_password(password, row.password_hash) else None


def use_refresh(store: Store, jti: str, name: str, expires_at: float) -> bool:
    """Record refresh token ``jti`` (of user ``name``, expiring at ``expires_at``, Unix
    seconds UTC) as used; False when it was used already (table ``api_refresh_used``,
    kept in the store so a restart does not forget it). Expired rows are pruned."""
    t = m.api_refresh_used
    now = pd.Timestamp.now(tz="UTC")
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.expires_at < now))
            conn.execute(
                sa.insert(t).values(
                    jti=jti,
                    username=name,
                    expires_at=pd.Timestamp(expires_at, unit="s", tz="UTC"),
                    used_at=now,
                )
            )
    except sa.exc.IntegrityError:  # the jti is there: used already (maybe just now)
        return False
    return True
