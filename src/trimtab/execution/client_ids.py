"""Client order ids as a venue accepts them.

trimtab's store makes one deterministic client order id per order leg
(``tt-<hash>-<sub>-<decision>-<leg>``, see ``trimtab.journal.store.client_order_id``).
A venue limits the length and alphabet of the id it keeps with an order; Binance (spot
``newClientOrderId`` and USDT-M futures alike) takes 1 to 36 characters of
``[.A-Z:/a-z0-9_-]``. ``encode_client_id`` returns the id itself when the venue takes
it, else a fixed-length digest of it; the digest cannot be undone, so the ccxt venue's
journal keeps both (``venue_cid`` beside ``cid``) and maps back through it.

The mapping is one to one: an id the venue takes is sent unchanged unless it starts with
the digest prefix ``t.``, and every other id becomes ``t.`` plus 34 hex digits of its
SHA-256 (a collision would need 136 bits to agree).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["BINANCE", "ClientIdRules", "encode_client_id", "rules_for"]

DIGEST_PREFIX = "t."


@dataclass(frozen=True)
class ClientIdRules:
    """What a venue accepts as a client order id: ``max_length`` characters matching
    ``alphabet`` (a regular expression for one character)."""

    venue: str
    max_length: int
    alphabet: str

    def accepts(self, cid: str) -> bool:
        """True if the venue takes ``cid`` as it is."""
        return (
            0 < len(cid) <= self.max_length and re.fullmatch(f"{self.alphabet}+", cid) is not None
        )


#: Binance spot and USDT-M futures: ``^[.A-Z:/a-z0-9_-]{1,36}$``.
BINANCE = ClientIdRules("binance", 36, r"[.A-Z:/a-z0-9_-]")

_RULES = {"binance": BINANCE, "binanceusdm": BINANCE}


def rules_for(venue: str) -> ClientIdRules:
    """The client order id rules of ``venue`` (a ccxt exchange id)."""
    try:
        return _RULES[venue]
    except KeyError:
        raise ValueError(
            f"no client order id rules for venue {venue!r}; known: {', '.join(sorted(_RULES))}"
        ) from None


def encode_client_id(cid: str, rules: ClientIdRules = BINANCE) -> str:
    """The id to send for trimtab's ``cid``: ``cid`` itself when the venue accepts it (and
    it does not start with ``t.``), else ``t.`` + hex digits of its SHA-256 filling the
    venue's length. Deterministic: the same ``cid`` always gives the same id."""
    if not isinstance(cid, str) or not cid:
        raise ValueError(f"a client order id must be non-empty text, got {cid!r}")
    if rules.accepts(cid) and not cid.startswith(DIGEST_PREFIX):
        return cid
    room = rules.max_length - len(DIGEST_PREFIX)
    if room < 16:
        raise ValueError(
            f"{rules.venue}: client order ids of {rules.max_length} characters are too short"
        )
    return DIGEST_PREFIX + hashlib.sha256(cid.encode()).hexdigest()[:room]
