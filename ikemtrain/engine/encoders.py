"""The encoders every evaluation protocol starts from
(docs/method.md, "Linear evaluation").

Linear evaluation, kNN and fine-tuning all take one ST-GCN per modality of a stream from one
*source*:

* a pre-training run (``ikemtrain pretrain``): its query encoders, state-dict prefix
  ``branches.{m}.encoder_q.``;
* a student run (``ikemtrain distill``): its students, ``students.{m}.encoder.`` (streams
  ``student-<m>`` and ``3s``, the paper's 3s-Student);
* a fine-tuning run (``ikemtrain finetune``): its encoders, ``encoders.{m}.`` (and its
  linear heads, which only fine-tuning reuses);
* or, with ``random_init``, fresh ``weights_init`` encoders of a given width.

:func:`encoder_source` resolves that choice once; :meth:`EncoderSource.modalities_for`
refuses a stream the source cannot give; :meth:`EncoderSource.check_cache` ties the source
to a cache (a checkpoint evaluates only caches of its own joint layout: transfer to another
cache of that layout works, whatever its class count, since the protocols train new heads;
random-init encoders take the cache's layout); :func:`build_encoders` builds the modules,
:func:`recalibrate_batchnorm` gives random encoders BatchNorm statistics and
:func:`extract_features` runs them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skelmod.cache import CacheReader

from ..config import STUDENT_STREAMS, ConfigError, check_backbone, stream_modalities
from ..data import LinearEvalDataset
from ..nn.init import weights_init
from ..nn.stgcn import STGCN
from ..nn.streams import StreamRunner
from ..progress import Progress
from .checkpoint import (
    CheckpointError,
    check_layout,
    check_record,
    checkpoint_layout,
    load_run,
    load_weights,
    pretrain_config,
)

__all__ = [
    "ENCODER_PREFIX",
    "EncoderSource",
    "build_encoders",
    "encoder_source",
    "eval_datasets",
    "extract_features",
    "recalibrate_batchnorm",
]


#: Where each kind of training checkpoint keeps the encoder of modality ``m``.
ENCODER_PREFIX = {
    "pretrain": "branches.{m}.encoder_q.",
    "distill": "students.{m}.encoder.",
    "finetune": "encoders.{m}.",
}


@dataclass(frozen=True)
class EncoderSource:
    """Where a protocol's encoders come from, and what it needs to know about them.

    * ``kind``: ``"pretrain"``, ``"distill"``, ``"finetune"`` or ``"random-init"``;
    * ``checkpoint`` / ``state``: the checkpoint file and its loaded content (None for
      random init);
    * ``backbone``: :class:`~ikemtrain.nn.stgcn.STGCN` kwargs (with the checkpoint's joint
      ``layout``; random init gets the cache's in :meth:`check_cache`);
    * ``modalities``: the modalities it has encoders for; ``options``: the modality options
      (``unit_axis``, ``bones``) the encoders were trained on (empty: the cache's own);
    * ``pretrain_config`` / ``distill_config``: the training settings, for the record.
    """

    kind: str
    checkpoint: Path | None
    state: dict[str, Any] | None
    backbone: dict[str, Any]
    modalities: tuple[str, ...]
    options: dict[str, Any]
    pretrain_config: dict[str, Any] | None
    distill_config: dict[str, Any] | None
    where: str

    @property
    def random_init(self) -> bool:
        return self.checkpoint is None

    def modalities_for(self, stream: str) -> tuple[str, ...]:
        """The modalities of ``stream`` (a modality, ``3s``, ``6s`` or ``student-<m>``).

        Raises ConfigError for an unknown stream, a student stream of anything but a student
        run (or a non-student stream of one), or a modality the source has no encoder for.
        """
        needed = stream_modalities(stream)
        if self.kind == "distill" and stream not in STUDENT_STREAMS:
            raise ConfigError(
                f"{self.checkpoint} is a student run; its streams are {', '.join(STUDENT_STREAMS)}"
            )
        if stream.startswith("student-") and self.kind != "distill":
            raise ConfigError(f"stream {stream!r} needs a student run (`ikemtrain distill`)")
        missing = [m for m in needed if m not in self.modalities]
        if missing:
            raise ConfigError(f"stream {stream!r} needs {', '.join(missing)}, not in {self.where}")
        return needed

    def check_cache(self, reader: CacheReader) -> dict[str, Any]:
        """The backbone for ``reader``'s cache: a checkpoint's must have been trained on the
        cache's joint layout (CheckpointError otherwise); random init takes the cache's."""
        if self.state is not None:
            check_layout(self.state, reader, self.checkpoint)
            return dict(self.backbone)
        return {**self.backbone, "layout": reader.layout.name}

    def build(self, modalities: Sequence[str], backbone: dict[str, Any]) -> nn.ModuleDict:
        """Frozen eval-mode encoders for ``modalities`` (see :func:`build_encoders`)."""
        state_dict = self.state["model"] if self.state is not None else None
        prefix = ENCODER_PREFIX.get(self.kind, ENCODER_PREFIX["pretrain"])
        return build_encoders(modalities, backbone, state_dict, prefix, path=self.checkpoint)

    def record(self) -> dict[str, Any]:
        """What a protocol's ``results.json`` says about the encoders."""
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint is not None else None,
            "random_init": self.random_init,
            "pretrain_config": self.pretrain_config,
            "distill_config": self.distill_config,
            "encoders": self.kind,
        }


def _modality_options(pcfg) -> dict[str, Any]:
    # resolved on load (checkpoint.migrate_modality_options)
    return pcfg.modality_options.to_json()


#: What a student (or fine-tuning) record must hold for its encoders to be built.
_STUDENT_FIELDS = {"backbone": Mapping, "modalities": (list, tuple)}


def encoder_source(
    checkpoint: str | os.PathLike | EncoderSource | None = None,
    random_init: bool = False,
    backbone: dict[str, Any] | None = None,
    modalities: Sequence[str] | None = None,
) -> EncoderSource:
    """Resolve a protocol's encoders: exactly one of a ``checkpoint`` (a pre-training, student
    or fine-tuning run, as a folder or checkpoint file) or ``random_init`` (encoders built from
    ``backbone``, STGCN kwargs, for the modality set ``modalities``).

    A resolved :class:`EncoderSource` given as ``checkpoint`` is returned as it is (the
    library's :class:`ikemtrain.api.Encoders` resolves a run once for several protocols).

    Raises ConfigError for both or neither; CheckpointError for an unreadable checkpoint or
    one that holds no encoders.
    """
    if isinstance(checkpoint, EncoderSource) and not random_init:
        return checkpoint
    if (checkpoint is None) == (not random_init):
        raise ConfigError("give exactly one of a checkpoint or random_init")
    if checkpoint is None:
        if backbone is None or modalities is None:
            raise ConfigError("random_init needs the backbone settings and the modality set")
        available = tuple(modalities)
        return EncoderSource(
            kind="random-init",
            checkpoint=None,
            state=None,
            backbone=dict(backbone),
            modalities=available,
            options={},  # the cache's own
            pretrain_config=None,
            distill_config=None,
            where=f"the random-init modality set ({', '.join(available)})",
        )
    path, state = load_run(checkpoint)
    kind = state["kind"]
    if kind not in ENCODER_PREFIX:
        raise CheckpointError(f"{path}: a {kind} checkpoint holds no encoders")
    distill_cfg = None
    if kind == "distill":
        # the students see the teacher's modality options; their backbone is recorded
        pcfg = pretrain_config(check_record(state, "teacher", path, {"config": Mapping}), path)
        distill_cfg = state["config"]
        student = check_record(state, "student", path, _STUDENT_FIELDS)
        backbone, available = student["backbone"], tuple(student["modalities"])
        where = f"student run {path} (students {', '.join(available)})"
        options = _modality_options(pcfg)
        pretrain_cfg = pcfg.to_dict()
    elif kind == "finetune":
        info = check_record(state, "finetune", path, {**_STUDENT_FIELDS, "options": Mapping})
        backbone, available = info["backbone"], tuple(info["modalities"])
        where = f"fine-tuning run {path} (fine-tuned {', '.join(available)})"
        options, pretrain_cfg = dict(info["options"]), info.get("pretrain_config")
    else:
        pcfg = pretrain_config(state, path)
        backbone = {**pcfg.backbone, "layout": checkpoint_layout(state)}
        available = pcfg.modalities
        where = f"checkpoint {path} (pre-trained on {', '.join(available)})"
        options = _modality_options(pcfg)
        pretrain_cfg = pcfg.to_dict()
    try:
        check_backbone(backbone, "checkpoint backbone:")
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return EncoderSource(
        kind=kind,
        checkpoint=path,
        state=state,
        backbone=dict(backbone),
        modalities=tuple(available),
        options=options,
        pretrain_config=pretrain_cfg,
        distill_config=distill_cfg,
        where=where,
    )


def eval_datasets(
    source: EncoderSource,
    reader: CacheReader,
    split: str,
    modalities: Sequence[str],
    echo=print,
) -> tuple[LinearEvalDataset, LinearEvalDataset]:
    """``<split>-train`` and ``<split>-val`` of ``reader`` for ``modalities``, unaugmented,
    with the source's modality options (a modality the cache lacks, or holds with other
    options, is computed from the cached joints; ``echo`` says which)."""
    train_set = LinearEvalDataset(reader, f"{split}-train", modalities, **source.options)
    val_set = LinearEvalDataset(reader, f"{split}-val", modalities, **source.options)
    if train_set.computed and echo is not None:
        echo(
            f"computing {', '.join(train_set.computed)} from the cached joints (not in the "
            "cache with the pre-training's modality options)"
        )
    return train_set, val_set


def build_encoders(
    modalities: Sequence[str],
    backbone: dict[str, Any],
    state_dict: dict[str, torch.Tensor] | None = None,
    prefix: str = ENCODER_PREFIX["pretrain"],
    path: str | os.PathLike | None = None,
) -> nn.ModuleDict:
    """Frozen eval-mode encoders, one per modality.

    With ``state_dict``, encoder ``m`` gets the entries under ``prefix.format(m=m)`` (a
    pre-training model's ``branches.{m}.encoder_q.`` by default, a student's
    ``students.{m}.encoder.``); all of them must be there. Otherwise it keeps the random
    ``weights_init`` initialisation. ``path``: the checkpoint, named in errors (a tensor
    missing, extra or of another shape than the backbone's: :func:`load_weights`).
    """
    template = prefix
    encoders = nn.ModuleDict()
    for m in modalities:
        enc = STGCN(**backbone)
        enc.apply(weights_init)
        if state_dict is not None:
            prefix = template.format(m=m)
            sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            where = f"{path}: " if path is not None else ""
            if not sub:
                raise CheckpointError(f"{where}checkpoint has no weights under {prefix!r}")
            load_weights(enc, sub, path, file_key=lambda k, prefix=prefix: prefix + k)
        encoders[m] = enc
    encoders.requires_grad_(False)
    return encoders.eval()


@contextmanager
def _streams(threads: int, device: torch.device) -> Iterator[StreamRunner]:
    """A float32 :class:`StreamRunner` of ``threads`` threads, with one intra-op thread while
    it runs more than one (restored after)."""
    runner = StreamRunner(threads, "fp32", device.type)
    intra_op = torch.get_num_threads()
    if runner.threads > 1:
        torch.set_num_threads(1)
    try:
        yield runner
    finally:
        runner.close()
        torch.set_num_threads(intra_op)


@torch.no_grad()
def extract_features(
    encoders: nn.ModuleDict,
    dataset: LinearEvalDataset,
    batch_size: int,
    device: torch.device,
    show: bool = False,
    threads: int = 1,
) -> dict[str, torch.Tensor]:
    """Pooled features ``(n, hidden_dim)`` of every sample of ``dataset``, per modality;
    ``show``: a progress bar (or plain lines) on stderr. ``threads``: the streams run side by
    side on this many threads, each on one intra-op thread (the features are those of one
    stream at a time on one thread). 1, the default, runs them one after another with every
    intra-op thread: at an evaluation batch (256) that is as fast on a quiet machine
    (``benchmarks/features.py``: 0.95x for two threads); a stream-threaded training run, which
    holds one intra-op thread, passes its own thread count (the kNN monitor)."""
    encoders.eval()
    feats: dict[str, list[torch.Tensor]] = {m: [] for m in encoders}
    label = f"features {dataset.split}"
    with (
        _batches(label, len(dataset), batch_size, show) as bar,
        _streams(threads, device) as runner,
    ):
        for lo in range(0, len(dataset), batch_size):
            block = dataset.read_block(lo, lo + batch_size)
            out = runner.encode(encoders, {m: block[m].to(device) for m in encoders})
            for m in encoders:
                feats[m].append(out[m].float())
            bar.update()
    return {m: torch.cat(v) for m, v in feats.items()}


def _batches(label: str, n: int, batch_size: int, show: bool) -> Progress:
    return Progress(label, -(-n // batch_size), enabled=show)


@torch.no_grad()
def recalibrate_batchnorm(
    encoders: nn.ModuleDict,
    dataset: LinearEvalDataset,
    batch_size: int,
    device: torch.device,
    show: bool = False,
    threads: int = 1,
) -> None:
    """Set every BatchNorm's running statistics to the average over ``dataset``.

    Label-free and gradient-free: only the BN layers run in training mode (cumulative
    average, ``momentum=None``), dropout stays off; the encoders end in eval mode.
    ``threads``: as for :func:`extract_features` (each stream's BatchNorms are its own).
    """
    bns = [m for m in encoders.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    label = f"BatchNorm statistics {dataset.split}"
    with (
        _batches(label, len(dataset), batch_size, show) as bar,
        _streams(threads, device) as runner,
    ):
        for lo in range(0, len(dataset), batch_size):
            block = dataset.read_block(lo, lo + batch_size)
            runner.encode(encoders, {m: block[m].to(device) for m in encoders})
            bar.update()
    encoders.eval()
