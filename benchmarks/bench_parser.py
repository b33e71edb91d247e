"""Parser throughput: skelmod.ntu against the line-by-line reader, in one run.

    python benchmarks/bench_parser.py [DATA_DIR] [--rounds 15] [--skip-cold]

DATA_DIR holds ``*.skeleton`` files (default: ``$SKELMOD_SHARED_DATA/ntu-real`` or
``../shared/data/ntu-real`` beside the checkout). Both readers parse every file once
per round, on one core, from the page cache; rounds alternate between the two so that
both see the same machine load, and the median round is reported. The baseline is
``tests/naive_reader.py`` (``readline``, ``split``, ``float``), both its full reader
and the reference ``read_xyz``.

First-call latency is measured separately in fresh interpreters: with the numba cache
warm (cache load) and, unless ``--skip-cold``, with an empty cache (JIT compile).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from naive_reader import naive_read, naive_read_xyz  # noqa: E402

from skelmod.ntu import parse_skeleton, read_skeleton  # noqa: E402

_FIRST_CALL = """
import sys, time
t0 = time.perf_counter()
from skelmod.ntu import read_skeleton
t1 = time.perf_counter()
read_skeleton(sys.argv[1])
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def default_data_dir() -> Path:
    env = os.environ.get("SKELMOD_SHARED_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    return base / "ntu-real"


def first_call(path: Path, cache_dir: str | None) -> tuple[float, float]:
    """(import seconds, first read_skeleton seconds) in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL, str(path)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def time_round(fn, items) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to apply ``fn`` to every item."""
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    ap.add_argument("--rounds", type=int, default=15, help="rounds of the fast readers")
    ap.add_argument("--baseline-rounds", type=int, default=3, help="rounds of the naive readers")
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold-cache JIT timing")
    args = ap.parse_args()

    files = sorted(args.data_dir.glob("*.skeleton"))
    if not files:
        sys.exit(f"no .skeleton files in {args.data_dir}")
    blobs = [p.read_bytes() for p in files]
    total_mb = sum(map(len, blobs)) / 1e6
    print(f"{len(files)} files, {total_mb:.2f} MB, python {sys.version.split()[0]}")

    read_skeleton(files[0])  # fills the numba cache if it is empty
    imp, warm = first_call(files[0], None)
    print(f"first call, warm cache: import {imp * 1e3:.0f} ms, first parse {warm * 1e3:.0f} ms")
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cold_dir:
            imp, cold = first_call(files[0], cold_dir)
        print(f"first call, empty cache: import {imp * 1e3:.0f} ms, JIT + parse {cold:.1f} s")

    readers = {
        "skelmod read_skeleton (files)": (read_skeleton, files, args.rounds),
        "skelmod parse_skeleton (bytes)": (parse_skeleton, blobs, args.rounds),
        "naive_read (all fields)": (naive_read, files, args.baseline_rounds),
        "naive_read_xyz (read_xyz)": (naive_read_xyz, files, args.baseline_rounds),
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in readers}
    for r in range(max(args.rounds, args.baseline_rounds)):
        for name, (fn, items, rounds) in readers.items():
            if r < rounds:
                times[name].append(time_round(fn, items))
    wall = {k: total_mb / statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: total_mb / statistics.median(t[1] for t in v) for k, v in times.items()}

    # CPU time is shown beside wall time because a shared machine slows both readers'
    # wall time by whatever else runs; the speed-ups use each column's own baseline.
    base = "naive_read (all fields)"
    head = ("reader", "MB/s wall", "speed-up", "MB/s CPU", "speed-up")
    print("\n{:34s} {:>10s} {:>9s} {:>10s} {:>9s}".format(*head))
    for name in readers:
        print(
            f"{name:34s} {wall[name]:10.1f} {wall[name] / wall[base]:8.1f}x"
            f" {cpu[name]:10.1f} {cpu[name] / cpu[base]:8.1f}x"
        )


if __name__ == "__main__":
    main()
