"""Run settings for pre-training and linear evaluation, loaded from TOML presets.

A preset is a TOML file with ``[pretrain]``, ``[linear_eval]`` and (optionally) ``[distill]``
and ``[finetune]`` tables whose keys are the fields of :class:`PretrainConfig`,
:class:`LinearEvalConfig`, :class:`DistillConfig` and :class:`FinetuneConfig`. Built-in
presets live in ``ikemtrain/presets/`` (``paper-ntu60``, ``nucla-cpu``, ``tiny``); wherever a
preset name is accepted, a path to a TOML file is accepted too. Every value is checked on
construction, and an error names the file, table, key and value (:class:`ConfigError`).

Config lives at the edge (``style.md``): the library functions of ``ikemtrain.engine`` take
these dataclasses; the model and data classes take plain typed arguments.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from skelmod.layout import (
    BONE_CONVENTIONS,
    MODALITY_NAMES,
    LayoutError,
    ModalityOptions,
    check_modalities,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DISTILL_LOSS_FORMS",
    "MODALITY_SETS",
    "PRECISIONS",
    "COMPILE_MODES",
    "STREAMS",
    "STUDENT_INITS",
    "STUDENT_STREAMS",
    "ConfigError",
    "DistillConfig",
    "FinetuneConfig",
    "LinearEvalConfig",
    "Preset",
    "PretrainConfig",
    "apply_settings",
    "load_preset",
    "lr_at",
    "modality_set",
    "preset_names",
    "stream_modalities",
    "SCHEDULES",
    "cosine_factor",
    "scheduled_lr",
    "warmup_factor",
]

PRESET_DIR = Path(__file__).resolve().parent / "presets"

#: The 3-modality set of the CrosSCLR baseline and the 3s fusion, and the paper's six.
MODALITY_SETS: dict[int, tuple[str, ...]] = {
    3: ("joint", "velocity", "bone"),
    6: tuple(MODALITY_NAMES),
}
#: Linear-evaluation streams of a student run (``ikemtrain distill``): one student encoder
#: (``student-<modality>``) or ``3s``, the three students fused ("3s-Student").
STUDENT_STREAMS: dict[str, tuple[str, ...]] = {
    **{f"student-{m}": (m,) for m in MODALITY_SETS[3]},
    "3s": MODALITY_SETS[3],
}
#: How distillation's students start (``DistillConfig.student_init``): fresh encoders, or
#: copies of the teacher's encoders of their modalities (a departure).
STUDENT_INITS = ("random", "teacher")
#: Forms of the distillation loss (``DistillConfig.loss_form``, ``losses.distill_loss``): as
#: the reference implements it, or the paper's eq. 7-8.
DISTILL_LOSS_FORMS = ("implemented", "paper")
#: Precisions of the encoders in training (``precision`` setting; ``ikemtrain.nn.streams``):
#: float32, or bfloat16 autocast of the encoders only (heads, queues and losses stay float32).
PRECISIONS = ("fp32", "bf16")
#: Compilation of the encoders in training (``compile`` setting; ``ikemtrain.nn.streams``):
#: none (eager), or a ``torch.compile`` mode; ``reduce-overhead`` adds CUDA graphs (GPU only).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
#: Learning-rate schedules of the training loop (``schedule`` in ``[pretrain]``, ``[distill]``,
#: ``[finetune]``): the paper's step rule, or cosine decay (a departure).
SCHEDULES = ("step", "cosine")
#: Linear-evaluation streams: one modality, or a fusion of several (mean of logits).
#: ``student-*`` streams need a student run.
STREAMS: dict[str, tuple[str, ...]] = {
    **{m: (m,) for m in MODALITY_NAMES},
    "3s": MODALITY_SETS[3],
    "6s": MODALITY_SETS[6],
    **STUDENT_STREAMS,
}


class ConfigError(ValueError):
    """A bad setting: names where it came from, the key and the offending value."""


def modality_set(spec: int | str | Sequence[str]) -> tuple[str, ...]:
    """Modalities from ``3`` / ``6`` (or ``"3"`` / ``"6"``), or from a list of names."""
    if isinstance(spec, bool):
        raise ConfigError(f"modalities: expected 3, 6 or a list of names, got {spec!r}")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        n = int(spec)
        if n not in MODALITY_SETS:
            raise ConfigError(f"modalities: expected 3 or 6, got {spec!r}")
        return MODALITY_SETS[n]
    try:
        return check_modalities(spec, allow_all=False)
    except LayoutError as e:
        raise ConfigError(f"modalities: {e}") from None


def stream_modalities(stream: str) -> tuple[str, ...]:
    """Modalities a linear-evaluation stream needs: a modality name, ``"3s"`` or ``"6s"``."""
    if stream not in STREAMS:
        raise ConfigError(f"streams: unknown {stream!r}; expected one of {', '.join(STREAMS)}")
    return STREAMS[stream]


def lr_at(base_lr: float, steps: Sequence[int], epoch: int) -> float:
    """Step schedule of pre-training and linear evaluation:
    ``base_lr · 0.1^{#(epoch > step)}``, with 1-based epochs."""
    return base_lr * 0.1 ** sum(epoch > s for s in steps)


def warmup_factor(warmup_epochs: int, epoch: int, iteration: int, iterations: int) -> float:
    """Linear warm-up (a departure; MoCo v3, SimCLR): the factor on the scheduled lr at
    ``iteration`` (0-based) of ``epoch`` (1-based), each epoch having ``iterations`` steps:
    ``(step + 1) / (warmup_epochs * iterations)`` for the first ``warmup_epochs`` epochs'
    steps, then 1. ``warmup_epochs = 0`` is the paper's schedule (always 1)."""
    total = warmup_epochs * iterations
    step = (epoch - 1) * iterations + iteration
    return 1.0 if step >= total else (step + 1) / total


def cosine_factor(step: int, start: int, total: int) -> float:
    """Cosine decay (SGDR, Loshchilov & Hutter 2017, without restarts; MoCo v3, SimCLR): the
    factor on the base lr at global ``step`` (0-based) of ``total``, decaying from 1 at
    ``start`` (the first step after the warm-up) towards 0 at ``total``:
    ``0.5 * (1 + cos(pi * (step - start) / (total - start)))``."""
    span = total - start
    if span <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(max(step - start, 0), span) / span))


