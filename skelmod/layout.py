"""Joint layouts, the modality registry and the benchmark splits, stated once.

Array conventions (docs/method.md, "Notation"):

* a batch is ``(N, C, T, V, M)``: C=3 coordinates (x, y, z in metres, Kinect camera space,
  y up), T frames (50 by default), V joints of the cache's layout (25 for ``ntu25``, 20 for
  ``kinect-v1-20``), M bodies (2 for NTU; N-UCLA keeps its one body, M=1);
* a single sample is ``(C, T, V, M)``;
* joint ids are **1-based** in docs and **0-based** in code: array index = id - 1.

Joint layouts (:data:`LAYOUTS`, :func:`get_layout`): everything that depends on the joint
numbering lives in one :class:`JointLayout` per skeleton:

* ``ntu25``: the NTU RGB+D / Kinect v2 skeleton, the reference's tables exactly
  (docs/method.md, "Data and normalisation", "The six modalities", "Backbone");
* ``kinect-v1-20``: the Kinect v1 SDK skeleton (N-UCLA, MSR Action3D, UTD-MHAD, UTKinect, ...),
  derived from the ``ntu25`` tables by the rules below.

Kinect v1 (1-based, SDK order): 1 HipCenter, 2 Spine, 3 ShoulderCenter, 4 Head, 5-8 left
shoulder/elbow/wrist/hand, 9-12 the same on the right, 13-16 left hip/knee/ankle/foot, 17-20
the same on the right. Ids 1, 2 and 4-20 are the NTU joints of the same ids; v1 has no
spine-shoulder (NTU 21), no hand tips and no thumbs (NTU 22-25), and its ShoulderCenter (3)
is where NTU has both its neck (3) and its spine-shoulder (21): **ShoulderCenter plays NTU's
joint 21**. Rules, each the NTU rule applied to the v1 skeleton:

1. *Centre* (centring, graph centre, torso-normal slot): NTU joint 21 -> v1 3.
2. *Shoulder pair* (yaw): NTU (5, 9) -> v1 (5, 9). *Valid-length joint*: NTU 1 ->
   v1 1.
3. *6-view bone parents*: in NTU, p(i) is i's neighbour on the path to the centre (the
   tree rooted at 21: 1->2, 2->21, 13->1, 17->1, ...), the centre is its own parent, and hand
   tip and thumb attach to the hand. In v1 the same tree is rooted at 3: 2->3, 4->3 (NTU's
   4->3->21 with neck and spine-shoulder merged), 5->3, 9->3, every other joint as in NTU,
   3->3; there are no hand tips or thumbs.
4. *Torso normal*: ``n^ = normalize((B_2 - B_9) x (B_5 - B_9))`` (spine mid, right and left
   shoulder; all three hang off the centre, so this is ``(X_2 - X_9) x (X_5 - X_9)``), written
   into the centre's bone slot: v1 joints 2, 9, 5, slot 3.
5. *Rotation-axis partners*: in NTU q(i) = p(i) except the thumbs, whose partner is the
   hand tip (23->22, 25->24). v1 has no thumbs, so q = p; ``R_3 = n^ x n^ = 0``.
6. *3-view bones*: NTU's 3-view list is the common parents with the chains 22->23->8 and
   24->25->12 (no torso normal). Without hand tips and thumbs it is the 6-view list: v1 3v
   parents = 6v parents, with ``B_3 = 0`` and no torso normal.
7. *ST-GCN edges*: NTU's graph is the tree of the 3-view parents (each child-parent pair
   once, no self-loop). v1: the 19 edges of rule 3's tree.

=============  ====================================  =====================================
table          ntu25 (1-based)                        kinect-v1-20 (1-based)
=============  ====================================  =====================================
centre         21                                     3
shoulders      L 5, R 9                               L 5, R 9
length joint   1                                      1
torso normal   (B_2 - B_9) x (B_5 - B_9) at 21        (B_2 - B_9) x (B_5 - B_9) at 3
6v parents     1-2 2-21 3-21 4-3 5-21 6-5 7-6 8-7     1-2 2-3 3-3 4-3 5-3 6-5 7-6 8-7
               9-21 10-9 11-10 12-11 13-1 14-13       9-3 10-9 11-10 12-11 13-1 14-13
               15-14 16-15 17-1 18-17 19-18 20-19     15-14 16-15 17-1 18-17 19-18 20-19
               21-21 22-8 23-8 24-12 25-12
axis partners  6v parents but 23-22, 25-24            = 6v parents
3v parents     6v parents but 22-23, 24-25            = 6v parents
graph edges    3v parents without 21-21 (24 edges)    6v parents without 3-3 (19 edges)
=============  ====================================  =====================================

Modalities (:data:`MODALITY_REGISTRY`): the six modalities in canonical order with the
kernel output slot that computes each (``None`` for joint, the input itself) and whether
they depend on the *bone options* (:class:`ModalityOptions`: ``bones``, ``unit_axis``).
:func:`check_modalities` and :class:`ModalityOptions` are the only validators of modality
names and options; convert, features, the data sets and training all use them.

Benchmarks (docs/data.md, "NTU files, names and splits"): the NTU id lists and :func:`train_mask`;
N-UCLA's cross-view split (views 1 and 2 train, view 3 val).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SkelmodError

C = 3  #: coordinates per joint (x, y, z)
V = 25  #: joints of the NTU-25 skeleton (Kinect v2), the default layout
M = 2  #: bodies kept per NTU sample
T_TARGET = 50  #: frames per sample after temporal resizing
MAX_FRAMES = 300  #: longest NTU sequence; longer files still convert


class LayoutError(SkelmodError):
    """An unknown joint layout, modality name or modality option."""


def _zero_based(v: int, pairs_1based: Mapping[int, int]) -> np.ndarray:
    out = np.full(v, -1, dtype=np.int64)
    for child, parent in pairs_1based.items():
        out[child - 1] = parent - 1
    if (out < 0).any():
        raise AssertionError(f"joints without a parent: {np.flatnonzero(out < 0) + 1}")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class JointLayout:
    """One skeleton's joint tables (0-based indices; the module docstring gives the rules).

    Attributes:
        name: registry name.
        joint_names: ``(V,)`` names, index = id - 1.
        edges: undirected ST-GCN edges, 0-based; the graph code adds self-loops.
        center: centring joint, graph centre and torso-normal slot.
        shoulders: ``(left, right)`` shoulders for the yaw alignment.
        length_joint: the joint whose non-zero frames give the valid length L.
        bone_parents_6v: ``(V,)`` int64 bone parents p(i) of the 6-view model.
        torso_joints: ``(a, b, c)``: the torso normal ``normalize((B_a - B_b) x (B_c - B_b))``
            is written into bone slot ``center``.
        axis_partners: ``(V,)`` int64 rotation-axis partners q(i).
        bone_parents_3v: ``(V,)`` int64 parents of the 3-view convention.
    """

    name: str
    joint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    center: int
    shoulders: tuple[int, int]
    length_joint: int
    bone_parents_6v: np.ndarray
    torso_joints: tuple[int, int, int]
    axis_partners: np.ndarray
    bone_parents_3v: np.ndarray
    aliases: tuple[str, ...] = field(default=())

    @property
    def V(self) -> int:  # noqa: N802 - the paper's symbol
        return len(self.joint_names)

    def topology(self, bones: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(parents, axis partners, torso normal?)`` of a bone convention."""
        if bones == "6v":
            return self.bone_parents_6v, self.axis_partners, True
        if bones == "3v":
            return self.bone_parents_3v, self.bone_parents_3v, False
        raise LayoutError(f"bones must be one of {', '.join(BONE_CONVENTIONS)}, got {bones!r}")


