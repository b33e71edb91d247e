"""PretrainModel: parameter counts, stages, momentum, queues, and the stage-2 loss
recomputed from the model's own tensors with the numpy twins."""

import naive_losses as naive
import pytest
import torch

from ikemtrain.config import PretrainConfig
from ikemtrain.methods.pretrain import PretrainModel, count_parameters, describe
from ikemtrain.nn.momentum import copy_params, momentum_update
from ikemtrain.nn.queue import MemoryBank
from ikemtrain.nn.stgcn import STGCN

SIX = ("joint", "velocity", "acceleration", "bone", "rotation_axis", "angular_velocity")
THREE = ("joint", "velocity", "bone")
#: the paper's model (the settings' defaults) and a narrow one with a short queue
PAPER = PretrainConfig().model_kwargs()
TINY = PretrainConfig(hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=32).model_kwargs()
B = 4


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny(modalities=SIX, seed=0, **kw):
    torch.manual_seed(seed)
    return PretrainModel(modalities, **{**TINY, **kw})


def views(modalities, seed=1, n=B, t=50):
    g = torch.Generator().manual_seed(seed)
    return tuple({m: torch.randn(n, 3, t, 25, 2, generator=g) for m in modalities} for _ in "12")


def key_side(branch):
    return list(branch.encoder_k.parameters()) + list(branch.head_k.parameters())


def query_side(branch):
    return list(branch.encoder_q.parameters()) + list(branch.head_q.parameters())


def test_six_view_counts_from_describe():
    rows = dict(describe(SIX, **PAPER))
    assert rows["backbone (one STGCN)"] == 821_380
    assert rows["total"] == 15_768_624
    assert rows["trainable (keys frozen)"] == 10_248_216
    assert sum(v for k, v in rows.items() if k.startswith("branches.")) == rows["total"]
    assert rows["branches.bone.ikem_head"] == 787_968
    assert rows["branches.joint.head_q"] == 98_688


def test_three_view_counts_from_describe():
    rows = dict(describe(THREE, **PAPER))
    assert rows["branches.joint.ikem_head"] == 246_528
    assert rows["total"] == 3 * (2 * 920_068 + 246_528)
    assert rows["trainable (keys frozen)"] == 3 * (920_068 + 246_528)


def test_key_side_has_no_gradient_and_state_dict_holds_queues():
    model = tiny(THREE)
    for branch in model.branches.values():
        assert not any(p.requires_grad for p in key_side(branch))
        assert all(p.requires_grad for p in query_side(branch))
    sd = model.state_dict()
    assert sd["branches.velocity.queue.bank"].shape == (8, 32)
    assert "branches.velocity.queue.ptr" in sd
    trainable = count_parameters(model, trainable_only=True)
    assert trainable == count_parameters(model) - sum(
        p.numel() for b in model.branches.values() for p in key_side(b)
    )


