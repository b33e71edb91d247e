"""Plain twins of ``ikemtrain.augment``, written from the text of
docs/method.md, "Augmentations".

They build the padded sequence literally and loop over every point, and consume the generator
in the same order as the fast versions (one integer for the crop start, six uniforms for the
shear), so both can be fed generators in the same state and compared exactly.
"""

from __future__ import annotations

import numpy as np


def temporal_crop(x: np.ndarray, rng: np.random.Generator, ratio: int = 6) -> np.ndarray:
    if ratio <= 0:
        return x.copy()
    t = x.shape[1]
    p = t // ratio
    frames = [x[:, i] for i in range(t)]
    # [x_{P-1}, ..., x_0, x_0, ..., x_{T-1}, x_{T-1}, ..., x_{T-P}]
    left = [frames[i] for i in range(p - 1, -1, -1)]
    right = [frames[i] for i in range(t - 1, t - p - 1, -1)]
    padded = left + frames + right
    assert len(padded) == t + 2 * p
    start = int(rng.integers(0, 2 * p + 1))
    return np.stack(padded[start : start + t], axis=1)


def shear(x: np.ndarray, rng: np.random.Generator, amplitude: float = 0.5) -> np.ndarray:
    if amplitude <= 0:
        return x.copy()
    a0, a1, a2, b0, b1, b2 = rng.uniform(-amplitude, amplitude, size=6)
    out = np.empty_like(x)
    _, t_len, v_len, m_len = x.shape
    for t in range(t_len):
        for v in range(v_len):
            for m in range(m_len):
                px, py, pz = (float(c) for c in x[:, t, v, m])
                out[0, t, v, m] = px + a0 * py + b0 * pz
                out[1, t, v, m] = a1 * px + py + b1 * pz
                out[2, t, v, m] = a2 * px + b2 * py + pz
    return out


def rotate(x: np.ndarray, rng: np.random.Generator, degrees: float = 0.0) -> np.ndarray:
    """Turn every point about the vertical y axis by θ ~ U(-degrees, degrees) (one draw):
    x' = x cos θ + z sin θ, y' = y, z' = -x sin θ + z cos θ."""
    if degrees <= 0:
        return x.copy()
    theta = float(rng.uniform(-degrees, degrees)) * np.pi / 180.0
    out = np.empty_like(x)
    _, t_len, v_len, m_len = x.shape
    for t in range(t_len):
        for v in range(v_len):
            for m in range(m_len):
                px, py, pz = (float(c) for c in x[:, t, v, m])
                out[0, t, v, m] = px * np.cos(theta) + pz * np.sin(theta)
                out[1, t, v, m] = py
                out[2, t, v, m] = -px * np.sin(theta) + pz * np.cos(theta)
    return out
