"""Run the Binance emulator as a process::

    python -m tests.emulator --port 0 --state /tmp/emu.json \\
        --data ../shared/data/ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz \\
        --symbols BTCUSDT,ETHUSDT --clock 2023-03-01T00:05 \\
        --account KEY:SECRET:main:USDT=10000,BTC=0.5:USDT=5000

It prints its URL (``http://127.0.0.1:PORT``) on one line of stdout when it listens and
serves until SIGTERM or SIGINT. ``--account KEY:SECRET:NAME[:SPOT[:FUTURES]]`` (repeat it
for more accounts): SPOT and FUTURES are ``ASSET=AMOUNT,...`` starting balances. With a
``--state`` file that exists the emulator carries on from it (the accounts' balances and
the clock given are then ignored; the keys are still needed). The market clock is moved
with ``POST /_emulator/clock {"ms": ..}`` and faults queued with ``POST /_emulator/fault
{"kind": .., "count": .., ...}``; ``GET /_emulator/state`` shows everything.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path

from tests.emulator.binance import Account, BinanceEmulator


def _balances(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        asset, sep, amount = part.partition("=")
        if not sep or not asset:
            raise ValueError(f"{where}: {part!r} is not ASSET=AMOUNT")
        try:
            if Decimal(amount) < 0:
                raise ValueError(f"{where}: {asset} balance {amount} is negative")
        except InvalidOperation:
            raise ValueError(f"{where}: {asset} balance {amount!r} is not a number") from None
        out[asset.upper()] = amount
    return out


def parse_account(text: str, n: int) -> Account:
    """``KEY:SECRET:NAME[:SPOT[:FUTURES]]`` -> Account (errors never repeat the secret)."""
    parts = text.split(":")
    where = f"--account #{n}"
    if len(parts) < 3 or len(parts) > 5 or not all(parts[:3]):
        raise ValueError(f"{where}: expected KEY:SECRET:NAME[:SPOT[:FUTURES]]")
    spot = _balances(parts[3], f"{where} spot") if len(parts) > 3 else {}
    fut = _balances(parts[4], f"{where} futures") if len(parts) > 4 else {}
    return Account(parts[0], parts[1], parts[2], spot, fut)


def build(argv: list[str] | None = None) -> BinanceEmulator:
    """Parse the command line into an emulator (not started); SystemExit(2) on bad input."""
    ap = argparse.ArgumentParser(
        prog="python -m tests.emulator", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--state", type=Path, help="JSON state file (created, or carried on from)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="bar file or folder (as trimtab's load_panel)")
    src.add_argument("--sample", action="store_true", help="trimtab's synthetic sample market")
    ap.add_argument("--timeframe", help="timeframe of the data to serve (default 1d if present)")
    ap.add_argument("--symbols", help="spot symbols, comma separated (default all)")
    ap.add_argument("--futures-symbols", help="perpetuals (default the USDT spot symbols; '' none)")
    ap.add_argument("--account", action="append", default=[], help="KEY:SECRET:NAME[:SPOT[:FUT]]")
    ap.add_argument("--clock", help="starting market clock (ISO time or ms)")
    ap.add_argument("--taker-bps", type=float, default=10)
    ap.add_argument("--maker-bps", type=float, default=10)
    ap.add_argument("--futures-taker-bps", type=float, default=5)
    ap.add_argument("--futures-maker-bps", type=float, default=2)
    ap.add_argument("--slippage-bps", type=float, default=0)
    ap.add_argument("--funding-rate", type=float, default=0.0001, help="per 8 h interval")
    ap.add_argument("--leverage", type=int, default=20, help="default futures leverage")
    ap.add_argument(
        "--no-fsync", action="store_true", help="state writes not flushed to disk (faster)"
    )
    ap.add_argument("--master", help="the master account's name (its key moves sub-account money)")
    ap.add_argument(
        "--email", action="append", default=[], help="NAME=EMAIL: a sub-account's email"
    )
    args = ap.parse_args(argv)
    try:
        accounts = [parse_account(a, i + 1) for i, a in enumerate(args.account)]
        names = [a.name for a in accounts]
        if len(set(names)) != len(names) or len({a.key for a in accounts}) != len(accounts):
            raise ValueError("--account: each account needs its own name and key")
        from trimtab.data import load_panel
        from trimtab.data.errors import DataError

        symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else None
        if args.sample:
            from trimtab.data import sample

            source = sample.ensure_sample() / sample.DAILY_FILE
        else:
            source = args.data
            if not source.exists():
                raise ValueError(f"--data: {source} does not exist")
        try:
            panel = load_panel(source, timeframe=args.timeframe, symbols=symbols)
        except (DataError, KeyError) as e:
            raise ValueError(f"--data {source}: {e}") from None
        futures = None
        if args.futures_symbols is not None:
            futures = [s.strip().upper() for s in args.futures_symbols.split(",") if s.strip()]
        clock = int(args.clock) if args.clock and args.clock.isdigit() else args.clock
        emails = {}
        for item in args.email:
            name, sep, email = item.partition("=")
            if not sep or not name or not email:
                raise ValueError(f"--email {item!r}: expected NAME=EMAIL")
            emails[name] = email
        if args.master is not None and args.master not in names:
            raise ValueError(f"--master {args.master}: no --account of that name")
        return BinanceEmulator(
            panel,
            symbols=symbols,
            futures_symbols=futures,
            taker_bps=args.taker_bps,
            maker_bps=args.maker_bps,
            futures_taker_bps=args.futures_taker_bps,
            futures_maker_bps=args.futures_maker_bps,
            slippage_bps=args.slippage_bps,
            funding_rates=args.funding_rate,
            default_leverage=args.leverage,
            accounts=accounts,
            clock=clock,
            state_path=args.state,
            fsync=not args.no_fsync,
            host=args.host,
            port=args.port,
            master=args.master,
            emails=emails,
        )
    except ValueError as e:
        ap.error(str(e))
        raise  # unreachable: ap.error exits


def main(argv: list[str] | None = None) -> int:
    emu = build(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        emu.start()
    except OSError as e:
        print(
            f"python -m tests.emulator: cannot listen on {emu.host}:{emu.port}: {e}",
            file=sys.stderr,
        )
        return 1
    print(emu.url, flush=True)
    stop.wait()
    emu.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
