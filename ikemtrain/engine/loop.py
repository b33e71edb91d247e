"""The training loop of pre-training (docs/method.md, "Pre-training";
``processor/pretrain_crossclr_6views.py``), shared with distillation via
:class:`TrainingJob` and :func:`run_training`.

* Epochs are 1-based; stage 1 (single-modality InfoNCE) runs while ``epoch <= cross_epoch``,
  then stage 2 (EKEM + IKEM).
* SGD (momentum 0.9, no Nesterov, weight decay 1e-4) over the parameters with
  ``requires_grad``; parameters without a gradient in a step (the IKEM heads in stage 1) are
  skipped by SGD, as in the reference.
* Step schedule ``lr = base · 0.1^{#(epoch > step)}`` (:func:`ikemtrain.config.lr_at`) or
  cosine decay (``schedule = "cosine"``), with an optional linear warm-up over the first
  ``warmup_epochs`` epochs' steps; each step's lr is :func:`ikemtrain.config.scheduled_lr`.
* ``drop_last`` batches; the order of epoch ``e`` comes from a torch generator seeded with
  ``(seed, e)`` and the augmentations from per-sample streams (``ikemtrain.data``), so a run is
  a function of its seed and a resumed run continues exactly (``ikemtrain.engine.checkpoint``)
  for any number of loader workers.
* The model does its own momentum update and enqueue inside ``forward``; the loop does
  ``backward`` and ``step``.
* The cache decides the data: the joint layout (the ST-GCN graph) and the modality options
  (``bones``, ``unit_axis``) come from it (:func:`resolve_cache_options`); a preset value
  that contradicts the cache is refused before the first epoch. The checkpoint records both
  (``layout``; the resolved options in ``config``) and the cache's ``num_class``.
* Every epoch records a collapse signal per modality (``record["collapse"][m]``: the std of
  the normalised queries across the batch, alignment and uniformity, averaged over the
  epoch's batches; :mod:`ikemtrain.collapse`) and prints a warning line for every modality
  whose head has collapsed (``record["collapsed"]``).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from skelmod.cache import CacheError, CacheReader
from skelmod.layout import ModalityOptions

from ..collapse import COLLAPSE_STD, collapse_stats, is_collapsed
from ..config import ConfigError, PretrainConfig, scheduled_lr
from ..data import BatchedViews, EpochSampler, PretrainDataset, open_cache, worker_context
from ..errors import NonFiniteLossError
from ..methods.pretrain import PretrainModel
from ..nn.streams import StreamRunner, check_compile, stream_threads
from ..progress import tracked
from ..runfolder import RunFolder, open_run_folder
from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    CheckpointExistsError,
    capture_rng,
    check_layout,
    load_checkpoint,
    load_weights,
    restore_rng,
    save_checkpoint,
)
from .distributed import (
    DistInfo,
    all_reduce_sum,
    follow_rank_0,
    init_distributed,
    resolve_device,
    share_outcome,
    wrap_model,
)
from .finite import batch_rows, non_finite_loss
from .logging import MetricsLog, make_out_dir

__all__ = [
    "TrainingJob",
    "build_model",
    "pretrain",
    "resolve_cache_options",
    "run_training",
    "seed_everything",
    "two_views",
]

#: Settings that may differ between a run and its resumption.
RESUMABLE_CHANGES = (
    "epochs",
    "workers",
    "stream_threads",
    "compile",
    "monitor_every",
    "monitor_samples",
)
#: What a checkpoint must hold to resume from it.
RESUME_KEYS = ("epoch", "model", "optimizer", "rng", "config")


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's ``malloc_trim``; nothing
    where it is missing).

    Called around the kNN monitor's passes. Measured on a one-epoch ``nucla-cpu`` run
    (``benchmarks/RESULTS.md``, "Round 3"): the memory that training steps free stays in
    the heaps of the threads that freed it, and the monitor's pass at the end of an epoch grew
    the heap beside it, so the run peaked at 1.21-1.47 GB against 0.98 GB without the monitor;
    trimmed first, 1.03-1.07 GB (what is left is mostly the monitor's samples, held for the
    run)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python ``random``."""
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use it)
    random.seed(seed)


