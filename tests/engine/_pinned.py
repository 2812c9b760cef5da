"""The figures the engine restructuring must not change: several comparison runs, each
policy's end equity, trades, fees and decisions, on the real data and on the sample.

``python -m tests.engine._pinned`` rewrites ``pinned_figures.json`` from the current code
(only ever on purpose, with the reason in the commit)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from trimtab.engine.runner import RunSpec, run_comparison

PINNED = Path(__file__).with_name("pinned_figures.json")

SPECS = {
    "demo": dict(policy="managed", start="2019-01-01", universe="top:10"),
    "rules": dict(
        policy="equal-weight",
        start="2021-01-01",
        end="2022-06-30",
        universe="top:8",
        rebalance="cost-aware,calendar:weekly,threshold:0.05",
    ),
    "managed-band": dict(policy="managed", start="2020-06-01", end="2021-12-31", universe="top:6"),
}


def figures(kind: str, data: Path, settings=None) -> dict:
    out = {}
    for name, kwargs in SPECS.items():
        spec = RunSpec(data=str(data), **kwargs)
        cfg = None
        if name == "managed-band":
            from trimtab.config import parse_config

            cfg = parse_config("sizing:\n  trading: band\n  band: 0.2\n")
        comp = run_comparison(spec, settings=cfg)
        for policy, r in comp.results.items():
            trades = r.trades
            # Symbols and sides exactly; quantities, prices and fees as sums compared to
            # 1e-9: a digest of rounded floats flips on a last-bit difference between
            # machines (BLAS and SIMD paths differ), a sum does not.
            digest = hashlib.blake2b(
                trades[["symbol", "side"]].to_csv(index=False).encode(), digest_size=8
            ).hexdigest()
            out[f"{name}/{policy}"] = {
                "end_equity": float(r.equity.iloc[-1]),
                "equity_sum": float(r.equity.sum()),
                "trades": len(trades),
                "fees": float(trades["fee_quote"].sum()),
                "decisions": len(r.decisions),
                "rejections": len(r.rejections),
                "trades_digest": digest,
                "quantity_sum": float(trades["quantity"].abs().sum()),
                "notional_sum": float((trades["quantity"].abs() * trades["price"]).sum()),
                "fee_sum": float(trades["fee"].abs().sum()),
                "sharpe": comp.metrics[policy]["sharpe"],
            }
    return out


if __name__ == "__main__":
    from tests.conftest import HAVE_REAL_DATA, REAL_DATA
    from trimtab.data import sample

    doc = {"sample": figures("sample", sample.ensure_sample())}
    if HAVE_REAL_DATA:
        doc["real"] = figures("real", REAL_DATA)
    PINNED.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED}")
