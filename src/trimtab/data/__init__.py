"""Market data: reading, validating, resampling and selecting bars; see ``panel`` for conventions.

The usual path is ``load_panel(find_data_dir(None).path)``: it finds OHLCV files in a
folder (shared CSVs, freqtrade files, the ccxt cache), validates them and returns a
``Panel``. ``download_ohlcv`` fills the ccxt cache; ``select_universe`` picks assets;
``resample_panel`` aggregates to coarser bars.

The names below are imported on first use (PEP 562), so that ``find_data_dir`` or
``DataError`` do not pull in pandas and ccxt: a command that answers from a cache
starts without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it
_HOMES = {
    "download_ohlcv": "ccxt_source",
    "DataLocation": "discovery",
    "find_data_dir": "discovery",
    "DataError": "errors",
    "DataValidationError": "errors",
    "Panel": "panel",
    "panel_from_long": "panel",
    "periods_per_year": "panel",
    "load_bars": "readers",
    "load_panel": "readers",
    "read_freqtrade": "readers",
    "read_freqtrade_funding": "readers",
    "read_funding": "readers",
    "read_market_caps": "readers",
    "read_shared_csv": "readers",
    "resample_bars": "resample",
    "resample_panel": "resample",
    "market_cap_panel": "universe",
    "parse_universe": "universe",
    "select_universe": "universe",
    "DataIssue": "validation",
    "validate_bars": "validation",
}

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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
