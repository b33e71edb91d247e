"""k-nearest-neighbour evaluation of frozen encoders (issue 10; not in the paper).

Protocol: the encoders of linear evaluation (:mod:`ikemtrain.engine.encoders`: a pre-training,
student or fine-tuning run, or random init with BatchNorm statistics estimated on the
training split), in eval mode, give pooled features of ``<split>-train`` (the memory) and
``<split>-val`` (the queries), computed once
(:func:`~ikemtrain.engine.linear_eval.frozen_features`). No training, no labels but the
memory's.

Classifier: the **weighted kNN of Wu et al. 2018** ("Unsupervised feature learning via
non-parametric instance discrimination", CVPR, Sec. 3.4), as InstDisc, MoCo and DINO report it:
cosine similarity ``s_i`` between the query and each memory sample, the ``k`` most similar
memory samples vote for their class with weight ``exp(s_i / T)``, ``T = 0.07``; the class
scores give top-1 and top-5.

Fused streams (``3s``, ``6s``, the student's ``3s``): **the mean of the modalities' cosine
similarities**, i.e. one kNN on the concatenation of the per-modality L2-normalised features
(each scaled by ``1/sqrt(M)``): one set of neighbours per query, close in every modality on
average. (Linear evaluation fuses late, by averaging logits; here a late fusion of votes
would let each modality pick its own neighbours.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from skelmod.cache import CacheError, CacheReader
from skelmod.layout import MODALITY_NAMES

from ..config import STREAMS, STUDENT_STREAMS, ConfigError
from ..data import open_cache
from ..runfolder import open_run_folder
from .distributed import resolve_device
from .encoders import EncoderSource, encoder_source, eval_datasets
from .linear_eval import frozen_features, topk_accuracy
from .logging import write_json

__all__ = ["TEMPERATURE", "default_streams", "knn_eval", "knn_scores", "stream_embedding"]

#: Wu et al. 2018's temperature of the neighbours' weights ``exp(s / T)``.
TEMPERATURE = 0.07
#: Queries per block of the ``(queries, memory)`` similarity matrix (bounds the memory use).
_QUERY_BLOCK = 1024


def stream_embedding(
    features: Mapping[str, torch.Tensor], modalities: Sequence[str]
) -> torch.Tensor:
    """``(n, M * d)``: the L2-normalised features of ``modalities``, each scaled by
    ``1/sqrt(M)`` and concatenated, so that the dot product of two rows is the mean of the
    modalities' cosine similarities (one modality: its cosine similarity)."""
    scale = len(modalities) ** -0.5
    return torch.cat([F.normalize(features[m].float(), dim=1) * scale for m in modalities], 1)


