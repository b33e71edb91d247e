"""Pre-training augmentations of the joint sequence (docs/method.md, "Augmentations").

Both functions act on one sample ``X`` of shape ``(C, T, V, M)`` (C=3 coordinates x, y, z;
T frames; V=25 NTU joints; M bodies; the layout is stated in ``skelmod.layout``) and draw their
randomness from an explicit :class:`numpy.random.Generator`, never from a global random state,
so a sample's augmentation is a pure function of ``(X, generator state)``.

The reference applies, in order, temporal crop (ratio 6) then shear (amplitude 0.5) to each of
the two views independently; :func:`augment` does exactly that. A third augmentation is a named
departure, off by default: :func:`rotate`, a random rotation about the vertical axis (the
``rotation`` preset key, on in ``nucla-cpu``; README, "Departures"). With it off, no number is
drawn for it, so the reference's random streams are unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "augment",
    "augment_batch",
    "crop_indices",
    "rotate",
    "rotation_matrix",
    "shear",
    "shear_matrix",
    "temporal_crop",
    "view_draws",
]


def _check_sample(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"{what}: expected a sample of shape (3, T, V, M), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what}: expected a floating-point array, got dtype {x.dtype}")
    return x


def crop_indices(t: int, ratio: int, start: int) -> np.ndarray:
    """Source frame of each output frame of the temporal crop, ``(t,)`` int64.

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


def temporal_crop(x: np.ndarray, rng: np.random.Generator, ratio: int) -> np.ndarray:
    """Random temporal shift with mirrored borders (``feeder/tools.py:20-29``).

    ``x`` is ``(3, T, V, M)``; the output has the same shape and dtype. ``P = T // ratio``; the
    start ``s`` is drawn uniformly from ``{0, ..., 2P}`` (one ``rng.integers`` call), so the
    sequence moves by ``s - P`` frames (−8 … +8 for T=50). ``ratio <= 0`` disables the crop
    (no draw). There is no rescaling, so the time scale γ is unchanged.
    """
    x = _check_sample(x, "temporal_crop")
    if ratio <= 0:
        return x.copy()
    t = x.shape[1]
    return x[:, _draw_crop(rng, t, ratio)]


