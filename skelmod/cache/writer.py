"""The streaming, atomic cache writer (one writer per output) and :func:`write_cache`.

Verified resuming of a killed run lives in :mod:`skelmod.cache.resume`; the partial file, the
lock and the free-space check in :mod:`skelmod.cache.output`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import layout
from .. import layout as _layout  # ``layout`` is also a writer argument
from . import output
from .output import OutputLock, check_free_space, mkdir_parent, partial_path
from .resume import RESUME_FIELDS, Resumed, resume_writer, row_crc
from .schema import (
    CUSTOM_DATASET,
    FORMAT,
    META_FIELDS,
    SCHEMA_VERSION,
    CacheWriteError,
    SampleError,
    check_sample,
    sample_shape,
)


class CacheWriter:
    """Stream samples into a new cache, atomically, as the only writer of its output.

    The lock on ``OUT.lock`` is taken before anything is created. Samples are buffered and
    written ``block`` at a time into ``OUT.partial``: first the rows (with a resume record
    each: source, size, mtime and a CRC of the row), flushed to the file, then ``progress``
    (how many rows are complete, plus any JSON state of the caller), flushed again, so a
    kill at any moment leaves a resume point that is not ahead of the data. :meth:`resume`
    verifies the rows against their CRCs before trusting them. :meth:`commit` trims the
    datasets, drops the resume records and renames the partial file onto ``OUT``.

    Every sample passes :func:`check_sample`: a cache never holds NaN or inf. A write that
    would not fit on the file system raises :class:`CacheWriteError` before HDF5 is called,
    leaving the last resume point intact.

    Args:
        path: final cache path.
        dataset: "ntu60" or "ntu120".
        t: frames per sample.
        options: JSON-serialisable options recorded in the root attribute ``options``.
        modalities: names of the modality datasets each sample provides.
        block: samples per HDF5 write.
        source_dir: what the samples come from (recorded; :meth:`resume` refuses another).
        layout: joint layout name (V = its joints).
        bodies: M, bodies per sample.
        modality_options: the :class:`~skelmod.layout.ModalityOptions` of the bone-derived
            modalities (default: the reference's).
        num_class: classes (default: the dataset's, :data:`skelmod.layout.NUM_CLASSES`).
        dataset_options: per modality, the options recorded on its dataset (attribute
            ``options``, JSON) where they differ from ``options`` (``skelmod features``).
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
        source_dir: str = "",
        layout: str = layout.DEFAULT_LAYOUT,
        bodies: int = layout.M,
        modality_options: Mapping[str, Any] | None = None,
        num_class: int | None = None,
        dataset_options: Mapping[str, Mapping[str, Any]] | None = None,
        _lock: OutputLock | None = None,
    ):
        self._setup(path, dataset, t, options, modalities, block, source_dir, layout, bodies,
                    modality_options, num_class, dataset_options)  # fmt: skip
        self._f: h5py.File | None = None
        self._lock = _lock
        if self._lock is None:
            mkdir_parent(self.path)
            self._lock = OutputLock(self.path).acquire()
        try:
            self._f = self._create(self.partial)
        except BaseException:
            self._lock.release()
            raise
        self.rows = 0
        self._f.attrs["progress"] = json.dumps({"rows": 0, "state": None})
        self._f.flush()

    def _setup(self, path, dataset, t, options, modalities, block, source_dir,
               layout=_layout.DEFAULT_LAYOUT, bodies=_layout.M, modality_options=None,
               num_class=None, dataset_options=None) -> None:  # fmt: skip
        """Check and store the arguments; empty buffers (shared by ``__init__`` and resume)."""
        datasets = [*_layout.BENCHMARKS, CUSTOM_DATASET]
        if dataset not in datasets:
            raise ValueError(f"dataset must be one of {', '.join(datasets)}, got {dataset!r}")
        self.layout = _layout.get_layout(layout)
        self.bodies = int(bodies)
        self.modality_options = _layout.ModalityOptions.resolve(modality_options)
        self.num_class = int(num_class if num_class is not None else _layout.NUM_CLASSES[dataset])
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.dataset = dataset
        self.t = int(t)
        self.options = dict(options)
        self.dataset_options = {m: dict(o) for m, o in (dataset_options or {}).items()}
        self.modalities = tuple(modalities)
        if "joint" not in self.modalities:
            raise ValueError("a cache always stores the 'joint' modality")
        self.block = max(1, int(block))
        self.source_dir = str(source_dir)
        self._buf_arrays: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        self._buf_meta: dict[str, list[Any]] = {k: [] for k in META_FIELDS}
        self._buf_resume: dict[str, list[Any]] = {k: [] for k in RESUME_FIELDS}

    def _create(self, where: Path, nbytes: int = 0) -> h5py.File:
        try:
            check_free_space(where, nbytes)
            f = h5py.File(where, "w")
        except OSError as e:
            raise CacheWriteError(f"{where}: cannot create the file ({e})") from None
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["dataset"] = self.dataset
        f.attrs["t_frames"] = self.t
        f.attrs["options"] = json.dumps(self.options, sort_keys=True)
        f.attrs["source_dir"] = self.source_dir
        f.attrs["layout"] = self.layout.name
        f.attrs["modality_options"] = json.dumps(self.modality_options.to_json(), sort_keys=True)
        f.attrs["num_class"] = self.num_class
        shape = self.sample_shape
        grp = f.create_group("modalities")
        for m in self.modalities:
            ds = grp.create_dataset(
                m, shape=(0, *shape), maxshape=(None, *shape), dtype=np.float32, chunks=(1, *shape)
            )
            ds.attrs["options"] = json.dumps(
                self.dataset_options.get(m, self.options), sort_keys=True
            )
        for group, fields in (("meta", META_FIELDS), ("resume", RESUME_FIELDS)):
            g = f.create_group(group)
            for k, dt in fields.items():
                g.create_dataset(k, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
        return f

    @property
    def _row_bytes(self) -> int:
        return len(self.modalities) * 4 * int(np.prod(self.sample_shape)) + 256

    @classmethod
    def resume(
        cls, path: str | os.PathLike, *, dataset: str, t: int, options: Mapping[str, Any],
        modalities: Iterable[str], block: int = 256, source_dir: str = "",
        keep: Callable[[dict[str, Any]], bool] | None = None, **schema: Any,
    ) -> tuple[CacheWriter, Resumed] | None:  # fmt: skip
        """Reopen ``OUT.partial`` left by a killed run, verified and repaired; ``None`` when
        there is none. See :func:`skelmod.cache.resume.resume_writer` (what is kept, rolled
        back or refused)."""
        return resume_writer(
            cls, path, dataset=dataset, t=t, options=options, modalities=modalities, block=block,
            source_dir=source_dir, keep=keep, **schema,
        )  # fmt: skip

    # -- writing -----------------------------------------------------------------------------

    def append(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        source: Mapping[str, Any] | None = None,
        *,
        check: Iterable[str] | None = None,
    ) -> None:
        """Queue one sample: ``arrays[m]`` ``(3, T, V, M)`` per modality, its metadata, and
        optionally its resume record (``source``, ``size``, ``mtime_ns``, ``extra``).

        ``check``: the modalities to pass through :func:`check_sample` (default: all); a
        caller copying arrays from a cache, where they were checked, names the new ones only.

        Raises:
            SampleError: the sample fails :func:`check_sample` (named in the message).
        """
        shape = self.sample_shape
        for m in self.modalities:
            a = arrays[m]
            if a.shape != shape:
                raise ValueError(f"modality {m!r}: expected shape {shape}, got {a.shape}")
        try:
            checked = self.modalities if check is None else tuple(check)
            check_sample({m: arrays[m] for m in checked}, meta["label"], self.num_class)
        except SampleError as e:
            raise SampleError(f"{meta['name']}: {e}", modality=e.modality) from None
        rows = [np.asarray(arrays[m], dtype=np.float32) for m in self.modalities]
        for m, a in zip(self.modalities, rows, strict=True):
            self._buf_arrays[m].append(a)
        for k in META_FIELDS:
            self._buf_meta[k].append(meta[k])
        source = dict(source or {})
        record = {
            "source": str(source.get("source", "")),
            "size": int(source.get("size", -1)),
            "mtime_ns": int(source.get("mtime_ns", -1)),
            "crc": row_crc(rows, [meta[k] for k in META_FIELDS]),
            "extra": str(source.get("extra", "")),
        }
        for k in RESUME_FIELDS:
            self._buf_resume[k].append(record[k])

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        """``(3, T, V, M)`` of one sample of this cache."""
        return sample_shape(self.t, self.layout.V, self.bodies)

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
        """Write the buffered samples, then record ``state`` as the resume point.

        Raises:
            CacheWriteError: the file system is full or the write failed; the partial file
                keeps its previous resume point.
        """
        n = self.pending
        try:
            check_free_space(self.partial, n * self._row_bytes)
        except OSError as e:
            raise self._write_error(e) from None
        try:
            if n:
                lo, hi = self.rows, self.rows + n
                for m in self.modalities:
                    _put(self._f["modalities"][m], lo, hi, np.stack(self._buf_arrays[m]))
                    self._buf_arrays[m].clear()
                for group, buf in (("meta", self._buf_meta), ("resume", self._buf_resume)):
                    for k, values in buf.items():
                        _put(self._f[group][k], lo, hi, values)
                        values.clear()
                self._f.flush()  # rows first: the progress below never runs ahead of them
                self.rows = hi
            self._f.attrs["progress"] = json.dumps({"rows": self.rows, "state": state})
            self._f.flush()
        except (OSError, RuntimeError) as e:
            output.mark_hdf5_failed()
            raise self._write_error(e) from None

    def _write_error(self, e: Exception) -> CacheWriteError:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        return CacheWriteError(
            f"{self.partial}: cannot write ({why}); it keeps the {self.rows} samples written "
            "before, and a resumed rerun continues from there"
        )

    def maybe_flush(self, state: Any = None) -> None:
        if self.pending >= self.block:
            self.flush(state)

    def commit(self, extra_attrs: Mapping[str, Any] | None = None, *, sort: bool = False) -> Path:
        """Write what is left, finalise attributes and rename the partial file onto ``OUT``.

        ``sort``: order the rows by sample name first (a resumed run appends the samples it
        converts after the ones kept; sorting makes the result the same as a clean run's).
        """
        self.flush(None)
        if sort:
            names = self._f["meta"]["name"].asstr()[:]
            order = np.argsort(names, kind="stable")
            if (order != np.arange(len(order))).any():
                self._rewrite(order)
        try:
            del self._f["resume"]
            del self._f.attrs["progress"]
            del self._f.attrs["source_dir"]
            for k, v in (extra_attrs or {}).items():
                self._f.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
            self._f.close()
            os.replace(self.partial, self.path)
        except OSError as e:
            raise CacheWriteError(f"{self.path}: cannot finish the cache ({e})") from None
        finally:
            self.close()
        return self.path

    def close(self) -> None:
        """Close without committing (the partial file stays for ``--resume``); release the lock."""
        if self._f is not None and self._f.id.valid:
            try:
                self._f.close()
            except (OSError, RuntimeError):
                if not output.hdf5_write_failed():
                    raise  # after a failed write HDF5 cannot close cleanly; that was reported
        if self._lock is not None:
            self._lock.release()

    def abort(self) -> None:
        """Close and remove the partial file (nothing worth resuming)."""
        if self._f is not None and self._f.id.valid:
            self._f.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.partial)
        self.close()

    def _rewrite(self, order: np.ndarray) -> None:
        """Replace the partial file by one holding only rows ``order`` (in that order).

        Used to roll back damaged rows, drop samples whose source vanished or changed, and
        sort on commit. The copy is built beside the partial file and renamed over it, so the
        partial file stays valid if this is killed too.
        """
        order = np.asarray(order, dtype=np.int64)
        src = self._f
        tmp = self.partial.with_name(self.partial.name + ".rewrite")
        dst = self._create(tmp, len(order) * self._row_bytes)
        try:
            dst.attrs["options"] = src.attrs["options"]
            for k in ("modalities", "meta", "resume"):
                for name, ds in src[k].items():
                    out = dst[k][name]
                    out.resize(len(order), axis=0)
                    step = 64 if k == "modalities" else 1 << 16
                    for lo in range(0, len(order), step):
                        idx = order[lo : lo + step]
                        uniq, inverse = np.unique(idx, return_inverse=True)
                        out[lo : lo + len(idx)] = ds[uniq][inverse]
            dst.attrs["progress"] = json.dumps({"rows": len(order), "state": None})
            dst.close()
        except BaseException:
            dst.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        src.close()
        os.replace(tmp, self.partial)
        self._f = h5py.File(self.partial, "r+")
        self.rows = len(order)


def _put(ds: h5py.Dataset, lo: int, hi: int, values) -> None:
    ds.resize(hi, axis=0)
    ds[lo:hi] = values


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
