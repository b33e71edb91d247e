"""Pre-training augmentations of the joint sequence (``reference-ikem.md`` §3).

Both functions act on one sample ``X`` of shape ``(C, T, V, M)`` (C=3 coordinates x, y, z;
T frames; V=25 NTU joints; M bodies; the layout is stated in ``skelmod.layout``) and draw their
randomness from an explicit :class:`numpy.random.Generator`, never from a global random state,
so a sample's augmentation is a pure function of ``(X, generator state)``.

The reference applies, in order, temporal crop (ratio 6) then shear (amplitude 0.5) to each of
the two views independently; :func:`augment` does exactly that.
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment", "crop_indices", "shear", "shear_matrix", "temporal_crop"]


def _check_sample(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"{what}: expected a sample of shape (3, T, V, M), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what}: expected a floating-point array, got dtype {x.dtype}")
    return x


def crop_indices(t: int, ratio: int, start: int) -> np.ndarray:
    """Source frame of each output frame of the temporal crop (§3), ``(t,)`` int64.

    With ``P = t // ratio`` the reference builds the padded sequence
    ``[x_{P-1}, ..., x_0, x_0, ..., x_{t-1}, x_{t-1}, ..., x_{t-P}]`` (mirrored padding that
    repeats the edge frame) and keeps frames ``start .. start + t - 1`` of it. Output frame ``i``
    is padded frame ``start + i``, i.e. original frame ``j = start + i - P`` reflected at the
    borders: ``-j - 1`` when ``j < 0`` and ``2t - 1 - j`` when ``j >= t``.
    """
    p = t // ratio
    if not 0 <= start <= 2 * p:
        raise ValueError(f"crop start must lie in 0..{2 * p} for T={t}, ratio={ratio}; got {start}")
    j = np.arange(t, dtype=np.int64) + (start - p)
    j = np.where(j < 0, -j - 1, j)
    return np.where(j >= t, 2 * t - 1 - j, j)


def temporal_crop(x: np.ndarray, rng: np.random.Generator, ratio: int = 6) -> np.ndarray:
    """Random temporal shift with mirrored borders (§3, ``feeder/tools.py:20-29``).

    ``x`` is ``(3, T, V, M)``; the output has the same shape and dtype. ``P = T // ratio``; the
    start ``s`` is drawn uniformly from ``{0, ..., 2P}`` (one ``rng.integers`` call), so the
    sequence moves by ``s - P`` frames (−8 … +8 for T=50). ``ratio <= 0`` disables the crop
    (no draw). There is no rescaling, so the time scale γ is unchanged.
    """
    x = _check_sample(x, "temporal_crop")
    if ratio <= 0:
        return x.copy()
    t = x.shape[1]
    p = t // ratio
    start = int(rng.integers(0, 2 * p + 1))
    return x[:, crop_indices(t, ratio, start)]


def shear_matrix(rng: np.random.Generator, amplitude: float = 0.5) -> np.ndarray:
    """The shear matrix ``S`` of §3 (``feeder/tools.py:6-17``), ``(3, 3)`` float64.

    Draws ``a0, a1, a2, b0, b1, b2 ~ U(-amplitude, amplitude)`` in that order (one
    ``rng.uniform`` call of size 6) and returns ``[[1, a0, b0], [a1, 1, b1], [a2, b2, 1]]``.
    """
    a0, a1, a2, b0, b1, b2 = rng.uniform(-amplitude, amplitude, size=6)
    return np.array([[1.0, a0, b0], [a1, 1.0, b1], [a2, b2, 1.0]])


def shear(x: np.ndarray, rng: np.random.Generator, amplitude: float = 0.5) -> np.ndarray:
    """Random shear ``p' = S p`` of every point (§3); ``amplitude <= 0`` disables it (no draw).

    ``x`` is ``(3, T, V, M)``; the output has the same shape and dtype. Zeros (absent bodies)
    stay zero. The shear is not rigid: bone lengths and angles change.
    """
    x = _check_sample(x, "shear")
    if amplitude <= 0:
        return x.copy()
    s = shear_matrix(rng, amplitude).astype(x.dtype)
    return np.tensordot(s, x, axes=(1, 0))


def augment(
    x: np.ndarray, rng: np.random.Generator, crop_ratio: int = 6, shear_amplitude: float = 0.5
) -> np.ndarray:
    """One pre-training view: :func:`temporal_crop`, then :func:`shear` (§3, ``_aug``)."""
    return shear(temporal_crop(x, rng, crop_ratio), rng, shear_amplitude)
