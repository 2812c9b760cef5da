"""Writing a run's record to a folder, whole or not at all.

A run folder (``result.json``, ``equity.csv``, ``weights.csv``, ``trades.csv``,
``decisions.jsonl``, optionally ``rejections.csv``, ``states.csv`` and ``ledger.csv``,
the quantities, marks, funding and liquidations per bar and symbol that attribution
reads) is first written into a temporary sibling folder (``.NAME.partial-PID-XXXX``),
then swapped in for the target in one step. A reader, or a process killed at any
instant (``kill -9``), sees the previous run or the new one, never a mix; an earlier run
in the same folder is replaced as a whole, so none of its files (an old ``states.csv``)
survives beside the new ones.

On Linux the swap is ``renameat2(RENAME_EXCHANGE)``, atomic. Elsewhere (or on a file
system without it) the old folder is renamed aside, the new one renamed in and the old
one removed; a crash between the two renames leaves the old run aside as
``.NAME.old-PID-XXXX``, which the next write into NAME puts back first.

A folder that is not a trimtab run folder is never replaced: run folders carry a marker
file, ``RUN_MARKER``; folders written before the marker existed are recognised by
holding ``result.json`` and nothing but run files. An empty folder may be used too.

A portfolio run (``write_portfolio_run``) is one such folder too: its ``result.json``,
the total and per-subaccount ``equity.csv``, ``transfers.csv``, and a folder per
subaccount under ``subaccounts/`` holding that subaccount's run files.

Single files (``--json``, ``review --out``) go through ``write_text_atomic``: a
temporary file beside the target, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is only needed by the caller's frames; keep the import light
    import pandas as pd

OUTPUT_FILES = (
    "result.json",
    "equity.csv",
    "weights.csv",
    "trades.csv",
    "decisions.jsonl",
    "rejections.csv",
)
#: Files a run may add to OUTPUT_FILES (the safety layer's state per bar).
OPTIONAL_FILES = ("states.csv", "ledger.csv")
#: Marks a folder as a trimtab run folder, which a later run may replace whole.
RUN_MARKER = ".trimtab-run"

_PARTIAL = ".partial-"
_OLD = ".old-"


class OutputError(ValueError):
    """An output location that cannot be written (names the path and why)."""


def write_run(
    outdir: str | Path,
    result_doc: dict[str, Any],
    equity: pd.Series,
    weights: pd.DataFrame,
    trades: pd.DataFrame,
    decisions: list[dict[str, Any]],
    rejections: pd.DataFrame | None = None,
    states: pd.DataFrame | None = None,
    ledger: pd.DataFrame | None = None,
) -> Path:
    """Write one run's files into ``outdir`` atomically and return it.

    ``outdir`` is created (with its parents) or, if it is an earlier run folder,
    replaced whole. Raises ``OutputError`` if it is a file or a folder that is not a
    run folder; nothing is changed then, nor when a writer fails midway.
    """

    def fill(out: Path) -> None:
        _write_run_files(
            out,
            RunFiles(result_doc, equity, weights, trades, decisions, rejections, states, ledger),
        )

    return write_run_folder(outdir, fill)


@dataclass
class RunFiles:
    """One run's (or one subaccount's) outputs, as ``write_run`` writes them."""

    result: dict[str, Any]
    equity: pd.Series
    weights: pd.DataFrame
    trades: pd.DataFrame
    decisions: list[dict[str, Any]]
    rejections: pd.DataFrame | None = None
    states: pd.DataFrame | None = None
    ledger: pd.DataFrame | None = None


#: The per-subaccount folders of a portfolio run, under its folder.
SUBACCOUNTS_DIR = "subaccounts"


def write_portfolio_run(
    outdir: str | Path,
    result_doc: dict[str, Any],
    equity: pd.DataFrame,
    subaccounts: Mapping[str, RunFiles],
    transfers: Sequence[Mapping[str, Any]],
) -> Path:
    """Write a portfolio run into ``outdir`` atomically (whole or not at all, as
    ``write_run``) and return it.

    ``outdir/result.json`` is ``result_doc``; ``equity.csv`` is ``equity`` (timestamp x
    ``total`` and one column per subaccount, USDT); ``transfers.csv`` has one row per
    transfer decision (``trimtab.domain.transfers.TRANSFER_COLUMNS``); and
    ``subaccounts/NAME/`` holds each subaccount's files, as a single run's folder.
    """
    from trimtab.domain.transfers import TRANSFER_COLUMNS

    def fill(out: Path) -> None:
        (out / "result.json").write_text(json.dumps(result_doc, indent=2, allow_nan=False) + "\n")
        total = equity.copy()
        total.index.name = "timestamp"
        total.to_csv(out / "equity.csv", float_format="%.10g")
        with (out / "transfers.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(TRANSFER_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            for row in transfers:
                checks = row.get("checks") or ()
                writer.writerow({**row, "checks": "; ".join(checks)})
        for name, files in subaccounts.items():
            folder = out / SUBACCOUNTS_DIR / name
            folder.mkdir(parents=True)
            _write_run_files(folder, files)

    return write_run_folder(outdir, fill)


def _write_run_files(out: Path, run: RunFiles) -> None:
    """A run's files into folder ``out`` (see the module docstring)."""
    result_doc, equity, weights, trades = run.result, run.equity, run.weights, run.trades
    decisions, rejections, states = run.decisions, run.rejections, run.states
    (out / "result.json").write_text(json.dumps(result_doc, indent=2, allow_nan=False) + "\n")
    eq = equity.rename("equity").to_frame()
    eq.index.name = "timestamp"
    eq.to_csv(out / "equity.csv", float_format="%.10g")
    w = weights.copy()
    w.index.name = "timestamp"
    w.to_csv(out / "weights.csv", float_format="%.8g")
    columns = [
        "timestamp",
        "symbol",
        "side",
        "quantity",
        "price",
        "fee",
        "fee_currency",
        "reason",
        "decision_id",
    ]
    trades[columns].to_csv(out / "trades.csv", index=False, float_format="%.12g")
    with (out / "decisions.jsonl").open("w") as fh:
        for record in decisions:
            fh.write(
                json.dumps(record, separators=(",", ":"), allow_nan=False, default=_default) + "\n"
            )
    if rejections is not None:
        rejections.to_csv(out / "rejections.csv", index=False)
    if states is not None:
        st = states.copy()
        st.index.name = "timestamp"
        st.to_csv(out / "states.csv")
    if run.ledger is not None:
        # Full precision: attribution sums these to the cent over many bars.
        run.ledger.to_csv(out / "ledger.csv", index=False, float_format="%.17g")


