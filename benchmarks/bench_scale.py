"""The cache at NTU-120 scale (issue 22, point 5): convert and read throughput, size per sample
with and without compression, and the chunking that serves the training loader.

Times are CPU seconds where they can be taken (user + system), with wall seconds beside them:
on a shared machine the other users' load decides the wall clock (a niced process beside two
busy ones gets a few percent of a core), not the code.

1. **Convert** the NTU-format files of ``--raw`` (e.g. from ``skelmod synth`` with NTU-120's
   setup and subject ranges; generated here with ``--distinct N`` when no folder is given) with
   ``skelmod convert --dataset ntu120 --workers 1``: one core, so the CPU time of the command
   (start-up and HDF5 write included) is exact; NTU-120 (114,480 files) is projected from it.
2. **Read** that cache with :class:`skelmod.cache.CacheReader` as the training loader does:
   one sample at a random index (``PretrainDataset.__getitem__``) and a batch of 128 random
   indices (``PretrainDataset.batch``); and a sequential pass. The page cache is warm (the
   file was just written and the machine holds it in memory).
3. **NTU-120 size**: the joints tiled to ``--total`` rows (114,480) in the writer's layout
   (one sample a chunk, no filter) and read the same way with h5py, to see whether a file of
   the full size (3.2 GiB) reads any slower.
4. **Layouts**: the converted joints rewritten with h5py in other chunkings (samples per chunk)
   and filters (gzip and lzf after the byte shuffle); size per sample, write time and the same
   random reads for each.

Usage: python benchmarks/bench_scale.py --raw DIR [DIR ...] [--total 114480] [--work DIR]
       [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from skelmod.cache import CacheReader  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_convert import run_convert  # noqa: E402

NTU120_FILES = 114_480


def convert(raw: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``skelmod convert --dataset ntu120 --workers 1``."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return run_convert(raw, out, 1, env, "--dataset", "ntu120")


def random_reads(read, n: int, rng: np.random.Generator, singles=2000, batches=40) -> dict:
    """Random single-sample reads and random batches of 128 through ``read(index)`` (an int or
    an int array): median CPU ms of each, and their median wall ms."""
    times: dict[str, list[float]] = {"one": [], "one_wall": [], "batch": [], "batch_wall": []}
    draws = [int(i) for i in rng.integers(0, n, singles)]
    draws += [rng.choice(n, 128, replace=False) for _ in range(batches)]
    for index in draws:
        key = "one" if isinstance(index, int) else "batch"
        c0, t0 = time.process_time(), time.perf_counter()
        read(index)
        times[key + "_wall"].append(time.perf_counter() - t0)
        times[key].append(time.process_time() - c0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def per_sample_reader(ds):
    """The cache reader's access pattern on a bare h5py dataset: ``ds[i]`` per sample."""

    def read(index):
        if isinstance(index, int):
            return ds[index]
        uniq, inverse = np.unique(index, return_inverse=True)
        out = np.empty((uniq.size, *ds.shape[1:]), dtype=ds.dtype)
        for j, i in enumerate(uniq.tolist()):
            out[j] = ds[i]
        return out[inverse]

    return read


