"""The synthetic Kinect v2 sensor: projections, the tracker's frontal bias, tracking noise,
inferred joints, glitches and noise bodies, producing the 12 joint values and 9 body values of
docs/data.md, "NTU files, names and splits".

Joint values (the last axis of ``joints``, :data:`skelmod.ntu.JOINT_FIELDS`): x y z, depthX
depthY colorX colorY, orientationW..Z, trackingState (2 tracked, 1 inferred). Body values
(:data:`skelmod.ntu.BODY_INFO_FIELDS`): clipedEdges, left and right hand confidence and state,
isResticted, leanX, leanY, trackingState.
"""

from __future__ import annotations

import numpy as np

from skelmod import layout

from .kinematics import JOINT, quaternions

# Kinect v2 projections fitted on the real files (px; residual < 0.6 px).
_DEPTH = (256.33, 366.93, 208.49, 366.77)  # cx, fx, cy, fy
_COLOR = (958.90, 1059.70, 61.52, 567.00, 1057.15)  # cx, fx, parallax, cy, fy


def _joints(*names: str) -> list[int]:
    return [JOINT[n] for n in names]


def _mask(*names: str) -> np.ndarray:
    out = np.zeros(layout.V, dtype=bool)
    out[_joints(*names)] = True
    return out


_HANDS = ("hand", "hand_tip", "thumb")
#: Joints Kinect gives no orientation for (all-zero quaternion in the real files).
_LEAF_JOINTS = _joints(
    "head", "left_foot", "right_foot", *(f"{s}_{j}" for s in ("left", "right") for j in _HANDS[1:])
)
#: What a tracking glitch moves: one hand (wrist, hand, tip, thumb) or one foot (ankle, foot).
_GLITCH_GROUPS = (
    *(_joints(*(f"{s}_{j}" for j in ("wrist", *_HANDS))) for s in ("left", "right")),
    *(_joints(f"{s}_ankle", f"{s}_foot") for s in ("left", "right")),
)
_EXTREMITIES = _mask(*(f"{s}_{j}" for s in ("left", "right") for j in (*_HANDS, "foot")))
#: The left/right joint pairs the tracker's frontal bias turns (:func:`frontal_bias`).
_BIASED_PAIRS = (
    tuple(_joints("left_shoulder", "right_shoulder")),
    tuple(_joints("left_hip", "right_hip")),
)
_TORSO = _mask("spine_base", "spine_mid", "neck", "spine_shoulder", "left_hip", "right_hip")


def project(xyz: np.ndarray) -> np.ndarray:
    """depthX, depthY, colorX, colorY ``(..., 4)`` of camera-space points ``(..., 3)``."""
    x, y, z = xyz[..., 0], xyz[..., 1], np.maximum(xyz[..., 2], 0.1)
    dcx, dfx, dcy, dfy = _DEPTH
    ccx, cfx, cpar, ccy, cfy = _COLOR
    return np.stack(
        [dcx + dfx * x / z, dcy - dfy * y / z, ccx + cfx * x / z + cpar / z, ccy - cfy * y / z],
        axis=-1,
    )


def _inferred_runs(rng: np.random.Generator, T: int, rate: np.ndarray) -> np.ndarray:
    """Boolean ``(T, 25)``: runs of frames where a joint is only inferred (trackingState 1)."""
    out = np.zeros((T, layout.V), dtype=bool)
    counts = rng.poisson(rate * T / 8.0)
    for j in np.flatnonzero(counts):
        for _ in range(counts[j]):
            start = int(rng.integers(0, T))
            out[start : start + int(rng.geometric(1 / 8.0)), j] = True
    return out


def frontal_bias(xyz: np.ndarray, k: float) -> np.ndarray:
    """Kinect's pull towards a frontal body: the shoulder and hip lines turned towards the
    camera's x axis, ``(T, 25, 3)`` camera-space joints -> a new array.

    The tracker fits a body model that mostly saw people facing the sensor; when a body is
    turned away, the occluded shoulder and hip are placed as if it faced the camera more than
    it does, while the visible limbs stay where the depth image puts them. Here each
    left/right pair turns about its midpoint in the x-z plane from yaw ``phi`` (its angle to
    the camera's x axis) to ``k * phi``, keeping its length and height difference. ``k = 1``
    is no bias. Normalisation aligns the shoulder line, so a turned body comes out
    with its limbs rotated by ``(1 - k) phi``: a residue of the view that a frontal camera does
    not show and a side view shows most, like the view shortcut of real data sets.
    """
    out = xyz.copy()
    for left, right in _BIASED_PAIRS:
        centre = (xyz[:, left] + xyz[:, right]) / 2
        v = xyz[:, right] - xyz[:, left]
        flat = np.hypot(v[:, 0], v[:, 2])
        phi = k * np.arctan2(v[:, 2], v[:, 0])
        turned = np.stack([flat * np.cos(phi), v[:, 1], flat * np.sin(phi)], axis=1)
        out[:, left], out[:, right] = centre - turned / 2, centre + turned / 2
    return out


def _wobble(rng: np.random.Generator, shape: tuple[int, ...], a: float) -> np.ndarray:
    """Stationary AR(1) noise along axis 0 with unit variance and lag-1 correlation ``a``."""
    e = rng.normal(size=shape)
    out = np.empty(shape)
    out[0] = e[0]
    b = np.sqrt(1.0 - a * a)
    for k in range(1, shape[0]):
        out[k] = a * out[k - 1] + b * e[k]
    return out


