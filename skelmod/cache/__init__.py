"""The HDF5 cache: schema v1, a streaming atomic writer and a lazy reader.

One job per module: :mod:`~skelmod.cache.schema` (format, metadata fields, errors, the checks),
:mod:`~skelmod.cache.output` (partial file, lock, free space), :mod:`~skelmod.cache.writer`,
:mod:`~skelmod.cache.resume` (verified resume and repair), :mod:`~skelmod.cache.reader`. The
names below are the public API; import them from here.

Layout of one cache file (docs/data.md, "Cache schema v1")::

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
    /meta/frame_count      int32 (N,) header frame count of the raw file (sets γ)
    /meta/valid_length     int32 (N,) the valid length L used for resizing
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

from .output import (
    FREE_SPACE_MARGIN,
    LOCK_SUFFIX,
    PARTIAL_SUFFIX,
    OutputLock,
    check_free_space,
    hdf5_write_failed,
    lock_path,
    partial_path,
)
from .reader import CacheReader, cache_report, open_cache
from .resume import RESUME_FIELDS, Resumed
from .schema import (
    CUSTOM_DATASET,
    FORMAT,
    MAX_COORDINATE_M,
    META_FIELDS,
    SCHEMA_VERSION,
    CacheError,
    CacheWriteError,
    OutputBusyError,
    ResumeRefused,
    SampleError,
    check_sample,
    is_cache,
    layout_order,
)
from .writer import CacheWriter, write_cache

__all__ = [
    "CUSTOM_DATASET",
    "FORMAT",
    "FREE_SPACE_MARGIN",
    "LOCK_SUFFIX",
    "MAX_COORDINATE_M",
    "META_FIELDS",
    "PARTIAL_SUFFIX",
    "RESUME_FIELDS",
    "SCHEMA_VERSION",
    "CacheError",
    "CacheReader",
    "CacheWriteError",
    "CacheWriter",
    "OutputBusyError",
    "OutputLock",
    "ResumeRefused",
    "Resumed",
    "SampleError",
    "cache_report",
    "check_free_space",
    "check_sample",
    "hdf5_write_failed",
    "is_cache",
    "layout_order",
    "lock_path",
    "open_cache",
    "partial_path",
    "write_cache",
]
