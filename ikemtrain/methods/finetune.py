"""Encoders with a linear classifier, trained end to end (fine-tuning; not in the paper).

One ST-GCN per modality of the stream and one ``Linear(hidden_dim, num_class)`` after each;
a fused stream averages the heads' logits, as linear evaluation does
(:func:`ikemtrain.nn.heads.fused_logits`). The state dict holds ``encoders.{m}.`` (what the
evaluation protocols read from a fine-tuning run) and ``heads.{m}.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.heads import fused_logits
from ..nn.init import weights_init

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """``encoders`` (``{modality: STGCN}``) and a linear head each, all trainable.

    ``forward(x, labels, return_details=True)`` takes ``x: {modality: (B, 3, T, V, M)}`` and
    ``labels`` ``(B,)`` and returns ``{"loss": cross-entropy of the fused logits,
    "details": {}}`` (the interface of :class:`ikemtrain.engine.loop.TrainingJob`);
    :meth:`logits` gives the ``(B, num_class)`` scores.
    """

    def __init__(self, encoders: nn.ModuleDict, num_class: int):
        super().__init__()
        self.encoders = encoders
        hidden = {enc.hidden_dim for enc in encoders.values()}
        if len(hidden) != 1:
            raise ValueError(f"the encoders must share one hidden_dim, got {sorted(hidden)}")
        (dim,) = hidden
        self.heads = nn.ModuleDict({m: nn.Linear(dim, num_class) for m in self.encoders})
        weights_init(self.heads)
        self.encoders.requires_grad_(True)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return fused_logits(self.heads, {m: enc(x[m]) for m, enc in self.encoders.items()})

    def forward(self, x: dict[str, torch.Tensor], labels: torch.Tensor, return_details=False):
        loss = F.cross_entropy(self.logits(x), labels)
        return {"loss": loss, "details": {}} if return_details else loss
