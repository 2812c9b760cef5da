"""``trimtab run``: the runner of a portfolio file, built and started.

``build_run(portfolio, options)`` makes every part: the data (a replayed file, or bars
downloaded as they close), the market context, one ``PipelineStep`` per subaccount with
its mode and envelope, the paper exchange with its own database, the store, the
scheduled review and alerts, and the clock. ``PaperRun.run()`` cycles until the data
ends, ``--to``, or a stop (SIGTERM or Ctrl-C finish the cycle under way first; after a
SIGKILL the next start takes the run up from the store).

A ``strategy: carry`` subaccount runs on both clocks: its ``-PERP`` columns, their
instruments and funding reach the paper exchange (``trimtab.engine.carry_run``). On
replayed bars the funding is the data's file; on the wall clock the rates are downloaded
with the bars (ccxt's ``fetch_funding_rate_history``) into ``funding_<venue>_live.csv.gz``
beside them, unless the file names its own ``backtest.funding``; a venue that does not
answer leaves the carry the rates it has (none recent: flat, ``no_funding``). The
allocator is asked at each close and its decisions recorded; the transfers asked for
are made in auto mode and proposed to a person in approve mode (``LiveRunner``).
Sleeve subaccounts (``strategy: market-making | copy | returns``) are refused
(``refuse_sleeves``): they simulate themselves on their own clock, which this runner of
bars does not drive.

Defaults: the store is ``$TRIMTAB_DB`` or ``sqlite:///runs/trimtab.db`` (what the
control commands read too); the run id is the portfolio file's name without its suffix;
the paper exchange's database is ``runner.paper_db`` or, beside a SQLite store, the
store's file name with ``.paper.db``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.app.control import default_db
from trimtab.domain.transfers import TransferRequest
from trimtab.engine.context import MarketContext
from trimtab.engine.cycle import CycleObserver
from trimtab.engine.live import Envelope, LiveRunner, LiveSubaccount, ReplayClock, WallClock
from trimtab.engine.portfolio_file import Portfolio, transfer_guard, transfer_schedule
from trimtab.engine.portfolio_run import (
    PortfolioOptions,
    PreparedPortfolio,
    file_transfer_requests,
    make_allocator,
    prepare_portfolio,
)
from trimtab.engine.reconcile import Reconciliation
from trimtab.engine.step import PipelineStep
from trimtab.execution.costs import CostModel
from trimtab.execution.paper import PaperExchange
from trimtab.guard.breakers import CircuitBreaker
from trimtab.journal.store import Store
from trimtab.journal.store import mask_url as _mask_url

log = logging.getLogger(__name__)


def make_observers(portfolio: Portfolio, options: RunOptions) -> list[CycleObserver]:
    """The scheduled review (every ``runner.review_every`` bars; none without
    ``options.review``) and the alerts of the file's ``alerts:`` section."""
    from trimtab.app.monitor import Monitor

    settings = portfolio.settings
    every = settings.runner.review_every if options.review else 0
    return [Monitor(settings.alerts, review_every=every)]


@dataclass(frozen=True)
class RunOptions:
    """Options of ``trimtab run`` (the CLI's flags). ``replay``: a data folder or file
    whose bars drive the run instead of the wall clock; ``start``/``end``: the first and
    last bar to run (UTC, inclusive); ``speed``: times faster than the wall clock (None:
    as fast as it computes)."""

    db: str | None = None
    run_id: str | None = None
    replay: str | None = None
    start: str | None = None
    end: str | None = None
    speed: float | None = None
    timeframe: str | None = None
    paper_db: str | None = None
    costs: CostModel = field(default_factory=CostModel)
    review: bool = True
    #: A real venue instead of the paper exchange: ``live`` (the exchange itself, after a
    #: confirmation), ``testnet`` (ccxt's sandbox, verified), ``exchange_url`` (another
    #: base url: a local emulator); keys from ``keys_file`` or the environment.
    live: bool = False
    testnet: bool = False
    exchange_url: str | None = None
    keys_file: str | None = None
    venue_db: str | None = None

    @property
    def real_venue(self) -> bool:
        return self.live or self.testnet or self.exchange_url is not None


