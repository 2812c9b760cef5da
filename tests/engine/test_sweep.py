"""Parameter sweeps (``trimtab.engine.sweep``): the grid, its validation before any run,
rows equal to the same points run one by one, ranking, error rows, interrupts, and the
same rows on a real Dask cluster."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from tests.conftest import SHARED_DATA
from trimtab.config import ConfigError
from trimtab.engine import sweep as sw
from trimtab.engine.portfolio_file import parse_portfolio
from trimtab.engine.portfolio_run import TOTAL, PortfolioOptions, run_portfolio

# {vol} and {universe} are the grid's points, written by hand for the reference runs.
TEMPLATE = """
backtest: {{start: 2022-01-01, end: 2022-06-30}}
subaccounts:
  core: {{strategy: equal-monthly, universe: "{universe}", capital: 40000}}
  trend:
    strategy: managed
    symbols: [BTCUSDT, ETHUSDT, BNBUSDT, SOLUSDT]
    capital: 30000
    sizing: {{target_vol: {vol}}}
"""
TEXT = TEMPLATE.format(vol=0.3, universe="top:5")
GRID = ["subaccounts.trend.sizing.target_vol=0.2,0.5", "subaccounts.core.universe=top:3,top:6"]
OPTIONS = PortfolioOptions(data=str(SHARED_DATA))


def _points(specs=GRID, source="tiny.yaml"):
    axes = sw.parse_grid(specs)
    return axes, sw.grid_points(axes, source)


def _same(a: dict, b: dict) -> bool:
    """Exact equality of two metric dicts, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


# --- the grid -----------------------------------------------------------------------------


def test_values_are_yaml_and_the_product_is_in_grid_order():
    axes = sw.parse_grid(
        [
            "subaccounts.trend.sizing.target_vol=0.25, 0.35",
            "backtest.start=2021-01-01,null",
            "subaccounts.core.symbols=[BTCUSDT, ETHUSDT],[BTCUSDT]",
            "x.y='a,b',top:10,3,true",
        ]
    )
    assert [a.key for a in axes] == [
        "subaccounts.trend.sizing.target_vol",
        "backtest.start",
        "subaccounts.core.symbols",
        "x.y",
    ]
    assert axes[0].values == (0.25, 0.35)
    assert axes[1].values == (dt.date(2021, 1, 1), None)
    assert axes[2].values == (["BTCUSDT", "ETHUSDT"], ["BTCUSDT"])
    assert axes[3].values == ("a,b", "top:10", 3, True)
    points = sw.grid_points(axes[:2], "f.yaml")
    assert [p.index for p in points] == [0, 1, 2, 3]
    # The first axis varies slowest.
    assert [tuple(p.values.values()) for p in points] == [
        (0.25, dt.date(2021, 1, 1)),
        (0.25, None),
        (0.35, dt.date(2021, 1, 1)),
        (0.35, None),
    ]
    assert points[1].label == "subaccounts.trend.sizing.target_vol=0.25, backtest.start=null"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("subaccounts.trend.capital", "no '=' found"),
        ("a..b=1", "dotted path"),
        ("a.b=1,,2", "an empty value"),
        ("a.b=", "an empty value"),
        ("a.b=[1,2", "unclosed bracket"),
        ("a.b=1],2", "closes nothing"),
        ("a.b='x,y", "unclosed '"),
        ("a.b=0.2,0.2", "'0.2' given twice"),
        ("a.b=@x", "not YAML"),
        ("runner.band=0.01,0.02", "not used by a backtest"),
    ],
)
def test_a_bad_spec_is_an_error_naming_it(spec, words):
    with pytest.raises(ValueError, match="--grid") as info:
        sw.parse_grid([spec])
    assert words in str(info.value)


def test_a_key_given_twice_and_no_grid_are_errors():
    with pytest.raises(ValueError, match="a.b: given twice"):
        sw.parse_grid(["a.b=1", "a.b=2"])
    with pytest.raises(ValueError, match="at least one --grid"):
        sw.parse_grid([])


