"""What a reader checks before it trusts a cache (issue 24, points 3 to 5): that the file holds
its data itself (no links, external storage or virtual datasets), that the sizes it declares
lie within :mod:`skelmod.limits`, and that its values are plausible (frame counts; joints
finite and within :data:`~skelmod.limits.MAX_COORDINATE_M`, as the writer checked them).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from .. import limits
from .schema import META_FIELDS, CacheError, SampleError, check_sample

__all__ = ["check_declared", "check_frames", "check_joints", "refuse_pointers"]

#: Deepest group nesting a cache may have (it uses two levels; a hard-link cycle is refused).
_MAX_DEPTH = 8


def refuse_pointers(f: h5py.Group, prefix: str = "", depth: int = 0) -> None:
    """Raise CacheError naming the first link or dataset of ``f`` that points outside the file:
    a soft or external link, a dataset with external storage or a virtual dataset.

    A cache is data, never a pointer: such an object could make a reader read any local file
    (``/etc/passwd``) or block on a FIFO. Walks the links without resolving them and reads no
    dataset's data.
    """
    if depth > _MAX_DEPTH:
        raise CacheError(f"{prefix}: groups nested deeper than {_MAX_DEPTH} (or a link cycle)")
    for name in f:
        path = f"{prefix}/{name}"
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.SoftLink):
            raise CacheError(
                f"{path} is a soft link (to {link.path}); a cache holds its data itself"
            )
        if isinstance(link, h5py.ExternalLink):
            raise CacheError(
                f"{path} is an external link (to {link.filename}:{link.path}); a cache holds "
                "its data itself"
            )
        obj = f[name]
        if isinstance(obj, h5py.Group):
            refuse_pointers(obj, path, depth + 1)
        elif isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                raise CacheError(f"{path} is a virtual dataset; a cache holds its data itself")
            if obj.external:
                raise CacheError(
                    f"{path} keeps its data in external file {obj.external[0][0]!s}; a cache "
                    "holds its data itself"
                )


def check_declared(f: h5py.File, t: int, num_class: int) -> None:
    """The sizes the file declares, against :mod:`skelmod.limits`, before anything is read:
    T, the class count, M and the sample count of every metadata array."""
    bounds = [
        ("root attribute 't_frames'", t, limits.MAX_TARGET_FRAMES),
        ("root attribute 'num_class'", num_class, limits.MAX_CLASSES),
    ]
    joint = f["modalities"]["joint"]
    if joint.ndim == 5:
        bounds.append(("modalities/joint bodies (M)", joint.shape[-1], limits.MAX_BODIES))
    for k in META_FIELDS:
        ds = f["meta"][k]
        bounds.append((f"meta/{k} length", ds.shape[0] if ds.ndim else 0, limits.MAX_SAMPLES))
    for what, value, limit in bounds:
        if value > limit:
            raise CacheError(f"{what} is {value}, more than the limit of {limit}")


def check_frames(meta: dict[str, np.ndarray]) -> None:
    """Per-sample frame counts: ``1 <= valid_length <= frame_count <= MAX_RAW_FRAMES``
    (γ = frame_count / T must be a real sequence's); the message names the first row."""
    fc, vl = meta["frame_count"], meta["valid_length"]
    for what, bad in (
        (f"meta/frame_count must lie in 1 .. {limits.MAX_RAW_FRAMES}",
         (fc < 1) | (fc > limits.MAX_RAW_FRAMES)),
        ("meta/valid_length must lie in 1 .. frame_count", (vl < 1) | (vl > fc)),
    ):  # fmt: skip
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CacheError(
                f"{what}; row {i} ({meta['name'][i]}) has frame_count {int(fc[i])}, "
                f"valid_length {int(vl[i])} ({int(bad.sum())} rows in all)"
            )


def check_joints(path: str | os.PathLike, names: np.ndarray, block: int = 512) -> None:
    """Apply :func:`~skelmod.cache.schema.check_sample`'s check to every sample's joints, as
    the writer did: finite in float32 and within :data:`~skelmod.limits.MAX_COORDINATE_M`
    (reads ``joint`` once, in blocks, through a handle of its own).

    Raises CacheError naming the first offending row (its name, frame, joint and body) and
    how many rows in all.
    """
    bad: list[int] = []
    with h5py.File(path, "r") as f:
        ds = f["modalities"]["joint"]
        for lo in range(0, len(names), block):
            x = ds[lo : lo + block]
            with np.errstate(invalid="ignore"):
                ok = (np.abs(x) <= limits.MAX_COORDINATE_M).reshape(len(x), -1).all(1)
            bad.extend(int(lo + i) for i in np.flatnonzero(~ok))
        if not bad:
            return
        row = bad[0]
        try:
            check_sample({"joint": ds[row]})
        except SampleError as e:
            what = str(e)
        else:  # a value beyond float32's range: its float64 is finite
            what = "modality 'joint' holds a value beyond float32"
    raise CacheError(
        f"{path}: row {row} ({names[row]}): {what} ({len(bad)} row(s) in all); re-create the "
        "cache with `skelmod convert` or `skelmod import`, which reject such samples"
    )
