"""Paths and helpers for the data tests (fixtures live in conftest.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.conftest import DAILY_FILE, FUNDING_FILE, HOURLY_FILE, REAL_DATA, SHARED_DATA

# The real files when they are beside the project, else the synthetic sample's (see
# tests/conftest.py); CAPS and FREQTRADE exist only in the real data.
# Resolved, as the readers record resolved paths (the folder may be a symlink).
SHARED = SHARED_DATA.resolve()
DAILY = SHARED / DAILY_FILE.name
HOURLY = SHARED / HOURLY_FILE.name
FUNDING = SHARED / FUNDING_FILE.name
CAPS = REAL_DATA.resolve() / "price_mcap_1d_coingecko_42coins_2013-2021.csv.gz"
FREQTRADE = REAL_DATA.resolve() / "freqtrade_testdata"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def write_lines(path: Path, lines: list[str], *, compress: bool | None = None) -> Path:
    """Write CSV lines to ``path`` (gzip if the name ends in .gz)."""
    text = "\n".join(lines) + "\n"
    if compress or (compress is None and path.name.endswith(".gz")):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def set_field(line: str, column: str, value: str, header: str) -> str:
    """Replace one column's value in a CSV line."""
    names = header.split(",")
    parts = line.split(",")
    parts[names.index(column)] = value
    return ",".join(parts)
