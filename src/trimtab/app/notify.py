"""Deliver the store's alert outbox through apprise, with retries that survive restarts.

``deliver_due(store, targets, now=None)`` takes the deliveries due at ``now`` (wall
clock, UTC; ``store.due_deliveries``), resolves each row's target NAME to its apprise URL
(``alerts.notify`` in the configuration: an environment variable or an owner-only file,
``trimtab.app.secrets``), sends the alert's title and message (plus what to do) and
records the outcome with ``store.mark_delivery``:

* sent: ``delivered``, exactly once (the row is no longer due);
* not sent (the receiver is down, an HTTP error, the variable or file missing, a target
  no longer configured): still ``pending``, next attempt after
  ``base_delay x factor ** (attempts - 1)`` seconds, at most ``max_delay``; after
  ``max_attempts`` attempts ``failed``, with the last error kept.

Every state is in the store, so a new process on the same database (a restart) delivers
what was left. The URL is a secret: it is revealed only to apprise, and any error text
(apprise's log lines, exceptions) has the URL and its parts (host and path, password,
long path segments and query values, which hold tokens) masked before it is stored or
logged. Nothing here raises on a delivery failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

from trimtab.app.secrets import (
    Secret,
    SecretError,
    install_secret_filter,
    load_secret,
    mask_secrets,
)
from trimtab.config import NotifyTarget

__all__ = ["DeliveryPolicy", "DeliveryReport", "deliver_due", "send"]

log = logging.getLogger(__name__)

_NOTIFY_TYPE = {"info": "info", "warning": "warning", "critical": "failure"}


@dataclass(frozen=True)
class DeliveryPolicy:
    """Retries: ``base_delay`` seconds after the first failure, times ``factor`` after
    each further one, at most ``max_delay``; ``max_attempts`` attempts in all, then the
    delivery is ``failed``. ``timeout`` (seconds) bounds one apprise call."""

    base_delay: float = 30.0
    factor: float = 2.0
    max_delay: float = 3600.0
    max_attempts: int = 8
    timeout: float = 10.0

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt once ``attempts`` (>= 1) have failed."""
        return min(self.max_delay, self.base_delay * self.factor ** max(attempts - 1, 0))


@dataclass
class DeliveryReport:
    """Delivery ids by outcome of one ``deliver_due`` pass."""

    delivered: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _url_parts(url: str) -> tuple[str, ...]:
    """The pieces of an apprise URL that may show in logs and carry its token."""
    parts = [url]
    try:
        u = urlsplit(url)
    except ValueError:
        return tuple(parts)
    if u.netloc:
        parts.append(u.netloc + u.path)
        host = u.netloc.rsplit("@", 1)[-1]
        parts.append(host + u.path)
    if u.password:
        parts.append(u.password)
    if u.username and len(u.username) >= 6:
        parts.append(u.username)
    parts += [seg for seg in u.path.split("/") if len(seg) >= 6]
    parts += [v for _, v in parse_qsl(u.query) if len(v) >= 6]
    return tuple(p for p in parts if len(p) >= 4)


def send(url: Secret, title: str, body: str, severity: str, *, timeout: float = 10.0) -> str | None:
    """Send one notification through apprise; None when sent, else the reason (masked)."""
    import apprise  # imported here: only a process that notifies pays for it

    parts = _url_parts(url.reveal())
    for p in parts[1:]:
        Secret(p, url.name)  # registered with the log filter
    try:
        ap = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        if not ap.add(url.reveal()):
            scheme = url.reveal().split("://", 1)[0] if "://" in url.reveal() else "none"
            return (
                f"apprise does not understand the URL of target {url.name!r} (scheme {scheme}://)"
            )
        result = ap.notify(
            body=body,
            title=title,
            notify_type=_NOTIFY_TYPE.get(severity, "info"),
            timeout=timeout,
        )
    except Exception as exc:  # any failure is an attempt to retry, never a crash
        return mask_secrets(f"{type(exc).__name__}: {exc}", parts)
    if result:
        return None
    lines = [e.message for e in result.logs() if getattr(e, "level", "") in ("WARNING", "ERROR")]
    reason = "; ".join(dict.fromkeys(lines)) or "apprise reported a failure"
    return mask_secrets(reason, parts)


def _body(row: Mapping[str, Any]) -> str:
    text = str(row.get("message") or "")
    if row.get("action"):
        text += f"\n\nWhat to do: {row['action']}"
    where = row.get("subaccount")
    stamp = row.get("timestamp")
    tail = [f"run {row.get('run_id')}"]
    if where:
        tail.append(f"subaccount {where}")
    if stamp is not None:
        tail.append(f"at {pd.Timestamp(stamp).isoformat()}")
    return text + "\n\n(" + ", ".join(tail) + ")"


def _resolve(name: str, targets: Mapping[str, NotifyTarget]) -> Secret:
    target = targets.get(name)
    if target is None:
        raise SecretError(
            f"target {name!r} is not under alerts.notify in the configuration "
            f"(known: {', '.join(sorted(targets)) or 'none'})"
        )
    return load_secret(name, env=target.url_env, file=target.path)


def deliver_due(
    store: Any,
    targets: Mapping[str, NotifyTarget],
    *,
    now: pd.Timestamp | None = None,
    run_id: str | None = None,
    policy: DeliveryPolicy | None = None,
    limit: int = 50,
) -> DeliveryReport:
    """Attempt every delivery due at ``now`` (wall clock, UTC; default: now), of run
    ``run_id`` only when given; see the module docstring. Never raises for a failed
    delivery; a store that cannot be written is logged and ends the pass."""
    policy = policy or DeliveryPolicy()
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    report = DeliveryReport()
    install_secret_filter()
    try:
        rows = store.due_deliveries(now, limit=limit)
    except Exception as exc:
        log.warning("alerts: cannot read the outbox: %s", mask_secrets(str(exc)))
        return report
    for row in rows:
        if run_id is not None and row.get("run_id") != run_id:
            continue
        delivery = int(row["delivery_id"])
        try:
            url = _resolve(row["target"], targets)
        except SecretError as exc:
            error: str | None = str(exc)
        else:
            error = send(
                url,
                str(row.get("title") or ""),
                _body(row),
                str(row.get("severity") or "info"),
                timeout=policy.timeout,
            )
        attempts = int(row.get("attempts") or 0) + 1
        try:
            if error is None:
                store.mark_delivery(delivery, ok=True)
                report.delivered.append(delivery)
            elif attempts >= policy.max_attempts:
                store.mark_delivery(delivery, ok=False, error=error, give_up=True)
                report.failed.append(delivery)
                log.warning(
                    "alert delivery %s to %s failed %s times, given up: %s",
                    delivery,
                    row["target"],
                    attempts,
                    error,
                )
            else:
                wait = policy.delay(attempts)
                store.mark_delivery(
                    delivery,
                    ok=False,
                    error=error,
                    next_attempt_at=now + pd.Timedelta(seconds=wait),
                )
                report.retrying.append(delivery)
                log.info(
                    "alert delivery %s to %s failed (attempt %s), next in %.0f s: %s",
                    delivery,
                    row["target"],
                    attempts,
                    wait,
                    error,
                )
        except Exception as exc:  # the store: log and stop; the rows stay due
            log.warning("alerts: cannot record delivery %s: %s", delivery, mask_secrets(str(exc)))
            break
    return report