def paper_db_path(store_url: str, portfolio: Portfolio, options: RunOptions) -> Path:
    """Where the paper exchange keeps its books (see the module docstring)."""
    if options.paper_db:
        return Path(options.paper_db)
    configured = portfolio.settings.runner.paper_db
    if configured:
        return portfolio.resolve(configured)
    if store_url.startswith("sqlite:///"):
        db = Path(store_url.removeprefix("sqlite:///"))
        return db.with_name(db.stem + ".paper.db")
    if "://" not in store_url:
        db = Path(store_url)
        return db.with_name(db.stem + ".paper.db")
    return Path("runs") / "paper-exchange.db"


def venue_db_path(store_url: str, run_id: str, options: RunOptions) -> Path:
    """The venue's journal (orders sent, trades seen): ``--venue-db``, else beside a
    SQLite store as ``<store>.<run id>.venue.db``, else ``runs/<run id>.venue.db``."""
    if options.venue_db:
        return Path(options.venue_db)
    if store_url.startswith("sqlite:///"):
        db = Path(store_url.removeprefix("sqlite:///"))
        return db.with_name(f"{db.stem}.{run_id}.venue.db")
    return Path("runs") / f"{run_id}.venue.db"


def open_run_venue(portfolio: Portfolio, options: RunOptions, run_id: str, url: str) -> Any:
    """The ccxt venue of a run's subaccounts (keys from ``options.keys_file`` or the
    environment), its journal beside the store."""
    from trimtab.app.exchange import open_venue

    venue_id, symbols = live_symbols(portfolio)
    path = venue_db_path(url, run_id, options)
    path.parent.mkdir(parents=True, exist_ok=True)
    return open_venue(
        list(portfolio.settings.subaccounts),
        exchange=venue_id,
        journal=path,
        symbols=symbols,
        keys_file=options.keys_file,
        url=options.exchange_url,
        testnet=options.testnet,
        transfers=True,
    )


def public_client(venue_id: str, options: RunOptions) -> Any:
    """A ccxt client without keys for the bars, at the run's endpoint (the testnet, or
    ``exchange_url``)."""
    import ccxt

    from trimtab.execution.ccxt_venue import aim_client

    client = getattr(ccxt, venue_id)({"enableRateLimit": True})
    if options.testnet:
        client.set_sandbox_mode(True)
    elif options.exchange_url:
        aim_client(client, options.exchange_url)
    return client


def seed_from_venue(runner: LiveRunner, venue: Any) -> None:
    """A fresh run on a real venue starts from what each account holds there (its cash
    and positions read through ccxt), not from the portfolio file's capital: the first
    reconciliation then compares like with like. A run taken up again keeps its books."""
    from trimtab.domain.account import Position

    if runner.store.checkpoint(runner.run_id) is not None:
        return
    books = venue.balances()
    m = runner.m
    last = m.close_filled[-1]
    for name, sub in runner.account.subaccounts.items():
        held = books.get(name)
        if held is None:
            continue
        sub.cash = float(held["cash"])
        sub.positions.clear()
        details = {p.symbol: p for p in venue.snapshot(name, marks=False).positions}
        for symbol, qty in (held.get("positions") or {}).items():
            if not qty:
                continue
            inst = venue.instrument(symbol)
            perp = details.get(symbol)
            if perp is not None:
                lev = float(perp.leverage or 1.0)
                margin = perp.margin if perp.margin else abs(qty) * perp.entry_price / lev
                sub.positions[symbol] = Position(
                    instrument=inst,
                    quantity=float(qty),
                    entry_price=float(perp.entry_price),
                    margin=float(margin),
                    leverage=lev,
                )
            else:
                col = m.column.get(symbol)
                mark = float(last[col]) if col is not None else 0.0
                sub.positions[symbol] = Position(
                    instrument=inst, quantity=float(qty), entry_price=mark, margin=0.0, leverage=1.0
                )
        s = runner.subs[name]
        qty, equity = runner._marked(name, len(m.timestamps) - 1)
        s.capital = s.peak = equity
    runner.total_peak = float(sum(s.peak for s in runner.subs.values()))


