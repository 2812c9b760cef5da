"""``trimtab run``: the runner of a portfolio file, built and started.

``build_run(portfolio, options)`` makes every part: the data (a replayed file, or bars
downloaded as they close), the market context, one ``PipelineStep`` per subaccount with
its mode and envelope, the paper exchange with its own database, the store, the
scheduled review and alerts, and the clock. ``PaperRun.run()`` cycles until the data
ends, ``--to``, or a stop (SIGTERM or Ctrl-C finish the cycle under way first; after a
SIGKILL the next start takes the run up from the store).

Defaults: the store is ``$TRIMTAB_DB`` or ``sqlite:///runs/trimtab.db`` (what the
control commands read too); the run id is the portfolio file's name without its suffix;
the paper exchange's database is ``runner.paper_db`` or, beside a SQLite store, the
store's file name with ``.paper.db``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimtab.app.control import default_db
from trimtab.engine.cycle import CycleObserver
from trimtab.engine.live import Envelope, LiveRunner, LiveSubaccount, ReplayClock
from trimtab.engine.portfolio_file import Portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, PreparedPortfolio, prepare_portfolio
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


def paper_db_path(store_url: str, portfolio: Portfolio, options: RunOptions) -> Path:
    """Where the paper exchange keeps its books (see the module docstring)."""
    if options.paper_db:
        return Path(options.paper_db)
    configured = portfolio.settings.runner.paper_db
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_absolute() else portfolio.folder / path
    if store_url.startswith("sqlite:///"):
        db = Path(store_url.removeprefix("sqlite:///"))
        return db.with_name(db.stem + ".paper.db")
    if "://" not in store_url:
        db = Path(store_url)
        return db.with_name(db.stem + ".paper.db")
    return Path("runs") / "paper-exchange.db"


@dataclass
class PaperRun:
    """A built run: call ``run()``; ``runner`` and ``store`` for inspection."""

    runner: LiveRunner
    clock: ReplayClock
    store: Store
    exchange: PaperExchange
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
) -> PaperRun:
    """Every part of the run of ``portfolio`` (see the module docstring)."""
    replay = None if options.replay == "auto" else options.replay
    if options.replay is None:
        raise ValueError(
            "trimtab run needs --replay DATA for now: paper trading on live prices takes "
            "bars from the exchange as they close, which this machine cannot reach; "
            "give a data folder or file to replay (e.g. --replay ../shared/data)"
        )
    settings = portfolio.settings
    if settings.transfers or settings.rebalance_capital is not None:
        log.warning(
            "%s: transfers and rebalance_capital are not made by trimtab run yet "
            "(backtests make them); the subaccounts keep their capital",
            portfolio.source,
        )
    popts = PortfolioOptions(
        data=replay,
        start=options.start,
        end=options.end,
        timeframe=options.timeframe,
        costs=options.costs,
    )
    prep = prepared if prepared is not None else prepare_portfolio(portfolio, popts)
    context = prep.context
    subs = []
    # Copies: a prepared portfolio may serve several runs (tests build the context once).
    for spec, plan in zip(copy.deepcopy(prep.specs), copy.deepcopy(prep.plans), strict=True):
        sub = plan.settings
        envelope = (
            Envelope(sub.envelope.max_order_notional, sub.envelope.max_daily_turnover)
            if sub.envelope is not None
            else None
        )
        step = PipelineStep(spec.policy, spec.safety, subaccount=plan.name)
        subs.append(LiveSubaccount(plan.name, step, plan.capital, sub.mode, envelope))
    account = settings.account
    breaker = CircuitBreaker(account.breakers, account.limits, scope="account")
    url = options.db or default_db()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    store = Store.open(url)
    run_id = options.run_id or Path(portfolio.source).stem
    exchange_path = paper_db_path(url, portfolio, options)
    try:
        exchange = PaperExchange(
            exchange_path,
            context.market,
            balances={s.name: s.capital for s in subs},
            costs=options.costs,
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
        kind="paper",
    )
    clock = ReplayClock(
        context.market.index, options.speed, tick_seconds=settings.runner.tick_seconds
    )
    return PaperRun(runner, clock, store, exchange, run_id, _mask_url(url), exchange_path)


__all__ = ["PaperRun", "RunOptions", "build_run", "default_db", "paper_db_path"]
