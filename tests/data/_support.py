"""Paths and helpers for the data tests (fixtures live in conftest.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
DAILY = SHARED / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
HOURLY = SHARED / "ohlcv_1h_binance_spot_BTC_ETH_BNB_ADA_2017-2021.csv.gz"
FUNDING = SHARED / "funding_BTC_ETH_7venues_2020-2022.csv.gz"
CAPS = SHARED / "price_mcap_1d_coingecko_42coins_2013-2021.csv.gz"
FREQTRADE = SHARED / "freqtrade_testdata"
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
