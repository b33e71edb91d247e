"""Tiny runs the evaluation-protocol tests share: a seeded cache and a 1-epoch pre-training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_data import make_cache

from ikemtrain.config import PretrainConfig
from ikemtrain.engine import pretrain

#: A narrow ST-GCN (hidden 16) so that every protocol runs in about a second.
BACKBONE = {"hidden_channels": 4, "hidden_dim": 16, "dropout": 0.5}
THREE = ("joint", "velocity", "bone")


def pretrain_run(cache: Path, out: Path, modalities=THREE) -> Path:
    """A one-epoch pre-training run on ``cache``'s xsub-train."""
    cfg = PretrainConfig(
        modalities=modalities,
        epochs=1,
        cross_epoch=1,
        batch_size=4,
        queue_size=8,
        workers=0,
        feature_dim=8,
        **BACKBONE,
    )
    pretrain(cfg, cache, out, device="cpu", echo=None, tensorboard=False)
    return out


def twin_cache(path: Path, n: int = 24, classes: int = 3) -> Path:
    """A cache whose xsub-val sample ``2i+1`` has the joints and label of xsub-train sample
    ``2i``: a joint-stream 1-NN must find every twin (100 % top-1)."""
    rng = np.random.default_rng(7)
    joints = (0.3 * rng.standard_normal((n, 3, 24, 25, 2))).astype(np.float32)
    joints[1::2] = joints[0::2]
    labels = np.repeat(np.arange(n // 2) % classes, 2)
    return make_cache(path, n=n, t=24, joints=joints, labels=labels)
