"""The emulator's books add up: after a seeded random mix of market and limit orders,
cancels, partial fills and clock moves, every balance read through ccxt equals the
starting balance plus what the trades and income read through ccxt say; and clients on
several threads at once lose nothing."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from decimal import Decimal as D

import ccxt

from tests.emulator.helpers import KEY2, SECRET2, client

START_SPOT = {"USDT": D("10000"), "BTC": D("0.5")}
START_FUT = D("5000")


def _spot_from_trades(ex) -> dict[str, D]:
    bal = defaultdict(D, START_SPOT)
    for sym, base in (("BTC/USDT", "BTC"), ("ETH/USDT", "ETH")):
        for t in ex.fetch_my_trades(sym, limit=1000):
            i = t["info"]
            qty, quote, fee = D(i["qty"]), D(i["quoteQty"]), D(i["commission"])
            sign = 1 if i["isBuyer"] else -1
            bal[base] += sign * qty
            bal["USDT"] -= sign * quote
            bal[i["commissionAsset"]] -= fee
    return bal


def test_random_orders_add_up(emu, ex):
    rng = random.Random(12)
    n = 0
    for _ in range(120):
        n += 1
        r = rng.random()
        sym = rng.choice(["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"])
        px = ex.fetch_ticker(sym)["last"]
        side = rng.choice(["buy", "sell"])
        amount = (
            round(rng.uniform(0.01, 0.05), 4) if "BTC" in sym else round(rng.uniform(0.1, 1), 3)
        )
        if rng.random() < 0.15:
            emu.fault("partial", fraction=rng.choice([0.25, 0.5]))
        try:
            if r < 0.45:
                ex.create_order(sym, "market", side, amount, params={"clientOrderId": f"r-{n}"})
            elif r < 0.85:
                k = 1 + rng.uniform(-0.03, 0.03)
                ex.create_order(sym, "limit", side, amount, round(px * k, 2),
                                params={"clientOrderId": f"r-{n}"})  # fmt: skip
            else:
                open_ = ex.fetch_open_orders(sym)
                if open_:
                    ex.cancel_order(rng.choice(open_)["id"], sym)
        except ccxt.InsufficientFunds:
            pass
        if rng.random() < 0.2:
            emu.set_clock(emu.clock_ms + rng.choice([6, 8, 24]) * 3_600_000)
    assert len(emu.trades("main")) > 50

    # spot: balances equal the start plus the trades
    want = _spot_from_trades(ex)
    got = {
        b["asset"]: D(b["free"]) + D(b["locked"]) for b in ex.fetch_balance()["info"]["balances"]
    }
    assert {a: v for a, v in got.items() if v} == {a: v for a, v in want.items() if v}
    # locked = what the open orders hold
    locked = defaultdict(D)
    for sym, base in (("BTC/USDT", "BTC"), ("ETH/USDT", "ETH")):
        for o in ex.fetch_open_orders(sym):
            rest = D(o["info"]["origQty"]) - D(o["info"]["executedQty"])
            if o["side"] == "buy":
                locked["USDT"] += rest * D(o["info"]["price"])
            else:
                locked[base] += rest
    held = {b["asset"]: D(b["locked"]) for b in ex.fetch_balance()["info"]["balances"]}
    assert {a: v for a, v in held.items() if v} == {a: v for a, v in locked.items() if v}

    # futures: the wallet equals the start plus realised PnL, fees and funding (income),
    # and the positions equal the signed sum of the trades
    income = ex.fapiPrivateGetIncome({"limit": 1000})
    wallet = START_FUT + sum((D(i["income"]) for i in income), D(0))
    assert D(ex.fapiPrivateV3GetAccount()["totalWalletBalance"]) == wallet
    pnl = sum((D(i["income"]) for i in income if i["incomeType"] == "REALIZED_PNL"), D(0))
    fees = sum((D(i["income"]) for i in income if i["incomeType"] == "COMMISSION"), D(0))
    trades = ex.fetch_my_trades("BTC/USDT:USDT", limit=1000) + ex.fetch_my_trades(
        "ETH/USDT:USDT", limit=1000
    )
    assert pnl == sum((D(t["info"]["realizedPnl"]) for t in trades), D(0))
    assert fees == -sum((D(t["info"]["commission"]) for t in trades), D(0))
    for sym in ("BTCUSDT", "ETHUSDT"):
        signed = sum(
            (D(t["info"]["qty"]) * (1 if t["side"] == "buy" else -1)
             for t in trades if t["info"]["symbol"] == sym),
            D(0),
        )  # fmt: skip
        held = emu.positions("main").get(sym, {"amt": D(0)})["amt"]
        assert held == signed


def test_clients_on_threads_lose_nothing(emu):
    clients = [client(emu) for _ in range(3)] + [client(emu, KEY2, SECRET2)]
    for c in clients:
        c.load_markets()
    for c in (clients[0], clients[3]):  # one order in each account before the threads
        c.create_order("ETH/USDT", "market", "buy", 0.01, params={"clientOrderId": "seed"})
    errors: list[Exception] = []

    def work(k: int, ex) -> None:
        try:
            for j in range(15):
                ex.create_order("ETH/USDT", "market", "buy", 0.01,
                                params={"clientOrderId": f"th-{k}-{j}"})  # fmt: skip
                if j % 5 == 0:  # every thread also resends its account's first order
                    try:
                        ex.create_order("ETH/USDT", "market", "buy", 0.01,
                                        params={"clientOrderId": "seed"})  # fmt: skip
                    except ccxt.InvalidOrder:
                        pass
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k, c)) for k, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    main, second = emu.orders("main"), emu.orders("second")
    assert len(main) == 46 and len(second) == 16  # 15 per thread and the seed
    assert len({o["cid"] for o in main}) == 46
    assert emu.duplicate_attempts == 4 * 3  # each thread resent the seed at j = 0, 5, 10
    assert emu.balances("main")["ETH"]["free"] == 46 * (D("0.01") - D("0.00001"))
    assert emu.balances("main")["USDT"]["free"] == D(10000) - 46 * D("0.01") * 1520
