"""One sample through the pipeline that ``skelmod convert`` and ``skelmod import`` share:
read -> select bodies -> normalise -> modalities, checked like every sample a cache takes.

* **read**: a raw file by its suffix (:data:`SOURCES`: NTU ``.skeleton`` with
  :func:`skelmod.ntu.read_skeleton`; N-UCLA ``.json`` with :func:`skelmod.nucla.read_nucla`),
  or, for ``skelmod import``, one sequence of an arrays file;
* **select bodies** (NTU only: N-UCLA and imported sequences keep theirs);
* **normalise** (in the sample's joint layout) and compute the **modalities**
  (docs/method.md, "Data and normalisation"; "The six modalities"):
  :func:`process_sample`.

:func:`run` takes a read and selected :class:`Sample` the rest of the way; :func:`convert_file`
is read + :func:`run` for one raw file. :class:`~skelmod.options.ConvertOptions` holds
everything that determines the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import layout
from .bodies import select_bodies
from .cache.schema import SampleError, check_sample
from .fused import select_and_normalize
from .modalities import compute_modalities
from .names import check_sample_ids, parse_sample_name
from .normalize import normalize_sample
from .ntu import read_skeleton
from .nucla import read_nucla
from .options import (  # noqa: F401 - re-exported: the pipeline's options
    MAX_TARGET_FRAMES,
    SOURCES,
    SUFFIX,
    ConvertError,
    ConvertOptions,
    parse_modalities,
)


@dataclass
class Sample:
    """One sample after reading and body selection: ``joints`` ``(3, F, V, M)`` in the joint
    layout ``layout_name``, its cache metadata (:data:`skelmod.cache.META_FIELDS` but
    ``valid_length``, which normalisation sets), the bodies each rule dropped and how many
    times ``denoise`` fell back to the longest body."""

    joints: np.ndarray
    meta: dict[str, Any]
    layout_name: str
    dropped: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0


def read_ntu(path: Path, options: ConvertOptions, dataset: str | None = None) -> Sample:
    """NTU file -> its selected bodies ``(3, F, 25, 2)`` (``options.bodies``) and metadata.

    The ids of the name must lie in ``dataset``'s ranges (when given)."""
    sid = _checked_ntu_name(path, dataset)
    raw = read_skeleton(path)
    return _select_ntu(raw, sid, options)


def _checked_ntu_name(path: Path, dataset: str | None):
    sid = parse_sample_name(path.name)
    if dataset is not None:
        try:
            check_sample_ids(sid, dataset)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return sid


def _ntu_meta(sid, frame_count: int, seen: int, kept: int) -> dict[str, Any]:
    return {
        "name": sid.name,
        "setup": sid.setup,
        "camera": sid.camera,
        "subject": sid.subject,
        "replication": sid.replication,
        "action": sid.action,
        "label": sid.label,
        "frame_count": frame_count,
        "bodies_seen": seen,
        "bodies_kept": kept,
    }


def _select_ntu(raw, sid, options: ConvertOptions) -> Sample:
    d, stats = select_bodies(raw, options.bodies, max_bodies=layout.M, **options.body_thresholds)
    meta = _ntu_meta(sid, raw.frame_count, stats.bodies_seen, stats.bodies_kept)
    return Sample(d, meta, "ntu25", dict(stats.dropped), stats.fallbacks)


def _convert_ntu_fused(path: Path, options: ConvertOptions, dataset: str | None):
    """:func:`read_ntu` + :func:`run` for the ``reference`` body rule, with body selection and
    normalisation in one compiled call (:func:`skelmod.fused.select_and_normalize`, the same
    result bit for bit); a file without a valid frame takes the two-step path, which says so."""
    sid = _checked_ntu_name(path, dataset)
    raw = read_skeleton(path)
    fused = select_and_normalize(raw, options.frames, options.centre, options.yaw)
    if fused is None:
        return run(_select_ntu(raw, sid, options), options, layout.NUM_CLASSES.get(dataset or ""))
    x, length, seen, kept, dropped = fused
    meta = _ntu_meta(sid, raw.frame_count, seen, kept)
    check_sample({}, meta["label"], layout.NUM_CLASSES.get(dataset or ""))
    arrays = _modalities(x, raw.frame_count, options, "ntu25")
    return {
        "arrays": arrays,
        "meta": {**meta, "valid_length": length},
        "dropped": {"listing_order": dropped},
        "fallbacks": 0,
    }


