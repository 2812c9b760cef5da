"""The ``trimtab`` command line: thin over the engine, data and analytics packages."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress

app = typer.Typer(
    help="trimtab: portfolio manager for crypto. Backtests, risk reviews, rebalance plans, data tools.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Find, check and download market data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
risk_app = typer.Typer(help="Check the risk models out of sample.", no_args_is_help=True)
app.add_typer(risk_app, name="risk")


def _print_version(value: bool) -> None:
    if value:
        from trimtab import __version__

        typer.echo(f"trimtab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """trimtab: portfolio manager for crypto. Backtests, risk reviews, rebalance plans, data tools."""


# Tables stay readable when output goes to a file or a pipe (rich would use 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# Exceptions that mean "the user's input is wrong": shown as one clear message.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    FileNotFoundError,
    PermissionError,
)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user mistakes into a one-line error and exit code 2 (``TRIMTAB_DEBUG=1`` shows tracebacks)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from trimtab.data.errors import DataError

        try:
            return fn(*args, **kwargs)
        except (DataError, *_USER_ERRORS, *_ledger_error()) as exc:
            if os.environ.get("TRIMTAB_DEBUG"):
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            # Messages quote paths and symbols, which may hold "[...]": print, not markup.
            err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _ledger_error() -> tuple[type[BaseException], ...]:
    """``LedgerError`` if its module is loaded (a command that never imported the ledger
    cannot raise it; importing it would pull in pandas)."""
    account = sys.modules.get("trimtab.domain.account")
    return (account.LedgerError,) if account is not None else ()


def _progress() -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal and not os.environ.get("TRIMTAB_PROGRESS"),
    )


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(s.strip().upper().replace("/", "") for s in value.split(",") if s.strip())
    if not items:
        raise ValueError("--symbols is empty")
    return items


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "money":
        return f"{value:,.0f}"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.2f}"


def comparison_table(
    metrics: dict[str, dict[str, float]], title: str, labels: dict[str, str] | None = None
) -> Table:
    from trimtab.analytics.metrics import METRIC_ROWS

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in metrics:
        table.add_column((labels or {}).get(name, name), justify="right")
    for key, label, kind in METRIC_ROWS:
        table.add_row(label, *[_fmt(m.get(key), kind) for m in metrics.values()])
    return table


def _what_changed(policy: str, metrics: dict[str, dict[str, float]]) -> str:
    """One line per baseline: how the chosen policy moved the risk and return figures."""
    mine = metrics[policy]
    lines = []
    for name, base in metrics.items():
        if name == policy:
            continue
        parts = [
            f"volatility {_fmt(base['volatility'], 'pct')} -> {_fmt(mine['volatility'], 'pct')}",
            f"max drawdown {_fmt(base['max_drawdown'], 'pct')} -> {_fmt(mine['max_drawdown'], 'pct')}",
            f"Sharpe {_fmt(base['sharpe'], 'num')} -> {_fmt(mine['sharpe'], 'num')}",
            f"exposure {_fmt(base['average_exposure'], 'pct')} -> {_fmt(mine['average_exposure'], 'pct')}",
        ]
        lines.append(f"{policy} vs {name}: " + ", ".join(parts))
    return "\n".join(lines)


def _universe_label(spec: Any, n_symbols: int) -> str:
    """``top 10 by volume of 23 symbols`` for a ranked universe, else ``23 symbols``."""
    if spec.universe and spec.universe.startswith("top:"):
        n = spec.universe.split(":", 1)[1]
        return f"top {n} by 30-day volume, re-ranked monthly, from {n_symbols} symbols"
    return f"{n_symbols} symbols"


def _run_backtest(
    spec: Any,
    out: Path | None,
    db: str | None = None,
    run_id: str | None = None,
    commit_every: int | None = None,
) -> None:
    from trimtab.config import load_config
    from trimtab.engine.runner import load_for_spec, run_comparison
    from trimtab.journal import check_run_folder, write_run

    if out is not None:
        check_run_folder(out)  # refuse a bad --out before the run, not after it
    # Validated once, before the data loads, and passed down as objects.
    settings = load_config(spec.config) if spec.config else None
    recorder, store_errors = None, ()
    if db is not None and run_id is not None:
        doc = _comparison_spec(spec)
        recorder, store_errors = _store_recorder(doc, db, run_id, commit_every)
    with console.status("loading data..."):
        panel = load_for_spec(spec)
    with _progress() as progress:
        tasks: dict[str, Any] = {}

        def on_step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        try:
            comparison = run_comparison(
                spec, panel=panel, progress=on_step, settings=settings, recorder=recorder
            )
        except store_errors as exc:  # the store refused (another spec, a lost server)
            raise ValueError(str(exc)) from None
        finally:
            if recorder is not None:
                recorder.store.close()
    doc = comparison.to_json()
    title = (
        f"{spec.policy} vs baselines, {doc['start'][:10]} to {doc['end'][:10]}, "
        f"{_universe_label(spec, len(doc['symbols']))}, {doc['timeframe']}, "
        f"fees {spec.fee_bps:g} bps"
    )
    if len(spec.rules) > 1:
        # Rules compared on the same targets: label columns by rule, and sum up the
        # first rule against the monthly calendar.
        labels = {spec.policy: spec.rules[0]}
        labels.update({f"equal-weight[{r}]": r for r in spec.rules[1:]})
        console.print(comparison_table(comparison.metrics, title, labels))
        by_rule = {labels[n]: m for n, m in comparison.metrics.items() if n in labels}
        if "calendar:monthly" in by_rule and spec.rules[0] != "calendar:monthly":
            a, b = by_rule[spec.rules[0]], by_rule["calendar:monthly"]
            console.print(
                f"{spec.rules[0]} vs calendar:monthly: turnover after buy-in "
                f"{_fmt(b['rebalance_turnover'], 'pct')} -> {_fmt(a['rebalance_turnover'], 'pct')}, "
                f"fees after buy-in {_fmt(b['rebalance_fees'], 'money')} -> "
                f"{_fmt(a['rebalance_fees'], 'money')}, tracking error "
                f"{_fmt(b['tracking_error'], 'pct')} -> {_fmt(a['tracking_error'], 'pct')}, "
                f"net return {_fmt(b['total_return'], 'pct')} -> {_fmt(a['total_return'], 'pct')}"
            )
    else:
        console.print(comparison_table(comparison.metrics, title))
        console.print(_what_changed(spec.policy, comparison.metrics))
    for note in comparison.notes:
        console.print(f"[yellow]note:[/] {note}")
    if doc["data"].get("synthetic"):
        console.print(f"[yellow]data:[/] {SAMPLE_NOTE}", highlight=False)
    warnings = doc["data"].get("issues", {}).get("warnings", 0)
    if warnings:
        console.print(
            f"[yellow]data:[/] {warnings} warnings while loading (see result.json 'data')"
        )
    if out is not None:
        main = comparison.results[spec.policy]
        folder = write_run(
            out,
            doc,
            main.equity,
            main.weights,
            main.trades,
            main.decisions,
            main.rejections,
            main.states,
            main.ledger,
        )
        written = sorted(f.name for f in folder.iterdir() if not f.name.startswith("."))
        console.print(f"wrote {escape(str(out))}/: {', '.join(written)}")
    if recorder is not None:
        console.print(
            f"recorded {spec.policy} as run {escape(repr(run_id))} in {escape(recorder.store.url)}",
            highlight=False,
        )


def _sha256(path: str | Path | None) -> str | None:
    import hashlib

    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _comparison_spec(spec: Any) -> dict[str, Any]:
    """What a recorded comparison run is: the command's options and the --config file's
    digest, so the same command resumes it and another one under its name is refused."""
    import dataclasses

    return {
        "command": "backtest",
        "options": dataclasses.asdict(spec),
        "config_sha256": _sha256(spec.config),
    }


def _store_recorder(
    doc: dict[str, Any], db: str, run_id: str, commit_every: int | None
) -> tuple[Any, tuple[type[Exception], ...]]:
    """``--db URL --run-id NAME``: the recorder of the run that ``doc`` describes, and
    the store's error type."""
    from trimtab.engine.recording import RunRecorder
    from trimtab.journal.store import Store, StoreError

    try:
        store = Store.open(db)
    except StoreError as exc:
        raise ValueError(str(exc)) from None

    def announce(message: str) -> None:
        console.print(f"[yellow]store:[/] {escape(message)}", highlight=False)

    recorder = RunRecorder(store, run_id, doc, commit_bars=commit_every, announce=announce)
    return recorder, (StoreError,)


# Transfers printed at the end of a portfolio backtest; an allocator makes many.
_TRANSFERS_SHOWN = 12

_TRANSFER_STATUS = {"done": "[green]done[/]", "cut": "[yellow]cut[/]", "refused": "[red]refused[/]"}


