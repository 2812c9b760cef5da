"""Every backtest figure of the comparison runs stays what it was before the engine was
restructured around the pipeline step (``_pinned.py`` wrote the reference)."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import HAVE_REAL_DATA, REAL_DATA
from tests.engine._pinned import PINNED, figures
from trimtab.data import sample

REFERENCE = json.loads(PINNED.read_text())


def _compare(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for run, expected in want.items():
        for key, value in expected.items():
            actual = got[run][key]
            if isinstance(value, float):
                assert math.isclose(actual, value, rel_tol=1e-9, abs_tol=1e-9), (run, key)
            else:
                assert actual == value, (run, key)


def test_sample_figures_unchanged():
    _compare(figures("sample", sample.ensure_sample()), REFERENCE["sample"])


@pytest.mark.real_data
def test_real_figures_unchanged():
    assert HAVE_REAL_DATA
    _compare(figures("real", REAL_DATA), REFERENCE["real"])