def write_run_folder(outdir: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a run folder with ``fill(tmp)`` in a temporary sibling, then swap it in.

    ``fill`` writes the files into the folder it is given. If it raises, the temporary
    folder is removed and ``outdir`` is left as it was.
    """
    target = Path(outdir).expanduser().absolute()
    check_run_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL}{os.getpid()}-", dir=target.parent)
    )
    try:
        fill(tmp)
        (tmp / RUN_MARKER).write_text(
            "trimtab run folder: the next run written here replaces it whole\n"
        )
        _sync_tree(tmp)
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and ``os.replace``:
    the file holds the old text or the new, never part of it. Parents are created.
    A target that exists and is not a regular file (``/dev/null``, a pipe) is written in
    place: replacing it would put a plain file where the device was."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputError(f"{target} is a folder; give a file name to write to")
    if target.exists() and not target.is_file():
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        return target
    if target.parent.exists() and not target.parent.is_dir():
        raise OutputError(f"{target.parent} is a file, so {target} cannot be written")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return target


def is_run_folder(path: str | Path) -> bool:
    """Does ``path`` hold a trimtab run (marker, or an older run's files only)?"""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / RUN_MARKER).is_file():
        return True
    names = {e.name for e in p.iterdir()}
    return "result.json" in names and names <= set(OUTPUT_FILES) | set(OPTIONAL_FILES)


def check_run_folder(outdir: str | Path) -> None:
    """Raise ``OutputError`` unless ``outdir`` may take a run: new, empty, or an
    earlier run folder (never a file, nor a folder of other files)."""
    target = Path(outdir).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise OutputError(f"--out {target} is a file; give a folder for the run's files")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"--out {target}: {parent} is a file, not a folder")
            break
    if target.is_dir() and not is_run_folder(target):
        entries = sorted(e.name for e in target.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
            raise OutputError(
                f"--out {target} is not a trimtab run folder (it holds {shown}); a run "
                "replaces its folder whole, so give a new or empty folder, or an earlier run's"
            )


def _recover(target: Path) -> None:
    """Clear what a killed writer left beside ``target``: partial folders are removed,
    and an old run set aside by the fallback swap is put back if nothing replaced it."""
    for entry in target.parent.glob(f".{target.name}{_PARTIAL}*"):
        if entry.is_dir() and not _alive(entry.name, _PARTIAL):
            shutil.rmtree(entry, ignore_errors=True)
    for entry in sorted(target.parent.glob(f".{target.name}{_OLD}*")):
        if not entry.is_dir() or _alive(entry.name, _OLD):
            continue
        if target.exists():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            os.rename(entry, target)


def _alive(name: str, tag: str) -> bool:
    """Is the process that named this sibling folder still running?"""
    try:
        pid = int(name.rsplit(tag, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        _sync_dir(target.parent)
        return
    if _exchange(tmp, target):
        # tmp now holds the previous run.
        _sync_dir(target.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}{_OLD}{os.getpid()}-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    os.rename(tmp, target)
    _sync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _sync_tree(folder: Path) -> None:
    """Flush the new files to disk before they replace the old run (power loss)."""
    for entry in folder.iterdir():
        if entry.is_file():
            fd = os.open(entry, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _sync_dir(folder)


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, date):  # pd.Timestamp is a datetime
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
