"""``trimtab report RUN``: the HTML report of a backtest and of a multi-strategy portfolio
run, its figures checked against independent computations, and both reports opened in a
real headless Chromium (no console errors, the plotly graphs drawn with their titles)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from trimtab.analytics import report as rp
from trimtab.analytics.metrics import drawdown_series, returns_from_equity
from trimtab.cli import app

from ..conftest import DAILY_FILE, SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
PORTFOLIO = ROOT / "examples" / "portfolio.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Where the screenshots a person looks at are kept, besides each test's tmp dir.
SHOTS = Path("/tmp/report_shots")
MAX_BYTES = 10_000_000


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The demo-like run: managed on the top 5 over the first half of 2022."""
    out = tmp_path_factory.mktemp("single") / "run"
    _invoke(
        "backtest",
        "--data",
        str(SHARED_DATA),
        "--universe",
        "top:5",
        "--start",
        "2022-01-01",
        "--end",
        "2022-06-30",
        "--out",
        str(out),
    )
    _invoke("report", str(out))
    return out


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory) -> Path:
    """The default portfolio (core, trend, carry under the allocator), first half of 2021."""
    out = tmp_path_factory.mktemp("portfolio") / "run"
    _invoke(
        "backtest",
        "--portfolio",
        str(PORTFOLIO),
        "--data",
        str(SHARED_DATA),
        "--start",
        "2021-01-01",
        "--end",
        "2021-06-30",
        "--out",
        str(out),
    )
    output = _invoke("report", str(out), "--out", str(out.parent / "portfolio.html"))
    assert "portfolio.html" in output and "MB)" in output
    return out.parent / "portfolio.html"


# --------------------------------------------------------------------------- figures


def _btc_closes() -> pd.Series:
    """BTCUSDT closes read straight from the data file with pandas (not trimtab's reader)."""
    bars = pd.read_csv(DAILY_FILE, parse_dates=["timestamp"])
    btc = bars[bars["symbol"] == "BTCUSDT"].set_index("timestamp")["close"]
    btc.index = (
        pd.DatetimeIndex(btc.index).tz_localize("UTC") if btc.index.tz is None else btc.index
    )
    return btc


def test_btc_held_is_the_start_in_btc_and_agrees_with_the_run_s_baseline(single):
    run = rp.load_run(single)
    close, notes = rp._closes(run, None)
    assert close is not None and not notes
    held = rp.btc_held(run.total, close["BTCUSDT"], 10.0)
    btc = _btc_closes()
    first, last = run.total.index[0], run.total.index[-1]
    by_hand = 100_000 * btc.loc[last] / btc.loc[first] * (1 - 10 / 1e4)
    assert held.iloc[0] == 100_000
    assert held.iloc[-1] == pytest.approx(by_hand, rel=1e-12)
    # The engine's btc-hold baseline buys at the next bar with spread and impact: close.
    engine = run.result["baselines"]["btc-hold"]["end_equity"]
    assert held.iloc[-1] == pytest.approx(engine, rel=0.01)


def test_drawdown_and_exposure_match_the_metrics(single):
    run = rp.load_run(single)
    eq = run.total
    dd = rp.drawdown(eq)
    ref = drawdown_series(returns_from_equity(eq))
    np.testing.assert_allclose(-dd.iloc[1:].to_numpy(), ref.to_numpy(), atol=1e-12)
    assert -dd.min() == pytest.approx(run.result["metrics"]["max_drawdown"], rel=1e-9)
    gross = rp.exposure(rp.total_weights(run))["gross"]
    assert gross.mean() == pytest.approx(run.result["metrics"]["average_exposure"], abs=2e-3)


def test_each_trade_is_joined_to_the_decision_that_ordered_it(single):
    run = rp.load_run(single)
    trades = rp.trade_table(run)
    assert len(trades) == len(pd.read_csv(single / "trades.csv")) > 0
    decisions = {d["id"]: d for d in map(json.loads, (single / "decisions.jsonl").open())}
    for row in trades.to_dict("records"):
        d = decisions[int(row["decision_id"])]
        # Decided at a bar, filled at that bar or later (never before: no lookahead).
        assert pd.Timestamp(d["timestamp"]) <= row["timestamp"]
        assert row["reason"] in {o["reason"] for o in d["orders"]}
        assert row["why"] == [r["message"] for r in d["reasons"]]
        hover = rp._hover(row, many=False)
        assert d["reasons"][0]["message"][:20].replace("&", "&amp;") in hover


