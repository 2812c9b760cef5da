"""Parameter sweeps over a portfolio file: ``trimtab sweep``.

A grid is one or more ``KEY=V1,V2,...`` specs: ``KEY`` is a dotted path into the
portfolio file's YAML (``subaccounts.trend.sizing.target_vol``, ``backtest.start``,
``transfers.0.amount``; an integer part indexes a list), each value a YAML scalar or flow
value (``0.35``, ``top:10``, ``2022-01-01``, ``null``, ``[BTCUSDT, ETHUSDT]``; commas
inside brackets or quotes do not split). Several specs make their cartesian product, in
the order given. Every point's document is validated with the portfolio parser before
any point runs, so a key the schema does not know fails at once, naming the key and the
point.

Each point runs as ``run_point(text, folder, options, point)``: a top-level function of
plain, picklable arguments that loads its own data (from a path, never a shipped panel),
so it runs the same in this process, in a local process pool, or on a Dask worker.
A point whose run fails (a ``ConfigError``, a ``DataError``, ...) becomes a row with
``status`` ``error`` and the message in ``error``; the sweep goes on. A keyboard
interrupt cancels the points not yet finished (``status`` ``cancelled``) and keeps the
finished rows.

Rows: ``point`` (its number in grid order), one column per grid key, ``status``,
``error``, ``start``/``end`` (the first and last bar, UTC), ``seconds`` (the point's run
time), then ``SCOPE.METRIC`` for the total (``total.sharpe``) and each subaccount
(``trend.max_drawdown``), named as in ``result.json`` (fractions, USDT, 365-day years).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from trimtab import __version__
from trimtab.analytics import METRIC_KEYS
from trimtab.config import ConfigError, read_yaml
from trimtab.data import Panel
from trimtab.data.discovery import find_data_dir
from trimtab.data.errors import DataError
from trimtab.domain.decisions import json_ready
from trimtab.engine.portfolio_file import Portfolio, parse_portfolio
from trimtab.engine.portfolio_run import TOTAL, PortfolioOptions, data_spec, run_portfolio
from trimtab.engine.runner import RunSpec, load_for_spec
from trimtab.journal import OutputError, write_text_atomic

#: Metrics ``run_portfolio`` adds to ``compute_metrics``' for every scope.
EXTRA_METRICS = (
    "rebalance_turnover",
    "rebalance_fees",
    "tracking_error",
    "end_equity",
    "net_transfers",
)
METRICS = (*METRIC_KEYS, *EXTRA_METRICS)

#: Metrics where less is better: ``--rank-by`` sorts them ascending (the rest descending).
LOWER_IS_BETTER = frozenset(
    {
        "volatility",
        "max_drawdown",
        "max_drawdown_duration_days",
        "var_95",
        "cvar_95",
        "var_99",
        "cvar_99",
        "turnover",
        "fees_paid",
        "rebalance_turnover",
        "rebalance_fees",
        "tracking_error",
    }
)

DEFAULT_RANK = f"{TOTAL}.sharpe"

#: Sections a backtest never reads: a grid over them would run the same point many times.
_NOT_BACKTEST = ("runner", "alerts")

#: The files a sweep writes into ``--out``.
SWEEP_FILES = ("sweep.csv", "sweep.json")

#: Seconds to wait for a Dask scheduler to answer.
CONNECT_SECONDS = 20.0

OK, ERROR, CANCELLED = "ok", "error", "cancelled"


# --- the grid ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GridAxis:
    """One ``--grid KEY=V1,V2,...``: the key path and its values (YAML-parsed)."""

    key: str
    values: tuple[Any, ...]

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


@dataclass(frozen=True)
class SweepPoint:
    """One point of the grid: its number (grid order, from 0), the value of each key,
    and the name of the file it came from (for errors)."""

    index: int
    values: dict[str, Any]
    source: str = "<string>"

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={show_value(v)}" for k, v in self.values.items())

    @property
    def where(self) -> str:
        """The point as errors name it: the file, the point's number and values."""
        return f"{self.source} at grid point {self.index} ({self.label})"


