"""What writing a backtest to the store costs: N bars of typical records, one transaction
per bar (the decision, its orders and fills, a balance snapshot, three components' state
and the checkpoint), against building the same records without writing them.

    uv run python bench/bench_store.py                 # 1,825 bars x 10 assets, SQLite
    uv run python bench/bench_store.py --bars 365 --assets 34
    TRIMTAB_TEST_POSTGRES_URL=postgresql+psycopg://... uv run python bench/bench_store.py

Prints the wall time of each and the cost per bar (ms). The SQLite file is a temporary
one (WAL, synchronous=NORMAL, as ``Store.open`` sets).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.domain import Account, Fill, Order, Side, spot
from trimtab.journal.store import Store, mask_url


def make_bar(i: int, symbols: list[str], rng: np.random.Generator) -> dict[str, Any]:
    """One bar's records, shaped like the backtest's (``trimtab.engine``)."""
    ts = pd.Timestamp("2019-01-01", tz="UTC") + pd.Timedelta(days=i)
    prices = 100.0 * np.exp(rng.normal(0, 0.02, len(symbols)).cumsum())
    weights = rng.dirichlet(np.ones(len(symbols))) * 0.95
    orders = [
        Order(s, Side.BUY if rng.random() < 0.5 else Side.SELL, quantity=float(q), decision_id=i)
        for s, q in zip(symbols, rng.random(len(symbols)) * 10 + 0.01, strict=True)
    ]
    fills = [
        Fill(o.id, ts, o.symbol, o.side, float(o.quantity), float(p), float(p) * 1e-3, "USDT")
        for o, p in zip(orders, prices, strict=True)
    ]
    record = {
        "id": i,
        "timestamp": ts.isoformat(),
        "policy": "managed",
        "action": "rebalance",
        "inputs": {"digest": f"{i:016x}", "equity": 1e5 + i},
        "reasons": [
            {"code": "drift", "message": "drift above the band", "values": {"drift": 0.031}},
            {"code": "regime", "message": "calm", "values": {"vol": 0.52, "score": 0.3}},
        ],
        "state": "active",
        "targets": dict(zip(symbols, weights.tolist(), strict=True)),
        "orders": [
            {"id": o.id, "symbol": o.symbol, "side": str(o.side), "quantity": o.quantity}
            for o in orders
        ],
    }
    account = Account.with_cash(1e5)
    sub = account.subaccount("main")
    for s, p in zip(symbols, prices, strict=True):
        sub.apply_fill(Fill(0, ts, s, Side.BUY, 1.0, float(p), 0.0, "USDT"), spot(s))
    states = {
        "account": account.state(),
        "broker": {"pending": [], "perps_traded": False, "next_order_id": orders[-1].id + 1},
        "safety": {"turnover": {"day": ts.isoformat(), "traded": 1234.5}, "day_start": 1e5},
    }
    balance = {
        "subaccount": "main",
        "equity": 1e5 + i * 0.1,
        "cash": float(sub.cash),
        "positions": {s: 1.0 for s in symbols},
    }
    return {"ts": ts, "record": record, "orders": orders, "fills": fills, "states": states,
            "balance": balance}  # fmt: skip


def write(store: Store, run_id: str, i: int, bar: dict[str, Any]) -> None:
    with store.transaction(run_id, bar=i, timestamp=bar["ts"]) as tx:
        tx.add_decisions([bar["record"]])
        tx.add_orders(bar["orders"])
        tx.add_fills(bar["fills"])
        tx.add_balances([bar["balance"]])
        for name, state in bar["states"].items():
            tx.save_state(name, state)
        tx.set_checkpoint()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1825)
    parser.add_argument("--assets", type=int, default=10)
    args = parser.parse_args()
    symbols = [f"C{k:02d}USDT" for k in range(args.assets)]

    start = time.perf_counter()
    bars = [make_bar(i, symbols, np.random.default_rng(i)) for i in range(args.bars)]
    build = time.perf_counter() - start
    print(f"{args.bars} bars x {args.assets} assets: records built in {build:.2f} s (no store)")

    urls = {"sqlite": None}
    if os.environ.get("TRIMTAB_TEST_POSTGRES_URL"):
        urls["postgresql"] = os.environ["TRIMTAB_TEST_POSTGRES_URL"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, url in urls.items():
            store = Store.open(url or Path(tmp) / "bench.db")
            store.delete_run("bench")
            store.start_run("bench", "backtest", {"bars": args.bars, "assets": args.assets})
            start = time.perf_counter()
            for i, bar in enumerate(bars):
                write(store, "bench", i, bar)
            took = time.perf_counter() - start
            rows = len(store.orders("bench")) + len(store.fills("bench"))
            print(
                f"{name:10s} {mask_url(store.url)}: written in {took:.2f} s, "
                f"{1e3 * took / args.bars:.2f} ms per bar ({rows} order and fill rows)"
            )
            store.delete_run("bench")
            store.close()


if __name__ == "__main__":
    main()
