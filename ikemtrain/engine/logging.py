"""Per-epoch reporting: one printed line, one JSON line in ``OUT/metrics.jsonl``, TensorBoard.

TensorBoard is used only when the ``tensorboard`` package is installed; it is never required.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OutputError

__all__ = ["MetricsLog", "format_epoch", "make_out_dir", "write_json"]


def make_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` (and its parents) and check a file can be written in it.

    Called before a run starts, so a folder that cannot hold the results fails in a second
    rather than after hours of training. Raises :class:`OutputError` naming the folder.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise OutputError(
            f"{out}: cannot write the output folder ({e.strerror or type(e).__name__})"
        ) from None
    return out


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def format_epoch(record: dict[str, Any]) -> str:
    """``epoch 3/10 stage 1 loss 12.345 [joint 2.1 velocity 2.0 ...] lr 0.1000 ... s``."""
    parts = [f"epoch {record['epoch']}/{record['epochs']}"]
    if "stage" in record:
        parts.append(f"stage {record['stage']}")
    parts.append(f"loss {record['loss']:.3f}")
    per = record.get("losses") or {}
    if per:
        parts.append("[" + " ".join(f"{m} {v:.3g}" for m, v in per.items()) + "]")
    parts.append(f"lr {record['lr']:.4f}")
    if "samples_per_s" in record:
        parts.append(f"{record['samples_per_s']:.1f} samples/s")
    if "top1" in record:
        parts.append(f"top1 {record['top1']:.2f} top5 {record['top5']:.2f}")
    monitor = record.get("monitor")
    if monitor:
        parts.append(f"knn {monitor['knn_top1']:.1f} (random {monitor['random']['strongest']:.1f})")
    parts.append(f"{record['seconds']:.1f} s")
    return " ".join(parts)


class MetricsLog:
    """Append epoch records to ``out_dir/metrics.jsonl`` and print them (rank 0 only).

    On resume, ``keep_through`` drops records of epochs after the checkpoint's, so the file
    lists each epoch once.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        enabled: bool = True,
        echo: Callable[[str], None] | None = print,
        keep_through: int | None = None,
        tensorboard: bool = True,
    ):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.echo = echo
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_through is None:
            self.path.write_text("")
        elif self.path.exists():
            lines = self.path.read_text(errors="replace").splitlines()
            kept = [ln for ln in lines if (e := _epoch_of(ln)) is not None and e <= keep_through]
            if kept != lines:  # replaced whole (temporary file + rename), never truncated
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text("".join(ln + "\n" for ln in kept))
                os.replace(tmp, self.path)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.echo is not None:
            self.echo(format_epoch(record))
        if self.writer is not None:
            step = record["epoch"]
            for key, value in _flatten(record).items():
                if key not in ("epoch", "epochs") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _epoch_of(line: str) -> int | None:
    """The epoch of a metrics line; None for a line torn by a kill mid-write (or foreign)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return epoch if isinstance(epoch, int) else None


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out
