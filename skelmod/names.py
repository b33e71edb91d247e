"""NTU sample names and the missing-skeleton lists (docs/data.md, "NTU files, names and splits").

A sample is named ``SsssCcccPpppRrrrAaaa`` (3 digits each): setup, camera,
performer (subject), replication and action, all 1-based. The label is
``action - 1``. The dataset's lists of samples with missing skeletons are plain
text: a short prose header, then one name per line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ID_RANGES",
    "SampleId",
    "check_sample_ids",
    "detect_dataset",
    "parse_sample_name",
    "read_missing_list",
]

SAMPLE_PATTERN = "SsssCcccPpppRrrrAaaa"
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
_SUFFIX = ".skeleton"

#: Inclusive 1-based id ranges of each data set: NTU-120 adds setups 18-32, subjects
#: 41-106 and actions 61-120 to NTU-60's.
ID_RANGES: dict[str, dict[str, tuple[int, int]]] = {
    "ntu60": {
        "setup": (1, 17), "camera": (1, 3), "subject": (1, 40), "replication": (1, 2),
        "action": (1, 60),
    },
    "ntu120": {
        "setup": (1, 32), "camera": (1, 3), "subject": (1, 106), "replication": (1, 2),
        "action": (1, 120),
    },
}  # fmt: skip
_LETTER = {"setup": "S", "camera": "C", "subject": "P", "replication": "R", "action": "A"}


@dataclass(frozen=True, order=True)
class SampleId:
    """The five 1-based ids in an NTU sample name."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        """0-based class label, ``action - 1``."""
        return self.action - 1

    @property
    def name(self) -> str:
        """The sample name, e.g. ``"S001C002P003R001A010"``."""
        return (
            f"S{self.setup:03d}C{self.camera:03d}P{self.subject:03d}"
            f"R{self.replication:03d}A{self.action:03d}"
        )


def parse_sample_name(name: str | os.PathLike) -> SampleId:
    """Parse ``SsssCcccPpppRrrrAaaa``, with or without ``.skeleton`` and directories.

    Raises ``ValueError`` naming the name and the expected pattern when it does not
    match exactly, or when an id is 0 (they are 1-based).
    """
    text = str(name)
    base = Path(text).name
    stem = base[: -len(_SUFFIX)] if base.endswith(_SUFFIX) else base
    match = _NAME_RE.fullmatch(stem)
    if match is None:
        raise ValueError(
            f"{text!r} is not an NTU sample name: expected {SAMPLE_PATTERN} "
            f"(3 digits each, e.g. S001C002P003R001A010), optionally followed by {_SUFFIX}"
        )
    ids = [int(g) for g in match.groups()]
    if 0 in ids:
        raise ValueError(f"{text!r}: the ids in {SAMPLE_PATTERN} are 1-based, found a 000")
    return SampleId(*ids)


def read_missing_list(path: str | os.PathLike) -> frozenset[str]:
    """Names (without ``.skeleton``) in a missing-skeleton list.

    Lines before the first sample name are a prose header and are skipped (the
    dataset's files have 3 such lines); blank lines, surrounding whitespace, CRLF
    line ends and a ``.skeleton`` suffix are tolerated. After the first name, a
    line that is not a sample name raises ``ValueError`` naming the file and line.
    """
    names: set[str] = set()
    started = False
    with open(path, encoding="utf-8", newline=None) as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if text.endswith(_SUFFIX):
                text = text[: -len(_SUFFIX)]
            if _NAME_RE.fullmatch(text):
                names.add(text)
                started = True
            elif text and started:
                raise ValueError(
                    f"{path}:{lineno}: expected a sample name ({SAMPLE_PATTERN}), found {text!r}"
                )
    return frozenset(names)


def _out_of_range(sid: SampleId, dataset: str) -> str | None:
    for key, (lo, hi) in ID_RANGES[dataset].items():
        value = getattr(sid, key)
        if not lo <= value <= hi:
            return f"{_LETTER[key]}{value:03d} is outside {dataset}'s {key}s {lo} to {hi}"
    return None


def check_sample_ids(sid: SampleId, dataset: str) -> None:
    """Raise ``ValueError`` naming the first id of ``sid`` outside ``dataset``'s ranges."""
    problem = _out_of_range(sid, dataset)
    if problem is not None:
        raise ValueError(f"{sid.name}: {problem}")


def detect_dataset(ids: Iterable[SampleId]) -> str:
    """``"ntu120"`` if a sample lies in NTU-120's ranges but outside NTU-60's, else ``"ntu60"``.

    Names outside both are ignored here (they are rejected one by one), so one bad name never
    switches the data set.
    """
    for s in ids:
        if _out_of_range(s, "ntu120") is None and _out_of_range(s, "ntu60") is not None:
            return "ntu120"
    return "ntu60"
