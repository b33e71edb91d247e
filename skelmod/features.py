"""Add or recompute modalities in an existing cache, atomically.

A cache has one set of modality options (``bones``, ``unit_axis``: root attribute
``modality_options``): asking for other options recomputes every bone-derived modality the
cache holds (:data:`skelmod.layout.MODALITY_REGISTRY`), so the file never mixes conventions.
The modalities are computed in the cache's joint layout.

The new cache is written by a :class:`~skelmod.cache.CacheWriter` (metadata, splits and the
kept modalities copied, the requested ones computed from ``modalities/joint`` in blocks and
checked like every sample a writer takes) into ``OUT.partial``, renamed over the old cache only
when complete, so a killed run leaves the old cache intact. The cache's lock (``OUT.lock``,
shared with ``convert``) is held throughout: one writer per cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np

from . import layout
from .cache import (
    META_FIELDS,
    CacheError,
    CacheReader,
    CacheWriteError,
    CacheWriter,
    OutputLock,
    SampleError,
    check_free_space,
    layout_order,
    partial_path,
)
from .modalities import compute_modalities

#: Root attributes the writer sets itself; any other (e.g. ``summary``) is carried over.
_WRITER_ATTRS = {"format", "schema_version", "dataset", "t_frames", "options", "source_dir",
                 "layout", "modality_options", "num_class", "progress"}  # fmt: skip


def add_features(
    path: str | os.PathLike,
    modalities: Iterable[str],
    *,
    unit_axis: bool | None = None,
    bones: str | None = None,
    block: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Compute ``modalities`` from the cache's joints and store them as ``modalities/<name>``.

    Existing datasets of those names are recomputed; others are kept. ``unit_axis`` and
    ``bones`` default to the cache's own options; other values recompute every bone-derived
    modality already in the cache too (module docstring). The options used (``unit_axis``,
    ``bones``, ``t_target`` = the cache's T) are recorded on each dataset, in the root
    ``modality_options`` and appended to the root ``options["features"]`` history.

    Raises:
        CacheError: ``path`` is not a cache (or another process is writing it, or the new
        file cannot be written: :class:`~skelmod.cache.OutputBusyError`,
        :class:`~skelmod.cache.CacheWriteError`). ValueError: unknown modality names or options.
    """
    with OutputLock(path) as lock:
        return _add_features(Path(path), modalities, unit_axis, bones, block, progress, lock)


def _add_features(path, modalities, unit_axis, bones, block, progress, lock) -> Path:
    reader = CacheReader(path)  # validates
    new = layout.ModalityOptions.resolve(reader.feature_options, bones=bones, unit_axis=unit_axis)
    wanted = [m for m in layout.check_modalities(list(modalities)) if m != "joint"]
    if new != reader.feature_options:
        stale = [m for m in reader.modalities if layout.MODALITY_REGISTRY[m].bone_options]
        wanted = [m for m in layout.MODALITY_NAMES if m in {*wanted, *stale}]
    feat_options = {**new.to_json(), "t_target": reader.t}
    n, shape = reader.n, reader.sample_shape
    all_mods = layout_order({*reader.modalities, *wanted})
    options = dict(reader.options)
    options["features"] = [*options.get("features", []), {"modalities": wanted, **feat_options}]
    options["modalities"] = list(all_mods)
    try:
        check_free_space(
            partial_path(path), os.path.getsize(path) + n * len(wanted) * 4 * int(np.prod(shape))
        )
    except OSError as e:
        raise _write_error(path, e) from None
    with h5py.File(path, "r") as src:
        kept = {m: src["modalities"][m] for m in reader.modalities if m not in wanted}
        dataset_options = {m: json.loads(ds.attrs.get("options", "{}")) for m, ds in kept.items()}
        extra = {
            k: v.item() if isinstance(v, np.generic) else v
            for k, v in src.attrs.items()
            if k not in _WRITER_ATTRS
        }
        writer = CacheWriter(
            path, dataset=reader.dataset, t=reader.t, options=options, modalities=all_mods,
            block=block, layout=reader.layout.name, bodies=reader.bodies,
            modality_options=new.to_json(), num_class=reader.num_class,
            dataset_options={**dataset_options, **{m: feat_options for m in wanted}}, _lock=lock,
        )  # fmt: skip
        try:
            _copy_and_compute(src, reader, writer, kept, wanted, new, block, progress)
            splits = src.get("splits")
            if splits is not None:
                writer.write_splits({k: ds[:] for k, ds in splits.items()})
        except BaseException as e:
            writer.abort()
            if isinstance(e, CacheWriteError):
                raise _write_error(path, e) from None
            raise
    return writer.commit(extra)


def _copy_and_compute(src, reader, writer, kept, wanted, new, block, progress) -> None:
    """Append every row: ``kept`` modalities copied, ``wanted`` computed from the joints."""
    n = reader.n
    joints = src["modalities"]["joint"]
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        rows = compute_modalities(
            joints[lo:hi],
            reader.meta["frame_count"][lo:hi],
            t_target=reader.t,
            modalities=wanted,
            unit_axis=new.unit_axis,
            bones=new.bones,
            layout=reader.layout,
        )
        rows.update({m: ds[lo:hi] for m, ds in kept.items()})
        for j in range(hi - lo):
            meta = {k: reader.meta[k][lo + j] for k in META_FIELDS}
            try:
                writer.append({m: a[j] for m, a in rows.items()}, meta, check=wanted)
            except SampleError as e:  # a cache never holds NaN or inf (docs/guarantees.md)
                raise CacheError(
                    f"{reader.path}: {e.modality} of sample {lo + j} is not finite; the cache is "
                    "unchanged"
                ) from None
            writer.maybe_flush()
        if progress is not None:
            progress(hi, n)


def _write_error(path: Path, e: Exception) -> CacheWriteError:
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return CacheWriteError(
        f"{path}: cannot write the new modalities ({why}); the cache is unchanged"
    )