def _run_portfolio_backtest(
    path: Path, out: Path | None, store: tuple[str, str, int | None] | None = None, **options: Any
) -> Any:
    """``trimtab backtest --portfolio FILE``: every subaccount and the total; ``store``:
    (--db, --run-id, --commit-every) to record it. Returns the run and the data it ran on."""
    import dataclasses

    from trimtab.engine.portfolio_file import load_portfolio
    from trimtab.engine.portfolio_run import TOTAL, PortfolioOptions, data_spec, run_portfolio
    from trimtab.engine.runner import load_for_spec
    from trimtab.journal import check_run_folder
    from trimtab.journal.files import RunFiles, write_portfolio_run

    if out is not None:
        check_run_folder(out)
    portfolio = load_portfolio(path)  # validated before any data loads
    run_options = PortfolioOptions(**options)
    recorder, store_errors = None, ()
    if store is not None:
        doc = {
            "command": "backtest --portfolio",
            "portfolio_sha256": _sha256(path),
            "options": {**options, "costs": dataclasses.asdict(run_options.costs)},
        }
        recorder, store_errors = _store_recorder(doc, *store)
    with console.status("loading data..."):
        panel = load_for_spec(data_spec(portfolio, run_options))
    with _progress() as progress:
        task = progress.add_task("portfolio", total=None)

        def on_step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            run = run_portfolio(
                portfolio, run_options, panel=panel, progress=on_step, recorder=recorder
            )
        except store_errors as exc:
            raise ValueError(str(exc)) from None
        finally:
            if recorder is not None:
                recorder.store.close()
    doc = run.to_json()
    subs = doc["subaccounts"]
    title = (
        f"{len(subs)} subaccounts of {escape(str(path))}, {doc['start'][:10]} to "
        f"{doc['end'][:10]}, {doc['timeframe']}, fees {run.options.costs.taker_fee_bps:g} bps"
    )
    metrics = {**run.metrics}
    labels = {n: f"{n}\n{s['strategy']}" for n, s in subs.items()}
    labels[TOTAL] = "TOTAL"
    console.print(comparison_table(metrics, title, labels))
    rows = Table(title="Subaccounts", title_justify="left")
    for col in ("subaccount", "strategy", "capital", "net transfers", "end equity", "state"):
        rows.add_column(
            col, justify="left" if col in ("subaccount", "strategy", "state") else "right"
        )
    for name, s in subs.items():
        m = s["metrics"]
        rows.add_row(
            name,
            s["strategy"],
            _fmt(s["capital"], "money"),
            _fmt(m.get("net_transfers"), "money"),
            _fmt(m.get("end_equity"), "money"),
            s["final_state"] or "",
        )
    console.print(rows)
    if run.transfers:
        shown = run.transfers[-_TRANSFERS_SHOWN:]
        title = "Transfers (each through the transfer guard)"
        if len(shown) < len(run.transfers):
            title += f": the last {len(shown)} of {len(run.transfers)} (all in transfers.csv)"
        table = Table(title=title, title_justify="left")
        for col in ("when", "from", "to", "requested", "moved", "status", "reason", "guard"):
            table.add_column(col, justify="right" if col in ("requested", "moved") else "left")
        for t in shown:
            table.add_row(
                t["timestamp"][:16].replace("T", " "),
                t["from"],
                t["to"],
                _fmt(t["requested"], "money"),
                _fmt(t["moved"], "money"),
                _TRANSFER_STATUS.get(t["status"], t["status"]),
                escape(t.get("reason") or ""),
                escape("; ".join(t.get("checks") or ())),
            )
        console.print(table)
    state = doc["account"]["final_state"]
    if state and state != "active":
        console.print(f"[yellow]account:[/] the account breaker ends {state}")
    for note in run.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if doc["data"].get("synthetic"):
        console.print(f"[yellow]data:[/] {SAMPLE_NOTE}", highlight=False)
    if out is not None:
        files = {
            name: RunFiles(
                run.subaccount_json(name),
                r.equity,
                r.weights,
                r.trades,
                r.decisions,
                r.rejections,
                r.states,
                r.ledger,
            )
            for name, r in run.subaccounts.items()
        }
        folder = write_portfolio_run(out, doc, run.equity_frame(), files, run.transfers)
        written = sorted(f.name for f in folder.iterdir() if not f.name.startswith("."))
        console.print(
            f"wrote {escape(str(out))}/: {', '.join(written)} (subaccounts/: {', '.join(files)})"
        )
    if recorder is not None and store is not None:
        console.print(
            f"recorded as run {escape(repr(store[1]))} in {escape(recorder.store.url)}",
            highlight=False,
        )
    return run, panel


def _beside_btc(run: Any, panel: Any) -> None:
    """The portfolio's total beside BTC bought at the first bar and held (the taker fee
    once), over the same closes: the demo's question, does the portfolio earn its keep?"""
    from trimtab.analytics.metrics import compute_metrics
    from trimtab.analytics.report import btc_held
    from trimtab.engine.portfolio_run import TOTAL
    from trimtab.engine.runner import find_btc

    btc = find_btc(panel.symbols)
    if btc is None:
        return
    held = btc_held(run.equity, panel.close[btc], run.options.costs.taker_fee_bps)
    ppy = panel.periods_per_year
    metrics = {
        "portfolio": run.metrics[TOTAL],
        f"{btc} held": compute_metrics(held, periods_per_year=ppy),
    }
    console.print(
        comparison_table(metrics, "The portfolio beside BTC bought at the first bar and held")
    )


DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        metavar="DIR",
        help="Data folder or file (default: $TRIMTAB_DATA, then ../shared/data, then the "
        "download cache, else a synthetic sample market).",
    ),
]

ExchangeOpt = Annotated[
    str | None,
    typer.Option(
        "--exchange",
        metavar="ID",
        help="Read the holdings from this exchange through ccxt (binance) instead of a file.",
    ),
]
HoldSubOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--subaccount",
        metavar="NAME",
        help="With --exchange: the subaccount (its keys: TRIMTAB_<NAME>_API_KEY and "
        "_API_SECRET, or --keys); repeatable; default: main.",
    ),
]
ExchangeUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--exchange-url",
        metavar="URL",
        help="With --exchange: another endpoint for its API (a local emulator, a proxy).",
    ),
]
TestnetOpt = Annotated[
    bool, typer.Option("--testnet", help="With --exchange: its testnet (ccxt's sandbox).")
]
KeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        metavar="FILE",
        help="With --exchange: owner-only YAML of NAME: {api_key, secret}.",
    ),
]


def _holdings_source(
    portfolio: Path | None,
    exchange: str | None,
    subaccounts: list[str] | None,
    url: str | None,
    testnet: bool,
    keys: Path | None,
    folder: Path,
) -> Path:
    """The holdings file to read: ``--portfolio``, or one written from the exchange."""
    if (portfolio is None) == (exchange is None):
        raise ValueError("give the holdings: --portfolio FILE, or --exchange ID to read them")
    if portfolio is not None:
        if subaccounts or url or testnet or keys:
            raise ValueError(
                "--subaccount, --exchange-url, --testnet and --keys go with --exchange"
            )
        return portfolio
    from trimtab.app.exchange import holdings_from_exchange

    assert exchange is not None
    with console.status(f"reading the holdings from {exchange}..."):
        return holdings_from_exchange(
            subaccounts or ["main"],
            folder,
            exchange=exchange.lower(),
            keys_file=keys,
            url=url,
            testnet=testnet,
        )


SAMPLE_NOTE = (
    "a SYNTHETIC sample market generated by trimtab (not real prices); for real data run "
    "`trimtab data download` or pass --data DIR"
)


def _say_if_sample(location: Any) -> None:
    """One line on stderr when the data is the synthetic sample (stdout stays the report)."""
    if location.synthetic:
        err.print(f"[yellow]data:[/] {SAMPLE_NOTE}", highlight=False)


@app.command()
@_friendly
def backtest(
    data: DataOpt = None,
    start: Annotated[
        str | None, typer.Option(metavar="DATE", help="First bar traded (UTC date).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(metavar="DATE", help="Last bar (UTC date, inclusive).")
    ] = None,
    symbols: Annotated[
        str | None,
        typer.Option(metavar="SYMBOLS", help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT."),
    ] = None,
    universe: Annotated[
        str | None,
        typer.Option(
            metavar="top:N", help="top:N by trailing 30-bar quote volume, re-ranked monthly."
        ),
    ] = None,
    policy: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="managed | equal-weight (with --rebalance) | equal-hold | equal-monthly | btc-hold.",
        ),
    ] = "managed",
    timeframe: Annotated[
        str | None,
        typer.Option(metavar="TF", help="Bar timeframe to load (default 1d if present)."),
    ] = None,
    fee_bps: Annotated[float, typer.Option(metavar="BPS", help="Taker fee in bps.")] = 10.0,
    maker_fee_bps: Annotated[
        float, typer.Option(metavar="BPS", help="Maker fee in bps (limit orders).")
    ] = 2.0,
    half_spread_bps: Annotated[
        float, typer.Option(metavar="BPS", help="Half the bid-ask spread in bps.")
    ] = 2.0,
    spread: Annotated[
        str,
        typer.Option(
            metavar="MODE",
            help="fixed: --half-spread-bps always; bars: estimated from each bar's high, low "
            "and close (Abdi-Ranaldo, trailing 30 bars), at least --half-spread-bps.",
        ),
    ] = "fixed",
    impact_bps: Annotated[
        float,
        typer.Option(
            metavar="BPS", help="Market impact in bps at 1% of bar volume (square-root law)."
        ),
    ] = 10.0,
    max_volume_share: Annotated[
        float,
        typer.Option(
            metavar="FRACTION",
            help="Largest share of a bar's quote volume one order fills (0.1 = 10%); "
            "the rest expires.",
        ),
    ] = 0.10,
    capital: Annotated[
        float, typer.Option(metavar="USDT", help="Initial cash in USDT.")
    ] = 100_000.0,
    risk_free: Annotated[
        float,
        typer.Option(metavar="RATE", help="Annual risk-free rate for Sharpe/Sortino (fraction)."),
    ] = 0.0,
    on_bad_data: Annotated[str, typer.Option(metavar="MODE", help="fail | drop | repair")] = "fail",
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Folder for result.json, equity.csv, weights.csv, trades.csv, decisions.jsonl.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="YAML configuration: limits, breakers, governor (see README)."
        ),
    ] = None,
    rebalance: Annotated[
        str | None,
        typer.Option(
            metavar="RULE",
            help="Rule of --policy equal-weight: calendar:daily|weekly|monthly, threshold:0.05, "
            "cost-aware; several comma-separated, or all, to compare them on the same targets.",
        ),
    ] = None,
    portfolio: Annotated[
        Path | None,
        typer.Option(
            "--portfolio",
            metavar="FILE",
            help="Portfolio file (YAML): many isolated subaccounts, each with its strategy, "
            "capital and limits, and the transfers between them (see examples/portfolio.yaml). "
            "--start, --end, --timeframe and --data win over the file's backtest: block.",
        ),
    ] = None,
    walk_forward: Annotated[
        bool,
        typer.Option(
            "--walk-forward",
            help="With --portfolio: each strategy (core, trend, mean-reversion) chooses its "
            "parameters again every quarter (its walk_forward: section) from the past only.",
        ),
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="Also record the run of --policy (or --portfolio) in this store "
            "(sqlite:///runs/bt.db, postgresql+psycopg://USER:PASSWORD@HOST/DB), as run "
            "--run-id; the same command started again resumes it after a kill, or reads a "
            "finished run back.",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", metavar="NAME", help="The run's name in --db."),
    ] = None,
    commit_every: Annotated[
        int | None,
        typer.Option(
            "--commit-every",
            metavar="BARS",
            help="With --db: bars written per store transaction (default: one every 0.5 s "
            "of run time); a kill loses at most the bars since the last one.",
        ),
    ] = None,
) -> None:
    """Backtest a policy beside the baselines (equal-hold, equal-monthly, btc-hold), or
    the subaccounts of a portfolio file (--portfolio)."""
    from trimtab.domain.quotes import check_traded_quotes
    from trimtab.engine.runner import RunSpec

    if (db is None) != (run_id is None):
        raise ValueError(
            "--db and --run-id go together: --db URL names the store, --run-id NAME the run"
        )
    if commit_every is not None and (db is None or commit_every < 1):
        raise ValueError("--commit-every takes a number of bars >= 1, with --db")
    if portfolio is not None:
        given = {
            "--symbols": symbols is not None,
            "--universe": universe is not None,
            "--policy": policy != "managed",
            "--config": config is not None,
            "--rebalance": rebalance is not None,
            "--capital": capital != 100_000.0,
        }
        clash = [flag for flag, used in given.items() if used]
        if clash:
            raise ValueError(
                f"{', '.join(clash)}: with --portfolio, each subaccount's strategy, symbols, "
                "capital and settings come from the portfolio file"
            )
        _run_portfolio_backtest(
            portfolio,
            out,
            store=(db, run_id, commit_every) if db is not None and run_id is not None else None,
            data=data,
            start=start,
            end=end,
            timeframe=timeframe,
            costs=RunSpec(
                fee_bps=fee_bps,
                maker_fee_bps=maker_fee_bps,
                half_spread_bps=half_spread_bps,
                spread=spread,
                impact_bps=impact_bps,
                max_volume_share=max_volume_share,
            ).costs,
            risk_free=risk_free,
            validation=on_bad_data,
            walk_forward=walk_forward,
        )
        return
    if walk_forward:
        raise ValueError(
            "--walk-forward refits the strategies of a portfolio file: use it with --portfolio"
        )

    # Before loading any data: a pair quoted outside USDT (ADABTC) cannot be run.
    check_traded_quotes(_split(symbols) or (), {}, "USDT", where="--symbols (cash in USDT)")
    spec = RunSpec(
        policy=policy,
        data=data,
        start=start,
        end=end,
        symbols=_split(symbols),
        universe=universe,
        timeframe=timeframe,
        fee_bps=fee_bps,
        maker_fee_bps=maker_fee_bps,
        half_spread_bps=half_spread_bps,
        spread=spread,
        impact_bps=impact_bps,
        max_volume_share=max_volume_share,
        initial_cash=capital,
        risk_free=risk_free,
        validation=on_bad_data,
        config=str(config) if config is not None else None,
        rebalance=rebalance,
    )
    _run_backtest(spec, out, db=db, run_id=run_id, commit_every=commit_every)


