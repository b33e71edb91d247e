"""One synthetic sample: an action program performed by a subject, placed in the scene of a
setup, seen by one of three cameras through the sensor model (see :mod:`skelmod.synth`).

A :class:`SyntheticSample` holds ground truth (whole tracks, the noise flag); its
:meth:`~SyntheticSample.to_raw` is exactly what :func:`skelmod.ntu.parse_skeleton` returns
for the written file (up to the 7 digits written), so body selection, names and writing are
the library's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skelmod import layout
from skelmod.bodies import select_bodies
from skelmod.errors import SkelmodError
from skelmod.names import SampleId
from skelmod.ntu import RawSkeleton

from .actions import ACTIONS, neutral_pose, subject_style
from .kinematics import forward_kinematics, rot, subject_lengths
from .sensor import noise_body, sensor_track

FPS = 30.0  #: Kinect v2 frame rate; action programs think in seconds
MIN_FRAMES = 30
MAX_FRAMES = layout.MAX_FRAMES
_BODY_ID_BASE = 72057594037927936  # 2**56: Kinect body ids look like 72057594037931101

_CAMERA_YAW = {1: 0.0, 2: -45.0, 3: 45.0}  # degrees, world yaw each camera looks from
_FACING_YAW = {1: -45.0, 2: 45.0}  # degrees, where the performer faces per replication


@dataclass(frozen=True)
class BodyTrack:
    """One tracked body: present in frames ``first_frame .. first_frame + len(joints) - 1``.

    ``joints`` is ``(n, 25, 12)`` (x y z depthX depthY colorX colorY orientW..Z trackingState)
    and ``info`` ``(n, 9)`` (the 9 values after bodyID on the body line). ``is_noise``
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
    """A generated sample; ``tracks`` are listed in this order within every frame."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int  #: 1-based, as in the file name
    frame_count: int
    tracks: tuple[BodyTrack, ...]

    @property
    def sample_id(self) -> SampleId:
        """The five ids of the name."""
        return SampleId(self.setup, self.camera, self.subject, self.replication, self.action)

    @property
    def name(self) -> str:
        """``SsssCcccPpppRrrrAaaa``."""
        return self.sample_id.name

    @property
    def label(self) -> int:
        return self.sample_id.label

    def to_raw(self) -> RawSkeleton:
        """The sample as :class:`skelmod.ntu.RawSkeleton`: body records in file order (per
        frame, the tracks in listing order), at full precision.

        Raises ``ValueError`` naming the body when a track's arrays have the wrong shapes or
        it spans frames outside ``0 .. frame_count - 1``.
        """
        for tr in self.tracks:
            if tr.joints.shape[1:] != (layout.V, 12) or tr.info.shape != (tr.joints.shape[0], 9):
                raise ValueError(
                    f"body {tr.body_id}: expected joints (n, 25, 12) and info (n, 9), "
                    f"found {tr.joints.shape} and {tr.info.shape}"
                )
            if tr.first_frame < 0 or tr.first_frame + tr.joints.shape[0] > self.frame_count:
                raise ValueError(
                    f"body {tr.body_id} spans frames {tr.first_frame}.."
                    f"{tr.first_frame + tr.joints.shape[0] - 1}, "
                    f"outside 0..{self.frame_count - 1}"
                )
        frames = np.array([f for tr in self.tracks for f in tr.frames], dtype=np.int32)
        order = np.argsort(frames, kind="stable")  # stable: listing order within a frame
        ids = np.array([tr.body_id for tr in self.tracks for _ in tr.frames], dtype=np.int64)

        def stacked(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
            out = np.concatenate(arrays) if arrays else np.zeros((0, *shape))
            return out.astype(np.float64)[order]

        return RawSkeleton(
            name=self.name,
            frame_count=self.frame_count,
            bodies_per_frame=np.bincount(frames, minlength=self.frame_count).astype(np.int32),
            body_frame=frames[order],
            body_ids=ids[order],
            body_info=stacked([tr.info for tr in self.tracks], (9,)),
            joints=stacked([tr.joints for tr in self.tracks], (layout.V, 12)),
        )

    def bodies_per_frame(self) -> np.ndarray:
        """``(frame_count,)`` int: how many bodies each frame lists."""
        return self.to_raw().bodies_per_frame.astype(np.int64)

    def xyz(self, max_bodies: int = layout.M) -> np.ndarray:
        """``(3, frame_count, 25, max_bodies)`` float64 as the authors' reader fills it:
        body slot = listing position within the frame, later bodies dropped, absent = 0
        (:func:`skelmod.bodies.select_bodies` with the ``"reference"`` rule)."""
        return select_bodies(self.to_raw(), "reference", max_bodies)[0]


#: Range of the tracker's frontal-bias factor ``k`` of a setup
#: (:func:`skelmod.synth.sensor.frontal_bias`; 1 would be no bias).
FRONTAL_BIAS = (0.3, 0.5)


def _setup_scene(world_seed: int, setup: int) -> tuple[float, float, float, float]:
    """Camera distance (m), height above the floor (m), downward tilt (deg) and the tracker's
    frontal-bias factor of a setup (drawn from the world seed, so that a sample's own draws
    do not depend on it)."""
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, 1_000_033, setup]))
    return (
        rng.uniform(3.0, 4.0),
        rng.uniform(0.65, 0.95),
        rng.uniform(0.0, 6.0),
        rng.uniform(*FRONTAL_BIAS),
    )


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
        raise SkelmodError(
            f"label {label} out of range: there are {len(ACTIONS)} actions (0-based)", param="label"
        )
    if camera not in _CAMERA_YAW:
        raise SkelmodError(f"camera must be 1, 2 or 3, got {camera}", param="camera")
    if replication not in _FACING_YAW:
        raise SkelmodError(f"replication must be 1 or 2, got {replication}", param="replication")
    for what, v in (("setup", setup), ("subject", subject)):
        if not 1 <= v <= 999:
            raise SkelmodError(
                f"{what} must be in 1..999 to fit the 3-digit name, got {v}", param=what
            )
    action = ACTIONS[label]
    people = [subject] if action.persons == 1 else [subject, int(rng.integers(1, 1000))]
    styles = [subject_style(world_seed, who) for who in people]
    seconds = action.seconds * styles[0].tempo * float(np.exp(rng.normal(0.0, 0.35)))
    T = int(np.clip(round(seconds * FPS), MIN_FRAMES, MAX_FRAMES))
    t = np.arange(T) / FPS
    u = np.linspace(0.0, 1.0, T)

    # Performance, in world coordinates (floor y = 0, the person or pair centred at the origin).
    poses = [neutral_pose(t, rng, style.restless) for style in styles]
    lengths = [subject_lengths(world_seed, who) for who in people]
    if action.persons == 1:
        action.program(poses[0], t, u, rng)
        places = [(0.0, 0.0)]
    else:
        gap = action.program(poses[0], poses[1], t, u, rng)
        face = rng.normal(0.0, 10.0, 2)
        places = [(-90.0 + face[0], -gap / 2), (90.0 + face[1], gap / 2)]
    persons = []
    for p, L, (yaw, x0) in zip(poses, lengths, places, strict=True):
        P, R = forward_kinematics(p, L)
        Ry = rot(1, np.array(yaw))
        P = P @ Ry.T + np.array([x0, 0.0, 0.0])
        persons.append((P, {j: Ry @ Rj for j, Rj in R.items()}))

    # Camera: rotate the scene about y by the view yaw, place it in front of the camera, then
    # tilt the camera down (points further away appear higher).
    distance, height, tilt, bias = _setup_scene(world_seed, setup)
    yaw = _FACING_YAW[replication] - _CAMERA_YAW[camera] + rng.normal(0.0, 8.0)
    R_tilt = rot(0, np.array(-tilt - rng.normal(0.0, 1.0)))
    view = R_tilt @ rot(1, np.array(yaw))
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
        joints, info = sensor_track(rng, P, R, view, shift, noise, bias)
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
            first, joints, info = noise_body(rng, T)
            noise_id = base_id + 100 + int(rng.integers(0, 50))
            noise_track = BodyTrack(noise_id, first, joints, info, is_noise=True)
            tracks.insert(0 if rng.random() < 0.25 else len(tracks), noise_track)
    return SyntheticSample(setup, camera, subject, replication, label + 1, T, tuple(tracks))
