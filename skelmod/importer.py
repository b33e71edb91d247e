"""Any skeleton data set in three lines: a documented ``.npz`` of arrays -> one HDF5 cache.

Array format (``np.savez``; N sequences, ΣT frames in all, V joints of a registered layout):

==================  ============================  ==============================================
key                 shape, dtype                  content
==================  ============================  ==============================================
``joints``          ``(ΣT, V, 3)`` or             every sequence's frames, concatenated; x, y, z
                    ``(ΣT, M, V, 3)``, float      in metres (y up); one body, or M bodies (an
                                                  absent body is all zeros)
``offsets``         ``(N+1,)`` int                sequence i is ``joints[offsets[i]:offsets[i+1]]``;
                                                  ``offsets[0] = 0``, increasing,
                                                  ``offsets[N] = ΣT``
``label``           ``(N,)`` int                  class, ``0 .. num_class-1`` (num_class =
                                                  ``max(label) + 1``; labels at most 32766)
``subject``         ``(N,)`` int, optional        subject id (0 .. 32767)
``view``            ``(N,)`` int, optional        camera / view id (0 .. 32767)
``name``            ``(N,)`` str, optional        unique sample names (default ``"000000"``, ...)
``train_<split>``   ``(N,)`` bool, any number     the training samples of benchmark ``<split>``:
                                                  splits ``<split>-train`` (True) and
                                                  ``<split>-val`` (False), neither
                                                  empty (also after rejections)
==================  ============================  ==============================================

Each sequence then goes through exactly what ``skelmod convert`` does after reading a file
(:func:`skelmod.pipeline.run`: normalisation and modalities in the layout), and
the cache is written the same way (atomically, ``dataset = "custom"``, the masks stored in
``/splits``). A malformed array is an :class:`ArrayImportError` naming the key, the expected and
the found shape or value; a sequence that cannot be normalised (no valid frame, non-finite values)
is rejected with its reason and the others still convert.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import layout, limits
from .cache import CUSTOM_DATASET, CacheWriter, partial_path
from .convert import check_output
from .errors import SkelmodError
from .pipeline import ConvertOptions, Sample, run
from .report import ConvertReport, sample_counts

__all__ = ["ArrayImportError", "import_arrays", "load_arrays"]

_REQUIRED = ("joints", "offsets", "label")
_OPTIONAL_INT = ("subject", "view")
_INT16_MAX = np.iinfo(np.int16).max


class ArrayImportError(SkelmodError):
    """The arrays file is malformed; the message names the file, the key and what was expected."""


def _memory_limit() -> int:
    """Half the physical memory: the most one array may claim (``joints`` is loaded whole)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit we can state
        return 2**62


def _int_array(path: Path, key: str, a: np.ndarray, shape: tuple[int, ...], hi: int) -> np.ndarray:
    if a.dtype.kind not in "iu":
        raise ArrayImportError(f"{path}: {key!r} must hold integers, found dtype {a.dtype}")
    if a.shape != shape:
        raise ArrayImportError(f"{path}: {key!r} must have shape {shape}, found {a.shape}")
    if a.size and (a.min() < 0 or a.max() > hi):
        raise ArrayImportError(
            f"{path}: {key!r} values must lie in 0 .. {hi}, found {a.min()} .. {a.max()}"
        )
    return a.astype(np.int64)


