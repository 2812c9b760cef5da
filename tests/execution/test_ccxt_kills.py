"""The ccxt venue killed at random points: a child process drives it (orders, polls,
the emulator's clock) against the emulator with faults queued (a timeout after accept,
429s, partial fills), is SIGKILLed again and again and restarted from its journal until
it finishes. Then: no client order id twice at the exchange, no refused reuse, every
exchange trade booked exactly once, and a ledger booking the events equal to the
emulator's balances. Real processes, real HTTP, the real ccxt client."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import synthetic_bars
from tests.emulator import BinanceEmulator, point_ccxt_at
from trimtab.domain import Account
from trimtab.execution.ccxt_venue import CcxtVenue

KEY, SECRET = "kill-key-" + "k" * 40, "kill-secret-" + "s" * 40
ROOT = Path(__file__).resolve().parents[2]
STEPS = 24
#: Another seed kills at other points: TRIMTAB_KILL_SEED=3 uv run pytest ...
SEED = int(os.environ.get("TRIMTAB_KILL_SEED", "12"))

CHILD = textwrap.dedent(
    """
    import json, sys, urllib.request
    from tests.emulator import point_ccxt_at
    from trimtab.domain import Order, OrderType, Side
    from trimtab.execution.ccxt_venue import CcxtVenue

    url, path, key, secret, steps, start = sys.argv[1:7]
    steps, start = int(steps), int(start)

    def configure(ex):
        point_ccxt_at(ex, url)
        ex.rateLimit = 1

    def clock_to(k):  # the market clock at bar k's open (it only moves forward)
        now = json.load(urllib.request.urlopen(url + "/_emulator/clock"))["clock_ms"]
        target = start + k * 3_600_000
        if target > now:
            req = urllib.request.Request(url + "/_emulator/clock", method="POST",
                                         data=json.dumps({"ms": target}).encode())
            urllib.request.urlopen(req).read()

    v = CcxtVenue(path, {"alice": (key, secret)}, symbols=["BTCUSDT", "ETHUSDT-PERP"],
                  configure=configure, timeout_ms=1500, on_advance=clock_to)
    begin = 0 if v.last_bar is None else v.last_bar
    for k in range(begin, steps):
        v.advance(k)
        kind = k % 4
        if kind == 0:
            order = Order("BTCUSDT", Side.BUY, quantity=0.01, subaccount="alice")
        elif kind == 1:
            order = Order("BTCUSDT", Side.SELL, quantity=0.004, subaccount="alice")
        elif kind == 2:
            side = Side.BUY if k % 8 == 2 else Side.SELL
            order = Order("ETHUSDT-PERP", side, quantity=0.1, leverage=2, subaccount="alice")
        else:
            price = round(40_000 + 100 * k - 150.0, 2)  # below the open: fills in the bar
            order = Order("BTCUSDT", Side.BUY, quantity=0.01, type=OrderType.LIMIT,
                          limit_price=price, subaccount="alice")
        v.submit(order, f"tt-kill-alice-{k}-0", k)
        print("STEP", k, flush=True)
    v.advance(steps)
    print("DONE", flush=True)
    """
)


def test_random_kills_leave_exactly_once_and_equal_books(tmp_path):
    bars = synthetic_bars(
        {
            "BTCUSDT": [40_000.0 + 100 * i for i in range(STEPS + 10)],
            "ETHUSDT": [2_000.0 + 5 * i for i in range(STEPS + 10)],
        },
        freq="1h",
    )
    emu = BinanceEmulator(
        bars,
        accounts={KEY: (SECRET, "alice", {"USDT": 10_000}, {"USDT": 5_000})},
        state_path=tmp_path / "emu.json",
    )
    emu.start()
    start = emu.clock_ms
    path = tmp_path / "venue.sqlite"
    rng = random.Random(SEED)
    kills = runs = 0
    try:
        while True:
            runs += 1
            assert runs < 60, "the child never finished"
            # Faults for the next orders: a timeout after accept, a 429, a partial fill.
            if runs % 3 == 1:
                emu.fault("timeout_after_accept", mode=rng.choice(["hang", "drop"]), seconds=3)
            elif runs % 3 == 2:
                emu.fault("http_429", retry_after=0, path="/order", method="POST")
            else:
                emu.fault("partial", fraction=0.5)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    emu.url,
                    str(path),
                    KEY,
                    SECRET,
                    str(STEPS),
                    str(start),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            try:
                # Five kills, each 0.3-1.5 s after a start (the first five runs have each
                # fault kind queued); bench/soak_venue.py kills the venue a hundred times.
                proc.wait(timeout=rng.uniform(0.3, 1.5) if kills < 5 else 600)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                continue
            out, err = proc.communicate()
            assert proc.returncode == 0, err[-3000:]
            if "DONE" in out:
                break
        assert kills >= 5  # the test killed the venue, not just ran it
        # The checks, from a fresh venue on the same journal.
        v = CcxtVenue(
            path,
            {"alice": (KEY, SECRET)},
            symbols=["BTCUSDT", "ETHUSDT-PERP"],
            configure=lambda ex: (point_ccxt_at(ex, emu.url), setattr(ex, "rateLimit", 1)),
        )
        v.advance(STEPS)
        cids = Counter(o["cid"] for o in emu.orders("alice"))
        assert emu.duplicate_attempts == 0
        assert max(cids.values()) == 1 and len(cids) == STEPS - sum(
            1 for o in v.orders("alice") if o.status == "rejected" and not o.exchange_order_id
        )
        events = v.events_since(0)
        booked = Counter(e.data["trade_id"] for e in events if e.kind == "fill")
        assert booked == Counter(str(t["id"]) for t in emu.trades("alice"))  # once each
        account = Account()
        sub = account.add_subaccount("alice", 15_000.0)
        for e in events:
            if e.kind == "fill":
                assert not e.data.get("external")
                sub.apply_fill(e.fill(), v.instrument(e.data["symbol"]))
            elif e.kind == "funding":
                sub.apply_funding(e.data["symbol"], e.data["rate"], e.data["mark"])
        spot = emu.balances("alice")
        btc = spot.get("BTC", {"free": Decimal(0), "locked": Decimal(0)})
        assert sub.quantity("BTCUSDT") == pytest.approx(
            float(btc["free"] + btc["locked"]), abs=1e-12
        )
        perp = emu.positions("alice").get("ETHUSDT")
        assert sub.quantity("ETHUSDT-PERP") == pytest.approx(
            float(perp["amt"]) if perp else 0.0, abs=1e-12
        )
        margin = sum((p["isolated_margin"] for p in emu.positions("alice").values()), Decimal(0))
        cash = (
            spot["USDT"]["free"]
            + spot["USDT"]["locked"]
            + emu.futures_wallet("alice")["USDT"]
            - margin
        )
        assert sub.cash == pytest.approx(float(cash), rel=1e-11)
        assert v.balances()["alice"]["cash"] == pytest.approx(float(cash), rel=1e-12)
        v.close()
    finally:
        emu.close()
