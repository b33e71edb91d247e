"""N-UCLA (Northwestern-UCLA Multiview Action3D) skeleton files, read natively in ``kinect-v1-20``.

The ``all_sqe`` distribution (as used by CTR-GCN and most skeleton papers) holds one JSON file
per sequence, named ``aAA_sSS_eEE_vVV.json`` (action, subject, repetition, view)::

    {"file_name": "a01_s01_e00_v01", "skeletons": [T][20][3], "label": 1..10}

``skeletons`` are T frames of the 20 Kinect v1 joints in SDK order (the ``kinect-v1-20`` layout
of :mod:`skelmod.layout`), x/y/z in metres in camera space; one body per sequence. The ten
actions a01-a06, a08, a09, a11, a12 are labelled 1-10 in that order; the cache stores the
0-based ``label - 1``. Views 1 and 2 train, view 3 validates (``xview``).

Every file is checked before it is used: an error names the file and the field (``label``,
``skeletons[t][j]``) and what was expected. A number literal longer than
:data:`skelmod.limits.MAX_NUMBER_CHARS` is never converted (no 5,000-digit integer is
built). No joint is invented or moved: the sample is the file's joints as they are,
``(3, T, 20, 1)``.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SkelmodError
from .layout import KINECT_V1_20
from .limits import MAX_NUMBER_CHARS

__all__ = [
    "NUCLA_ACTIONS",
    "NuclaFormatError",
    "NuclaSample",
    "parse_nucla_name",
    "read_nucla",
]

#: Action ids of the ten classes; label ``k`` (1-based, as in the files) is ``NUCLA_ACTIONS[k-1]``.
NUCLA_ACTIONS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
#: Largest file accepted (the shared files are 6-110 kB): memory stays bounded.
MAX_BYTES = 64 * 2**20
SUFFIX = ".json"
_NAME_RE = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})")


class NuclaFormatError(SkelmodError):
    """A file that is not a valid N-UCLA sequence; the message names the file and field."""


@dataclass(frozen=True)
class NuclaSample:
    """One sequence: ids from the name, the 0-based label and the joints ``(3, T, 20, 1)``."""

    name: str
    action: int
    subject: int
    repetition: int
    view: int
    label: int
    joints: np.ndarray

    @property
    def frame_count(self) -> int:
        return int(self.joints.shape[1])

    def meta(self) -> dict[str, Any]:
        """The cache's per-sample metadata (``camera`` = view, ``replication`` = repetition)."""
        return {
            "name": self.name,
            "setup": 0,
            "camera": self.view,
            "subject": self.subject,
            "replication": self.repetition,
            "action": self.action,
            "label": self.label,
            "frame_count": self.frame_count,
            "bodies_seen": 1,
            "bodies_kept": 1,
        }


