"""Action programs: what a performer of each synthetic class does over time.

A program adds joint-angle trajectories (degrees; the degrees of freedom of
:mod:`skelmod.synth.kinematics`) to a :func:`neutral_pose`. ``t`` is time in seconds, ``u``
normalised time in [0, 1], ``rng`` draws the performance (amplitude, timing, repetitions,
side, speed). One-person programs return nothing; interaction programs pose two persons
facing each other and return their pelvis gap (m). :data:`ACTIONS` lists the classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .kinematics import ANGLE_DOFS, DOFS, SIDES, Pose

__all__ = ["ACTIONS", "Action", "Style", "neutral_pose", "subject_style"]


# --- envelopes -------------------------------------------------------------------------------


def _ramp(u: np.ndarray, a: float, b: float) -> np.ndarray:
    x = np.clip((u - a) / max(b - a, 1e-6), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _window(u: np.ndarray, rng: np.random.Generator, on=(0.05, 0.3), off=(0.65, 0.95)):
    """Smooth 0 -> 1 -> 0 envelope with random onset, offset and ramp length."""
    a, b = rng.uniform(*on), rng.uniform(*off)
    r = min(rng.uniform(0.08, 0.25), (b - a) / 2.5)
    return _ramp(u, a, a + r) * (1.0 - _ramp(u, b - r, b))


def _repeats(u: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` envelopes (:func:`_window`) one after another over equal parts of [0.05, 0.95]."""
    w = np.zeros_like(u)
    edges = np.linspace(0.05, 0.95, n + 1)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        w = np.maximum(w, _window((u - a) / (b - a), rng))
    return w


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


# --- standing still --------------------------------------------------------------------------


def _smooth_noise(t: np.ndarray, rng: np.random.Generator, amp: np.ndarray, f_hi: np.ndarray):
    """``(n, T)`` slow wiggles: three random sinusoids each, below ``f_hi`` Hz, std ~ ``amp``."""
    f = rng.uniform(0.05, 1.0, (len(amp), 3, 1)) * np.asarray(f_hi)[:, None, None]
    ph = rng.uniform(0, 2 * np.pi, (len(amp), 3, 1))
    return np.asarray(amp)[:, None] * np.sin(2 * np.pi * f * t + ph).sum(1) / 1.7


@dataclass(frozen=True)
class Style:
    """How one subject moves, the same in all their samples (:func:`subject_style`).

    ``restless`` scales the idle sway and fidgeting of :func:`neutral_pose` (people differ:
    some stand still, some shift their weight, look around and move their free hands);
    ``tempo`` stretches the duration of every action they perform.
    """

    restless: float
    tempo: float


#: The amplitude of the idle sway and fidgeting at ``restless = 1``: body yaw and every joint
#: angle (degrees), floor position (m); and the highest frequency of the joint angles (Hz).
IDLE_ANGLE, IDLE_SHIFT, IDLE_HZ = 9.0, 0.035, 1.2


def subject_style(world_seed: int, subject: int) -> Style:
    """The :class:`Style` of one subject: same ``(world_seed, subject)`` -> same style.

    ``restless`` is uniform in [0.6, 1.6]; ``tempo`` log-normal (sigma 0.15) around 1.
    """
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, 1_000_039, subject]))
    return Style(restless=float(rng.uniform(0.6, 1.6)), tempo=float(np.exp(rng.normal(0, 0.15))))


def neutral_pose(t: np.ndarray, rng: np.random.Generator, restless: float = 1.0) -> Pose:
    """Standing at rest with a subject-like posture, an idle sway and fidgeting: smooth
    random motion of the body yaw, the floor position and every joint angle, of amplitude
    ``restless`` times :data:`IDLE_ANGLE` / :data:`IDLE_SHIFT`, below :data:`IDLE_HZ`."""
    T = t.shape[0]
    p = {k: np.zeros(T) for k in DOFS}
    arm_abd, elbow, knee = rng.uniform(4, 14), rng.uniform(5, 25), rng.uniform(0, 8)
    stance = rng.uniform(1, 7)
    for s in SIDES:
        p[f"{s}_sh_abd"] += arm_abd + rng.uniform(-2, 2)
        p[f"{s}_elbow"] += elbow + rng.uniform(-4, 4)
        p[f"{s}_sh_flex"] += rng.uniform(-5, 10)
        p[f"{s}_knee"] += knee
        p[f"{s}_hip_abd"] += stance
    p["spine_flex"] += rng.uniform(-3, 10)
    p["neck_flex"] += rng.uniform(-5, 10)
    keys = (*ANGLE_DOFS, "x", "z")
    amp = restless * np.array([IDLE_SHIFT if k in ("x", "z") else IDLE_ANGLE for k in keys])
    f_hi = np.array([0.3 if k == "yaw" else 0.4 if k in ("x", "z") else IDLE_HZ for k in keys])
    for k, wiggle in zip(keys, _smooth_noise(t, rng, amp, f_hi), strict=True):
        p[k] += wiggle
    return p


