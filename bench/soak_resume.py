"""Soak: ``trimtab backtest --db`` killed with SIGKILL at random points, hundreds of
times, each run started again until it finishes and compared with an uninterrupted run.

    uv run python bench/soak_resume.py --kills 300            # 25 kills per run
    uv run python bench/soak_resume.py --kills 50 --per-run 10 --commit-every 1

The run: a year (2021) of the managed policy on five coins of the discovered data, under
tight limits and breakers and a volume cap that leaves orders partly filled across bars
(the command of ``tests/engine/test_resume.py``). The reference is the same command run
once without a kill. Each soak run has its own SQLite file and the reference's run id
(client order ids include it); when it finishes, every row it left in the store
(decisions, orders with client order ids and quantities, fills, balances, transfers,
breaker changes) and its run files must equal the reference's exactly. The first and the
last process of each run start from the command line (``python -m trimtab.cli``); the
others are forks of this process running the CLI's main (no import each time).

Prints kills done, resumes (and how many before the run's last bar), mismatches (must be
0), processes started and the wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine._resume import kill_and_resume, store_rows
from tests.engine.test_resume import backtest_command
from typer.testing import CliRunner

# Imported here, before any fork, so that no forked process imports them again.
import trimtab.engine.recording
import trimtab.engine.runner  # noqa: F401
from trimtab.cli import app

FILES = ("equity.csv", "weights.csv", "trades.csv", "decisions.jsonl", "rejections.csv")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300, help="SIGKILLs in all (default 300)")
    parser.add_argument("--per-run", type=int, default=25, help="kills per run (default 25)")
    parser.add_argument("--commit-every", type=int, default=3, help="bars per transaction")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trimtab-soak-") as tmp:
        root = Path(tmp)
        command = backtest_command(root / "config.yaml")
        command[command.index("--commit-every") + 1] = str(args.commit_every)
        ref_url = f"sqlite:///{root / 'ref.db'}"
        done = CliRunner().invoke(
            app, [*command, "--db", ref_url, "--run-id", "soak", "--out", str(root / "ref")]
        )
        if done.exit_code != 0:
            print(done.output)
            return 2
        want = store_rows(ref_url, "soak")
        bars = want["checkpoint"][0] + 1
        rng = np.random.default_rng(args.seed)
        kills = resumes = mid_run = starts = mismatches = runs = 0
        while kills < args.kills:
            runs += 1
            folder = root / f"run{runs}"
            folder.mkdir()
            url = f"sqlite:///{folder / 'soak.db'}"
            report = kill_and_resume(
                [*command, "--out", str(folder / "out")],
                url,
                "soak",
                bars,
                min(args.per_run, args.kills - kills),
                rng,
                folder,
                real=lambda start: start == 0,
            )
            kills += report.kills
            resumes += report.resumes
            mid_run += report.mid_run
            starts += report.starts
            same = store_rows(url, "soak") == want and all(
                (folder / "out" / f).read_bytes() == (root / "ref" / f).read_bytes()
                for f in (*FILES, "states.csv", "result.json")
            )
            mismatches += not same
            print(
                f"run {runs}: {report.kills} kills, {report.resumes} resumes, "
                f"{'same' if same else 'MISMATCH'}; total {kills} kills, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    seconds = time.perf_counter() - started
    print(
        f"kills {kills}, resumes {resumes} ({mid_run} before the last bar), "
        f"mismatches {mismatches}, runs {runs}, processes {starts}, bars per run {bars}, "
        f"commit every {args.commit_every} bars, {seconds:.0f} s"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
