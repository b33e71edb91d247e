"""Device choice and optional DistributedDataParallel, driven by torchrun's environment.

Launch several processes with ``torchrun --nproc-per-node N ikemtrain pretrain ...``: torchrun
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``), and
:func:`init_distributed` joins the process group (NCCL on CUDA, gloo on CPU). A plain launch
(no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) runs in one process without ``torch.distributed``.
Only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..config import ConfigError

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "follow_rank_0",
    "init_distributed",
    "resolve_device",
    "share_outcome",
    "shutdown_distributed",
    "wrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` (1 and 0 without DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a usable :class:`torch.device`.

    ``auto`` picks CUDA when available, else CPU. Under torchrun, ``auto`` and ``cuda`` mean
    ``cuda:LOCAL_RANK``. Raises ConfigError for a malformed name or a GPU that is not there.
    """
    spec = str(spec).strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto" and not available:
        return torch.device("cpu")
    if not available:
        raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if spec in ("auto", "cuda"):
        index = _env_int("LOCAL_RANK", 0) if _env_int("WORLD_SIZE", 1) > 1 else 0
    else:
        index = int(spec.split(":")[1])
    if index >= count:
        raise ConfigError(f"device cuda:{index} requested but only {count} GPU(s) are visible")
    return torch.device("cuda", index)


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE > 1`` (or use one already set up)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """DDP wrapper when distributed, else the model itself.

    ``find_unused_parameters=True`` because stage 1 leaves the IKEM heads without gradients
    (and the EKEM/IKEM switches may leave more); parameters unused on every rank keep
    ``grad=None``, so SGD skips them exactly as in a single process.
    """
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself without DDP)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def share_outcome(info: DistInfo, device: torch.device, error: Exception | None = None) -> None:
    """Rank 0 tells the other ranks (waiting in :func:`follow_rank_0`) how a step only it
    takes went: ``error`` None (go on) or the error it failed with (they raise it too), so that
    a refusal on rank 0 (e.g. of the output folder) never leaves them waiting in a collective.
    """
    if not info.enabled:
        return
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:  # send what can travel: its type and message
            error = RuntimeError(f"rank 0 failed: {type(error).__name__}: {error}")
    dist.broadcast_object_list([error], src=0, device=_object_device(device))


def follow_rank_0(info: DistInfo, device: torch.device) -> None:
    """On a rank other than 0: wait for :func:`share_outcome` and raise the error rank 0
    failed with, if any."""
    box: list[Exception | None] = [None]
    dist.broadcast_object_list(box, src=0, device=_object_device(device))
    if box[0] is not None:
        raise box[0]


def _object_device(device: torch.device) -> torch.device | None:
    # NCCL moves the pickled object through this rank's GPU; gloo through the CPU
    return device if device.type == "cuda" else None