def test_portfolio_weights_are_the_subaccounts_notional_over_the_total(portfolio):
    run = rp.load_run(portfolio.parent / "run")
    w = rp.total_weights(run)
    t = run.equity.index[100]
    by_hand = {}
    for name, acc in run.accounts.items():
        for sym, x in acc.weights.loc[t].items():
            by_hand[sym] = by_hand.get(sym, 0.0) + x * run.equity.loc[t, name]
    for sym, notional in by_hand.items():
        assert w.loc[t, sym] == pytest.approx(notional / run.equity.loc[t, "total"], abs=1e-9)
    # The carry's perpetuals are short: shorts reach the chart below zero.
    assert (w.filter(like="-PERP") < 0).any().any()
    shares = run.equity[list(run.accounts)].sum(axis=1) / run.total
    np.testing.assert_allclose(shares, 1.0, rtol=1e-6)


def test_state_spans_by_hand():
    idx = pd.date_range("2022-01-01", periods=6, freq="D", tz="UTC")
    states = pd.DataFrame(
        {"state": ["active", "reducing", "reducing", "active", "halted", "halted"]}, index=idx
    )
    assert rp.state_spans(states) == [
        (idx[1], idx[3], "reducing"),
        (idx[4], idx[5], "halted"),
    ]
    assert rp.state_spans(None) == []


def _plotly_figures(page: str) -> list[dict]:
    """The figures the page draws: each ``Plotly.newPlot(id, data, layout, config)``
    call's id, data and layout, parsed as JSON."""
    decoder = json.JSONDecoder()
    out = []
    for m in re.finditer(r"Plotly\.newPlot\(\s*", page):
        values, at = [], m.end()
        for _ in range(3):
            value, at = decoder.raw_decode(page, at)
            values.append(value)
            at = re.compile(r"\s*,\s*").match(page, at).end()
        out.append({"id": values[0], "data": values[1], "layout": values[2]})
    return out


def test_the_reports_are_self_contained_and_small(single, portfolio):
    for path in (single / "report.html", portfolio):
        page = path.read_text()
        assert path.stat().st_size < MAX_BYTES
        # Nothing fetched from elsewhere: no script, style sheet or frame by address.
        assert not re.search(r"<(script|link|iframe|img)\b[^>]*\b(src|href)=", page)
        assert page.count("plotly.js v") >= 1  # the library itself, inlined
        assert "Attribution" in page
    page = portfolio.read_text()
    run = rp.load_run(portfolio.parent / "run")
    figures = {f["id"]: f for f in _plotly_figures(page)}
    assert set(figures) == {
        "equity",
        "exposure",
        "weights",
        "allocation",
        "trades",
        "waterfall",
        "cumulative",
    }
    targets = {
        t["name"]: t["y"] for t in figures["allocation"]["data"] if "allocator target" in t["name"]
    }
    for name in run.accounts:
        assert targets[f"{name} allocator target"] == [
            a["targets"][name] for a in run.result["allocations"]
        ]
    held = [t for t in figures["equity"]["data"] if t["name"] == "BTC held"][0]
    assert held["y"][0] == 100_000


def test_breaker_states_are_shaded_and_listed(tmp_path):
    """A run whose breakers trip (tight limits): its halted and reducing bars are shaded
    on each panel and its state changes listed with their reasons."""
    config = tmp_path / "tight.yaml"
    config.write_text(
        "limits: {max_drawdown: 0.05}\n"
        "breakers: {daily_loss_limit: 0.005, loss_streak: 3, cooldown: 3, auto_resume: true}\n"
    )
    out = tmp_path / "run"
    _invoke(
        "backtest",
        "--data",
        str(SHARED_DATA),
        "--universe",
        "top:5",
        "--start",
        "2022-01-01",
        "--end",
        "2022-03-31",
        "--config",
        str(config),
        "--out",
        str(out),
    )
    _invoke("report", str(out))
    page = (out / "report.html").read_text()
    states = pd.read_csv(out / "states.csv", index_col="timestamp", parse_dates=True)
    spans = rp.state_spans(states)
    assert {s for _, _, s in spans} >= {"halted"}
    exposure = {f["id"]: f for f in _plotly_figures(page)}["exposure"]
    shapes = exposure["layout"]["shapes"]
    assert len(shapes) == 3 * len(spans)  # one per span on each of the three panels
    assert shapes[0]["x0"] == f"{spans[0][0]:%Y-%m-%d}"
    for change in json.loads((out / "result.json").read_text())["safety"]["state_changes"]:
        assert change["message"] in page
        assert f"{change['old']} -&gt; {change['new']}" in page


def test_the_waterfall_goes_from_start_to_end_equity(single, portfolio):
    for page, equity in (
        (single / "report.html", single / "equity.csv"),
        (portfolio, portfolio.parent / "run" / "equity.csv"),
    ):
        fig = {f["id"]: f for f in _plotly_figures(page.read_text())}["waterfall"]["data"][0]
        total = pd.read_csv(equity)
        total = total["total"] if "total" in total else total["equity"]
        y, measure = fig["y"], fig["measure"]
        assert measure[0] == "absolute" and measure[-1] == "total"
        assert y[0] == pytest.approx(total.iloc[0], abs=0.005)
        assert y[-1] == pytest.approx(total.iloc[-1], abs=0.005)
        # Each line is rounded to the cent: their sum is the equity change within cents.
        assert y[0] + sum(y[1:-1]) == pytest.approx(y[-1], abs=0.01 * (len(y) - 2))
        assert fig["x"][1:6] == ["price", "execution", "fees", "funding", "liquidation"]
    funding = dict(zip(fig["x"], fig["y"], strict=True))["funding"]
    assert funding > 0  # the carry's shorts were paid funding in the 2021 bull market


