"""Projection heads (docs/method.md, "Pre-training"): ``Linear -> ReLU -> Linear``.

The MoCo head ``g_u`` is ``ProjectionHead(256, 256, 128)`` (98,688 parameters) and the IKEM
head ``g~_u`` is ``ProjectionHead(256, n_modalities * feature_dim, n_modalities * feature_dim)``
(787,968 for six modalities, 246,528 for three). The linear classifier is a plain ``nn.Linear``
per modality; a fused stream averages their logits (:func:`fused_logits`;
docs/method.md, "Linear evaluation").

``batch_norm=True`` is a named departure (``head_bn``, off in ``paper-ntu60``): the MoCo v3
projection head (Chen, Xie & He 2021), a BatchNorm after the hidden Linear and one without
affine parameters after the output Linear. The pooled ST-GCN features are post-ReLU, so a
component shared by every sample dominates their spread (on N-UCLA at init: mean |f| 0.45,
cross-sample std 0.13), and the plain head maps every sample to nearly one direction (mean
pairwise cosine of the queries 0.95 before any training step, 1.000 after one epoch).
Centring in the head removes that shared component.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["ProjectionHead", "fused_logits"]


def fused_logits(heads: nn.ModuleDict, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The mean over modalities of ``heads[m](features[m])``: ``(N, num_class)`` (the fusion
    of linear evaluation; one modality gives its head's logits)."""
    return torch.stack([heads[m](features[m]) for m in heads]).mean(0)


class ProjectionHead(nn.Module):
    """``(N, in_dim) -> (N, out)`` through ``Linear(in_dim, hidden) -> ReLU -> Linear``.

    With ``batch_norm``: ``Linear -> BatchNorm1d -> ReLU -> Linear -> BatchNorm1d(affine=False)``.
    Every argument is required: the sizes and ``batch_norm`` (``head_bn``) come from the
    settings (:mod:`ikemtrain.config`).
    """

    def __init__(self, in_dim: int, hidden: int, out: int, batch_norm: bool):
        super().__init__()
        if batch_norm:
            self.layers = nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Linear(hidden, out),
                nn.BatchNorm1d(out, affine=False),
            )
        else:
            self.layers = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
