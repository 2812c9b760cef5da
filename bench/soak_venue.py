"""The runner on a real venue killed at random: SIGKILLs of an auto run trading through
ccxt over HTTP with the local Binance emulator (a process of its own), faults queued at
the exchange before each start (a timeout after an order is accepted, 429s, a partial
fill), each kill followed by a restart of the same command.

After each run (killed again and again until a start ends on its own), checked:

- no client order id twice at the exchange, and no refused reuse (the emulator counts
  every attempt to send a known id): each order was sent exactly once;
- no lost fill: every trade the exchange made for the accounts is booked once, in the
  store's fills (by the exchange's trade id) or as an event still to book at the end;
- the books: the runner's ledger (its events still to book counted in) equals what each
  account holds at the emulator, and the reconciliation gate is ACTIVE.

With ``--transfers`` the run also moves capital between its two subaccounts every day
(``_venue.transfers_portfolio``) through the emulated master account, with transfer
faults queued too (an answer lost after the exchange took a transfer, a 5xx before it
did); checked: every transfer the store has as made is at the exchange exactly once (by
its ``clientTranId``), none other is, no ``clientTranId`` was sent twice, none is left
unsent.

Run: ``uv run python bench/soak_venue.py --kills 100 --seed 0 [--transfers]`` (the suite
runs a few kills: ``tests/engine/test_venue_kill.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.engine import _venue  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DAILY = SHARED / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
#: A daily bar in 60 ms of wall time: kills land in start-up, in cycles and in sends.
SPEED = 86_400 / 0.06


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    # This checkout's code, whatever the environment has installed: a soak can run on a
    # worktree of one commit while the main tree changes.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def start_emulator(folder: Path, transfers: bool = False) -> tuple[subprocess.Popen[str], str]:
    args = [
        sys.executable,
        "-m",
        "tests.emulator",
        "--port",
        "0",
        "--state",
        str(folder / "emulator.json"),
        "--data",
        str(DAILY),
        "--symbols",
        ",".join(_venue.SYMBOLS),
        "--futures-symbols",
        "",
        "--clock",
        _venue.START,
    ]
    for name, (key, secret) in _venue.KEYS.items():
        args += ["--account", f"{key}:{secret}:{name}:USDT={_venue.CAPITAL[name]}"]
    if transfers:
        key, secret = _venue.MASTER
        args += ["--account", f"{key}:{secret}:master:USDT=0", "--master", "master"]
        for name, email in _venue.EMAILS.items():
            args += ["--email", f"{name}={email}"]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the emulator did not start: {url!r} {proc.stderr.read()}")
    return proc, url


TRANSFER_PATH = "/sapi/v1/sub-account/universalTransfer"


def queue_faults(url: str, rng: random.Random, transfers: bool = False) -> dict[str, int]:
    """Faults for the next start, each with probability 1/2, when the last ones have all
    fired (a start killed early leaves them queued: they would pile up); returns the
    counts queued."""
    chosen: dict[str, int] = {}
    if _venue.control(url, "/_emulator/state").get("faults"):
        return chosen
    kinds: list[tuple[str, int, dict[str, Any]]] = [
        ("timeout_after_accept", 1, {}),
        ("http_429", 2, {}),
        ("partial", 1, {"fraction": 0.5}),
    ]
    if transfers:
        on_transfer = {"path": TRANSFER_PATH, "method": "POST"}
        kinds += [
            ("timeout_after_accept", 1, {**on_transfer, "seconds": 3, "label": "transfer"}),
            ("http_5xx", 1, {**on_transfer, "label": "transfer"}),
        ]
    for kind, count, extra in kinds:
        if rng.random() < 0.5:
            _venue.control(url, "/_emulator/fault", {"kind": kind, "count": count, **extra})
            label = kind + (" (transfer)" if extra.get("label") else "")
            chosen[label] = chosen.get(label, 0) + count
    return chosen


def driver(folder: Path, url: str, end: str, transfers: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.engine._venue",
            str(folder),
            str(SHARED),
            url,
            end,
            str(SPEED),
            *(["transfers"] if transfers else []),
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check(folder: Path, url: str, end: str, transfers: bool = False) -> dict[str, Any]:
    """The run's store, journal and the emulator compared (see the module docstring)."""
    state = _venue.control(url, "/_emulator/state")
    orders = (
        list(state["orders"].values()) if isinstance(state["orders"], dict) else state["orders"]
    )
    cids = [o["cid"] for o in orders]
    extra: dict[str, Any] = {}
    if transfers:
        extra = {
            "portfolio": _venue.transfers_portfolio(end=end),
            "venue_options": _venue.TRANSFER_OPTIONS,
        }
    run = _venue.make_run(folder, SHARED, url, end=end, **extra)
    try:
        r = run.runner
        rec = r.inspect()  # polls the venue once more: the last cycle's fills
        fills = run.store.fills("venue")
        booked = [f["trade_id"] for f in fills]
        pending = [
            f"{ev.data['symbol']}:{ev.data['trade_id']}"
            for ev in run.exchange.events_since(r.event_seq)
            if ev.kind == "fill"
        ]
        at_exchange = [f"{t['symbol']}:{t['id']}" for t in state["trades"]]
        books = {}
        for name in _venue.KEYS:
            acct = state["accounts"][name]["spot"]
            books[name] = {a: float(b["free"]) + float(b["locked"]) for a, b in acct.items()}
        mismatch = []
        # The ledger with the events still to book, against the emulator's books.
        from trimtab.engine.reconcile import project

        # Less the run's own transfers, booked when decided (the last cycle's are still
        # to book).
        unbooked = [ev for ev in run.exchange.events_since(r.event_seq) if not r._own_transfer(ev)]
        projected, *_ = project(r.account, unbooked, r.exchange.instrument)
        for name, sub in projected.subaccounts.items():
            if abs(sub.cash - books[name].get("USDT", 0.0)) > 1e-6:
                mismatch.append(f"{name} cash {sub.cash} vs {books[name].get('USDT')}")
            for sym, pos in sub.positions.items():
                theirs = books[name].get(sym.removesuffix("USDT"), 0.0)
                if abs(pos.quantity - theirs) > 1e-9:
                    mismatch.append(f"{name} {sym} {pos.quantity} vs {theirs}")
        moved = {}
        if transfers:
            from trimtab.execution.client_ids import encode_client_id

            rows = run.store.transfers("venue", floats=True)
            done = {
                encode_client_id(r["guard"]["transfer_id"]) for r in rows if r["status"] == "done"
            }
            made = [
                t["clientTranId"] for t in state.get("transfers", []) if t["status"] == "SUCCESS"
            ]
            moved = {
                "transfers_done": len(done),
                "transfers_refused_by_guard": sum(r["status"] == "refused" for r in rows),
                "transfers_left_new": sum(r["status"] == "new" for r in rows),
                "transfers_twice": len(made) - len(set(made)),
                "transfer_reuses_refused": sum(
                    t["status"] == "DUPLICATE" for t in state.get("transfers", [])
                ),
                "transfers_missing_or_extra": sorted(set(made) ^ done),
            }
        return {
            **moved,
            "orders": len(orders),
            "duplicate_cids": len(cids) - len(set(cids)),
            "duplicate_attempts": int(state.get("duplicate_attempts", 0)),
            "trades": len(at_exchange),
            "booked": len(booked),
            "booked_twice": len(booked) - len(set(booked)),
            "lost": sorted(set(at_exchange) - set(booked) - set(pending)),
            "gate": rec.state,
            "gate_summary": rec.summary(),
            "book_mismatches": mismatch,
            "last_bar": r.last_bar,
        }
    finally:
        run.close()


