"""``trimtab report RUN``: one self-contained HTML file with plotly charts of a run folder.

A run folder is what ``trimtab backtest --out DIR`` writes (one policy: ``result.json``
with its baselines' metrics, ``equity.csv``, ``weights.csv``, ``trades.csv``,
``decisions.jsonl``, ``states.csv``) or ``trimtab backtest --portfolio FILE --out DIR``
(``equity.csv`` with ``total`` and one column per subaccount, ``transfers.csv``,
``subaccounts/NAME/`` each a run folder of its own, ``result.json`` with the allocator's
records under ``allocations``). See ``trimtab.journal.files``.

The report holds: equity and drawdown beside BTC held, exposure and risk scores with the
breaker states, weights by asset, allocation by strategy (portfolio runs), trades on the
price chart with their reasons on hover, the metrics table and the attribution. plotly.js
is inlined once (no CDN, no network), so the file opens offline; numbers are rounded to
what a chart shows, so a run of years stays a few megabytes (plotly.js is about 4.6 MB).

BTC held is the run's starting equity put in BTC at the first bar's close, the taker fee
paid once, valued at each later close (as ``trimtab demo`` prints it); its prices come
from the data file the run names in ``result.json`` (``data.files``) or from ``data``.
Units: money in USDT, weights and exposures as fractions of equity, dates UTC.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.analytics.metrics import METRIC_ROWS

__all__ = [
    "Account",
    "ReportError",
    "Run",
    "btc_held",
    "build_report",
    "figure_div",
    "html_table",
    "load_run",
    "page",
    "write_report",
]

#: The subaccounts of a portfolio run, under its folder (``trimtab.journal.files``).
SUBACCOUNTS_DIR = "subaccounts"
#: Assets drawn one by one in the weights chart; the rest are summed as "other".
MAX_ASSETS_SHOWN = 12
#: Reasons of a decision shown in a trade's hover text (the rest are in decisions.jsonl).
MAX_REASONS_SHOWN = 6
#: Characters of each reason in a hover (a long one is cut; decisions.jsonl has it whole).
MAX_REASON_CHARS = 180
#: Transfers listed in the allocation section (all are in transfers.csv).
MAX_TRANSFERS_SHOWN = 30

_STATE_COLOURS = {"reducing": "rgba(255,165,0,0.22)", "halted": "rgba(220,20,60,0.25)"}
# The terminal's rows, and what a portfolio's subaccounts add (their capital flows).
_METRIC_ROWS = (
    *METRIC_ROWS[:-1],
    ("net_transfers", "Net transfers", "money"),
    ("start_equity", "Start equity", "money"),
    METRIC_ROWS[-1],
)


class ReportError(ValueError):
    """A run folder that cannot be reported on (names the file and what is wrong)."""


@dataclass
class Account:
    """One run's files: a single backtest, or one subaccount of a portfolio run."""

    name: str
    result: dict[str, Any]
    equity: pd.Series
    weights: pd.DataFrame
    trades: pd.DataFrame
    decisions: list[dict[str, Any]]
    states: pd.DataFrame | None = None


@dataclass
class Run:
    """A run folder as read by ``load_run``.

    ``kind`` is ``backtest`` (one policy, ``accounts`` holds it alone) or ``portfolio``
    (``accounts`` by subaccount); ``equity`` has a ``total`` column (and, for a
    portfolio, one per subaccount), USDT.
    """

    folder: Path
    kind: str
    result: dict[str, Any]
    equity: pd.DataFrame
    accounts: dict[str, Account]
    transfers: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> pd.Series:
        return self.equity["total"]


# --------------------------------------------------------------------------- reading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(
            f"{path.parent} is not a trimtab run folder: it has no result.json "
            "(write one with `trimtab backtest --out DIR`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc


def _read_frame(path: Path, *, required: bool = True) -> pd.DataFrame | None:
    """A CSV indexed by its UTC ``timestamp`` column (None if absent and not required)."""
    if not path.is_file():
        if required:
            raise ReportError(f"{path}: missing (the run folder is incomplete)")
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot be read as CSV ({exc})") from None
    if "timestamp" not in frame.columns:
        raise ReportError(f"{path}: no timestamp column (found {', '.join(frame.columns)})")
    try:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    except (ValueError, TypeError) as exc:
        raise ReportError(f"{path}: bad timestamp ({exc})") from None
    return frame


def _indexed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("timestamp").sort_index()


