"""Slow numpy twins of ikemtrain.losses, written straight from
docs/method.md, "Pre-training" and "Distillation".

One sample at a time, float64, no torch. Each function states the equation it implements.
"""

from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax of a 1-D vector."""
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def info_nce(q, k, queue, tau):
    """Stage 1: mean_b -log softmax([q_b.k_b, q_b.Q_0, ..., q_b.Q_{K-1}] / tau)_0."""
    q, k, queue = (np.asarray(a, dtype=np.float64) for a in (q, k, queue))
    losses = []
    for b in range(q.shape[0]):
        logits = [q[b] @ k[b]] + [q[b] @ queue[:, j] for j in range(queue.shape[1])]
        losses.append(-log_softmax(np.array(logits) / tau)[0])
    return float(np.mean(losses))


def ekem(q_u, k_u, sim_u, sim_v, tau, topk=1, context=True):
    """l_{u<-v}: logits [q_u.k_u, S_u, S_u*S_v]/tau, mask [1, onehot(topk S_v), same],
    minus the mean log-probability over the mask; without context: [q_u.k_u, S_u], [1, topk]."""
    q_u, k_u, sim_u, sim_v = (np.asarray(a, dtype=np.float64) for a in (q_u, k_u, sim_u, sim_v))
    n_neg = sim_u.shape[1]
    losses = []
    for b in range(q_u.shape[0]):
        blocks = [np.array([q_u[b] @ k_u[b]]), sim_u[b]]
        if context:
            blocks.append(sim_u[b] * sim_v[b])
        logp = log_softmax(np.concatenate(blocks) / tau)
        onehot = np.zeros(n_neg)
        onehot[np.argsort(-sim_v[b], kind="stable")[:topk]] = 1.0
        mask = np.concatenate([[1.0], onehot] + ([onehot] if context else []))
        losses.append(-(mask * logp).sum() / mask.sum())
    return float(np.mean(losses))


def ikem(z_u, keys, queues, tau):
    """IKEM: z^_c = normalize(concat of all keys), M_c = column-normalize(vertical concat of
    the queues), loss = mean_b -log softmax([z_u.z^_c, z_u.M_c] / tau)_0."""
    z_c = np.concatenate([np.asarray(k, dtype=np.float64) for k in keys], axis=1)
    z_c = z_c / np.linalg.norm(z_c, axis=1, keepdims=True)
    bank = np.concatenate([np.asarray(q, dtype=np.float64) for q in queues], axis=0)
    bank = bank / np.linalg.norm(bank, axis=0, keepdims=True)
    return info_nce(z_u, z_c, bank, tau)


def pretrain_stage2(q, k, z, banks, tau, topk=1, context=True, use_ekem=True, use_ikem=True):
    """Per-modality stage-2 losses {u: (ekem_u, ikem_u)} and the total sum_u (ekem_u + ikem_u).

    ``q``, ``k``, ``z``, ``banks`` are dicts in modality order; EKEM of u is the mean of
    l_{u<-v} over the partners v != u, each with S_x = q_x . Q_x.
    """
    names = list(q)
    sims = {m: np.asarray(q[m], np.float64) @ np.asarray(banks[m], np.float64) for m in names}
    per = {}
    for u in names:
        e = i = 0.0
        if use_ekem:
            partners = [v for v in names if v != u]
            e = sum(ekem(q[u], k[u], sims[u], sims[v], tau, topk, context) for v in partners)
            e /= len(partners)
        if use_ikem:
            i = ikem(z[u], [k[m] for m in names], [banks[m] for m in names], tau)
        per[u] = (e, i)
    return per, sum(e + i for e, i in per.values())


def mined_negatives(sim_v, topk=1):
    """j_v: per row, the indices of the topk most similar bank entries of S^v."""
    sim_v = np.asarray(sim_v, dtype=np.float64)
    return [list(np.argsort(-row, kind="stable")[:topk]) for row in sim_v]


def distill_implemented(s_u, t, sim_u, sim_v, tau, topk=1, context=True):
    """Distillation as implemented: logits [s_u.t, S^u, S^u*S^v]/tau,
    mask [1, onehot(j_v), onehot(j_v)], l = -(1/|mask|) sum_{i in mask} log softmax(logits)_i,
    batch mean."""
    s_u, t, sim_u, sim_v = (np.asarray(a, dtype=np.float64) for a in (s_u, t, sim_u, sim_v))
    n_neg = sim_u.shape[1]
    losses = []
    for b, j in enumerate(mined_negatives(sim_v, topk)):
        logits = [s_u[b] @ t[b]] + list(sim_u[b])
        if context:
            logits += [sim_u[b][i] * sim_v[b][i] for i in range(n_neg)]
        logp = log_softmax(np.array(logits) / tau)
        picked = [logp[0]] + [logp[1 + i] for i in j]
        if context:
            picked += [logp[1 + n_neg + i] for i in j]
        losses.append(-sum(picked) / len(picked))
    return float(np.mean(losses))


def distill_paper(s_u, t, sim_u, sim_v, tau, topk=1):
    """Paper eq. 7-8: -log[(e^{s_u.t/tau} + sum_{j in j_v} e^{S^u_j S^v_j/tau}) /
    (e^{s_u.t/tau} + sum_i e^{S^u_i S^v_i/tau})], batch mean."""
    s_u, t, sim_u, sim_v = (np.asarray(a, dtype=np.float64) for a in (s_u, t, sim_u, sim_v))
    losses = []
    for b, j in enumerate(mined_negatives(sim_v, topk)):
        pos = np.exp(s_u[b] @ t[b] / tau)
        num = pos + sum(np.exp(sim_u[b][i] * sim_v[b][i] / tau) for i in j)
        den = pos + np.exp(sim_u[b] * sim_v[b] / tau).sum()
        losses.append(-np.log(num / den))
    return float(np.mean(losses))


def distill_total(
    s, q, banks, bank_t, tau, topk=1, context=True, form="implemented", sim_banks=None
):
    """Whole distillation loss from embeddings: t = normalize(concat q_v), S^u = s_u . Q_T,
    S^v = q_v . Q_{sim_banks[v]} (Q_v unless remapped, e.g. Omega -> bone for the Ω bank bug);
    L_u = mean_v l_{v->u} ("implemented") or sum_v ("paper"); L = sum_u L_u.
    Returns ({u: L_u}, L)."""
    sim_banks = {v: (sim_banks or {}).get(v, v) for v in q}
    t = np.concatenate([np.asarray(q[v], np.float64) for v in q], axis=1)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    per = {}
    for u in s:
        sim_u = np.asarray(s[u], np.float64) @ np.asarray(bank_t, np.float64)
        terms = []
        for v in q:
            sim_v = np.asarray(q[v], np.float64) @ np.asarray(banks[sim_banks[v]], np.float64)
            if form == "implemented":
                terms.append(distill_implemented(s[u], t, sim_u, sim_v, tau, topk, context))
            else:
                terms.append(distill_paper(s[u], t, sim_u, sim_v, tau, topk))
        per[u] = np.mean(terms) if form == "implemented" else np.sum(terms)
    return per, float(sum(per.values()))
