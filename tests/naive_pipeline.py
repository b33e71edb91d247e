"""Slow, plainly written twin of the reference preprocessing
(docs/data.md, "NTU files, names and splits"; docs/method.md, "Data and normalisation").

It follows the structure and the dtypes of the authors' code step by step, with Python loops:

* ``read_xyz`` (``naive_reader.naive_read_xyz``) parses the file line by line into
  float64 ``(3, numFrame, 25, 2)``;
* gendata stores it in a float32 ``(3, 300, 25, 2)`` row (``open_memmap`` float32);
* ``NTUMotionProcessor.__getitem__`` then works on that float32 row: length from body 0's
  joint 1, centring in float32, ``real_resize`` (cv2, output cast to float32), then
  ``parallel_skeleton`` per body (float32 angles in degrees, a float64 rotation matrix, the
  rotated frame written back into the float32 array).

Used by the tests to check :func:`skelmod.normalize.normalize_sample` (and the converter's
cache) against the reference within 1e-5. Nothing here is fast or clever on purpose.
"""

from __future__ import annotations

import math

import numpy as np
from naive_reader import naive_read_xyz  # tests/ is on sys.path under pytest

MAX_BODY = 2
NUM_JOINT = 25
MAX_FRAME = 300


def gendata_row(path) -> tuple[np.ndarray, int]:
    """The float32 ``(3, 300, 25, 2)`` gendata row of one file and its header frame count."""
    xyz = naive_read_xyz(path, MAX_BODY, NUM_JOINT)
    row = np.zeros((3, MAX_FRAME, NUM_JOINT, MAX_BODY), dtype=np.float32)
    frame_count = xyz.shape[1]
    row[:, 0:frame_count, :, :] = xyz
    return row, frame_count


def get_length(data: np.ndarray, length_joint: int = 0) -> int:
    """Valid length: count the frames where body 0's joint 1 (``length_joint``) is not all-zero."""
    length = 0
    for t in range(data.shape[1]):
        total = 0.0
        for c in range(3):
            total += abs(float(data[c, t, length_joint, 0]))
        if total != 0:
            length += 1
    return length


def centre(data: np.ndarray, center: int = 20) -> np.ndarray:
    """Centring in float32: every joint minus joint 21 (index ``center``) of the same body/frame."""
    out = np.zeros_like(data)
    C, T, V, M = data.shape
    for m in range(M):
        for t in range(T):
            for v in range(V):
                for c in range(3):
                    out[c, t, v, m] = data[c, t, v, m] - data[c, t, center, m]
    return out


def real_resize(data: np.ndarray, length: int, crop_size: int) -> np.ndarray:
    """Resize: cv2 INTER_LINEAR along time on ``data[:, :length]``, output float32.

    Coordinates and weights in float64 (this matches cv2 5.0 to 1 float32 ulp on the real
    files; rounding ``u`` to float32 first would not), the blend of the float32 inputs in
    float64, rounded to float32 like the reference's ``astype(np.float32)``.
    """
    C, T, V, M = data.shape
    new_data = np.zeros((C, crop_size, V, M), dtype=np.float32)
    for m in range(M):
        for t_out in range(crop_size):
            u = (t_out + 0.5) * length / crop_size - 0.5
            u = min(max(u, 0.0), length - 1.0)
            i = math.floor(u)
            alpha = u - i
            i_next = min(i + 1, length - 1)
            for v in range(V):
                for c in range(C):
                    a = float(data[c, i, v, m]) * (1.0 - alpha)
                    b = float(data[c, i_next, v, m]) * alpha
                    new_data[c, t_out, v, m] = a + b
    return new_data


def y_transmat(theta_deg) -> np.ndarray:
    """The float64 rotation matrix of one float32 angle in degrees (``_y_transmat``)."""
    theta = theta_deg * np.float32(np.pi) / np.float32(180)
    tm = np.zeros((3, 3))
    tm[0, 0] = np.cos(theta)
    tm[0, 2] = -np.sin(theta)
    tm[1, 1] = 1
    tm[2, 0] = np.sin(theta)
    tm[2, 2] = np.cos(theta)
    return tm


def parallel_skeleton(body: np.ndarray, left: int = 4, right: int = 8) -> np.ndarray:
    """Yaw alignment for one body ``(3, T, V)`` float32 (shoulders 5, 9 at ``left``, ``right``)."""
    C, T, V = body.shape
    vec = body[:, :, right] - body[:, :, left]
    vec[1, :] = 0
    thetas = np.zeros(T, dtype=np.float32)
    for t in range(T):
        l2_norm = np.sqrt(vec[0, t] * vec[0, t] + vec[1, t] * vec[1, t] + vec[2, t] * vec[2, t])
        cos_psi = vec[0, t] / (l2_norm + np.float32(0.0001))
        thetas[t] = np.arccos(cos_psi) * np.float32(180 / np.pi)
    if np.sum(vec[2, :]) >= 0:
        thetas = -thetas
    out = np.zeros_like(body)
    for t in range(T):
        tm = y_transmat(thetas[t])
        for v in range(V):
            for row in range(3):
                value = 0.0
                for c in range(3):
                    value += tm[row, c] * float(body[c, t, v])
                out[row, t, v] = value
    return out


def naive_normalize(
    data: np.ndarray, t_target: int = 50, center: int = 20, shoulders=(4, 8), length_joint=0
) -> tuple[np.ndarray, int]:
    """Normalisation on one float32 gendata row ``(3, T, 25, M)``: ``(X float32, L)``.

    The joints default to NTU's (21, 5 and 9, 1); other skeletons pass theirs.
    Raises ValueError when ``L == 0`` (the reference would crash inside cv2).
    """
    data = np.asarray(data, dtype=np.float32)
    length = get_length(data, length_joint)
    if length == 0:
        raise ValueError("L = 0")
    data = centre(data, center)
    data = real_resize(data, length, t_target)
    for n in range(data.shape[3]):
        data[:, :, :, n] = parallel_skeleton(data[:, :, :, n], *shoulders)
    return data, length


def naive_process(path, t_target: int = 50) -> tuple[np.ndarray, int, int]:
    """Reference preprocessing of one raw file.

    Returns ``(X, L, frame_count)``: ``X`` float32 ``(3, t_target, 25, 2)``, the valid length
    ``L`` and the header frame count. Raises ValueError when ``L == 0``.
    """
    data, frame_count = gendata_row(path)
    X, length = naive_normalize(data, t_target)
    return X, length, frame_count