def _hand_info(rng: np.random.Generator, T: int) -> np.ndarray:
    """Piecewise-constant (confidence, state) ``(T, 2)`` of one hand, as Kinect reports them."""
    choices = np.array([[1, 1], [0, 0], [1, 2], [1, 3], [0, 3], [0, 1]], dtype=np.float64)
    probs = np.array([0.55, 0.25, 0.06, 0.07, 0.04, 0.03])
    out = np.empty((T, 2))
    f = 0
    while f < T:
        n = int(rng.integers(10, 60))
        out[f : f + n] = choices[rng.choice(len(choices), p=probs)]
        f += n
    return out


def sensor_track(
    rng: np.random.Generator,
    P: np.ndarray,
    R: dict[int, np.ndarray],
    view: np.ndarray,
    shift: np.ndarray,
    noise: float,
    bias: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space joints ``(T, 25, 12)`` and body info ``(T, 9)`` of one person.

    ``P`` ``(T, 25, 3)`` and ``R`` (joint index -> ``(T, 3, 3)`` segment rotation) are the
    world-frame output of :func:`~skelmod.synth.kinematics.forward_kinematics`; ``view``
    ``(3, 3)`` and ``shift`` ``(3,)`` map world to camera space; ``noise`` is the jitter (m).
    ``bias`` is the factor ``k`` of the tracker's :func:`frontal_bias`, applied before the noise
    (1: none).
    """
    T = P.shape[0]
    xyz = frontal_bias(P @ view.T + shift, bias)
    scale = np.where(_EXTREMITIES, 2.5, np.where(_TORSO, 0.5, 1.0))
    rate = np.where(_EXTREMITIES, 0.25, np.where(_TORSO, 0.02, 0.1)) * rng.uniform(0.3, 2.0)
    inferred = _inferred_runs(rng, T, rate)
    sigma = noise * scale[None, :] * np.where(inferred, 2.0, 1.0)
    # Kinect smooths its estimates: mostly slow wobble (AR(1), ~5 frames), a little white noise.
    xyz = xyz + (_wobble(rng, xyz.shape, 0.8) + 0.2 * rng.normal(size=xyz.shape)) * sigma[..., None]
    for _ in range(rng.poisson(0.6)):  # tracking glitch: a hand or foot jumps away briefly
        g = _GLITCH_GROUPS[int(rng.integers(0, len(_GLITCH_GROUPS)))]
        start, n = int(rng.integers(0, T)), int(rng.integers(1, 7))
        d = rng.normal(size=3)
        xyz[start : start + n, g] += d / np.linalg.norm(d) * rng.uniform(0.05, 0.3)
        inferred[start : start + n, g] = True
    joints = np.zeros((T, layout.V, 12))
    joints[..., :3] = xyz
    joints[..., 3:7] = project(xyz)
    oriented = list(R)
    joints[:, oriented, 7:11] = quaternions(view @ np.stack([R[j] for j in oriented], axis=1))
    joints[..., 11] = np.where(inferred, 1.0, 2.0)
    up = xyz[:, JOINT["spine_shoulder"]] - xyz[:, JOINT["spine_base"]]
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    info = np.zeros((T, 9))
    info[:, 0] = rng.random() < 0.03  # clipedEdges
    info[:, 1:3] = _hand_info(rng, T)
    info[:, 3:5] = _hand_info(rng, T)
    info[:, 6] = np.clip(up[:, 0] + rng.normal(0, 0.02, T), -1, 1)  # leanX
    info[:, 7] = np.clip(-up[:, 2] + rng.normal(0, 0.02, T), -1, 1)  # leanY
    info[:, 8] = 2.0
    return joints, info


def noise_body(rng: np.random.Generator, T: int) -> tuple[int, np.ndarray, np.ndarray]:
    """An object mistaken for a body: a still blob of 25 points, 5..20 frames long.

    Returns its first frame (in ``0 .. T - 1``), joints ``(n, 25, 12)`` and body info ``(n, 9)``.
    """
    n = int(rng.integers(5, 21))
    first = int(rng.integers(0, T - n + 1))
    centre = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-0.8, 0.6), rng.uniform(2.0, 4.5)])
    blob = rng.normal(size=(layout.V, 3)) * rng.uniform(0.05, 0.3, 3)
    xyz = centre + blob[None] + rng.normal(0, 0.01, (n, layout.V, 3))
    joints = np.zeros((n, layout.V, 12))
    joints[..., :3] = xyz
    joints[..., 3:7] = project(xyz)
    q = rng.normal(size=(layout.V, 4))
    q[:, 0] = np.abs(q[:, 0])
    joints[..., 7:11] = q / np.linalg.norm(q, axis=1, keepdims=True)
    joints[:, _LEAF_JOINTS, 7:11] = 0.0
    joints[..., 11] = np.where(rng.random((n, layout.V)) < 0.7, 1.0, 2.0)
    info = np.zeros((n, 9))
    info[:, 6:8] = rng.uniform(-1, 1, 2)
    info[:, 8] = 2.0
    return first, joints, info
