"""The store on SQLite and on a real PostgreSQL server: exact money, runs, atomic bars,
rewinding after a kill, deterministic client order ids, errors without secrets."""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
from decimal import Decimal

import pandas as pd
import pytest
import sqlalchemy as sa

from trimtab.domain import Fill, Order, OrderType, Side
from trimtab.journal.store import (
    MAX_CLIENT_ORDER_ID,
    Store,
    StoreError,
    client_order_id,
    mask_url,
)

T0 = pd.Timestamp("2021-01-01", tz="UTC")
DAY = pd.Timedelta("1D")

# Floats that binary-float columns (or NUMERIC(38,18)) would not give back bit for bit.
AWKWARD_FLOATS = [
    0.1 + 0.2,
    12345678.123456789012,
    1e-20,
    3.0000000000000004e-05,
    5e-324,
    1.7976931348623157e308,
    -2.5e-8,
    123456789012345.67,
]


def same_float(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))


def write_bar(store: Store, run: str, bar: int, *, checkpoint: bool = True) -> list[str]:
    """One bar's typical records: a decision with two orders, their fills, a balance."""
    ts = T0 + bar * DAY
    with store.transaction(run, bar=bar, timestamp=ts) as tx:
        tx.add_decisions(
            [{"id": bar, "timestamp": ts.isoformat(), "action": "rebalance", "reasons": []}]
        )
        legs = [
            Order("BTCUSDT", Side.BUY, quote_quantity=100.0 + bar, decision_id=bar),
            Order("ETHUSDT", Side.SELL, quantity=0.5, decision_id=bar),
        ]
        ids = tx.add_orders(legs)
        tx.add_fills(
            [Fill(o.id, ts, o.symbol, o.side, 0.25, 1000.0 + bar, 0.1, "USDT") for o in legs]
        )
        tx.add_balances([{"subaccount": "main", "equity": 1e5 + bar, "cash": 5e4}])
        tx.save_state("account", {"bar": bar})
        if checkpoint:
            tx.set_checkpoint()
    return ids


# --- exact numbers -----------------------------------------------------------------------
def test_floats_come_back_bit_exact_and_decimals_exactly(store: Store) -> None:
    store.start_run("r", "backtest", {})
    values = [*AWKWARD_FLOATS, math.nan, math.inf, -math.inf]
    with store.transaction("r", timestamp=T0) as tx:
        tx.add_balances(
            [
                {"subaccount": f"s{k}", "bar": k, "equity": v, "cash": v}
                for k, v in enumerate(values)
            ]
        )
        tx.add_balances(
            [
                {
                    "subaccount": "exact",
                    "bar": 0,
                    "equity": Decimal("12345678.123456789012"),
                    "cash": Decimal("0.30000000000000000000000001"),
                }
            ]
        )
    rows = {r["subaccount"]: r for r in store.balances("r")}
    for k, v in enumerate(values):
        back = rows[f"s{k}"]["equity"]
        assert isinstance(back, Decimal)
        assert same_float(float(back), v), (v, back)
    as_floats = {r["subaccount"]: r["cash"] for r in store.balances("r", floats=True)}
    assert [as_floats[f"s{k}"] for k in range(len(AWKWARD_FLOATS))] == AWKWARD_FLOATS
    assert rows["s0"]["cash"] == Decimal("0.30000000000000004")
    assert rows["exact"]["equity"] == Decimal("12345678.123456789012")
    assert rows["exact"]["cash"] == Decimal("0.30000000000000000000000001")


def test_money_columns_are_not_binary_floats_in_the_database(store: Store) -> None:
    store.start_run("r", "backtest", {})
    with store.transaction("r", bar=0, timestamp=T0) as tx:
        tx.add_balances([{"subaccount": "main", "equity": 0.1 + 0.2, "cash": 1.0}])
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            kind, raw = conn.execute(sa.text("SELECT typeof(equity), equity FROM balances")).one()
            assert (kind, raw) == ("text", "0.30000000000000004")
        else:
            kind = conn.execute(
                sa.text(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = 'balances' AND column_name = 'equity'"
                )
            ).scalar()
            assert kind == "numeric"
            raw = conn.execute(sa.text("SELECT equity::text FROM balances")).scalar()
            assert raw == "0.30000000000000004"


