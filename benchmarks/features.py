"""Feature extraction of an evaluation pass: the streams side by side vs one after another.

Linear evaluation and kNN spend most of their time extracting the frozen encoders' features
(``feature_seconds`` in their results.json: 20 of 22 s for N-UCLA's 6s). One run, on the
``<split>-train`` part of a cache, six random-init encoders at a preset's width, prints the
samples/s of ``extract_features``:

* one after another: ``threads=1`` with every intra-op thread (the default);
* side by side: one stream thread per core, each stream's ops on one intra-op thread (what
  the kNN monitor of a stream-threaded training run does);

alternating (A, B, A, B, best of ``--repeat`` each) so that both see the same load, and checks
that both give the same features to rounding.

    python benchmarks/features.py nucla.h5 --split xview [--preset nucla-cpu] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ikemtrain.config import load_preset  # noqa: E402
from ikemtrain.data import LinearEvalDataset  # noqa: E402
from ikemtrain.engine.encoders import build_encoders, extract_features  # noqa: E402
from ikemtrain.engine.loop import seed_everything  # noqa: E402
from skelmod.cache import CacheReader  # noqa: E402
from skelmod.layout import MODALITY_NAMES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--split", default="xview")
    ap.add_argument("--preset", default="nucla-cpu")
    ap.add_argument("--batch", type=int, default=256, help="the presets' eval_batch_size")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    cfg = load_preset(args.preset).pretrain
    reader = CacheReader(args.cache)
    data = LinearEvalDataset(reader, f"{args.split}-train", MODALITY_NAMES)
    backbone = {
        "hidden_channels": cfg.hidden_channels,
        "hidden_dim": cfg.hidden_dim,
        "dropout": 0.0,
        "layout": reader.layout.name,
    }
    seed_everything(0)
    encoders = build_encoders(MODALITY_NAMES, backbone)
    cpu = torch.device("cpu")
    cores = torch.get_num_threads()
    print(f"{len(data)} samples of {args.cache} ({args.split}-train), six streams at "
          f"{args.preset}'s width, batch {args.batch}; {platform.machine()}, "
          f"{torch.get_num_threads()} intra-op threads, torch {torch.__version__}")  # fmt: skip
    extract_features(encoders, data.subset(range(min(64, len(data)))), args.batch, cpu)  # warm
    times: dict[str, list[float]] = {"one after another": [], f"side by side ({cores})": []}
    feats = {}
    for _ in range(args.repeat):
        for label, threads in zip(times, (1, cores), strict=True):
            t0 = time.perf_counter()
            feats[label] = extract_features(encoders, data, args.batch, cpu, threads=threads)
            times[label].append(time.perf_counter() - t0)
    a, b = feats.values()
    worst = max(float((a[m] - b[m]).abs().max()) for m in MODALITY_NAMES)
    base = min(times["one after another"])
    for label, ts in times.items():
        print(f"{label:24s} {min(ts):7.2f} s  {len(data) / min(ts):8.1f} samples/s  "
              f"{base / min(ts):5.2f}x")  # fmt: skip
    print(f"largest feature difference: {worst:.2e}")


if __name__ == "__main__":
    main()
