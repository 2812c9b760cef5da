from __future__ import annotations

from pathlib import Path

import pytest

from trimtab.data import DataError, discovery, find_data_dir
from trimtab.data.discovery import cache_dir, project_root


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
    loc = find_data_dir(None, env={}, cwd=tmp_path)
    if expected.is_dir():
        assert (loc.path, loc.how) == (expected.resolve(), "shared")
    else:
        assert loc.how == "cache"


def test_cache_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(discovery, "project_root", lambda start=None: None)
    loc = find_data_dir(None, env={"TRIMTAB_CACHE": str(tmp_path / "c")}, cwd=tmp_path)
    assert (loc.path, loc.how) == (tmp_path / "c", "cache")
    assert not (tmp_path / "c").exists()  # created by downloads, not by looking
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "trimtab"
    assert cache_dir({}) == Path.home() / ".cache" / "trimtab"


def test_real_environment_finds_shared_data(shared, monkeypatch):
    monkeypatch.delenv("TRIMTAB_DATA", raising=False)
    loc = find_data_dir(None)
    assert loc.how == "shared" and loc.path == shared
