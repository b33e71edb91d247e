"""`skelmod convert` files/s per core against the authors' preprocessing, in one run.

Baseline: the authors' pipeline re-implemented faithfully (``benchmarks/authors_pipeline.py``:
their line-by-line ``read_skeleton`` into dicts, the ``read_xyz`` body loop, ``gendata``'s
float32 memmap row, ``NTUMotionProcessor.__getitem__`` with a matrix product per frame, the
position memmap), one process, stage by stage. Where it leaves their code it is faster than
theirs (no cv2, no torch DataLoader, each file parsed once, the unused motion stream left
out), so the speed-ups are lower bounds; a second figure counts their scripts as they run
(each file parsed twice, motion on).

Times are CPU seconds (user + system) where they can be taken, because on a shared machine
wall time measures the other users' load as much as the code; wall times are printed beside
them. Pool workers are grandchildren that nobody reaps for rusage, so runs with several
workers are timed by the wall clock only.

Ours: per stage in this process on the same files (parse; body selection + normalisation,
now one compiled call, with the public two-step path beside it; modalities and the cache
checks), then the whole ``skelmod convert`` command in a fresh process (start-up, numba cache
load and the HDF5 write included) with 1 worker (the per-core figure) and with every core.
Baseline and command runs alternate (baseline half, ours, baseline half, ours) so that both
see the same load on a shared machine. The NTU-60 projection (56,880 files) takes the
measured files/s of the many-worker run.

Usage: python benchmarks/bench_convert.py [--files 4000] [--baseline-files 400] [--workers 1,2]
       [--cold] [--memory] [--startup]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from authors_pipeline import Baseline  # noqa: E402

NTU60_FILES = 56_880


def run_convert(
    raw: Path, out: Path, workers: int, env: dict, *options: str
) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, every process of it) of one command
    (``options``: more ``skelmod convert`` options)."""
    cmd = [sys.executable, "-m", "cli.skelmod_cli", "convert", str(raw), "-o", str(out),
           *options, "--workers", str(workers), "--quiet", "--overwrite"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"convert failed:\n{proc.stdout}\n{proc.stderr}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu


def peak_rss_of(raw: Path, out: Path, env: dict) -> float:
    """Peak RSS (MiB) of a single-worker conversion, measured in a fresh wrapper process."""
    code = (
        "import resource, sys; from skelmod.convert import convert; "
        f"convert({str(raw)!r}, {str(out)!r}, workers=1, overwrite=True); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return float(proc.stdout.strip().splitlines()[-1])


def our_stages(files: list[Path]) -> dict[str, float]:
    """ms per file of each of our stages, in this process (kernels warmed on 3 files first)."""
    from skelmod.bodies import select_bodies
    from skelmod.fused import select_and_normalize
    from skelmod.normalize import normalize_sample
    from skelmod.ntu import read_skeleton
    from skelmod.pipeline import ConvertOptions, _modalities

    options = ConvertOptions()
    for p in files[:3]:
        raw = read_skeleton(p)
        select_and_normalize(raw)
        normalize_sample(select_bodies(raw)[0])
    clock = dict.fromkeys(("parse", "fused", "select", "normalise", "modalities"), 0.0)
    for p in files:
        t0 = time.process_time()
        raw = read_skeleton(p)
        t1 = time.process_time()
        x = select_and_normalize(raw)[0]
        t2 = time.process_time()
        _modalities(x, raw.frame_count, options, "ntu25")
        t3 = time.process_time()
        d = select_bodies(raw)[0]
        t4 = time.process_time()
        normalize_sample(d)
        t5 = time.process_time()
        for k, dt in zip(clock, (t1 - t0, t2 - t1, t4 - t3, t5 - t4, t3 - t2), strict=True):
            clock[k] += dt
    return {k: v / len(files) * 1e3 for k, v in clock.items()}


#: What a converting process loads before its first file, cumulatively (``--startup``).
STARTUP_STEPS = [
    ("interpreter", "pass"),
    ("+ numpy, h5py, click", "import numpy, h5py, click"),
    ("+ numba", "import numpy, h5py, click, numba"),
    ("+ numba's typing context (no SciPy)", "import numpy, h5py, click; import skelmod._worker"),
    (
        "+ one file through the compiled pipeline",
        "import sys, numpy, h5py, click; import skelmod._worker; from skelmod.options import "
        "ConvertOptions; from skelmod.pipeline import convert_file; "
        "convert_file(sys.argv[1], ConvertOptions())",
    ),
]


def startup_breakdown(one_file: Path, env: dict, repeat: int = 5) -> list[tuple[str, float]]:
    """Best-of-``repeat`` wall seconds of a fresh ``python -c`` for each :data:`STARTUP_STEPS`."""
    out = []
    for label, code in STARTUP_STEPS:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(one_file)], cwd=REPO, env=env,
                           check=True, capture_output=True)  # fmt: skip
            best = min(best, time.perf_counter() - t0)
        out.append((label, best))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--baseline-files", type=int, default=400, help="files the baseline converts")
    ap.add_argument("--workers", default=f"1,{os.cpu_count()}")
    ap.add_argument("--raw", type=Path, help="a folder of NTU files to use instead of synth")
    ap.add_argument("--cold", action="store_true", help="also a run with an empty numba cache")
    ap.add_argument("--memory", action="store_true", help="also the peak RSS of 1 worker")
    ap.add_argument("--startup", action="store_true", help="also where a process's start goes")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        measure(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """The measurements of :func:`main`, with scratch files in ``tmp``."""
    workers = sorted({int(w) for w in args.workers.split(",")})
    raw = args.raw
    if raw is None:
        from skelmod.synth import ACTIONS, generate

        raw = tmp / "raw"
        classes = len(ACTIONS)
        keep = set(generate(raw, classes, -(-args.files // classes), seed=0)[: args.files])
        for p in raw.glob("*.skeleton"):
            if p not in keep:
                p.unlink()
    files = sorted(raw.glob("*.skeleton"))[: args.files]
    n = len(files)
    mb = sum(p.stat().st_size for p in files) / 2**20
    print(f"input: {n} NTU-format files from {raw}, {mb:.0f} MiB, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    if n < len(list(raw.glob("*.skeleton"))):  # the command converts a folder: link the first n
        raw = tmp / "subset"
        raw.mkdir()
        for p in files:
            os.link(p, raw / p.name)

    nb = min(args.baseline_files, n)
    base = Baseline(tmp, nb, motion=True)
    halves = [range(0, nb // 2), range(nb // 2, nb)]

    def baseline_half(k: int) -> None:
        for i in halves[k]:
            base.gendata(i, files[i])
        for i in halves[k]:
            base.preprocess(i)

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    one = tmp / "one"
    one.mkdir()
    os.link(files[0], one / files[0].name)
    if args.cold:
        env["NUMBA_CACHE_DIR"] = str(tmp / "numba_cold")
        wall, cpu = run_convert(one, tmp / "cold.h5", 1, env)
        print(f"ours, cold numba cache, 1 file: {wall:.1f} s wall, {cpu:.1f} s CPU (JIT)")
    run_convert(one, tmp / "one.h5", 1, env)  # the numba cache is warm from here on
    start_wall, start_cpu = run_convert(one, tmp / "one.h5", 1, env)
    walls, cpus, base_wall = {}, {}, 0.0
    for k, w in enumerate([*workers, None][: max(2, len(workers))]):
        if k < 2:
            t0 = time.perf_counter()
            baseline_half(k)
            base_wall += time.perf_counter() - t0
        if w is not None:
            walls[w], cpus[w] = run_convert(raw, tmp / f"w{w}.h5", w, env)
    base.flush()
    base_ms = base.total() / nb * 1e3
    as_run_ms = base.as_run() / nb * 1e3
    stages = our_stages(files[: min(n, 1000)])

    print(f"\nbaseline (authors' pipeline, {nb} files): "
          f"{base_ms:.2f} ms CPU per file ({1e3 / base_ms:.1f} files/s per core); "
          f"wall {base_wall / nb * 1e3:.2f} ms per file")  # fmt: skip
    for k, v in base.clock.items():
        note = " (not in the total)" if k == "motion" else ""
        print(f"  {k:<10} {v / nb * 1e3:8.3f} ms/file{note}")
    print(f"  as their scripts run (each file parsed twice, motion on): {as_run_ms:.2f} ms/file")
    ours_inproc = stages["parse"] + stages["fused"] + stages["modalities"]
    print(f"ours, in this process ({min(n, 1000)} files): {ours_inproc:.3f} ms CPU per file")
    bp = base.clock["parse"] / nb * 1e3
    print(f"  parse      {stages['parse']:8.3f} ms/file   vs {bp / stages['parse']:5.1f}x")
    bn = (base.clock["bodies"] + base.clock["normalise"]) / nb * 1e3
    fused = stages["fused"]
    print(f"  bodies + normalise, fused {fused:.3f} ms/file   vs {bn / fused:5.1f}x "
          f"(two-step public path: select {stages['select']:.3f} + normalise "
          f"{stages['normalise']:.3f})")  # fmt: skip
    print(f"  modalities + checks {stages['modalities']:.3f} ms/file")
    print(f"ours, `skelmod convert` of 1 file (start-up): {start_wall:.2f} s wall, "
          f"{start_cpu:.2f} s CPU")  # fmt: skip
    ms = cpus[1] / n * 1e3 if 1 in cpus else float("nan")
    print(
        f"ours, `skelmod convert`, 1 worker, {n} files: {ms:.3f} ms CPU per file all in "
        f"({1e3 / ms:.0f} files/s per core = {base_ms / ms:.1f}x the baseline per core, "
        f"{as_run_ms / ms:.1f}x their scripts as run)"
    )
    for w in workers:
        print(f"ours, `skelmod convert`, {w} worker(s), {n} files: wall {walls[w]:.1f} s = "
              f"{n / walls[w]:.0f} files/s ({base_wall / nb / (walls[w] / n):.1f}x the "
              "baseline's wall per file)")  # fmt: skip
    w = workers[-1]
    hours = NTU60_FILES * base_ms / 3.6e6
    print(f"NTU-60 projection ({NTU60_FILES} files): baseline {hours:.2f} h on 1 core; ours "
          f"{NTU60_FILES * walls[w] / n:.0f} s at this run's {w}-worker wall rate; "
          f"{start_wall + NTU60_FILES * (ms / 1e3 - start_cpu / n) / w:.0f} s on {w} idle cores "
          f"(start-up + the 1-worker CPU per file / {w})")  # fmt: skip
    if args.startup:
        print("start-up of a fresh process, best of 5 (wall; the command above adds the CLI, "
              "the file walk, the output lock and the HDF5 write):")  # fmt: skip
        prev = 0.0
        for label, t in startup_breakdown(files[0], env):
            print(f"  {label:<40s} {t:6.3f} s  (+{t - prev:.3f})")
            prev = t
    if args.memory:
        m = peak_rss_of(raw, tmp / "mem.h5", env)
        print(f"peak RSS, 1 worker, {n} files: {m:.0f} MiB")


if __name__ == "__main__":
    main()
