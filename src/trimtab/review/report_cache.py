"""A review's rendered report kept on disk, keyed by everything it is computed from.

``trimtab review`` of the same holdings file on the same data with the same options gives
the same report: the review reads no clock, no network and no environment beyond the
data location. So the rendered text is kept under ``<download cache>/review/`` and a
repeated review reads it back without importing pandas or the review's models (most of
a review's wall time is those imports, see bench/bench_review.py ``--startup``).

The key (``report_key``) is a digest of:

- the holdings file's resolved path and its bytes;
- the data location (path and how it was found) and, for every file directly in it (a
  folder is read non-recursively, as ``load_panel`` and the funding lookup read it), its
  name and its bytes; a file location, its bytes;
- the names of the installed distributions (``*.dist-info``, which carry the versions of
  numpy, pandas, scikit-learn, hmmlearn...), the Python version, trimtab's version;
- the options (format, timeframe, as-of date, event threshold and horizon, a fixed
  drawdown probability).

The code is checked beside the key: a report is stored with a digest of the source of
every trimtab module loaded when it was computed (``code_digests``; the command line's
own modules aside), and it is read back only while each of those files is unchanged. A
module the review did not load cannot have shaped it, so editing another part of trimtab
keeps the report; editing the review, the risk models or the data readers drops it.

Nothing is cached when the key cannot be made (a file that cannot be read: the review
itself then says what is wrong) or when the caller passes a drawdown function of its own.
A cache that cannot be read or written is skipped. At most ``KEEP`` reports are kept, the
least recently used go first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from trimtab import __version__

__all__ = [
    "KEEP",
    "REPORT_CACHE_VERSION",
    "code_digests",
    "read_report",
    "report_key",
    "write_report",
]

#: Bump when a report for the same inputs changes for a reason the key does not see.
REPORT_CACHE_VERSION = 2
#: Reports kept in the cache folder (each a few kB).
KEEP = 256

_PACKAGE = Path(__file__).resolve().parents[1]
#: Modules that print a report but do not make it: their edits keep the cached reports.
_NOT_CODE_OF_THE_REPORT = ("trimtab.cli", "trimtab.cli_control")


def report_key(portfolio: str | Path, location: str, data: Path, settings: str) -> str | None:
    """The digest naming a report (see the module docstring); None when an input cannot
    be read.

    ``location`` is how the data location prints (it is in the report), ``data`` its
    path, ``settings`` the review's options as one string.
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{REPORT_CACHE_VERSION}|{__version__}|{sys.version}|{settings}|{location}".encode())
    try:
        holdings = Path(portfolio).expanduser().resolve()
        h.update(f"\0holdings {holdings}\0".encode())
        h.update(holdings.read_bytes())
        _hash_data(h, data)
    except OSError:
        return None
    _hash_installed(h)
    return h.hexdigest()


def _hash_data(h: hashlib.blake2b, data: Path) -> None:
    if data.is_dir():
        files = sorted(p for p in data.iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        files = [data]
    for f in files:
        content = f.read_bytes()
        h.update(f"\0data {f.name} {len(content)}\0".encode())
        h.update(content)


def _hash_installed(h: hashlib.blake2b) -> None:
    names: set[str] = set()
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                names.update(e.name for e in it if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
    h.update(b"\0installed " + "|".join(sorted(names)).encode())


def code_digests() -> dict[str, str]:
    """``{path in the package: digest of its bytes}`` for every trimtab module loaded now
    (the command line's aside): the code a report computed now came from."""
    digests = {}
    for name, module in list(sys.modules.items()):
        if not (name == "trimtab" or name.startswith("trimtab.")):
            continue
        if name in _NOT_CODE_OF_THE_REPORT:
            continue
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        try:
            rel = path.relative_to(_PACKAGE).as_posix()
        except ValueError:  # not under this package's folder (a second copy): not cached
            return {}
        digest = _file_digest(path)
        if digest is None:
            return {}
        digests[rel] = digest
    return digests


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=20).hexdigest()
    except OSError:
        return None


def read_report(folder: Path, key: str) -> str | None:
    """The report kept under ``key``, if the code it came from is unchanged (None when
    absent, unreadable or stale); marks it used."""
    path = folder / f"{key}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        code, text = entry["code"], entry["report"]
        if not (isinstance(code, dict) and code and isinstance(text, str)):
            return None
        for rel, digest in code.items():
            if _file_digest(_PACKAGE / rel) != digest:
                return None
        os.utime(path)  # least recently used goes first when the folder is pruned
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return text


def write_report(folder: Path, key: str, text: str, code: dict[str, str]) -> None:
    """Keep ``text`` under ``key`` with the digests of the code it came from (``code``,
    see ``code_digests``; empty: not kept), atomically, and prune the folder to ``KEEP``
    reports; a folder that cannot be written is skipped."""
    from trimtab.journal.files import write_text_atomic

    if not code:
        return
    try:
        write_text_atomic(folder / f"{key}.json", json.dumps({"code": code, "report": text}))
    except (OSError, ValueError):  # OutputError is a ValueError
        return  # a read-only cache costs the speed, not the review
    try:
        kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
