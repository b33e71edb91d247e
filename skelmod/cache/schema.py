"""The cache's schema (version 1): format constants, metadata fields, errors and the checks
every sample and every header attribute pass. The layout of a cache file is described in
:mod:`skelmod.cache`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np

from .. import layout, limits
from ..errors import SkelmodError

SCHEMA_VERSION = 1
FORMAT = "skelmod-cache"

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

#: Datasets whose splits are stored in the file (``/splits``) instead of derived from names.
CUSTOM_DATASET = "custom"


class CacheError(SkelmodError):
    """A file that is not a usable cache: wrong format, schema version, or missing parts."""


class OutputBusyError(CacheError):
    """Another process holds the output's lock (one writer per output)."""


class ResumeRefused(CacheError):
    """A resumed run found a partial file made from other inputs or with other options."""


class SampleError(SkelmodError):
    """A sample the cache refuses: non-finite values, coordinates beyond the physical bound,
    or a label outside the data set's classes. ``modality``: the array at fault (``None`` for
    a label)."""

    def __init__(self, message: str = "", *, modality: str | None = None):
        super().__init__(message)
        self.modality = modality


class CacheWriteError(CacheError):
    """Writing the output failed (disk full, unwritable folder); the message says what is kept."""


#: Largest |coordinate| accepted in the ``joint`` modality, in metres (:mod:`skelmod.limits`).
MAX_COORDINATE_M = limits.MAX_COORDINATE_M


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
                f"body {b + 1}",
                modality=m,
            )
    if label is not None and num_class is not None and not 0 <= int(label) < num_class:
        raise SampleError(f"label {int(label)} is not one of the {num_class} classes")


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


def sample_shape(t: int, v: int = layout.V, m: int = layout.M) -> tuple[int, int, int, int]:
    return (layout.C, t, v, m)


def layout_order(names: Iterable[str]) -> list[str]:
    """Modality names in the canonical order (joint, velocity, ...), unknown names last."""
    names = list(names)
    known = [m for m in layout.MODALITY_NAMES if m in names]
    return known + sorted(set(names) - set(known))


def int_attr(f: h5py.File, name: str) -> int:
    v = f.attrs.get(name)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise CacheError(f"root attribute {name!r} is {show(v)}, expected an integer")
    return int(v)


def show(value: Any) -> str:
    """``repr`` of an attribute value as the user wrote it (numpy scalars as Python ones)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def json_attr(attrs, what: str, default: str | None = None) -> Any:
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


def str_attr(f: h5py.File, name: str) -> str:
    v = f.attrs.get(name)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if not isinstance(v, str):
        raise CacheError(f"root attribute {name!r} is {show(v)}, expected a string")
    return v
