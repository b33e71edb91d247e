"""The demo: the whole pipeline on built-in synthetic data, pre-trained versus random init.

:func:`run_demo` runs ``skelmod.synth`` -> ``skelmod.convert`` (all six modalities) ->
:func:`~ikemtrain.engine.pretrain` (six modalities, ``<split>-train``) -> a 6s
:func:`~ikemtrain.engine.linear_eval` (``<split>-train`` -> ``<split>-val``) of the pre-trained
encoders and of random-init encoders, both with BatchNorm statistics estimated on the training
split (the fair baseline) and raw (the literal protocol, features ~1e-8), and returns the
summary it writes to ``OUT/summary.json``. ``ikemtrain demo`` prints it as a table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from skelmod.layout import MODALITY_NAMES

from .baseline import random_baseline
from .config import Preset, load_preset
from .runfolder import open_run_folder

__all__ = ["DEMO_ROWS", "RESULT_KEYS", "demo_preset", "run_demo"]

#: The linear evaluations of the demo: summary key -> (output folder, ``linear_eval`` keyword
#: arguments); ``"pretrained"`` also gets the pre-training checkpoint.
DEMO_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "pretrained": ("le-pretrained", {}),
    "random_init": ("le-random-init", {"random_init": True}),
    "random_init_raw_bn": ("le-random-(raw-BN)", {"random_init": True, "recalibrate_bn": False}),
}
#: The results of each row kept in the summary (percent).
RESULT_KEYS = ("top1_final", "top1_best", "top5_final", "top5_best")


def demo_preset(
    preset: Preset | str | os.PathLike = "tiny",
    *,
    split: str | None = None,
    seed: int | None = None,
    loader_workers: int | None = None,
) -> Preset:
    """The demo's settings: ``preset`` with ``[pretrain]`` ``split``, ``seed`` and
    ``workers`` (``loader_workers``) and ``[linear_eval]`` ``seed`` replaced (``None`` keeps
    the preset's); the demo then pre-trains on all six modalities.

    Raises ConfigError: an unknown preset or a bad value.
    """
    if not isinstance(preset, Preset):
        preset = load_preset(preset)
    return dataclasses.replace(
        preset,
        pretrain=preset.pretrain.replace(split=split, seed=seed, workers=loader_workers),
        linear_eval=preset.linear_eval.replace(seed=seed),
    )


def run_demo(
    out_dir: str | os.PathLike,
    preset: Preset | str = "tiny",
    *,
    split: str | None = None,
    seed: int | None = None,
    loader_workers: int | None = None,
    classes: int = 8,
    per_class: int = 60,
    workers: int | None = None,
    device: str = "auto",
    echo: Callable[[str], None] | None = print,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run the demo in the new folder ``out_dir`` and return its summary.

    Args:
        out_dir: absent or empty folder; receives ``raw/`` (the synthetic files),
            ``cache.h5``, ``pretrain/``, one ``le-*`` folder per row of :data:`DEMO_ROWS` and
            ``summary.json``.
        preset: a :class:`~ikemtrain.config.Preset` or the name or path of one. Its
            ``[pretrain]`` settings (with all six modalities) give the split, the seed (also
            of the synthetic files) and the loader workers; ``[linear_eval]`` the evaluation.
        split, seed, loader_workers: replace the preset's (:func:`demo_preset`).
        classes, per_class: synthetic classes (the first of ``skelmod.synth.ACTIONS``) and
            samples per class.
        workers: conversion processes (``None``: all cores; 0 counts as 1).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        echo: receives one line per step (``None``: silent).
        overwrite: replace a previous demo in ``out_dir`` (:mod:`ikemtrain.runfolder`).

    Returns the dict written to ``summary.json``: ``classes``, ``per_class``, ``seed``,
    ``split``, ``preset``, ``train_samples``, ``val_samples``, one dict of
    :data:`RESULT_KEYS` per row of :data:`DEMO_ROWS`, ``baseline`` (the final top-1 gain
    over the stronger random row, :func:`ikemtrain.baseline.random_baseline`), ``seconds``
    (per step and ``total``) and both configs.

    Raises:
        OutputExistsError: ``out_dir`` holds files (and is not a demo to ``overwrite``).
        ikemtrain.errors.USER_ERRORS: a bad preset or synthetic-set size, a folder that cannot
            be written, or a failed run.
    """
    say = echo or (lambda line: None)
    preset = demo_preset(preset, split=split, seed=seed, loader_workers=loader_workers)
    pcfg = preset.pretrain.replace(modalities=MODALITY_NAMES)
    lcfg = preset.linear_eval
    settings = {"classes": classes, "per_class": per_class, "workers": workers,
                "pretrain": pcfg.to_dict(), "linear_eval": lcfg.to_dict()}  # fmt: skip
    mode = "overwrite" if overwrite else "new"
    with open_run_folder(out_dir, "demo", mode, settings=settings) as folder:
        return _run_demo(folder.path, preset, pcfg, lcfg, classes, per_class, workers, device, say)


def _run_demo(out, preset, pcfg, lcfg, classes, per_class, workers, device, say) -> dict:
    from skelmod.convert import ConvertOptions, convert
    from skelmod.synth import generate

    from .engine import linear_eval, pretrain

    started = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    raw = out / "raw"
    files = generate(raw, classes, per_class, pcfg.seed)
    say(f"[1/4] synth: {len(files)} files in {raw}")
    timings["synth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cache = out / "cache.h5"
    report = convert(
        raw,
        cache,
        options=ConvertOptions(modalities=MODALITY_NAMES),
        workers=max(1, workers) if workers is not None else None,
    )
    say(f"[2/4] convert: {report.converted} samples -> {cache}")
    timings["convert"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(f"[3/4] pretrain ({preset.name}, six modalities, {pcfg.split}-train)")
    checkpoint = pretrain(pcfg, cache, out / "pretrain", device=device)["checkpoint"]
    timings["pretrain"] = time.perf_counter() - t0

    say(f"[4/4] linear evaluation, 6s ({pcfg.split}-train -> {pcfg.split}-val)")
    t0 = time.perf_counter()
    rows = {}
    for key, (folder, kwargs) in DEMO_ROWS.items():
        if key == "pretrained":
            kwargs = {**kwargs, "checkpoint": checkpoint}
        rows[key] = linear_eval(
            lcfg,
            cache,
            out / folder,
            pcfg.split,
            "6s",
            backbone=pcfg.backbone,
            modalities=pcfg.modalities,
            device=device,
            echo=None,
            **kwargs,
        )
    timings["linear_eval"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    summary = {
        "classes": classes,
        "per_class": per_class,
        "seed": pcfg.seed,
        "split": pcfg.split,
        "preset": preset.name,
        "train_samples": rows["pretrained"]["train_samples"],
        "val_samples": rows["pretrained"]["val_samples"],
        **{key: {k: r[k] for k in RESULT_KEYS} for key, r in rows.items()},
        # the gain is stated over the stronger random row (ikemtrain.baseline)
        "baseline": random_baseline(
            rows["pretrained"]["top1_final"],
            rows["random_init"]["top1_final"],
            rows["random_init_raw_bn"]["top1_final"],
        ),
        "seconds": timings,
        "pretrain_config": pcfg.to_dict(),
        "linear_eval_config": lcfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
