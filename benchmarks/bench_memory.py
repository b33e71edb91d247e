"""Peak memory of one conversion worker: a normal file against 64 MB hostile ones, with our
limits and without them (the previous behaviour, still reachable as ``max_frames=None,
max_bytes=None``), measured in one run.

    python benchmarks/bench_memory.py [--cap-gib 4] [--keep DIR]

Each case runs :func:`skelmod.pipeline.convert_file` in a fresh process, as a pool worker does,
after a warm-up conversion of a normal file (so numba's kernels are loaded); the figure is the
process's peak RSS (``ru_maxrss``) and its growth over the warm-up. Runs without the limits get
an address-space cap (``--cap-gib``) so that a file claiming millions of frames fails with a
MemoryError instead of taking the machine down; "over the cap" means it needed more.

The hostile files (issue 8 point 5):
- ``frames-64MB``: a header announcing 32 million frames, then 32 million empty frames
  (``"0\\n"``): a valid file under the old rules, 64 MB on disk.
- ``bodies-64MB``: six bodies in every frame with short values, as many frames as fit in
  64 MB (about 9,100): a valid file within every limit, near the most a file can make the
  parser hold.
- ``frames-6MB``: the issue's example, 3 million empty frames in 6 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from skelmod.synth import generate  # noqa: E402

_CHILD = r"""
import functools, json, resource, sys
path, mode, cap, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import skelmod.pipeline as C
from skelmod import ntu
if mode == "old":
    C.read_skeleton = functools.partial(ntu.read_skeleton, max_frames=None, max_bytes=None)
options = C.ConvertOptions()
C.convert_file(warm, options, "ntu60")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    C.convert_file(path, options, "ntu60")
    outcome = "converted"
except MemoryError:
    outcome = "MemoryError: over the cap"
except ValueError as e:
    outcome = "rejected: " + str(e).split(": ", 1)[1]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak, "outcome": outcome}))
"""


def empty_frames(path: Path, frames: int) -> Path:
    with open(path, "wb") as f:
        f.write(f"{frames}\n".encode())
        chunk = b"0\n" * (1 << 20)
        left = frames
        while left:
            n = min(left, 1 << 20)
            f.write(chunk[: 2 * n])
            left -= n
    return path


def six_bodies(path: Path, size: int) -> Path:
    """Six bodies in every frame, as many frames as fit in ``size`` bytes (at most 10,000)."""
    joint = " ".join(["1.0"] * 12) + "\n"
    body = "1 0 0 0 0 0 0 0 0 2\n25\n" + joint * 25
    frame = ("6\n" + body * 6).encode()
    frames = min(10_000, size // len(frame))
    with open(path, "wb") as f:
        f.write(f"{frames}\n".encode())
        for _ in range(frames):
            f.write(frame)
    return path


def measure(path: Path, mode: str, cap: int, warm: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), mode, str(cap), str(warm)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if run.returncode != 0:
        return {"outcome": f"process died (exit {run.returncode}): {run.stderr[-200:]}"}
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cap-gib", type=float, default=4.0, help="address-space cap, old runs")
    ap.add_argument("--keep", type=Path, help="write the test files here (default: a temp dir)")
    args = ap.parse_args()
    cap = int(args.cap_gib * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        generate(d / "synth", 1, 2, seed=0)
        normal = sorted((d / "synth").glob("*.skeleton"))
        cases = {
            "normal (synthetic, 1 file)": normal[1],
            "frames-6MB (3M empty frames)": empty_frames(d / "S001C001P001R001A002.skeleton",
                                                         3_000_000),
            "frames-64MB (32M empty frames)": empty_frames(d / "S001C001P001R001A003.skeleton",
                                                           32_000_000),
            "bodies-64MB (9k frames x 6 bodies)": six_bodies(
                d / "S001C001P001R001A004.skeleton", 64 << 20),
        }  # fmt: skip
        print(f"peak RSS of one worker (MiB); old runs capped at {args.cap_gib:g} GiB of address")
        print(f"{'file':40s} {'size':>8s}  {'ours':>22s}  {'old (no limits)':>22s}")
        for label, path in cases.items():
            row = []
            for mode in ("ours", "old"):
                r = measure(path, mode, cap if mode == "old" else 0, normal[0])
                if "peak_kib" in r:
                    peak, grow = r["peak_kib"] / 1024, (r["peak_kib"] - r["base_kib"]) / 1024
                    row.append((f"{peak:7.0f} (+{grow:5.0f})", r["outcome"]))
                else:
                    row.append(("-", r["outcome"]))
            size = path.stat().st_size / (1 << 20)
            print(f"{label:40s} {size:6.1f}MB  {row[0][0]:>22s}  {row[1][0]:>22s}")
            for mode, (_, outcome) in zip(("ours", "old"), row, strict=True):
                print(f"{'':42s}{mode}: {outcome[:90]}")


if __name__ == "__main__":
    main()