def knn_scores(
    queries: torch.Tensor,
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    num_class: int,
    ks: Sequence[int],
    temperature: float = TEMPERATURE,
) -> dict[int, torch.Tensor]:
    """Class scores ``{k: (n_queries, num_class)}`` of the weighted kNN (Wu et al. 2018).

    ``queries`` ``(q, D)`` and ``memory`` ``(n, D)`` are embeddings whose dot product is the
    similarity (:func:`stream_embedding`); ``memory_labels`` ``(n,)`` int64. For each ``k``
    (``1 <= k <= n``), the ``k`` most similar memory rows add ``exp(s / temperature)`` to
    their class's score.
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1 or max(ks) > memory.shape[0]:
        raise ValueError(f"every k must lie in 1 .. {memory.shape[0]} (the memory), got {ks}")
    kmax = max(ks)
    out = {k: [] for k in ks}
    for lo in range(0, queries.shape[0], _QUERY_BLOCK):
        sim = queries[lo : lo + _QUERY_BLOCK] @ memory.T
        top, idx = sim.topk(kmax, dim=1)  # sorted, most similar first
        weights = (top / temperature).exp()
        votes = F.one_hot(memory_labels[idx], num_class).to(weights.dtype) * weights[..., None]
        for k in ks:
            out[k].append(votes[:, :k].sum(1))
    return {k: torch.cat(v) for k, v in out.items()}


def default_streams(source: EncoderSource) -> list[str]:
    """Every stream ``source`` gives: each modality (``student-<m>`` for a student run) and
    each fusion whose modalities it has (``3s``, ``6s``)."""
    if source.kind == "distill":
        return list(STUDENT_STREAMS)
    singles = [m for m in source.modalities]
    fused = [s for s in ("3s", "6s") if all(m in source.modalities for m in STREAMS[s])]
    return singles + fused


def knn_eval(
    cache: str | os.PathLike | CacheReader,
    out_dir: str | os.PathLike,
    split: str,
    streams: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 20),
    checkpoint: str | os.PathLike | None = None,
    random_init: bool = False,
    backbone: dict[str, Any] | None = None,
    modalities: Sequence[str] | None = None,
    batch_size: int = 128,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    device: str | torch.device = "auto",
    echo: Callable[[str], None] | None = print,
    recalibrate_bn: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Weighted kNN of ``<split>-val`` against ``<split>-train`` per stream; writes
    ``out_dir/results.json``.

    Args:
        streams: the streams to evaluate (modalities, ``3s``, ``6s``, ``student-<m>``);
            None: every stream of the encoders (:func:`default_streams`).
        ks: the neighbour counts (each at most the training split's size).
        checkpoint, random_init, backbone, modalities, recalibrate_bn: the encoders, as for
            :func:`~ikemtrain.engine.linear_eval.linear_eval`.
        batch_size: samples per encoder forward; seed: seeds random-init encoders.
        overwrite: replace a previous knn-eval run in ``out_dir``; without it the folder must
            be new (:mod:`ikemtrain.runfolder`, which also writes ``run.json``).

    Returns the results: ``streams`` (``{stream: {"modalities", "top1": {k: %},
    "top5": {k: %}}}``, k as strings), ``k``, ``temperature``, the settings, the checkpoint.

    Raises ConfigError for a bad stream or k, and what linear evaluation raises for its
    encoders, cache and split.
    """
    source = encoder_source(checkpoint, random_init, backbone, modalities)
    streams = list(streams) if streams else default_streams(source)
    if len(set(streams)) != len(streams):
        raise ConfigError(f"streams: {', '.join(streams)} names a stream twice")
    per_stream = {s: source.modalities_for(s) for s in streams}
    # in the canonical order, so that random-init encoders do not depend on the streams' order
    needed = tuple(m for m in MODALITY_NAMES if any(m in mods for mods in per_stream.values()))
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k: expected positive neighbour counts, got {ks}")

    dev = resolve_device(device)
    reader = open_cache(cache)
    backbone = source.check_cache(reader)
    train_set, val_set = eval_datasets(source, reader, split, needed, echo)
    if ks[-1] > len(train_set):
        raise CacheError(
            f"{reader.path}: split {split}-train has {len(train_set)} samples, fewer than "
            f"k = {ks[-1]} neighbours; lower k"
        )
    settings = {
        "split": split,
        "streams": streams,
        "k": ks,
        "batch_size": batch_size,
        "seed": seed,
        "temperature": temperature,
        "recalibrate_bn": recalibrate_bn,
    }
    # the inputs are checked first: the folder rule is the last thing that can refuse the run
    with open_run_folder(
        out_dir, "knn-eval", "overwrite" if overwrite else "new", settings=settings,
        cache=reader.path, inputs=source.record(),
    ) as folder:  # fmt: skip
        out = folder.path
        started = time.perf_counter()
        train_x, val_x, recalibrated = frozen_features(
            source, backbone, needed, train_set, val_set, batch_size, dev, seed, recalibrate_bn,
            show=echo is not None,
        )  # fmt: skip
        feature_seconds = time.perf_counter() - started
        train_y = torch.as_tensor(train_set.labels, device=dev)
        val_y = torch.as_tensor(val_set.labels, device=dev)

        results_streams: dict[str, Any] = {}
        for stream, mods in per_stream.items():
            scores = knn_scores(
                stream_embedding(val_x, mods),
                stream_embedding(train_x, mods),
                train_y,
                reader.num_class,
                ks,
                temperature,
            )
            top = {k: topk_accuracy(s, val_y) for k, s in scores.items()}
            results_streams[stream] = {
                "modalities": list(mods),
                "top1": {str(k): top[k][0] for k in ks},
                "top5": {str(k): top[k][1] for k in ks},
            }
            if echo is not None:
                echo(f"{stream}: top-1 " + ", ".join(f"k={k} {top[k][0]:.2f}" for k in ks))

        results = {
            "protocol": "knn",
            "streams": results_streams,
            "k": ks,
            "temperature": temperature,
            "weighting": "Wu et al. 2018: the k most similar training samples vote exp(cos / T)",
            "fusion": "mean of the modalities' cosine similarities",
            "split": split,
            "modalities": list(needed),
            "num_class": reader.num_class,
            "layout": reader.layout.name,
            "computed": list(train_set.computed),
            "train_samples": len(train_set),
            "val_samples": len(val_set),
            **source.record(),
            "bn_recalibrated": recalibrated,
            "backbone": dict(backbone),
            "config": {"batch_size": batch_size, "seed": seed},
            "cache": str(reader.path),
            "feature_seconds": feature_seconds,
            "seconds": time.perf_counter() - started,
        }
        write_json(out / "results.json", results)
        return results