def _read_decisions(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise ReportError(f"{path}, line {n}: not JSON ({exc})") from None
    return out


def _read_account(folder: Path, name: str) -> Account:
    result = _read_json(folder / "result.json")
    eq = _read_frame(folder / "equity.csv")
    assert eq is not None
    eq = _indexed(eq)
    if "equity" not in eq.columns:
        raise ReportError(f"{folder / 'equity.csv'}: no equity column")
    weights = _read_frame(folder / "weights.csv", required=False)
    trades = _read_frame(folder / "trades.csv", required=False)
    states = _read_frame(folder / "states.csv", required=False)
    return Account(
        name=name,
        result=result,
        equity=eq["equity"].astype(float),
        weights=_indexed(weights).astype(float) if weights is not None else pd.DataFrame(),
        trades=trades if trades is not None else pd.DataFrame(),
        decisions=_read_decisions(folder / "decisions.jsonl"),
        states=_indexed(states) if states is not None else None,
    )


def load_run(folder: str | Path) -> Run:
    """Read a run folder (a backtest's or a portfolio backtest's, see the module doc)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder (give the --out folder of a backtest)")
    result = _read_json(root / "result.json")
    subs = root / SUBACCOUNTS_DIR
    if "subaccounts" in result and subs.is_dir():
        eq = _read_frame(root / "equity.csv")
        assert eq is not None
        eq = _indexed(eq).astype(float)
        if "total" not in eq.columns:
            raise ReportError(f"{root / 'equity.csv'}: no total column")
        names = [n for n in result["subaccounts"] if (subs / n).is_dir()]
        accounts = {n: _read_account(subs / n, n) for n in names}
        transfers = _read_frame(root / "transfers.csv", required=False)
        return Run(root, "portfolio", result, eq, accounts, transfers)
    account = _read_account(root, str(result.get("policy", "run")))
    return Run(
        root, "backtest", result, account.equity.rename("total").to_frame(), {account.name: account}
    )


# --------------------------------------------------------------------------- prices


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _closes(run: Run, data: str | Path | None) -> tuple[pd.DataFrame | None, list[str]]:
    """Close prices over the run's bars (columns: symbols), from ``data`` or the data file
    the run names; and notes on what could not be read."""
    from trimtab.data.errors import DataError
    from trimtab.data.readers import load_panel

    notes: list[str] = []
    doc = run.result.get("data") or {}
    if data is not None:
        sources = [Path(data).expanduser()]
    else:
        sources = []
        for f in doc.get("files") or []:
            path = Path(f.get("path", ""))
            if not path.is_file():
                notes.append(f"the run's data file {path} is not here (give --data)")
                continue
            if f.get("sha256") and _file_sha256(path) != f["sha256"]:
                notes.append(f"{path} changed since the run: its prices may differ from the run's")
            sources.append(path)
    if not sources:
        if not doc.get("files") and data is None:
            notes.append("the run names no data file: give --data for BTC held and prices")
        return None, notes
    start, end = run.equity.index[0], run.equity.index[-1]
    frames = []
    for source in sources:
        try:
            panel = load_panel(
                source,
                timeframe=run.result.get("timeframe"),
                start=start,
                end=end,
                cache=True,
            )
        except (DataError, OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            notes.append(f"prices from {source} could not be read: {first}")
            continue
        frames.append(panel.close)
    if not frames:
        return None, notes
    close = pd.concat(frames, axis=1)
    close = close.loc[:, ~close.columns.duplicated()]
    return close.reindex(run.equity.index), notes


def _btc_symbol(symbols: Sequence[str]) -> str | None:
    for quote in ("USDT", "USDC", "BUSD", "FDUSD", "USD"):
        if f"BTC{quote}" in symbols:
            return f"BTC{quote}"
    return None


def btc_held(equity: pd.Series, close: pd.Series, taker_fee_bps: float) -> pd.Series:
    """``equity``'s first value in BTC at the first close, ``taker_fee_bps`` paid once,
    valued at every close of ``equity``'s index (USDT). The first value is the start."""
    c = close.reindex(equity.index).ffill()
    if not np.isfinite(c.iloc[0]) or c.iloc[0] <= 0:
        raise ReportError("BTC has no price at the run's first bar")
    start = float(equity.iloc[0])
    held = c / float(c.iloc[0]) * start * (1.0 - taker_fee_bps / 1e4)
    held.iloc[0] = start
    return held.rename("BTC held")


def _taker_fee_bps(run: Run) -> float:
    costs = run.result.get("costs") or {}
    return float(costs.get("taker_fee_bps", run.result.get("fee_bps", 10.0)))


# --------------------------------------------------------------------------- series


def drawdown(equity: pd.Series) -> pd.Series:
    """Drawdown from the running peak as a NEGATIVE fraction (-0.3 = 30 % below it)."""
    peak = equity.cummax()
    return (equity / peak - 1.0).where(peak > 0, 0.0)


def total_weights(run: Run) -> pd.DataFrame:
    """Weights by asset of the whole run (fractions of total equity, signed): for a
    portfolio, each subaccount's weights times its equity, summed, over the total."""
    if run.kind == "backtest":
        return next(iter(run.accounts.values())).weights.reindex(run.equity.index).fillna(0.0)
    notional = None
    for name, acc in run.accounts.items():
        if acc.weights.empty:
            continue
        eq = run.equity[name] if name in run.equity else acc.equity
        w = acc.weights.reindex(run.equity.index).fillna(0.0)
        n = w.mul(eq.reindex(run.equity.index), axis=0)
        notional = n if notional is None else notional.add(n, fill_value=0.0)
    if notional is None:
        return pd.DataFrame(index=run.equity.index)
    return notional.div(run.total.where(run.total > 0), axis=0).fillna(0.0)


def exposure(weights: pd.DataFrame) -> pd.DataFrame:
    """Gross (sum of absolute weights) and net (sum of weights) exposure per bar."""
    return pd.DataFrame({"gross": weights.abs().sum(axis=1), "net": weights.sum(axis=1)})


def _reason_series(decisions: Sequence[Mapping[str, Any]], code: str) -> list[tuple[Any, dict]]:
    out = []
    for d in decisions:
        for r in d.get("reasons") or ():
            if r.get("code") == code:
                out.append((pd.Timestamp(d["timestamp"]), r.get("values") or {}))
    return out


def risk_scores(decisions: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Risk score (0-100) per asset at each decision where the risk cut recorded it (the
    ``risk_cut`` reason lists the assets it cut); NaN where not recorded."""
    rows = {t: dict(v.get("scores") or {}) for t, v in _reason_series(decisions, "risk_cut")}
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index = pd.DatetimeIndex(frame.index)
    return frame.astype(float)


def volatility_target(decisions: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The volatility target's forecast and target (annualised fractions) per decision."""
    rows = {
        t: {"forecast": v.get("forecast_vol"), "target": v.get("target_vol")}
        for t, v in _reason_series(decisions, "vol_target")
    }
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index().astype(float)
    frame.index = pd.DatetimeIndex(frame.index)
    return frame


def state_spans(states: pd.DataFrame | None) -> list[tuple[Any, Any, str]]:
    """(start, end, state) of each stretch of bars not ``active``; ``end`` is the first
    bar back in another state (or the last bar)."""
    if states is None or "state" not in states.columns or states.empty:
        return []
    s = states["state"].astype(str)
    spans = []
    start = None
    current = "active"
    for t, v in s.items():
        if v != current:
            if current != "active" and start is not None:
                spans.append((start, t, current))
            start, current = t, v
    if current != "active" and start is not None:
        spans.append((start, s.index[-1], current))
    return spans


# --------------------------------------------------------------------------- figures


def _x(index: pd.Index) -> list[str]:
    """UTC times as plotly reads them: dates alone when every stamp is at midnight (daily
    bars), which halves the size of a long run's charts."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    if len(idx) and (idx == idx.normalize()).all():
        return list(idx.strftime("%Y-%m-%d"))
    return list(idx.strftime("%Y-%m-%dT%H:%M:%S"))


def _xs(index: pd.Index) -> dict[str, Any]:
    """A trace's x: ``x0`` and a step ``dx`` (ms) for evenly spaced bars, which spares a
    long run's file one date per point and trace; else the dates themselves."""
    idx = pd.DatetimeIndex(index)
    if len(idx) >= 3:
        steps = np.diff(idx.asi8)
        if (steps == steps[0]).all() and steps[0] > 0:
            unit = {"ns": 1_000_000, "us": 1_000, "ms": 1, "s": 1 / 1_000}[idx.unit]
            return {"x0": _x(idx[:1])[0], "dx": float(steps[0]) / unit}
    return {"x": _x(idx)}


def _r(values: Any, digits: int) -> list[float | None]:
    """Rounded values for a chart (None for NaN), to keep the file small."""
    a = np.round(np.asarray(values, dtype=float), digits)
    return [None if not math.isfinite(v) else float(v) for v in a]


def _sig(values: Any, digits: int = 6) -> list[float | None]:
    """Values to ``digits`` significant digits (prices from 0.00001 to 100,000 alike)."""
    return [
        None if not math.isfinite(v) else (0.0 if v == 0 else float(f"{v:.{digits}g}"))
        for v in np.asarray(values, dtype=float)
    ]


def _layout(fig: Any, title: str, height: int) -> None:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        height=height,
        template="plotly_white",
        margin={"l": 70, "r": 30, "t": 70, "b": 50},
        legend={"orientation": "h", "y": -0.12},
        hovermode="x unified",
    )


def equity_figure(run: Run, held: pd.Series | None) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.65, 0.35],
        vertical_spacing=0.06,
        subplot_titles=("Equity (USDT)", "Drawdown from the running peak"),
    )
    curves: dict[str, tuple[pd.Series, dict[str, Any]]] = {}
    label = "portfolio (total)" if run.kind == "portfolio" else next(iter(run.accounts))
    curves[label] = (run.total, {"width": 2.5, "color": "#1f77b4"})
    if run.kind == "portfolio":
        for name in run.accounts:
            if name in run.equity:
                curves[f"subaccount {name}"] = (run.equity[name], {"width": 1})
    if held is not None:
        curves["BTC held"] = (held, {"width": 1.8, "dash": "dash", "color": "#ff7f0e"})
    for name, (eq, line) in curves.items():
        x = _xs(eq.index)
        fig.add_trace(go.Scatter(**x, y=_r(eq, 2), name=name, line=line), row=1, col=1)
        if name.startswith("subaccount"):
            continue  # subaccounts' drawdowns crowd the panel; the table has them
        fig.add_trace(
            go.Scatter(
                **x, y=_r(drawdown(eq), 5), name=f"{name} drawdown", line=line, showlegend=False
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(title_text="USDT", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    scales = [
        {"label": label, "method": "relayout", "args": [{"yaxis.type": kind}]}
        for label, kind in (("linear scale", "linear"), ("log scale", "log"))
    ]
    fig.update_layout(
        updatemenus=[
            {
                "buttons": scales,
                "type": "buttons",
                "direction": "right",
                "x": 1.0,
                "xanchor": "right",
                "y": 1.1,
                "yanchor": "top",
                "showactive": True,
            }
        ]
    )
    fig.update_xaxes(title_text="date (UTC)", row=2, col=1)
    _layout(fig, "Equity and drawdown against BTC held", 620)
    return fig


def _state_shapes(fig: Any, run: Run, rows: Sequence[int]) -> list[str]:
    """Shade the bars each account's breaker spent reducing or halted; return a legend."""
    seen = []
    for name, acc in run.accounts.items():
        for a, b, state in state_spans(acc.states):
            colour = _STATE_COLOURS.get(state, "rgba(128,128,128,0.2)")
            for row in rows:
                fig.add_vrect(
                    x0=_x([a])[0], x1=_x([b])[0], fillcolor=colour, line_width=0, row=row, col=1
                )
            seen.append(f"{name}: {state} {str(a)[:10]} to {str(b)[:10]}")
    return seen


def exposure_figure(run: Run) -> tuple[Any, list[str]]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.4, 0.35, 0.25],
        vertical_spacing=0.07,
        subplot_titles=(
            "Exposure (fraction of equity) and the governor's ceiling",
            "Risk score of each asset the risk cut acted on (0-100)",
            "Forecast volatility against the volatility target (annualised)",
        ),
    )
    many = run.kind == "portfolio"
    ex = exposure(total_weights(run))
    x = _xs(ex.index)
    prefix = "total " if many else ""
    fig.add_trace(go.Scatter(**x, y=_r(ex["gross"], 4), name=f"{prefix}gross exposure"), 1, 1)
    fig.add_trace(go.Scatter(**x, y=_r(ex["net"], 4), name=f"{prefix}net exposure"), 1, 1)
    for name, acc in run.accounts.items():
        tag = f"{name} " if many else ""
        if many and not acc.weights.empty:
            g = exposure(acc.weights)["gross"]
            fig.add_trace(
                go.Scatter(**_xs(g.index), y=_r(g, 4), name=f"{name} gross", line={"width": 1}),
                1,
                1,
            )
        if acc.states is not None and "exposure_ceiling" in acc.states:
            c = acc.states["exposure_ceiling"].astype(float)
            if c.notna().any():
                fig.add_trace(
                    go.Scatter(
                        **_xs(c.index),
                        y=_r(c, 4),
                        name=f"{tag}exposure ceiling",
                        line={"dash": "dot", "shape": "hv"},
                    ),
                    1,
                    1,
                )
        scores = risk_scores(acc.decisions)
        if not scores.empty:
            top = scores.notna().sum().sort_values(ascending=False).index[:MAX_ASSETS_SHOWN]
            for sym in top:
                s = scores[sym]
                fig.add_trace(
                    go.Scatter(
                        **_xs(s.index),
                        y=_r(s, 1),
                        name=f"{tag}{sym} risk score",
                        mode="lines+markers",
                        marker={"size": 3},
                        line={"width": 1},
                        connectgaps=False,
                    ),
                    2,
                    1,
                )
        vt = volatility_target(acc.decisions)
        if not vt.empty:
            fig.add_trace(
                go.Scatter(**_xs(vt.index), y=_r(vt["forecast"], 4), name=f"{tag}forecast vol"),
                3,
                1,
            )
            fig.add_trace(
                go.Scatter(
                    **_xs(vt.index),
                    y=_r(vt["target"], 4),
                    name=f"{tag}target vol",
                    line={"dash": "dash", "shape": "hv"},
                ),
                3,
                1,
            )
    spans = _state_shapes(fig, run, (1, 2, 3))
    fig.update_yaxes(tickformat=".0%", title_text="of equity", row=1, col=1)
    fig.update_yaxes(title_text="score", range=[0, 100], row=2, col=1)
    fig.update_yaxes(tickformat=".0%", title_text="volatility", row=3, col=1)
    fig.update_xaxes(title_text="date (UTC)", row=3, col=1)
    title = "Exposure, risk and the breaker states"
    title += " (shaded: reducing orange, halted red)" if spans else " (breakers active throughout)"
    _layout(fig, title, 820)
    return fig, spans


def weights_figure(run: Run) -> Any:
    import plotly.graph_objects as go

    w = total_weights(run)
    w = w.loc[:, (w != 0).any()]
    fig = go.Figure()
    if not w.empty:
        order = w.abs().mean().sort_values(ascending=False).index
        shown = list(order[:MAX_ASSETS_SHOWN])
        rest = [c for c in order if c not in shown]
        parts = {c: w[c] for c in shown}
        if rest:
            parts[f"other ({len(rest)} assets)"] = w[rest].sum(axis=1)
        x = _xs(w.index)
        for name, s in parts.items():
            for group, part in (("long", s.clip(lower=0)), ("short", s.clip(upper=0))):
                if not (part != 0).any():
                    continue
                fig.add_trace(
                    go.Scatter(
                        **x,
                        y=_r(part, 5),
                        name=name if group == "long" else f"{name} (short)",
                        stackgroup=group,
                        line={"width": 0.5},
                    )
                )
    fig.update_yaxes(title_text="weight (fraction of equity)", tickformat=".0%")
    fig.update_xaxes(title_text="date (UTC)")
    what = "of the total equity, all subaccounts" if run.kind == "portfolio" else "of equity"
    _layout(fig, f"Weights by asset ({what}; shorts below zero)", 520)
    return fig


def allocation_figure(run: Run) -> Any:
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig = go.Figure()
    names = [n for n in run.accounts if n in run.equity]
    total = run.total.where(run.total > 0)
    x = _xs(run.equity.index)
    allocations = run.result.get("allocations") or []
    when = _x(pd.DatetimeIndex([pd.Timestamp(a["timestamp"]) for a in allocations]))
    for k, name in enumerate(names):
        colour = qualitative.Plotly[k % len(qualitative.Plotly)]
        fig.add_trace(
            go.Scatter(
                **x,
                y=_r(run.equity[name] / total, 5),
                name=f"{name} share of equity",
                line={"width": 2, "color": colour},
                hovertemplate="%{x|%Y-%m-%d}: %{y:.1%} of equity<extra>" + name + "</extra>",
            )
        )
        if allocations:
            fig.add_trace(
                go.Scatter(
                    x=when,
                    y=[(a.get("targets") or {}).get(name) for a in allocations],
                    name=f"{name} allocator target",
                    mode="lines+markers",
                    line={"dash": "dot", "shape": "hv", "width": 2, "color": colour},
                    marker={"size": 8, "symbol": "diamond"},
                    text=[_wrap(a.get("summary") or "") for a in allocations],
                    hovertemplate="%{x|%Y-%m-%d}: target %{y:.1%}<br>%{text}<extra>"
                    + name
                    + "</extra>",
                )
            )
    fig.update_yaxes(title_text="share of total equity", tickformat=".0%", rangemode="tozero")
    fig.update_xaxes(title_text="date (UTC)")
    _layout(
        fig,
        "Allocation by strategy: each subaccount's share of equity (solid) and the "
        "allocator's target (dotted)",
        520,
    )
    fig.update_layout(hovermode="closest")
    return fig


def _wrap(text: str, width: int = 90) -> str:
    """Escaped text broken into hover lines of about ``width`` characters."""
    words, lines, line = html.escape(text).split(" "), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return "<br>".join(lines)


def trade_table(run: Run) -> pd.DataFrame:
    """Every trade of the run with its account, joined to its decision (by ``decision_id``
    = the decision record's ``id``): the decision's time, action and reasons."""
    frames = []
    for name, acc in run.accounts.items():
        t = acc.trades
        if t.empty:
            continue
        t = t.copy()
        t["account"] = name
        by_id = {int(d["id"]): d for d in acc.decisions if "id" in d}
        ids = pd.to_numeric(t.get("decision_id"), errors="coerce")
        found = [by_id.get(int(i)) if pd.notna(i) else None for i in ids]
        t["decided_at"] = [d.get("timestamp") if d else None for d in found]
        t["action"] = [d.get("action") if d else None for d in found]
        t["why"] = [
            [r.get("message", "") for r in (d.get("reasons") or [])] if d else [] for d in found
        ]
        frames.append(t)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _hover(row: Mapping[str, Any], many: bool) -> str:
    qty, price = float(row["quantity"]), float(row["price"])
    head = f"<b>{html.escape(str(row['side']))} {qty:.6g} {html.escape(str(row['symbol']))}</b>"
    head += f" @ {price:,.6g} = {qty * price:,.0f} USDT"
    if many:
        head += f" ({html.escape(str(row['account']))})"
    lines = [head, f"fee {float(row['fee']):.4g} {html.escape(str(row.get('fee_currency', '')))}"]
    lines.append("order: " + _wrap(str(row.get("reason") or "")))
    if row.get("action"):
        lines.append(
            f"decision {int(row['decision_id'])} ({html.escape(str(row['action']))}, "
            f"{html.escape(str(row['decided_at'])[:16])}):"
        )
        why = list(row.get("why") or [])
        for message in why[:MAX_REASONS_SHOWN]:
            short = (
                message
                if len(message) <= MAX_REASON_CHARS
                else message[: MAX_REASON_CHARS - 3] + "..."
            )
            lines.append("- " + _wrap(short))
        if len(why) > MAX_REASONS_SHOWN:
            lines.append(f"(and {len(why) - MAX_REASONS_SHOWN} more in decisions.jsonl)")
    return "<br>".join(lines)


def _underlying(symbol: str) -> str:
    return symbol[: -len("-PERP")] if symbol.endswith("-PERP") else symbol


def trades_figure(run: Run, close: pd.DataFrame | None) -> Any:
    import plotly.graph_objects as go

    trades = trade_table(run)
    fig = go.Figure()
    if trades.empty:
        _layout(fig, "Trades on the price chart: the run made no trades", 300)
        return fig
    many = run.kind == "portfolio"
    counts = trades["symbol"].value_counts()
    symbols = list(counts.index)
    groups: list[list[int]] = []
    for k, sym in enumerate(symbols):
        visible = k == 0
        members = []
        under = _underlying(sym)
        if close is not None and under in close.columns:
            c = close[under].dropna()
            fig.add_trace(
                go.Scatter(
                    **_xs(c.index),
                    y=_sig(c),
                    name=f"{under} close",
                    line={"color": "#555", "width": 1.2},
                    visible=visible,
                    hovertemplate="%{x|%Y-%m-%d}: close %{y:,.6g}<extra></extra>",
                )
            )
            members.append(len(fig.data) - 1)
        t = trades[trades["symbol"] == sym]
        for side, symbol_mark, colour in (
            ("buy", "triangle-up", "#2ca02c"),
            ("sell", "triangle-down", "#d62728"),
        ):
            s = t[t["side"] == side]
            if s.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=_x(pd.DatetimeIndex(s["timestamp"])),
                    y=_sig(s["price"]),
                    mode="markers",
                    name=f"{sym} {side}s ({len(s)})",
                    marker={
                        "symbol": symbol_mark,
                        "size": 10,
                        "color": colour,
                        "line": {"width": 0.5, "color": "#222"},
                    },
                    text=[_hover(r, many) for r in s.to_dict("records")],
                    hovertemplate="%{text}<extra></extra>",
                    visible=visible,
                )
            )
            members.append(len(fig.data) - 1)
        groups.append(members)
    buttons = []
    for k, sym in enumerate(symbols):
        vis = [False] * len(fig.data)
        for i in groups[k]:
            vis[i] = True
        buttons.append(
            {
                "label": f"{sym} ({counts[sym]} trades)",
                "method": "update",
                "args": [
                    {"visible": vis},
                    {"yaxis.title.text": f"{_underlying(sym)} price (USDT)"},
                ],
            }
        )
    fig.update_layout(
        updatemenus=[
            {
                "buttons": buttons,
                "x": 1.0,
                "xanchor": "right",
                "y": 1.13,
                "yanchor": "top",
                "direction": "down",
            }
        ],
        hovermode="closest",
    )
    fig.update_yaxes(title_text=f"{_underlying(symbols[0])} price (USDT)")
    fig.update_xaxes(title_text="date (UTC)")
    _layout(fig, "Trades on the price chart (hover a marker for its reasons; pick a symbol)", 560)
    fig.update_layout(hovermode="closest")
    return fig


