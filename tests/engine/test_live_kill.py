"""SIGKILL at random moments of a replayed auto run, restarted each time: no order sent
twice, none lost, the same orders, fills and balances as a run never killed, and the
runner's ledger equal to the paper exchange's books. ``bench/soak_runner.py`` runs the
same with hundreds of kills."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.engine._live import AUTO_ONLY, make_run, write_portfolio
from trimtab.journal.store import Store

ROOT = Path(__file__).resolve().parents[2]
WALL = {"created_at", "updated_at", "seq", "fill_id"}


def _driver(portfolio: Path, folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.engine._live", str(portfolio), str(folder), str(SHARED_DATA)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_with_kills(portfolio: Path, folder: Path, kills: int, seed: int, span: float) -> int:
    """Start the driver, SIGKILL it at a random moment up to ``span`` seconds, again and
    again ``kills`` times, then let it finish; returns the kills that landed."""
    rng = random.Random(seed)
    landed = 0
    for _ in range(kills):
        proc = _driver(portfolio, folder)
        time.sleep(rng.uniform(0.2, span))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            landed += 1
        proc.communicate()
    proc = _driver(portfolio, folder)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert out.startswith("done")
    return landed


def strip(rows):
    return [{k: v for k, v in r.items() if k not in WALL} for r in rows]


def compare(whole: Path, killed: Path, portfolio: Path) -> None:
    a, b = Store.open(whole / "store.db"), Store.open(killed / "store.db")
    try:
        orders_a, orders_b = strip(a.orders("paper")), strip(b.orders("paper"))
        ids = [o["client_order_id"] for o in orders_b]
        assert len(ids) == len(set(ids))
        assert orders_a == orders_b
        assert strip(a.fills("paper")) == strip(b.fills("paper"))
        assert strip(a.balances("paper")) == strip(b.balances("paper"))
        assert a.decisions("paper") == b.decisions("paper")
    finally:
        a.close()
        b.close()
    # The exchange's side: every client id once, the same orders and books.
    run_a = make_run(portfolio, whole, SHARED_DATA)
    run_b = make_run(portfolio, killed, SHARED_DATA)
    try:
        ex_a = [(o.client_order_id, o.status, o.filled_quantity) for o in run_a.exchange.orders()]
        ex_b = [(o.client_order_id, o.status, o.filled_quantity) for o in run_b.exchange.orders()]
        assert ex_a == ex_b and len({c for c, _, _ in ex_b}) == len(ex_b)
        assert run_a.exchange.balances() == run_b.exchange.balances()
        run_b.runner.start()  # restores the ledger from the store
        books = run_b.exchange.balances()
        for name, sub in run_b.runner.account.subaccounts.items():
            assert sub.cash == books[name]["cash"]
            held = {s: p.quantity for s, p in sub.positions.items() if p.quantity}
            assert held == {s: q for s, q in books[name]["positions"].items() if q}
    finally:
        run_a.close()
        run_b.close()


@pytest.mark.parametrize("seed", [1])
def test_sigkill_anywhere_then_restart_equals_an_uninterrupted_run(tmp_path, seed):
    portfolio = write_portfolio(tmp_path, AUTO_ONLY, "auto.yaml")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    started = time.monotonic()
    proc = _driver(portfolio, whole)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    span = time.monotonic() - started
    landed = run_with_kills(portfolio, killed, kills=4, seed=seed, span=span)
    assert landed >= 1
    compare(whole, killed, portfolio)
