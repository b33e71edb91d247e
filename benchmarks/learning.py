"""Does pre-training beat an untrained network? Several data sets, several seeds, one table.

For each ``--data NAME=CACHE:SPLIT`` and each seed: pre-train six modalities (and, with
``--three``, the three of the CrosSCLR baseline) on ``SPLIT-train``, then evaluate on
``SPLIT-val``, for the 3s and 6s streams:

* linear evaluation (the preset's ``[linear_eval]``: with the CPU presets the standardised
  probe, under which random features are strongest) and weighted kNN (k = 20);
* of the pre-trained encoders and of random encoders of the same seed, once with BatchNorm
  statistics re-estimated on ``SPLIT-train`` and once raw;

and states every gain over the *stronger* random row (``ikemtrain.baseline``). Each run's
pre-training time is printed. Every step is the library function behind the command named in
brackets (``ikemtrain pretrain``, ``linear-eval``, ``knn-eval``); runs already complete in
``--out`` are reused, so the script can be re-run to add seeds or data sets.

    python benchmarks/learning.py --data nucla=nucla.h5:xview --data msr3d=msr3d.h5:xsub \
        --preset cpu --seeds 0,1,2 --out runs/learning [--three] [--set pretrain.epochs=40]

``--steps 200,400,800,1600`` pre-trains once per run length (``total_steps``; each a whole
schedule of its own, warm-up and lr step stretched to it) and adds the curve of accuracy
against minutes of pre-training. The built-in data are a cache like any other:
``skelmod synth -o raw --classes 8 --per-class 60 --seed 0`` then
``skelmod convert raw -o demo.h5 --modalities all`` (what ``ikemtrain demo`` builds).

Writes ``OUT/learning.json`` and ``OUT/learning.md`` (per-seed rows and mean ± sd per data set).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ikemtrain.baseline import random_baseline  # noqa: E402
from ikemtrain.config import MODALITY_SETS, apply_settings, load_preset  # noqa: E402
from ikemtrain.engine import linear_eval, pretrain  # noqa: E402
from ikemtrain.engine.checkpoint import load_checkpoint  # noqa: E402
from ikemtrain.engine.knn import knn_eval  # noqa: E402

K = 20
print = functools.partial(print, flush=True)  # noqa: A001 (progress lines as they come)
ROWS = ("pretrained", "bn_estimated", "raw_bn")


def pretrain_run(
    cache: Path, split: str, out: Path, preset, seed: int, n: int, steps: int | None
) -> dict:
    cfg = preset.pretrain.replace(split=split, modalities=MODALITY_SETS[n], seed=seed)
    if steps is not None:
        cfg = cfg.replace(total_steps=steps)
    ckpt = out / "checkpoint.pt"
    if not (ckpt.exists() and _complete(out)):  # total_steps stretches cfg.epochs: ask the run
        print(f"  [ikemtrain pretrain] {n} modalities, seed {seed} -> {out}", flush=True)
        pretrain(cfg, cache, out, resume=ckpt.exists(), device="cpu", tensorboard=False)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    last = records[-1]
    return {
        "seconds": sum(r["seconds"] for r in records),
        "epochs": cfg.epochs,
        "steps": sum(r["iterations"] for r in records),
        "final_losses": last["losses"],
        "monitor": last.get("monitor"),
    }


def _complete(run: Path) -> bool:
    """Whether the run in ``run`` made its last epoch (its checkpoint's epoch count)."""
    return (
        load_checkpoint(run / "checkpoint.pt")["epoch"]
        == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epochs"]
    )


def evaluate(cache, split, out, preset, seed, stream, row, checkpoint) -> dict:
    """Linear and kNN top-1 of one row (pre-trained, or random with BN re-estimated / raw)."""
    source = (
        {"checkpoint": checkpoint}
        if row == "pretrained"
        else {"random_init": True, "recalibrate_bn": row == "bn_estimated"}
    )
    if row != "pretrained":
        source["modalities"] = MODALITY_SETS[6]
    folder = out / f"{row}-{stream}"
    results = {}
    linear = folder / "linear" / "results.json"
    if not linear.exists():  # a stopped evaluation is redone (overwrite)
        linear_eval(preset.linear_eval.replace(seed=seed), cache, folder / "linear", split,
                    stream, backbone=preset.pretrain.backbone, device="cpu", echo=None,
                    overwrite=True, **source)  # fmt: skip
    results["linear"] = json.loads(linear.read_text())["top1_final"]
    knn = folder / "knn" / "results.json"
    if not knn.exists():
        knn_eval(cache, folder / "knn", split, streams=[stream], ks=(K,), seed=seed,
                 backbone=preset.pretrain.backbone, device="cpu", echo=None, overwrite=True,
                 **source)  # fmt: skip
    results["knn"] = json.loads(knn.read_text())["streams"][stream]["top1"][str(K)]
    return results


def table(results: dict) -> str:
    lines = []
    for name, data in results["data"].items():
        lines.append(f"\n### {name} (`{data['cache']}`, `{data['split']}`)\n")
        lines.append("| seed | run | pre-training | stream | probe | pre-trained | random, BN "
                     "re-estimated | random, raw BN | gain over the stronger |")  # fmt: skip
        lines.append("|---|---|---|---|---|---|---|---|---|")
        gains: dict[tuple, list] = {}
        for seed, runs in sorted(data["seeds"].items(), key=lambda kv: int(kv[0])):
            for run, r in runs.items():
                for stream, probes in r["streams"].items():
                    for probe, b in probes.items():
                        gains.setdefault((run, stream, probe), []).append(b)
                        lines.append(
                            f"| {seed} | {run} | {r['pretrain']['seconds']:.0f} s, "
                            f"{r['pretrain']['steps']} steps | {stream} | {probe} | "
                            f"{b['pretrained']:.2f} | {b['bn_estimated']:.2f} | {b['raw_bn']:.2f}"
                            f" | **{b['gain']:+.2f}** |"
                        )
        lines.append("\n| run | stream | probe | pre-trained | stronger random | gain, mean ± sd "
                     "| seeds won by ≥ 5 |")  # fmt: skip
        lines.append("|---|---|---|---|---|---|---|")
        for (run, stream, probe), bs in gains.items():
            g = [b["gain"] for b in bs]
            sd = statistics.stdev(g) if len(g) > 1 else 0.0
            lines.append(
                f"| {run} | {stream} | {probe} | "
                f"{statistics.mean(b['pretrained'] for b in bs):.2f} | "
                f"{statistics.mean(b['strongest'] for b in bs):.2f} | "
                f"{statistics.mean(g):+.2f} ± {sd:.2f} | {sum(x >= 5 for x in g)}/{len(g)} |"
            )
        lines += curve(data)
    return "\n".join(lines) + "\n"


def curve(data: dict) -> list[str]:
    """6s linear top-1 against minutes of pre-training: one row per six-modality run length
    (``--steps``), means over the seeds that every length was run with (so that each row
    averages the same seeds)."""
    points: dict[str, dict] = {}
    for seed, runs in data["seeds"].items():
        for run, r in runs.items():
            if run.startswith("6-modalities"):
                points.setdefault(run, {})[seed] = r
    if len(points) < 2:
        return []
    common = sorted(set.intersection(*(set(v) for v in points.values())), key=int)
    if not common:
        return []
    out = [f"\nAccuracy against pre-training time (6s; seeds {', '.join(common)}):\n",
           "| run | steps | minutes of pre-training | pre-trained, linear | stronger random "
           "| gain | kNN gain |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = sorted(points.items(), key=lambda kv: kv[1][common[0]]["pretrain"]["steps"])
    for run, by_seed in rows:
        rs = [by_seed[s] for s in common]
        lin = [r["streams"]["6s"]["linear"] for r in rs]
        knn = [r["streams"]["6s"]["knn"] for r in rs]
        minutes = statistics.mean(r["pretrain"]["seconds"] for r in rs) / 60
        out.append(
            f"| {run} | {statistics.mean(r['pretrain']['steps'] for r in rs):.0f}"
            f" | {minutes:.1f} | {statistics.mean(b['pretrained'] for b in lin):.2f}"
            f" | {statistics.mean(b['strongest'] for b in lin):.2f}"
            f" | {statistics.mean(b['gain'] for b in lin):+.2f}"
            f" | {statistics.mean(b['gain'] for b in knn):+.2f} |"
        )
    return out


def save(path: Path, header: dict, entry: tuple | None = None) -> dict:
    """Merge ``header`` and one run's ``entry`` (name, data-set record, seed, run, results)
    into ``path`` under an exclusive lock and return the whole file: several learning.py
    processes may share one ``--out`` (single-thread runs side by side), and each used to
    write back the file it read at its start, dropping the others' runs."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {"data": {}}
        results.update(header)
        if entry is not None:
            name, where, seed, run, record = entry
            data = results["data"].setdefault(name, where)
            data["seeds"].setdefault(str(seed), {})[run] = record
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, path)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, metavar="NAME=CACHE:SPLIT")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--three", action="store_true", help="also the 3-modality baseline")
    ap.add_argument("--steps", default="", help="run lengths (total_steps) for the curve")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = apply_settings(load_preset(args.preset), args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    lengths = [int(s) for s in args.steps.split(",") if s] or [None]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "learning.json"
    header = {
        "preset": args.preset, "set": args.set, "command": " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__}, {args.threads} threads",
        "pretrain_config": preset.pretrain.to_dict(),
        "linear_eval_config": preset.linear_eval.to_dict(),
    }  # fmt: skip
    results = save(path, header)
    for spec in args.data:
        name, _, rest = spec.partition("=")
        cache, _, split = rest.rpartition(":")
        if not (name and cache and split):
            raise SystemExit(f"--data {spec!r}: expected NAME=CACHE:SPLIT")
        where = {"cache": cache, "split": split, "seeds": {}}
        for seed, steps, n in itertools.product(seeds, lengths, (6, 3) if args.three else (6,)):
            if steps is not None and steps == preset.pretrain.total_steps:
                steps = None  # the preset's own length: the plain run
            run = f"{n}-modalities" + (f"-{steps}-steps" if steps is not None else "")
            base = args.out / name / f"seed{seed}" / run
            t0 = time.perf_counter()
            info = pretrain_run(Path(cache), split, base / "pretrain", preset, seed, n, steps)
            streams = {}
            for stream in ("3s", "6s") if n == 6 else ("3s",):
                # random rows depend on the seed only: one evaluation, in the plain run's folder
                rows = {row: evaluate(Path(cache), split, base if row == "pretrained" else
                                      base.parent / "6-modalities", preset, seed, stream, row,
                                      base / "pretrain") for row in ROWS}  # fmt: skip
                streams[stream] = {
                    probe: random_baseline(*(rows[r][probe] for r in ROWS))
                    for probe in ("linear", "knn")
                }
                for probe, b in streams[stream].items():
                    print(f"  {name} seed {seed} {run} {stream} {probe:<6} pre-trained "
                          f"{b['pretrained']:6.2f}  random {b['bn_estimated']:6.2f} / raw "
                          f"{b['raw_bn']:6.2f}  gain {b['gain']:+6.2f}")  # fmt: skip
            entry = {
                "pretrain": info, "streams": streams,
                "wall_seconds": time.perf_counter() - t0,
            }  # fmt: skip
            results = save(path, header, (name, where, seed, run, entry))
    md = table(results)
    (args.out / "learning.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