def show_value(value: Any) -> str:
    """A grid value as the user typed it (YAML flow style, one line)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").strip()


def parse_grid(specs: Sequence[str]) -> list[GridAxis]:
    """``KEY=V1,V2,...`` specs as axes; ``ValueError`` names the spec and what is wrong
    (no ``=``, an empty key part, a value that is empty or not YAML, a key or a value
    given twice)."""
    if not specs:
        raise ValueError("give at least one --grid KEY=V1,V2,... (e.g. backtest.start=2021-01-01)")
    axes: list[GridAxis] = []
    seen: set[str] = set()
    for spec in specs:
        key, sep, rest = spec.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--grid {spec!r}: write KEY=V1,V2,... (no '=' found)")
        parts = key.split(".")
        if not key or any(not p.strip() or p != p.strip() for p in parts):
            raise ValueError(
                f"--grid {spec!r}: the key must be a dotted path such as "
                "subaccounts.trend.sizing.target_vol (an empty or spaced part)"
            )
        if key in seen:
            raise ValueError(f"--grid {key}: given twice; list all its values in one --grid")
        seen.add(key)
        if parts[0] in _NOT_BACKTEST:
            raise ValueError(
                f"--grid {key}: the {parts[0]}: block is not used by a backtest, so every "
                "point would be the same run"
            )
        texts = _split_values(spec, rest)
        values = []
        for text in texts:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc)
                raise ValueError(f"--grid {key}: value {text!r} is not YAML ({problem})") from None
            if any(_same(value, v) for v in values):
                raise ValueError(f"--grid {key}: value {text!r} given twice")
            values.append(value)
        axes.append(GridAxis(key, tuple(values)))
    return axes


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _split_values(spec: str, text: str) -> list[str]:
    """Split at commas outside brackets, braces and quotes; every value non-empty."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"--grid {spec!r}: {ch!r} closes nothing")
        elif ch == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError(f"--grid {spec!r}: unclosed {quote or 'bracket'}")
    values.append(text[start:])
    values = [v.strip() for v in values]
    if any(not v for v in values):
        raise ValueError(
            f"--grid {spec!r}: an empty value (write KEY=V1,V2,... with no empty item)"
        )
    return values


def grid_points(axes: Sequence[GridAxis], source: str = "<string>") -> list[SweepPoint]:
    """The cartesian product of the axes, the first axis varying slowest."""
    combos = itertools.product(*(a.values for a in axes))
    return [
        SweepPoint(i, {a.key: v for a, v in zip(axes, combo, strict=True)}, source)
        for i, combo in enumerate(combos)
    ]


# --- one point's document -----------------------------------------------------------------


def point_document(base: Mapping[str, Any], point: SweepPoint) -> dict[str, Any]:
    """The file's YAML mapping with the point's values set (a copy). A missing mapping
    on the way is created (``account.limits`` absent from the file); a subaccount must
    exist (a grid never adds one); a path through a value or past a list's end is a
    ``ConfigError`` naming the key and the point."""
    doc = copy.deepcopy(dict(base))
    for key, value in point.values.items():
        parts = key.split(".")
        node: Any = doc
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        point.where,
                        [
                            f"{key}: {'.'.join(parts[:i]) or 'the file'} is a list of "
                            f"{len(node)}; {part!r} is not one of its indexes (0 to {len(node) - 1})"
                        ],
                    )
                if last:
                    node[int(part)] = copy.deepcopy(value)
                else:
                    node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(
                    point.where,
                    [
                        f"{key}: {'.'.join(parts[:i])} is a value ({show_value(node)}), not a section"
                    ],
                )
            if i == 1 and parts[0] == "subaccounts" and part not in node:
                names = ", ".join(map(str, node)) or "none"
                raise ConfigError(
                    point.where,
                    [f"{key}: no subaccount {part!r} in the file (subaccounts are {names})"],
                )
            if last:
                node[part] = copy.deepcopy(value)
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return doc


def point_portfolio(text: str, folder: str | Path, point: SweepPoint) -> Portfolio:
    """The point's portfolio, validated by the portfolio parser (``ConfigError`` names
    the point and the key); relative data paths stay relative to the file's ``folder``."""
    base = read_yaml(text, point.source)
    doc = point_document(base, point)
    dumped = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    return parse_portfolio(dumped, source=point.where, folder=Path(folder))


def validate_points(text: str, folder: str | Path, points: Iterable[SweepPoint]) -> None:
    """Validate every point's document before any runs (the first bad one raises)."""
    for point in points:
        point_portfolio(text, folder, point)


