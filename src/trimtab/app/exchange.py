"""Exchange accounts for the command line: the keys of each subaccount, the ccxt venue,
and the holdings read from it (``trimtab review --exchange``, ``trimtab rebalance
--exchange``, ``trimtab run --live``).

Keys: each trimtab subaccount is one exchange account (a sub-account with its own key
pair). Its keys come from ``TRIMTAB_<NAME>_API_KEY`` and ``TRIMTAB_<NAME>_API_SECRET``
(``NAME`` upper-cased, anything but letters and digits as ``_``), or from an owner-only
YAML file (``--keys FILE``, ``chmod 600``) of ``NAME: {api_key: ..., secret: ...}``.
Values are held as ``Secret`` (masked in every log line) and handed to ccxt only.

Transfers: capital moves between subaccounts (``trimtab run`` in auto mode) through the
master account's key, by each subaccount's sub-account email. The key comes from
``TRIMTAB_MASTER_ACCOUNT_API_KEY`` and ``TRIMTAB_MASTER_ACCOUNT_API_SECRET`` (or the keys
file's ``master_account: {api_key: ..., secret: ...}``), each email from
``TRIMTAB_<NAME>_EMAIL`` (or ``email:`` in the subaccount's entry). Without the master
key the runner records each transfer as not made, and why. A subaccount trading on the
master account itself has the master's keys and no email.

Endpoints: ``url`` points ccxt at another base url (a local exchange emulator, a proxy);
``testnet`` switches ccxt to the exchange's sandbox and refuses to go on unless every url
it will call is the testnet's. Without either, the venue is the real exchange: ``trimtab
run`` reaches it only with ``--live`` and a confirmation.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from trimtab.app.secrets import Secret, SecretError, load_secret

__all__ = [
    "MASTER_ACCOUNT",
    "email_env_name",
    "key_env_names",
    "load_transfer_keys",
    "holdings_document",
    "holdings_from_exchange",
    "load_keys",
    "open_venue",
]


def _env_prefix(subaccount: str) -> str:
    return "TRIMTAB_" + re.sub(r"[^A-Za-z0-9]", "_", subaccount).upper()


def key_env_names(subaccount: str) -> tuple[str, str]:
    """The environment variables holding ``subaccount``'s api key and secret."""
    prefix = _env_prefix(subaccount)
    return f"{prefix}_API_KEY", f"{prefix}_API_SECRET"


def email_env_name(subaccount: str) -> str:
    """The environment variable holding ``subaccount``'s sub-account email."""
    return f"{_env_prefix(subaccount)}_EMAIL"


#: The keys file's entry (and, upper-cased, the environment's name) of the master account.
MASTER_ACCOUNT = "master_account"


def load_transfer_keys(
    subaccounts: Sequence[str], keys_file: str | Path | None = None
) -> tuple[tuple[Secret, Secret] | None, dict[str, str]]:
    """The master account's (api key, secret) and each subaccount's sub-account email,
    for transfers between subaccounts: (None, {}) when no master key is set. From
    ``keys_file`` when given, else from the environment."""
    clash = [s for s in subaccounts if key_env_names(s) == key_env_names(MASTER_ACCOUNT)]
    if clash:
        raise SecretError(
            f"subaccount {clash[0]}: its keys' names are the master account's "
            f"({key_env_names(MASTER_ACCOUNT)[0]}): rename it"
        )
    if keys_file is not None:
        doc = _keys_document(Path(keys_file))
        if MASTER_ACCOUNT not in doc:
            return None, {}
        master = _entry_keys(Path(keys_file), doc, MASTER_ACCOUNT)
        emails = {}
        for sub in subaccounts:
            entry = doc.get(sub)
            email = entry.get("email") if isinstance(entry, dict) else None
            if email is not None:
                if not isinstance(email, str) or not email.strip():
                    raise SecretError(
                        f"keys file {keys_file}: {sub}.email must be the sub-account's email "
                        f"address, got {email!r}"
                    )
                emails[sub] = email.strip()
        return master, emails
    key_env, secret_env = key_env_names(MASTER_ACCOUNT)
    if not (os.environ.get(key_env) or os.environ.get(secret_env)):
        return None, {}
    missing = [v for v in (key_env, secret_env) if not os.environ.get(v)]
    if missing:
        raise SecretError(f"the master account: set {' and '.join(missing)} too")
    master = (
        load_secret("master account api key", env=key_env),
        load_secret("master account api secret", env=secret_env),
    )
    emails = {}
    for sub in subaccounts:
        value = os.environ.get(email_env_name(sub))
        if value and value.strip():
            emails[sub] = value.strip()
    return master, emails


def load_keys(
    subaccounts: Sequence[str], keys_file: str | Path | None = None
) -> dict[str, tuple[Secret, Secret]]:
    """Each subaccount's (api key, secret): from ``keys_file`` when given, else from the
    environment. A SecretError names what is missing and where it was looked for."""
    if keys_file is not None:
        return _keys_from_file(Path(keys_file), subaccounts)
    out = {}
    for sub in subaccounts:
        key_env, secret_env = key_env_names(sub)
        missing = [v for v in (key_env, secret_env) if not os.environ.get(v)]
        if missing:
            raise SecretError(
                f"subaccount {sub}: no exchange keys: set {' and '.join(missing)} "
                "(or give --keys FILE)"
            )
        out[sub] = (
            load_secret(f"{sub} api key", env=key_env),
            load_secret(f"{sub} api secret", env=secret_env),
        )
    return out


