"""The cache reader: header and metadata checked and read eagerly, arrays lazily (the HDF5
handle opens on the first array read, so a reader can be handed to DataLoader workers);
:func:`open_cache` and :func:`cache_report` (what ``skelmod info`` shows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import layout
from .checks import check_declared, check_frames, check_joints, refuse_pointers
from .schema import (
    CUSTOM_DATASET,
    FORMAT,
    META_FIELDS,
    SCHEMA_VERSION,
    CacheError,
    int_attr,
    json_attr,
    layout_order,
    sample_shape,
    show,
    str_attr,
)


class CacheReader:
    """Read a cache: metadata eagerly (small), arrays lazily.

    What the file says about its data: ``dataset``, ``t``, ``layout`` (a
    :class:`~skelmod.layout.JointLayout`), ``bodies`` (M), ``num_class``, ``feature_options``
    (the root ``modality_options``: a :class:`~skelmod.layout.ModalityOptions`),
    ``modality_options`` (per modality dataset, as recorded on it), ``split_names``,
    ``schema_version`` (the root attribute; only :data:`SCHEMA_VERSION` is accepted).

    The HDF5 handle is opened on the first array read and is not pickled, so a reader can
    be handed to DataLoader workers and each worker opens its own handle after the fork.

    A cache is data, never a pointer: soft and external links, external storage and virtual
    datasets are refused (:func:`~skelmod.cache.checks.refuse_pointers`) before anything else
    is read; the sizes it declares and its frame counts are bounded (:mod:`skelmod.limits`).

    Raises:
        CacheError: the file is not an HDF5 cache of this schema version, parts are missing,
            it points outside itself, or it declares implausible sizes or frame counts.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._values_checked = False
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such cache file")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise CacheError(f"{self.path}: not an HDF5 file ({e})") from None
        with f:
            try:
                refuse_pointers(f)  # before a byte of data is read
                self._load(f)
            except CacheError as e:
                raise CacheError(f"{self.path}: {e}") from None
            except (KeyError, ValueError, TypeError, OSError, RuntimeError) as e:
                raise CacheError(
                    f"{self.path}: unreadable cache ({type(e).__name__}: {e})"
                ) from None
        if self._splits is None:
            self.split_names = layout.split_names(self.dataset)
        else:
            self.split_names = tuple(f"{b}-{p}" for b in self._splits for p in ("train", "val"))

    def _load(self, f: h5py.File) -> None:
        """Read and check the header and metadata; errors name the attribute or dataset."""
        fmt = f.attrs.get("format")
        if (fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt) != FORMAT:
            raise CacheError(
                f"not a skelmod cache (root attribute 'format' is {fmt!r}, expected "
                f"{FORMAT!r}); create one with `skelmod convert`"
            )
        if "progress" in f.attrs:
            raise CacheError(
                "an unfinished conversion, not a cache; finish it by resuming the conversion "
                "(same folder and options, output path without .partial)"
            )
        version = int_attr(f, "schema_version")
        if version != SCHEMA_VERSION:
            raise CacheError(
                f"cache schema version {version}, this skelmod reads version "
                f"{SCHEMA_VERSION}; re-create it with `skelmod convert`"
            )
        self.schema_version = version
        missing = [g for g in ("modalities", "meta") if g not in f] + [
            f"meta/{k}" for k in META_FIELDS if "meta" in f and k not in f["meta"]
        ]
        if "modalities" in f and "joint" not in f["modalities"]:
            missing.append("modalities/joint")
        if missing:
            raise CacheError(f"incomplete cache, missing {', '.join(missing)}")
        self.dataset = str_attr(f, "dataset")
        if self.dataset not in (*layout.BENCHMARKS, CUSTOM_DATASET):
            raise CacheError(
                f"root attribute 'dataset' is {self.dataset!r}, expected one of "
                f"{', '.join((*layout.BENCHMARKS, CUSTOM_DATASET))}"
            )
        self.t = int_attr(f, "t_frames")
        if self.t < 2:
            raise CacheError(f"root attribute 't_frames' is {self.t}, expected at least 2")
        self.options = json_attr(f.attrs, "root attribute 'options'")
        self.modalities = tuple(layout_order(f["modalities"].keys()))
        mods = f["modalities"]
        self.modality_options = {
            m: json_attr(mods[m].attrs, f"modalities/{m} attribute 'options'", "{}")
            for m in self.modalities
        }
        self._read_layout(f)
        check_declared(f, self.t, self.num_class)
        self.meta = {}
        for k in META_FIELDS:
            ds = f["meta"][k]
            want = "string" if k == "name" else "integer"
            if (
                ds.ndim != 1
                or (ds.dtype.kind == "O") != (k == "name")
                or (k != "name" and ds.dtype.kind not in "iu")
            ):
                raise CacheError(f"meta/{k} is {ds.dtype} of shape {ds.shape}, expected 1-D {want}")
            self.meta[k] = ds.asstr()[:] if k == "name" else ds[:]
        lengths = {k: len(v) for k, v in self.meta.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"meta/{k} {n}" for k, n in lengths.items())
            raise CacheError(f"metadata arrays differ in length ({detail})")
        self.n = lengths["name"]
        if self.n == 0:
            raise CacheError("the cache holds no samples")
        check_frames(self.meta)
        labels = self.meta["label"]
        if labels.min() < 0 or labels.max() >= self.num_class:
            raise CacheError(
                f"meta/label must lie in 0 .. {self.num_class - 1} (num_class {self.num_class}), "
                f"found {labels.min()} .. {labels.max()}"
            )
        if mods["joint"].ndim != 5:
            raise CacheError(
                f"modalities/joint has shape {mods['joint'].shape}, expected (N, 3, T, V, M)"
            )
        self.bodies = int(mods["joint"].shape[-1])
        if self.bodies < 1:
            raise CacheError("modalities/joint has no body (M = 0), expected at least 1")
        for m in self.modalities:
            if mods[m].dtype != np.float32:
                raise CacheError(f"modalities/{m} holds {mods[m].dtype}, expected float32")
            if mods[m].shape != (self.n, *self.sample_shape):
                raise CacheError(
                    f"modalities/{m} has shape {mods[m].shape}, expected "
                    f"{(self.n, *self.sample_shape)}"
                )
        self._splits = self._read_splits(f)

    def _read_layout(self, f: h5py.File) -> None:
        """Layout, modality options and class count; old caches: ntu25, options, dataset's."""
        name = f.attrs.get("layout", layout.DEFAULT_LAYOUT)
        try:
            self.layout = layout.get_layout(str(name))
        except layout.LayoutError as e:
            raise CacheError(f"root attribute 'layout': {e}") from None
        try:
            raw = f.attrs.get("modality_options")
            self.feature_options = layout.ModalityOptions.resolve(
                json.loads(raw) if raw is not None else self.options
            )
        except (layout.LayoutError, ValueError, TypeError) as e:
            raise CacheError(f"root attribute 'modality_options': {e}") from None
        num_class = f.attrs.get("num_class", layout.NUM_CLASSES.get(self.dataset))
        if not isinstance(num_class, (int, np.integer)) or num_class < 1:
            raise CacheError(
                f"root attribute 'num_class' must be a positive integer, found {show(num_class)}"
            )
        self.num_class = int(num_class)

    def _read_splits(self, f: h5py.File) -> dict[str, np.ndarray] | None:
        if self.dataset != CUSTOM_DATASET:
            return None
        grp = f.get("splits")
        splits = {}
        for name in grp.keys() if grp is not None else ():
            mask = grp[name][:]
            if mask.dtype != bool or mask.shape != (self.n,):
                raise CacheError(
                    f"splits/{name} must be a bool ({self.n},) mask, found {mask.dtype} "
                    f"{mask.shape}"
                )
            splits[name] = mask
        return splits

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        """``(3, T, V, M)`` of one sample of this cache."""
        return sample_shape(self.t, self.layout.V, self.bodies)

    def __len__(self) -> int:
        return self.n

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None
        state["_datasets"] = {}
        return state

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._datasets = {}
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        return self._h5

    def split_indices(self, split: str) -> np.ndarray:
        """Sorted int64 indices of the samples in ``split`` ("<benchmark>-train|val")."""
        benchmark, _, part = split.rpartition("-")
        if split not in self.split_names:
            raise CacheError(
                f"unknown split {split!r} for a {self.dataset} cache; expected one of "
                f"{', '.join(self.split_names)}"
            )
        if self._splits is not None:
            mask = self._splits[benchmark]
        else:
            mask = layout.train_mask(
                self.dataset, benchmark, self.meta["setup"], self.meta["camera"],
                self.meta["subject"],
            )  # fmt: skip
        if part == "val":
            mask = ~mask
        return np.flatnonzero(mask).astype(np.int64)

    def check_values(self) -> None:
        """Check every sample's joints as the writer did (finite, within 100 m:
        :func:`~skelmod.cache.checks.check_joints`); a second call returns at once.

        Raises CacheError naming the first offending row."""
        if not self._values_checked:
            check_joints(self.path, self.meta["name"])
            self._values_checked = True

    def require(self, modalities: Iterable[str]) -> None:
        """Raise :class:`CacheError` naming any modality this cache lacks."""
        missing = [m for m in modalities if m not in self.modalities]
        if missing:
            raise CacheError(
                f"{self.path}: cache has no {', '.join(missing)} (it has "
                f"{', '.join(self.modalities)}); add them with "
                f"`skelmod features {self.path} --modalities {','.join(missing)}`"
            )

    def read(self, modality: str, index: int | np.ndarray | slice | str) -> np.ndarray:
        """One sample ``(3, T, V, M)`` for an int index; ``(n, 3, T, V, M)`` otherwise.

        ``index`` may be an int, a slice, an integer array (any order, repeats allowed) or a
        split name.
        """
        ds = self._datasets.get(modality)
        if ds is None:
            self.require([modality])
            # Kept: h5py works out how to read a dataset (fast path, extent) once per Dataset
            # object, which costs ~0.4 ms, 15 times a one-sample read (issue 22, point 5).
            ds = self._datasets[modality] = self.h5["modalities"][modality]
        if isinstance(index, str):
            index = self.split_indices(index)
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -self.n <= i < self.n:
                raise IndexError(f"sample index {i} out of range for {self.n} samples")
            return ds[i % self.n]
        if isinstance(index, slice):
            return ds[index]
        idx = np.asarray(index, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"index array must be 1-D, got shape {idx.shape}")
        if idx.size == 0:
            return np.empty((0, *ds.shape[1:]), dtype=np.float32)
        if idx.min() < 0 or idx.max() >= self.n:
            raise IndexError(f"sample indices out of range for {self.n} samples")
        uniq, inverse = np.unique(idx, return_inverse=True)
        if uniq[-1] - uniq[0] + 1 == uniq.size:  # a run of samples: one slice
            return ds[int(uniq[0]) : int(uniq[-1]) + 1][inverse]
        # h5py's point selection (ds[uniq]) costs ~0.7 ms a sample; one read per sample ~25 us,
        # in file order, each into its place (no copy after) unless an index repeats.
        out = np.empty((uniq.size, *ds.shape[1:]), dtype=ds.dtype)
        if uniq.size == idx.size:
            order = np.argsort(idx, kind="stable")
            for j, i in zip(order.tolist(), uniq.tolist(), strict=True):
                out[j] = ds[i]
            return out
        for j, i in enumerate(uniq.tolist()):
            out[j] = ds[i]
        return out[inverse]


