"""``trimtab run`` on a real venue makes the portfolio file's transfers: ccxt over HTTP to
the local Binance emulator, the master account's key moving USDT between the two auto
subaccounts' sub-accounts. The runner's books stay the exchange's, and a runner process
SIGKILLed after the exchange took a transfer (before it heard the answer) makes it once
when it starts again."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.emulator import BinanceEmulator
from tests.engine import _venue
from tests.engine.test_live_venue import bars, books_equal  # noqa: F401 (bars: a fixture)

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")
ROOT = Path(__file__).resolve().parents[2]
MASTER, EMAILS, OPTIONS = _venue.MASTER, _venue.EMAILS, _venue.TRANSFER_OPTIONS
PORTFOLIO = (
    _venue.PORTFOLIO
    + """transfers:
  - {at: 2022-01-03, from: pilot, to: core, amount: 1500, reason: top up core}
  - {at: 2022-01-14, from: core, to: pilot, amount: 1000000, reason: more than it has}
  - {at: 2022-01-20, from: core, to: pilot, amount: 0.01, reason: on the last day}
"""
)


def emulator(panel, folder: Path) -> BinanceEmulator:
    accounts = {**_venue.accounts(), MASTER[0]: (MASTER[1], "master", {"USDT": "0"})}
    return BinanceEmulator(
        panel,
        accounts=accounts,
        clock=_venue.START,
        state_path=folder / "emulator.json",
        master="master",
        emails=EMAILS,
    )


def open_run(folder: Path, emu: BinanceEmulator):
    return _venue.make_run(
        folder,
        SHARED_DATA,
        emu.url,
        end="2022-01-20",
        portfolio=PORTFOLIO,
        venue_options=OPTIONS,
    )


def run_to_end(folder: Path, emu: BinanceEmulator):
    """The run of ``PORTFOLIO`` on the emulator, started (or taken up), to its end."""
    run = open_run(folder, emu)
    run.runner.start()
    assert run.runner.gate_state == "ACTIVE", run.runner.gate.summary()
    run.run()
    return run


def read_back_books(folder: Path, emu: BinanceEmulator) -> None:
    """The run opened again after it ended: it reconciles, and its books are the
    exchange's (the transfer included)."""
    final = open_run(folder, emu)
    rec = final.runner.inspect()
    assert rec.ok, rec.summary()
    books_equal(final, emu)
    final.close()


def made(emu: BinanceEmulator) -> list[dict]:
    return [t for t in emu.transfers() if t["status"] == "SUCCESS"]


def test_a_run_makes_its_dated_transfers_at_the_exchange(bars, tmp_path):  # noqa: F811
    with emulator(bars, tmp_path) as emu:
        run = run_to_end(tmp_path, emu)
        # The 1,500 top-up moved once, pilot's sub-account to core's.
        t = made(emu)[0]
        assert (t["fromEmail"], t["toEmail"]) == (EMAILS["pilot"], EMAILS["core"])
        assert Decimal(t["amount"]) == 1500
        rows = {r["reason"]: r for r in run.store.transfers("venue", floats=True)}
        top_up = rows["top up core"]
        assert top_up["status"] == "done" and top_up["amount"] == 1500.0
        assert str(top_up["timestamp"]).startswith("2022-01-03")
        # The one asking more than core has is refused by the transfer guard (whole, as
        # a dated transfer allows no cut); the exchange is never asked for it.
        refused = rows["more than it has"]
        assert refused["status"] == "refused" and refused["amount"] == 0.0
        assert "core has" in refused["guard"]["checks"][0]
        # Made in the run's last cycle, after its last commit: its event is still to book
        # when the run is read back, and counts as the runner's own (booked when decided).
        assert rows["on the last day"]["status"] == "done"
        assert sorted(Decimal(t["amount"]) for t in made(emu)) == [Decimal("0.01"), 1500]
        read_back_books(tmp_path, emu)


def test_a_runner_killed_after_the_exchange_took_a_transfer_makes_it_once(
    bars,  # noqa: F811
    tmp_path,
):
    with emulator(bars, tmp_path) as emu:
        script = textwrap.dedent(
            f"""
            import os, signal, sys
            sys.path.insert(0, {str(ROOT)!r})
            from pathlib import Path
            from tests.engine import _venue
            from tests.app.test_live_venue_transfers import OPTIONS, PORTFOLIO
            from trimtab.execution import ccxt_transfers

            def die(self, row, got):  # the exchange took it; the answer is never journalled
                os.kill(os.getpid(), signal.SIGKILL)

            ccxt_transfers.SubaccountTransfers._done = die
            run = _venue.make_run(
                Path({str(tmp_path)!r}), Path({str(SHARED_DATA)!r}), {emu.url!r},
                end="2022-01-20", portfolio=PORTFOLIO, venue_options=OPTIONS,
            )
            run.runner.start()
            run.run()
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=300
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
        assert len(made(emu)) == 1  # at the exchange, not yet in the runner's books
        # Started again: the transfer written as new is made (found at the exchange), once.
        run = run_to_end(tmp_path, emu)
        assert len([t for t in made(emu) if t["toEmail"] == EMAILS["core"]]) == 1
        assert not [t for t in emu.transfers() if t["status"] == "DUPLICATE"]
        rows = {r["reason"]: r for r in run.store.transfers("venue", floats=True)}
        assert rows["top up core"]["status"] == "done"
        assert Decimal(made(emu)[0]["amount"]) == Decimal("1500")
        read_back_books(tmp_path, emu)


def test_a_transfer_the_exchange_refuses_is_taken_back_for_good(bars, tmp_path):  # noqa: F811
    """The exchange refuses the first transfer (after the runner booked it): the runner
    takes the booking back and saves that with the answer, so a runner killed before its
    next commit starts again from books that equal the exchange's."""
    with emulator(bars, tmp_path) as emu:
        emu.fault(
            "reject",
            path="/sapi/v1/sub-account/universalTransfer",
            method="POST",
            code=-5013,
            msg="Asset transfer failed: insufficient balance",
        )
        run = open_run(tmp_path, emu)
        first = run.runner.start()
        run.run(until=first)  # the close of 2022-01-03: the top-up booked, then refused
        row = run.store.transfers("venue", floats=True)[0]
        assert (row["reason"], row["status"]) == ("top up core", "refused")
        assert made(emu) == []
        run.close()  # as a kill: nothing more is committed
        again = open_run(tmp_path, emu)
        rec = again.runner.inspect()
        assert rec.ok, rec.summary()
        books_equal(again, emu)
        again.close()
