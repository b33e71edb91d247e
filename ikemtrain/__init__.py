"""ikemtrain: six-modality contrastive pre-training (MoCo, EKEM, IKEM) on skelmod caches,
teacher–student distillation into a three-stream student, and the deployable student::

    from ikemtrain import Student

    student = Student.load("student.pt")
    labels = student.predict(joints, frame_count)  # joints (N, 3, T, 25, M)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {"Student": "ikemtrain.student"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # lazy, so that ``import ikemtrain`` does not import torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ikemtrain' has no attribute {name!r}")
