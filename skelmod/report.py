"""What a ``skelmod convert`` or ``skelmod import`` run did: :class:`ConvertReport`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def sample_counts(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the report sums over the samples, from one :func:`skelmod.pipeline.run` result
    (plain JSON types: a resumed run keeps them per row and counts them again)."""
    meta = result["meta"]
    return {
        "seen": int(meta["bodies_seen"]),
        "kept": int(meta["bodies_kept"]),
        "dropped": {k: int(v) for k, v in result["dropped"].items()},
        "fallbacks": int(result["fallbacks"]),
    }


@dataclass
class ConvertReport:
    """What a run did: counts, the files rejected with reasons, and the bodies dropped."""

    out: Path | None
    dataset: str
    total: int = 0
    converted: int = 0
    skipped_missing: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    bodies_dropped: dict[str, int] = field(default_factory=dict)
    bodies_seen: int = 0
    bodies_kept: int = 0
    denoise_fallbacks: int = 0
    resumed_from: int = 0
    removed: list[tuple[str, str]] = field(default_factory=list)
    resume_note: str | None = None
    subfolders: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unit: str = "files"  #: what was converted ("sequences" for skelmod import)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        lines = [
            f"converted {self.converted} of {self.total} {self.unit} ({self.dataset}) "
            f"in {self.seconds:.1f} s" + (f" -> {self.out}" if self.out else ""),
            f"skipped by the missing-sample list: {len(self.skipped_missing)}",
            f"rejected: {len(self.rejected)}",
        ]
        if self.unit != "files":  # only raw files have a missing-sample list
            del lines[1]
        lines += [f"  {name}: {reason}" for name, reason in self.rejected]
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.bodies_dropped.items())) or "none"
        lines.append(
            f"bodies: seen {self.bodies_seen}, kept {self.bodies_kept}, dropped by rule: {dropped}"
        )
        if self.denoise_fallbacks:
            lines.append(
                f"denoise dropped every body in {self.denoise_fallbacks} samples; "
                "the longest body was kept in each"
            )
        if self.subfolders:
            shown = ", ".join(self.subfolders[:5]) + (", ..." if len(self.subfolders) > 5 else "")
            lines.append(
                f"notice: {len(self.subfolders)} subfolders not searched ({shown}); convert "
                "each folder on its own"
            )
        if self.resume_note:
            lines.append(f"resume: {self.resume_note}")
        if self.resumed_from:
            lines.append(f"resumed: kept {self.resumed_from} samples converted before")
        if self.removed:
            lines.append(f"removed from the partial cache: {len(self.removed)}")
            lines += [f"  {name}: {reason}" for name, reason in self.removed]
        return "\n".join(lines)

    def count(self, counts: Mapping[str, Any]) -> None:
        """Add one converted sample (its :func:`sample_counts`)."""
        self.converted += 1
        self.bodies_seen += counts["seen"]
        self.bodies_kept += counts["kept"]
        self.denoise_fallbacks += counts["fallbacks"]
        for rule, k in counts["dropped"].items():
            self.bodies_dropped[rule] = self.bodies_dropped.get(rule, 0) + k
