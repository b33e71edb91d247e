"""Is the encoder getting better than random? A cheap kNN signal during pre-training.

Every ``monitor_every`` epochs, the query encoders (eval mode, unaugmented cached modalities)
embed up to ``monitor_samples`` samples of the *training* split, fixed by the run's seed:
three quarters are the memory and one quarter the queries of a weighted kNN (``k`` = 20 or
fewer, Wu et al. 2018, :func:`ikemtrain.engine.knn.knn_scores`) on the fusion of all the run's
modalities (:func:`~ikemtrain.engine.knn.stream_embedding`). Its top-1 goes into the epoch's
record (``record["monitor"]``) and the progress line. No validation sample is touched, so the
signal costs no held-out data; it uses the training labels, like MoCo's kNN monitor.

At the start the same number is computed once for the random encoders of the run's own
initialisation, with their raw BatchNorm statistics and with statistics re-estimated on the
monitor's samples (:func:`~ikemtrain.engine.encoders.recalibrate_batchnorm` on a copy); the
larger is the *random baseline* printed before the first epoch, the bar the run must clear.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from skelmod.cache import CacheReader

from ..data import LinearEvalDataset
from .encoders import extract_features, recalibrate_batchnorm
from .knn import knn_scores, stream_embedding

__all__ = ["KnnMonitor"]

#: neighbours of the monitor's kNN (fewer when the memory is smaller)
MONITOR_K = 20


class KnnMonitor:
    """kNN top-1 of held training samples against the other training samples (see the module).

    Args:
        reader: the training cache; ``split``: the benchmark (reads ``<split>-train``).
        modalities: the encoders' modalities (all fused); ``unit_axis``, ``bones``: the
            options the encoders train on (as for linear evaluation).
        samples: at most this many training samples (>= 8); ``seed``: which ones.
        batch_size, device: feature extraction.
    """

    def __init__(
        self,
        reader: CacheReader,
        split: str,
        modalities: tuple[str, ...],
        unit_axis: bool | None,
        bones: str | None,
        samples: int,
        seed: int,
        batch_size: int,
        device: torch.device,
    ):
        full = LinearEvalDataset(reader, f"{split}-train", modalities, unit_axis, bones)
        n = min(int(samples), len(full))
        if n < 8:
            raise ValueError(f"the kNN monitor needs at least 8 training samples, got {n}")
        order = np.random.default_rng(np.random.SeedSequence((seed, 0x4E4E))).permutation(len(full))
        chosen = np.sort(order[:n])
        self.dataset = full.subset(chosen)
        self.queries = np.arange(n) % 4 == 0  # every fourth chosen sample asks, the rest vote
        self.labels = torch.from_numpy(self.dataset.labels)
        self.num_class = int(reader.num_class)
        self.k = min(MONITOR_K, int((~self.queries).sum()))
        self.modalities = tuple(modalities)
        self.batch_size = int(batch_size)
        self.device = device

    @torch.no_grad()
    def top1(self, encoders: Mapping[str, nn.Module], threads: int = 1) -> float:
        """kNN top-1 (percent) of the fused features of ``encoders`` (kept in their mode);
        ``threads``: the streams' threads (:func:`~ikemtrain.engine.encoders.extract_features`;
        a training run passes its own stream threads, having set one intra-op thread)."""
        was = {m: enc.training for m, enc in encoders.items()}
        mods = nn.ModuleDict(dict(encoders))
        feats = extract_features(mods, self.dataset, self.batch_size, self.device, threads=threads)
        for m, enc in encoders.items():
            enc.train(was[m])
        emb = stream_embedding({m: f.cpu() for m, f in feats.items()}, self.modalities)
        q = torch.from_numpy(self.queries)
        scores = knn_scores(emb[q], emb[~q], self.labels[~q], self.num_class, [self.k])[self.k]
        return 100.0 * float((scores.argmax(1) == self.labels[q]).float().mean())

    def random_baseline(self, encoders: Mapping[str, nn.Module]) -> dict[str, Any]:
        """The monitor's top-1 for untrained ``encoders``: raw BatchNorm statistics,
        re-estimated ones (on a copy), and the larger of the two (``"strongest"``)."""
        raw = self.top1(encoders)
        copies = nn.ModuleDict({m: copy.deepcopy(enc) for m, enc in encoders.items()})
        recalibrate_batchnorm(copies, self.dataset, self.batch_size, self.device)
        fair = self.top1(copies)
        return {"raw_bn": raw, "bn_estimated": fair, "strongest": max(raw, fair), "k": self.k}
