"""The portfolio review ("copilot"): what is risky in the portfolio held, why, what to do.

- ``load_holdings(path)``: a YAML or CSV holdings file into ``Holdings`` (see
  ``trimtab.review.holdings`` for the formats); mistakes raise ``HoldingsError``.
- ``review_portfolio(holdings, panel, ...)``: the review as a JSON-ready dict (schema in
  ``trimtab.review.review``).
- ``render(review, "text" | "markdown" | "json")``.
- ``run_review(portfolio, data=None, fmt="text", out=None, timeframe=None)``: all of it,
  for the command line.

The names are imported on first use (PEP 562): ``run_review`` answers a repeated review
from its report cache without importing pandas or the review's models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager: light (no pandas), and ``render`` is also the submodule's name, which a lazy
# import would leave bound to the module once ``trimtab.review.render`` is imported.
from trimtab.review.render import render, render_json, render_markdown, render_text

#: public name -> the submodule that defines it
_HOMES = {
    "STABLECOINS": "holdings",
    "Holdings": "holdings",
    "HoldingsError": "holdings",
    "load_holdings": "holdings",
    "parse_holdings": "holdings",
    "resolve_holdings": "holdings",
    "SCHEMA_VERSION": "review",
    "apply_recommendation": "review",
    "review_portfolio": "review",
    "run_review": "run",
}

__all__ = [
    "Holdings",
    "HoldingsError",
    "SCHEMA_VERSION",
    "STABLECOINS",
    "apply_recommendation",
    "load_holdings",
    "parse_holdings",
    "render",
    "render_json",
    "render_markdown",
    "render_text",
    "resolve_holdings",
    "review_portfolio",
    "run_review",
]

if TYPE_CHECKING:
    from trimtab.review.holdings import (
        STABLECOINS,
        Holdings,
        HoldingsError,
        load_holdings,
        parse_holdings,
        resolve_holdings,
    )
    from trimtab.review.review import SCHEMA_VERSION, apply_recommendation, review_portfolio
    from trimtab.review.run import run_review


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
