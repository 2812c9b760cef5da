"""``trimtab mm --exchange``: the market-making quoting loop (``trimtab.engine.mm_live``)
on a live order book, paper or live, from the command line.

Paper reads the exchange's public data only (no keys). Live trades through the ccxt
venue (``trimtab.app.exchange.open_venue``) with the keys of subaccount ``mm``
(``TRIMTAB_MM_API_KEY`` and ``TRIMTAB_MM_API_SECRET``, or ``--keys FILE``), never
printed; on the exchange itself (not ``--testnet``, not ``--exchange-url``) only after
the run id is typed at a prompt or given as ``--confirm RUN_ID``, as ``trimtab run
--live``. The venue's journal sits beside a SQLite store as ``<store>.<run>.venue.db``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimtab.engine.mm_live import MarketFeed, QuotingLoop, venue_symbol
from trimtab.strategies.market_making import market_making_params

SUBACCOUNT = "mm"


@dataclass
class MMLiveOptions:
    """What ``trimtab mm --exchange`` was given."""

    exchange: str
    symbol: str
    live: bool = False
    testnet: bool = False
    exchange_url: str | None = None
    cycles: int | None = None
    interval_s: float = 1.0
    db: str | None = None
    run_id: str | None = None
    capital: float = 10_000.0
    settings: dict[str, Any] = field(default_factory=dict)
    keys_file: str | None = None
    confirm: str | None = None
    venue_db: str | None = None


def _store_url(db: str | None) -> str:
    import os

    return db or os.environ.get("TRIMTAB_DB") or "sqlite:///runs/trimtab.db"


def _venue_db(url: str, run_id: str, given: str | None) -> Path:
    if given:
        return Path(given)
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        return db.with_name(f"{db.stem}.{run_id}.venue.db")
    if "://" not in url:
        db = Path(url)
        return db.with_name(f"{db.stem}.{run_id}.venue.db")
    return Path("runs") / f"{run_id}.venue.db"


def _public_client(o: MMLiveOptions) -> Any:
    import ccxt

    from trimtab.execution.ccxt_venue import aim_client

    if o.exchange != "binance":
        raise ValueError(
            f"--exchange {o.exchange!r}: trimtab trades Binance spot and USDT-M perpetuals "
            "through ccxt for now"
        )
    client = ccxt.binance(
        {
            "enableRateLimit": True,
            "options": {  # the markets trimtab trades: spot and USDT-M
                "fetchMarkets": {"types": ["spot", "linear"]},
                "fetchMargins": False,
                "fetchCurrencies": False,
                "adjustForTimeDifference": False,
            },
        }
    )
    if o.testnet:
        client.set_sandbox_mode(True)
    elif o.exchange_url:
        aim_client(client, o.exchange_url)
    return client


def confirm_live(o: MMLiveOptions, run_id: str, ask: Callable[[str], str] | None) -> None:
    """Live on the exchange itself: the run id confirmed (``--confirm`` or typed)."""
    if not o.live or o.testnet or o.exchange_url:
        return
    if o.confirm is not None:
        if o.confirm != run_id:
            raise ValueError(f"--confirm {o.confirm!r} is not this run's id ({run_id!r})")
        return
    if ask is None or not sys.stdin.isatty():
        raise ValueError(
            f"--live quotes real money on {o.exchange}: confirm with --confirm {run_id} "
            "(no terminal to ask in)"
        )
    if (
        ask(
            f"--live quotes {o.symbol} on {o.exchange} with real money: type the run id "
            f"({run_id}) to go on"
        ).strip()
        != run_id
    ):
        raise ValueError("not confirmed: nothing was started")


def build_loop(o: MMLiveOptions, ask: Callable[[str], str] | None = None) -> QuotingLoop:
    """The quoting loop ``o`` describes (checked: ``ValueError`` naming what is wrong)."""
    from trimtab.journal.store import Store

    if o.exchange_url and not o.live:
        raise ValueError("--exchange-url trades on that endpoint: give --live too")
    if o.live and o.testnet:
        raise ValueError("--live trades on the exchange, --testnet on its testnet: give one")
    if o.cycles is not None and o.cycles < 1:
        raise ValueError(f"--cycles must be at least 1, got {o.cycles}")
    if not o.interval_s >= 0:
        raise ValueError(f"--interval must be >= 0 seconds, got {o.interval_s}")
    params = market_making_params(o.settings)
    venue_symbol(o.symbol)  # a clear error for a bad symbol before any request
    mode = "live" if (o.live or o.testnet) else "paper"
    run_id = o.run_id or f"mm-{mode}-{o.symbol.replace('/', '').replace(':', '-')}"
    confirm_live(o, run_id, ask)
    url = _store_url(o.db)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = _public_client(o)
    feed = MarketFeed(client, o.symbol)
    venue = None
    tick = lot = None
    if mode == "live":
        from trimtab.app.exchange import open_venue

        path = _venue_db(url, run_id, o.venue_db)
        path.parent.mkdir(parents=True, exist_ok=True)
        venue = open_venue(
            [SUBACCOUNT],
            exchange=o.exchange,
            journal=path,
            symbols=[venue_symbol(o.symbol)],
            keys_file=o.keys_file,
            url=o.exchange_url,
            testnet=o.testnet,
        )
    else:
        client.load_markets()
        market = client.market(o.symbol)
        tick = float(market["precision"]["price"])
        lot = float(market["precision"]["amount"] or 0.0)
    store = Store.open(url)
    return QuotingLoop(
        store,
        run_id,
        feed,
        mode=mode,
        capital=o.capital,
        params=params,
        venue=venue,
        subaccount=SUBACCOUNT,
        tick=tick,
        lot=lot,
    )


def run_from_cli(
    o: MMLiveOptions, ask: Callable[[str], str] | None, say: Callable[[str], Any] = print
) -> str:
    """Build and run the loop, saying one line per cycle (what was quoted, inventory)."""
    import logging

    import ccxt

    from trimtab.app.secrets import install_secret_filter

    install_secret_filter()  # a loaded key is masked in every log line
    logging.getLogger("ccxt").setLevel(logging.WARNING)
    try:
        loop = build_loop(o, ask)
    except ccxt.BaseError as exc:  # e.g. a symbol the exchange does not list
        raise ValueError(f"{o.exchange}: {type(exc).__name__}: {exc}") from None

    def line(out: dict[str, Any]) -> None:
        kinds: dict[str, int] = {}
        for r in out["records"]:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        said = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()) if k != "seen")
        say(
            f"cycle {loop.cycle - 1}: mid {out['mid']:.8g}, inventory {out['inventory']:+.8g}"
            + (f" ({said})" if said else "")
        )

    try:
        why = loop.run(o.cycles, o.interval_s, on_cycle=line)
    except ccxt.BaseError as exc:  # the public client holds no keys: nothing to scrub
        raise ValueError(f"{o.exchange}: {type(exc).__name__}: {exc}") from None
    finally:
        if loop.venue is not None:
            loop.venue.close()
        loop.store.close()
    say(f"stopped ({why}); open quotes cancelled; run {loop.run_id} in the store")
    return why
