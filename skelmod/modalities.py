"""The six skeleton modalities of IKEM (docs/method.md, "The six modalities"; paper eqs. 3-6).

Arrays follow :mod:`skelmod.layout`: a sample is ``(C, T, V, M)`` = ``(3, T, V, M)`` (x, y, z;
frames; joints of the layout, 0-based in code, 1-based ids in these docs; bodies), a batch is
``(N, 3, T, V, M)``. V is the ``layout``'s (default ``ntu25``, V=25; ``kinect-v1-20``, V=20,
whose tables follow from the same rules, see :mod:`skelmod.layout`). The joint ids below are
NTU's. Every function takes either and returns arrays of the input's dtype (float32 or
float64; the arithmetic is float64).

Time scale: γ = ``frame_count / t_target`` with ``frame_count`` the header frame count of the raw
file (docs/method.md, "Data and normalisation"); differences are scaled by
s = 1/γ = ``t_target / frame_count``.
``t_target`` is the T the reference divides by (50); it need not equal the array's T.

Defaults reproduce the authors' code:

* velocity ``Vel_t = s (X_{t+1} - X_t)``, zero at the last frame; acceleration
  ``Acc_t = s (Vel_{t+1} - Vel_t)``, zero at the last two frames (forward differences: eq. 3
  shifted by one frame);
* bone ``B_i = X_i - X_{p(i)}`` stored at the child i, with the 6-view parents
  (``layout.BONE_PARENTS_6V``: hand tip and thumb both attach to the hand) and the slot of joint
  21 overwritten by the unit upper-torso normal ``n^ = normalize((B_2 - B_9) x (B_5 - B_9))``;
* rotation axis ``R_i = B_i x B_{q(i)}``, **not** normalised (q = ``layout.AXIS_PARTNERS``);
* angle ``theta_i = atan2(|B^_i x B^_q|, B^_i . B^_q)`` in [0, pi] (eq. 5 written stably);
* angular velocity ``Omega_t = s (theta_{t+1} - theta_t) R^_t``, zero at the last frame (eq. 6).

``normalize(v) = v / max(|v|, 1e-12)`` exactly like ``F.normalize``: a zero vector gives 0, so
zero bones, collinear bones, absent bodies and constant sequences give zeros, never NaN or inf.
Outputs are finite whenever the input is finite and the result is representable in its dtype
(the raw axis is a product of two bone lengths). Non-finite input is not checked and propagates.

Options: ``unit_axis=True`` normalises the rotation-axis modality (paper eq. 4);
``bones="3v"`` uses the 3-view / graph parents (``layout.BONE_PARENTS_3V``: 22->23->8,
24->25->12) with ``B_21 = 0`` and no torso normal, and the axis partner of bone i is then the
bone of its parent joint, q(i) = p_3v(i); since ``B_21 = 0`` the bones hanging off joint 21
(ids 2, 3, 5, 9) and joint 21 itself have a zero axis and theta = 0. ``axis_tol > 0`` sets
``R^ = 0`` where ``|R| <= axis_tol |B_i| |B_q|`` (nearly collinear bones); the default
0 keeps the reference's arbitrary unit axes there (the collinear-axis bug). Also as in the
reference:
theta is unsigned, and a body that vanishes at frame t+1 gives ``Omega_t = -s theta_t R^_t``
(nothing is masked).
"""

from __future__ import annotations

import ctypes
import math
import mmap
import numbers
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from skelmod import _kernels, layout
from skelmod import layout as _layout  # ``layout`` is also a parameter name below

#: Modality names, in the order of the reference's encoders.
MODALITIES = layout.MODALITY_NAMES
#: Bone conventions accepted by ``bones=``.
BONE_CONVENTIONS = layout.BONE_CONVENTIONS

_MIN_SAMPLES_PER_THREAD = 32  # below this a thread costs more than it saves
#: Outputs at least this large get their own anonymous memory map (see :func:`_fresh`).
_OWN_MAP_BYTES = 4 << 20