def test_point_document_sets_values_and_creates_missing_sections():
    base = {"backtest": {"start": "2021-01-01"}, "subaccounts": {"core": {"capital": 1}}}
    point = sw.SweepPoint(0, {"subaccounts.core.limits.max_drawdown": 0.4, "backtest.end": "x"})
    doc = sw.point_document(base, point)
    assert doc == {
        "backtest": {"start": "2021-01-01", "end": "x"},
        "subaccounts": {"core": {"capital": 1, "limits": {"max_drawdown": 0.4}}},
    }
    assert base == {"backtest": {"start": "2021-01-01"}, "subaccounts": {"core": {"capital": 1}}}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        # The schema has no such key: the parser names it, with the allowed keys.
        ("subaccounts.trend.sizing.target_volume=0.2", "target_volume: unknown key"),
        # A grid never adds a subaccount.
        ("subaccounts.nope.capital=1000", "no subaccount 'nope' in the file"),
        ("subaccounts.trend.capital.x=1", "subaccounts.trend.capital is a value"),
        # Right key, a value of the wrong type.
        ("subaccounts.trend.sizing.target_vol=fast", "target_vol: must be a number"),
        # A section only managed subaccounts have.
        ("subaccounts.core.sizing.target_vol=0.2", "only the managed strategy has a sizing"),
    ],
)
def test_a_bad_key_path_fails_before_any_run_naming_the_key_and_the_point(spec, words):
    key = spec.split("=")[0]
    axes, points = _points(["backtest.end=2022-03-31,2022-04-30", spec])
    ran = []
    with pytest.raises(ConfigError) as info:
        sw.run_sweep(TEXT, ".", OPTIONS, points, workers=1, on_done=lambda *a: ran.append(a))
    message = str(info.value)
    assert words in message and key.rsplit(".", 1)[0] in message
    assert "tiny.yaml at grid point 0 (backtest.end=2022-03-31, " in message
    assert ran == []


def test_the_point_that_is_bad_is_the_one_named():
    _, points = _points(["subaccounts.trend.sizing.target_vol=0.2,0.4,-1"])
    with pytest.raises(ConfigError) as info:
        sw.validate_points(TEXT, ".", points)
    assert "grid point 2 (subaccounts.trend.sizing.target_vol=-1)" in str(info.value)
    assert "subaccounts.trend.sizing.target_vol:" in str(info.value)


# --- running ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    """Each point run on its own through ``run_portfolio``, its YAML written by hand."""
    out = {}
    for vol in (0.2, 0.5):
        for universe in ("top:3", "top:6"):
            portfolio = parse_portfolio(TEMPLATE.format(vol=vol, universe=universe))
            out[(vol, universe)] = run_portfolio(portfolio, OPTIONS).metrics
    return out


@pytest.fixture(scope="module")
def local_sweep():
    axes, points = _points()
    return axes, sw.run_sweep(TEXT, ".", OPTIONS, points, workers=2)


def _rows(outcome):
    return {
        (r.point.values[GRID[0].split("=")[0]], r.point.values[GRID[1].split("=")[0]]): r
        for r in outcome.results
    }


def test_sweep_rows_equal_the_points_run_one_by_one(local_sweep, reference):
    _, outcome = local_sweep
    assert outcome.executor == "local" and outcome.workers == 2 and not outcome.interrupted
    rows = _rows(outcome)
    assert set(rows) == set(reference)
    for key, metrics in reference.items():
        result = rows[key]
        assert result.status == sw.OK, result.error
        assert set(result.metrics) == {TOTAL, "core", "trend"}
        for scope in metrics:
            assert _same(result.metrics[scope], metrics[scope]), (key, scope)
        assert result.start.startswith("2022-01-01") and result.end.startswith("2022-06-30")
    # The grid moves the results: the points are not one run four times (the trend
    # subaccount's figures move with its target_vol; the other axis, core's universe,
    # reaches them only through float rounding of the shared market).
    assert len({round(r.metrics["trend"]["volatility"], 9) for r in outcome.results}) == 2
    assert len({r.metrics["core"]["total_return"] for r in outcome.results}) == 2


def test_frame_is_ranked_best_first(local_sweep, reference):
    axes, outcome = local_sweep
    frame = sw.sweep_frame(outcome, axes)
    by_sharpe = sorted(reference, key=lambda k: -reference[k][TOTAL]["sharpe"])
    keys = [a.key for a in axes]
    assert list(zip(frame[keys[0]], frame[keys[1]], strict=True)) == by_sharpe
    assert list(frame["rank"]) == [1, 2, 3, 4]
    assert frame["total.sharpe"].tolist() == [reference[k][TOTAL]["sharpe"] for k in by_sharpe]
    # Less is better for drawdown: ascending; a subaccount's metric by its name.
    frame = sw.sweep_frame(outcome, axes, "total.max_drawdown")
    assert frame["total.max_drawdown"].is_monotonic_increasing
    frame = sw.sweep_frame(outcome, axes, "trend.cagr")
    assert frame["trend.cagr"].is_monotonic_decreasing
    assert frame["trend.cagr"].tolist() == sorted(
        (m["trend"]["cagr"] for m in reference.values()), reverse=True
    )


