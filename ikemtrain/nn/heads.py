"""Projection heads (reference-ikem.md §6): ``Linear -> ReLU -> Linear``.

The MoCo head ``g_u`` is ``ProjectionHead(256, 256, 128)`` (98,688 parameters) and the IKEM
head ``g~_u`` is ``ProjectionHead(256, n_modalities * feature_dim, n_modalities * feature_dim)``
(787,968 for six modalities, 246,528 for three). The linear classifier is a plain ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """``(N, in_dim) -> (N, out)`` through ``Linear(in_dim, hidden) -> ReLU -> Linear``."""

    def __init__(self, in_dim: int = 256, hidden: int = 256, out: int = 128):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
