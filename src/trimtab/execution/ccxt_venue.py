"""A real exchange through ccxt (Binance spot and USDT-M perpetuals), behind the same
calls as the paper exchange (``trimtab.execution.paper.PaperExchange``), so the runner
books its events exactly as it books the paper exchange's.

One ccxt instance per subaccount (each trimtab subaccount is one exchange account with
its own key pair: ccxt's rate limiter is per instance), ``enableRateLimit`` on. A read
refused for its rate (``RateLimitExceeded``, ``DDoSProtection``: HTTP 429/418) or lost on
the network is asked again after a bounded exponential backoff (the server's
``Retry-After`` when it sends one), at most ``max_retries`` times, sleeping with the
injected ``sleep``; then ``VenueUnavailable``.

Exactly once. ``submit(order, cid, bar)`` writes the order to the journal as
``sending`` (committed) *before* the request, with the id sent to the exchange
(``client_ids.encode_client_id``: trimtab's ids fit Binance's rules and go unchanged).
The answer decides its state:

- accepted -> ``sent``; refused by the exchange (a 4xx error body), or by ccxt before
  any request -> ``rejected`` (an ``order`` event with the reason);
- "Duplicate order sent." -> the exchange has it: looked up, never resent;
- 429/418 -> not processed (Binance's rule): looked up by client id, resent after the
  backoff only when absent;
- a timeout, a dropped connection, a 5xx, any other transport error, or a process killed
  in flight (a ``sending`` row found on reopening) -> ``unknown``. An unknown order is
  resolved by ``fetch_order`` with ``origClientOrderId``, then the open orders, the closed
  orders and the trades since it was sent (a trade of an order id the journal does not
  know is matched by fetching that order's client id). It is resent only when none of
  them has it *and* the request's receive window (``recvWindow``, ccxt sends 10 s) has
  run out since it was sent: Binance refuses a request older than that, so one still in
  flight can no longer be taken. Until then the venue waits (``sleep``); an order sent
  three times with neither an answer nor a trace stays ``unknown`` (``VenueUnavailable``)
  and is not sent again.

A cid is never sent twice otherwise; the exchange refuses a reused one anyway (and a
venue whose journal was lost takes the exchange's order on that refusal).

Polling: ``advance(i)`` resolves unknown orders, then per subaccount reads the open
orders (status changes of ours; others are *external*), the trades since the last
trade id seen per market (``fetch_my_trades`` with ``fromId``), and for perpetuals the
funding income since the last seen; each new one becomes an event stamped with bar
``i``, committed with the cursor that marks it seen. Trades and income from before the
venue first looked at a market are the account's history, not events: the first look
takes the last trade id and income time as the starting cursors. ``on_advance(i)`` runs
first (tests move the emulator's clock there).

Events are the paper exchange's (``ExchangeEvent``): ``fill`` (the exact ``Fill``; the
fee as the exchange charged it, in its currency: on a Binance spot buy the base asset
received), ``funding`` (``symbol``, ``rate``, ``mark``, ``amount`` USDT), ``order``
(cancelled, expired, rejected). A fill of an order the journal does not know has
``client_order_id`` the foreign id (or None) and ``data["external"] = True``; the venue
never adopts or cancels such orders. Event timestamps are the exchange's (trade or
funding time), else the venue's clock.

Time in force: a ``next_bar`` order still open at ``advance(i)`` for ``i`` after the bar
it could fill in (decision bar + 1) is cancelled at the exchange and reported expired
(filled for what it got, as the paper exchange); ``gtd`` orders are cancelled once the
venue's clock passes ``expires_at``; ``gtc`` ones wait.

Holdings (``balances``, ``snapshot``): trimtab's one cash per subaccount is the spot
wallet's USDT plus the futures wallet's outside isolated margin (Binance keeps them
apart; the venue moves nothing between them). Perpetuals trade in isolated margin at the
order's (whole) leverage, set on the symbol before the order.

Transfers: with the master account's keys and each subaccount's sub-account email
(``master``, ``emails``), ``transfer(source, target, amount, transfer_id)`` moves USDT
between the subaccounts' spot wallets once per transfer id (``ccxt_transfers``); without
them ``transfer`` is None and the runner records each transfer as not made.

Keys are taken as arguments (text, or an object with ``reveal()``), handed to ccxt and
to nothing else: not logged, not in a repr, scrubbed from every error message.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from trimtab.domain import Instrument, Order, OrderType
from trimtab.domain.orders import TimeInForce
from trimtab.execution.ccxt_convert import (
    PERP_SUFFIX,
    VenueDataError,
    fill_data,
    instrument_from_market,
    margin_tiers,
    order_status,
    symbol_table,
)
from trimtab.execution.ccxt_holdings import (
    AssetBalance,
    PerpPosition,
    VenueSnapshot,
    futures_cash,
    futures_wallets,
    perp_positions,
    spot_assets,
)
from trimtab.execution.ccxt_holdings import number as _num
from trimtab.execution.ccxt_journal import Journal, JournalError, OrderRecord
from trimtab.execution.ccxt_transfers import SubaccountTransfers
from trimtab.execution.client_ids import encode_client_id, rules_for
from trimtab.execution.paper import OPEN_STATUSES, ExchangeEvent, ExchangeOrder

__all__ = [
    "AssetBalance",
    "CcxtVenue",
    "CcxtVenueError",
    "PerpPosition",
    "VenueSnapshot",
    "VenueDataError",
    "VenueUnavailable",
]

log = logging.getLogger(__name__)


def aim_client(client: Any, base_url: str) -> Any:
    """Point every api url of a ccxt client at ``base_url`` (a local emulator, a proxy),
    each keeping its path; returns the client."""
    base = base_url.rstrip("/")
    api = client.urls["api"]
    for key, url in list(api.items()):
        if isinstance(url, str):
            api[key] = base + urlsplit(url).path
    return client


#: Hosts ccxt's Binance sandbox (testnet) urls point at; sandbox mode is verified on them.
SANDBOX_HOSTS = ("testnet.binance.vision", "testnet.binancefuture.com")
_TRADES_PAGE = 1000
_FINAL = ("filled", "cancelled", "expired", "rejected")


class CcxtVenueError(Exception):
    """The venue cannot do what was asked (names the subaccount, the order and why)."""


class VenueUnavailable(CcxtVenueError):
    """The exchange could not be reached or would not answer in time; nothing is lost
    (the journal knows what was sent), ask again later."""


def _reveal(value: Any, what: str) -> str:
    reveal = getattr(value, "reveal", None)
    text = reveal() if callable(reveal) else value
    if not isinstance(text, str) or not text:
        raise CcxtVenueError(f"{what} must be non-empty text or an object with reveal()")
    return text


class CcxtVenue:
    """Binance spot and USDT-M perpetuals through ccxt, with its journal at ``path``.

    ``accounts`` maps each trimtab subaccount to its (api key, secret). ``symbols``
    (trimtab names: ``BTCUSDT``, ``BTCUSDT-PERP``) are watched for fills, funding and
    external orders from the first ``advance`` on (symbols of orders sent are watched
    too). ``api_urls`` points ccxt elsewhere: a base url (``http://127.0.0.1:8080``: every
    api entry keeps its path) or a mapping of ccxt's ``urls['api']`` keys. ``sandbox``
    switches ccxt to the exchange's testnet and checks that every url did. ``timeout_ms``
    is ccxt's HTTP timeout; ``sleep`` (seconds) and ``clock`` (seconds since the epoch)
    are injectable; ``on_advance(i)`` runs at the start of ``advance(i)``;
    ``on_sending(cid)`` right after an order's ``sending`` row is committed (tests kill
    the process there); ``configure(exchange)`` is called on each new ccxt instance
    (tests aim it at the local emulator), before sandbox mode is switched and checked.
    """

    def __init__(
        self,
        path: str | Path,
        accounts: Mapping[str, tuple[Any, Any]],
        *,
        symbols: Sequence[str] = (),
        exchange_id: str = "binance",
        api_urls: str | Mapping[str, str] | None = None,
        sandbox: bool = False,
        timeout_ms: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        on_advance: Callable[[int], None] | None = None,
        on_sending: Callable[[str], None] | None = None,
        configure: Callable[[Any], Any] | None = None,
        master: tuple[Any, Any] | None = None,
        emails: Mapping[str, str] | None = None,
    ) -> None:
        import ccxt  # heavy: loaded when a venue is made

        self._ccxt = ccxt
        self.path = Path(path)
        self.exchange_id = exchange_id
        self._rules = rules_for(exchange_id)
        self._sleep, self._clock = sleep, clock
        self._max_retries, self._backoff, self._cap = int(max_retries), backoff_s, backoff_cap_s
        self._max_sends = 3  # sends of one order that found no trace at the exchange
        self.on_advance, self.on_sending = on_advance, on_sending
        if not accounts:
            raise CcxtVenueError("a ccxt venue needs at least one account (subaccount: keys)")
        if sandbox and api_urls is not None:
            raise CcxtVenueError(
                "sandbox mode talks to the exchange's testnet; api_urls point elsewhere: "
                "give one of them"
            )
        self._secrets: list[str] = []
        self._ex: dict[str, Any] = {}
        for name, keys in accounts.items():
            if not (isinstance(name, str) and name):
                raise CcxtVenueError(f"subaccount names must be text, got {name!r}")
            try:
                key, secret = keys
            except (TypeError, ValueError):
                raise CcxtVenueError(
                    f"subaccount {name}: keys must be a pair (api key, secret)"
                ) from None
            key_text = _reveal(key, f"subaccount {name}: the api key")
            secret_text = _reveal(secret, f"subaccount {name}: the secret")
            if key_text in self._secrets[::2]:
                other = list(self._ex)[self._secrets[::2].index(key_text)]
                raise CcxtVenueError(
                    f"subaccounts {other} and {name} have the same API key: each trimtab "
                    "subaccount is an exchange account of its own, with its own keys"
                )
            self._secrets += [key_text, secret_text]
            ex = self._make_exchange(name, key_text, secret_text, api_urls, timeout_ms)
            if configure is not None:
                configure(ex)
            if sandbox:
                ex.set_sandbox_mode(True)
                self._verify_sandbox(name, ex)
            self._ex[name] = ex
        try:
            self.journal = Journal(self.path, now_ms=self._now_ms())
        except JournalError as exc:
            raise CcxtVenueError(str(exc)) from None
        #: ``transfer(source, target, amount, transfer_id) -> bool`` when the venue can
        #: move capital between its subaccounts (the master key given), else None.
        self.transfer: Callable[[str, str, float, str], bool] | None = None
        #: Why ``transfer`` is None, said where a transfer is not made.
        self.why_no_transfers: str | None = (
            None
            if master is not None
            else "no master account key (TRIMTAB_MASTER_ACCOUNT_API_KEY and _API_SECRET, "
            "or master_account: in the keys file): this venue cannot move capital between "
            "subaccounts"
        )
        self._master_ex: Any = None
        if master is not None:
            try:
                self.transfer = self._transfers(
                    master, emails or {}, api_urls, timeout_ms, configure, sandbox
                ).transfer
            except BaseException:
                self.journal.close()
                raise
        elif emails:
            self.journal.close()
            raise CcxtVenueError(
                "sub-account emails were given without the master account's keys: "
                "transfers need both"
            )
        self._symbols = [str(s) for s in symbols]
        self._markets_loaded = False
        self._by_name: dict[str, str] = {}  # trimtab symbol -> ccxt symbol
        self._by_ccxt: dict[str, str] = {}
        self._instruments: dict[str, Instrument] = {}
        self._baselined: set[tuple[str, str]] = set()
        self._check_journal()

    def _transfers(
        self,
        master: tuple[Any, Any],
        emails: Mapping[str, str],
        api_urls: str | Mapping[str, str] | None,
        timeout_ms: int,
        configure: Callable[[Any], Any] | None,
        sandbox: bool,
    ) -> SubaccountTransfers:
        """Transfers through the master account: its ccxt client, each subaccount's
        email (none for the subaccount that trades on the master account itself)."""
        try:
            key, secret = master
        except (TypeError, ValueError):
            raise CcxtVenueError(
                "the master account's keys must be a pair (api key, secret)"
            ) from None
        key_text = _reveal(key, "the master account's api key")
        secret_text = _reveal(secret, "the master account's secret")
        keys = self._secrets[::2]  # the subaccounts' keys, in order
        on_master = [n for n, k in zip(self._ex, keys, strict=True) if k == key_text]
        self._secrets += [key_text, secret_text]
        book: dict[str, str | None] = {}
        for name in self._ex:
            email = emails.get(name)
            if name in on_master:
                if email:
                    raise CcxtVenueError(
                        f"subaccount {name} trades with the master key: it is the master "
                        "account and has no sub-account email"
                    )
                book[name] = None
            elif not email:
                raise CcxtVenueError(
                    f"subaccount {name}: no sub-account email; the master key moves capital "
                    "between sub-accounts by their emails"
                )
            else:
                book[name] = str(email)
        unknown = sorted(set(emails) - set(self._ex))
        if unknown:
            raise CcxtVenueError(f"emails of unknown subaccounts: {', '.join(unknown)}")
        given = [e for e in book.values() if e]
        if len(given) != len(set(given)):
            raise CcxtVenueError("two subaccounts have the same sub-account email")
        ex = self._make_exchange("master", key_text, secret_text, api_urls, timeout_ms)
        if configure is not None:
            configure(ex)
        if sandbox:
            ex.set_sandbox_mode(True)
            self._verify_sandbox("master", ex)
        self._master_ex = ex
        return SubaccountTransfers(
            self._ccxt,
            ex,
            book,
            self.journal,
            bar_now=self._bar_now,
            now_ms=self._now_ms,
            error=lambda what, exc: self._error("master", what, exc),
            unavailable=VenueUnavailable,
            sleep=self._sleep,
            backoff_s=self._backoff,
            free_usdt=self._free_usdt,
        )

    def _free_usdt(self, subaccount: str) -> tuple[float, float]:
        """Free USDT of ``subaccount``'s spot wallet and of its futures wallet (outside
        margin; 0 when no perpetual is watched), read at the exchange."""
        snap = self.snapshot(subaccount, marks=False)
        spot = snap.spot.get("USDT")
        fut = snap.futures.get("USDT")
        return (spot.free if spot else 0.0, fut.free if fut else 0.0)

    def _check_journal(self) -> None:
        """A journal belongs to one exchange and one set of subaccounts (as a paper
        exchange's file): another set is refused, not guessed at."""
        j = self.journal
        names = sorted(self._ex)
        saved_exchange, saved = j.meta("exchange"), j.meta("subaccounts")
        if saved_exchange is None:
            j.set_meta("exchange", self.exchange_id)
            j.set_meta("subaccounts", json.dumps(names))
            return
        problem = None
        if saved_exchange != self.exchange_id:
            problem = f"it is a {saved_exchange} journal, not {self.exchange_id}"
        elif json.loads(saved or "[]") != names:
            problem = (
                f"it holds subaccounts {', '.join(json.loads(saved or '[]'))}, not "
                f"{', '.join(names)}"
            )
        if problem:
            j.close()
            raise CcxtVenueError(f"{self.path}: {problem}")

    # --- construction --------------------------------------------------------------
    def _make_exchange(
        self,
        name: str,
        key: str,
        secret: str,
        api_urls: str | Mapping[str, str] | None,
        timeout_ms: int,
    ) -> Any:
        try:
            cls = getattr(self._ccxt, self.exchange_id)
        except AttributeError:
            raise CcxtVenueError(f"ccxt has no exchange {self.exchange_id!r}") from None
        ex = cls(
            {
                "apiKey": key,
                "secret": secret,
                "enableRateLimit": True,
                "timeout": int(timeout_ms),
                "options": {
                    "fetchMarkets": {"types": ["spot", "linear"]},
                    "fetchMargins": False,
                    "fetchCurrencies": False,
                    "fetchOpenOrders": {"warnWithoutSymbol": False},
                    "setMarginMode": {"throwMarginModeAlreadySet": False},
                    "adjustForTimeDifference": False,
                },
            }
        )
        if api_urls is not None:
            api = ex.urls["api"]
            if isinstance(api_urls, str):
                aim_client(ex, api_urls)
            else:
                api.update(dict(api_urls))
        return ex

    def _verify_sandbox(self, name: str, ex: Any) -> None:
        """Every url ccxt will use points at the testnet, or the venue is refused."""
        api = ex.urls.get("api") or {}
        bad = sorted(
            k
            for k, url in api.items()
            if isinstance(url, str) and urlsplit(url).hostname not in SANDBOX_HOSTS
        )
        if not getattr(ex, "isSandboxModeEnabled", False) or not api or bad:
            raise CcxtVenueError(
                f"subaccount {name}: ccxt did not switch {self.exchange_id} to its sandbox "
                f"(urls not on {', '.join(SANDBOX_HOSTS)}: {', '.join(bad) or 'none set'}); "
                "refusing to run a sandbox venue that may reach the real exchange"
            )

    def __repr__(self) -> str:
        return (
            f"CcxtVenue({self.exchange_id}, journal={str(self.path)!r}, "
            f"subaccounts={list(self._ex)})"
        )

    # --- plumbing ------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return re.sub(r"signature=[0-9A-Fa-f]+", "signature=***", text)

    def _error(self, sub: str, what: str, exc: BaseException) -> str:
        return self._scrub(f"{self.exchange_id} {sub}: {what}: {type(exc).__name__}: {exc}")

    def _delay(self, ex: Any, attempt: int) -> float:
        delay = min(self._cap, self._backoff * (2**attempt))
        headers = getattr(ex, "last_response_headers", None) or {}
        try:
            retry_after = float(headers.get("Retry-After"))
        except (TypeError, ValueError):
            retry_after = 0.0
        return max(delay, min(retry_after, self._cap))

    def _call(self, sub: str, method: str, *args: Any) -> Any:
        """``exchange.method(*args)`` for ``sub``, a call safe to repeat (a read, a
        cancel, a setting): asked again after a backoff when refused for its rate or lost
        on the network (ccxt's ``NetworkError``: 429/418, timeouts, 5xx)."""
        ccxt = self._ccxt
        ex = self._ex[sub]
        retryable = (ccxt.NetworkError,)
        for attempt in range(self._max_retries + 1):
            try:
                return getattr(ex, method)(*args)
            except retryable as exc:
                if attempt == self._max_retries:
                    raise VenueUnavailable(
                        self._error(sub, f"{method} after {attempt + 1} tries", exc)
                    ) from None
                wait = self._delay(ex, attempt)
                log.warning(
                    "%s %s: %s refused or lost (%s); asking again in %.1f s",
                    self.exchange_id,
                    sub,
                    method,
                    type(exc).__name__,
                    wait,
                )
                self._sleep(wait)
            except ccxt.AuthenticationError as exc:
                raise CcxtVenueError(
                    self._error(sub, f"{method}: the exchange refused the keys", exc)
                ) from None
        raise AssertionError("unreachable")

    def _any_sub(self) -> str:
        return next(iter(self._ex))

    def _load_markets(self) -> None:
        if self._markets_loaded:
            return
        first = self._any_sub()
        self._call(first, "load_markets")
        markets = self._ex[first].markets
        for name, ex in self._ex.items():
            if name != first:
                ex.set_markets(markets, self._ex[first].currencies)
        self._by_name = symbol_table(markets)
        self._by_ccxt = {v: k for k, v in self._by_name.items()}
        self._markets_loaded = True

    def _ccxt_symbol(self, symbol: str) -> str:
        self._load_markets()
        try:
            return self._by_name[symbol]
        except KeyError:
            raise KeyError(f"{self.exchange_id} has no market {symbol}") from None

    def _market(self, symbol: str) -> dict[str, Any]:
        sym = self._ccxt_symbol(symbol)  # loads the markets first
        return self._ex[self._any_sub()].markets[sym]

    def _name_of(self, ccxt_symbol: str) -> str | None:
        self._load_markets()
        return self._by_ccxt.get(ccxt_symbol)

    @staticmethod
    def _is_perp(symbol: str) -> bool:
        return symbol.endswith(PERP_SUFFIX)

    def _sub(self, name: str) -> str:
        if name not in self._ex:
            raise CcxtVenueError(
                f"unknown subaccount {name!r}; the venue has {', '.join(self._ex)}"
            )
        return name

    # --- the exchange surface (as PaperExchange) -------------------------------------
    @property
    def last_bar(self) -> int | None:
        """The last bar ``advance`` ran (None before the first)."""
        return self.journal.last_bar

    def instrument(self, symbol: str) -> Instrument:
        """Exchange rules for ``symbol`` from ccxt's markets; a perpetual's margin brackets
        from ``fetch_leverage_tiers`` (KeyError for a symbol the exchange does not list)."""
        known = self._instruments.get(symbol)
        if known is not None:
            return known
        market = self._market(symbol)
        tiers = ()
        if self._is_perp(symbol):
            sym = self._ccxt_symbol(symbol)
            rows = self._call(self._any_sub(), "fetch_leverage_tiers", [sym]).get(sym) or []
            tiers = margin_tiers(rows, symbol)
        inst = instrument_from_market(symbol, market, tiers)
        self._instruments[symbol] = inst
        return inst

    def submit(self, order: Order, client_order_id: str, bar: int) -> ExchangeOrder:
        """Send ``order`` (decided at the close of bar ``bar``) once, by its client id.

        A client id the journal knows is not sent again: its order is returned (an
        unknown one resolved first). An order the venue refuses before sending (unknown
        symbol or subaccount, a bar passed, a leverage Binance cannot set) is journalled
        ``rejected`` with the reason. ``VenueUnavailable`` when the exchange cannot say
        whether it has the order (it stays ``unknown`` and is resolved later).
        """
        cid = str(client_order_id)
        if not cid:
            raise ValueError("client_order_id must not be empty")
        known = self.journal.order(cid)
        if known is not None:
            if known.state in ("sending", "unknown"):
                known = self._resolve(known)
            return self._public(known)
        bar = int(bar)
        rec = OrderRecord(
            cid=cid,
            venue_cid=encode_client_id(cid, self._rules),
            subaccount=order.subaccount,
            symbol=order.symbol,
            side=str(order.side),
            type=str(order.type),
            quantity=None if order.quantity is None else float(order.quantity),
            quote_quantity=None if order.quote_quantity is None else float(order.quote_quantity),
            limit_price=None if order.limit_price is None else float(order.limit_price),
            reduce_only=bool(order.reduce_only),
            leverage=float(order.leverage),
            time_in_force=str(order.time_in_force),
            reason=str(order.reason),
            bar=bar,
            created_ms=self._now_ms(),
            post_only=bool(order.post_only),
        )
        if order.expires_at is not None:
            rec.expires_ms = int(pd.Timestamp(order.expires_at).value // 1_000_000)
        other = self.journal.order_by_venue_cid(rec.venue_cid)
        if other is not None:
            raise CcxtVenueError(
                f"client order ids {cid} and {other.cid} both encode to {rec.venue_cid}"
            )
        problem = self._local_problem(order, bar)
        if problem is None and self._is_perp(order.symbol):
            problem = self._prepare_perp(order)
        if problem is not None:
            return self._reject_new(rec, problem)
        self._baseline(order.subaccount, order.symbol)
        rec.state = "sending"
        self.journal.add_order(rec)
        return self._public(self._send(rec))

    def cancel(self, client_order_id: str) -> ExchangeOrder | None:
        """Cancel an open order at the exchange; any other order is returned as it is,
        an unknown id gives None."""
        rec = self.journal.order(str(client_order_id))
        if rec is None:
            return None
        if rec.state in ("sending", "unknown"):
            rec = self._resolve(rec)
        if rec.state != "sent" or rec.status in _FINAL:
            return self._public(rec)
        ccxt = self._ccxt
        sym = self._ccxt_symbol(rec.symbol)
        try:
            got = self._call(rec.subaccount, "cancel_order", rec.exchange_order_id, sym)
        except ccxt.OrderNotFound:
            got = self._call(rec.subaccount, "fetch_order", rec.exchange_order_id, sym)
        except ccxt.ExchangeError as exc:  # e.g. -2011 "Unknown order sent." once it ended
            log.info("%s", self._error(rec.subaccount, f"cancel {rec.cid}", exc))
            got = self._call(rec.subaccount, "fetch_order", rec.exchange_order_id, sym)
        return self._public(self._apply(rec, got, self._bar_now(), note="cancelled"))

    def order(self, client_order_id: str) -> ExchangeOrder | None:
        """The order as the exchange has it now (an unknown one resolved first); None for
        an id the journal does not know. If the exchange cannot be reached, the last
        answer it gave (the journal's)."""
        rec = self.journal.order(str(client_order_id))
        if rec is None:
            return None
        if rec.state in ("sending", "unknown"):
            rec = self._resolve(rec)
        elif rec.state == "sent" and rec.status not in _FINAL:
            try:
                got = self._call(
                    rec.subaccount,
                    "fetch_order",
                    rec.exchange_order_id,
                    self._ccxt_symbol(rec.symbol),
                )
            except VenueUnavailable as exc:
                log.warning("%s; answering from the journal", exc)
            else:
                rec = self._apply(rec, got, self._bar_now())
        return self._public(rec)

    def orders(self, subaccount: str | None = None) -> list[ExchangeOrder]:
        """Every order the venue took (journal), in the order taken."""
        return [self._public(r) for r in self.journal.orders(subaccount)]

    def open_orders(self, subaccount: str | None = None) -> list[ExchangeOrder]:
        """Our orders still open at the last look (``advance``, ``order``, ``cancel``):
        sent and open or partially filled, in the order taken. Orders placed by others
        are in ``external_orders``."""
        return [
            self._public(r)
            for r in self.journal.orders(subaccount, states=("sent",))
            if r.status in OPEN_STATUSES
        ]

    def advance(self, i: int) -> None:
        """Poll the exchange for bar ``i``: resolve unknown orders, then per subaccount
        order statuses, fills (trades) and funding; new ones become events stamped ``i``.
        Idempotent (a repeat books nothing twice)."""
        i = int(i)
        if self.on_advance is not None:
            self.on_advance(i)
        for rec in self.journal.orders(states=("sending", "unknown")):
            try:
                self._resolve(rec)
            except VenueUnavailable as exc:  # stays unknown; asked again next time
                log.warning("%s", exc)
        for sub in self._ex:
            symbols = self._watched(sub)
            for symbol in symbols:
                self._baseline(sub, symbol)
            self._poll_orders(sub, symbols, i)
            self._poll_all_trades(sub, symbols, i)
            if any(self._is_perp(s) for s in symbols):
                self._poll_funding(sub, i)
            self._expire(sub, i)
        last = self.journal.last_bar
        if last is None or i > last:
            self.journal.set_last_bar(i)

    def events_since(self, seq: int) -> list[ExchangeEvent]:
        """Events with a seq above ``seq``, in seq order (seqs start at 1)."""
        return [
            ExchangeEvent(s, k, b, pd.Timestamp(ns, tz="UTC"), sub, cid, json.loads(d))
            for s, k, b, ns, sub, cid, d in self.journal.events_since(seq)
        ]

    def balances(self) -> dict[str, dict[str, Any]]:
        """Per subaccount, as the paper exchange: ``cash`` (USDT: the spot wallet's plus
        the futures wallet's outside isolated margin) and ``positions`` (trimtab symbol ->
        signed base units: spot assets that have an ``<ASSET>USDT`` market, perpetual
        positions). The futures wallet is read when a perpetual is watched (or nothing
        is)."""
        out = {}
        for sub in self._ex:
            snap = self.snapshot(sub, marks=False)
            cash = snap.futures_cash
            if "USDT" in snap.spot:
                cash += snap.spot["USDT"].total
            positions: dict[str, float] = {}
            for asset, bal in snap.spot.items():
                name = f"{asset}USDT"
                if asset != "USDT" and bal.total != 0 and name in self._by_name:
                    positions[name] = bal.total
            for p in snap.positions:
                positions[p.symbol] = p.quantity
            out[sub] = {"cash": cash, "positions": positions}
        return out

    def close(self) -> None:
        """Release the journal (everything is committed) and ccxt's sessions. Idempotent."""
        self.journal.close()
        for ex in [*self._ex.values(), self._master_ex]:
            session = getattr(ex, "session", None)
            if session is not None:
                try:
                    session.close()
                except Exception:  # closing is best effort
                    pass

    def __enter__(self) -> CcxtVenue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- extras for the reconciliation gate and review ------------------------------
    def external_orders(self, subaccount: str) -> list[ExchangeOrder]:
        """Open orders at the exchange whose client id the journal does not know (placed
        by hand or by another program), as ``ExchangeOrder`` with their own client id,
        ``bar`` -1 and reason ``external``. Read now from the exchange."""
        return [o for o, ext in self.open_orders_at_exchange(subaccount) if ext]

    def open_orders_at_exchange(self, subaccount: str) -> list[tuple[ExchangeOrder, bool]]:
        """Every open order at the exchange for ``subaccount`` with a flag: True when the
        journal does not know its client id (external)."""
        sub = self._sub(subaccount)
        out = []
        for got in self._fetch_open(sub, self._watched(sub), every_symbol=True):
            rec = self._ours(got)
            if rec is not None:
                rec = self._apply(rec, got, self._bar_now())
                out.append((self._public(rec), False))
            else:
                self._note_external(sub, got)
                out.append((self._foreign(sub, got), True))
        return out

    def snapshot(self, subaccount: str, *, marks: bool = True) -> VenueSnapshot:
        """Every asset of the spot and futures wallets, every open perpetual position
        (quantity, entry, leverage, liquidation price, margin mode) and, with ``marks``,
        the last price of each symbol held (tickers; the mark price for perpetuals)."""
        sub = self._sub(subaccount)
        self._load_markets()
        symbols = self._watched(sub)
        spot = spot_assets(self._call(sub, "fetch_balance", {"type": "spot"}))
        futures: dict[str, AssetBalance] = {}
        positions: list[PerpPosition] = []
        cash = 0.0
        if any(self._is_perp(s) for s in symbols) or not symbols:
            raw = self._call(sub, "fetch_balance", {"type": "swap", "subType": "linear"})
            futures = futures_wallets(raw)
            cash = futures_cash(raw, futures)
            positions = self._positions(sub)
        prices: dict[str, float] = {}
        if marks:
            held = [
                f"{a}USDT"
                for a, b in spot.items()
                if a != "USDT" and b.total != 0 and f"{a}USDT" in self._by_name
            ]
            if held:
                tickers = self._call(sub, "fetch_tickers", [self._by_name[s] for s in held])
                for s in held:
                    t = tickers.get(self._by_name[s]) or {}
                    price = _num(t.get("last")) or _num(t.get("close"))
                    if price is not None:
                        prices[s] = price
            for p in positions:
                if p.mark is not None:
                    prices[p.symbol] = p.mark
        return VenueSnapshot(
            subaccount=sub,
            taken_at=pd.Timestamp(self._now_ms(), unit="ms", tz="UTC"),
            spot=spot,
            futures=futures,
            positions=positions,
            marks=prices,
            futures_cash=cash,
        )

    def externals_seen(self, subaccount: str | None = None) -> list[dict[str, Any]]:
        """Every foreign order the venue has seen (open or traded), from the journal."""
        return self.journal.externals(subaccount)

    # --- sending and resolving ------------------------------------------------------
    def _local_problem(self, order: Order, bar: int) -> str | None:
        if order.subaccount not in self._ex:
            return f"unknown subaccount {order.subaccount!r}; the venue has {', '.join(self._ex)}"
        if bar < 0:
            return f"decision bar {bar} is not a bar"
        last = self.journal.last_bar
        if last is not None and bar < last:
            return (
                f"decision bar {bar} is before the venue's last bar {last}: the order "
                "would fill in the past"
            )
        try:
            self._ccxt_symbol(order.symbol)
        except KeyError:
            return f"unknown symbol {order.symbol} on {self.exchange_id}"
        if self._is_perp(order.symbol):
            if order.quote_quantity is not None:
                return "orders in quote quantity are for spot markets only"
            if not float(order.leverage).is_integer():
                return f"{self.exchange_id} sets whole leverages only, not {order.leverage:g}x"
        elif order.leverage != 1:
            return f"spot orders have no leverage (asked {order.leverage:g}x)"
        return None

    def _prepare_perp(self, order: Order) -> str | None:
        """Isolated margin and the order's leverage on its symbol (each set once, as
        journalled); a refusal is the order's rejection reason."""
        ccxt = self._ccxt
        sub, sym = order.subaccount, self._ccxt_symbol(order.symbol)
        try:
            if self.journal.setting(sub, order.symbol, "margin_mode") != "isolated":
                self._call(sub, "set_margin_mode", "isolated", sym)
                self.journal.set_setting(sub, order.symbol, "margin_mode", "isolated")
            lev = str(int(order.leverage))
            if self.journal.setting(sub, order.symbol, "leverage") != lev:
                self._call(sub, "set_leverage", int(order.leverage), sym)
                self.journal.set_setting(sub, order.symbol, "leverage", lev)
        except ccxt.ExchangeError as exc:
            return self._scrub(f"isolated margin or {order.leverage:g}x leverage refused: {exc}")
        return None

    def _reject_new(self, rec: OrderRecord, reason: str) -> ExchangeOrder:
        rec.state, rec.status, rec.note = "rejected", "rejected", reason
        with self.journal.transaction():
            self.journal.add_order(rec)
            self._order_event(rec, self._bar_now(), self._now_ms())
        return self._public(rec)

    def _create_args(self, rec: OrderRecord) -> tuple[Any, ...]:
        sym = self._ccxt_symbol(rec.symbol)
        params: dict[str, Any] = {"clientOrderId": rec.venue_cid}
        if rec.quote_quantity is not None:
            params["cost"] = rec.quote_quantity
        if rec.reduce_only and self._is_perp(rec.symbol):
            params["reduceOnly"] = True
        if rec.post_only:
            # ccxt's unified flag: LIMIT_MAKER on Binance spot, timeInForce GTX on
            # futures; no timeInForce of ours, which would override GTX.
            params["postOnly"] = True
        elif rec.type == str(OrderType.LIMIT):
            params["timeInForce"] = "GTC"
        return (sym, rec.type, rec.side, rec.quantity, rec.limit_price, params)

    def _send(self, rec: OrderRecord) -> OrderRecord:
        """Send a ``sending`` order (its row committed) until the exchange has it, refuses
        it, or cannot say (then it stays ``unknown`` and ``VenueUnavailable`` is raised)."""
        ccxt = self._ccxt
        sub = rec.subaccount
        ex = self._ex[sub]
        for attempt in range(self._max_retries + 1):
            rec.attempts += 1
            rec.sent_at_ms = self._now_ms()
            self.journal.update_order(rec, state="sending")
            if self.on_sending is not None:
                self.on_sending(rec.cid)
            ex.last_request_url = None
            ex.last_http_response = None
            try:
                got = ex.create_order(*self._create_args(rec))
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as exc:
                # Not processed (Binance's rule for 418/429): look, then send again.
                log.warning("%s", self._error(sub, f"order {rec.cid} refused for rate", exc))
                self.journal.update_order(rec, state="unknown")
                self._sleep(self._delay(ex, attempt))
                found = self._find(rec)
                if found is not None:
                    return self._adopt(rec, found)
                continue
            except ccxt.ExchangeError as exc:
                message = str(exc)
                # An answer: ccxt refused before any request, or the exchange sent an
                # error body (a 4xx that ccxt mapped to an exchange error).
                answered = ex.last_request_url is None or ex.last_http_response is not None
                if "duplicate" in message.lower() or isinstance(exc, ccxt.DuplicateOrderId):
                    self.journal.update_order(rec, state="unknown")
                    return self._resolve(rec)
                if answered:
                    return self._reject_sent(rec, self._scrub(message))
                log.warning("%s", self._error(sub, f"order {rec.cid}: no clear answer", exc))
                self.journal.update_order(rec, state="unknown")
                return self._resolve(rec)
            except ccxt.BaseError as exc:  # timeouts, dropped connections, 5xx
                log.warning("%s", self._error(sub, f"order {rec.cid}: answer lost", exc))
                self.journal.update_order(rec, state="unknown")
                return self._resolve(rec)
            return self._adopt(rec, got)
        raise VenueUnavailable(
            f"{self.exchange_id} {sub}: order {rec.cid} refused for rate {self._max_retries + 1} "
            "times; it is journalled unknown and will be resolved before anything is resent"
        )

    def _reject_sent(self, rec: OrderRecord, reason: str) -> OrderRecord:
        rec.status, rec.note = "rejected", reason
        with self.journal.transaction():
            self.journal.update_order(rec, state="rejected")
            self._order_event(rec, self._bar_now(), self._now_ms())
        return rec

    def _adopt(self, rec: OrderRecord, got: Mapping[str, Any]) -> OrderRecord:
        """The exchange has ``rec`` as ``got``: sent, with its id and status."""
        if got.get("clientOrderId") not in (None, rec.venue_cid):
            raise CcxtVenueError(
                f"order {rec.cid}: the exchange answered with client id "
                f"{got.get('clientOrderId')!r}, not {rec.venue_cid!r}"
            )
        rec.exchange_order_id = str(got["id"])
        with self.journal.transaction():
            self.journal.update_order(rec, state="sent")
            rec = self._apply(rec, got, self._bar_now())
        return rec

    def _find(self, rec: OrderRecord) -> Mapping[str, Any] | None:
        """The exchange's order for ``rec``, looked up by client id, in the open orders,
        in the closed orders and through the trades since it was sent; None if no trace."""
        ccxt = self._ccxt
        sub, sym = rec.subaccount, self._ccxt_symbol(rec.symbol)
        try:
            return self._call(sub, "fetch_order", None, sym, {"clientOrderId": rec.venue_cid})
        except ccxt.OrderNotFound:
            pass
        for got in self._call(sub, "fetch_open_orders", sym):
            if got.get("clientOrderId") == rec.venue_cid:
                return got
        for got in self._call(sub, "fetch_closed_orders", sym, None, None, {}):
            if got.get("clientOrderId") == rec.venue_cid:
                return got
        seen: set[str] = set()
        for trade in self._call(sub, "fetch_my_trades", sym, None, _TRADES_PAGE, {}):
            eid = str(trade.get("order"))
            if eid in seen or self.journal.order_by_exchange_id(sub, rec.symbol, eid):
                continue
            seen.add(eid)
            try:
                got = self._call(sub, "fetch_order", eid, sym)
            except ccxt.OrderNotFound:
                continue
            if got.get("clientOrderId") == rec.venue_cid:
                return got
        return None

    def _resolve(self, rec: OrderRecord) -> OrderRecord:
        """An order in ``sending``/``unknown``: found -> ``sent``; no trace once its
        receive window has passed -> sent again (``VenueUnavailable`` if the exchange
        cannot be asked)."""
        window_ms = int(self._ex[rec.subaccount].options.get("recvWindow") or 10_000) + 1_000
        for _ in range(2):
            found = self._find(rec)
            if found is not None:
                log.info("order %s found at the exchange (%s)", rec.cid, found.get("status"))
                return self._adopt(rec, found)
            if rec.state == "sending":
                rec = self.journal.update_order(rec, state="unknown")
            wait_ms = (rec.sent_at_ms or 0) + window_ms - self._now_ms()
            if wait_ms <= 0:
                if rec.attempts >= self._max_sends:
                    raise VenueUnavailable(
                        f"{self.exchange_id} {rec.subaccount}: order {rec.cid} sent "
                        f"{rec.attempts} times with no answer and no trace at the exchange; "
                        "it stays unknown (not sent again)"
                    )
                log.warning(
                    "order %s: no trace at the exchange after its receive window: sending it",
                    rec.cid,
                )
                return self._send(rec)
            self._sleep(wait_ms / 1000)
        raise VenueUnavailable(
            f"{self.exchange_id} {rec.subaccount}: order {rec.cid} not found yet and its "
            "request may still arrive; it stays unknown"
        )

    # --- applying what the exchange says --------------------------------------------
    def _apply(
        self, rec: OrderRecord, got: Mapping[str, Any], bar: int, *, note: str = ""
    ) -> OrderRecord:
        """Take the exchange's view of one of our sent orders into the journal; an order
        that ended other than filled (cancelled, expired, rejected) gives an event."""
        filled = _num(got.get("filled")) or 0.0
        if self._is_perp(rec.symbol):
            filled *= float(self._market(rec.symbol).get("contractSize") or 1.0)
        status = order_status(got.get("status"), filled, _num(got.get("amount")))
        before = rec.status
        unchanged = (rec.status, rec.filled_quantity, rec.exchange_order_id) == (
            status,
            filled,
            rec.exchange_order_id or (None if got.get("id") is None else str(got["id"])),
        )
        stored = self.journal.order(rec.cid)
        if unchanged and stored is not None and stored.state == rec.state:
            return rec  # nothing new: no write (each commit is an fsync)
        rec.status = status
        rec.filled_quantity = filled
        rec.average_price = _num(got.get("average")) if filled > 0 else None
        if rec.exchange_order_id is None and got.get("id") is not None:
            rec.exchange_order_id = str(got["id"])
        if status in ("cancelled", "expired", "rejected") and not rec.note:
            rec.note = note or status
        if str(got.get("status")) == "expired" and status == "filled" and not rec.note:
            rec.note = "the rest expired"
        with self.journal.transaction():
            self.journal.update_order(rec)
            if status != before and status in ("cancelled", "expired", "rejected"):
                ts = got.get("lastUpdateTimestamp") or got.get("timestamp") or self._now_ms()
                self._order_event(rec, bar, int(ts))
        return rec

    def _order_event(self, rec: OrderRecord, bar: int, ts_ms: int) -> None:
        data = {
            "status": rec.status,
            "reason": rec.note,
            "filled_quantity": rec.filled_quantity,
            "symbol": rec.symbol,
            "side": rec.side,
        }
        self.journal.add_event("order", bar, ts_ms * 1_000_000, rec.subaccount, rec.cid, data)

    def _public(self, rec: OrderRecord) -> ExchangeOrder:
        return ExchangeOrder(
            client_order_id=rec.cid,
            subaccount=rec.subaccount,
            symbol=rec.symbol,
            side=rec.side,
            quantity=rec.quantity,
            quote_quantity=rec.quote_quantity,
            status=rec.status or "open",
            filled_quantity=rec.filled_quantity,
            average_price=rec.average_price,
            fee=rec.fee,
            reason=rec.note,
            bar=rec.bar,
            exchange_order_id=rec.exchange_order_id or "",
        )

    def _foreign(self, sub: str, got: Mapping[str, Any]) -> ExchangeOrder:
        name = self._name_of(str(got.get("symbol"))) or str(got.get("symbol"))
        filled = _num(got.get("filled")) or 0.0
        return ExchangeOrder(
            client_order_id=str(got.get("clientOrderId") or ""),
            subaccount=sub,
            symbol=name,
            side=str(got.get("side")),
            quantity=_num(got.get("amount")),
            quote_quantity=None,
            status=order_status(got.get("status"), filled, _num(got.get("amount"))),
            filled_quantity=filled,
            average_price=_num(got.get("average")) if filled > 0 else None,
            fee=0.0,
            reason="external",
            bar=-1,
            exchange_order_id=str(got.get("id")),
        )

    def _ours(self, got: Mapping[str, Any]) -> OrderRecord | None:
        cid = got.get("clientOrderId")
        return None if not cid else self.journal.order_by_venue_cid(str(cid))

    def _note_external(self, sub: str, got: Mapping[str, Any]) -> None:
        data = {
            "symbol": self._name_of(str(got.get("symbol"))),
            "side": got.get("side"),
            "type": got.get("type"),
            "amount": _num(got.get("amount")),
            "price": _num(got.get("price")),
            "status": got.get("status"),
            "filled": _num(got.get("filled")),
        }
        new = self.journal.note_external(
            sub,
            str(got.get("symbol")),
            str(got.get("id")),
            got.get("clientOrderId"),
            data,
            self._now_ms(),
        )
        if new:
            log.warning(
                "%s %s: order %s (client id %s) was not sent by this venue: external, left alone",
                self.exchange_id,
                sub,
                got.get("id"),
                got.get("clientOrderId"),
            )

    def _bar_now(self) -> int:
        last = self.journal.last_bar
        return -1 if last is None else last

    # --- polling --------------------------------------------------------------------
    def _watched(self, sub: str) -> list[str]:
        names = dict.fromkeys(self._symbols)
        for rec in self.journal.orders(sub):
            names.setdefault(rec.symbol)
        self._load_markets()
        return [s for s in names if s in self._by_name]

    def _fetch_open(
        self, sub: str, symbols: Iterable[str], *, every_symbol: bool = False
    ) -> list[Mapping[str, Any]]:
        """Open orders of ``sub`` in ``symbols``, one request per symbol (cheap in
        Binance's weights); with ``every_symbol`` one request per market type for all
        symbols (dearer: 16 weight on spot and 40 on futures per ccxt's table)."""
        symbols = list(symbols)
        out: list[Mapping[str, Any]] = []
        if not every_symbol:
            for symbol in symbols:
                out += self._call(sub, "fetch_open_orders", self._ccxt_symbol(symbol))
            return out
        if any(not self._is_perp(s) for s in symbols) or not symbols:
            out += self._call(sub, "fetch_open_orders", None, None, None, {"type": "spot"})
        if any(self._is_perp(s) for s in symbols) or not symbols:
            out += self._call(
                sub, "fetch_open_orders", None, None, None, {"type": "swap", "subType": "linear"}
            )
        return out

    def _poll_orders(self, sub: str, symbols: list[str], bar: int) -> None:
        open_now = self._fetch_open(sub, symbols)
        still: set[str] = set()
        for got in open_now:
            rec = self._ours(got)
            if rec is None:
                self._note_external(sub, got)
                continue
            if rec.state in ("sending", "unknown"):  # found while unknown: take it
                rec = self._adopt(rec, got)
            still.add(rec.cid)
            self._apply(rec, got, bar)
        for rec in self.journal.orders(sub, states=("sent",)):
            if rec.status in OPEN_STATUSES or rec.status == "":
                if rec.cid in still:
                    continue
                got = self._call(
                    sub, "fetch_order", rec.exchange_order_id, self._ccxt_symbol(rec.symbol)
                )
                self._apply(rec, got, bar)

    def _baseline(self, sub: str, symbol: str) -> None:
        """The first look at a market: trades (and funding) before it are the account's
        history, not events; the last trade id and income time become the cursors."""
        key = f"trades:{symbol}"
        if (sub, key) in self._baselined:
            return
        if self.journal.cursor(sub, key) is None:
            last = self._call(sub, "fetch_my_trades", self._ccxt_symbol(symbol), None, 1, {})
            self.journal.set_cursor(sub, key, max((int(t["id"]) for t in last), default=-1))
        if self._is_perp(symbol) and self.journal.cursor(sub, "income") is None:
            rows = self._call(sub, "fetch_funding_history", None, None, _TRADES_PAGE, {})
            with self.journal.transaction():
                for row in rows:
                    if not self.journal.income_seen(sub, str(row.get("id"))):
                        self.journal.add_income(sub, str(row.get("id")), None)
                times = [int(r["timestamp"]) for r in rows if r.get("timestamp") is not None]
                self.journal.set_cursor(sub, "income", max(times, default=0))
        self._baselined.add((sub, key))

    def _poll_all_trades(self, sub: str, symbols: Sequence[str], bar: int) -> None:
        """Every market's new trades, booked in the exchange's execution order: by trade
        time, then (the same millisecond) by the order the venue sent their orders, so a
        sell is booked before the buy its cash paid for even when they are two markets'
        trades (each market is read apart)."""
        found: list[tuple[int, int, int, str, str, Mapping[str, Any], float]] = []
        for symbol in symbols:
            sym = self._ccxt_symbol(symbol)
            size = (
                float(self._market(symbol).get("contractSize") or 1.0)
                if self._is_perp(symbol)
                else 1.0
            )
            for trade in self._new_trades(sub, symbol, sym):
                rec = self.journal.order_by_exchange_id(sub, symbol, str(trade.get("order")))
                rank = rec.seq if rec is not None else 1 << 62  # foreign ones after ours
                when = int(trade.get("timestamp") or 0)
                found.append((when, rank, int(trade["id"]), symbol, sym, trade, size))
        found.sort(key=lambda t: t[:3])
        for _, _, _, symbol, sym, trade, size in found:
            self._book_trade(sub, symbol, sym, trade, bar, size)

    def _new_trades(self, sub: str, symbol: str, sym: str) -> list[Mapping[str, Any]]:
        """The trades of one market after the last one booked (every page)."""
        cursor = self.journal.cursor(sub, f"trades:{symbol}")
        start = 0 if cursor is None else cursor + 1
        out: list[Mapping[str, Any]] = []
        while True:
            page = self._call(sub, "fetch_my_trades", sym, None, _TRADES_PAGE, {"fromId": start})
            page = sorted(page, key=lambda t: int(t["id"]))
            out += page
            if len(page) < _TRADES_PAGE:
                return out
            start = int(page[-1]["id"]) + 1

    def _book_trade(
        self, sub: str, symbol: str, sym: str, trade: Mapping[str, Any], bar: int, size: float
    ) -> None:
        key = f"trades:{symbol}"
        tid = str(trade["id"])
        if self.journal.trade_seen(sub, sym, tid):
            self.journal.set_cursor(sub, key, max(int(tid), self.journal.cursor(sub, key) or -1))
            return
        eid = str(trade.get("order"))
        rec = self.journal.order_by_exchange_id(sub, symbol, eid)
        foreign_cid: str | None = None
        if rec is None:
            got = self._call(sub, "fetch_order", eid, sym)
            rec = self._ours(got)
            if rec is not None and rec.state != "sent":
                rec = self._adopt(rec, got)
            elif rec is None:
                foreign_cid = got.get("clientOrderId")
                self._note_external(sub, got)
        if rec is not None:
            data = fill_data(
                trade,
                symbol=symbol,
                subaccount=sub,
                contract_size=size,
                reason=rec.reason,
                leverage=rec.leverage,
            )
            cid = rec.cid
        else:
            lev = (
                _num(self.journal.setting(sub, symbol, "leverage"))
                if self._is_perp(symbol)
                else 1.0
            )
            data = fill_data(
                trade,
                symbol=symbol,
                subaccount=sub,
                contract_size=size,
                reason="external",
                leverage=lev or 1.0,
            )
            data["external"] = True
            cid = foreign_cid
        ns = int(trade["timestamp"]) * 1_000_000
        with self.journal.transaction():
            seq = self.journal.add_event("fill", bar, ns, sub, cid, data)
            self.journal.add_trade(sub, sym, tid, eid, seq)
            self.journal.set_cursor(sub, key, max(int(tid), self.journal.cursor(sub, key) or -1))
            if rec is not None:
                fresh = self.journal.order(rec.cid)
                assert fresh is not None
                fresh.fee += float(data["fee"])
                self.journal.update_order(fresh)

    def _poll_funding(self, sub: str, bar: int) -> None:
        since = self.journal.cursor(sub, "income") or 0
        rows = self._call(sub, "fetch_funding_history", None, since, _TRADES_PAGE, {})
        rates: dict[str, list[Mapping[str, Any]]] = {}
        for row in sorted(rows, key=lambda r: (int(r.get("timestamp") or 0), str(r.get("id")))):
            iid = str(row.get("id"))
            if self.journal.income_seen(sub, iid):
                continue
            sym = str(row.get("symbol"))
            name = self._name_of(sym)
            ts = int(row["timestamp"])
            if name is None:
                log.warning(
                    "%s %s: funding on %s, not a market the venue reads", self.exchange_id, sub, sym
                )
                continue
            if sym not in rates:
                rates[sym] = self._call(
                    sub, "fetch_funding_rate_history", sym, max(since - 3_600_000, 0), 1000, {}
                )
            rate, mark = self._rate_at(rates[sym], ts)
            if rate is None or mark is None:
                log.warning(
                    "%s %s: no funding rate for %s at %s yet", self.exchange_id, sub, name, ts
                )
                return  # asked again at the next advance, nothing skipped
            amount = _num(row.get("amount"))
            data = {"symbol": name, "rate": rate, "mark": mark, "amount": amount, "income_id": iid}
            with self.journal.transaction():
                seq = self.journal.add_event("funding", bar, ts * 1_000_000, sub, None, data)
                self.journal.add_income(sub, iid, seq)
                self.journal.set_cursor(sub, "income", max(ts, since))

    @staticmethod
    def _rate_at(history: list[Mapping[str, Any]], ts: int) -> tuple[float | None, float | None]:
        best = None
        for row in history:
            t = row.get("timestamp")
            if t is None:
                continue
            gap = abs(int(t) - ts)
            if gap <= 60_000 and (best is None or gap < best[0]):
                best = (gap, row)
        if best is None:
            return None, None
        row = best[1]
        info = row.get("info") or {}
        return _num(row.get("fundingRate")), _num(info.get("markPrice"))

    def _expire(self, sub: str, bar: int) -> None:
        now = self._now_ms()
        for rec in self.journal.orders(sub, states=("sent",)):
            if rec.status not in OPEN_STATUSES:
                continue
            tif = TimeInForce(rec.time_in_force)
            due = (tif is TimeInForce.NEXT_BAR and bar > rec.bar + 1) or (
                tif is TimeInForce.GTD and rec.expires_ms is not None and now > rec.expires_ms
            )
            if not due:
                continue
            sym = self._ccxt_symbol(rec.symbol)
            try:
                got = self._call(sub, "cancel_order", rec.exchange_order_id, sym)
            except self._ccxt.ExchangeError:
                got = self._call(sub, "fetch_order", rec.exchange_order_id, sym)
            if str(got.get("status")) == "canceled":
                got = {**got, "status": "expired"}
            self._apply(rec, got, bar, note="not filled in its bar")

    def _positions(self, sub: str) -> list[PerpPosition]:
        return perp_positions(
            self._call(sub, "fetch_positions", None),
            self._name_of,
            lambda name: float(self._market(name).get("contractSize") or 1.0),
            lambda name: _num(self.journal.setting(sub, name, "leverage")),
        )
