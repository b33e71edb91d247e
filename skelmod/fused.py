"""The reference body rule and the normalisation of one parsed NTU file in one compiled call
(docs/method.md, "Data and normalisation").

:func:`select_and_normalize` gives exactly what :func:`skelmod.bodies.select_bodies` with
``rule="reference"`` followed by :func:`skelmod.normalize.normalize_sample` give, bit for bit,
because its kernel fills the body slots the same way (the first ``M`` bodies listed in each
frame: docs/data.md, "NTU files, names and splits") and then calls the normalisation's own
kernels (length, centring, resize, yaw) in the same order, on the same dtypes. What it saves
is everything between them: the checks of the public functions, the float64 ``D`` and its
copies, ``np.unique`` and the other small numpy calls, which together cost more than the
arithmetic (about 0.3 ms of a file's 0.35 ms,
issue 22). ``skelmod convert`` uses it for NTU files with the default body rule
(:func:`skelmod.pipeline.convert_file`); the two-step path stays the public one and the twin
the tests compare this with.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layout import T_TARGET, C, M, V, get_layout
from .normalize import (
    YAW_NORM_EPS,
    _centre_kernel,
    _resize_kernel,
    _rotate_kernel,
    _yaw_angles_kernel,
)
from .ntu import RawSkeleton
from .options import YAW_MODES

_NTU = get_layout("ntu25")
_YAW_CODE = {"none": 0, "sequence": 1, "frame": 2}


def select_and_normalize(
    raw: RawSkeleton, t_target: int = T_TARGET, centre: bool = True, yaw: str = "sequence"
) -> tuple[np.ndarray, int, int, int, int] | None:
    """Reference body selection and normalisation of a parsed NTU file, fused.

    Args:
        raw: a :class:`skelmod.ntu.RawSkeleton` as the parser returns it (consistent arrays).
        t_target, centre, yaw: as for :func:`skelmod.normalize.normalize_sample`.

    Returns:
        ``(X, L, bodies_seen, bodies_kept, dropped)``: ``X`` float32 ``(3, t_target, 25, 2)``
        and ``L`` as :func:`~skelmod.normalize.normalize_sample` gives them, the distinct
        ``bodyID`` values of the file and of the kept records, and the records dropped for
        their listing order (the statistics of :func:`~skelmod.bodies.select_bodies`). ``None``
        when ``L = 0``: the caller takes the two-step path, which raises the error that says so.
    """
    if not isinstance(raw, RawSkeleton):
        raise TypeError(f"raw must be a RawSkeleton, found {type(raw).__name__}")
    if yaw not in YAW_MODES:
        raise ValueError(f"unknown yaw mode {yaw!r}; expected one of {YAW_MODES}")
    if isinstance(t_target, bool) or not isinstance(t_target, (int, np.integer)) or t_target < 1:
        raise ValueError(f"t_target must be an int >= 1, found {t_target!r}")
    B = raw.body_frame.shape[0]
    if raw.joints.shape != (B, V, 12) or raw.body_ids.shape != (B,):
        raise ValueError(
            f"{raw.name}: inconsistent RawSkeleton arrays: body_frame {raw.body_frame.shape}, "
            f"body_ids {raw.body_ids.shape}, joints {raw.joints.shape}"
        )
    left, right = _NTU.shoulders
    X, L, seen, kept, dropped = _fused_kernel(
        int(raw.frame_count),
        raw.body_frame,
        raw.body_ids,
        raw.joints,
        int(t_target),
        bool(centre),
        _YAW_CODE[yaw],
        np.float32(YAW_NORM_EPS),
        _NTU.length_joint,
        _NTU.center,
        left,
        right,
    )
    if L == 0:
        return None
    return X, int(L), int(seen), int(kept), int(dropped)


# --- kernel: private, unchecked; select_and_normalize checks its input ------------------------


@njit(cache=True, error_model="numpy", nogil=True)
def _distinct(values):
    if values.size == 0:
        return 0
    s = np.sort(values)
    n = 1
    for i in range(1, s.size):
        if s[i] != s[i - 1]:
            n += 1
    return n


@njit(cache=True, error_model="numpy", nogil=True)
def _fused_kernel(
    frame_count, body_frame, body_ids, joints, t_target, centre, yaw, eps, length_joint,
    center, left, right,
):  # fmt: skip
    # Reference slots (select_bodies' "reference" rule), stored as gendata's float32.
    D = np.zeros((C, frame_count, V, M), dtype=np.float32)
    B = body_frame.shape[0]
    kept_ids = np.empty(B, dtype=body_ids.dtype)
    n_kept = 0
    slot = 0
    for b in range(B):
        f = body_frame[b]
        slot = slot + 1 if b > 0 and body_frame[b - 1] == f else 0
        if slot < M:
            for v in range(V):
                for c in range(C):
                    D[c, f, v, slot] = np.float32(joints[b, v, c])
            kept_ids[n_kept] = body_ids[b]
            n_kept += 1
    seen = _distinct(body_ids)
    kept = _distinct(kept_ids[:n_kept])
    # the valid frames: body 0's joint 1 is not all-zero (docs/method.md, "Data and normalisation").
    L = 0
    for t in range(frame_count):
        s = abs(D[0, t, length_joint, 0]) + abs(D[1, t, length_joint, 0])
        if s + abs(D[2, t, length_joint, 0]) != 0:
            L += 1
    if L == 0:
        return np.zeros((C, t_target, V, M), dtype=np.float32), 0, seen, kept, B - n_kept
    X = D[:, :L]
    if centre:
        X = _centre_kernel(X, center)
    Y = _resize_kernel(X, L, t_target).astype(np.float32)
    if yaw != 0:
        Y = _rotate_kernel(Y, _yaw_angles_kernel(Y, yaw == 2, eps, left, right)).astype(np.float32)
    return Y, L, seen, kept, B - n_kept
