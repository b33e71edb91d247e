"""GPU figures in one short, prepared run: environment, cache build, pre-training throughput per
precision, the loader, DDP plumbing, linear evaluation.

One command on a machine with one CUDA GPU (about 6-8 minutes at the default size):

    python benchmarks/gpu.py --out $OUT

It writes ``OUT/gpu-results.json`` and ``OUT/gpu-results.md`` (the table for
``benchmarks/RESULTS.md``) as it goes, so a run cut short keeps what it measured:

1. environment: GPU name and memory, torch and CUDA versions, CPU cores;
2. a synthetic NTU-format set (``skelmod synth``, 60 classes) converted with every core
   (``skelmod convert --workers all``), both timed and projected to NTU-60's 56,880 files;
3. pre-training throughput of the ``paper-ntu60`` model (six modalities, hidden 16/256,
   batch 128, queue 32768) on batches of that cache, one epoch-slice of ``--iterations``
   steps per setting (fp32, bf16) and stage: samples/s, peak GPU memory
   (``torch.cuda.max_memory_allocated``), utilisation where ``nvidia-smi`` answers, and the
   projected time of the paper's 300 epochs of NTU-60 xsub (40,091 training samples);
4. the batch-wise loader's samples/s with all cores (``DataLoader`` workers), to tell whether
   the GPU would starve;
5. ``torchrun --nproc-per-node 1 -m cli.ikemtrain_cli pretrain`` for one short epoch (the DDP
   plumbing on NCCL; gloo on a CPU);
6. ``ikemtrain linear-eval`` of that run for two epochs on the device.

Without CUDA it stops at once with one ``Error:`` line, unless ``--device cpu``. ``--tiny``
(with ``--device cpu`` in the tests) runs every step at toy size, so the script is known to
work before a GPU is at hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NTU60_FILES, NTU60_XSUB_TRAIN, PAPER_EPOCHS = 56_880, 40_091, 300


def say(line: str) -> None:
    print(line, flush=True)


def environment(device: str) -> dict:
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return env


def build_cache(out: Path, per_class: int, classes: int) -> tuple[Path, dict]:
    from skelmod.convert import ConvertOptions, convert
    from skelmod.layout import MODALITY_NAMES
    from skelmod.synth import generate

    raw, cache = out / "raw", out / "cache.h5"
    t0 = time.perf_counter()
    files = generate(raw, classes, per_class, 0)
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = convert(raw, cache, options=ConvertOptions(modalities=MODALITY_NAMES), workers=None)
    convert_s = time.perf_counter() - t0
    shutil.rmtree(raw)
    n = report.converted
    return cache, {
        "files": len(files),
        "synth_s": synth_s,
        "convert_s": convert_s,
        "convert_files_per_s": n / convert_s,
        "ntu60_convert_projected_s": NTU60_FILES / (n / convert_s),
    }


def gpu_utilisation() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return float(out.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def throughput(cache: Path, device: str, precision: str, iterations: int, tiny: bool) -> dict:
    """Steps of the paper-ntu60 model on loader batches of ``cache``, per stage."""
    import torch

    from ikemtrain.config import load_preset
    from ikemtrain.engine.loop import build_model, resolve_cache_options, training_views
    from ikemtrain.nn.streams import StreamRunner
    from skelmod.cache import CacheReader

    reader = CacheReader(cache)
    cfg = resolve_cache_options(load_preset("paper-ntu60").pretrain, reader).replace(dropout=0.0)
    if tiny:
        cfg = cfg.replace(hidden_channels=4, hidden_dim=16, feature_dim=8, batch_size=4,
                          queue_size=16)  # fmt: skip
    dev = torch.device(device)
    data = training_views(reader, cfg, cfg.modalities, cfg.unit_axis, cfg.bones)
    n = len(data)
    batches = [data.batch([j % n for j in range(i * cfg.batch_size, (i + 1) * cfg.batch_size)])
               for i in range(2)]  # fmt: skip
    batches = [tuple({m: x.to(dev) for m, x in v.items()} for v in b[:2]) for b in batches]
    torch.manual_seed(0)
    model = build_model(cfg, reader.layout.name).to(dev)
    model.runner = StreamRunner(1, precision, dev.type)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01,
                          momentum=0.9)  # fmt: skip
    out = {"batch": cfg.batch_size}
    for stage in (1, 2):
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(iterations + 2):
            if i == 2:  # two warm-up steps (allocator, cuDNN autotuning)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
            v1, v2 = batches[i % 2]
            loss = model(v1, v2, stage)["loss"]
            opt.zero_grad(set_to_none=True)
            model.backward(loss)
            opt.step()
        util = gpu_utilisation() if dev.type == "cuda" else None
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        rate = iterations * cfg.batch_size / seconds
        out[f"stage{stage}"] = {
            "samples_per_s": rate,
            "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30
            if dev.type == "cuda"
            else None,
            "gpu_util_percent": util,
            "paper_300_epochs_h": PAPER_EPOCHS * NTU60_XSUB_TRAIN / rate / 3600,
        }
    return out


def loader_rate(cache: Path, batches: int, tiny: bool) -> dict:
    from torch.utils.data import BatchSampler, DataLoader

    from ikemtrain.config import load_preset
    from ikemtrain.data import BatchedViews, EpochSampler, worker_context
    from ikemtrain.engine.loop import resolve_cache_options, training_views
    from skelmod.cache import CacheReader

    reader = CacheReader(cache)
    cfg = resolve_cache_options(load_preset("paper-ntu60").pretrain, reader)
    batch = 4 if tiny else cfg.batch_size
    data = training_views(reader, cfg, cfg.modalities, cfg.unit_axis, cfg.bones)
    workers = min(os.cpu_count() or 1, 2 if tiny else 16)
    sampler = BatchSampler(EpochSampler(len(data), 0), batch, drop_last=True)
    loader = DataLoader(
        BatchedViews(data),
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        multiprocessing_context=worker_context(workers),
    )
    it = iter(loader)
    next(it)  # workers started
    t0 = time.perf_counter()
    n = 0
    for _ in range(min(batches, len(loader) - 1)):
        n += len(next(it)[2])
    return {"workers": workers, "samples_per_s": n / (time.perf_counter() - t0)}


def cli(args: list[str], timeout: int, torchrun: bool = False) -> dict:
    cmd = [sys.executable, "-m", "cli.ikemtrain_cli", *args]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "1", "-m", "cli.ikemtrain_cli", *args]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return {"rc": proc.returncode, "seconds": time.perf_counter() - t0, "tail": tail}


def markdown(r: dict) -> str:
    env = r["environment"]
    lines = [f"GPU: {env.get('gpu', 'none')} ({env.get('gpu_memory_gib', '-')} GiB), torch "
             f"{env['torch']}, CUDA {env['cuda']}, {env['cpu_cores']} CPU cores; device "
             f"{r['device']}{' (tiny)' if r['tiny'] else ''}", ""]  # fmt: skip
    if "cache" in r:
        c = r["cache"]
        lines += [f"- cache: {c['files']} synthetic files, synth {c['synth_s']:.1f} s, convert "
                  f"{c['convert_s']:.1f} s ({c['convert_files_per_s']:.0f} files/s; NTU-60 "
                  f"projected {c['ntu60_convert_projected_s']:.0f} s)"]  # fmt: skip
    if "throughput" in r:
        lines += ["", "| precision | stage | samples/s | peak GiB | GPU util % | 300 epochs NTU-60 "
                  "xsub (h) |", "|---|---|---|---|---|---|"]  # fmt: skip
        for prec, t in r["throughput"].items():
            for stage in ("stage1", "stage2"):
                s = t[stage]
                peak = "-" if s["peak_gib"] is None else f"{s['peak_gib']:.2f}"
                util = "-" if s["gpu_util_percent"] is None else f"{s['gpu_util_percent']:.0f}"
                lines.append(f"| {prec} | {stage[-1]} | {s['samples_per_s']:.0f} | {peak} | "
                             f"{util} | {s['paper_300_epochs_h']:.1f} |")  # fmt: skip
    if "loader" in r:
        lo = r["loader"]
        lines += ["", f"- loader: {lo['samples_per_s']:.0f} samples/s with {lo['workers']} "
                  "workers (two views, six modalities)"]  # fmt: skip
    for key in ("torchrun", "linear_eval"):
        if key in r:
            lines.append(f"- {key}: rc {r[key]['rc']}, {r[key]['seconds']:.0f} s")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-run")))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (CPU tests)")
    ap.add_argument("--per-class", type=int, default=67, help="synthetic files per class")
    ap.add_argument("--iterations", type=int, default=20, help="timed steps per stage")
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("Error: no CUDA device here (torch.cuda.is_available() is False); "
              "use --device cpu --tiny to check the script", file=sys.stderr)  # fmt: skip
        return 1
    if args.tiny:  # toy tensors: OpenMP threads cost more than they give (and spin when shared)
        torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": args.device, "tiny": args.tiny}
    path = args.out / "gpu-results.json"

    def save() -> None:
        path.write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "gpu-results.md").write_text(markdown(results))

    results["environment"] = environment(args.device)
    save()
    say(f"[1/6] environment: {results['environment']}")
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    cache, results["cache"] = build_cache(work, 8 if args.tiny else args.per_class,
                                          4 if args.tiny else 60)  # fmt: skip
    save()
    say(f"[2/6] cache: {results['cache']}")
    iterations = 2 if args.tiny else args.iterations
    results["throughput"] = {}
    for precision in ("fp32", "bf16"):
        results["throughput"][precision] = throughput(cache, args.device, precision, iterations,
                                                      args.tiny)  # fmt: skip
        save()
        say(f"[3/6] pre-training {precision}: {results['throughput'][precision]}")
    results["loader"] = loader_rate(cache, 2 if args.tiny else 20, args.tiny)
    save()
    say(f"[4/6] loader: {results['loader']}")
    preset = "tiny" if args.tiny else "paper-ntu60"
    run = work / "ddp-run"
    steps = ["--set", "pretrain.epochs=1", "--set", "pretrain.cross_epoch=1", "--set",
             "pretrain.workers=0"]  # fmt: skip
    if not args.tiny:
        steps += ["--set", "pretrain.dropout=0.0"]
    results["torchrun"] = cli(["pretrain", str(cache), "--split", "xsub", "--preset", preset,
                               "-o", str(run), "--device", args.device, *steps],
                              timeout=300, torchrun=True)  # fmt: skip
    save()
    say(f"[5/6] torchrun, 1 rank: {results['torchrun']}")
    results["linear_eval"] = cli(["linear-eval", str(cache), "--split", "xsub", "--preset", preset,
                                  "--checkpoint", str(run), "--streams", "joint", "-o",
                                  str(work / "le"), "--device", args.device, "--set",
                                  "linear_eval.epochs=2", *(["--set", "linear_eval.batch_size=4"]
                                  if args.tiny else [])], timeout=300)  # fmt: skip
    save()
    say(f"[6/6] linear-eval: {results['linear_eval']}")
    print(markdown(results))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if results["torchrun"]["rc"] == 0 and results["linear_eval"]["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
