"""A local Binance REST emulator that the real ccxt client talks to over HTTP.

``BinanceEmulator`` is a ThreadingHTTPServer on 127.0.0.1 answering the part of Binance's
spot (``/api/v3``) and USDT-M futures (``/fapi/v1``, ``/fapi/v2``, ``/fapi/v3``) REST API
that ccxt 4.5's ``binance`` class calls, with Binance's response shapes and error bodies
(``{"code": .., "msg": ..}`` with Binance's HTTP status) so that ccxt parses them and raises
the exception classes it raises against the real exchange.

Model (every amount a ``decimal.Decimal`` inside, a string on the wire):

- Market data: a ``trimtab.data.panel.Panel`` (or long bars), one timeframe. A market
  clock ``clock_ms`` (``set_clock``), separate from wall time; wall time is used only for
  the signature's ``timestamp``/``recvWindow`` check and ``/time``. Klines: the real bars
  that opened at or before the clock; the bar containing the clock is the forming bar
  and shows only its open (high = low = close = open, volume 0), so nothing after the
  clock is ever visible. The current price of a symbol is the open of the bar containing
  the clock (the last close in a gap in the data).
- Orders: market orders fill at once at the current price moved ``slippage_bps`` against
  the taker, rounded to the tick away from the taker. A limit order that is marketable
  fills at once as taker; otherwise it rests (funds locked) and fills as maker at its
  limit when ``set_clock`` moves through a bar whose low (buy) / high (sell) reaches it,
  or a bar opens through it (a bar's whole range counts, even the part of the bar before
  the order was placed). Spot fees as Binance: a buy pays in the base asset received,
  a sell in the quote; futures in USDT. Fees are rounded to 8 decimals, half up.
- Futures: one-way mode, a position per symbol with entry price, leverage (default 20),
  margin type (CROSSED by default, ISOLATED by ``marginType``), realised PnL and fees
  booked to the USDT wallet and as income (REALIZED_PNL, COMMISSION), funding at 00, 08
  and 16 UTC when the clock passes them (payment = -position * mark * rate, income
  FUNDING_FEE), leverage brackets. Liquidation is reported (``liquidationPrice``) but
  never executed.
- Checks: X-MBX-APIKEY known (-2015), HMAC-SHA256 signature (-1022), timestamp within
  ``recvWindow`` of wall time (-1021), lot/tick/notional filters (-1013 ``Filter
  failure: ..``; futures notional -4164), balance (-2010 / futures margin -2019), and a
  client order id unique per account over ALL its orders ever, spot and futures
  (-2010 ``Duplicate order sent.`` on spot, -4116 on futures), each reuse counted in
  ``duplicate_attempts``; the id is checked before the filters and the balance, so a
  resend of an order that went through (and spent the money) is always told duplicate.
- Sub-accounts: with ``master`` (an account name) and ``emails`` (account -> email), the
  master's key moves spot USDT between the master and its sub-accounts (``POST
  /sapi/v1/sub-account/universalTransfer``, a ``clientTranId`` never taken twice: -4115)
  and lists its transfers (``GET``, by ``clientTranId``); ``transfers()`` shows them.
- Faults (``fault(kind, count=1, **params)`` or ``POST /_emulator/fault``), see
  ``FAULT_KINDS``.
- State: every change is written to ``state_path`` (JSON, written to a temporary file,
  fsynced and renamed) before the response is sent, so a killed or restarted emulator
  loses nothing; a new emulator on the same ``state_path`` carries on from it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import select
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from trimtab.data.panel import Panel, panel_from_long, timeframe_seconds
from trimtab.domain.quotes import split_symbol

__all__ = [
    "FAULT_KINDS",
    "Account",
    "ApiError",
    "BinanceEmulator",
    "SymbolRules",
]

#: Faults the emulator can be told to inject (``fault(kind, ...)``):
#:
#: - ``timeout_after_accept``: the next order request (with ``method="DELETE"``: the next
#:   cancel) is executed and committed, then no response: the connection is held until
#:   the client gives up (``mode="hang"``, at most ``seconds``, default 30) or closed at
#:   once (``mode="drop"``);
#: - ``http_429``: answer 429 (``status=418`` for a ban) with ``Retry-After``
#:   (``retry_after`` seconds, default 1) and Binance's -1003 body; nothing executed;
#: - ``http_5xx``: answer ``status`` (default 503) with a plain-text body (ccxt:
#:   ExchangeNotAvailable); ``after_accept=True`` on an order request executes and
#:   commits the order first (Binance: "execution status unknown");
#: - ``reject``: the next order request is refused with ``code``/``msg``/``status``
#:   (default -2010 "Order rejected by the emulator.", 400);
#: - ``partial``: the next order's first fill is only ``fraction`` (default 0.5) of its
#:   quantity (rounded down to the step); a market order's rest EXPIRES, a limit order's
#:   rest stays open;
#: - ``restart``: the next request is dropped, the server stops, reloads its state from
#:   ``state_path`` and listens again on the same port.
#:
#: Every kind takes ``path`` (a substring of the request path the fault waits for) and
#: ``method``; order faults (and a 5xx after accepting) default to order-creating
#: requests (``POST /api/v3/order``, ``POST /fapi/v1/order``), the others to any request
#: except ``/_emulator`` ones. Faults are taken in the order they were queued, each by
#: the first request it matches, and are part of the saved state.
FAULT_KINDS = ("timeout_after_accept", "http_429", "http_5xx", "reject", "partial", "restart")
_ORDER_FAULTS = {"timeout_after_accept", "reject", "partial"}

_EIGHT = Decimal("0.00000001")
_ZERO = Decimal(0)
_FUNDING_MS = 8 * 3600 * 1000
_CID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_SIG_RE = re.compile(r"(^|&)signature=[^&]*")


def _d(x: Any) -> Decimal:
    """A Decimal from a str/int/Decimal/float (a float through its shortest repr)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(float(x)))  # np.float64 too
    return Decimal(str(x))


def _plain(d: Decimal) -> str:
    """A Decimal as Binance futures writes it: no exponent, no trailing zeros."""
    if d == 0:
        return "0"
    s = format(d.normalize(), "f")
    return s


def _f8(d: Decimal) -> str:
    """A Decimal as Binance spot writes it: 8 decimals."""
    return format(d.quantize(_EIGHT, rounding=ROUND_HALF_UP), "f")


def _q8(d: Decimal) -> Decimal:
    return d.quantize(_EIGHT, rounding=ROUND_HALF_UP)


def _to_ms(t: Any) -> int:
    if isinstance(t, int | np.integer):
        return int(t)
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


