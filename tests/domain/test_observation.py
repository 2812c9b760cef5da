"""An observation's features at the decision bar."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trimtab.domain.decisions import Observation, PortfolioState


def test_features_at_is_each_feature_at_the_decision_bar():
    rng = np.random.default_rng(0)
    features = {"a": rng.normal(size=(5, 3)), "b": rng.normal(size=(5, 3))}
    close = rng.uniform(1, 2, (5, 3))
    state = PortfolioState(1.0, 1.0, np.zeros(3), close[2], 1.0)
    obs = Observation(
        2,
        pd.Timestamp("2024-01-03", tz="UTC"),
        ("A", "B", "C"),
        {"close": close},
        features,
        np.ones(3, bool),
        np.ones(3, bool),
        state,
        2,
    )
    got = obs.features_at()
    assert list(got) == list(obs.feature_names)
    for name in obs.feature_names:
        assert np.array_equal(got[name], obs.feature(name))
        assert np.array_equal(got[name], features[name][2])  # the bar, not the last row