def scheduled_lr(cfg: Any, epoch: int, iteration: int, iterations: int) -> float:
    """The learning rate of ``iteration`` (0-based) of ``epoch`` (1-based), each epoch having
    ``iterations`` steps, under the settings ``cfg`` (``lr``, ``steps``, ``epochs`` and, where
    the settings have them, ``schedule`` and ``warmup_epochs``).

    ``schedule = "step"`` (the paper's): :func:`lr_at` for the epoch, times the linear
    :func:`warmup_factor` inside the warm-up. ``"cosine"``: the same warm-up, then
    :func:`cosine_factor` from the first step after it to the last step of the run; ``steps``
    is not used. A pure function of its arguments, so a resumed run gets each step's lr exactly
    as an uninterrupted one."""
    warmup = getattr(cfg, "warmup_epochs", 0)
    factor = warmup_factor(warmup, epoch, iteration, iterations)
    if getattr(cfg, "schedule", "step") == "step":
        return lr_at(cfg.lr, cfg.steps, epoch) * factor
    step = (epoch - 1) * iterations + iteration
    start = warmup * iterations
    if step < start:
        return cfg.lr * factor
    return cfg.lr * cosine_factor(step, start, cfg.epochs * iterations)


# --- value checks ---------------------------------------------------------------------------
# Each check takes a TOML value and returns the clean one, or raises ValueError saying what was
# expected; the field it belongs to is declared with it (:func:`setting`).

Check = Callable[[Any], Any]