def soak_run(
    folder: Path, kills: int, rng: random.Random, end: str, log: Any, transfers: bool = False
) -> dict[str, Any]:
    """One run killed ``kills`` times (fewer if it ends first), then checked."""
    emu, url = start_emulator(folder, transfers)
    done = 0
    starts = 0
    queued: dict[str, int] = {}
    try:
        while True:
            for k, v in queue_faults(url, rng, transfers).items():
                queued[k] = queued.get(k, 0) + v
            proc = driver(folder, url, end, transfers)
            starts += 1
            if done < kills:
                # Half the kills during start-up (restore, reconciliation), half in cycles.
                wait = rng.uniform(0.5, 4.0) if rng.random() < 0.5 else rng.uniform(4.0, 9.0)
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    done += 1
                    continue
            else:
                proc.wait(timeout=900)
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"driver failed (code {proc.returncode}):\n{err[-3000:]}")
            if "done" in out:
                break
        result = check(folder, url, end, transfers)
        left: dict[str, int] = {}
        for f in _venue.control(url, "/_emulator/state").get("faults", []):
            label = f["kind"] + (" (transfer)" if f.get("label") else "")
            left[label] = left.get(label, 0) + int(f.get("count", 1))
        result["faults_fired"] = {k: v - left.get(k, 0) for k, v in queued.items()}
    finally:
        emu.send_signal(signal.SIGTERM)
        emu.wait(timeout=30)
    result.update({"kills": done, "starts": starts})
    print(json.dumps(result), file=log, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--per-run", type=int, default=10, help="kills per run before it may end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--end", default="2022-01-31")
    ap.add_argument(
        "--transfers", action="store_true", help="daily transfers through the master account"
    )
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    total, runs, bad = 0, 0, 0
    fired: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        while total < args.kills:
            folder = Path(tmp) / f"run{runs}"
            folder.mkdir()
            n = min(args.per_run, args.kills - total)
            res = soak_run(folder, n, rng, args.end, sys.stdout, args.transfers)
            runs += 1
            total += res["kills"]
            ok = (
                res["duplicate_cids"] == 0
                and res["duplicate_attempts"] == 0
                and res["booked_twice"] == 0
                and not res["lost"]
                and not res["book_mismatches"]
                and res["gate"] == "ACTIVE"
                and not res.get("transfers_twice")
                and not res.get("transfer_reuses_refused")
                and not res.get("transfers_left_new")
                and not res.get("transfers_missing_or_extra")
            )
            bad += not ok
            for k, v in res["faults_fired"].items():
                fired[k] = fired.get(k, 0) + v
    print(
        f"{total} kills over {runs} runs: {bad} run(s) with a mismatch; faults that fired: "
        f"{fired}; {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
