"""The guard's per-cluster sums in one pass agree to the bit with summing each cluster."""

import numpy as np
import pytest

from trimtab.guard.limits import LimitGuard


@pytest.mark.parametrize("largest", [1, 3, 7, 8, 20])
def test_cluster_sums_equal_each_clusters_own_sum(largest):
    rng = np.random.default_rng(largest)
    symbols = tuple(f"C{j}USDT" for j in range(60))
    sizes = rng.integers(1, largest + 1, 60)
    clusters, j = {}, 0
    for k, size in enumerate(sizes):
        for s in symbols[j : j + size]:
            clusters[s] = f"k{k}"
        j += size
    # Members scattered across the universe, not neighbours.
    shuffled = list(symbols)
    rng.shuffle(shuffled)
    guard = LimitGuard(clusters=dict(zip(shuffled, clusters.values(), strict=False)))
    for _ in range(20):
        w = rng.dirichlet(np.ones(60)) * rng.uniform(0.1, 3.0)
        w[rng.random(60) < 0.2] = 0.0
        want = [w[ix].sum() for _, ix in guard._groups(symbols)]
        got = guard._cluster_sums(symbols, w)
        assert got.tolist() == want
