"""Numba kernels for the modalities (docs/method.md, "The six modalities").
Private: they check nothing.

The public, checking API is :mod:`skelmod.modalities`. The kernel takes a C-contiguous batch
``X (N, 3, T, V, M)`` (float32 or float64) and preallocated outputs of the same dtype; all
arithmetic is float64. Inside, each sample is transposed to (V, T, M) order so that a bone and
its parent or axis partner are two contiguous rows and the inner loops, branch-free
(``atan2_nonneg`` included), vectorise. The slow twins the tests compare against are in
``tests/naive_modalities.py``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: ``F.normalize`` clamps the norm from below by this: a zero vector normalises to 0.
NORM_EPS = 1e-12
_MAX = 1.7976931348623157e308

# Cephes atan coefficients (Moshier): atan(x) = x + x z P(z)/Q(z), z = x², |x| <= 0.66.
_P0, _P1, _P2, _P3, _P4 = (
    -8.750608600031904122785e-01,
    -1.615753718733365076637e01,
    -7.500855792314704667340e01,
    -1.228866684490136173410e02,
    -6.485021904942025371773e01,
)
_Q0, _Q1, _Q2, _Q3, _Q4 = (
    2.485846490142306297962e01,
    1.650270098316988542046e02,
    4.328810604912902668951e02,
    4.853903996359136964868e02,
    1.945506571482613964425e02,
)
_PIO4 = 0.78539816339744830962
_PIO2 = 1.57079632679489661923
_PI = 3.14159265358979323846
_MOREBITS = 6.123233995736765886130e-17

_jit = njit(cache=True, error_model="numpy", nogil=True)


@_jit
def atan2_nonneg(y, x):
    """``atan2(y, x)`` for ``y >= 0`` (or +0), branch-free so that loops calling it vectorise.

    Agrees with libm to about 1e-16, including ``atan2(0, -0.0) = pi`` and ``atan2(0, 0) = 0``.
    """
    ax = abs(x)
    hi = max(ax, y)
    lo = min(ax, y)
    hi = hi if hi > 0.0 else 1.0  # atan2(0, ±0): lo = 0
    big = lo > 0.66 * hi  # a = lo / hi > 0.66: reduce with atan(a) = pi/4 + atan((a-1)/(a+1))
    xr = (lo - hi if big else lo) / (lo + hi if big else hi)
    z = xr * xr
    p = (((_P0 * z + _P1) * z + _P2) * z + _P3) * z + _P4
    q = ((((z + _Q0) * z + _Q1) * z + _Q2) * z + _Q3) * z + _Q4
    r = xr * z * p / q + xr
    r = r + (0.5 * _MOREBITS + _PIO4 if big else 0.0)  # atan(lo / hi) in [0, pi/4]
    r = _PIO2 - r if y > ax else r
    return _PI - r if math.copysign(1.0, x) < 0.0 else r


@_jit
def _to_tvm(src, out):
    """Copy ``src (V, T, M)`` into ``out (T, V, M)``."""
    V, T, M = src.shape
    if M == 2:  # the usual case: a fixed inner length makes this loop 2-3x faster
        for t in range(T):
            for v in range(V):
                out[t, v, 0] = src[v, t, 0]
                out[t, v, 1] = src[v, t, 1]
        return
    for t in range(T):
        for v in range(V):
            for m in range(M):
                out[t, v, m] = src[v, t, m]


@_jit
def _omega_tvm(s, th, R, out):
    """``out[t, v, m] = s (th[v, t+1, m] - th[v, t, m]) R[v, t, m]``, 0 at t = T-1."""
    V, T, M = th.shape
    if M == 2:
        for t in range(T - 1):
            for v in range(V):
                out[t, v, 0] = s * (th[v, t + 1, 0] - th[v, t, 0]) * R[v, t, 0]
                out[t, v, 1] = s * (th[v, t + 1, 1] - th[v, t, 1]) * R[v, t, 1]
    else:
        for t in range(T - 1):
            for v in range(V):
                for m in range(M):
                    out[t, v, m] = s * (th[v, t + 1, m] - th[v, t, m]) * R[v, t, m]
    out[T - 1, :, :] = 0.0


@_jit
def _bones_vtm(x, parents, B):
    """``B[v, t, m] = x[t, v, m] - x[t, parents[v], m]``: one coordinate, transposed."""
    T, V, M = x.shape
    for v in range(V):
        p = parents[v]
        if M == 2:
            for t in range(T):
                B[v, t, 0] = np.float64(x[t, v, 0]) - np.float64(x[t, p, 0])
                B[v, t, 1] = np.float64(x[t, v, 1]) - np.float64(x[t, p, 1])
        else:
            for t in range(T):
                for m in range(M):
                    B[v, t, m] = np.float64(x[t, v, m]) - np.float64(x[t, p, m])


@_jit
def _normalize_rows(x, y, z, hx, hy, hz, n):
    """``h = v / max(|v|, 1e-12)`` elementwise (F.normalize), ``n = |v|``; h may be v."""
    overflow = False
    for i in range(x.shape[0]):
        n2 = x[i] * x[i] + y[i] * y[i] + z[i] * z[i]
        ok = n2 <= _MAX
        overflow |= not ok
        n[i] = math.sqrt(n2)
        # one division, not three (within an ulp of v / den); h = v where |v|^2 overflowed
        r = 1.0 / max(n[i], NORM_EPS) if ok else 1.0
        hx[i] = x[i] * r
        hy[i] = y[i] * r
        hz[i] = z[i] * r
    if overflow:  # rare (|v| > 1e154): redo those entries with rescaling
        for i in range(x.shape[0]):
            big = max(abs(x[i]), abs(y[i]), abs(z[i]))
            if not n[i] <= _MAX and big <= _MAX:
                a, b, c = x[i] / big, y[i] / big, z[i] / big
                n[i] = big * math.sqrt(a * a + b * b + c * c)
                r = 1.0 / n[i]
                hx[i] = x[i] * r
                hy[i] = y[i] * r
                hz[i] = z[i] * r


@_jit
def _cross(ax, ay, az, bx, by, bz, cx, cy, cz):
    """``c = a x b`` elementwise over rows."""
    for j in range(ax.shape[0]):
        cx[j] = ay[j] * bz[j] - az[j] * by[j]
        cy[j] = az[j] * bx[j] - ax[j] * bz[j]
        cz[j] = ax[j] * by[j] - ay[j] * bx[j]


@_jit
def _angle(ax, ay, az, bx, by, bz, th):
    """``th = atan2(|a x b|, a . b)`` elementwise over rows."""
    for j in range(ax.shape[0]):
        cx = ay[j] * bz[j] - az[j] * by[j]
        cy = az[j] * bx[j] - ax[j] * bz[j]
        cz = ax[j] * by[j] - ay[j] * bx[j]
        d = ax[j] * bx[j] + ay[j] * by[j] + az[j] * bz[j]
        th[j] = atan2_nonneg(math.sqrt(cx * cx + cy * cy + cz * cz), d)


@_jit
def _one_sample(
    X, s, parents, partners, torso, torso_joints, unit_axis, axis_tol,
    vel, acc, bone, axis, theta, omega,
    do_vel, do_acc, do_bone, do_axis, do_theta, do_omega,
    S,
):  # fmt: skip
    """All requested modalities of one sample ``X (3, T, V, M)``.

    ``S (12, V, T, M)`` float64 scratch holding bones, axes and angles transposed, so that
    bone i and its parent or partner are two contiguous rows of length T*M.
    """
    _, T, V, M = X.shape
    P = T * V * M
    W = V * M
    TM = T * M
    L = P - W  # entries that have a next frame, (T, V, M) order

    if do_vel or do_acc:
        L2 = max(L - W, 0)  # entries that have two next frames
        for c in range(3):
            x = X[c].reshape(P)
            if do_vel and do_acc:
                v_out, a_out = vel[c].reshape(P), acc[c].reshape(P)
                for i in range(L2):
                    v0 = s * (np.float64(x[i + W]) - np.float64(x[i]))
                    v1 = s * (np.float64(x[i + 2 * W]) - np.float64(x[i + W]))
                    v_out[i] = v0
                    a_out[i] = s * (v1 - v0)
                for i in range(L2, L):
                    v_out[i] = s * (np.float64(x[i + W]) - np.float64(x[i]))
                for i in range(L, P):
                    v_out[i] = 0.0
                for i in range(L2, P):
                    a_out[i] = 0.0
            elif do_vel:
                v_out = vel[c].reshape(P)
                for i in range(L):
                    v_out[i] = s * (np.float64(x[i + W]) - np.float64(x[i]))
                for i in range(L, P):
                    v_out[i] = 0.0
            else:
                a_out = acc[c].reshape(P)
                for i in range(L2):
                    v0 = s * (np.float64(x[i + W]) - np.float64(x[i]))
                    v1 = s * (np.float64(x[i + 2 * W]) - np.float64(x[i + W]))
                    a_out[i] = s * (v1 - v0)
                for i in range(L2, P):
                    a_out[i] = 0.0

    if not (do_bone or do_axis or do_theta or do_omega):
        return
    # rows: S2[k, v] is plane k of joint v, (T*M,); flat: S1[k] is plane k, (P,)
    S2 = S.reshape((12, V, TM))
    S1 = S.reshape((12, P))
    Bx, By, Bz, nB, Hx, Hy, Hz, th, Rx, Ry, Rz, nR = (
        S2[0], S2[1], S2[2], S2[3], S2[4], S2[5], S2[6], S2[7], S2[8], S2[9], S2[10], S2[11]
    )  # fmt: skip

    # bones B_i = X_i - X_p(i), stored at the child i
    for c in range(3):
        _bones_vtm(X[c], parents, S[c])
    if torso:
        # B_slot = normalize((B_a - B_b) x (B_c - B_b)), the upper-torso normal (6-view model;
        # ntu25: B_21 = normalize((B_2 - B_9) x (B_5 - B_9)))
        a, b, c_, slot = torso_joints[0], torso_joints[1], torso_joints[2], torso_joints[3]
        for c in range(3):
            for j in range(TM):
                S2[4 + c, 0, j] = S2[c, a, j] - S2[c, b, j]  # B_a - B_b
                S2[8 + c, 0, j] = S2[c, c_, j] - S2[c, b, j]  # B_c - B_b
        _cross(Hx[0], Hy[0], Hz[0], Rx[0], Ry[0], Rz[0], Bx[slot], By[slot], Bz[slot])
        _normalize_rows(Bx[slot], By[slot], Bz[slot], Bx[slot], By[slot], Bz[slot], nR[0])
    if do_bone:
        for c in range(3):
            _to_tvm(S[c], bone[c])
    if not (do_axis or do_theta or do_omega):
        return
    need_angle = do_theta or do_omega
    need_rhat = do_omega or (do_axis and unit_axis)

    if need_angle or axis_tol > 0.0:
        _normalize_rows(S1[0], S1[1], S1[2], S1[4], S1[5], S1[6], S1[3])  # B^ and |B|

    # R_i = B_i x B_q(i), not normalised
    for v in range(V):
        q = partners[v]
        _cross(Bx[v], By[v], Bz[v], Bx[q], By[q], Bz[q], Rx[v], Ry[v], Rz[v])
    if do_axis and not unit_axis:
        for c in range(3):
            _to_tvm(S[8 + c], axis[c])
    if need_rhat:
        _normalize_rows(S1[8], S1[9], S1[10], S1[8], S1[9], S1[10], S1[11])
        if axis_tol > 0.0:
            # nearly collinear bones have no meaningful axis (the collinear-axis bug): zero it
            for v in range(V):
                q = partners[v]
                for j in range(TM):
                    if nR[v, j] <= axis_tol * (nB[v, j] * nB[q, j]):
                        Rx[v, j] = Ry[v, j] = Rz[v, j] = 0.0
        if do_axis and unit_axis:
            for c in range(3):
                _to_tvm(S[8 + c], axis[c])
    if not need_angle:
        return

    # theta = atan2(|B^_i x B^_q|, B^_i . B^_q)
    for v in range(V):
        q = partners[v]
        _angle(Hx[v], Hy[v], Hz[v], Hx[q], Hy[q], Hz[q], th[v])
    if do_theta:
        _to_tvm(S[7], theta[0])
    if do_omega:
        # Omega_t = s (theta_{t+1} - theta_t) R^_t, zero at the last frame
        for c in range(3):
            _omega_tvm(s, S[7], S[8 + c], omega[c])


@_jit
def modalities_batch(
    X, s, parents, partners, torso, torso_joints, unit_axis, axis_tol,
    vel, acc, bone, axis, theta, omega,
    do_vel, do_acc, do_bone, do_axis, do_theta, do_omega, lo, hi,
):  # fmt: skip
    """Fill the requested outputs for samples ``lo <= n < hi``; releases the GIL.

    ``X (N, 3, T, V, M)`` C-contiguous; ``s (N,)`` float64 time scales 1/γ;
    ``parents``/``partners`` ``(V,)`` int64 bone parent and axis partner of each joint;
    ``torso``: overwrite bone slot ``torso_joints[3]`` with the torso normal
    ``normalize((B_a - B_b) x (B_c - B_b))``, ``(a, b, c) = torso_joints[:3]`` (int64 ``(4,)``;
    ntu25: joints 2, 9, 5 and slot 21 in 1-based ids); ``axis_tol``: zero R^ where ``|R| <=
    axis_tol |B_i| |B_q|`` (0 = reference). Outputs are ``(N, C', T, V, M)`` with C' = 1 for
    ``theta`` and 3 otherwise; an output whose ``do_*`` flag is False is never touched and
    needs one row only. Threads share a batch by calling this on disjoint ranges.
    """
    _, _, T, V, M = X.shape
    S = np.empty((12, V, T, M))  # one scratch for the whole range
    for k in range(lo, hi):
        _one_sample(
            X[k], s[k], parents, partners, torso, torso_joints, unit_axis, axis_tol,
            vel[k if do_vel else 0], acc[k if do_acc else 0],
            bone[k if do_bone else 0], axis[k if do_axis else 0],
            theta[k if do_theta else 0], omega[k if do_omega else 0],
            do_vel, do_acc, do_bone, do_axis, do_theta, do_omega,
            S,
        )  # fmt: skip
