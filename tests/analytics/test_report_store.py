"""``trimtab report`` and ``trimtab attribution`` of a run in the store (``--db URL
--run-id NAME``, issue 14): the store keeps each bar's funding and liquidation losses per
symbol, so a finished run read back writes the same files as its run folder, ledger.csv
included, and reports the same attribution; a run killed and resumed keeps the ledger of
the run never interrupted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest
from typer.testing import CliRunner

from trimtab.cli import _materialise_store_run, app
from trimtab.engine.portfolio_file import load_portfolio
from trimtab.engine.portfolio_run import PortfolioOptions, run_portfolio
from trimtab.engine.recording import RunRecorder
from trimtab.journal.store import Store

from ..conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
PORTFOLIO = ROOT / "examples" / "portfolio.yaml"
PERIOD = ("--start", "2021-01-01", "--end", "2021-03-31")


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _fails(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.output


def _backtest(out: Path, *store: str) -> None:
    _invoke(
        "backtest",
        "--portfolio",
        str(PORTFOLIO),
        "--data",
        str(SHARED_DATA),
        *PERIOD,
        *store,
        "--out",
        str(out),
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[str, Path, Path]:
    """The default portfolio over 2021 Q1, recorded as run 'q1' (its --out folder), and
    the same run without a store."""
    tmp = tmp_path_factory.mktemp("store_run")
    db = f"sqlite:///{tmp / 'runs.db'}"
    _backtest(tmp / "recorded", "--db", db, "--run-id", "q1")
    _backtest(tmp / "plain")
    return db, tmp / "recorded", tmp / "plain"


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_finished_store_run_reads_back_as_its_run_folder(recorded, tmp_path):
    db, folder, plain = recorded
    label = _materialise_store_run(db, "q1", tmp_path / "back", None)
    assert label == f"run 'q1' in {db}"
    got, want = _files(tmp_path / "back"), _files(folder)
    assert set(got) == set(want)
    assert {f"subaccounts/{n}/ledger.csv" for n in ("core", "trend", "carry")} <= set(want)
    for name, data in want.items():
        if name != "result.json":
            assert got[name] == data, name
    # The allocator's records are not in the store: read back, they are made again from
    # the run's equity and transfers, the same records to float rounding.
    doc, back = json.loads(want["result.json"]), json.loads(got["result.json"])
    made, again = doc.pop("allocations"), back.pop("allocations")
    assert back == doc
    assert len(made) == len(again) > 0
    for a, b in zip(made, again, strict=True):
        assert a["timestamp"] == b["timestamp"] and a["moves"] == b["moves"]
        assert a["targets"] == pytest.approx(b["targets"], rel=1e-9, abs=1e-12)
    # Recording changes no ledger: the run without a store books the same rows.
    for name in ("core", "trend", "carry"):
        ledger = f"subaccounts/{name}/ledger.csv"
        assert (plain / ledger).read_bytes() == want[ledger], ledger
    carry = pd.read_csv(folder / "subaccounts" / "carry" / "ledger.csv")
    assert carry["funding"].sum() > 1000  # the shorts were paid funding in Q1 2021


def test_the_store_keeps_funding_per_symbol_in_the_balance_rows(recorded):
    db, folder, _ = recorded
    ledger = pd.read_csv(folder / "subaccounts" / "carry" / "ledger.csv")
    funded = ledger[ledger["funding"] != 0]
    with Store.open(db) as store:
        rows = store.balances("q1", floats=True)
    carry = {
        (pd.Timestamp(r["timestamp"]), s): v[0]
        for r in rows
        if r["subaccount"] == "carry"
        for s, v in (r["positions"] or {}).get("carry", {}).items()
    }
    assert len(carry) == len(funded) > 0
    for row in funded.itertuples():
        assert carry[(pd.Timestamp(row.timestamp), row.symbol)] == row.funding
    assert all(r["positions"].get("carry") is True for r in rows if r["subaccount"] == "*account")


def _plotly_figures(page: str) -> dict[str, dict]:
    decoder = json.JSONDecoder()
    out = {}
    for m in re.finditer(r"Plotly\.newPlot\(\s*", page):
        values, at = [], m.end()
        for _ in range(2):
            value, at = decoder.raw_decode(page, at)
            values.append(value)
            at = re.compile(r"\s*,\s*").match(page, at).end()
        out[values[0]] = values[1]
    return out


def test_report_of_a_store_run_ends_its_waterfall_at_the_end_equity(recorded, tmp_path):
    db, folder, _ = recorded
    out = tmp_path / "q1.html"
    said = _invoke("report", "--db", db, "--run-id", "q1", "--out", str(out))
    assert f"wrote {out}" in said.replace("\n", "")
    page = out.read_text()
    with Store.open(db) as store:
        end_equity = store.run("q1").summary["end_equity"]
    total = pd.read_csv(folder / "equity.csv")["total"]
    assert end_equity == pytest.approx(total.iloc[-1], abs=1e-4)  # equity.csv: 4 decimals
    fig = _plotly_figures(page)["waterfall"][0]
    y, x = fig["y"], fig["x"]
    assert x[0] == "start equity" and x[-1] == "end equity"
    assert y[0] == pytest.approx(100_000.0, abs=0.005)
    assert y[-1] == pytest.approx(end_equity, abs=0.005)
    assert y[0] + sum(y[1:-1]) == pytest.approx(y[-1], abs=0.01 * (len(y) - 2))
    assert dict(zip(x, y, strict=True))["funding"] > 1000
    assert f"run &#x27;q1&#x27; in {db}" in page or f"run 'q1' in {db}" in page
    # The folder's report draws the same waterfall.
    _invoke("report", str(folder), "--out", str(tmp_path / "folder.html"))
    assert _plotly_figures((tmp_path / "folder.html").read_text())["waterfall"][0] == fig


def _split(output: str) -> list[str]:
    """The headline (wrapped by the terminal's width) as one line, then the tables' lines.

    The terminal wraps at a space and drops it: the pieces are joined with one, so the
    headline is the same wherever the run's path (longer under pytest-xdist) made it wrap."""
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("PnL by subaccount"))
    return [" ".join(line.strip() for line in lines[:at]), *lines[at:]]


