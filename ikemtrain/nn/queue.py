"""Memory bank of past keys: a ring buffer of ``K`` unit columns (docs/method.md, "Pre-training").

The reference writes ``Q[:, ptr:ptr+B] = k^T`` with a device-index offset and asserts
``K % B == 0`` (the device bugs); here the write wraps around the end, so any batch size works, and
under ``torch.distributed`` the keys of every rank are gathered first so all ranks hold the
same bank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["MemoryBank", "gather_keys"]


@torch.no_grad()
def gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """Concatenate ``keys`` ``(B, dim)`` of all ranks (rank order); identity without DDP.

    Every rank must pass the same ``B`` (use ``drop_last``).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return keys
    parts = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, keys.contiguous())
    return torch.cat(parts, dim=0)


class MemoryBank(nn.Module):
    """``bank`` buffer ``(dim, size)`` of column-normalised ``randn``, and a ``ptr`` buffer.

    Column ``i`` holds one past key. Both are buffers, so they land in the state dict.
    """

    def __init__(self, dim: int, size: int):
        super().__init__()
        if dim < 1 or size < 1:
            raise ValueError(f"memory bank needs dim >= 1 and size >= 1, got {dim} and {size}")
        self.register_buffer("bank", F.normalize(torch.randn(dim, size), dim=0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def dim(self) -> int:
        return self.bank.shape[0]

    @property
    def size(self) -> int:
        return self.bank.shape[1]

    def snapshot(self) -> torch.Tensor:
        """A detached copy of ``bank`` ``(dim, size)``, safe to use across a later enqueue."""
        return self.bank.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, gather: bool = True) -> None:
        """Write ``keys`` ``(B, dim)`` at ``ptr`` (wrapping), and advance ``ptr`` by ``B mod K``.

        With ``gather`` and an initialised process group the keys of all ranks are written.
        If more keys than ``size`` arrive, the last ``size`` of them are kept, as if written
        one after another.
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (B, {self.dim}), got shape {tuple(keys.shape)}")
        if gather:
            keys = gather_keys(keys)
        b, size = keys.shape[0], self.size
        start = self.ptr
        if b > size:
            start = start + (b - size)
            keys = keys[b - size :]
        idx = (start + torch.arange(keys.shape[0], device=self.bank.device)) % size
        self.bank[:, idx] = keys.detach().to(self.bank.dtype).T
        self.ptr.copy_((self.ptr + b) % size)
