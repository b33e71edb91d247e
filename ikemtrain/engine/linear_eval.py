"""Linear evaluation of frozen encoders (``reference-ikem.md`` §8; ``decisions.md`` 10).

Protocol:

* one ST-GCN per modality of the stream, loaded from a pre-training checkpoint (state-dict
  prefix ``branches.{m}.encoder_q.``), a student checkpoint of ``ikemtrain distill``
  (``students.{m}.encoder.``; streams ``student-<m>`` and ``3s``, the paper's 3s-Student)
  or, with ``random_init``, freshly initialised with ``weights_init`` (§5); always in
  **eval mode** (BN running statistics, no dropout) and frozen;
* a ``Linear(hidden_dim, num_class)`` per modality; a fused stream (``3s``: joint, velocity,
  bone; ``6s``: all six) averages the logits and the heads are trained **jointly** on the
  averaged logits with cross-entropy;
* inputs: the cached modalities, unaugmented (a modality the cache lacks, or holds with
  other modality options than the pre-training's, is computed from the cached joints);
  train on ``<split>-train`` (``drop_last`` batches), evaluate on ``<split>-val`` every
  ``eval_interval`` epochs and at the last; the class count is the cache's ``num_class``;
* a checkpoint evaluates only caches of its own joint layout; random-init encoders take the
  cache's layout;
* SGD (momentum 0.9, no Nesterov, weight decay 0) with the step schedule (lr 3.0 ×0.1 after
  epoch 80 in the paper preset).

With ``standardize`` (a named departure, off in ``paper-ntu60``) every feature is z-scored
with its mean and standard deviation over ``<split>-train`` before the classifier: a
BatchNorm without affine parameters whose statistics are the training split's, as the linear
probes of MAE and MoCo v3 use. The classifier then sees the same scale whatever the encoder
(pre-trained features can shrink to ~1e-3 while random ones are ~0.5), so one learning rate
fits both; it is applied to pre-trained and random-init encoders alike.

Both the final and the best top-1 / top-5 are reported (the reference reports only the best,
i.e. model selection on the test set, bug 15).

Speed: the encoders are frozen, in eval mode, and see unaugmented inputs, so each one is a
fixed deterministic function of its input. Their 256-d (``hidden_dim``) pooled features are
therefore computed **once per split** and the heads are trained on those features. This gives
the same result as running the encoders in every step (up to float rounding of batched
convolutions) at a fraction of the cost.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from skelmod.cache import CacheError, CacheReader

from ..config import (
    STUDENT_STREAMS,
    ConfigError,
    LinearEvalConfig,
    lr_at,
    stream_modalities,
)
from ..data import LinearEvalDataset, epoch_generator
from ..errors import NonFiniteLossError
from ..nn.init import weights_init
from ..nn.stgcn import STGCN
from .checkpoint import (
    CheckpointError,
    check_layout,
    checkpoint_layout,
    load_run,
    pretrain_config,
    save_checkpoint,
)
from .distributed import resolve_device
from .finite import check_finite_features
from .logging import format_epoch, make_out_dir
from .loop import seed_everything

__all__ = [
    "HEADS_NAME",
    "build_encoders",
    "extract_features",
    "linear_eval",
    "recalibrate_batchnorm",
    "standardize_features",
    "topk_accuracy",
]


#: Where each kind of training checkpoint keeps the encoder of modality ``m``.
ENCODER_PREFIX = {"pretrain": "branches.{m}.encoder_q.", "distill": "students.{m}.encoder."}


#: The trained linear heads of a linear-evaluation run (``OUT/heads.pt``).
HEADS_NAME = "heads.pt"


def build_encoders(
    modalities: Sequence[str],
    backbone: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
    prefix: str = ENCODER_PREFIX["pretrain"],
) -> nn.ModuleDict:
    """Frozen eval-mode encoders, one per modality.

    With ``state_dict``, encoder ``m`` gets the entries under ``prefix.format(m=m)`` (a
    pre-training model's ``branches.{m}.encoder_q.`` by default, a student's
    ``students.{m}.encoder.``); all of them must be there. Otherwise it keeps the random
    ``weights_init`` initialisation.
    """
    template = prefix
    encoders = nn.ModuleDict()
    for m in modalities:
        enc = STGCN(**backbone)
        enc.apply(weights_init)
        if state_dict is not None:
            prefix = template.format(m=m)
            sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if not sub:
                raise CheckpointError(f"checkpoint has no weights under {prefix!r}")
            try:
                enc.load_state_dict(sub, strict=True)
            except RuntimeError as e:
                detail = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
                raise CheckpointError(
                    f"checkpoint weights under {prefix!r} do not fit: {detail}"
                ) from None
        encoders[m] = enc
    encoders.requires_grad_(False)
    return encoders.eval()


@torch.no_grad()
def extract_features(
    encoders: nn.ModuleDict, dataset: LinearEvalDataset, batch_size: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pooled features ``(n, hidden_dim)`` of every sample of ``dataset``, per modality."""
    encoders.eval()
    feats: dict[str, list[torch.Tensor]] = {m: [] for m in encoders}
    for lo in range(0, len(dataset), batch_size):
        block = dataset.read_block(lo, lo + batch_size)
        for m, enc in encoders.items():
            feats[m].append(enc(block[m].to(device)).float())
    return {m: torch.cat(v) for m, v in feats.items()}