# --- running -------------------------------------------------------------------------------


@dataclass
class PointResult:
    """One point's outcome: ``metrics`` (scope -> metric -> value, as ``PortfolioRun``
    has them) when it ran, else ``error``; ``seconds`` of run time."""

    point: SweepPoint
    status: str
    metrics: dict[str, dict[str, float]] | None = None
    error: str | None = None
    start: str | None = None
    end: str | None = None
    seconds: float = 0.0
    provenance: dict[str, Any] | None = None


def run_point(text: str, folder: str, options: PortfolioOptions, point: SweepPoint) -> PointResult:
    """Run one grid point: parse its document, load the data from its path, run the
    portfolio, keep its metrics. A user error (bad settings, data the point cannot use)
    is returned as an error row, not raised. Top-level and plain-argument, so it pickles
    to worker processes and Dask workers."""
    t0 = time.perf_counter()
    try:
        portfolio = point_portfolio(text, folder, point)
        run = run_portfolio(portfolio, options, panel=_panel(data_spec(portfolio, options)))
    except (ValueError, KeyError, DataError, OSError) as exc:
        return PointResult(point, ERROR, error=_message(exc), seconds=time.perf_counter() - t0)
    index = run.equity.index
    return PointResult(
        point,
        OK,
        metrics={scope: dict(m) for scope, m in run.metrics.items()},
        start=index[0].isoformat(),
        end=index[-1].isoformat(),
        seconds=time.perf_counter() - t0,
        provenance=dict(run.provenance),
    )


#: The last data this process loaded, by its data options: the points of a grid that
#: leaves ``backtest:`` alone read their data once per worker, not once per point.
_LOADED: dict[tuple[Any, ...], Panel] = {}


def _panel(spec: RunSpec) -> Panel:
    key = (spec.data, spec.start, spec.end, spec.timeframe, spec.validation)
    if key not in _LOADED:
        _LOADED.clear()  # one panel per process: a sweep over dates never piles them up
        _LOADED[key] = load_for_spec(spec)
    return _LOADED[key]


def _message(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, ValueError | KeyError | DataError | OSError):
        return str(text)
    return f"{type(exc).__name__}: {text}"


OnDone = Callable[[int, int, PointResult], None]


@dataclass
class SweepOutcome:
    """Every point's result in grid order, and how the sweep ran."""

    results: list[PointResult]
    executor: str
    workers: int
    seconds: float
    interrupted: bool = False
    options: PortfolioOptions = field(default_factory=PortfolioOptions)


def default_workers(points: int) -> int:
    """Processes for a local sweep: one per CPU this process may use, at most one per
    point."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, points))


def run_sweep(
    text: str,
    folder: str | Path,
    options: PortfolioOptions,
    points: Sequence[SweepPoint],
    *,
    workers: int | None = None,
    cluster: str | None = None,
    on_done: OnDone | None = None,
) -> SweepOutcome:
    """Run every point: in this process (``workers=1``), on a local process pool
    (default ``default_workers``), or on the Dask cluster at ``cluster``
    (``tcp://host:port``). Points are validated first (``ConfigError``); ``on_done(done,
    total, result)`` is called as each point finishes, in the order they finish."""
    folder = str(Path(folder).expanduser().absolute())
    validate_points(text, folder, points)
    if cluster is not None:
        # A remote worker has another working directory: name the data by an absolute
        # path, found here once, so every point runs on the same data.
        options = _pinned_data(text, folder, options, points)
    elif options.data is not None:
        options = replace(options, data=str(Path(options.data).expanduser().absolute()))
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1 (got {workers})")
    t0 = time.perf_counter()
    done: dict[int, PointResult] = {}
    total = len(points)

    def record(result: PointResult) -> None:
        done[result.point.index] = result
        if on_done is not None:
            on_done(len(done), total, result)

    if cluster is not None:
        executor, n = "dask", 0
        interrupted = _run_dask(cluster, text, folder, options, points, record)
    else:
        n = workers if workers is not None else default_workers(total)
        executor = "local"
        if n == 1:
            interrupted = _run_here(text, folder, options, points, record)
        else:
            interrupted = _run_pool(n, text, folder, options, points, record)
    results = [
        done.get(p.index)
        or PointResult(p, CANCELLED, error="cancelled: interrupted before it finished")
        for p in points
    ]
    return SweepOutcome(results, executor, n, time.perf_counter() - t0, interrupted, options)


def _pinned_data(
    text: str, folder: str, options: PortfolioOptions, points: Sequence[SweepPoint]
) -> PortfolioOptions:
    if options.data is not None:
        return replace(options, data=str(Path(options.data).expanduser().absolute()))
    if any(k == "backtest.data" for p in points[:1] for k in p.values):
        return options  # each point names its own data (relative to the file's folder)
    if point_portfolio(text, folder, points[0]).data_path is not None:
        return options  # the file names it, relative to its (absolute) folder
    return replace(options, data=str(find_data_dir(None).path.absolute()))


def _run_here(
    text: str,
    folder: str,
    options: PortfolioOptions,
    points: Sequence[SweepPoint],
    record: Callable[[PointResult], None],
) -> bool:
    for point in points:
        try:
            record(_guarded(text, folder, options, point))
        except KeyboardInterrupt:
            return True
    return False


def _guarded(text: str, folder: str, options: PortfolioOptions, point: SweepPoint) -> PointResult:
    """``run_point``, with any other failure of the point recorded (a sweep of hours is
    not lost to one point)."""
    try:
        return run_point(text, folder, options, point)
    except Exception as exc:
        return PointResult(point, ERROR, error=_message(exc))


#: Imported once in the fork server, before it forks the workers: each worker starts
#: with them loaded instead of importing them itself (seconds of each worker's start).
_PRELOAD = ["trimtab.engine.sweep", "hmmlearn._hmmc"]


def _context() -> multiprocessing.context.BaseContext:
    """Never a plain fork of this process (it has threads: the progress bar's); a fork
    server where there is one (POSIX), else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)  # a module that fails to import is skipped
        return ctx
    return multiprocessing.get_context("spawn")