def open_cache(path: str | os.PathLike) -> CacheReader:
    """Open a cache for reading; see :class:`CacheReader`."""
    return CacheReader(path)


def cache_report(reader: CacheReader) -> dict[str, Any]:
    """What ``skelmod info`` shows, as plain JSON types: the header (schema version from the
    file, dataset, layout, options), counts per split and per class, and a 10-bin histogram
    of the header frame counts (edges from 0 to ``max(300, longest)``)."""
    meta = reader.meta
    labels, counts = np.unique(meta["label"], return_counts=True)
    fc = meta["frame_count"]
    top = max(layout.MAX_FRAMES, int(fc.max()) if fc.size else 0)
    edges = np.linspace(0, top, 11).astype(int)
    hist, _ = np.histogram(fc, bins=edges)
    return {
        "schema_version": reader.schema_version,
        "dataset": reader.dataset,
        "layout": reader.layout.name,
        "joints": reader.layout.V,
        "bodies": reader.bodies,
        "num_class": reader.num_class,
        "modality_options": reader.feature_options.to_json(),
        "samples": reader.n,
        "frames": reader.t,
        "modalities": list(reader.modalities),
        "splits": {s: int(reader.split_indices(s).size) for s in reader.split_names},
        "classes": {int(k): int(v) for k, v in zip(labels, counts, strict=True)},
        "frame_count_histogram": {"edges": edges.tolist(), "counts": hist.tolist()},
        "options": reader.options,
    }
