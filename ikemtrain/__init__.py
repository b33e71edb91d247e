"""ikemtrain: six-modality contrastive pre-training (MoCo, EKEM, IKEM) on skelmod caches,
teacher–student distillation into a three-stream student, and the deployable student::

    import ikemtrain

    ikemtrain.pretrain("nucla.h5", "runs/pre6", preset="nucla-cpu", split="xview")
    ikemtrain.linear_eval("nucla.h5", "runs/le", encoders=ikemtrain.Encoders.from_run(
        "runs/pre6"), streams=["6s"])
    student = ikemtrain.Student.load("student.pt")
    labels = student.predict(joints, frame_count)  # joints (N, 3, T, 25, M)

The entry points and :class:`Encoders` are :mod:`ikemtrain.api`'s (``docs/api.md``). Every
name is imported on first use, so ``import ikemtrain`` does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # the entry points, one shape (ikemtrain.api)
    "pretrain": "ikemtrain.api",
    "distill": "ikemtrain.api",
    "linear_eval": "ikemtrain.api",
    "knn_eval": "ikemtrain.api",
    "finetune": "ikemtrain.api",
    "export": "ikemtrain.api",
    "describe": "ikemtrain.api",
    "configure": "ikemtrain.api",
    "Encoders": "ikemtrain.api",
    "run_demo": "ikemtrain.demo",
    "write_report": "ikemtrain.report",
    # settings
    "Preset": "ikemtrain.config",
    "load_preset": "ikemtrain.config",
    "preset_names": "ikemtrain.config",
    # the deployable student
    "Student": "ikemtrain.student",
    # what a user can be told (ikemtrain.errors)
    "USER_ERRORS": "ikemtrain.errors",
    "ConfigError": "ikemtrain.errors",
    "CheckpointError": "ikemtrain.errors",
    "OutputError": "ikemtrain.errors",
    "OutputExistsError": "ikemtrain.errors",
    "NonFiniteLossError": "ikemtrain.errors",
    "ReportError": "ikemtrain.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # lazy, so that ``import ikemtrain`` does not import torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ikemtrain' has no attribute {name!r}")
