"""Where market data comes from, in the order DESIGN.md gives.

1. ``--data DIR`` (an explicit path; a single file is accepted too),
2. the ``TRIMTAB_DATA`` environment variable,
3. ``../shared/data`` beside the project, if present: looked up relative to the current
   working directory, then relative to the project root (the nearest folder above this
   file holding ``pyproject.toml``),
4. the ccxt download cache, if it holds downloaded bars (``*.parquet``): ``TRIMTAB_CACHE``,
   else ``$XDG_CACHE_HOME/trimtab``, else ``~/.cache/trimtab``; ``trimtab data download``
   fills it;
5. last, the synthetic sample market (``trimtab.data.sample``), generated on first use
   into ``<cache>/sample/``: not real prices, and every output built on it says so.

Nothing here downloads: a download happens only when asked (``trimtab data download``).
An explicit path (``--data`` or ``TRIMTAB_DATA``) that does not exist is an error naming
it and how it was chosen, never a silent fall-through to the next source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trimtab.data.errors import DataError

How = Literal["--data", "TRIMTAB_DATA", "shared", "cache", "sample"]


@dataclass(frozen=True)
class DataLocation:
    """A data folder (or file) and how it was found."""

    path: Path
    how: How

    def __str__(self) -> str:
        return f"{self.path} (from {self.how})"

    @property
    def synthetic(self) -> bool:
        """True when the data is trimtab's synthetic sample (found last, or named)."""
        from trimtab.data.sample import is_sample

        return self.how == "sample" or is_sample(self.path)


def project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: this file) with a pyproject.toml."""
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The ccxt download cache folder (not created here)."""
    env = os.environ if env is None else env
    if env.get("TRIMTAB_CACHE"):
        return Path(env["TRIMTAB_CACHE"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "trimtab"
    return Path.home() / ".cache" / "trimtab"


def find_data_dir(
    explicit: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> DataLocation:
    """Locate market data; see the module docstring for the order.

    ``env`` and ``cwd`` default to the process's own and exist for tests. Falling through
    to the sample generates it (about two seconds, once per machine).
    """
    env = os.environ if env is None else env
    if explicit is not None and str(explicit) != "":
        return _must_exist(Path(explicit).expanduser(), "--data")
    if env.get("TRIMTAB_DATA"):
        return _must_exist(Path(env["TRIMTAB_DATA"]).expanduser(), "TRIMTAB_DATA")
    bases = [Path.cwd() if cwd is None else cwd]
    root = project_root()
    if root is not None:
        bases.append(root)
    for base in bases:
        shared = base / ".." / "shared" / "data"
        if shared.is_dir():
            return DataLocation(shared.resolve(), "shared")
    cache = cache_dir(env)
    if has_downloads(cache):
        return DataLocation(cache, "cache")
    from trimtab.data.sample import ensure_sample

    return DataLocation(ensure_sample(env=env), "sample")


def has_downloads(cache: Path) -> bool:
    """True when the download cache holds bars (the files ``trimtab data download`` writes)."""
    return cache.is_dir() and any(cache.glob("*.parquet"))


def _must_exist(path: Path, how: How) -> DataLocation:
    if not path.exists():
        raise DataError(f"data path {path} does not exist (given by {how})")
    return DataLocation(path.resolve(), how)
