"""The review's HMM regime fit is kept on disk keyed by the holdings' daily index: a
second review of the same holdings on the same data reads it back (no hmmlearn import,
no EM), and any change of the index is a new key."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from trimtab.review import review_portfolio
from trimtab.review.holdings import parse_holdings
from trimtab.review.review import fit_holdings_regime
from trimtab.review.run import cached_regime_fit


def _level(daily_panel, days: int = 700) -> pd.Series:
    close = daily_panel.close[["BTCUSDT", "ETHUSDT"]].dropna().iloc[-days:]
    r = close.pct_change().iloc[1:].mean(axis=1)
    return pd.Series(
        np.concatenate(([1.0], np.cumprod(1.0 + r.to_numpy()))), index=close.index, name="holdings"
    )


def test_the_fit_is_read_back_and_keyed_by_the_index(daily_panel, tmp_path):
    level = _level(daily_panel)
    fresh = fit_holdings_regime(level)
    probs, vols = fresh
    assert len(probs) == 3 and abs(sum(probs) - 1.0) < 1e-9
    assert vols is not None and vols == sorted(vols)  # states ordered calm -> turbulent

    assert cached_regime_fit(level, cache=tmp_path) == fresh
    (path,) = tmp_path.glob("*.json")
    # JSON keeps every bit of the floats.
    assert json.loads(path.read_text()) == {"probabilities": probs, "state_volatility": vols}

    # A planted answer is what comes back: the second call does not fit.
    path.write_text(json.dumps({"probabilities": [0.1, 0.2, 0.7], "state_volatility": None}))
    assert cached_regime_fit(level, cache=tmp_path) == ([0.1, 0.2, 0.7], None)

    # One tick on the last bar is another key (a second file), fitted afresh.
    moved = level.copy()
    moved.iloc[-1] *= 1 + 1e-12
    assert cached_regime_fit(moved, cache=tmp_path)[0] != [0.1, 0.2, 0.7]
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_an_unreadable_entry_is_refitted(daily_panel, tmp_path):
    level = _level(daily_panel, 400)
    cached_regime_fit(level, cache=tmp_path)
    (path,) = tmp_path.glob("*.json")
    path.write_text("{not json")
    assert cached_regime_fit(level, cache=tmp_path) == fit_holdings_regime(level)
    # A cache folder that cannot be written (a file in its way) costs speed, not the fit.
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    assert cached_regime_fit(level, cache=blocked) == fit_holdings_regime(level)


def test_the_review_with_the_cache_is_the_review_without(daily_panel, tmp_path):
    holdings = parse_holdings(
        "as_of: 2023-06-30\nsubaccounts:\n  core:\n    spot: {BTC: 0.5, ETH: 4}\n", "yaml"
    )
    plain = review_portfolio(holdings, daily_panel, drawdown_probability=0.2)
    for _ in range(2):  # the first call fits and writes, the second reads back
        cached = review_portfolio(
            holdings,
            daily_panel,
            drawdown_probability=0.2,
            regime_fit=lambda level: cached_regime_fit(level, cache=tmp_path),
        )
        assert cached == plain
    assert plain["regime"]["probabilities"] is not None
    assert len(list(tmp_path.glob("*.json"))) == 1