def test_component_state_keeps_floats_exactly(store: Store) -> None:
    store.start_run("r", "backtest", {})
    state = {"cash": AWKWARD_FLOATS, "nan": math.nan, "nested": {"q": [0.1, 0.7 - 0.4]}}
    with store.transaction("r", bar=3) as tx:
        tx.save_state("account", state)
        tx.set_checkpoint(timestamp=T0)
    back = store.load_state("r", "account")
    assert back is not None
    assert back["cash"] == AWKWARD_FLOATS
    assert math.isnan(back["nan"])
    assert back["nested"] == {"q": [0.1, 0.29999999999999993]}
    assert store.load_state("r", "broker") is None
    assert store.checkpoint("r") == (3, T0)


# --- runs ----------------------------------------------------------------------------------
def test_start_run_creates_then_returns_the_same_run(store: Store) -> None:
    first = store.start_run("demo", "backtest", {"policy": "managed", "days": [1, 2]})
    again = store.start_run("demo", "backtest", {"days": [1, 2], "policy": "managed"})
    assert first.created and not again.created
    assert again.spec == {"policy": "managed", "days": [1, 2]}
    assert again.status == "running" and again.checkpoint is None
    with pytest.raises(StoreError, match=r"run 'demo' .* another spec \(differs in: policy\)"):
        store.start_run("demo", "backtest", {"policy": "equal-weight", "days": [1, 2]})
    with pytest.raises(StoreError, match="another kind 'backtest'"):
        store.start_run("demo", "paper", {"policy": "managed", "days": [1, 2]})
    store.finish_run("demo", {"end_equity": 123.5})
    done = store.run("demo")
    assert done is not None and done.status == "finished"
    assert done.summary == {"end_equity": 123.5}
    assert [r.run_id for r in store.runs()] == ["demo"]


def test_writing_to_an_unknown_run_names_it(store: Store) -> None:
    with pytest.raises(StoreError, match="no run 'ghost'"), store.transaction("ghost", bar=0):
        pass
    with pytest.raises(StoreError, match="no run 'ghost'"):
        store.finish_run("ghost")


# --- transactions, checkpoints, rewinding --------------------------------------------------
def test_a_failed_transaction_writes_nothing(store: Store) -> None:
    store.start_run("r", "backtest", {})
    write_bar(store, "r", 0)
    with pytest.raises(RuntimeError), store.transaction("r", bar=1, timestamp=T0 + DAY) as tx:
        tx.add_decisions([{"id": 1, "action": "rebalance"}])
        tx.add_balances([{"subaccount": "main", "equity": 1.0, "cash": 1.0}])
        tx.save_state("account", {"bar": 1})
        tx.set_checkpoint()
        raise RuntimeError("killed half way")
    assert store.checkpoint("r") == (0, T0)
    assert [d["id"] for d in store.decisions("r")] == [0]
    assert len(store.balances("r")) == 1
    assert store.load_state("r", "account") == {"bar": 0}


def test_rewind_drops_the_bars_after_the_checkpoint_and_they_can_be_written_again(
    store: Store,
) -> None:
    store.start_run("r", "backtest", {})
    for bar in range(3):
        write_bar(store, "r", bar)
    # A process killed after writing bar 3's rows in a transaction of their own.
    write_bar(store, "r", 3, checkpoint=False)
    assert len(store.decisions("r")) == 4
    assert store.rewind("r") == (2, T0 + 2 * DAY)
    assert [d["id"] for d in store.decisions("r")] == [0, 1, 2]
    assert len(store.orders("r")) == 6 and len(store.fills("r")) == 6
    assert [b["bar"] for b in store.balances("r")] == [0, 1, 2]
    for bar in (3, 4):
        write_bar(store, "r", bar)
    assert [d["id"] for d in store.decisions("r")] == [0, 1, 2, 3, 4]
    orders = store.orders("r")
    assert len(orders) == 10 == len({o["client_order_id"] for o in orders})
    assert [o["decision_id"] for o in orders] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    fills = store.fills("r")
    assert len(fills) == 10
    # Every fill found its order through the broker's order id.
    assert [f["client_order_id"] for f in fills] == [o["client_order_id"] for o in orders]
    assert store.checkpoint("r") == (4, T0 + 4 * DAY)


def test_rewind_without_a_checkpoint_drops_every_bar(store: Store) -> None:
    store.start_run("r", "backtest", {})
    write_bar(store, "r", 0, checkpoint=False)
    assert store.rewind("r") is None
    assert store.decisions("r") == [] and store.orders("r") == [] and store.fills("r") == []
    assert store.load_state("r", "account") is None


