"""Market data: reading, validating, resampling and selecting bars; see ``panel`` for conventions.

The usual path is ``load_panel(find_data_dir(None).path)``: it finds OHLCV files in a
folder (shared CSVs, freqtrade files, the ccxt cache), validates them and returns a
``Panel``. ``download_ohlcv`` fills the ccxt cache; ``select_universe`` picks assets;
``resample_panel`` aggregates to coarser bars.
"""

from trimtab.data.ccxt_source import download_ohlcv
from trimtab.data.discovery import DataLocation, find_data_dir
from trimtab.data.errors import DataError, DataValidationError
from trimtab.data.panel import Panel, panel_from_long, periods_per_year
from trimtab.data.readers import (
    load_bars,
    load_panel,
    read_freqtrade,
    read_freqtrade_funding,
    read_funding,
    read_market_caps,
    read_shared_csv,
)
from trimtab.data.resample import resample_bars, resample_panel
from trimtab.data.universe import market_cap_panel, parse_universe, select_universe
from trimtab.data.validation import DataIssue, validate_bars

__all__ = [
    "DataError",
    "DataIssue",
    "DataLocation",
    "DataValidationError",
    "Panel",
    "download_ohlcv",
    "find_data_dir",
    "load_bars",
    "load_panel",
    "market_cap_panel",
    "panel_from_long",
    "parse_universe",
    "periods_per_year",
    "read_freqtrade",
    "read_freqtrade_funding",
    "read_funding",
    "read_market_caps",
    "read_shared_csv",
    "resample_bars",
    "resample_panel",
    "select_universe",
    "validate_bars",
]
