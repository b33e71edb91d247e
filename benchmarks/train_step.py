"""One six-modality pre-training iteration (stage 1 and stage 2): the per-stream loop against the
stream runner, float32 and bfloat16, at ``nucla-cpu``'s width and at the paper's.

Every setting runs in a fresh process on the same inputs (a seeded random batch of the
``kinect-v1-20`` or ``ntu25`` shape), so each figure is what a run of that setting gets,
including its first-call costs amortised over ``--steps`` timed steps after ``--warmup``:

* ``loop``: today's path: the encoders one after another, each op on all intra-op threads;
* ``threads``: :class:`ikemtrain.nn.streams.StreamRunner` with one stream thread per core
  and one intra-op thread each (what ``stream_threads = 0`` picks on a CPU);
* ``compiled`` (``--compile MODE``): the runner with one stream thread and every encoder
  through ``torch.compile`` in that mode (``compile`` setting); its first step of each stage,
  which compiles (inductor's cache pointed at a fresh folder: a cold compilation), is timed
  apart, as ``compile_s`` (that step's time less a compiled step's) and ``compile_cpu_s`` (the
  same in CPU seconds of the process and the C++ compiler it runs); each timed compiled step
  is followed by an eager step of the loop in the same process (``eager_samples_per_s``), so
  the speed-up compares steps taken under the same load;
* ``grouped`` (encoders only, ``--grouped``): the six encoders as one module with grouped
  convolutions and a stream dimension, the "one batched computation" alternative, to show
  why the runner uses threads on a CPU.

Printed per setting: samples/s, achieved GFLOP/s (FLOPs of the step counted once with
``torch.utils.flop_counter``) beside the machine's measured matmul peak (float32 and
bfloat16, all threads), and peak memory (max RSS of the process, or
``torch.cuda.max_memory_allocated`` on CUDA).

    python benchmarks/train_step.py [--json] [--device cpu|cuda] [--batch 32] [--steps 4]
        [--compile default|reduce-overhead|max-autotune]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIDTHS = {"nucla-cpu": (8, 64, 32, "kinect-v1-20", 1), "paper": (16, 256, 128, "ntu25", 2)}


def _model(width: str, batch: int, device: str):
    import torch

    from ikemtrain.config import PretrainConfig
    from ikemtrain.engine.loop import build_model

    hc, hd, fd, layout, m = WIDTHS[width]
    cfg = PretrainConfig(
        hidden_channels=hc, hidden_dim=hd, feature_dim=fd, queue_size=512, dropout=0.0,
        head_bn=True, tau=0.2, momentum=0.9,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, layout).to(device)
    v = 20 if layout == "kinect-v1-20" else 25
    g = torch.Generator().manual_seed(1)
    views = [
        {mod: torch.randn(batch, 3, 50, v, m, generator=g).to(device) for mod in cfg.modalities}
        for _ in "12"
    ]
    return model, views


def run_setting(width: str, mode: str, precision: str, batch: int, steps: int, warmup: int,
                device: str, compile_mode: str = "none") -> dict:  # fmt: skip
    """Time one setting in this process (called in a fresh subprocess by :func:`main`)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ikemtrain.nn.streams import StreamRunner

    cores = torch.get_num_threads()
    model, (v1, v2) = _model(width, batch, device)
    dev = torch.device(device)
    # FLOPs are counted in this thread (the counter does not see the stream threads' ops)
    model.runner = StreamRunner(1, precision, dev.type)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step(stage: int) -> None:
        out = model(v1, v2, stage)
        opt.zero_grad(set_to_none=True)
        model.backward(out["loss"])
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    result = {"width": width, "mode": mode, "precision": precision, "batch": batch}
    result["threads"] = cores
    if mode == "compiled":
        result["compile"] = compile_mode
    for stage in (1, 2):
        model.runner = StreamRunner(1, precision, dev.type)
        with FlopCounterMode(display=False) as counter:
            step(stage)
        flops = counter.get_total_flops()
        if mode == "threads":
            torch.set_num_threads(1)
            model.runner = StreamRunner(cores, precision, dev.type)
        first, eager_runner = None, model.runner
        if mode == "compiled":
            model.runner = StreamRunner(1, precision, dev.type, compile_mode)
            t, c = time.perf_counter(), _cpu_s()
            step(stage)  # compiles (stage 2 reuses what stage 1 compiled, if anything)
            sync()
            first, first_cpu = time.perf_counter() - t, _cpu_s() - c
        for _ in range(warmup):
            step(stage)
        sync()
        times, eager_times, cpu_times = [], [], []
        for _ in range(steps):
            t, c = time.perf_counter(), _cpu_s()
            step(stage)
            sync()
            times.append(time.perf_counter() - t)
            cpu_times.append(_cpu_s() - c)
            if mode == "compiled":  # the eager loop's step, interleaved: the same load
                compiled_runner, model.runner = model.runner, eager_runner
                t = time.perf_counter()
                step(stage)
                sync()
                eager_times.append(time.perf_counter() - t)
                model.runner = compiled_runner
        best = min(times)
        result[f"stage{stage}"] = {
            "ms_per_step": 1e3 * best,
            "samples_per_s": batch / best,
            "gflop_per_s": flops / best / 1e9,
        }
        if first is not None:
            result[f"stage{stage}"]["compile_s"] = first - best
            result[f"stage{stage}"]["compile_cpu_s"] = first_cpu - min(cpu_times)
            result[f"stage{stage}"]["eager_samples_per_s"] = batch / min(eager_times)
    if dev.type == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the C++ compiler's runs): the
    cost of a compilation whatever else the machine is doing."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def grouped_encoders(width: str, batch: int, steps: int) -> dict:
    """Six encoders fwd+bwd: one after another vs one module with grouped convolutions."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from ikemtrain.nn.graph import layout_partition
    from ikemtrain.nn.stgcn import STGCN

    hc, hd, _, layout, m = WIDTHS[width]
    s = 6

    class Block(nn.Module):
        def __init__(self, cin, cout, k, stride, res):
            super().__init__()
            self.k, self.cout, self.res = k, cout, res
            self.gcn = nn.Conv2d(s * cin, s * k * cout, 1, groups=s)
            self.bn1, self.bn2 = nn.BatchNorm2d(s * cout), nn.BatchNorm2d(s * cout)
            self.tcn = nn.Conv2d(s * cout, s * cout, (9, 1), (stride, 1), (4, 0), groups=s)
            if res == "conv":
                self.rconv = nn.Conv2d(s * cin, s * cout, 1, (stride, 1), groups=s)
                self.rbn = nn.BatchNorm2d(s * cout)

        def forward(self, x, a):
            h = self.gcn(x)
            n, _, t, v = h.shape
            h = torch.einsum("nskctv,skvw->nsctw", h.view(n, s, self.k, self.cout, t, v), a)
            h = self.bn2(self.tcn(F.relu(self.bn1(h.reshape(n, s * self.cout, t, v)))))
            if self.res == "none":
                return F.relu(h)
            return F.relu(h + (x if self.res == "identity" else self.rbn(self.rconv(x))))

    a = torch.tensor(layout_partition(layout), dtype=torch.float32)
    k, v = a.shape[0], a.shape[1]
    plan = [(3, hc, 1, "none")] + [(hc, hc, 1, "identity")] * 3
    plan += [(hc, 2 * hc, 2, "conv")] + [(2 * hc, 2 * hc, 1, "identity")] * 2
    plan += [(2 * hc, 4 * hc, 2, "conv"), (4 * hc, 4 * hc, 1, "identity"), (4 * hc, hd, 1, "conv")]
    blocks = nn.ModuleList(Block(*p[:2], k, *p[2:]) for p in plan)
    importance = nn.Parameter(torch.ones(len(plan), s, k, v, v))
    data_bn = nn.BatchNorm1d(s * 3 * v)

    def grouped(x):  # x (N, S, C, T, V, M)
        n, _, c, t, _, mm = x.shape
        x = data_bn(x.permute(0, 5, 1, 4, 2, 3).reshape(n * mm, s * v * c, t))
        x = x.view(n * mm, s, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * mm, s * c, t, v)
        for i, block in enumerate(blocks):
            x = block(x, a * importance[i])
        return x.mean((2, 3)).view(n, mm, s, -1).mean(1)

    encs = [
        STGCN(3, hidden_channels=hc, hidden_dim=hd, dropout=0.0, layout=layout) for _ in "123456"
    ]
    xs = [torch.randn(batch, 3, 50, v, m) for _ in range(s)]
    stacked = torch.stack(xs, 1)

    def timed(fn):
        fn()
        best = float("inf")
        for _ in range(steps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return 1e3 * best

    loop = timed(lambda: sum(e(x).sum() for e, x in zip(encs, xs, strict=True)).backward())
    fused = timed(lambda: grouped(stacked).sum().backward())
    return {"width": width, "loop_ms": loop, "grouped_ms": fused}


def matmul_peak() -> dict:
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        out[name] = 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9
    return out


def _child(args: argparse.Namespace, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *extra, "--batch", str(args.batch)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    cmd += ["--compile", args.compile]
    with tempfile.TemporaryDirectory() as cache:  # a cold compilation in every process
        # compiling in this process (no worker pool), so that its CPU time is counted
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per stage (best kept)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--widths", default="nucla-cpu,paper")
    ap.add_argument("--grouped", action="store_true", help="also time the grouped-conv encoders")
    ap.add_argument(
        "--compile",
        default="none",
        choices=("none", "default", "reduce-overhead", "max-autotune"),
        help="also time the runner with the encoders compiled in this torch.compile mode",
    )
    ap.add_argument("--modes", default="loop,threads,compiled",
                    help="settings to time (compiled only with --compile)")  # fmt: skip
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        if kind == "step":
            width, mode, precision = rest
            r = run_setting(
                width,
                mode,
                precision,
                args.batch,
                args.steps,
                args.warmup,
                args.device,
                args.compile,
            )
        elif kind == "grouped":
            r = grouped_encoders(rest[0], args.batch, args.steps)
        else:
            r = matmul_peak()
        print(json.dumps(r))
        return
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("Error: --device cuda: torch finds no CUDA device on this machine")
    import torch

    report = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": []}
    report["matmul_peak_gflop_s"] = _child(args, "peak")
    print(f"torch {torch.__version__}, {report['threads']} threads, device {args.device}; "
          f"matmul peak fp32 {report['matmul_peak_gflop_s']['fp32']:.0f}, "
          f"bf16 {report['matmul_peak_gflop_s']['bf16']:.0f} GFLOP/s")  # fmt: skip
    print(f"{'width':>10} {'mode':>8} {'prec':>5} | {'stage 1 samples/s':>18} {'GFLOP/s':>8} | "
          f"{'stage 2 samples/s':>18} {'GFLOP/s':>8} | {'peak MB':>8}")  # fmt: skip
    modes = ("loop", "threads") if args.device == "cpu" else ("loop",)
    modes += ("compiled",) if args.compile != "none" else ()
    modes = tuple(m for m in modes if m in args.modes.split(","))
    for width in args.widths.split(","):
        for precision in ("fp32", "bf16"):
            for mode in modes:
                r = _child(args, "step", width, mode, precision)
                report["rows"].append(r)
                s1, s2 = r["stage1"], r["stage2"]
                print(f"{width:>10} {mode:>8} {precision:>5} | {s1['samples_per_s']:>18.1f} "
                      f"{s1['gflop_per_s']:>8.1f} | {s2['samples_per_s']:>18.1f} "
                      f"{s2['gflop_per_s']:>8.1f} | {r['peak_mb']:>8.0f}", flush=True)  # fmt: skip
                if mode == "compiled":
                    print(f"{'':>10} {args.compile} compilation (cold cache): stage 1 "
                          f"{s1['compile_s']:.1f} s ({s1['compile_cpu_s']:.1f} CPU-s), stage 2 "
                          f"{s2['compile_s']:.1f} s ({s2['compile_cpu_s']:.1f} CPU-s)",
                          flush=True)  # fmt: skip
        if args.grouped:
            g = _child(args, "grouped", width)
            report.setdefault("grouped", []).append(g)
            print(f"{width:>10} six encoders fwd+bwd fp32: loop {g['loop_ms']:.0f} ms, "
                  f"grouped convolutions {g['grouped_ms']:.0f} ms", flush=True)  # fmt: skip
    for width in args.widths.split(","):
        rows = {(r["mode"], r["precision"]): r for r in report["rows"] if r["width"] == width}
        if ("loop", "fp32") in rows:
            base = rows[("loop", "fp32")]["stage1"]["samples_per_s"]
            best = max(rows.values(), key=lambda r: r["stage1"]["samples_per_s"])
            ratio = best["stage1"]["samples_per_s"] / base
            print(f"{width}: best {best['mode']} {best['precision']} is {ratio:.2f}x the fp32 "
                  "loop (stage 1)")  # fmt: skip
        for precision in ("fp32", "bf16"):
            if ("compiled", precision) not in rows:
                continue
            for stage in ("stage1", "stage2"):
                c = rows[("compiled", precision)][stage]
                ratio = c["samples_per_s"] / c["eager_samples_per_s"]
                print(f"{width}: compiled {precision} {stage} is {ratio:.2f}x the eager loop "
                      f"(interleaved), after {c['compile_s']:.0f} s of compilation")  # fmt: skip
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
