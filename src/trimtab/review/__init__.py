"""The portfolio review ("copilot"): what is risky in the portfolio held, why, what to do.

- ``load_holdings(path)``: a YAML or CSV holdings file into ``Holdings`` (see
  ``trimtab.review.holdings`` for the formats); mistakes raise ``HoldingsError``.
- ``review_portfolio(holdings, panel, ...)``: the review as a JSON-ready dict (schema in
  ``trimtab.review.review``).
- ``render(review, "text" | "markdown" | "json")``.
- ``run_review(portfolio, data=None, fmt="text", out=None, timeframe=None)``: all of it,
  for the command line.
"""

from trimtab.review.holdings import (
    STABLECOINS,
    Holdings,
    HoldingsError,
    load_holdings,
    parse_holdings,
    resolve_holdings,
)
from trimtab.review.render import render, render_json, render_markdown, render_text
from trimtab.review.review import SCHEMA_VERSION, apply_recommendation, review_portfolio
from trimtab.review.run import run_review

__all__ = [
    "SCHEMA_VERSION",
    "STABLECOINS",
    "Holdings",
    "HoldingsError",
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