# --------------------------------------------------------------------------- tables


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    v = float(value)
    if kind == "pct":
        return f"{v:.1%}"
    if kind == "money":
        return f"{v:,.0f}"
    if kind == "int":
        return f"{v:.0f}"
    return f"{v:.2f}"


def metrics_columns(run: Run, held: pd.Series | None) -> dict[str, dict[str, Any]]:
    """The metrics table's columns: the run (or total), its baselines or subaccounts, and
    BTC held when the run did not compute it (measured here with ``compute_metrics``)."""
    from trimtab.analytics.metrics import compute_metrics

    cols: dict[str, dict[str, Any]] = {}
    if run.kind == "backtest":
        cols[next(iter(run.accounts))] = run.result.get("metrics") or {}
        for name, m in (run.result.get("baselines") or {}).items():
            cols[name] = m
    else:
        cols["portfolio (total)"] = run.result.get("metrics") or {}
        for name, s in (run.result.get("subaccounts") or {}).items():
            cols[f"{name} ({s.get('strategy', '?')})"] = s.get("metrics") or {}
    if held is not None and "btc-hold" not in cols:
        from trimtab.data.panel import periods_per_year

        ppy = periods_per_year(run.result.get("timeframe") or "1d")
        cols["BTC held (this report)"] = compute_metrics(held, periods_per_year=ppy)
    return cols


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def metrics_table(columns: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for key, label, kind in _METRIC_ROWS:
        if not any(key in m for m in columns.values()):
            continue
        rows.append([label, *(_fmt(m.get(key), kind) for m in columns.values())])
    return html_table(["metric", *columns], rows, "metrics")


def _state_changes_table(run: Run) -> str:
    """The breakers' state changes the run recorded (``safety.state_changes``)."""
    docs = [("", run.result)]
    if run.kind == "portfolio":
        docs += [(name, acc.result) for name, acc in run.accounts.items()]
        docs.append(("account", run.result.get("account") or {}))
    rows, seen = [], set()
    for name, doc in docs:
        for c in (doc.get("safety") or doc).get("state_changes") or []:
            row = [
                str(c.get("at", ""))[:16].replace("T", " "),
                name or str(c.get("scope", "")),
                f"{c.get('old', '')} -> {c.get('new', '')}",
                str(c.get("trigger", "")),
                str(c.get("message", "")),
            ]
            if tuple(row) not in seen:
                seen.add(tuple(row))
                rows.append(row)
    if not rows:
        return "<p>No breaker changed state: trading stayed active throughout.</p>"
    return html_table(["when (UTC)", "where", "state", "trigger", "why"], rows, "transfers")


def _transfers_table(run: Run) -> str:
    t = run.transfers
    if t is None or t.empty:
        return "<p>No transfers between subaccounts.</p>"
    shown = t.tail(MAX_TRANSFERS_SHOWN)
    rows = [
        [
            str(r["timestamp"])[:16],
            str(r["from"]),
            str(r["to"]),
            _fmt(r.get("requested"), "money"),
            _fmt(r.get("moved"), "money"),
            str(r.get("status", "")),
            str(r.get("reason", "") if pd.notna(r.get("reason")) else ""),
        ]
        for r in shown.to_dict("records")
    ]
    note = ""
    if len(shown) < len(t):
        note = f"<p>The last {len(shown)} of {len(t)} transfers (all in transfers.csv).</p>"
    return note + html_table(
        ["when (UTC)", "from", "to", "requested", "moved", "status", "reason"], rows, "transfers"
    )


# --------------------------------------------------------------------------- attribution


def attribution_section(run: Run, close: pd.DataFrame | None) -> str:
    """The attribution (``trimtab.analytics.attribution``): the waterfall from start to end
    equity, the PnL lines by subaccount and by asset, their cumulative path, Brinson-Fachler
    against BTC and the equal-weight universe, timing against holding, and beta and alpha
    with their intervals. A part that cannot be computed says why, in its place."""
    from trimtab.analytics import attribution as at

    prices = None
    if close is not None:
        universe = [s for s in run.result.get("symbols") or close.columns if s in close.columns]
        prices = close[universe] if universe else None
    try:
        ledger = at.load_run(run.folder, prices=prices, load_prices=False)
        pnl = at.attribute(ledger)
    except at.AttributionError as exc:
        return (
            f'<p class="missing"><b>Attribution is not available</b>: {html.escape(str(exc))}</p>'
        )
    parts = [
        "<p>PnL lines (USDT) that add up to the equity change net of transfers: price "
        "(holding and the fills marked to the close), execution (spread and impact against "
        "the bar's open), fees, funding and liquidation. The residual is float rounding.</p>",
        figure_div(waterfall_figure(pnl), "waterfall"),
        "<h3>By subaccount</h3>",
        _money_table(pnl.by_subaccount, [*at.LINES, "total", "pnl", "residual"], "subaccount"),
        *(f"<p>{html.escape(line)}</p>" for line in at.sleeve_lines_text(pnl)),
        "<h3>By asset</h3>",
        _by_asset_table(pnl.by_asset, at.LINES),
        figure_div(cumulative_figure(pnl, at.LINES), "cumulative"),
    ]
    parts.append("<h3>Allocation, selection and interaction (Brinson-Fachler)</h3>")
    parts.append(_brinson_html(at, ledger))
    parts.append("<h3>Timing: the trades against holding the month's start quantities</h3>")
    parts.append(_timing_html(at, ledger))
    parts.append("<h3>Beta and alpha</h3>")
    parts.append(_beta_html(at, ledger))
    return "".join(parts)


def waterfall_figure(pnl: Any) -> Any:
    """Start equity, each PnL line, net transfers and the residual, to the end equity."""
    import plotly.graph_objects as go

    from trimtab.analytics.attribution import LINES

    row = pnl.by_subaccount.loc["TOTAL"]
    names = ["start equity", *LINES]
    values = [float(row["start_equity"]), *(float(row[k]) for k in LINES)]
    if abs(float(row["net_transfers"])) > 0.005:
        names.append("net transfers")
        values.append(float(row["net_transfers"]))
    if abs(float(row["residual"])) >= 0.005:
        names.append("residual (rounding)")
        values.append(float(row["residual"]))
    names.append("end equity")
    values.append(float(row["end_equity"]))
    measure = ["absolute", *["relative"] * (len(values) - 2), "total"]
    fig = go.Figure(
        go.Waterfall(
            x=names,
            y=[round(v, 2) for v in values],
            measure=measure,
            text=[
                f"{v:+,.2f}" if m == "relative" else f"{v:,.2f}"
                for v, m in zip(values, measure, strict=True)
            ],
            textposition="outside",
            connector={"line": {"color": "#999"}},
            increasing={"marker": {"color": "#2ca02c"}},
            decreasing={"marker": {"color": "#d62728"}},
            totals={"marker": {"color": "#1f77b4"}},
        )
    )
    # The axis spans the levels the bars reach, not zero to the top: a 5 % loss on a
    # 100,000 account is a bar one can see.
    levels = np.cumsum(values[:-1])
    lo, hi = float(min(levels.min(), values[-1])), float(max(levels.max(), values[-1]))
    pad = max(hi - lo, abs(hi) * 0.01) * 0.15
    fig.update_yaxes(
        title_text="USDT", range=[max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad]
    )
    fig.update_xaxes(title_text="PnL line")
    span = f"{pnl.start:%Y-%m-%d} to {pnl.end:%Y-%m-%d}"
    _layout(fig, f"Where the money came from, {span}: start equity to end equity", 480)
    fig.update_layout(hovermode="closest", showlegend=False)
    return fig


def cumulative_figure(pnl: Any, lines: Sequence[str]) -> Any:
    import plotly.graph_objects as go

    cum = pnl.cumulative
    fig = go.Figure()
    x = _xs(cum.index)
    for name in [*lines, "pnl"]:
        if name != "pnl" and not (cum[name].abs() > 0.005).any():
            continue
        label = "PnL (equity change net of transfers)" if name == "pnl" else name
        line = {"width": 2.5, "color": "#222"} if name == "pnl" else {"width": 1.5}
        fig.add_trace(go.Scatter(**x, y=_r(cum[name], 2), name=label, line=line))
    fig.update_yaxes(title_text="cumulative USDT")
    fig.update_xaxes(title_text="date (UTC)")
    _layout(fig, "Cumulative PnL by line", 440)
    return fig


def _money(v: Any) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):,.2f}"


