"""Contrastive losses of pre-training and distillation, as pure functions
(docs/method.md, "Pre-training"; "Distillation").

All embeddings are expected to be L2-normalised by the caller; banks are ``(dim, K)`` with one
past key per column. Every loss is the batch mean. Nothing here touches module state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import DISTILL_LOSS_FORMS

__all__ = [
    "DISTILL_LOSS_FORMS",
    "distill_loss",
    "ekem_loss",
    "ikem_loss",
    "info_nce",
    "topk_indices",
]


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names} must both be (B, dim), got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_bank(q: torch.Tensor, bank: torch.Tensor, name: str) -> None:
    if bank.dim() != 2 or bank.shape[0] != q.shape[1]:
        raise ValueError(f"{name} must be ({q.shape[1]}, K), got shape {tuple(bank.shape)}")


def _check_sims(sim_u: torch.Tensor, sim_v: torch.Tensor, b: int) -> None:
    if sim_u.dim() != 2 or sim_u.shape != sim_v.shape or sim_u.shape[0] != b:
        raise ValueError(
            f"sim_u and sim_v must both be (B={b}, K), "
            f"got {tuple(sim_u.shape)} and {tuple(sim_v.shape)}"
        )


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo InfoNCE (stage 1): ``CE([q.k, q.Q] / tau, 0)``, batch mean.

    ``q``, ``k`` ``(B, d)``; ``queue`` ``(d, K)``. Returns a scalar.
    """
    _check_pair(q, k, "q and k")
    _check_bank(q, queue, "queue")
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue], dim=1) / tau
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


def topk_indices(sim: torch.Tensor, topk: int) -> torch.Tensor:
    """Indices ``(B, topk)`` of the ``topk`` largest similarities per row of ``sim`` ``(B, K)``."""
    if not 1 <= topk <= sim.shape[1]:
        raise ValueError(f"topk must be in [1, K={sim.shape[1]}], got {topk}")
    return torch.topk(sim.detach(), topk, dim=1).indices


def ekem_loss(
    q_u: torch.Tensor,
    k_u: torch.Tensor,
    sim_u: torch.Tensor,
    sim_v: torch.Tensor,
    tau: float,
    topk: int,
    context: bool,
) -> torch.Tensor:
    """EKEM term ``l_{u<-v}``, batch mean: modality ``u`` learns from partner ``v``.

    ``q_u``, ``k_u`` ``(B, d)``; ``sim_u = q_u . Q_u`` and ``sim_v = q_v . Q_v`` ``(B, K)``.
    ``logits = [q_u.k_u, S_u, S_u * S_v] / tau`` (without the context block when ``context`` is
    False; the context=False crash fixed); the positives are column 0 and the top-``topk``
    entries of ``S_v`` in each block, and the loss is minus the mean log-softmax over those
    ``1 + 2*topk`` (or ``1 + topk``) positives. Gradients flow through ``S_u`` and ``S_v`` as in
    the reference.
    """
    _check_pair(q_u, k_u, "q_u and k_u")
    _check_sims(sim_u, sim_v, q_u.shape[0])
    K = sim_u.shape[1]
    idx = topk_indices(sim_v, topk)
    blocks = [(q_u * k_u).sum(dim=1, keepdim=True), sim_u]
    if context:
        blocks.append(sim_u * sim_v)
    logp = F.log_softmax(torch.cat(blocks, dim=1) / tau, dim=1)
    picked = logp[:, :1].sum(dim=1) + logp.gather(1, 1 + idx).sum(dim=1)
    n_pos = 1 + topk
    if context:
        picked = picked + logp.gather(1, 1 + K + idx).sum(dim=1)
        n_pos += topk
    return -(picked / n_pos).mean()


def ikem_loss(
    z_u: torch.Tensor, z_c: torch.Tensor, bank_c: torch.Tensor, tau: float
) -> torch.Tensor:
    """IKEM term: ``CE([z~_u . z^_c, z~_u . M_c] / tau, 0)``, batch mean.

    ``z_u`` ``(B, D)``: the normalised IKEM-head output of modality ``u``; ``z_c`` ``(B, D)``:
    the normalised concatenation of all keys; ``bank_c`` ``(D, K)``: the column-normalised
    vertical concatenation of the per-modality queues (the implicit bank ``M_c``).
    """
    _check_pair(z_u, z_c, "z_u and z_c")
    _check_bank(z_u, bank_c, "bank_c")
    return info_nce(z_u, z_c, bank_c, tau)


def distill_loss(
    s_u: torch.Tensor,
    t: torch.Tensor,
    sim_u: torch.Tensor,
    sim_v: torch.Tensor,
    tau: float,
    topk: int,
    context: bool,
    form: str,
) -> torch.Tensor:
    """Relational distillation term ``l_{v->u}``, batch mean: student ``u`` learns the
    relations of teacher modality ``v``.

    ``s_u`` ``(B, D)``: normalised student output; ``t`` ``(B, D)``: the normalised
    concatenation of the teacher's embeddings; ``sim_u = s_u . Q_T`` ``(B, K)`` (student
    against the teacher bank) and ``sim_v = q_v . Q_v`` ``(B, K)`` (teacher modality ``v``
    against its own bank), whose top-``topk`` entries are the mined negatives ``j_v``.

    * ``"implemented"`` (the reference's code; the default ``loss_form`` setting):
      ``logits = [s_u.t, S^u, S^u * S^v] / tau`` (no product block without ``context``),
      positives column 0 and ``j_v`` in each block, minus the mean log-probability over them.
      It is :func:`ekem_loss` with the student in place of the query and the teacher in place
      of the key.
    * ``"paper"`` (eq. 7-8): ``-log[(e^{s_u.t/tau} + sum_{j_v} e^{S^u_j S^v_j/tau}) /
      (e^{s_u.t/tau} + sum_i e^{S^u_i S^v_i/tau})]``; ``context`` does not apply.
    """
    if form == "implemented":
        return ekem_loss(s_u, t, sim_u, sim_v, tau, topk, context)
    if form != "paper":
        raise ValueError(f"form must be one of {DISTILL_LOSS_FORMS}, got {form!r}")
    _check_pair(s_u, t, "s_u and t")
    _check_sims(sim_u, sim_v, s_u.shape[0])
    idx = topk_indices(sim_v, topk)
    logits = torch.cat([(s_u * t).sum(dim=1, keepdim=True), sim_u * sim_v], dim=1) / tau
    logp = F.log_softmax(logits, dim=1)
    positives = torch.cat([logp[:, :1], logp.gather(1, 1 + idx)], dim=1)
    return -torch.logsumexp(positives, dim=1).mean()
