"""Teacher 6s, distilled student 3s, a 3s model pre-trained for the same wall time, random init.

On the README's built-in synthetic data (``skelmod.synth``, like ``ikemtrain demo``), in one run:

1. synth + convert (all six modalities);
2. **teacher**: ``ikemtrain pretrain --modalities 6`` with the preset's ``[pretrain]``;
3. **student**: ``ikemtrain distill --teacher`` that run, with the preset's ``[distill]``;
4. **3s, same wall time**: ``ikemtrain pretrain --modalities 3`` with the preset's
   ``[pretrain]``, extended one epoch at a time (``--resume``) until its wall time reaches the
   student's whole cost (teacher + distillation);
5. linear evaluation (preset's ``[linear_eval]``): teacher ``6s`` and ``3s`` (its joint,
   velocity and bone encoders), student ``3s``, the 3s model ``3s``, and random-init
   encoders ``3s`` (BatchNorm statistics estimated on the training split, the fair baseline).

Prints a markdown table (final and best top-1, top-5, wall times, seeds) and writes
``OUT/summary.json``. OUT must be empty or absent.

    python benchmarks/bench_distill.py runs/bench-distill [--classes 8] [--per-class 60]
        [--seed 0] [--preset tiny] [--split xview] [--device auto]

On real data, give a cache with all six modalities instead of the synthetic set, and
optionally reuse a finished six-modality pre-training run of the same preset, split and seed
as the teacher (its wall time is the sum of its epochs' seconds in ``metrics.jsonl``), e.g.
N-UCLA's main run of ``benchmarks/nucla.py``:

    python benchmarks/bench_distill.py runs/distill-nucla --cache nucla.h5 --preset nucla-cpu \
        --split xview --teacher runs/nucla/pretrain-6 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ikemtrain.config import MODALITY_SETS, load_preset  # noqa: E402
from ikemtrain.engine import distill, linear_eval, pretrain  # noqa: E402
from ikemtrain.engine.checkpoint import load_checkpoint  # noqa: E402
from skelmod.cache import CacheReader  # noqa: E402
from skelmod.convert import ConvertOptions, convert  # noqa: E402
from skelmod.layout import MODALITY_NAMES  # noqa: E402
from skelmod.modalities import compute_modalities  # noqa: E402
from skelmod.synth import generate  # noqa: E402

KEYS = ("top1_final", "top1_best", "top5_final", "top5_best")


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--split", default="xview")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", type=Path, help="an existing cache (all six modalities)")
    ap.add_argument("--teacher", type=Path, help="a finished six-modality pre-training run")
    args = ap.parse_args(argv)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        ap.error(f"{out} is not empty")
    preset = load_preset(args.preset)
    six = preset.pretrain.replace(split=args.split, modalities=MODALITY_SETS[6], seed=args.seed)
    three = six.replace(modalities=MODALITY_SETS[3])
    dcfg = preset.distill.replace(split=args.split, seed=args.seed)
    lcfg = preset.linear_eval.replace(seed=args.seed)
    quiet = {"device": args.device, "echo": None}
    walls: dict[str, float] = {}

    out.mkdir(parents=True, exist_ok=True)
    if args.cache is None:
        files = generate(out / "raw", args.classes, args.per_class, args.seed)
        cache = out / "cache.h5"
        convert(out / "raw", cache, options=ConvertOptions(modalities=tuple(MODALITY_NAMES)))
        data = f"{len(files)} synthetic files, {args.classes} classes"
        print(f"data: {data} -> {cache}", flush=True)
    else:
        cache = args.cache
        reader = CacheReader(cache)
        reader.require(MODALITY_NAMES)
        # the classes present (an NTU-layout cache of synthetic files declares 60)
        args.classes = len(np.unique(reader.meta["label"]))
        data = f"{cache} ({reader.dataset}, {reader.layout.name}, {args.classes} classes)"
    # numba's kernels load once per process: pay it before any clock starts
    compute_modalities(np.zeros((1, 3, 8, 25, 2), np.float32), 8, t_target=8)

    if args.teacher is None:
        teacher = out / "teacher"
        _, walls["teacher"] = _timed(pretrain, six, cache, teacher, tensorboard=False, **quiet)
    else:
        teacher = args.teacher
        # a setting added since the run was made takes its default, as when the run is loaded
        saved = type(six)(**load_checkpoint(teacher / "checkpoint.pt")["config"])
        saved, want = (json.loads(json.dumps(c.to_dict())) for c in (saved, six))
        # workers may differ; None (unit_axis, bones) means "the cache's", resolved when it ran
        diff = sorted(
            k for k in want if k != "workers" and want[k] is not None and saved.get(k) != want[k]
        )
        if diff:
            ap.error(f"--teacher {teacher}: not this preset's six-modality run (differs in {diff})")
        records = (teacher / "metrics.jsonl").read_text().splitlines()
        walls["teacher"] = sum(json.loads(line)["seconds"] for line in records)
    print(f"teacher 6s: {six.epochs} epochs in {walls['teacher']:.0f} s", flush=True)
    _, walls["student"] = _timed(
        distill, dcfg, cache, teacher, out / "student", tensorboard=False, **quiet
    )
    print(f"student 3s: {dcfg.epochs} epochs in {walls['student']:.0f} s", flush=True)

    budget = walls["teacher"] + walls["student"]
    walls["3s"], epochs = 0.0, 0
    while walls["3s"] < budget:
        epochs += 1
        _, spent = _timed(
            pretrain,
            three.replace(epochs=epochs),
            cache,
            out / "pretrain-3s",
            resume=epochs > 1,
            tensorboard=False,
            **quiet,
        )
        walls["3s"] += spent
    print(f"3s same wall time: {epochs} epochs in {walls['3s']:.0f} s", flush=True)

    rows = {
        "teacher 6s": ("6s", {"checkpoint": teacher}),
        "teacher 3s (its j, v, b)": ("3s", {"checkpoint": teacher}),
        "student 3s (distilled)": ("3s", {"checkpoint": out / "student"}),
        f"3s pre-trained, same wall time ({epochs} epochs)": (
            "3s",
            {"checkpoint": out / "pretrain-3s"},
        ),
        "random init 3s": (
            "3s",
            {"random_init": True, "backbone": three.backbone, "modalities": three.modalities},
        ),
    }
    results = {}
    for i, (label, (stream, kwargs)) in enumerate(rows.items()):
        results[label], _ = _timed(
            linear_eval, lcfg, cache, out / f"le-{i}", args.split, stream, **kwargs, **quiet
        )

    n_train = results["teacher 6s"]["train_samples"]
    n_val = results["teacher 6s"]["val_samples"]
    print()
    print(
        f"{data}, {args.split}: {n_train} train / "
        f"{n_val} val samples; preset {preset.name}; seed {args.seed}; chance "
        f"{100 / args.classes:.1f}%"
    )
    print()
    print("| linear eval | top-1 | best top-1 | top-5 | best top-5 |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | " + " | ".join(f"{r[k]:.2f}" for k in KEYS) + " |")
    print()
    print(
        f"wall: teacher {walls['teacher']:.0f} s, distillation {walls['student']:.0f} s, "
        f"3s pre-training {walls['3s']:.0f} s (budget {budget:.0f} s)"
    )
    summary = {
        "data": data,
        "classes": args.classes,
        "teacher": str(teacher),
        "seed": args.seed,
        "split": args.split,
        "preset": preset.name,
        "train_samples": n_train,
        "val_samples": n_val,
        "seconds": walls,
        "epochs_3s": epochs,
        "results": {label: {k: r[k] for k in KEYS} for label, r in results.items()},
        "pretrain_config": six.to_dict(),
        "distill_config": dcfg.to_dict(),
        "linear_eval_config": lcfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