def _draw_crop(rng: np.random.Generator, t: int, ratio: int) -> np.ndarray:
    """The crop's source frames ``(t,)`` from one draw of its start in ``{0, ..., 2P}``."""
    return crop_indices(t, ratio, int(rng.integers(0, 2 * (t // ratio) + 1)))


def shear_matrix(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """The shear matrix ``S`` (``feeder/tools.py:6-17``), ``(3, 3)`` float64.

    Draws ``a0, a1, a2, b0, b1, b2 ~ U(-amplitude, amplitude)`` in that order (one
    ``rng.uniform`` call of size 6) and returns ``[[1, a0, b0], [a1, 1, b1], [a2, b2, 1]]``.
    """
    a0, a1, a2, b0, b1, b2 = rng.uniform(-amplitude, amplitude, size=6)
    return np.array([[1.0, a0, b0], [a1, 1.0, b1], [a2, b2, 1.0]])


def shear(x: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Random shear ``p' = S p`` of every point; ``amplitude <= 0`` disables it (no draw).

    ``x`` is ``(3, T, V, M)``; the output has the same shape and dtype. Zeros (absent bodies)
    stay zero. The shear is not rigid: bone lengths and angles change.
    """
    x = _check_sample(x, "shear")
    if amplitude <= 0:
        return x.copy()
    s = shear_matrix(rng, amplitude).astype(x.dtype)
    return np.tensordot(s, x, axes=(1, 0))


def rotation_matrix(rng: np.random.Generator, degrees: float) -> np.ndarray:
    """A rotation about the vertical y axis, ``(3, 3)`` float64 (departure; see :func:`rotate`).

    Draws ``θ ~ U(-degrees, degrees)`` (one ``rng.uniform`` call) and returns
    ``[[cos θ, 0, sin θ], [0, 1, 0], [-sin θ, 0, cos θ]]``.
    """
    theta = np.deg2rad(rng.uniform(-degrees, degrees))
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotate(x: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Random rotation ``p' = R p`` of every point about the vertical axis (not in the reference).

    Kinect's y axis points up, so this turns the body as a camera placed elsewhere around it
    would see it: the nuisance that separates the views of a cross-view benchmark (N-UCLA's
    ``xview`` trains on two cameras and tests on a third). Measured on N-UCLA
    (``benchmarks/RESULTS.md``): without it, instance discrimination learns the camera and the
    features do worse than random ones on the unseen view. ``x`` is ``(3, T, V, M)``; the output
    has the same shape and dtype; ``degrees <= 0`` disables it (no draw). Rigid: bone lengths
    and angles are kept, and zeros (absent bodies) stay zero.
    """
    x = _check_sample(x, "rotate")
    if degrees <= 0:
        return x.copy()
    r = rotation_matrix(rng, degrees).astype(x.dtype)
    return np.tensordot(r, x, axes=(1, 0))


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    crop_ratio: int,
    shear_amplitude: float,
    rotation: float,
) -> np.ndarray:
    """One pre-training view: :func:`temporal_crop`, then :func:`shear` (``_aug``), then,
    only when ``rotation > 0`` (a departure), :func:`rotate` by up to ``rotation`` degrees.

    The reference's values (ratio 6, amplitude 0.5, no rotation) are the settings' defaults
    (``PretrainConfig``), so every argument here is required."""
    x = shear(temporal_crop(x, rng, crop_ratio), rng, shear_amplitude)
    return rotate(x, rng, rotation) if rotation > 0 else x


def view_draws(
    rng: np.random.Generator, t: int, crop_ratio: int, shear_amplitude: float, rotation: float
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The random draws of one :func:`augment` call, in its order and from the same calls:
    the crop's source frames ``(t,)`` (:func:`crop_indices`), the shear matrix and the
    rotation matrix ``(3, 3)`` float64; None for an augmentation that is disabled (no draw)."""
    crop = _draw_crop(rng, t, crop_ratio) if crop_ratio > 0 else None
    shear_m = shear_matrix(rng, shear_amplitude) if shear_amplitude > 0 else None
    rot = rotation_matrix(rng, rotation) if rotation > 0 else None
    return crop, shear_m, rot


def augment_batch(
    x: np.ndarray,
    crops: np.ndarray | None,
    shears: np.ndarray | None,
    rotations: np.ndarray | None,
) -> np.ndarray:
    """:func:`augment` of a batch with given draws (:func:`view_draws` per sample): the same
    arithmetic in the same dtype, so the same result as one call per sample (tested).

    ``x`` ``(B, 3, T, V, M)`` floating; ``crops`` ``(B, T)`` source frames, ``shears`` and
    ``rotations`` ``(B, 3, 3)``, each None when that augmentation is disabled. Returns a new
    ``(B, 3, T, V, M)`` array of ``x``'s dtype.
    """
    x = np.asarray(x)
    if x.ndim != 5 or x.shape[1] != 3 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"augment_batch: expected a floating batch of shape (B, 3, T, V, M), got "
            f"{x.shape} {x.dtype}"
        )
    b, _, t, v, m = x.shape
    if crops is None:
        out = x.copy()
    else:
        out = np.take_along_axis(x, np.asarray(crops).reshape(b, 1, t, 1, 1), axis=2)
    for mats in (shears, rotations):
        if mats is not None:
            # np.matmul over the batch is tensordot's sgemm/dgemm per sample (same rounding)
            flat = np.matmul(np.asarray(mats).astype(x.dtype), out.reshape(b, 3, t * v * m))
            out = flat.reshape(b, 3, t, v, m)
    return out
