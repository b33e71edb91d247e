"""The five derived modalities of 4,000 float32 samples (3, 50, 25, 2): ours vs numpy vs a copy.

One run prints, side by side:

* numpy: the straightforward vectorised formulation of the modalities over the whole batch
  (slicing for the differences, fancy indexing for parents and partners, ``np.cross``,
  ``np.linalg.norm``, ``np.arctan2``), float32 like the input;
* copy floor: ``np.copyto`` of the input into five preallocated outputs (the memory traffic any
  implementation must pay: read the input, write five arrays of its size);
* ours: ``compute_modalities`` on a **first call** (one timing: fresh output memory, whose page
  faults are part of the cost), again with fresh outputs (best of ``--repeat``: every call
  without ``out=`` allocates), **warm** (``out=``: buffers the caller reuses, already faulted
  in), and the kernel alone into preallocated outputs,

each with 1 thread and with all of them (``NUMBA_NUM_THREADS``, default all cores); the copy
floor is reported both into fresh and into warm buffers (columns ``ours/copy`` and ``/fresh``).
With ``--latency``, also the first-call latency (import + compile or cache load + a small call)
in fresh processes with a cold and a warm numba cache (the cold one compiles for tens of seconds).

    python benchmarks/bench_modalities.py [--n 4000] [--repeat 5] [--latency] [--prefault-ab 6]
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

import numba
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from skelmod import layout  # noqa: E402
from skelmod.modalities import _launch, compute_modalities  # noqa: E402

DERIVED = ["velocity", "acceleration", "bone", "rotation_axis", "angular_velocity"]


def numpy_modalities(X: np.ndarray, frame_count: np.ndarray, t_target=50) -> dict:
    """The modalities (docs/method.md, "The six modalities") as a user would write them with
    numpy over the whole batch ``(N, 3, T, 25, M)``."""
    s = (t_target / frame_count).astype(X.dtype)[:, None, None, None, None]
    vel = np.zeros_like(X)
    vel[:, :, :-1] = s * (X[:, :, 1:] - X[:, :, :-1])
    acc = np.zeros_like(X)
    acc[:, :, :-2] = s * (vel[:, :, 1:-1] - vel[:, :, :-2])
    B = X - X[:, :, :, layout.BONE_PARENTS_6V]
    n = np.cross(B[:, :, :, 1] - B[:, :, :, 8], B[:, :, :, 4] - B[:, :, :, 8], axis=1)
    B[:, :, :, 20] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    q = layout.AXIS_PARTNERS
    R = np.cross(B, B[:, :, :, q], axis=1)
    Bh = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    Bhq = Bh[:, :, :, q]
    sin = np.linalg.norm(np.cross(Bh, Bhq, axis=1), axis=1, keepdims=True)
    theta = np.arctan2(sin, (Bh * Bhq).sum(axis=1, keepdims=True))
    Rh = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-12)
    omega = np.zeros_like(X)
    omega[:, :, :-1] = s * (theta[:, :, 1:] - theta[:, :, :-1]) * Rh[:, :, :-1]
    return {
        "velocity": vel,
        "acceleration": acc,
        "bone": B,
        "rotation_axis": R,
        "angular_velocity": omega,
    }


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


_FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np
from skelmod.modalities import compute_modalities
compute_modalities(np.zeros((2, 3, 50, 25, 2), np.float32), 50)
print(time.perf_counter() - t0)
"""


