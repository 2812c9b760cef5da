"""The review's figures pinned before the portfolio score, valuation and covariance moved
out of ``trimtab.review`` (issue 10): the whole JSON report of three portfolios on the
real data must stay what it was, to the last printed digit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.review.conftest import EXAMPLES, SHARED_DATA
from trimtab.review import run_review

PINNED = Path(__file__).parent / "pinned"

#: name -> (holdings file, as-of override, with the drawdown model)
CASES = {
    "examples": (EXAMPLES / "holdings.yaml", None, True),
    "examples_csv": (EXAMPLES / "holdings.csv", "2022-06-15", False),
    "examples_luna_week": (EXAMPLES / "holdings.yaml", "2022-05-12", False),
}


def _report(name: str) -> dict:
    holdings, as_of, with_model = CASES[name]
    text = run_review(
        holdings,
        str(SHARED_DATA),
        fmt="json",
        as_of=as_of,
        drawdown_probability=None if with_model else 0.05,
        report_cache=False,  # computed here, never a stored report
    )
    report = json.loads(text)
    report["data"].pop("source")  # where the data lives on this machine
    report["data"].pop("funding_file")
    return report


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(CASES))
def test_review_figures_are_pinned(name):
    expected = json.loads((PINNED / f"{name}.json").read_text())
    assert _report(name) == expected


if __name__ == "__main__":  # regenerate the pinned files (only when a change is meant)
    for case in CASES:
        (PINNED / f"{case}.json").write_text(json.dumps(_report(case), indent=1) + "\n")