def parse_nucla_name(name: str) -> tuple[int, int, int, int]:
    """``(action, subject, repetition, view)`` from ``aAA_sSS_eEE_vVV[.json]``."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    m = _NAME_RE.fullmatch(stem)
    if m is None:
        raise NuclaFormatError(
            f"{name}: not an N-UCLA sample name (expected aAA_sSS_eEE_vVV{SUFFIX})"
        )
    action, subject, repetition, view = (int(g) for g in m.groups())
    if action not in NUCLA_ACTIONS:
        raise NuclaFormatError(
            f"{name}: action a{action:02d} is not one of N-UCLA's ten "
            f"({', '.join(f'a{a:02d}' for a in NUCLA_ACTIONS)})"
        )
    if view not in (1, 2, 3):
        raise NuclaFormatError(f"{name}: view v{view:02d}, expected v01, v02 or v03")
    return action, subject, repetition, view


class _LongNumber:
    """A number literal longer than :data:`~skelmod.limits.MAX_NUMBER_CHARS`, kept unconverted
    (the JSON hooks below) so that the field holding it can be named."""

    def __init__(self, text: str):
        self.chars = len(text)

    def __repr__(self) -> str:
        return f"a number of {self.chars} characters"


def _bounded(convert):
    def parse(text: str):
        return _LongNumber(text) if len(text) > MAX_NUMBER_CHARS else convert(text)

    return parse


def _loads(raw: bytes) -> Any:
    """``json.loads`` that converts no number literal longer than ``MAX_NUMBER_CHARS``."""
    return json.loads(raw, parse_int=_bounded(int), parse_float=_bounded(float))


def _too_long(path: Path, field: str, number: _LongNumber) -> NuclaFormatError:
    return NuclaFormatError(
        f"{path}: field {field!r}: {number!r}, more than the {MAX_NUMBER_CHARS} a number may "
        "have (skelmod.limits.MAX_NUMBER_CHARS)"
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _joints(path: Path, skeletons: Any) -> np.ndarray:
    """Check ``skeletons`` ``[T][20][3]`` finite numbers and return them ``(T, 20, 3)``."""
    v = KINECT_V1_20.V
    if not isinstance(skeletons, list) or not skeletons:
        raise NuclaFormatError(
            f"{path}: field 'skeletons': expected a non-empty list of frames, found "
            f"{type(skeletons).__name__ if not isinstance(skeletons, list) else 'an empty list'}"
        )
    try:
        fast = np.array(skeletons, dtype=np.float64)
    except (ValueError, TypeError):
        fast = None
    if (
        fast is not None
        and fast.shape[1:] == (v, 3)
        and np.isfinite(fast).all()
        # numpy also converts strings, bools and nulls: every leaf must be a JSON number
        and {type(c) for frame in skeletons for joint in frame for c in joint} <= {int, float}
    ):
        return fast
    for t, frame in enumerate(skeletons):  # find the first bad entry for the message
        if not isinstance(frame, list) or len(frame) != v:
            found = f"{len(frame)} joints" if isinstance(frame, list) else type(frame).__name__
            raise NuclaFormatError(
                f"{path}: field 'skeletons[{t}]': expected {v} joints, found {found}"
            )
        for j, joint in enumerate(frame):
            long = (
                [c for c in joint if isinstance(c, _LongNumber)] if isinstance(joint, list) else []
            )
            if long:
                raise _too_long(path, f"skeletons[{t}][{j}]", long[0])
            if not (
                isinstance(joint, list)
                and len(joint) == 3
                and all(_is_number(c) and math.isfinite(c) for c in joint)
            ):
                raise NuclaFormatError(
                    f"{path}: field 'skeletons[{t}][{j}]': expected 3 finite numbers (x, y, z), "
                    f"found {json.dumps(joint)[:60]}"
                )
    raise AssertionError("unreachable: the fast path rejected a valid sequence")


def read_nucla(path: str | os.PathLike) -> NuclaSample:
    """Read and check one ``all_sqe`` JSON file.

    Raises:
        NuclaFormatError: bad name, size, JSON, field or value (the message names which);
        OSError: the file cannot be read.
    """
    path = Path(path)
    action, subject, repetition, view = parse_nucla_name(path.name)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise NuclaFormatError(f"{path}: {size} bytes, more than the {MAX_BYTES} accepted")
    try:
        data = _loads(path.read_bytes())
    except json.JSONDecodeError as e:
        raise NuclaFormatError(
            f"{path}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg})"
        ) from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise NuclaFormatError(f"{path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise NuclaFormatError(f"{path}: expected a JSON object, found {type(data).__name__}")
    missing = [k for k in ("file_name", "skeletons", "label") if k not in data]
    if missing:
        raise NuclaFormatError(f"{path}: missing field {', '.join(map(repr, missing))}")
    stem = path.name[: -len(SUFFIX)]
    if data["file_name"] != stem:
        raise NuclaFormatError(
            f"{path}: field 'file_name': expected {stem!r} (the file's name), "
            f"found {data['file_name']!r}"
        )
    label = data["label"]
    if isinstance(label, _LongNumber):
        raise _too_long(path, "label", label)
    expected = NUCLA_ACTIONS.index(action) + 1
    if not (isinstance(label, int) and not isinstance(label, bool)) or label != expected:
        raise NuclaFormatError(
            f"{path}: field 'label': expected {expected} for action a{action:02d}, found {label!r}"
        )
    xyz = _joints(path, data["skeletons"])  # (T, 20, 3)
    joints = np.ascontiguousarray(xyz.transpose(2, 0, 1)[..., None])  # (3, T, 20, 1)
    return NuclaSample(stem, action, subject, repetition, view, expected - 1, joints)
