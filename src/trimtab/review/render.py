"""Render a review (the dict of ``review_portfolio``) for a person: plain text, markdown
or a web page with charts.

Plain text has no markup, so it prints the same in a terminal, a log or through rich
(``Console.print(text, markup=False, highlight=False)``). ``render(review, "json")`` is the
dict as indented JSON. ``render(review, "html")`` is one self-contained HTML page (plotly.js
inlined, no CDN: it opens offline) with the factor breakdown, the liquidation distances and
the positions as charts; ``review_html`` adds the correlation heat map of the holdings,
which needs the market data (the review's dict keeps only the average and the top pairs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = [
    "FORMATS",
    "held_correlation",
    "render",
    "render_html",
    "render_json",
    "render_markdown",
    "render_text",
    "review_html",
]

#: The formats ``run_review`` renders. ``html`` is ``render``'s too, but a whole page with
#: the correlation heat map comes from ``review_html``, which also reads the market data.
FORMATS = ("text", "markdown", "json")


def format_price(price: float | None) -> str:
    """``trimtab.domain.quotes.format_price`` (its one home), imported on first use: the
    domain package pulls in pandas, which a review read from its report cache skips."""
    from trimtab.domain.quotes import format_price as home

    return home(price)


_SEVERITY_TAG = {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW"}


def render(review: dict[str, Any], fmt: str = "text") -> str:
    """The review as ``text``, ``markdown`` (or ``md``), ``json`` or ``html``."""
    f = fmt.lower()
    if f == "text":
        return render_text(review)
    if f in ("markdown", "md"):
        return render_markdown(review)
    if f == "json":
        return render_json(review)
    if f == "html":
        return render_html(review)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} or html")


def render_json(review: dict[str, Any]) -> str:
    return json.dumps(review, indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- numbers


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def _usd(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _qty(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.4f}".rstrip("0").rstrip(".") if abs(x) < 1000 else f"{x:,.0f}"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _factor_value(f: dict[str, Any]) -> str:
    v = f.get("value")
    if v is None:
        return "-"
    name = f["name"]
    if name in ("volatility", "drawdown", "trend", "funding", "drawdown_probability"):
        return f"{v:.0%}"
    if name == "liquidity":
        return f"${10**v / 1e6:,.0f}M/day"
    if name in ("leverage", "vol_regime"):
        return f"{v:.1f}x"
    if name == "liquidation":
        return f"{v:.1f} d-vol"
    if name == "concentration":
        return f"{v:.1f} bets"
    return f"{v:.2f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _trades(rec: dict[str, Any], limit: int = 8) -> str:
    """``sell 0.2 BTCUSDT (0.5 -> 0.3), buy ...`` for the legs of a recommendation."""
    parts = []
    for leg in rec["legs"][:limit]:
        if leg["op"] == "add_margin":
            parts.append(f"add {_usd(leg['amount'])} USDT margin to {leg['symbol']}")
            continue
        new = leg["size"] if leg["op"] == "set_perp" else leg["quantity"]
        old = leg.get("from")
        if old is None:
            parts.append(f"{leg['symbol']} -> {_qty(new)}")
            continue
        verb = "sell" if new < old else "buy"
        if leg["op"] == "set_perp":
            verb = "close" if new < old else "add"
        parts.append(f"{verb} {_qty(abs(old - new))} {leg['symbol']} ({_qty(old)} -> {_qty(new)})")
    more = len(rec["legs"]) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _headline(r: dict[str, Any]) -> list[str]:
    p = r.get("probability_of_drawdown")
    ev = r.get("drawdown_event") or {}
    prob = (
        f"{p:.0%} chance of losing more than {ev.get('threshold', 0):.0%} within "
        f"{ev.get('horizon_days')} days"
        if p is not None
        else "drawdown probability: n/a (no model given)"
    )
    regime = r.get("regime") or {}
    lev = r.get("leverage")
    return [
        f"Risk score {r['risk_score']:.0f}/100 ({r['risk_level']}) | {prob}",
        f"Equity {_usd(r['equity'])} USDT | cash {_usd(r['cash'])} | gross {_usd(r['gross_exposure'])}"
        f" | net {_usd(r['net_exposure'])} | leverage {_num(lev, '.2f')}x"
        f" | regime {regime.get('label') or 'n/a'}",
    ]


def _factor_rows(r: dict[str, Any]) -> list[list[str]]:
    return [
        [
            f["name"],
            _factor_value(f),
            _num(f.get("score"), ".0f"),
            _num(f.get("weight"), ".2f"),
            _num(f.get("contribution"), ".1f"),
            f.get("explanation", ""),
        ]
        for f in sorted(r["factors"], key=lambda f: -(f.get("contribution") or 0))
    ]


def _position_rows(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for p in r["positions"]:
        kind = p["kind"] if p["kind"] == "spot" else f"perp {p['leverage']:g}x {p['margin_mode']}"
        liq = (
            f"{format_price(p['liquidation_price'])} ({_pct(p['liquidation_distance_pct'])}, "
            f"{_num(p['liquidation_distance_vols'])} d-vol)"
            if p["liquidation_price"] is not None
            else "-"
        )
        rows.append(
            [
                p["subaccount"],
                p["symbol"],
                f"{kind} {p['side']}",
                _qty(p["quantity"]),
                format_price(p["price"]),
                _usd(p["notional"]),
                _pct(p["weight"]),
                liq,
                _num(p["risk_score"], ".0f"),
            ]
        )
    return rows


_POS_HEADERS = [
    "subaccount",
    "symbol",
    "kind",
    "quantity",
    "price",
    "notional",
    "weight",
    "liquidation",
    "risk",
]
_FACTOR_HEADERS = ["factor", "value", "score", "weight", "contrib", "why"]


# --------------------------------------------------------------------------- text


def render_text(r: dict[str, Any]) -> str:
    """Plain text for a terminal: headline, flags, recommendations, factors, positions."""
    out = [f"trimtab portfolio review - as of {r['as_of']} (close {r['valued_at']})", ""]
    out += _headline(r)
    out += ["", "FLAGS"]
    if not r["flags"]:
        out.append("  none")
    for f in r["flags"]:
        out.append(f"  {_SEVERITY_TAG[f['severity']]:<8}  {f['message']}")
    out += ["", "RECOMMENDATIONS"]
    if not r["recommendations"]:
        out.append("  nothing to change: no action lowers the score meaningfully")
    for i, rec in enumerate(r["recommendations"], 1):
        where = f" ({rec['subaccount']})" if rec.get("subaccount") else ""
        target = rec.get("symbol") or ", ".join(rec.get("symbols") or [])
        out.append(
            f"  {i}. {rec['action']} {target}{where}: score {r['risk_score']:.1f} -> "
            f"{rec['expected_score_after']:.1f} ({rec['score_change']:+.1f})"
        )
        out.append(f"     why:    {rec['reason']}")
        out.append(f"     effect: {rec['expected_effect']}")
        if len(rec.get("legs") or []) > 1:
            out.append(f"     trades: {_trades(rec)}")
    out += ["", "FACTORS"]
    out += ["  " + line for line in _table(_FACTOR_HEADERS, _factor_rows(r), {1, 2, 3, 4})]
    for o in r.get("omitted_factors", []):
        out.append(f"  ({o['name']} not scored: {o['reason']})")
    out += ["", "POSITIONS"]
    if r["positions"]:
        out += ["  " + line for line in _table(_POS_HEADERS, _position_rows(r), {3, 4, 5, 6, 8})]
    else:
        out.append("  none (cash only)")
    out += ["", "SUBACCOUNTS"]
    sub_rows = [
        [
            name,
            _usd(s["equity"]),
            _usd(s["cash"]),
            _usd(s["gross_exposure"]),
            _usd(s["net_exposure"]),
            _num(s["leverage"], ".2f") + "x" if s["leverage"] is not None else "n/a",
        ]
        for name, s in r["subaccounts"].items()
    ]
    out += [
        "  " + line
        for line in _table(
            ["subaccount", "equity", "cash", "gross", "net", "leverage"], sub_rows, {1, 2, 3, 4, 5}
        )
    ]
    out += ["", "MARKET"]
    out.append(f"  regime: {(r.get('regime') or {}).get('explanation', 'n/a')}")
    c = r.get("concentration") or {}
    if c.get("effective_bets") is not None:
        cl = c.get("largest_cluster") or {}
        out.append(
            f"  concentration: {c['effective_bets']:.1f} effective bets, "
            f"{_num(c.get('independent_bets'))} independent once correlation is counted, "
            f"HHI {c['hhi']:.2f}, largest cluster {_pct(cl.get('exposure'), 0)} of equity"
        )
    corr = r.get("correlation") or {}
    if corr.get("average_30d") is not None:
        out.append(
            f"  correlation: {corr['average_30d']:.2f} over 30 days, {corr['average_180d']:.2f} over 180"
        )
    out += ["", "NOTES"] + [f"  - {n}" for n in r.get("notes", [])]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- markdown


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    align = ["---:" if i in right else "---" for i in range(len(headers))]
    return [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(esc(c) for c in row) + " |" for row in rows),
    ]


def render_markdown(r: dict[str, Any]) -> str:
    """Markdown: the same sections as the text, with tables."""
    out = [f"# Portfolio review, {r['as_of']}", ""]
    head = _headline(r)
    out += [f"**{head[0]}**", "", head[1], ""]
    out += ["## Flags", ""]
    if not r["flags"]:
        out.append("None.")
    for f in r["flags"]:
        out.append(f"- **{_SEVERITY_TAG[f['severity']]}** {f['message']}")
    out += ["", "## Recommendations", ""]
    if not r["recommendations"]:
        out.append("Nothing to change: no action lowers the score meaningfully.")
    for i, rec in enumerate(r["recommendations"], 1):
        where = f" ({rec['subaccount']})" if rec.get("subaccount") else ""
        target = rec.get("symbol") or ", ".join(rec.get("symbols") or [])
        out.append(
            f"{i}. **{rec['action']} {target}{where}**: score {r['risk_score']:.1f} -> "
            f"{rec['expected_score_after']:.1f} ({rec['score_change']:+.1f})  "
        )
        out.append(f"   {rec['reason']}.  ")
        out.append(f"   Effect: {rec['expected_effect']}.")
        if len(rec.get("legs") or []) > 1:
            out.append(f"   Trades: {_trades(rec)}.")
    out += ["", "## Factors", ""]
    out += _md_table(_FACTOR_HEADERS, _factor_rows(r), {1, 2, 3, 4})
    for o in r.get("omitted_factors", []):
        out.append(f"\n_{o['name']} not scored: {o['reason']}._")
    out += ["", "## Positions", ""]
    if r["positions"]:
        out += _md_table(_POS_HEADERS, _position_rows(r), {3, 4, 5, 6, 8})
    else:
        out.append("None (cash only).")
    out += ["", "## Subaccounts", ""]
    out += _md_table(
        ["subaccount", "equity", "cash", "gross", "net", "leverage"],
        [
            [
                name,
                _usd(s["equity"]),
                _usd(s["cash"]),
                _usd(s["gross_exposure"]),
                _usd(s["net_exposure"]),
                (_num(s["leverage"], ".2f") + "x") if s["leverage"] is not None else "n/a",
            ]
            for name, s in r["subaccounts"].items()
        ],
        {1, 2, 3, 4, 5},
    )
    out += ["", "## Market", "", f"- Regime: {(r.get('regime') or {}).get('explanation', 'n/a')}"]
    c = r.get("concentration") or {}
    if c.get("effective_bets") is not None:
        out.append(
            f"- Concentration: {c['effective_bets']:.1f} effective bets, "
            f"{_num(c.get('independent_bets'))} independent once correlation is counted, "
            f"HHI {c['hhi']:.2f}"
        )
    out += ["", "## Notes", ""] + [f"- {n}" for n in r.get("notes", [])]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- html


def held_correlation(review: dict[str, Any], panel: Any) -> Any:
    """The 30-day correlation matrix (a DataFrame) of the symbols the review holds, at its
    bar, computed as the review computed it (``trimtab.risk.portfolio``'s matrices of the
    daily returns up to that bar: nothing later is read). None with fewer than two."""
    import pandas as pd

    from trimtab.risk.portfolio import portfolio_market

    net: dict[str, float] = {}
    for p in review.get("positions") or []:
        net[p["symbol"]] = net.get(p["symbol"], 0.0) + float(p.get("weight") or 0.0)
    held = [
        s for s in (review.get("data") or {}).get("symbols") or net if abs(net.get(s, 0)) > 1e-12
    ]
    if len(held) < 2:
        return None
    bar = pd.Timestamp(review["bar"])
    market = portfolio_market(panel, held, bar)
    matrix = market.matrices(held)["corr_short"]
    return pd.DataFrame(matrix, index=held, columns=held)


def review_html(
    portfolio: Any, data: str | None = None, *, timeframe: str | None = None, as_of: Any = None
) -> str:
    """``trimtab review --format html``: the review of ``run_review`` (its report cache
    included) as a page, with the holdings' correlation heat map from the same data."""
    from trimtab.data import load_panel
    from trimtab.data.discovery import find_data_dir
    from trimtab.review.run import run_review

    review = json.loads(run_review(portfolio, data, fmt="json", timeframe=timeframe, as_of=as_of))
    panel = load_panel(find_data_dir(data).path, timeframe=timeframe, cache=True)
    return render_html(review, held_correlation(review, panel))


