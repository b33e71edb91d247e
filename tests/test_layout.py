"""Joint layouts and the modality registry, checked against tables written here by hand.

ntu25: copied from docs/data.md, "Joint layouts and datasets" and docs/method.md (1-based NTU
ids). kinect-v1-20: the
same rules applied to the Kinect v1 skeleton, as ``skelmod/layout.py`` states them
(ShoulderCenter, id 3, plays NTU's joint 21; no hand tips or thumbs). Nothing here is read from
the tables under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from skelmod import layout

# --- ntu25 ----------------------------------------------------------------------------------
# 6v bone parents
NTU_PARENTS_6V = {
    1: 2, 2: 21, 3: 21, 4: 3, 5: 21, 6: 5, 7: 6, 8: 7, 9: 21, 10: 9, 11: 10, 12: 11, 13: 1,
    14: 13, 15: 14, 16: 15, 17: 1, 18: 17, 19: 18, 20: 19, 21: 21, 22: 8, 23: 8, 24: 12, 25: 12,
}  # fmt: skip
# rotation-axis partners
NTU_AXIS = {
    1: 2, 2: 21, 3: 21, 4: 3, 5: 21, 6: 5, 7: 6, 8: 7, 9: 21, 10: 9, 11: 10, 12: 11, 13: 1,
    14: 13, 15: 14, 16: 15, 17: 1, 18: 17, 19: 18, 20: 19, 21: 21, 22: 8, 23: 22, 24: 12, 25: 24,
}  # fmt: skip
# 3v bone parents: 22->23, 23->8, 24->25, 25->12
NTU_PARENTS_3V = {**NTU_PARENTS_6V, 22: 23, 23: 8, 24: 25, 25: 12}
# ST-GCN edges: self-loops plus 24 edges (1-based)
NTU_EDGES = [
    (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
    (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
    (20, 19), (22, 23), (23, 8), (24, 25), (25, 12),
]  # fmt: skip
# valid length: joint 1; centre: 21; yaw: joints 9 - 5; torso normal (X_2 - X_9) x (X_5 - X_9) at 21
NTU_JOINTS = {"center": 21, "shoulders": (5, 9), "length_joint": 1, "torso": (2, 9, 5)}

# --- kinect-v1-20, the rules of skelmod/layout.py -------------------------------------------
V1_PARENTS = {
    1: 2, 2: 3, 3: 3, 4: 3, 5: 3, 6: 5, 7: 6, 8: 7, 9: 3, 10: 9, 11: 10, 12: 11, 13: 1,
    14: 13, 15: 14, 16: 15, 17: 1, 18: 17, 19: 18, 20: 19,
}  # fmt: skip
V1_EDGES = [
    (1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9), (11, 10),
    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19),
]  # fmt: skip
V1_JOINTS = {"center": 3, "shoulders": (5, 9), "length_joint": 1, "torso": (2, 9, 5)}
V1_NAMES = [
    "hip_center", "spine", "shoulder_center", "head", "left_shoulder", "left_elbow",
    "left_wrist", "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee",
    "right_ankle", "right_foot",
]  # fmt: skip

CASES = {
    "ntu25": (25, NTU_PARENTS_6V, NTU_AXIS, NTU_PARENTS_3V, NTU_EDGES, NTU_JOINTS),
    "kinect-v1-20": (20, V1_PARENTS, V1_PARENTS, V1_PARENTS, V1_EDGES, V1_JOINTS),
}


def one_based(table: np.ndarray) -> dict[int, int]:
    return {i + 1: int(p) + 1 for i, p in enumerate(table)}


@pytest.mark.parametrize("name", list(CASES))
def test_tables_match_the_hand_written_ones(name: str) -> None:
    v, parents, axis, parents_3v, edges, joints = CASES[name]
    lay = layout.get_layout(name)
    assert lay.V == v == len(lay.joint_names) == len(parents)
    assert one_based(lay.bone_parents_6v) == parents
    assert one_based(lay.axis_partners) == axis
    assert one_based(lay.bone_parents_3v) == parents_3v
    got = sorted(tuple(sorted((a + 1, b + 1))) for a, b in lay.edges)
    assert got == sorted(tuple(sorted(e)) for e in edges)
    assert lay.center + 1 == joints["center"]
    assert tuple(j + 1 for j in lay.shoulders) == joints["shoulders"]
    assert lay.length_joint + 1 == joints["length_joint"]
    assert tuple(j + 1 for j in lay.torso_joints) == joints["torso"]


def test_kinect_v1_names_and_the_joints_shared_with_ntu() -> None:
    v1, ntu = layout.get_layout("kinect-v1-20"), layout.get_layout("ntu25")
    assert list(v1.joint_names) == V1_NAMES
    # ids 4-20 are the NTU joints of the same ids and names (1, 2 are NTU's spine base / mid)
    assert v1.joint_names[3:] == ntu.joint_names[3:20]


def test_the_graph_of_each_layout_is_a_tree_rooted_at_its_centre() -> None:
    for lay in layout.LAYOUTS.values():
        assert len(lay.edges) == lay.V - 1
        reach, frontier = {lay.center}, [lay.center]
        while frontier:
            j = frontier.pop()
            for a, b in lay.edges:
                for x, y in ((a, b), (b, a)):
                    if x == j and y not in reach:
                        reach.add(y)
                        frontier.append(y)
        assert reach == set(range(lay.V))


def test_modality_registry() -> None:
    rows = [(m.name, m.slot, m.bone_options) for m in layout.MODALITY_REGISTRY.values()]
    assert rows == [
        ("joint", None, False),
        ("velocity", 0, False),
        ("acceleration", 1, False),
        ("bone", 2, True),
        ("rotation_axis", 3, True),
        ("angular_velocity", 5, True),
    ]
    assert layout.check_modalities("bone, joint") == ("joint", "bone")
    assert layout.check_modalities("all") == tuple(n for n, _, _ in rows)
    for spec, reason in (
        ("speed", "unknown modalities speed"),
        ("joint,joint", "duplicate"),
        ("", "none given"),
    ):
        with pytest.raises(layout.LayoutError, match=reason):
            layout.check_modalities(spec)


def test_modality_options_have_one_spelling_and_read_the_old_one() -> None:
    assert layout.ModalityOptions().to_json() == {"bones": "6v", "unit_axis": False}
    old = layout.ModalityOptions.from_json({"bone_convention": "3v", "unit_axis": True})
    assert old == layout.ModalityOptions(bones="3v", unit_axis=True)
    with pytest.raises(layout.LayoutError, match="bones must be one of 6v, 3v, got '4v'"):
        layout.ModalityOptions(bones="4v")
    with pytest.raises(layout.LayoutError, match="unit_axis must be true or false"):
        layout.ModalityOptions(unit_axis="yes")
    with pytest.raises(layout.LayoutError, match="unknown joint layout 'kinect'"):
        layout.get_layout("kinect")


def test_nucla_split_is_views_one_and_two() -> None:
    views = np.array([1, 2, 3, 3, 2, 1])
    mask = layout.train_mask("nucla", "xview", np.zeros(6), views, np.ones(6))
    assert mask.tolist() == [True, True, False, False, True, True]
    assert layout.split_names("nucla") == ("xview-train", "xview-val")


def test_ntu_split_lists_match_the_reference() -> None:
    """The train lists of docs/data.md, "NTU files, names and splits", written out here."""
    xsub60 = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
    xsub120 = xsub60 | {
        45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85,
        86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
    }  # fmt: skip
    assert len(xsub60) == 20 and len(xsub120) == 53
    ids = np.arange(1, 121)
    for dataset, benchmark, column, train in (
        ("ntu60", "xsub", "subject", xsub60),
        ("ntu120", "xsub", "subject", xsub120),
        ("ntu60", "xview", "camera", {2, 3}),
        ("ntu120", "xset", "setup", set(range(2, 33, 2))),
    ):
        cols = {"setup": ids, "camera": ids, "subject": ids, column: ids}
        mask = layout.train_mask(dataset, benchmark, cols["setup"], cols["camera"], cols["subject"])
        assert set(ids[mask].tolist()) == train, (dataset, benchmark)


def test_modality_options_are_resolved_in_one_place() -> None:
    from skelmod.layout import LayoutError, ModalityOptions

    assert ModalityOptions.resolve() == ModalityOptions("6v", False)  # the reference's
    cache = {"bone_convention": "3v", "unit_axis": True}  # an old cache's recorded options
    assert ModalityOptions.resolve(cache) == ModalityOptions("3v", True)
    # an explicit value (command line, caller) wins; None keeps the base's
    assert ModalityOptions.resolve(cache, bones="6v") == ModalityOptions("6v", True)
    base = ModalityOptions("3v", False)
    assert ModalityOptions.resolve(base, unit_axis=True) == ModalityOptions("3v", True)
    with pytest.raises(LayoutError, match="bones must be one of"):
        ModalityOptions.resolve(base, bones="9v")
    with pytest.raises(LayoutError, match="unit_axis must be true or false"):
        ModalityOptions.resolve(unit_axis="yes")
