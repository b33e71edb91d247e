"""Linear evaluation of frozen encoders (docs/method.md, "Linear evaluation").

Protocol:

* one ST-GCN per modality of the stream, loaded from a pre-training checkpoint (state-dict
  prefix ``branches.{m}.encoder_q.``), a student checkpoint of ``ikemtrain distill``
  (``students.{m}.encoder.``; streams ``student-<m>`` and ``3s``, the paper's 3s-Student),
  a fine-tuning run (``encoders.{m}.``) or, with ``random_init``, freshly initialised with
  ``weights_init`` (:mod:`ikemtrain.engine.encoders`); always in **eval mode** (BN
  running statistics, no dropout) and frozen;
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
i.e. model selection on the test set: best-epoch reporting).

Speed: the encoders are frozen, in eval mode, and see unaugmented inputs, so each one is a
fixed deterministic function of its input. Their 256-d (``hidden_dim``) pooled features are
therefore computed **once per split** and the heads are trained on those features. This gives
the same result as running the encoders in every step (up to float rounding of batched
convolutions) at a fraction of the cost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skelmod.cache import CacheError, CacheReader

from ..config import LinearEvalConfig, lr_at
from ..data import LinearEvalDataset, epoch_generator, open_cache
from ..errors import NonFiniteLossError
from ..nn.heads import fused_logits
from ..nn.init import weights_init
from ..runfolder import open_run_folder
from .checkpoint import save_checkpoint
from .distributed import resolve_device
from .encoders import (
    ENCODER_PREFIX,
    EncoderSource,
    build_encoders,
    encoder_source,
    eval_datasets,
    extract_features,
    recalibrate_batchnorm,
)
from .finite import check_finite_features
from .logging import format_epoch, write_json
from .loop import seed_everything

__all__ = [
    "ENCODER_PREFIX",
    "HEADS_NAME",
    "PREDICTIONS_NAME",
    "build_encoders",
    "extract_features",
    "frozen_features",
    "linear_eval",
    "pca_2d",
    "recalibrate_batchnorm",
    "standardize_features",
    "summarize",
    "topk_accuracy",
    "train_heads",
]


#: The trained linear heads of a linear-evaluation run (``OUT/heads.pt``).
HEADS_NAME = "heads.pt"
#: The final heads' predictions on ``<split>-val`` (``OUT/predictions.npz``): ``rows`` (cache
#: rows), ``labels``, ``predicted`` (int64, ``(n,)``) and ``embedding`` (float32 ``(n, 2)``:
#: the two principal components of the stream's features, :func:`pca_2d`), for the report.
PREDICTIONS_NAME = "predictions.npz"


def frozen_features(
    source: EncoderSource,
    backbone: dict[str, Any],
    modalities: Sequence[str],
    train_set: LinearEvalDataset,
    val_set: LinearEvalDataset,
    batch_size: int,
    device: torch.device,
    seed: int,
    recalibrate_bn: bool = True,
    show: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
    """Features ``{modality: (n, hidden_dim)}`` of ``train_set`` and ``val_set`` from the
    source's frozen encoders, and whether their BatchNorm statistics were recalibrated.

    The encoders are built after seeding with ``seed`` (random init is reproducible). With
    ``recalibrate_bn``, random-init encoders first estimate their BatchNorm statistics on
    ``train_set`` (:func:`recalibrate_batchnorm`); checkpoints keep their own. ``show``:
    a progress bar per pass on stderr. Raises NonFiniteLossError naming the samples whose
    features are not finite.
    """
    seed_everything(seed)
    encoders = source.build(modalities, backbone).to(device)
    recalibrated = source.random_init and recalibrate_bn
    if recalibrated:
        recalibrate_batchnorm(encoders, train_set, batch_size, device, show)
    train_x = extract_features(encoders, train_set, batch_size, device, show)
    val_x = extract_features(encoders, val_set, batch_size, device, show)
    check_finite_features(train_x, train_set.indices, train_set.reader, train_set.split)
    check_finite_features(val_x, val_set.indices, val_set.reader, val_set.split)
    return train_x, val_x, recalibrated


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


def train_heads(
    cfg: LinearEvalConfig,
    train_x: Mapping[str, torch.Tensor],
    train_y: torch.Tensor,
    val_x: Mapping[str, torch.Tensor],
    val_y: torch.Tensor,
    num_class: int,
    device: torch.device,
    echo: Callable[[str], None] | None = print,
) -> tuple[nn.ModuleDict, list[dict[str, Any]]]:
    """Train one ``Linear(hidden_dim, num_class)`` per modality of ``train_x`` jointly on
    the averaged logits and return the heads and the per-epoch history.

    SGD with the step schedule of ``cfg``; ``drop_last`` batches in the seeded order of
    :func:`~ikemtrain.data.epoch_generator`; evaluated on ``val_x`` every ``eval_interval``
    epochs and at the last (``top1``/``top5`` in those records; ``echo`` prints them).
    Raises NonFiniteLossError when the loss turns NaN or infinite.
    """
    modalities = list(train_x)
    hidden_dim = train_x[modalities[0]].shape[1]
    torch.manual_seed(cfg.seed)
    heads = nn.ModuleDict({m: nn.Linear(hidden_dim, num_class) for m in modalities})
    heads.apply(weights_init)
    heads.to(device)
    optimizer = torch.optim.SGD(
        heads.parameters(),
        lr=cfg.lr,
        momentum=cfg.sgd_momentum,
        weight_decay=cfg.weight_decay,
        nesterov=False,
    )
    history: list[dict[str, Any]] = []
    n_train = len(train_y)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = lr_at(cfg.lr, cfg.steps, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        heads.train()
        order = torch.randperm(n_train, generator=epoch_generator(cfg.seed, epoch)).to(device)
        total, batches = 0.0, 0
        for b in range(n_train // cfg.batch_size):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            logits = fused_logits(heads, {m: train_x[m][idx] for m in heads})
            loss = F.cross_entropy(logits, train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        record: dict[str, Any] = {"epoch": epoch, "loss": total / batches, "lr": lr}
        if epoch % cfg.eval_interval == 0 or epoch == cfg.epochs:
            heads.eval()
            with torch.no_grad():
                top1, top5 = topk_accuracy(fused_logits(heads, val_x), val_y)
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
    return heads, history


def summarize(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``top1_final``, ``top5_final`` (the last evaluated epoch) and ``top1_best``,
    ``top5_best`` (the best over evaluated epochs: the reference's number)."""
    evaluated = [h for h in history if "top1" in h]
    return {
        "top1_final": evaluated[-1]["top1"],
        "top5_final": evaluated[-1]["top5"],
        "top1_best": max(h["top1"] for h in evaluated),
        "top5_best": max(h["top5"] for h in evaluated),
    }


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """The first two principal components of ``x`` ``(n, d)``: ``(n, 2)`` float32 scores.

    Centred, computed by SVD in float64; each component's sign makes its largest loading
    positive, so the picture does not flip between runs. Fewer than two components (n < 2
    or d < 2) are padded with zeros.
    """
    x = x.detach().double().cpu()
    x = x - x.mean(0)
    out = torch.zeros(x.shape[0], 2, dtype=torch.float64)
    if x.shape[0] >= 2:
        _, _, vh = torch.linalg.svd(x, full_matrices=False)
        comps = vh[:2]
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * torch.where(signs == 0, 1.0, signs)
        out[:, : comps.shape[0]] = x @ comps.T
    return out.float()