def _factor_figure(r: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    factors = sorted(r["factors"], key=lambda f: f.get("contribution") or 0)
    fig = go.Figure(
        go.Bar(
            x=[round(f.get("contribution") or 0.0, 2) for f in factors],
            y=[f["name"] for f in factors],
            orientation="h",
            text=[f"{_factor_value(f)} (score {_num(f.get('score'), '.0f')})" for f in factors],
            textposition="auto",
            customdata=[
                [
                    _num(f.get("score"), ".0f"),
                    _num(f.get("weight"), ".2f"),
                    f.get("explanation", ""),
                ]
                for f in factors
            ],
            hovertemplate="<b>%{y}</b>: %{x:.1f} points<br>score %{customdata[0]} x weight "
            "%{customdata[1]}<br>%{customdata[2]}<extra></extra>",
            marker={"color": "#d95f02"},
        )
    )
    fig.update_xaxes(title_text="points of the risk score (score x weight)")
    fig.update_yaxes(title_text="factor")
    _html_layout(
        fig,
        f"Risk score {r['risk_score']:.0f}/100 ({r['risk_level']}): what each factor adds",
        max(320, 60 + 34 * len(factors)),
    )
    return fig


def _liquidation_figure(r: dict[str, Any]) -> Any | None:
    import plotly.graph_objects as go

    perps = [p for p in r["positions"] if p.get("liquidation_distance_pct") is not None]
    if not perps:
        return None
    labels = [f"{p['subaccount']} {p['symbol']} {p['side']} {p['leverage']:g}x" for p in perps]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[round(p["liquidation_distance_pct"], 5) for p in perps],
            text=[f"{_num(p.get('liquidation_distance_vols'))} daily moves" for p in perps],
            textposition="outside",
            customdata=[
                [format_price(p["price"]), format_price(p["liquidation_price"])] for p in perps
            ],
            hovertemplate="<b>%{x}</b><br>%{y:.1%} from liquidation (%{text})<br>price "
            "%{customdata[0]}, liquidation at %{customdata[1]}<extra></extra>",
            marker={"color": "#c0392b"},
        )
    )
    fig.update_yaxes(title_text="distance to liquidation (fraction of price)", tickformat=".0%")
    fig.update_xaxes(title_text="perpetual position")
    _html_layout(fig, "Distance to liquidation of each perpetual position", 420)
    return fig


