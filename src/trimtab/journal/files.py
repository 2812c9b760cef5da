"""Writing a run's record to a folder: result.json, equity, weights, trades, decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

OUTPUT_FILES = (
    "result.json",
    "equity.csv",
    "weights.csv",
    "trades.csv",
    "decisions.jsonl",
    "rejections.csv",
)


def write_run(
    outdir: str | Path,
    result_doc: dict[str, Any],
    equity: pd.Series,
    weights: pd.DataFrame,
    trades: pd.DataFrame,
    decisions: list[dict[str, Any]],
    rejections: pd.DataFrame | None = None,
    states: pd.DataFrame | None = None,
) -> Path:
    """Write one run's files into ``outdir`` (created if needed) and return it."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
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
    return out


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
