"""Procedural NTU-format ``.skeleton`` files: a stand-in dataset when the real one is absent.

Each sample is one *performance* of a named action program (:data:`ACTIONS`) by a subject
whose body proportions are fixed per subject id, seen by one of three Kinect cameras:

1. **Motion**: joint-angle trajectories per action (random amplitude, timing, repetitions,
   side and speed; sequence length 30..300 frames at 30 fps) on top of an idle sway, turned
   into positions by forward kinematics on a rest skeleton with NTU's median bone lengths
   (measured on the real files), scaled per subject. Feet stay on the floor.
2. **Scene**: camera ``c`` in 1..3 looks from world yaw 0°, -45°, +45°; the performer faces
   -45° in replication 1 and +45° in replication 2, so camera 1 always sees a 45° view and
   cameras 2/3 see front or side views, as in NTU. Distance 2.7..4.3 m, camera height and tilt
   per setup; the whole scene is rotated about y (Kinect camera space: x right, y up, z depth).
3. **Sensor**: gaussian jitter (more on hands and feet), runs of ``trackingState`` 1
   ("inferred") joints, short tracking glitches of a hand or foot, now and then a new body id
   for the same person, empty leading frames, and in about 10 % of one-person samples a short
   object-like noise body. Interaction classes always have two persons.

The text layout is exactly ``reference-ikem.md`` §1.1; numbers are written with 7 significant
digits (``%.7G``), as Kinect's own files are. Names ``SsssCcccPpppRrrrAaaa`` follow §1.2, so
the cross-subject and cross-view splits of :mod:`skelmod.layout` apply.

Everything is deterministic in ``seed``: sample ``i`` of class ``k`` draws from
``SeedSequence([seed, k, i])``; subjects and setups draw from their own sequences. Asking for
more samples per class therefore leaves the earlier files byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skelmod import layout

from .errors import SkelmodError

__all__ = [
    "ACTIONS",
    "FPS",
    "Action",
    "BodyTrack",
    "SyntheticSample",
    "generate",
    "sample_rng",
    "synthesize_sample",
    "write_skeleton",
]

FPS = 30.0  #: Kinect v2 frame rate; action programs think in seconds
MIN_FRAMES = 30
MAX_FRAMES = layout.MAX_FRAMES
_BODY_ID_BASE = 72057594037927936  # 2**56: Kinect body ids look like 72057594037931101

# Median bone lengths of the real NTU files in ntu-real/ (metres, 6-view parents).
_REST_LENGTHS = {
    "spine_low": 0.261,  # spine base -> spine mid
    "spine_up": 0.195,  # spine mid -> spine shoulder
    "neck": 0.065,
    "head": 0.120,
    "shoulder": 0.137,  # spine shoulder -> shoulder
    "upper_arm": 0.221,
    "forearm": 0.210,
    "hand": 0.062,
    "hand_tip": 0.054,
    "thumb": 0.037,
    "hip": 0.065,  # spine base -> hip
    "thigh": 0.330,
    "shin": 0.345,
    "foot": 0.105,
}

# Kinect v2 projections fitted on the real files (px; residual < 0.6 px).
_DEPTH = (256.33, 366.93, 208.49, 366.77)  # cx, fx, cy, fy
_COLOR = (958.90, 1059.70, 61.52, 567.00, 1057.15)  # cx, fx, parallax, cy, fy

# Joints Kinect gives no orientation for (all-zero quaternion in the real files).
_LEAF_JOINTS = (3, 15, 19, 21, 22, 23, 24)
_HAND_GROUPS = ((6, 7, 21, 22), (10, 11, 23, 24))  # wrist, hand, tip, thumb (left, right)
_FOOT_GROUPS = ((14, 15), (18, 19))
_EXTREMITIES = np.zeros(layout.V, dtype=bool)
_EXTREMITIES[[7, 11, 15, 19, 21, 22, 23, 24]] = True
_TORSO = np.zeros(layout.V, dtype=bool)
_TORSO[[0, 1, 2, 20, 12, 16]] = True

_CAMERA_YAW = {1: 0.0, 2: -45.0, 3: 45.0}  # degrees, world yaw each camera looks from
_FACING_YAW = {1: -45.0, 2: 45.0}  # degrees, where the performer faces per replication

_SIDES = ("l", "r")
_ARM_DOFS = ("sh_flex", "sh_abd", "sh_horiz", "sh_twist", "elbow", "wrist")
_LEG_DOFS = ("hip_flex", "hip_abd", "knee", "ankle")
_ANGLE_DOFS = (
    "yaw",
    "pitch",
    "roll",
    "spine_flex",
    "spine_side",
    "spine_twist",
    "neck_flex",
    *(f"{s}_{d}" for s in _SIDES for d in _ARM_DOFS + _LEG_DOFS),
)
_DOFS = (*_ANGLE_DOFS, "x", "z", "air")  # angles in degrees, x/z/air in metres

Pose = dict[str, np.ndarray]


# --- action programs -------------------------------------------------------------------------
#
# A program adds joint-angle trajectories (degrees) to a neutral pose. ``t`` is time in
# seconds, ``u`` normalised time in [0, 1]. Body frame: x to the person's right, y up,
# z backwards (forward is -z). Flexion raises a limb forward, abduction sideways, ``horiz``
# swings a raised arm towards the midline; the left side is mirrored by the kinematics.


def _ramp(u: np.ndarray, a: float, b: float) -> np.ndarray:
    x = np.clip((u - a) / max(b - a, 1e-6), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _window(u: np.ndarray, rng: np.random.Generator, on=(0.05, 0.3), off=(0.65, 0.95)):
    """Smooth 0 -> 1 -> 0 envelope with random onset, offset and ramp length."""
    a, b = rng.uniform(*on), rng.uniform(*off)
    r = min(rng.uniform(0.08, 0.25), (b - a) / 2.5)
    return _ramp(u, a, a + r) * (1.0 - _ramp(u, b - r, b))


def _bumps(u: np.ndarray, centres: Iterable[float], width: float) -> np.ndarray:
    out = np.zeros_like(u)
    for c in centres:
        out = np.maximum(out, np.exp(-0.5 * ((u - c) / width) ** 2))
    return out


def _times(rng: np.random.Generator, n: int, lo=0.2, hi=0.8) -> np.ndarray:
    """``n`` sorted event times spread over [lo, hi] with jitter."""
    base = np.linspace(lo, hi, n + 2)[1:-1] if n > 1 else np.array([(lo + hi) / 2])
    step = (hi - lo) / (n + 1)
    return np.sort(base + rng.uniform(-0.3, 0.3, n) * step)


def _side(rng: np.random.Generator, p_right: float = 0.8) -> tuple[str, str]:
    return ("r", "l") if rng.random() < p_right else ("l", "r")


def _osc(t: np.ndarray, rng: np.random.Generator, f_lo: float, f_hi: float) -> np.ndarray:
    return np.sin(2 * np.pi * rng.uniform(f_lo, f_hi) * t + rng.uniform(0, 2 * np.pi))


def _waving(p: Pose, t, u, rng) -> None:
    s, _ = _side(rng, 0.85)
    w = _window(u, rng)
    osc = _osc(t, rng, 1.2, 3.0) * w
    if rng.random() < 0.7:  # forearm waving with the elbow out to the side
        p[f"{s}_sh_abd"] += w * rng.uniform(60, 100)
        p[f"{s}_sh_flex"] += w * rng.uniform(0, 35)
        p[f"{s}_sh_twist"] -= w * rng.uniform(70, 100)
        p[f"{s}_elbow"] += w * rng.uniform(50, 100) + osc * rng.uniform(15, 35)
    else:  # whole arm above the head
        p[f"{s}_sh_abd"] += w * rng.uniform(120, 160) + osc * rng.uniform(10, 25)
        p[f"{s}_elbow"] += w * rng.uniform(5, 40)
    p["spine_side"] += w * rng.uniform(-4, 4)


def _kicking(p: Pose, t, u, rng) -> None:
    s, o = _side(rng, 0.75)
    n = rng.integers(1, 3)
    centres = _times(rng, n, 0.25, 0.75)
    wdt = rng.uniform(0.04, 0.09)
    kick = _bumps(u, centres, wdt)
    wind = _bumps(u, centres - 1.5 * wdt, wdt)
    p[f"{s}_hip_flex"] += kick * rng.uniform(40, 85) - wind * rng.uniform(0, 15)
    p[f"{s}_knee"] += wind * rng.uniform(40, 90) + kick * rng.uniform(0, 20)
    p[f"{o}_knee"] += kick * rng.uniform(5, 20)
    p["pitch"] -= kick * rng.uniform(0, 12)
    for side in _SIDES:
        p[f"{side}_sh_abd"] += kick * rng.uniform(5, 30)


def _clapping(p: Pose, t, u, rng) -> None:
    w = _window(u, rng)
    osc = 0.5 * (1 + _osc(t, rng, 1.5, 4.0)) * w
    flex, elbow = rng.uniform(30, 80), rng.uniform(40, 90)
    horiz, amp = rng.uniform(2, 10), rng.uniform(6, 14)
    for s in _SIDES:
        p[f"{s}_sh_flex"] += w * (flex + rng.uniform(-5, 5))
        p[f"{s}_sh_horiz"] += w * horiz + osc * amp
        p[f"{s}_elbow"] += w * (elbow + rng.uniform(-5, 5))


def _squatting(p: Pose, t, u, rng) -> None:
    n = rng.integers(1, 3)
    w = np.zeros_like(u)
    edges = np.linspace(0.05, 0.95, n + 1)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        w = np.maximum(w, _window((u - a) / (b - a), rng))
    depth = rng.uniform(0.5, 1.0)
    for s in _SIDES:
        p[f"{s}_hip_flex"] += w * depth * rng.uniform(80, 110)
        p[f"{s}_knee"] += w * depth * rng.uniform(100, 130)
        p[f"{s}_ankle"] += w * depth * rng.uniform(10, 25)
    p["spine_flex"] += w * depth * rng.uniform(10, 40)
    if rng.random() < 0.5:  # arms forward for balance
        for s in _SIDES:
            p[f"{s}_sh_flex"] += w * depth * rng.uniform(50, 90)


def _punching(p: Pose, t, u, rng) -> None:
    w = _window(u, rng, on=(0.05, 0.2), off=(0.8, 0.95))
    guard = rng.uniform(0.3, 1.0)
    for s in _SIDES:  # fists up
        p[f"{s}_sh_flex"] += w * guard * rng.uniform(20, 45)
        p[f"{s}_elbow"] += w * guard * rng.uniform(90, 130)
        p[f"{s}_sh_horiz"] += w * guard * rng.uniform(5, 20)
    n = int(rng.integers(1, 6))
    centres = _times(rng, n, 0.25, 0.75)
    width = rng.uniform(0.02, 0.05)
    first, _ = _side(rng, 0.7)
    alternate = rng.random() < 0.6
    for k, c in enumerate(centres):
        s = first if (k % 2 == 0 or not alternate) else ("l" if first == "r" else "r")
        b = _bumps(u, [c], width)
        p[f"{s}_sh_flex"] += b * rng.uniform(50, 75)
        p[f"{s}_elbow"] -= b * guard * rng.uniform(80, 120)
        p["spine_twist"] += b * (10 if s == "r" else -10) * rng.uniform(0.3, 1.5)


def _jumping(p: Pose, t, u, rng) -> None:
    n = int(rng.integers(1, 5))
    centres = _times(rng, n, 0.2, 0.8)
    width = rng.uniform(0.025, 0.045) * (3.0 / max(n, 2))
    crouch = _bumps(u, np.concatenate([centres - 2 * width, centres + 2 * width]), width)
    flight = _bumps(u, centres, width)
    height = rng.uniform(0.08, 0.35)
    p["air"] += flight * height
    arms = rng.uniform(0, 150)
    for s in _SIDES:
        p[f"{s}_hip_flex"] += crouch * rng.uniform(30, 70) + flight * rng.uniform(0, 20)
        p[f"{s}_knee"] += crouch * rng.uniform(50, 100) + flight * rng.uniform(0, 30)
        p[f"{s}_sh_flex"] += flight * arms - crouch * rng.uniform(0, 30)
    p["spine_flex"] += crouch * rng.uniform(5, 25)


def _bowing(p: Pose, t, u, rng) -> None:
    w = _window(u, rng, on=(0.1, 0.35), off=(0.6, 0.9))
    p["spine_flex"] += w * rng.uniform(25, 60)
    p["pitch"] += w * rng.uniform(5, 25)
    p["neck_flex"] += w * rng.uniform(5, 30)
    if rng.random() < 0.4:  # hands together in front
        for s in _SIDES:
            p[f"{s}_sh_flex"] += w * rng.uniform(10, 30)
            p[f"{s}_sh_horiz"] += w * rng.uniform(20, 40)
            p[f"{s}_elbow"] += w * rng.uniform(20, 60)


def _arm_raise(p: Pose, t, u, rng) -> None:
    sides = _SIDES if rng.random() < 0.65 else (_side(rng, 0.7)[0],)
    sideways = rng.random() < 0.5
    n = int(rng.integers(1, 4))
    w = np.zeros_like(u)
    edges = np.linspace(0.05, 0.95, n + 1)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        w = np.maximum(w, _window((u - a) / (b - a), rng))
    height = rng.uniform(100, 170)
    for s in sides:
        p[f"{s}_sh_{'abd' if sideways else 'flex'}"] += w * height
        p[f"{s}_elbow"] += w * rng.uniform(0, 25)


def _walking(p: Pose, t, u, rng) -> None:
    w = _window(u, rng, on=(0.02, 0.2), off=(0.8, 0.98))
    phase = _osc(t, rng, 0.7, 1.4) * w
    hip, knee, arm = rng.uniform(20, 50), rng.uniform(35, 75), rng.uniform(10, 35)
    p["r_hip_flex"] += np.maximum(phase, 0) * hip
    p["l_hip_flex"] += np.maximum(-phase, 0) * hip
    p["r_knee"] += np.maximum(phase, 0) * knee
    p["l_knee"] += np.maximum(-phase, 0) * knee
    p["r_sh_flex"] -= phase * arm
    p["l_sh_flex"] += phase * arm
    p["r_elbow"] += w * rng.uniform(0, 30)
    p["l_elbow"] += w * rng.uniform(0, 30)
    p["spine_twist"] += phase * rng.uniform(0, 6)


def _turning(p: Pose, t, u, rng) -> None:
    angle = rng.choice([-1.0, 1.0]) * rng.uniform(90, 360)
    a, b = rng.uniform(0.05, 0.3), rng.uniform(0.65, 0.95)
    p["yaw"] += _ramp(u, a, b) * angle
    steps = _bumps(u, [(a + b) / 2], (b - a) / 3) * _osc(t, rng, 0.8, 1.6)
    amp = rng.uniform(5, 25)
    p["r_hip_flex"] += np.maximum(steps, 0) * amp
    p["l_hip_flex"] += np.maximum(-steps, 0) * amp
    p["r_knee"] += np.maximum(steps, 0) * 1.5 * amp
    p["l_knee"] += np.maximum(-steps, 0) * 1.5 * amp


def _sitting_down(p: Pose, t, u, rng) -> None:
    a = rng.uniform(0.1, 0.35)
    r = rng.uniform(0.12, 0.25)
    sit = _ramp(u, a, a + r)
    if rng.random() < 0.4:  # and stand up again
        b = rng.uniform(max(a + 2 * r, 0.6), 0.95)
        sit = sit * (1.0 - _ramp(u, b - r, b))
    p["pitch"] += _bumps(u, [a + r / 2], r / 2.5) * rng.uniform(15, 35)
    for s in _SIDES:
        p[f"{s}_hip_flex"] += sit * rng.uniform(75, 100)
        p[f"{s}_knee"] += sit * rng.uniform(75, 100)
        p[f"{s}_sh_flex"] += sit * rng.uniform(10, 40)  # hands on the thighs
        p[f"{s}_elbow"] += sit * rng.uniform(20, 60)
    p["spine_flex"] += sit * rng.uniform(-5, 15)


def _hand_to_head(p: Pose, t, u, rng) -> None:
    w = _window(u, rng)
    sides = _SIDES if rng.random() < 0.3 else (_side(rng, 0.75)[0],)
    for s in sides:
        p[f"{s}_sh_flex"] += w * rng.uniform(85, 115)
        p[f"{s}_sh_abd"] += w * rng.uniform(25, 55)
        p[f"{s}_sh_horiz"] += w * rng.uniform(0, 15)
        p[f"{s}_elbow"] += w * rng.uniform(120, 145)
    p["neck_flex"] += w * rng.uniform(5, 25)
    p["spine_flex"] += w * rng.uniform(0, 15)


def _hand_to_mouth(p: Pose, t, u, rng) -> None:
    s, _ = _side(rng, 0.8)
    w = _window(u, rng)
    sips = _bumps(u, _times(rng, int(rng.integers(1, 4)), 0.3, 0.7), rng.uniform(0.04, 0.1))
    p[f"{s}_sh_flex"] += w * rng.uniform(20, 40) + sips * rng.uniform(15, 35)
    p[f"{s}_sh_horiz"] += w * rng.uniform(10, 30)
    p[f"{s}_elbow"] += w * rng.uniform(90, 120) + sips * rng.uniform(15, 30)
    p["neck_flex"] -= sips * rng.uniform(5, 25)


# Interaction programs pose two persons facing each other and return their pelvis gap (m).


def _handshake(pa: Pose, pb: Pose, t, u, rng) -> float:
    shake = _osc(t, rng, 2.0, 4.0)
    for p in (pa, pb):
        w = _window(u, rng, on=(0.1, 0.35), off=(0.6, 0.9))
        p["r_sh_flex"] += w * rng.uniform(30, 60) + w * shake * rng.uniform(3, 10)
        p["r_sh_horiz"] += w * rng.uniform(0, 20)
        p["r_elbow"] += w * rng.uniform(25, 60)
        p["z"] -= w * rng.uniform(0.0, 0.15)
    return float(rng.uniform(0.85, 1.2))


def _pushing(pa: Pose, pb: Pose, t, u, rng) -> float:
    push = rng.uniform(0.35, 0.65)
    width = rng.uniform(0.05, 0.12)
    reach = _bumps(u, [push], width)
    w = _window(u, rng, on=(0.05, 0.25), off=(0.75, 0.95))
    for s in _SIDES:
        pa[f"{s}_sh_flex"] += w * rng.uniform(30, 50) + reach * rng.uniform(20, 40)
        pa[f"{s}_elbow"] += (w - reach).clip(0) * rng.uniform(60, 100)
    pa["z"] -= reach * rng.uniform(0.05, 0.2)
    pa["pitch"] += reach * rng.uniform(5, 15)
    shove = _ramp(u, push, push + rng.uniform(0.05, 0.15))
    pb["z"] += shove * rng.uniform(0.15, 0.45)
    pb["pitch"] -= _bumps(u, [push + width], width) * rng.uniform(5, 20)
    for s in _SIDES:
        pb[f"{s}_sh_abd"] += _bumps(u, [push + 1.5 * width], width) * rng.uniform(5, 40)
    return float(rng.uniform(0.65, 0.95))


def _hugging(pa: Pose, pb: Pose, t, u, rng) -> float:
    gap = float(rng.uniform(1.0, 1.4))
    close = float(rng.uniform(0.35, 0.5))
    w = _window(u, rng, on=(0.1, 0.3), off=(0.7, 0.92))
    for p in (pa, pb):
        p["z"] -= w * (gap - close) / 2
        p["spine_flex"] += w * rng.uniform(0, 15)
        for s in _SIDES:
            p[f"{s}_sh_flex"] += w * rng.uniform(60, 90)
            p[f"{s}_sh_abd"] += w * rng.uniform(10, 35)
            p[f"{s}_sh_horiz"] += w * rng.uniform(20, 45)
            p[f"{s}_elbow"] += w * rng.uniform(40, 80)
    return gap


@dataclass(frozen=True)
class Action:
    """One class of the synthetic dataset: ``persons`` is 1 or 2, ``seconds`` a typical length."""

    name: str
    persons: int
    seconds: float
    program: Callable


#: The action programs; class ``k`` (0-based label) is ``ACTIONS[k]`` and its files end in
#: ``A{k+1:03d}``. Interactions sit among the first ten so small ``classes`` still have some.
ACTIONS: tuple[Action, ...] = (
    Action("waving", 1, 2.5, _waving),
    Action("handshake", 2, 3.5, _handshake),
    Action("kicking", 1, 2.5, _kicking),
    Action("clapping", 1, 3.0, _clapping),
    Action("squatting", 1, 3.5, _squatting),
    Action("punching", 1, 3.0, _punching),
    Action("pushing", 2, 3.0, _pushing),
    Action("jumping", 1, 3.0, _jumping),
    Action("bowing", 1, 3.0, _bowing),
    Action("hugging", 2, 4.0, _hugging),
    Action("arm_raise", 1, 3.0, _arm_raise),
    Action("walking_in_place", 1, 4.0, _walking),
    Action("turning_around", 1, 3.5, _turning),
    Action("sitting_down", 1, 3.5, _sitting_down),
    Action("hand_to_head", 1, 3.0, _hand_to_head),
    Action("hand_to_mouth", 1, 3.0, _hand_to_mouth),
)


# --- bodies, kinematics ----------------------------------------------------------------------


def _subject_lengths(world_seed: int, subject: int) -> dict[str, float]:
    """Bone lengths of one subject: same ``(world_seed, subject)`` -> same body."""
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, 1_000_003, subject]))
    scale = float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.15))
    return {
        k: v * scale * float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12))
        for k, v in _REST_LENGTHS.items()
    }


def _setup_scene(world_seed: int, setup: int) -> tuple[float, float, float]:
    """Camera distance (m), height above the floor (m) and downward tilt (deg) of a setup."""
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, 1_000_033, setup]))
    return rng.uniform(3.0, 4.0), rng.uniform(0.65, 0.95), rng.uniform(0.0, 6.0)


def _rot(axis: int, deg: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(T, 3, 3)`` about x (0), y (1) or z (2) by ``deg`` degrees."""
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros((*a.shape, 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[..., axis, axis] = 1.0
    R[..., i, i] = c
    R[..., j, j] = c
    R[..., i, j] = -s
    R[..., j, i] = s
    return R


def _apply(R: np.ndarray, v) -> np.ndarray:
    return R @ np.asarray(v, dtype=np.float64)


def _kinematics(p: Pose, L: dict[str, float]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Forward kinematics in the body frame.

    Returns joint positions ``(T, 25, 3)`` with the lowest foot on the floor (y = 0), and the
    global segment rotation ``(T, 3, 3)`` each non-leaf joint's orientation comes from.
    """
    T = p["yaw"].shape[0]
    P = np.zeros((T, layout.V, 3))
    rot: dict[int, np.ndarray] = {}
    R_root = _rot(1, p["yaw"]) @ _rot(0, -p["pitch"]) @ _rot(2, p["roll"])
    half = {k: 0.5 * p[k] for k in ("spine_flex", "spine_side", "spine_twist")}
    R_spine = _rot(2, half["spine_side"]) @ _rot(0, -half["spine_flex"])
    R_spine = R_spine @ _rot(1, half["spine_twist"])
    R_low = R_root @ R_spine
    R_up = R_low @ R_spine
    R_neck = R_up @ _rot(0, -p["neck_flex"])
    P[:, 0] = np.stack([p["x"], np.zeros(T), p["z"]], axis=1)
    P[:, 1] = P[:, 0] + _apply(R_low, [0, L["spine_low"], 0])
    P[:, 20] = P[:, 1] + _apply(R_up, [0, L["spine_up"], 0])
    P[:, 2] = P[:, 20] + _apply(R_neck, [0, L["neck"], 0])
    P[:, 3] = P[:, 2] + _apply(R_neck, [0, L["head"], 0])
    rot.update({0: R_root, 1: R_low, 20: R_up, 2: R_neck})
    drop = np.radians(28.0)
    for s, sign, (sh, el, wr, ha, tip, th) in (
        ("l", -1.0, (4, 5, 6, 7, 21, 22)),
        ("r", 1.0, (8, 9, 10, 11, 23, 24)),
    ):
        offset = L["shoulder"] * np.array([sign * np.cos(drop), -np.sin(drop), 0.0])
        P[:, sh] = P[:, 20] + _apply(R_up, offset)
        R_ua = R_up @ _rot(1, sign * p[f"{s}_sh_horiz"]) @ _rot(2, sign * p[f"{s}_sh_abd"])
        R_ua = R_ua @ _rot(0, p[f"{s}_sh_flex"]) @ _rot(1, sign * p[f"{s}_sh_twist"])
        R_fa = R_ua @ _rot(0, p[f"{s}_elbow"])
        R_ha = R_fa @ _rot(0, p[f"{s}_wrist"])
        P[:, el] = P[:, sh] + _apply(R_ua, [0, -L["upper_arm"], 0])
        P[:, wr] = P[:, el] + _apply(R_fa, [0, -L["forearm"], 0])
        P[:, ha] = P[:, wr] + _apply(R_ha, [0, -L["hand"], 0])
        P[:, tip] = P[:, ha] + _apply(R_ha, [0, -L["hand_tip"], 0])
        thumb = np.array([-sign * 0.45, -0.55, -0.7])
        P[:, th] = P[:, ha] + _apply(R_ha, L["thumb"] * thumb / np.linalg.norm(thumb))
        rot.update({sh: R_up, el: R_ua, wr: R_fa, ha: R_ha})
    for s, sign, (hip, knee, ankle, foot) in (
        ("l", -1.0, (12, 13, 14, 15)),
        ("r", 1.0, (16, 17, 18, 19)),
    ):
        P[:, hip] = P[:, 0] + _apply(R_root, L["hip"] * np.array([sign * 0.88, -0.47, 0.0]))
        R_th = R_root @ _rot(2, sign * p[f"{s}_hip_abd"]) @ _rot(0, p[f"{s}_hip_flex"])
        R_sh = R_th @ _rot(0, -p[f"{s}_knee"])
        R_ft = R_sh @ _rot(0, p[f"{s}_ankle"])
        P[:, knee] = P[:, hip] + _apply(R_th, [0, -L["thigh"], 0])
        P[:, ankle] = P[:, knee] + _apply(R_sh, [0, -L["shin"], 0])
        P[:, foot] = P[:, ankle] + _apply(R_ft, L["foot"] * np.array([0.0, -0.3, -0.954]))
        rot.update({hip: R_root, knee: R_th, ankle: R_sh})
    # Keep the lowest foot on the floor, then lift by the jump height.
    floor = np.minimum(P[:, [14, 18], 1] - 0.08, P[:, [15, 19], 1] - 0.03).min(axis=1)
    P[:, :, 1] += (p["air"] - floor)[:, None]
    return P, rot


def _smooth_noise(t: np.ndarray, rng: np.random.Generator, amp: np.ndarray, f_hi: np.ndarray):
    """``(n, T)`` slow wiggles: three random sinusoids each, below ``f_hi`` Hz, std ~ ``amp``."""
    f = rng.uniform(0.05, 1.0, (len(amp), 3, 1)) * np.asarray(f_hi)[:, None, None]
    ph = rng.uniform(0, 2 * np.pi, (len(amp), 3, 1))
    return np.asarray(amp)[:, None] * np.sin(2 * np.pi * f * t + ph).sum(1) / 1.7


def _neutral_pose(t: np.ndarray, rng: np.random.Generator) -> Pose:
    """Standing at rest with a subject-like posture and a slow idle sway."""
    T = t.shape[0]
    p = {k: np.zeros(T) for k in _DOFS}
    arm_abd, elbow, knee = rng.uniform(4, 14), rng.uniform(5, 25), rng.uniform(0, 8)
    stance = rng.uniform(1, 7)
    for s in _SIDES:
        p[f"{s}_sh_abd"] += arm_abd + rng.uniform(-2, 2)
        p[f"{s}_elbow"] += elbow + rng.uniform(-4, 4)
        p[f"{s}_sh_flex"] += rng.uniform(-5, 10)
        p[f"{s}_knee"] += knee
        p[f"{s}_hip_abd"] += stance
    p["spine_flex"] += rng.uniform(-3, 10)
    p["neck_flex"] += rng.uniform(-5, 10)
    keys = (*_ANGLE_DOFS, "x", "z")
    amp = np.array([4.0 if k == "yaw" else 0.015 if k in ("x", "z") else 2.5 for k in keys])
    f_hi = np.array([0.3 if k == "yaw" else 0.4 if k in ("x", "z") else 0.8 for k in keys])
    for k, wiggle in zip(keys, _smooth_noise(t, rng, amp, f_hi), strict=True):
        p[k] += wiggle
    return p


def _quaternions(R: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(..., 4)`` as (w, x, y, z) with w >= 0 from rotations ``(..., 3, 3)``."""
    d0, d1, d2 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    q = 0.5 * np.sqrt(
        np.maximum(
            0.0,
            np.stack([1 + d0 + d1 + d2, 1 + d0 - d1 - d2, 1 - d0 + d1 - d2, 1 - d0 - d1 + d2], -1),
        )
    )
    q[..., 1] = np.copysign(q[..., 1], R[..., 2, 1] - R[..., 1, 2])
    q[..., 2] = np.copysign(q[..., 2], R[..., 0, 2] - R[..., 2, 0])
    q[..., 3] = np.copysign(q[..., 3], R[..., 1, 0] - R[..., 0, 1])
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


# --- sensor model ----------------------------------------------------------------------------


def _project(xyz: np.ndarray) -> np.ndarray:
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


@dataclass(frozen=True)
class BodyTrack:
    """One tracked body: present in frames ``first_frame .. first_frame + len(joints) - 1``.

    ``joints`` is ``(n, 25, 12)`` (x y z depthX depthY colorX colorY orientW..Z trackingState)
    and ``info`` ``(n, 9)`` (the 9 values after bodyID on the §1.1 body line). ``is_noise``
    marks an object mistaken for a body (ground truth for judging body-selection rules).
    """

    body_id: int
    first_frame: int
    joints: np.ndarray
    info: np.ndarray
    is_noise: bool = False

    @property
    def frames(self) -> range:
        return range(self.first_frame, self.first_frame + self.joints.shape[0])


@dataclass(frozen=True)
class SyntheticSample:
    """A generated sample; ``tracks`` are listed in this order within every frame (§1.1)."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int  #: 1-based, as in the file name
    frame_count: int
    tracks: tuple[BodyTrack, ...]

    @property
    def name(self) -> str:
        return (
            f"S{self.setup:03d}C{self.camera:03d}P{self.subject:03d}"
            f"R{self.replication:03d}A{self.action:03d}"
        )

    @property
    def label(self) -> int:
        return self.action - 1

    def bodies_per_frame(self) -> np.ndarray:
        """``(frame_count,)`` int: how many bodies each frame lists."""
        n = np.zeros(self.frame_count, dtype=np.int64)
        for tr in self.tracks:
            n[tr.first_frame : tr.first_frame + tr.joints.shape[0]] += 1
        return n

    def xyz(self, max_bodies: int = layout.M) -> np.ndarray:
        """``(3, frame_count, 25, max_bodies)`` float64 as ``read_xyz`` fills it (§1.1):
        body slot = listing position within the frame, later bodies dropped, absent = 0."""
        out = np.zeros((3, self.frame_count, layout.V, max_bodies))
        slot = np.zeros(self.frame_count, dtype=np.int64)
        for tr in self.tracks:
            fr = np.arange(tr.first_frame, tr.first_frame + tr.joints.shape[0])
            keep = slot[fr] < max_bodies
            out[:, fr[keep], :, slot[fr[keep]]] = tr.joints[keep, :, :3].transpose(0, 2, 1)
            slot[fr] += 1
        return out


def _sensor_track(
    rng: np.random.Generator,
    P: np.ndarray,
    R: dict[int, np.ndarray],
    view: np.ndarray,
    shift: np.ndarray,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space joints ``(T, 25, 12)`` and body info ``(T, 9)`` of one person."""
    T = P.shape[0]
    xyz = P @ view.T + shift
    scale = np.where(_EXTREMITIES, 2.5, np.where(_TORSO, 0.5, 1.0))
    rate = np.where(_EXTREMITIES, 0.25, np.where(_TORSO, 0.02, 0.1)) * rng.uniform(0.3, 2.0)
    inferred = _inferred_runs(rng, T, rate)
    sigma = noise * scale[None, :] * np.where(inferred, 2.0, 1.0)
    # Kinect smooths its estimates: mostly slow wobble (AR(1), ~5 frames), a little white noise.
    xyz = xyz + (_wobble(rng, xyz.shape, 0.8) + 0.2 * rng.normal(size=xyz.shape)) * sigma[..., None]
    for _ in range(rng.poisson(0.6)):  # tracking glitch: a hand or foot jumps away briefly
        groups = _HAND_GROUPS + _FOOT_GROUPS
        g = list(groups[int(rng.integers(0, len(groups)))])
        start, n = int(rng.integers(0, T)), int(rng.integers(1, 7))
        d = rng.normal(size=3)
        xyz[start : start + n, g] += d / np.linalg.norm(d) * rng.uniform(0.05, 0.3)
        inferred[start : start + n, g] = True
    joints = np.zeros((T, layout.V, 12))
    joints[..., :3] = xyz
    joints[..., 3:7] = _project(xyz)
    oriented = list(R)
    joints[:, oriented, 7:11] = _quaternions(view @ np.stack([R[j] for j in oriented], axis=1))
    joints[..., 11] = np.where(inferred, 1.0, 2.0)
    up = xyz[:, 20] - xyz[:, 0]
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    info = np.zeros((T, 9))
    info[:, 0] = rng.random() < 0.03  # clipedEdges
    info[:, 1:3] = _hand_info(rng, T)
    info[:, 3:5] = _hand_info(rng, T)
    info[:, 6] = np.clip(up[:, 0] + rng.normal(0, 0.02, T), -1, 1)  # leanX
    info[:, 7] = np.clip(-up[:, 2] + rng.normal(0, 0.02, T), -1, 1)  # leanY
    info[:, 8] = 2.0
    return joints, info


def _noise_body(rng: np.random.Generator, T: int) -> tuple[int, np.ndarray, np.ndarray]:
    """An object mistaken for a body: a still blob of 25 points, 5..20 frames long."""
    n = int(rng.integers(5, 21))
    first = int(rng.integers(0, T - n + 1))
    centre = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-0.8, 0.6), rng.uniform(2.0, 4.5)])
    blob = rng.normal(size=(layout.V, 3)) * rng.uniform(0.05, 0.3, 3)
    xyz = centre + blob[None] + rng.normal(0, 0.01, (n, layout.V, 3))
    joints = np.zeros((n, layout.V, 12))
    joints[..., :3] = xyz
    joints[..., 3:7] = _project(xyz)
    q = rng.normal(size=(layout.V, 4))
    q[:, 0] = np.abs(q[:, 0])
    joints[..., 7:11] = q / np.linalg.norm(q, axis=1, keepdims=True)
    joints[:, list(_LEAF_JOINTS), 7:11] = 0.0
    joints[..., 11] = np.where(rng.random((n, layout.V)) < 0.7, 1.0, 2.0)
    info = np.zeros((n, 9))
    info[:, 6:8] = rng.uniform(-1, 1, 2)
    info[:, 8] = 2.0
    return first, joints, info


