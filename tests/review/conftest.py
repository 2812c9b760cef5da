"""Fixtures for the review tests: the daily panel and funding file (real, else the
synthetic sample's), holdings texts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DAILY_FILE, FUNDING_FILE, HOURLY_FILE, SHARED_DATA, _require
from trimtab.review import Holdings, parse_holdings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
__all__ = ["DAILY_FILE", "FUNDING_FILE", "HOURLY_FILE", "SHARED_DATA", "_require"]


#: Ten large coins, equal weights, 20 % cash: the "diversified spot" portfolio.
DIVERSIFIED = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "LINKUSDT",
    "MATICUSDT",
    "AVAXUSDT",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def funding() -> pd.DataFrame:
    from trimtab.data import read_funding

    return read_funding(_require(FUNDING_FILE))


def yaml_holdings(text: str, source: str = "test.yaml") -> Holdings:
    return parse_holdings(text, "yaml", source=source)


def diversified(panel, as_of: str, per_coin: float = 8000.0, cash: float = 20000.0) -> Holdings:
    """Equal USDT amounts of ten coins bought at the as-of close, plus cash."""
    px = panel.close.loc[as_of]
    spot = ", ".join(f"{s}: {per_coin / px[s]:.8g}" for s in DIVERSIFIED)
    return yaml_holdings(
        f"as_of: {as_of}\nsubaccounts:\n  core:\n    cash: {{USDT: {cash}}}\n    spot: {{{spot}}}\n",
        "diversified.yaml",
    )


def leveraged(as_of: str, entry: float, size: float = 20, leverage: float = 10) -> Holdings:
    """One ETH perpetual long at 10x, a little cash: concentrated and near liquidation."""
    return yaml_holdings(
        f"""
as_of: {as_of}
subaccounts:
  degen:
    cash: {{USDT: 200}}
    perps:
      - {{symbol: ETHUSDT, side: long, size: {size}, entry_price: {entry}, leverage: {leverage}}}
""",
        "leveraged.yaml",
    )
