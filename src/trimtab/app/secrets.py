"""Secrets (exchange keys, alert URLs): read from an environment variable or an owner-only
file, held in a ``Secret`` that prints as ``***``, masked in every log record.

``load_secret(name, env="TRIMTAB_ALERT_PHONE")`` or ``load_secret(name, file=path)``:
a file must not be readable or writable by its group or others (``mode & 0o077 == 0``,
e.g. ``chmod 600 FILE``); its content, stripped of surrounding whitespace, is the value.
Every value loaded is registered with ``SecretFilter``, which replaces it by ``***`` in
log records (message, arguments, exception text) on whatever handler or logger it is
installed on (``install_secret_filter``). A secret is never written to the store: what
the store holds is the *name* of the target, resolved again at delivery.

Errors are ``SecretError`` with a message naming the variable or file (never the value).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "MASK",
    "Secret",
    "SecretError",
    "SecretFilter",
    "install_secret_filter",
    "load_secret",
    "mask_secrets",
]

MASK = "***"

_known: set[str] = set()
_lock = threading.Lock()


class SecretError(ValueError):
    """A secret that cannot be read; the message names where it was looked for."""


class Secret:
    """A string that shows as ``***`` in ``repr``, ``str`` and formatting; ``reveal()``
    gives the value (call it only where the value is used, e.g. at the HTTP call)."""

    __slots__ = ("_name", "_value")

    def __init__(self, value: str, name: str = "secret") -> None:
        self._value = value
        self._name = name
        _register(value)

    @property
    def name(self) -> str:
        """What the secret is for (a target or key name); not secret."""
        return self._name

    def reveal(self) -> str:
        """The value itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._name!r}, {MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        # A secret pickled into a cache or a process pool would leave the process.
        raise TypeError("a Secret cannot be pickled")


def _register(value: str) -> None:
    # Very short values would mask ordinary words in the logs; nobody uses one as a key.
    if len(value) >= 4:
        with _lock:
            _known.add(value)


def mask_secrets(text: str, extra: tuple[str, ...] = ()) -> str:
    """``text`` with every loaded secret (and each of ``extra``) replaced by ``***``,
    longest first so that a secret containing another is masked whole."""
    with _lock:
        values = sorted({*_known, *(e for e in extra if len(e) >= 4)}, key=len, reverse=True)
    for v in values:
        if v in text:
            text = text.replace(v, MASK)
    return text


def load_secret(name: str, *, env: str | None = None, file: Path | str | None = None) -> Secret:
    """The secret ``name`` from environment variable ``env`` or from ``file`` (exactly one).

    The file must be readable by its owner only (``mode & 0o077 == 0``); its content,
    stripped, is the value. Raises ``SecretError`` naming the variable or the file (and
    its mode with the ``chmod`` to run) when it is missing, empty or too open.
    """
    if (env is None) == (file is None):
        raise SecretError(f"secret {name!r}: give exactly one of an environment variable or a file")
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise SecretError(
                f"secret {name!r}: environment variable {env} is not set; set it to the value "
                "before starting trimtab"
            )
        value = value.strip()
        if not value:
            raise SecretError(f"secret {name!r}: environment variable {env} is empty")
        return Secret(value, name)
    path = Path(file).expanduser()  # type: ignore[arg-type]
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"secret {name!r}: file {path} does not exist") from None
    except OSError as exc:
        raise SecretError(f"secret {name!r}: cannot read {path} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"secret {name!r}: {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SecretError(
            f"secret {name!r}: {path} has mode {mode:04o}, readable or writable by others "
            f"than its owner; run `chmod 600 {path}`"
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise SecretError(f"secret {name!r}: cannot read {path} ({reason})") from None
    if not value:
        raise SecretError(f"secret {name!r}: {path} is empty")
    return Secret(value, name)


class SecretFilter(logging.Filter):
    """Masks every loaded secret in a log record: the formatted message (arguments
    merged into it), and the exception and stack text. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _lock:
            empty = not _known
        if empty:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: mask what there is
            message = str(record.msg)
        record.msg = mask_secrets(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = mask_secrets(
                logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
            )
            # The formatter would print exc_info again, unmasked: keep only the text.
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


_FILTER = SecretFilter()


def install_secret_filter(*targets: logging.Handler | logging.Logger) -> SecretFilter:
    """Add the (one, shared) ``SecretFilter`` to ``targets``; without any, to every
    handler of the root logger and to the ``apprise`` logger. A filter on a logger sees
    only records made on that logger, while one on a handler sees every record the
    handler writes: install it on handlers where you can."""
    if not targets:
        targets = (*logging.getLogger().handlers, logging.getLogger("apprise"))
    for t in targets:
        if _FILTER not in t.filters:
            t.addFilter(_FILTER)
    return _FILTER