def test_attribution_of_a_store_run_prints_the_folders_figures(recorded):
    db, folder, _ = recorded
    store = _split(_invoke("attribution", "--db", db, "--run-id", "q1"))
    files = _split(_invoke("attribution", str(folder)))
    assert store[0].startswith(f"Attribution of run 'q1' in {db}, 2021-01-02 to 2021-03-31:")
    assert files[0].startswith(f"Attribution of {folder}, 2021-01-02 to 2021-03-31:")
    assert store[0].split(": PnL", 1)[1] == files[0].split(": PnL", 1)[1]
    assert store[1:] == files[1:]  # every table the same, to the cent
    assert len(store) > 40
    # The totals, by hand from the run's equity: PnL = end - start equity (no net flows).
    total = pd.read_csv(folder / "equity.csv")["total"]
    pnl = total.iloc[-1] - total.iloc[0]
    assert f"PnL {pnl:,.2f} USDT" in store[0]
    row = next(line for line in store if line.startswith("│ TOTAL"))
    cells = [float(c.strip().replace(",", "")) for c in row.split("│")[2:9]]
    assert f"{cells[5]:,.2f}" == f"{pnl:,.2f}"  # the total column
    assert sum(cells[:5]) == pytest.approx(pnl, abs=0.05)  # price .. liquidation, in cents
    assert cells[3] > 1000  # funding: the carry's, from the store's balance rows


