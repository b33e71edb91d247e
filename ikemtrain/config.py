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
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from skelmod.layout import BONE_CONVENTIONS, MODALITY_NAMES, LayoutError, check_modalities

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "MODALITY_SETS",
    "STREAMS",
    "STUDENT_STREAMS",
    "ConfigError",
    "DistillConfig",
    "FinetuneConfig",
    "LinearEvalConfig",
    "Preset",
    "PretrainConfig",
    "load_preset",
    "lr_at",
    "modality_set",
    "preset_names",
    "stream_modalities",
]

PRESET_DIR = Path(__file__).resolve().parent / "presets"

#: The 3-modality set of the CrosSCLR baseline and the 3s fusion, and the paper's six.
MODALITY_SETS: dict[int, tuple[str, ...]] = {
    3: ("joint", "velocity", "bone"),
    6: tuple(MODALITY_NAMES),
}
#: Linear-evaluation streams of a student run (``ikemtrain distill``): one student encoder
#: (``student-<modality>``) or ``3s``, the three students fused (§8 "3s-Student").
STUDENT_STREAMS: dict[str, tuple[str, ...]] = {
    **{f"student-{m}": (m,) for m in MODALITY_SETS[3]},
    "3s": MODALITY_SETS[3],
}
#: Linear-evaluation streams: one modality, or a fusion of several (mean of logits, §8).
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
    """Step schedule of §6/§8: ``base_lr · 0.1^{#(epoch > step)}``, with 1-based epochs."""
    return base_lr * 0.1 ** sum(epoch > s for s in steps)


# --- value checks ---------------------------------------------------------------------------