def test_live_rewind_keeps_orders_and_an_order_is_never_written_twice(store: Store) -> None:
    store.start_run("live", "paper", {})
    order = Order("BTCUSDT", Side.BUY, quantity=0.01, decision_id=7, subaccount="carry")
    with store.transaction("live", bar=0, timestamp=T0) as tx:
        tx.set_checkpoint()
    with store.transaction("live", bar=1, timestamp=T0 + DAY) as tx:
        (cid,) = tx.add_orders([order])
        tx.update_order_status(cid, "sent", exchange_order_id="123")
    # Killed before the bar's checkpoint: the order may be at the exchange, so it stays.
    store.rewind("live", keep_orders=True)
    with store.transaction("live", bar=1, timestamp=T0 + DAY) as tx:
        assert tx.add_orders([order]) == [cid]
    (row,) = store.orders("live")
    assert row["status"] == "sent" and row["exchange_order_id"] == "123"
    assert row["subaccount"] == "carry" and row["quantity"] == Decimal("0.01")
    store.rewind("live")
    assert store.orders("live") == []


def test_orders_keep_every_field_and_their_status_moves(store: Store) -> None:
    store.start_run("r", "backtest", {})
    expires = pd.Timestamp("2021-01-05 12:00", tz="UTC")
    legs = [
        Order(
            "BTCUSDT",
            Side.BUY,
            quantity=0.123456789,
            type=OrderType.LIMIT,
            limit_price=29_000.5,
            time_in_force="gtd",
            expires_at=expires,
            decision_id=1,
            reason="rebalance",
        ),
        Order("ETHUSDT", Side.SELL, quantity=2.0, reduce_only=True, leverage=3.0, decision_id=1),
    ]
    with store.transaction("r", bar=5, timestamp=T0) as tx:
        ids = tx.add_orders(legs)
        tx.update_order_status(ids[0], "partially_filled", filled_quantity=0.1)
        with pytest.raises(StoreError, match="status must be one of"):
            tx.update_order_status(ids[1], "done")
    first, second = store.orders("r")
    assert first["client_order_id"] == client_order_id("r", "main", 1, 0) == ids[0]
    assert second["client_order_id"] == client_order_id("r", "main", 1, 1)
    assert first["status"] == "partially_filled" and second["status"] == "new"
    assert first["filled_quantity"] == Decimal("0.1")
    assert (first["type"], first["limit_price"], first["time_in_force"]) == (
        "limit",
        Decimal("29000.5"),
        "gtd",
    )
    assert first["expires_at"] == expires and first["timestamp"] == T0
    assert first["order_id"] == legs[0].id and first["bar"] == 5
    assert second["reduce_only"] is True and second["leverage"] == Decimal("3.0")
    assert first["created_at"].tz is not None


def test_decisions_are_upserted_by_key_and_read_in_the_order_written(store: Store) -> None:
    store.start_run("r", "backtest", {})
    with store.transaction("r", bar=0, timestamp=T0) as tx:
        tx.add_decisions([{"id": 0, "action": "hold"}, {"id": 1, "action": "rebalance"}], "a")
        tx.add_decisions([{"id": 0, "action": "hold", "subaccount": "b"}])
        tx.add_decisions([{"id": 1, "action": "rebalance", "orders": [1, 2]}], "a")
    assert [(d.get("subaccount"), d["id"]) for d in store.decisions("r")] == [
        (None, 0),
        (None, 1),
        ("b", 0),
    ]
    assert store.decisions("r", "a")[1]["orders"] == [1, 2]
    assert len(store.decisions("r", "b")) == 1


def test_transfers_breaker_changes_and_overrides(store: Store) -> None:
    from trimtab.guard.limits import LimitGuard

    store.start_run("r", "backtest", {})
    guard = LimitGuard()
    override = guard.override("max_asset_weight", 0.4, by="ana", reason="calmer", at=T0)
    with store.transaction("r", bar=2, timestamp=T0) as tx:
        tx.add_transfers(
            [
                {"source": "core", "target": "carry", "amount": 0.1 + 0.2, "reason": "alloc"},
                {
                    "source": "carry",
                    "target": "core",
                    "amount": 5.0,
                    "status": "rejected",
                    "guard": {"rule": "min_cash"},
                },
            ]
        )
        tx.add_breaker_changes(
            [{"at": T0.isoformat(), "scope": "core", "old": "active", "new": "halted",
              "trigger": "max_drawdown", "message": "drawdown 50%", "values": {"drawdown": 0.5}}]
        )  # fmt: skip
        tx.add_overrides([override], scope="core")
    t1, t2 = store.transfers("r")
    assert (t1["source"], t1["target"], t1["amount"], t1["status"]) == (
        "core",
        "carry",
        Decimal("0.30000000000000004"),
        "done",
    )
    assert t2["status"] == "rejected" and t2["guard"] == {"rule": "min_cash"}
    (change,) = store.breaker_changes("r")
    assert change["new"] == "halted" and change["values"] == {"drawdown": 0.5}
    (o,) = store.overrides("r")
    assert (o["key"], o["old"], o["new"], o["by"], o["reason"], o["at"]) == (
        "max_asset_weight",
        1.0,
        0.4,
        "ana",
        "calmer",
        T0,
    )