# --- one person ------------------------------------------------------------------------------


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
    for side in SIDES:
        p[f"{side}_sh_abd"] += kick * rng.uniform(5, 30)


def _clapping(p: Pose, t, u, rng) -> None:
    w = _window(u, rng)
    osc = 0.5 * (1 + _osc(t, rng, 1.5, 4.0)) * w
    flex, elbow = rng.uniform(30, 80), rng.uniform(40, 90)
    horiz, amp = rng.uniform(2, 10), rng.uniform(6, 14)
    for s in SIDES:
        p[f"{s}_sh_flex"] += w * (flex + rng.uniform(-5, 5))
        p[f"{s}_sh_horiz"] += w * horiz + osc * amp
        p[f"{s}_elbow"] += w * (elbow + rng.uniform(-5, 5))


def _squatting(p: Pose, t, u, rng) -> None:
    n = rng.integers(1, 3)
    w = _repeats(u, rng, n)
    depth = rng.uniform(0.5, 1.0)
    for s in SIDES:
        p[f"{s}_hip_flex"] += w * depth * rng.uniform(80, 110)
        p[f"{s}_knee"] += w * depth * rng.uniform(100, 130)
        p[f"{s}_ankle"] += w * depth * rng.uniform(10, 25)
    p["spine_flex"] += w * depth * rng.uniform(10, 40)
    if rng.random() < 0.5:  # arms forward for balance
        for s in SIDES:
            p[f"{s}_sh_flex"] += w * depth * rng.uniform(50, 90)


def _punching(p: Pose, t, u, rng) -> None:
    w = _window(u, rng, on=(0.05, 0.2), off=(0.8, 0.95))
    guard = rng.uniform(0.3, 1.0)
    for s in SIDES:  # fists up
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
    for s in SIDES:
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
        for s in SIDES:
            p[f"{s}_sh_flex"] += w * rng.uniform(10, 30)
            p[f"{s}_sh_horiz"] += w * rng.uniform(20, 40)
            p[f"{s}_elbow"] += w * rng.uniform(20, 60)


def _arm_raise(p: Pose, t, u, rng) -> None:
    sides = SIDES if rng.random() < 0.65 else (_side(rng, 0.7)[0],)
    sideways = rng.random() < 0.5
    n = int(rng.integers(1, 4))
    w = _repeats(u, rng, n)
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
    for s in SIDES:
        p[f"{s}_hip_flex"] += sit * rng.uniform(75, 100)
        p[f"{s}_knee"] += sit * rng.uniform(75, 100)
        p[f"{s}_sh_flex"] += sit * rng.uniform(10, 40)  # hands on the thighs
        p[f"{s}_elbow"] += sit * rng.uniform(20, 60)
    p["spine_flex"] += sit * rng.uniform(-5, 15)


def _hand_to_head(p: Pose, t, u, rng) -> None:
    w = _window(u, rng)
    sides = SIDES if rng.random() < 0.3 else (_side(rng, 0.75)[0],)
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


# --- two persons -----------------------------------------------------------------------------


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
    for s in SIDES:
        pa[f"{s}_sh_flex"] += w * rng.uniform(30, 50) + reach * rng.uniform(20, 40)
        pa[f"{s}_elbow"] += (w - reach).clip(0) * rng.uniform(60, 100)
    pa["z"] -= reach * rng.uniform(0.05, 0.2)
    pa["pitch"] += reach * rng.uniform(5, 15)
    shove = _ramp(u, push, push + rng.uniform(0.05, 0.15))
    pb["z"] += shove * rng.uniform(0.15, 0.45)
    pb["pitch"] -= _bumps(u, [push + width], width) * rng.uniform(5, 20)
    for s in SIDES:
        pb[f"{s}_sh_abd"] += _bumps(u, [push + 1.5 * width], width) * rng.uniform(5, 40)
    return float(rng.uniform(0.65, 0.95))


def _hugging(pa: Pose, pb: Pose, t, u, rng) -> float:
    gap = float(rng.uniform(1.0, 1.4))
    close = float(rng.uniform(0.35, 0.5))
    w = _window(u, rng, on=(0.1, 0.3), off=(0.7, 0.92))
    for p in (pa, pb):
        p["z"] -= w * (gap - close) / 2
        p["spine_flex"] += w * rng.uniform(0, 15)
        for s in SIDES:
            p[f"{s}_sh_flex"] += w * rng.uniform(60, 90)
            p[f"{s}_sh_abd"] += w * rng.uniform(10, 35)
            p[f"{s}_sh_horiz"] += w * rng.uniform(20, 45)
            p[f"{s}_elbow"] += w * rng.uniform(40, 80)
    return gap


@dataclass(frozen=True)
class Action:
    """One class of the synthetic dataset: ``persons`` is 1 or 2, ``seconds`` a typical length.

    ``program(pose, t, u, rng)`` (one person) or ``program(pose_a, pose_b, t, u, rng) -> gap``
    (two persons) adds the action to neutral poses in place.
    """

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
