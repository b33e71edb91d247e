"""ikemtrain.collapse: the per-modality collapse signal on constructed healthy and collapsed
batches, against plain loops written from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ikemtrain.collapse import (
    COLLAPSE_STD,
    alignment,
    collapse_stats,
    embedding_std,
    is_collapsed,
    uniformity,
)
from ikemtrain.engine.loop import collapse_warnings


def _batches(seed: int = 0, b: int = 64, d: int = 32):
    """A healthy batch (directions spread over the sphere), a collapsed one (every sample one
    direction plus 1 % noise: what a head whose bias dominates gives), and the keys of the
    healthy one (the queries, slightly moved)."""
    g = torch.Generator().manual_seed(seed)
    healthy = F.normalize(torch.randn(b, d, generator=g), dim=1)
    common = torch.randn(1, d, generator=g)
    collapsed = F.normalize(common + 0.01 * torch.randn(b, d, generator=g), dim=1)
    keys = F.normalize(healthy + 0.1 * torch.randn(b, d, generator=g), dim=1)
    return healthy, collapsed, keys


def _naive_std(z: np.ndarray) -> float:
    b, d = z.shape
    total = 0.0
    for j in range(d):
        mean = sum(z[i, j] for i in range(b)) / b
        total += math.sqrt(sum((z[i, j] - mean) ** 2 for i in range(b)) / (b - 1))
    return total / d * math.sqrt(d)


def _naive_uniformity(z: np.ndarray, t: float = 2.0) -> float:
    b = z.shape[0]
    vals = [
        math.exp(-t * float(((z[i] - z[j]) ** 2).sum()))
        for i in range(b)
        for j in range(b)
        if i != j
    ]
    return math.log(sum(vals) / len(vals))


def test_healthy_and_collapsed_batches_are_told_apart() -> None:
    healthy, collapsed, keys = _batches()
    s_h, s_c = float(embedding_std(healthy)), float(embedding_std(collapsed))
    assert 0.8 < s_h < 1.2  # random directions: std of each coordinate is about 1/sqrt(d)
    assert s_c < 0.02
    assert not is_collapsed(s_h) and is_collapsed(s_c)
    assert s_c < COLLAPSE_STD < s_h
    # uniformity: about -2t*(1 - 0) = -4 for spread unit vectors, ~0 for one direction
    assert float(uniformity(healthy)) < -3.0 and float(uniformity(collapsed)) > -0.01
    # a collapse also makes alignment trivially perfect, which is why it is not enough alone
    assert float(alignment(collapsed, collapsed.roll(1, 0))) < 1e-3
    assert float(alignment(healthy, keys)) > 0.1


def test_signals_match_plain_loops() -> None:
    healthy, collapsed, keys = _batches(seed=3, b=12, d=6)
    for z in (healthy, collapsed):
        zn = z.double().numpy()
        assert float(embedding_std(z)) == pytest.approx(_naive_std(zn), rel=1e-5)
        assert float(uniformity(z)) == pytest.approx(_naive_uniformity(zn), abs=1e-5)
    q, k = healthy.double().numpy(), keys.double().numpy()
    naive_align = sum(float(((q[i] - k[i]) ** 2).sum()) for i in range(len(q))) / len(q)
    assert float(alignment(healthy, keys)) == pytest.approx(naive_align, rel=1e-5)
    stats = collapse_stats(healthy, keys)
    assert set(stats) == {"std", "alignment", "uniformity"}


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"z must be \(B, d\) with B >= 2"):
        embedding_std(torch.ones(1, 4))
    with pytest.raises(ValueError, match="q and k must have one shape"):
        alignment(torch.ones(3, 4), torch.ones(3, 5))


def test_warning_names_each_collapsed_head() -> None:
    record = {
        "epoch": 3,
        "collapse": {"joint": {"std": 0.004}, "bone": {"std": 0.9}},
        "collapsed": ["joint"],
    }
    lines = collapse_warnings(record)
    assert len(lines) == 1
    assert lines[0].startswith("warning: epoch 3: the joint projection head has collapsed")
    assert "0.004" in lines[0]
    assert collapse_warnings({"epoch": 1, "collapse": {}, "collapsed": []}) == []