def read_nucla_file(path: Path, options: ConvertOptions, dataset: str | None = None) -> Sample:
    """N-UCLA file -> its one body ``(3, T, 20, 1)`` as it is, metadata, nothing dropped."""
    sample = read_nucla(path)
    return Sample(sample.joints, sample.meta(), "kinect-v1-20")


#: Reader of each raw file suffix.
READERS = {
    suffix: read_nucla_file if dataset == "nucla" else read_ntu
    for dataset, (suffix, _, _) in SOURCES.items()
}


def read_file(path: str | os.PathLike, options: ConvertOptions, dataset: str | None = None):
    """Read and select the bodies of one raw file; its suffix picks the reader (:data:`READERS`)."""
    path = Path(path)
    if path.suffix not in READERS:
        raise ConvertError(f"{path}: no reader for {path.suffix!r} files")
    return READERS[path.suffix](path, options, dataset)


def process_sample(
    d: np.ndarray, frame_count: int, options: ConvertOptions, layout_name: str
) -> tuple[dict[str, np.ndarray], int]:
    """Selected bodies ``(3, F, V, M)`` -> ``({modality: (3, T, V, M) float32}, L)``: the
    normalisation and the modalities in the joint layout ``layout_name``.

    Raises :class:`~skelmod.cache.SampleError` (a ``ValueError``) when the result is not finite
    in float32 or a joint coordinate exceeds :data:`skelmod.cache.MAX_COORDINATE_M`, whatever
    the data set: a cache never holds NaN or inf."""
    # Absurd coordinates overflow float32 on the way; check_sample rejects the result with a
    # message, so numpy's warnings would only be noise.
    with np.errstate(over="ignore", invalid="ignore"):
        x, length = normalize_sample(
            d, t_target=options.frames, centre=options.centre, yaw=options.yaw, layout=layout_name
        )
    return _modalities(x, frame_count, options, layout_name), length


def _modalities(x, frame_count: int, options: ConvertOptions, layout_name: str):
    """The modalities (docs/method.md, "The six modalities") of a normalised sample ``x``
    (fresh, owned here), checked by :func:`check_sample`."""
    if options.modalities == ("joint",) and x.dtype == np.float32 and x.flags.c_contiguous:
        # The default cache: compute_modalities would only copy x and check it again.
        check_sample({"joint": x})
        return {"joint": x}
    with np.errstate(over="ignore", invalid="ignore"):
        arrays = compute_modalities(
            x,
            frame_count,
            t_target=options.frames,
            modalities=list(options.modalities),
            unit_axis=options.unit_axis,
            bones=options.bones,
            layout=layout_name,
        )
    check_sample(arrays)
    return {m: np.asarray(a, dtype=np.float32) for m, a in arrays.items()}


def run(sample: Sample, options: ConvertOptions, num_class: int | None = None) -> dict[str, Any]:
    """A read sample the rest of the way: ``{"arrays": {modality: (3, T, V, M) float32},
    "meta": {...} (with ``valid_length``), "dropped": {rule: count}, "fallbacks": int}``.

    Raises :class:`~skelmod.cache.SampleError`: a label outside ``0 .. num_class - 1`` (when
    given) or a result that fails :func:`skelmod.cache.check_sample`."""
    check_sample({}, sample.meta["label"], num_class)
    arrays, length = process_sample(
        sample.joints, sample.meta["frame_count"], options, sample.layout_name
    )
    return {
        "arrays": arrays,
        "meta": {**sample.meta, "valid_length": length},
        "dropped": sample.dropped,
        "fallbacks": sample.fallbacks,
    }


def convert_file(
    path: str | os.PathLike, options: ConvertOptions, dataset: str | None = None
) -> dict[str, Any]:
    """Convert one raw file (:func:`read_file`, then :func:`run`; NTU files with the
    ``reference`` body rule select and normalise in one compiled call, with the same result).
    Raises ``ValueError``
    subclasses that name the file and the problem: among them NTU ids outside ``dataset``'s
    ranges (when given) and, for every dataset, samples that fail
    :func:`skelmod.cache.check_sample` (non-finite values, absurd coordinates, a label that is
    not one of ``dataset``'s classes)."""
    path = Path(path)
    try:
        if path.suffix == SUFFIX and options.bodies == "reference":
            return _convert_ntu_fused(path, options, dataset)
        sample = read_file(path, options, dataset)
        return run(sample, options, layout.NUM_CLASSES.get(dataset or ""))
    except SampleError as e:
        raise ValueError(f"{path}: {e}") from None
