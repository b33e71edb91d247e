"""Learning on real data: N-UCLA cross-view, pre-trained vs random init, and Table 1a.

Pre-trains with the ``nucla-cpu`` preset (the paper's method, a narrower network) on
``xview-train`` (views 1 and 2, 1,020 sequences) and reports linear evaluation on
``xview-val`` (view 3, 464 sequences):

* the main run (six modalities, EKEM + IKEM): every single stream, 3s and 6s fusion, beside
  the same encoders at random initialisation (BatchNorm statistics estimated on the training
  split, the fair baseline; the same standardised probe for both), and for 3s and 6s also
  random encoders with raw BatchNorm statistics (the literal linear-evaluation
  protocol), a stronger random baseline once the probe standardises its features;
* the Table 1a ablation on the same budget (same epochs, batch, width): three modalities
  CrosSCLR-style (joint, velocity, bone; EKEM only), and six with EKEM only, IKEM only, both
  (the main run);
* the collapse signal of every head at the last epoch (``ikemtrain.collapse``).

Each pre-training run is the command ``ikemtrain pretrain CACHE --split xview --preset
nucla-cpu --modalities 6 [--no-ikem|--no-ekem]`` called as a library function; each linear
evaluation is ``ikemtrain linear-eval CACHE --split xview --preset nucla-cpu --streams S``
(``--checkpoint RUN``, ``--random-init`` or ``--random-init --no-bn-recalibration``).

Usage:
    skelmod convert all_sqe/ --dataset nucla -o nucla.h5 --modalities all
    python benchmarks/nucla.py nucla.h5 --out runs/nucla [--seed 0] [--runs 6,6-ekem,6-ikem,3]

Runs whose ``checkpoint.pt`` already holds the last epoch are reused and stopped runs are
resumed, so the script can be re-run to add rows or to finish a run. Writes
``OUT/results.json`` and prints the table; a run's time is the sum of its epochs' seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ikemtrain.baseline import random_baseline  # noqa: E402
from ikemtrain.config import MODALITY_SETS, load_preset  # noqa: E402
from ikemtrain.engine import linear_eval, pretrain  # noqa: E402
from ikemtrain.engine.checkpoint import load_checkpoint  # noqa: E402

#: Table 1a rows: name -> (modalities, ekem, ikem)
RUNS = {
    "6": (6, True, True),
    "6-ekem": (6, True, False),
    "6-ikem": (6, False, True),
    "3": (3, True, False),
}
SINGLE = MODALITY_SETS[6]


def pretrain_run(name: str, cache: Path, out: Path, preset, seed: int) -> dict:
    n, ekem, ikem = RUNS[name]
    cfg = preset.pretrain.replace(
        split="xview", modalities=MODALITY_SETS[n], ekem=ekem, ikem=ikem, seed=seed
    )
    run = out / f"pretrain-{name}"
    ckpt = run / "checkpoint.pt"
    if ckpt.exists() and load_checkpoint(ckpt)["epoch"] == cfg.epochs:
        print(f"[{name}] reusing {ckpt}", flush=True)
    else:
        # a stopped run continues from its last epoch
        print(f"[{name}] pretrain {list(cfg.modalities)} ekem={ekem} ikem={ikem}", flush=True)
        pretrain(cfg, cache, run, resume=ckpt.exists(), device="cpu", tensorboard=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(r["seconds"] for r in records)
    last = records[-1]
    return {
        "run": str(run),
        "seconds": seconds,
        "modalities": list(cfg.modalities),
        "ekem": ekem,
        "ikem": ikem,
        "final_losses": last["losses"],
        "collapse_std": {m: c["std"] for m, c in last["collapse"].items()},
        "collapsed": last["collapsed"],
    }


def evaluate(cache: Path, out: Path, preset, stream: str, seed: int, **source) -> dict:
    label = "random" if source.get("random_init") else Path(source["checkpoint"]).name
    if not source.get("recalibrate_bn", True):
        label += "-raw-bn"
    r = linear_eval(
        preset.linear_eval.replace(seed=seed),
        cache,
        out / f"le-{label}-{stream}",
        "xview",
        stream,
        backbone=preset.pretrain.backbone,
        device="cpu",
        echo=None,
        overwrite=True,  # a re-run evaluates again; the pre-training runs are reused
        **source,
    )
    print(f"  {label:<20} {stream:<17} top-1 {r['top1_final']:6.2f}", flush=True)
    return {k: r[k] for k in ("top1_final", "top1_best", "top5_final", "seconds")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache", type=Path, help="N-UCLA cache with all six modalities")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="nucla-cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="6,6-ekem,6-ikem,3", help=f"among {', '.join(RUNS)}")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument(
        "--no-random", action="store_true", help="skip the random-init rows (another run has them)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        raise SystemExit(f"--runs: unknown {unknown}; expected names among {', '.join(RUNS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.update(
        {
            "cache": str(args.cache),
            "preset": args.preset,
            "seed": args.seed,
            "threads": args.threads,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}",
            "pretrain_config": preset.pretrain.to_dict(),
            "linear_eval_config": preset.linear_eval.to_dict(),
        }
    )
    results.setdefault("pretrain", {})
    results.setdefault("linear_eval", {})
    random_mods = MODALITY_SETS[6]
    for name in runs:
        info = pretrain_run(name, args.cache, args.out, preset, args.seed)
        results["pretrain"][name] = info
        ckpt = Path(info["run"])
        streams = ("joint", "velocity", "bone", "3s") if name == "3" else ("6s",)
        if name == "6":
            streams = (*SINGLE, "3s", "6s")
        for s in streams:
            results["linear_eval"][f"{name}/{s}"] = evaluate(
                args.cache, args.out, preset, s, args.seed, checkpoint=ckpt
            )
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    # random init: the fair encoders (BN statistics from the training split) for every stream,
    # and the raw-BN ones (the literal protocol) for the fused streams
    random_rows = (("random", (*SINGLE, "3s", "6s"), True), ("random-raw-bn", ("3s", "6s"), False))
    for label, streams, recalibrate in () if args.no_random else random_rows:
        for s in streams:
            if f"{label}/{s}" not in results["linear_eval"]:
                results["linear_eval"][f"{label}/{s}"] = evaluate(
                    args.cache,
                    args.out,
                    preset,
                    s,
                    args.seed,
                    random_init=True,
                    modalities=random_mods,
                    recalibrate_bn=recalibrate,
                )
    results_path.write_text(json.dumps(results, indent=2) + "\n")

    le = results["linear_eval"]
    print(f"\nN-UCLA xview linear evaluation, top-1 (final epoch), seed {args.seed}")
    print(
        f"{'stream':<17} {'pre-trained (6)':>16} {'random init':>12} {'gain':>7} "
        f"{'random, raw BN':>15} {'gain':>7} {'over the stronger':>17}"
    )
    for s in (*SINGLE, "3s", "6s"):
        if f"6/{s}" in le and f"random/{s}" in le:
            a, b = le[f"6/{s}"]["top1_final"], le[f"random/{s}"]["top1_final"]
            raw = le.get(f"random-raw-bn/{s}")
            tail = f" {raw['top1_final']:15.2f} {a - raw['top1_final']:+7.2f}" if raw else ""
            if raw:  # the gain that counts: over the stronger random row (ikemtrain.baseline)
                tail += f" {random_baseline(a, b, raw['top1_final'])['gain']:+17.2f}"
            print(f"{s:<17} {a:16.2f} {b:12.2f} {a - b:+7.2f}{tail}")
    print("\nTable 1a (same budget)")
    for name in RUNS:
        if name in results["pretrain"]:
            p = results["pretrain"][name]
            s = "3s" if name == "3" else "6s"
            print(
                f"{name:<7} {s} top-1 {le[f'{name}/{s}']['top1_final']:6.2f}  pretrain "
                f"{p['seconds']:.0f} s  collapsed: {p['collapsed'] or 'none'}  "
                f"min std {min(p['collapse_std'].values()):.3f}"
            )


if __name__ == "__main__":
    main()
