"""Shared fixtures: where the real NTU files are, small seeded data, gloo process groups."""

from __future__ import annotations

import os
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Idle OpenMP threads (torch, numba) spin by default; on a 2-core CI machine that starves
# the other half of the test suite. Set before torch or numba start their thread pools.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_HERE = Path(__file__).resolve().parent


def shared_data_dir() -> Path | None:
    """``$SKELMOD_SHARED_DATA`` or ``../shared/data`` beside the checkout, if present."""
    candidates = []
    if os.environ.get("SKELMOD_SHARED_DATA"):
        candidates.append(Path(os.environ["SKELMOD_SHARED_DATA"]))
    candidates += [_HERE.parent.parent / "shared" / "data", _HERE.parent / ".." / "shared" / "data"]
    for c in candidates:
        if (c / "ntu-real").is_dir():
            return c.resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip(
            "real NTU files not found: set SKELMOD_SHARED_DATA to the folder holding ntu-real/ "
            "(CI has them in ../shared/data)"
        )
    return d


@pytest.fixture(scope="session")
def ntu_real_dir(shared_data: Path) -> Path:
    return shared_data / "ntu-real"


@pytest.fixture(scope="session")
def ntu_real_files(ntu_real_dir: Path) -> list[Path]:
    return sorted(ntu_real_dir.glob("*.skeleton"))


@pytest.fixture(scope="session")
def nucla_dir(tmp_path_factory) -> Path:
    """The 1,484 shared N-UCLA ``all_sqe`` JSON files, unpacked once into a temporary folder."""
    d = shared_data_dir()
    archive = d / "nucla" / "all_sqe.tar.gz" if d is not None else None
    if archive is None or not archive.is_file():
        pytest.skip(
            "N-UCLA files not found: set SKELMOD_SHARED_DATA to the folder holding "
            "nucla/all_sqe.tar.gz (CI has it in ../shared/data)"
        )
    out = tmp_path_factory.mktemp("nucla")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out / "all_sqe"


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors: one intra-op thread is much faster than contended OpenMP threads.

    Use per module with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank: int, world: int, port: int, worker: Callable[..., None], args: tuple) -> None:
    # What torchrun gives each process, so that init_distributed() joins a group of `world`.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    import torch

    torch.set_num_threads(1)
    worker(rank, *args)


@pytest.fixture
def spawn_gloo() -> Callable[..., None]:
    """``spawn_gloo(worker, world, *args)`` runs ``worker(rank, *args)`` in ``world`` processes
    with the torchrun environment of one gloo group on a free local port (``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and one torch thread each, and
    waits for them; a failing rank fails the test. ``worker`` is a module-level function (it
    is pickled into the spawned processes)."""

    def spawn(worker: Callable[..., None], world: int, *args: Any) -> None:
        import torch

        torch.multiprocessing.spawn(
            _gloo_rank, args=(world, _free_port(), worker, args), nprocs=world, join=True
        )

    return spawn