def _int(v: Any, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ValueError(f"expected an integer >= {lo}, got {v!r}")
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


def _choice(*allowed: str | None):
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


def _split(v: Any) -> str:
    if not isinstance(v, str) or not v or "-" in v:
        raise ValueError(f"expected a benchmark name such as 'xsub' or 'xview', got {v!r}")
    return v


_PRETRAIN_CHECKS = {
    "modalities": _modalities,
    "split": _split,
    "epochs": lambda v: _int(v, 1),
    "cross_epoch": lambda v: _int(v, 0),
    "lr": lambda v: _float(v, 0.0, open_lo=True),
    "steps": _steps,
    "batch_size": lambda v: _int(v, 1),
    "weight_decay": lambda v: _float(v, 0.0),
    "sgd_momentum": lambda v: _float(v, 0.0, 1.0),
    "queue_size": lambda v: _int(v, 1),
    "momentum": lambda v: _float(v, 0.0, 1.0),
    "tau": lambda v: _float(v, 0.0, open_lo=True),
    "topk": lambda v: _int(v, 1),
    "context": _bool,
    "ekem": _bool,
    "ikem": _bool,
    "reference_compat": _bool,
    "head_bn": _bool,
    "frozen_keys": _modalities,
    "hidden_channels": lambda v: _int(v, 1),
    "hidden_dim": lambda v: _int(v, 1),
    "feature_dim": lambda v: _int(v, 1),
    "dropout": lambda v: _float(v, 0.0, 1.0),
    "crop_ratio": lambda v: _int(v),
    "shear": lambda v: _float(v, 0.0),
    "rotation": lambda v: _float(v, 0.0, 180.0),
    "unit_axis": lambda v: None if v is None else _bool(v),
    "bones": _choice(None, *BONE_CONVENTIONS),
    "seed": lambda v: _int(v, 0),
    "workers": lambda v: _int(v, 0),
}

_DISTILL_CHECKS = {
    "split": _split,
    "epochs": lambda v: _int(v, 1),
    "lr": lambda v: _float(v, 0.0, open_lo=True),
    "steps": _steps,
    "batch_size": lambda v: _int(v, 1),
    "weight_decay": lambda v: _float(v, 0.0),
    "sgd_momentum": lambda v: _float(v, 0.0, 1.0),
    "queue_size": lambda v: _int(v, 1),
    "tau": lambda v: _float(v, 0.0, open_lo=True),
    "topk": lambda v: _int(v, 1),
    "context": _bool,
    "loss_form": _choice("implemented", "paper"),
    "reference_compat": _bool,
    "crop_ratio": lambda v: _int(v),
    "shear": lambda v: _float(v, 0.0),
    "rotation": lambda v: _float(v, 0.0, 180.0),
    "seed": lambda v: _int(v, 0),
    "workers": lambda v: _int(v, 0),
}

_LINEAR_EVAL_CHECKS = {
    "epochs": lambda v: _int(v, 1),
    "lr": lambda v: _float(v, 0.0, open_lo=True),
    "steps": _steps,
    "batch_size": lambda v: _int(v, 1),
    "eval_batch_size": lambda v: _int(v, 1),
    "weight_decay": lambda v: _float(v, 0.0),
    "sgd_momentum": lambda v: _float(v, 0.0, 1.0),
    "eval_interval": lambda v: _int(v, 1),
    "seed": lambda v: _int(v, 0),
    "standardize": _bool,
}

_FINETUNE_CHECKS = {
    "label_fraction": lambda v: _float(v, 0.0, 1.0, open_lo=True),
    **{k: check for k, check in _LINEAR_EVAL_CHECKS.items() if k != "standardize"},
    "workers": lambda v: _int(v, 0),
}


def _validate(obj: Any, checks: Mapping[str, Any], table: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        try:
            clean = checks[f.name](value)
        except ValueError as e:
            raise ConfigError(f"[{table}] {f.name}: {e}") from None
        object.__setattr__(obj, f.name, clean)


class _Settings:
    """What every settings table shares: checked on construction, ``replace``, ``to_dict``.

    Subclasses are frozen dataclasses naming their TOML table and value checks.
    """

    _TABLE: ClassVar[str]
    _CHECKS: ClassVar[Mapping[str, Any]]

    def __post_init__(self) -> None:
        _validate(self, self._CHECKS, self._TABLE)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (validated); ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PretrainConfig(_Settings):
    """Pre-training settings (§6 defaults; the paper's run is the ``paper-ntu60`` preset)."""

    modalities: tuple[str, ...] = MODALITY_SETS[6]
    split: str = "xsub"  #: benchmark; pre-training reads ``<split>-train``
    epochs: int = 300
    cross_epoch: int = 150  #: stage 1 while epoch <= cross_epoch (1-based), then stage 2
    lr: float = 0.1
    steps: tuple[int, ...] = (250,)
    batch_size: int = 128
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    queue_size: int = 32768
    momentum: float = 0.999  #: MoCo key-encoder momentum
    tau: float = 0.07
    topk: int = 1
    context: bool = True
    ekem: bool = True
    ikem: bool = True
    reference_compat: bool = False
    #: departure (CPU presets): BatchNorm in the projection heads, as SimCLR / MoCo v3
    head_bn: bool = False
    frozen_keys: tuple[str, ...] = ("joint", "bone", "rotation_axis")
    hidden_channels: int = 16
    hidden_dim: int = 256
    feature_dim: int = 128
    dropout: float = 0.5
    crop_ratio: int = 6
    shear: float = 0.5
    #: departure (CPU presets): random rotation about the vertical axis, up to this many degrees
    rotation: float = 0.0
    #: Modality options (``skelmod.layout.ModalityOptions``): None takes the cache's; a value
    #: must match the cache's, or pre-training refuses to start.
    unit_axis: bool | None = None
    bones: str | None = None
    seed: int = 0
    workers: int = 2

    _TABLE: ClassVar[str] = "pretrain"
    _CHECKS: ClassVar[Mapping[str, Any]] = _PRETRAIN_CHECKS

    def __post_init__(self) -> None:
        super().__post_init__()
        # combinations the model refuses, named here so they are settings errors
        if not (self.ekem or self.ikem):
            raise ConfigError("[pretrain] ekem, ikem: at least one must be true (stage 2's loss)")
        if self.topk > self.queue_size:
            raise ConfigError(
                f"[pretrain] topk: expected at most queue_size ({self.queue_size}), got {self.topk}"
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
    """Teacher–student distillation settings (§7 defaults; ``paper-ntu60`` has the paper's).

    The network sizes are not here: the students take the teacher's backbone, and their heads
    are ``hidden_dim -> D -> D`` with ``D = n_teacher_modalities * feature_dim`` (bug 12), both
    read from the teacher run. ``loss_form``: ``"implemented"`` is §7 "as implemented" (mean of
    log-probabilities over three positives, ``S^u`` in the denominator, mean over the teacher
    modalities); ``"paper"`` is eq. 7-8 (log of summed probabilities over the positive and the
    mined negative, product block only, sum over the teacher modalities). ``reference_compat``
    replicates bugs 1 (the Omega similarities use the bone bank) and 13 (teacher in train mode).
    """

    split: str = "xsub"  #: benchmark; distillation reads ``<split>-train``
    epochs: int = 150
    lr: float = 0.1
    steps: tuple[int, ...] = (125,)
    batch_size: int = 128
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    queue_size: int = 32768
    tau: float = 0.07
    topk: int = 1
    context: bool = True
    loss_form: str = "implemented"
    reference_compat: bool = False
    crop_ratio: int = 6
    shear: float = 0.5
    #: departure (CPU presets): random rotation about the vertical axis, up to this many degrees
    rotation: float = 0.0
    seed: int = 0
    workers: int = 2

    _TABLE: ClassVar[str] = "distill"
    _CHECKS: ClassVar[Mapping[str, Any]] = _DISTILL_CHECKS


@dataclass(frozen=True)
class LinearEvalConfig(_Settings):
    """Linear-evaluation settings (§8: SGD lr 3.0 ×0.1 at 80, 100 epochs, batch 128)."""

    epochs: int = 100
    lr: float = 3.0
    steps: tuple[int, ...] = (80,)
    batch_size: int = 128
    eval_batch_size: int = 128
    weight_decay: float = 0.0
    sgd_momentum: float = 0.9
    eval_interval: int = 5
    seed: int = 0
    #: departure (CPU presets): z-score each feature with its mean and std over the training
    #: split before the classifier (a BatchNorm without affine, as the MAE / MoCo v3 probes),
    #: for pre-trained and random encoders alike, so the probe does not depend on the scale
    standardize: bool = False

    _TABLE: ClassVar[str] = "linear_eval"
    _CHECKS: ClassVar[Mapping[str, Any]] = _LINEAR_EVAL_CHECKS


@dataclass(frozen=True)
class FinetuneConfig(_Settings):
    """Fine-tuning settings: whole encoders and a linear classifier trained end to end with
    cross-entropy on a seeded, class-balanced fraction of the training labels.

    The paper reports no fine-tuning; the defaults (``paper-ntu60``) are its linear-evaluation
    schedule (100 epochs, lr 0.1 ×0.1 after epoch 80, §3.2 of the paper) with its optimiser
    (SGD, momentum 0.9, weight decay 1e-4, batch 128). ``label_fraction`` in (0, 1]: 1.0 is
    full fine-tuning, 0.01 and 0.1 the usual semi-supervised settings.
    """

    label_fraction: float = 1.0
    epochs: int = 100
    lr: float = 0.1
    steps: tuple[int, ...] = (80,)
    batch_size: int = 128
    eval_batch_size: int = 128
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    eval_interval: int = 5
    seed: int = 0
    workers: int = 2

    _TABLE: ClassVar[str] = "finetune"
    _CHECKS: ClassVar[Mapping[str, Any]] = _FINETUNE_CHECKS


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
