"""``trimtab review --format html``: the review as a page with its charts (factor breakdown,
liquidation distances, positions, the holdings' correlation heat map), the heat map checked
against pandas on the data file, and the page opened in headless Chromium."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.analytics.test_report import SHOTS, _chromium, _console, _plotly_figures, needs_chromium
from trimtab.cli import app
from trimtab.data import load_panel
from trimtab.review.render import held_correlation, render
from trimtab.review.run import run_review

from .conftest import DAILY_FILE, EXAMPLES

HOLDINGS = EXAMPLES / "holdings.yaml"


@pytest.fixture(scope="module")
def review(shared_data) -> dict:
    return json.loads(run_review(HOLDINGS, data=str(shared_data), fmt="json"))


@pytest.fixture(scope="module")
def page(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("review") / "review.html"
    result = CliRunner().invoke(
        app,
        [
            "review",
            "--portfolio",
            str(HOLDINGS),
            "--data",
            str(shared_data),
            "--format",
            "html",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "<html" not in result.output  # the page goes to the file, not the terminal
    return out


@pytest.mark.real_data
def test_heat_map_is_the_30_day_correlation_of_the_holdings(review, shared_data):
    panel = load_panel(shared_data, cache=True)
    corr = held_correlation(review, panel)
    held = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "LINKUSDT", "BNBUSDT", "DOGEUSDT"]
    assert list(corr.columns) == held
    np.testing.assert_allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr.to_numpy(), corr.to_numpy().T)
    # The review's top pairs are entries of the matrix.
    for c in review["correlation"]["most_correlated"]:
        a, b = c["pair"]
        assert corr.loc[a, b] == pytest.approx(c["correlation"], abs=1e-9)
    # Independently: pandas on the data file, the 30 daily returns up to the as-of close.
    bars = pd.read_csv(DAILY_FILE, parse_dates=["timestamp"])
    close = bars.pivot(index="timestamp", columns="symbol", values="close")[held]
    close = close[close.index <= pd.Timestamp("2023-06-30", tz="UTC")]
    by_hand = close.pct_change().iloc[-30:].corr()
    np.testing.assert_allclose(corr.to_numpy(), by_hand.to_numpy(), atol=1e-9)


def test_the_page_holds_the_review_s_charts(page, review):
    text = page.read_text()
    assert page.stat().st_size < 10_000_000
    figures = {f["id"]: f for f in _plotly_figures(text)}
    assert set(figures) == {"factors", "liquidation", "positions", "correlation"}
    bars = figures["factors"]["data"][0]
    by_name = dict(zip(bars["y"], bars["x"], strict=True))
    for f in review["factors"]:
        assert by_name[f["name"]] == pytest.approx(f["contribution"], abs=0.006)
    assert sum(by_name.values()) == pytest.approx(review["risk_score"], abs=0.1)
    liq = figures["liquidation"]["data"][0]
    perp = [p for p in review["positions"] if p["liquidation_distance_pct"] is not None]
    assert liq["y"] == pytest.approx([p["liquidation_distance_pct"] for p in perp], abs=1e-5)
    heat = figures["correlation"]["data"][0]
    assert heat["type"] == "heatmap" and len(heat["z"]) == len(heat["x"]) == 6
    for flag in review["flags"]:
        assert flag["message"].split(" (")[0].replace("&", "&amp;") in text


def test_render_html_without_the_data_lists_the_top_pairs(review):
    text = render(review, "html")
    assert "No correlation heat map" in text
    assert {f["id"] for f in _plotly_figures(text)} == {"factors", "liquidation", "positions"}
    top = review["correlation"]["most_correlated"][0]
    assert f"{' / '.join(top['pair'])}: {top['correlation']:.2f}" in text


@needs_chromium
def test_review_page_renders_in_headless_chromium(page, tmp_path):
    got = _chromium(page, tmp_path, "--dump-dom")
    assert got.returncode == 0, got.stderr[-2000:]
    assert _console(got.stderr) == []
    dom = got.stdout
    assert dom.count('class="plotly-graph-div') == 4
    assert dom.count('class="main-svg"') >= 8
    for text in (
        "what each factor adds",
        "Distance to liquidation of each perpetual position",
        "Correlation of the holdings' daily returns, last 30 days",
        "points of the risk score",
        "distance to liquidation (fraction of price)",
    ):
        assert text in dom, text
    shot = tmp_path / "review.png"
    got = _chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1400,3600")
    assert got.returncode == 0 and shot.stat().st_size > 100_000
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / "review.png")
