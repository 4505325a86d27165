"""The batch bin lookup (`core.binning`) against numpy's binary search, column by column,
on edges of every shape a baseline can have and values placed on, between and beyond
them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mlmon.core.binning import BinLookup


def reference(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.column_stack([edges[j].searchsorted(x[:, j], side="left") for j in range(len(edges))])


def padded(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of edges as a block's [F, E] array: sorted, +inf after a short row's edges."""
    out = np.full((len(rows), max(len(r) for r in rows)), np.inf)
    for j, r in enumerate(rows):
        out[j, : len(r)] = np.sort(r)
    return out


def same(edges: np.ndarray, x: np.ndarray) -> None:
    got = BinLookup(edges).bin(x)
    want = reference(edges, x)
    seen = ~np.isnan(x)
    assert got.shape == x.shape
    assert np.array_equal(got[seen], want[seen])


def values_around(edges: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per column: edges themselves, their float neighbours, points between them and far
    beyond, -inf/+inf and NaN."""
    cols = []
    for row in edges:
        e = row[np.isfinite(row)]
        pool = np.concatenate(
            [
                e,
                np.nextafter(e, -np.inf),
                np.nextafter(e, np.inf),
                (e[:-1] + e[1:]) / 2,
                [e[0] - 1e6, e[-1] + 1e6, -np.inf, np.inf, np.nan, 0.0, -0.0],
            ]
        )
        cols.append(rng.choice(pool, n))
    return np.column_stack(cols)


@pytest.mark.parametrize("seed", range(40))
def test_lookup_equals_binary_search_on_baselines_of_every_shape(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(rng.integers(1, 12)):
        kind = rng.integers(0, 6)
        k = int(rng.integers(1, 120))
        if kind == 0:  # quantiles of a normal
            r = np.quantile(
                rng.normal(rng.uniform(-1e3, 1e3), rng.uniform(1e-3, 1e3), 5000),
                np.linspace(0, 1, k),
            )
        elif kind == 1:  # a heavy tail: most edges crowded at the left of the range
            r = np.quantile(rng.lognormal(0, 3, 5000), np.linspace(0, 1, k))
        elif kind == 2:  # repeated edges (a discrete feature)
            r = rng.integers(0, 5, k).astype(float)
        elif kind == 3:  # one edge
            r = np.array([rng.normal()])
        elif kind == 4:  # huge magnitudes: the range itself overflows
            r = rng.choice([-1.7e308, -1e300, 0.0, 1e300, 1.7e308], k)
        else:  # tiny gaps
            r = 1.0 + np.arange(k) * np.finfo(float).eps
        rows.append(np.unique(r) if kind != 2 else r)
    edges = padded(rows)
    same(edges, values_around(edges, 500, rng))


@settings(max_examples=300, deadline=None)
@given(
    edges=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 40)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    data=st.data(),
)
def test_lookup_equals_binary_search_property(edges, data):
    edges = np.sort(edges, axis=1)
    x = data.draw(
        hnp.arrays(
            np.float64,
            st.tuples(st.integers(1, 50), st.just(edges.shape[0])),
            elements=st.one_of(st.floats(-2e6, 2e6), st.sampled_from(sorted(set(edges.ravel())))),
        )
    )
    same(edges, x)


def test_crowded_edges_are_finished_by_binary_search():
    """999 edges in the first cell of 4,000: a guess far off is still made exact."""
    edges = np.concatenate([np.linspace(0, 1e-9, 999), [1e9]])[None, :]
    x = np.linspace(-1e-9, 2e-9, 10_001)[:, None]
    same(edges, x)


def test_the_rounds_alone_settle_every_value_of_a_usual_baseline():
    """Quantile edges of smooth data, values on, beside and between them, and beyond:
    the cell guess and its rounds settle each one exactly, with no binary search."""
    rng = np.random.default_rng(5)
    rows = [
        np.quantile(rng.normal(m, s, 20_000), np.linspace(0, 1, 100))
        for m, s in ((0, 1), (1e4, 50), (-3, 1e-3), (40, 10))
    ]
    rows.append(np.quantile(rng.exponential(2.0, 20_000), np.linspace(0, 1, 60)))
    edges = padded(rows)
    x = values_around(edges, 2_000, rng)
    x[np.isnan(x)] = 0.0
    x = np.maximum(x, np.finfo(np.float64).min)
    g, settled = BinLookup(edges).rounds(x)
    assert settled
    assert np.array_equal(g, reference(edges, x))
