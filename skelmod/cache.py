"""The HDF5 cache: schema v1, a streaming atomic writer and a lazy reader.

Layout of one cache file (``decisions.md`` 6)::

    /                      attrs: format="skelmod-cache", schema_version=1,
                           dataset ("ntu60"|"ntu120"|"nucla"|"custom"), t_frames,
                           options (JSON: everything that produced the file),
                           layout (joint layout name, e.g. "ntu25", "kinect-v1-20"),
                           modality_options (JSON: {"bones", "unit_axis"} of every
                           bone-derived modality in the file), num_class
    /modalities/<name>     float32 (N, 3, T, V, M), chunked one sample per chunk (V joints of
                           the layout; M bodies: 2 for NTU, 1 for N-UCLA);
                           attrs: options (JSON) of the computation that wrote it
    /meta/name             str (N,)   sample name, e.g. "S001C001P001R001A001"
    /meta/setup, camera, subject, replication, action           int16 (N,), ids
                           (N-UCLA: camera = view 1-3, replication = repetition eEE,
                           setup 0; imported: camera = view, 0 where not given)
    /meta/label            int16 (N,) class label 0 .. num_class-1 (NTU: action - 1)
    /meta/frame_count      int32 (N,) header frame count of the raw file (sets γ, §4)
    /meta/valid_length     int32 (N,) L used for resizing (§2.3)
    /meta/bodies_seen      int16 (N,) bodies seen in the raw file
    /meta/bodies_kept      int16 (N,) bodies kept in the sample
    /splits/<benchmark>    bool (N,) training mask, only in "custom" caches (skelmod import)

Samples are stored in the order they were converted (sorted file names). Splits of the known
datasets are derived from the metadata with :func:`skelmod.layout.train_mask`, never stored.

Caches written before ``layout``, ``modality_options`` and ``num_class`` existed read as
``ntu25`` with the options recorded in ``options`` (``unit_axis``, ``bone_convention``; the
defaults where absent) and the dataset's class count.

Nothing is written in place: :class:`CacheWriter` fills ``OUT.partial`` and renames it onto
``OUT`` only when complete, so a killed run never leaves a file at ``OUT`` that looks complete;
the partial file carries the progress needed to resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import layout
from . import layout as _layout  # ``layout`` is also a writer argument

SCHEMA_VERSION = 1
FORMAT = "skelmod-cache"
PARTIAL_SUFFIX = ".partial"

#: Per-sample metadata fields and their dtypes ("name" is a string).
META_FIELDS: dict[str, Any] = {
    "name": h5py.string_dtype("utf-8"),
    "setup": np.int16,
    "camera": np.int16,
    "subject": np.int16,
    "replication": np.int16,
    "action": np.int16,
    "label": np.int16,
    "frame_count": np.int32,
    "valid_length": np.int32,
    "bodies_seen": np.int16,
    "bodies_kept": np.int16,
}


class CacheError(ValueError):
    """A file that is not a usable cache: wrong format, schema version, or missing parts."""


def partial_path(path: str | os.PathLike) -> Path:
    """Where the writer builds ``path`` before renaming it into place."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _sample_shape(t: int, v: int = layout.V, m: int = layout.M) -> tuple[int, int, int, int]:
    return (layout.C, t, v, m)


#: Datasets whose splits are stored in the file (``/splits``) instead of derived from names.
CUSTOM_DATASET = "custom"