def test_bad_store_arguments_are_named(recorded, tmp_path):
    db, folder, _ = recorded
    assert "no run 'nope' in" in _fails("report", "--db", db, "--run-id", "nope")
    assert "--db and --run-id go together" in _fails("attribution", "--db", db)
    assert "give a run" in _fails("report")
    assert "not both" in _fails("attribution", str(folder), "--db", db, "--run-id", "q1")
    other = tmp_path / "other.yaml"
    other.write_text(PORTFOLIO.read_text() + "\n# changed\n")
    said = _fails("report", "--db", db, "--run-id", "q1", "--portfolio", str(other))
    assert "recorded from another portfolio file" in said
    with Store.open(db) as store:
        store.start_run("half", "backtest", {"command": "backtest", "clock": {"bars": 10}})
    assert "is not finished (0 of 10 bars)" in _fails("report", "--db", db, "--run-id", "half")


class _Killed(Exception):
    pass


class _DyingRecorder(RunRecorder):
    def __init__(self, *args, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def record(self, bar, states) -> None:
        super().record(bar, states)
        if bar.bar == self.at:
            raise _Killed


def test_a_resumed_run_keeps_the_ledger_of_the_uninterrupted_one(tmp_path):
    portfolio = load_portfolio(PORTFOLIO)
    options = PortfolioOptions(data=str(SHARED_DATA), start="2021-01-01", end="2021-03-31")
    plain = run_portfolio(portfolio, options)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    with Store.open(url) as store:
        with pytest.raises(_Killed):
            run_portfolio(
                portfolio, options, recorder=_DyingRecorder(store, "k", {}, commit_bars=5, at=50)
            )
    with Store.open(url) as store:
        recorder = RunRecorder(store, "k", {}, commit_bars=5)
        resumed = run_portfolio(portfolio, options, recorder=recorder)
        assert recorder.resumed_after == 50
    before = plain.subaccounts["carry"].ledger
    stamp = resumed.equity.index[49]
    assert before.loc[before["timestamp"] <= stamp, "funding"].abs().sum() > 0
    for name, r in plain.subaccounts.items():
        assert r.ledger is not None
        pdt.assert_frame_equal(resumed.subaccounts[name].ledger, r.ledger, check_exact=True)


def test_a_store_without_funding_in_its_bars_reads_back_without_a_ledger(tmp_path):
    """Runs recorded before the bars carried funding: read back, no ledger (rather than
    one with the funding missing)."""
    import sqlalchemy as sa

    portfolio = load_portfolio(PORTFOLIO)
    options = PortfolioOptions(data=str(SHARED_DATA), start="2021-01-01", end="2021-01-31")
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Store.open(url) as store:
        run_portfolio(portfolio, options, recorder=RunRecorder(store, "old", {}))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT subaccount, bar, positions FROM balances")).all()
        for sub, bar, positions in rows:
            extra = json.loads(positions)
            extra.pop("carry", None)
            conn.execute(
                sa.text("UPDATE balances SET positions = :p WHERE subaccount = :s AND bar = :b"),
                {"p": json.dumps(extra), "s": sub, "b": bar},
            )
    engine.dispose()
    with Store.open(url) as store:
        again = run_portfolio(portfolio, options, recorder=RunRecorder(store, "old", {}))
    assert all(r.ledger is None for r in again.subaccounts.values())


def test_a_one_policy_run_in_the_store_is_attributed_as_its_folder(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    _invoke(
        "backtest",
        "--data",
        str(SHARED_DATA),
        "--symbols",
        "BTCUSDT,ETHUSDT,BNBUSDT",
        *PERIOD,
        "--db",
        db,
        "--run-id",
        "s",
        "--out",
        str(tmp_path / "s"),
    )
    assert (tmp_path / "s" / "ledger.csv").is_file()
    store = _split(_invoke("attribution", "--db", db, "--run-id", "s", "--by", "day"))
    files = _split(_invoke("attribution", str(tmp_path / "s"), "--by", "day"))
    assert store[0].split(": PnL", 1)[1] == files[0].split(": PnL", 1)[1]
    assert store[1:] == files[1:]
    assert "is a one-policy run" in _fails(
        "report", "--db", db, "--run-id", "s", "--portfolio", str(PORTFOLIO)
    )
