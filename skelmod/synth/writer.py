"""Writing NTU ``.skeleton`` text (docs/data.md, "NTU files, names and splits"): the inverse of
:func:`skelmod.ntu.parse_skeleton`, up to the 7 significant digits written."""

from __future__ import annotations

from pathlib import Path

from skelmod import layout
from skelmod.ntu import RawSkeleton

from .sample import SyntheticSample

_JOINT_FMT = "\n".join([" ".join(["%.7G"] * 12)] * layout.V)
_INFO_FMT = " ".join(["%.7G"] * 9)


def write_skeleton(
    path: str | Path, sample: SyntheticSample | RawSkeleton, *, crlf: bool = False
) -> None:
    """Write ``sample`` as an NTU ``.skeleton`` text file, LF line ends unless ``crlf``.

    ``sample`` is a :class:`~skelmod.synth.SyntheticSample` or a parsed
    :class:`~skelmod.ntu.RawSkeleton` (bodies in file order). Numbers have 7 significant
    digits (``%.7G``, no ``-0``), body ids are written exactly.
    """
    raw = sample.to_raw() if isinstance(sample, SyntheticSample) else sample
    joints = (raw.joints + 0.0).reshape(raw.body_count, -1).tolist()
    info = (raw.body_info + 0.0).tolist()
    ids = raw.body_ids.tolist()
    lines = [str(raw.frame_count)]
    start = 0
    for n in raw.bodies_per_frame.tolist():
        lines.append(str(n))
        for b in range(start, start + n):
            lines.append(
                f"{ids[b]} " + _INFO_FMT % tuple(info[b]) + "\n25\n" + _JOINT_FMT % tuple(joints[b])
            )
        start += n
    text = "\n".join(lines) + "\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    Path(path).write_bytes(text.encode("ascii"))