def _money_table(frame: pd.DataFrame, columns: Sequence[str], label: str) -> str:
    rows = [[str(k), *(_money(frame.loc[k, c]) for c in columns)] for k in frame.index]
    return html_table([label, *columns], rows, "metrics")


def _by_asset_table(by_asset: pd.DataFrame, lines: Sequence[str], top: int = 20) -> str:
    frame = by_asset.reset_index()
    frame = frame.reindex(frame["total"].abs().sort_values(ascending=False).index)
    shown, rest = frame.iloc[:top], frame.iloc[top:]
    rows = [
        [str(r["subaccount"]), str(r["symbol"]), *(_money(r[c]) for c in [*lines, "total"])]
        for r in shown.to_dict("records")
    ]
    if len(rest):
        rows.append(
            ["", f"other ({len(rest)})", *(_money(rest[c].sum()) for c in [*lines, "total"])]
        )
    rows.append(["", "all", *(_money(frame[c].sum()) for c in [*lines, "total"])])
    return html_table(["subaccount", "asset", *lines, "total"], rows, "metrics")


def _pct(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.{digits}%}"


def _brinson_html(at: Any, ledger: Any) -> str:
    rows, notes, monthly, effects = [], [], None, None
    for bench, label in (("btc", "BTC"), ("equal", "equal weight of the universe")):
        try:
            bf = at.brinson_fachler(ledger, bench, freq="M")
        except at.AttributionError as exc:
            notes.append(f"{label}: {exc}")
            continue
        # The effects are the module's (allocation, selection, interaction, trading).
        effects = effects or list(bf.periods.columns)
        rows.append([label, *(_pct(bf.total[c]) for c in effects)])
        if monthly is None:
            monthly = (label, bf.periods)
    notes.append(
        "capitalisation weight: needs market caps, which a run folder does not hold "
        "(trimtab attribution takes them)"
    )
    parts = [c for c in effects or () if c not in ("portfolio", "benchmark", "active")]
    out = (
        "<p>Returns and effects as fractions of start equity, months linked by Carino's "
        f"method: {' + '.join(parts) or 'the effects'} = active.</p>"
    )
    if rows and effects:
        out += html_table(["benchmark", *effects], rows, "metrics")
    if monthly is not None and effects:
        label, periods = monthly
        out += f"<p>By month against {html.escape(label)}:</p>" + html_table(
            ["month", *effects],
            [[f"{t:%Y-%m}", *(_pct(periods.loc[t, c]) for c in effects)] for t in periods.index],
            "metrics",
        )
        try:
            seg = at.brinson_fachler(ledger, "btc", freq="M", segments="group").segments
        except (at.AttributionError, TypeError):  # TypeError: a module without segments=
            seg = None
        if seg is not None and not seg.empty:
            out += "<p>By segment against BTC, over the whole run:</p>" + html_table(
                ["segment", *seg.columns],
                [[str(k), *(_pct(seg.loc[k, c]) for c in seg.columns)] for k in seg.index],
                "metrics",
            )
    out += "".join(f"<p><i>{html.escape(n)}</i></p>" for n in notes)
    return out


