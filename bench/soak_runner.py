"""Soak: SIGKILL the runner (a replayed auto run with the paper exchange) at random
moments many times, restart it each time, and compare with a run never killed.

    uv run python bench/soak_runner.py --kills 300 --seed 0

Each round starts the driver (``tests/engine/_live.py``: two auto subaccounts, daily
rebalancing, 2022-01-03 to 2022-02-20) and kills it after a random delay up to the
length of an uninterrupted run; after the last kill the driver runs to the end. The
comparison (``tests/engine/test_live_kill.compare``) checks orders, fills, balances and
decisions in the store, the exchange's orders (each client id once) and books, and the
runner's ledger against the books. Prints how many kills landed, at which checkpoints
(bars completed when killed), and the result.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engine._live import AUTO_ONLY, write_portfolio  # noqa: E402
from tests.engine.test_live_kill import _driver, compare  # noqa: E402

from trimtab.journal.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        portfolio = write_portfolio(folder, AUTO_ONLY, "auto.yaml")
        whole, killed = folder / "whole", folder / "killed"
        whole.mkdir()
        killed.mkdir()
        t0 = time.monotonic()
        proc = _driver(portfolio, whole)
        proc.communicate(timeout=900)
        span = time.monotonic() - t0
        print(f"uninterrupted run: {span:.1f} s (start-up included)")
        landed, at_bar = 0, Counter()
        started = time.monotonic()
        for k in range(args.kills):
            proc = _driver(portfolio, killed)
            time.sleep(rng.uniform(0.2, span))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
            proc.communicate()
            db = killed / "store.db"
            cp = None
            if db.exists():
                store = Store.open(db)
                run = store.run("paper")
                cp = None if run is None or run.checkpoint is None else run.checkpoint[0]
                store.close()
            at_bar["none" if cp is None else cp] += 1
            if (k + 1) % 25 == 0:
                print(
                    f"  {k + 1} rounds, {landed} kills landed, {time.monotonic() - started:.0f} s"
                )
        proc = _driver(portfolio, killed)
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            print(err[-3000:])
            raise SystemExit(1)
        bars = sorted(b for b in at_bar if b != "none")
        print(
            f"kills landed: {landed} of {args.kills}; before the first checkpoint: "
            f"{at_bar.get('none', 0)}; at {len(bars)} distinct checkpoints "
            f"(bars {bars[0] if bars else '-'}..{bars[-1] if bars else '-'})"
        )
        try:
            compare(whole, killed, portfolio)
        except AssertionError as exc:
            print(f"MISMATCH: {exc}")
            raise SystemExit(1) from None
        print(
            "identical to the uninterrupted run: orders, fills, balances, decisions, "
            "the exchange's orders and books, the ledger"
        )
        print(f"wall: {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
