"""Teacher–student distillation runs (docs/method.md, "Distillation").

:func:`distill` loads a six-modality pre-training run as the teacher (:func:`load_teacher`
refuses anything else with a one-line reason), builds a
:class:`~ikemtrain.methods.distill.DistillModel` and trains the students with the shared loop
(:func:`ikemtrain.engine.loop.run_training`): the same SGD, schedule, seeded order,
per-sample augmentation streams, checkpoints, exact ``resume`` and metrics as pre-training.

The checkpoint (``kind = "distill"``) holds the whole model (teacher included, so a resumed
run needs nothing from the teacher run but its settings), plus:

* ``teacher``: ``{"config": the teacher's PretrainConfig dict}`` (must match on resume);
* ``student``: what rebuilds and feeds the students: ``modalities``, ``backbone`` (with the
  joint ``layout``), ``feature_dim``, ``head_dim``, ``teacher_modalities``, and the modality
  options the students were trained on (``t_target``, ``unit_axis``, ``bones``, ``dataset``);
* ``layout`` and ``num_class``: the cache's, as in a pre-training checkpoint;
* ``teacher_run``: where the teacher came from (for the record).

Views: the loader computes the teacher's six modalities for both augmented views; view 1 goes
to the teacher and view 2 to the students, with the teacher's ``unit_axis`` / ``bones``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from skelmod.cache import CacheReader

from ..config import MODALITY_SETS, ConfigError, DistillConfig, PretrainConfig
from ..data import open_cache
from ..methods.distill import STUDENT_MODALITIES, DistillModel
from .checkpoint import (
    CheckpointError,
    check_layout,
    checkpoint_layout,
    load_run,
    load_weights,
    migrate_modality_options,
)
from .loop import TrainingJob, run_training, training_views

__all__ = ["distill", "load_teacher"]


def load_teacher(run: str | os.PathLike) -> tuple[Path, PretrainConfig, dict[str, Any]]:
    """The teacher: a six-modality pre-training run -> ``(checkpoint, config, state)``.

    Raises CheckpointError (one line) for a linear-evaluation run, a student run, or a run
    pre-trained on other than the six modalities (:func:`distill` also refuses a teacher of
    another joint layout than the cache's).
    """
    path, state = load_run(run)
    kind = state["kind"]
    if kind != "pretrain":
        what = {"distill": "a student (distillation) run", "linear-eval": "linear-eval heads"}
        raise CheckpointError(
            f"{path}: {what.get(kind, f'a {kind!r} checkpoint')}, not a pre-training run; the "
            "teacher must be a six-modality `ikemtrain pretrain` run",
            param="teacher",
        )
    try:
        pcfg = migrate_modality_options(PretrainConfig(**state["config"]))
    except (ConfigError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: unreadable pre-training settings ({e})") from None
    six = MODALITY_SETS[6]
    if set(pcfg.modalities) != set(six):
        raise CheckpointError(
            f"{path}: pre-trained on {len(pcfg.modalities)} modalities "
            f"({', '.join(pcfg.modalities)}); the teacher must be a six-modality run "
            "(pre-trained with modalities 6)",
            param="teacher",
        )
    return path, pcfg, state


def distill(
    cfg: DistillConfig,
    cache: str | os.PathLike | CacheReader,
    teacher: str | os.PathLike,
    out_dir: str | os.PathLike,
    resume: bool = False,
    device: str | torch.device = "auto",
    echo: Callable[[str], None] | None = print,
    tensorboard: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Distil the ``teacher`` run into three students on ``<cfg.split>-train`` of ``cache``.

    Writes ``out_dir/checkpoint.pt`` (every epoch) and ``out_dir/metrics.jsonl``; ``resume``
    continues exactly (the settings and the teacher's settings must match those saved, except
    ``epochs`` and ``workers``); ``overwrite`` replaces a previous distill run in ``out_dir``
    (:mod:`ikemtrain.runfolder`). Returns what :func:`~ikemtrain.engine.loop.pretrain` returns.

    Raises:
        CheckpointError: an unusable teacher (see :func:`load_teacher`) or resume problems;
        CacheError / ConfigError / FileExistsError: as for pre-training.
    """
    teacher_path, pcfg, tstate = load_teacher(teacher)
    if pcfg.head_bn and cfg.batch_size < 2:
        raise ConfigError(
            f"[distill] batch_size: the teacher {teacher_path} has BatchNorm heads (head_bn), "
            f"which need at least 2 samples per batch, got {cfg.batch_size}"
        )
    reader = open_cache(cache)
    check_layout(tstate, reader, teacher_path)
    # the students see what the teacher saw in pre-training: its graph and modality options
    backbone = {**pcfg.backbone, "layout": checkpoint_layout(tstate)}
    unit_axis, bones = pcfg.unit_axis, pcfg.bones
    dataset = training_views(reader, cfg, pcfg.modalities, unit_axis, bones)
    teacher_weights = tstate["model"]
    del tstate

    def build() -> DistillModel:
        model = DistillModel(
            pcfg.modalities,
            STUDENT_MODALITIES,
            backbone=backbone,
            feature_dim=pcfg.feature_dim,
            head_bn=pcfg.head_bn,
            **cfg.model_kwargs(),
        )
        try:
            model.load_teacher(
                teacher_weights, lambda m, w, key: load_weights(m, w, teacher_path, key)
            )
        except KeyError as e:
            raise CheckpointError(f"{teacher_path}: teacher weights do not fit ({e})") from None
        return model

    student = {
        "modalities": list(STUDENT_MODALITIES),
        "teacher_modalities": list(pcfg.modalities),
        "backbone": backbone,
        "feature_dim": pcfg.feature_dim,
        "head_dim": len(pcfg.modalities) * pcfg.feature_dim,
        "head_bn": pcfg.head_bn,
        "t_target": reader.t,
        "unit_axis": unit_axis,
        "bones": bones,
        "dataset": reader.dataset,
    }
    job = TrainingJob(
        kind="distill",
        cfg=cfg,
        dataset=dataset,
        build_model=build,
        loss_names=STUDENT_MODALITIES,
        pairs=lambda d: {u: (d["s"][u], d["t"]) for u in STUDENT_MODALITIES},
        extra={"teacher": {"config": pcfg.to_dict()}, "student": student},
        notes={"teacher_run": str(teacher_path.resolve())},
    )
    return run_training(job, out_dir, resume, device, echo, tensorboard, overwrite)
