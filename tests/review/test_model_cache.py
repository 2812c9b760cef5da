"""The drawdown model's answer is kept on disk keyed by its inputs: a second review of the
same holdings on the same data reads it back instead of refitting, and any change of
the data or the weights is a new key."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from trimtab.review.run import _model_digest, model_probability

BAR = pd.Timestamp("2023-06-30", tz="UTC")


def test_the_fit_is_read_back_and_keyed_by_its_inputs(daily_panel, tmp_path):
    weights = pd.Series({"BTCUSDT": 0.5, "ETHUSDT": 0.3})
    fresh = model_probability(
        weights, daily_panel, BAR, threshold=0.1, horizon_days=7, cache=tmp_path
    )
    (path,) = tmp_path.glob("*.json")
    assert fresh is not None and 0.0 < fresh < 1.0
    assert json.loads(path.read_text())["probability"] == fresh

    # A planted answer is what comes back: the second call does not fit.
    path.write_text(json.dumps({"probability": 0.123}))
    again = model_probability(
        weights, daily_panel, BAR, threshold=0.1, horizon_days=7, cache=tmp_path
    )
    assert again == 0.123

    history = daily_panel.slice(end=BAR)
    row = weights.reindex(history.symbols).fillna(0.0).to_numpy(float)
    key = _model_digest(history, row, "threshold=0.1 horizon=7.0")
    assert path.stem == key
    other_weights = row.copy()
    other_weights[history.symbols.index("BTCUSDT")] = 0.4
    assert _model_digest(history, other_weights, "threshold=0.1 horizon=7.0") != key
    assert _model_digest(history, row, "threshold=0.2 horizon=7.0") != key
    close = history.close.copy()  # a copy: the session's panel stays as it is
    close.iloc[-1, 0] *= 1 + 1e-12  # one bar, one tick
    changed = dataclasses.replace(history, close=close)
    assert _model_digest(changed, row, "threshold=0.1 horizon=7.0") != key
    assert not np.isnan(row).any()
