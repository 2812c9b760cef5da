"""The parse cache of ``load_panel`` and ``read_funding`` (``cache=``): what is read
back is the parsed result exactly (values, index, dtypes, memory order, provenance), and
a changed, added or removed file is parsed again."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from tests.data._support import DAILY, FUNDING, write_lines
from trimtab.data import DataError, load_panel, read_funding

HEADER = "timestamp,symbol,open,high,low,close,volume_base,volume_quote,trades,source"


def _bars(close_btc: str = "101") -> list[str]:
    return [
        HEADER,
        "2023-01-01T00:00:00+00:00,BTCUSDT,100,102,99,101,5,505,1,test",
        f"2023-01-02T00:00:00+00:00,BTCUSDT,101,103,100,{close_btc},6,606,1,test",
        "2023-01-03T00:00:00+00:00,BTCUSDT,102,104,101,103,7,707,1,test",
        "2023-01-01T00:00:00+00:00,ETHUSDT,10,11,9,10.5,50,525,1,test",
        "2023-01-03T00:00:00+00:00,ETHUSDT,10.5,12,10,11,40,440,1,test",
    ]


def _same(a, b) -> None:
    assert a.timeframe == b.timeframe and a.provenance == b.provenance
    for name, frame in a.frames().items():
        other = b.frames()[name]
        pd.testing.assert_frame_equal(frame, other, check_exact=True, check_freq=True)
        assert frame.index.freq == other.index.freq and frame.columns.name == other.columns.name
        # the same memory order: reductions over the frames give the same bits
        assert frame.to_numpy().flags["C_CONTIGUOUS"] == other.to_numpy().flags["C_CONTIGUOUS"]


def test_the_daily_panel_read_back_is_the_parsed_one(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DAILY, data / DAILY.name)
    cache = tmp_path / "cache"
    parsed = load_panel(data)
    first = load_panel(data, cache=cache)
    (kept,) = (cache / "panel").glob("*.npz")
    again = load_panel(data, cache=cache)
    _same(parsed, first)
    _same(parsed, again)
    assert again.close.sum().sum() == parsed.close.sum().sum()
    # Other arguments are another entry.
    sliced = load_panel(data, start="2023-01-01", cache=cache)
    _same(load_panel(data, start="2023-01-01"), sliced)
    assert len(list((cache / "panel").glob("*.npz"))) == 2
    assert kept.exists()


def test_a_changed_file_is_parsed_again(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    bars = write_lines(data / "bars_1d.csv", _bars("101"))
    cache = tmp_path / "cache"
    assert load_panel(data, cache=cache).close.loc["2023-01-02", "BTCUSDT"] == 101
    # Same size and the same mtime: the bytes are in the key, not the file's date.
    stat = bars.stat()
    write_lines(bars, _bars("102"))
    os.utime(bars, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert bars.stat().st_size == stat.st_size
    changed = load_panel(data, cache=cache)
    assert changed.close.loc["2023-01-02", "BTCUSDT"] == 102
    _same(load_panel(data), changed)
    # A new file in the folder changes what the folder holds (here, a skipped file).
    (data / "notes.txt").write_text("not bars")
    assert load_panel(data, cache=cache).provenance["skipped"][-1]["reason"]
    assert len(list((cache / "panel").glob("*.npz"))) == 3
    # A broken entry is parsed again, not trusted.
    for entry in (cache / "panel").glob("*.npz"):
        entry.write_bytes(b"not an npz file")
    _same(load_panel(data), load_panel(data, cache=cache))


def test_a_bad_file_is_still_an_error_and_nothing_is_kept(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_lines(data / "bars_1d.csv", [*_bars()[:2], "2023-01-02T00:00:00+00:00,BTCUSDT,x"])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="bars_1d.csv"):
        load_panel(data, cache=cache)
    assert not list(cache.rglob("*.npz"))
    with pytest.raises(DataError, match="does not exist"):
        load_panel(tmp_path / "absent", cache=cache)


def test_funding_read_back_is_the_parsed_frame(tmp_path):
    cache = tmp_path / "cache"
    parsed = read_funding(FUNDING)
    read_funding(FUNDING, cache=cache)
    assert len(list((cache / "funding").glob("*.npz"))) == 1
    again = read_funding(FUNDING, cache=cache)
    pd.testing.assert_frame_equal(parsed, again, check_exact=True)
    assert list(again.dtypes) == list(parsed.dtypes)
