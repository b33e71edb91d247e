"""Why is an untrained encoder with raw BatchNorm statistics such a strong baseline under the
standardised probe, and why do re-estimated statistics weaken it? (issue 19, point 2)

For random encoders of a preset's width (the backbone's initialisation: weights N(0, 0.02)) on a
cache's ``SPLIT-train`` / ``SPLIT-val``, with BatchNorm statistics raw (running mean 0, var 1:
each BN is nearly the identity) and re-estimated on ``SPLIT-train``, per modality (and 6s):

* the scale of the activations after each ST-GCN block (median |x|), where the signal shrinks;
* the pooled features: their scale, the share of features that are exactly 0 for every sample
  (dead ReLU channels) and the effective dimension of the standardised features (participation
  ratio of the covariance's eigenvalues, ``(sum l)^2 / sum l^2``);
* the standardised linear probe's training and validation top-1 (the preset's
  ``[linear_eval]``), and a nearest-class-mean probe as a check that needs no training.

    python benchmarks/random_baseline.py nucla.h5 --split xview --preset cpu [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ikemtrain.config import MODALITY_SETS, load_preset  # noqa: E402
from ikemtrain.data import LinearEvalDataset  # noqa: E402
from ikemtrain.engine.encoders import (  # noqa: E402
    build_encoders,
    extract_features,
    recalibrate_batchnorm,
)
from ikemtrain.engine.linear_eval import standardize_features, topk_accuracy, train_heads  # noqa: E402
from ikemtrain.engine.loop import seed_everything  # noqa: E402
from skelmod.cache import CacheReader  # noqa: E402


def block_scales(encoder: nn.Module, x: torch.Tensor) -> list[float]:
    """Median |activation| after data_bn and after each ST-GCN block for inputs ``x``."""
    scales: list[float] = []

    def record(_module, _inputs, output):
        scales.append(output.abs().median().item())

    hooks = [encoder.data_bn.register_forward_hook(record)]
    hooks += [block.register_forward_hook(record) for block in encoder.st_gcn_networks]
    with torch.no_grad():
        encoder(x)
    for h in hooks:
        h.remove()
    return scales


def effective_dim(x: torch.Tensor) -> float:
    """Participation ratio of the covariance spectrum of standardised features ``(n, d)``."""
    z = (x - x.mean(0)) / x.std(0).clamp_min(1e-30)
    z = z[:, x.std(0) > 0]
    if z.shape[1] == 0:
        return 0.0
    ev = torch.linalg.eigvalsh(torch.cov(z.double().T)).clamp_min(0)
    return float(ev.sum() ** 2 / (ev**2).sum())


def class_mean_top1(train: torch.Tensor, ty: torch.Tensor, val: torch.Tensor, vy: torch.Tensor,
                    num_class: int) -> float:  # fmt: skip
    mean, std = train.mean(0), train.std(0).clamp_min(1e-30)
    tr, va = (train - mean) / std, (val - mean) / std
    centres = torch.stack([tr[ty == c].mean(0) if (ty == c).any() else torch.full_like(tr[0], 1e9)
                           for c in range(num_class)])  # fmt: skip
    return 100.0 * float((torch.cdist(va, centres).argmin(1) == vy).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--split", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    preset = load_preset(args.preset)
    reader = CacheReader(args.cache)
    mods = MODALITY_SETS[6]
    train_set = LinearEvalDataset(reader, f"{args.split}-train", mods)
    val_set = LinearEvalDataset(reader, f"{args.split}-val", mods)
    ty = torch.from_numpy(train_set.labels)
    vy = torch.from_numpy(val_set.labels)
    backbone = {**preset.pretrain.backbone, "layout": reader.layout.name}
    device = torch.device("cpu")
    probe_x = train_set.read_block(0, 64)
    out: dict = {}
    for row in ("raw_bn", "bn_estimated"):
        seed_everything(args.seed)
        enc = build_encoders(mods, backbone)
        if row == "bn_estimated":
            recalibrate_batchnorm(enc, train_set, 256, device)
        tx = extract_features(enc, train_set, 256, device)
        vx = extract_features(enc, val_set, 256, device)
        res = {"modalities": {}}
        for m in mods:
            f = tx[m]
            res["modalities"][m] = {
                "block_median_abs": block_scales(enc[m], probe_x[m]),
                "feature_median_abs": float(f.abs().median()),
                "dead_features": float((f.abs().max(0).values == 0).float().mean()),
                "effective_dim": effective_dim(f),
                "class_mean_top1": class_mean_top1(f, ty, vx[m], vy, reader.num_class),
            }
        cat_t = torch.cat([tx[m] for m in mods], 1)
        cat_v = torch.cat([vx[m] for m in mods], 1)
        res["6s_effective_dim"] = effective_dim(cat_t)
        res["6s_class_mean_top1"] = class_mean_top1(cat_t, ty, cat_v, vy, reader.num_class)
        st, sv = standardize_features(tx, vx)
        heads, history = train_heads(preset.linear_eval, st, ty, sv, vy, reader.num_class,
                                     device, echo=None)  # fmt: skip
        with torch.no_grad():
            train_logits = torch.stack([heads[m](st[m]) for m in mods]).mean(0)
        res["6s_probe_train_top1"] = topk_accuracy(train_logits, ty, (1,))[0]
        res["6s_probe_val_top1"] = history[-1]["top1"]
        out[row] = res
        print(f"\n{row}: 6s probe train {res['6s_probe_train_top1']:.1f} val "
              f"{res['6s_probe_val_top1']:.2f}; nearest class mean "
              f"{res['6s_class_mean_top1']:.2f}; effective dim of 6s "
              f"{res['6s_effective_dim']:.1f} of {cat_t.shape[1]}")  # fmt: skip
        print(f"{'modality':<17} {'feat |x|':>9} {'dead':>5} {'eff dim':>7} {'NCM':>6}  "
              "median |x| after data_bn, blocks 1-10")  # fmt: skip
        for m, r in res["modalities"].items():
            scales = " ".join(f"{v:.1e}" for v in r["block_median_abs"])
            print(f"{m:<17} {r['feature_median_abs']:9.1e} {r['dead_features']:5.2f} "
                  f"{r['effective_dim']:7.1f} {r['class_mean_top1']:6.2f}  {scales}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
