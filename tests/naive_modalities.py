"""Slow, plainly written twins of the modality kernels, straight from
docs/method.md, "The six modalities".

One sample ``X (3, T, V, M)`` float64 at a time, loops over bodies, frames and joints; the table
of that section and its notes, read literally. ``s = t_target / frame_count``.

The bone parents, axis partners and torso-normal joints are written out here by hand, never
imported from ``skelmod.layout`` (a wrong parent there must fail the twin comparisons):
``ntu25`` from docs/data.md, "Joint layouts and datasets", ``kinect-v1-20`` from the rules in
the ``skelmod.layout`` docstring.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # F.normalize


def normalize(v: np.ndarray) -> np.ndarray:
    """``F.normalize``: ``v / max(|v|, 1e-12)``."""
    return v / max(np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), EPS)


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(
        [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    )


def norm(v: np.ndarray) -> float:
    return float(np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))


# 1-based: the 6v bone parents, the rotation-axis partners and the
# 3-view list (22->23, 23->8, 24->25, 25->12); the torso normal (B_2 - B_9) x (B_5 - B_9) at 21.
_NTU_6V = [2, 21, 21, 3, 21, 5, 6, 7, 21, 9, 10, 11, 1, 13, 14, 15, 1, 17, 18, 19, 21, 8, 8, 12, 12]
_NTU_AXIS = [
    2,
    21,
    21,
    3,
    21,
    5,
    6,
    7,
    21,
    9,
    10,
    11,
    1,
    13,
    14,
    15,
    1,
    17,
    18,
    19,
    21,
    8,
    22,
    12,
    24,
]
_NTU_3V = [
    2,
    21,
    21,
    3,
    21,
    5,
    6,
    7,
    21,
    9,
    10,
    11,
    1,
    13,
    14,
    15,
    1,
    17,
    18,
    19,
    21,
    23,
    8,
    25,
    12,
]
# Kinect v1 (SDK order), 1-based: the tree rooted at ShoulderCenter (3), which plays NTU's 21;
# partners = parents; the same torso joints (2, 9, 5), normal in slot 3.
_V1 = [2, 3, 3, 3, 3, 5, 6, 7, 3, 9, 10, 11, 1, 13, 14, 15, 1, 17, 18, 19]
_TABLES = {
    # (layout, bones): (parents, partners, torso (a, b, c, slot) or None), all 1-based
    ("ntu25", "6v"): (_NTU_6V, _NTU_AXIS, (2, 9, 5, 21)),
    ("ntu25", "3v"): (_NTU_3V, _NTU_3V, None),
    ("kinect-v1-20", "6v"): (_V1, _V1, (2, 9, 5, 3)),
    ("kinect-v1-20", "3v"): (_V1, _V1, None),
}


def topology(bones: str, layout: str = "ntu25"):
    """(parents p, axis partners q, torso (a, b, c, slot) or None), 0-based, of a convention."""
    parents, partners, torso = _TABLES[layout, bones]
    zero = [p - 1 for p in parents], [q - 1 for q in partners]
    return (*zero, None if torso is None else tuple(j - 1 for j in torso))


def naive_velocity(X: np.ndarray, frame_count, t_target=50) -> np.ndarray:
    """``Vel_t = s (X_{t+1} - X_t)`` for t = 0..T-2, ``Vel_{T-1} = 0``."""
    X = np.asarray(X, dtype=np.float64)
    s = t_target / frame_count
    T = X.shape[1]
    out = np.zeros_like(X)
    for t in range(T - 1):
        out[:, t] = s * (X[:, t + 1] - X[:, t])
    return out


def naive_acceleration(X: np.ndarray, frame_count, t_target=50) -> np.ndarray:
    """``Acc_t = s (Vel_{t+1} - Vel_t)`` for t = 0..T-3, the last two frames 0."""
    s = t_target / frame_count
    vel = naive_velocity(X, frame_count, t_target)
    T = vel.shape[1]
    out = np.zeros_like(vel)
    for t in range(T - 2):
        out[:, t] = s * (vel[:, t + 1] - vel[:, t])
    return out


def naive_bone(X: np.ndarray, bones: str = "6v", layout: str = "ntu25") -> np.ndarray:
    """``B_i = X_i - X_p(i)`` at the child; 6v: ``B_21 = normalize((B_2 - B_9) x (B_5 - B_9))``."""
    X = np.asarray(X, dtype=np.float64)
    parents, _, torso = topology(bones, layout)
    _, T, V, M = X.shape
    B = np.zeros_like(X)
    for m in range(M):
        for t in range(T):
            for i in range(V):
                B[:, t, i, m] = X[:, t, i, m] - X[:, t, parents[i], m]
            if torso is not None:
                a, b, c, slot = torso
                ba, bb, bc = B[:, t, a, m], B[:, t, b, m], B[:, t, c, m]
                B[:, t, slot, m] = normalize(cross(ba - bb, bc - bb))
    return B


def naive_rotation_axis(
    X: np.ndarray, bones: str = "6v", unit_axis: bool = False, layout: str = "ntu25"
) -> np.ndarray:
    """``R_i = B_i x B_q(i)``; with ``unit_axis`` normalised (paper eq. 4)."""
    B = naive_bone(X, bones, layout)
    _, partners, _ = topology(bones, layout)
    _, T, V, M = B.shape
    R = np.zeros_like(B)
    for m in range(M):
        for t in range(T):
            for i in range(V):
                r = cross(B[:, t, i, m], B[:, t, partners[i], m])
                R[:, t, i, m] = normalize(r) if unit_axis else r
    return R


def naive_joint_angle(X: np.ndarray, bones: str = "6v", layout: str = "ntu25") -> np.ndarray:
    """``theta_i = atan2(|B^_i x B^_q|, B^_i . B^_q)``, shape ``(1, T, V, M)``."""
    B = naive_bone(X, bones, layout)
    _, partners, _ = topology(bones, layout)
    _, T, V, M = B.shape
    theta = np.zeros((1, T, V, M))
    for m in range(M):
        for t in range(T):
            for i in range(V):
                bi = normalize(B[:, t, i, m])
                bq = normalize(B[:, t, partners[i], m])
                d = bi[0] * bq[0] + bi[1] * bq[1] + bi[2] * bq[2]
                theta[0, t, i, m] = np.arctan2(norm(cross(bi, bq)), d)
    return theta


def naive_angular_velocity(
    X: np.ndarray,
    frame_count,
    t_target=50,
    bones: str = "6v",
    axis_tol: float = 0.0,
    layout: str = "ntu25",
) -> np.ndarray:
    """``Omega_t = s (theta_{t+1} - theta_t) R^_t`` for t = 0..T-2, the last frame 0.

    ``axis_tol > 0``: ``R^ = 0`` where ``|R| <= axis_tol |B_i| |B_q|``.
    """
    s = t_target / frame_count
    B = naive_bone(X, bones, layout)
    R = naive_rotation_axis(X, bones, layout=layout)
    theta = naive_joint_angle(X, bones, layout)
    _, partners, _ = topology(bones, layout)
    _, T, V, M = R.shape
    out = np.zeros_like(R)
    for m in range(M):
        for t in range(T - 1):
            for i in range(V):
                r = R[:, t, i, m]
                rhat = normalize(r)
                if axis_tol > 0 and norm(r) <= axis_tol * norm(B[:, t, i, m]) * norm(
                    B[:, t, partners[i], m]
                ):
                    rhat = np.zeros(3)
                out[:, t, i, m] = s * (theta[0, t + 1, i, m] - theta[0, t, i, m]) * rhat
    return out


def naive_modalities(
    X: np.ndarray,
    frame_count,
    t_target=50,
    bones: str = "6v",
    unit_axis: bool = False,
    layout: str = "ntu25",
) -> dict[str, np.ndarray]:
    """All six modalities of one sample, keyed like ``skelmod.modalities.MODALITIES``."""
    return {
        "joint": np.asarray(X, dtype=np.float64).copy(),
        "velocity": naive_velocity(X, frame_count, t_target),
        "acceleration": naive_acceleration(X, frame_count, t_target),
        "bone": naive_bone(X, bones, layout),
        "rotation_axis": naive_rotation_axis(X, bones, unit_axis, layout),
        "angular_velocity": naive_angular_velocity(X, frame_count, t_target, bones, layout=layout),
    }
