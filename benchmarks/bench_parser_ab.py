"""A/B of two versions of the parser: this checkout's against another's, in one process.

    python benchmarks/bench_parser_ab.py OTHER_CHECKOUT [DATA_DIR] [--reps 30]

For a change to ``skelmod/_tokenize.py`` on a shared machine, where separate runs of
bench_parser.py differ by more than the change. ``OTHER_CHECKOUT/skelmod`` is copied to a
temporary folder and imported as ``skelmod_other``, and a second copy of it as a control.
Every file is parsed by each version in turn (order rotated), ``--reps`` times, timing CPU
time (``time.process_time``: other processes' load does not count, contention for the core's
caches still does). MB/s come from the per-file median and minimum; the control shows how
far two identical parsers measure apart. The outputs of both versions must be equal.

The copies are compiled afresh in each run, while this checkout's parser loads its machine
code from numba's cache; where each version's code lands in memory moves its speed by a few
percent, so one version always loaded and the other always compiled is not a fair match.
``--keep DIR`` keeps the copies (and their numba caches) in DIR: from the second run with
the same DIR on, every version loads its code from its cache, as users' processes do.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_parser import default_data_dir  # noqa: E402

FIELDS = ("bodies_per_frame", "body_frame", "body_ids", "body_info", "joints")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", type=Path, help="checkout holding the other skelmod/")
    ap.add_argument("data_dir", nargs="?", type=Path, default=default_data_dir())
    ap.add_argument("--reps", type=int, default=30, help="parses of each file by each version")
    ap.add_argument("--keep", type=Path, help="folder for the copies, kept with their caches")
    args = ap.parse_args()

    blobs = [p.read_bytes() for p in sorted(args.data_dir.glob("*.skeleton"))]
    if not blobs:
        sys.exit(f"no .skeleton files in {args.data_dir}")
    mb = sum(map(len, blobs)) / 1e6
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.keep or scratch)
        for name in ("skelmod_other", "skelmod_control"):
            # Unchanged sources keep their cache; changed ones replace it (dirs_exist_ok).
            shutil.copytree(args.other / "skelmod", Path(tmp) / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        sys.path.insert(0, tmp)
        parsers = {
            "this": importlib.import_module("skelmod.ntu").parse_skeleton,
            "other": importlib.import_module("skelmod_other.ntu").parse_skeleton,
            "control (other)": importlib.import_module("skelmod_control.ntu").parse_skeleton,
        }
        for blob in blobs:  # compiles or loads each version, and checks that they agree
            ours, theirs = (parsers[k](blob) for k in ("this", "other"))
            for f in FIELDS:
                np.testing.assert_array_equal(getattr(ours, f), getattr(theirs, f), err_msg=f)
        names = list(parsers)
        cpu = {k: [[] for _ in blobs] for k in names}
        for rep in range(args.reps):
            for i, blob in enumerate(blobs):
                k = (rep + i) % len(names)
                for name in names[k:] + names[:k]:
                    t0 = time.process_time()
                    parsers[name](blob)
                    cpu[name][i].append(time.process_time() - t0)
    print(f"{len(blobs)} files, {mb:.2f} MB, {args.reps} parses each; MB/s of CPU time")
    base = {s: sum(map(s, cpu["other"])) for s in (statistics.median, min)}
    head = ("version", "median-based", "÷ other", "min-based", "÷ other")
    print("{:16s} {:>12s} {:>8s} {:>10s} {:>8s}".format(*head))
    for name in names:
        t = {s: sum(map(s, cpu[name])) for s in (statistics.median, min)}
        print(f"{name:16s} {mb / t[statistics.median]:12.1f} "
              f"{base[statistics.median] / t[statistics.median]:8.3f} "
              f"{mb / t[min]:10.1f} {base[min] / t[min]:8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