def _int(v: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ValueError(f"expected an integer >= {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"expected an integer <= {hi} (the limit), got {v!r}")
    return v


def _float(v: Any, lo: float | None = None, hi: float | None = None, open_lo=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {v!r}")
    v = float(v)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number, got {v!r}")
    if lo is not None and (v <= lo if open_lo else v < lo):
        raise ValueError(f"expected a number {'>' if open_lo else '>='} {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"expected a number <= {hi}, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _steps(v: Any) -> tuple[int, ...]:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        raise ValueError(f"expected a list of epochs, got {v!r}")
    out = tuple(_int(s, 0) for s in v)
    if list(out) != sorted(out):
        raise ValueError(f"expected increasing epochs, got {list(out)}")
    return out


def _choice(*allowed: str | None) -> Check:
    def check(v: Any) -> str | None:
        if v not in allowed:
            named = ", ".join(a for a in allowed if a is not None)
            raise ValueError(f"expected one of {named}, got {v!r}")
        return v

    return check


def _modalities(v: Any) -> tuple[str, ...]:
    try:
        return modality_set(v)
    except ConfigError as e:
        raise ValueError(str(e).removeprefix("modalities: ")) from None


def _modalities_or_empty(v: Any) -> tuple[str, ...]:
    """Like ``_modalities``, and an empty list (or ``""``) is no modality at all."""
    if isinstance(v, (list, tuple)) and not v or v == "":
        return ()
    return _modalities(v)


def _split(v: Any) -> str:
    if not isinstance(v, str) or not v or "-" in v:
        raise ValueError(f"expected a benchmark name such as 'xsub' or 'xview', got {v!r}")
    return v


def _optional_bool(v: Any) -> bool | None:
    return None if v is None else _bool(v)


def _integer(lo: int | None = None, hi: int | None = None) -> Check:
    return lambda v: _int(v, lo, hi)


def _number(lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> Check:
    return lambda v: _float(v, lo, hi, open_lo)


_ANY_INT = _integer()
_COUNT = _integer(0)  # seeds, workers, epochs that may be 0
_AT_LEAST_ONE = _integer(1)

# Bounds of the model's sizes, stated once (the data's are in skelmod.limits): far above the
# paper's (hidden 16 / 256, feature 128, queue 32768, batch 128) and below what exhausts a
# machine when a preset or a checkpoint's config asks for it.
#: hidden_channels (the first ST-GCN width; the last is 16 times it)
MAX_CHANNELS = 256
#: hidden_dim, feature_dim
MAX_WIDTH = 8192
#: queue_size (negatives per modality)
MAX_QUEUE = 1 << 20
#: batch sizes
MAX_BATCH = 1 << 16
_CHANNELS = _integer(1, MAX_CHANNELS)


def check_backbone(backbone: Mapping[str, Any], where: str = "backbone") -> None:
    """ConfigError naming ``where`` when STGCN kwargs (a checkpoint's or a student file's,
    which no preset check has seen) ask for widths beyond :data:`MAX_CHANNELS` /
    :data:`MAX_WIDTH`; checked before a module of that size is built."""
    for key, limit in (("hidden_channels", MAX_CHANNELS), ("hidden_dim", MAX_WIDTH)):
        value = backbone.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ConfigError(f"{where} {key} must be an integer in 1 .. {limit}, found {value!r}")


_WIDTH = _integer(1, MAX_WIDTH)
_QUEUE = _integer(1, MAX_QUEUE)
_QUEUE_OR_AUTO = _integer(0, MAX_QUEUE)  # 0: sized to the data (resolve_queue_size)
_BATCH = _integer(1, MAX_BATCH)
_POSITIVE = _number(0.0, open_lo=True)
_NON_NEGATIVE = _number(0.0)
_UNIT_INTERVAL = _number(0.0, 1.0)
_DEGREES = _number(0.0, 180.0)
_FRACTION = _number(0.0, 1.0, open_lo=True)


def setting(default: Any, check: Check) -> Any:
    """A settings field: its default (the paper's value, or the reference's behaviour) and the
    check every value of it passes, TOML or keyword, on construction."""
    return field(default=default, metadata={"check": check})


def _validate(obj: Any, table: str) -> None:
    for f in dataclasses.fields(obj):
        if "check" not in f.metadata:  # a programming error, caught by the first construction
            raise TypeError(
                f"{type(obj).__name__}.{f.name} has no check; declare it with setting()"
            )
        value = getattr(obj, f.name)
        try:
            clean = f.metadata["check"](value)
        except ValueError as e:
            raise ConfigError(f"[{table}] {f.name}: {e}") from None
        object.__setattr__(obj, f.name, clean)


class _Settings:
    """What every settings table shares: checked on construction, ``replace``, ``to_dict``.

    Subclasses are frozen dataclasses naming their TOML table; every field is declared with
    :func:`setting`, which attaches its check.
    """

    _TABLE: ClassVar[str]

    def __post_init__(self) -> None:
        _validate(self, self._TABLE)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (validated); ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# The paper's settings are stated once, as the defaults below (docs/method.md, one
# section each; the ``paper-ntu60`` preset adds only what is not the paper's method). A preset
# states only what differs from them. A departure from the reference is off by default.


@dataclass(frozen=True)
class PretrainConfig(_Settings):
    """Pre-training settings; the defaults are the paper's (docs/method.md)."""

    modalities: tuple[str, ...] = setting(MODALITY_SETS[6], _modalities)
    #: benchmark; pre-training reads ``<split>-train``
    split: str = setting("xsub", _split)
    epochs: int = setting(300, _AT_LEAST_ONE)
    #: stage 1 while epoch <= cross_epoch (1-based), then stage 2
    cross_epoch: int = setting(150, _COUNT)
    lr: float = setting(0.1, _POSITIVE)
    steps: tuple[int, ...] = setting((250,), _steps)
    #: ``"step"``: ×0.1 after each of ``steps`` (the paper's); departure ``"cosine"``: cosine
    #: decay to 0 over the run after the warm-up (``steps`` unused)
    schedule: str = setting("step", _choice(*SCHEDULES))
    #: departure (CPU presets): the lr rises linearly over this many epochs' steps (0: none)
    warmup_epochs: int = setting(0, _COUNT)
    #: the run's length in optimiser steps (0: ``epochs`` as given): the epochs, and with them
    #: cross_epoch, the lr steps and the warm-up, are stretched to give at least this many
    #: steps on the training split at hand (``resolve_run_length``)
    total_steps: int = setting(0, _COUNT)
    batch_size: int = setting(128, _BATCH)
    weight_decay: float = setting(1e-4, _NON_NEGATIVE)
    sgd_momentum: float = setting(0.9, _UNIT_INTERVAL)
    #: keys per queue; 0 (auto): the largest power of two at most half of what one epoch
    #: enqueues beyond the batch, ``(n_train - batch_size) / 2`` (``resolve_queue_size``)
    queue_size: int = setting(32768, _QUEUE_OR_AUTO)
    #: MoCo key-encoder momentum
    momentum: float = setting(0.999, _UNIT_INTERVAL)
    tau: float = setting(0.07, _POSITIVE)
    topk: int = setting(1, _AT_LEAST_ONE)
    context: bool = setting(True, _bool)
    ekem: bool = setting(True, _bool)
    ikem: bool = setting(True, _bool)
    reference_compat: bool = setting(False, _bool)
    #: departure (CPU presets): BatchNorm in the projection heads, as SimCLR / MoCo v3
    head_bn: bool = setting(False, _bool)
    #: key encoders held fixed in stage 2 (the "high-performance modalities"); departure
    #: ``[]``: every key encoder stays a momentum average of its query encoder, as in stage 1
    frozen_keys: tuple[str, ...] = setting(("joint", "bone", "rotation_axis"), _modalities_or_empty)
    hidden_channels: int = setting(16, _CHANNELS)
    hidden_dim: int = setting(256, _WIDTH)
    feature_dim: int = setting(128, _WIDTH)
    dropout: float = setting(0.5, _UNIT_INTERVAL)
    crop_ratio: int = setting(6, _ANY_INT)
    shear: float = setting(0.5, _NON_NEGATIVE)
    #: departure (CPU presets): random rotation about the vertical axis, up to this many degrees
    rotation: float = setting(0.0, _DEGREES)
    #: Modality options (``skelmod.layout.ModalityOptions``): None takes the cache's; a value
    #: must match the cache's, or pre-training refuses to start.
    unit_axis: bool | None = setting(None, _optional_bool)
    bones: str | None = setting(None, _choice(None, *BONE_CONVENTIONS))
    seed: int = setting(0, _COUNT)
    workers: int = setting(2, _COUNT)
    #: speed option: "bf16" runs the encoders under bfloat16 autocast (``ikemtrain.nn.streams``)
    precision: str = setting("fp32", _choice(*PRECISIONS))
    #: speed option: each encoder compiled with this ``torch.compile`` mode ("none": eager);
    #: compiled encoders run one stream at a time (torch.compile is not thread-safe)
    compile: str = setting("none", _choice(*COMPILE_MODES))
    #: speed option: the six encoders of a step run side by side on this many threads, one
    #: intra-op thread each; 0 (auto): one per core on a one-process CPU run without dropout
    stream_threads: int = setting(0, _COUNT)
    #: kNN top-1 of held training samples every this many epochs (0: off; stretched with the
    #: epochs by ``total_steps``), beside the random encoders' value printed at the start
    #: (``ikemtrain.engine.monitor``)
    monitor_every: int = setting(1, _COUNT)
    #: training samples the kNN monitor embeds (a quarter of them are its queries)
    monitor_samples: int = setting(512, _AT_LEAST_ONE)

    _TABLE: ClassVar[str] = "pretrain"

    @property
    def modality_options(self) -> ModalityOptions:
        """The options set here, resolved (:meth:`skelmod.layout.ModalityOptions.resolve`;
        None: the reference's). Pre-training first sets them from the cache."""
        return ModalityOptions.resolve(bones=self.bones, unit_axis=self.unit_axis)

    def __post_init__(self) -> None:
        super().__post_init__()
        # combinations the model refuses, named here so they are settings errors
        if not (self.ekem or self.ikem):
            raise ConfigError("[pretrain] ekem, ikem: at least one must be true (stage 2's loss)")
        if self.queue_size and self.topk > self.queue_size:
            raise ConfigError(
                f"[pretrain] topk: expected at most queue_size ({self.queue_size}), got {self.topk}"
            )
        if self.head_bn and self.batch_size < 2:
            raise ConfigError(
                "[pretrain] batch_size: BatchNorm heads (head_bn) need at least 2 samples per "
                f"batch, got {self.batch_size}"
            )

    @property
    def backbone(self) -> dict[str, Any]:
        """Keyword arguments of ``ikemtrain.nn.stgcn.STGCN``."""
        return {
            "hidden_channels": self.hidden_channels,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
        }

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``ikemtrain.methods.pretrain.PretrainModel``."""
        return {
            "backbone": self.backbone,
            "feature_dim": self.feature_dim,
            "queue_size": self.queue_size,
            "momentum": self.momentum,
            "tau": self.tau,
            "topk": self.topk,
            "context": self.context,
            "ekem": self.ekem,
            "ikem": self.ikem,
            "frozen_keys": tuple(m for m in self.frozen_keys if m in self.modalities),
            "reference_compat": self.reference_compat,
            "head_bn": self.head_bn,
        }


@dataclass(frozen=True)
class DistillConfig(_Settings):
    """Teacher–student distillation settings; the defaults are the paper's
    (docs/method.md, "Distillation"; ``ts_crossclr_6views.yaml``: 150 epochs, SGD lr 0.1 ×0.1
    after epoch 125).

    The network sizes are not here: the students take the teacher's backbone, and their heads
    are ``hidden_dim -> D -> D`` with ``D = n_teacher_modalities * feature_dim`` (no head-size
    literals), both read from the teacher run. ``loss_form``: ``"implemented"`` is the authors'
    loss (mean of log-probabilities over three positives, ``S^u`` in the denominator, mean over
    the teacher modalities); ``"paper"`` is eq. 7-8 (log of summed probabilities over the
    positive and the mined negative, product block only, sum over the teacher modalities).
    ``reference_compat`` replicates the Ω bank bug (the Omega similarities use the bone bank)
    and the teacher mode bug (teacher in train mode).
    """

    #: benchmark; distillation reads ``<split>-train``
    split: str = setting("xsub", _split)
    epochs: int = setting(150, _AT_LEAST_ONE)
    lr: float = setting(0.1, _POSITIVE)
    steps: tuple[int, ...] = setting((125,), _steps)
    #: ``"step"``: ×0.1 after each of ``steps`` (the paper's); departure ``"cosine"``: cosine
    #: decay to 0 over the run after the warm-up (``steps`` unused)
    schedule: str = setting("step", _choice(*SCHEDULES))
    #: departure (CPU presets): the lr rises linearly over this many epochs' steps (0: none)
    warmup_epochs: int = setting(0, _COUNT)
    batch_size: int = setting(128, _BATCH)
    weight_decay: float = setting(1e-4, _NON_NEGATIVE)
    sgd_momentum: float = setting(0.9, _UNIT_INTERVAL)
    queue_size: int = setting(32768, _QUEUE)
    tau: float = setting(0.07, _POSITIVE)
    topk: int = setting(1, _AT_LEAST_ONE)
    context: bool = setting(True, _bool)
    loss_form: str = setting("implemented", _choice(*DISTILL_LOSS_FORMS))
    reference_compat: bool = setting(False, _bool)
    crop_ratio: int = setting(6, _ANY_INT)
    shear: float = setting(0.5, _NON_NEGATIVE)
    #: departure (CPU presets): random rotation about the vertical axis, up to this many degrees
    rotation: float = setting(0.0, _DEGREES)
    #: ``"random"``: fresh student encoders; departure ``"teacher"``: each student's
    #: encoder starts as a copy of the teacher's encoder of its modality (its head stays fresh)
    student_init: str = setting("random", _choice(*STUDENT_INITS))
    seed: int = setting(0, _COUNT)
    workers: int = setting(2, _COUNT)
    #: speed options, as in [pretrain]: bfloat16 encoders, and the encoders side by side
    precision: str = setting("fp32", _choice(*PRECISIONS))
    compile: str = setting("none", _choice(*COMPILE_MODES))
    stream_threads: int = setting(0, _COUNT)

    _TABLE: ClassVar[str] = "distill"

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``ikemtrain.methods.distill.DistillModel`` set here; the
        network sizes and ``head_bn`` are the teacher's."""
        return {
            "queue_size": self.queue_size,
            "tau": self.tau,
            "topk": self.topk,
            "context": self.context,
            "loss_form": self.loss_form,
            "reference_compat": self.reference_compat,
            "student_init": self.student_init,
        }


@dataclass(frozen=True)
class LinearEvalConfig(_Settings):
    """Linear-evaluation settings; the defaults are the paper's
    (docs/method.md, "Linear evaluation": SGD lr 3.0 ×0.1 after epoch 80, 100 epochs, batch 128,
    no weight decay)."""

    epochs: int = setting(100, _AT_LEAST_ONE)
    lr: float = setting(3.0, _POSITIVE)
    steps: tuple[int, ...] = setting((80,), _steps)
    batch_size: int = setting(128, _BATCH)
    eval_batch_size: int = setting(128, _BATCH)
    weight_decay: float = setting(0.0, _NON_NEGATIVE)
    sgd_momentum: float = setting(0.9, _UNIT_INTERVAL)
    eval_interval: int = setting(5, _AT_LEAST_ONE)
    seed: int = setting(0, _COUNT)
    #: departure (CPU presets): z-score each feature with its mean and std over the training
    #: split before the classifier (a BatchNorm without affine, as the MAE / MoCo v3 probes),
    #: for pre-trained and random encoders alike, so the probe does not depend on the scale
    standardize: bool = setting(False, _bool)

    _TABLE: ClassVar[str] = "linear_eval"


@dataclass(frozen=True)
class FinetuneConfig(_Settings):
    """Fine-tuning settings: whole encoders and a linear classifier trained end to end with
    cross-entropy on a seeded, class-balanced fraction of the training labels.

    The paper reports no fine-tuning; the defaults are its linear-evaluation schedule (100
    epochs, lr 0.1 ×0.1 after epoch 80, Sec. 3.2 of the paper) with its optimiser (SGD, momentum
    0.9, weight decay 1e-4, batch 128). ``label_fraction`` in (0, 1]: 1.0 is full fine-tuning,
    0.01 and 0.1 the usual semi-supervised settings.
    """

    label_fraction: float = setting(1.0, _FRACTION)
    epochs: int = setting(100, _AT_LEAST_ONE)
    lr: float = setting(0.1, _POSITIVE)
    steps: tuple[int, ...] = setting((80,), _steps)
    #: ``"step"``: ×0.1 after each of ``steps``; ``"cosine"``: cosine decay to 0 over the run
    #: (``steps`` unused)
    schedule: str = setting("step", _choice(*SCHEDULES))
    batch_size: int = setting(128, _BATCH)
    eval_batch_size: int = setting(128, _BATCH)
    weight_decay: float = setting(1e-4, _NON_NEGATIVE)
    sgd_momentum: float = setting(0.9, _UNIT_INTERVAL)
    eval_interval: int = setting(5, _AT_LEAST_ONE)
    seed: int = setting(0, _COUNT)
    workers: int = setting(2, _COUNT)

    _TABLE: ClassVar[str] = "finetune"


def asdict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@dataclass(frozen=True)
class Preset:
    """Named settings; ``pretrain`` also gives the backbone for ``--random-init``."""

    name: str
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    linear_eval: LinearEvalConfig = field(default_factory=LinearEvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _table(cls: type, data: Any, table: str, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: [{table}] must be a table, got {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: [{table}] unknown key {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    try:
        return cls(**data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_preset(name_or_path: str | os.PathLike) -> Preset:
    """Load a built-in preset by name (``tiny``, ``paper-ntu60``) or a TOML file by path.

    Raises:
        ConfigError: unknown preset, unreadable TOML, unknown table or key, or a bad value.
    """
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".toml" or os.sep in text or path.exists()):
        path = PRESET_DIR / f"{text}.toml"
        if not path.exists():
            raise ConfigError(
                f"unknown preset {text!r}; built-in presets: {', '.join(preset_names())} "
                "(or give the path of a TOML file)"
            )
    if not path.is_file():
        raise ConfigError(f"preset file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - {"pretrain", "linear_eval", "distill", "finetune"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown table {', '.join(map(repr, unknown))}; expected [pretrain], "
            "[linear_eval], [distill] and [finetune]"
        )
    return Preset(
        name=path.stem,
        pretrain=_table(PretrainConfig, data.get("pretrain", {}), "pretrain", str(path)),
        linear_eval=_table(LinearEvalConfig, data.get("linear_eval", {}), "linear_eval", str(path)),
        distill=_table(DistillConfig, data.get("distill", {}), "distill", str(path)),
        finetune=_table(FinetuneConfig, data.get("finetune", {}), "finetune", str(path)),
    )


#: The tables of a preset, in the order ``--set`` lists them.
TABLES: dict[str, type] = {
    "pretrain": PretrainConfig,
    "linear_eval": LinearEvalConfig,
    "distill": DistillConfig,
    "finetune": FinetuneConfig,
}


def _setting_value(text: str) -> Any:
    """A ``--set`` value as TOML would read it (``0.05``, ``true``, ``[100, 200]``,
    ``"xview"``); anything that is not a TOML value is a bare string (``cosine``, ``3v``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def apply_settings(preset: Preset, assignments: Sequence[str], source: str = "settings") -> Preset:
    """``preset`` with ``SECTION.KEY=VALUE`` assignments applied, in order (``--set``);
    ``source`` opens the message of a bad value (``"--set"`` for the command line).

    SECTION is a preset table (``pretrain``, ``linear_eval``, ``distill``, ``finetune``), KEY
    one of its fields, VALUE a TOML value or a bare string (``pretrain.lr=0.05``,
    ``pretrain.steps=[100,200]``, ``pretrain.schedule=cosine``). Every value passes the same
    checks as a preset's.

    Raises:
        ConfigError: a malformed assignment, an unknown table or key, or a bad value; the
            message names the assignment.
    """
    changes: dict[str, Any] = {}
    for text in assignments:
        target, eq, value = text.partition("=")
        table, dot, key = target.strip().partition(".")
        if not (eq and dot and table and key):
            raise ConfigError(f"{text!r}: expected SECTION.KEY=VALUE, e.g. pretrain.lr=0.05")
        if table not in TABLES:
            raise ConfigError(
                f"{text!r}: unknown table {table!r}; expected one of {', '.join(TABLES)}"
            )
        changes[f"{table}.{key}"] = _setting_value(value)
    return override_settings(preset, changes, source)


def override_settings(
    preset: Preset, changes: Mapping[str, Any], source: str = "override"
) -> Preset:
    """``preset`` with ``{"SECTION.KEY": value}`` applied, in order: the Python form of
    ``--set`` (values as Python objects: ``0.05``, ``[100, 200]``, ``("joint", "bone")``).

    Every value passes the same checks as a preset's; ``source`` opens the message of an
    error (``"--set"`` for the command line).

    Raises:
        ConfigError: a key that is not ``SECTION.KEY``, an unknown table or key, or a bad
            value; the message names the assignment.
    """
    grouped: dict[str, dict[str, Any]] = {}
    for target, value in changes.items():
        table, dot, key = str(target).partition(".")
        if not (dot and table and key):
            raise ConfigError(f"{target!r}: expected SECTION.KEY, e.g. pretrain.lr")
        if table not in TABLES:
            raise ConfigError(
                f"{target!r}: unknown table {table!r}; expected one of {', '.join(TABLES)}"
            )
        grouped.setdefault(table, {})[key] = value
    if not grouped:
        return preset
    tables = {}
    for table, values in grouped.items():
        data = {**getattr(preset, table).to_dict(), **values}
        shown = ", ".join(f"{table}.{k}={v!r}" for k, v in values.items())
        tables[table] = _table(TABLES[table], data, table, f"{source} {shown}")
    return dataclasses.replace(preset, **tables)
