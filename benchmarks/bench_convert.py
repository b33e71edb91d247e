"""End-to-end `skelmod convert` files/s vs the naive reference pipeline, in one run.

Baseline: the plain line-by-line reader plus the normalisation written plainly, one process
(``tests/naive_pipeline.py``), writing the same float32 arrays to an .npy file.
Ours: the ``skelmod convert`` command in a fresh process (process start included), with a
warm numba cache, for 1 and more workers; the cold first run (empty numba cache) separately.
Peak memory of the converting process for two input sizes shows it does not grow with the
number of files.

Usage: python benchmarks/bench_convert.py [--files 1500] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from naive_pipeline import naive_process  # noqa: E402

from skelmod.synth import ACTIONS, generate  # noqa: E402

NTU60_FILES = 56_880


def run_convert(raw: Path, out: Path, workers: int, env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, largest process) of one `skelmod convert` run."""
    cmd = [
        sys.executable,
        "-m",
        "cli.skelmod_cli",
        "convert",
        str(raw),
        "-o",
        str(out),
        "--workers",
        str(workers),
        "--quiet",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"convert failed:\n{proc.stdout}\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return dt, peak


def peak_rss_of(raw: Path, out: Path, env: dict) -> float:
    """Peak RSS (MiB) of a single-worker conversion, measured in a fresh wrapper process."""
    code = (
        "import resource, sys; from skelmod.convert import convert; "
        f"convert({str(raw)!r}, {str(out)!r}, workers=1); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--workers", default=f"1,{os.cpu_count()}")
    ap.add_argument(
        "--copies",
        type=int,
        default=4,
        help="the worker-scaling runs convert this many hard-linked copies of the input under "
        "other sample names, so that process start-up does not dominate",
    )
    ap.add_argument(
        "--baseline-files",
        type=int,
        default=300,
        help="files the (slow) baseline converts; its rate is per file",
    )
    args = ap.parse_args()
    workers = sorted({int(w) for w in args.workers.split(",")})

    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    classes = len(ACTIONS)
    raw = tmp / "raw"
    keep = set(generate(raw, classes, -(-args.files // classes), seed=0)[: args.files])
    for p in raw.glob("*.skeleton"):
        if p not in keep:
            p.unlink()
    n = len(list(raw.glob("*.skeleton")))
    mb = sum(p.stat().st_size for p in raw.glob("*.skeleton")) / 2**20
    print(
        f"input: {n} synthetic NTU-format files, {mb:.0f} MiB, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )

    # baseline: plain reader + plain normalisation, one process, on a prefix of the files
    files = sorted(raw.glob("*.skeleton"))[: args.baseline_files]
    t0 = time.perf_counter()
    out = np.lib.format.open_memmap(tmp / "naive.npy", "w+", np.float32, (len(files), 3, 50, 25, 2))
    for i, p in enumerate(files):
        out[i] = naive_process(p)[0]
    out.flush()
    base = len(files) / (time.perf_counter() - t0)
    print(
        f"baseline (plain reader + plain normalisation, 1 process): {base:8.1f} files/s "
        f"({len(files)} files)"
    )

    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(tmp / "numba_cold")
    dt, _ = run_convert(raw, tmp / "cold.h5", 1, env)
    print(
        f"ours, cold numba cache, 1 worker:              {n / dt:8.1f} files/s "
        f"({dt:.1f} s, includes JIT compilation)"
    )
    dt, _ = run_convert(raw, tmp / "warm.h5", 1, env)  # numba cache now warm
    print(
        f"ours, warm cache, 1 worker:                    {n / dt:8.1f} files/s "
        f"({dt:.1f} s, process start included)  speed-up vs baseline {n / dt / base:5.1f}x"
    )
    many = tmp / "many"
    many.mkdir()
    for c in range(args.copies):
        for p in raw.glob("*.skeleton"):  # setup ids 18+ keep names unique (an NTU-120 range)
            os.link(p, many / f"S{int(p.name[1:4]) + 20 * c:03d}{p.name[4:]}")
    n_many = n * args.copies
    rates = {}
    for w in workers:
        dt, _ = run_convert(many, tmp / f"w{w}.h5", w, env)
        rates[w] = n_many / dt
        print(
            f"ours, warm cache, {w} worker(s), {n_many} files: {rates[w]:8.1f} files/s "
            f"({dt:.1f} s)  speed-up vs baseline {rates[w] / base:5.1f}x  "
            f"scaling {rates[w] / rates[workers[0]]:.2f}x"
        )

    small = tmp / "small"
    small.mkdir()
    for p in sorted(raw.glob("*.skeleton"))[: n // 4]:
        os.link(p, small / p.name)
    m_small = peak_rss_of(small, tmp / "small.h5", env)
    m_full = peak_rss_of(raw, tmp / "full.h5", env)
    print(f"peak RSS, 1 worker: {m_small:.0f} MiB for {n // 4} files, {m_full:.0f} MiB for {n}")
    best = max(rates.values())
    one = rates[workers[0]]
    print(
        f"NTU-60 projection ({NTU60_FILES} files): baseline {NTU60_FILES / base / 3600:.2f} h, "
        f"ours 1 worker {NTU60_FILES / one / 60:.1f} min, "
        f"ours {max(rates, key=rates.get)} workers {NTU60_FILES / best / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
