"""p99 latency of the API's read endpoints at a fixed request rate on loopback.

Builds a real paper run (examples/paper.yaml replayed 2022-01-03..2022-01-10, as the
API's tests do) unless ``--db`` names a store, serves it with ``trimtab serve`` in a
separate process on a free 127.0.0.1 port, logs in, then sends ``--requests`` GETs
spread evenly over the read endpoints at ``--rate`` requests per second (open loop: each
request leaves at its scheduled time, so a slow answer cannot slow the rate down) from
a pool of threads. Latency is measured from the scheduled time to the last byte.

Peer: the same service functions called in-process on the same store (no HTTP, no
JSON, no auth): what the endpoint costs before the web layer.

    uv run python bench/bench_api.py [--rate 200] [--requests 3000] [--db URL]

Loopback only; bounded by --requests and --max-seconds.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import http.client
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = [
    "status", "holdings", "review", "proposals", "decisions?limit=100",
    "orders?limit=100", "fills?limit=100", "alerts?limit=100", "equity",
]  # fmt: skip


def build_store(folder: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import SHARED_DATA

    from trimtab.app.run import RunOptions, build_run, make_observers
    from trimtab.engine.portfolio_file import load_portfolio

    portfolio = folder / "paper.yaml"
    portfolio.write_text((ROOT / "examples" / "paper.yaml").read_text())
    url = f"sqlite:///{folder / 'runs' / 'paper.db'}"
    build_run(
        load_portfolio(portfolio),
        RunOptions(db=url, replay=str(SHARED_DATA), start="2022-01-03", end="2022-01-10"),
        make_observers=make_observers,
    ).run()
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def in_process(url: str, rounds: int) -> dict[str, list[float]]:
    from trimtab.app import service

    store = service.open_store(url)
    run = service.find_run(store)
    calls = {
        "status": lambda: service.overview(store, run),
        "holdings": lambda: service.holdings(store, run),
        "review": lambda: service.review(store, run),
        "proposals": lambda: service.proposals(store, run),
        "decisions?limit=100": lambda: service.decisions(store, run, None, 100),
        "orders?limit=100": lambda: service.orders(store, run, None, 100),
        "fills?limit=100": lambda: service.fills(store, run, None, 100),
        "alerts?limit=100": lambda: service.alerts(store, run, 100),
        "equity": lambda: service.equity(store, run),
    }
    out: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--requests", type=int, default=3000, help="how many requests")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument(
        "--cache", type=float, default=0.5, help="the server's read cache, seconds (0: none)"
    )
    ap.add_argument("--db", help="a store with one paper run (default: build one)")
    args = ap.parse_args()
    if args.requests > 100_000 or args.rate > 5_000:
        sys.exit("bounded: at most 100,000 requests and 5,000 requests/s")
    if args.requests / args.rate > args.max_seconds:
        sys.exit(f"{args.requests} requests at {args.rate}/s take longer than --max-seconds")

    tmp = Path(tempfile.mkdtemp(prefix="trimtab-bench-api-"))
    t0 = time.perf_counter()
    url = args.db or build_store(tmp)
    print(f"store {url} ({time.perf_counter() - t0:.1f} s to build)")
    from trimtab.app import service, users

    with service.open_store(url) as store:
        users.add_user(store, "bench", "viewer", "bench-password-1")
    port = free_port()
    secret = secrets.token_urlsafe(48)
    env = {**os.environ, "TRIMTAB_API_SECRET": secret, "TRIMTAB_API_CACHE_SECONDS": str(args.cache)}
    server = subprocess.Popen(
        [sys.executable, "-c", "from trimtab.cli import main; main()", "serve", "--db", url,
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/api/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit(f"the server did not start: {server.stderr.read()[-500:]}")
                time.sleep(0.1)
        token = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "bench", "password": "bench-password-1"},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        local = threading.local()

        # The standard library's client on a kept-alive connection per thread: httpx
        # costs ~3 ms of client CPU a request here, which would measure the client.
        def get(path: str) -> int:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/api/v1/{path}", headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status

        pool = cf.ThreadPoolExecutor(args.threads)  # one pool: its threads keep their connections
        warm = [pool.submit(get, p) for p in ENDPOINTS * args.threads]  # warm up every thread
        assert all(f.result() == 200 for f in warm)

        results: dict[str, list[float]] = {p: [] for p in ENDPOINTS}
        errors = 0
        interval = 1.0 / args.rate
        start = time.perf_counter() + 0.2

        def one(i: int) -> tuple[str, float, int]:
            path = ENDPOINTS[i % len(ENDPOINTS)]
            due = start + i * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            code = get(path)
            return path, time.perf_counter() - due, code

        with pool:
            # Each task sleeps until its due time; the pool runs them in order.
            futures = [pool.submit(one, i) for i in range(args.requests)]
            for f in futures:
                path, seconds, code = f.result(timeout=args.max_seconds)
                results[path].append(seconds)
                errors += code != 200
        elapsed = time.perf_counter() - start
        done = sum(len(v) for v in results.values())
        every = [s for v in results.values() for s in v]
    finally:
        server.terminate()
        server.wait(timeout=10)

    peer = in_process(url, 200)
    print(
        f"\n{done} requests in {elapsed:.1f} s ({done / elapsed:.0f}/s achieved, "
        f"{args.rate:.0f}/s asked), {errors} not 200, {args.threads} client threads, "
        f"server read cache {args.cache:g} s\n"
    )
    print(f"{'endpoint':<22}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}   in-process p50 / p99 ms")
    for path in ENDPOINTS:
        v, w = results[path], peer[path]
        print(
            f"{path:<22}{pct(v, 50):9.1f}{pct(v, 99):9.1f}{pct(v, 100):9.1f}"
            f"   {pct(w, 50):6.2f} / {pct(w, 99):6.2f}"
        )
    allp = [s for v in peer.values() for s in v]
    print(
        f"{'all':<22}{pct(every, 50):9.1f}{pct(every, 99):9.1f}{pct(every, 100):9.1f}"
        f"   {pct(allp, 50):6.2f} / {pct(allp, 99):6.2f}"
    )
    print(f"\ngoal p99 < 50 ms: {'met' if pct(every, 99) < 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
