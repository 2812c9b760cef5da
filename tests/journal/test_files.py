"""Run folders are written whole or not at all, and never over unrelated files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from trimtab.cli import app
from trimtab.journal import (
    RUN_MARKER,
    OutputError,
    is_run_folder,
    write_run,
    write_run_folder,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, tag: str, states: bool = False) -> Path:
    index = pd.date_range("2021-01-01", periods=3, freq="D", tz="UTC", name="timestamp")
    trades = pd.DataFrame(
        {
            "timestamp": index[:1],
            "symbol": ["BTCUSDT"],
            "side": ["buy"],
            "quantity": [1.0],
            "price": [30000.0],
            "fee": [3.0],
            "fee_currency": ["USDT"],
            "reason": [tag],
            "decision_id": [1],
        }
    )
    return write_run(
        out,
        {"run": tag},
        pd.Series([1.0, 1.1, 1.2], index=index),
        pd.DataFrame({"BTCUSDT": [0.0, 1.0, 1.0]}, index=index),
        trades,
        [{"id": 1, "tag": tag}],
        pd.DataFrame({"symbol": [], "reason": []}),
        pd.DataFrame({"state": ["ACTIVE"] * 3}, index=index) if states else None,
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_rerun_leaves_no_stale_file_from_the_earlier_run(tmp_path):
    out = tmp_path / "run"
    _run(out, "managed", states=True)
    assert (out / "states.csv").exists() and (out / RUN_MARKER).exists()
    _run(out, "equal-monthly", states=False)
    # The old states.csv belonged to the managed run: it must not sit beside the new one.
    assert not (out / "states.csv").exists()
    assert json.loads((out / "result.json").read_text()) == {"run": "equal-monthly"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary sibling left


def test_a_crash_mid_write_leaves_the_previous_run_intact_and_no_partial_one(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _run(out, "first", states=True)
    before = _snapshot(out)
    real = pd.DataFrame.to_csv

    def to_csv(self, path=None, *args, **kwargs):
        if path is not None and Path(path).name == "trades.csv":
            raise OSError("disk full")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    with pytest.raises(OSError, match="disk full"):
        _run(out, "second")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # And a crash on a first write leaves no folder at all.
    with pytest.raises(OSError, match="disk full"):
        _run(tmp_path / "new", "second")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_folder_that_is_not_a_run_is_never_replaced(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match=r"not a trimtab run folder \(it holds thesis.tex\)"):
        _run(home, "x")
    assert _snapshot(home) == {"thesis.tex": b"years of work"}
    # Nor a folder that looks like a run but holds something else too.
    run = _run(tmp_path / "run", "x")
    (run / RUN_MARKER).unlink()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        _run(run, "y")
    assert (run / "notes.txt").read_text() == "mine"
    # A file is not a folder.
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        _run(tmp_path / "f", "x")
    with pytest.raises(OutputError, match="is a file"):
        _run(tmp_path / "f" / "sub", "x")


def test_empty_and_pre_marker_run_folders_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _run(empty, "a")
    assert is_run_folder(empty)
    old = tmp_path / "old"
    _run(old, "a", states=True)
    (old / RUN_MARKER).unlink()  # as written by trimtab before the marker
    assert is_run_folder(old)
    _run(old, "b")
    assert json.loads((old / "result.json").read_text()) == {"run": "b"}
    assert not (old / "states.csv").exists()


def test_write_text_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "plan.json"
    write_text_atomic(path, "old\n")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "new \ud800 text")  # a lone surrogate cannot be UTF-8
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    with pytest.raises(OutputError, match="is a folder"):
        write_text_atomic(tmp_path, "x")


def test_backtest_refuses_a_bad_out_before_running(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("keep")
    runner = CliRunner()
    result = runner.invoke(
        app, ["backtest", "--data", str(tmp_path / "nodata"), "--out", str(home)]
    )
    assert result.exit_code == 2
    assert "not a trimtab run folder" in result.output and "Traceback" not in result.output
    assert _snapshot(home) == {"keep.txt": b"keep"}


_WRITER = textwrap.dedent(
    """
    import sys, time
    from trimtab.journal import write_run_folder

    def fill(folder):
        for name in ("result.json", "equity.csv", "weights.csv", "trades.csv", "states.csv"):
            (folder / name).write_text(tag)
            time.sleep(0.01)

    print("ready", flush=True)
    sys.stdin.readline()
    while True:
        tag = repr(time.time())
        write_run_folder({out!r}, fill)
    """
)


def test_kill_9_during_writes_leaves_the_old_run_or_the_new_one_never_a_mix(tmp_path):
    out = tmp_path / "run"
    names = ("result.json", "equity.csv", "weights.csv", "trades.csv", "states.csv")
    write_run_folder(out, lambda f: [(f / n).write_text("start") for n in names])
    files = {p.name for p in out.iterdir()}
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(out=str(out)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    tags = set()
    for delay in (0.005, 0.023, 0.041, 0.067, 0.089, 0.13, 1.0):
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stdin.close()
        # Whole: one run's files, every one from the same run.
        contents = {p.name: p.read_text() for p in out.iterdir()}
        assert set(contents) == files
        assert len({v for k, v in contents.items() if k != RUN_MARKER}) == 1
        tags.add(contents["result.json"])
    assert len(tags) > 1  # some kills came after a write went in
    _run(out, "after")  # the next write clears what the killed writers left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "writer.py"]


def test_an_atomic_write_to_a_device_or_a_pipe_writes_through_and_keeps_it(tmp_path):
    """`--json /dev/null` must not replace the device with a plain file (as root it can)."""
    import stat
    import threading

    from trimtab.journal.files import write_text_atomic

    write_text_atomic(os.devnull, "{}")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]
