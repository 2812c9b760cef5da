"""Helpers of the resume tests and of ``bench/soak_resume.py``: what a run left in the
store, for an exact comparison, the results of two runs compared field by field, and a
``trimtab backtest --db`` run killed with SIGKILL at random points until it finishes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas.testing as pdt

from trimtab.engine.backtest import BacktestResult
from trimtab.journal.store import Store

# Written by the store itself (wall clock, row numbers): differ between any two runs.
_VOLATILE = {"created_at", "updated_at", "seq", "fill_id", "transfer_id", "change_id"}


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in _VOLATILE} for r in rows]


def store_rows(url: str, run_id: str) -> dict[str, Any]:
    """Everything the run wrote, money as exact decimals, in the order written."""
    with Store.open(url) as store:
        info = store.run(run_id)
        assert info is not None, f"no run {run_id!r} in {url}"
        return {
            "status": info.status,
            "checkpoint": info.checkpoint,
            "decisions": store.decisions(run_id),
            "orders": _plain(store.orders(run_id)),
            "fills": _plain(store.fills(run_id)),
            "balances": _plain(store.balances(run_id)),
            "transfers": _plain(store.transfers(run_id)),
            "breaker_changes": _plain(store.breaker_changes(run_id)),
        }


def assert_same_rows(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Table by table, so that a failure names the first row that differs."""
    assert sorted(got) == sorted(want)
    for table in want:
        g, w = got[table], want[table]
        if isinstance(w, list):
            assert len(g) == len(w), (table, len(g), len(w))
            for j, (a, b) in enumerate(zip(g, w, strict=True)):
                assert a == b, (table, j, a, b)
        else:
            assert g == w, (table, g, w)


def assert_same_result(got: BacktestResult, want: BacktestResult) -> None:
    """Every output of a subaccount's run, exactly (frames with their dtypes)."""
    pdt.assert_series_equal(got.equity, want.equity, check_exact=True)
    pdt.assert_frame_equal(got.weights, want.weights, check_exact=True)
    pdt.assert_series_equal(got.gross_exposure, want.gross_exposure, check_exact=True)
    pdt.assert_frame_equal(got.trades, want.trades, check_exact=True)
    pdt.assert_frame_equal(got.rejections, want.rejections, check_exact=True)
    assert got.decisions == want.decisions
    for a, b in ((got.states, want.states), (got.target_weights, want.target_weights)):
        assert (a is None) == (b is None)
        if a is not None:
            pdt.assert_frame_equal(a, b, check_exact=True)
    if want.flows is not None:
        pdt.assert_series_equal(got.flows, want.flows, check_exact=True)
    assert got.dust == want.dust
    assert got.safety == want.safety
    assert got.account.state() == want.account.state()


# --- processes killed with SIGKILL ---------------------------------------------------------
class _Child:
    """A ``trimtab`` CLI process: the real command line (``sys.executable -m trimtab.cli``),
    or a fork of this process running the CLI's ``main`` (no second start-up: the modules
    are imported already). Either is a process of its own, killed with SIGKILL."""

    def __init__(self, argv: list[str], log: Path, real: bool) -> None:
        self.real = real
        if real:
            env = {**os.environ, "COLUMNS": "200"}
            with log.open("w") as sink:
                self._popen: Any = subprocess.Popen(
                    [sys.executable, "-m", "trimtab.cli", *argv],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        else:
            self._proc = multiprocessing.get_context("fork").Process(
                target=_forked_cli, args=(argv, str(log)), daemon=False
            )
            self._proc.start()

    def poll(self) -> int | None:
        if self.real:
            return self._popen.poll()
        return None if self._proc.is_alive() else self._proc.exitcode

    def kill(self) -> None:
        if self.real:
            self._popen.send_signal(signal.SIGKILL)
        else:
            self._proc.kill()

    def wait(self, timeout: float = 600.0) -> int:
        if self.real:
            return self._popen.wait(timeout=timeout)
        self._proc.join(timeout)
        assert self._proc.exitcode is not None, "a forked CLI run did not end"
        return self._proc.exitcode


def _forked_cli(argv: list[str], log: str) -> None:
    """In the forked child: run ``trimtab ARGV`` with its output in ``log``, then leave
    without running the parent's clean-up (its stores, pytest's state)."""
    code = 1
    try:
        os.environ["COLUMNS"] = "200"
        sys.stdout = sys.stderr = open(log, "w", buffering=1)
        sys.argv = ["trimtab", *argv]
        from trimtab.cli import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


@dataclass
class KillReport:
    """A run killed ``kills`` times and started again until it finished: ``starts``
    processes, ``resumes`` of them took the run up from the store (``mid_run`` before its
    last bar), ``outputs`` each process's console output."""

    kills: int = 0
    resumes: int = 0
    mid_run: int = 0
    starts: int = 0
    outputs: list[str] = field(default_factory=list)


def kill_and_resume(
    argv: list[str],
    url: str,
    run_id: str,
    bars: int,
    kills: int,
    rng: np.random.Generator,
    logs: Path,
    *,
    real: Callable[[int], bool] = lambda start: True,
) -> KillReport:
    """Start ``trimtab ARGV --db URL --run-id RUN_ID`` until a process exits 0, killing the
    first ``kills`` with SIGKILL, each once the store's checkpoint has passed a random bar
    after the one it started from (so that it had written something), and a random few
    ms later (in a batch or in its commit). ``real(j)``: process j runs the real command
    line, else a fork of this process runs the CLI's main. The process that finishes is
    always a real one."""
    report = KillReport()
    command = [*argv, "--db", url, "--run-id", run_id]
    with Store.open(url) as store:  # the schema exists before any process writes

        def checkpoint() -> int:
            cp = store.checkpoint(run_id)
            return -1 if cp is None else cp[0]

        for start in range(kills + 20):
            log = logs / f"{run_id}-{start}.log"
            before = checkpoint()
            killing = report.kills < kills and before < bars - 2
            child = _Child(command, log, real=real(start) or not killing)
            report.starts += 1
            if killing:
                # The kills spread over the rest of the run, one stretch each.
                stretch = max((bars - 2 - before) // (kills - report.kills), 1)
                target = before + 1 + int(rng.integers(0, stretch))
                while child.poll() is None and checkpoint() < target:
                    time.sleep(0.002)
                time.sleep(float(rng.uniform(0.0, 0.01)))
                if child.poll() is None:
                    child.kill()
                    report.kills += 1
            code = child.wait()
            output = log.read_text()
            report.outputs.append(output)
            if "resuming after bar" in output:
                report.resumes += 1
                report.mid_run += 1
            elif "is finished" in output:
                report.resumes += 1
            if code == 0:
                return report
            assert code == -signal.SIGKILL, output
    raise AssertionError(f"run {run_id!r} did not finish after {report.starts} starts")
