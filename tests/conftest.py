"""Shared fixtures: market data (the real files beside the project, else the synthetic
sample), the ``real_data`` marker, and small synthetic panels."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

from trimtab.data import sample
from trimtab.data.panel import panel_from_long

# pytest rewrites the asserts of every test module (and of its plugins' packages:
# hypothesis, schemathesis, anyio) at each collection, ~430 modules, unless it finds the
# rewritten code cached in __pycache__; it writes that cache only where bytecode writing
# is on, and PYTHONDONTWRITEBYTECODE turns it off. Turned back on for this process
# (before pytest imports the test modules), a run after the first skips most of that
# rewriting. (The trimtab subprocesses read the bytecode `make sync` compiled.)
sys.dont_write_bytecode = False

# CI runs the property tests on a fixed sequence of examples, so a red build is always
# reproducible; locally they explore new examples every run.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Tests never touch the person's own download cache (nor the synthetic sample in it).
os.environ["TRIMTAB_CACHE"] = str(Path(tempfile.gettempdir()) / "trimtab-test-cache")

#: The real market data beside the project, when it is there.
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_REAL_DATA = (REAL_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz").is_file()
if HAVE_REAL_DATA:
    SHARED_DATA = REAL_DATA
    DAILY_FILE = SHARED_DATA / "ohlcv_1d_binance_spot_34coins_2017-2023.csv.gz"
    HOURLY_FILE = SHARED_DATA / "ohlcv_1h_binance_spot_BTC_ETH_BNB_ADA_2017-2021.csv.gz"
    FUNDING_FILE = SHARED_DATA / "funding_BTC_ETH_7venues_2020-2022.csv.gz"
else:
    # Without it (a fresh clone), tests of mechanics run on trimtab's synthetic sample
    # market, in the same files and symbols; tests of figures that belong to the real
    # data are marked ``real_data`` and skip.
    SHARED_DATA = sample.ensure_sample()
    DAILY_FILE = SHARED_DATA / sample.DAILY_FILE
    HOURLY_FILE = SHARED_DATA / sample.HOURLY_FILE
    FUNDING_FILE = SHARED_DATA / sample.FUNDING_FILE
DATA_KIND = "real" if HAVE_REAL_DATA else "sample"


def _numpy_math_is_libm() -> bool:
    """Whether NumPy's float64 exp and log1p give the C library's values.

    Not where NumPy dispatches its own AVX-512 loops: there about 5 % of values differ by
    an ulp from the C library's, which scikit-learn's and SciPy's compiled code call, so
    the tests that compare with those libraries to the bit compare within a stated
    tolerance instead.
    """
    import math

    probe = np.linspace(-40.0, 40.0, 4001)
    exp_ok = np.array_equal(np.exp(probe), [math.exp(v) for v in probe])
    log1p_ok = np.array_equal(np.log1p(np.abs(probe)), [math.log1p(abs(v)) for v in probe])
    return exp_ok and log1p_ok


#: True on machines where NumPy's exp/log1p are the C library's (bit-for-bit comparisons hold).
NUMPY_MATH_IS_LIBM = _numpy_math_is_libm()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_data: checks figures of the real ../shared/data; skipped without it"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_REAL_DATA:
        return
    skip = pytest.mark.skip(reason=f"checks figures of the real data, not found at {REAL_DATA}")
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"data not found: {path}")
    return path


@pytest.fixture(scope="session")
def daily_bars() -> pd.DataFrame:
    """The daily file (real, else the sample's) as long bars in trimtab's column names."""
    bars = pd.read_csv(_require(DAILY_FILE), parse_dates=["timestamp"])
    return bars.rename(columns={"volume_base": "volume", "volume_quote": "quote_volume"})


@pytest.fixture(scope="session")
def daily_panel(daily_bars):
    return panel_from_long(daily_bars, provenance={"files": [str(DAILY_FILE)]})


def synthetic_bars(
    closes: dict[str, list[float]], start: str = "2021-01-01", freq: str = "1D", volume: float = 1e9
) -> pd.DataFrame:
    """Long bars whose open is the previous close; NaN closes mean no bar."""
    rows = []
    index = pd.date_range(start, periods=max(len(v) for v in closes.values()), freq=freq, tz="UTC")
    for symbol, series in closes.items():
        prev = None
        for ts, c in zip(index, series, strict=False):
            if c is None or np.isnan(c):
                continue
            o = prev if prev is not None else c
            rows.append((ts, symbol, o, max(o, c) * 1.01, min(o, c) * 0.99, c, volume / c, volume))
            prev = c
    return pd.DataFrame(
        rows,
        columns=["timestamp", "symbol", "open", "high", "low", "close", "volume", "quote_volume"],
    )


@pytest.fixture
def make_panel():
    def _make(closes: dict[str, list[float]], **kw):
        return panel_from_long(synthetic_bars(closes, **kw))

    return _make
