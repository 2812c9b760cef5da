"""The market-making report (``trimtab mm``): JSON document, terminal rows and an offline
HTML chart of a ``MarketMakingResult``.

PnL parts over time (quote currency): spread capture and fees accumulate at each fill;
the inventory part is the marked-to-market PnL minus the two, so the three add to the
PnL at every event (``book_sim.pnl_parts`` at the end).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trimtab.strategies.market_making import MarketMakingResult

#: Path points kept in the JSON and the chart (every event of a long dump would be MBs).
MAX_POINTS = 5000


def _thin(n: int) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_POINTS).round().astype(int))


def pnl_paths(result: MarketMakingResult) -> pd.DataFrame:
    """At every event: ``pnl`` (marked to the mid), ``spread_capture`` and ``fees`` so
    far, ``inventory_pnl`` (the rest), ``inventory`` (base) and ``mid``."""
    sim = result.sim
    ok = np.isfinite(sim.mid)
    ts = sim.ts[ok]
    fill_ts = np.array([f.ts for f in sim.fills], dtype="int64")
    spread = np.cumsum([f.side * (f.mid - f.price) * f.quantity for f in sim.fills])
    fees = np.cumsum([-f.fee for f in sim.fills])
    k = np.searchsorted(fill_ts, ts, side="right")  # fills at or before each event
    spread_now = np.where(k > 0, np.concatenate([[0.0], spread])[k], 0.0)
    fees_now = np.where(k > 0, np.concatenate([[0.0], fees])[k], 0.0)
    pnl = sim.pnl[ok]
    return pd.DataFrame(
        {
            "pnl": pnl,
            "spread_capture": spread_now,
            "fees": fees_now,
            "inventory_pnl": pnl - spread_now - fees_now,
            "inventory": sim.inventory[ok],
            "mid": sim.mid[ok],
        },
        index=pd.DatetimeIndex(pd.to_datetime(ts, utc=True), name="timestamp"),
    )


def report_doc(result: MarketMakingResult) -> dict[str, Any]:
    """Everything the run measured, JSON-ready (timestamps as ISO strings)."""
    paths = pnl_paths(result)
    keep = _thin(len(paths))
    thinned = paths.iloc[keep]
    fills = result.fills_frame()
    return {
        "book": result.book_source,
        "trades": result.trades_source,
        "tick": result.tick,
        "capital": result.capital,
        "params": result.params.model_dump(),
        "summary": result.summary,
        "pnl_parts": result.parts,
        "markout_convention": (
            "side x (mid at fill + h - mid at fill) / mid at fill, bps; negative: adverse"
        ),
        "fills": [
            {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in row.items()}
            for row in fills.to_dict(orient="records")
        ],
        "stops": [
            {
                "ts": pd.Timestamp(s["ts"], tz="UTC").isoformat(),
                "until": pd.Timestamp(s["until"], tz="UTC").isoformat(),
                "markout_bps": s["markout_bps"],
                "reason": s["reason"],
            }
            for s in result.stops
        ],
        "rejected": [
            {"quote_id": q["quote_id"], "reason": q["note"]}
            for q in result.sim.quotes
            if q["status"] == "rejected"
        ],
        "path": {
            "timestamp": [t.isoformat() for t in thinned.index],
            **{c: thinned[c].tolist() for c in thinned.columns},
        },
        "notes": result.notes,
    }


def summary_rows(result: MarketMakingResult) -> list[tuple[str, str]]:
    """(label, value) rows for the terminal table."""
    s = result.summary
    start, end = result.equity.index[0], result.equity.index[-1]
    rows = [
        ("book", Path(result.book_source).name),
        ("trades", Path(result.trades_source).name),
        (
            "span (UTC)",
            f"{start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} ({(end - start).total_seconds():,.1f} s)",
        ),
        ("tick", f"{result.tick:g}"),
        ("capital (USDT)", f"{s['capital']:,.0f}"),
        (
            "quotes sent / live / post-only rejected",
            f"{s['quotes_sent']:.0f} / {s['quotes_live']:.0f} / {s['quotes_rejected_post_only']:.0f}",
        ),
        ("fills (buys / sells)", f"{s['fills']:.0f} ({s['buys']:.0f} / {s['sells']:.0f})"),
        ("fill rate (live quotes filled)", f"{s['fill_rate']:.1%}"),
        ("filled share of quoted size", f"{s['filled_share_of_quoted']:.1%}"),
        ("volume (USDT)", f"{s['volume_usdt']:,.2f}"),
        ("spread capture (USDT)", f"{s['spread_capture']:+,.4f}"),
        ("inventory PnL (USDT)", f"{s['inventory_pnl']:+,.4f}"),
        ("fees (USDT, + rebate)", f"{s['fees']:+,.4f}"),
        ("total PnL (USDT)", f"{s['total_pnl']:+,.4f}"),
        ("return on capital", f"{s['return']:+.4%}"),
        ("max |inventory| (USDT)", f"{s['max_abs_inventory_usdt']:,.2f}"),
        ("final inventory (base)", f"{s['final_inventory']:+.6g}"),
    ]
    for h in result.markouts:
        rows.append(
            (
                f"markout {h:g} ms (bps, adverse share)",
                f"{s[f'markout_{h:g}ms_bps']:+.3f} ({s[f'adverse_share_{h:g}ms']:.0%})",
            )
        )
    rows += [
        ("adverse-selection stops", f"{s['kill_switch_stops']:.0f}"),
        ("capacity (USDT)", f"{s['capacity_usdt']:,.0f}"),
    ]
    return rows


def write_html(result: MarketMakingResult, path: Path) -> None:
    """One self-contained page (plotly.js inlined, opens offline): mid with our fills,
    inventory, and the PnL parts over time."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from trimtab.analytics.report import figure_div, page

    paths = pnl_paths(result)
    thin = paths.iloc[_thin(len(paths))]
    fills = result.fills_frame()
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.45, 0.25, 0.30],
        vertical_spacing=0.05,
        subplot_titles=("Mid and our fills", "Inventory (base)", "PnL parts (USDT)"),
    )
    fig.add_trace(go.Scatter(x=thin.index, y=thin["mid"], name="mid", line={"width": 1}), 1, 1)
    for side, color in (("buy", "#1a9850"), ("sell", "#d73027")):
        part = fills[fills["side"] == side] if len(fills) else fills
        if len(part):
            fig.add_trace(
                go.Scatter(
                    x=part["timestamp"],
                    y=part["price"],
                    mode="markers",
                    name=f"{side} fills",
                    marker={
                        "color": color,
                        "size": 7,
                        "symbol": "triangle-up" if side == "buy" else "triangle-down",
                    },
                    text=[f"trade {t}" for t in part["trade_id"]],
                ),
                1,
                1,
            )
    fig.add_trace(
        go.Scatter(x=thin.index, y=thin["inventory"], name="inventory", line={"shape": "hv"}), 2, 1
    )
    for col in ("pnl", "spread_capture", "inventory_pnl", "fees"):
        fig.add_trace(go.Scatter(x=thin.index, y=thin[col], name=col.replace("_", " ")), 3, 1)
    for s in result.stops:
        fig.add_vrect(
            x0=pd.Timestamp(s["ts"], tz="UTC"),
            x1=pd.Timestamp(s["until"], tz="UTC"),
            fillcolor="#f0c36d",
            opacity=0.25,
            line_width=0,
        )
    fig.update_layout(
        height=820,
        template="plotly_white",
        hovermode="x unified",
        legend={"orientation": "h", "y": -0.08},
    )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in summary_rows(result)
    )
    stops = "".join(f"<li>{html.escape(s['reason'])}</li>" for s in result.stops)
    sections = [
        ("Market making", figure_div(fig, "mm")),
        ("Figures", f"<table class='metrics'>{rows}</table>"),
    ]
    if stops:
        sections.append(("Adverse-selection stops (shaded)", f"<ul>{stops}</ul>"))
    meta = [
        f"book {html.escape(result.book_source)}",
        f"trades {html.escape(result.trades_source)}",
        "PnL marked to the mid; spread capture against the mid at each fill",
    ]
    path.write_text(page("trimtab mm", meta, sections), encoding="utf-8")
