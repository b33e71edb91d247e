"""The six-modality pre-training model: MoCo, then EKEM + IKEM (docs/method.md, "Pre-training").

One :class:`ModalityBranch` per modality in ``branches`` (a ``ModuleDict`` keyed by modality
name) and one loop over them. ``forward`` does everything an iteration needs except the
optimiser step: queries, momentum update, keys (no grad), the losses, and the enqueue.

* Stage 1: ``L = sum_u InfoNCE(q_u, k_u, Q_u)``; every key encoder is momentum-updated.
* Stage 2: only key encoders outside ``frozen_keys`` are momentum-updated (joint, bone
  and rotation-axis keys stay at their end-of-stage-1 weights);
  ``L = sum_u (L^EKEM_u + L^IKEM_u)`` with ``L^EKEM_u = mean_{v != u} l_{u<-v}`` and
  ``L^IKEM_u = CE([z~_u . z^_c, z~_u . M_c] / tau, 0)``, where ``z^_c`` is the normalised
  concatenation of all keys and ``M_c`` the column-normalised vertical concatenation of the
  queues (the implicit bank).

Similarities use the queues as they were before this batch's enqueue.

The encoders of the six streams run through ``runner`` (:class:`~ikemtrain.nn.streams.
StreamRunner`: in sequence in float32 by default, or side by side on threads and in bfloat16
as the training loop sets it); the loop then calls :meth:`PretrainModel.backward` on the loss.
The momentum update of all updated key encoders is one fused ``torch._foreach`` operation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ikemtrain.config import PretrainConfig
from ikemtrain.losses import ekem_loss, ikem_loss, info_nce
from ikemtrain.methods.branch import ModalityBranch
from ikemtrain.nn.init import weights_init
from ikemtrain.nn.momentum import momentum_update_all
from ikemtrain.nn.stgcn import STGCN
from ikemtrain.nn.streams import StreamRunner

__all__ = ["DEFAULT_FROZEN_KEYS", "PretrainModel", "count_parameters", "describe"]

#: Key encoders held fixed in stage 2 (the "high-performance modalities"); the default of
#: ``PretrainConfig.frozen_keys``, where the paper's settings live.
DEFAULT_FROZEN_KEYS = PretrainConfig().frozen_keys


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class PretrainModel(nn.Module):
    """MoCo + CrosSCLR-EKEM + IKEM over ``modalities`` (3 for the 3s baseline, or 6).

    Every argument is required: the paper's values (in brackets) are the defaults of
    :class:`~ikemtrain.config.PretrainConfig`, whose ``model_kwargs()`` gives all of them.

    Args:
        modalities: names of the modalities, e.g. ``("joint", "velocity", "bone")``; the
            keys of the ``view1``/``view2`` dicts and of ``branches``.
        backbone: keyword arguments of :class:`~ikemtrain.nn.stgcn.STGCN`.
        feature_dim: MoCo embedding size (128). The IKEM heads are
            ``hidden_dim -> len(modalities) * feature_dim -> same``.
        queue_size: K, columns per queue (32768).
        momentum: m of the key encoders (0.999).
        tau: temperature (0.07).
        topk: mined positives per partner modality in EKEM (1).
        context: include the ``S_u * S_v`` block in EKEM (True).
        ekem, ikem: which stage-2 terms to use (Table 1a: EKEM only, IKEM only, both).
        frozen_keys: key encoders not momentum-updated in stage 2 (joint, bone,
            rotation_axis); names absent from ``modalities`` are ignored.
        reference_compat: False (the default setting) copies the keys from the queries after
            ``weights_init`` (MoCo-correct, fixes the key initialisation bug); True initialises keys
            independently, as the reference does.
        head_bn: BatchNorm in the MoCo and IKEM heads (a departure, for the CPU
            presets; see :class:`~ikemtrain.nn.heads.ProjectionHead`).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        *,
        backbone: Mapping[str, Any],
        feature_dim: int,
        queue_size: int,
        momentum: float,
        tau: float,
        topk: int,
        context: bool,
        ekem: bool,
        ikem: bool,
        frozen_keys: Sequence[str],
        reference_compat: bool,
        head_bn: bool,
    ):
        super().__init__()
        if isinstance(modalities, str):
            raise ValueError(
                f"modalities must be a sequence of names, not the string {modalities!r}"
            )
        modalities = tuple(modalities)
        if not modalities:
            raise ValueError("modalities must name at least one modality")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct, got {modalities}")
        for name in modalities:
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"invalid modality name {name!r}")
        if not (ekem or ikem):
            raise ValueError("at least one of ekem and ikem must be enabled for stage 2")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if not 1 <= topk <= queue_size:
            raise ValueError(f"topk must be in [1, queue_size={queue_size}], got {topk}")
        if isinstance(frozen_keys, str):
            frozen_keys = (frozen_keys,)
        stray = sorted(set(frozen_keys) - set(modalities))
        if stray:
            from skelmod.modalities import MODALITIES  # only to tell a typo from an absent name

            unknown = [m for m in stray if m not in MODALITIES]
            if unknown:
                raise ValueError(
                    f"frozen_keys names unknown modalities {unknown}; "
                    f"expected names from {MODALITIES}"
                )
        self.modalities = modalities
        self.feature_dim = feature_dim
        self.momentum = momentum
        self.tau = tau
        self.topk = topk
        self.context = context
        self.ekem = ekem
        self.ikem = ikem
        self.frozen_keys = tuple(m for m in modalities if m in set(frozen_keys))
        self.reference_compat = reference_compat
        self.head_bn = head_bn
        self.backbone = dict(backbone)
        ikem_dim = len(modalities) * feature_dim
        self.branches = nn.ModuleDict(
            {
                m: ModalityBranch(self.backbone, feature_dim, queue_size, ikem_dim, head_bn)
                for m in modalities
            }
        )
        #: how the encoders of a step run (execution, not model: not in the state dict)
        self.runner = StreamRunner()
        if reference_compat:
            for branch in self.branches.values():
                branch.copy_keys_from_queries()
            weights_init(self)  # re-initialises the keys independently (the key initialisation bug)
        else:
            weights_init(self)
            for branch in self.branches.values():
                branch.copy_keys_from_queries()

    def _check_views(self, view: Mapping[str, torch.Tensor], which: str) -> None:
        if not isinstance(view, Mapping) or set(view) != set(self.modalities):
            got = sorted(view) if isinstance(view, Mapping) else type(view).__name__
            raise ValueError(
                f"{which} must map exactly {list(self.modalities)} to tensors, got {got}"
            )

    def forward(
        self,
        view1: Mapping[str, torch.Tensor],
        view2: Mapping[str, torch.Tensor],
        stage: int,
        return_details: bool = False,
    ) -> dict[str, Any]:
        """One training iteration's losses; updates the key encoders and queues in place.

        ``view1`` (queries) and ``view2`` (keys) map each modality to ``(N, C, T, V, M)``.
        Returns ``"loss"`` (scalar with grad) and detached scalars ``"loss/<m>"``; in stage 2
        also ``"ekem/<m>"`` and/or ``"ikem/<m>"`` for the enabled terms. With
        ``return_details`` a ``"details"`` dict holds ``q``, ``k``, ``z`` (per modality) and
        ``banks`` (the queues before this batch's enqueue).
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        self._check_views(view1, "view1")
        self._check_views(view2, "view2")
        if stage == 2 and self.ekem and len(self.modalities) < 2:
            raise ValueError("EKEM needs at least two modalities; use ekem=False or stage 1")
        use_ikem = stage == 2 and self.ikem
        self.runner.reset()
        feats = self.runner.encode({m: b.encoder_q for m, b in self.branches.items()}, view1)
        q, z = {}, {}
        for name, branch in self.branches.items():
            q[name] = F.normalize(branch.head_q(feats[name]), dim=1)
            if use_ikem:
                z[name] = branch.ikem_embedding(feats[name])
        with torch.no_grad():
            updated = [
                b for m, b in self.branches.items() if stage == 1 or m not in self.frozen_keys
            ]
            momentum_update_all(
                [(b.encoder_q, b.encoder_k) for b in updated]
                + [(b.head_q, b.head_k) for b in updated],
                self.momentum,
            )
            key_feats = self.runner.encode(
                {m: b.encoder_k for m, b in self.branches.items()}, view2
            )
            k = {m: F.normalize(b.head_k(key_feats[m]), dim=1) for m, b in self.branches.items()}
        banks = {name: branch.queue.snapshot() for name, branch in self.branches.items()}

        out: dict[str, Any] = {}
        per_modality = {}
        if stage == 1:
            for name in self.modalities:
                per_modality[name] = info_nce(q[name], k[name], banks[name], self.tau)
        else:
            terms = {name: [] for name in self.modalities}
            if self.ekem:
                sims = {name: q[name] @ banks[name] for name in self.modalities}
                for u in self.modalities:
                    partners = [v for v in self.modalities if v != u]
                    loss_u = sum(
                        ekem_loss(q[u], k[u], sims[u], sims[v], self.tau, self.topk, self.context)
                        for v in partners
                    ) / len(partners)
                    out[f"ekem/{u}"] = loss_u.detach()
                    terms[u].append(loss_u)
            if self.ikem:
                z_c = F.normalize(torch.cat([k[m] for m in self.modalities], dim=1), dim=1)
                bank_c = F.normalize(torch.cat([banks[m] for m in self.modalities], dim=0), dim=0)
                for u in self.modalities:
                    loss_u = ikem_loss(z[u], z_c, bank_c, self.tau)
                    out[f"ikem/{u}"] = loss_u.detach()
                    terms[u].append(loss_u)
            per_modality = {name: sum(t) for name, t in terms.items()}

        out["loss"] = sum(per_modality.values())
        for name, value in per_modality.items():
            out[f"loss/{name}"] = value.detach()
        for name, branch in self.branches.items():
            branch.queue.enqueue(k[name])
        if return_details:
            out["details"] = {"q": q, "k": k, "z": z, "banks": banks}
        return out

    @property
    def stream_count(self) -> int:
        """The encoders one call of the runner runs (one per modality)."""
        return len(self.branches)

    def backward(self, loss: torch.Tensor) -> None:
        """Differentiate ``forward``'s ``"loss"`` (``loss.backward()``, with the encoders'
        backward passes run by :attr:`runner`)."""
        self.runner.backward(loss)


def describe(modalities: Sequence[str], **kwargs: Any) -> list[tuple[str, int]]:
    """Parameter counts of ``PretrainModel(modalities, **kwargs)`` as ``(name, count)`` rows
    (``kwargs``: e.g. ``PretrainConfig().model_kwargs()``, the paper's model).

    Rows: ``"backbone (one STGCN)"``, then ``"branches.<m>.<part>"`` for every module of
    every branch (these rows sum to the total), ``"trainable (keys frozen)"`` and ``"total"``.
    The model is built on the ``meta`` device, so this allocates no weights.
    """
    with torch.device("meta"):
        model = PretrainModel(modalities, **kwargs)
        backbone = STGCN(**model.backbone)
    rows = [("backbone (one STGCN)", count_parameters(backbone))]
    for name, branch in model.branches.items():
        for part in ("encoder_q", "head_q", "encoder_k", "head_k", "ikem_head"):
            rows.append((f"branches.{name}.{part}", count_parameters(getattr(branch, part))))
    rows.append(("trainable (keys frozen)", count_parameters(model, trainable_only=True)))
    rows.append(("total", count_parameters(model)))
    return rows