def _timing_html(at: Any, ledger: Any) -> str:
    try:
        t = at.timing(ledger, freq="M")
    except at.AttributionError as exc:
        return f"<p><i>timing not available: {html.escape(str(exc))}</i></p>"
    cols = ["start_equity", "pnl", "hold", "trades", "costs", "funding", "timing"]
    rows = [
        [f"{k:%Y-%m}", *(_money(t.loc[k, c]) for c in cols), _pct(t.loc[k, "timing_return"])]
        for k in t.index
    ]
    rows.append(["all", "", *(_money(t[c].sum()) for c in cols[1:]), ""])
    out = (
        "<p>hold: the month's start quantities held unchanged (no trades, no costs); "
        "timing = pnl - hold (USDT).</p>"
        + html_table(["month", *cols, "timing / start equity"], rows, "metrics")
    )
    fits = []
    for name, fn in (
        ("Treynor-Mazuy", at.treynor_mazuy),
        ("Henriksson-Merton", at.henriksson_merton),
    ):
        try:
            fit = fn(ledger, "btc")
        except at.AttributionError as exc:
            out += f"<p><i>{name}: {html.escape(str(exc))}</i></p>"
            continue
        table = fit.table()
        g = table.loc["gamma"]
        fits.append(
            [
                name,
                f"{g['coef']:.4g}",
                f"{g['se']:.3g}",
                f"{g['t']:.2f}",
                f"{g['p']:.3f}",
                f"{table.loc['beta', 'coef']:.3f}",
                str(fit.nobs),
            ]
        )
    if fits:
        out += "<p>Timing coefficients against BTC (per bar, OLS):</p>" + html_table(
            ["model", "gamma", "std error", "t", "p", "beta", "bars"], fits, "metrics"
        )
    return out