def build_model(cfg: PretrainConfig, layout: str = "ntu25") -> PretrainModel:
    """The pre-training model of ``cfg`` for a joint ``layout``'s graph, on the CPU."""
    kwargs = cfg.model_kwargs()
    kwargs["backbone"] = {**kwargs["backbone"], "layout": layout}
    return PretrainModel(cfg.modalities, **kwargs)


def resolve_cache_options(cfg: PretrainConfig, reader: CacheReader) -> PretrainConfig:
    """``cfg`` with the cache's modality options (``bones``, ``unit_axis``).

    A value the preset sets (not None) must equal the cache's: pre-training computes the
    modalities online, and linear evaluation reads the cached ones, so both must agree.

    Raises:
        ConfigError: the preset asks for other options than the cache's.
    """
    own = reader.feature_options
    for key in ("bones", "unit_axis"):
        want, have = getattr(cfg, key), getattr(own, key)
        if want is not None and want != have:
            raise ConfigError(
                f"{reader.path}: the cache's modalities use {key}={have!r}, the settings ask "
                f"for {key}={want!r}; recompute them with `skelmod features` or drop {key} "
                "from the preset to take the cache's"
            )
    own = ModalityOptions.resolve(own, bones=cfg.bones, unit_axis=cfg.unit_axis)
    return cfg.replace(bones=own.bones, unit_axis=own.unit_axis)


def _check_resume(saved: dict[str, Any], cfg: Any, path: Path) -> None:
    current = cfg.to_dict()
    # settings added after a checkpoint was written take their default (e.g. head_bn)
    saved = {**type(cfg)().to_dict(), **saved}
    diff = [
        k
        for k in sorted(set(saved) | set(current))
        if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    ]
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff)
        raise ConfigError(f"{path}: cannot resume with different settings ({detail})")


def make_loader(
    dataset: PretrainDataset, cfg: Any, batch: int, info: DistInfo, pin: bool
) -> tuple[DataLoader, EpochSampler]:
    """One DataLoader for the whole run (persistent workers), ordered by an EpochSampler.

    A dataset with a ``batch(keys)`` method (:meth:`PretrainDataset.batch`) is loaded a batch
    at a time (one read, one augmentation and one modality call per view), which gives the
    same tensors as loading and collating its samples one by one."""
    sampler = EpochSampler(len(dataset), cfg.seed, True, info.rank, info.world_size)
    common = {
        # the loader's own seed draws come from here, never from the global torch RNG, so
        # dropout's random stream depends only on the run (exact resume)
        "generator": torch.Generator().manual_seed(cfg.seed),
        "num_workers": cfg.workers,
        "multiprocessing_context": worker_context(cfg.workers),
        "persistent_workers": cfg.workers > 0,
        "pin_memory": pin,
    }
    if hasattr(dataset, "batch"):
        batches = BatchSampler(sampler, batch, drop_last=True)
        loader = DataLoader(BatchedViews(dataset), batch_size=None, sampler=batches, **common)
    else:
        loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True, **common)
    return loader, sampler


def training_views(
    reader: CacheReader,
    cfg: Any,
    modalities: Sequence[str],
    unit_axis: bool | None,
    bones: str | None,
) -> PretrainDataset:
    """The two augmented views of ``<cfg.split>-train`` that a contrastive run trains on
    (pre-training, distillation): ``modalities`` computed with ``unit_axis`` / ``bones``, and
    ``cfg``'s augmentations (``crop_ratio``, ``shear``, ``rotation``) and ``seed``."""
    return PretrainDataset(
        reader,
        f"{cfg.split}-train",
        modalities,
        t_target=reader.t,
        crop_ratio=cfg.crop_ratio,
        shear=cfg.shear,
        rotation=cfg.rotation,
        seed=cfg.seed,
        unit_axis=unit_axis,
        bones=bones,
    )


