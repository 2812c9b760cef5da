"""A backtest recorded in the store and resumed after a crash equals the run that was never
interrupted: results, decisions, orders (client order ids, quantities, statuses), fills,
balances and transfers, exactly.

In process, a recorder "dies" at random bars (before or after the bar's batch is written,
with a new batch size each time) and a fresh loop with fresh policies and guards resumes
from the store; for real, ``trimtab backtest --db`` processes are killed with SIGKILL at
random points and started again until the run finishes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA
from tests.engine._resume import (
    assert_same_result,
    assert_same_rows,
    kill_and_resume,
    store_rows,
)
from trimtab.cli import app
from trimtab.config import TrimtabConfig, parse_config
from trimtab.engine.backtest import Backtest, BacktestConfig, BarRecord
from trimtab.engine.context import MarketContext
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio
from trimtab.engine.recording import RunRecorder
from trimtab.engine.runner import RunSpec, load_for_spec, select_members
from trimtab.guard.safety import SafetyLayer
from trimtab.journal.store import Store, StoreError, client_order_id
from trimtab.policy import Managed

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "ADAUSDT", "XRPUSDT")
# Tight limits and breakers (state changes, guard actions), and a volume cap that leaves
# orders partly filled across bars and expiring: what a resume must carry over.
CONFIG = """
limits:
  max_order_notional: 20000
  max_daily_turnover: 0.8
breakers:
  daily_loss_limit: 0.04
  loss_streak: 4
  cooldown: 3
  auto_resume: true
"""
VOLUME_SHARE = 2e-6


class Killed(Exception):
    """The recorder's process "died" here."""