def _header(npz: np.lib.npyio.NpzFile, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header bytes)`` that member ``key``'s ``.npy`` header declares."""
    with npz.zip.open(key + ".npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return shape, dtype, f.tell()


def _check_declared(path: Path, npz, keys: set[str], sizes: dict[str, int], v: int) -> None:
    """The shapes the members' headers declare, before any array is read: each must hold
    exactly the bytes its zip entry holds (a header cannot claim 10^12 frames of a small
    member), and the sizes must lie within :mod:`skelmod.limits` (bodies, sequences)."""
    for key in sorted(keys):
        try:
            shape, dtype, header = _header(npz, key)
        except (ValueError, SyntaxError, OSError, EOFError, zipfile.BadZipFile) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ArrayImportError(
                f"{path}: {key!r} is not a readable .npy member ({reason})"
            ) from None
        if dtype.hasobject:
            continue  # refused when read (no pickle)
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if declared != sizes.get(key, 0) - header:
            raise ArrayImportError(
                f"{path}: {key!r} declares shape {shape} {dtype} ({declared} bytes) but its "
                f"member holds {sizes.get(key, 0) - header} bytes of data"
            )
        if key == "joints" and len(shape) == 4 and shape[1] > limits.MAX_BODIES:
            raise ArrayImportError(
                f"{path}: 'joints' declares {shape[1]} bodies (M), more than the limit of "
                f"{limits.MAX_BODIES}"
            )
        if key == "offsets" and len(shape) == 1 and shape[0] > limits.MAX_SAMPLES + 1:
            raise ArrayImportError(
                f"{path}: 'offsets' declares {shape[0] - 1} sequences, more than the limit of "
                f"{limits.MAX_SAMPLES}"
            )


def load_arrays(path: str | os.PathLike, layout_name: str) -> dict[str, Any]:
    """Read and check an arrays file (module docstring). Returns ``joints`` as
    ``(ΣT, M, V, 3)`` float64, ``offsets``, ``label``, ``subject``, ``view``, ``name`` and
    ``splits`` ``{benchmark: (N,) bool}``.

    Raises:
        ArrayImportError: a missing key, a wrong shape, dtype or value (the message says which);
        LayoutError: an unknown layout.
    """
    path = Path(path)
    lay = layout.get_layout(layout_name)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ArrayImportError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ArrayImportError(f"{path}: expected an .npz archive of named arrays (np.savez)")
    with npz:
        keys = set(npz.files)
        missing = [k for k in _REQUIRED if k not in keys]
        if missing:
            raise ArrayImportError(
                f"{path}: missing array {', '.join(map(repr, missing))} (found "
                f"{', '.join(sorted(keys)) or 'none'})"
            )
        known = {*_REQUIRED, *_OPTIONAL_INT, "name"}
        unknown = sorted(k for k in keys - known if not k.startswith("train_"))
        if unknown:
            raise ArrayImportError(
                f"{path}: unknown array {', '.join(map(repr, unknown))}; expected joints, offsets, "
                "label, optional subject, view, name and train_<split> masks"
            )
        sizes = {i.filename.removesuffix(".npy"): i.file_size for i in npz.zip.infolist()}
        _check_declared(path, npz, keys, sizes, lay.V)
        limit = _memory_limit()
        big = [k for k in sorted(keys) if sizes.get(k, 0) > limit]
        if big:
            raise ArrayImportError(
                f"{path}: array {big[0]!r} holds {sizes[big[0]]} bytes, more than the "
                f"{limit} this machine can load (half its memory)"
            )
        try:
            arrays = {k: npz[k] for k in sorted(keys)}
        except ValueError as e:
            what = "cannot be read without pickle" if "pickle" in str(e) else "is corrupt"
            raise ArrayImportError(f"{path}: an array {what} ({e})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise ArrayImportError(f"{path}: an array is corrupt ({e})") from None

    joints = arrays["joints"]
    if joints.dtype.kind != "f":
        raise ArrayImportError(
            f"{path}: 'joints' must be a float array, found dtype {joints.dtype}"
        )
    if joints.ndim == 3:
        joints = joints[:, None]
    if joints.ndim != 4 or joints.shape[2:] != (lay.V, 3) or joints.shape[1] < 1:
        raise ArrayImportError(
            f"{path}: 'joints' must have shape (ΣT, {lay.V}, 3) or (ΣT, M, {lay.V}, 3) for "
            f"layout {lay.name}, found {arrays['joints'].shape}"
        )
    total = joints.shape[0]

    offsets = arrays["offsets"]
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1 or offsets.size < 2:
        raise ArrayImportError(
            f"{path}: 'offsets' must be an (N+1,) integer array with N >= 1, found "
            f"{offsets.dtype} {offsets.shape}"
        )
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != total:
        raise ArrayImportError(
            f"{path}: 'offsets' must start at 0 and end at ΣT = {total} (the frames in "
            f"'joints'), found {offsets[0]} .. {offsets[-1]}"
        )
    empty = np.flatnonzero(np.diff(offsets) <= 0)
    if empty.size:
        i = int(empty[0])
        raise ArrayImportError(
            f"{path}: 'offsets' must increase (every sequence has a frame), found "
            f"offsets[{i}] = {offsets[i]} >= offsets[{i + 1}] = {offsets[i + 1]}"
        )
    n = offsets.size - 1
    long = np.flatnonzero(np.diff(offsets) > limits.MAX_RAW_FRAMES)
    if long.size:
        i = int(long[0])
        raise ArrayImportError(
            f"{path}: 'offsets': sequence {i} has {offsets[i + 1] - offsets[i]} frames, more "
            f"than the limit of {limits.MAX_RAW_FRAMES}"
        )

    # the cache stores label and action = label + 1 as int16: labels stop one short of its top
    label = _int_array(path, "label", arrays["label"], (n,), limits.MAX_CLASSES - 1)
    ids = {
        k: _int_array(path, k, arrays[k], (n,), _INT16_MAX) if k in arrays else np.zeros(n, int)
        for k in _OPTIONAL_INT
    }
    if "name" in arrays:
        name = arrays["name"]
        if name.dtype.kind != "U" or name.shape != (n,):
            raise ArrayImportError(
                f"{path}: 'name' must be an ({n},) array of strings, found "
                f"{name.dtype} {name.shape}"
            )
        bad = [i for i, s in enumerate(name) if not s.strip()]
        if bad:
            raise ArrayImportError(f"{path}: 'name' has an empty name at index {bad[0]}")
        uniq, counts = np.unique(name, return_counts=True)
        if (counts > 1).any():
            raise ArrayImportError(f"{path}: 'name' repeats {str(uniq[counts > 1][0])!r}")
        names = [str(s) for s in name]
    else:
        names = [f"{i:06d}" for i in range(n)]

    splits = {}
    for key in sorted(k for k in arrays if k.startswith("train_")):
        benchmark = key.removeprefix("train_")
        if not benchmark or "-" in benchmark:
            raise ArrayImportError(
                f"{path}: {key!r}: a split mask is named train_<split>, <split> non-empty "
                "without '-'"
            )
        mask = arrays[key]
        if mask.dtype != bool or mask.shape != (n,):
            raise ArrayImportError(
                f"{path}: {key!r} must be an ({n},) bool mask, found {mask.dtype} {mask.shape}"
            )
        _check_both_sides(mask, benchmark, f"{path}: {key!r}")
        splits[benchmark] = mask
    return {
        "joints": joints,
        "offsets": offsets,
        "label": label,
        "name": names,
        "splits": splits,
        **ids,
    }


def _check_both_sides(mask: np.ndarray, benchmark: str, where: str) -> None:
    """Refuse a split mask that leaves ``<benchmark>-train`` or ``-val`` empty: a split
    without validation samples cannot be evaluated, one without training samples cannot be
    trained on."""
    if mask.all() or not mask.any():
        side, empty = ("training", "val") if mask.all() else ("validation", "train")
        raise ArrayImportError(
            f"{where} marks all {len(mask)} sequences as {side}, so the split "
            f"{benchmark}-{empty} would be empty; a split needs sequences on both sides "
            "(True: training, False: validation), or leave the mask out"
        )


def import_arrays(
    arrays: str | os.PathLike,
    out: str | os.PathLike,
    *,
    layout_name: str,
    options: ConvertOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    block: int = 256,
    overwrite: bool = False,
) -> ConvertReport:
    """Convert the sequences of an arrays file (module docstring) into the cache ``out``.

    ``out`` follows convert's rule (:func:`skelmod.convert.check_output`, checked before the
    arrays are read): never the arrays file itself, a directory or a path ending in a slash, or
    an existing file that is not a cache; an existing cache only with ``overwrite``. The cache
    is written under convert's lock (one writer per output) and replaced atomically.

    Returns the :class:`~skelmod.report.ConvertReport` (``report.ok`` is False when some
    sequences were rejected; they are named ``name: reason``).

    Raises:
        OutputError: ``out`` breaks the output rule (nothing read, nothing written).
        ArrayImportError: a malformed arrays file, or no sequence converted.
    """
    options = options or ConvertOptions()
    start = time.perf_counter()
    check_output(out, [Path(arrays)], overwrite)
    data = load_arrays(arrays, layout_name)
    joints, offsets, names = data["joints"], data["offsets"], data["name"]
    n, bodies = len(names), joints.shape[1]
    report = ConvertReport(out=None, dataset=CUSTOM_DATASET, total=n, unit="sequences")
    writer = CacheWriter(
        out, dataset=CUSTOM_DATASET, t=options.frames,
        options={**options.to_json(), "source": str(arrays)}, modalities=options.modalities,
        block=block, layout=layout_name, bodies=bodies,
        modality_options=options.modality_options.to_json(),
        num_class=int(data["label"].max()) + 1,
    )  # fmt: skip
    kept = []
    try:
        for i in range(n):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            d = np.ascontiguousarray(joints[lo:hi].transpose(3, 0, 2, 1))  # (3, T, V, M)
            try:
                if not np.isfinite(d).all():
                    t, m, v = np.argwhere(~np.isfinite(joints[lo:hi]))[0][:3]
                    raise ValueError(
                        f"'joints' row {lo + t} (frame {t}), body {m}, joint {v + 1}: not finite"
                    )
                result = run(_sample(data, i, d, layout_name), options)
            except ValueError as e:
                report.rejected.append((names[i], str(e)))
            else:
                writer.append(result["arrays"], result["meta"])
                writer.maybe_flush()
                kept.append(i)
                report.count(sample_counts(result))
            if progress is not None:
                progress(i + 1, n)
        if not kept:
            raise ArrayImportError(
                f"{arrays}: none of the {n} sequences converted:\n"
                + "\n".join(f"  {name}: {reason}" for name, reason in report.rejected[:20])
            )
        for benchmark, mask in data["splits"].items():
            rejected = f"with the {n - len(kept)} rejected sequences left out"
            _check_both_sides(mask[kept], benchmark, f"{arrays}: 'train_{benchmark}' {rejected}")
        writer.write_splits({b: mask[kept] for b, mask in data["splits"].items()})
    except BaseException:
        writer.close()
        partial_path(out).unlink(missing_ok=True)
        raise
    report.seconds = time.perf_counter() - start
    report.out = writer.commit(
        {"summary": {"converted": report.converted, "rejected": report.rejected}}
    )
    return report


def _sample(data: dict[str, Any], i: int, d: np.ndarray, layout_name: str) -> Sample:
    """Sequence ``i`` of a loaded arrays file as the pipeline takes it: ``d`` ``(3, T, V, M)``,
    every body kept, ``camera`` = view, ``action`` = label + 1."""
    bodies = d.shape[-1]
    meta = {
        "name": data["name"][i],
        "setup": 0,
        "camera": int(data["view"][i]),
        "subject": int(data["subject"][i]),
        "replication": 0,
        "action": int(data["label"][i]) + 1,
        "label": int(data["label"][i]),
        "frame_count": d.shape[1],
        "bodies_seen": bodies,
        "bodies_kept": bodies,
    }
    return Sample(d, meta, layout_name)