@dataclass
class TrainingJob:
    """What the shared training loop needs from a method (pre-training or distillation).

    * ``kind``: ``"pretrain"`` or ``"distill"``; saved in the checkpoint, checked on resume.
    * ``cfg``: settings with ``epochs``, ``lr``, ``steps``, ``batch_size``, ``weight_decay``,
      ``sgd_momentum``, ``seed``, ``workers`` and ``to_dict()``, and optionally
      ``warmup_epochs`` (absent: no warm-up) and ``schedule`` (absent: ``"step"``).
    * ``dataset``: yields ``(view1, view2, label, frame_count)``.
    * ``build_model``: called once, after seeding, on the CPU; the model's ``forward(view1,
      view2[, stage], return_details=True)`` returns ``"details"``, ``"loss"`` and detached
      ``"loss/<name>"`` (plus any other scalars, reported as ``terms``).
    * ``loss_names``: the ``<name>`` of the per-part losses shown on the progress line.
    * ``pairs``: ``forward(..., return_details=True)["details"]`` -> ``{name: (z, z+)}``, the
      normalised embeddings ``(B, d)`` whose collapse is watched and their positives.
    * ``stage``: epoch -> stage passed to ``forward``, or None for a single-stage method.
    * ``extra``: plain data saved in the checkpoint beside the config and, like it, required
      to match on resume (e.g. the teacher's settings).
    * ``notes``: plain data saved in the checkpoint and not checked (e.g. where the teacher
      came from).
    * ``batch_args``: a loader batch and the device -> the positional arguments of
      ``forward`` before the stage (default: the two views of ``(view1, view2, label,
      frame_count)``); its dict arguments are the inputs a non-finite loss is traced to.
      Fine-tuning passes ``(x, label)`` from ``(x, label, frame_count)`` items.
    * ``evaluate``: ``(model, epoch) -> dict`` merged into the epoch's record before it is
      saved and printed (rank 0 only; e.g. ``top1``/``top5`` on the validation split).
    * ``start``: ``model -> None``, called once on rank 0 before the first epoch (after a
      resume has loaded the weights; e.g. the kNN monitor's random baseline).
    * ``finish``: ``(out folder, result) -> result``, called on rank 0 after the last epoch
      while the run folder is still held (e.g. to write ``results.json``).
    """

    kind: str
    cfg: Any
    dataset: PretrainDataset
    build_model: Callable[[], torch.nn.Module]
    loss_names: tuple[str, ...]
    pairs: Callable[[dict[str, Any]], dict[str, tuple[torch.Tensor, torch.Tensor]]]
    stage: Callable[[int], int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    batch_args: Callable[[Any, torch.device], tuple] | None = None
    evaluate: Callable[[torch.nn.Module, int], dict[str, Any]] | None = None
    start: Callable[[torch.nn.Module], None] | None = None
    finish: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None


def two_views(batch: Any, device: torch.device) -> tuple[dict, dict]:
    """``(view1, view2, label, frame_count)`` -> the two views on ``device`` (contrastive
    methods' ``forward`` arguments)."""
    view1, view2, _label, _frame = batch
    return (
        {m: v.to(device, non_blocking=True) for m, v in view1.items()},
        {m: v.to(device, non_blocking=True) for m, v in view2.items()},
    )


def pretrain(
    cfg: PretrainConfig,
    cache: str | os.PathLike | CacheReader,
    out_dir: str | os.PathLike,
    resume: bool = False,
    device: str | torch.device = "auto",
    echo: Callable[[str], None] | None = print,
    tensorboard: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Pre-train on ``<cfg.split>-train`` of ``cache``; write ``out_dir/checkpoint.pt`` and
    ``out_dir/metrics.jsonl`` (rank 0 only).

    ``resume=True`` continues from ``out_dir/checkpoint.pt`` exactly (model, queues,
    optimiser, RNG states, epoch); the settings must match those saved, except ``epochs``
    (to extend a run) and ``workers``. Without ``resume``, ``out_dir`` must be new (absent or
    empty) unless ``overwrite`` (a previous pretrain run there is replaced); the folder rule
    and ``run.json`` are :mod:`ikemtrain.runfolder`'s.

    Returns ``{"checkpoint": Path, "epoch": last epoch, "metrics": last epoch's record}``.

    Raises:
        CacheError: the cache or split is unusable; ConfigError: bad or mismatched settings;
        CheckpointError (CheckpointExistsError): resume problems; OutputError: ``out_dir``
        cannot be written; NonFiniteLossError: the loss turned NaN or infinite (the message
        names the batch's samples and the data check to run).
    """
    reader = open_cache(cache)
    cfg = resolve_cache_options(cfg, reader)
    n_train = len(reader.split_indices(f"{cfg.split}-train"))
    cfg = resolve_queue_size(resolve_run_length(cfg, n_train), n_train, echo)
    start, evaluate = knn_monitor_hooks(cfg, reader, echo)
    job = TrainingJob(
        kind="pretrain",
        cfg=cfg,
        dataset=training_views(reader, cfg, cfg.modalities, cfg.unit_axis, cfg.bones),
        build_model=lambda: build_model(cfg, reader.layout.name),
        loss_names=cfg.modalities,
        pairs=lambda d: {m: (d["q"][m], d["k"][m]) for m in cfg.modalities},
        stage=lambda epoch: 1 if epoch <= cfg.cross_epoch else 2,
        start=start,
        evaluate=evaluate,
    )
    return run_training(job, out_dir, resume, device, echo, tensorboard, overwrite)


def resolve_run_length(cfg: PretrainConfig, n_train: int) -> PretrainConfig:
    """``cfg`` with ``total_steps`` turned into epochs for a training split of ``n_train``.

    With ``total_steps = 0`` nothing changes. Otherwise ``epochs`` becomes the fewest that give
    ``total_steps`` steps of ``n_train // batch_size`` (``drop_last``), and ``cross_epoch``,
    the lr ``steps`` and ``warmup_epochs`` keep their share of the run (rounded; stage 1 and
    stage 2 at least one epoch each when the preset has both), so one preset gives a small and
    a large data set the same number of updates in the same schedule. ``monitor_every`` keeps
    its count of checks too: the kNN monitor costs a pass over up to ``monitor_samples``
    training samples, which every one of MSR Action3D's 89 short epochs would repeat.
    """
    if cfg.total_steps == 0:
        return cfg
    per_epoch = max(1, n_train // cfg.batch_size)
    both = 0 < cfg.cross_epoch < cfg.epochs  # a stage 1 and a stage 2 to keep
    epochs = max(2 if both else 1, -(-cfg.total_steps // per_epoch))
    scale = epochs / cfg.epochs
    cross = round(cfg.cross_epoch * scale)
    if both:
        cross = min(max(cross, 1), epochs - 1)
    return cfg.replace(
        epochs=epochs,
        cross_epoch=cross,
        steps=tuple(sorted({max(1, round(s * scale)) for s in cfg.steps})),
        warmup_epochs=round(cfg.warmup_epochs * scale),
        monitor_every=max(1, round(cfg.monitor_every * scale)) if cfg.monitor_every else 0,
    )


def resolve_queue_size(
    cfg: PretrainConfig, n_train: int, echo: Callable[[str], None] | None
) -> PretrainConfig:
    """``cfg`` with ``queue_size = 0`` (auto) resolved for a training split of ``n_train``, and
    a warning when the queue outlives an epoch.

    A queue of K keys holds the last K keys enqueued. Once ``K > n_train - batch_size`` it
    still holds a key of the very samples of the batch (from an earlier view), so a sample's
    own other view sits among its negatives: InfoNCE then pushes apart what it should pull
    together and the loss cannot fall (issue 19: a queue of 512 on a 291-sample split, whose
    losses rose towards ln(K + 1)). Auto picks the largest power of two at most
    ``(n_train - batch_size) / 2``, so every key in the queue is at least half an epoch fresh
    and none is of the current batch.
    """
    room = max(1, n_train - cfg.batch_size)
    auto = 1 << max(0, int(room // 2).bit_length() - 1)  # largest power of two <= room / 2
    if cfg.queue_size == 0:
        return cfg.replace(queue_size=max(auto, cfg.topk))
    if cfg.queue_size > room and n_train >= cfg.batch_size and echo is not None:
        echo(
            f"warning: queue_size {cfg.queue_size} is more than one epoch enqueues beyond the "
            f"batch ({n_train} training samples - batch {cfg.batch_size} = {room}): the queue "
            "holds keys of the batch's own samples, i.e. positives among the negatives, and "
            f"the loss may not fall; use queue_size <= {room} (0, auto, gives {auto})"
        )
    return cfg


def knn_monitor_hooks(
    cfg: PretrainConfig, reader: CacheReader, echo: Callable[[str], None] | None
) -> tuple[Callable | None, Callable | None]:
    """The ``start`` and ``evaluate`` hooks of the kNN monitor (:mod:`.monitor`) for a
    pre-training run of ``cfg``, or ``(None, None)`` when ``monitor_every`` is 0 or the
    training split is too small to hold queries and a memory (fewer than 8 samples)."""
    if cfg.monitor_every == 0 or len(reader.split_indices(f"{cfg.split}-train")) < 8:
        return None, None
    from .monitor import KnnMonitor  # it builds on linear evaluation, which imports this module

    state: dict[str, Any] = {}

    def encoders(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {m: b.encoder_q for m, b in model.branches.items()}

    def start(model: torch.nn.Module) -> None:
        rng = capture_rng()  # the monitor must not move the run's random streams
        device = next(model.parameters()).device
        state["monitor"] = monitor = KnnMonitor(
            reader, cfg.split, cfg.modalities, cfg.unit_axis, cfg.bones, cfg.monitor_samples,
            cfg.seed, batch_size=max(cfg.batch_size, 64), device=device,
        )  # fmt: skip
        seed_everything(cfg.seed)  # the run's own initialisation
        probe = build_model(cfg, reader.layout.name).to(device)
        state["random"] = base = monitor.random_baseline(encoders(probe))
        del probe
        trim_heap()
        restore_rng(rng)
        if echo is not None:
            echo(
                f"kNN monitor: {len(monitor.dataset)} training samples, k {base['k']}; random "
                f"encoders {base['strongest']:.1f} (raw BatchNorm {base['raw_bn']:.1f}, "
                f"re-estimated {base['bn_estimated']:.1f}): the bar to clear"
            )

    def evaluate(model: torch.nn.Module, epoch: int) -> dict[str, Any]:
        if epoch % cfg.monitor_every and epoch != cfg.epochs:
            return {}
        rng = capture_rng()
        trim_heap()
        runner = getattr(model, "runner", None)  # the run's stream threads, if it has any
        top1 = state["monitor"].top1(encoders(model), runner.threads if runner else 1)
        restore_rng(rng)
        return {"monitor": {"knn_top1": top1, "random": state["random"]}}

    return start, evaluate


def run_training(
    job: TrainingJob,
    out_dir: str | os.PathLike,
    resume: bool = False,
    device: str | torch.device = "auto",
    echo: Callable[[str], None] | None = print,
    tensorboard: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The loop shared by :func:`pretrain` and :func:`ikemtrain.engine.distill.distill`.

    SGD over the parameters with ``requires_grad``, the step schedule, ``drop_last`` batches
    in a seeded order, a checkpoint (``kind``, model, optimiser, RNG states, epoch, config,
    ``extra``) after every epoch, one metrics record per epoch; see :func:`pretrain` for
    ``resume`` and the return value.

    ``out_dir`` is opened by :func:`ikemtrain.runfolder.open_run_folder` (rank 0): new, or
    ``resume``, or ``overwrite``; locked for the whole run, with its ``run.json``. Under DDP
    the other ranks wait for rank 0's verdict and raise the same error when it refuses the
    folder (:func:`~ikemtrain.engine.distributed.share_outcome`), instead of waiting forever.
    A resumption touches no file of the run until the checkpoint has been read and checked.
    """
    mode = run_mode(resume, overwrite)
    dev = resolve_device(device)
    info = init_distributed(dev)
    if not info.is_main:
        follow_rank_0(info, dev)  # rank 0's verdict on the folder: never wait on a refused run
        return _run_training(job, make_out_dir(out_dir), None, resume, dev, info, echo, False)
    try:
        folder = open_run_folder(
            out_dir,
            job.kind,
            mode,
            settings=job.cfg.to_dict(),
            cache=job.dataset.reader.path,
            inputs=job.notes,
        )
    except Exception as e:
        share_outcome(info, dev, e)
        raise
    share_outcome(info, dev)
    with folder:
        result = _run_training(job, folder.path, folder, resume, dev, info, echo, tensorboard)
        return job.finish(folder.path, result) if job.finish is not None else result


def run_mode(resume: bool, overwrite: bool) -> str:
    """``"new"``, ``"resume"`` or ``"overwrite"`` (:mod:`ikemtrain.runfolder`); both flags
    at once is a ConfigError."""
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: continue a run or replace it")
    return "resume" if resume else "overwrite" if overwrite else "new"


def _run_training(
    job: TrainingJob,
    out: Path,
    folder: RunFolder | None,
    resume: bool,
    dev: torch.device,
    info: DistInfo,
    echo: Callable[[str], None] | None,
    tensorboard: bool,
) -> dict[str, Any]:
    cfg = job.cfg
    ckpt_path = out / CHECKPOINT_NAME
    if cfg.batch_size % info.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is not divisible by the {info.world_size} processes"
        )
    batch = cfg.batch_size // info.world_size
    dataset = job.dataset
    if len(dataset) < cfg.batch_size:
        raise CacheError(
            f"{dataset.reader.path}: split {dataset.split} has {len(dataset)} samples, fewer "
            f"than one batch of {cfg.batch_size} (batches drop the remainder); lower batch_size"
        )

    seed_everything(cfg.seed)
    model = job.build_model().to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.sgd_momentum,
        weight_decay=cfg.weight_decay,
        nesterov=False,
    )
    start = 1
    if resume:
        if not ckpt_path.exists():
            raise CheckpointError(f"no checkpoint at {ckpt_path} to resume", param="resume")
        state = load_checkpoint(ckpt_path, map_location=dev, required=RESUME_KEYS)
        check_layout(state, dataset.reader, ckpt_path)
        saved_kind = state.get("kind", "pretrain")
        if saved_kind != job.kind:
            raise CheckpointError(
                f"{ckpt_path}: a {saved_kind} checkpoint; cannot resume it as {job.kind}"
            )
        _check_resume(state["config"], cfg, ckpt_path)
        for key, value in job.extra.items():
            if state.get(key) != value:
                raise ConfigError(f"{ckpt_path}: cannot resume with a different {key}")
        load_weights(model, state["model"], ckpt_path)
        _check_momentum(optimizer, state["optimizer"], ckpt_path)
        try:
            optimizer.load_state_dict(state["optimizer"])
            restore_rng(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            # settings match (checked above), so the file itself is inconsistent
            detail = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
            raise CheckpointError(
                f"{ckpt_path}: cannot resume from it ({type(e).__name__}: {detail})"
            ) from None
        start = state["epoch"] + 1
        if not 1 <= state["epoch"] <= cfg.epochs:
            raise CheckpointError(
                f"{ckpt_path}: checkpoint 'epoch' is {state['epoch']}, expected 1 .. epochs "
                f"({cfg.epochs}); raise epochs to extend a finished run",
                param="resume",
            )
        if folder is not None:
            folder.resumed()
    elif ckpt_path.exists():
        raise CheckpointExistsError(
            f"{ckpt_path} exists; resume to continue that run, or choose another out_dir",
            param="resume",
        )

    if info.rank > 0:
        # distinct dropout streams per rank; only rank 0's RNG states go into the checkpoint
        state = np.random.SeedSequence((cfg.seed, start, info.rank)).generate_state(1)
        torch.manual_seed(int(state[0]))
    if info.is_main and job.start is not None:
        job.start(model)
    net = wrap_model(model, dev, info)
    intra_op = torch.get_num_threads()
    threads = configure_streams(model, cfg, dev, info)
    if threads > 1:  # each stream's ops on one thread; restored when the run ends
        torch.set_num_threads(1)
    loader, sampler = make_loader(dataset, cfg, batch, info, pin=dev.type == "cuda")
    log = MetricsLog(
        out,
        enabled=info.is_main,
        echo=echo,
        keep_through=start - 1 if resume else None,
        tensorboard=tensorboard,
    )
    record: dict[str, Any] = {}
    try:
        for epoch in range(start, cfg.epochs + 1):
            steps = tracked(
                loader, f"epoch {epoch}/{cfg.epochs}", echo is not None and info.is_main
            )
            record = _train_epoch(
                net, model, optimizer, steps, sampler, job, batch, epoch, info, dev
            )
            if info.is_main and job.evaluate is not None:
                record.update(job.evaluate(model, epoch))
            if info.is_main:
                save_checkpoint(
                    ckpt_path,
                    {
                        "kind": job.kind,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": capture_rng(),
                        "config": cfg.to_dict(),
                        "layout": dataset.reader.layout.name,
                        "num_class": dataset.reader.num_class,
                        "cache": str(dataset.reader.path),
                        **job.notes,
                        **job.extra,
                    },
                )
                log.log(record)
                if echo is not None:
                    for line in collapse_warnings(record):
                        echo(line)
    finally:
        log.close()
        torch.set_num_threads(intra_op)
    return {"checkpoint": ckpt_path, "epoch": max(start - 1, cfg.epochs), "metrics": record}


def _check_momentum(optimizer: torch.optim.Optimizer, saved: Any, path: Path) -> None:
    """Refuse saved SGD momentum buffers whose shapes are not their parameters' (torch would
    only fail at the first step, in the middle of training)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    entries = saved.get("state") if isinstance(saved, dict) else None
    if not isinstance(entries, dict):
        return  # optimizer.load_state_dict names what is wrong with its structure
    for index, entry in entries.items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            raise CheckpointError(
                f"{path}: checkpoint 'optimizer' state {index!r} is not one of the model's "
                f"{len(params)} parameters"
            )
        buffer = entry.get("momentum_buffer") if isinstance(entry, dict) else None
        if buffer is not None and (
            not isinstance(buffer, torch.Tensor) or buffer.shape != params[index].shape
        ):
            found = tuple(buffer.shape) if isinstance(buffer, torch.Tensor) else type(buffer)
            raise CheckpointError(
                f"{path}: checkpoint 'optimizer' momentum buffer of parameter {index} has "
                f"shape {found}, the parameter {tuple(params[index].shape)}"
            )


def configure_streams(model: torch.nn.Module, cfg: Any, dev: torch.device, info: DistInfo) -> int:
    """Give ``model`` (one with a ``runner``: :class:`PretrainModel`, ``DistillModel``) the
    runner of ``cfg``'s ``precision``, ``compile`` and ``stream_threads`` (0 resolved by
    :func:`ikemtrain.nn.streams.stream_threads`); returns the number of stream threads (1 for a
    model without a runner)."""
    if not hasattr(model, "runner"):
        return 1
    precision = getattr(cfg, "precision", "fp32")
    compile_mode = getattr(cfg, "compile", "none")
    try:
        check_compile(compile_mode, dev.type)
    except ValueError as e:
        raise ConfigError(f"compile: {e}") from None
    if precision == "bf16" and dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"precision bf16 runs on cpu or cuda, not on {dev.type}")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(dev)} lacks bfloat16")
    try:
        threads = stream_threads(
            getattr(cfg, "stream_threads", 1),
            model.stream_count,
            dev,
            info.world_size,
            model.backbone.get("dropout", 0.0),
            compiled=compile_mode != "none",
        )
    except ValueError as e:
        raise ConfigError(f"stream_threads: {e}") from None
    model.runner = StreamRunner(threads, precision, dev.type, compile_mode)
    return threads


def collapse_warnings(record: dict[str, Any]) -> list[str]:
    """One warning line per modality whose head collapsed in the epoch of ``record``."""
    return [
        f"warning: epoch {record['epoch']}: the {m} projection head has collapsed (std of "
        f"the normalised queries across the batch {record['collapse'][m]['std']:.3g} < "
        f"{COLLAPSE_STD}; every sample maps to nearly one direction)"
        for m in record.get("collapsed", [])
    ]


def _train_epoch(
    net: torch.nn.Module,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    sampler: EpochSampler,
    job: TrainingJob,
    batch: int,
    epoch: int,
    info: DistInfo,
    dev: torch.device,
) -> dict[str, Any]:
    cfg = job.cfg
    stage = job.stage(epoch) if job.stage is not None else None
    args = () if stage is None else (stage,)
    lr = scheduled_lr(cfg, epoch, 0, len(loader))
    sampler.set_epoch(epoch)
    model.train()
    sums: dict[str, torch.Tensor] = {}
    iterations = 0
    order = list(sampler)  # this epoch's order, to name the samples of a batch that breaks
    started = time.perf_counter()
    to_args = job.batch_args or two_views
    steps_per_epoch = len(loader)
    for items in loader:
        lr = scheduled_lr(cfg, epoch, iterations, steps_per_epoch)  # step, warm-up, cosine
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs = to_args(items, dev)
        out = net(*inputs, *args, return_details=True)
        details = out.pop("details")
        # checked before the step (one sync per batch), so no NaN reaches the weights
        if not torch.isfinite(out["loss"]):
            dataset = job.dataset
            rows = batch_rows(order, dataset.indices, iterations, batch)
            views = [x for x in inputs if isinstance(x, dict)]
            raise non_finite_loss(out, views, rows, dataset.reader, epoch, iterations, lr)
        optimizer.zero_grad(set_to_none=True)
        if hasattr(model, "backward"):  # a model whose streams run on threads
            model.backward(out["loss"])
        else:
            out["loss"].backward()
        optimizer.step()
        if batch >= 2:
            for m, (q, k) in job.pairs(details).items():
                for name, value in collapse_stats(q, k).items():
                    out[f"collapse/{m}/{name}"] = torch.tensor(value, device=dev)
        for k, v in out.items():
            v = v.detach().float()
            sums[k] = sums[k] + v if k in sums else v
        iterations += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - started
    keys = sorted(sums)
    totals = all_reduce_sum(torch.stack([sums[k] for k in keys]), info) if keys else None
    n = iterations * info.world_size
    means = {k: float(totals[i]) / n for i, k in enumerate(keys)} if keys else {}
    loss = means.pop("loss", float("nan"))
    if not np.isfinite(loss):  # every batch was finite: the sum overflowed
        raise NonFiniteLossError(f"epoch {epoch}: the mean loss is {loss}; lower the learning rate")
    record = {"epoch": epoch, "epochs": cfg.epochs}
    if stage is not None:
        record["stage"] = stage
    collapse: dict[str, dict[str, float]] = {}
    for key in [k for k in means if k.startswith("collapse/")]:
        _, m, name = key.split("/")
        collapse.setdefault(m, {})[name] = means.pop(key)
    return {
        **record,
        "loss": loss,
        "losses": {m: means[f"loss/{m}"] for m in job.loss_names if f"loss/{m}" in means},
        "terms": {k: v for k, v in means.items() if not k.startswith("loss/")},
        "collapse": collapse,
        "collapsed": [m for m, c in collapse.items() if is_collapsed(c["std"])],
        "lr": lr,
        "samples_per_s": n * batch / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
        "iterations": iterations,
    }