@pytest.mark.parametrize(
    ("rank_by", "words"),
    [("total.sharp", "unknown metric 'sharp'"), ("nobody.cagr", "'nobody' is neither total")],
)
def test_a_bad_rank_by_is_an_error(rank_by, words):
    with pytest.raises(ValueError, match="--rank-by") as info:
        sw.metric_column(rank_by, ["core", "trend"])
    assert words in str(info.value)


def test_a_point_that_fails_to_run_is_an_error_row_not_a_crash():
    # Valid YAML, but a symbol the data does not have: it fails inside the run.
    text = TEXT.replace('universe: "top:5"', "symbols: [BTCUSDT]")
    axes, points = _points(["subaccounts.core.symbols=[ETHUSDT],[NOPEUSDT]"])
    seen = []
    outcome = sw.run_sweep(
        text, ".", OPTIONS, points, workers=1, on_done=lambda d, n, r: seen.append((d, n))
    )
    assert seen == [(1, 2), (2, 2)]
    good, bad = outcome.results
    assert good.status == sw.OK and good.error is None
    assert bad.status == sw.ERROR and bad.metrics is None
    assert "subaccounts.core.symbols: not in the data" in bad.error and "NOPEUSDT" in bad.error
    frame = sw.sweep_frame(outcome, axes)
    assert frame["status"].tolist() == ["ok", "error"]  # the error row ranks last
    assert math.isnan(frame["total.sharpe"].iloc[1])
    doc = sw.sweep_doc(outcome, axes, frame, "tiny.yaml", "total.sharpe")
    assert doc["status"] == {"ok": 1, "error": 1, "cancelled": 0}
    assert doc["rows"][1]["total.sharpe"] is None  # NaN is null in the JSON
    assert doc["grid"] == {"subaccounts.core.symbols": ["[ETHUSDT]", "[NOPEUSDT]"]}


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupt_keeps_the_finished_rows_and_cancels_the_rest(workers):
    _, points = _points(["subaccounts.trend.sizing.target_vol=0.2,0.3,0.4,0.5"])

    def stop(done, total, result):
        raise KeyboardInterrupt  # Ctrl-C as the first point finishes

    outcome = sw.run_sweep(TEXT, ".", OPTIONS, points, workers=workers, on_done=stop)
    assert outcome.interrupted
    statuses = [r.status for r in outcome.results]
    assert statuses.count(sw.OK) == 1 and statuses.count(sw.CANCELLED) == 3
    finished = next(r for r in outcome.results if r.status == sw.OK)
    assert finished.metrics[TOTAL]["n_periods"] > 100


def test_the_same_rows_on_a_dask_cluster(local_sweep):
    distributed = pytest.importorskip("distributed")
    _, local = local_sweep
    _, points = _points()
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        outcome = sw.run_sweep(TEXT, ".", OPTIONS, points, cluster=cluster.scheduler_address)
    assert outcome.executor == "dask"
    remote, here = _rows(outcome), _rows(local)
    assert set(remote) == set(here)
    for key, result in remote.items():
        assert result.status == sw.OK, result.error
        for scope, metrics in result.metrics.items():
            assert _same(metrics, here[key].metrics[scope]), (key, scope)


def test_a_cluster_that_is_not_there_is_a_clear_error(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(sw, "CONNECT_SECONDS", 1.0)
    _, points = _points(["subaccounts.trend.sizing.target_vol=0.2"])
    with pytest.raises(ValueError, match="--cluster tcp://127.0.0.1:9: cannot connect"):
        sw.run_sweep(TEXT, ".", OPTIONS, points, cluster="tcp://127.0.0.1:9")


def test_a_sweep_where_no_point_ran_still_makes_its_table():
    _, points = _points(["subaccounts.core.symbols=[NOPEUSDT]"])
    text = TEXT.replace('universe: "top:5"', "symbols: [BTCUSDT]")
    outcome = sw.run_sweep(text, ".", OPTIONS, points, workers=1)
    frame = sw.sweep_frame(
        outcome, sw.parse_grid(["subaccounts.core.symbols=[NOPEUSDT]"]), "trend.cagr"
    )
    assert frame["status"].tolist() == ["error"] and math.isnan(frame["trend.cagr"].iloc[0])
