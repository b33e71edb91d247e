"""Torch datasets over a skelmod cache (docs/method.md, "Augmentations").

Samples are ``(C, T, V, M)`` float32 tensors (``(3, T, 25, 2)`` for NTU; V and M are the
cache's, ``skelmod.layout``); the default collate turns a dict of them into
``dict[str, (B, 3, T, V, M)]``. Modalities are computed in the cache's joint layout with the
cache's modality options (``CacheReader.layout``, ``CacheReader.feature_options``).

* :class:`PretrainDataset` (``Feeder_dual``): two independent augmentations (temporal crop,
  shear; :mod:`ikemtrain.augment`) of the same joints, then the modalities recomputed from
  each augmented view with :func:`skelmod.modalities.compute_modalities`, on the CPU in the
  loader worker. γ = ``frame_count / t_target`` uses the header frame count from the cache.
* :class:`LinearEvalDataset` (``Feeder_single``): the cached modalities, unaugmented; a
  modality the cache lacks (or holds with other options) is computed from the cached joints.

Both read only the metadata in the main process; the HDF5 handle is opened lazily by
:class:`skelmod.cache.CacheReader` on the first array read, i.e. inside each worker after the
fork, and is never pickled.

Random streams (fixing the worker-seed bug): sample ``i`` of epoch ``e`` draws its augmentations
from ``np.random.Generator(PCG64(SeedSequence((seed, e, i))))``. The result depends only on
``(seed, epoch, index)``: it is the same for any number of workers or any sample order, and
different every epoch. The epoch travels with the index: :class:`EpochSampler` yields
``(epoch, i)`` keys, so persistent workers need no notification of a new epoch (a plain int
key uses the epoch last given to :meth:`PretrainDataset.set_epoch`).

Workers must not be forked from a process whose numba kernels already started OpenMP threads
(GNU OpenMP aborts); :func:`worker_context` gives the safe start method for DataLoaders.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from skelmod.cache import CacheError, CacheReader
from skelmod.layout import (
    MODALITY_REGISTRY,
    T_TARGET,
    LayoutError,
    ModalityOptions,
    check_modalities,
)
from skelmod.modalities import compute_modalities

from .augment import augment, augment_batch, view_draws

__all__ = [
    "BatchedViews",
    "EpochSampler",
    "LinearEvalDataset",
    "PretrainDataset",
    "open_cache",
    "sample_generator",
    "worker_context",
]


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation stream of one sample in one epoch (see the module docstring)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, epoch, index))))


def open_cache(cache: str | os.PathLike | CacheReader) -> CacheReader:
    """``cache`` itself if it is an open :class:`~skelmod.cache.CacheReader`, else one on that
    path: what every function taking a cache accepts. Its joints are checked as the writer
    checked them (finite, within 100 m: :meth:`~skelmod.cache.CacheReader.check_values`)."""
    reader = cache if isinstance(cache, CacheReader) else CacheReader(cache)
    reader.check_values()
    return reader


def _modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    try:
        return check_modalities(list(modalities), allow_all=False)
    except LayoutError as e:
        raise ValueError(str(e)) from None


def _options(reader: CacheReader, unit_axis: bool | None, bones: str | None) -> ModalityOptions:
    """The cache's modality options, or the given ones (None keeps the cache's)."""
    return ModalityOptions.resolve(reader.feature_options, bones=bones, unit_axis=unit_axis)


def _split_indices(reader: CacheReader, split: str) -> np.ndarray:
    indices = reader.split_indices(split)
    if indices.size == 0:
        raise CacheError(f"{reader.path}: split {split!r} holds no samples")
    return indices


class PretrainDataset(Dataset):
    """Two augmented views of each sample of ``split`` with their modalities.

    Args:
        cache_path: a cache file (or an open :class:`CacheReader`); must hold ``joint``.
        split: split name, e.g. ``"xsub-train"``.
        modalities: modality names to compute for each view (``skelmod.modalities`` names).
        t_target: T the cache was resized to; sets γ = frame_count / t_target.
        crop_ratio: temporal crop ratio (P = T // ratio; <= 0 disables).
        shear: shear amplitude (<= 0 disables).
        rotation: largest random rotation about the vertical axis, in degrees (0, the
            reference, disables; a departure, :func:`ikemtrain.augment.rotate`).
        seed: base seed of the per-sample streams.
        crop_ratio, shear, rotation and seed are required: they are settings
        (``PretrainConfig`` / ``DistillConfig``, whose defaults are the paper's 6, 0.5, 0, 0).
        unit_axis, bones: passed to ``compute_modalities``
            (docs/method.md, "The six modalities"); None (the default) takes the cache's own
            options.

    Item ``i`` (or ``(epoch, i)``) is ``(view1, view2, label, frame_count)``: ``view*`` are
    ``dict[str, float32 tensor (3, T, V, M)]``, ``label`` an int (the class) and
    ``frame_count`` the header frame count (int).
    """

    def __init__(
        self,
        cache_path: str | os.PathLike | CacheReader,
        split: str,
        modalities: Sequence[str],
        *,
        crop_ratio: int,
        shear: float,
        rotation: float,
        seed: int,
        t_target: int = T_TARGET,
        unit_axis: bool | None = None,
        bones: str | None = None,
    ):
        self.reader = open_cache(cache_path)
        self.reader.require(["joint"])
        modalities = _modalities(modalities)
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
        self.rotation = float(rotation)
        self.seed = int(seed)
        self.options = _options(self.reader, unit_axis, bones)
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

    def _modalities(self, x: np.ndarray, frame_count) -> dict[str, torch.Tensor]:
        """The modalities of augmented joints ``x`` (one sample or a batch) as tensors."""
        mods = compute_modalities(
            x.astype(np.float32, copy=False),
            frame_count,
            t_target=self.t_target,
            modalities=self.modalities,
            unit_axis=self.options.unit_axis,
            bones=self.options.bones,
            layout=self.reader.layout,
        )
        return {m: torch.from_numpy(np.ascontiguousarray(mods[m])) for m in mods}

    def _views(self, joints: np.ndarray, frame_count: int, rng: np.random.Generator):
        return [
            self._modalities(
                augment(joints, rng, self.crop_ratio, self.shear, self.rotation), frame_count
            )  # fmt: skip
            for _ in range(2)
        ]

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(self.indices[i])
        joints = self.reader.read("joint", index)
        frame_count = int(self.frame_counts[i])
        rng = sample_generator(self.seed, epoch, index)
        view1, view2 = self._views(joints, frame_count, rng)
        return view1, view2, int(self.labels[i]), frame_count

    def batch(self, keys: Sequence[int | tuple[int, int]]):
        """Items ``keys`` at once, as the default collate makes them of ``[self[k] for k in
        keys]`` and with the same values (tested): ``(view1, view2, label, frame_count)``
        with ``view*`` ``dict[str, (B, 3, T, V, M)]`` and ``(B,)`` int64 tensors.

        One cache read, then per view one augmentation call over the batch
        (:func:`ikemtrain.augment.augment_batch`, with each sample's own draws from its own
        stream) and one modality call over the batch; what stays per sample is the drawing.
        """
        keys = list(keys)
        pos = np.array([k[1] if isinstance(k, tuple) else k for k in keys], dtype=np.int64)
        epochs = [k[0] if isinstance(k, tuple) else self.epoch for k in keys]
        index = self.indices[pos]
        joints = self.reader.read("joint", index)
        frame_counts = self.frame_counts[pos]
        draws: tuple[list, list] = ([], [])
        for epoch, i in zip(epochs, index, strict=True):
            rng = sample_generator(self.seed, epoch, int(i))
            for view in draws:
                view.append(view_draws(rng, joints.shape[2], self.crop_ratio, self.shear,
                                       self.rotation))  # fmt: skip
        views = []
        for view in draws:
            crops, shears, rotations = (
                None if parts[0] is None else np.stack(parts) for parts in zip(*view, strict=True)
            )
            views.append(
                self._modalities(augment_batch(joints, crops, shears, rotations), frame_counts)
            )
        labels = torch.from_numpy(self.labels[pos].astype(np.int64))
        return views[0], views[1], labels, torch.from_numpy(frame_counts.astype(np.int64))


class BatchedViews(Dataset):
    """A dataset with a ``batch(keys)`` method seen as a dataset of batches: item ``keys`` (a
    list, as :class:`torch.utils.data.BatchSampler` yields them) is ``dataset.batch(keys)``.
    For a DataLoader with ``batch_size=None``."""

    def __init__(self, dataset: PretrainDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, keys):
        return self.dataset.batch(keys)


class LinearEvalDataset(Dataset):
    """The modalities of ``split``, unaugmented (linear-evaluation inputs).

    A modality is read from the cache when the cache holds it with the wanted options
    (``unit_axis``, ``bones``; None: the cache's own); otherwise it is computed from the
    cached joints, exactly as ``skelmod features`` would store it (:attr:`computed` names
    those). Item ``i`` (or an :class:`EpochSampler` key ``(epoch, i)``) is
    ``(x, label, frame_count)`` with ``x: dict[str, float32 tensor (3, T, V, M)]``.
    """

    def __init__(
        self,
        cache_path: str | os.PathLike | CacheReader,
        split: str,
        modalities: Sequence[str],
        unit_axis: bool | None = None,
        bones: str | None = None,
    ):
        self.reader = open_cache(cache_path)
        self.modalities = _modalities(modalities)
        self.options = _options(self.reader, unit_axis, bones)
        self.computed = tuple(m for m in self.modalities if not self._cached(m))
        if self.computed:
            self.reader.require(["joint"])
        self.split = split
        self.indices = _split_indices(self.reader, split)
        self.labels = self.reader.meta["label"][self.indices].astype(np.int64)
        self.frame_counts = self.reader.meta["frame_count"][self.indices].astype(np.int64)

    def _cached(self, m: str) -> bool:
        if m not in self.reader.modalities:
            return False
        if not MODALITY_REGISTRY[m].bone_options:
            return True
        recorded = self.reader.modality_options.get(m) or {}
        own = ModalityOptions.resolve({**self.reader.feature_options.to_json(), **recorded})
        return own == self.options

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, idx) -> dict[str, torch.Tensor]:
        out = {m: self.reader.read(m, idx) for m in self.modalities if m not in self.computed}
        if self.computed:
            out.update(
                compute_modalities(
                    self.reader.read("joint", idx),
                    self.reader.meta["frame_count"][idx],
                    t_target=self.reader.t,
                    modalities=self.computed,
                    unit_axis=self.options.unit_axis,
                    bones=self.options.bones,
                    layout=self.reader.layout,
                )
            )
        return {m: torch.from_numpy(np.ascontiguousarray(out[m])) for m in self.modalities}

    def __getitem__(self, key: int | tuple[int, int]):
        # an EpochSampler key (epoch, i) reads item i: these inputs take no augmentation
        i = key[1] if isinstance(key, tuple) else key
        x = self._read(int(self.indices[i]))
        return x, int(self.labels[i]), int(self.frame_counts[i])

    def subset(self, positions: np.ndarray, split: str | None = None) -> LinearEvalDataset:
        """The samples at ``positions`` (indices into this split, e.g. the labelled fraction
        of semi-supervised fine-tuning), named ``split`` (default: this one's name)."""
        positions = np.asarray(positions, dtype=np.int64)
        sub = copy.copy(self)
        sub.indices = self.indices[positions]
        sub.labels = self.labels[positions]
        sub.frame_counts = self.frame_counts[positions]
        sub.split = self.split if split is None else split
        return sub

    def read_block(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        """Samples ``lo .. hi-1`` of the split: ``dict[str, (n, 3, T, V, M)]``, one read each.

        Raises CacheError naming the samples that hold NaN or inf (a damaged cache), which
        would otherwise surface as a NaN loss far from its cause.
        """
        idx = self.indices[lo:hi]
        block = self._read(idx)
        for m, x in block.items():
            bad = torch.nonzero(~torch.isfinite(x).flatten(1).all(1)).flatten().numpy()
            if bad.size:
                rows = idx[bad]
                names = ", ".join(f"{self.reader.meta['name'][r]} (row {r})" for r in rows[:8])
                source = "computed from modalities/joint" if m in self.computed else "cached"
                raise CacheError(
                    f"{self.reader.path}: {m} ({source}) holds NaN or inf for {names}"
                    f"{' and more' if rows.size > 8 else ''}; re-create the cache with "
                    "`skelmod convert` (it rejects non-finite samples)"
                )
        return block


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