def _ignore_interrupt() -> None:
    # Ctrl-C goes to the whole process group: the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_pool(
    workers: int,
    text: str,
    folder: str,
    options: PortfolioOptions,
    points: Sequence[SweepPoint],
    record: Callable[[PointResult], None],
) -> bool:
    pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_ignore_interrupt)
    futures: dict[Future[PointResult], SweepPoint] = {}
    try:
        for point in points:
            futures[pool.submit(run_point, text, folder, options, point)] = point
        for future in as_completed(futures):
            record(_result(future, futures[future]))
    except KeyboardInterrupt:
        # The running points would finish first otherwise; 3.11 has no public way to
        # stop them (shutdown forgets the processes: take them before).
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for future in futures:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        return True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return False


def _result(future: Any, point: SweepPoint) -> PointResult:
    try:
        return future.result()
    except Exception as exc:  # the worker died, or the point failed outside run_point's net
        return PointResult(point, ERROR, error=_message(exc))


def _run_dask(
    address: str,
    text: str,
    folder: str,
    options: PortfolioOptions,
    points: Sequence[SweepPoint],
    record: Callable[[PointResult], None],
) -> bool:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ValueError(
            "--cluster needs Dask's distributed scheduler: pip install distributed "
            "(on this machine and on every worker)"
        ) from None
    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"--cluster {address}: cannot connect to the scheduler ({exc})") from None
    futures: dict[str, SweepPoint] = {}
    pending: list[Any] = []
    try:
        for point in points:
            # pure=False: the same point run twice is two runs, never a cached result.
            future = client.submit(run_point, text, folder, options, point, pure=False)
            futures[future.key] = point
            pending.append(future)
        for future in dask_completed(pending):
            record(_result(future, futures[future.key]))
    except KeyboardInterrupt:
        client.cancel(pending)
        return True
    finally:
        client.close()
    return False


# --- the table of results ------------------------------------------------------------------


def metric_column(rank_by: str, subaccounts: Iterable[str]) -> tuple[str, bool]:
    """``--rank-by`` as a column and its order (True: ascending). ``sharpe`` means
    ``total.sharpe``; ``trend.cagr`` a subaccount's. ``ValueError`` lists the choices."""
    scope, sep, metric = rank_by.strip().rpartition(".")
    scope = scope if sep else TOTAL
    scopes = [TOTAL, *subaccounts]
    if scope not in scopes:
        raise ValueError(
            f"--rank-by {rank_by!r}: {scope!r} is neither {TOTAL} nor a subaccount "
            f"({', '.join(scopes[1:])})"
        )
    if metric not in METRICS:
        raise ValueError(
            f"--rank-by {rank_by!r}: unknown metric {metric!r}; metrics are {', '.join(METRICS)}"
        )
    return f"{scope}.{metric}", metric in LOWER_IS_BETTER


