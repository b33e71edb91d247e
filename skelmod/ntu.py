"""Reader for raw NTU RGB+D ``.skeleton`` files (docs/data.md, "NTU files, names and splits").

Every field of the file is kept: the 12 values of each joint,
the 10 values of each body record, and ``bodyID`` as an exact int64 (17 digits,
above 2**53; the reference parses it with ``float``, which merges distinct bodies).
Body records are stored flat, in file order; ``body_frame`` says which frame each
belongs to. Choosing the two bodies of a sample is :mod:`skelmod.bodies`' job.

Anything that does not fit the format raises :class:`SkeletonFormatError` naming
the file, the line, what was expected and what was found.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _tokenize as tk
from .errors import SkelmodError
from .layout import V
from .limits import MAX_RAW_FRAMES

__all__ = ["RawSkeleton", "SkeletonFormatError", "parse_skeleton", "read_skeleton"]

#: Names of the 9 body values after bodyID, the columns of ``RawSkeleton.body_info``.
BODY_INFO_FIELDS = (
    "clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
    "handRightState", "isResticted", "leanX", "leanY", "trackingState",
)  # fmt: skip
#: Names of the 12 joint values, the last axis of ``RawSkeleton.joints``.
JOINT_FIELDS = (
    "x", "y", "z", "depthX", "depthY", "colorX", "colorY",
    "orientationW", "orientationX", "orientationY", "orientationZ", "trackingState",
)  # fmt: skip
MAX_BODIES_PER_FRAME = tk.MAX_BODIES_PER_FRAME
#: Most frames a file may announce: about 5.5 minutes at 30 fps, 33 times the longest NTU
#: sequence (300). Together with :data:`MAX_BODIES_PER_FRAME` and :data:`MAX_FILE_BYTES` it
#: bounds a parser's memory whatever a file claims (``benchmarks/bench_memory.py``).
MAX_FRAMES = MAX_RAW_FRAMES
#: Largest file read, in bytes: 10,000 frames of 6 bodies take about 150 MB of real records.
MAX_FILE_BYTES = 256 << 20


class SkeletonFormatError(SkelmodError):
    """A ``.skeleton`` file that does not follow the format.

    ``line`` is 1-based (0 when the problem is not tied to a line);
    ``str(e) == f"{path}:{line}: expected {expected}, found {found}"``.
    """

    def __init__(self, path: str, line: int, expected: str, found: str):
        self.path = str(path)
        self.line = int(line)
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}:{self.line}: expected {expected}, found {found}")

    def __reduce__(self):
        return type(self), (self.path, self.line, self.expected, self.found)


@dataclass(frozen=True)
class RawSkeleton:
    """Every field of one ``.skeleton`` file, bodies flat in file order.

    F = ``frame_count`` (the header ``numFrame``), B = number of body records.

    - ``name``: file stem, e.g. ``"S001C001P001R001A001"``
    - ``bodies_per_frame``: (F,) int32, ``numBody`` of each frame (0 to 6)
    - ``body_frame``: (B,) int32, frame index of each body record (non-decreasing)
    - ``body_ids``: (B,) int64, ``bodyID`` parsed exactly as an integer
    - ``body_info``: (B, 9) float64, the other body values, columns :data:`BODY_INFO_FIELDS`
    - ``joints``: (B, 25, 12) float64, columns :data:`JOINT_FIELDS`; joint index = NTU id - 1
    """

    name: str
    frame_count: int
    bodies_per_frame: np.ndarray
    body_frame: np.ndarray
    body_ids: np.ndarray
    body_info: np.ndarray
    joints: np.ndarray

    @property
    def xyz(self) -> np.ndarray:
        """(B, 25, 3) float64 view of the joint positions (camera space, metres)."""
        return self.joints[..., :3]

    @property
    def body_count(self) -> int:
        """B, the number of body records in the file."""
        return int(self.body_frame.shape[0])


_BODY_LINE = (
    f"{tk.BODY_VALUES} values (bodyID clipedEdges handLeftConfidence handLeftState "
    "handRightConfidence handRightState isResticted leanX leanY trackingState) on a body line"
)
_JOINT_LINE = (
    f"{tk.JOINT_VALUES} values (x y z depthX depthY colorX colorY orientationW orientationX "
    "orientationY orientationZ trackingState) on a joint line"
)
_COUNT_NAME = {
    tk.CTX_FRAMES: "the frame count (numFrame)",
    tk.CTX_BODIES: "the body count (numBody)",
    tk.CTX_JOINTS: "the joint count (numJoint)",
}
_LINE_NAME = {
    tk.CTX_FRAMES: "the frame-count line",
    tk.CTX_BODIES: "a body-count line",
    tk.CTX_BODY_LINE: "a body line",
    tk.CTX_JOINTS: "a joint-count line",
    tk.CTX_JOINT_LINE: "a joint line",
}


def _where(st: np.ndarray) -> str:
    """`` (frame 3, body 1, joint 5)``, 1-based, for the parts that are known."""
    parts = []
    for slot, word in ((tk.S_FRAME, "frame"), (tk.S_BODY, "body"), (tk.S_JOINT, "joint")):
        if st[slot] >= 0:
            parts.append(f"{word} {st[slot] + 1}")
    return f" ({', '.join(parts)})" if parts else ""


def _token(data: bytes, start: int, end: int) -> tuple[str, bool]:
    """The token as shown in a message, and whether it holds non-text bytes."""
    raw = data[start:end]
    if any(c < 32 or c > 126 for c in raw):
        return f"non-text bytes {raw[:16]!r}{'...' if len(raw) > 16 else ''}", True
    text = raw.decode("ascii")
    return repr(text if len(text) <= 40 else text[:40] + "..."), False


def _error(path: str, data: bytes, st: np.ndarray) -> SkeletonFormatError:
    code, line, ctx = int(st[tk.S_CODE]), int(st[tk.S_LINE]), int(st[tk.S_CTX])
    found_n = int(st[tk.S_FOUND])
    where = _where(st)
    tok, binary = _token(data, int(st[tk.S_TOK_START]), int(st[tk.S_TOK_END]))
    if code == tk.E_EMPTY:
        exp, found = "the frame count (numFrame) on line 1", "an empty file"
    elif code == tk.E_NOT_INT:
        exp, found = f"an integer, {_COUNT_NAME[ctx]}", f"{tok}{where}"
    elif code == tk.E_NOT_NUMBER:
        exp, found = "a number", f"{tok}{where}"
    elif code == tk.E_BAD_ID:
        exp, found = "an integer bodyID", f"{tok}{where}"
    elif code == tk.E_INT_RANGE:
        exp, found = "an integer that fits in 64 bits", f"{tok}{where}"
    elif code == tk.E_NEGATIVE:
        exp, found = f"a non-negative integer, {_COUNT_NAME[ctx]}", f"{found_n}{where}"
    elif code == tk.E_ZERO_FRAMES:
        exp, found = "at least one frame in the header", "0"
    elif code == tk.E_TOO_MANY_BODIES:
        exp = f"at most {tk.MAX_BODIES_PER_FRAME} bodies (Kinect v2 tracks at most 6)"
        found = f"{found_n}{where}"
    elif code == tk.E_JOINT_COUNT:
        exp, found = f"{V} joints", f"{found_n}{where}"
    elif code == tk.E_COUNT_TOKENS:
        exp = f"one integer, {_COUNT_NAME[ctx]}, on {_LINE_NAME[ctx]}"
        found = ("an empty line" if found_n == 0 else f"{found_n} values") + where
    elif code == tk.E_VALUE_COUNT:
        exp = _BODY_LINE if ctx == tk.CTX_BODY_LINE else _JOINT_LINE
        found = ("an empty line" if found_n == 0 else f"{found_n}") + where
    elif code == tk.E_EOF:
        header_frames = int(st[tk.S_NUM_FRAME])
        if ctx == tk.CTX_BODIES:
            exp = f"{header_frames} frames, as the header on line 1 says"
            found = f"the end of the file after frame {found_n}"
        else:
            exp = f"{_LINE_NAME[ctx]}{where}"
            found = "the end of the file"
    elif code == tk.E_TRAILING:
        exp = (
            f"the end of the file after the {int(st[tk.S_FRAME])} frames the header on line 1 "
            "announces"
        )
        found = f"more content, {tok}"
    else:  # pragma: no cover - every kernel code is handled above
        exp, found = "a valid .skeleton file", f"kernel error code {code}"
    if binary:
        found += "; is this a .skeleton text file?"
    return SkeletonFormatError(path, line, exp, found)


def _check_header(data: bytes, name: str, max_frames: int) -> None:
    """Reject a header announcing more than ``max_frames`` frames before anything is parsed."""
    head = data[:64]
    m = re.match(rb"[ \t]*(\d{1,18})", head)
    if m is None or not (head[m.end() : m.end() + 1].isspace() or m.end() == len(data)):
        return  # not a plain count: the parser reports it
    frames = int(m.group(1))
    if frames > max_frames:
        raise SkeletonFormatError(
            name, 1, f"at most {max_frames} frames (the frame limit)", f"{frames} frames"
        )


def parse_skeleton(
    data: bytes, name: str = "<bytes>", *, max_frames: int | None = MAX_FRAMES
) -> RawSkeleton:
    """Parse the bytes of one ``.skeleton`` file into a :class:`RawSkeleton`.

    ``name`` is used in error messages and, reduced to its stem, as ``RawSkeleton.name``.
    Lines may end in LF, CRLF or CR; values may carry signs, a leading ``.`` and
    ``e``/``E`` exponents; trailing whitespace and blank lines at the end are fine.
    Values are parsed exactly as Python's ``float`` parses them; non-finite ones are
    rejected. Raises :class:`SkeletonFormatError` for anything else (empty file,
    0 frames, truncation, extra content after the last frame, wrong value counts,
    non-numeric tokens, negative counts, more than 6 bodies, ``numJoint != 25``) and for a
    header announcing more than ``max_frames`` frames (``None``: no limit).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_skeleton needs bytes, got {type(data).__name__}")
    data = bytes(data)
    if max_frames is not None:
        _check_header(data, name, max_frames)
    buf = np.frombuffer(data, dtype=np.uint8)
    st, bodies_per_frame, body_frame, body_ids, body_info, joints, fixups = tk.parse_kernel(buf)
    if st[tk.S_CODE] != tk.E_OK:
        raise _error(name, data, st)
    # The kernel rounds every value with <= 15 significant digits exactly; longer ones
    # (e.g. repr output) come back for Python's float to round.
    for target, index, start, end, line in fixups.tolist():
        token = data[start:end].decode("ascii")
        value = float(token)
        if not math.isfinite(value):
            raise SkeletonFormatError(name, line, "a finite number", repr(token))
        out = body_info if target == tk.FIX_BODY_INFO else joints
        out.reshape(-1)[index] = value
    return RawSkeleton(
        name=Path(name).stem if name != "<bytes>" else name,
        frame_count=int(bodies_per_frame.shape[0]),
        bodies_per_frame=bodies_per_frame,
        body_frame=body_frame,
        body_ids=body_ids,
        body_info=body_info,
        joints=joints,
    )


def read_skeleton(
    path: str | os.PathLike,
    *,
    max_frames: int | None = MAX_FRAMES,
    max_bytes: int | None = MAX_FILE_BYTES,
) -> RawSkeleton:
    """Read and parse one ``.skeleton`` file; see :func:`parse_skeleton`.

    ``RawSkeleton.name`` is the file stem. The header and the size are checked against the
    limits before the file is read whole (``None``: no limit). Raises
    :class:`SkeletonFormatError` for a malformed file (empty and binary files included) or
    one beyond the limits; ``OSError`` passes through.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise SkeletonFormatError(
                str(path), 0, f"at most {max_bytes} bytes (the file size limit)", f"{size} bytes"
            )
        if max_frames is not None:
            _check_header(f.read(64), str(path), max_frames)
            f.seek(0)
        data = f.read()
    return parse_skeleton(data, str(path), max_frames=max_frames)