class CacheWriter:
    """Stream samples into a new cache, atomically.

    Samples are buffered and written ``block`` at a time into ``OUT.partial``; every write
    of a block also records ``progress`` (any JSON the caller passes, e.g. how many input
    files are done) so that :meth:`resume` can continue a killed run. :meth:`commit` trims
    the datasets and renames the partial file onto ``OUT``.

    Args:
        path: final cache path.
        dataset: "ntu60" or "ntu120".
        t: frames per sample.
        options: JSON-serialisable options recorded in the root attribute ``options``.
        modalities: names of the modality datasets each sample provides.
        block: samples per HDF5 write.
        layout: joint layout name (V = its joints).
        bodies: M, bodies per sample.
        modality_options: the :class:`~skelmod.layout.ModalityOptions` of the bone-derived
            modalities (default: the reference's).
        num_class: classes (default: the dataset's, :data:`skelmod.layout.NUM_CLASSES`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        dataset: str,
        t: int,
        options: Mapping[str, Any],
        modalities: Iterable[str],
        block: int = 256,
        layout: str = layout.DEFAULT_LAYOUT,
        bodies: int = layout.M,
        modality_options: Mapping[str, Any] | None = None,
        num_class: int | None = None,
        _file: h5py.File | None = None,
    ):
        datasets = [*_layout.BENCHMARKS, CUSTOM_DATASET]
        if dataset not in datasets:
            raise ValueError(f"dataset must be one of {', '.join(datasets)}, got {dataset!r}")
        self.layout = _layout.get_layout(layout)
        self.bodies = int(bodies)
        self.modality_options = _layout.ModalityOptions.from_json(modality_options)
        self.num_class = int(num_class if num_class is not None else _layout.NUM_CLASSES[dataset])
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.dataset = dataset
        self.t = int(t)
        self.options = dict(options)
        self.modalities = tuple(modalities)
        if "joint" not in self.modalities:
            raise ValueError("a cache always stores the 'joint' modality")
        self.block = int(block)
        self._buf_arrays: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        self._buf_meta: dict[str, list[Any]] = {k: [] for k in META_FIELDS}
        if _file is not None:
            self._f = _file
            self.rows = int(json.loads(self._f.attrs["progress"])["rows"])
            self._trim(self.rows)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = h5py.File(self.partial, "w")
        self._f.attrs["format"] = FORMAT
        self._f.attrs["schema_version"] = SCHEMA_VERSION
        self._f.attrs["dataset"] = dataset
        self._f.attrs["t_frames"] = self.t
        self._f.attrs["options"] = json.dumps(self.options, sort_keys=True)
        self._f.attrs["layout"] = self.layout.name
        self._f.attrs["modality_options"] = json.dumps(
            self.modality_options.to_json(), sort_keys=True
        )
        self._f.attrs["num_class"] = self.num_class
        shape = self.sample_shape
        grp = self._f.create_group("modalities")
        for m in self.modalities:
            ds = grp.create_dataset(
                m, shape=(0, *shape), maxshape=(None, *shape), dtype=np.float32, chunks=(1, *shape)
            )
            ds.attrs["options"] = json.dumps(self.options, sort_keys=True)
        meta = self._f.create_group("meta")
        for k, dt in META_FIELDS.items():
            meta.create_dataset(k, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
        self.rows = 0
        self._f.attrs["progress"] = json.dumps({"rows": 0, "state": None})
        self._f.flush()

    # -- resuming ----------------------------------------------------------------------------

    @classmethod
    def resume(
        cls, path: str | os.PathLike, *, dataset: str, t: int, options: Mapping[str, Any],
        modalities: Iterable[str], block: int = 256, **kwargs: Any,
    ) -> tuple[CacheWriter, Any] | None:  # fmt: skip
        """Reopen ``OUT.partial`` left by a killed run.

        Returns ``(writer, state)`` with the caller's last recorded progress state, or ``None``
        when there is no usable partial file (absent, unreadable, or written with other
        options, in which case a clean run is needed).
        """
        partial = partial_path(path)
        if not partial.exists():
            return None
        try:
            f = h5py.File(partial, "r+")
        except OSError:
            return None
        try:
            ok = (
                f.attrs.get("format") == FORMAT
                and int(f.attrs.get("schema_version", -1)) == SCHEMA_VERSION
                and f.attrs.get("dataset") == dataset
                and int(f.attrs.get("t_frames", -1)) == int(t)
                and json.loads(f.attrs["options"]) == json.loads(json.dumps(dict(options)))
                and set(f["modalities"].keys()) == set(modalities)
                and "progress" in f.attrs
                and f.attrs.get("layout", layout.DEFAULT_LAYOUT)
                == kwargs.get("layout", layout.DEFAULT_LAYOUT)
            )
        except (KeyError, ValueError, TypeError):
            ok = False
        if not ok:
            f.close()
            return None
        writer = cls(
            path, dataset=dataset, t=t, options=options, modalities=modalities, block=block,
            _file=f, **kwargs,
        )  # fmt: skip
        return writer, json.loads(f.attrs["progress"])["state"]

    # -- writing -----------------------------------------------------------------------------

    def append(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Queue one sample: ``arrays[m]`` ``(3, T, V, M)`` per modality, and its metadata."""
        shape = self.sample_shape
        for m in self.modalities:
            a = arrays[m]
            if a.shape != shape:
                raise ValueError(f"modality {m!r}: expected shape {shape}, got {a.shape}")
            self._buf_arrays[m].append(a)
        for k in META_FIELDS:
            self._buf_meta[k].append(meta[k])

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        """``(3, T, V, M)`` of one sample of this cache."""
        return _sample_shape(self.t, self.layout.V, self.bodies)

    def write_splits(self, masks: Mapping[str, np.ndarray]) -> None:
        """Store training masks ``(N,)`` per benchmark (custom caches), before :meth:`commit`."""
        if self.dataset != CUSTOM_DATASET:
            raise ValueError(f"splits of a {self.dataset} cache come from its metadata")
        self.flush(None)
        grp = self._f.require_group("splits")
        for name, mask in masks.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.rows,):
                raise ValueError(f"split {name!r}: expected ({self.rows},) mask, got {mask.shape}")
            if name in grp:
                del grp[name]
            grp.create_dataset(name, data=mask)

    @property
    def pending(self) -> int:
        return len(self._buf_meta["name"])

    def flush(self, state: Any = None) -> None:
        """Write the buffered samples and record ``state`` as the resume point."""
        n = self.pending
        if n:
            lo, hi = self.rows, self.rows + n
            for m in self.modalities:
                ds = self._f["modalities"][m]
                ds.resize(hi, axis=0)
                ds[lo:hi] = np.stack(self._buf_arrays[m]).astype(np.float32, copy=False)
                self._buf_arrays[m].clear()
            for k in META_FIELDS:
                ds = self._f["meta"][k]
                ds.resize(hi, axis=0)
                ds[lo:hi] = self._buf_meta[k]
                self._buf_meta[k].clear()
            self.rows = hi
        self._f.attrs["progress"] = json.dumps({"rows": self.rows, "state": state})
        self._f.flush()

    def maybe_flush(self, state: Any = None) -> None:
        if self.pending >= self.block:
            self.flush(state)

    def commit(self, extra_attrs: Mapping[str, Any] | None = None) -> Path:
        """Write what is left, finalise attributes and rename the partial file onto ``OUT``."""
        self.flush(None)
        del self._f.attrs["progress"]
        for k, v in (extra_attrs or {}).items():
            self._f.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
        self._f.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        """Close without committing; the partial file stays for ``--resume``."""
        if self._f.id.valid:
            self._f.close()

    def _trim(self, rows: int) -> None:
        for m in self.modalities:
            self._f["modalities"][m].resize(rows, axis=0)
        for k in META_FIELDS:
            self._f["meta"][k].resize(rows, axis=0)