def _positions_figure(r: dict[str, Any]) -> Any | None:
    import plotly.graph_objects as go

    if not r["positions"]:
        return None
    fig = go.Figure()
    for name in dict.fromkeys(p["subaccount"] for p in r["positions"]):
        ps = [p for p in r["positions"] if p["subaccount"] == name]
        fig.add_trace(
            go.Bar(
                x=[f"{p['symbol']} ({p['kind']})" for p in ps],
                y=[round(p["weight"], 5) for p in ps],
                name=name,
                customdata=[[_usd(p["notional"]), _num(p["risk_score"], ".0f")] for p in ps],
                hovertemplate="%{x}: %{y:.1%} of equity, %{customdata[0]} USDT, risk "
                "%{customdata[1]}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="weight (fraction of equity)", tickformat=".0%")
    fig.update_xaxes(title_text="position")
    _html_layout(fig, "Positions by weight and subaccount", 420)
    return fig


def _correlation_figure(matrix: Any) -> Any:
    import plotly.graph_objects as go

    names = [str(c) for c in matrix.columns]
    values = [[round(float(v), 3) for v in row] for row in matrix.to_numpy()]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=[[f"{v:.2f}" for v in row] for row in values],
            texttemplate="%{text}",
            colorbar={"title": {"text": "correlation"}},
            hovertemplate="%{y} / %{x}: %{z:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="asset")
    fig.update_yaxes(title_text="asset", autorange="reversed")
    side = 120 + 48 * len(names)
    _html_layout(fig, "Correlation of the holdings' daily returns, last 30 days", max(420, side))
    return fig


def _html_layout(fig: Any, title: str, height: int) -> None:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        height=height,
        template="plotly_white",
        margin={"l": 120, "r": 30, "t": 70, "b": 60},
    )


def render_html(review: dict[str, Any], correlation: Any = None) -> str:
    """The review as one HTML page with its charts; ``correlation`` a correlation matrix
    (DataFrame, symbols x symbols) of the holdings for the heat map (``held_correlation``),
    else the section lists the most correlated pairs the review recorded."""
    import html

    from trimtab.analytics.report import figure_div, html_table, page

    r = review
    esc = html.escape
    head = _headline(r)
    sections: list[tuple[str, str]] = []
    flags = "".join(
        f"<li><b>{_SEVERITY_TAG[f['severity']]}</b> {esc(f['message'])}</li>" for f in r["flags"]
    )
    sections.append(("Flags", f"<ul>{flags}</ul>" if flags else "<p>None.</p>"))
    recs = []
    for rec in r["recommendations"]:
        where = f" ({rec['subaccount']})" if rec.get("subaccount") else ""
        target = rec.get("symbol") or ", ".join(rec.get("symbols") or [])
        item = (
            f"<li><b>{esc(rec['action'])} {esc(target)}{esc(where)}</b>: score "
            f"{r['risk_score']:.1f} &rarr; {rec['expected_score_after']:.1f} "
            f"({rec['score_change']:+.1f})<br>{esc(rec['reason'])}.<br>Effect: "
            f"{esc(rec['expected_effect'])}."
        )
        if len(rec.get("legs") or []) > 1:
            item += f"<br>Trades: {esc(_trades(rec))}."
        recs.append(item + "</li>")
    sections.append(
        (
            "Recommendations",
            f"<ol>{''.join(recs)}</ol>"
            if recs
            else "<p>Nothing to change: no action lowers the score meaningfully.</p>",
        )
    )
    omitted = "".join(
        f"<p><i>{esc(o['name'])} not scored: {esc(o['reason'])}.</i></p>"
        for o in r.get("omitted_factors", [])
    )
    sections.append(
        (
            "Factors",
            figure_div(_factor_figure(r), "factors")
            + html_table(_FACTOR_HEADERS, _factor_rows(r), "plain")
            + omitted,
        )
    )
    liq = _liquidation_figure(r)
    sections.append(
        (
            "Liquidation distances",
            figure_div(liq, "liquidation")
            if liq is not None
            else "<p>No leveraged perpetual positions: nothing can be liquidated.</p>",
        )
    )
    pos = _positions_figure(r)
    body = figure_div(pos, "positions") if pos is not None else ""
    body += (
        html_table(_POS_HEADERS, _position_rows(r), "plain")
        if r["positions"]
        else "<p>None (cash only).</p>"
    )
    sections.append(("Positions", body))
    corr = r.get("correlation") or {}
    pairs = "".join(
        f"<li>{esc(' / '.join(c['pair']))}: {c['correlation']:.2f}</li>"
        for c in corr.get("most_correlated") or []
    )
    text = ""
    if corr.get("average_30d") is not None:
        text = (
            f"<p>Exposure-weighted average correlation {corr['average_30d']:.2f} over 30 days, "
            f"{corr['average_180d']:.2f} over 180.</p>"
        )
    if correlation is not None and len(correlation) >= 2:
        body = figure_div(_correlation_figure(correlation), "correlation") + text
    else:
        body = (
            '<p class="missing">No correlation heat map: it needs the market data '
            "(<code>trimtab review --format html</code> draws it).</p>" + text
        )
        if pairs:
            body += f"<p>Most correlated pairs:</p><ul>{pairs}</ul>"
    sections.append(("Correlation", body))
    sub_rows = [
        [
            name,
            _usd(s["equity"]),
            _usd(s["cash"]),
            _usd(s["gross_exposure"]),
            _usd(s["net_exposure"]),
            (_num(s["leverage"], ".2f") + "x") if s["leverage"] is not None else "n/a",
        ]
        for name, s in r["subaccounts"].items()
    ]
    sections.append(
        (
            "Subaccounts",
            html_table(
                ["subaccount", "equity", "cash", "gross", "net", "leverage"], sub_rows, "metrics"
            ),
        )
    )
    sections.append(
        (
            "Market and notes",
            f"<p>Regime: {esc((r.get('regime') or {}).get('explanation', 'n/a'))}</p><ul>"
            + "".join(f"<li>{esc(n)}</li>" for n in r.get("notes", []))
            + "</ul>",
        )
    )
    return page(f"trimtab portfolio review, {r['as_of']}", head, sections)
