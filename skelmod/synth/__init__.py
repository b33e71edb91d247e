"""Procedural NTU-format ``.skeleton`` files: a stand-in dataset when the real one is absent.

Each sample is one *performance* of a named action program (:data:`ACTIONS`) by a subject
whose body proportions and style are fixed per subject id, seen by one of three Kinect cameras:

1. **Motion**: joint-angle trajectories per action (random amplitude, timing, repetitions,
   side and speed; sequence length 30..300 frames at 30 fps) on top of an idle sway and
   fidgeting of every joint, turned into positions by forward kinematics on a rest skeleton
   with NTU's median bone lengths (measured on the real files), scaled per subject. Each
   subject has a style (:func:`~skelmod.synth.actions.subject_style`): how restless they are
   and how fast they act. Feet stay on the floor.
2. **Scene**: camera ``c`` in 1..3 looks from world yaw 0°, -45°, +45°; the performer faces
   -45° in replication 1 and +45° in replication 2, so camera 1 always sees a 45° view and
   cameras 2/3 see front or side views, as in NTU. Distance 2.7..4.3 m, camera height and tilt
   per setup; the whole scene is rotated about y (Kinect camera space: x right, y up, z depth).
3. **Sensor**: the tracker's frontal bias (a body turned away from the camera gets its
   shoulder and hip lines turned back towards it, so its limbs keep a residue of the view
   after normalisation; :func:`~skelmod.synth.sensor.frontal_bias`), gaussian jitter
   (more on hands and feet), runs of ``trackingState`` 1 ("inferred") joints, short tracking
   glitches of a hand or foot, now and then a new body id for the same person, empty leading
   frames, and in about 10 % of one-person samples a short object-like noise body.
   Interaction classes always have two persons.

The text layout is exactly that of docs/data.md, "NTU files, names and splits"; numbers are
written with 7 significant digits (``%.7G``), as Kinect's own files are. Names
``SsssCcccPpppRrrrAaaa`` follow the same section, so the cross-subject and cross-view splits of
:mod:`skelmod.layout` apply.

Everything is deterministic in ``seed``: sample ``i`` of class ``k`` draws from
``SeedSequence([seed, k, i])``; subjects and setups draw from their own sequences. Asking for
more samples per class therefore leaves the earlier files byte-identical.

Modules, in the order a sample is made: :mod:`~skelmod.synth.actions` (the action programs
and the idle pose), :mod:`~skelmod.synth.kinematics` (subject proportions, forward
kinematics), :mod:`~skelmod.synth.sensor` (projection, noise, glitches, noise bodies),
:mod:`~skelmod.synth.sample` (scene and camera; one :class:`SyntheticSample`),
:mod:`~skelmod.synth.writer` (the text) and :mod:`~skelmod.synth.dataset` (names, seeds,
files). Names, body slots and joint indices are the library's (:mod:`skelmod.names`,
:mod:`skelmod.bodies`, :mod:`skelmod.layout`).
"""

from __future__ import annotations

from .actions import ACTIONS, Action
from .dataset import generate, sample_rng
from .sample import FPS, BodyTrack, SyntheticSample, synthesize_sample
from .writer import write_skeleton

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