def synthesize_sample(
    label: int,
    rng: np.random.Generator,
    *,
    setup: int = 1,
    camera: int = 1,
    subject: int = 1,
    replication: int = 1,
    world_seed: int = 0,
) -> SyntheticSample:
    """Generate one sample of class ``label`` (0-based index into :data:`ACTIONS`).

    ``rng`` drives the performance, the view jitter and the sensor noise; ``world_seed`` fixes
    the body of each subject id and the camera placement of each setup, so the same subject
    keeps its proportions across samples. ``camera`` is 1..3, ``replication`` 1..2.
    Returns a :class:`SyntheticSample` with ``frame_count`` in [30, 300].
    """
    if not 0 <= label < len(ACTIONS):
        raise ValueError(f"label {label} out of range: there are {len(ACTIONS)} actions (0-based)")
    if camera not in _CAMERA_YAW:
        raise ValueError(f"camera must be 1, 2 or 3, got {camera}")
    if replication not in _FACING_YAW:
        raise ValueError(f"replication must be 1 or 2, got {replication}")
    for what, v in (("setup", setup), ("subject", subject)):
        if not 1 <= v <= 999:
            raise ValueError(f"{what} must be in 1..999 to fit the 3-digit name, got {v}")
    action = ACTIONS[label]
    seconds = action.seconds * float(np.exp(rng.normal(0.0, 0.35)))
    T = int(np.clip(round(seconds * FPS), MIN_FRAMES, MAX_FRAMES))
    t = np.arange(T) / FPS
    u = np.linspace(0.0, 1.0, T)

    # Performance, in world coordinates (floor y = 0, the person or pair centred at the origin).
    poses = [_neutral_pose(t, rng) for _ in range(action.persons)]
    lengths = [_subject_lengths(world_seed, subject)]
    if action.persons == 1:
        action.program(poses[0], t, u, rng)
        places = [(0.0, 0.0)]
    else:
        gap = action.program(poses[0], poses[1], t, u, rng)
        partner = int(rng.integers(1, 1000))
        lengths.append(_subject_lengths(world_seed, partner))
        face = rng.normal(0.0, 10.0, 2)
        places = [(-90.0 + face[0], -gap / 2), (90.0 + face[1], gap / 2)]
    persons = []
    for p, L, (yaw, x0) in zip(poses, lengths, places, strict=True):
        P, R = _kinematics(p, L)
        Ry = _rot(1, np.array(yaw))
        P = P @ Ry.T + np.array([x0, 0.0, 0.0])
        persons.append((P, {j: Ry @ Rj for j, Rj in R.items()}))

    # Camera: rotate the scene about y by the view yaw, place it in front of the camera, then
    # tilt the camera down (points further away appear higher).
    distance, height, tilt = _setup_scene(world_seed, setup)
    yaw = _FACING_YAW[replication] - _CAMERA_YAW[camera] + rng.normal(0.0, 8.0)
    R_tilt = _rot(0, np.array(-tilt - rng.normal(0.0, 1.0)))
    view = R_tilt @ _rot(1, np.array(yaw))
    shift = R_tilt @ np.array(
        [
            rng.uniform(-0.5, 0.5),
            -height + rng.normal(0.0, 0.03),
            distance + rng.uniform(-0.3, 0.3),
        ]
    )
    noise = rng.uniform(0.002, 0.006)
    base_id = _BODY_ID_BASE + int(rng.integers(1000, 90000))
    tracks: list[BodyTrack] = []
    for P, R in persons:
        joints, info = _sensor_track(rng, P, R, view, shift, noise)
        tracks.append(BodyTrack(base_id + len(tracks) * int(rng.integers(1, 60)), 0, joints, info))

    # Sensor hiccups: empty leading frames, a re-acquired track with a new id, a noise body.
    if action.persons == 1:
        tr = tracks[0]
        if rng.random() < 0.03:
            k = int(rng.integers(1, 6))
            tr = BodyTrack(tr.body_id, k, tr.joints[k:], tr.info[k:])
        tracks = [tr]
        if rng.random() < 0.04:
            cut = int(rng.integers(T // 3, 2 * T // 3))
            gap = int(rng.integers(0, 4))
            a = cut - tr.first_frame
            tracks = [
                BodyTrack(tr.body_id, tr.first_frame, tr.joints[:a], tr.info[:a]),
                BodyTrack(tr.body_id + 1, cut + gap, tr.joints[a + gap :], tr.info[a + gap :]),
            ]
        if rng.random() < 0.10:
            first, joints, info = _noise_body(rng, T)
            noise_id = base_id + 100 + int(rng.integers(0, 50))
            noise_track = BodyTrack(noise_id, first, joints, info, is_noise=True)
            tracks.insert(0 if rng.random() < 0.25 else len(tracks), noise_track)
    return SyntheticSample(setup, camera, subject, replication, label + 1, T, tuple(tracks))


# --- writing ---------------------------------------------------------------------------------

_JOINT_FMT = "\n".join([" ".join(["%.7G"] * 12)] * layout.V)
_INFO_FMT = " ".join(["%.7G"] * 9)


def write_skeleton(path: str | Path, sample: SyntheticSample, *, crlf: bool = False) -> None:
    """Write ``sample`` as an NTU ``.skeleton`` text file (§1.1), LF line ends unless ``crlf``.

    Numbers have 7 significant digits (``%.7G``, no ``-0``), body ids are written exactly.
    """
    blocks: list[list[str]] = [[] for _ in range(sample.frame_count)]
    for tr in sample.tracks:
        if tr.joints.shape[1:] != (layout.V, 12) or tr.info.shape != (tr.joints.shape[0], 9):
            raise ValueError(
                f"body {tr.body_id}: expected joints (n, 25, 12) and info (n, 9), "
                f"found {tr.joints.shape} and {tr.info.shape}"
            )
        if tr.first_frame < 0 or tr.first_frame + tr.joints.shape[0] > sample.frame_count:
            raise ValueError(
                f"body {tr.body_id} spans frames {tr.first_frame}.."
                f"{tr.first_frame + tr.joints.shape[0] - 1}, outside 0..{sample.frame_count - 1}"
            )
        joints = (tr.joints + 0.0).reshape(len(tr.joints), -1).tolist()
        info = (tr.info + 0.0).tolist()
        head = f"{tr.body_id} "
        for k, f in enumerate(tr.frames):
            blocks[f].append(
                head + _INFO_FMT % tuple(info[k]) + "\n25\n" + _JOINT_FMT % tuple(joints[k])
            )
    lines = [str(sample.frame_count)]
    for bodies in blocks:
        lines.append(str(len(bodies)))
        lines.extend(bodies)
    text = "\n".join(lines) + "\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    Path(path).write_bytes(text.encode("ascii"))


# --- dataset ---------------------------------------------------------------------------------


def sample_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of class ``label``: independent of how many are made."""
    return np.random.default_rng(np.random.SeedSequence([seed, label, index]))


def _name_table(
    seed: int, label: int, setups: tuple[int, ...], subjects: tuple[int, ...]
) -> np.ndarray:
    """A fixed shuffle of all (setup, subject, replication) triples of one class."""
    grid = np.array(
        [(s, p, r) for s in setups for p in subjects for r in (1, 2)], dtype=np.int64
    ).reshape(-1, 3)
    rng = np.random.default_rng(np.random.SeedSequence([seed, label, 1_000_037]))
    return grid[rng.permutation(len(grid))]


def generate(
    out_dir: str | Path,
    classes: int,
    per_class: int,
    seed: int,
    *,
    subjects: Iterable[int] = tuple(range(1, 41)),
    cameras: int = 3,
    setups: Iterable[int] = tuple(range(1, 18)),
    crlf: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``classes * per_class`` files ``SsssCcccPpppRrrrAaaa.skeleton`` into ``out_dir``.

    Classes are the first ``classes`` entries of :data:`ACTIONS` (action id = label + 1).
    Sample ``i`` of a class uses camera ``i % cameras + 1`` and the ``i // cameras``-th entry
    of a seeded shuffle of (setup, subject, replication), so names are unique and subjects and
    cameras are spread over the xsub/xview train and val sets (default subjects 1..40 and
    setups 1..17 are NTU-60's). ``progress(done, total)`` is called after each file.
    Returns the paths written, class by class.
    """
    if not 1 <= classes <= len(ACTIONS):
        raise SkelmodError(
            f"classes must be in 1..{len(ACTIONS)} (the action programs), got {classes}",
            param="classes",
        )
    if per_class < 1:
        raise SkelmodError(f"per_class must be at least 1, got {per_class}", param="per_class")
    if not 1 <= cameras <= 3:
        raise SkelmodError(f"cameras must be 1, 2 or 3, got {cameras}", param="cameras")
    subjects, setups = tuple(sorted(set(subjects))), tuple(sorted(set(setups)))
    for what, ids in (("subjects", subjects), ("setups", setups)):
        if not ids or ids[0] < 1 or ids[-1] > 999:
            raise SkelmodError(
                f"{what} must be a non-empty set of ids in 1..999, got {ids}", param=what
            )
    capacity = cameras * 2 * len(subjects) * len(setups)
    if per_class > capacity:
        raise SkelmodError(
            f"per_class {per_class} exceeds the {capacity} distinct names that {cameras} cameras, "
            f"2 replications, {len(subjects)} subjects and {len(setups)} setups allow",
            param="per_class",
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    total = classes * per_class
    for label in range(classes):
        table = _name_table(seed, label, setups, subjects)
        for i in range(per_class):
            setup, subject, replication = (int(v) for v in table[i // cameras])
            sample = synthesize_sample(
                label,
                sample_rng(seed, label, i),
                setup=setup,
                camera=i % cameras + 1,
                subject=subject,
                replication=replication,
                world_seed=seed,
            )
            path = out / f"{sample.name}.skeleton"
            write_skeleton(path, sample, crlf=crlf)
            paths.append(path)
            if progress is not None:
                progress(len(paths), total)
    return paths