def test_beta_against_btc_matches_statsmodels(single):
    sm = pytest.importorskip("statsmodels.api")
    run = rp.load_run(single)
    close, _ = rp._closes(run, None)
    section = rp.attribution_section(run, close)
    btc = _btc_closes().reindex(run.total.index)
    rp_, rm = run.total.pct_change().iloc[1:], btc.pct_change().iloc[1:]
    fit = sm.OLS(rp_.to_numpy(), sm.add_constant(rm.to_numpy())).fit()
    assert f"<td>BTC</td><td>{fit.params[1]:.3f} [" in section
    assert "<td>equal weight of the universe</td>" in section  # Brinson-Fachler's rows
    assert "Attribution is not available" not in section


def test_the_demo_s_five_years_stay_small_enough_to_e_mail(tmp_path):
    """The default portfolio from 2019 to the data's end (what `trimtab demo` runs)."""
    out = tmp_path / "run"
    _invoke(
        "backtest",
        "--portfolio",
        str(PORTFOLIO),
        "--data",
        str(SHARED_DATA),
        "--start",
        "2019-01-01",
        "--out",
        str(out),
    )
    _invoke("report", str(out))
    page = (out / "report.html").read_text()
    assert (out / "report.html").stat().st_size < MAX_BYTES
    figures = {f["id"]: f for f in _plotly_figures(page)}
    assert len(figures) == 7
    # Daily bars: x0 and a one-day step instead of a date per point.
    total = figures["equity"]["data"][0]
    assert total["x0"] == "2019-01-01" and total["dx"] == 86_400_000
    assert len(total["y"]) == len(pd.read_csv(out / "equity.csv"))


def test_missing_data_file_is_said_and_data_gives_it(single, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(single, moved)
    doc = json.loads((moved / "result.json").read_text())
    for f in doc["data"]["files"]:
        f["path"] = str(tmp_path / "gone.csv.gz")
    (moved / "result.json").write_text(json.dumps(doc))
    page = rp.build_report(moved)
    assert "gone.csv.gz is not here (give --data)" in page
    names = [t["name"] for f in _plotly_figures(page) for t in f["data"] if "name" in t]
    assert "BTC held" not in names and "managed" in names
    page = rp.build_report(moved, data=DAILY_FILE)
    names = [t["name"] for f in _plotly_figures(page) for t in f["data"] if "name" in t]
    assert "BTC held" in names


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a trimtab run folder" in result.output and "result.json" in result.output


# --------------------------------------------------------------------------- browser


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # root in a container has no user namespace sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",  # plotly draws after load; let it finish
            # Offline: every request off this machine goes to a closed port and fails.
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y --no-install-recommends chromium)",
)


@needs_chromium
def test_the_browser_check_sees_a_page_error(tmp_path):
    """The harness itself: a page that throws is caught (else a clean log proves nothing)."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    got = _chromium(bad, tmp_path, "--dump-dom")
    assert any("Uncaught Error: boom" in line for line in _console(got.stderr))


@needs_chromium
@pytest.mark.parametrize(
    ("which", "titles"),
    [
        ("single", ["Equity and drawdown against BTC held", "Weights by asset", "managed"]),
        (
            "portfolio",
            [
                "Allocation by strategy: each subaccount",
                "subaccount carry",
                "core allocator target",
            ],
        ),
    ],
)
def test_report_renders_in_headless_chromium(which, titles, single, portfolio, tmp_path):
    page = single / "report.html" if which == "single" else portfolio
    shot = tmp_path / f"{which}.png"
    # One browser start for the DOM and the screenshot of the same render (two took twice
    # the time).
    got = _chromium(page, tmp_path, "--dump-dom", f"--screenshot={shot}", "--window-size=1400,7600")
    assert got.returncode == 0, got.stderr[-2000:]
    assert _console(got.stderr) == []
    dom = got.stdout
    expected = 6 if which == "single" else 7
    # plotly draws each graph in its own svg.main-svg layers once the script ran.
    assert dom.count('class="plotly-graph-div') == expected
    assert dom.count('class="main-svg"') >= 2 * expected
    for text in [
        *titles,
        "Exposure, risk and the breaker states",
        "Risk score of each asset the risk cut acted on",
        "Trades on the price chart",
        "date (UTC)",
        "drawdown",
        "Where the money came from",
        "Cumulative PnL by line",
    ]:
        assert text in dom, text
    assert shot.stat().st_size > 100_000
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / f"report_{which}.png")
