"""The synthetic performer's body: pose degrees of freedom, subject proportions, forward
kinematics and segment orientations.

A *pose* maps every degree of freedom in :data:`DOFS` to a ``(T,)`` trajectory: angles in
degrees, ``x``/``z`` (floor position) and ``air`` (jump height) in metres. Body frame: x to
the person's right, y up, z backwards (forward is -z). Flexion raises a limb forward,
abduction sideways, ``horiz`` swings a raised arm towards the midline; the left side is
mirrored here, so action programs write both sides with the same signs.

Joints are addressed by their :data:`skelmod.layout.JOINT_NAMES` (NTU order, index = id - 1).
"""

from __future__ import annotations

import numpy as np

from skelmod import layout

#: Index of each NTU joint by its name in :data:`skelmod.layout.JOINT_NAMES`.
JOINT = {name: i for i, name in enumerate(layout.JOINT_NAMES)}

# Median bone lengths of the real NTU files in ntu-real/ (metres, 6-view parents).
REST_LENGTHS = {
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

#: Pose prefixes of the two sides and the joint-name prefix and mirror sign of each.
SIDES = ("l", "r")
_SIDE_JOINTS = (("l", "left", -1.0), ("r", "right", 1.0))
_ARM_DOFS = ("sh_flex", "sh_abd", "sh_horiz", "sh_twist", "elbow", "wrist")
_LEG_DOFS = ("hip_flex", "hip_abd", "knee", "ankle")
#: The angle degrees of freedom (degrees).
ANGLE_DOFS = (
    "yaw",
    "pitch",
    "roll",
    "spine_flex",
    "spine_side",
    "spine_twist",
    "neck_flex",
    *(f"{s}_{d}" for s in SIDES for d in _ARM_DOFS + _LEG_DOFS),
)
#: Every degree of freedom of a pose: the angles, then x, z and air (metres).
DOFS = (*ANGLE_DOFS, "x", "z", "air")

Pose = dict[str, np.ndarray]


def subject_lengths(world_seed: int, subject: int) -> dict[str, float]:
    """Bone lengths of one subject: same ``(world_seed, subject)`` -> same body."""
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, 1_000_003, subject]))
    scale = float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.15))
    return {
        k: v * scale * float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12))
        for k, v in REST_LENGTHS.items()
    }


def rot(axis: int, deg: np.ndarray) -> np.ndarray:
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


def forward_kinematics(p: Pose, L: dict[str, float]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Joint positions of pose ``p`` on a body with bone lengths ``L``, in the body frame.

    Returns positions ``(T, 25, 3)`` with the lowest foot on the floor (y = 0), and the global
    segment rotation ``(T, 3, 3)`` each non-leaf joint's orientation comes from (by joint index).
    """
    J = JOINT
    T = p["yaw"].shape[0]
    P = np.zeros((T, layout.V, 3))
    rot_of: dict[int, np.ndarray] = {}
    R_root = rot(1, p["yaw"]) @ rot(0, -p["pitch"]) @ rot(2, p["roll"])
    half = {k: 0.5 * p[k] for k in ("spine_flex", "spine_side", "spine_twist")}
    R_spine = rot(2, half["spine_side"]) @ rot(0, -half["spine_flex"])
    R_spine = R_spine @ rot(1, half["spine_twist"])
    R_low = R_root @ R_spine
    R_up = R_low @ R_spine
    R_neck = R_up @ rot(0, -p["neck_flex"])
    base, mid, top = J["spine_base"], J["spine_mid"], J["spine_shoulder"]
    P[:, base] = np.stack([p["x"], np.zeros(T), p["z"]], axis=1)
    P[:, mid] = P[:, base] + _apply(R_low, [0, L["spine_low"], 0])
    P[:, top] = P[:, mid] + _apply(R_up, [0, L["spine_up"], 0])
    P[:, J["neck"]] = P[:, top] + _apply(R_neck, [0, L["neck"], 0])
    P[:, J["head"]] = P[:, J["neck"]] + _apply(R_neck, [0, L["head"], 0])
    rot_of.update({base: R_root, mid: R_low, top: R_up, J["neck"]: R_neck})
    drop = np.radians(28.0)
    for s, side, sign in _SIDE_JOINTS:
        sh, el, wr, ha, tip, th = (
            J[f"{side}_{j}"] for j in ("shoulder", "elbow", "wrist", "hand", "hand_tip", "thumb")
        )
        offset = L["shoulder"] * np.array([sign * np.cos(drop), -np.sin(drop), 0.0])
        P[:, sh] = P[:, top] + _apply(R_up, offset)
        R_ua = R_up @ rot(1, sign * p[f"{s}_sh_horiz"]) @ rot(2, sign * p[f"{s}_sh_abd"])
        R_ua = R_ua @ rot(0, p[f"{s}_sh_flex"]) @ rot(1, sign * p[f"{s}_sh_twist"])
        R_fa = R_ua @ rot(0, p[f"{s}_elbow"])
        R_ha = R_fa @ rot(0, p[f"{s}_wrist"])
        P[:, el] = P[:, sh] + _apply(R_ua, [0, -L["upper_arm"], 0])
        P[:, wr] = P[:, el] + _apply(R_fa, [0, -L["forearm"], 0])
        P[:, ha] = P[:, wr] + _apply(R_ha, [0, -L["hand"], 0])
        P[:, tip] = P[:, ha] + _apply(R_ha, [0, -L["hand_tip"], 0])
        thumb = np.array([-sign * 0.45, -0.55, -0.7])
        P[:, th] = P[:, ha] + _apply(R_ha, L["thumb"] * thumb / np.linalg.norm(thumb))
        rot_of.update({sh: R_up, el: R_ua, wr: R_fa, ha: R_ha})
    for s, side, sign in _SIDE_JOINTS:
        hip, knee, ankle, foot = (J[f"{side}_{j}"] for j in ("hip", "knee", "ankle", "foot"))
        P[:, hip] = P[:, base] + _apply(R_root, L["hip"] * np.array([sign * 0.88, -0.47, 0.0]))
        R_th = R_root @ rot(2, sign * p[f"{s}_hip_abd"]) @ rot(0, p[f"{s}_hip_flex"])
        R_sh = R_th @ rot(0, -p[f"{s}_knee"])
        R_ft = R_sh @ rot(0, p[f"{s}_ankle"])
        P[:, knee] = P[:, hip] + _apply(R_th, [0, -L["thigh"], 0])
        P[:, ankle] = P[:, knee] + _apply(R_sh, [0, -L["shin"], 0])
        P[:, foot] = P[:, ankle] + _apply(R_ft, L["foot"] * np.array([0.0, -0.3, -0.954]))
        rot_of.update({hip: R_root, knee: R_th, ankle: R_sh})
    # Keep the lowest foot on the floor, then lift by the jump height.
    ankles = [J["left_ankle"], J["right_ankle"]]
    feet = [J["left_foot"], J["right_foot"]]
    floor = np.minimum(P[:, ankles, 1] - 0.08, P[:, feet, 1] - 0.03).min(axis=1)
    P[:, :, 1] += (p["air"] - floor)[:, None]
    return P, rot_of


def quaternions(R: np.ndarray) -> np.ndarray:
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