DEMO_START = "2019-01-01"
# The default portfolio: the checkout's examples/portfolio.yaml, else the copy shipped in
# the package (a test keeps the two the same).
_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolio.yaml"
DEFAULT_PORTFOLIO = (
    _EXAMPLE if _EXAMPLE.is_file() else Path(__file__).resolve().parent / "default_portfolio.yaml"
)


@app.command()
@_friendly
def demo(
    data: DataOpt = None,
    out: Annotated[Path, typer.Option(metavar="PATH", help="Output folder.")] = Path("runs/demo"),
) -> None:
    """Backtest the default portfolio (examples/portfolio.yaml: core, trend and carry
    under the allocator) on the discovered data, 2019 on, beside BTC held (with no data
    anywhere: on the synthetic sample market, and it says so)."""
    run, panel = _run_portfolio_backtest(DEFAULT_PORTFOLIO, out, data=data, start=DEMO_START)
    _beside_btc(run, panel)


@data_app.command("where")
@_friendly
def data_where(data: DataOpt = None) -> None:
    """Show which data folder would be used, and why."""
    from trimtab.data import find_data_dir

    location = find_data_dir(data)
    console.print(f"{location.path}  (chosen by {location.how})")
    if location.synthetic:
        console.print(SAMPLE_NOTE, highlight=False)


@data_app.command("check")
@_friendly
def data_check(
    path: Annotated[
        Path | None,
        typer.Argument(metavar="PATH", help="A data file or folder (default: the data found)."),
    ] = None,
    timeframe: Annotated[
        str | None, typer.Option(metavar="TF", help="Timeframe to check in a folder.")
    ] = None,
    on_bad_data: Annotated[str, typer.Option(metavar="MODE", help="fail | drop | repair")] = "fail",
    data: DataOpt = None,
) -> None:
    """Validate a file or folder of bars and report every problem found."""
    from trimtab.data import find_data_dir, load_panel

    if path is not None and data is not None:
        raise ValueError("give the data to check as PATH or as --data, not both")
    if path is None and data is not None:
        path = Path(data)
    if path is None:
        location = find_data_dir()
        console.print(f"checking {escape(str(location))}")
        _say_if_sample(location)
        path = location.path
    panel = load_panel(path, timeframe=timeframe, policy=on_bad_data)
    prov = panel.provenance
    console.print(
        f"{len(panel.symbols)} symbols, {len(panel.index)} bars of {panel.timeframe}, "
        f"{panel.index[0]:%Y-%m-%d %H:%M} to {panel.index[-1]:%Y-%m-%d %H:%M} UTC"
    )
    issues = prov.get("issues", {})
    console.print(f"errors: {issues.get('errors', 0)}, warnings: {issues.get('warnings', 0)}")
    kinds = prov.get("issue_kinds", {})
    if kinds:
        console.print("by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    for line in prov.get("warnings", []):
        console.print(f"  [yellow]{escape(line)}[/]", highlight=False)


@data_app.command("download")
@_friendly
def data_download(
    exchange: Annotated[
        str, typer.Option(metavar="ID", help="ccxt exchange id, e.g. binance.")
    ] = "binance",
    symbols: Annotated[
        str,
        typer.Option(
            metavar="SYMBOLS", help="Comma-separated ccxt symbols, e.g. BTC/USDT,ETH/USDT."
        ),
    ] = "BTC/USDT,ETH/USDT",
    timeframe: Annotated[
        str, typer.Option(metavar="TF", help="Bar timeframe, e.g. 1d or 1h.")
    ] = "1d",
    since: Annotated[
        str, typer.Option(metavar="DATE", help="First bar to fetch (UTC date).")
    ] = "2020-01-01",
    until: Annotated[
        str | None, typer.Option(metavar="DATE", help="Last bar to fetch (default: now).")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Cache folder (default $TRIMTAB_CACHE or ~/.cache/trimtab)."
        ),
    ] = None,
) -> None:
    """Download OHLCV bars through ccxt into the Parquet cache (incremental)."""
    from trimtab.data import download_ohlcv
    from trimtab.data.discovery import cache_dir as default_cache_dir

    cache_dir = cache or default_cache_dir()
    wanted = [s.strip() for s in symbols.split(",") if s.strip()]
    with _progress() as progress:
        task = progress.add_task("download", total=None)

        def on_progress(symbol: str, bars: int) -> None:
            progress.update(task, description=symbol[:14], completed=bars)

        summary = download_ohlcv(
            exchange, wanted, timeframe, since, until, cache_dir=cache_dir, progress=on_progress
        )
    for symbol, bars in summary.items():
        span = (
            f"{bars['timestamp'].min():%Y-%m-%d} to {bars['timestamp'].max():%Y-%m-%d}"
            if len(bars)
            else "no bars"
        )
        console.print(f"{symbol}: {len(bars)} bars, {span}")
    console.print(f"cached in {cache_dir}; use it with --data {cache_dir}")


@data_app.command("markets")
@_friendly
def data_markets(
    exchange: Annotated[
        str, typer.Option(metavar="ID", help="ccxt exchange id, e.g. binance.")
    ] = "binance",
    cache: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Cache folder (default $TRIMTAB_CACHE or ~/.cache/trimtab)."
        ),
    ] = None,
) -> None:
    """Fetch the exchange's lot sizes, order minimums and perpetual margin brackets
    through ccxt into the cache; `trimtab rebalance` uses the lot rules for subaccounts
    on that exchange (binanceusdm: Binance's USDT perpetuals, brackets need a key)."""
    from trimtab.data.discovery import cache_dir as default_cache_dir
    from trimtab.data.markets import fetch_markets, markets_path

    folder = cache or default_cache_dir()
    with console.status(f"loading {exchange} markets..."):
        got = fetch_markets(exchange, folder)
    console.print(f"{len(got.spot)} spot markets cached in {markets_path(folder, exchange)}")
    if got.perps:
        console.print(
            f"{len(got.perps)} perpetuals, {len(got.margin_tiers)} with margin brackets"
            + (f"; {len(got.tiers_skipped)} unusable" if got.tiers_skipped else "")
        )
    if got.tiers_note:
        console.print(f"{got.tiers_note}; perpetuals use the built-in margin brackets")


@app.command()
@_friendly
def review(
    portfolio: Annotated[
        Path | None,
        typer.Option(
            "--portfolio",
            metavar="FILE",
            help="Holdings file (YAML or CSV); see examples/holdings.yaml.",
        ),
    ] = None,
    exchange: ExchangeOpt = None,
    subaccount: HoldSubOpt = None,
    exchange_url: ExchangeUrlOpt = None,
    testnet: TestnetOpt = False,
    keys: KeysOpt = None,
    data: DataOpt = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="text | markdown | json | html (a web page with charts; give --out FILE.html).",
        ),
    ] = "text",
    out: Annotated[
        Path | None, typer.Option(metavar="PATH", help="Write the report to this file too.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            metavar="DATE", help="Review date (UTC; default: the file's as_of, else the last bar)."
        ),
    ] = None,
    timeframe: Annotated[
        str | None, typer.Option(metavar="TF", help="Bar timeframe (default 1d).")
    ] = None,
) -> None:
    """Review the portfolio you hold (a file, or read from the exchange with --exchange):
    risk score, flags and recommendations.

    The score comes with its factor breakdown, liquidation proximity, concentration and
    regime; flags are ranked by severity and each recommendation gives its reason."""
    import tempfile

    from trimtab.review import run_review

    if format not in ("text", "markdown", "md", "json", "html"):
        raise ValueError(f"--format must be text, markdown, json or html, not {format!r}")
    if format == "html" and out is None and sys.stdout.isatty():
        raise ValueError(
            "--format html writes a web page: give --out FILE.html (or redirect it to a file)"
        )
    with tempfile.TemporaryDirectory() as folder:
        source = _holdings_source(
            portfolio, exchange, subaccount, exchange_url, testnet, keys, Path(folder)
        )
        with console.status("reviewing..."):
            if format == "html":
                from trimtab.review.render import review_html

                text = review_html(source, data, timeframe=timeframe, as_of=as_of)
            else:
                text = run_review(source, data, fmt=format, timeframe=timeframe, as_of=as_of)
    if out is not None:
        from trimtab.journal import write_text_atomic

        write_text_atomic(out, text)  # the old report or the new one, never half of one
    if format == "html":
        if out is None:
            sys.stdout.write(text)  # the page itself, for a redirect
        else:
            err.print(f"wrote {out} ({len(text.encode()) / 1e6:.1f} MB)")
        return
    if format == "json":
        print(text)
    else:
        console.print(text, highlight=False, markup=False)
    if out is not None:
        err.print(f"wrote {out}")