class ApiError(Exception):
    """A Binance error answer: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status, self.code, self.msg = status, code, msg


def _bad(code: int, msg: str, status: int = 400) -> ApiError:
    return ApiError(status, code, msg)


def _mandatory(name: str) -> ApiError:
    return _bad(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


@dataclass(frozen=True)
class SymbolRules:
    """Exchange rules of one symbol (prices in the quote asset, quantities in the base).

    ``brackets``: futures leverage brackets, each ``(initial_leverage, notional_floor,
    notional_cap, maint_margin_ratio)``; the maintenance amount ``cum`` is derived.
    """

    tick: Decimal
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal = Decimal(5)
    max_qty: Decimal = Decimal(9_000_000)
    futures_min_notional: Decimal = Decimal(5)
    brackets: tuple[tuple[int, Decimal, Decimal, Decimal], ...] = ()

    @classmethod
    def make(
        cls,
        tick: Any,
        step: Any,
        min_qty: Any = None,
        min_notional: Any = 5,
        *,
        futures_min_notional: Any = 5,
        max_qty: Any = 9_000_000,
        brackets: Iterable[tuple[int, Any, Any, Any]] | None = None,
    ) -> SymbolRules:
        """Rules from plain numbers or strings (``min_qty`` defaults to the step)."""
        br = tuple(
            (int(lev), _d(lo), _d(hi), _d(mmr))
            for lev, lo, hi, mmr in (brackets or DEFAULT_BRACKETS)
        )
        return cls(
            tick=_d(tick),
            step=_d(step),
            min_qty=_d(step if min_qty is None else min_qty),
            min_notional=_d(min_notional),
            max_qty=_d(max_qty),
            futures_min_notional=_d(futures_min_notional),
            brackets=br,
        )

    @classmethod
    def for_price(cls, price: float) -> SymbolRules:
        """Sensible defaults for a symbol trading near ``price``: a tick of about seven
        significant digits (at most 0.01), a step worth 0.1-1 quote unit (at most 1)."""
        exp = math.floor(math.log10(price)) if price > 0 else 0
        tick_exp = min(-2, max(-8, exp - 6))
        step_exp = min(0, max(-8, -exp - 1))
        return cls.make(Decimal(1).scaleb(tick_exp), Decimal(1).scaleb(step_exp))

    def bracket_rows(self) -> list[dict[str, Any]]:
        """The brackets with their maintenance amounts ``cum`` (Binance's formula)."""
        rows, cum, prev_mmr = [], _ZERO, _ZERO
        for i, (lev, lo, hi, mmr) in enumerate(self.brackets or _default_brackets()):
            cum = cum + lo * (mmr - prev_mmr)
            prev_mmr = mmr
            rows.append({"bracket": i + 1, "lev": lev, "lo": lo, "hi": hi, "mmr": mmr, "cum": cum})
        return rows


#: Binance-like BTCUSDT brackets: (initial leverage, notional floor, cap, maint ratio).
DEFAULT_BRACKETS: tuple[tuple[int, str, str, str], ...] = (
    (125, "0", "50000", "0.004"),
    (100, "50000", "600000", "0.005"),
    (75, "600000", "3000000", "0.0065"),
    (50, "3000000", "12000000", "0.01"),
    (25, "12000000", "70000000", "0.02"),
    (20, "70000000", "100000000", "0.025"),
    (10, "100000000", "230000000", "0.05"),
    (5, "230000000", "480000000", "0.1"),
    (4, "480000000", "600000000", "0.125"),
    (3, "600000000", "800000000", "0.15"),
    (2, "800000000", "1200000000", "0.25"),
    (1, "1200000000", "1800000000", "0.5"),
)


def _default_brackets() -> tuple[tuple[int, Decimal, Decimal, Decimal], ...]:
    return tuple((lev, _d(lo), _d(hi), _d(m)) for lev, lo, hi, m in DEFAULT_BRACKETS)


@dataclass(frozen=True)
class Account:
    """One Binance account: its API key pair, a name, starting spot balances and
    starting USDT-M futures wallet balances (asset -> amount)."""

    key: str
    secret: str
    name: str
    spot: Mapping[str, Any] = field(default_factory=dict)
    futures: Mapping[str, Any] = field(default_factory=dict)


class _Series:
    """One symbol's real bars as arrays (open times in ms)."""

    def __init__(self, times: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        self.times = times
        self.open, self.high, self.low = cols["open"], cols["high"], cols["low"]
        self.close, self.volume, self.quote_volume = (
            cols["close"],
            cols["volume"],
            cols["quote_volume"],
        )


def _panel_of(data: Panel | pd.DataFrame) -> Panel:
    if isinstance(data, Panel):
        return data
    bars = data.rename(columns={"volume_base": "volume", "volume_quote": "quote_volume"})
    if "quote_volume" not in bars.columns:
        bars = bars.assign(quote_volume=bars["close"] * bars["volume"])
    bars = bars.assign(timestamp=pd.to_datetime(bars["timestamp"], utc=True))
    cols = ["timestamp", "symbol", "open", "high", "low", "close", "volume", "quote_volume"]
    return panel_from_long(bars[cols])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class BinanceEmulator:
    """A Binance REST emulator on 127.0.0.1 (see the module docstring).

    ``data``: a Panel or long bars (``timestamp, symbol, open, high, low, close, volume``);
    ``symbols``: the spot symbols served (default all of the data's); ``futures_symbols``:
    the USDT-M perpetuals (default the spot symbols quoted in USDT); ``rules``: per
    symbol ``SymbolRules`` (default ``SymbolRules.for_price`` of the symbol's median
    close); fees in basis points (spot taker/maker 10/10, futures 5/2 as Binance's base
    tier); ``slippage_bps`` against market takers; ``accounts``: ``Account`` objects or
    ``{api_key: (secret, name[, spot_balances[, futures_balances]])}``;
    ``funding_rates``: per 8 h funding interval, a float for all, ``{symbol: rate}``
    (others 0.0001) or ``f(symbol, ms) -> rate``; ``clock``: the starting market clock
    (ms, Timestamp or ISO string; default the first bar's open); ``state_path``: the JSON
    state file (loaded when it exists, then the accounts and clock given are ignored);
    ``fsync``: flush each state write to the disk (False still survives a SIGKILL of the
    emulator, not a power cut); ``default_leverage`` of a perpetual never set;
    ``recv_window_ms`` when a request sends none; ``port`` 0 = any free one.

    Use: ``with BinanceEmulator(...) as emu:`` (or ``start()``/``close()``), ``emu.url``.
    Market: ``set_clock(t)``, ``step(bars)``, ``clock_ms``, ``price(symbol)``. Faults:
    ``fault(kind, count, **params)``, ``pending_faults()`` (an order fault with a ``path``
    meets that path's requests, a transfer's too). Money from outside:
    ``deposit(account, asset, amount, wallet)``. Introspection (Decimals): ``balances``,
    ``futures_wallet``, ``positions``; (dicts, oldest first) ``orders``, ``trades``,
    ``income``; ``duplicate_attempts`` (a count) and ``duplicates``; ``requests``: one
    ``(method, path, status)`` per API request, the last 100,000 (status 0: dropped by a
    restart);
    ``restarts``; ``state()``. Over HTTP (no key needed): ``POST /_emulator/clock
    {"ms"}``, ``GET /_emulator/clock``, ``POST /_emulator/fault {"kind", "count", ...}``,
    ``POST /_emulator/deposit {"account", "asset", "amount", "wallet"}``, ``GET
    /_emulator/state``, ``GET /_emulator/requests``.

    Times: orders, trades and income are stamped with the market clock (a limit filled
    by a bar's range at that bar's last millisecond); ``/time`` and ``serverTime`` are
    wall time, so a client must tell closed bars by the market clock, not by ccxt's
    ``milliseconds()`` (the forming bar shows its open only).
    """

    def __init__(
        self,
        data: Panel | pd.DataFrame,
        *,
        symbols: Iterable[str] | None = None,
        futures_symbols: Iterable[str] | None = None,
        rules: Mapping[str, SymbolRules] | None = None,
        taker_bps: float | str = 10,
        maker_bps: float | str = 10,
        futures_taker_bps: float | str = 5,
        futures_maker_bps: float | str = 2,
        slippage_bps: float | str = 0,
        accounts: Iterable[Account] | Mapping[str, tuple] = (),
        funding_rates: float | Mapping[str, float] | Callable[[str, int], float] = 0.0001,
        clock: Any = None,
        state_path: str | Path | None = None,
        default_leverage: int = 20,
        recv_window_ms: int = 5000,
        fsync: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        master: str | None = None,
        emails: Mapping[str, str] | None = None,
    ) -> None:
        panel = _panel_of(data)
        self.timeframe = panel.timeframe
        self.tf_ms = timeframe_seconds(panel.timeframe) * 1000
        self.interval = panel.timeframe
        wanted = list(symbols) if symbols is not None else panel.symbols
        missing = [s for s in wanted if s not in panel.symbols]
        if missing:
            raise ValueError(f"symbols not in the data: {', '.join(missing)}")
        self._series: dict[str, _Series] = {}
        self._assets: dict[str, tuple[str, str]] = {}
        for s in wanted:
            has = panel.has_bar[s].to_numpy(dtype=bool)
            idx = pd.DatetimeIndex(panel.index[has])
            times = idx.as_unit("ms").asi8.astype(np.int64)
            cols = {
                f: getattr(panel, f)[s].to_numpy(dtype=float)[has]
                for f in ("open", "high", "low", "close", "volume", "quote_volume")
            }
            self._series[s] = _Series(times, cols)
            self._assets[s] = split_symbol(s)
        self.spot_symbols = list(wanted)
        if futures_symbols is None:
            self.futures_symbols = [s for s in wanted if self._assets[s][1] == "USDT"]
        else:
            self.futures_symbols = list(futures_symbols)
            bad = [s for s in self.futures_symbols if s not in self._series]
            if bad:
                raise ValueError(f"futures symbols not in the data: {', '.join(bad)}")
        self.rules: dict[str, SymbolRules] = {}
        for s in wanted:
            given = (rules or {}).get(s)
            if given is None:
                closes = self._series[s].close
                given = SymbolRules.for_price(float(np.median(closes)) if len(closes) else 1.0)
            self.rules[s] = given
        self.taker = _d(taker_bps) / 10000
        self.maker = _d(maker_bps) / 10000
        self.f_taker = _d(futures_taker_bps) / 10000
        self.f_maker = _d(futures_maker_bps) / 10000
        self.slippage = _d(slippage_bps) / 10000
        self.funding_rates = funding_rates
        self.default_leverage = int(default_leverage)
        self.recv_window_ms = int(recv_window_ms)
        self.host, self._port = host, int(port)
        self.state_path = Path(state_path) if state_path is not None else None
        self.fsync = bool(fsync)

        #: The master account (its key moves money between sub-accounts) and each
        #: sub-account's email (the master has none).
        self.master = master
        self.emails = dict(emails or {})
        self._keys: dict[str, tuple[str, str]] = {}
        starting: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
        items = (
            accounts.items()
            if isinstance(accounts, Mapping)
            else ((a.key, (a.secret, a.name, a.spot, a.futures)) for a in accounts)
        )
        for key, spec in items:
            secret, name = spec[0], spec[1]
            spot = spec[2] if len(spec) > 2 and spec[2] is not None else {}
            fut = spec[3] if len(spec) > 3 and spec[3] is not None else {}
            self._keys[key] = (secret, name)
            starting[name] = (spot, fut)

        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._up = threading.Event()
        #: (method, path, status) of each API request, the last 100,000
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=100_000)
        self.restarts = 0
        self._written: str | None = None
        if self.state_path is not None and self.state_path.exists():
            self._state = json.loads(self.state_path.read_text())
        else:
            first = min(
                (int(sr.times[0]) for sr in self._series.values() if len(sr.times)), default=0
            )
            clock_ms = _to_ms(clock) if clock is not None else first
            self._state = {
                "version": 1,
                "clock_ms": clock_ms,
                "funded_through": (clock_ms // _FUNDING_MS) * _FUNDING_MS,
                "next_order_id": 1,
                "next_trade_id": 1,
                "next_tran_id": 1,
                "accounts": {},
                "orders": {},
                "trades": [],
                "income": [],
                "duplicates": [],
                "faults": [],
                "transfers": [],
            }
            for name, (spot, fut) in starting.items():
                self._state["accounts"][name] = self._new_account(spot, fut)
            self._commit()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def _new_account(self, spot: Mapping[str, Any], fut: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "spot": {a.upper(): {"free": str(_d(v)), "locked": "0"} for a, v in spot.items()},
            "wallet": {a.upper(): str(_d(v)) for a, v in fut.items()},
            "positions": {},
            "leverage": {},
            "margin_type": {},
            "cids": {},
        }

    def start(self) -> BinanceEmulator:
        """Listen (on ``port``, 0 = any free one) and serve in a background thread."""
        self._closing.clear()
        self._serve()
        return self

    def _serve(self) -> None:
        handler = _make_handler(self)
        self._server = _Server((self.host, self._port), handler)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="binance-emulator",
            daemon=True,
        )
        self._thread.start()
        self._up.set()

    def close(self) -> None:
        """Stop serving (held connections are released)."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> BinanceEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (ccxt's urls are this plus ``/api/v3``, ``/fapi/v1``...)."""
        return f"http://{self.host}:{self._port}"

    def wait_up(self, timeout: float = 10.0) -> bool:
        """Block until the server listens (after a ``restart`` fault); True if it does."""
        return self._up.wait(timeout)

    def _restart(self) -> None:
        """Stop listening, reload the state file, listen again on the same port."""
        self._up.clear()
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            if self.state_path is not None and self.state_path.exists():
                self._state = json.loads(self.state_path.read_text())
            self.restarts += 1
        for _ in range(100):
            try:
                self._serve()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"emulator could not listen again on port {self._port}")

    # ------------------------------------------------------------------ state

    def _commit(self) -> None:
        """Write the state atomically (temp file, fsync, rename) when there is a file."""
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        data = json.dumps(self._state, separators=(",", ":"))
        if data == self._written:
            return
        with open(tmp, "w") as fh:
            fh.write(data)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        self._written = data

    def state(self) -> dict[str, Any]:
        """A deep copy of the whole state (JSON types, amounts as strings)."""
        with self._lock:
            return json.loads(json.dumps(self._state))

    @property
    def clock_ms(self) -> int:
        return int(self._state["clock_ms"])

    @property
    def duplicate_attempts(self) -> int:
        """Orders refused because their client order id was used before (all accounts)."""
        return len(self._state["duplicates"])

    @property
    def duplicates(self) -> list[dict[str, Any]]:
        """The refused reuses: ``{"account", "cid", "market", "wall_ms"}`` each."""
        return [dict(d) for d in self._state["duplicates"]]

    def _acct(self, name: str) -> dict[str, Any]:
        try:
            return self._state["accounts"][name]
        except KeyError:
            raise KeyError(
                f"no account {name!r}; accounts: {', '.join(self._state['accounts'])}"
            ) from None

    def transfers(self) -> list[dict[str, Any]]:
        """Every sub-account universal transfer made (oldest first), and every refused
        reuse of a ``clientTranId`` (``"status": "DUPLICATE"``)."""
        with self._lock:
            return [dict(t) for t in self._state.get("transfers", [])]

    def balances(self, account: str) -> dict[str, dict[str, Decimal]]:
        """Spot balances of ``account``: asset -> {"free", "locked"} (Decimal)."""
        with self._lock:
            spot = self._acct(account)["spot"]
            return {a: {"free": _d(b["free"]), "locked": _d(b["locked"])} for a, b in spot.items()}

    def futures_wallet(self, account: str) -> dict[str, Decimal]:
        """USDT-M futures wallet balances of ``account`` (asset -> Decimal)."""
        with self._lock:
            return {a: _d(v) for a, v in self._acct(account)["wallet"].items()}

    def positions(self, account: str) -> dict[str, dict[str, Any]]:
        """Open futures positions: symbol -> amt (signed base), entry, leverage,
        margin_type, isolated_margin, mark, unrealized, liquidation_price (Decimals)."""
        with self._lock:
            a = self._acct(account)
            out = {}
            for sym, p in a["positions"].items():
                if _d(p["amt"]) == 0:
                    continue
                r = self._position_risk(a, sym)
                out[sym] = {
                    "amt": _d(p["amt"]),
                    "entry": _d(p["entry"]),
                    "leverage": self._leverage(a, sym),
                    "margin_type": self._margin_type(a, sym),
                    "isolated_margin": _d(p["margin"]),
                    "mark": _d(r["markPrice"]),
                    "unrealized": _d(r["unRealizedProfit"]),
                    "liquidation_price": _d(r["liquidationPrice"]),
                }
            return out

    def orders(self, account: str | None = None) -> list[dict[str, Any]]:
        """Every order ever placed (oldest first), of one account or all."""
        with self._lock:
            return [
                dict(o)
                for o in self._state["orders"].values()
                if account is None or o["account"] == account
            ]

    def trades(self, account: str | None = None) -> list[dict[str, Any]]:
        """Every fill (oldest first), of one account or all."""
        with self._lock:
            return [
                dict(t) for t in self._state["trades"] if account is None or t["account"] == account
            ]

    def income(self, account: str | None = None) -> list[dict[str, Any]]:
        """Futures income records (REALIZED_PNL, COMMISSION, FUNDING_FEE), oldest first."""
        with self._lock:
            return [
                dict(t) for t in self._state["income"] if account is None or t["account"] == account
            ]

    def fault(self, kind: str, count: int = 1, **params: Any) -> None:
        """Queue ``count`` faults of ``kind`` (see ``FAULT_KINDS``)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if count < 1:
            raise ValueError(f"fault count must be at least 1, got {count}")
        with self._lock:
            for _ in range(int(count)):
                self._state["faults"].append({"kind": kind, **params})
            self._commit()

    def deposit(self, account: str, asset: str, amount: Any, wallet: str = "spot") -> None:
        """Credit (or, negative, debit) ``amount`` of ``asset`` to ``account``'s ``spot``
        or ``futures`` wallet from outside (a deposit, a withdrawal, a hand transfer);
        a futures one is booked as income TRANSFER."""
        amt = _d(amount)
        with self._lock:
            acct = self._acct(account)
            if wallet == "spot":
                if _d(self._spot_bal(acct, asset.upper())["free"]) + amt < 0:
                    raise ValueError(f"{account} has not {-amt} {asset} free to take out")
                self._spot_add(acct, asset.upper(), free=amt)
            elif wallet == "futures":
                if _d(acct["wallet"].get(asset.upper(), "0")) + amt < 0:
                    raise ValueError(f"{account}'s futures wallet has not {-amt} {asset}")
                self._wallet_add(acct, asset.upper(), amt)
                self._book_income(account, "", "TRANSFER", amt, self.clock_ms, "", asset.upper())
            else:
                raise ValueError(f"wallet must be 'spot' or 'futures', not {wallet!r}")
            self._commit()

    def pending_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(f) for f in self._state["faults"]]

    # ------------------------------------------------------------------ market data

    def set_book(self, symbol: str, bid: Any, ask: Any, bid_qty: Any = 1, ask_qty: Any = 1) -> None:
        """Show this touch for ``symbol`` (depth and the taker prices; levels below and
        above it one tick apart, the same sizes) instead of the bar price's, until set
        again. Nothing rests or fills because of it: fills come from bars and
        ``market_trade``."""
        if _d(bid) >= _d(ask):
            raise ValueError(f"set_book: bid {bid} must be below ask {ask}")
        with self._lock:
            self._state.setdefault("books", {})[symbol] = {
                "bid": str(_d(bid)),
                "ask": str(_d(ask)),
                "bid_qty": str(_d(bid_qty)),
                "ask_qty": str(_d(ask_qty)),
            }
            self._commit()

    def market_trade(self, symbol: str, side: str, price: Any, qty: Any) -> int:
        """A trade by other market participants at the clock: ``side`` is the aggressor's
        (``sell`` hits bids, ``buy`` lifts asks). It shows in ``aggTrades`` and fills our
        resting limits it reaches (a sell at or under a buy limit, a buy at or over a sell
        limit) as maker at their limit, oldest first, up to ``qty`` in all (no queue
        ahead of them: the emulator is the only liquidity provider it knows). Returns the
        trade's aggregate id."""
        side, px, left = side.upper(), _d(price), _d(qty)
        if side not in ("BUY", "SELL") or px <= 0 or left <= 0:
            raise ValueError(f"market_trade: bad side/price/qty {side} {price} {qty}")
        with self._lock:
            tape = self._state.setdefault("public_trades", [])
            agg = len(tape) + 1
            when = self.clock_ms
            tape.append(
                {
                    "a": agg,
                    "symbol": symbol,
                    "p": str(px),
                    "q": str(left),
                    "T": when,
                    "m": side == "SELL",
                }
            )
            resting = sorted(
                (
                    o
                    for o in self._state["orders"].values()
                    if o["symbol"] == symbol
                    and o["status"] in _OPEN_STATES
                    and o["type"] != "MARKET"
                    and o["side"] != side
                ),
                key=lambda o: o["id"],
            )
            for o in resting:
                lim = _d(o["price"])
                if (o["side"] == "BUY" and px > lim) or (o["side"] == "SELL" and px < lim):
                    continue
                q = min(left, _d(o["qty"]) - _d(o["executed"]))
                if q <= 0:
                    continue
                acct = self._acct(o["account"])
                if o["market"] == "spot":
                    self._spot_fill(acct, o, q, lim, maker=True, when=when)
                else:
                    self._fut_fill(acct, o, q, lim, maker=True, when=when)
                left -= q
                if left <= 0:
                    break
            self._commit()
            return agg

    def _agg_trades(self, p: dict[str, str], futures: bool) -> list[dict[str, Any]]:
        sym = self._symbol(p, futures)
        limit = min(int(p.get("limit", 500)), 1000)
        rows = [t for t in self._state.get("public_trades", []) if t["symbol"] == sym]
        if p.get("fromId"):
            rows = [t for t in rows if t["a"] >= int(p["fromId"])]
        if p.get("startTime"):
            rows = [t for t in rows if t["T"] >= int(p["startTime"])]
        if p.get("endTime"):
            rows = [t for t in rows if t["T"] <= int(p["endTime"])]
        if not (p.get("fromId") or p.get("startTime")):
            rows = rows[-limit:]  # Binance: the most recent ones
        return [
            {
                "a": t["a"],
                "p": _f8(_d(t["p"])),
                "q": _f8(_d(t["q"])),
                "f": t["a"],
                "l": t["a"],
                "T": t["T"],
                "m": t["m"],
                "M": True,
            }
            for t in rows[:limit]
        ]

    def _bar_at(self, symbol: str, t: int) -> int:
        """Index of the last real bar opening at or before ``t`` (-1 if none)."""
        return int(np.searchsorted(self._series[symbol].times, t, side="right")) - 1

    def price(self, symbol: str, t: int | None = None) -> Decimal:
        """The current price of ``symbol`` at ``t`` (default the clock): the open of the
        bar containing it, else (a gap, or after the data) the last close."""
        t = self.clock_ms if t is None else t
        sr = self._series[symbol]
        i = self._bar_at(symbol, t)
        if i < 0:
            raise _bad(-1013, "Market is closed.")
        if t < sr.times[i] + self.tf_ms:
            return _d(float(sr.open[i]))
        return _d(float(sr.close[i]))

    def _listed(self, symbol: str, t: int) -> bool:
        """True once the symbol's first bar has opened (it has a price)."""
        return self._bar_at(symbol, t) >= 0

    def _trading(self, symbol: str, t: int) -> bool:
        """Listed and its data not ended (orders are taken): between its first bar's
        open and its last bar's close."""
        times = self._series[symbol].times
        return len(times) > 0 and int(times[0]) <= t < int(times[-1]) + self.tf_ms

    def set_clock(self, t: Any) -> None:
        """Move the market clock to ``t`` (ms, Timestamp or ISO string; never back),
        filling resting limit orders the bars passed cross and booking funding at the
        00/08/16 UTC times passed, in time order."""
        new = _to_ms(t)
        with self._lock:
            old = self.clock_ms
            if new < old:
                raise ValueError(f"the clock goes forward only: {new} < {old}")
            self._advance(old, new)
            self._state["clock_ms"] = new
            self._commit()

    def step(self, bars: int = 1) -> None:
        """Move the clock forward by ``bars`` bars of the data's timeframe."""
        self.set_clock(self.clock_ms + bars * self.tf_ms)

    def _advance(self, old: int, new: int) -> None:
        events: list[tuple[int, int, str, Any]] = []
        b = self._state["funded_through"] + _FUNDING_MS
        while b <= new:
            events.append((b, 0, "funding", None))
            b += _FUNDING_MS
        open_orders = [o for o in self._state["orders"].values() if o["status"] in _OPEN_STATES]
        syms = {o["symbol"] for o in open_orders}
        for acct in self._state["accounts"].values():
            syms.update(s for s, p in acct["positions"].items() if _d(p["amt"]) != 0)
        for sym in sorted(syms):
            sr = self._series[sym]
            i = max(self._bar_at(sym, old), 0)
            while i < len(sr.times) and sr.times[i] <= new:
                start, end = int(sr.times[i]), int(sr.times[i]) + self.tf_ms
                if start > old:  # a bar opened after the old clock: its open is seen
                    events.append((start, 1, "open", (sym, i)))
                if old < end <= new:  # a bar that closed: its whole range is seen
                    events.append((end - 1, 2, "range", (sym, i)))
                i += 1
        events.sort(key=lambda e: (e[0], e[1]))
        for when, _, kind, what in events:
            if kind == "funding":
                self._fund(when)
                self._state["funded_through"] = when
            else:
                sym, i = what
                self._cross(sym, i, when, kind, open_orders)
                self._liquidations(sym, i, when, kind)

    def _liquidations(self, sym: str, i: int, when: int, kind: str) -> None:
        """Close positions of ``sym`` whose liquidation price the bar reached: a
        LIQUIDATION order (client id ``autoclose-<ms>``) filled at that price; an isolated
        position loses its whole margin (the rest booked as INSURANCE_CLEAR)."""
        sr = self._series[sym]
        if kind == "open":
            lo = hi = _d(float(sr.open[i]))
        else:
            lo, hi = _d(float(sr.low[i])), _d(float(sr.high[i]))
        for name, acct in self._state["accounts"].items():
            pos = acct["positions"].get(sym)
            if pos is None or _d(pos["amt"]) == 0:
                continue
            amt = _d(pos["amt"])
            liq = _d(self._position_risk(acct, sym)["liquidationPrice"])
            if liq <= 0 or (amt > 0 and lo > liq) or (amt < 0 and hi < liq):
                continue
            tick = self.rules[sym].tick
            rounding = ROUND_CEILING if amt > 0 else ROUND_FLOOR
            px = (liq / tick).to_integral_value(rounding) * tick
            isolated = self._margin_type(acct, sym) == "ISOLATED"
            margin = _d(pos["margin"])
            wallet_before = _d(acct["wallet"].get("USDT", "0"))
            cid = f"autoclose-{when}"
            side = "SELL" if amt > 0 else "BUY"
            o = self._new_order(
                name, "futures", sym, cid, {"side": side}, abs(amt), px, "LIQUIDATION"
            )
            o["tif"] = "IOC"
            o["reduce_only"] = True
            self._fut_fill(acct, o, abs(amt), px, maker=False, when=when)
            if isolated:
                spent = wallet_before - _d(acct["wallet"].get("USDT", "0"))
                rest = margin - spent  # what the margin still held goes to the insurance fund
                if rest > 0:
                    self._wallet_add(acct, "USDT", -rest)
                    self._book_income(name, sym, "INSURANCE_CLEAR", -rest, when, "")

    def _cross(self, sym: str, i: int, when: int, kind: str, open_orders: list[dict]) -> None:
        sr = self._series[sym]
        if kind == "open":
            lo = hi = _d(float(sr.open[i]))
        else:
            lo, hi = _d(float(sr.low[i])), _d(float(sr.high[i]))
        for o in open_orders:
            if o["symbol"] != sym or o["status"] not in _OPEN_STATES or o["type"] == "MARKET":
                continue
            if o["time"] > when:
                continue
            px = _d(o["price"])
            if (o["side"] == "BUY" and lo <= px) or (o["side"] == "SELL" and hi >= px):
                acct = self._acct(o["account"])
                qty = _d(o["qty"]) - _d(o["executed"])
                qty = self._partial_qty(o, qty)
                if qty <= 0:
                    continue
                if o["market"] == "spot":
                    self._spot_fill(acct, o, qty, px, maker=True, when=when)
                else:
                    self._fut_fill(acct, o, qty, px, maker=True, when=when)

    def _funding_rate(self, symbol: str, ms: int) -> Decimal:
        fr = self.funding_rates
        if callable(fr):
            return _d(float(fr(symbol, ms)))
        if isinstance(fr, Mapping):
            return _d(fr.get(symbol, 0.0001))
        return _d(fr)

    def _fund(self, when: int) -> None:
        for name, acct in self._state["accounts"].items():
            for sym, p in acct["positions"].items():
                amt = _d(p["amt"])
                if amt == 0:
                    continue
                mark = self.price(sym, when)
                rate = self._funding_rate(sym, when)
                pay = _q8(-amt * mark * rate)
                self._wallet_add(acct, "USDT", pay)
                if self._margin_type(acct, sym) == "ISOLATED":
                    p["margin"] = str(_d(p["margin"]) + pay)
                self._book_income(name, sym, "FUNDING_FEE", pay, when, "")

    # ------------------------------------------------------------------ HTTP dispatch

    def _take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        """Pop the first queued fault this request meets. Order faults (and a 5xx after
        accepting) wait for ``POST .../order``; with ``method``/``path`` given they meet
        any ``.../order`` request that matches them (a cancel: ``method="DELETE"``), a
        partial fill only a POST."""
        is_order = path.endswith("/order")
        for i, f in enumerate(self._state["faults"]):
            if f.get("method") and f["method"].upper() != method:
                continue
            if f.get("path") and f["path"] not in path:
                continue
            needs_order = f["kind"] in _ORDER_FAULTS or (
                f["kind"] == "http_5xx" and f.get("after_accept")
            )
            if needs_order:
                if not is_order and not f.get("path"):
                    continue
                explicit = f.get("method") or f.get("path")
                if (f["kind"] == "partial" or not explicit) and method != "POST":
                    continue
            return self._state["faults"].pop(i)
        return None

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: str) -> Any:
        """Answer one request: returns ``(status, headers, body_bytes)`` or a directive
        (``("hang", seconds)``, ``("drop",)``, ``("restart",)``) for the handler."""
        parts = urlsplit(raw_path)
        path = parts.path
        query = parts.query
        if path.startswith("/_emulator/"):
            return self._control(method, path, query, body)
        with self._lock:
            f = self._take_fault(method, path)
            if f is not None:
                self._commit()
                kind = f["kind"]
                if kind == "restart":
                    self.requests.append((method, path, 0))
                    return ("restart",)
                if kind == "http_429":
                    status = int(f.get("status", 429))
                    retry = str(f.get("retry_after", 1))
                    msg = (
                        "Too many requests; current limit of IP(127.0.0.1) is 6000 requests "
                        "per minute. Please use WebSocket Streams for live updates to avoid "
                        "polling the API."
                    )
                    if status == 418:
                        until = int(time.time() * 1000) + 1000 * int(float(retry))
                        msg = (
                            f"Way too much request weight used; IP banned until {until}. "
                            "Please use WebSocket Streams for live updates to avoid bans."
                        )
                    self.requests.append((method, path, status))
                    return _json(status, {"code": -1003, "msg": msg}, {"Retry-After": retry})
                if kind == "http_5xx" and not f.get("after_accept"):
                    status = int(f.get("status", 503))
                    self.requests.append((method, path, status))
                    return _text(status, str(f.get("body", "Service Unavailable")))
                if kind == "reject":
                    status = int(f.get("status", 400))
                    code = int(f.get("code", -2010))
                    msg = str(f.get("msg", "Order rejected by the emulator."))
                    self.requests.append((method, path, status))
                    return _json(status, {"code": code, "msg": msg})
            try:
                params = self._params(method, path, query, body, headers)
                status, out = 200, self._route(method, path, params, f)
            except ApiError as e:
                status, out = e.status, {"code": e.code, "msg": e.msg}
            except (ValueError, ArithmeticError) as e:  # a number that is not one
                status = 400
                out = {"code": -1100, "msg": f"Illegal characters found in a parameter ({e})."}
            if method != "GET":  # GETs change nothing (a fault taken was saved above)
                self._commit()
            self.requests.append((method, path, status))
            if f is not None and status == 200:
                if f["kind"] == "timeout_after_accept":
                    if f.get("mode", "hang") == "drop":
                        return ("drop",)
                    return ("hang", float(f.get("seconds", 30)))
                if f["kind"] == "http_5xx":
                    return _text(
                        int(f.get("status", 503)), str(f.get("body", "Service Unavailable"))
                    )
            return _json(status, out)

    def _control(self, method: str, path: str, query: str, body: str) -> Any:
        try:
            args = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError as e:
            return _json(400, {"error": f"body is not JSON: {e}"})
        try:
            if path == "/_emulator/clock" and method == "POST":
                self.set_clock(int(args["ms"]) if "ms" in args else args["time"])
                return _json(200, {"clock_ms": self.clock_ms})
            if path == "/_emulator/clock" and method == "GET":
                return _json(200, {"clock_ms": self.clock_ms})
            if path == "/_emulator/fault" and method == "POST":
                args = dict(args)
                kind = args.pop("kind")
                count = int(args.pop("count", 1))
                self.fault(kind, count, **args)
                return _json(200, {"faults": self.pending_faults()})
            if path == "/_emulator/deposit" and method == "POST":
                self.deposit(
                    args["account"], args["asset"], args["amount"], args.get("wallet", "spot")
                )
                return _json(200, {"ok": True})
            if path == "/_emulator/state" and method == "GET":
                out = self.state()
                out["duplicate_attempts"] = self.duplicate_attempts
                out["restarts"] = self.restarts
                return _json(200, out)
            if path == "/_emulator/requests" and method == "GET":
                return _json(200, [list(r) for r in self.requests])
        except (KeyError, ValueError, TypeError) as e:
            return _json(400, {"error": f"{type(e).__name__}: {e}"})
        return _json(404, {"error": f"no control endpoint {method} {path}"})

    def _params(
        self, method: str, path: str, query: str, body: str, headers: Mapping[str, str]
    ) -> dict[str, str]:
        params = dict(parse_qsl(query, keep_blank_values=True))
        if body and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body, keep_blank_values=True))
        if _signed(path):
            params["_account"] = self._authenticate(query, body, params, headers)
        return params

    def _authenticate(
        self, query: str, body: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> str:
        key = headers.get("x-mbx-apikey")
        if not key:
            raise _bad(-2014, "API-key format invalid.", 401)
        if key not in self._keys:
            raise _bad(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        secret, name = self._keys[key]
        sig = params.get("signature")
        if not sig:
            raise _mandatory("signature")
        payload = _SIG_RE.sub("", query).lstrip("&") + _SIG_RE.sub("", body).lstrip("&")
        want = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig.lower()):
            raise _bad(-1022, "Signature for this request is not valid.")
        ts = params.get("timestamp")
        if not ts:
            raise _mandatory("timestamp")
        window = int(params.get("recvWindow", self.recv_window_ms))
        now = int(time.time() * 1000)
        if int(ts) > now + 1000:
            raise _bad(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - int(ts) > window:
            raise _bad(-1021, "Timestamp for this request is outside of the recvWindow.")
        if name not in self._state["accounts"]:  # a key added to a carried-on state
            self._state["accounts"][name] = self._new_account({}, {})
            self._commit()
        return name

    def _route(self, method: str, path: str, p: dict[str, str], f: dict | None) -> Any:
        fn = _ROUTES.get((method, path))
        if fn is None:
            raise _bad(
                -1, f"Unknown endpoint {method} {path} (the emulator does not serve it).", 404
            )
        return fn(self, p, f)

    # ------------------------------------------------------------------ helpers

    def _symbol(self, p: Mapping[str, str], futures: bool = False) -> str:
        sym = p.get("symbol")
        if not sym:
            raise _mandatory("symbol")
        pool = self.futures_symbols if futures else self.spot_symbols
        if sym not in pool:
            raise _bad(-1121, "Invalid symbol.")
        return sym

    def _leverage(self, acct: dict, sym: str) -> int:
        return int(acct["leverage"].get(sym, self.default_leverage))

    def _margin_type(self, acct: dict, sym: str) -> str:
        return acct["margin_type"].get(sym, "CROSSED")

    def _spot_bal(self, acct: dict, asset: str) -> dict[str, str]:
        return acct["spot"].setdefault(asset, {"free": "0", "locked": "0"})

    def _spot_add(
        self, acct: dict, asset: str, free: Decimal = _ZERO, locked: Decimal = _ZERO
    ) -> None:
        b = self._spot_bal(acct, asset)
        b["free"] = str(_d(b["free"]) + free)
        b["locked"] = str(_d(b["locked"]) + locked)

    def _wallet_add(self, acct: dict, asset: str, amount: Decimal) -> None:
        acct["wallet"][asset] = str(_d(acct["wallet"].get(asset, "0")) + amount)

    def _book_income(
        self,
        account: str,
        sym: str,
        kind: str,
        amount: Decimal,
        when: int,
        trade_id: Any,
        asset: str = "USDT",
    ) -> None:
        tran = self._state["next_tran_id"]
        self._state["next_tran_id"] = tran + 1
        self._state["income"].append(
            {
                "account": account,
                "symbol": sym,
                "incomeType": kind,
                "income": str(amount),
                "asset": asset,
                "time": when,
                "tranId": tran,
                "tradeId": str(trade_id),
            }
        )

    def _taker_price(self, sym: str, side: str) -> Decimal:
        book = self._state.get("books", {}).get(sym)
        if book is not None:  # a book set by ``set_book``: its touch is what a taker gets
            return _d(book["ask"] if side == "BUY" else book["bid"])
        p = self.price(sym)
        tick = self.rules[sym].tick
        if side == "BUY":
            return (p * (1 + self.slippage) / tick).to_integral_value(ROUND_CEILING) * tick
        return (p * (1 - self.slippage) / tick).to_integral_value(ROUND_FLOOR) * tick

    def _check_filters(
        self, sym: str, qty: Decimal, price: Decimal | None, ref_price: Decimal, futures: bool
    ) -> None:
        r = self.rules[sym]
        if qty <= 0 or qty < r.min_qty or qty > r.max_qty or (qty - r.min_qty) % r.step != 0:
            raise _bad(-1013, "Filter failure: LOT_SIZE")
        if price is not None and (price <= 0 or price % r.tick != 0):
            raise _bad(-1013, "Filter failure: PRICE_FILTER")
        notional = qty * (price if price is not None else ref_price)
        if futures:
            if notional < r.futures_min_notional:
                raise _bad(
                    -4164,
                    f"Order's notional must be no smaller than {_plain(r.futures_min_notional)} "
                    "(unless you choose reduce only).",
                )
        elif notional < r.min_notional:
            raise _bad(-1013, "Filter failure: NOTIONAL")

    def _new_cid(self, acct: dict, p: Mapping[str, str], market: str, account: str) -> str:
        cid = p.get("newClientOrderId")
        if cid is None or cid == "":
            cid = f"emu{self._state['next_order_id']:08d}{int(time.time() * 1000) % 10**8:08d}"
        if not _CID_RE.match(cid):
            raise _bad(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        if cid in acct["cids"]:
            self._state["duplicates"].append(
                {
                    "account": account,
                    "cid": cid,
                    "market": market,
                    "wall_ms": int(time.time() * 1000),
                }
            )
            if market == "spot":
                raise _bad(-2010, "Duplicate order sent.")
            raise _bad(-4116, "ClientOrderId is duplicated.")
        return cid

    def _new_order(
        self,
        account: str,
        market: str,
        sym: str,
        cid: str,
        p: Mapping[str, str],
        qty: Decimal,
        price: Decimal | None,
        otype: str,
    ) -> dict[str, Any]:
        oid = self._state["next_order_id"]
        self._state["next_order_id"] = oid + 1
        now = self.clock_ms
        o = {
            "id": oid,
            "market": market,
            "account": account,
            "symbol": sym,
            "cid": cid,
            "side": p["side"],
            "type": otype,
            "tif": p.get("timeInForce", "GTC") if otype != "MARKET" else "GTC",
            "price": str(price) if price is not None else "0",
            "qty": str(qty),
            "executed": "0",
            "quote": "0",
            "status": "NEW",
            "time": now,
            "update": now,
            "reduce_only": p.get("reduceOnly", "false").lower() == "true",
            "locked": "0",
            "partial": None,
            "orig_quote_qty": p.get("quoteOrderQty", "0"),
        }
        self._state["orders"][str(oid)] = o
        self._acct(account)["cids"][cid] = oid
        return o

    def _partial_qty(self, o: dict, qty: Decimal) -> Decimal:
        frac = o.get("partial")
        if frac is None:
            return qty
        o["partial"] = None
        step = self.rules[o["symbol"]].step
        part = (_d(o["qty"]) * _d(frac) / step).to_integral_value(ROUND_DOWN) * step
        return min(qty, max(part, _ZERO))

    def _find_order(self, account: str, sym: str, p: Mapping[str, str], market: str) -> dict | None:
        oid = p.get("orderId")
        cid = p.get("origClientOrderId")
        if oid is None and cid is None:
            raise _bad(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        if oid is not None:
            o = self._state["orders"].get(str(int(oid)))
        else:
            i = self._acct(account)["cids"].get(cid)
            o = self._state["orders"].get(str(i)) if i is not None else None
        if o is None or o["account"] != account or o["symbol"] != sym or o["market"] != market:
            return None
        if cid is not None and o["cid"] != cid:
            return None
        return o

    # ------------------------------------------------------------------ spot

    def _spot_fill(
        self, acct: dict, o: dict, qty: Decimal, px: Decimal, maker: bool, when: int
    ) -> dict:
        base, quote = self._assets[o["symbol"]]
        rate = self.maker if maker else self.taker
        cost = qty * px
        tid = self._state["next_trade_id"]
        self._state["next_trade_id"] = tid + 1
        if o["side"] == "BUY":
            fee, fee_asset = _q8(qty * rate), base
            if _d(o["locked"]) == 0:
                self._spot_add(acct, quote, free=-cost)
            else:
                lock = qty * _d(o["price"])
                self._spot_add(acct, quote, free=lock - cost, locked=-lock)
                o["locked"] = str(_d(o["locked"]) - lock)
            self._spot_add(acct, base, free=qty - fee)
        else:
            fee, fee_asset = _q8(cost * rate), quote
            if _d(o["locked"]) == 0:
                self._spot_add(acct, base, free=-qty)
            else:
                self._spot_add(acct, base, locked=-qty)
                o["locked"] = str(_d(o["locked"]) - qty)
            self._spot_add(acct, quote, free=cost - fee)
        o["executed"] = str(_d(o["executed"]) + qty)
        o["quote"] = str(_d(o["quote"]) + cost)
        o["status"] = "FILLED" if _d(o["executed"]) == _d(o["qty"]) else "PARTIALLY_FILLED"
        o["update"] = when
        t = {
            "id": tid,
            "market": "spot",
            "account": o["account"],
            "symbol": o["symbol"],
            "order_id": o["id"],
            "cid": o["cid"],
            "side": o["side"],
            "price": str(px),
            "qty": str(qty),
            "quote": str(cost),
            "commission": str(fee),
            "commission_asset": fee_asset,
            "time": when,
            "maker": maker,
            "realized_pnl": "0",
        }
        self._state["trades"].append(t)
        return t

    def spot_order_post(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        account = p["_account"]
        acct = self._acct(account)
        sym = self._symbol(p)
        for name in ("side", "type"):
            if not p.get(name):
                raise _mandatory(name)
        side, otype = p["side"].upper(), p["type"].upper()
        if side not in ("BUY", "SELL"):
            raise _bad(-1117, "Invalid side.")
        if otype not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise _bad(-1116, "Invalid orderType.")
        p["side"] = side
        base, quote = self._assets[sym]
        if not self._trading(sym, self.clock_ms):
            raise _bad(-1013, "Market is closed.")
        cur = self._taker_price(sym, side)
        price = None
        if otype == "MARKET":
            if p.get("quantity"):
                qty = _d(p["quantity"])
            elif p.get("quoteOrderQty"):
                step = self.rules[sym].step
                qty = (_d(p["quoteOrderQty"]) / cur / step).to_integral_value(ROUND_DOWN) * step
            else:
                raise _bad(
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                )
        else:
            if not p.get("quantity"):
                raise _mandatory("quantity")
            if not p.get("price"):
                raise _mandatory("price")
            if otype == "LIMIT" and not p.get("timeInForce"):
                raise _mandatory("timeInForce")
            qty, price = _d(p["quantity"]), _d(p["price"])
        cid = self._new_cid(acct, p, "spot", account)  # a reuse is told before all else
        self._check_filters(sym, qty, price, cur, futures=False)
        marketable = (
            otype == "MARKET"
            or (side == "BUY" and price >= cur)
            or (side == "SELL" and price <= cur)
        )
        if otype == "LIMIT_MAKER" and marketable:
            raise _bad(-2010, "Order would immediately match and take.")
        free_q = _d(self._spot_bal(acct, quote)["free"])
        free_b = _d(self._spot_bal(acct, base)["free"])
        need_quote = qty * (cur if otype == "MARKET" else price) if side == "BUY" else _ZERO
        if (side == "BUY" and need_quote > free_q) or (side == "SELL" and qty > free_b):
            raise _bad(-2010, "Account has insufficient balance for requested action.")
        o = self._new_order(account, "spot", sym, cid, p, qty, price, otype)
        if f is not None and f["kind"] == "partial":
            o["partial"] = str(f.get("fraction", 0.5))
        fills = []
        if marketable:
            q = self._partial_qty(o, qty)
            if q > 0:
                fills.append(self._spot_fill(acct, o, q, cur, maker=False, when=self.clock_ms))
        if otype == "MARKET" or (o["tif"] in ("IOC", "FOK") and marketable):
            if o["status"] != "FILLED":
                o["status"] = "EXPIRED"
        elif o["tif"] in ("IOC", "FOK") and not marketable:
            o["status"] = "EXPIRED"
        else:
            rest = qty - _d(o["executed"])
            if rest > 0:  # lock what rests
                if side == "BUY":
                    lock = rest * price
                    self._spot_add(acct, quote, free=-lock, locked=lock)
                    o["locked"] = str(lock)
                else:
                    self._spot_add(acct, base, free=-rest, locked=rest)
                    o["locked"] = str(rest)
        resp_type = p.get("newOrderRespType", "FULL" if otype in ("MARKET", "LIMIT") else "ACK")
        out = self._spot_order_json(o)
        out["transactTime"] = o["time"]
        for k in ("isWorking", "time", "updateTime", "stopPrice", "icebergQty"):
            out.pop(k, None)
        if resp_type == "ACK":
            return {
                k: out[k]
                for k in ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")
            }
        if resp_type == "FULL":
            out["fills"] = [
                {
                    "price": _f8(_d(t["price"])),
                    "qty": _f8(_d(t["qty"])),
                    "commission": _f8(_d(t["commission"])),
                    "commissionAsset": t["commission_asset"],
                    "tradeId": t["id"],
                }
                for t in fills
            ]
        return out

    def _spot_order_json(self, o: dict) -> dict[str, Any]:
        return {
            "symbol": o["symbol"],
            "orderId": o["id"],
            "orderListId": -1,
            "clientOrderId": o["cid"],
            "price": _f8(_d(o["price"])),
            "origQty": _f8(_d(o["qty"])),
            "executedQty": _f8(_d(o["executed"])),
            "cummulativeQuoteQty": _f8(_d(o["quote"])),
            "status": o["status"],
            "timeInForce": o["tif"],
            "type": o["type"],
            "side": o["side"],
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": o["time"],
            "updateTime": o["update"],
            "isWorking": True,
            "workingTime": o["time"],
            "origQuoteOrderQty": _f8(_d(o["orig_quote_qty"])),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def _release(self, acct: dict, o: dict) -> None:
        """Unlock what a resting order holds (cancel)."""
        locked = _d(o["locked"])
        if locked == 0:
            return
        base, quote = self._assets[o["symbol"]]
        self._spot_add(acct, quote if o["side"] == "BUY" else base, free=locked, locked=-locked)
        o["locked"] = "0"

    def spot_order_get(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        sym = self._symbol(p)
        o = self._find_order(p["_account"], sym, p, "spot")
        if o is None:
            raise _bad(-2013, "Order does not exist.")
        return self._spot_order_json(o)

    def spot_order_delete(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        account = p["_account"]
        sym = self._symbol(p)
        o = self._find_order(account, sym, p, "spot")
        if o is None or o["status"] not in _OPEN_STATES:
            raise _bad(-2011, "Unknown order sent.")
        self._release(self._acct(account), o)
        o["status"] = "CANCELED"
        o["update"] = self.clock_ms
        out = self._spot_order_json(o)
        for k in ("time", "updateTime", "isWorking", "workingTime", "stopPrice", "icebergQty"):
            out.pop(k, None)
        out["origClientOrderId"] = o["cid"]
        out["clientOrderId"] = p.get("newClientOrderId") or f"cancel{o['id']}"
        out["transactTime"] = self.clock_ms
        return out

    def _orders_of(self, account: str, market: str, sym: str | None) -> list[dict]:
        return [
            o
            for o in self._state["orders"].values()
            if o["account"] == account
            and o["market"] == market
            and (sym is None or o["symbol"] == sym)
        ]

    def spot_open_orders(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        sym = self._symbol(p) if p.get("symbol") else None
        return [
            self._spot_order_json(o)
            for o in self._orders_of(p["_account"], "spot", sym)
            if o["status"] in _OPEN_STATES
        ]

    def _window(
        self,
        rows: list[dict],
        p: Mapping[str, str],
        key: str,
        id_key: str,
        id_param: str,
        default: int,
        cap: int,
    ) -> list[dict]:
        start, end = p.get("startTime"), p.get("endTime")
        from_id = p.get(id_param)
        limit = min(int(p.get("limit", default)), cap)
        if from_id is not None:
            rows = [r for r in rows if r[id_key] >= int(from_id)]
        if start is not None:
            rows = [r for r in rows if r[key] >= int(start)]
        if end is not None:
            rows = [r for r in rows if r[key] <= int(end)]
        rows = sorted(rows, key=lambda r: (r[key], r[id_key]))
        if start is None and from_id is None:  # the most recent ones
            return rows[-limit:] if limit > 0 else []
        return rows[:limit]

    def spot_all_orders(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        sym = self._symbol(p)
        rows = self._window(
            self._orders_of(p["_account"], "spot", sym), p, "time", "id", "orderId", 500, 1000
        )
        return [self._spot_order_json(o) for o in rows]

    def spot_my_trades(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        sym = self._symbol(p)
        rows = [
            t
            for t in self._state["trades"]
            if t["account"] == p["_account"] and t["market"] == "spot" and t["symbol"] == sym
        ]
        if p.get("orderId"):
            rows = [t for t in rows if t["order_id"] == int(p["orderId"])]
        rows = self._window(rows, p, "time", "id", "fromId", 500, 1000)
        return [
            {
                "symbol": t["symbol"],
                "id": t["id"],
                "orderId": t["order_id"],
                "orderListId": -1,
                "price": _f8(_d(t["price"])),
                "qty": _f8(_d(t["qty"])),
                "quoteQty": _f8(_d(t["quote"])),
                "commission": _f8(_d(t["commission"])),
                "commissionAsset": t["commission_asset"],
                "time": t["time"],
                "isBuyer": t["side"] == "BUY",
                "isMaker": t["maker"],
                "isBestMatch": True,
            }
            for t in rows
        ]

    def spot_account(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        acct = self._acct(p["_account"])
        omit = p.get("omitZeroBalances", "false").lower() == "true"
        bals = [
            {"asset": a, "free": _f8(_d(b["free"])), "locked": _f8(_d(b["locked"]))}
            for a, b in sorted(acct["spot"].items())
            if not (omit and _d(b["free"]) == 0 and _d(b["locked"]) == 0)
        ]
        bp = int(self.taker * 10000)
        return {
            "makerCommission": int(self.maker * 10000),
            "takerCommission": bp,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": _f8(self.maker),
                "taker": _f8(self.taker),
                "buyer": "0.00000000",
                "seller": "0.00000000",
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.clock_ms,
            "accountType": "SPOT",
            "balances": bals,
            "permissions": ["SPOT"],
            "uid": zlib.crc32(p["_account"].encode()) % 10**9,
        }

    def sapi_transfer(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        """``POST /sapi/v1/asset/transfer``: MAIN_UMFUTURE or UMFUTURE_MAIN."""
        account = p["_account"]
        acct = self._acct(account)
        for name in ("type", "asset", "amount"):
            if not p.get(name):
                raise _mandatory(name)
        kind, asset, amt = p["type"], p["asset"].upper(), _d(p["amount"])
        if amt <= 0:
            raise _bad(
                -1102, "Mandatory parameter 'amount' was not sent, was empty/null, or malformed."
            )
        if kind == "MAIN_UMFUTURE":
            if _d(self._spot_bal(acct, asset)["free"]) < amt:
                raise _bad(-5002, "You have insufficient balance.")
            self._spot_add(acct, asset, free=-amt)
            self._wallet_add(acct, asset, amt)
            signed = amt
        elif kind == "UMFUTURE_MAIN":
            wallet = _d(acct["wallet"].get(asset, "0"))
            free = self._available(acct, account) if asset == "USDT" else wallet
            if min(wallet, free) < amt:
                raise _bad(-5002, "You have insufficient balance.")
            self._wallet_add(acct, asset, -amt)
            self._spot_add(acct, asset, free=amt)
            signed = -amt
        else:
            raise _bad(
                -1002, f"The emulator moves only MAIN_UMFUTURE and UMFUTURE_MAIN, not {kind}."
            )
        tran = self._state["next_tran_id"]
        self._book_income(account, "", "TRANSFER", signed, self.clock_ms, "", asset)
        return {"tranId": tran}

    def _email_account(self, email: str | None) -> str:
        """The account of a sub-account ``email`` (None or empty: the master)."""
        if not email:
            assert self.master is not None
            return self.master
        for name, known in self.emails.items():
            if known == email:
                return name
        raise _bad(-1102, f"Illegal email: {email} is not a sub-account of this master.")

    def _master_only(self, p: Mapping[str, str]) -> None:
        if self.master is None or p["_account"] != self.master:
            raise _bad(-1002, "You are not authorized to execute this request.", 401)

    def sub_universal_transfer(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        """``POST /sapi/v1/sub-account/universalTransfer`` with the master's key: SPOT or
        USDT_FUTURE to SPOT between the master and its sub-accounts (``fromEmail``/``toEmail``, absent:
        the master), a ``clientTranId`` never reused."""
        self._master_only(p)
        for name in ("fromAccountType", "toAccountType", "asset", "amount"):
            if not p.get(name):
                raise _mandatory(name)
        if not (p.get("fromEmail") or p.get("toEmail")):
            raise _bad(-1102, "Param fromEmail or toEmail must be sent, but both were empty")
        kinds = (p["fromAccountType"], p["toAccountType"])
        if kinds not in (("SPOT", "SPOT"), ("USDT_FUTURE", "SPOT")):
            raise _bad(
                -1002,
                f"The emulator moves SPOT or USDT_FUTURE to SPOT only, not {kinds[0]} to "
                f"{kinds[1]}.",
            )
        source = self._email_account(p.get("fromEmail"))
        target = self._email_account(p.get("toEmail"))
        if source == target:
            raise _bad(-1102, "fromEmail and toEmail cannot be the same account.")
        cid = p.get("clientTranId") or ""
        done = self._state.setdefault("transfers", [])
        if cid and any(t["clientTranId"] == cid and t["status"] == "SUCCESS" for t in done):
            done.append(
                {"clientTranId": cid, "status": "DUPLICATE", "wall_ms": int(time.time() * 1000)}
            )
            raise _bad(-4115, "clientTranId is duplicated.")
        asset, amt = p["asset"].upper(), _d(p["amount"])
        if not amt > 0:
            raise _bad(
                -1102, "Mandatory parameter 'amount' was not sent, was empty/null, or malformed."
            )
        src = self._acct(source)
        if kinds[0] == "USDT_FUTURE":
            wallet = _d(src["wallet"].get(asset, "0"))
            free = self._available(src, source) if asset == "USDT" else wallet
            if min(wallet, free) < amt:
                raise _bad(-5013, "Asset transfer failed: insufficient balance")
            self._wallet_add(src, asset, -amt)
            self._book_income(source, "", "TRANSFER", -amt, self.clock_ms, "", asset)
        elif _d(self._spot_bal(src, asset)["free"]) < amt:
            raise _bad(-5013, "Asset transfer failed: insufficient balance")
        else:
            self._spot_add(src, asset, free=-amt)
        self._spot_add(self._acct(target), asset, free=amt)
        tran = self._state["next_tran_id"]
        self._state["next_tran_id"] = tran + 1
        done.append(
            {
                "tranId": tran,
                "clientTranId": cid,
                "fromEmail": p.get("fromEmail") or "",
                "toEmail": p.get("toEmail") or "",
                "fromAccount": source,
                "toAccount": target,
                "asset": asset,
                "amount": str(amt),
                "fromAccountType": kinds[0],
                "toAccountType": "SPOT",
                "status": "SUCCESS",
                "createTimeStamp": self.clock_ms,
            }
        )
        return {"tranId": tran, "clientTranId": cid}

    def sub_universal_transfers(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        """``GET /sapi/v1/sub-account/universalTransfer``: the master's transfers, by
        ``clientTranId``, ``fromEmail``, ``toEmail`` (not both) and time."""
        self._master_only(p)
        if p.get("fromEmail") and p.get("toEmail"):
            raise _bad(-1102, "fromEmail and toEmail cannot be sent at the same time.")
        rows = []
        for t in self._state.get("transfers", []):
            if t["status"] != "SUCCESS":
                continue
            if p.get("clientTranId") and t["clientTranId"] != p["clientTranId"]:
                continue
            if p.get("fromEmail") and t["fromEmail"] != p["fromEmail"]:
                continue
            if p.get("toEmail") and t["toEmail"] != p["toEmail"]:
                continue
            if p.get("startTime") and t["createTimeStamp"] < int(p["startTime"]):
                continue
            if p.get("endTime") and t["createTimeStamp"] > int(p["endTime"]):
                continue
            rows.append({k: v for k, v in t.items() if k not in ("fromAccount", "toAccount")})
        limit = min(int(p.get("limit", 500)), 500)
        page = max(int(p.get("page", 1)), 1)
        return {"result": rows[(page - 1) * limit : page * limit], "totalCount": len(rows)}

    # ------------------------------------------------------------------ public data

    def _klines(self, p: dict[str, str], futures: bool) -> list[list[Any]]:
        sym = self._symbol(p, futures)
        if not p.get("interval"):
            raise _mandatory("interval")
        if p["interval"] != self.interval:
            raise _bad(-1120, "Invalid interval.")
        sr = self._series[sym]
        clock = self.clock_ms
        hi = int(np.searchsorted(sr.times, clock, side="right"))
        end = p.get("endTime")
        if end is not None:
            hi = min(hi, int(np.searchsorted(sr.times, int(end), side="right")))
        limit = min(int(p.get("limit", 500)), 1500 if futures else 1000)
        start = p.get("startTime")
        if start is not None:
            lo = int(np.searchsorted(sr.times, int(start), side="left"))
            idx = range(lo, min(hi, lo + limit))
        else:
            idx = range(max(0, hi - limit), hi)
        out = []
        for i in idx:
            t = int(sr.times[i])
            forming = t + self.tf_ms > clock
            o = _d(float(sr.open[i]))
            if forming:
                h = lo_ = c = o
                v = qv = _ZERO
            else:
                h, lo_, c = _d(float(sr.high[i])), _d(float(sr.low[i])), _d(float(sr.close[i]))
                v, qv = _d(float(sr.volume[i])), _d(float(sr.quote_volume[i]))
            out.append(
                [
                    t,
                    _f8(o),
                    _f8(h),
                    _f8(lo_),
                    _f8(c),
                    _f8(v),
                    t + self.tf_ms - 1,
                    _f8(qv),
                    0,
                    "0",
                    "0",
                    "0",
                ]
            )
        return out

    def _book(self, sym: str, limit: int) -> tuple[list[list[str]], list[list[str]]]:
        r = self.rules[sym]
        n = max(1, min(limit, 100))
        set_ = self._state.get("books", {}).get(sym)
        if set_ is not None:
            b, a, bq, aq = (_d(set_[k]) for k in ("bid", "ask", "bid_qty", "ask_qty"))
            bids = [[_f8(b - i * r.tick), _f8(bq)] for i in range(n) if b - i * r.tick > 0]
            return bids, [[_f8(a + i * r.tick), _f8(aq)] for i in range(n)]
        p = self.price(sym)
        bid = (p * (1 - self.slippage) / r.tick).to_integral_value(ROUND_FLOOR) * r.tick
        ask = (p * (1 + self.slippage) / r.tick).to_integral_value(ROUND_CEILING) * r.tick
        if bid >= ask:
            bid = ask - r.tick
        qty = max((Decimal(100000) / p / r.step).to_integral_value(ROUND_DOWN) * r.step, r.step)
        bids = [[_f8(bid - i * r.tick), _f8(qty)] for i in range(n) if bid - i * r.tick > 0]
        asks = [[_f8(ask + i * r.tick), _f8(qty)] for i in range(n)]
        return bids, asks

    def _depth(self, p: dict[str, str], futures: bool) -> dict[str, Any]:
        sym = self._symbol(p, futures)
        bids, asks = self._book(sym, int(p.get("limit", 100)))
        out: dict[str, Any] = {"lastUpdateId": self._state["next_trade_id"] + self.clock_ms // 1000}
        if futures:
            out["E"] = self.clock_ms
            out["T"] = self.clock_ms
        out["bids"], out["asks"] = bids, asks
        return out

    def _ticker(self, sym: str, futures: bool) -> dict[str, Any]:
        sr = self._series[sym]
        clock = self.clock_ms
        last = self.price(sym)
        day_ago = clock - 86_400_000
        open_ = self.price(sym, day_ago) if self._listed(sym, day_ago) else last
        lo = int(np.searchsorted(sr.times, day_ago, side="left"))
        hi = int(np.searchsorted(sr.times, clock - self.tf_ms, side="right"))
        highs = [last, *(_d(float(x)) for x in sr.high[lo:hi])]
        lows = [last, *(_d(float(x)) for x in sr.low[lo:hi])]
        vol = sum((_d(float(x)) for x in sr.volume[lo:hi]), _ZERO)
        qvol = sum((_d(float(x)) for x in sr.quote_volume[lo:hi]), _ZERO)
        bids, asks = self._book(sym, 1)
        change = last - open_
        pct = (change / open_ * 100).quantize(Decimal("0.001")) if open_ else _ZERO
        out = {
            "symbol": sym,
            "priceChange": _f8(change),
            "priceChangePercent": format(pct, "f"),
            "weightedAvgPrice": _f8(qvol / vol if vol else last),
            "lastPrice": _f8(last),
            "lastQty": "0.00000000",
            "openPrice": _f8(open_),
            "highPrice": _f8(max(highs)),
            "lowPrice": _f8(min(lows)),
            "volume": _f8(vol),
            "quoteVolume": _f8(qvol),
            "openTime": day_ago,
            "closeTime": clock,
            "firstId": 0,
            "lastId": 0,
            "count": 0,
        }
        if not futures:
            out.update(
                prevClosePrice=_f8(open_),
                bidPrice=bids[0][0],
                bidQty=bids[0][1],
                askPrice=asks[0][0],
                askQty=asks[0][1],
            )
        return out

    def _tickers(self, p: dict[str, str], futures: bool) -> Any:
        if p.get("symbol"):
            return self._ticker(self._symbol(p, futures), futures)
        pool = self.futures_symbols if futures else self.spot_symbols
        if p.get("symbols"):
            try:
                wanted = json.loads(p["symbols"])
            except json.JSONDecodeError:
                raise _bad(-1100, "Illegal characters found in parameter 'symbols'.") from None
            bad = [s for s in wanted if s not in pool]
            if bad:
                raise _bad(-1121, "Invalid symbol.")
        else:
            wanted = pool
        return [self._ticker(s, futures) for s in wanted if self._listed(s, self.clock_ms)]

    def _price_ticker(self, p: dict[str, str], futures: bool) -> Any:
        def one(s: str) -> dict[str, Any]:
            out = {"symbol": s, "price": _f8(self.price(s))}
            if futures:
                out["time"] = self.clock_ms
            return out

        if p.get("symbol"):
            return one(self._symbol(p, futures))
        pool = self.futures_symbols if futures else self.spot_symbols
        return [one(s) for s in pool if self._listed(s, self.clock_ms)]

    def _book_ticker(self, p: dict[str, str], futures: bool) -> Any:
        def one(s: str) -> dict[str, Any]:
            bids, asks = self._book(s, 1)
            return {
                "symbol": s,
                "bidPrice": bids[0][0],
                "bidQty": bids[0][1],
                "askPrice": asks[0][0],
                "askQty": asks[0][1],
            }

        if p.get("symbol"):
            return one(self._symbol(p, futures))
        pool = self.futures_symbols if futures else self.spot_symbols
        return [one(s) for s in pool if self._listed(s, self.clock_ms)]

    def _rate_limits(self) -> list[dict[str, Any]]:
        return [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ]

    def spot_exchange_info(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        syms = []
        for s in self.spot_symbols:
            r = self.rules[s]
            base, quote = self._assets[s]
            syms.append(
                {
                    "symbol": s,
                    "status": "TRADING" if self._trading(s, self.clock_ms) else "BREAK",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": False,
                    "ocoAllowed": False,
                    "otoAllowed": False,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": False,
                    "cancelReplaceAllowed": False,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _f8(r.tick),
                            "maxPrice": "1000000.00000000",
                            "tickSize": _f8(r.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _f8(r.min_qty),
                            "maxQty": _f8(r.max_qty),
                            "stepSize": _f8(r.step),
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": "0.00000000",
                            "maxQty": _f8(r.max_qty),
                            "stepSize": "0.00000000",
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": _f8(r.min_notional),
                            "applyMinToMarket": True,
                            "maxNotional": "9000000.00000000",
                            "applyMaxToMarket": False,
                            "avgPriceMins": 5,
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": [
                        "EXPIRE_TAKER",
                        "EXPIRE_MAKER",
                        "EXPIRE_BOTH",
                    ],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": self._rate_limits(),
            "exchangeFilters": [],
            "symbols": syms,
        }

    # ------------------------------------------------------------------ futures

    def fapi_exchange_info(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        syms = []
        for s in self.futures_symbols:
            r = self.rules[s]
            base, quote = self._assets[s]
            first = int(self._series[s].times[0]) if len(self._series[s].times) else 0
            syms.append(
                {
                    "symbol": s,
                    "pair": s,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": first,
                    "status": "TRADING" if self._trading(s, self.clock_ms) else "BREAK",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": base,
                    "quoteAsset": quote,
                    "marginAsset": "USDT",
                    "pricePrecision": max(0, -r.tick.normalize().as_tuple().exponent),
                    "quantityPrecision": max(0, -r.step.normalize().as_tuple().exponent),
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "settlePlan": 0,
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _plain(r.tick),
                            "maxPrice": "4529764",
                            "tickSize": _plain(r.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _plain(r.min_qty),
                            "maxQty": _plain(r.max_qty),
                            "stepSize": _plain(r.step),
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": _plain(r.min_qty),
                            "maxQty": _plain(r.max_qty),
                            "stepSize": _plain(r.step),
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": _plain(r.futures_min_notional)},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": ["LIMIT", "MARKET"],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                    "permissionSets": ["GRID", "COPY"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "futuresType": "U_MARGINED",
            "rateLimits": self._rate_limits(),
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": syms,
        }

    def _bracket(self, sym: str, notional: Decimal) -> dict[str, Any]:
        rows = self.rules[sym].bracket_rows()
        for row in rows:
            if notional < row["hi"]:
                return row
        return rows[-1]

    def _position(self, acct: dict, sym: str) -> dict[str, Any]:
        return acct["positions"].setdefault(
            sym, {"amt": "0", "entry": "0", "margin": "0", "update": 0}
        )

    def _used_margin(self, acct: dict, account: str) -> Decimal:
        used = _ZERO
        for sym, p in acct["positions"].items():
            amt = _d(p["amt"])
            if amt != 0:
                if self._margin_type(acct, sym) == "ISOLATED":
                    used += _d(p["margin"])
                else:
                    used += abs(amt) * _d(p["entry"]) / self._leverage(acct, sym)
        for o in self._orders_of(account, "futures", None):
            if o["status"] in _OPEN_STATES:
                rest = _d(o["qty"]) - _d(o["executed"])
                used += rest * _d(o["price"]) / self._leverage(acct, o["symbol"])
        return used

    def _unrealized(self, acct: dict, sym: str) -> Decimal:
        p = acct["positions"].get(sym)
        if p is None or _d(p["amt"]) == 0:
            return _ZERO
        return (self.price(sym) - _d(p["entry"])) * _d(p["amt"])

    def _available(self, acct: dict, account: str) -> Decimal:
        wallet = _d(acct["wallet"].get("USDT", "0"))
        cross_upnl = sum(
            (
                self._unrealized(acct, s)
                for s in acct["positions"]
                if self._margin_type(acct, s) == "CROSSED"
            ),
            _ZERO,
        )
        return wallet + cross_upnl - self._used_margin(acct, account)

    def _fut_fill(
        self, acct: dict, o: dict, qty: Decimal, px: Decimal, maker: bool, when: int
    ) -> dict:
        sym, account = o["symbol"], o["account"]
        pos = self._position(acct, sym)
        amt, entry = _d(pos["amt"]), _d(pos["entry"])
        d = qty if o["side"] == "BUY" else -qty
        lev = self._leverage(acct, sym)
        fee = _q8(qty * px * (self.f_maker if maker else self.f_taker))
        realized = _ZERO
        margin = _d(pos["margin"])
        if amt == 0 or (amt > 0) == (d > 0):  # open or increase
            new = amt + d
            entry = (abs(amt) * entry + abs(d) * px) / abs(new)
            margin += abs(d) * px / lev
            amt = new
        else:
            closed = min(abs(d), abs(amt))
            realized = (px - entry) * closed * (1 if amt > 0 else -1)
            margin -= margin * closed / abs(amt)
            rest = abs(d) - closed
            amt = amt + (closed if d > 0 else -closed)
            if amt == 0:
                entry, margin = _ZERO, _ZERO
            if rest > 0:  # flipped
                amt = rest if d > 0 else -rest
                entry = px
                margin = rest * px / lev
        entry = (
            entry.quantize(Decimal("1e-12"), rounding=ROUND_HALF_UP).normalize() if entry else _ZERO
        )
        realized = _q8(realized)
        pos.update(amt=str(amt), entry=str(entry), margin=str(_q8(margin)), update=when)
        self._wallet_add(acct, "USDT", realized - fee)
        tid = self._state["next_trade_id"]
        self._state["next_trade_id"] = tid + 1
        if realized != 0:
            self._book_income(account, sym, "REALIZED_PNL", realized, when, tid)
        if fee != 0:
            self._book_income(account, sym, "COMMISSION", -fee, when, tid)
        o["executed"] = str(_d(o["executed"]) + qty)
        o["quote"] = str(_d(o["quote"]) + qty * px)
        o["status"] = "FILLED" if _d(o["executed"]) == _d(o["qty"]) else "PARTIALLY_FILLED"
        o["update"] = when
        t = {
            "id": tid,
            "market": "futures",
            "account": account,
            "symbol": sym,
            "order_id": o["id"],
            "cid": o["cid"],
            "side": o["side"],
            "price": str(px),
            "qty": str(qty),
            "quote": str(qty * px),
            "commission": str(fee),
            "commission_asset": "USDT",
            "time": when,
            "maker": maker,
            "realized_pnl": str(realized),
        }
        self._state["trades"].append(t)
        return t

    def fapi_order_post(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        account = p["_account"]
        acct = self._acct(account)
        sym = self._symbol(p, futures=True)
        for name in ("side", "type"):
            if not p.get(name):
                raise _mandatory(name)
        side, otype = p["side"].upper(), p["type"].upper()
        if side not in ("BUY", "SELL"):
            raise _bad(-1117, "Invalid side.")
        if otype not in ("MARKET", "LIMIT"):
            raise _bad(-1116, "Invalid orderType.")
        if p.get("positionSide", "BOTH") != "BOTH":
            raise _bad(-4061, "Order's position side does not match user's setting.")
        p["side"] = side
        if not self._trading(sym, self.clock_ms):
            raise _bad(-1013, "Market is closed.")
        if not p.get("quantity"):
            raise _mandatory("quantity")
        qty = _d(p["quantity"])
        price = None
        if otype == "LIMIT":
            if not p.get("price"):
                raise _mandatory("price")
            if not p.get("timeInForce"):
                raise _mandatory("timeInForce")
            price = _d(p["price"])
        cur = self._taker_price(sym, side)
        cid = self._new_cid(acct, p, "futures", account)  # a reuse is told before all else
        reduce_only = p.get("reduceOnly", "false").lower() == "true"
        pos = self._position(acct, sym)
        amt = _d(pos["amt"])
        if reduce_only:
            if amt == 0 or (amt > 0) == (side == "BUY"):
                raise _bad(-2022, "ReduceOnly Order is rejected.")
            qty = min(qty, abs(amt))
        else:
            self._check_filters(sym, qty, price, cur, futures=True)
        if not reduce_only:
            r = self.rules[sym]
            if (qty - r.min_qty) % r.step != 0:
                raise _bad(-1013, "Filter failure: LOT_SIZE")
        marketable = (
            otype == "MARKET"
            or (side == "BUY" and price >= cur)
            or (side == "SELL" and price <= cur)
        )
        d = qty if side == "BUY" else -qty
        increase = abs(d) if amt == 0 or (amt > 0) == (d > 0) else max(_ZERO, abs(d) - abs(amt))
        px = cur if marketable else price
        need = increase * px / self._leverage(acct, sym) + qty * px * self.f_taker
        if not reduce_only and increase > 0 and need > self._available(acct, account):
            raise _bad(-2019, "Margin is insufficient.")
        o = self._new_order(account, "futures", sym, cid, p, qty, price, otype)
        o["reduce_only"] = reduce_only
        if f is not None and f["kind"] == "partial":
            o["partial"] = str(f.get("fraction", 0.5))
        if o["tif"] == "GTX" and marketable:
            # Post-only that would take: Binance expires it unfilled.
            o["status"] = "EXPIRED"
            return self._fut_order_json(o)
        if marketable:
            q = self._partial_qty(o, qty)
            if q > 0:
                self._fut_fill(acct, o, q, cur, maker=False, when=self.clock_ms)
        if (otype == "MARKET" or o["tif"] in ("IOC", "FOK")) and o["status"] != "FILLED":
            o["status"] = "EXPIRED"
        return self._fut_order_json(o)

    def _fut_order_json(self, o: dict) -> dict[str, Any]:
        ex = _d(o["executed"])
        avg = _d(o["quote"]) / ex if ex else _ZERO
        return {
            "orderId": o["id"],
            "symbol": o["symbol"],
            "status": o["status"],
            "clientOrderId": o["cid"],
            "price": _plain(_d(o["price"])),
            "avgPrice": _plain(avg.quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP))
            if ex
            else "0",
            "origQty": _plain(_d(o["qty"])),
            "executedQty": _plain(ex),
            "cumQty": _plain(ex),
            "cumQuote": _plain(_d(o["quote"])),
            "timeInForce": o["tif"],
            "type": o["type"],
            "reduceOnly": o["reduce_only"],
            "closePosition": False,
            "side": o["side"],
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": o["type"],
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "time": o["time"],
            "updateTime": o["update"],
        }

    def fapi_order_get(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        sym = self._symbol(p, futures=True)
        o = self._find_order(p["_account"], sym, p, "futures")
        if o is None:
            raise _bad(-2013, "Order does not exist.")
        return self._fut_order_json(o)

    def fapi_order_delete(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        sym = self._symbol(p, futures=True)
        o = self._find_order(p["_account"], sym, p, "futures")
        if o is None or o["status"] not in _OPEN_STATES:
            raise _bad(-2011, "Unknown order sent.")
        o["status"] = "CANCELED"
        o["update"] = self.clock_ms
        return self._fut_order_json(o)

    def fapi_open_orders(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        sym = self._symbol(p, futures=True) if p.get("symbol") else None
        return [
            self._fut_order_json(o)
            for o in self._orders_of(p["_account"], "futures", sym)
            if o["status"] in _OPEN_STATES
        ]

    def fapi_all_orders(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        sym = self._symbol(p, futures=True)
        rows = self._window(
            self._orders_of(p["_account"], "futures", sym), p, "time", "id", "orderId", 500, 1000
        )
        return [self._fut_order_json(o) for o in rows]

    def fapi_user_trades(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        sym = self._symbol(p, futures=True)
        rows = [
            t
            for t in self._state["trades"]
            if t["account"] == p["_account"] and t["market"] == "futures" and t["symbol"] == sym
        ]
        if p.get("orderId"):
            rows = [t for t in rows if t["order_id"] == int(p["orderId"])]
        rows = self._window(rows, p, "time", "id", "fromId", 500, 1000)
        return [
            {
                "buyer": t["side"] == "BUY",
                "commission": _plain(_d(t["commission"])),
                "commissionAsset": "USDT",
                "id": t["id"],
                "maker": t["maker"],
                "orderId": t["order_id"],
                "price": _plain(_d(t["price"])),
                "qty": _plain(_d(t["qty"])),
                "quoteQty": _plain(_d(t["quote"])),
                "realizedPnl": _plain(_d(t["realized_pnl"])),
                "side": t["side"],
                "positionSide": "BOTH",
                "symbol": t["symbol"],
                "time": t["time"],
            }
            for t in rows
        ]

    def fapi_income(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        rows = [r for r in self._state["income"] if r["account"] == p["_account"]]
        if p.get("symbol"):
            rows = [r for r in rows if r["symbol"] == p["symbol"]]
        if p.get("incomeType"):
            rows = [r for r in rows if r["incomeType"] == p["incomeType"]]
        rows = self._window(rows, p, "time", "tranId", "_none", 100, 1000)
        return [
            {
                "symbol": r["symbol"],
                "incomeType": r["incomeType"],
                "income": _plain(_d(r["income"])),
                "asset": r["asset"],
                "info": r["incomeType"],
                "time": r["time"],
                "tranId": r["tranId"],
                "tradeId": r["tradeId"],
            }
            for r in rows
        ]

    def fapi_leverage_bracket(self, p: dict[str, str], f: dict | None) -> Any:
        def one(s: str) -> dict[str, Any]:
            return {
                "symbol": s,
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": r["bracket"],
                        "initialLeverage": r["lev"],
                        "notionalCap": int(r["hi"])
                        if r["hi"] == r["hi"].to_integral_value()
                        else float(r["hi"]),
                        "notionalFloor": int(r["lo"])
                        if r["lo"] == r["lo"].to_integral_value()
                        else float(r["lo"]),
                        "maintMarginRatio": float(r["mmr"]),
                        "cum": float(r["cum"]),
                    }
                    for r in self.rules[s].bracket_rows()
                ],
            }

        if p.get("symbol"):
            return [one(self._symbol(p, futures=True))]
        return [one(s) for s in self.futures_symbols]

    def fapi_leverage(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        acct = self._acct(p["_account"])
        sym = self._symbol(p, futures=True)
        if not p.get("leverage"):
            raise _mandatory("leverage")
        lev = int(p["leverage"])
        pos = self._position(acct, sym)
        notional = abs(_d(pos["amt"])) * self.price(sym)
        rows = self.rules[sym].bracket_rows()
        max_lev = self._bracket(sym, notional)["lev"]
        if lev < 1 or lev > rows[0]["lev"]:
            raise _bad(-4028, f"Leverage {lev} is not valid")
        if lev > max_lev:
            raise _bad(-2027, "Exceeded the maximum allowable position at current leverage.")
        acct["leverage"][sym] = lev
        cap = max((r["hi"] for r in rows if r["lev"] >= lev), default=rows[0]["hi"])
        return {"leverage": lev, "maxNotionalValue": _plain(cap), "symbol": sym}

    def fapi_margin_type(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        acct = self._acct(p["_account"])
        sym = self._symbol(p, futures=True)
        mt = p.get("marginType", "").upper()
        if mt not in ("ISOLATED", "CROSSED"):
            raise _bad(-4044, "The margin type is invalid.") if mt else _mandatory("marginType")
        if self._margin_type(acct, sym) == mt:
            raise _bad(-4046, "No need to change margin type.")
        pos = self._position(acct, sym)
        open_orders = [
            o for o in self._orders_of(p["_account"], "futures", sym) if o["status"] in _OPEN_STATES
        ]
        if _d(pos["amt"]) != 0:
            raise _bad(-4048, "Margin type cannot be changed if there exists position.")
        if open_orders:
            raise _bad(-4047, "Margin type cannot be changed if there exists open orders.")
        acct["margin_type"][sym] = mt
        return {"code": 200, "msg": "success"}

    def _position_risk(self, acct: dict, sym: str) -> dict[str, Any]:
        pos = acct["positions"].get(sym) or {"amt": "0", "entry": "0", "margin": "0", "update": 0}
        amt, entry = _d(pos["amt"]), _d(pos["entry"])
        mark = self.price(sym) if self._listed(sym, self.clock_ms) else _ZERO
        notional = amt * mark
        upnl = (mark - entry) * amt if amt else _ZERO
        lev = self._leverage(acct, sym)
        mt = self._margin_type(acct, sym)
        isolated_wallet = _d(pos["margin"]) if mt == "ISOLATED" else _ZERO
        br = self._bracket(sym, abs(notional))
        mmr, cum = br["mmr"], br["cum"]
        liq = _ZERO
        if amt != 0:
            if mt == "ISOLATED":
                wb, others = isolated_wallet, _ZERO
            else:
                wb = _d(acct["wallet"].get("USDT", "0"))
                others = _ZERO
                for s2, p2 in acct["positions"].items():
                    if s2 == sym or _d(p2["amt"]) == 0 or self._margin_type(acct, s2) != "CROSSED":
                        continue
                    n2 = abs(_d(p2["amt"])) * self.price(s2)
                    b2 = self._bracket(s2, n2)
                    others += -(n2 * b2["mmr"] - b2["cum"]) + self._unrealized(acct, s2)
            den = abs(amt) * mmr - amt
            if den != 0:
                liq = (wb + others + cum - amt * entry) / den
            liq = max(liq, _ZERO)
        init = abs(notional) / lev
        return {
            "symbol": sym,
            "positionSide": "BOTH",
            "positionAmt": _plain(amt),
            "entryPrice": _plain(entry),
            "breakEvenPrice": _plain(entry),
            "markPrice": _plain(mark),
            "unRealizedProfit": _plain(_q8(upnl)),
            "liquidationPrice": _plain(_q8(liq)),
            "isolatedMargin": _plain(_q8(isolated_wallet + upnl)) if mt == "ISOLATED" else "0",
            "notional": _plain(_q8(notional)),
            "marginAsset": "USDT",
            "isolatedWallet": _plain(isolated_wallet),
            "initialMargin": _plain(_q8(init)),
            "maintMargin": _plain(_q8(abs(notional) * mmr - cum if amt else _ZERO)),
            "positionInitialMargin": _plain(_q8(init)),
            "openOrderInitialMargin": "0",
            "adl": 0,
            "bidNotional": "0",
            "askNotional": "0",
            "leverage": str(lev),
            "marginType": "isolated" if mt == "ISOLATED" else "cross",
            "isAutoAddMargin": "false",
            "maxNotionalValue": _plain(br["hi"]),
            "updateTime": int(pos.get("update", 0)),
        }

    def fapi_position_risk(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        acct = self._acct(p["_account"])
        if p.get("symbol"):
            syms = [self._symbol(p, futures=True)]
        else:
            syms = sorted(s for s, pos in acct["positions"].items() if _d(pos["amt"]) != 0)
        return [self._position_risk(acct, s) for s in syms if self._listed(s, self.clock_ms)]

    def fapi_account(self, p: dict[str, str], f: dict | None) -> dict[str, Any]:
        account = p["_account"]
        acct = self._acct(account)
        wallet = _d(acct["wallet"].get("USDT", "0"))
        upnl = sum((self._unrealized(acct, s) for s in acct["positions"]), _ZERO)
        used = self._used_margin(acct, account)
        avail = self._available(acct, account)
        assets = []
        for a, v in sorted(acct["wallet"].items()):
            w = _d(v)
            u = upnl if a == "USDT" else _ZERO
            assets.append(
                {
                    "asset": a,
                    "walletBalance": _plain(_q8(w)),
                    "unrealizedProfit": _plain(_q8(u)),
                    "marginBalance": _plain(_q8(w + u)),
                    "maintMargin": "0",
                    "initialMargin": _plain(_q8(used if a == "USDT" else _ZERO)),
                    "positionInitialMargin": _plain(_q8(used if a == "USDT" else _ZERO)),
                    "openOrderInitialMargin": "0",
                    "crossWalletBalance": _plain(_q8(w)),
                    "crossUnPnl": _plain(_q8(u)),
                    "availableBalance": _plain(_q8(avail if a == "USDT" else w)),
                    "maxWithdrawAmount": _plain(_q8(avail if a == "USDT" else w)),
                    "updateTime": max(self.clock_ms, 1),
                }
            )
        positions = [
            {
                "symbol": s,
                "positionSide": "BOTH",
                "positionAmt": r["positionAmt"],
                "unrealizedProfit": r["unRealizedProfit"],
                "isolatedMargin": r["isolatedMargin"],
                "notional": r["notional"],
                "isolatedWallet": r["isolatedWallet"],
                "initialMargin": r["initialMargin"],
                "maintMargin": r["maintMargin"],
                "updateTime": r["updateTime"],
            }
            for s in sorted(acct["positions"])
            if _d(acct["positions"][s]["amt"]) != 0
            for r in [self._position_risk(acct, s)]
        ]
        return {
            "totalInitialMargin": _plain(_q8(used)),
            "totalMaintMargin": "0",
            "totalWalletBalance": _plain(_q8(wallet)),
            "totalUnrealizedProfit": _plain(_q8(upnl)),
            "totalMarginBalance": _plain(_q8(wallet + upnl)),
            "totalPositionInitialMargin": _plain(_q8(used)),
            "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": _plain(_q8(wallet)),
            "totalCrossUnPnl": _plain(_q8(upnl)),
            "availableBalance": _plain(_q8(avail)),
            "maxWithdrawAmount": _plain(_q8(avail)),
            "assets": assets,
            "positions": positions,
        }

    def fapi_balance(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        acc = self.fapi_account(p, f)
        return [
            {
                "accountAlias": "emu",
                "asset": a["asset"],
                "balance": a["walletBalance"],
                "crossWalletBalance": a["crossWalletBalance"],
                "crossUnPnl": a["crossUnPnl"],
                "availableBalance": a["availableBalance"],
                "maxWithdrawAmount": a["maxWithdrawAmount"],
                "marginAvailable": True,
                "updateTime": a["updateTime"],
            }
            for a in acc["assets"]
        ]

    def fapi_premium_index(self, p: dict[str, str], f: dict | None) -> Any:
        clock = self.clock_ms

        def one(s: str) -> dict[str, Any]:
            mark = self.price(s)
            nxt = (clock // _FUNDING_MS + 1) * _FUNDING_MS
            return {
                "symbol": s,
                "markPrice": _plain(mark),
                "indexPrice": _plain(mark),
                "estimatedSettlePrice": _plain(mark),
                "lastFundingRate": _plain(self._funding_rate(s, nxt)),
                "interestRate": "0.00010000",
                "nextFundingTime": nxt,
                "time": clock,
            }

        if p.get("symbol"):
            return one(self._symbol(p, futures=True))
        return [one(s) for s in self.futures_symbols if self._listed(s, clock)]

    def fapi_funding_rate(self, p: dict[str, str], f: dict | None) -> list[dict[str, Any]]:
        clock = self.clock_ms
        syms = [self._symbol(p, futures=True)] if p.get("symbol") else self.futures_symbols
        limit = min(int(p.get("limit", 100)), 1000)
        end = min(int(p.get("endTime", clock)), clock)
        rows = []
        for s in syms:
            sr = self._series[s]
            if not len(sr.times):
                continue
            first = (int(sr.times[0]) // _FUNDING_MS + 1) * _FUNDING_MS
            start = max(int(p.get("startTime", first)), first)
            b = (start + _FUNDING_MS - 1) // _FUNDING_MS * _FUNDING_MS
            ts = list(range(b, end + 1, _FUNDING_MS))
            ts = ts[:limit] if p.get("startTime") else ts[-limit:]
            for t in ts:
                rows.append(
                    {
                        "symbol": s,
                        "fundingTime": t,
                        "fundingRate": _plain(self._funding_rate(s, t)),
                        "markPrice": _plain(self.price(s, t)),
                    }
                )
        return rows[:limit] if p.get("startTime") else rows[-limit:]


_OPEN_STATES = ("NEW", "PARTIALLY_FILLED")


def _signed(path: str) -> bool:
    return path in _SIGNED


_SIGNED = {
    "/sapi/v1/asset/transfer",
    "/sapi/v1/sub-account/universalTransfer",
    "/api/v3/account",
    "/api/v3/order",
    "/api/v3/openOrders",
    "/api/v3/allOrders",
    "/api/v3/myTrades",
    "/fapi/v1/order",
    "/fapi/v1/openOrders",
    "/fapi/v1/allOrders",
    "/fapi/v1/userTrades",
    "/fapi/v1/income",
    "/fapi/v1/leverageBracket",
    "/fapi/v1/leverage",
    "/fapi/v1/marginType",
    "/fapi/v2/positionRisk",
    "/fapi/v3/positionRisk",
    "/fapi/v2/account",
    "/fapi/v3/account",
    "/fapi/v2/balance",
    "/fapi/v3/balance",
}


def _const(value: Any) -> Callable[[BinanceEmulator, dict, Any], Any]:
    return lambda emu, p, f: value() if callable(value) else value


_E = BinanceEmulator
_ROUTES: dict[tuple[str, str], Callable[[BinanceEmulator, dict, Any], Any]] = {
    ("GET", "/api/v3/ping"): _const({}),
    ("POST", "/sapi/v1/asset/transfer"): _E.sapi_transfer,
    ("POST", "/sapi/v1/sub-account/universalTransfer"): _E.sub_universal_transfer,
    ("GET", "/sapi/v1/sub-account/universalTransfer"): _E.sub_universal_transfers,
    ("GET", "/api/v3/time"): _const(lambda: {"serverTime": int(time.time() * 1000)}),
    ("GET", "/api/v3/exchangeInfo"): _E.spot_exchange_info,
    ("GET", "/api/v3/klines"): lambda e, p, f: e._klines(p, False),
    ("GET", "/api/v3/uiKlines"): lambda e, p, f: e._klines(p, False),
    ("GET", "/api/v3/depth"): lambda e, p, f: e._depth(p, False),
    ("GET", "/api/v3/aggTrades"): lambda e, p, f: e._agg_trades(p, False),
    ("GET", "/fapi/v1/aggTrades"): lambda e, p, f: e._agg_trades(p, True),
    ("GET", "/api/v3/ticker/24hr"): lambda e, p, f: e._tickers(p, False),
    ("GET", "/api/v3/ticker"): lambda e, p, f: e._tickers(p, False),
    ("GET", "/api/v3/ticker/price"): lambda e, p, f: e._price_ticker(p, False),
    ("GET", "/api/v3/ticker/bookTicker"): lambda e, p, f: e._book_ticker(p, False),
    ("GET", "/api/v3/account"): _E.spot_account,
    ("POST", "/api/v3/order"): _E.spot_order_post,
    ("GET", "/api/v3/order"): _E.spot_order_get,
    ("DELETE", "/api/v3/order"): _E.spot_order_delete,
    ("GET", "/api/v3/openOrders"): _E.spot_open_orders,
    ("GET", "/api/v3/allOrders"): _E.spot_all_orders,
    ("GET", "/api/v3/myTrades"): _E.spot_my_trades,
    ("GET", "/fapi/v1/ping"): _const({}),
    ("GET", "/fapi/v1/time"): _const(lambda: {"serverTime": int(time.time() * 1000)}),
    ("GET", "/fapi/v1/exchangeInfo"): _E.fapi_exchange_info,
    ("GET", "/fapi/v1/klines"): lambda e, p, f: e._klines(p, True),
    ("GET", "/fapi/v1/depth"): lambda e, p, f: e._depth(p, True),
    ("GET", "/fapi/v1/ticker/24hr"): lambda e, p, f: e._tickers(p, True),
    ("GET", "/fapi/v1/ticker/price"): lambda e, p, f: e._price_ticker(p, True),
    ("GET", "/fapi/v2/ticker/price"): lambda e, p, f: e._price_ticker(p, True),
    ("GET", "/fapi/v1/ticker/bookTicker"): lambda e, p, f: e._book_ticker(p, True),
    ("GET", "/fapi/v1/premiumIndex"): _E.fapi_premium_index,
    ("GET", "/fapi/v1/fundingRate"): _E.fapi_funding_rate,
    ("POST", "/fapi/v1/order"): _E.fapi_order_post,
    ("GET", "/fapi/v1/order"): _E.fapi_order_get,
    ("DELETE", "/fapi/v1/order"): _E.fapi_order_delete,
    ("GET", "/fapi/v1/openOrders"): _E.fapi_open_orders,
    ("GET", "/fapi/v1/allOrders"): _E.fapi_all_orders,
    ("GET", "/fapi/v1/userTrades"): _E.fapi_user_trades,
    ("GET", "/fapi/v1/income"): _E.fapi_income,
    ("GET", "/fapi/v1/leverageBracket"): _E.fapi_leverage_bracket,
    ("POST", "/fapi/v1/leverage"): _E.fapi_leverage,
    ("POST", "/fapi/v1/marginType"): _E.fapi_margin_type,
    ("GET", "/fapi/v2/positionRisk"): _E.fapi_position_risk,
    ("GET", "/fapi/v3/positionRisk"): _E.fapi_position_risk,
    ("GET", "/fapi/v2/account"): _E.fapi_account,
    ("GET", "/fapi/v3/account"): _E.fapi_account,
    ("GET", "/fapi/v2/balance"): _E.fapi_balance,
    ("GET", "/fapi/v3/balance"): _E.fapi_balance,
}


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> tuple:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return (status, {"Content-Type": "application/json;charset=UTF-8", **(headers or {})}, body)


def _text(status: int, text: str) -> tuple:
    return (status, {"Content-Type": "text/plain"}, text.encode())


def _client_gone(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _make_handler(emu: BinanceEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        server_version = "binance-emulator"

        def _do(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                out = emu.handle(method, self.path, headers, body)
            except Exception as e:  # an emulator bug: answer 500 and say what
                out = _json(500, {"code": -1000, "msg": f"emulator error: {type(e).__name__}: {e}"})
            if out[0] == "restart":
                self.close_connection = True
                self.connection.close()
                threading.Thread(target=emu._restart, daemon=True).start()
                return
            if out[0] == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if out[0] == "hang":
                deadline = time.monotonic() + out[1]
                while time.monotonic() < deadline and not emu._closing.is_set():
                    if _client_gone(self.connection):
                        break
                    time.sleep(0.02)
                self.close_connection = True
                self.connection.close()
                return
            status, hdrs, payload = out
            self.send_response(status)
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._do("GET")

        def do_POST(self) -> None:
            self._do("POST")

        def do_DELETE(self) -> None:
            self._do("DELETE")

        def do_PUT(self) -> None:
            self._do("PUT")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