#: Joints 5-20 (shoulders to feet): the same joints, in the same order, in the Kinect v1 SDK
#: and in NTU (Kinect v2).
_LIMB_JOINT_NAMES = (
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)  # fmt: skip

#: NTU joint names, index = id - 1.
JOINT_NAMES = (
    "spine_base", "spine_mid", "neck", "head",
    *_LIMB_JOINT_NAMES,
    "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
)  # fmt: skip

# 0-based indices of the NTU joints preprocessing and the modalities single out.
SPINE_BASE = 0  #: joint 1, used for the valid length L
SPINE_MID = 1  #: joint 2, torso normal
LEFT_SHOULDER = 4  #: joint 5, yaw alignment and torso normal
RIGHT_SHOULDER = 8  #: joint 9, yaw alignment and torso normal
SPINE_SHOULDER = 20  #: joint 21, centring, graph centre, torso-normal slot

_COMMON_PARENTS_1B = {
    1: 2, 2: 21, 3: 21, 4: 3, 5: 21, 6: 5, 7: 6, 8: 7, 9: 21, 10: 9,
    11: 10, 12: 11, 13: 1, 14: 13, 15: 14, 16: 15, 17: 1, 18: 17, 19: 18, 20: 19,
    21: 21,
}  # fmt: skip

