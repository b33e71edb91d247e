"""The NTU RGB+D skeleton layout, stated once for the whole project.

Array conventions (``decisions.md``, Conventions):

* a batch is ``(N, C, T, V, M)``: C=3 coordinates (x, y, z in metres, Kinect
  camera space, y up), T frames (50 by default), V=25 NTU joints, M=2 bodies;
* a single sample is ``(C, T, V, M)``;
* joint ids are **1-based** in docs (NTU numbering) and **0-based** in code:
  array index = id - 1.

Everything that depends on the NTU joint numbering (bone parents, rotation-axis
partners, graph edges, the joints used by preprocessing) and the benchmark id
lists (``reference-ikem.md`` §1.2) lives here and nowhere else.
"""

from __future__ import annotations

import numpy as np

C = 3  #: coordinates per joint (x, y, z)
V = 25  #: joints of the NTU-25 skeleton (Kinect v2)
M = 2  #: bodies kept per sample
T_TARGET = 50  #: frames per sample after temporal resizing (§2.5)
MAX_FRAMES = 300  #: longest NTU sequence (§1.2); longer files still convert (fix of bug 26)

#: NTU joint names, index = id - 1.
JOINT_NAMES = (
    "spine_base", "spine_mid", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
    "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
)  # fmt: skip

# 0-based indices of the joints preprocessing and the modalities single out.
SPINE_BASE = 0  #: joint 1, used for the valid length L (§2.3)
SPINE_MID = 1  #: joint 2, torso normal (§4)
LEFT_SHOULDER = 4  #: joint 5, yaw alignment (§2.6) and torso normal (§4)
RIGHT_SHOULDER = 8  #: joint 9, yaw alignment (§2.6) and torso normal (§4)
SPINE_SHOULDER = 20  #: joint 21, centring (§2.4), graph centre (§5), torso-normal slot (§4)


def _zero_based(pairs_1based: dict[int, int]) -> np.ndarray:
    out = np.empty(V, dtype=np.int64)
    for child, parent in pairs_1based.items():
        out[child - 1] = parent - 1
    return out


_COMMON_PARENTS_1B = {
    1: 2, 2: 21, 3: 21, 4: 3, 5: 21, 6: 5, 7: 6, 8: 7, 9: 21, 10: 9,
    11: 10, 12: 11, 13: 1, 14: 13, 15: 14, 16: 15, 17: 1, 18: 17, 19: 18, 20: 19,
    21: 21,
}  # fmt: skip

#: Bone parents p(i) of the 6-view model (§4): hand tip and thumb both attach to the hand.
BONE_PARENTS_6V = _zero_based({**_COMMON_PARENTS_1B, 22: 8, 23: 8, 24: 12, 25: 12})
#: Bone parents of the 3-view model, CrosSCLR and the ST-GCN graph (§4): 22->23->8, 24->25->12.
BONE_PARENTS_3V = _zero_based({**_COMMON_PARENTS_1B, 22: 23, 23: 8, 24: 25, 25: 12})
#: Rotation-axis partners q(i), the "25 hinge joints" (§4).
AXIS_PARTNERS = _zero_based({**_COMMON_PARENTS_1B, 22: 8, 23: 22, 24: 12, 25: 24})

#: Undirected edges of the ST-GCN graph (§5), 0-based; self-loops are added by the graph code.
GRAPH_EDGES = tuple(
    (a - 1, b - 1)
    for a, b in (
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
        (19, 18), (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
    )
)  # fmt: skip
GRAPH_CENTER = SPINE_SHOULDER

#: The six modalities in canonical order (§4; the paper's J, Vel, Acc, B, R, Ω).
MODALITY_NAMES = (
    "joint", "velocity", "acceleration", "bone", "rotation_axis", "angular_velocity",
)  # fmt: skip

# --- benchmarks (§1.2) ----------------------------------------------------------------------

#: NTU-60 cross-subject training subjects.
XSUB60_TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
)
#: NTU-120 cross-subject training subjects: the 20 above plus 33 more.
XSUB120_TRAIN_SUBJECTS = XSUB60_TRAIN_SUBJECTS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85,
     86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
)  # fmt: skip
#: NTU-60 cross-view training cameras.
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
#: NTU-120 cross-setup training setups: the even ones.
XSET_TRAIN_SETUPS = frozenset(range(2, 33, 2))

#: Benchmarks per dataset; each split name is ``<benchmark>-train`` / ``<benchmark>-val``.
BENCHMARKS = {"ntu60": ("xsub", "xview"), "ntu120": ("xsub", "xset")}
#: Highest action id and setup id of each dataset.
NUM_ACTIONS = {"ntu60": 60, "ntu120": 120}
NUM_SETUPS = {"ntu60": 17, "ntu120": 32}


def train_mask(
    dataset: str, benchmark: str, setup: np.ndarray, camera: np.ndarray, subject: np.ndarray
) -> np.ndarray:
    """Boolean ``(N,)`` mask of training samples for one benchmark (§1.2); the rest is val.

    ``setup``, ``camera`` and ``subject`` are the 1-based ids parsed from the sample names.
    """
    if dataset not in BENCHMARKS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(BENCHMARKS)}")
    if benchmark not in BENCHMARKS[dataset]:
        raise ValueError(
            f"benchmark {benchmark!r} does not exist for {dataset}; "
            f"expected one of {BENCHMARKS[dataset]}"
        )
    if benchmark == "xsub":
        ids = XSUB60_TRAIN_SUBJECTS if dataset == "ntu60" else XSUB120_TRAIN_SUBJECTS
        return np.isin(np.asarray(subject), sorted(ids))
    if benchmark == "xview":
        return np.isin(np.asarray(camera), sorted(XVIEW_TRAIN_CAMERAS))
    return np.isin(np.asarray(setup), sorted(XSET_TRAIN_SETUPS))


def split_names(dataset: str) -> tuple[str, ...]:
    """All split names of a dataset, e.g. ``('xsub-train', 'xsub-val', 'xview-train', ...)``."""
    return tuple(f"{b}-{part}" for b in BENCHMARKS[dataset] for part in ("train", "val"))
