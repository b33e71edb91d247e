"""Torch datasets over a skelmod cache (``decisions.md`` 7; ``reference-ikem.md`` §3).

Samples are ``(C, T, V, M)`` = ``(3, T, 25, 2)`` float32 tensors (layout in ``skelmod.layout``);
the default collate turns a dict of them into ``dict[str, (B, 3, T, 25, 2)]``.

* :class:`PretrainDataset` (``Feeder_dual``): two independent augmentations (temporal crop,
  shear; :mod:`ikemtrain.augment`) of the same joints, then the modalities recomputed from
  each augmented view with :func:`skelmod.modalities.compute_modalities`, on the CPU in the
  loader worker. γ = ``frame_count / t_target`` uses the header frame count from the cache.
* :class:`LinearEvalDataset` (``Feeder_single``): the cached modalities, unaugmented.

Both read only the metadata in the main process; the HDF5 handle is opened lazily by
:class:`skelmod.cache.CacheReader` on the first array read, i.e. inside each worker after the
fork, and is never pickled.

Random streams (fix of bug 14, §9): sample ``i`` of epoch ``e`` draws its augmentations from
``np.random.Generator(PCG64(SeedSequence((seed, e, i))))``. The result depends only on
``(seed, epoch, index)``: it is the same for any number of workers or any sample order, and
different every epoch. The epoch travels with the index: :class:`EpochSampler` yields
``(epoch, i)`` keys, so persistent workers need no notification of a new epoch (a plain int
key uses the epoch last given to :meth:`PretrainDataset.set_epoch`).

Workers must not be forked from a process whose numba kernels already started OpenMP threads
(GNU OpenMP aborts); :func:`worker_context` gives the safe start method for DataLoaders.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from skelmod.cache import CacheError, CacheReader
from skelmod.modalities import MODALITIES, compute_modalities

from .augment import augment

__all__ = [
    "EpochSampler",
    "LinearEvalDataset",
    "PretrainDataset",
    "sample_generator",
    "worker_context",
]


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation stream of one sample in one epoch (see the module docstring)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, epoch, index))))


def _open(cache: str | os.PathLike | CacheReader) -> CacheReader:
    return cache if isinstance(cache, CacheReader) else CacheReader(cache)


def _split_indices(reader: CacheReader, split: str) -> np.ndarray:
    indices = reader.split_indices(split)
    if indices.size == 0:
        raise CacheError(f"{reader.path}: split {split!r} holds no samples")
    return indices


class PretrainDataset(Dataset):
    """Two augmented views of each sample of ``split`` with their modalities (§3, §4).

    Args:
        cache_path: a cache file (or an open :class:`CacheReader`); must hold ``joint``.
        split: split name, e.g. ``"xsub-train"``.
        modalities: modality names to compute for each view (``skelmod.modalities`` names).
        t_target: T the cache was resized to; sets γ = frame_count / t_target.
        crop_ratio: temporal crop ratio (P = T // ratio; <= 0 disables).
        shear: shear amplitude (<= 0 disables).
        seed: base seed of the per-sample streams.
        unit_axis, bones: passed to ``compute_modalities`` (``decisions.md`` 4).

    Item ``i`` (or ``(epoch, i)``) is ``(view1, view2, label, frame_count)``: ``view*`` are
    ``dict[str, float32 tensor (3, T, 25, 2)]``, ``label`` an int (action − 1) and
    ``frame_count`` the header frame count (int).
    """

    def __init__(
        self,
        cache_path: str | os.PathLike | CacheReader,
        split: str,
        modalities: Sequence[str],
        t_target: int = 50,
        crop_ratio: int = 6,
        shear: float = 0.5,
        seed: int = 0,
        unit_axis: bool = False,
        bones: str = "6v",
    ):
        self.reader = _open(cache_path)
        self.reader.require(["joint"])
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(
                f"unknown modalities {unknown or '(none given)'}; expected names among "
                f"{', '.join(MODALITIES)}"
            )
        if self.reader.t != t_target:
            raise ValueError(
                f"{self.reader.path}: cache has T={self.reader.t} frames, but t_target={t_target}"
            )
        self.split = split
        self.indices = _split_indices(self.reader, split)
        self.modalities = tuple(modalities)
        self.t_target = int(t_target)
        self.crop_ratio = int(crop_ratio)
        self.shear = float(shear)
        self.seed = int(seed)
        self.unit_axis = bool(unit_axis)
        self.bones = bones
        self.labels = self.reader.meta["label"][self.indices].astype(np.int64)
        self.frame_counts = self.reader.meta["frame_count"][self.indices].astype(np.int64)
        bad = np.flatnonzero(self.frame_counts <= 0)
        if bad.size:
            name = self.reader.meta["name"][self.indices[bad[0]]]
            raise CacheError(f"{self.reader.path}: sample {name} has frame_count <= 0")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation streams the next items draw from."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def _views(self, joints: np.ndarray, frame_count: int, rng: np.random.Generator):
        views = []
        for _ in range(2):
            x = augment(joints, rng, self.crop_ratio, self.shear).astype(np.float32, copy=False)
            mods = compute_modalities(
                x,
                frame_count,
                t_target=self.t_target,
                modalities=self.modalities,
                unit_axis=self.unit_axis,
                bones=self.bones,
            )
            views.append({m: torch.from_numpy(np.ascontiguousarray(mods[m])) for m in mods})
        return views

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(self.indices[i])
        joints = self.reader.read("joint", index)
        frame_count = int(self.frame_counts[i])
        rng = sample_generator(self.seed, epoch, index)
        view1, view2 = self._views(joints, frame_count, rng)
        return view1, view2, int(self.labels[i]), frame_count


class LinearEvalDataset(Dataset):
    """Cached modalities of ``split``, unaugmented (§8 inputs).

    Raises :class:`CacheError` naming the modalities the cache lacks (and how to add them).
    Item ``i`` is ``(x, label, frame_count)`` with ``x: dict[str, float32 tensor (3,T,25,2)]``.
    """

    def __init__(
        self,
        cache_path: str | os.PathLike | CacheReader,
        split: str,
        modalities: Sequence[str],
    ):
        self.reader = _open(cache_path)
        if not modalities:
            raise ValueError("no modalities given")
        self.reader.require(modalities)
        self.split = split
        self.modalities = tuple(modalities)
        self.indices = _split_indices(self.reader, split)
        self.labels = self.reader.meta["label"][self.indices].astype(np.int64)
        self.frame_counts = self.reader.meta["frame_count"][self.indices].astype(np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        x = {m: torch.from_numpy(self.reader.read(m, index)) for m in self.modalities}
        return x, int(self.labels[i]), int(self.frame_counts[i])

    def read_block(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        """Samples ``lo .. hi-1`` of the split: ``dict[str, (n, 3, T, 25, 2)]``, one read each."""
        idx = self.indices[lo:hi]
        return {m: torch.from_numpy(self.reader.read(m, idx)) for m in self.modalities}


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The torch generator that orders epoch ``epoch`` (independent of any global state)."""
    state = np.random.SeedSequence((seed, epoch, 0x5EED)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class EpochSampler(Sampler):
    """Yields ``(epoch, i)`` keys: a seeded permutation per epoch, split over DDP ranks.

    The order of epoch ``e`` is ``randperm(n)`` from :func:`epoch_generator` ``(seed, e)``
    (or ``0..n-1`` without ``shuffle``). With ``world_size > 1`` the permutation is cut to a
    multiple of ``world_size`` and rank ``r`` takes every ``world_size``-th key from ``r``, as
    :class:`torch.utils.data.DistributedSampler` does with ``drop_last``. It lives in the main
    process; call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ):
        self.n, self.seed, self.shuffle = int(n), int(seed), bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(self.n)
        order = order[: len(self) * self.world_size][self.rank :: self.world_size]
        return iter([(self.epoch, int(i)) for i in order])


def worker_context(workers: int) -> mp.context.BaseContext | None:
    """Start method for DataLoader workers: forkserver (else spawn), never a plain fork,
    because numba's OpenMP threads in the parent make fork unsafe; None without workers."""
    if workers <= 0:
        return None
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
