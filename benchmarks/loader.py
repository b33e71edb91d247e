"""The pre-training loader: two augmented views x six modalities, per sample vs per batch.

For each cache (N-UCLA at ``nucla-cpu``'s shape, V=20, M=1; and an NTU-shaped synthetic cache,
V=25, M=2, the paper's T=50), samples/s of one epoch-slice through a DataLoader:

* per sample: ``PretrainDataset[i]`` for each sample and the default collate (the loader
  before the batch-wise path, what ``DataLoader(dataset, batch_size=B)`` does);
* per batch: ``PretrainDataset.batch(keys)`` through a ``BatchSampler`` (what training uses);

with 0 workers (in the training process) and 1 and 2 worker processes, after the workers
have started. Both produce the same tensors (``tests/test_data.py``).

    python benchmarks/loader.py [--nucla nucla.h5] [--batches 30] [--batch 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torch.utils.data import BatchSampler, DataLoader  # noqa: E402

from ikemtrain.data import BatchedViews, EpochSampler, PretrainDataset, worker_context  # noqa: E402
from skelmod.layout import MODALITY_NAMES  # noqa: E402


def rate(dataset: PretrainDataset, batched: bool, workers: int, batch: int, batches: int) -> float:
    sampler = EpochSampler(len(dataset), seed=0)
    common = {"num_workers": workers, "multiprocessing_context": worker_context(workers)}
    if batched:
        keys = BatchSampler(sampler, batch, drop_last=True)
        loader = DataLoader(BatchedViews(dataset), batch_size=None, sampler=keys, **common)
    else:
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True, **common)
    it = iter(loader)
    next(it)  # workers started, first batch out
    n = min(batches, len(dataset) // batch - 1)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    return n * batch / (time.perf_counter() - t0)


def synthetic_ntu(folder: Path, n: int) -> Path:
    from skelmod.convert import ConvertOptions, convert
    from skelmod.synth import generate

    generate(folder / "raw", 10, n // 10, 0)
    convert(folder / "raw", folder / "ntu.h5", options=ConvertOptions(modalities=("joint",)),
            workers=1)  # fmt: skip
    return folder / "ntu.h5"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nucla", type=Path, help="an N-UCLA cache (skelmod convert --dataset nucla)")
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    caches = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.nucla:
            caches.append(("N-UCLA (V=20, M=1)", args.nucla, "xview-train"))
        caches.append(("NTU-shaped synthetic (V=25, M=2)", synthetic_ntu(Path(tmp), 1200),
                       "xsub-train"))  # fmt: skip
        print(f"{'cache':<34} {'workers':>7} {'per sample':>11} {'per batch':>10} {'ratio':>6}"
              "   (samples/s; per batch / workers = per worker)")  # fmt: skip
        for name, cache, split in caches:
            data = PretrainDataset(cache, split, MODALITY_NAMES, crop_ratio=6, shear=0.5,
                                   rotation=45.0, seed=0)  # fmt: skip
            for workers in (0, 1, 2):
                a = rate(data, False, workers, args.batch, args.batches)
                b = rate(data, True, workers, args.batch, args.batches)
                print(f"{name:<34} {workers:>7} {a:>11.0f} {b:>10.0f} {b / a:>6.2f}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