#: Bone parents p(i) of the 6-view model: hand tip and thumb both attach to the hand.
BONE_PARENTS_6V = _zero_based(V, {**_COMMON_PARENTS_1B, 22: 8, 23: 8, 24: 12, 25: 12})
#: Bone parents of the 3-view model, CrosSCLR and the ST-GCN graph: 22->23->8, 24->25->12.
BONE_PARENTS_3V = _zero_based(V, {**_COMMON_PARENTS_1B, 22: 23, 23: 8, 24: 25, 25: 12})
#: Rotation-axis partners q(i), the "25 hinge joints".
AXIS_PARTNERS = _zero_based(V, {**_COMMON_PARENTS_1B, 22: 8, 23: 22, 24: 12, 25: 24})


def _tree_edges(parents: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Each child-parent pair of a parent list once, without the root's self-loop (rule 7)."""
    return tuple((int(c), int(p)) for c, p in enumerate(parents) if c != p)


#: Undirected edges of the ST-GCN graph, 0-based; self-loops are added by the graph code.
GRAPH_EDGES = _tree_edges(BONE_PARENTS_3V)
GRAPH_CENTER = SPINE_SHOULDER

NTU25 = JointLayout(
    name="ntu25",
    joint_names=JOINT_NAMES,
    edges=GRAPH_EDGES,
    center=SPINE_SHOULDER,
    shoulders=(LEFT_SHOULDER, RIGHT_SHOULDER),
    length_joint=SPINE_BASE,
    bone_parents_6v=BONE_PARENTS_6V,
    torso_joints=(SPINE_MID, RIGHT_SHOULDER, LEFT_SHOULDER),
    axis_partners=AXIS_PARTNERS,
    bone_parents_3v=BONE_PARENTS_3V,
)

#: Kinect v1 SDK joint names (``NUI_SKELETON_POSITION_INDEX`` order), index = id - 1.
KINECT_V1_JOINT_NAMES = ("hip_center", "spine", "shoulder_center", "head", *_LIMB_JOINT_NAMES)


def _kinect_v1_parents() -> np.ndarray:
    # rule 3: NTU's common parents with 21 -> 3 (ShoulderCenter) and NTU's 3 (neck) dropped
    ntu_to_v1 = {21: 3}
    pairs = {c: ntu_to_v1.get(p, p) for c, p in _COMMON_PARENTS_1B.items() if c not in (3, 21)}
    pairs[4] = 3  # head -> neck -> spine-shoulder, both now ShoulderCenter
    pairs[3] = 3  # the centre
    return _zero_based(20, pairs)


_V1_PARENTS = _kinect_v1_parents()
KINECT_V1_20 = JointLayout(
    name="kinect-v1-20",
    joint_names=KINECT_V1_JOINT_NAMES,
    edges=_tree_edges(_V1_PARENTS),
    center=2,
    shoulders=(4, 8),
    length_joint=0,
    bone_parents_6v=_V1_PARENTS,
    torso_joints=(1, 8, 4),
    axis_partners=_V1_PARENTS,
    bone_parents_3v=_V1_PARENTS,
)

#: Every registered layout by name.
LAYOUTS: dict[str, JointLayout] = {lay.name: lay for lay in (NTU25, KINECT_V1_20)}
DEFAULT_LAYOUT = "ntu25"


def get_layout(layout: str | JointLayout | None = None) -> JointLayout:
    """The :class:`JointLayout` of a registry name (``None``: ``ntu25``); layouts pass through."""
    if layout is None:
        return NTU25
    if isinstance(layout, JointLayout):
        return layout
    try:
        return LAYOUTS[layout]
    except (KeyError, TypeError):
        raise LayoutError(
            f"unknown joint layout {layout!r}; expected one of {', '.join(LAYOUTS)}"
        ) from None


# --- modalities -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Modality:
    """One modality: its name, its kernel output slot (``None``: the joints themselves)
    and whether the bone options (:class:`ModalityOptions`) change it."""

    name: str
    slot: int | None
    bone_options: bool


#: The kernel's outputs (``skelmod._kernels.modalities_batch``) in slot order; ``theta`` is
#: internal (one channel), the others are modalities.
KERNEL_OUTPUTS = ("velocity", "acceleration", "bone", "rotation_axis", "theta", "angular_velocity")
#: The six modalities in canonical order (the paper's J, Vel, Acc, B, R, Ω): the bone
#: options change bone, rotation_axis and angular_velocity (all built on the bones).
MODALITY_REGISTRY: dict[str, Modality] = {
    name: Modality(
        name,
        KERNEL_OUTPUTS.index(name) if name in KERNEL_OUTPUTS else None,
        name in ("bone", "rotation_axis", "angular_velocity"),
    )
    for name in ("joint", "velocity", "acceleration", "bone", "rotation_axis", "angular_velocity")
}
MODALITY_NAMES = tuple(MODALITY_REGISTRY)
#: Bone conventions accepted by ``bones=``.
BONE_CONVENTIONS = ("6v", "3v")


def check_modalities(names: str | Iterable[str], *, allow_all: bool = True) -> tuple[str, ...]:
    """Modality names in canonical order from ``"all"``, ``"joint,bone"`` or an iterable.

    Raises :class:`LayoutError` naming unknown or duplicate names, or an empty list.
    """
    if isinstance(names, str):
        if allow_all and names.strip() == "all":
            return MODALITY_NAMES
        names = [s for s in (p.strip() for p in names.split(",")) if s]
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in MODALITY_REGISTRY]
    if unknown or not names:
        found = ", ".join(unknown) if unknown else "(none given)"
        expected = ("'all' or " if allow_all else "") + "a comma-separated list of "
        raise LayoutError(
            f"unknown modalities {found}; expected {expected}{', '.join(MODALITY_NAMES)}"
        )
    if len(set(names)) != len(names):
        raise LayoutError(f"duplicate modalities in {', '.join(names)}")
    return tuple(m for m in MODALITY_NAMES if m in names)