def test_engine_can_load_an_encoder_by_prefix():
    model = tiny(THREE)
    prefix = "branches.bone.encoder_q."
    sd = {k[len(prefix) :]: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    enc = STGCN(**TINY["backbone"])
    enc.load_state_dict(sd)  # strict
    assert torch.equal(enc.data_bn.weight, model.branches["bone"].encoder_q.data_bn.weight)


def test_keys_copied_after_init_unless_reference_compat():
    fixed = tiny(THREE)
    for branch in fixed.branches.values():
        assert all(
            torch.equal(q, k) for q, k in zip(query_side(branch), key_side(branch), strict=True)
        )
        assert torch.all(branch.encoder_q.st_gcn_networks[0].gcn.conv.bias == 0)  # weights_init ran
    compat = tiny(THREE, reference_compat=True)
    branch = compat.branches["joint"]
    q_w = branch.encoder_q.st_gcn_networks[0].gcn.conv.weight
    k_w = branch.encoder_k.st_gcn_networks[0].gcn.conv.weight
    assert not torch.equal(q_w, k_w)
    assert abs(k_w.std().item() - 0.02) < 0.01  # independently drawn from the same weights_init


def grads_by_part(model):
    out = {}
    for name, p in model.named_parameters():
        part = name.split(".")[2]
        out.setdefault(part, []).append(p.grad)
    return out


@pytest.mark.parametrize("stage", [1, 2])
def test_forward_backward_finite_and_gradients_only_on_query_side(stage):
    model = tiny(SIX)
    v1, v2 = views(SIX)
    out = model(v1, v2, stage=stage)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    out["loss"].backward()
    parts = grads_by_part(model)
    for part in ("encoder_q", "head_q"):
        assert all(g is not None and torch.isfinite(g).all() for g in parts[part])
        assert sum(g.abs().sum() for g in parts[part]) > 0
    for part in ("encoder_k", "head_k"):
        assert all(g is None for g in parts[part])
    if stage == 1:
        assert all(g is None for g in parts["ikem_head"])
        assert set(out) == {"loss"} | {f"loss/{m}" for m in SIX}
    else:
        assert all(g is not None and torch.isfinite(g).all() for g in parts["ikem_head"])
        assert {f"ekem/{m}" for m in SIX} | {f"ikem/{m}" for m in SIX} <= set(out)
    total = sum(out[f"loss/{m}"] for m in SIX)
    torch.testing.assert_close(out["loss"].detach(), total)


def perturb_queries(model):
    with torch.no_grad():
        for branch in model.branches.values():
            for p in query_side(branch):
                p.add_(torch.randn_like(p))


def snapshot_keys(model):
    return {m: [p.clone() for p in key_side(b)] for m, b in model.branches.items()}


def moved(before, model):
    return {
        m: any(not torch.equal(a, p) for a, p in zip(before[m], key_side(b), strict=True))
        for m, b in model.branches.items()
    }


def test_stage1_momentum_moves_every_key_encoder():
    model = tiny(SIX, momentum=0.5)
    perturb_queries(model)
    before = snapshot_keys(model)
    model(*views(SIX), stage=1)
    assert all(moved(before, model).values())
    # exact EMA on one parameter: k <- 0.5 k + 0.5 q
    b = model.branches["joint"]
    want = 0.5 * before["joint"][0] + 0.5 * next(b.encoder_q.parameters())
    torch.testing.assert_close(next(b.encoder_k.parameters()), want)


@pytest.mark.parametrize("modalities", [SIX, THREE])
def test_stage2_momentum_skips_frozen_keys(modalities):
    model = tiny(modalities, momentum=0.5)
    perturb_queries(model)
    before = snapshot_keys(model)
    model(*views(modalities), stage=2)
    frozen = {"joint", "bone", "rotation_axis"}
    assert moved(before, model) == {m: m not in frozen for m in modalities}


@pytest.mark.parametrize(
    "setting, frozen",
    [
        (("velocity",), {"velocity"}),
        ("velocity,bone", {"velocity", "bone"}),
        ([], set()),
        ("", set()),
    ],
)
def test_frozen_keys_are_configurable(setting, frozen):
    """From a preset value through PretrainConfig to the model; [] freezes no key encoder."""
    cfg = PretrainConfig(modalities=THREE, frozen_keys=setting)
    assert set(cfg.frozen_keys) == frozen
    model = tiny(THREE, momentum=0.5, frozen_keys=cfg.model_kwargs()["frozen_keys"])
    perturb_queries(model)
    before = snapshot_keys(model)
    model(*views(THREE), stage=2)
    assert moved(before, model) == {m: m not in frozen for m in THREE}


def test_queue_receives_the_keys_and_pointer_advances():
    model = tiny(THREE)
    out = model(*views(THREE), stage=1, return_details=True)
    k = out["details"]["k"]
    for m, branch in model.branches.items():
        assert branch.queue.ptr.item() == B
        torch.testing.assert_close(branch.queue.bank[:, :B], k[m].T)
        torch.testing.assert_close(branch.queue.bank[:, B:], out["details"]["banks"][m][:, B:])
    out2 = model(*views(THREE, seed=2), stage=2, return_details=True)
    for m, branch in model.branches.items():
        assert branch.queue.ptr.item() == 2 * B
        torch.testing.assert_close(out2["details"]["banks"][m][:, :B], k[m].T)  # before enqueue
        torch.testing.assert_close(branch.queue.bank[:, B : 2 * B], out2["details"]["k"][m].T)


def numpy_details(details):
    return {
        key: {m: t.detach().double().numpy() for m, t in details[key].items()}
        for key in ("q", "k", "z", "banks")
    }


@pytest.mark.parametrize(
    "modalities, kw",
    [
        (SIX, {}),
        (THREE, {}),
        (THREE, {"topk": 2, "context": False}),
        (SIX, {"topk": 3}),
    ],
)
def test_stage2_loss_equals_numpy_recomputation(modalities, kw):
    model = tiny(modalities, **kw)
    model(*views(modalities, seed=5), stage=1)  # fill part of the queues with real keys
    out = model(*views(modalities, seed=6), stage=2, return_details=True)
    d = numpy_details(out["details"])
    per, total = naive.pretrain_stage2(
        d["q"], d["k"], d["z"], d["banks"], model.tau, model.topk, model.context
    )
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    for m in modalities:
        assert out[f"ekem/{m}"].item() == pytest.approx(per[m][0], rel=1e-5)
        assert out[f"ikem/{m}"].item() == pytest.approx(per[m][1], rel=1e-5)


def test_ekem_with_three_modalities_averages_over_two_partners():
    model = tiny(THREE)
    out = model(*views(THREE, seed=7), stage=2, return_details=True)
    d = numpy_details(out["details"])
    sims = {m: d["q"][m] @ d["banks"][m] for m in THREE}
    pair = {
        (u, v): naive.ekem(d["q"][u], d["k"][u], sims[u], sims[v], model.tau)
        for u in THREE
        for v in THREE
        if u != v
    }
    assert out["ekem/velocity"].item() == pytest.approx(
        (pair["velocity", "joint"] + pair["velocity", "bone"]) / 2, rel=1e-5
    )
    assert out["ekem/velocity"].item() != pytest.approx(
        pair["velocity", "joint"] + pair["velocity", "bone"], rel=1e-3
    )


@pytest.mark.parametrize("ekem, ikem", [(True, False), (False, True)])
def test_ablation_switches_change_the_loss_composition(ekem, ikem):
    model = tiny(THREE, ekem=ekem, ikem=ikem)
    out = model(*views(THREE, seed=8), stage=2, return_details=True)
    assert all((f"ekem/{m}" in out) == ekem and (f"ikem/{m}" in out) == ikem for m in THREE)
    d = numpy_details(out["details"])
    per, total = naive.pretrain_stage2(
        d["q"], d["k"], d["z"], d["banks"], model.tau, use_ekem=ekem, use_ikem=ikem
    )
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    out["loss"].backward()
    ikem_grads = [p.grad for b in model.branches.values() for p in b.ikem_head.parameters()]
    assert all((g is not None) == ikem for g in ikem_grads)


def test_single_modality_stage1_works_and_stage2_ekem_is_refused():
    model = tiny(("joint",))
    assert torch.isfinite(model(*views(("joint",)), stage=1)["loss"])
    with pytest.raises(ValueError, match="at least two modalities"):
        model(*views(("joint",)), stage=2)


def test_clear_errors():
    model = tiny(THREE)
    v1, v2 = views(THREE)
    with pytest.raises(ValueError, match="stage"):
        model(v1, v2, stage=3)
    with pytest.raises(ValueError, match="view2"):
        model(v1, {"joint": v2["joint"]}, stage=1)
    with pytest.raises(ValueError, match="ekem and ikem"):
        tiny(THREE, ekem=False, ikem=False)
    with pytest.raises(ValueError, match="distinct"):
        tiny(("joint", "joint"))
    with pytest.raises(ValueError, match="string"):
        tiny("joint")
    with pytest.raises(ValueError, match="unknown modalities"):
        tiny(THREE, frozen_keys=("joint", "bones"))


# --- memory bank and momentum blocks ----------------------------------------------------------


def test_memory_bank_starts_with_unit_columns():
    bank = MemoryBank(8, 10)
    torch.testing.assert_close(bank.bank.norm(dim=0), torch.ones(10))
    assert bank.ptr.item() == 0 and bank.ptr.dtype == torch.long


def test_memory_bank_wraps_when_size_is_not_a_multiple_of_the_batch():
    bank = MemoryBank(2, 10)
    want = bank.bank.clone()
    ptr = 0
    for step in range(5):  # 5 batches of 4 into 10 slots: wraps twice
        keys = torch.full((4, 2), float(step)) + torch.arange(4.0)[:, None] / 10
        bank.enqueue(keys)
        for i in range(4):  # the plain, one-at-a-time ring buffer
            want[:, (ptr + i) % 10] = keys[i]
        ptr = (ptr + 4) % 10
        assert bank.ptr.item() == ptr
        torch.testing.assert_close(bank.bank, want)


def test_memory_bank_keeps_the_last_keys_of_an_oversized_batch():
    bank = MemoryBank(1, 3)
    bank.enqueue(torch.tensor([[0.0]]))
    bank.enqueue(torch.arange(1.0, 8.0)[:, None])  # 7 keys after ptr 1 -> slots 1,2,0,1,2,0,1
    assert bank.ptr.item() == (1 + 7) % 3
    assert bank.bank.flatten().tolist() == [6.0, 7.0, 5.0]


def test_memory_bank_rejects_wrong_key_shapes():
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        MemoryBank(4, 8).enqueue(torch.zeros(2, 3))


def test_momentum_update_is_the_ema_and_copy_params_freezes():
    q, k = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    k_before = [p.clone() for p in k.parameters()]
    momentum_update(q, k, 0.9)
    for pq, pk, pk0 in zip(q.parameters(), k.parameters(), k_before, strict=True):
        torch.testing.assert_close(pk, 0.9 * pk0 + 0.1 * pq)
    copy_params(q, k)
    assert all(torch.equal(a, b) for a, b in zip(q.parameters(), k.parameters(), strict=True))
    assert not any(p.requires_grad for p in k.parameters())
    with pytest.raises(ValueError, match="same parameter shapes"):
        momentum_update(q, torch.nn.Linear(3, 4), 0.9)


def _ddp_worker(rank, world, port, result):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.manual_seed(0)  # same initial bank on both ranks
    bank = MemoryBank(2, 8)
    bank.enqueue(torch.full((3, 2), float(rank + 1)))
    result[rank] = (bank.ptr.item(), bank.bank[:, :6].clone())
    dist.destroy_process_group()


@pytest.mark.slow
def test_memory_bank_gathers_keys_across_ranks():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, result), nprocs=2)
    want = torch.tensor([[1.0] * 3 + [2.0] * 3] * 2)
    for rank in range(2):
        ptr, cols = result[rank]
        assert ptr == 6
        torch.testing.assert_close(cols, want)


