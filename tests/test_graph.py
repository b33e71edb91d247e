"""The NTU graph and its degenerate 'spatial' partition, checked against reference-ikem.md §5."""

import numpy as np
import pytest

from ikemtrain.nn.graph import adjacency, hop_distance, normalize_digraph, spatial_partition
from skelmod.layout import GRAPH_EDGES, V

# §5, 1-based source -> target
A2_EDGES_1B = [(2, 1), (21, 2), (21, 3), (3, 4), (21, 5), (5, 6), (21, 9), (9, 10)]


@pytest.fixture(scope="module")
def A():
    return spatial_partition()


def degrees():
    d = np.ones(V)
    for i, j in GRAPH_EDGES:
        d[i] += 1
        d[j] += 1
    return d


def test_degrees_as_stated():
    d = degrees()
    assert d[21 - 1] == 5 and d[1 - 1] == 4
    for end in (4, 16, 20, 22, 24):
        assert d[end - 1] == 2
    assert len(GRAPH_EDGES) == 24


def test_shape_and_nonzero_counts(A):
    assert A.shape == (3, V, V)
    assert [int(np.count_nonzero(a)) for a in A] == [25, 40, 8]


def test_a0_is_inverse_degree_diagonal(A):
    np.testing.assert_allclose(A[0], np.diag(1.0 / degrees()), rtol=0, atol=1e-15)


def test_a2_holds_exactly_the_eight_listed_edges(A):
    d = degrees()
    expected = np.zeros((V, V))
    for src, dst in A2_EDGES_1B:
        expected[src - 1, dst - 1] = 1.0 / d[dst - 1]
    np.testing.assert_allclose(A[2], expected, rtol=0, atol=1e-15)


def test_a1_holds_the_remaining_forty_directed_edges(A):
    d = degrees()
    expected = np.zeros((V, V))
    for i, j in GRAPH_EDGES:
        expected[i, j] = 1.0 / d[j]
        expected[j, i] = 1.0 / d[i]
    for src, dst in A2_EDGES_1B:
        expected[src - 1, dst - 1] = 0.0
    np.testing.assert_allclose(A[1], expected, rtol=0, atol=1e-15)


def test_columns_sum_to_one(A):
    np.testing.assert_allclose(A.sum(axis=(0, 1)), np.ones(V), rtol=0, atol=1e-12)


def test_hop_distance_is_truncated_at_one():
    hop = hop_distance()
    assert hop[20, 20] == 0 and hop[20, 1] == 1 and hop[1, 20] == 1
    assert np.isinf(hop[20, 0])  # joint 21 to joint 1 is two hops: beyond max_hop
    assert np.array_equal(np.isfinite(hop), adjacency() > 0)


def test_normalize_digraph_divides_columns_and_keeps_zero_columns():
    a = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    out = normalize_digraph(a)
    np.testing.assert_allclose(out, [[0.25, 0, 0.5], [0.25, 0, 0.5], [0.5, 0, 0]])


def test_bad_edge_is_a_clear_error():
    with pytest.raises(ValueError, match="outside"):
        adjacency(3, [(0, 5)])
