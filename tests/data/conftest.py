"""Shared fixtures for the data tests: the files in ../shared/data (else the synthetic
sample's, see tests/conftest.py), read once."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from trimtab.data import Panel, load_panel, read_shared_csv

from ._support import DAILY, HOURLY, SHARED


@pytest.fixture(scope="session")
def shared() -> Path:
    """The data folder: the real ../shared/data, else the synthetic sample's folder."""
    if not DAILY.is_file():
        pytest.skip(f"market data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def daily_raw(shared: Path) -> pd.DataFrame:
    """The daily file as read (not validated). Do not modify: copy first."""
    return read_shared_csv(DAILY)


@pytest.fixture(scope="session")
def daily_panel(shared: Path) -> Panel:
    return load_panel(DAILY)


@pytest.fixture(scope="session")
def hourly_panel(shared: Path) -> Panel:
    return load_panel(HOURLY)


@pytest.fixture(scope="session")
def daily_lines(shared: Path) -> list[str]:
    """Header plus the first 1,500 data lines of the daily CSV (AAVEUSDT, then ADAUSDT).

    Line i of the list is line i + 1 of the file, so ``lines[k]`` is the bar reported as
    row ``k + 1``.
    """
    out = []
    with gzip.open(DAILY, "rt") as fh:
        for i, line in enumerate(fh):
            if i > 1500:
                break
            out.append(line.rstrip("\n"))
    return out
