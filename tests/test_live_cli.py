"""`trimtab run --live` is deliberate: it needs the run id confirmed, and --exchange-url,
--testnet and --replay cannot slip a paper run onto a real venue or the reverse. Paper is
the default."""

from __future__ import annotations

import pytest

from tests._cli import trimtab
from tests.engine._live import AUTO_ONLY, write_portfolio


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--live"], "confirm with --confirm paper"),
        (["--live", "--confirm", "other"], "--confirm 'other' is not this run's id ('paper')"),
        (["--exchange-url", "http://127.0.0.1:9"], "give --live too"),
        (["--live", "--testnet", "--confirm", "paper"], "give one"),
        (["--testnet", "--replay", "auto"], "--replay drives a paper run"),
    ],
)
def test_live_needs_a_confirmation_and_no_mixed_venue(tmp_path, extra, words):
    path = write_portfolio(tmp_path, AUTO_ONLY)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    out = trimtab("run", "--portfolio", str(path), "--db", db, *extra, cwd=tmp_path, code=2)
    assert words in out.stderr, out.stderr
    assert not (tmp_path / "store.db").exists()  # nothing was started


def test_live_without_keys_names_the_variables(tmp_path):
    path = write_portfolio(tmp_path, AUTO_ONLY)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    out = trimtab(
        "run",
        "--portfolio",
        str(path),
        "--db",
        db,
        "--live",
        "--confirm",
        "paper",
        "--exchange-url",
        "http://127.0.0.1:9",
        "--from",
        "2022-01-03",
        cwd=tmp_path,
        code=2,
        env={"TRIMTAB_DATA": "/nonexistent"},
    )
    assert "TRIMTAB_PILOT_API_KEY and TRIMTAB_PILOT_API_SECRET" in out.stderr, out.stderr