def sweep_frame(
    outcome: SweepOutcome, axes: Sequence[GridAxis], rank_by: str = DEFAULT_RANK
) -> pd.DataFrame:
    """One row per point, best first by ``rank_by`` (rows without it last, then grid
    order): ``point``, the grid keys, ``status``, ``error``, ``start``, ``end``,
    ``seconds``, then ``SCOPE.METRIC`` columns (total first, then the subaccounts)."""
    scopes: list[str] = []
    for r in outcome.results:
        for scope in r.metrics or {}:
            if scope != TOTAL and scope not in scopes:
                scopes.append(scope)
    # No point ran: no subaccount's columns to check the rank against (all rows NaN).
    ran = any(r.metrics for r in outcome.results)
    column, ascending = metric_column(rank_by, scopes if ran else [rank_by.rpartition(".")[0]])
    rows = []
    for r in outcome.results:
        row: dict[str, Any] = {"point": r.point.index}
        for axis in axes:
            row[axis.key] = _cell(r.point.values[axis.key])
        row.update(status=r.status, error=r.error, start=r.start, end=r.end, seconds=r.seconds)
        for scope in (TOTAL, *scopes):
            for metric in METRICS:
                value = (r.metrics or {}).get(scope, {}).get(metric)
                row[f"{scope}.{metric}"] = float("nan") if value is None else value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if column not in frame:
        frame[column] = float("nan")
    frame = frame.sort_values(
        column, ascending=ascending, na_position="last", kind="stable"
    ).reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def _cell(value: Any) -> Any:
    """A grid value as a table cell: scalars as they are, dates and collections as text."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return show_value(value)


def sweep_doc(
    outcome: SweepOutcome,
    axes: Sequence[GridAxis],
    frame: pd.DataFrame,
    portfolio: str,
    rank_by: str,
    sha256: str | None = None,
) -> dict[str, Any]:
    """``sweep.json``: the grid, the file, the options, the data's provenance (each
    distinct one the points ran on), when, how, and the rows (as in ``sweep.csv``)."""
    provenances: list[dict[str, Any]] = []
    for r in outcome.results:
        if r.provenance is not None and r.provenance not in provenances:
            provenances.append(r.provenance)
    options = outcome.options
    counts = {s: sum(r.status == s for r in outcome.results) for s in (OK, ERROR, CANCELLED)}
    return json_ready(
        {
            "portfolio": portfolio,
            "portfolio_sha256": sha256,
            "grid": {a.key: [_cell(v) for v in a.values] for a in axes},
            "points": len(outcome.results),
            "status": counts,
            "interrupted": outcome.interrupted,
            "rank_by": rank_by,
            "options": {**asdict(options)},
            "data": provenances[0] if len(provenances) == 1 else provenances,
            "executor": outcome.executor,
            "workers": outcome.workers,
            "seconds": outcome.seconds,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "trimtab_version": __version__,
            "rows": frame.to_dict(orient="records"),
        }
    )


def check_sweep_folder(out: str | Path) -> Path:
    """``--out``: a new or empty folder, or an earlier sweep's (``OutputError``)."""
    target = Path(out).expanduser()
    if target.exists() and not target.is_dir():
        raise OutputError(f"--out {target} is a file; give a folder for sweep.csv and sweep.json")
    if target.is_dir():
        other = sorted(e.name for e in target.iterdir() if e.name not in SWEEP_FILES)
        if other:
            shown = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
            raise OutputError(
                f"--out {target} holds other files ({shown}); give a new or empty folder, "
                "or an earlier sweep's"
            )
    return target


def write_sweep(out: str | Path, frame: pd.DataFrame, doc: Mapping[str, Any]) -> list[Path]:
    """Write ``sweep.csv`` and ``sweep.json`` into ``out`` (each atomically)."""
    import json

    target = check_sweep_folder(out)
    csv = write_text_atomic(target / "sweep.csv", frame.to_csv(index=False))
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    return [csv, write_text_atomic(target / "sweep.json", text)]
