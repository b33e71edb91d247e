"""The skeleton graphs and their degenerate 'spatial' partition, checked against
docs/method.md, "Backbone" (ntu25) and the layout rules (kinect-v1-20), both written here by
hand."""

import numpy as np
import pytest

from ikemtrain.nn.graph import (
    adjacency,
    hop_distance,
    layout_partition,
    normalize_digraph,
    spatial_partition,
)

V = 25
# docs/data.md, "Joint layouts and datasets": the 24 ST-GCN edges (1-based), written out here
# rather than read from skelmod
GRAPH_EDGES = [
    (a - 1, b - 1)
    for a, b in [
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
        (19, 18), (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
    ]
]  # fmt: skip
# docs/method.md, "Backbone": A_2, 1-based source -> target
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


def test_the_default_partition_is_the_ntu25_layout(A):
    np.testing.assert_array_equal(layout_partition("ntu25"), A)


def test_kinect_v1_partition():
    """Kinect v1: the tree rooted at ShoulderCenter (3), whose neighbours are 2, 4, 5, 9."""
    edges = [
        (1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10),
        (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19),
    ]  # fmt: skip
    A = layout_partition("kinect-v1-20")
    d = np.ones(20)
    for i, j in edges:
        d[i - 1] += 1
        d[j - 1] += 1
    assert d[3 - 1] == 5 and d[1 - 1] == 4
    # closer-to-centre sources: the centre to its neighbours, and those one hop further
    a2 = [(3, 2), (3, 4), (3, 5), (3, 9), (2, 1), (5, 6), (9, 10)]
    expected = np.zeros((20, 20))
    for src, dst in a2:
        expected[src - 1, dst - 1] = 1.0 / d[dst - 1]
    assert A.shape == (3, 20, 20)
    assert [int(np.count_nonzero(a)) for a in A] == [20, 2 * 19 - 7, 7]
    np.testing.assert_allclose(A[0], np.diag(1.0 / d), rtol=0, atol=1e-15)
    np.testing.assert_allclose(A[2], expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(A.sum(axis=(0, 1)), np.ones(20), rtol=0, atol=1e-12)


def test_bad_edge_is_a_clear_error():
    with pytest.raises(ValueError, match="outside"):
        adjacency(3, [(0, 5)])