@dataclass(frozen=True)
class ModalityOptions:
    """The options that change the bone-derived modalities, checked once
    (docs/method.md, "The six modalities").

    ``bones``: ``"6v"`` (the reference: 6-view parents, torso normal in the centre's slot) or
    ``"3v"``; ``unit_axis``: the rotation-axis modality as paper eq. 4's unit axis.
    """

    bones: str = "6v"
    unit_axis: bool = False

    def __post_init__(self):
        if not isinstance(self.bones, str) or self.bones not in BONE_CONVENTIONS:
            raise LayoutError(
                f"bones must be one of {', '.join(BONE_CONVENTIONS)}, got {self.bones!r}"
            )
        if not isinstance(self.unit_axis, (bool, np.bool_)):
            raise LayoutError(f"unit_axis must be true or false, got {self.unit_axis!r}")
        object.__setattr__(self, "unit_axis", bool(self.unit_axis))

    def to_json(self) -> dict[str, Any]:
        return {"bones": self.bones, "unit_axis": self.unit_axis}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> ModalityOptions:
        """From a recorded dict; also reads the older spelling ``bone_convention``."""
        d = dict(d or {})
        bones = d.get("bones", d.get("bone_convention", "6v"))
        return cls(bones=bones, unit_axis=d.get("unit_axis", False))

    @classmethod
    def resolve(
        cls,
        base: ModalityOptions | Mapping[str, Any] | None = None,
        *,
        bones: str | None = None,
        unit_axis: bool | None = None,
    ) -> ModalityOptions:
        """The one place modality options are resolved: ``base`` (options already resolved,
        or a recorded dict: a cache's root ``modality_options`` or ``options``, a preset, a
        checkpoint; ``None``: the reference's) with ``bones`` / ``unit_axis`` given explicitly
        (a command line, a caller) taking precedence; ``None`` keeps ``base``'s value.

        Raises:
            LayoutError: an unknown bone convention or a ``unit_axis`` that is not a bool.
        """
        base = base if isinstance(base, ModalityOptions) else cls.from_json(base)
        return cls(
            bones=base.bones if bones is None else bones,
            unit_axis=base.unit_axis if unit_axis is None else unit_axis,
        )


