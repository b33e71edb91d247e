"""Shared fixtures: where the real NTU files are, and small seeded data."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

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
