"""The stream runner (ikemtrain.nn.streams): encoders side by side on threads and in bfloat16
give the plain per-stream loop's losses, gradients, momentum updates and SGD steps."""

import pytest
import torch
from test_data import make_cache

from ikemtrain.config import ConfigError, PretrainConfig
from ikemtrain.engine.loop import pretrain
from ikemtrain.methods.pretrain import PretrainModel
from ikemtrain.nn.momentum import momentum_update, momentum_update_all
from ikemtrain.nn.streams import StreamRunner, stream_threads

SIX = ("joint", "velocity", "acceleration", "bone", "rotation_axis", "angular_velocity")
TINY = PretrainConfig(
    hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=32, dropout=0.0, head_bn=True
).model_kwargs()
B = 6


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("streams") / "c.h5", n=16, t=24)


@pytest.fixture
def one_intra_op_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def model64(seed=0, **kw):
    torch.manual_seed(seed)
    return PretrainModel(SIX, **{**TINY, **kw}).double()


def views(seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(
        {m: torch.randn(B, 3, 20, 25, 2, generator=g, dtype=dtype) for m in SIX} for _ in "12"
    )


def train_steps(model, steps, stage):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for i in range(steps):
        v1, v2 = views(seed=10 + i)
        out = model(v1, v2, stage)
        opt.zero_grad(set_to_none=True)
        model.backward(out["loss"])
        opt.step()
        losses.append(out["loss"].item())
    return losses


@pytest.mark.parametrize("stage", [1, 2])
def test_threads_match_the_loop_in_float64(stage, one_intra_op_thread):
    loop, threaded = model64(), model64()
    threaded.runner = StreamRunner(threads=3)
    v1, v2 = views()
    a, b = loop(v1, v2, stage), threaded(v1, v2, stage)
    assert a["loss"].item() == pytest.approx(b["loss"].item(), abs=1e-12)
    loop.backward(a["loss"])
    threaded.backward(b["loss"])
    grads = 0
    for (name, p), (_, p2) in zip(
        loop.named_parameters(), threaded.named_parameters(), strict=True
    ):
        assert (p.grad is None) == (p2.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, p2.grad, rtol=0, atol=1e-10, msg=name)
            grads += 1
    assert grads > 6 * 20  # every encoder of every stream got its gradient
    # the key encoders moved, and the queues hold the same keys
    for (name, t), (_, t2) in zip(
        loop.state_dict().items(), threaded.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(t, t2, rtol=0, atol=1e-10, msg=name)


def test_three_sgd_steps_match_in_float64(one_intra_op_thread):
    loop, threaded = model64(), model64()
    threaded.runner = StreamRunner(threads=2)
    assert train_steps(loop, 3, 1) == pytest.approx(train_steps(threaded, 3, 1), abs=1e-10)
    assert train_steps(loop, 3, 2) == pytest.approx(train_steps(threaded, 3, 2), abs=1e-10)
    for (name, t), (_, t2) in zip(
        loop.state_dict().items(), threaded.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(t, t2, rtol=0, atol=1e-10, msg=name)


def test_fused_momentum_update_is_the_per_module_update():
    torch.manual_seed(0)
    pairs = [(torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)) for _ in range(3)]
    copies = [(torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)) for _ in range(3)]
    for (q, k), (q2, k2) in zip(pairs, copies, strict=True):
        q2.load_state_dict(q.state_dict())
        k2.load_state_dict(k.state_dict())
        momentum_update(q2, k2, 0.9)
    momentum_update_all(pairs, 0.9)
    for (_, k), (_, k2) in zip(pairs, copies, strict=True):
        for p, p2 in zip(k.parameters(), k2.parameters(), strict=True):
            assert torch.equal(p, p2)


def test_bf16_encoders_keep_float32_heads_and_losses(one_intra_op_thread):
    torch.manual_seed(0)
    fp32 = PretrainModel(SIX, **TINY)
    bf16 = PretrainModel(SIX, **TINY)
    bf16.load_state_dict(fp32.state_dict())
    bf16.runner = StreamRunner(threads=2, precision="bf16")
    v1, v2 = views(dtype=torch.float32)
    a = fp32(v1, v2, 1, return_details=True)
    b = bf16(v1, v2, 1, return_details=True)
    for m in SIX:
        assert b["details"]["q"][m].dtype == torch.float32
        assert b["details"]["k"][m].dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa, and tau = 0.07 scales the similarities by 14: the
    # losses agree to a few per cent, not to float32's 1e-7
    assert b["loss"].item() == pytest.approx(a["loss"].item(), rel=5e-2)
    assert b["loss"].item() != a["loss"].item()
    bf16.backward(b["loss"])
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
        for p in bf16.branches["bone"].encoder_q.parameters()
    )


def test_stream_thread_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert stream_threads(0, 6, cpu, 1, 0.0) == 2  # auto: one per core
        assert stream_threads(0, 1, cpu, 1, 0.0) == 1  # never more than the streams
        assert stream_threads(0, 6, cpu, 1, 0.5) == 1  # dropout: one shared generator
        assert stream_threads(0, 6, cpu, 2, 0.0) == 1  # DDP
        assert stream_threads(0, 6, cuda, 1, 0.0) == 1
        assert stream_threads(3, 6, cpu, 1, 0.0) == 3  # an explicit count is kept
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ValueError, match="dropout"):
        stream_threads(2, 6, cpu, 1, 0.5)
    with pytest.raises(ValueError, match="only on the CPU in one process"):
        stream_threads(2, 6, cuda, 1, 0.0)
    with pytest.raises(ValueError, match="precision"):
        StreamRunner(precision="fp16")


def test_pretrain_with_threads_and_bf16_resumes_exactly(synth_cache, tmp_path):
    """A run with stream threads in bf16 learns like any other and resumes bit for bit."""
    cfg = PretrainConfig(
        hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=16, batch_size=4,
        epochs=2, cross_epoch=1, dropout=0.0, workers=0, lr=0.01, split="xsub",
        precision="bf16", stream_threads=2, modalities=("joint", "velocity", "bone"),
    )  # fmt: skip
    straight = pretrain(cfg, synth_cache, tmp_path / "straight", echo=None, tensorboard=False)
    pretrain(cfg.replace(epochs=1), synth_cache, tmp_path / "resumed", echo=None, tensorboard=False)
    resumed = pretrain(cfg, synth_cache, tmp_path / "resumed", resume=True, echo=None,
                       tensorboard=False)  # fmt: skip
    a = torch.load(straight["checkpoint"], weights_only=True)["model"]
    b = torch.load(resumed["checkpoint"], weights_only=True)["model"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert straight["metrics"]["stage"] == 2


def test_stream_threads_with_dropout_is_a_config_error(synth_cache, tmp_path):
    cfg = PretrainConfig(
        hidden_channels=4, hidden_dim=16, feature_dim=8, queue_size=16, batch_size=4,
        epochs=1, dropout=0.5, workers=0, split="xsub", stream_threads=2,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="stream_threads: 2 stream threads need dropout 0"):
        pretrain(cfg, synth_cache, tmp_path / "run", echo=None, tensorboard=False)
