"""The bounds of what is plausible, stated once: every reader of outside data (raw NTU and
N-UCLA files, imported ``.npz`` arrays, caches) checks the sizes a file *declares* against
these before it allocates anything, and refuses in one line naming the file, the field and the
limit. ikemtrain's own bounds (network widths, queue) live with its settings
(:mod:`ikemtrain.config`).

Each bound is far above any real data set and far below what would exhaust a machine.
"""

from __future__ import annotations

__all__ = [
    "MAX_BODIES",
    "MAX_CLASSES",
    "MAX_COORDINATE_M",
    "MAX_NUMBER_CHARS",
    "MAX_RAW_FRAMES",
    "MAX_SAMPLES",
    "MAX_TARGET_FRAMES",
]

#: Frames of one raw sequence: about 5.5 minutes at 30 fps, 33 times the longest NTU sequence
#: (300). Raw files, imported sequences and a cache's ``meta/frame_count``.
MAX_RAW_FRAMES = 10_000
#: Frames T of a cache (``--frames``): a cache holds ``600 * T`` bytes per sample and modality.
MAX_TARGET_FRAMES = 1000
#: Bodies per frame (Kinect v2 tracks six): a raw frame, imported arrays' M, a cache's M.
MAX_BODIES = 6
#: Classes: labels 0 .. 32766, since the cache stores the label and the action id (label + 1)
#: as int16.
MAX_CLASSES = 32767
#: Samples of one cache or import (NTU RGB+D 120 has 114,480).
MAX_SAMPLES = 10_000_000
#: Largest |coordinate| accepted in the ``joint`` modality, in metres. Kinect v2 sees at most
#: about 8 m; anything beyond this bound is a corrupt file, not a pose.
MAX_COORDINATE_M = 100.0
#: Characters of one number written as text (an N-UCLA JSON file's): a float64 needs at most
#: 24 (the shared files use at most 12). A longer literal is a corrupt or hostile file, refused
#: before it is converted (turning a 5,000-digit integer into a number costs quadratic time).
MAX_NUMBER_CHARS = 64