LAYOUTS = [  # (samples per chunk, compression, shuffle)
    (1, None, False),
    (1, "gzip", True),
    (1, "lzf", True),
    (8, None, False),
    (8, "gzip", True),
    (64, "gzip", True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, nargs="*", default=[], help="folders of NTU files")
    ap.add_argument("--distinct", type=int, default=20000, help="files to generate (no --raw)")
    ap.add_argument("--total", type=int, default=NTU120_FILES, help="rows of the tiled file")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.work))
    rng = np.random.default_rng(0)
    try:
        raw = work / "raw"
        raw.mkdir()
        for p in sorted(p for d in args.raw for p in d.glob("*.skeleton")):
            os.link(p, raw / p.name)  # the command converts one folder
        if not any(raw.iterdir()):
            from skelmod.synth import ACTIONS, generate

            per = -(-args.distinct // len(ACTIONS))
            generate(raw, len(ACTIONS), per, seed=0, subjects=range(1, 107), setups=range(1, 33))
        files = list(raw.iterdir())
        n = len(files)
        kib = sum(p.stat().st_size for p in files) / n / 2**10
        print(f"input: {n} NTU-format files, {kib:.0f} KiB each on average; {os.cpu_count()} "
              f"cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip

        cache = work / "ntu120.h5"
        one = work / "one"
        one.mkdir()
        os.link(files[0], one / files[0].name)
        convert(one, work / "one.h5")  # numba's cache warm
        start_wall, start_cpu = convert(one, work / "one.h5")
        wall, cpu = convert(raw, cache)
        per_file = (cpu - start_cpu) / n
        print(f"convert, 1 worker: {n} files in {cpu:.1f} s CPU ({wall:.1f} s wall) = "
              f"{n / cpu:.0f} files/s per core, start-up and write included; start-up "
              f"{start_cpu:.2f} s CPU, then {per_file * 1e3:.3f} ms CPU per file")  # fmt: skip
        for cores in (1, 2):
            print(f"  NTU-120 ({NTU120_FILES} files) on {cores} idle core(s): "
                  f"{start_wall + NTU120_FILES * per_file / cores:.0f} s")  # fmt: skip
        shutil.rmtree(raw)

        reader = CacheReader(cache)
        size = cache.stat().st_size
        kib = size / len(reader) / 2**10
        print(f"cache: {len(reader)} samples, {size / 2**30:.2f} GiB, {kib:.1f} KiB per sample "
              "(joint only; one sample a chunk, no compression)")  # fmt: skip
        got = random_reads(lambda i: reader.read("joint", i), len(reader), rng)
        print(f"read, CacheReader: one random sample {got['one']:.3f} ms CPU "
              f"({got['one_wall']:.3f} wall), a random batch of 128 {got['batch']:.1f} ms CPU "
              f"({got['batch_wall']:.1f} wall)")  # fmt: skip
        c0, t0 = time.process_time(), time.perf_counter()
        for s in range(0, len(reader), 4096):
            reader.read("joint", slice(s, s + 4096))
        dt, wdt = time.process_time() - c0, time.perf_counter() - t0
        print(
            f"read, sequential in slices of 4096: {len(reader) / dt:.0f} samples/s CPU "
            f"({size / dt / 2**20:.0f} MiB/s; wall {len(reader) / wdt:.0f} samples/s)"
        )
        joints = reader.read("joint", slice(0, len(reader)))
        reader.close()
        cache.unlink()

        big = work / "tiled.h5"
        shape = joints.shape[1:]
        c0 = time.process_time()
        with h5py.File(big, "w") as f:
            ds = f.create_dataset("joint", (args.total, *shape), np.float32, chunks=(1, *shape))
            for s in range(0, args.total, len(joints)):
                ds[s : s + len(joints)] = joints[: args.total - s]
        print(f"\ntiled to {args.total} samples: {big.stat().st_size / 2**30:.2f} GiB written "
              f"in {time.process_time() - c0:.1f} s CPU")  # fmt: skip
        with h5py.File(big, "r") as f:
            got = random_reads(per_sample_reader(f["joint"]), args.total, rng)
        print(f"read, {args.total} samples, the reader's pattern on h5py: one random sample "
              f"{got['one']:.3f} ms CPU ({got['one_wall']:.3f} wall), a random batch of 128 "
              f"{got['batch']:.1f} ms CPU ({got['batch_wall']:.1f} wall)")  # fmt: skip
        big.unlink()

        print(f"\nlayouts, the {len(joints)} converted samples (median ms CPU; wall in brackets):")
        print("chunk  filter        KiB/sample  write s CPU  one sample      batch of 128")
        for chunk, comp, shuffle in LAYOUTS:
            path = work / "layout.h5"
            c0 = time.process_time()
            with h5py.File(path, "w") as f:
                f.create_dataset("joint", data=joints, chunks=(chunk, *shape),
                                 compression=comp, shuffle=shuffle)  # fmt: skip
            wdt = time.process_time() - c0
            kib = path.stat().st_size / len(joints) / 2**10
            with h5py.File(path, "r") as f:
                # a read of a multi-sample chunk decompresses all of it: fewer reads there
                reads = (1000, 20) if chunk == 1 else (200, 5)
                got = random_reads(per_sample_reader(f["joint"]), len(joints), rng, *reads)
            label = f"{comp or 'none'}{'+shuffle' if shuffle else ''}"
            print(
                f"{chunk:5d}  {label:<12} {kib:10.1f} {wdt:11.1f}  {got['one']:6.3f} "
                f"({got['one_wall']:6.3f})  {got['batch']:6.1f} ({got['batch_wall']:6.1f})"
            )
            path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