def first_call_latency() -> tuple[float, float]:
    """Seconds to import and make one small float32 call: empty cache (cold), then warm."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        out = []
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True
            )
            proc.check_returncode()
            out.append(float(proc.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--latency", action="store_true", help="also time cold/warm process starts")
    ap.add_argument(
        "--prefault-ab", type=int, default=0, metavar="N",
        help="also N alternating fresh-output calls with and without the per-thread pre-fault",
    )  # fmt: skip
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.n, 3, 50, 25, 2)).astype(np.float32)
    X[rng.random(args.n) < 0.5, :, :, :, 1] = 0  # about half the samples have one body
    fc = rng.integers(30, 301, size=args.n)
    print(f"input {X.shape} float32, {X.nbytes / 2**20:.0f} MiB; outputs 5x that")
    print(f"numba {numba.__version__}, threads available: {numba.config.NUMBA_NUM_THREADS}")

    # agreement first: the numpy formulation is the same maths (this also loads the kernel)
    ours = compute_modalities(X[:64], fc[:64], modalities=DERIVED)
    ref = numpy_modalities(X[:64], fc[:64])
    worst = max(float(np.max(np.abs(ours[k] - ref[k]))) for k in DERIVED)
    print(f"max |ours - numpy| on 64 samples (float32): {worst:.2e}")

    outs = [np.ones_like(X) for _ in range(6)]  # preallocated and touched

    def copies_warm():
        for o in outs:
            np.copyto(o, X)

    def copies_fresh():
        return [np.array(X, copy=True) for _ in range(6)]

    theta = np.ones((args.n, 1, 50, 25, 2), np.float32)
    s = 50 / fc.astype(np.float64)
    flags = [True, True, True, True, False, True]
    nthreads = max(1, numba.config.NUMBA_NUM_THREADS)  # all threads: NUMBA_NUM_THREADS
    threads = 1
    given = dict(zip(DERIVED, outs[:5], strict=True))

    def kernel_only():
        lay = layout.NTU25
        torso = np.array([*lay.torso_joints, lay.center], dtype=np.int64)
        fixed = (X, s, lay.bone_parents_6v, lay.axis_partners, True, torso, False, 0.0)
        _launch((*fixed, *outs[:4], theta, outs[4], *flags), len(X), threads)

    def api_first():
        return compute_modalities(X, fc, modalities=DERIVED, threads=threads)

    def api_warm():
        compute_modalities(X, fc, modalities=DERIVED, threads=threads, out=given)

    t_numpy = best(lambda: numpy_modalities(X, fc), max(1, args.repeat // 2))
    t_copy = best(copies_warm, args.repeat)
    t_copy_fresh = best(copies_fresh, args.repeat)
    # ours/copy: against the six copies into warm buffers; /fresh: into fresh memory, as a
    # first call's outputs are
    print(f"\n{'':40s}{'seconds':>9s}{'numpy/ours':>12s}{'ours/copy':>11s}{'/fresh':>8s}")
    print(f"{'numpy formulation (1 thread)':40s}{t_numpy:9.3f}")
    print(f"{'copy floor: 6 copies, warm buffers':40s}{t_copy:9.3f}")
    print(f"{'6 copies into fresh memory':40s}{t_copy_fresh:9.3f}")
    for k in sorted({1, nthreads}):
        threads = k
        t = best(api_first, 1)  # the first call with k threads: one timing, never a best-of
        print(f"{f'ours, first call (fresh), {k} thr':40s}{t:9.3f}{t_numpy / t:12.1f}", end="")
        print(f"{t / t_copy:11.2f}{t / t_copy_fresh:8.2f}")
        for label, fn in (
            (f"ours, again (fresh outputs), {k} thr", api_first),
            (f"ours, warm (out= buffers), {k} thr", api_warm),
            (f"ours, kernel only, {k} thr", kernel_only),
        ):
            t = best(fn, args.repeat)
            print(f"{label:40s}{t:9.3f}{t_numpy / t:12.1f}{t / t_copy:11.2f}", end="")
            print(f"{t / t_copy_fresh:8.2f}" if "fresh" in label else "")

    if args.prefault_ab:
        from skelmod import modalities as mod

        madvise = mod._madvise
        ab: dict[str, dict[int, list[float]]] = {"with": {}, "without": {}}
        for k in sorted({1, nthreads}):
            for i in range(2 * args.prefault_ab):
                label = ("with", "without")[(i + i // 2) % 2]  # with, without, without, with...
                mod._madvise = madvise if label == "with" else None
                t0 = time.perf_counter()
                compute_modalities(X, fc, modalities=DERIVED, threads=k)
                ab[label].setdefault(k, []).append(time.perf_counter() - t0)
        mod._madvise = madvise
        print("\nfresh outputs, with and without the per-thread MADV_POPULATE_WRITE (median s):")
        for k in sorted({1, nthreads}):
            on, off = (statistics.median(ab[x][k]) for x in ("with", "without"))
            print(f"  {k} thr: with {on:.3f}, without {off:.3f} ({off / on:.2f}x)")

    if args.latency:
        cold, warm = first_call_latency()
        print(f"\nfirst call (import + small call): cold numba cache {cold:.2f} s, ", end="")
        print(f"warm {warm:.2f} s")


if __name__ == "__main__":
    main()
