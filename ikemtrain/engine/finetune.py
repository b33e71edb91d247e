"""Fine-tuning and semi-supervised evaluation (issue 10; not in the paper).

Protocol:

* the encoders of a stream from a pre-training, student or fine-tuning run, or random init
  (supervised training from scratch, the baseline), as for linear evaluation
  (:mod:`ikemtrain.engine.encoders`), now **trainable** and in training mode, each followed by
  a ``Linear(hidden_dim, num_class)``; a fused stream averages the logits
  (:class:`ikemtrain.methods.finetune.Classifier`), trained end to end with cross-entropy;
* labels: a seeded, class-balanced subset of ``<split>-train`` (:func:`label_subset`):
  ``round(label_fraction · n_c)`` samples of each class ``c`` (at least one), so 1 % and
  10 % keep the class frequencies; ``label_fraction = 1`` is full fine-tuning;
* inputs: the cached modalities, unaugmented, as linear evaluation reads them;
* the training loop of pre-training (:func:`ikemtrain.engine.loop.run_training`): SGD with
  the step schedule, seeded ``drop_last`` batches, a weights-only checkpoint every epoch,
  exact ``resume``, DDP, per-epoch lines with loss, lr and samples/s, ``metrics.jsonl``;
  ``<split>-val`` is evaluated every ``eval_interval`` epochs and at the last.

A fine-tuning run from another fine-tuning run starts from its encoders **and** its linear
heads, so the cache must have the same class count; any other source gets new heads, so it
transfers to any cache of its joint layout.

The checkpoint (``kind = "finetune"``) holds, beside the model, ``finetune``: the stream,
``modalities``, ``backbone`` (with the joint ``layout``), the modality ``options``,
``num_class``, the source (``source``, ``source_checkpoint``, ``pretrain_config``) and the
cache rows of the labelled subset (``subset_rows``); all must match on resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from skelmod.cache import CacheReader

from ..config import FinetuneConfig
from ..data import open_cache
from ..methods.finetune import Classifier
from .checkpoint import CheckpointError
from .encoders import EncoderSource, encoder_source, eval_datasets
from .linear_eval import summarize, topk_accuracy
from .logging import write_json
from .loop import TrainingJob, run_training

__all__ = ["finetune", "label_subset"]

#: What an epoch record keeps in ``results.json``'s history.
_HISTORY_KEYS = ("epoch", "loss", "lr", "top1", "top5", "samples_per_s", "seconds")


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a seeded, class-balanced ``fraction`` of ``labels`` ``(n,)``.

    Each class ``c`` present with ``n_c`` samples keeps ``max(1, round(fraction · n_c))`` of
    them, drawn without replacement from a generator seeded with ``seed``; ``fraction = 1``
    keeps everything. The same labels, fraction and seed give the same subset.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, 0x1ABE1))))
    picked = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        k = max(1, int(np.floor(fraction * len(pos) + 0.5)))
        picked.append(pos if k >= len(pos) else rng.choice(pos, size=k, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _source_heads(
    source: EncoderSource, modalities: Sequence[str], reader: CacheReader
) -> dict[str, torch.Tensor] | None:
    """A fine-tuning run's linear heads for ``modalities`` (None for any other source).

    Raises CheckpointError when the run's class count is not the cache's."""
    if source.kind != "finetune":
        return None
    trained = source.state["finetune"]["num_class"]
    if trained != reader.num_class:
        raise CheckpointError(
            f"{reader.path}: {reader.num_class} classes, but the linear heads of fine-tuning "
            f"run {source.checkpoint} have {trained}; fine-tune from its pre-training run "
            "instead, which gets new heads"
        )
    return {
        k.removeprefix("heads."): v
        for k, v in source.state["model"].items()
        if k.startswith("heads.") and k.split(".")[1] in modalities
    }


def _history(metrics: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in _HISTORY_KEYS if k in r} for r in records]


def finetune(
    cfg: FinetuneConfig,
    cache: str | os.PathLike | CacheReader,
    out_dir: str | os.PathLike,
    split: str,
    stream: str,
    checkpoint: str | os.PathLike | None = None,
    random_init: bool = False,
    backbone: dict[str, Any] | None = None,
    modalities: Sequence[str] | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    echo: Callable[[str], None] | None = print,
    tensorboard: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune a stream's encoders with a linear classifier on a fraction of the labels of
    ``<split>-train``; evaluate on ``<split>-val``.

    Args:
        cfg: the schedule and ``label_fraction``.
        checkpoint, random_init, backbone, modalities: the encoders, as for
            :func:`~ikemtrain.engine.linear_eval.linear_eval`; ``random_init`` is supervised
            training from scratch.
        resume: continue ``out_dir/checkpoint.pt`` exactly (same settings and source).
        overwrite: replace a previous finetune run in ``out_dir`` (otherwise it must be new;
            :mod:`ikemtrain.runfolder`).

    Writes ``out_dir/checkpoint.pt`` (every epoch), ``metrics.jsonl`` and ``results.json``
    (rank 0): ``top1_final``, ``top1_best``, ``top5_final``, ``top5_best``, ``history``
    (epoch, loss, lr, samples/s, and top1/top5 where evaluated), ``label_fraction``,
    ``subset_size`` (labelled samples), the settings and the source checkpoint; returns them.

    Raises what linear evaluation raises for its encoders, cache and split, CheckpointError
    for resume problems or a fine-tuning run of another class count, and NonFiniteLossError.
    """
    source = encoder_source(checkpoint, random_init, backbone, modalities)
    needed = source.modalities_for(stream)
    reader = open_cache(cache)
    backbone = source.check_cache(reader)
    heads = _source_heads(source, needed, reader)
    train_set, val_set = eval_datasets(source, reader, split, needed, echo)
    positions = label_subset(train_set.labels, cfg.label_fraction, cfg.seed)
    labelled = train_set.subset(
        positions, f"{train_set.split} (label_fraction {cfg.label_fraction:g})"
    )
    num_class = reader.num_class
    val_y = torch.as_tensor(val_set.labels)

    def build() -> Classifier:
        model = Classifier(source.build(needed, backbone), num_class)
        if heads is not None:
            model.heads.load_state_dict(heads)
        return model.train()

    @torch.no_grad()
    def evaluate(model: Classifier, epoch: int) -> dict[str, float]:
        if epoch % cfg.eval_interval and epoch != cfg.epochs:
            return {}
        model.eval()
        dev = next(model.parameters()).device
        logits = []
        for lo in range(0, len(val_set), cfg.eval_batch_size):
            block = val_set.read_block(lo, lo + cfg.eval_batch_size)
            logits.append(model.logits({m: x.to(dev) for m, x in block.items()}).cpu())
        model.train()
        top1, top5 = topk_accuracy(torch.cat(logits), val_y)
        return {"top1": top1, "top5": top5}

    options = train_set.options.to_json()
    record = source.record()
    info = {
        "stream": stream,
        "modalities": list(needed),
        "backbone": dict(backbone),
        "options": options,
        "num_class": num_class,
        "source": record["encoders"],
        "source_checkpoint": record["checkpoint"],
        "pretrain_config": record["pretrain_config"],
        "subset_rows": [int(r) for r in labelled.indices],
    }
    job = TrainingJob(
        kind="finetune",
        cfg=cfg,
        dataset=labelled,
        build_model=build,
        loss_names=(),
        pairs=lambda details: {},
        extra={"finetune": info},
        batch_args=lambda b, dev: ({m: v.to(dev) for m, v in b[0].items()}, b[1].to(dev)),
        evaluate=evaluate,
    )

    def finish(out: Path, result: dict[str, Any]) -> dict[str, Any]:
        history = _history(out / "metrics.jsonl")
        results = {
            "protocol": "finetune",
            "stream": stream,
            "modalities": list(needed),
            "split": split,
            **summarize(history),
            "label_fraction": cfg.label_fraction,
            "subset_size": len(labelled),
            "num_class": num_class,
            "layout": reader.layout.name,
            "computed": list(train_set.computed),
            "train_samples": len(train_set),
            "val_samples": len(val_set),
            **record,
            "backbone": dict(backbone),
            "config": cfg.to_dict(),
            "cache": str(reader.path),
            "run_checkpoint": str(result["checkpoint"]),
            "seconds": sum(h.get("seconds", 0.0) for h in history),
            "history": history,
        }
        write_json(out / "results.json", results)
        return results

    job.finish = finish
    result = run_training(job, out_dir, resume, device, echo, tensorboard, overwrite)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return {}  # rank 0 writes the results
    return result
