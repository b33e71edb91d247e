"""Slow twin of :mod:`skelmod.ntu`: the reference reader, line by line
(docs/data.md, "NTU files, names and splits").

``read_skeleton`` / ``read_xyz`` follow ``tools/utils/ntu_read_skeleton.py:5-53``
(``readline``, ``split``, ``float``), with one deliberate change: ``bodyID`` is
parsed with ``int`` so the fast parser's exact ids can be compared. The reader
checks nothing beyond what the reference code checks by accident.

Used by the tests (as the twin the fast parser must agree with) and by
``benchmarks/bench_parser.py`` (as the baseline).
"""

from __future__ import annotations

import numpy as np

BODY_INFO_KEY = [
    "bodyID", "clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
    "handRightState", "isResticted", "leanX", "leanY", "trackingState",
]  # fmt: skip
JOINT_INFO_KEY = [
    "x", "y", "z", "depthX", "depthY", "colorX", "colorY",
    "orientationW", "orientationX", "orientationY", "orientationZ", "trackingState",
]  # fmt: skip


def read_skeleton(path) -> dict:
    """The nested dict of the reference reader:
    numFrame, frameInfo[numBody, bodyInfo[..., jointInfo]]."""
    with open(path) as f:
        seq = {"numFrame": int(f.readline()), "frameInfo": []}
        for _ in range(seq["numFrame"]):
            frame = {"numBody": int(f.readline()), "bodyInfo": []}
            for _ in range(frame["numBody"]):
                values = f.readline().split()
                body = {k: float(v) for k, v in zip(BODY_INFO_KEY, values, strict=False)}
                body["bodyID"] = int(values[0])
                body["numJoint"] = int(f.readline())
                body["jointInfo"] = []
                for _ in range(body["numJoint"]):
                    values = f.readline().split()
                    joint = {k: float(v) for k, v in zip(JOINT_INFO_KEY, values, strict=False)}
                    body["jointInfo"].append(joint)
                frame["bodyInfo"].append(body)
            seq["frameInfo"].append(frame)
    return seq


def naive_read_xyz(path, max_body: int = 2, num_joint: int = 25) -> np.ndarray:
    """``read_xyz``: (3, numFrame, 25, 2) float64, bodies in listing order."""
    seq = read_skeleton(path)
    data = np.zeros((3, seq["numFrame"], num_joint, max_body))
    for n, frame in enumerate(seq["frameInfo"]):
        for m, body in enumerate(frame["bodyInfo"]):
            for j, v in enumerate(body["jointInfo"]):
                if m < max_body and j < num_joint:
                    data[:, n, j, m] = [v["x"], v["y"], v["z"]]
    return data


def naive_read(path) -> dict:
    """Every field, packed like :class:`skelmod.ntu.RawSkeleton` (a dict of its field names).

    Keys: frame_count, bodies_per_frame (F,), body_frame (B,), body_ids (B,) int64,
    body_info (B, 9), joints (B, 25, 12).
    """
    seq = read_skeleton(path)
    bodies_per_frame, body_frame, body_ids, body_info, joints = [], [], [], [], []
    for n, frame in enumerate(seq["frameInfo"]):
        bodies_per_frame.append(frame["numBody"])
        for body in frame["bodyInfo"]:
            body_frame.append(n)
            body_ids.append(body["bodyID"])
            body_info.append([body[k] for k in BODY_INFO_KEY[1:]])
            joints.append([[v[k] for k in JOINT_INFO_KEY] for v in body["jointInfo"]])
    return {
        "frame_count": seq["numFrame"],
        "bodies_per_frame": np.array(bodies_per_frame, dtype=np.int32),
        "body_frame": np.array(body_frame, dtype=np.int32),
        "body_ids": np.array(body_ids, dtype=np.int64),
        "body_info": np.array(body_info, dtype=np.float64).reshape(-1, 9),
        "joints": np.array(joints, dtype=np.float64).reshape(-1, 25, 12),
    }
