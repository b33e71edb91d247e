"""Add or recompute modalities in an existing cache, atomically.

A cache has one set of modality options (``bones``, ``unit_axis``: root attribute
``modality_options``): asking for other options recomputes every bone-derived modality the
cache holds (:data:`skelmod.layout.MODALITY_REGISTRY`), so the file never mixes conventions.
The modalities are computed in the cache's joint layout.

The new cache is built beside the old one (``OUT.partial``: metadata and the kept modalities
copied chunk by chunk, the requested ones computed from ``modalities/joint`` in blocks) and
renamed over it only when complete, so a killed run leaves the old cache intact. The cache's
lock (``OUT.lock``, shared with ``convert``) is held throughout: one writer per cache.
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
    CacheError,
    CacheReader,
    CacheWriteError,
    OutputLock,
    check_free_space,
    layout_order,
    partial_path,
)
from .modalities import compute_modalities


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
    with OutputLock(path):
        return _add_features(Path(path), modalities, unit_axis, bones, block, progress)


def _add_features(path, modalities, unit_axis, bones, block, progress) -> Path:
    reader = CacheReader(path)  # validates
    old = reader.feature_options
    new = layout.ModalityOptions(
        bones=old.bones if bones is None else bones,
        unit_axis=old.unit_axis if unit_axis is None else unit_axis,
    )
    wanted = [m for m in layout.check_modalities(list(modalities)) if m != "joint"]
    if new != old:
        stale = [m for m in reader.modalities if layout.MODALITY_REGISTRY[m].bone_options]
        wanted = [m for m in layout.MODALITY_NAMES if m in {*wanted, *stale}]
    feat_options = {**new.to_json(), "t_target": reader.t}
    partial = partial_path(path)
    n, shape = reader.n, reader.sample_shape
    try:
        check_free_space(partial, os.path.getsize(path) + n * len(wanted) * 4 * int(np.prod(shape)))
        with h5py.File(path, "r") as src, h5py.File(partial, "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            src.copy(src["meta"], dst, "meta")
            grp = dst.create_group("modalities")
            for m in src["modalities"]:
                if m not in wanted:
                    src.copy(src["modalities"][m], grp, m)
            for m in wanted:
                ds = grp.create_dataset(m, shape=(n, *shape), dtype=np.float32, chunks=(1, *shape))
                ds.attrs["options"] = json.dumps(feat_options, sort_keys=True)
            joints = src["modalities"]["joint"]
            frame_count = src["meta"]["frame_count"][:]
            for lo in range(0, n, block):
                hi = min(n, lo + block)
                out = compute_modalities(
                    joints[lo:hi],
                    frame_count[lo:hi],
                    t_target=reader.t,
                    modalities=wanted,
                    unit_axis=new.unit_axis,
                    bones=new.bones,
                    layout=reader.layout,
                )
                for m in wanted:
                    bad = ~np.isfinite(out[m]).reshape(hi - lo, -1).all(axis=1)
                    if bad.any():  # a cache never holds NaN or inf (decisions.md 4 and 6)
                        raise CacheError(
                            f"{path}: {m} of sample {lo + int(np.argmax(bad))} is not finite; "
                            "the cache is unchanged"
                        )
                    grp[m][lo:hi] = out[m]
                if progress is not None:
                    progress(hi, n)
            options = json.loads(src.attrs["options"])
            options.setdefault("features", []).append({"modalities": wanted, **feat_options})
            options["modalities"] = list(layout_order(grp.keys()))
            dst.attrs["options"] = json.dumps(options, sort_keys=True)
            dst.attrs["modality_options"] = json.dumps(new.to_json(), sort_keys=True)
        os.replace(partial, path)
    except BaseException as e:
        if partial.exists():
            partial.unlink()
        if isinstance(e, OSError):
            raise CacheWriteError(
                f"{path}: cannot write the new modalities ({e.strerror or e}); the cache is "
                "unchanged"
            ) from None
        raise
    return path
