"""SIGKILLs of a real `trimtab run` process trading on the emulator (a process of its
own) with faults queued (a timeout after an order is accepted, 429s, a partial fill),
each followed by a restart: no client order id sent twice, no fill lost or booked twice,
the books equal to the exchange's. The full soak: ``bench/soak_venue.py``."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="needs ../shared/data")


def test_killed_runs_on_the_emulator_send_each_order_once_and_lose_no_fill(tmp_path):
    import soak_venue

    log = io.StringIO()
    res = soak_venue.soak_run(tmp_path, 3, random.Random(7), "2022-01-12", log)
    assert json.loads(log.getvalue()) == json.loads(json.dumps(res))
    assert res["kills"] == 3 and res["starts"] == 4
    assert res["orders"] > 10 and res["trades"] >= res["orders"] - 2
    assert res["duplicate_cids"] == 0 and res["duplicate_attempts"] == 0
    assert res["booked_twice"] == 0 and res["lost"] == []
    assert res["book_mismatches"] == [] and res["gate"] == "ACTIVE", res["gate_summary"]
    assert res["last_bar"] is not None
