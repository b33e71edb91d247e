"""Per-sample normalisation of selected bodies (docs/method.md, "Data and normalisation").

Input ``D`` is ``(C=3, F, V, M)`` (``skelmod.layout`` conventions: joint index = id - 1,
absent bodies all-zero; V is the ``layout``'s, 25 for the default ``ntu25``), for example from
:func:`skelmod.bodies.select_bodies` or a zero-padded
300-frame gendata row. :func:`normalize_sample` runs, in the reference order:

1. valid length ``L`` on the raw ``D`` (:func:`valid_length`);
2. centring of each body on its own joint 21 in every frame (:func:`centre_bodies`);
3. linear resize of ``D[:, :L]`` to ``t_target`` frames, every body with body 0's ``L``
   (:func:`resize_linear`);
4. yaw alignment of each body (:func:`align_yaw`);
5. cast to float32.

Precision: the float32 roundings of the reference are kept where they happen, so the result
matches it to float32 rounding (about 1e-7 on the 46 real NTU files, checked by
``tests/test_normalize.py`` against the float32 twin ``tests/naive_pipeline.py``): the input is
rounded to float32 first (the authors store float32 rows), L and the centring use that float32
array, the resize is computed in float64 and rounded to float32 (cv2 returns float32), the yaw
angles are computed in float32 and the rotation in float64 before the final float32 rounding.
Only the reference's degree round trip of the angle (psi * 180/pi, then * pi/180, in float32)
is left out: it moves the angle by a float32 ulp.

Joints: the prose names NTU's joints (1 spine base, 5/9 the shoulders, 21 spine-shoulder); each
function takes ``layout=`` (a registry name or :class:`~skelmod.layout.JointLayout`, default
``ntu25``) and uses that layout's ``length_joint``, ``shoulders`` and ``center`` instead
(``kinect-v1-20``: HipCenter, ShoulderLeft/Right, ShoulderCenter).

Speed: the loops are private ``@njit`` kernels at the end of this module, called only by the
checking public functions (one code path); their plain twins are in ``tests/naive_pipeline.py``
and ``tests/test_normalize.py``. About 0.1 ms per sample, against 0.6 ms for the same steps
written as numpy array expressions.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from skelmod.layout import T_TARGET, JointLayout, get_layout

from .errors import SkelmodError
from .options import YAW_MODES

#: Added to the shoulder-vector norm before the yaw arccos (the yaw norm bias, kept).
YAW_NORM_EPS = 1e-4


class EmptySequenceError(SkelmodError):
    """A sample has no valid frame (L = 0), so it cannot be resized."""


def _check_sample(D, what: str = "D", layout: str | JointLayout | None = None) -> np.ndarray:
    V = get_layout(layout).V
    D = np.asarray(D)
    if D.ndim != 4 or D.shape[0] != 3 or D.shape[2] != V or D.shape[3] < 1:
        raise ValueError(f"{what} must have shape (3, T, {V}, M) with M >= 1, found {D.shape}")
    if not np.issubdtype(D.dtype, np.floating):
        raise TypeError(f"{what} must be a float array, found dtype {D.dtype}")
    if D.dtype not in (np.float32, np.float64):
        D = D.astype(np.float64)
    return D


def valid_length(D, layout: str | JointLayout | None = None) -> int:
    """Valid length ``L`` of a sample ``(3, T, 25, M)``.

    ``L = #{t : sum_c |D[c, t, joint 1, body 0]| != 0}``: a *count* of the frames where body 0's
    spine base is not all-zero, not the last valid index (the valid-length count). Computed on the
    raw, uncentred data.
    """
    lay = get_layout(layout)
    D = _check_sample(D, layout=lay)
    return int(np.count_nonzero(np.abs(D[:, :, lay.length_joint, 0]).sum(axis=0) != 0))


def centre_bodies(D, layout: str | JointLayout | None = None) -> np.ndarray:
    """Express each body relative to its own joint 21 (spine-shoulder) in every frame.

    ``X[:, t, v, m] = D[:, t, v, m] - D[:, t, joint 21, m]``; joint 21 becomes exactly 0, and
    absent (all-zero) frames stay 0. Global translation and the relative position of the two
    bodies are removed (per-frame centring, kept). ``(3, T, 25, M)`` -> same shape and dtype (the
    reference centres in float32).
    """
    lay = get_layout(layout)
    D = _check_sample(D, layout=lay)
    return _centre_kernel(D, lay.center)


def resize_linear(D, L: int, t_target: int = T_TARGET, layout=None) -> np.ndarray:
    """Linear temporal resize of ``D[:, :L]`` to ``t_target`` frames (cv2-free).

    For output frame t' in ``0..t_target-1``::

        u = clip((t' + 0.5) * L / t_target - 0.5, 0, L - 1),  i = floor(u),  a = u - i
        X[:, t'] = (1 - a) * D[:, i] + a * D[:, min(i + 1, L - 1)]

    This is what ``cv2.resize(..., INTER_LINEAR)`` does along time (verified ≤ 2e-7 in the
    spec): joints and bodies are not mixed, there is no anti-aliasing, and ``L = 1`` gives a
    constant sequence. All bodies use the same ``L`` (body 0's).

    Args:
        D: ``(3, T, 25, M)`` float array with ``T >= L``.
        L: number of leading frames to resize, ``1 <= L <= T``.
        t_target: number of output frames, ``>= 1``.

    Returns:
        ``(3, t_target, 25, M)`` float64.
    """
    D = _check_sample(D, layout=layout)
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)):
        raise TypeError(f"L must be an int, found {type(L).__name__}")
    if not 1 <= L <= D.shape[1]:
        raise ValueError(f"L must lie in [1, {D.shape[1]}] (the frames of D), found {L}")
    if isinstance(t_target, bool) or not isinstance(t_target, (int, np.integer)) or t_target < 1:
        raise ValueError(f"t_target must be an int >= 1, found {t_target!r}")
    return _resize_kernel(D, int(L), int(t_target))


def yaw_angles(X, yaw: str = "sequence", layout: str | JointLayout | None = None) -> np.ndarray:
    """Rotation angle theta ``(T, M)`` of every frame and body for :func:`align_yaw`.

    ``v_t = X[:, t, joint 9] - X[:, t, joint 5]`` with ``v_t[y] = 0``;
    ``psi_t = arccos(v_t[x] / (|v_t| + 1e-4))``; ``theta_t = -psi_t`` where the sign test
    ``s >= 0`` holds, else ``+psi_t``. ``yaw="sequence"`` (reference): ``s = sum_t v_t[z]``,
    one sign per body and sequence, so frames whose ``v_z`` has the other sign end up at angle
    2 psi (the yaw sign bug, kept). ``yaw="frame"``: ``s = v_t[z]`` per frame, which maps every
    frame's shoulder line onto +x.

    Computed in the dtype of ``X`` (float32 for the reference, whose angles are float32). The
    sum over t runs in frame order (numpy's pairwise sum in the reference can differ in the
    last bits, which matters only when the sum is within rounding of 0).
    """
    lay = get_layout(layout)
    X = _check_sample(X, "X", lay)
    if yaw not in ("sequence", "frame"):
        raise ValueError(f"yaw angles need yaw 'sequence' or 'frame', found {yaw!r}")
    left, right = lay.shoulders
    return _yaw_angles_kernel(X, yaw == "frame", X.dtype.type(YAW_NORM_EPS), left, right)


def align_yaw(X, yaw: str = "sequence", layout: str | JointLayout | None = None) -> np.ndarray:
    """Rotate every frame of every body about the vertical (y) axis (all M bodies).

    ``p' = R(theta_t) p`` with ``R(theta) = [[cos, 0, -sin], [0, 1, 0], [sin, 0, cos]]`` and
    theta from :func:`yaw_angles`. ``yaw="none"`` returns a float64 copy. Absent bodies
    (v = 0, psi = 90 degrees) are rotated zeros, i.e. stay zero.

    As in the reference, angle, cos and sin are computed in the dtype of ``X`` and the
    rotation itself in float64. ``(3, T, 25, M)`` -> float64.
    """
    X = _check_sample(X, "X", layout)
    if yaw not in YAW_MODES:
        raise ValueError(f"unknown yaw mode {yaw!r}; expected one of {YAW_MODES}")
    if yaw == "none":
        return X.astype(np.float64)
    return _rotate_kernel(X, yaw_angles(X, yaw, layout))


def normalize_sample(
    D,
    t_target: int = T_TARGET,
    centre: bool = True,
    yaw: str = "sequence",
    layout: str | JointLayout | None = None,
) -> tuple[np.ndarray, int]:
    """Normalise one sample as the authors' ``NTUMotionProcessor`` does
    (docs/method.md, "Data and normalisation").

    Args:
        D: selected bodies ``(3, F, 25, M)``, any float dtype; frames after the valid ones may
            be zero padding (they do not change the result).
        t_target: frames of the output (50).
        centre: centre every body on its own joint 21 per frame; False skips it.
        yaw: ``"sequence"`` (reference, one sign per sequence), ``"frame"`` (per-frame sign,
            fixes the yaw sign bug) or ``"none"``.
        layout: the joint layout of ``D`` (default ``ntu25``).

    Returns:
        ``(X, L)``: ``X`` float32 ``(3, t_target, 25, M)`` and the valid length ``L``.

    Raises:
        EmptySequenceError: ``L == 0`` (no frame where body 0's joint 1 is non-zero).
    """
    lay = get_layout(layout)
    D = _check_sample(D, layout=lay)
    if yaw not in YAW_MODES:
        raise ValueError(f"unknown yaw mode {yaw!r}; expected one of {YAW_MODES}")
    if not np.isfinite(D).all():
        raise ValueError("D contains NaN or inf")
    X = D.astype(np.float32)  # the authors' float32 storage
    L = valid_length(X, lay)
    if L == 0:
        joint = lay.joint_names[lay.length_joint].replace("_", " ")
        raise EmptySequenceError(
            f"no valid frame: body 0's joint {lay.length_joint + 1} ({joint}) is zero in every "
            "frame (L = 0)"
        )
    X = X[:, :L]  # the resize reads nothing else
    if centre:
        X = centre_bodies(X, lay)
    X = resize_linear(X, L, t_target, lay).astype(np.float32)  # cv2 returns float32
    if yaw != "none":
        X = align_yaw(X, yaw, lay).astype(np.float32)
    return X, L


# --- kernels: private, unchecked; the public functions above check their input ----------------

_jit = njit(cache=True, error_model="numpy", nogil=True)


@_jit
def _centre_kernel(D, center):
    C, T, V, M = D.shape
    out = np.empty_like(D)
    for c in range(C):
        for t in range(T):
            for m in range(M):
                ref = D[c, t, center, m]
                for v in range(V):
                    out[c, t, v, m] = D[c, t, v, m] - ref
    return out


@_jit
def _resize_kernel(D, L, t_target):
    C, _, V, M = D.shape
    out = np.empty((C, t_target, V, M), dtype=np.float64)
    for tp in range(t_target):
        u = min(max((tp + 0.5) * L / t_target - 0.5, 0.0), L - 1.0)
        i = int(math.floor(u))
        a = u - i
        j = min(i + 1, L - 1)
        for c in range(C):
            for v in range(V):
                for m in range(M):
                    out[c, tp, v, m] = (1.0 - a) * np.float64(D[c, i, v, m]) + a * np.float64(
                        D[c, j, v, m]
                    )
    return out


@_jit
def _yaw_angles_kernel(X, per_frame, eps, left, right):
    _, T, _, M = X.shape
    theta = np.empty((T, M), dtype=X.dtype)
    for m in range(M):
        total = np.zeros(1, dtype=X.dtype)[0]
        for t in range(T):
            vx = X[0, t, right, m] - X[0, t, left, m]
            vz = X[2, t, right, m] - X[2, t, left, m]
            theta[t, m] = np.arccos(vx / (np.sqrt(vx * vx + vz * vz) + eps))
            total += vz
        for t in range(T):
            s = total
            if per_frame:
                s = X[2, t, right, m] - X[2, t, left, m]
            if s >= 0:
                theta[t, m] = -theta[t, m]
    return theta


@_jit
def _rotate_kernel(X, theta):
    C, T, V, M = X.shape
    out = np.empty((C, T, V, M), dtype=np.float64)
    for t in range(T):
        for m in range(M):
            cos = np.float64(np.cos(theta[t, m]))
            sin = np.float64(np.sin(theta[t, m]))
            for v in range(V):
                x = np.float64(X[0, t, v, m])
                z = np.float64(X[2, t, v, m])
                out[0, t, v, m] = cos * x - sin * z
                out[1, t, v, m] = X[1, t, v, m]
                out[2, t, v, m] = sin * x + cos * z
    return out