@app.command("rebalance")
@_friendly
def rebalance_cmd(
    targets: Annotated[
        Path, typer.Option("--targets", metavar="FILE", help="Target weights YAML (see README).")
    ],
    portfolio: Annotated[
        Path | None,
        typer.Option("--portfolio", metavar="FILE", help="Holdings file (YAML or CSV)."),
    ] = None,
    data: DataOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            metavar="DATE", help="Plan date (UTC; default: the holdings' as_of, else the last bar)."
        ),
    ] = None,
    fee_bps: Annotated[
        float | None,
        typer.Option(
            metavar="BPS",
            help="Taker fee in bps (default: the subaccount's exchange schedule, else 10).",
        ),
    ] = None,
    book: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="FILE",
            help="Order book file (Binance depth or Tardis snapshot CSV) for quoted spreads; repeatable.",
        ),
    ] = None,
    spread: Annotated[
        str,
        typer.Option(
            metavar="MODE",
            help="Half-spreads without a book: auto (estimated from hourly or finer bars, "
            "fixed on daily), bars (always estimate), fixed (2 bps).",
        ),
    ] = "auto",
    min_notional: Annotated[
        float,
        typer.Option(
            metavar="USDT",
            help="Exchange minimum order in USDT (markets: in the targets file overrides).",
        ),
    ] = 5.0,
    config: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="YAML configuration: its limits: and clusters: guard the plan, its "
            "rebalance: section sets the bands.",
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help="Write the plan as JSON to this file."),
    ] = None,
    exchange: ExchangeOpt = None,
    subaccount: HoldSubOpt = None,
    exchange_url: ExchangeUrlOpt = None,
    testnet: TestnetOpt = False,
    keys: KeysOpt = None,
) -> None:
    """Plan the orders that move your holdings toward target weights (sends nothing).

    Each order comes with its reason, expected cost and benefit; what is left untraded
    says why."""
    import tempfile

    from trimtab.config import load_config
    from trimtab.data import find_data_dir, load_panel
    from trimtab.data.discovery import cache_dir as default_cache_dir
    from trimtab.data.markets import cached_market_rules, cached_perpetuals
    from trimtab.execution.costs import CostModel
    from trimtab.execution.spreads import quoted_half_spread_bps, read_books
    from trimtab.review.holdings import load_holdings
    from trimtab.review.rebalance_plan import (
        load_leverage,
        load_markets,
        load_targets,
        plan_rebalance,
        render_plan,
    )

    with tempfile.TemporaryDirectory() as folder:
        source = _holdings_source(
            portfolio, exchange, subaccount, exchange_url, testnet, keys, Path(folder)
        )
        holdings = load_holdings(source)
    wanted = load_targets(targets, holdings)
    cfg = load_config(config) if config else None
    settings = cfg.rebalance if cfg else None
    quoted: dict[str, float] = {}
    for path in book or []:
        quoted.update(quoted_half_spread_bps(read_books(path)))
    location = find_data_dir(data)
    _say_if_sample(location)
    panel = load_panel(location.path)
    venues = {(h.exchange or "").lower() for h in holdings.subaccounts.values()} - {""}
    exchange_rules = {v: cached_market_rules(v, default_cache_dir()) for v in venues}
    exchange_perps = {v: cached_perpetuals(v, default_cache_dir()) for v in venues}
    plan = plan_rebalance(
        holdings,
        wanted,
        panel,
        as_of=as_of,
        costs=None if fee_bps is None else CostModel(taker_fee_bps=fee_bps),
        settings=settings,
        quoted_spreads=quoted,
        spread=spread,
        min_notional=min_notional,
        markets=load_markets(targets),
        exchange_rules=exchange_rules,
        exchange_perps=exchange_perps,
        # The configured hard limits guard the plan's targets and orders.
        limits=cfg.limits if cfg else None,
        clusters=cfg.cluster_map() if cfg else None,
        leverage=load_leverage(targets, holdings),
    )
    console.print(render_plan(plan), highlight=False, markup=False)
    _write_json(json_out, plan)


