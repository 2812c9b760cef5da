"""Commands reach a runner that is running: `trimtab run` as a real process on a slow
replay, `trimtab pause` and `trimtab approve` from another process, applied by the
runner within a tick while it keeps cycling; SIGTERM finishes the cycle and stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import SHARED_DATA
from tests.engine._live import PORTFOLIO, START, write_portfolio
from trimtab.app import control
from trimtab.journal.store import Store

ROOT = Path(__file__).resolve().parents[2]
TRIMTAB = [sys.executable, "-m", "trimtab.cli"]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TRIMTAB, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _wait(predicate, timeout: float = 90.0, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def test_commands_apply_while_the_runner_runs_and_sigterm_stops_it_cleanly(tmp_path):
    portfolio = write_portfolio(tmp_path, PORTFOLIO)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "TRIMTAB_DB": db}
    # A daily bar in 3 s: a proposal (good for one bar) is approved in time.
    runner = subprocess.Popen(
        [
            *TRIMTAB,
            "run",
            "--portfolio",
            str(portfolio),
            "--replay",
            str(SHARED_DATA),
            "--from",
            START,
            "--to",
            "2022-03-31",
            "--speed",
            str(86_400 / 3.0),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def store() -> Store:
            return Store.open(db)

        def cycled(n: int):
            def check():
                if not (tmp_path / "store.db").exists():
                    return None
                s = store()
                try:
                    run = s.run("paper")
                    cp = None if run is None else run.checkpoint
                    return cp if cp is not None and cp[0] >= n else None
                finally:
                    s.close()

            return check

        first = _wait(cycled(0))
        pending = _wait(
            lambda: _proposal_of(store(), "propose"), timeout=120
        )  # an approve-mode proposal
        # The approval from this process through the service the CLI calls (a CLI
        # start-up could outlast the proposal's one bar); the pause through the CLI.
        s = store()
        try:
            approved = control.approve(s, control.find_run(s), pending, actor="ana")
        finally:
            s.close()
        paused = _cli("pause", "--subaccount", "pilot", "--reason", "news", "--json", env=env)
        assert paused.returncode == 0, paused.stderr
        ids = {approved["command_id"], json.loads(paused.stdout)["command_id"]}

        def applied():
            s = store()
            try:
                rows = [c for c in s.commands("paper") if c["command_id"] in ids]
                return rows if all(c["status"] != "pending" for c in rows) else None
            finally:
                s.close()

        rows = _wait(applied)
        assert {c["kind"]: c["status"] for c in rows} == {
            "approve": "applied",
            "pause": "applied",
        }, [c["outcome"] for c in rows]
        s = store()
        try:
            last = s.run("paper").checkpoint[0]
            beat = s.heartbeat("paper")
        finally:
            s.close()
        assert beat["status"] == "running" and beat["pid"] == runner.pid
        assert first[0] <= last  # applied while it ran, at a tick between cycles
        _wait(cycled(last + 1), timeout=60)  # and it carried on cycling (a bar: 3 s)
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=120)
        assert runner.returncode == 0, err[-2000:]
        assert "SIGTERM" in err and "Traceback" not in err
        s = store()
        try:
            assert s.heartbeat("paper")["status"] == "stopped"
            sent = [o for o in s.orders("paper") if o["subaccount"] == "propose"]
            assert sent and all(o["status"] in ("sent", "filled", "partially_filled") for o in sent)
            # pilot sent nothing after the pause was applied
            pause = next(c for c in s.commands("paper") if c["kind"] == "pause")
            after = [
                o
                for o in s.orders("paper")
                if o["subaccount"] == "pilot" and o["bar"] > pause["applied_bar"]
            ]
            assert after == []
        finally:
            s.close()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()


def _proposal_of(store: Store, sub: str):
    try:
        if store.run("paper") is None:
            return None
        pending = [p for p in store.proposals("paper", status="pending") if p["subaccount"] == sub]
        return pending[-1]["proposal_id"] if pending else None
    finally:
        store.close()
