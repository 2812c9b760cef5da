"""Render a review (the dict of ``review_portfolio``) for a person: plain text or markdown.

Plain text has no markup, so it prints the same in a terminal, a log or through rich
(``Console.print(text, markup=False, highlight=False)``). ``render(review, "json")`` is the
dict as indented JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["FORMATS", "render", "render_json", "render_markdown", "render_text"]

FORMATS = ("text", "markdown", "json")


def format_price(price: float | None) -> str:
    """``trimtab.domain.quotes.format_price`` (its one home), imported on first use: the
    domain package pulls in pandas, which a review read from its report cache skips."""
    from trimtab.domain.quotes import format_price as home

    return home(price)


_SEVERITY_TAG = {"critical": "CRITICAL", "high": "HIGH", "medium": "MEDIUM", "low": "LOW"}


def render(review: dict[str, Any], fmt: str = "text") -> str:
    """The review as ``text``, ``markdown`` (or ``md``) or ``json``."""
    f = fmt.lower()
    if f == "text":
        return render_text(review)
    if f in ("markdown", "md"):
        return render_markdown(review)
    if f == "json":
        return render_json(review)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


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
