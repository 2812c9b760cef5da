"""The runner on a real venue: ``trimtab run``'s build with a ``CcxtVenue`` whose ccxt
clients talk over HTTP to the local Binance emulator (``tests.emulator``), the replayed
daily bars driving the cycles. Shared by the venue tests and the kill soak; runnable as a
process (``python -m tests.engine._venue FOLDER DATA URL [END]``) so it can be killed.

Timing: bars are stamped with their open. At the cycle of bar ``i`` the venue's
``advance(i)`` first moves the emulator's market clock to bar ``i``'s close (the open of
bar ``i + 1``): the orders the cycle sends fill at that open, as on the paper exchange.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from tests.engine._live import AUTO_ONLY
from trimtab.app.run import PaperRun, RunOptions, build_run
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.execution.ccxt_venue import CcxtVenue

START, END = "2022-01-03", "2022-02-20"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT")
KEYS = {"pilot": ("key-pilot", "secret-pilot"), "core": ("key-core", "secret-core")}
CAPITAL = {"pilot": 10_000, "core": 5_000}

#: The runner tests' two auto subaccounts (pilot daily, core weekly).
PORTFOLIO = AUTO_ONLY

#: Transfers through the master account: its keys, the sub-accounts' emails, and the
#: venue's arguments for them.
MASTER = ("key-master", "secret-master")
EMAILS = {"pilot": "pilot@fund.example", "core": "core@fund.example"}
TRANSFER_OPTIONS = {"master": MASTER, "emails": EMAILS}


def transfers_portfolio(start: str = START, end: str = END, amount: float = 10.0) -> str:
    """The runner's file with a dated transfer every day from ``start`` to ``end``, pilot
    and core in turn as the source (each keeps a little free cash after its trades), a
    1,500 USDT top-up of core at ``start`` (before pilot first invests)."""
    days = pd.date_range(start, end, freq="1D")
    lines = [f"  - {{at: {start}, from: pilot, to: core, amount: 1500, reason: top up core}}"]
    for k, day in enumerate(days[1:]):
        src, dst = ("core", "pilot") if k % 2 == 0 else ("pilot", "core")
        lines.append(
            f"  - {{at: {day:%Y-%m-%d}, from: {src}, to: {dst}, amount: {amount}, "
            f"reason: day {k + 1}}}"
        )
    return PORTFOLIO + "transfers:\n" + "\n".join(lines) + "\n"


def accounts() -> dict[str, tuple]:
    """The emulator's accounts: one key pair per subaccount, its capital in USDT."""
    return {
        key: (secret, name, {"USDT": str(CAPITAL[name])}) for name, (key, secret) in KEYS.items()
    }


def control(url: str, path: str, doc: dict[str, Any] | None = None) -> Any:
    """The emulator's control endpoint (a POST with ``doc``, else a GET)."""
    data = None if doc is None else json.dumps(doc).encode()
    req = urllib.request.Request(url + path, data=data, method="POST" if doc else "GET")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _no_throttle(exchange: Any) -> None:
    exchange.enableRateLimit = False


def make_run(
    folder: Path,
    data: Path,
    url: str,
    *,
    end: str = END,
    speed: float | None = None,
    timeout_ms: int = 10_000,
    prepared: Any = None,
    portfolio: str = PORTFOLIO,
    venue_options: dict[str, Any] | None = None,
) -> PaperRun:
    """``venue_options``: more ``CcxtVenue`` arguments (the master key and emails)."""
    path = folder / "venue.yaml"
    if not path.exists():
        path.write_text(portfolio)
    holder: dict[str, Any] = {}

    def move_clock(i: int) -> None:
        m = holder["run"].runner.m
        bar = m.timestamps[1] - m.timestamps[0]
        close = pd.Timestamp(m.timestamps[i]) + bar
        ms = int(close.value // 1_000_000)
        # The market clock stands for wall time, which never goes back: a runner started
        # again after a kill looks again at its last bar run, which the killed process
        # may have passed already (it moved the clock, then died before its commit).
        if control(url, "/_emulator/clock")["clock_ms"] < ms:
            control(url, "/_emulator/clock", {"ms": ms})

    venue = CcxtVenue(
        folder / "venue.db",
        KEYS,
        symbols=SYMBOLS,
        api_urls=url,
        timeout_ms=timeout_ms,
        backoff_s=0.05,
        backoff_cap_s=5.0,
        on_advance=move_clock,
        # ccxt spaces requests by Binance's published weights (a poll of 4 symbols sleeps
        # about 2 s); the emulator has no such budget, and the suite tests 429s apart.
        configure=_no_throttle,
        **(venue_options or {}),
    )
    try:
        run = build_run(
            load_portfolio(path),
            RunOptions(
                db=f"sqlite:///{folder / 'store.db'}",
                run_id="venue",
                replay=str(data),
                start=START,
                end=end,
                speed=speed,
                review=False,
            ),
            prepared=prepared,
            venue=venue,
        )
    except Exception:
        venue.close()
        raise
    holder["run"] = run
    return run


if (
    __name__ == "__main__"
):  # python -m tests.engine._venue FOLDER DATA URL [END] [SPEED] [transfers]
    folder, data = Path(sys.argv[1]), Path(sys.argv[2])
    url = sys.argv[3]
    end = sys.argv[4] if len(sys.argv) > 4 else END
    speed = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "none" else None
    extra: dict[str, Any] = {}
    if len(sys.argv) > 6 and sys.argv[6] == "transfers":
        extra = {"portfolio": transfers_portfolio(end=end), "venue_options": TRANSFER_OPTIONS}
    run = make_run(folder, data, url, end=end, speed=speed, timeout_ms=2_000, **extra)
    run.runner.start()
    print("ready", run.runner.gate_state, flush=True)
    run.run()
    print("done", run.runner.last_bar, flush=True)