def _fresh(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised output array; large ones in an anonymous memory map of their own.

    numpy advises the kernel to back large arrays with transparent huge pages; where the
    kernel then compacts memory to find them (``defrag=madvise``, common), the first call's
    page faults stalled for seconds at random: 4,000 samples took 0.84-1.37 s on a first call
    against 0.39-0.66 s with plain pages (issue 22, ``benchmarks/RESULTS.md``). The pages
    are made present by :func:`_prefault` where each worker thread writes its block of samples.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes < _OWN_MAP_BYTES:
        return np.empty(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


#: ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14+): make a range of fresh anonymous memory
#: present and writable in one system call instead of one page fault per 4 KiB.
_MADV_POPULATE_WRITE = 23
_PAGE = mmap.PAGESIZE


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc is there
        fn = libc.madvise  # a ctypes call releases the GIL: threads populate side by side
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


def _prefault(arrays: list[np.ndarray], lo: int, hi: int) -> None:
    """Make rows ``lo:hi`` of each fresh output present before the kernel writes them.

    Measured on a first call with fresh outputs (``benchmarks/bench_modalities.py``): the
    kernel's own page faults, one per 4 KiB page and interleaved over five outputs, cost more
    than the maths; one ``MADV_POPULATE_WRITE`` per output and block, made by the thread that
    then writes the block, does the same work in bulk and on every thread at once. Where the
    call is missing (not Linux, a kernel before 5.14) the pages fault in as before.
    """
    global _madvise
    if _madvise is None:
        return
    for a in arrays:
        row = a.strides[0]
        start = a.ctypes.data + int(lo) * row
        end = a.ctypes.data + int(hi) * row
        first = -(-start // _PAGE) * _PAGE  # whole pages only: neighbours own the edges
        last = end // _PAGE * _PAGE
        if last > first and _madvise(first, last - first, _MADV_POPULATE_WRITE) != 0:
            _madvise = None  # EINVAL on an older kernel: fall back to faulting, once
            return


def _check_joints(joints, lay: layout.JointLayout) -> np.ndarray:
    X = np.asarray(joints)
    if X.dtype not in (np.float32, np.float64):
        raise ValueError(f"joints must be float32 or float64, found dtype {X.dtype}")
    if X.ndim not in (4, 5):
        raise ValueError(
            f"joints must be one sample (3, T, {lay.V}, M) or a batch (N, 3, T, {lay.V}, M), "
            f"found {X.ndim} dimensions with shape {X.shape}"
        )
    if X.shape[-4] != layout.C:
        raise ValueError(f"joints must have C={layout.C} coordinates, found shape {X.shape}")
    if X.shape[-2] != lay.V:
        raise ValueError(
            f"joints must have V={lay.V} joints of layout {lay.name}, found shape {X.shape}"
        )
    if X.shape[-3] < 1 or X.shape[-1] < 1:
        raise ValueError(f"joints must have at least one frame and one body, found {X.shape}")
    return X


def _check_positive(name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive real number, found {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, found {value!r}")
    return float(value)


def _time_scale(X: np.ndarray, frame_count, t_target) -> np.ndarray:
    """``s = t_target / frame_count`` as a float64 ``(N,)`` array (N = 1 for one sample)."""
    t_target = _check_positive("t_target", t_target)
    n = X.shape[0] if X.ndim == 5 else 1
    fc = np.asarray(frame_count)
    if fc.dtype.kind not in "iuf":
        raise ValueError(f"frame_count must be an int or an array of numbers, found {fc.dtype}")
    if fc.ndim != 0 and not (X.ndim == 5 and fc.shape == (n,)):
        expected = f"an int or an ({n},) array" if X.ndim == 5 else "an int for one sample"
        raise ValueError(f"frame_count must be {expected}, found shape {fc.shape}")
    if fc.ndim == 0:  # the common case, kept cheap for per-sample calls in data loaders
        value = float(fc)
        if not math.isfinite(value):
            raise ValueError(f"frame_count must be finite, found {frame_count!r}")
        if value <= 0:
            raise ValueError(f"frame_count must be positive, found {frame_count!r}")
        return np.full(n, t_target / value)
    fc = fc.astype(np.float64)
    if not np.isfinite(fc).all():
        raise ValueError(f"frame_count must be finite, found {frame_count!r}")
    if not (fc > 0).all():
        raise ValueError(f"frame_count must be positive, found {frame_count!r}")
    return t_target / fc


def _launch(
    args: tuple, N: int, threads: int | None = None, fresh: list[np.ndarray] | None = None
) -> None:
    """Run ``_kernels.modalities_batch(*args, lo, hi)`` over samples ``0..N-1``.

    ``fresh``: outputs in new memory (one row per sample), made present block by block by the
    thread that computes the block (:func:`_prefault`).

    Threads share disjoint blocks of samples (the kernel releases the GIL): ``threads``, or
    ``NUMBA_NUM_THREADS`` (default: all cores) when None. A plain thread pool, not prange: the
    ``parallel=True`` build took twice as long to compile cold (19 s vs 9 s measured) for the
    same parallel loop, and numba's threading layer (OpenMP) is never started, so forking
    DataLoader workers afterwards stays safe.
    """
    if threads is None:
        threads = numba.config.NUMBA_NUM_THREADS
    fresh = fresh or []

    def block(lo: int, hi: int) -> None:
        _prefault(fresh, lo, hi)
        _kernels.modalities_batch(*args, lo, hi)

    nthreads = min(int(threads), N // _MIN_SAMPLES_PER_THREAD)
    if nthreads <= 1:
        block(0, N)
        return
    edges = np.linspace(0, N, 4 * nthreads + 1).astype(np.int64)
    with ThreadPoolExecutor(nthreads) as pool:
        jobs = [pool.submit(block, lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        for job in jobs:
            job.result()


def _run(
    joints, wanted, frame_count=None, t_target=layout.T_TARGET, unit_axis=False, bones="6v",
    axis_tol=0.0, threads=None, lay=None, out=None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Check the inputs, run the kernel once for ``wanted`` (names and/or "theta"), into the
    caller's buffers ``out[name]`` where given."""
    lay = layout.get_layout(lay)
    X = _check_joints(joints, lay)
    if not isinstance(bones, str) or bones not in BONE_CONVENTIONS:
        raise ValueError(f"bones must be one of {BONE_CONVENTIONS}, found {bones!r}")
    axis_tol = float(axis_tol)
    if not (np.isfinite(axis_tol) and axis_tol >= 0):
        raise ValueError(f"axis_tol must be a finite number >= 0, found {axis_tol!r}")
    if frame_count is None:
        s = np.ones(X.shape[0] if X.ndim == 5 else 1)
    else:
        s = _time_scale(X, frame_count, t_target)
    single = X.ndim == 4
    Xb = np.ascontiguousarray(X[None] if single else X)
    if not Xb.flags.writeable:
        Xb = Xb.copy()  # one compiled kernel per dtype: read-only arrays are another type
    N, _, T, V, M = Xb.shape
    parents, partners, torso = lay.topology(bones)
    torso_joints = np.array([*lay.torso_joints, lay.center], dtype=np.int64)
    names = layout.KERNEL_OUTPUTS
    outs, given, fresh = [], {}, []
    for name in names:
        if out is not None and name in out and name in wanted:
            given[name] = _check_out(out[name], X, name)
            outs.append(given[name][None] if single else given[name])
            continue
        channels = 1 if name == "theta" else layout.C
        rows = N if name in wanted else 1
        outs.append(_fresh((rows, channels, T, V, M), Xb.dtype))
        if name in wanted and outs[-1].nbytes >= _OWN_MAP_BYTES:
            fresh.append(outs[-1])  # a map of its own: new pages (small ones come from the heap)
    flags = [name in wanted for name in names]
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads must be a positive int or None, found {threads!r}")
    args = (Xb, s, parents, partners, torso, torso_joints, bool(unit_axis), axis_tol)
    _launch((*args, *outs, *flags), N, threads, fresh)
    return {
        name: given.get(name, o[0] if single else o)
        for name, o in zip(names, outs, strict=True)
        if name in wanted
    }


def _check_out(buf, X: np.ndarray, name: str) -> np.ndarray:
    """A caller's output buffer for ``name``: the shape and dtype of ``X``, C-contiguous and
    writeable (the kernel writes it in place)."""
    if not isinstance(buf, np.ndarray):
        raise ValueError(f"out[{name!r}] must be a numpy array, found {type(buf).__name__}")
    if buf.shape != X.shape or buf.dtype != X.dtype:
        raise ValueError(
            f"out[{name!r}] must have the shape and dtype of joints, {X.shape} {X.dtype}; "
            f"found {buf.shape} {buf.dtype}"
        )
    if not (buf.flags.c_contiguous and buf.flags.writeable):
        raise ValueError(f"out[{name!r}] must be C-contiguous and writeable")
    if np.shares_memory(buf, X):
        raise ValueError(f"out[{name!r}] overlaps joints")
    return buf


def compute_modalities(
    joints,
    frame_count,
    t_target=layout.T_TARGET,
    modalities: Iterable[str] | None = None,
    unit_axis: bool = False,
    bones: str = "6v",
    *,
    axis_tol: float = 0.0,
    threads: int | None = None,
    layout: str | _layout.JointLayout | None = None,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The requested modalities of ``joints`` in one pass.

    ``joints``: ``(3, T, V, M)`` or ``(N, 3, T, V, M)``, float32 or float64, V the joints of
    ``layout`` (a :mod:`skelmod.layout` registry name or layout; None: ``ntu25``).
    ``frame_count``: the header frame count, an int or an ``(N,)`` array (γ = frame_count /
    t_target). ``modalities``: names from :data:`MODALITIES` (a single name is accepted), all
    six when None. ``unit_axis``, ``bones``, ``axis_tol``: see the module docstring.
    ``threads``: threads sharing a large batch (None: ``NUMBA_NUM_THREADS``, all cores by
    default; pass 1 inside DataLoader workers). ``out``: buffers the caller owns, ``{name:
    array}`` of the shape and dtype of ``joints`` (C-contiguous, writeable), written in place
    and returned; reusing them across calls spares the page faults of fresh output memory,
    which cost more than the maths on a first call (``benchmarks/bench_modalities.py``).

    Returns ``{name: array}`` in :data:`MODALITIES` order, each of the shape and dtype of
    ``joints``; ``"joint"`` is a copy of the input.
    """
    lay = _layout.get_layout(layout)
    if modalities is None:
        wanted = set(MODALITIES)
    else:
        if isinstance(modalities, str):
            modalities = [modalities]
        names = list(dict.fromkeys(modalities))
        wanted = set(_layout.check_modalities(names, allow_all=False)) if names else set()
    if out is not None and not set(out) <= wanted:
        extra = ", ".join(sorted(set(out) - wanted))
        raise ValueError(f"out holds {extra}, which is not among the modalities asked for")
    derived = _run(
        joints, wanted, frame_count, t_target, unit_axis, bones, axis_tol, threads, lay, out
    )
    result = {}
    for name in MODALITIES:
        if name == "joint" and name in wanted:
            X = _check_joints(joints, lay)
            if out is not None and "joint" in out:
                result[name] = _check_out(out["joint"], X, "joint")
                np.copyto(result[name], X)
            else:  # in a map of its own when large, like the other outputs (see _fresh)
                result[name] = _fresh(X.shape, X.dtype)
                np.copyto(result[name], X)
        elif name in derived:
            result[name] = derived[name]
    return result


def velocity(joints, frame_count, t_target=layout.T_TARGET, *, layout=None) -> np.ndarray:
    """Velocity ``Vel_t = s (X_{t+1} - X_t)``, last frame 0 (eq. 3 forward); shape of joints."""
    return _run(joints, {"velocity"}, frame_count, t_target, lay=layout)["velocity"]


def acceleration(joints, frame_count, t_target=layout.T_TARGET, *, layout=None) -> np.ndarray:
    """Acceleration ``Acc_t = s (Vel_{t+1} - Vel_t)``, last two frames 0 (eq. 3 forward)."""
    return _run(joints, {"acceleration"}, frame_count, t_target, lay=layout)["acceleration"]


def bones(joints, bones: str = "6v", *, layout=None) -> np.ndarray:
    """Bones ``B_i = X_i - X_{p(i)}`` at the child joint, ``B_21`` = torso normal under "6v".

    Shape of ``joints``. ``bones``: "6v" (default, the reference) or "3v" (``B_21 = 0``).
    """
    return _run(joints, {"bone"}, bones=bones, lay=layout)["bone"]


def rotation_axes(
    joints, unit_axis: bool = False, bones: str = "6v", *, axis_tol: float = 0.0, layout=None
) -> np.ndarray:
    """Rotation axes ``R_i = B_i x B_{q(i)}``, unnormalised unless ``unit_axis`` (eq. 4).

    Shape of ``joints``; ``axis_tol`` only matters with ``unit_axis`` (module docstring).
    """
    return _run(
        joints, {"rotation_axis"}, unit_axis=unit_axis, bones=bones, axis_tol=axis_tol, lay=layout
    )["rotation_axis"]


def joint_angles(joints, bones: str = "6v", *, layout=None) -> np.ndarray:
    """Angles ``theta_i = atan2(|B^_i x B^_q|, B^_i . B^_q)`` in [0, pi] (eq. 5).

    One channel: ``(1, T, 25, M)`` or ``(N, 1, T, 25, M)``; 0 for zero or parallel bones.
    """
    return _run(joints, {"theta"}, bones=bones, lay=layout)["theta"]


def angular_velocity(
    joints, frame_count, t_target=layout.T_TARGET, bones: str = "6v", *, axis_tol: float = 0.0,
    layout=None,
) -> np.ndarray:  # fmt: skip
    """Angular velocity ``Omega_t = s (theta_{t+1} - theta_t) R^_t``, last frame 0 (eq. 6).

    Shape of ``joints``; the axis is taken at frame t, not t+1.
    """
    return _run(
        joints, {"angular_velocity"}, frame_count, t_target, bones=bones, axis_tol=axis_tol,
        lay=layout,
    )["angular_velocity"]  # fmt: skip