def _beta_html(at: Any, ledger: Any) -> str:
    rows, notes = [], []
    for bench, label in (("btc", "BTC"), ("equal", "equal-weight market")):
        try:
            b = at.beta_alpha(ledger, bench)
        except at.AttributionError as exc:
            notes.append(f"{label}: {exc}")
            continue
        lo, hi = b["beta_ci"]
        alo, ahi = b["alpha_annual_ci"]
        rows.append(
            [
                label,
                f"{b['beta']:.3f} [{lo:.3f}, {hi:.3f}]",
                f"{_pct(b['alpha_annual'], 1)} [{_pct(alo, 1)}, {_pct(ahi, 1)}]",
                f"{b['alpha_t']:.2f}",
                f"{b['alpha_p']:.3f}",
                f"{b['r2']:.3f}",
                f"{b['appraisal_ratio']:.2f}",
                f"{b['information_ratio']:.2f}",
                f"{b['sharpe']:.2f}",
                f"{b['benchmark_sharpe']:.2f}",
            ]
        )
    level = "95%"
    out = (
        f"<p>OLS of the per-bar returns on the benchmark's, Newey-West errors, {level} "
        "intervals; alpha annualised (x bars per year). Beside each raw figure its "
        "risk-adjusted one: the appraisal ratio (alpha over residual volatility), the "
        "information ratio, both Sharpe ratios.</p>"
    )
    if rows:
        out += html_table(
            [
                "against",
                "beta [CI]",
                "alpha / yr [CI]",
                "alpha t",
                "alpha p",
                "R²",
                "appraisal",
                "information",
                "Sharpe",
                "benchmark Sharpe",
            ],
            rows,
            "metrics",
        )
    out += "".join(f"<p><i>{html.escape(n)}</i></p>" for n in notes)
    return out


