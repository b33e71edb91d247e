"""Verified resuming of a killed conversion: the per-row resume records of a partial file,
their CRCs, and the repair that keeps only rows that check out.

The writer (:class:`skelmod.cache.CacheWriter`) records, per row, where the sample came from and
a CRC-32 of the row as written; these functions reopen the partial file, refuse one made from
other inputs or options, roll back rows whose CRC does not match, drop rows the caller rejects
and copy the rest into a fresh partial file before anything is appended.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .output import OutputLock, partial_path
from .schema import (
    FORMAT,
    META_FIELDS,
    SCHEMA_VERSION,
    CacheWriteError,
    ResumeRefused,
    int_attr,
    str_attr,
)

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


def row_crc(arrays: Iterable[np.ndarray], meta: Iterable[Any]) -> int:
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


def resume_writer(
    cls: type, path: str | os.PathLike, *, dataset: str, t: int, options: Mapping[str, Any],
    modalities: Iterable[str], block: int = 256, source_dir: str = "",
    keep: Callable[[dict[str, Any]], bool] | None = None, **schema: Any,
) -> tuple[Any, Resumed] | None:  # fmt: skip
    """Reopen ``OUT.partial`` left by a killed run as a writer of class ``cls``, verified.

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
            adopt(writer, path, f, lock, **kw)
            return writer, verify_and_repair(writer, keep)
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


def adopt(self, path, f, lock, **kw) -> None:
    """Make the bare writer ``self`` adopt the open partial file ``f``; refuse one made from
    other inputs or options."""
    self._setup(path, **kw)
    self._f, self._lock = f, lock
    if f.attrs.get("format") != FORMAT or int_attr(f, "schema_version") != SCHEMA_VERSION:
        raise ValueError("not a partial skelmod cache of this schema version")
    recorded_dir = str_attr(f, "source_dir")
    if recorded_dir != self.source_dir:
        raise ResumeRefused(
            f"{self.partial} was started from {recorded_dir or 'another source'}, not "
            f"{self.source_dir}; resume with the same input directory, or run without "
            "resume to start over",
            param="resume",
        )
    theirs = {
        "dataset": str_attr(f, "dataset"),
        "layout": str_attr(f, "layout"),
        "frames": int_attr(f, "t_frames"),
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


def verify_and_repair(self, keep: Callable[[dict[str, Any]], bool] | None) -> Resumed:
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
                if row_crc((b[i] for b in block), [m[lo + i] for m in meta]) != crcs[lo + i]:
                    raise ValueError(f"row {lo + i} does not match its CRC")
                good += 1
    except (ValueError, OSError, RuntimeError, KeyError) as e:
        note = f"{self.partial}: {e}; rolled back from {claimed} to {good} samples"
    found = records(resumes, good)
    kept = [i for i, r in enumerate(found) if keep is None or keep(r)]
    self._rewrite(np.asarray(kept, dtype=np.int64))
    return Resumed(state if good == claimed else None, [found[i] for i in kept], note)


def records(resumes: Mapping[str, h5py.Dataset], rows: int) -> list[dict[str, Any]]:
    """The first ``rows`` resume records, one dict per row."""
    cols = {
        k: (ds.asstr()[:rows] if ds.dtype.kind == "O" else ds[:rows]) for k, ds in resumes.items()
    }
    return [{k: cols[k][i] for k in cols} for i in range(rows)]
