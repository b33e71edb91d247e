"""ikemtrain.losses against the slow numpy twins in tests/naive_losses.py."""

import naive_losses as naive
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ikemtrain import losses

TAU = 0.07


def unit(*shape, dim, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=dim)


def np_(t):
    return t.detach().double().numpy()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_info_nce_matches_twin(dtype):
    q, k, Q = unit(6, 8, dim=1, seed=1), unit(6, 8, dim=1, seed=2), unit(8, 40, dim=0, seed=3)
    q, k, Q = q.to(dtype), k.to(dtype), Q.to(dtype)
    got = losses.info_nce(q, k, Q, TAU).item()
    assert got == pytest.approx(naive.info_nce(np_(q), np_(k), np_(Q), TAU), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("context", [True, False])
@pytest.mark.parametrize("topk", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ekem_matches_twin(context, topk, dtype):
    q_u, k_u, q_v = (unit(5, 8, dim=1, seed=s).to(dtype) for s in (4, 5, 6))
    Q_u, Q_v = (unit(8, 30, dim=0, seed=s).to(dtype) for s in (7, 8))
    s_u, s_v = q_u @ Q_u, q_v @ Q_v
    got = losses.ekem_loss(q_u, k_u, s_u, s_v, TAU, topk, context).item()
    want = naive.ekem(np_(q_u), np_(k_u), np_(s_u), np_(s_v), TAU, topk, context)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    if dtype == torch.float64:
        assert got == pytest.approx(want, rel=1e-12)


def test_ekem_positives_come_from_the_partner_not_from_u():
    """Swapping the partner's similarities changes the mined positives, hence the loss."""
    q_u, k_u, q_v = (unit(5, 8, dim=1, seed=s) for s in (9, 10, 11))
    Q = unit(8, 30, dim=0, seed=12)
    s_u, s_v = q_u @ Q, q_v @ Q
    a = losses.ekem_loss(q_u, k_u, s_u, s_v, TAU, 1, context=False)
    b = losses.ekem_loss(q_u, k_u, s_u, s_u, TAU, 1, context=False)
    assert not torch.isclose(a, b)
    assert a.item() == pytest.approx(
        naive.ekem(np_(q_u), np_(k_u), np_(s_u), np_(s_v), TAU, 1, False)
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ikem_matches_twin(dtype):
    keys = [unit(4, 8, dim=1, seed=s).to(dtype) for s in (13, 14, 15)]
    queues = [unit(8, 20, dim=0, seed=s).to(dtype) for s in (16, 17, 18)]
    z_u = unit(4, 24, dim=1, seed=19).to(dtype)
    z_c = F.normalize(torch.cat(keys, dim=1), dim=1)
    bank_c = F.normalize(torch.cat(queues, dim=0), dim=0)
    got = losses.ikem_loss(z_u, z_c, bank_c, TAU).item()
    want = naive.ikem(np_(z_u), [np_(k) for k in keys], [np_(q) for q in queues], TAU)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_gradient_reaches_only_the_queries():
    q_u = unit(5, 8, dim=1, seed=20).requires_grad_()
    q_v = unit(5, 8, dim=1, seed=21).requires_grad_()
    k_u = unit(5, 8, dim=1, seed=22)  # keys come from no_grad encoders
    Q_u, Q_v = unit(8, 30, dim=0, seed=23), unit(8, 30, dim=0, seed=24)
    loss = losses.info_nce(q_u, k_u, Q_u, TAU) + losses.ekem_loss(
        q_u, k_u, q_u @ Q_u, q_v @ Q_v, TAU, 2, True
    )
    loss.backward()
    assert q_u.grad.abs().sum() > 0
    assert q_v.grad.abs().sum() > 0  # through the context block S_u * S_v, as the reference
    assert k_u.grad is None and Q_u.grad is None and Q_v.grad is None


def test_without_context_the_partner_only_chooses_positives():
    q_u = unit(5, 8, dim=1, seed=25).requires_grad_()
    q_v = unit(5, 8, dim=1, seed=26).requires_grad_()
    Q = unit(8, 30, dim=0, seed=27)
    losses.ekem_loss(q_u, unit(5, 8, dim=1, seed=28), q_u @ Q, q_v @ Q, TAU, 1, False).backward()
    assert q_u.grad.abs().sum() > 0
    assert q_v.grad is None or torch.all(q_v.grad == 0)


def test_info_nce_is_cross_entropy_at_zero():
    q, k, Q = unit(3, 4, dim=1, seed=29), unit(3, 4, dim=1, seed=30), unit(4, 7, dim=0, seed=31)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ Q], 1) / 0.5
    want = -torch.log_softmax(logits, 1)[:, 0].mean()
    torch.testing.assert_close(losses.info_nce(q, k, Q, 0.5), want)


def test_clear_errors():
    q, Q = unit(3, 4, dim=1), unit(4, 7, dim=0)
    with pytest.raises(ValueError, match="queue"):
        losses.info_nce(q, q, Q.T, TAU)
    with pytest.raises(ValueError, match="q and k"):
        losses.info_nce(q, q[:2], Q, TAU)
    with pytest.raises(ValueError, match="topk"):
        losses.ekem_loss(q, q, q @ Q, q @ Q, TAU, 8, True)
    with pytest.raises(ValueError, match="sim_u and sim_v"):
        losses.ekem_loss(q, q, q @ Q, (q @ Q)[:, :3], TAU, 1, True)
    with pytest.raises(ValueError, match="bank_c"):
        losses.ikem_loss(q, q, Q[:2], TAU)


def test_twin_log_softmax_is_sane():
    x = np.array([1000.0, 1000.0])
    np.testing.assert_allclose(naive.log_softmax(x), np.log([0.5, 0.5]))
