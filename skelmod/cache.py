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
``OUT`` only when complete, so a killed run never leaves a file at ``OUT`` that looks complete.
The partial file also holds ``/resume/*`` (per row: source name, size, mtime, CRC-32 of the
row) and the root attributes ``progress`` and ``source_dir``, from which :meth:`CacheWriter.resume`
verifies and continues a killed run; they are removed on commit. One writer per output: the
writer (and ``skelmod features``) holds an exclusive lock on ``OUT.lock`` from before anything
is created until the end. Every sample passes :func:`check_sample` (finite in float32, joint
coordinates within :data:`MAX_COORDINATE_M`, label within the data set's classes), and
:class:`CacheReader` checks every header field and metadata array before trusting a file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import layout
from . import layout as _layout  # ``layout`` is also a writer argument
from .errors import SkelmodError

SCHEMA_VERSION = 1
FORMAT = "skelmod-cache"
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"

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


class CacheError(SkelmodError):
    """A file that is not a usable cache: wrong format, schema version, or missing parts."""


class OutputBusyError(CacheError):
    """Another process holds the output's lock (one writer per output)."""


class ResumeRefused(CacheError):
    """A resumed run found a partial file made from other inputs or with other options."""


class SampleError(SkelmodError):
    """A sample the cache refuses: non-finite values, coordinates beyond the physical bound,
    or a label outside the data set's classes."""


class CacheWriteError(CacheError):
    """Writing the output failed (disk full, unwritable folder); the message says what is kept."""


#: Largest |coordinate| accepted in the ``joint`` modality, in metres. Kinect v2 sees at most
#: about 8 m; anything beyond this bound is a corrupt file, not a pose (issue 8 point 7).
MAX_COORDINATE_M = 100.0
#: Kept free on the output's file system beyond what a write needs: HDF5 cannot recover from
#: a failed write (it crashes the process when the file is closed), so writes are checked first.
FREE_SPACE_MARGIN = 1 << 20


def check_sample(arrays: Mapping[str, np.ndarray], label: int | None = None,
                 num_class: int | None = None) -> None:  # fmt: skip
    """Raise :class:`SampleError` unless every array is finite in float32, the ``joint``
    coordinates are within :data:`MAX_COORDINATE_M` and ``0 <= label < num_class``.

    ``arrays[m]`` is one sample ``(3, T, V, M)`` of any layout and data set; the message names
    the modality and the first offending value as ``(frame, joint, body)``, 1-based.
    """
    for m, a in arrays.items():
        with np.errstate(over="ignore", invalid="ignore"):
            a32 = np.asarray(a, dtype=np.float32)
            bad = ~np.isfinite(a32)
            if m == "joint" and not bad.any():
                bad = np.abs(a32) > MAX_COORDINATE_M
        if bad.any():
            _, t, v, b = (int(i) for i in np.argwhere(bad)[0])
            value = np.asarray(a)[(slice(None), t, v, b)][bad[:, t, v, b]][0]
            what = (
                f"a coordinate beyond the physical bound of {MAX_COORDINATE_M:g} m"
                if m == "joint" and np.isfinite(a32).all()
                else "a value that is not finite in float32"
            )
            raise SampleError(
                f"modality {m!r} holds {what}: {float(value):g} at frame {t + 1}, joint {v + 1}, "
                f"body {b + 1}"
            )
    if label is not None and num_class is not None and not 0 <= int(label) < num_class:
        raise SampleError(f"label {int(label)} is not one of the {num_class} classes")


def partial_path(path: str | os.PathLike) -> Path:
    """Where the writer builds ``path`` before renaming it into place."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file beside ``path`` that one writer holds (``OUT.lock``)."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


class OutputLock:
    """An exclusive ``flock`` on ``OUT.lock``, taken before ``OUT`` or its partial file is
    created or touched; a second writer fails at once with :class:`OutputBusyError`.

    The lock file is removed on release. A writer that opened it just before that removal
    would lock a file nobody else sees, so after locking it checks the path still names the
    file it locked, and retries otherwise.
    """

    def __init__(self, path: str | os.PathLike):
        self.target = Path(path)
        self.path = lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise CacheWriteError(
                    f"{self.target}: cannot create the lock file {self.path} ({e.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputBusyError(
                    f"{self.target}: another process is writing it (it holds {self.path}); "
                    "wait for it to finish"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: Set when HDF5 failed a write: it then crashes the process when it closes the file at exit,
#: so the command line leaves with ``os._exit`` after reporting (see :func:`hdf5_write_failed`).
_hdf5_failed = False


def hdf5_write_failed() -> bool:
    """Whether an HDF5 write failed in this process (the process should exit at once)."""
    return _hdf5_failed


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def check_free_space(path: Path, nbytes: int) -> None:
    """Raise ``OSError(ENOSPC)`` unless ``path``'s file system has ``nbytes`` to spare."""
    free = _free_bytes(path.parent)
    if free < nbytes + FREE_SPACE_MARGIN:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: {nbytes + FREE_SPACE_MARGIN} bytes needed, {free} free",
        )


def is_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an HDF5 file whose root says it is a skelmod cache."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
    except (OSError, RuntimeError):
        return False
    return (fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt) == FORMAT


def _sample_shape(t: int, v: int = layout.V, m: int = layout.M) -> tuple[int, int, int, int]:
    return (layout.C, t, v, m)


#: Datasets whose splits are stored in the file (``/splits``) instead of derived from names.
CUSTOM_DATASET = "custom"


#: Per-row records of a partial file, used by ``--resume`` and removed on commit:
#: where each sample came from (``source`` name, its ``size`` and ``mtime_ns``), a CRC-32 of
#: the row as written, and caller data (``extra``, a JSON string).
RESUME_FIELDS: dict[str, Any] = {
    "source": h5py.string_dtype("utf-8"),
    "size": np.int64,
    "mtime_ns": np.int64,
    "crc": np.int64,
    "extra": h5py.string_dtype("utf-8"),
}


def _row_crc(arrays: Iterable[np.ndarray], meta: Iterable[Any]) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a, dtype=np.float32).tobytes(), crc)
    return zlib.crc32("|".join(str(v) for v in meta).encode(), crc)


@dataclass
class Resumed:
    """What :meth:`CacheWriter.resume` found in the partial file.

    ``state``: the caller's last recorded state; ``sources``: the resume records of the rows
    kept, one dict per row (``RESUME_FIELDS``); ``note``: what was repaired, if anything
    (a roll-back, or a clean start because the partial file was unreadable).
    """

    state: Any
    sources: list[dict[str, Any]]
    note: str | None = None


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
        _lock: OutputLock | None = None,
    ):
        self._setup(path, dataset, t, options, modalities, block, source_dir, layout, bodies,
                    modality_options, num_class)  # fmt: skip
        self._f: h5py.File | None = None
        self._lock = _lock
        if self._lock is None:
            _mkdir_parent(self.path)
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
               num_class=None) -> None:  # fmt: skip
        """Check and store the arguments; empty buffers (shared by ``__init__`` and resume)."""
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
            ds.attrs["options"] = json.dumps(self.options, sort_keys=True)
        for group, fields in (("meta", META_FIELDS), ("resume", RESUME_FIELDS)):
            g = f.create_group(group)
            for k, dt in fields.items():
                g.create_dataset(k, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
        return f

    @property
    def _row_bytes(self) -> int:
        return len(self.modalities) * 4 * int(np.prod(self.sample_shape)) + 256

    # -- resuming ----------------------------------------------------------------------------

    @classmethod
    def resume(
        cls, path: str | os.PathLike, *, dataset: str, t: int, options: Mapping[str, Any],
        modalities: Iterable[str], block: int = 256, source_dir: str = "",
        keep: Callable[[dict[str, Any]], bool] | None = None, **schema: Any,
    ) -> tuple[CacheWriter, Resumed] | None:  # fmt: skip
        """Reopen ``OUT.partial`` left by a killed run, verified.

        Returns ``None`` when there is no partial file. Otherwise the partial file is
        checked: a file that cannot be read starts a clean run (``Resumed.note`` says so);
        rows whose CRC does not match (a kill during a write) and rows after them are rolled
        back; rows past the recorded progress are dropped; rows whose resume record
        ``keep(record)`` rejects (e.g. their source file changed) are removed. The kept rows
        are copied into a fresh partial file before anything is appended.

        ``schema``: ``layout``, ``bodies``, ``modality_options``, ``num_class`` as for a new
        writer.

        Raises:
            ResumeRefused: the partial file was made from another ``source_dir``, for another
                data set or layout, or with other options or modalities (the message names
                which).
            OutputBusyError: another process is writing ``path``.
        """
        path = Path(path)
        partial = partial_path(path)
        if not partial.exists():
            return None
        kw = dict(dataset=dataset, t=t, options=options, modalities=modalities, block=block,
                  source_dir=source_dir, **schema)  # fmt: skip
        lock = OutputLock(path).acquire()
        try:
            try:
                f = h5py.File(partial, "r+")
            except OSError as e:
                note = f"{partial} cannot be read ({e}); starting a clean conversion"
                return cls(path, **kw, _lock=lock), Resumed(None, [], note)
            try:
                writer = cls.__new__(cls)
                writer._init_from(path, f, lock, **kw)
                return writer, writer._verify_and_repair(keep)
            except (ResumeRefused, CacheWriteError):
                f.close()  # refused, or no room to repair: the partial file stays as it is
                raise
            except (KeyError, ValueError, TypeError, OSError, RuntimeError) as e:
                with contextlib.suppress(Exception):
                    f.close()
                note = f"{partial} is damaged ({e}); starting a clean conversion"
                return cls(path, **kw, _lock=lock), Resumed(None, [], note)
        except BaseException:
            lock.release()
            raise

    def _init_from(self, path, f, lock, **kw) -> None:
        """Adopt the open partial file ``f``; refuse one made from other inputs or options."""
        self._setup(path, **kw)
        self._f, self._lock = f, lock
        if f.attrs.get("format") != FORMAT or _int_attr(f, "schema_version") != SCHEMA_VERSION:
            raise ValueError("not a partial skelmod cache of this schema version")
        recorded_dir = _str_attr(f, "source_dir")
        if recorded_dir != self.source_dir:
            raise ResumeRefused(
                f"{self.partial} was started from {recorded_dir or 'another source'}, not "
                f"{self.source_dir}; resume with the same input directory, or run without "
                "resume to start over",
                param="resume",
            )
        theirs = {
            "dataset": _str_attr(f, "dataset"),
            "layout": _str_attr(f, "layout"),
            "frames": _int_attr(f, "t_frames"),
            "options": json.loads(f.attrs["options"]),
            "modalities": sorted(f["modalities"].keys()),
        }
        ours = {
            "dataset": self.dataset,
            "layout": self.layout.name,
            "frames": self.t,
            "options": json.loads(json.dumps(self.options)),
            "modalities": sorted(self.modalities),
        }
        differ = [k for k in ours if theirs[k] != ours[k]]
        if differ:
            detail = "; ".join(f"{k}: {theirs[k]} there, {ours[k]} now" for k in differ)
            raise ResumeRefused(
                f"{self.partial} was written with other settings ({detail}); resume with the "
                "same options, or run without resume to start over",
                param="resume",
            )

    def _verify_and_repair(self, keep: Callable[[dict[str, Any]], bool] | None) -> Resumed:
        """Check every row the progress claims against its CRC, then copy the good prefix
        into a fresh partial file.

        The copy is what makes a resumed file trustworthy: a kill during an HDF5 write can
        leave the file's own bookkeeping (chunk index, free space) half updated even where
        the rows read back fine, and appending to such a file could damage them later.
        """
        f = self._f
        progress = json.loads(f.attrs["progress"])
        claimed, state = int(progress["rows"]), progress["state"]
        datasets = [f["modalities"][m] for m in self.modalities]
        metas = [f["meta"][k] for k in META_FIELDS]
        resumes = {k: f["resume"][k] for k in RESUME_FIELDS}
        shortest = min(d.shape[0] for d in (*datasets, *metas, *resumes.values()))
        if shortest < claimed:
            raise ValueError(f"progress claims {claimed} rows, a dataset holds {shortest}")
        good, step, note = 0, 64, None
        try:
            crcs = resumes["crc"][:claimed]
            meta = [m.asstr()[:claimed] if m.dtype.kind == "O" else m[:claimed] for m in metas]
            for lo in range(0, claimed, step):
                hi = min(claimed, lo + step)
                block = [d[lo:hi] for d in datasets]
                for i in range(hi - lo):
                    if _row_crc((b[i] for b in block), [m[lo + i] for m in meta]) != crcs[lo + i]:
                        raise ValueError(f"row {lo + i} does not match its CRC")
                    good += 1
        except (ValueError, OSError, RuntimeError, KeyError) as e:
            note = f"{self.partial}: {e}; rolled back from {claimed} to {good} samples"
        records = _records(resumes, good)
        kept = [i for i, r in enumerate(records) if keep is None or keep(r)]
        self._rewrite(np.asarray(kept, dtype=np.int64))
        return Resumed(state if good == claimed else None, [records[i] for i in kept], note)

    # -- writing -----------------------------------------------------------------------------

    def append(
        self,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        source: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one sample: ``arrays[m]`` ``(3, T, V, M)`` per modality, its metadata, and
        optionally its resume record (``source``, ``size``, ``mtime_ns``, ``extra``).

        Raises:
            SampleError: the sample fails :func:`check_sample` (named in the message).
        """
        shape = self.sample_shape
        for m in self.modalities:
            a = arrays[m]
            if a.shape != shape:
                raise ValueError(f"modality {m!r}: expected shape {shape}, got {a.shape}")
        try:
            check_sample({m: arrays[m] for m in self.modalities}, meta["label"], self.num_class)
        except SampleError as e:
            raise SampleError(f"{meta['name']}: {e}") from None
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
            "crc": _row_crc(rows, [meta[k] for k in META_FIELDS]),
            "extra": str(source.get("extra", "")),
        }
        for k in RESUME_FIELDS:
            self._buf_resume[k].append(record[k])

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
            global _hdf5_failed
            _hdf5_failed = True
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
                if not _hdf5_failed:
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


def _records(resumes: Mapping[str, h5py.Dataset], rows: int) -> list[dict[str, Any]]:
    cols = {
        k: (ds.asstr()[:rows] if ds.dtype.kind == "O" else ds[:rows]) for k, ds in resumes.items()
    }
    return [{k: cols[k][i] for k in cols} for i in range(rows)]


def _mkdir_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheWriteError(f"{path}: cannot create its folder ({e.strerror or e})") from None


def _int_attr(f: h5py.File, name: str) -> int:
    v = f.attrs.get(name)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise CacheError(f"root attribute {name!r} is {_show(v)}, expected an integer")
    return int(v)


def _show(value: Any) -> str:
    """``repr`` of an attribute value as the user wrote it (numpy scalars as Python ones)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _json_attr(attrs, what: str, default: str | None = None) -> Any:
    text = attrs.get("options", default)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError as e:
        raise CacheError(f"{what} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise CacheError(f"{what} is {text!r}, expected a JSON object")
    return value


def _str_attr(f: h5py.File, name: str) -> str:
    v = f.attrs.get(name)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise CacheError(f"root attribute {name!r} is {_show(v)}, expected a string")
    return v


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
    ``modality_options`` (per modality dataset, as recorded on it), ``split_names``,
    ``schema_version`` (the root attribute; only :data:`SCHEMA_VERSION` is accepted).

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
            try:
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
        version = _int_attr(f, "schema_version")
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
        self.dataset = _str_attr(f, "dataset")
        if self.dataset not in (*layout.BENCHMARKS, CUSTOM_DATASET):
            raise CacheError(
                f"root attribute 'dataset' is {self.dataset!r}, expected one of "
                f"{', '.join((*layout.BENCHMARKS, CUSTOM_DATASET))}"
            )
        self.t = _int_attr(f, "t_frames")
        if self.t < 2:
            raise CacheError(f"root attribute 't_frames' is {self.t}, expected at least 2")
        self.options = _json_attr(f.attrs, "root attribute 'options'")
        self.modalities = tuple(layout_order(f["modalities"].keys()))
        mods = f["modalities"]
        self.modality_options = {
            m: _json_attr(mods[m].attrs, f"modalities/{m} attribute 'options'", "{}")
            for m in self.modalities
        }
        self._read_layout(f)
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
        for m in self.modalities:
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
            self.feature_options = layout.ModalityOptions.from_json(
                json.loads(raw) if raw is not None else self.options
            )
        except (layout.LayoutError, ValueError, TypeError) as e:
            raise CacheError(f"root attribute 'modality_options': {e}") from None
        num_class = f.attrs.get("num_class", layout.NUM_CLASSES.get(self.dataset))
        if not isinstance(num_class, (int, np.integer)) or num_class < 1:
            raise CacheError(
                f"root attribute 'num_class' must be a positive integer, found {_show(num_class)}"
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
        uniq, inverse = np.unique(idx, return_inverse=True)
        if uniq[-1] - uniq[0] + 1 == uniq.size:  # a run of samples: one slice
            return ds[int(uniq[0]) : int(uniq[-1]) + 1][inverse]
        # h5py's point selection (ds[uniq]) costs ~0.7 ms a sample; one read per sample ~25 us
        out = np.empty((uniq.size, *ds.shape[1:]), dtype=ds.dtype)
        for j, i in enumerate(uniq.tolist()):
            out[j] = ds[i]
        return out[inverse]


def layout_order(names: Iterable[str]) -> list[str]:
    """Modality names in the canonical order (joint, velocity, ...), unknown names last."""
    names = list(names)
    known = [m for m in layout.MODALITY_NAMES if m in names]
    return known + sorted(set(names) - set(known))


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