StartOpt = Annotated[
    str | None,
    typer.Option(metavar="DATE", help="First bar evaluated (UTC date); earlier bars are history."),
]
EndOpt = Annotated[str | None, typer.Option(metavar="DATE", help="Last bar (UTC date, inclusive).")]
SymbolsOpt = Annotated[
    str | None,
    typer.Option(metavar="SYMBOLS", help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT."),
]
UniverseOpt = Annotated[
    str | None,
    typer.Option(metavar="top:N", help="top:N by trailing 30-bar quote volume, re-ranked monthly."),
]
JsonOpt = Annotated[
    Path | None,
    typer.Option("--json", metavar="FILE", help="Write the results as JSON to this file."),
]


def _load_members(data, start, end, symbols, universe, timeframe=None):
    """Panel and universe for the risk commands, with the backtest's data options."""
    from trimtab.engine.runner import RunSpec, load_for_spec, select_members

    spec = RunSpec(
        data=data,
        start=start,
        end=end,
        symbols=_split(symbols),
        universe=universe,
        timeframe=timeframe,
    )
    with console.status("loading data..."):
        panel = load_for_spec(spec)
    if panel.provenance.get("synthetic"):
        err.print(f"[yellow]data:[/] {SAMPLE_NOTE}", highlight=False)
    return select_members(panel, spec)


def _write_json(path: Path | None, doc: dict) -> None:
    if path is None:
        return
    import json

    from trimtab.domain.decisions import json_ready
    from trimtab.journal import write_text_atomic

    write_text_atomic(path, json.dumps(json_ready(doc), indent=2, allow_nan=False) + "\n")
    console.print(f"wrote {path}")


@risk_app.command("evaluate")
@_friendly
def risk_evaluate(
    data: DataOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    symbols: SymbolsOpt = None,
    universe: UniverseOpt = None,
    timeframe: Annotated[
        str | None, typer.Option(metavar="TF", help="Bar timeframe (default 1d).")
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(metavar="FRACTION", help="Loss that counts as a large drawdown (fraction)."),
    ] = 0.10,
    horizon: Annotated[float, typer.Option(metavar="DAYS", help="Horizon in days.")] = 7,
    json_out: JsonOpt = None,
) -> None:
    """Out-of-sample check of the drawdown probability model (walk-forward logistic
    regression) against a model that uses trailing volatility alone."""
    from trimtab.risk.drawdown_model import evaluate_drawdown_model

    panel, members = _load_members(data, None, end, symbols, universe, timeframe)
    with console.status("walk-forward fitting..."):
        doc = evaluate_drawdown_model(
            panel, start=start, end=end, threshold=threshold, horizon=horizon, universe=members
        )
    table = Table(
        title=(
            f"P(equal-weight portfolio loses > {threshold:.0%} within {horizon:g} days), "
            f"out of sample, {doc['n_samples']} bars, {doc.get('n_events', 'n/a')} events"
        ),
        title_justify="left",
    )
    for col in ("model", "AUC", "Brier"):
        table.add_column(col, justify="left" if col == "model" else "right")
    table.add_row("trimtab factors", f"{doc['auc']:.3f}", f"{doc['brier']:.4f}")
    table.add_row("volatility only", f"{doc['baseline_auc']:.3f}", f"{doc['baseline_brier']:.4f}")
    console.print(table)
    calib = Table(title="Calibration (out of sample)", title_justify="left")
    for col in ("predicted", "observed", "count"):
        calib.add_column(col, justify="right")
    for row in doc.get("calibration", []):
        calib.add_row(
            f"{row['mean_predicted']:.1%}", f"{row['observed_rate']:.1%}", str(row["count"])
        )
    console.print(calib)
    _write_json(json_out, doc)


@risk_app.command("backtest-var")
@_friendly
def risk_backtest_var(
    data: DataOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    symbols: SymbolsOpt = None,
    universe: UniverseOpt = None,
    timeframe: Annotated[
        str | None, typer.Option(metavar="TF", help="Bar timeframe (default 1d).")
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """VaR/CVaR forecasts of the equal-weight portfolio, backtested with the Kupiec and
    Christoffersen tests (95 % and 99 %, one bar ahead)."""
    from trimtab.risk.evaluation import equal_weights, var_coverage

    panel, members = _load_members(data, start, end, symbols, universe, timeframe)
    doc = var_coverage(panel, equal_weights(panel, members), start=start, end=end)
    table = Table(
        title=f"VaR coverage, equal-weight portfolio, {doc['start'][:10]} to {doc['end'][:10]}, {doc['n_bars']} bars",
        title_justify="left",
    )
    for col in (
        "method",
        "level",
        "hits",
        "hit rate",
        "expected",
        "Kupiec p",
        "Christoffersen p",
        "verdict",
    ):
        table.add_column(col, justify="right" if col != "method" else "left")
    for method, by_level in doc["methods"].items():
        for level, row in by_level.items():
            ok = (row["kupiec_p"] or 0) >= 0.05 and (row["christoffersen_p"] or 0) >= 0.05
            table.add_row(
                method,
                level,
                str(row["hits"]),
                f"{row['hit_rate']:.2%}",
                f"{row['expected_rate']:.0%}",
                f"{row['kupiec_p']:.3f}",
                f"{row['christoffersen_p']:.3f}",
                "pass" if ok else "[red]fail[/]",
            )
    console.print(table)
    console.print(
        "pass = neither test rejects at 5 %. The forecast for bar t+1 uses returns up to t only."
    )
    _write_json(json_out, doc)


@app.command()
@_friendly
def scan(
    data: DataOpt = None,
    as_of: Annotated[
        str | None, typer.Option(metavar="DATE", help="Scan date (UTC; default: the last bar).")
    ] = None,
    top: Annotated[int, typer.Option(metavar="N", help="Rows to show.")] = 20,
    json_out: JsonOpt = None,
) -> None:
    """Rank every asset by correlation breakdown, volatility regime change and funding."""
    import pandas as pd

    from trimtab.data import find_data_dir, load_panel, read_funding
    from trimtab.risk.scan import scan_universe

    location = find_data_dir(data)
    _say_if_sample(location)
    with console.status("loading data..."):
        panel = load_panel(location.path)
        funding_files = (
            sorted(location.path.glob("funding_*.csv*")) if location.path.is_dir() else []
        )
        funding = (
            pd.concat([read_funding(f) for f in funding_files], ignore_index=True)
            if funding_files
            else None
        )
    result = scan_universe(panel, as_of=as_of, funding=funding)
    when = result.attrs["as_of"]
    table = Table(
        title=f"Scan of {len(result)} assets at {when:%Y-%m-%d %H:%M} UTC", title_justify="left"
    )
    for col in (
        "symbol",
        "alert",
        "driver",
        "corr shift z",
        "avg corr 30/180",
        "vol regime z",
        "funding carry",
        "funding z",
    ):
        table.add_column(col, justify="left" if col in ("symbol", "driver") else "right")
    labels = {"corr_shift_z": "correlation", "vol_regime_z": "volatility", "funding_z": "funding"}

    def f(x: float, fmt: str) -> str:
        return "" if x != x else format(x, fmt)

    for row in result.head(top).itertuples():
        table.add_row(
            row.symbol,
            f(row.alert, ".2f"),
            labels.get(row.driver, ""),
            f(row.corr_shift_z, "+.2f"),
            f"{f(row.avg_corr_short, '.2f')}/{f(row.avg_corr_long, '.2f')}",
            f(row.vol_regime_z, "+.2f"),
            f(row.funding_carry, ".1%"),
            f(row.funding_z, "+.2f"),
        )
    console.print(table)
    _write_json(json_out, {"as_of": when.isoformat(), "assets": result.to_dict(orient="records")})


@app.command("run")
@_friendly
def run_cmd(
    portfolio: Annotated[
        Path,
        typer.Option(
            "--portfolio",
            metavar="FILE",
            help="Portfolio file: subaccounts with their strategy, mode (monitor, approve, "
            "auto), envelope, limits, breakers; runner and alerts sections.",
        ),
    ],
    replay: Annotated[
        str | None,
        typer.Option(
            "--replay",
            metavar="DATA",
            help="Drive the run with historical bars from this data folder or file instead "
            "of the wall clock ('auto': $TRIMTAB_DATA, ../shared/data, the download cache, "
            "else the synthetic sample).",
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", metavar="DATE", help="First bar to run (UTC).")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="DATE",
            help="Last bar to run (UTC, inclusive); later "
            "runs of the same command carry on from here.",
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed",
            metavar="N",
            help="Replay N times faster than the wall clock (86400: a daily bar a second); "
            "default: as fast as it computes.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="The store (default $TRIMTAB_DB, else sqlite:///runs/trimtab.db).",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", metavar="NAME", help="Default: the portfolio file's name."),
    ] = None,
    paper_db: Annotated[
        str | None,
        typer.Option(
            "--paper-db",
            metavar="FILE",
            help="The paper exchange's database (default: beside the store).",
        ),
    ] = None,
    timeframe: Annotated[
        str | None, typer.Option("--timeframe", metavar="TF", help="Bar length, e.g. 1d, 1h.")
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Trade on the exchange itself, with real money (asks you to confirm). "
            "Default: the paper exchange.",
        ),
    ] = False,
    testnet: Annotated[
        bool,
        typer.Option(
            "--testnet",
            help="Trade on the exchange's testnet (ccxt's sandbox mode, checked on before "
            "anything is sent).",
        ),
    ] = False,
    exchange_url: Annotated[
        str | None,
        typer.Option(
            "--exchange-url",
            metavar="URL",
            help="Another endpoint for the exchange's API (a local emulator, a proxy); "
            "needs --live.",
        ),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            metavar="FILE",
            help="Owner-only YAML of each subaccount's api_key and secret (default: "
            "TRIMTAB_<SUBACCOUNT>_API_KEY / _API_SECRET).",
        ),
    ] = None,
    confirm: Annotated[
        str | None,
        typer.Option(
            "--confirm",
            metavar="RUN_ID",
            help="Confirm --live without a prompt: the run id (for scripts).",
        ),
    ] = None,
    api: Annotated[
        bool,
        typer.Option(
            "--api",
            help="Serve the REST API and the dashboard beside the run, as `trimtab serve` "
            "does (needs TRIMTAB_API_SECRET); it stops when the run ends.",
        ),
    ] = False,
    api_port: Annotated[
        int, typer.Option("--api-port", metavar="PORT", help="The API's port (with --api).")
    ] = 8080,
    api_host: Annotated[
        str,
        typer.Option("--api-host", metavar="HOST", help="The API's address (loopback default)."),
    ] = "127.0.0.1",
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Let --api-host be a non-loopback address."),
    ] = False,
) -> None:
    """Run the portfolio manager: each subaccount's pipeline at every bar close, a paper
    exchange (or, with --live / --testnet, the exchange through ccxt), modes monitor ->
    approve -> auto, human commands applied within a cycle. A run on an exchange starts
    HALTED and trades only once its books agree with the exchange's (`trimtab
    reconcile`).

    State lives in the store: stop it (Ctrl-C, SIGTERM, even SIGKILL) and start the same
    command again, and it carries on without repeating or losing an order. While it runs
    (or not), `trimtab status`, `proposals`, `approve`, `reject`, `pause`, `resume`,
    `close`, `limits set` and `mode set` act on it."""
    import logging

    from trimtab.app.run import RunOptions, build_live, build_run, make_observers
    from trimtab.app.secrets import install_secret_filter
    from trimtab.engine.portfolio_file import load_portfolio
    from trimtab.execution.paper import PaperExchangeError
    from trimtab.journal.store import StoreError

    logging.basicConfig(
        level=os.environ.get("TRIMTAB_LOG", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_secret_filter()  # every loaded secret is masked in every log line
    loaded = load_portfolio(portfolio)
    if exchange_url is not None and not live:
        raise ValueError("--exchange-url trades on that endpoint: give --live too")
    if live and testnet:
        raise ValueError("--live trades on the exchange, --testnet on its testnet: give one")
    if (live or testnet) and replay is not None:
        raise ValueError(
            "--replay drives a paper run with historical bars; --live and --testnet trade on "
            "the wall clock: give one"
        )
    if live:
        _confirm_live(loaded, run_id or Path(loaded.source).stem, confirm, exchange_url)
    options = RunOptions(
        db=db,
        run_id=run_id,
        replay=replay,
        start=start,
        end=end,
        speed=speed,
        timeframe=timeframe,
        paper_db=paper_db,
        live=live,
        testnet=testnet,
        exchange_url=exchange_url,
        keys_file=None if keys is None else str(keys),
    )
    from trimtab.execution.ccxt_venue import CcxtVenueError

    if api:  # before anything runs: a missing secret or a remote host is refused first
        from trimtab.api.server import check_host, secret_from_env

        secret_from_env()
        check_host(api_host, allow_remote)
    try:
        if replay is None:
            live = build_live(loaded, options, make_observers=make_observers)
        else:
            run = build_run(loaded, options, make_observers=make_observers)
    except (StoreError, PaperExchangeError, CcxtVenueError) as exc:
        raise ValueError(str(exc)) from None
    built = live if replay is None else run
    server = None
    if api:
        from trimtab.api.server import start_beside
        from trimtab.app.control import default_db

        try:
            server = start_beside(
                db or default_db(), built.run_id, api_host, api_port, allow_remote
            )
        except BaseException:
            built.close()
            raise
        err.print(f"API and dashboard on {server.url}")
    try:
        _run_built(replay, built, run if replay is not None else None)
    finally:
        if server is not None:
            server.stop()


def _run_built(replay: str | None, live: Any, run: Any) -> None:
    """The run of ``trimtab run``: live (wall clock) or replayed, with its output."""
    from trimtab.execution.ccxt_venue import CcxtVenueError
    from trimtab.execution.paper import PaperExchangeError
    from trimtab.journal.store import StoreError

    if replay is None:
        try:
            _run_live(live)
        except CcxtVenueError as exc:
            raise ValueError(
                f"{exc}; nothing is lost: start the same command again to carry on"
            ) from None
        return
    runner = run.runner

    _stop_on_signals(runner)
    try:
        nxt = runner.start()
    except (StoreError, PaperExchangeError) as exc:
        run.close()
        raise ValueError(str(exc)) from None
    ctx = runner.context
    total = ctx.end_i - ctx.start_i + 1
    done0 = nxt - ctx.start_i
    err.print(
        f"run {run.run_id!r}: store {run.store_url}, paper exchange {run.exchange_path}; "
        + (
            "starting"
            if done0 == 0
            else f"carrying on at {ctx.market.timestamps[min(nxt, ctx.end_i)]:%Y-%m-%d %H:%M}"
        )
    )
    with _progress() as bar:
        task = bar.add_task("replay", total=total, completed=done0)
        original = runner.cycle

        def _cycle(i: int) -> Any:
            out = original(i)
            bar.update(task, completed=i - ctx.start_i + 1)
            return out

        runner.cycle = _cycle  # type: ignore[method-assign]
        try:
            last = run.run()
        except (StoreError, PaperExchangeError) as exc:
            raise ValueError(str(exc)) from None
    _print_run_summary(run, last)


def _confirm_live(loaded: Any, run_id: str, confirm: str | None, url: str | None) -> None:
    """--live reaches a real exchange: the run id typed at a prompt, or --confirm RUN_ID."""
    subs = loaded.settings.subaccounts
    venues = ", ".join(sorted({s.exchange for s in subs.values()}))
    where = url or venues
    if confirm is not None:
        if confirm != run_id:
            raise ValueError(f"--confirm {confirm!r} is not this run's id ({run_id!r})")
        return
    if not sys.stdin.isatty():
        raise ValueError(
            f"--live trades real money on {where}: confirm with --confirm {run_id} "
            "(no terminal to ask in)"
        )
    modes = ", ".join(f"{n} ({s.mode})" for n, s in subs.items())
    err.print(f"[bold]--live[/]: run {run_id!r} will trade on {where} with real money: {modes}")
    typed = typer.prompt(f"type the run id ({run_id}) to go on")
    if typed.strip() != run_id:
        raise ValueError("not confirmed: nothing was started")


def _stop_on_signals(runner: Any) -> None:
    """SIGTERM and Ctrl-C finish the cycle under way, then stop the runner."""
    import signal

    def _stop(signum: int, _frame: Any) -> None:
        err.print(f"{signal.Signals(signum).name}: finishing the cycle under way, then stopping")
        runner.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def _run_live(live: Any) -> None:
    """The live paper run: a line per bar (a progress bar has no end to show)."""

    runner = live.runner

    _stop_on_signals(runner)
    original = runner.cycle

    def _cycle(i: int) -> Any:
        out = original(i)
        err.print(f"{out.timestamp:%Y-%m-%d %H:%M} UTC: account {out.account_equity:,.2f} USDT")
        return out

    runner.cycle = _cycle  # type: ignore[method-assign]
    paper = runner.kind == "paper"
    err.print(
        f"run {live.run_id!r} on live {live.feed.venue} bars ({live.feed.timeframe}): store "
        f"{live.store_url}, {'paper exchange' if paper else 'venue journal'} "
        f"{live.exchange_path}; Ctrl-C stops it"
    )
    if not paper:
        runner.start()  # reconciles first: say how the books compare before any cycle
        if runner.gate is not None:
            err.print(f"reconciliation: {runner.gate.summary()}")
    last = live.run()
    _print_run_summary(live, last)


def _print_run_summary(run: Any, last: int | None) -> None:
    from trimtab.journal.store import Store

    store = Store.open(run.store_url if "***" not in run.store_url else run.runner.store.url)
    try:
        status = store.load_state(run.run_id, "status") or {}
        pending = store.proposals(run.run_id, status="pending")
        orders = store.orders(run.run_id)
    finally:
        store.close()
    table = Table(title=f"run {run.run_id} at {status.get('timestamp', '-')}")
    for col in ("subaccount", "mode", "state", "equity USDT", "orders", "pending proposals"):
        table.add_column(col, justify="right" if col[0] in "eop" else "left")
    for name, s in (status.get("subaccounts") or {}).items():
        table.add_row(
            name,
            s["mode"] + (" (paused)" if s.get("paused") else ""),
            str(s["trading_state"]),
            f"{s['equity']:,.2f}",
            str(sum(1 for o in orders if o["subaccount"] == name)),
            str(sum(1 for p in pending if p["subaccount"] == name)),
        )
    console.print(table)
    db = run.store_url
    console.print("next:", highlight=False)
    for what in ("status", "proposals", "approve ID"):
        console.print(f"  trimtab {what} --db {db}", highlight=False, soft_wrap=True)


# --- trimtab sweep: parameter grids over a portfolio file (trimtab.engine.sweep) ---------

# The total's columns in the sweep's table: (metric, header, format of _fmt).
_SWEEP_COLUMNS = (
    ("total_return", "return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("max_drawdown", "max DD", "pct"),
    ("calmar", "Calmar", "num"),
    ("turnover", "turnover/yr", "pct"),
    ("fees_paid", "fees USDT", "money"),
)


@app.command("sweep")
@_friendly
def sweep_command(
    portfolio: Annotated[
        Path,
        typer.Option("--portfolio", metavar="FILE", help="Portfolio file (YAML) to sweep over."),
    ],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            metavar="KEY=V1,V2,...",
            help="A dotted key of the file and its values (YAML), e.g. "
            "subaccounts.trend.sizing.target_vol=0.25,0.35 or backtest.start=2021-01-01,"
            "2022-01-01; repeat for the cartesian product.",
        ),
    ],
    data: DataOpt = None,
    start: Annotated[
        str | None, typer.Option(metavar="DATE", help="First bar traded (UTC date).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(metavar="DATE", help="Last bar (UTC date, inclusive).")
    ] = None,
    timeframe: Annotated[
        str | None, typer.Option(metavar="TF", help="Bar timeframe to load (default 1d).")
    ] = None,
    fee_bps: Annotated[float, typer.Option(metavar="BPS", help="Taker fee in bps.")] = 10.0,
    half_spread_bps: Annotated[
        float, typer.Option(metavar="BPS", help="Half the bid-ask spread in bps.")
    ] = 2.0,
    impact_bps: Annotated[
        float, typer.Option(metavar="BPS", help="Market impact in bps at 1% of bar volume.")
    ] = 10.0,
    risk_free: Annotated[
        float, typer.Option(metavar="RATE", help="Annual risk-free rate (fraction).")
    ] = 0.0,
    on_bad_data: Annotated[str, typer.Option(metavar="MODE", help="fail | drop | repair")] = "fail",
    walk_forward: Annotated[
        bool,
        typer.Option(
            "--walk-forward",
            help="As backtest --walk-forward: each strategy subaccount refits its parameters "
            "from the past only (its walk_forward: section).",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Local processes (default: one per CPU, at most one per point; 1: this process).",
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Run the points on this Dask scheduler (tcp://host:port) instead; its "
            "workers need trimtab and the data at the same paths.",
        ),
    ] = None,
    rank_by: Annotated[
        str,
        typer.Option(
            metavar="METRIC",
            help="Sort by this metric: total.sharpe, total.calmar, trend.cagr, ... (drawdown, "
            "volatility, turnover and fees ascending, the rest descending).",
        ),
    ] = "total.sharpe",
    top: Annotated[int, typer.Option(metavar="N", help="Rows of the table printed.")] = 10,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder for sweep.csv and sweep.json."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Backtest a portfolio file at every point of a parameter grid: one row per point
    with the total's and each subaccount's metrics, ranked; on local processes or on a
    Dask cluster."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from trimtab.engine import sweep as sw
    from trimtab.engine.portfolio_file import load_portfolio
    from trimtab.engine.portfolio_run import PortfolioOptions
    from trimtab.engine.runner import RunSpec

    if top < 1:
        raise ValueError(f"--top must be at least 1 (got {top})")
    if workers is not None and cluster is not None:
        raise ValueError("--workers is for local processes; with --cluster, Dask's workers run")
    axes = sw.parse_grid(grid)
    flags = {"start": start, "end": end, "timeframe": timeframe, "data": data}
    for axis in axes:
        section, _, key = axis.key.partition(".")
        if section == "backtest" and flags.get(key) is not None:
            raise ValueError(
                f"--grid {axis.key} and --{key}: the flag wins over the file's backtest: "
                "block, so every point would run the same; drop one"
            )
    base = load_portfolio(portfolio)  # the file as it is: valid before any point
    rank_column, _ = sw.metric_column(rank_by, base.settings.subaccounts)
    if out is not None:
        sw.check_sweep_folder(out)
    options = PortfolioOptions(
        data=data,
        start=start,
        end=end,
        timeframe=timeframe,
        costs=RunSpec(
            fee_bps=fee_bps, half_spread_bps=half_spread_bps, impact_bps=impact_bps
        ).costs,
        risk_free=risk_free,
        validation=on_bad_data,
        walk_forward=walk_forward,
    )
    points = sw.grid_points(axes, source=str(portfolio))
    progress = Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("points"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        disable=quiet or (not err.is_terminal and not os.environ.get("TRIMTAB_PROGRESS")),
    )
    with progress:
        task = progress.add_task("sweep", total=len(points))

        def on_done(done: int, total: int, result: Any) -> None:
            progress.update(task, completed=done)
            if result.status == sw.ERROR:
                progress.console.print(
                    f"[red]point {result.point.index} failed[/] ({escape(result.point.label)}): "
                    f"{escape(result.error or '')}",
                    highlight=False,
                    soft_wrap=True,
                )

        outcome = sw.run_sweep(
            portfolio.read_text(encoding="utf-8"),
            portfolio.parent,
            options,
            points,
            workers=workers,
            cluster=cluster,
            on_done=on_done,
        )
    frame = sw.sweep_frame(outcome, axes, rank_by)
    doc = sw.sweep_doc(outcome, axes, frame, str(portfolio), rank_column, _sha256(portfolio))
    table = Table(
        title=f"sweep of {escape(str(portfolio))}: {len(points)} points, best "
        f"{min(top, len(frame))} by {rank_column}",
        title_justify="left",
    )
    table.add_column("#", justify="right")
    for axis in axes:
        table.add_column(escape(axis.key.removeprefix("subaccounts.")), justify="right")
    shown = list(_SWEEP_COLUMNS)
    if rank_column not in {f"total.{m}" for m, _, _ in shown}:
        shown.append((rank_column, rank_column, "num"))
    for _, header, _ in shown:
        table.add_column(escape(header), justify="right")
    table.add_column("status")
    for _, row in frame.head(top).iterrows():
        cells = [str(row["rank"])] + [escape(sw.show_value(row[a.key])) for a in axes]
        for metric, _, kind in shown:
            value = row[metric if "." in metric else f"total.{metric}"]
            cells.append(_fmt(value, kind))
        status = row["status"]
        cells.append(
            {"ok": "[green]ok[/]", "error": "[red]error[/]"}.get(status, f"[yellow]{status}[/]")
        )
        table.add_row(*cells)
    console.print(table)
    counts = doc["status"]
    where = (
        f"the Dask cluster at {cluster}"
        if outcome.executor == "dask"
        else f"{outcome.workers} local process{'es' if outcome.workers > 1 else ''}"
    )
    console.print(
        f"{counts['ok']} of {len(points)} points ran in {outcome.seconds:.1f} s on {where}"
        + (f"; {counts['error']} failed (each one's error above)" if counts["error"] else ""),
        highlight=False,
    )
    data_doc = doc["data"] if isinstance(doc["data"], dict) else {}
    if data_doc.get("synthetic"):
        console.print(f"[yellow]data:[/] {SAMPLE_NOTE}", highlight=False)
    if out is not None:
        written = sw.write_sweep(out, frame, doc)
        console.print(
            f"wrote {escape(str(out))}/: {', '.join(p.name for p in written)}", highlight=False
        )
    if outcome.interrupted:
        err.print(
            f"interrupted: {counts['ok'] + counts['error']} of {len(points)} points finished, "
            f"{counts['cancelled']} cancelled"
        )
        raise typer.Exit(130)
    if not counts["ok"]:
        raise typer.Exit(1)  # not one point ran: a script must not take this for results


# --- a run in the store, for trimtab report and trimtab attribution (issue 14) ------------

_DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Instead of RUN: the store a `trimtab backtest --db URL --run-id NAME` recorded "
        "the run in (sqlite:///runs/bt.db, postgresql+psycopg://...).",
    ),
]
_RunIdOpt = Annotated[
    str | None, typer.Option("--run-id", metavar="NAME", help="With --db: the run's name.")
]
_PortfolioOpt = Annotated[
    Path | None,
    typer.Option(
        "--portfolio",
        metavar="FILE",
        help="With --db: the portfolio file a --portfolio run was recorded from (default "
        "examples/portfolio.yaml); its sha256 must be the recorded one.",
    ),
]


def _run_source(run: Path | None, db: str | None, run_id: str | None) -> None:
    """RUN, or --db with --run-id: exactly one of the two."""
    if (db is None) != (run_id is None):
        raise ValueError(
            "--db and --run-id go together: --db URL names the store, --run-id NAME the run"
        )
    if run is None and db is None:
        raise ValueError("give a run: RUN (a run folder) or --db URL --run-id NAME")
    if run is not None and db is not None:
        raise ValueError(f"give RUN ({run}) or --db/--run-id, not both")


def _materialise_store_run(db: str, run_id: str, folder: Path, portfolio: Path | None) -> str:
    """Write the finished run ``run_id`` of store ``db`` to the run folder ``folder``, as
    ``trimtab backtest --db URL --run-id NAME --out DIR`` started again rewrites it: the
    same options, read back from the store without computing the recorded run again.
    Returns how to name the run (``run 'NAME' in URL``). Refuses a run that is not
    finished (reading it back would compute the rest and change the store)."""
    import dataclasses

    from trimtab.engine.portfolio_run import PortfolioOptions
    from trimtab.engine.runner import RunSpec
    from trimtab.journal.store import Store, StoreError

    try:
        with Store.open(db) as store:
            info = store.run(run_id)
            url = store.url
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    label = f"run {run_id!r} in {url}"
    if info is None:
        raise ValueError(f"no {label}: record it with trimtab backtest --db URL --run-id NAME")
    spec = info.spec or {}
    bars = (spec.get("clock") or {}).get("bars")
    done = info.checkpoint[0] + 1 if info.checkpoint is not None else 0
    if info.kind != "backtest" or spec.get("command") not in ("backtest", "backtest --portfolio"):
        raise ValueError(f"{label} is a {info.kind} run, not one of trimtab backtest")
    if bars is None or done != bars:
        raise ValueError(
            f"{label} is not finished ({done} of {bars or '?'} bars): start the same "
            "trimtab backtest command again to finish it, then report on it"
        )
    options = dict(spec.get("options") or {})
    with console.capture():  # the backtest's own tables: not this command's output
        if spec["command"] == "backtest":
            if portfolio is not None:
                raise ValueError(f"{label} is a one-policy run: --portfolio does not apply")
            for key in ("symbols", "baselines"):
                if options.get(key) is not None:
                    options[key] = tuple(options[key])
            names = {f.name for f in dataclasses.fields(RunSpec)}
            unknown = sorted(set(options) - names)
            if unknown:
                raise ValueError(f"{label}: options this trimtab does not know: {unknown}")
            _run_backtest(RunSpec(**options), folder, db=db, run_id=run_id)
        else:
            path = Path(portfolio).expanduser() if portfolio is not None else DEFAULT_PORTFOLIO
            if not path.is_file():
                raise ValueError(f"--portfolio {path}: no such file")
            want = spec.get("portfolio_sha256")
            if _sha256(path) != want:
                raise ValueError(
                    f"{label} was recorded from another portfolio file than {path} (sha256 "
                    f"{str(want)[:12]}...): give the one it was recorded from with --portfolio"
                )
            costs = type(PortfolioOptions().costs)(**options.pop("costs", {}))
            _run_portfolio_backtest(path, folder, store=(db, run_id, None), costs=costs, **options)
    return label


@app.command("report")
@_friendly
def report_cmd(
    run: Annotated[
        Path | None,
        typer.Argument(
            metavar="[RUN]",
            help="A run folder: the --out of `trimtab backtest` (one policy or --portfolio); "
            "or give --db and --run-id.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE.html",
            help="Where to write the report (default RUN/report.html; with --db, NAME.html here).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="PATH",
            help="Data file or folder for the prices (BTC held, the price chart), when the "
            "data file the run names in its result.json is not at hand.",
        ),
    ] = None,
    db: _DbOpt = None,
    run_id: _RunIdOpt = None,
    portfolio: _PortfolioOpt = None,
) -> None:
    """One self-contained HTML report of a run (a run folder, or a finished run in the
    store: --db/--run-id): equity and drawdown beside BTC held, exposure, risk and
    breakers, weights, allocation, trades with their reasons, metrics and attribution. It
    opens offline (plotly.js inlined) and stays small enough to e-mail."""
    import re
    import tempfile

    from trimtab.analytics.report import write_report

    _run_source(run, db, run_id)
    if db is None or run_id is None:
        assert run is not None
        with console.status("writing the report..."):
            path = write_report(run, out, data=data)
    else:
        if out is None:
            out = Path(re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip(".") or "run").with_suffix(
                ".html"
            )
        with tempfile.TemporaryDirectory(prefix="trimtab-report-") as tmp:
            with console.status("reading the run back from the store..."):
                label = _materialise_store_run(db, run_id, Path(tmp) / "run", portfolio)
            with console.status("writing the report..."):
                path = write_report(Path(tmp) / "run", out, data=data, source=label)
    size = path.stat().st_size / 1e6
    console.print(f"wrote {escape(str(path))} ({size:.1f} MB)", highlight=False)


# --- trimtab attribution RUN (issue 14) -------------------------------------------------


def _attr_money(value: float) -> str:
    """Quote currency to the cent; minus signs kept, '-0.00' shown as 0.00."""
    return f"{value + 0.0:,.2f}" if abs(value) >= 0.005 else "0.00"


def _attr_pct(value: float, digits: int = 2) -> str:
    return "" if value != value else f"{100 * value:.{digits}f}%"


def _attr_num(value: float, digits: int = 3) -> str:
    return "" if value != value else f"{value:.{digits}f}"


def _attr_lines_table(title: str, frame: Any, label: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    names = frame.index.names if frame.index.nlevels > 1 else [label]
    for name in names:
        table.add_column(str(name))
    for col in columns:
        table.add_column(col, justify="right")
    for key, row in frame.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells = [escape(str(k.date()) if hasattr(k, "date") else str(k)) for k in keys]
        table.add_row(*cells, *(_attr_money(float(row[c])) for c in columns))
    return table


@app.command("attribution")
@_friendly
def attribution_cmd(
    run: Annotated[
        Path | None,
        typer.Argument(
            metavar="[RUN]",
            help="A run folder: the --out of `trimtab backtest` (one policy or --portfolio); "
            "or give --db and --run-id.",
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option(metavar="DATE", help="First bar (UTC date, inclusive).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(metavar="DATE", help="Last bar (UTC date, inclusive).")
    ] = None,
    benchmark: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="Brinson-Fachler benchmark: btc, equal (equal weight of the run's universe) "
            "or cap (market-cap weights: needs the CoinGecko file, --caps).",
        ),
    ] = "btc",
    by: Annotated[
        str, typer.Option(metavar="PERIOD", help="Rows of the period tables: day or month.")
    ] = "month",
    segments: Annotated[
        str,
        typer.Option(
            metavar="KIND",
            help="Brinson-Fachler segments: asset (each symbol) or group (BTC, ETH, the "
            "other coins); a perpetual is always its own.",
        ),
    ] = "group",
    se: Annotated[
        str,
        typer.Option(
            "--se", metavar="KIND", help="Standard errors: hac (Newey-West) or plain OLS."
        ),
    ] = "hac",
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="PATH",
            help="Data file or folder for the prices, when the one the run's result.json "
            "names is not at hand.",
        ),
    ] = None,
    caps: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="CoinGecko market caps (price_mcap CSV) for --benchmark cap (default: the "
            "one in the run's data folder).",
        ),
    ] = None,
    db: _DbOpt = None,
    run_id: _RunIdOpt = None,
    portfolio: _PortfolioOpt = None,
) -> None:
    """Where a run's money came from (a run folder, or a finished run in the store:
    --db/--run-id): PnL lines that add up to the equity change net of transfers (price,
    spread and impact, fees, funding, liquidations) by subaccount and asset;
    Brinson-Fachler against a benchmark; timing against holding; beta and alpha against
    BTC and the market, with their confidence intervals."""
    import tempfile

    if by not in ("day", "month"):
        raise ValueError(f"--by must be day or month, not {by!r}")
    if segments not in ("asset", "group"):
        raise ValueError(f"--segments must be asset or group, not {segments!r}")
    if se not in ("hac", "plain"):
        raise ValueError(f"--se must be hac or plain, not {se!r}")
    if benchmark not in ("btc", "equal", "cap"):
        raise ValueError(f"--benchmark must be btc, equal or cap, not {benchmark!r}")
    _run_source(run, db, run_id)
    if db is None or run_id is None:
        assert run is not None
        _attribution(
            Path(run).expanduser(), str(run), start, end, benchmark, by, segments, se, data, caps
        )
        return
    with tempfile.TemporaryDirectory(prefix="trimtab-attribution-") as tmp:
        with console.status("reading the run back from the store..."):
            label = _materialise_store_run(db, run_id, Path(tmp) / "run", portfolio)
        _attribution(Path(tmp) / "run", label, start, end, benchmark, by, segments, se, data, caps)


def _attribution(
    folder: Path,
    label: str,
    start: str | None,
    end: str | None,
    benchmark: str,
    by: str,
    segments: str,
    se: str,
    data: str | None,
    caps: Path | None,
) -> None:
    """``trimtab attribution`` of the run folder ``folder`` (``label``: how to name it)."""
    import json

    from trimtab.analytics import attribution as at

    caps_path: Path | None = caps
    if benchmark == "cap" and caps_path is None and (folder / "result.json").is_file():
        doc = json.loads((folder / "result.json").read_text())
        caps_path = at.find_caps_file(data or doc)
        if caps_path is None:
            raise ValueError(
                "--benchmark cap needs market caps: no price_mcap file beside the run's data; "
                "give --caps FILE (the CoinGecko CSV)"
            )
    with console.status("reading the run..."):
        ledger = at.load_run(folder, data=data, caps=caps_path)
    a = at.attribute(ledger, start=start, end=end)
    lines = list(at.LINES)
    total = a.by_subaccount.loc["TOTAL"]
    console.print(
        f"[bold]Attribution of {escape(label)}[/], {a.start:%Y-%m-%d} to {a.end:%Y-%m-%d}: "
        f"PnL {_attr_money(total['pnl'])} USDT (equity {_attr_money(total['start_equity'])} -> "
        f"{_attr_money(total['end_equity'])}"
        f"{'; transfers between subaccounts net out' if len(ledger.subaccounts) > 1 else ''}"
        f"): the lines add up to it within {_attr_money(abs(total['residual']))}",
        highlight=False,
    )
    console.print(
        _attr_lines_table(
            "PnL by subaccount (USDT)",
            a.by_subaccount,
            "subaccount",
            [*lines, "total", "net_transfers"],
        )
    )
    for line in at.sleeve_lines_text(a):
        console.print(escape(line), highlight=False)
    by_asset = a.by_asset.copy()
    by_asset["order"] = by_asset["total"].abs()
    by_asset = by_asset.sort_values(["order"], ascending=False).sort_index(
        level="subaccount", sort_remaining=False
    )
    console.print(_attr_lines_table("PnL by asset (USDT)", by_asset, "asset", [*lines, "total"]))
    daily = a.daily
    if by == "month":
        keys = daily.index.tz_localize(None).to_period("M").start_time
        periods = daily.groupby(keys).sum()
    else:
        periods = daily
    periods = periods.assign(cumulative=periods["total"].cumsum())
    console.print(
        _attr_lines_table(f"PnL by {by} (USDT)", periods, by, [*lines, "total", "cumulative"])
    )
    freq = "M" if by == "month" else "D"
    notes: list[str] = []
    if ledger.prices is None:
        notes.append(
            "no prices (the run's data files are not at hand; give --data): no benchmark, "
            "timing or beta figures"
        )
    else:
        try:
            bf = at.brinson_fachler(
                ledger, benchmark, freq=freq, segments=segments, start=start, end=end
            )
        except at.AttributionError as exc:
            notes.append(str(exc))
            bf = None
        if bf is not None:
            link = "daily effects summed" if freq == "D" else "Carino-linked monthly"
            table = Table(
                title=f"Brinson-Fachler against {benchmark} ({link}; fractions of equity)",
                title_justify="left",
            )
            cols = [
                "portfolio",
                "benchmark",
                "active",
                "allocation",
                "selection",
                "interaction",
                "trading",
            ]
            table.add_column(by)
            for c in cols:
                table.add_column(c, justify="right")
            for ts, row in bf.periods.iterrows():
                table.add_row(f"{ts:%Y-%m-%d}", *(_attr_pct(row[c]) for c in cols))
            table.add_row(
                f"whole ({bf.link})", *(_attr_pct(bf.total[c]) for c in cols), style="bold"
            )
            console.print(table)
            seg = bf.segments.reindex(bf.segments["total"].abs().sort_values(ascending=False).index)
            table = Table(
                title=f"Brinson-Fachler by segment ({segments}; the largest 10)",
                title_justify="left",
            )
            table.add_column("segment")
            effects = ("allocation", "selection", "interaction", "trading", "total")
            for c in effects:
                table.add_column(c, justify="right")
            for name, row in seg.head(10).iterrows():
                table.add_row(
                    escape(str(name)),
                    *(_attr_pct(row[c]) for c in effects),
                )
            console.print(table)
        tm = at.timing(ledger, freq=freq, start=start, end=end)
        table = Table(
            title="Timing: the trades against holding the period's start quantities (USDT)",
            title_justify="left",
        )
        tcols = ["pnl", "hold", "trades", "costs", "funding", "timing"]
        table.add_column(by)
        for c in [*tcols, "timing_return"]:
            table.add_column(c, justify="right")
        for ts, row in tm.iterrows():
            table.add_row(
                f"{ts:%Y-%m-%d}",
                *(_attr_money(row[c]) for c in tcols),
                _attr_pct(row["timing_return"]),
            )
        console.print(table)
        table = Table(
            title=f"Beta and alpha ({'Newey-West HAC' if se == 'hac' else 'plain OLS'} "
            "standard errors, 95% intervals; alpha per bar x "
            f"{ledger.periods_per_year:g} bars a year, 365-day years)",
            title_justify="left",
        )
        for col in (
            "against",
            "beta",
            "beta 95%",
            "alpha/yr",
            "alpha/yr 95%",
            "alpha t",
            "p",
            "R2",
            "appraisal",
            "info ratio",
            "Sharpe",
            "its Sharpe",
        ):
            table.add_column(col, justify="left" if col == "against" else "right")
        timing_rows = []
        for against, label in (("btc", "BTC"), ("equal", "market (equal weight)")):
            ba = at.beta_alpha(ledger, against, cov=se, start=start, end=end)
            table.add_row(
                label,
                _attr_num(ba["beta"]),
                f"{_attr_num(ba['beta_ci'][0])} .. {_attr_num(ba['beta_ci'][1])}",
                _attr_pct(ba["alpha_annual"], 1),
                f"{_attr_pct(ba['alpha_annual_ci'][0], 1)} .. "
                f"{_attr_pct(ba['alpha_annual_ci'][1], 1)}",
                _attr_num(ba["alpha_t"], 2),
                _attr_num(ba["alpha_p"], 3),
                _attr_num(ba["r2"], 2),
                _attr_num(ba["appraisal_ratio"], 2),
                _attr_num(ba["information_ratio"], 2),
                _attr_num(ba["sharpe"], 2),
                _attr_num(ba["benchmark_sharpe"], 2),
            )
            for name, fit in (
                ("Treynor-Mazuy", at.treynor_mazuy(ledger, against, cov=se, start=start, end=end)),
                (
                    "Henriksson-Merton",
                    at.henriksson_merton(ledger, against, cov=se, start=start, end=end),
                ),
            ):
                t = fit.table().loc["gamma"]
                timing_rows.append((name, label, t))
        console.print(table)
        table = Table(
            title="Market timing coefficients (gamma > 0: more exposure before rises)",
            title_justify="left",
        )
        for col in ("model", "against", "gamma", "se", "t", "p"):
            table.add_column(col, justify="left" if col in ("model", "against") else "right")
        for name, label, t in timing_rows:
            table.add_row(
                name,
                label,
                _attr_num(t["coef"], 4),
                _attr_num(t["se"], 4),
                _attr_num(t["t"], 2),
                _attr_num(t["p"], 3),
            )
        console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


@app.command("mm")
@_friendly
def mm_cmd(
    book: Annotated[
        Path | None,
        typer.Option(help="Order-book file (Tardis, Binance, Bybit, parquet quotes)."),
    ] = None,
    trades: Annotated[
        Path | None, typer.Option(help="Trades file (Tardis, Binance trades/aggTrades, parquet).")
    ] = None,
    data: DataOpt = None,
    capital: Annotated[float, typer.Option(help="Starting capital (USDT).")] = 10_000.0,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="A market-making parameter, e.g. --set latency_ms=100 (repeatable).",
        ),
    ] = None,
    json_out: Annotated[
        Path, typer.Option("--json", help="Where to write the JSON report.")
    ] = Path("mm-report.json"),
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML chart (offline).")
    ] = None,
    exchange: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Quote on this exchange's live book (binance) instead of simulating files.",
        ),
    ] = None,
    symbol: Annotated[
        str, typer.Option(metavar="SYMBOL", help="With --exchange: the ccxt symbol.")
    ] = "BTC/USDT",
    live: Annotated[
        bool,
        typer.Option(
            "--live/--paper",
            help="With --exchange: post-only quotes on the exchange (real money: asks you to "
            "confirm), or paper fills simulated from its trades (default).",
        ),
    ] = False,
    testnet: Annotated[
        bool, typer.Option("--testnet", help="With --exchange: its testnet (ccxt sandbox).")
    ] = False,
    exchange_url: Annotated[
        str | None,
        typer.Option("--exchange-url", metavar="URL", help="With --live: another endpoint."),
    ] = None,
    cycles: Annotated[
        int | None, typer.Option(metavar="N", help="With --exchange: stop after N cycles.")
    ] = None,
    interval: Annotated[
        float, typer.Option(metavar="S", help="With --exchange: seconds between cycles.")
    ] = 1.0,
    db: Annotated[
        str | None,
        typer.Option(metavar="URL", help="With --exchange: the store (default $TRIMTAB_DB)."),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", metavar="NAME", help="With --exchange: run id.")
    ] = None,
    confirm: Annotated[
        str | None,
        typer.Option(metavar="RUN_ID", help="Confirm --live without a prompt: the run id."),
    ] = None,
    keys_file: Annotated[
        str | None,
        typer.Option(
            "--keys", metavar="FILE", help="Exchange keys (else TRIMTAB_MM_API_KEY/_SECRET)."
        ),
    ] = None,
) -> None:
    """Market making simulated on order-book and trade data (not on bars), or quoted on
    an exchange's live book with --exchange (paper or live).

    Quotes fill only when a trade crosses them, behind the queue displayed at their
    price, after a latency, post-only, with maker fees or rebates. Defaults: the book and
    trades files found in the data folder (e.g. ../shared/data/orderbook_samples)."""
    import yaml

    if exchange is not None:
        from trimtab.app.mm_live import MMLiveOptions, run_from_cli

        settings_live = {}
        for item in params or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set latency_ms=100")
            settings_live[key.strip()] = yaml.safe_load(value)
        opts = MMLiveOptions(
            exchange, symbol, live=live, testnet=testnet, exchange_url=exchange_url,
            cycles=cycles, interval_s=interval, db=db, run_id=run_id, capital=capital,
            settings=settings_live, keys_file=keys_file, confirm=confirm,
        )  # fmt: skip
        run_from_cli(opts, lambda text: typer.prompt(text), console.print)
        return
    if live or testnet or exchange_url or cycles is not None:
        raise ValueError(
            "--live, --testnet, --exchange-url and --cycles quote on an exchange: give "
            "--exchange binance (without it, trimtab mm simulates book and trade files)"
        )

    from trimtab.analytics.mm_report import report_doc, summary_rows, write_html
    from trimtab.data.discovery import find_data_dir
    from trimtab.strategies.market_making import BARS_REFUSAL, market_making_from_settings

    settings: dict[str, Any] = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. --set latency_ms=100")
        settings[key.strip()] = yaml.safe_load(value)
    if book is not None:
        settings["book"] = str(book)
    if trades is not None:
        settings["trades"] = str(trades)
    location = find_data_dir(data)
    if location.how in ("sample", "cache"):  # found, not given: say so, not an error
        if book is None or trades is None:
            err.print(
                f"[yellow]no order-book data:[/] the data found ({escape(str(location))}) is "
                "bars only. " + escape(BARS_REFUSAL),
                highlight=False,
                soft_wrap=True,
            )
            return
    folder = location.path
    sleeve = market_making_from_settings(settings, folder)
    with _progress() as progress:
        task = progress.add_task("market making", total=len(sleeve.book) + len(sleeve.trades))
        result = sleeve.run(capital, lambda done, total: progress.update(task, completed=done))
    table = Table(title="Market making (simulated on book and trades)", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, value in summary_rows(result):
        table.add_row(label, escape(value))
    console.print(table)
    for stop in result.stops:
        console.print(f"[yellow]stop:[/] {escape(stop['reason'])}", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    _write_json(json_out, report_doc(result))
    if html_out is not None:
        write_html(result, html_out)
        console.print(f"wrote {html_out}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


def _register_control() -> None:
    from trimtab.api.cli import register as register_api
    from trimtab.cli_control import register

    register(app)
    register_api(app)


_register_control()


def _register_copy() -> None:
    from trimtab.cli_copy import register

    register(app)


_register_copy()

if __name__ == "__main__":
    main()
