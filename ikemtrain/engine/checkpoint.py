"""Atomic checkpoints with everything needed to resume a run exactly.

A training checkpoint (``OUT/checkpoint.pt``, rewritten after every epoch) holds:

* ``kind``: ``"pretrain"`` or ``"distill"`` (linear evaluation writes ``"linear-eval"`` heads);
* ``model``: the model's state dict, including the queues and pointers (buffers);
* ``optimizer``: the SGD state (momentum buffers);
* ``epoch``: the last finished epoch (1-based);
* ``rng``: torch (CPU and every CUDA device), numpy and Python random states;
* ``config``: the settings of the run (``PretrainConfig.to_dict()``, with the modality options
  ``bones`` / ``unit_axis`` resolved from the cache);
* ``layout``: the joint layout of the cache it was trained on (absent in older checkpoints,
  which read as ``ntu25``), and ``num_class``, the cache's class count;
* ``format`` / ``version``: what kind of file this is.

Files are written to a temporary file in the same folder and moved into place with
:func:`os.replace`, so an interrupted save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "capture_rng",
    "check_layout",
    "checkpoint_layout",
    "find_checkpoint",
    "load_checkpoint",
    "load_run",
    "restore_rng",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "ikemtrain-pretrain"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable ikemtrain checkpoint."""


def capture_rng() -> dict[str, Any]:
    """Snapshot of every global random state a run consumes."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global state)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where this machine has the devices)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format tags) to ``path`` atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def checkpoint_layout(state: dict[str, Any]) -> str:
    """The joint layout a checkpoint was trained on (``ntu25`` for older checkpoints)."""
    return str(state.get("layout", "ntu25"))


def check_layout(state: dict[str, Any], reader: Any, path: str | os.PathLike) -> None:
    """Refuse a cache (``CacheReader``) whose joint layout is not the checkpoint's."""
    trained = checkpoint_layout(state)
    if reader.layout.name != trained:
        raise CheckpointError(
            f"{reader.path}: joint layout {reader.layout.name}, but checkpoint {path} was "
            f"trained on {trained}; use a cache of layout {trained}"
        )


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder (``RUN/checkpoint.pt``) or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (a run folder is accepted too).

    Raises CheckpointError for a missing file, a file that is not a torch checkpoint, or a
    checkpoint of another format or version.
    """
    path = find_checkpoint(path)
    try:
        # The checkpoint holds numpy / python RNG states, which weights_only refuses.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many kinds for a corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ikemtrain pre-training checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')}, this ikemtrain reads {VERSION}"
        )
    return state


def load_run(run: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """A training run folder (or checkpoint file) -> ``(checkpoint path, state)``.

    ``state["kind"]`` says what wrote it (``"pretrain"``, ``"distill"``, ``"linear-eval"``;
    ``"pretrain"`` when absent). A linear-evaluation folder (``results.json``, no checkpoint)
    is named as such instead of "no checkpoint".
    """
    path = Path(run)
    if path.is_dir() and not (path / CHECKPOINT_NAME).exists() and (path / "results.json").exists():
        raise CheckpointError(
            f"{path} is a linear-evaluation run (results.json, no {CHECKPOINT_NAME}); "
            "give the training run it evaluated"
        )
    path = find_checkpoint(path)
    state = load_checkpoint(path)
    state.setdefault("kind", "pretrain")
    return path, state
