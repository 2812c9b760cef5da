"""``trimtab copy``: copy a leader's trades over the market data, thin over
``trimtab.strategies.copy``.

The leader is a CSV of trades or positions (``LEADER``), a run folder (``--leader-run
DIR``: ``trimtab backtest --out DIR``), or a run in a store (``--db URL --run-id
NAME``). Prints the summary and the first copies, writes ``--json FILE`` (summary,
settings, every record, the equity) and ``--html FILE`` (the copy's equity beside the
leader's, and each copy's delay slippage; plotly inlined, works offline). ``register``
adds the command to the ``trimtab`` app.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

#: How many copies the terminal table lists (the JSON has them all).
SHOWN = 12


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes as one line and exit code 2 (``TRIMTAB_DEBUG=1``: the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from trimtab.data.errors import DataError
        from trimtab.journal.store import StoreError

        try:
            return fn(*args, **kwargs)
        except (DataError, StoreError, ValueError, KeyError, FileNotFoundError) as exc:
            if os.environ.get("TRIMTAB_DEBUG"):
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            err.print(
                f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper


def _store_feed(db: str, run_id: str, subaccount: str | None) -> Any:
    """The fills and balances of run ``run_id`` in store ``db`` as a leader feed."""
    from trimtab.data.leader_feed import feed_from_rows
    from trimtab.journal.store import Store

    with Store.open(db, upgrade=False) as store:
        info = store.run(run_id)
        if info is None:
            raise ValueError(f"no run {run_id!r} in {store.url}")
        spec = info.spec or {}
        options = spec.get("options") or {}
        timeframe = options.get("timeframe") or spec.get("timeframe")
        return feed_from_rows(
            store.fills(run_id, floats=True),
            store.balances(run_id, floats=True),
            source=f"run {run_id!r} in {store.url}",
            timeframe=timeframe if isinstance(timeframe, str) else None,
            subaccount=subaccount,
        )


def _plain(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _num(x: float, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _html(path: Path, run: Any, leader: Any, title: str, meta: list[str]) -> None:
    import plotly.graph_objects as go

    from trimtab.analytics.report import figure_div, page
    from trimtab.journal import write_text_atomic

    eq = run.equity
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=eq.index, y=eq.to_numpy(), name="copy", mode="lines"))
    if leader is not None and len(leader):
        lead = leader[(leader.index >= eq.index[0]) & (leader.index <= eq.index[-1])]
        first = leader[leader.index <= eq.index[0]]
        base = float(first.iloc[-1]) if len(first) else float(lead.iloc[0]) if len(lead) else 0
        if base > 0:
            scaled = lead * float(eq.iloc[0]) / base
            fig.add_trace(
                go.Scatter(
                    x=scaled.index, y=scaled.to_numpy(), name="leader (scaled)", mode="lines"
                )
            )
    fig.update_layout(template="plotly_white", height=420, yaxis_title="USDT")
    fills = [r for r in run.records if r["kind"] == "fill" and r.get("leader_trade_id")]
    bars = go.Figure(
        go.Bar(
            x=[r["ts"] for r in fills],
            y=[r["slippage_bps"] for r in fills],
            text=[f"{r['leader_trade_id']} {r['side']} {r['symbol']}" for r in fills],
            name="delay slippage (bps)",
        )
    )
    bars.update_layout(template="plotly_white", height=320, yaxis_title="bps (+: cost)")
    sections = [
        ("Equity: the copy and its leader", figure_div(fig, "copy-equity")),
        ("Delay slippage per copied trade", figure_div(bars, "copy-slippage")),
    ]
    write_text_atomic(path, page(title, meta, sections))
    console.print(f"wrote {path}")


def copy_cmd(
    leader: Annotated[
        Path | None,
        typer.Argument(
            metavar="LEADER",
            help="CSV of the leader's trades (timestamp,symbol,side,quantity,price[,trade_id]"
            "[,equity]) or positions (timestamp,symbol,quantity[,price][,equity]).",
        ),
    ] = None,
    leader_run: Annotated[
        Path | None,
        typer.Option(
            "--leader-run", metavar="DIR", help="Copy a run folder of trimtab backtest --out DIR."
        ),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", metavar="URL", help="Copy a run recorded in this store.")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", metavar="NAME", help="The run in --db.")
    ] = None,
    subaccount: Annotated[
        str | None,
        typer.Option("--subaccount", metavar="NAME", help="The subaccount of a portfolio run."),
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", metavar="KIND", help="auto | trades | positions (LEADER).")
    ] = "auto",
    capital: Annotated[
        float, typer.Option("--capital", metavar="USDT", help="The copy's starting capital.")
    ] = 10_000.0,
    scaling: Annotated[
        str,
        typer.Option(
            "--scaling",
            metavar="RULE",
            help="equity_ratio (copy = fraction x copy equity / leader equity x leader "
            "quantity) | fixed_fraction (copy = fraction x leader quantity).",
        ),
    ] = "equity_ratio",
    fraction: Annotated[
        float, typer.Option("--fraction", help="Multiplier (see --scaling).")
    ] = 1.0,
    leader_equity: Annotated[
        float | None,
        typer.Option(
            "--leader-equity",
            metavar="USDT",
            help="The leader's starting equity (its path is rebuilt from its trades), when "
            "the feed has none.",
        ),
    ] = None,
    delay: Annotated[
        str, typer.Option("--delay", metavar="TIME", help="Copy delay: 30s, 5m, 1h, or seconds.")
    ] = "5m",
    timeframe: Annotated[
        str, typer.Option("--timeframe", metavar="TF", help="auto (finest available) | 1h | 1d.")
    ] = "auto",
    fee_bps: Annotated[float, typer.Option("--fee-bps", metavar="BPS", help="Taker fee.")] = 10.0,
    half_spread_bps: Annotated[
        float, typer.Option("--half-spread-bps", metavar="BPS", help="Half the spread paid.")
    ] = 2.0,
    slippage_bps: Annotated[
        float, typer.Option("--slippage-bps", metavar="BPS", help="Slippage on top of the spread.")
    ] = 3.0,
    max_trade_notional: Annotated[
        float | None, typer.Option("--max-trade-notional", metavar="USDT", help="Cap per copy.")
    ] = None,
    max_total_notional: Annotated[
        float | None,
        typer.Option("--max-total-notional", metavar="USDT", help="Cap on gross notional held."),
    ] = None,
    max_leverage: Annotated[
        float,
        typer.Option("--max-leverage", metavar="X", help="Gross notional / equity after a buy."),
    ] = 1.0,
    symbols: Annotated[
        str | None,
        typer.Option("--symbols", metavar="SYMBOLS", help="Symbols allowed (comma-separated)."),
    ] = None,
    stop_drawdown: Annotated[
        float | None,
        typer.Option(
            "--stop-drawdown",
            metavar="FRACTION",
            help="Unfollow at this drawdown (0.3 = 30%) of --stop-on's equity.",
        ),
    ] = 0.3,
    stop_on: Annotated[
        str, typer.Option("--stop-on", metavar="WHOSE", help="auto | leader | copy.")
    ] = "auto",
    on_stop: Annotated[
        str, typer.Option("--on-stop", metavar="ACTION", help="close (sell) | keep the holdings.")
    ] = "close",
    start: Annotated[str | None, typer.Option("--start", metavar="DATE")] = None,
    end: Annotated[str | None, typer.Option("--end", metavar="DATE")] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            metavar="DIR",
            help="Data folder (default: $TRIMTAB_DATA, ../shared/data, the download cache, "
            "else the synthetic sample).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Write the whole run as JSON.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", metavar="FILE", help="Write an HTML chart (offline).")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Follow the leader live: poll it every --interval and send the copies to "
            "--exchange (LEADER: a CSV that grows; none: the leader's account through ccxt, "
            "keys TRIMTAB_LEADER_API_KEY / _API_SECRET). --db/--run-id: the follower's store.",
        ),
    ] = False,
    exchange: Annotated[
        str, typer.Option("--exchange", metavar="NAME", help="--follow: the exchange (binance).")
    ] = "binance",
    testnet: Annotated[
        bool, typer.Option("--testnet", help="--follow: the exchange's testnet (ccxt sandbox).")
    ] = False,
    exchange_url: Annotated[
        str | None,
        typer.Option(
            "--exchange-url", metavar="URL", help="--follow: another endpoint (an emulator)."
        ),
    ] = None,
    paper: Annotated[
        bool, typer.Option("--paper", help="--follow: paper orders (not built yet).")
    ] = False,
    live: Annotated[
        bool,
        typer.Option("--live", help="--follow: send the orders (real money without --testnet)."),
    ] = False,
    confirm: Annotated[
        str | None,
        typer.Option("--confirm", metavar="RUN_ID", help="Confirm --live without a prompt."),
    ] = None,
    cycles: Annotated[
        int, typer.Option("--cycles", metavar="N", help="--follow: cycles to run.")
    ] = 1,
    interval: Annotated[
        float, typer.Option("--interval", metavar="S", help="--follow: seconds between cycles.")
    ] = 60.0,
    keys_file: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            metavar="FILE",
            help="--follow: owner-only YAML of NAME: {api_key, secret} (leader and follower).",
        ),
    ] = None,
) -> None:
    """Copy a leader's trades (a CSV, a run folder, a stored run) with a delay, scaled,
    within limits; report the slippage the delay costs and the tracking vs the leader.
    With --follow: follow it live (trimtab.engine.copy_live)."""
    from trimtab.data.discovery import find_data_dir
    from trimtab.data.leader_feed import read_leader_csv, read_leader_run
    from trimtab.strategies.copy import CopyStrategy, copy_params

    if follow:
        settings_f: dict[str, Any] = {
            "scaling": scaling,
            "fraction": fraction,
            "delay": delay,
            "fee_bps": fee_bps,
            "half_spread_bps": half_spread_bps,
            "slippage_bps": slippage_bps,
            "limits": {
                "max_leverage": max_leverage,
                **({"max_trade_notional": max_trade_notional} if max_trade_notional else {}),
                **({"max_total_notional": max_total_notional} if max_total_notional else {}),
                **(
                    {"symbols": [x.strip() for x in symbols.split(",") if x.strip()]}
                    if symbols
                    else {}
                ),
            },
            "stop_drawdown": stop_drawdown,
        }
        if leader_equity is not None:
            settings_f["leader_equity"] = leader_equity
        _follow(
            copy_params(settings_f),
            leader=leader,
            exchange=exchange,
            testnet=testnet,
            url=exchange_url,
            paper=paper,
            live=live,
            confirm=confirm,
            db=db,
            run_id=run_id,
            subaccount=subaccount or "copy",
            cycles=cycles,
            interval=interval,
            keys_file=keys_file,
        )
        return
    given = [x for x in (leader, leader_run, db) if x is not None]
    if len(given) != 1:
        raise ValueError(
            "give one leader: LEADER (a CSV), --leader-run DIR, or --db URL --run-id NAME"
        )
    if (db is None) != (run_id is None):
        raise ValueError("--db and --run-id go together")
    if kind not in ("auto", "trades", "positions"):
        raise ValueError(f"--kind must be auto, trades or positions, not {kind!r}")
    limits: dict[str, Any] = {"max_leverage": max_leverage}
    if max_trade_notional is not None:
        limits["max_trade_notional"] = max_trade_notional
    if max_total_notional is not None:
        limits["max_total_notional"] = max_total_notional
    if symbols is not None:
        limits["symbols"] = [s for s in symbols.split(",") if s.strip()]
    settings: dict[str, Any] = {
        "scaling": scaling,
        "fraction": fraction,
        "delay": delay,
        "timeframe": timeframe,
        "fee_bps": fee_bps,
        "half_spread_bps": half_spread_bps,
        "slippage_bps": slippage_bps,
        "limits": limits,
        "stop_drawdown": stop_drawdown,
        "stop_on": stop_on,
        "on_stop": on_stop,
        "start": start,
        "end": end,
    }
    if leader_equity is not None:
        settings["leader_equity"] = leader_equity
    params = copy_params(settings)
    if leader is not None:
        feed = read_leader_csv(leader, None if kind == "auto" else kind)  # type: ignore[arg-type]
    elif leader_run is not None:
        feed = read_leader_run(leader_run, subaccount)
    else:
        assert db is not None and run_id is not None
        feed = _store_feed(db, run_id, subaccount)
    location = find_data_dir(data)
    strategy = CopyStrategy(params, feed, location.path)
    run = strategy.simulate(capital)
    market = strategy.market()
    s = run.summary
    lo, hi = run.equity.index[0], run.equity.index[-1]
    title = f"copy of {feed.source}"
    meta = [
        f"{lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M} UTC, {market.timeframe} bars "
        f"({market.why}), delay {params.delay:g} s, {params.scaling} x {params.fraction:g}",
        f"data: {location}"
        + (" - SYNTHETIC sample, not real prices" if location.synthetic else ""),
    ]
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("Leader trades", _num(s["leader_trades"], ".0f")),
        (
            "Copied / skipped / clipped",
            f"{s['copied']:.0f} / {s['skipped']:.0f} / {s['clipped']:.0f}",
        ),
        ("Mean delay slippage (bps)", _num(s["mean_delay_slippage_bps"], ".1f")),
        ("  notional-weighted (bps)", _num(s["weighted_delay_slippage_bps"], ".1f")),
        ("  of which market move (bps)", _num(s["mean_market_bps"], ".1f")),
        ("Slippage vs leader (USDT)", _num(s["slippage_usdt"], ",.2f")),
        ("Fees (USDT)", _num(s["fees_usdt"], ",.2f")),
        ("Copy return", _num(s["copy_return"], ".2%")),
        ("Leader return", _num(s["leader_return"], ".2%")),
        ("Tracking error (ann.)", _num(s["tracking_error"], ".2%")),
        ("Correlation with leader", _num(s["tracking_correlation"], ".3f")),
        ("Max drawdown", _num(s["max_drawdown"], ".2%")),
        ("End equity (USDT)", _num(s["end_equity"], ",.0f")),
        ("Capacity (USDT)", _num(run.capacity, ",.0f")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for line in meta:
        console.print(escape(line))
    moves = [r["market_bps"] for r in run.records if r["kind"] == "fill" and "market_bps" in r]
    if moves and abs(statistics.median(moves)) > 1000:
        err.print(
            f"[yellow]warning:[/] the market moved a median {statistics.median(moves):+.0f} bps from the "
            "leader's prices to the copies' fills: the leader's prices do not look like this "
            "data's (another market, or the synthetic sample?)",
            highlight=False,
        )
    for code in sorted(k for k in s if k.startswith("skipped_")):
        console.print(f"skipped {s[code]:.0f}: {code.removeprefix('skipped_')}")
    for rec in run.records:
        if rec["kind"] == "stop":
            console.print(f"[bold]stop[/] {rec['ts']:%Y-%m-%d %H:%M}: {escape(rec['message'])}")
    fills = [r for r in run.records if r["kind"] == "fill"]
    if fills:
        t = Table(title=f"copies (first {min(SHOWN, len(fills))} of {len(fills)})")
        for col in (
            "fill time",
            "leader trade",
            "symbol",
            "side",
            "quantity",
            "leader px",
            "fill px",
            "slip bps",
            "clipped by",
        ):
            t.add_column(
                col,
                justify="right"
                if col in ("quantity", "leader px", "fill px", "slip bps")
                else "left",
            )
        for r in fills[:SHOWN]:
            t.add_row(
                f"{r['ts']:%Y-%m-%d %H:%M}",
                str(r.get("leader_trade_id") or "-"),
                r["symbol"],
                r["side"],
                f"{r['quantity']:.6g}",
                _num(r.get("leader_price", math.nan), ".6g"),
                f"{r['price']:.6g}",
                _num(r.get("slippage_bps", math.nan), ".1f"),
                escape(", ".join(c["code"] for c in r.get("clipped", []))),
            )
        console.print(t)
    if json_out is not None:
        from trimtab.domain.decisions import json_ready
        from trimtab.journal import write_text_atomic

        doc = {
            "leader": feed.source,
            "data": str(location),
            "synthetic": location.synthetic,
            "timeframe": market.timeframe,
            "timeframe_why": market.why,
            "capital": capital,
            "settings": params.model_dump(),
            "summary": s,
            "capacity": run.capacity,
            "records": run.records,
            "equity": [[t.isoformat(), v] for t, v in run.equity.items()],
        }
        text = json.dumps(json_ready(_plain(doc)), indent=1, allow_nan=False) + "\n"
        write_text_atomic(json_out, text)
        console.print(f"wrote {json_out}")
    if html_out is not None:
        leader_eq = strategy.leader_equity(run.equity.index[0])
        _html(html_out, run, leader_eq, title, meta)


def _follow(
    params: Any,
    *,
    leader: Path | None,
    exchange: str,
    testnet: bool,
    url: str | None,
    paper: bool,
    live: bool,
    confirm: str | None,
    db: str | None,
    run_id: str | None,
    subaccount: str,
    cycles: int,
    interval: float,
    keys_file: Path | None,
) -> None:
    """``trimtab copy --follow``: the follower loop on a ccxt venue (module
    ``trimtab.engine.copy_live``)."""
    from trimtab.app.exchange import load_keys, open_venue
    from trimtab.app.secrets import mask_secrets
    from trimtab.engine.copy_live import CopyFollower, CsvLeaderPoller, ccxt_client
    from trimtab.journal.store import Store

    if paper == live:
        raise ValueError("--follow needs one of --paper and --live")
    if paper:
        raise ValueError(
            "--follow --paper is not built yet: follow on the exchange's testnet with "
            "--live --testnet, or on a local emulator with --live --exchange-url URL"
        )
    if testnet and url:
        raise ValueError("--testnet and --exchange-url point at two places: give one")
    if db is None or run_id is None:
        raise ValueError("--follow records the loop in a store: give --db URL and --run-id NAME")
    if cycles < 1 or interval < 0:
        raise ValueError("--cycles must be at least 1 and --interval at least 0")
    real = not testnet and url is None
    if real:
        where = f"{exchange} (real money)"
        if confirm is not None:
            if confirm != run_id:
                raise ValueError(f"--confirm {confirm!r} is not this run's id ({run_id!r})")
        elif not sys.stdin.isatty():
            raise ValueError(
                f"--live copies with real money on {where}: confirm with --confirm {run_id} "
                "(no terminal to ask in)"
            )
        else:
            err.print(f"[bold]--live[/]: run {run_id!r} will copy trades on {where}")
            if typer.prompt(f"type the run id ({run_id}) to go on").strip() != run_id:
                raise ValueError("not confirmed: nothing was started")
    allowed = params.limits.symbols
    if db.startswith("sqlite:///"):
        store_path = Path(db.removeprefix("sqlite:///"))
        journal = store_path.with_name(f"{store_path.stem}.{run_id}.venue.db")
    else:
        journal = Path("runs") / f"{run_id}.venue.db"
    journal.parent.mkdir(parents=True, exist_ok=True)
    venue = open_venue(
        [subaccount],
        exchange=exchange,
        journal=journal,
        symbols=list(allowed or ()),
        keys_file=keys_file,
        url=url,
        testnet=testnet,
    )
    if leader is not None:

        def feed_factory(state: Any) -> Any:
            poller = CsvLeaderPoller(leader, state=state)
            poller.leader_equity = params.leader_equity
            return poller
    else:
        if not allowed:
            raise ValueError(
                "a leader read through ccxt needs the symbols to follow: give --symbols"
            )
        key, secret = load_keys(["leader"], keys_file)["leader"]
        reader = ccxt_client(exchange, key, secret, url=url, testnet=testnet)
        from trimtab.data.leader_feed import CcxtLeaderFeed

        def feed_factory(state: Any) -> Any:
            return CcxtLeaderFeed(reader, list(allowed), state=state)

    store = Store.open(db)
    try:
        follower = CopyFollower(
            feed_factory=feed_factory,
            params=params,
            venue=venue,
            store=store,
            run_id=run_id,
            subaccount=subaccount,
            spec={
                "params": params.model_dump(mode="json"),
                "exchange": exchange,
                "leader": str(leader) if leader else "ccxt account",
            },
        )
        for k in range(cycles):
            if k:
                import time

                time.sleep(interval)
            r = follower.step()
            for reason in r.reasons:
                console.print(
                    f"cycle {r.cycle} {reason['code']}: {escape(mask_secrets(reason['message']))}"
                )
            if not r.reasons:
                console.print(f"cycle {r.cycle}: no leader trade")
    finally:
        store.close()
        venue.close()


def register(app: typer.Typer) -> None:
    """Add ``trimtab copy`` to ``app``."""
    app.command("copy")(_friendly(copy_cmd))