def test_device_agnostic_no_tensor_is_created_on_the_cpu():
    """On the meta device any tensor made on the CPU inside forward would raise."""
    model = tiny(THREE).to("meta")
    v = {m: torch.empty(B, 3, 50, 25, 2, device="meta") for m in THREE}
    for stage in (1, 2):
        out = model(v, v, stage)
        out["loss"].backward()
        assert out["loss"].device.type == "meta"
    assert model.branches["bone"].queue.ptr.device.type == "meta"


def test_head_bn_keeps_queries_apart_where_the_plain_head_collapses():
    """The cause of the CPU-scale collapse, on skeleton-like input: pooled post-ReLU
    features share a large component, and the paper's head sends every sample to nearly one
    direction before any training; the MoCo v3 head (``head_bn``) does not."""
    from ikemtrain.collapse import COLLAPSE_STD, embedding_std

    g = torch.Generator().manual_seed(0)
    # 32 sequences: a shared pose plus a per-sample motion, as normalised skeletons are
    x = 0.3 * torch.randn(1, 3, 50, 25, 2, generator=g) + 0.1 * torch.randn(
        32, 3, 50, 25, 2, generator=g
    )
    plain, bn = tiny(("joint",)), tiny(("joint",), head_bn=True)
    plain.train(), bn.train()
    with torch.no_grad():
        q_plain = plain.branches["joint"].query(x)[1]
        q_bn = bn.branches["joint"].query(x)[1]
    cos_plain = (q_plain @ q_plain.T).mean()
    cos_bn = (q_bn @ q_bn.T).mean()
    assert cos_plain > 0.8 and cos_bn < 0.2
    assert float(embedding_std(q_plain)) < 3 * COLLAPSE_STD < float(embedding_std(q_bn))
    head = bn.branches["joint"].head_q.layers
    assert [type(m).__name__ for m in head] == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
    ]
    assert head[-1].weight is None  # the output BatchNorm has no affine parameters
    # the key head starts as a copy of the query head (and follows it by momentum)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            bn.branches["joint"].head_q.parameters(),
            bn.branches["joint"].head_k.parameters(),
            strict=True,
        )
    )