def _write_predictions(
    path: Path,
    heads: nn.ModuleDict,
    val_x: Mapping[str, torch.Tensor],
    val_set: LinearEvalDataset,
) -> None:
    heads.eval()
    with torch.no_grad():
        predicted = fused_logits(heads, val_x).argmax(1).cpu().numpy()
    embedding = pca_2d(torch.cat([val_x[m] for m in heads], 1)).numpy()
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        rows=val_set.indices.astype(np.int64),
        labels=val_set.labels.astype(np.int64),
        predicted=predicted.astype(np.int64),
        embedding=embedding.astype(np.float32),
    )
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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train linear heads on frozen encoders and write ``out_dir/results.json``.

    Args:
        cfg: optimiser and schedule settings.
        cache: the cache (must hold the stream's modalities); trains on ``<split>-train``,
            evaluates on ``<split>-val``.
        split: benchmark name, e.g. ``"xsub"``.
        stream: a modality name, ``"3s"`` or ``"6s"``.
        checkpoint: a pre-training run (any stream of its modalities), a student run
            (``3s`` or ``student-<modality>``) or a fine-tuning run (its encoders), as a
            folder or checkpoint file; or
        random_init: evaluate untrained encoders built from ``backbone`` (STGCN kwargs) for
            the pre-training modality set ``modalities``.
        recalibrate_bn: with ``random_init``, first estimate the BatchNorm running statistics
            on ``<split>-train`` (see :func:`recalibrate_batchnorm`). Without it the
            initialisation leaves pooled features of about 1e-8 and the heads can only learn
            the class frequencies: a degenerate baseline. Ignored for checkpoints, whose
            encoders keep their pre-training statistics.
        overwrite: replace a previous linear-eval run in ``out_dir``; without it the folder
            must be new (:mod:`ikemtrain.runfolder`, which also writes ``run.json``).

    Returns the results dict written to ``results.json``: ``top1_final``, ``top1_best``,
    ``top5_final``, ``top5_best`` (percent), ``history`` (one dict per epoch with ``epoch``,
    ``loss``, ``lr``, and ``top1``/``top5`` where evaluated), the settings and the checkpoint.
    The trained heads go to ``out_dir/heads.pt`` (``kind = "linear-eval"``, tensors and plain
    types), which ``ikemtrain export --classifier`` packs with a student, and the final
    heads' predictions on ``<split>-val`` to ``out_dir/predictions.npz``
    (:data:`PREDICTIONS_NAME`), which ``ikemtrain report`` draws.

    The parts, in order: :func:`~ikemtrain.engine.encoders.encoder_source` (which encoders),
    :func:`~ikemtrain.engine.encoders.eval_datasets` (which inputs),
    :func:`frozen_features` (their features, once), :func:`train_heads` (the classifier),
    :func:`summarize` and the files (the report).
    """
    source = encoder_source(checkpoint, random_init, backbone, modalities)
    needed = source.modalities_for(stream)

    dev = resolve_device(device)
    reader = open_cache(cache)
    backbone = source.check_cache(reader)
    train_set, val_set = eval_datasets(source, reader, split, needed, echo)
    if len(train_set) < cfg.batch_size:
        raise CacheError(
            f"{reader.path}: split {split}-train has {len(train_set)} samples, fewer than one "
            f"batch of {cfg.batch_size} (batches drop the remainder); lower batch_size"
        )
    num_class = reader.num_class
    settings = {"split": split, "stream": stream, **cfg.to_dict(), "recalibrate_bn": recalibrate_bn}
    # the inputs are checked first: the folder rule is the last thing that can refuse the run
    with open_run_folder(
        out_dir, "linear-eval", "overwrite" if overwrite else "new", settings=settings,
        cache=reader.path, inputs=source.record(),
    ) as folder:  # fmt: skip
        out = folder.path

        started = time.perf_counter()
        train_x, val_x, recalibrated = frozen_features(
            source, backbone, needed, train_set, val_set, cfg.eval_batch_size, dev, cfg.seed,
            recalibrate_bn, show=echo is not None,
        )  # fmt: skip
        if cfg.standardize:
            train_x, val_x = standardize_features(train_x, val_x)
        train_y = torch.as_tensor(train_set.labels, device=dev)
        val_y = torch.as_tensor(val_set.labels, device=dev)
        feature_seconds = time.perf_counter() - started

        heads, history = train_heads(cfg, train_x, train_y, val_x, val_y, num_class, dev, echo)

        results = {
            "protocol": "linear-eval",
            "stream": stream,
            "modalities": list(needed),
            "split": split,
            **summarize(history),
            "num_class": num_class,
            "layout": reader.layout.name,
            "computed": list(train_set.computed),
            "train_samples": len(train_set),
            "val_samples": len(val_set),
            **source.record(),
            "bn_recalibrated": recalibrated,
            "standardized": cfg.standardize,
            "backbone": dict(backbone),
            "config": cfg.to_dict(),
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
                "hidden_dim": next(iter(train_x.values())).shape[1],
                "heads": {k: v.detach().cpu() for k, v in heads.state_dict().items()},
                "checkpoint": str(source.checkpoint.resolve()) if source.checkpoint else None,
            },
        )
        _write_predictions(out / PREDICTIONS_NAME, heads, val_x, val_set)
        write_json(out / "results.json", results)
        return results
