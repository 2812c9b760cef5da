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

``--transfers``: the allocated portfolio of ``tests/engine/test_live_carry.py`` instead
(trend and carry in auto mode under a weekly allocator whose transfers the runner makes),
compared with ``tests/engine/test_live_kill_transfers.compare`` plus the store's transfer
rows and the exchange's transfer events (each transfer id made once, none lost).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engine import test_live_kill_transfers as with_transfers  # noqa: E402
from tests.engine._live import AUTO_ONLY, write_portfolio  # noqa: E402
from tests.engine.test_live_carry import ALLOCATED  # noqa: E402
from tests.engine.test_live_kill import compare, cycling_seconds, episode  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transfers", action="store_true", help="the allocated portfolio")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text = ALLOCATED if args.transfers else AUTO_ONLY
        portfolio = write_portfolio(folder, text, "auto.yaml")
        whole = folder / "whole"
        whole.mkdir()
        t0 = time.monotonic()
        span = cycling_seconds(portfolio, whole)
        print(f"uninterrupted run: {span:.1f} s of cycles after start-up")
        moved = None
        if args.transfers:
            moved = with_transfers.transfers_and_moves(whole, portfolio)
            print(f"transfers made by the uninterrupted run: {len(moved[1])}")
        landed, episodes, at_bar = 0, 0, Counter()
        while landed < args.kills:
            killed = folder / f"killed-{episodes}"
            killed.mkdir()
            at_kill = episode(portfolio, killed, rng, span * 0.6, args.kills - landed)
            episodes += 1
            landed += len(at_kill)
            at_bar.update("none" if b is None else b for b in at_kill)
            try:
                if moved is None:
                    compare(whole, killed, portfolio)
                else:
                    with_transfers.compare(whole, killed, portfolio)
                    got = with_transfers.transfers_and_moves(killed, portfolio)
                    assert got == moved, f"transfers differ: {got} != {moved}"
            except AssertionError as exc:
                print(f"MISMATCH in run {episodes}: {exc}")
                raise SystemExit(1) from None
            shutil.rmtree(killed)
            if episodes % 10 == 0:
                print(f"  {episodes} runs, {landed} kills, {time.monotonic() - t0:.0f} s")
        bars = sorted(b for b in at_bar if b != "none")
        print(
            f"{episodes} killed runs, each compared with the uninterrupted one: {landed} kills; "
            f"{at_bar.get('none', 0)} before the first checkpoint, the others at "
            f"{len(bars)} distinct checkpoints (bars {bars[0] if bars else '-'}.."
            f"{bars[-1] if bars else '-'})"
        )
        print(
            "every one identical: orders, fills, balances, decisions, the exchange's orders "
            "(each client order id once) and books, the runner's ledger"
        )
        print(f"wall: {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