class RunTransfers:
    """The portfolio file's transfers as the runner asks for them (``TransferSource``):
    its dated transfers and ``rebalance_capital`` rule, then its allocator's moves, in a
    backtest's order (``file_transfer_requests``). The allocator is built on the newest
    preparation of the market (``prepared()``: the same one for a replay; a live run's
    grows as bars close, and the allocator is built again on it: it keeps no state but
    its records, which are kept here across rebuilds)."""

    def __init__(self, portfolio: Portfolio, prepared: Callable[[], PreparedPortfolio]) -> None:
        self.settings = portfolio.settings
        self.prepared = prepared
        self.schedule = transfer_schedule(portfolio.settings)
        self.records: list[dict[str, Any]] = []
        self._on: PreparedPortfolio | None = None
        self._allocator: Any = None

    def requests(
        self,
        ts: pd.Timestamp,
        previous: pd.Timestamp | None,
        equity: Mapping[str, float],
        history: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[TransferRequest]:
        allocator = None
        if self.settings.allocator is not None:
            prep = self.prepared()
            if prep is not self._on:
                self._allocator, self._on = make_allocator(self.settings, prep), prep
            allocator = self._allocator
        seen = len(allocator.records) if allocator is not None else 0
        out = file_transfer_requests(self.schedule, allocator, ts, previous, equity, history)
        if allocator is not None:
            self.records += allocator.records[seen:]
        return out


def asks_transfers(portfolio: Portfolio) -> bool:
    """Whether the file asks for transfers: dated ones, ``rebalance_capital`` or an
    allocator."""
    s = portfolio.settings
    return s.allocator is not None or bool(s.transfers) or s.rebalance_capital is not None


def run_transfers(
    portfolio: Portfolio, prepared: Callable[[], PreparedPortfolio]
) -> RunTransfers | None:
    """The runner's transfer source (None when the file asks for no transfer)."""
    return RunTransfers(portfolio, prepared) if asks_transfers(portfolio) else None


def refuse_sleeves(portfolio: Portfolio) -> None:
    """``trimtab run`` runs subaccounts that trade bars; a sleeve subaccount (market
    making, copy trading, an imported return stream: ``SLEEVE_KINDS``) simulates itself
    on its own clock and is refused with a ``ConfigError`` naming it."""
    from trimtab.config import ConfigError

    problems = [
        f"subaccounts.{name}.strategy: {sub.strategy} simulates itself on its own data and "
        "is not run by trimtab run (live market making runs through a separate quoting "
        "loop, live copying follows the leader's account, neither on this bar runner); "
        "backtest it with trimtab backtest --portfolio, or run a file without it"
        for name, sub in portfolio.settings.subaccounts.items()
        if sub.is_sleeve
    ]
    if problems:
        raise ConfigError(portfolio.source, problems)


def _say_transfers(portfolio: Portfolio) -> None:
    if asks_transfers(portfolio):
        log.info(
            "%s: transfers (dated, rebalance_capital, the allocator's) are made between "
            "subaccounts in auto mode (on the paper exchange, or on a real venue with the "
            "master account's key); with a subaccount in approve mode each becomes a "
            "proposal (trimtab proposals, approve, reject); in monitor mode, or on a real "
            "venue without that key, each is recorded as not_made",
            portfolio.source,
        )


@dataclass
class PaperRun:
    """A built run: call ``run()``; ``runner`` and ``store`` for inspection."""

    runner: LiveRunner
    clock: ReplayClock
    store: Store
    exchange: Any  # PaperExchange, or a CcxtVenue
    run_id: str
    store_url: str
    exchange_path: Path

    def run(self, *, until: int | None = None) -> int | None:
        try:
            return self.runner.run(self.clock, until=until)
        finally:
            self.close()

    def close(self) -> None:
        self.exchange.close()
        self.store.close()


def build_run(
    portfolio: Portfolio,
    options: RunOptions,
    *,
    observers: Sequence[CycleObserver] | None = None,
    make_observers: Callable[[Portfolio, RunOptions], list[CycleObserver]] | None = None,
    prepared: PreparedPortfolio | None = None,
    venue: Any = None,
) -> PaperRun:
    """Every part of the run of ``portfolio`` (see the module docstring). ``venue``: an
    exchange to trade on instead of the paper exchange (a ``CcxtVenue``: the replay's
    bars drive the cycles, the venue fills the orders; tests use a local emulator)."""
    replay = None if options.replay == "auto" else options.replay
    if options.replay is None:
        raise ValueError("build_run replays data: give --replay DATA, or use build_live")
    settings = portfolio.settings
    refuse_sleeves(portfolio)
    _say_transfers(portfolio)
    popts = PortfolioOptions(
        data=replay,
        start=options.start,
        end=options.end,
        timeframe=options.timeframe,
        costs=options.costs,
    )
    prep = prepared if prepared is not None else prepare_portfolio(portfolio, popts)
    context = prep.context
    subs = _subaccounts(portfolio, prep)
    account = settings.account
    breaker = CircuitBreaker(account.breakers, account.limits, scope="account")
    url = options.db or default_db()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    store = Store.open(url)
    run_id = options.run_id or Path(portfolio.source).stem
    exchange_path = paper_db_path(url, portfolio, options)
    try:
        exchange = venue or PaperExchange(
            exchange_path,
            context.market,
            balances={s.name: s.capital for s in subs},
            costs=options.costs,
            instruments=prep.instruments,
            funding=prep.funding,
        )
    except Exception:
        store.close()
        raise
    run_spec: dict[str, Any] = {
        "portfolio": settings.model_dump(mode="json", exclude={"runner"}),
        "source": str(portfolio.source),
        "replay": options.replay,
        "from": None if prep.spec.start is None else str(prep.spec.start),
        "timeframe": context.panel.timeframe,
        "clock": "replay",
    }
    chosen = list(observers or [])
    if make_observers is not None:
        chosen += make_observers(portfolio, options)
    runner = LiveRunner(
        run_id,
        store,
        exchange,
        context,
        subs,
        spec=run_spec,
        account_breaker=breaker,
        observers=chosen,
        band=settings.runner.band,
        send_delay=0,
        kind="paper" if venue is None else "live",
        transfers=run_transfers(portfolio, lambda: prep),
        transfer_guard=transfer_guard(portfolio.settings),
    )
    if venue is not None:
        seed_from_venue(runner, venue)
        exchange_path = venue.path
    clock = ReplayClock(
        context.market.index, options.speed, tick_seconds=settings.runner.tick_seconds
    )
    return PaperRun(runner, clock, store, exchange, run_id, _mask_url(url), exchange_path)


@dataclass
class LiveFeed:
    """Closed bars from the exchange through the download cache: each ``context()`` asks
    ccxt only for the bars that closed since the last request (``download_ohlcv`` is
    incremental), and a carry's funding rates since the last kept (``download_funding``),
    and rebuilds the market context from the cache, warm-up included.
    ``exchange`` is a ccxt instance (tests pass one that answers at the HTTP layer)."""

    portfolio: Portfolio
    options: RunOptions
    venue: str
    symbols: list[str]
    timeframe: str
    start: pd.Timestamp
    cache: Path
    exchange: Any = None
    requests: int = 0
    #: The last preparation of the market (the context, the carry's instruments and
    #: funding, the plans), made by ``context()``.
    prepared: PreparedPortfolio | None = None

    def context(self) -> MarketContext:
        from trimtab.data import download_ohlcv, load_panel
        from trimtab.engine.runner import WARMUP_DAYS

        since = self.start - pd.Timedelta(days=WARMUP_DAYS)
        got = download_ohlcv(
            self.venue,
            self.symbols,
            self.timeframe,
            since,
            cache_dir=self.cache,
            exchange=self.exchange,
        )
        self.requests += sum(int(f.attrs.get("requests", 0)) for f in got.values())
        self._funding(since)
        panel = load_panel(self.cache, timeframe=self.timeframe, symbols=self.symbols)
        panel = panel.slice(since, None)
        popts = PortfolioOptions(
            start=str(self.start), timeframe=self.timeframe, costs=self.options.costs
        )
        self.prepared = prepare_portfolio(self.portfolio, popts, panel)
        return self.prepared.context

    def _funding(self, since: pd.Timestamp) -> None:
        """The carry's funding rates, downloaded beside the bars (none without a carry
        subaccount, or when the file names its own ``backtest.funding``). A venue that
        does not answer is a warning, not a late bar: the other subaccounts decide; the
        carry reads the rates kept, and with none recent its signal is NaN (flat,
        ``no_funding``)."""
        from trimtab.data.errors import DataError
        from trimtab.engine.carry_run import carry_subaccounts

        carry = carry_subaccounts(self.portfolio)
        if not carry or self.portfolio.settings.backtest.funding:
            return
        spots: list[str] = []
        for sub in carry.values():
            spots += [s for s in sub.traded_symbols() or () if s not in spots]
        client = (
            self.exchange if self.exchange is not None else public_client(self.venue, self.options)
        )
        self.exchange = client  # one client for bars and rates (its markets loaded once)
        try:
            download_funding(
                client, self.venue, spots, since, funding_cache(self.cache, self.venue)
            )
        except DataError as exc:
            log.warning("%s; the carry reads the rates it has", exc)

    def latest(self) -> PreparedPortfolio:
        """The newest preparation (``context()`` first)."""
        if self.prepared is None:
            self.context()
        assert self.prepared is not None
        return self.prepared


#: Rates asked for per request (Binance's most).
FUNDING_PAGE = 1000


def funding_cache(cache: Path, venue: str) -> Path:
    """Where a live run keeps the funding rates it downloaded: beside the bars, where
    ``trimtab.engine.carry_run.funding_file`` finds the one ``funding_*.csv.gz``."""
    return Path(cache) / f"funding_{venue}_live.csv.gz"


def download_funding(
    client: Any, venue: str, spots: Sequence[str], since: pd.Timestamp, path: Path
) -> int:
    """Each spot symbol's linear perpetual funding rates (fractions per interval, ccxt's
    ``fetch_funding_rate_history``) from ``since`` on, appended to the CSV at ``path``
    (``timestamp, symbol, venue, funding_rate``: ``read_funding``'s columns, the spot
    symbol's name as in the shared file); only rates after the last one kept are asked
    for. Returns the rates added. ``DataError`` when the venue cannot be asked (the
    caller keeps what it has)."""
    import ccxt

    from trimtab.data.errors import DataError

    kept = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=FUNDING_COLUMNS)
    last = {}
    if len(kept):
        stamps = pd.to_datetime(kept["timestamp"], utc=True)
        last = stamps.groupby(kept["symbol"]).max().to_dict()
    rows: list[dict[str, Any]] = []
    try:
        if not client.markets:
            client.load_markets()
        for spot in spots:
            market = next(
                (
                    name
                    for name, mk in client.markets.items()
                    if mk.get("swap")
                    and mk.get("linear")
                    and f"{mk.get('base', '')}{mk.get('quote', '')}" == spot
                ),
                None,
            )
            if market is None:
                raise DataError(f"{venue}: no linear perpetual for {spot}")
            start = since if spot not in last else last[spot] + pd.Timedelta(milliseconds=1)
            ms = int(pd.Timestamp(start).value // 1_000_000)
            while True:
                page = client.fetch_funding_rate_history(market, since=ms, limit=FUNDING_PAGE)
                fresh = [
                    r
                    for r in page
                    if r.get("timestamp") is not None
                    and r["timestamp"] >= ms
                    and r.get("fundingRate") is not None
                ]
                for r in fresh:
                    rows.append(
                        {
                            "timestamp": pd.Timestamp(int(r["timestamp"]), unit="ms", tz="UTC"),
                            "symbol": spot,
                            "venue": venue,
                            "funding_rate": float(r["fundingRate"]),
                        }
                    )
                if len(page) < FUNDING_PAGE or not fresh:
                    break
                ms = int(max(r["timestamp"] for r in fresh)) + 1
    except ccxt.BaseError as exc:
        raise DataError(f"{venue}: funding rates could not be fetched: {exc}") from None
    if not rows:
        return 0
    new = pd.DataFrame(rows)
    new["timestamp"] = new["timestamp"].map(lambda t: t.isoformat())
    table = pd.concat([kept[list(FUNDING_COLUMNS)], new], ignore_index=True)
    table = table.drop_duplicates(["timestamp", "symbol", "venue"], keep="first")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    table.to_csv(partial, index=False, compression="gzip")
    partial.replace(path)  # a reader never sees half a file
    return len(rows)


#: The funding CSV's columns.
FUNDING_COLUMNS = ("timestamp", "symbol", "venue", "funding_rate")


def live_symbols(portfolio: Portfolio) -> tuple[str, list[str]]:
    """The one venue and the symbols a live run downloads: every subaccount must name
    its symbols (a universe needs the whole market's volumes) on the same exchange."""
    subs = portfolio.settings.subaccounts
    venues = sorted({s.exchange for s in subs.values()})
    if len(venues) != 1:
        raise portfolio.error(
            f"subaccounts: a live paper run trades on one exchange; these name {', '.join(venues)}"
        )
    symbols: list[str] = []
    for name, sub in subs.items():
        named = sub.traded_symbols()
        if sub.strategy == "btc-hold":
            named = ("BTCUSDT",)
        if named is None:
            raise portfolio.error(
                f"subaccounts.{name}: a live run needs symbols: [...] (or weights); "
                f"universe {sub.universe or 'all'} needs the whole market's volumes"
            )
        symbols += [s for s in named if s not in symbols]
    return venues[0], symbols


def build_live(
    portfolio: Portfolio,
    options: RunOptions,
    *,
    exchange: Any = None,
    cache: Path | None = None,
    now: Callable[[], pd.Timestamp] | None = None,
    sleep: Callable[[float], None] | None = None,
    make_observers: Callable[[Portfolio, RunOptions], list[CycleObserver]] | None = None,
) -> LivePaperRun:
    """The run of ``portfolio`` on live prices: bars downloaded as they close, the wall
    clock, the paper exchange. The run starts at ``--from`` (a run taken up again keeps
    its own start) or, fresh, at the newest closed bar."""
    from trimtab.data.discovery import cache_dir

    venue, symbols = live_symbols(portfolio)
    settings = portfolio.settings
    refuse_sleeves(portfolio)
    _say_transfers(portfolio)
    if options.real_venue:
        from trimtab.app.exchange import load_keys

        load_keys(list(settings.subaccounts), options.keys_file)  # before any download
    timeframe = options.timeframe or settings.backtest.timeframe or "1d"
    url = options.db or default_db()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    run_id = options.run_id or Path(portfolio.source).stem
    store = Store.open(url)
    try:
        known = store.run(run_id)
        clock_now = now or (lambda: pd.Timestamp.now(tz="UTC"))
        if options.start is not None:
            start = pd.Timestamp(options.start)
            start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
        elif known is not None and known.spec.get("from"):
            start = pd.Timestamp(known.spec["from"])
        else:  # the newest closed bar
            from trimtab.data.panel import timeframe_seconds

            step = pd.Timedelta(seconds=timeframe_seconds(timeframe))
            start = clock_now().floor(step) - step
        if exchange is None and (options.exchange_url or options.testnet):
            exchange = public_client(venue, options)
        feed = LiveFeed(
            portfolio,
            options,
            venue,
            symbols,
            timeframe,
            start,
            Path(cache or cache_dir()) / "live" / venue,
            exchange,
        )
        context = feed.context()
        prep = feed.latest()
        subs = _subaccounts(portfolio, prep)
        if options.real_venue:
            paper = open_run_venue(portfolio, options, run_id, url)
            exchange_path = paper.path
        else:
            exchange_path = paper_db_path(url, portfolio, options)
            paper = PaperExchange(
                exchange_path,
                context.market,
                balances={s.name: s.capital for s in subs},
                costs=options.costs,
                instruments=prep.instruments,
                funding=prep.funding,
            )
    except Exception:
        store.close()
        raise
    run_spec: dict[str, Any] = {
        "portfolio": settings.model_dump(mode="json", exclude={"runner"}),
        "source": str(portfolio.source),
        "venue": venue,
        "from": str(start),
        "timeframe": timeframe,
        "clock": "wall",
    }
    account = settings.account
    runner = LiveRunner(
        run_id,
        store,
        paper,
        context,
        subs,
        spec=run_spec,
        account_breaker=CircuitBreaker(account.breakers, account.limits, scope="account"),
        observers=make_observers(portfolio, options) if make_observers else [],
        band=settings.runner.band,
        send_delay=1,
        kind="live" if options.real_venue else "paper",
        transfers=run_transfers(portfolio, feed.latest),
        transfer_guard=transfer_guard(portfolio.settings),
    )
    if options.real_venue:
        seed_from_venue(runner, paper)
    market = context.market
    bar = float((market.index[1] - market.index[0]).total_seconds())
    clock = WallClock(
        bar,
        market.index[0],
        grace_seconds=settings.runner.grace_seconds,
        tick_seconds=settings.runner.tick_seconds,
        now=clock_now,
        sleep=sleep,
    )
    return LivePaperRun(runner, clock, store, paper, run_id, _mask_url(url), exchange_path, feed)


@dataclass
class LivePaperRun:
    """A built live run: ``run()`` until stopped."""

    runner: LiveRunner
    clock: WallClock
    store: Store
    exchange: Any  # PaperExchange, or a CcxtVenue
    run_id: str
    store_url: str
    exchange_path: Path
    feed: LiveFeed

    def run(self) -> int | None:
        try:
            return self.runner.run_live(
                self.clock, self.feed.context, lambda: self.feed.latest().funding
            )
        finally:
            self.close()

    def close(self) -> None:
        self.exchange.close()
        self.store.close()


def inspect_run(portfolio: Portfolio, options: RunOptions) -> Reconciliation:
    """``trimtab reconcile`` while no runner runs: the run built as ``trimtab run`` builds
    it (same options), its saved books compared with the exchange; nothing is sent or
    written. A runner holding the exchange is a clear error (ask it instead)."""
    if options.replay is None:
        live = build_live(portfolio, options)
        try:
            return live.runner.inspect()
        finally:
            live.close()
    run = build_run(portfolio, options)
    try:
        return run.runner.inspect()
    finally:
        run.close()


def _subaccounts(portfolio: Portfolio, prep: PreparedPortfolio) -> list[LiveSubaccount]:
    """One runner subaccount per plan: its step (policy and guard), mode and envelope.
    Copies: a prepared portfolio may serve several runs (tests build the context once)."""
    subs = []
    for spec, plan in zip(copy.deepcopy(prep.specs), copy.deepcopy(prep.plans), strict=True):
        sub = plan.settings
        envelope = (
            Envelope(sub.envelope.max_order_notional, sub.envelope.max_daily_turnover)
            if sub.envelope is not None
            else None
        )
        step = PipelineStep(spec.policy, spec.safety, subaccount=plan.name)
        subs.append(LiveSubaccount(plan.name, step, plan.capital, sub.mode, envelope))
    return subs


__all__ = [
    "LiveFeed",
    "LivePaperRun",
    "PaperRun",
    "RunOptions",
    "build_live",
    "build_run",
    "default_db",
    "live_symbols",
    "inspect_run",
    "paper_db_path",
]