class DyingRecorder(RunRecorder):
    """A recorder that dies at bar ``at``: before the bar is recorded, or just after
    (``after``: its batch may have been written)."""

    def __init__(self, *args, at: int, after: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.after = at, after

    def record(self, bar: BarRecord, states) -> None:
        if bar.bar == self.at and not self.after:
            raise Killed
        super().record(bar, states)
        if bar.bar == self.at:
            raise Killed


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    return RunSpec(
        data=str(SHARED_DATA),
        policy="managed",
        start="2021-01-01",
        end="2021-12-31",
        symbols=SYMBOLS,
        baselines=(),
        max_volume_share=VOLUME_SHARE,
    )


@pytest.fixture(scope="module")
def context(spec: RunSpec) -> MarketContext:
    panel, members = select_members(load_for_spec(spec), spec)
    return MarketContext.build(
        panel, universe=members, start=spec.start, end=spec.end, with_regime=True
    )


def managed_backtest(context: MarketContext, spec: RunSpec) -> Backtest:
    """A new managed run under the tight guard: fresh policy, guard and breakers."""
    cfg: TrimtabConfig = parse_config(CONFIG)
    policy = Managed(
        cfg.sizing, governor=cfg.governor, costs=spec.costs, cost_settings=cfg.rebalance
    )
    safety = SafetyLayer(cfg.limits, cfg.breakers, clusters=cfg.cluster_map())
    config = BacktestConfig(initial_cash=spec.initial_cash, costs=spec.costs)
    return Backtest(context, policy, config, safety=safety)


def test_a_run_resumed_after_crashes_equals_the_uninterrupted_one(context, spec, tmp_path):
    plain = managed_backtest(context, spec).run()
    url = f"sqlite:///{tmp_path / 'ref.db'}"
    with Store.open(url) as store:
        recorded = managed_backtest(context, spec).run(recorder=RunRecorder(store, "r", {}))
    assert_same_result(recorded, plain)  # recording changes nothing
    n = len(plain.equity)

    rng = np.random.default_rng(20240610)
    url2 = f"sqlite:///{tmp_path / 'crashed.db'}"
    kills = sorted(int(b) for b in rng.choice(np.arange(1, n - 1), size=5, replace=False))
    resumed_from = []
    for at in kills:
        with Store.open(url2) as store:
            recorder = DyingRecorder(
                store,
                "r",
                {},
                commit_bars=int(rng.integers(1, 40)),
                at=at,
                after=bool(rng.integers(0, 2)),
            )
            with pytest.raises(Killed):
                managed_backtest(context, spec).run(recorder=recorder)
            resumed_from.append(recorder.resumed_after)
    with Store.open(url2) as store:
        recorder = RunRecorder(store, "r", {}, commit_bars=7)
        resumed = managed_backtest(context, spec).run(recorder=recorder)
        assert recorder.resumed_after is not None and recorder.resumed_after < n
    # The first start made the run; later ones took it up where the store had it
    # (unless the one before died before its first batch was written).
    assert resumed_from[0] is None and any(r is not None for r in resumed_from)
    assert_same_result(resumed, plain)
    want = store_rows(url, "r")
    assert want["status"] == "finished" and want["checkpoint"][0] == n - 1
    assert_same_rows(store_rows(url2, "r"), want)

    # A finished run is read back whole: nothing is computed again.
    with Store.open(url2) as store:
        recorder = RunRecorder(store, "r", {})
        again = managed_backtest(context, spec).run(recorder=recorder)
        assert recorder.resumed_after == n and recorder.finished_before
    assert_same_result(again, plain)


def test_a_run_resumes_the_same_on_postgresql(context, spec, tmp_path):
    """The same crashes on a PostgreSQL server: the rows equal those of SQLite."""
    from tests.journal.conftest import empty_postgres

    pg_url = empty_postgres()  # skips without a server (fails in CI)
    url = f"sqlite:///{tmp_path / 'ref.db'}"
    with Store.open(url) as store:
        plain = managed_backtest(context, spec).run(recorder=RunRecorder(store, "pg", {}))
    for at, after in ((30, True), (170, False)):
        with Store.open(pg_url) as store:
            recorder = DyingRecorder(store, "pg", {}, commit_bars=11, at=at, after=after)
            with pytest.raises(Killed):
                managed_backtest(context, spec).run(recorder=recorder)
    with Store.open(pg_url) as store:
        recorder = RunRecorder(store, "pg", {}, commit_bars=11)
        resumed = managed_backtest(context, spec).run(recorder=recorder)
        assert recorder.resumed_after is not None and recorder.resumed_after > 100
    assert_same_result(resumed, plain)
    assert_same_rows(store_rows(pg_url, "pg"), store_rows(url, "pg"))


def test_the_store_holds_every_order_with_its_status_and_fills(context, spec, tmp_path):
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    with Store.open(url) as store:
        result = managed_backtest(context, spec).run(
            recorder=RunRecorder(store, "o", {}, commit_bars=10)
        )
        orders = store.orders("o", floats=True)
        fills = store.fills("o", floats=True)
        decisions = store.decisions("o")
    assert decisions == result.decisions
    # The trade rows, exactly, from the fills table.
    assert [f["quantity"] for f in fills] == result.trades["quantity"].tolist()
    assert [f["price"] for f in fills] == result.trades["price"].tolist()
    by_decision = defaultdict(list)
    for o in orders:
        by_decision[o["decision_id"]].append(o)
        assert o["client_order_id"] == client_order_id("o", "main", o["decision_id"], o["leg"])
    # Each decision's legs in order, and the orders its record says were sent.
    for d in result.decisions:
        legs = by_decision.get(d["id"], [])
        assert [o["leg"] for o in legs] == list(range(len(legs)))
        # The record lists what the broker took, in leg order; a leg it refused at once
        # is "rejected" (an order it took can be rejected later too, at its fill).
        sent = [o["id"] for o in d.get("orders", [])]
        assert [o["order_id"] for o in legs if o["order_id"] in sent] == sent
        assert all(o["status"] == "rejected" for o in legs if o["order_id"] not in sent)
    filled = defaultdict(float)
    for f in fills:
        filled[f["client_order_id"]] += f["quantity"]
    statuses = defaultdict(int)
    for o in orders:
        statuses[o["status"]] += 1
        assert o["filled_quantity"] == filled.get(o["client_order_id"], 0.0)
        if o["status"] == "filled":
            assert o["filled_quantity"] > 0
    # The volume cap makes orders expire, some after a partial fill.
    expired = [o for o in orders if o["status"] == "expired"]
    assert statuses["filled"] > 0 and expired
    assert any(o["filled_quantity"] > 0 for o in expired)
    assert len(expired) == int((result.rejections["kind"] == "expired").sum())


def test_another_spec_under_the_same_run_id_is_refused(context, spec, tmp_path):
    url = f"sqlite:///{tmp_path / 'spec.db'}"
    with Store.open(url) as store:
        recorder = DyingRecorder(store, "x", {"fee_bps": 10}, commit_bars=2, at=5, after=True)
        with pytest.raises(Killed):
            managed_backtest(context, spec).run(recorder=recorder)
        with pytest.raises(StoreError, match="'x'.*another spec.*fee_bps"):
            managed_backtest(context, spec).run(recorder=RunRecorder(store, "x", {"fee_bps": 5}))


def test_a_portfolio_with_transfers_resumes_exactly(tmp_path):
    portfolio = load_portfolio(ROOT / "examples" / "subaccounts.yaml")
    # Two transfers and a cut one inside the window, four subaccounts, the account breaker.
    options = PortfolioOptions(data=str(SHARED_DATA), start="2021-06-01", end="2022-03-31")
    plain = run_portfolio(portfolio, options)
    url = f"sqlite:///{tmp_path / 'portfolio.db'}"
    n = len(plain.equity)
    for at, after in ((40, False), (200, True)):
        with Store.open(url) as store:
            recorder = DyingRecorder(store, "p", {}, commit_bars=9, at=at, after=after)
            with pytest.raises(Killed):
                run_portfolio(portfolio, options, recorder=recorder)
    with Store.open(url) as store:
        recorder = RunRecorder(store, "p", {}, commit_bars=9)
        resumed = run_portfolio(portfolio, options, recorder=recorder)
        assert recorder.resumed_after is not None and 0 < recorder.resumed_after < n
        transfers = store.transfers("p", floats=True)
    assert resumed.transfers == plain.transfers
    assert {t["status"] for t in plain.transfers} == {"done", "refused", "cut"}
    assert [t["guard"] for t in transfers] == plain.transfers
    assert resumed.equity.equals(plain.equity)
    assert resumed.account_state.equals(plain.account_state)
    for name, r in plain.subaccounts.items():
        assert_same_result(resumed.subaccounts[name], r)
    assert repr(resumed.metrics) == repr(plain.metrics)  # NaN included


# --- real processes, killed with SIGKILL ------------------------------------------------
KILLS = 5


def backtest_command(config: Path) -> list[str]:
    """A year of the managed policy on five coins under the tight guard, 3 bars a batch."""
    config.write_text(CONFIG)
    return [
        "backtest",
        "--data",
        str(SHARED_DATA),
        "--start",
        "2021-01-01",
        "--end",
        "2021-12-31",
        "--symbols",
        ",".join(SYMBOLS),
        "--max-volume-share",
        str(VOLUME_SHARE),
        "--config",
        str(config),
        "--commit-every",
        "3",
    ]


def test_sigkill_at_random_points_then_resumed_equals_the_uninterrupted_run(tmp_path):
    command = backtest_command(tmp_path / "config.yaml")
    ref_url = f"sqlite:///{tmp_path / 'ref.db'}"
    done = CliRunner().invoke(
        app, [*command, "--db", ref_url, "--run-id", "k", "--out", str(tmp_path / "ref")]
    )
    assert done.exit_code == 0, done.output
    want = store_rows(ref_url, "k")
    n = want["checkpoint"][0] + 1

    url = f"sqlite:///{tmp_path / 'killed.db'}"
    out = tmp_path / "killed"
    # The first and the last process run `python -m trimtab.cli`; the ones between are
    # forks of this one running the CLI's main (the same code, without a start-up each).
    report = kill_and_resume(
        [*command, "--out", str(out)],
        url,
        "k",
        n,
        KILLS,
        np.random.default_rng(7),
        tmp_path,
        real=lambda start: start == 0,
    )
    assert report.kills == KILLS and report.starts == KILLS + 1
    # Every start after a kill took the run up from the store, most before its end.
    assert report.resumes == KILLS and report.mid_run >= KILLS - 1, report.outputs
    assert "resuming after bar" in report.outputs[-1] or "is finished" in report.outputs[-1]
    assert_same_rows(store_rows(url, "k"), want)
    files = ("equity.csv", "weights.csv", "trades.csv", "decisions.jsonl", "rejections.csv")
    for name in (*files, "states.csv", "result.json"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_a_portfolio_run_recorded_by_the_command_is_read_back_when_finished(tmp_path):
    file = ROOT / "examples" / "subaccounts.yaml"
    db = f"sqlite:///{tmp_path / 'p.db'}"
    runs = []
    for out in ("first", "again"):
        done = CliRunner().invoke(
            app,
            [
                "backtest",
                "--portfolio",
                str(file),
                "--data",
                str(SHARED_DATA),
                "--start",
                "2021-06-01",
                "--end",
                "2021-08-31",
                "--db",
                db,
                "--run-id",
                "p",
                "--out",
                str(tmp_path / out),
            ],
            env={"COLUMNS": "200"},
        )
        assert done.exit_code == 0, done.output
        runs.append(done.output)
    assert "is finished (92 of 92 bars)" in runs[1] and "is finished" not in runs[0]
    for path in sorted((tmp_path / "first").rglob("*.*")):
        again = tmp_path / "again" / path.relative_to(tmp_path / "first")
        assert again.read_bytes() == path.read_bytes(), path.name
    with Store.open(db) as store:
        assert {t["status"] for t in store.transfers("p")} == {"done"}  # 2021-07-01
        assert {r["subaccount"] for r in store.balances("p")} >= {"core", "managed", "btc"}


def test_db_and_run_id_go_together(tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["backtest", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert done.exit_code == 2 and "--db and --run-id go together" in done.output
    done = runner.invoke(app, ["backtest", "--run-id", "x"])
    assert done.exit_code == 2 and "--db and --run-id go together" in done.output