# --- schema --------------------------------------------------------------------------------
def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    store = Store.open(tmp_path / "deep" / "folder" / "x.db")  # a plain path; folders made
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.close()


# --- client order ids ----------------------------------------------------------------------
def test_client_order_ids_are_deterministic_short_and_distinct() -> None:
    cid = client_order_id("backtest-2024", "main", 12, 3)
    assert cid == client_order_id("backtest-2024", "main", 12, 3)
    assert cid.startswith("tt-") and cid.endswith("-main-12-3")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    names = ["main", "a very long subaccount name indeed", "carry/ETH", "carry ETH", "carryETH"]
    seen = set()
    for run in ("r1", "r2"):
        for sub in names:
            for decision in (0, 1, 99_999_999, 10**30, None):
                for leg in (0, 1, 250):
                    out = client_order_id(run, sub, decision, leg)
                    assert len(out) <= MAX_CLIENT_ORDER_ID and set(out) <= allowed, out
                    seen.add(out)
    assert len(seen) == 2 * len(names) * 5 * 3


# --- errors never show secrets -------------------------------------------------------------
def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    url = "postgresql+psycopg://ana:s3cr3t-pw@127.0.0.1:1/trimtab"
    with pytest.raises(StoreError) as info:
        Store.open(url)
    assert "s3cr3t-pw" not in str(info.value)
    assert "postgresql+psycopg://ana:***@127.0.0.1:1/trimtab" in str(info.value)
    assert mask_url(url) == "postgresql+psycopg://ana:***@127.0.0.1:1/trimtab"


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://u:pw@host/db", "unsupported database"),
        ("postgresql+nodriver://u:pw@host/db", "cannot open"),
        ("sqlite:////proc/no/such/x.db", "cannot create the folder"),
    ],
)
def test_bad_urls_are_store_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        Store.open(url)
    assert ":pw@" not in str(info.value)


def test_a_wrong_password_is_named_but_not_shown(store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has no passwords")
    url = sa.make_url(store_url).set(password="not-the-password")
    with pytest.raises(StoreError, match="password authentication failed") as info:
        Store.open(url.render_as_string(hide_password=False))
    assert "not-the-password" not in str(info.value)


# --- a real process killed mid-run ---------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from tests.journal.test_store import write_bar
    from trimtab.journal.store import Store

    store = Store.open(sys.argv[1])
    store.start_run("killed", "backtest", {})
    for bar in range(10_000):
        write_bar(store, "killed", bar)
        if bar == 20:
            print("going", flush=True)
    """
)


def test_sigkill_mid_write_leaves_whole_bars_and_the_resume_continues(store_url: str) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, store_url, root], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "going"  # it is writing bars now: kill it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store.open(store_url)
    cp = store.checkpoint("killed")
    assert cp is not None and cp[0] >= 20
    # Whatever the kill interrupted is gone after the rewind; the run then goes on.
    assert store.rewind("killed") == cp
    for bar in range(cp[0] + 1, cp[0] + 4):
        write_bar(store, "killed", bar)
    last = cp[0] + 3
    assert [d["id"] for d in store.decisions("killed")] == list(range(last + 1))
    assert [b["bar"] for b in store.balances("killed")] == list(range(last + 1))
    orders = store.orders("killed")
    assert [o["decision_id"] for o in orders] == [b for b in range(last + 1) for _ in (0, 1)]
    assert len(store.fills("killed")) == len(orders)
    assert store.load_state("killed", "account") == {"bar": last}
    store.close()


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path) -> None:
    """A first `trimtab run` and a `trimtab status` may create the schema together;
    without the migration lock the second found half a schema ("table runs already
    exists")."""
    import subprocess
    import sys

    code = "import sys; from trimtab.journal.store import Store; Store.open(sys.argv[1]).close()"
    for k in range(3):
        path = tmp_path / f"new-{k}.db"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        with Store.open(path) as store:
            assert store.schema_revision() == "0005"