@torch.no_grad()
def recalibrate_batchnorm(
    encoders: nn.ModuleDict, dataset: LinearEvalDataset, batch_size: int, device: torch.device
) -> None:
    """Set every BatchNorm's running statistics to the average over ``dataset``.

    Label-free and gradient-free: only the BN layers run in training mode (cumulative
    average, ``momentum=None``), dropout stays off; the encoders end in eval mode.
    """
    bns = [m for m in encoders.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for lo in range(0, len(dataset), batch_size):
        block = dataset.read_block(lo, lo + batch_size)
        for m, enc in encoders.items():
            enc(block[m].to(device))
    encoders.eval()


def standardize_features(
    train: dict[str, torch.Tensor], val: dict[str, torch.Tensor], eps: float = 1e-20
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Z-score each feature ``(n, d)`` with the mean and std of ``train`` (per modality).

    The same affine map goes to ``val``. The std is floored at ``eps`` only so that a
    constant feature stays finite (it becomes 0); no additive epsilon, so the result is the
    same whatever the scale of the features (shrunk encoders give stds of ~1e-4).
    """
    out_train, out_val = {}, {}
    for m, x in train.items():
        x = x.double()
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(eps)
        out_train[m] = ((x - mean) / std).float()
        out_val[m] = ((val[m].double() - mean) / std).float()
    return out_train, out_val


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[float]:
    """Top-k accuracies in percent (k is capped at the number of classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return [100.0 * float(hit[:, : min(k, top.shape[1])].any(1).float().mean()) for k in ks]


def _fused_logits(heads: nn.ModuleDict, feats: dict[str, torch.Tensor], idx=None):
    logits = [heads[m](feats[m] if idx is None else feats[m][idx]) for m in heads]
    return torch.stack(logits).mean(0)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def linear_eval(
    cfg: LinearEvalConfig,
    cache: str | os.PathLike | CacheReader,
    out_dir: str | os.PathLike,
    split: str,
    stream: str,
    checkpoint: str | os.PathLike | None = None,
    random_init: bool = False,
    backbone: dict[str, Any] | None = None,
    modalities: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    echo: Callable[[str], None] | None = print,
    recalibrate_bn: bool = True,
) -> dict[str, Any]:
    """Train linear heads on frozen encoders and write ``out_dir/results.json``.

    Args:
        cfg: optimiser and schedule settings.
        cache: the cache (must hold the stream's modalities); trains on ``<split>-train``,
            evaluates on ``<split>-val``.
        split: benchmark name, e.g. ``"xsub"``.
        stream: a modality name, ``"3s"`` or ``"6s"``.
        checkpoint: a pre-training run (any stream of its modalities) or a student run
            (``3s`` or ``student-<modality>``), as a folder or checkpoint file; or
        random_init: evaluate untrained encoders built from ``backbone`` (STGCN kwargs) for
            the pre-training modality set ``modalities``.
        recalibrate_bn: with ``random_init``, first estimate the BatchNorm running statistics
            on ``<split>-train`` (see :func:`recalibrate_batchnorm`). Without it the §5
            initialisation leaves pooled features of about 1e-8 and the heads can only learn
            the class frequencies: a degenerate baseline. Ignored for checkpoints, whose
            encoders keep their pre-training statistics (§8).

    Returns the results dict written to ``results.json``: ``top1_final``, ``top1_best``,
    ``top5_final``, ``top5_best`` (percent), ``history`` (one dict per epoch with ``epoch``,
    ``loss``, ``lr``, and ``top1``/``top5`` where evaluated), the settings and the checkpoint.
    The trained heads go to ``out_dir/heads.pt`` (``kind = "linear-eval"``, tensors and plain
    types), which ``ikemtrain export --classifier`` packs with a student.
    """
    if (checkpoint is None) == (not random_init):
        raise ConfigError("give exactly one of a checkpoint or random_init")
    needed = stream_modalities(stream)
    state_dict = None
    pretrain_cfg: dict[str, Any] | None = None
    distill_cfg: dict[str, Any] | None = None
    kind = None
    prefix = ENCODER_PREFIX["pretrain"]
    if checkpoint is not None:
        checkpoint, state = load_run(checkpoint)
        kind = state["kind"]
        if kind not in ENCODER_PREFIX:
            raise CheckpointError(f"{checkpoint}: a {kind} checkpoint holds no encoders")
        prefix = ENCODER_PREFIX[kind]
        is_student = kind == "distill"
        if is_student and stream not in STUDENT_STREAMS:
            raise ConfigError(
                f"{checkpoint} is a student run; its streams are {', '.join(STUDENT_STREAMS)}"
            )
        if is_student:
            # the students see the teacher's modality options; their backbone is recorded
            pcfg = pretrain_config(state["teacher"], checkpoint)
            distill_cfg = state["config"]
            backbone, available = (
                state["student"]["backbone"],
                tuple(state["student"]["modalities"]),
            )
            where = f"student run {checkpoint} (students {', '.join(available)})"
        else:
            pcfg = pretrain_config(state, checkpoint)
            backbone = {**pcfg.backbone, "layout": checkpoint_layout(state)}
            available = pcfg.modalities
            where = f"checkpoint {checkpoint} (pre-trained on {', '.join(available)})"
        pretrain_cfg = pcfg.to_dict()
        # older checkpoints recorded the preset's options, None there meant the defaults
        options = {"unit_axis": bool(pcfg.unit_axis), "bones": pcfg.bones or "6v"}
        state_dict = state["model"]
    if stream.startswith("student-") and kind != "distill":
        raise ConfigError(f"stream {stream!r} needs a student run (`ikemtrain distill`)")
    if checkpoint is None:
        if backbone is None or modalities is None:
            raise ConfigError("random_init needs the backbone settings and the modality set")
        available = tuple(modalities)
        options = {}  # the cache's own
        where = f"the random-init modality set ({', '.join(available)})"
    missing = [m for m in needed if m not in available]
    if missing:
        raise ConfigError(f"stream {stream!r} needs {', '.join(missing)}, not in {where}")

    dev = resolve_device(device)
    out = make_out_dir(out_dir)
    reader = cache if isinstance(cache, CacheReader) else CacheReader(cache)
    if checkpoint is not None:
        check_layout(state, reader, checkpoint)
    else:
        backbone = {**backbone, "layout": reader.layout.name}
    train_set = LinearEvalDataset(reader, f"{split}-train", needed, **options)
    val_set = LinearEvalDataset(reader, f"{split}-val", needed, **options)
    if train_set.computed and echo is not None:
        echo(
            f"computing {', '.join(train_set.computed)} from the cached joints (not in the "
            "cache with the pre-training's modality options)"
        )
    if len(train_set) < cfg.batch_size:
        raise CacheError(
            f"{reader.path}: split {split}-train has {len(train_set)} samples, fewer than one "
            f"batch of {cfg.batch_size} (batches drop the remainder); lower batch_size"
        )
    num_class = reader.num_class

    started = time.perf_counter()
    seed_everything(cfg.seed)
    encoders = build_encoders(needed, backbone, state_dict, prefix).to(dev)
    recalibrated = checkpoint is None and recalibrate_bn
    if recalibrated:
        recalibrate_batchnorm(encoders, train_set, cfg.eval_batch_size, dev)
    train_x = extract_features(encoders, train_set, cfg.eval_batch_size, dev)
    val_x = extract_features(encoders, val_set, cfg.eval_batch_size, dev)
    check_finite_features(train_x, train_set.indices, reader, f"{split}-train")
    check_finite_features(val_x, val_set.indices, reader, f"{split}-val")
    if cfg.standardize:
        train_x, val_x = standardize_features(train_x, val_x)
    train_y = torch.as_tensor(train_set.labels, device=dev)
    val_y = torch.as_tensor(val_set.labels, device=dev)
    feature_seconds = time.perf_counter() - started
    del encoders

    hidden_dim = next(iter(train_x.values())).shape[1]
    torch.manual_seed(cfg.seed)
    heads = nn.ModuleDict({m: nn.Linear(hidden_dim, num_class) for m in needed})
    heads.apply(weights_init)
    heads.to(dev)
    optimizer = torch.optim.SGD(
        heads.parameters(),
        lr=cfg.lr,
        momentum=cfg.sgd_momentum,
        weight_decay=cfg.weight_decay,
        nesterov=False,
    )
    history: list[dict[str, Any]] = []
    n_train = len(train_set)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = lr_at(cfg.lr, cfg.steps, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        heads.train()
        order = torch.randperm(n_train, generator=epoch_generator(cfg.seed, epoch)).to(dev)
        total, batches = 0.0, 0
        for b in range(n_train // cfg.batch_size):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            loss = F.cross_entropy(_fused_logits(heads, train_x, idx), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        record: dict[str, Any] = {"epoch": epoch, "loss": total / batches, "lr": lr}
        if epoch % cfg.eval_interval == 0 or epoch == cfg.epochs:
            heads.eval()
            with torch.no_grad():
                top1, top5 = topk_accuracy(_fused_logits(heads, val_x), val_y)
            record.update(top1=top1, top5=top5)
            if echo is not None:
                line = {**record, "epochs": cfg.epochs, "seconds": time.perf_counter() - t0}
                echo(format_epoch(line))
        if not torch.isfinite(torch.tensor(record["loss"])):
            raise NonFiniteLossError(
                f"epoch {epoch}: the linear-evaluation loss is {record['loss']} on finite "
                f"features; lower the learning rate (now {lr:g})"
            )
        history.append(record)

    evaluated = [h for h in history if "top1" in h]
    results = {
        "stream": stream,
        "modalities": list(needed),
        "split": split,
        "top1_final": evaluated[-1]["top1"],
        "top5_final": evaluated[-1]["top5"],
        "top1_best": max(h["top1"] for h in evaluated),
        "top5_best": max(h["top5"] for h in evaluated),
        "num_class": num_class,
        "layout": reader.layout.name,
        "computed": list(train_set.computed),
        "train_samples": n_train,
        "val_samples": len(val_set),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "random_init": checkpoint is None,
        "bn_recalibrated": recalibrated,
        "standardized": cfg.standardize,
        "backbone": dict(backbone),
        "config": cfg.to_dict(),
        "pretrain_config": pretrain_cfg,
        "distill_config": distill_cfg,
        "encoders": kind or "random-init",
        "cache": str(reader.path),
        "feature_seconds": feature_seconds,
        "seconds": time.perf_counter() - started,
        "history": history,
    }
    save_checkpoint(
        out / HEADS_NAME,
        {
            "kind": "linear-eval",
            "stream": stream,
            "modalities": list(needed),
            "num_class": num_class,
            "hidden_dim": hidden_dim,
            "heads": {k: v.detach().cpu() for k, v in heads.state_dict().items()},
            "checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
        },
    )
    _write_json(out / "results.json", results)
    return results