# --- benchmarks ----------------------------------------------------------------------------

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

#: N-UCLA cross-view training views (the standard protocol: views 1 and 2 train, view 3 val).
NUCLA_XVIEW_TRAIN_VIEWS = frozenset((1, 2))

#: Benchmarks per dataset; each split name is ``<benchmark>-train`` / ``<benchmark>-val``.
BENCHMARKS = {"ntu60": ("xsub", "xview"), "ntu120": ("xsub", "xset"), "nucla": ("xview",)}
#: Highest action id and setup id of each NTU dataset.
NUM_ACTIONS = {"ntu60": 60, "ntu120": 120}
NUM_SETUPS = {"ntu60": 17, "ntu120": 32}
#: Classes of each dataset (the label range 0 .. n-1); N-UCLA's 10 actions are a01-a06,
#: a08, a09, a11, a12, labelled 0-9 in that order.
NUM_CLASSES = {**NUM_ACTIONS, "nucla": 10}
#: The joint layout of each dataset's raw files.
DATASET_LAYOUTS = {"ntu60": "ntu25", "ntu120": "ntu25", "nucla": "kinect-v1-20"}


def train_mask(
    dataset: str, benchmark: str, setup: np.ndarray, camera: np.ndarray, subject: np.ndarray
) -> np.ndarray:
    """Boolean ``(N,)`` mask of training samples for one benchmark; the rest is val.

    ``setup``, ``camera`` and ``subject`` are the 1-based ids parsed from the sample names
    (for N-UCLA, ``camera`` holds the view).
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
    if dataset == "nucla":
        return np.isin(np.asarray(camera), sorted(NUCLA_XVIEW_TRAIN_VIEWS))
    if benchmark == "xview":
        return np.isin(np.asarray(camera), sorted(XVIEW_TRAIN_CAMERAS))
    return np.isin(np.asarray(setup), sorted(XSET_TRAIN_SETUPS))


def split_names(dataset: str) -> tuple[str, ...]:
    """All split names of a dataset, e.g. ``('xsub-train', 'xsub-val', 'xview-train', ...)``."""
    return tuple(f"{b}-{part}" for b in BENCHMARKS[dataset] for part in ("train", "val"))
