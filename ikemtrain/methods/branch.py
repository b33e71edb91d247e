"""One modality's share of the pre-training model (docs/method.md, "Pre-training")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ikemtrain.nn.heads import ProjectionHead
from ikemtrain.nn.momentum import copy_params, momentum_update
from ikemtrain.nn.queue import MemoryBank
from ikemtrain.nn.stgcn import STGCN

__all__ = ["ModalityBranch"]


class ModalityBranch(nn.Module):
    """Query and key encoders, their MoCo heads, the key queue and the IKEM head of one modality.

    * ``encoder_q`` / ``encoder_k``: :class:`STGCN` ``(N, C, T, V, M) -> (N, hidden_dim)``;
    * ``head_q`` / ``head_k``: ``g_u``, ``hidden_dim -> hidden_dim -> feature_dim``;
    * ``queue``: :class:`MemoryBank` ``(feature_dim, queue_size)``;
    * ``ikem_head``: ``g~_u``: ``hidden_dim -> ikem_dim -> ikem_dim`` (``ikem_dim`` is
      ``n_modalities * feature_dim``, no head-size literals).

    ``head_bn`` puts a BatchNorm in every head (:class:`ProjectionHead`; a named departure).

    The key side never has ``requires_grad``; it moves only through :meth:`momentum_update`.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        feature_dim: int,
        queue_size: int,
        ikem_dim: int,
        head_bn: bool,
    ):
        super().__init__()
        backbone = dict(backbone)
        self.encoder_q = STGCN(**backbone)
        self.encoder_k = STGCN(**backbone)
        hidden = self.encoder_q.hidden_dim
        self.head_q = ProjectionHead(hidden, hidden, feature_dim, head_bn)
        self.head_k = ProjectionHead(hidden, hidden, feature_dim, head_bn)
        self.queue = MemoryBank(feature_dim, queue_size)
        self.ikem_head = ProjectionHead(hidden, ikem_dim, ikem_dim, head_bn)
        for p in self.key_parameters():
            p.requires_grad_(False)

    def key_parameters(self):
        yield from self.encoder_k.parameters()
        yield from self.head_k.parameters()

    def copy_keys_from_queries(self) -> None:
        """Key encoder and head <- query encoder and head (parameters and buffers)."""
        copy_params(self.encoder_q, self.encoder_k)
        copy_params(self.head_q, self.head_k)

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """EMA of the key side towards the query side: ``theta_k <- m theta_k + (1-m) theta_q``."""
        momentum_update(self.encoder_q, self.encoder_k, m)
        momentum_update(self.head_q, self.head_k, m)

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, q)``: pooled feature ``(N, hidden_dim)`` and ``q = normalize(g_u(f))``."""
        f = self.encoder_q(x)
        return f, F.normalize(self.head_q(f), dim=1)

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """``k = normalize(g_u^k(f_u^k(x)))`` ``(N, feature_dim)``, without gradient."""
        return F.normalize(self.head_k(self.encoder_k(x)), dim=1)

    def ikem_embedding(self, f: torch.Tensor) -> torch.Tensor:
        """``z~_u = normalize(g~_u(f))`` ``(N, ikem_dim)`` from the pooled query feature."""
        return F.normalize(self.ikem_head(f), dim=1)