def _keys_document(path: Path) -> dict[str, Any]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SecretError(f"keys file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"keys file {path} is readable or writable by others (mode {stat.S_IMODE(mode):o}): "
            f"chmod 600 {path}"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SecretError(f"keys file {path}: not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise SecretError(f"keys file {path}: expected NAME: {{api_key: ..., secret: ...}}")
    return doc


def _entry_keys(path: Path, doc: Mapping[str, Any], name: str) -> tuple[Secret, Secret]:
    entry = doc.get(name)
    if not isinstance(entry, dict):
        raise SecretError(f"keys file {path}: no entry {name}: {{api_key: ..., secret: ...}}")
    values = []
    for field in ("api_key", "secret"):
        value = entry.get(field)
        if not isinstance(value, str) or not value.strip():
            raise SecretError(f"keys file {path}: {name}.{field} is missing or empty")
        values.append(Secret(value.strip(), f"{name} {field}"))
    return values[0], values[1]


def _keys_from_file(path: Path, subaccounts: Sequence[str]) -> dict[str, tuple[Secret, Secret]]:
    doc = _keys_document(path)
    return {sub: _entry_keys(path, doc, sub) for sub in subaccounts}


def open_venue(
    subaccounts: Sequence[str],
    *,
    exchange: str = "binance",
    journal: str | Path | None = None,
    symbols: Sequence[str] = (),
    keys: Mapping[str, tuple[Any, Any]] | None = None,
    keys_file: str | Path | None = None,
    url: str | None = None,
    testnet: bool = False,
    transfers: bool = False,
    **options: Any,
) -> Any:
    """The ccxt venue of ``subaccounts`` on ``exchange`` (one ccxt client each), its
    journal at ``journal`` (a temporary file when only reading holdings). ``transfers``:
    with the master account's key when one is set (``load_transfer_keys``), so the venue
    can move capital between the subaccounts."""
    from trimtab.execution.ccxt_venue import CcxtVenue, CcxtVenueError

    if exchange != "binance":
        raise ValueError(
            f"exchange {exchange!r}: trimtab trades Binance spot and USDT-M perpetuals "
            "through ccxt for now"
        )
    if testnet and url:
        raise ValueError("--testnet and --exchange-url point at two places: give one")
    found = dict(keys) if keys is not None else load_keys(subaccounts, keys_file)
    if transfers and "master" not in options:
        options["master"], options["emails"] = load_transfer_keys(subaccounts, keys_file)
    path = Path(journal) if journal is not None else Path(tempfile.mkdtemp()) / "venue.db"
    try:
        return CcxtVenue(
            path,
            {s: found[s] for s in subaccounts},
            symbols=symbols,
            exchange_id=exchange,
            api_urls=url,
            sandbox=testnet,
            **options,
        )
    except CcxtVenueError as exc:
        hint = ""
        if options.get("master") is not None:
            hint = (
                " (each sub-account's email: TRIMTAB_<NAME>_EMAIL, or email: in its entry "
                "of the keys file)"
            )
        raise ValueError(f"{exc}{hint}") from None


def holdings_document(venue: Any, subaccounts: Sequence[str], exchange: str) -> dict[str, Any]:
    """What each subaccount holds at the exchange, as a holdings document (the format of
    ``examples/holdings.yaml``): free and locked USDT as cash (the spot wallet plus the
    futures wallet less the isolated margin of open positions), every spot asset with a
    USDT market, every open perpetual with its entry, leverage, margin mode and margin."""
    subs: dict[str, Any] = {}
    for name in subaccounts:
        snap = venue.snapshot(name)
        usdt = snap.spot.get("USDT")
        cash = usdt.total if usdt is not None else 0.0
        fut = snap.futures.get("USDT")
        margins = sum(p.margin or 0.0 for p in snap.positions if p.margin_mode == "isolated")
        if fut is not None:
            cash += fut.total - margins
        spot = {
            asset: bal.total
            for asset, bal in sorted(snap.spot.items())
            if asset != "USDT" and bal.total > 0 and f"{asset}USDT" in snap.marks
        }
        perps = []
        for p in snap.positions:
            if p.quantity == 0:
                continue
            entry: dict[str, Any] = {
                "symbol": p.symbol.removesuffix("-PERP"),
                "side": "long" if p.quantity > 0 else "short",
                "size": abs(p.quantity),
                "entry_price": p.entry_price,
                "margin_mode": p.margin_mode or "isolated",
            }
            if p.leverage:
                entry["leverage"] = p.leverage
            if p.margin:
                entry["margin"] = p.margin
            perps.append(entry)
        doc: dict[str, Any] = {"exchange": exchange, "cash": {"USDT": max(cash, 0.0)}}
        if spot:
            doc["spot"] = spot
        if perps:
            doc["perps"] = perps
        subs[name] = doc
    return {"subaccounts": subs}


def holdings_from_exchange(
    subaccounts: Sequence[str],
    folder: str | Path,
    *,
    exchange: str = "binance",
    keys_file: str | Path | None = None,
    url: str | None = None,
    testnet: bool = False,
) -> Path:
    """Read the holdings of ``subaccounts`` from the exchange and write them as a
    holdings file in ``folder`` (returned): the review and the rebalance plan read the
    same thing from an exchange as from a file."""
    venue = open_venue(
        subaccounts,
        exchange=exchange,
        journal=Path(folder) / "venue.db",
        keys_file=keys_file,
        url=url,
        testnet=testnet,
    )
    try:
        doc = holdings_document(venue, subaccounts, exchange)
    finally:
        venue.close()
    path = Path(folder) / "holdings.yaml"
    path.write_text(
        f"# read from {exchange} ({', '.join(subaccounts)})\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return path