# --------------------------------------------------------------------------- page

_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; max-width: 1500px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; font-size: 1.25em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; } th { background: #f3f5f8; }
table.metrics td:not(:first-child), table.transfers td:nth-child(4),
table.transfers td:nth-child(5) { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #555; } .missing { background: #fff6e0; border: 1px solid #f0c36d;
       padding: 8px 12px; } .notes li { color: #8a5a00; }
"""


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_div(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    return pio.to_html(
        fig,
        include_plotlyjs=False,  # inlined once in the page's head
        include_mathjax=False,
        full_html=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def page(title: str, meta: Sequence[str], sections: Sequence[tuple[str, str]]) -> str:
    """A whole HTML page: plotly.js inlined in the head, then each (heading, body)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{_plotly_js()}</script>',
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<p class="meta">{html.escape(m)}</p>' for m in meta),
    ]
    for heading, body in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(
    folder: str | Path,
    *,
    data: str | Path | None = None,
    now: Callable[[], datetime] | None = None,
    source: str | None = None,
) -> str:
    """The HTML report of the run folder ``folder`` (see the module doc); ``data`` a data
    file or folder for the prices when the run's own data file is not at hand; ``source``
    names where the run came from (default: ``run folder FOLDER``), e.g. a run read back
    from a store into a temporary folder."""
    run = load_run(folder)
    close, notes = _closes(run, data)
    notes = [*run.notes, *notes]
    held = None
    if close is not None:
        btc = _btc_symbol(list(close.columns))
        if btc is None:
            notes.append("the data has no BTC pair against a stablecoin: BTC held not drawn")
        else:
            try:
                held = btc_held(run.total, close[btc], _taker_fee_bps(run))
            except ReportError as exc:
                notes.append(f"BTC held not drawn: {exc}")
    else:
        notes.append("no prices: BTC held and the price lines are not drawn")
    r = run.result
    start, end = str(r.get("start", run.equity.index[0]))[:10], str(r.get("end", ""))[:10]
    if run.kind == "portfolio":
        title = f"trimtab report: portfolio {r.get('portfolio', '')}, {start} to {end}"
        what = f"{len(run.accounts)} subaccounts: " + ", ".join(
            f"{n} ({s.get('strategy', '?')})" for n, s in (r.get("subaccounts") or {}).items()
        )
    else:
        title = f"trimtab report: {r.get('policy', 'run')} vs baselines, {start} to {end}"
        what = f"universe {r.get('universe') or ', '.join(r.get('symbols') or [])}"
    stamp = (now or (lambda: datetime.now(UTC)))().strftime("%Y-%m-%d %H:%M UTC")
    meta = [
        what,
        f"timeframe {r.get('timeframe')}, taker fee {_taker_fee_bps(run):g} bps, start "
        f"equity {_fmt(float(run.total.iloc[0]), 'money')} USDT; "
        f"{source or f'run folder {run.folder}'}; "
        f"report written {stamp} by trimtab {r.get('trimtab_version', '')}",
    ]
    if (r.get("data") or {}).get("synthetic"):
        meta.append("DATA: a synthetic sample market generated by trimtab, not real prices")
    cols = metrics_columns(run, held)
    exposure_fig, _ = exposure_figure(run)
    sections: list[tuple[str, str]] = [
        ("Metrics", metrics_table(cols)),
        ("Equity and drawdown", figure_div(equity_figure(run, held), "equity")),
        (
            "Exposure, risk and breakers",
            figure_div(exposure_fig, "exposure") + _state_changes_table(run),
        ),
        ("Weights by asset", figure_div(weights_figure(run), "weights")),
    ]
    if run.kind == "portfolio":
        sections.append(
            (
                "Allocation by strategy",
                figure_div(allocation_figure(run), "allocation") + _transfers_table(run),
            )
        )
    else:
        sections.append(
            ("Allocation by strategy", "<p>A single policy: one strategy holds all equity.</p>")
        )
    sections.append(("Trades", figure_div(trades_figure(run, close), "trades")))
    sections.append(("Attribution", attribution_section(run, close)))
    if notes:
        sections.append(
            (
                "Notes",
                '<ul class="notes">'
                + "".join(f"<li>{html.escape(n)}</li>" for n in dict.fromkeys(notes))
                + "</ul>",
            )
        )
    return page(title, meta, sections)


def write_report(
    folder: str | Path,
    out: str | Path | None = None,
    *,
    data: str | Path | None = None,
    source: str | None = None,
) -> Path:
    """Write the report of ``folder`` to ``out`` (default ``folder/report.html``)
    atomically and return its path; ``source`` as in ``build_report``."""
    from trimtab.journal.files import write_text_atomic

    target = Path(out) if out is not None else Path(folder).expanduser() / "report.html"
    return write_text_atomic(target, build_report(folder, data=data, source=source))
