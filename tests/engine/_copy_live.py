"""The copy follower on the local exchange emulator: the leader's account read through
ccxt (its own keys), the follower's orders through a ``CcxtVenue`` (its keys), the loop's
clock the emulator's market clock. Runnable as a process (``python -m
tests.engine._copy_live URL FOLDER RUN_ID [kill]``) so it can be killed: with ``kill``
it SIGKILLs itself right after its first order is sent, before the cycle is recorded."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from trimtab.data.leader_feed import CcxtLeaderFeed
from trimtab.engine.copy_live import CopyFollower, ccxt_client
from trimtab.execution.ccxt_venue import CcxtVenue
from trimtab.journal.store import Store
from trimtab.strategies.copy import CopyParams

LEADER = ("key-leader", "secret-leader")
FOLLOWER = ("key-copy", "secret-copy")
PARAMS = {
    "scaling": "equity_ratio",
    "fraction": 1.0,
    "delay": "120s",
    "stop_drawdown": 0.10,
    "limits": {"symbols": ["BTCUSDT"], "max_leverage": 1.0},
}


def accounts() -> dict[str, tuple]:
    return {
        LEADER[0]: (LEADER[1], "leader", {"USDT": "100000"}),
        FOLLOWER[0]: (FOLLOWER[1], "copy", {"USDT": "10000"}),
    }


def emulator_clock(url: str) -> float:
    with urllib.request.urlopen(url + "/_emulator/clock", timeout=30) as resp:
        return json.loads(resp.read())["clock_ms"] / 1000.0


def leader_client(url: str) -> Any:
    return ccxt_client("binance", *LEADER, url=url)


def _no_throttle(exchange: Any) -> None:
    exchange.enableRateLimit = False


def build(url: str, folder: Path, run_id: str, on_sent: Any = None, **params: Any) -> CopyFollower:
    folder.mkdir(parents=True, exist_ok=True)
    reader = leader_client(url)
    venue = CcxtVenue(
        folder / "venue.db",
        {"copy": FOLLOWER},
        symbols=("BTCUSDT", "ETHUSDT"),
        api_urls=url,
        backoff_s=0.05,
        configure=_no_throttle,
    )
    store = Store.open(f"sqlite:///{folder / 'store.db'}")
    p = CopyParams(**{**PARAMS, **params})
    return CopyFollower(
        feed_factory=lambda state: CcxtLeaderFeed(
            reader, ["BTCUSDT", "ETHUSDT"], since="2023-01-01", state=state
        ),
        params=p,
        venue=venue,
        store=store,
        run_id=run_id,
        spec={"params": p.model_dump(mode="json")},
        clock=lambda: emulator_clock(url),
        on_sent=on_sent,
    )


if __name__ == "__main__":
    url, folder, run_id = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    kill = len(sys.argv) > 4 and sys.argv[4] == "kill"

    def die(cid: str) -> None:
        print(f"sent {cid}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    follower = build(url, folder, run_id, on_sent=die if kill else None)
    for _ in range(int(os.environ.get("CYCLES", "1"))):
        r = follower.step()
        print(json.dumps({"cycle": r.cycle, "sent": r.sent}), flush=True)
