from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import HAVE_REAL_DATA
from trimtab.data import DataError, discovery, find_data_dir, sample
from trimtab.data.discovery import cache_dir, project_root

#: The sample generated for this test session (tests/conftest.py's cache folder).
SAMPLE = sample.ensure_sample()


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """tmp/project (the cwd) beside tmp/shared/data."""
    project = tmp_path / "project"
    shared = tmp_path / "shared" / "data"
    project.mkdir()
    shared.mkdir(parents=True)
    return project, shared


def test_explicit_path_wins(layout, tmp_path):
    project, _ = layout
    mine = tmp_path / "mine"
    mine.mkdir()
    loc = find_data_dir(mine, env={"TRIMTAB_DATA": str(project)}, cwd=project)
    assert (loc.path, loc.how) == (mine.resolve(), "--data")


def test_explicit_missing_path_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        find_data_dir(missing, env={})
    assert str(missing) in str(e.value) and "--data" in str(e.value)
    with pytest.raises(DataError) as e:
        find_data_dir(None, env={"TRIMTAB_DATA": str(missing)})
    assert str(missing) in str(e.value) and "TRIMTAB_DATA" in str(e.value)


def test_env_then_shared(layout):
    project, shared = layout
    loc = find_data_dir(None, env={"TRIMTAB_DATA": str(project)}, cwd=project)
    assert loc.how == "TRIMTAB_DATA"
    loc = find_data_dir(None, env={}, cwd=project)
    assert (loc.path, loc.how) == (shared.resolve(), "shared")


def test_shared_relative_to_project_root(tmp_path, monkeypatch):
    # cwd elsewhere: the project root found from the package's location is used
    root = project_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    expected = root / ".." / "shared" / "data"
    monkeypatch.setattr(sample, "ensure_sample", lambda env=None: tmp_path / "the-sample")
    loc = find_data_dir(None, env={"TRIMTAB_CACHE": str(tmp_path / "c")}, cwd=tmp_path)
    if expected.is_dir():
        assert (loc.path, loc.how) == (expected.resolve(), "shared")
    else:
        assert loc.how == "sample"


def test_cache_with_downloads_then_the_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(discovery, "project_root", lambda start=None: None)
    made = []
    monkeypatch.setattr(sample, "ensure_sample", lambda env=None: made.append(env) or SAMPLE)
    cache = tmp_path / "c"
    env = {"TRIMTAB_CACHE": str(cache)}
    # No cache folder, then an empty one, then one with only the sample: the sample.
    for step in range(3):
        if step == 1:
            cache.mkdir()
        if step == 2:
            (cache / "sample").mkdir()
        loc = find_data_dir(None, env=env, cwd=tmp_path)
        assert (loc.path, loc.how) == (SAMPLE, "sample") and loc.synthetic
    assert made == [env] * 3
    # Downloaded bars in the cache come before the sample.
    (cache / "binance-BTCUSDT-1d.parquet").write_bytes(b"")
    loc = find_data_dir(None, env=env, cwd=tmp_path)
    assert (loc.path, loc.how) == (cache, "cache") and not loc.synthetic
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "trimtab"
    assert cache_dir({}) == Path.home() / ".cache" / "trimtab"


def test_the_sample_named_explicitly_is_still_synthetic():
    loc = find_data_dir(SAMPLE, env={})
    assert loc.how == "--data" and loc.synthetic
    assert find_data_dir(SAMPLE / sample.DAILY_FILE, env={}).synthetic


def test_sample_folder_is_generated_once_and_replaced_when_stale(tmp_path, monkeypatch):
    target = tmp_path / "cache" / "sample" / "v"
    calls = []

    def write(folder):  # the files and stamp write_sample leaves, without the 2 s of work
        calls.append(folder)
        for name in (sample.DAILY_FILE, sample.HOURLY_FILE, sample.FUNDING_FILE):
            (folder / name).write_text("")
        (folder / sample.STAMP).write_text(json.dumps(sample.provenance()))
        return folder

    monkeypatch.setattr(sample, "write_sample", write)
    assert sample.ensure_sample(target) == target and sample.is_sample(target)
    assert sample.ensure_sample(target) == target and len(calls) == 1  # cached
    (target / sample.STAMP).write_text('{"parameters": "old"}')
    assert sample.ensure_sample(target) == target and len(calls) == 2  # stale: rebuilt
    assert sorted(p.name for p in target.parent.iterdir()) == ["v"]  # no leftovers


def test_no_data_anywhere_runs_on_the_sample_without_the_network(tmp_path, monkeypatch):
    """The old loader downloaded from Binance when no data folder existed."""
    from trimtab.data import ccxt_source
    from trimtab.engine.runner import RunSpec, load_for_spec

    def no_network(exchange_id):
        raise AssertionError(f"tried to reach {exchange_id}")

    monkeypatch.setattr(ccxt_source, "_make_exchange", no_network)
    monkeypatch.setattr(discovery, "project_root", lambda start=None: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRIMTAB_DATA", raising=False)
    monkeypatch.setenv("TRIMTAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(sample, "sample_dir", lambda env=None: SAMPLE)
    panel = load_for_spec(RunSpec(symbols=("BTCUSDT", "ETHUSDT"), start="2021-01-01"))
    assert panel.provenance["location"]["how"] == "sample"
    assert panel.provenance["synthetic"] is True
    assert panel.provenance["source"] == "synthetic sample"
    assert not list((tmp_path / "empty-cache").glob("*.parquet"))


def test_real_environment_finds_shared_data(shared, monkeypatch):
    if not HAVE_REAL_DATA:
        pytest.skip("no ../shared/data beside the project")
    monkeypatch.delenv("TRIMTAB_DATA", raising=False)
    loc = find_data_dir(None)
    assert loc.how == "shared" and loc.path == shared
