"""Momentum (EMA) encoders: plain functions over two modules of the same architecture
(docs/method.md, "Pre-training")."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["copy_params", "momentum_update", "momentum_update_all"]


def _pairs(query_module: nn.Module, key_module: nn.Module):
    q, k = list(query_module.parameters()), list(key_module.parameters())
    if len(q) != len(k) or any(a.shape != b.shape for a, b in zip(q, k, strict=True)):
        raise ValueError("query and key modules must have the same parameter shapes")
    return zip(q, k, strict=True)


@torch.no_grad()
def momentum_update(query_module: nn.Module, key_module: nn.Module, m: float) -> None:
    """``theta_k <- m * theta_k + (1 - m) * theta_q`` over parameters (not buffers)."""
    for p_q, p_k in _pairs(query_module, key_module):
        p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)


@torch.no_grad()
def momentum_update_all(pairs, m: float) -> None:
    """:func:`momentum_update` of every ``(query_module, key_module)`` in ``pairs`` as two fused
    ``torch._foreach`` operations (the same arithmetic per element, so the same result)."""
    q, k = [], []
    for query_module, key_module in pairs:
        for p_q, p_k in _pairs(query_module, key_module):
            q.append(p_q.detach())
            k.append(p_k)
    if k:
        torch._foreach_mul_(k, m)
        torch._foreach_add_(k, q, alpha=1.0 - m)


@torch.no_grad()
def copy_params(query_module: nn.Module, key_module: nn.Module) -> None:
    """Copy the query parameters and buffers into the key module; keys get no gradient."""
    for p_q, p_k in _pairs(query_module, key_module):
        p_k.copy_(p_q.detach())
        p_k.requires_grad_(False)
    for b_q, b_k in zip(query_module.buffers(), key_module.buffers(), strict=True):
        b_k.copy_(b_q)