def write_cache(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, np.ndarray],
    dataset: str,
    options: Mapping[str, Any] | None = None,
    **writer_args: Any,
) -> Path:
    """Write a whole cache from in-memory arrays ``(N, 3, T, V, M)`` and metadata ``(N,)``.

    Convenient for tests and small data; :mod:`skelmod.convert` streams instead.
    ``writer_args``: further :class:`CacheWriter` arguments (``layout``, ...).
    """
    n, _, t, _, m = arrays["joint"].shape
    w = CacheWriter(
        path, dataset=dataset, t=t, options=options or {}, modalities=list(arrays), bodies=m,
        **writer_args,
    )  # fmt: skip
    for i in range(n):
        w.append({m: a[i] for m, a in arrays.items()}, {k: meta[k][i] for k in META_FIELDS})
        w.maybe_flush()
    return w.commit()


class CacheReader:
    """Read a cache: metadata eagerly (small), arrays lazily.

    What the file says about its data: ``dataset``, ``t``, ``layout`` (a
    :class:`~skelmod.layout.JointLayout`), ``bodies`` (M), ``num_class``, ``feature_options``
    (the root ``modality_options``: a :class:`~skelmod.layout.ModalityOptions`),
    ``modality_options`` (per modality dataset, as recorded on it), ``split_names``.

    The HDF5 handle is opened on the first array read and is not pickled, so a reader can
    be handed to DataLoader workers and each worker opens its own handle after the fork.

    Raises:
        CacheError: the file is not an HDF5 cache of this schema version, or parts are missing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._h5: h5py.File | None = None
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such cache file")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise CacheError(f"{self.path}: not an HDF5 file ({e})") from None
        with f:
            if f.attrs.get("format") != FORMAT:
                raise CacheError(
                    f"{self.path}: not a skelmod cache (root attribute 'format' is "
                    f"{f.attrs.get('format')!r}, expected {FORMAT!r}); create one with "
                    "`skelmod convert`"
                )
            version = int(f.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise CacheError(
                    f"{self.path}: cache schema version {version}, this skelmod reads version "
                    f"{SCHEMA_VERSION}; re-create it with `skelmod convert`"
                )
            missing = [g for g in ("modalities", "meta") if g not in f] + [
                f"meta/{k}" for k in META_FIELDS if "meta" in f and k not in f["meta"]
            ]
            if "modalities" in f and "joint" not in f["modalities"]:
                missing.append("modalities/joint")
            if missing:
                raise CacheError(f"{self.path}: incomplete cache, missing {', '.join(missing)}")
            self.dataset = str(f.attrs["dataset"])
            self.t = int(f.attrs["t_frames"])
            self.options = json.loads(f.attrs["options"])
            self.modalities = tuple(layout_order(f["modalities"].keys()))
            mods = f["modalities"]
            self.modality_options = {
                m: json.loads(mods[m].attrs.get("options", "{}")) for m in self.modalities
            }
            self._read_layout(f)
            self.meta = {
                k: (f["meta"][k].asstr()[:] if k == "name" else f["meta"][k][:])
                for k in META_FIELDS
            }
            self.n = len(self.meta["name"])
            labels = self.meta["label"]
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_class):
                raise CacheError(
                    f"{self.path}: meta/label must lie in 0 .. {self.num_class - 1} (num_class "
                    f"{self.num_class}), found {labels.min()} .. {labels.max()}"
                )
            if mods["joint"].ndim != 5:
                raise CacheError(
                    f"{self.path}: modalities/joint has shape {mods['joint'].shape}, expected "
                    "(N, 3, T, V, M)"
                )
            self.bodies = int(mods["joint"].shape[-1])
            for m in self.modalities:
                if f["modalities"][m].shape != (self.n, *self.sample_shape):
                    raise CacheError(
                        f"{self.path}: modalities/{m} has shape {f['modalities'][m].shape}, "
                        f"expected {(self.n, *self.sample_shape)}"
                    )
            self._splits = self._read_splits(f)
        if self._splits is None:
            self.split_names = layout.split_names(self.dataset)
        else:
            self.split_names = tuple(f"{b}-{p}" for b in self._splits for p in ("train", "val"))

    def _read_layout(self, f: h5py.File) -> None:
        """Layout, modality options and class count; old caches: ntu25, options, dataset's."""
        name = f.attrs.get("layout", layout.DEFAULT_LAYOUT)
        try:
            self.layout = layout.get_layout(str(name))
        except layout.LayoutError as e:
            raise CacheError(f"{self.path}: root attribute 'layout': {e}") from None
        try:
            raw = f.attrs.get("modality_options")
            self.feature_options = layout.ModalityOptions.from_json(
                json.loads(raw) if raw is not None else self.options
            )
        except (layout.LayoutError, ValueError, TypeError) as e:
            raise CacheError(f"{self.path}: root attribute 'modality_options': {e}") from None
        if self.dataset not in layout.BENCHMARKS and self.dataset != CUSTOM_DATASET:
            raise CacheError(f"{self.path}: unknown dataset {self.dataset!r}")
        num_class = f.attrs.get("num_class", layout.NUM_CLASSES.get(self.dataset))
        if not isinstance(num_class, (int, np.integer)) or num_class < 1:
            raise CacheError(
                f"{self.path}: root attribute 'num_class' must be a positive integer, found "
                f"{num_class!r}"
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
                    f"{self.path}: splits/{name} must be a bool ({self.n},) mask, found "
                    f"{mask.dtype} {mask.shape}"
                )
            splits[name] = mask
        return splits

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        """``(3, T, V, M)`` of one sample of this cache."""
        return _sample_shape(self.t, self.layout.V, self.bodies)

    def __len__(self) -> int:
        return self.n

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None
        return state

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
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
        self.require([modality])
        ds = self.h5["modalities"][modality]
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
        # h5py wants increasing unique indices; read those and scatter back.
        uniq, inverse = np.unique(idx, return_inverse=True)
        return ds[uniq][inverse]


def layout_order(names: Iterable[str]) -> list[str]:
    """Modality names in the canonical order (joint, velocity, ...), unknown names last."""
    names = list(names)
    known = [m for m in layout.MODALITY_NAMES if m in names]
    return known + sorted(set(names) - set(known))


def open_cache(path: str | os.PathLike) -> CacheReader:
    """Open a cache for reading; see :class:`CacheReader`."""
    return CacheReader(path)
