"""The review's report cache: a repeated review of the same inputs is read back (without
pandas), and a change of the holdings, the data, the options or the code it came from
is a review computed again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.review.conftest import EXAMPLES, SHARED_DATA
from trimtab.data import DataError
from trimtab.review import HoldingsError, report_cache
from trimtab.review.report_cache import read_report, report_key, write_report
from trimtab.review.run import run_review

HOLDINGS = (
    "as_of: 2023-06-30\nsubaccounts:\n  core:\n    cash: {USDT: 1000}\n    spot: {BTC: 0.1}\n"
)


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "bars.csv").write_text("timestamp,symbol,close\n2023-06-30,BTCUSDT,30000\n")
    (data / ".hidden").write_text("not read by the review")
    holdings = tmp_path / "holdings.yaml"
    holdings.write_text(HOLDINGS)
    return holdings, data


def test_the_key_changes_with_every_input_it_names(tmp_path):
    holdings, data = _inputs(tmp_path)
    key = report_key(holdings, "loc", data, "fmt='text'")
    assert key == report_key(holdings, "loc", data, "fmt='text'")
    (data / ".hidden").write_text("hidden files are not data")  # not read by load_panel
    assert report_key(holdings, "loc", data, "fmt='text'") == key

    assert report_key(holdings, "loc", data, "fmt='json'") != key
    assert report_key(holdings, "elsewhere", data, "fmt='text'") != key
    holdings.write_text(HOLDINGS.replace("0.1", "0.2"))
    assert report_key(holdings, "loc", data, "fmt='text'") != key
    holdings.write_text(HOLDINGS)
    assert report_key(holdings, "loc", data, "fmt='text'") == key

    bars = data / "bars.csv"
    stat = bars.stat()
    bars.write_text(bars.read_text().replace("30000", "30001"))  # same size, one digit
    os.utime(bars, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    assert report_key(holdings, "loc", data, "fmt='text'") != key
    bars.write_text(bars.read_text().replace("30001", "30000"))
    assert report_key(holdings, "loc", data, "fmt='text'") == key
    (data / "funding_x.csv").write_text("a new file in the folder")
    assert report_key(holdings, "loc", data, "fmt='text'") != key

    assert report_key(tmp_path / "absent.yaml", "loc", data, "fmt='text'") is None


def test_a_report_is_read_back_only_while_its_code_is_unchanged(tmp_path):
    run_py = Path(report_cache.__file__).with_name("run.py")
    real = report_cache._file_digest(run_py)
    write_report(tmp_path, "k1", "the report", {"review/run.py": real})
    assert read_report(tmp_path, "k1") == "the report"
    write_report(tmp_path, "k2", "old code's report", {"review/run.py": "0" * 40})
    assert read_report(tmp_path, "k2") is None
    write_report(tmp_path, "k3", "no code recorded", {})  # not kept
    assert not (tmp_path / "k3.json").exists()
    (tmp_path / "k4.json").write_text("{not json")
    assert read_report(tmp_path, "k4") is None
    assert read_report(tmp_path / "absent", "k1") is None


def test_the_folder_keeps_the_most_recently_used(tmp_path, monkeypatch):
    monkeypatch.setattr(report_cache, "KEEP", 2)
    code = report_cache.code_digests()
    for i, key in enumerate(("a", "b", "c")):
        write_report(tmp_path, key, key, code)
        os.utime(tmp_path / f"{key}.json", ns=(10**18 + i, 10**18 + i))
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["b", "c"]


def test_run_review_reads_the_report_back(tmp_path):
    folder = tmp_path / "reports"
    holdings = EXAMPLES / "holdings.yaml"
    text = run_review(holdings, str(SHARED_DATA), report_cache=folder)
    (entry,) = folder.glob("*.json")
    stored = json.loads(entry.read_text())
    assert stored["report"] == text
    # the code recorded is the review's, not the command line's
    assert {"review/review.py", "risk/score.py", "data/readers.py"} <= set(stored["code"])
    assert "cli.py" not in stored["code"]

    # A planted report is what comes back: the second call does not review.
    entry.write_text(json.dumps(dict(stored, report="planted")))
    assert run_review(holdings, str(SHARED_DATA), report_cache=folder) == "planted"
    out = tmp_path / "out.txt"
    assert run_review(holdings, str(SHARED_DATA), report_cache=folder, out=out) == "planted"
    assert out.read_text() == "planted"
    # Another format or date is another report; no cache at all is a fresh review.
    md = run_review(holdings, str(SHARED_DATA), fmt="markdown", report_cache=folder)
    assert md.startswith("# Portfolio review")
    assert len(list(folder.glob("*.json"))) == 2
    assert run_review(holdings, str(SHARED_DATA), report_cache=False) == text
    # A drawdown function of the caller's own is never cached.
    run_review(holdings, str(SHARED_DATA), report_cache=folder, drawdown_probability=lambda *a: 0.5)
    assert len(list(folder.glob("*.json"))) == 2


def test_a_repeated_review_does_not_import_pandas(tmp_path):
    folder = tmp_path / "reports"
    holdings = EXAMPLES / "holdings.yaml"
    text = run_review(holdings, str(SHARED_DATA), report_cache=folder)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from trimtab.review import run_review\n"
        f"text = run_review({str(holdings)!r}, {str(SHARED_DATA)!r}, report_cache=Path({str(folder)!r}))\n"
        "print(sorted(m for m in ('pandas', 'numpy', 'scipy', 'sklearn') if m in sys.modules))\n"
        "sys.stdout.write(text)\n"
    )
    got = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    loaded, _, report = got.partition("\n")
    assert loaded == "[]"
    assert report == text


def test_a_first_review_does_not_import_scipy_optimize_or_special(tmp_path):
    """A review with every cache empty fits the drawdown model with SciPy's compiled
    L-BFGS-B (``trimtab.risk.lbfgsb``) and NumPy's expit: the scipy.optimize and
    scipy.special packages (and scipy.stats, scipy.sparse, scikit-learn) are not
    imported, a third to half a second of a first review."""
    from trimtab.risk.lbfgsb import _setulb

    if _setulb() is None:
        pytest.skip("SciPy release not verified: the model imports scipy.optimize")
    script = (
        "import os, sys\n"
        "from trimtab.review import run_review\n"
        f"run_review({str(EXAMPLES / 'holdings.yaml')!r}, {str(SHARED_DATA)!r}, report_cache=False)\n"
        "heavy = ('scipy.optimize', 'scipy.special', 'scipy.stats', 'scipy.sparse', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = dict(os.environ, TRIMTAB_CACHE=str(tmp_path / "cache"))  # every cache empty
    got = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert got.strip() == "[]"
    assert (tmp_path / "cache" / "drawdown").is_dir()  # the model was fitted, not read back


def test_a_bad_holdings_file_is_reported_before_missing_data(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("subaccounts:\n  core:\n    spot: {BTC: lots}\n")
    with pytest.raises(HoldingsError, match="bad.yaml"):
        run_review(bad, str(tmp_path / "no-data"), report_cache=tmp_path / "reports")
    good = tmp_path / "good.yaml"
    good.write_text(HOLDINGS)
    with pytest.raises(DataError, match="no-data"):
        run_review(good, str(tmp_path / "no-data"), report_cache=tmp_path / "reports")
    assert not (tmp_path / "reports").exists()
