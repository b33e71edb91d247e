"""The Python API: the ``ikemtrain`` commands as functions of one shape.

Every training and evaluation entry point reads ``(cache, out, *, preset=..., settings=...,
**overrides)``::

    import ikemtrain

    ikemtrain.pretrain("nucla.h5", "runs/pre6", preset="nucla-cpu", split="xview", epochs=20)
    encoders = ikemtrain.Encoders.from_run("runs/pre6")
    results = ikemtrain.linear_eval("nucla.h5", "runs/le", encoders=encoders, streams=["6s"])

* ``cache``: a skelmod cache (path or open reader); ``out``: the run folder, new unless
  ``overwrite`` (or ``resume``) as for the commands (:mod:`ikemtrain.runfolder`);
* ``preset``: a built-in name, a TOML path or a :class:`~ikemtrain.config.Preset`;
* ``settings``: ``["SECTION.KEY=VALUE", ...]`` exactly as ``--set``, or
  ``{"SECTION.KEY": value}``; ``**overrides``: keys of the entry point's own table
  (``[pretrain]`` for :func:`pretrain`, ``[linear_eval]`` for :func:`linear_eval` and
  :func:`knn_eval`, ...). Both are checked like a preset's keys
  (:func:`~ikemtrain.config.override_settings`); a bad one raises ConfigError naming it.
* the evaluation protocols take an :class:`Encoders` value and a list of ``streams``.

The command line (``cli/ikemtrain_cli.py``) parses options, calls these functions and prints.
This module imports torch only when an entry point runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import (
    ConfigError,
    Preset,
    apply_settings,
    load_preset,
    modality_set,
    override_settings,
)

if TYPE_CHECKING:
    from skelmod.cache import CacheReader

    from .engine.encoders import EncoderSource
    from .student import Student

    PresetLike = Preset | str | os.PathLike
    Settings = Sequence[str] | Mapping[str, Any]
    CacheLike = str | os.PathLike | CacheReader
    Echo = Callable[[str], None] | None

__all__ = [
    "Encoders",
    "configure",
    "describe",
    "distill",
    "export",
    "finetune",
    "knn_eval",
    "linear_eval",
    "pretrain",
    "stream_folders",
]

DEFAULT_PRESET = "paper-ntu60"


def configure(
    preset: PresetLike = DEFAULT_PRESET,
    settings: Settings = (),
    section: str | None = None,
    **overrides: Any,
) -> Preset:
    """The :class:`~ikemtrain.config.Preset` of a run: ``preset`` (name, TOML path or
    Preset), then ``settings`` (``"SECTION.KEY=VALUE"`` strings as ``--set``, or a
    ``{"SECTION.KEY": value}`` mapping), then ``overrides`` (``KEY=value`` of the table
    ``section``), each checked like a preset's keys.

    Raises:
        ConfigError: an unknown preset, table or key, or a bad value (named).
    """
    if not isinstance(preset, Preset):
        preset = load_preset(preset)
    if isinstance(settings, str):
        settings = [settings]
    if isinstance(settings, Mapping):
        preset = override_settings(preset, settings)
    else:
        preset = apply_settings(preset, list(settings))
    if overrides:
        if section is None:
            raise ConfigError(
                f"keyword settings {', '.join(sorted(overrides))} need a table: give them as "
                "settings={'SECTION.KEY': value}"
            )
        preset = override_settings(preset, {f"{section}.{k}": v for k, v in overrides.items()})
    return preset


@dataclass(frozen=True)
class Encoders:
    """The encoders an evaluation protocol starts from: a training run's, or random ones.

    Build it with :meth:`from_run` or :meth:`random`; give it to :func:`linear_eval`,
    :func:`knn_eval` or :func:`finetune` (``encoders=``).

    * ``modalities``: the modalities it has encoders for;
    * ``kind``: ``"pretrain"`` (query encoders), ``"distill"`` (the students: streams
      ``3s`` and ``student-<m>``), ``"finetune"`` or ``"random-init"``;
    * ``seed``: random-init encoders are built under the protocol's seed; a seed given here
      replaces it (``None``: the preset's).
    """

    kind: str
    modalities: tuple[str, ...]
    checkpoint: Path | None = None
    backbone: dict[str, Any] | None = None
    seed: int | None = None
    source: EncoderSource | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_run(cls, run: str | os.PathLike) -> Encoders:
        """The encoders of a pre-training, distillation (its students) or fine-tuning run,
        given as its folder or its ``checkpoint.pt``; read once, here.

        Raises CheckpointError: not such a run, or an unreadable checkpoint.
        """
        from .engine.encoders import encoder_source

        source = encoder_source(run)
        return cls(source.kind, source.modalities, source.checkpoint, source=source)

    @classmethod
    def random(
        cls,
        preset: PresetLike = DEFAULT_PRESET,
        modalities: int | str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Encoders:
        """Untrained encoders (``weights_init``) of the width of ``preset``'s ``[pretrain]``
        backbone, for ``modalities`` (``3``, ``6``, names; ``None``: the preset's).

        Raises ConfigError: an unknown preset or modality, or a negative seed.
        """
        if not isinstance(preset, Preset):
            preset = load_preset(preset)
        cfg = preset.pretrain
        mods = cfg.modalities if modalities is None else modality_set(modalities)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        return cls("random-init", tuple(mods), backbone=dict(cfg.backbone), seed=seed)

    @property
    def random_init(self) -> bool:
        return self.kind == "random-init"

    def engine_kwargs(self) -> dict[str, Any]:
        """The encoder arguments of the engine's protocols (``checkpoint`` or
        ``random_init``, ``backbone``, ``modalities``)."""
        if self.random_init:
            return {"random_init": True, "backbone": self.backbone, "modalities": self.modalities}
        return {"checkpoint": self.source if self.source is not None else self.checkpoint}


def _encoders(encoders: Encoders | str | os.PathLike) -> Encoders:
    if isinstance(encoders, Encoders):
        return encoders
    if isinstance(encoders, str | os.PathLike):
        return Encoders.from_run(encoders)
    raise ConfigError(
        f"encoders must be Encoders.from_run(...), Encoders.random(...) or a run folder, "
        f"got {encoders!r}"
    )


def _streams(streams: str | Sequence[str]) -> list[str]:
    from .config import STREAMS

    listed = [streams] if isinstance(streams, str) else list(streams)
    unknown = [s for s in listed if s not in STREAMS]
    if unknown or not listed:
        raise ConfigError(
            f"unknown stream {', '.join(map(repr, unknown)) or repr(streams)}; expected a "
            f"list of {', '.join(STREAMS)}"
        )
    return list(dict.fromkeys(listed))


def stream_folders(streams: Sequence[str], out: str | os.PathLike) -> list[tuple[str, Path]]:
    """Where each stream of a protocol writes: one stream to ``out``, several to
    ``out/<stream>`` each."""
    if len(streams) == 1:
        return [(streams[0], Path(out))]
    return [(stream, Path(out) / stream) for stream in streams]


def _seeded(preset: Preset, table: str, encoders: Encoders) -> Preset:
    if encoders.seed is None:
        return preset
    return override_settings(preset, {f"{table}.seed": encoders.seed})


def pretrain(
    cache: CacheLike,
    out: str | os.PathLike,
    *,
    preset: PresetLike = DEFAULT_PRESET,
    settings: Settings = (),
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    echo: Echo = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Pre-train on ``<split>-train`` of ``cache`` with ``preset``'s ``[pretrain]`` settings
    (``**overrides``: its keys, e.g. ``split="xview", epochs=20, modalities=6``); ``ikemtrain
    pretrain``. Returns ``{"checkpoint", "epoch", "metrics"}``
    (:func:`ikemtrain.engine.pretrain`)."""
    from .engine import pretrain as run

    cfg = configure(preset, settings, "pretrain", **overrides).pretrain
    return run(cfg, cache, out, resume=resume, device=device, echo=echo, overwrite=overwrite)


def distill(
    cache: CacheLike,
    out: str | os.PathLike,
    *,
    teacher: str | os.PathLike,
    preset: PresetLike = DEFAULT_PRESET,
    settings: Settings = (),
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    echo: Echo = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Distil the six-modality ``teacher`` run into the three-stream student with ``preset``'s
    ``[distill]`` settings (``**overrides``: its keys); ``ikemtrain distill``
    (:func:`ikemtrain.engine.distill`)."""
    from .engine import distill as run

    cfg = configure(preset, settings, "distill", **overrides).distill
    return run(cfg, cache, teacher, out, resume=resume, device=device, echo=echo,
               overwrite=overwrite)  # fmt: skip


def linear_eval(
    cache: CacheLike,
    out: str | os.PathLike,
    *,
    encoders: Encoders | str | os.PathLike,
    streams: str | Sequence[str] = ("6s",),
    split: str | None = None,
    preset: PresetLike = DEFAULT_PRESET,
    settings: Settings = (),
    recalibrate_bn: bool = True,
    overwrite: bool = False,
    device: str = "auto",
    echo: Echo = print,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """Linear evaluation of ``encoders`` per stream (``ikemtrain linear-eval``), with
    ``preset``'s ``[linear_eval]`` settings (``**overrides``: its keys).

    ``split``: trains on ``<split>-train``, evaluates on ``<split>-val`` (``None``: the
    preset's ``[pretrain]`` split). One stream writes to ``out``, several to
    ``out/<stream>``. Returns ``{stream: results}`` (:func:`ikemtrain.engine.linear_eval`:
    ``top1_final``, ``top1_best``, ``top5_final``, ``top5_best``, ``history``, ...).
    """
    from .engine import linear_eval as run

    encoders = _encoders(encoders)
    preset = _seeded(configure(preset, settings, "linear_eval", **overrides), "linear_eval",
                     encoders)  # fmt: skip
    split = split or preset.pretrain.split
    results = {}
    for stream, folder in stream_folders(_streams(streams), out):
        results[stream] = run(preset.linear_eval, cache, folder, split, stream, device=device,
                              echo=echo, recalibrate_bn=recalibrate_bn, overwrite=overwrite,
                              **encoders.engine_kwargs())  # fmt: skip
    return results


def knn_eval(
    cache: CacheLike,
    out: str | os.PathLike,
    *,
    encoders: Encoders | str | os.PathLike,
    streams: str | Sequence[str] | None = None,
    k: Sequence[int] = (1, 5, 20),
    split: str | None = None,
    preset: PresetLike = DEFAULT_PRESET,
    settings: Settings = (),
    seed: int | None = None,
    recalibrate_bn: bool = True,
    overwrite: bool = False,
    device: str = "auto",
    echo: Echo = print,
    **overrides: Any,
) -> dict[str, Any]:
    """Weighted kNN of ``<split>-val`` against ``<split>-train`` (``ikemtrain knn-eval``):
    features in batches of ``[linear_eval] eval_batch_size``; random-init encoders seeded
    with ``seed``, else the encoders' seed, else ``[linear_eval] seed``. ``streams``:
    ``None`` for every stream of the encoders. Writes ``out/results.json`` and returns it
    (:func:`ikemtrain.engine.knn_eval`)."""
    from .engine import knn_eval as run

    encoders = _encoders(encoders)
    preset = _seeded(configure(preset, settings, "linear_eval", **overrides), "linear_eval",
                     encoders)  # fmt: skip
    cfg = preset.linear_eval
    return run(
        cache,
        out,
        split or preset.pretrain.split,
        None if streams is None else _streams(streams),
        list(k),
        batch_size=cfg.eval_batch_size,
        seed=cfg.seed if seed is None else seed,
        device=device,
        echo=echo,
        recalibrate_bn=recalibrate_bn,
        overwrite=overwrite,
        **encoders.engine_kwargs(),
    )


def finetune(
    cache: CacheLike,
    out: str | os.PathLike,
    *,
    encoders: Encoders | str | os.PathLike,
    streams: str | Sequence[str] = ("6s",),
    split: str | None = None,
    preset: PresetLike = DEFAULT_PRESET,
    settings: Settings = (),
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    echo: Echo = print,
    **overrides: Any,
) -> dict[str, dict[str, Any]]:
    """Fine-tune ``encoders`` with a linear classifier per stream (``ikemtrain finetune``),
    with ``preset``'s ``[finetune]`` settings (``**overrides``: its keys, e.g.
    ``label_fraction=0.1``); ``split`` and the folders as for :func:`linear_eval`. Returns
    ``{stream: results}`` (:func:`ikemtrain.engine.finetune`)."""
    from .engine import finetune as run

    encoders = _encoders(encoders)
    preset = _seeded(configure(preset, settings, "finetune", **overrides), "finetune", encoders)
    split = split or preset.pretrain.split
    results = {}
    for stream, folder in stream_folders(_streams(streams), out):
        results[stream] = run(preset.finetune, cache, folder, split, stream, resume=resume,
                              device=device, echo=echo, overwrite=overwrite,
                              **encoders.engine_kwargs())  # fmt: skip
    return results


def export(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classifier: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Student:
    """Write the deployable student of a distillation ``run`` to the file ``out``
    (``ikemtrain export``); ``classifier``: a linear evaluation of its students (its heads
    make :meth:`Student.predict` work). Returns the :class:`~ikemtrain.student.Student`.

    Raises:
        OutputExistsError: ``out`` exists and not ``overwrite``.
        CheckpointError: not a student run, or heads of another run.
    """
    from .student import export_student

    return export_student(run, out, classifier, overwrite=overwrite)


def describe(
    preset: PresetLike = DEFAULT_PRESET,
    modalities: int | str | Sequence[str] | None = None,
    *,
    student: bool = False,
    num_class: int = 60,
) -> list[tuple[str, int]]:
    """Parameter counts, ``(module, count)`` rows ending with ``"total"``, of the
    pre-training model of ``preset`` for ``modalities`` (``None``: the preset's; the frozen
    keys are those of the preset among them), or with ``student`` of the deployed
    three-stream student with ``num_class`` classes (``ikemtrain describe``)."""
    if not isinstance(preset, Preset):
        preset = load_preset(preset)
    cfg = preset.pretrain
    if student:
        from .methods.distill import STUDENT_MODALITIES
        from .student import describe_student

        if modalities is not None:
            raise ConfigError("modalities do not apply to the student (joint, velocity, bone)")
        return describe_student(STUDENT_MODALITIES, cfg.backbone, num_class)
    from .methods.pretrain import describe as describe_model

    mods = cfg.modalities if modalities is None else modality_set(modalities)
    kwargs = cfg.model_kwargs()
    kwargs["frozen_keys"] = tuple(m for m in cfg.frozen_keys if m in mods)
    return describe_model(mods, **kwargs)
