"""The skeleton graph with ST-GCN's ``spatial`` partition (docs/method.md, "Backbone").

Joints are 0-based here (1-based NTU ids in the prose); the edges and the centre come from a
:class:`skelmod.layout.JointLayout` (default ``ntu25``; :func:`layout_partition` for any
registered layout). The adjacency tensor ``A`` has shape ``(3, V, V)`` and is indexed
``A[k, source, target]``: the graph convolution computes ``h'_w = sum_k sum_v h_{k,v} A[k, v, w]``.

The reference builds the partition from hop distances truncated at ``max_hop = 1``, so every
joint more than one hop from the centre (joint 21) is at distance infinity and the partition
degenerates exactly as in the original ST-GCN code (the truncated hop distance, kept on purpose):

* ``A_0 = diag(1/d)``;
* ``A_2`` holds the 8 directed edges whose source is strictly closer to the centre than the
  target (21->2, 21->3, 21->5, 21->9, 2->1, 3->4, 5->6, 9->10 in 1-based ids);
* ``A_1`` holds the other 40 directed neighbour edges;

each entry weighted ``1/d_target``, ``d`` being the degree with the self-loop.
"""

from __future__ import annotations

import numpy as np

from skelmod.layout import GRAPH_CENTER, GRAPH_EDGES, JointLayout, V, get_layout

__all__ = [
    "adjacency",
    "hop_distance",
    "layout_partition",
    "normalize_digraph",
    "spatial_partition",
]


def adjacency(num_node: int = V, edges=GRAPH_EDGES) -> np.ndarray:
    """Symmetric 0/1 adjacency ``(V, V)`` with self-loops, from undirected 0-based ``edges``."""
    a = np.eye(num_node)
    for i, j in edges:
        if not (0 <= i < num_node and 0 <= j < num_node):
            raise ValueError(f"edge ({i}, {j}) is outside the {num_node} nodes")
        a[i, j] = a[j, i] = 1.0
    return a


def hop_distance(num_node: int = V, edges=GRAPH_EDGES, max_hop: int = 1) -> np.ndarray:
    """Hop distances ``(V, V)`` as ST-GCN computes them: ``inf`` beyond ``max_hop``."""
    a = adjacency(num_node, edges)
    dist = np.full((num_node, num_node), np.inf)
    reach = [np.linalg.matrix_power(a, d) > 0 for d in range(max_hop + 1)]
    for d in range(max_hop, -1, -1):
        dist[reach[d]] = d
    return dist


def normalize_digraph(a: np.ndarray) -> np.ndarray:
    """Divide column ``i`` of ``a`` by its column sum ``d_i`` (zero columns stay zero)."""
    d = a.sum(axis=0)
    inv = np.zeros_like(d)
    inv[d > 0] = 1.0 / d[d > 0]
    return a * inv[None, :]


def spatial_partition(
    num_node: int = V, edges=GRAPH_EDGES, center: int = GRAPH_CENTER, max_hop: int = 1
) -> np.ndarray:
    """The ``spatial`` partition ``A`` of shape ``(1 + 2*max_hop, V, V)``, float64.

    ``A[k, j, i]`` is the weight from source ``j`` to target ``i``. With the defaults this is
    the reference's degenerate 3-subset partition described in the module docstring.
    """
    hop = hop_distance(num_node, edges, max_hop)
    norm = normalize_digraph((hop <= max_hop).astype(np.float64))
    to_center = hop[:, center]
    subsets = []
    for h in range(max_hop + 1):
        on_hop = hop == h
        # (j, i): source j, target i; inf == inf counts as "same distance", as in the reference.
        src = to_center[:, None]
        dst = to_center[None, :]
        root = on_hop & (src == dst)
        close = on_hop & (src > dst)
        further = on_hop & (src < dst)
        if h == 0:
            subsets.append(np.where(root, norm, 0.0))
        else:
            subsets.append(np.where(root | close, norm, 0.0))
            subsets.append(np.where(further, norm, 0.0))
    return np.stack(subsets)


def layout_partition(layout: str | JointLayout | None = None) -> np.ndarray:
    """:func:`spatial_partition` of a registered joint layout's edges and centre."""
    lay = get_layout(layout)
    return spatial_partition(lay.V, lay.edges, lay.center)
