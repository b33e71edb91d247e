"""ST-GCN backbone and heads: parameter counts and behaviour of
docs/method.md, "Backbone"."""

import pytest
import torch
from torch import nn

from ikemtrain.nn.heads import ProjectionHead
from ikemtrain.nn.init import weights_init
from ikemtrain.nn.stgcn import STGCN, ConvTemporalGraphical

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: The width and dropout of every config (hidden_channels 16, hidden_dim 256, dropout 0.5)
PAPER = {"hidden_channels": 16, "hidden_dim": 256, "dropout": 0.5}


def stgcn(**changes) -> STGCN:
    return STGCN(**{**PAPER, **changes})


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return stgcn()


def test_backbone_count_and_its_parts(backbone):
    assert n_params(backbone) == 821_380
    assert n_params(backbone.data_bn) == 150
    assert sum(p.numel() for p in backbone.edge_importance) == 18_750
    blocks = [n_params(b) for b in backbone.st_gcn_networks]
    assert blocks == [2_576, 3_200, 3_200, 3_200, 11_616, 12_544, 12_544, 45_760, 49_664, 658_176]


def test_counts_with_heads(backbone):
    assert n_params(backbone, nn.Linear(256, 60)) == 836_800
    assert n_params(backbone, nn.Linear(256, 120)) == 852_220
    assert n_params(backbone, ProjectionHead(256, 256, 128, False)) == 920_068
    assert n_params(ProjectionHead(256, 768, 768, False)) == 787_968
    assert n_params(ProjectionHead(256, 384, 384, False)) == 246_528
    assert n_params(backbone, ProjectionHead(256, 768, 768, False)) == 1_609_348
    assert 3 * n_params(backbone, nn.Linear(256, 60)) == 2_510_400  # the paper's "2.510M"


def test_without_edge_importance():
    assert n_params(stgcn(edge_importance=False)) == 821_380 - 18_750


def test_output_shape_and_temporal_strides(backbone):
    seen = []
    hooks = [
        b.register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape)))
        for b in backbone.st_gcn_networks
    ]
    try:
        f = backbone(torch.randn(2, 3, 50, 25, 2))
    finally:
        for h in hooks:
            h.remove()
    assert f.shape == (2, 256)
    assert [s[2] for s in seen] == [50] * 4 + [25] * 3 + [13] * 3
    assert [s[1] for s in seen] == [16] * 4 + [32] * 3 + [64] * 2 + [256]
    assert all(s[0] == 4 and s[3] == 25 for s in seen)  # N*M rows, V joints


def test_widths_scale_with_hidden_channels():
    net = stgcn(hidden_channels=4, hidden_dim=16)
    assert net(torch.randn(3, 3, 20, 25, 2)).shape == (3, 16)
    outs = [b.tcn[2].out_channels for b in net.st_gcn_networks]
    assert outs == [4] * 4 + [8] * 3 + [16] * 2 + [16]


def test_data_bn_channel_index_is_v_times_3_plus_c():
    net = stgcn(hidden_channels=4, hidden_dim=8).eval()
    captured = {}
    net.data_bn.register_forward_hook(lambda m, inp, out: captured.update(x=inp[0]))
    x = torch.randn(2, 3, 7, 25, 2)
    net(x)
    got = captured["x"]
    assert got.shape == (4, 75, 7)
    for n, c, t, v, m in [(0, 0, 0, 0, 0), (1, 2, 6, 24, 1), (1, 1, 3, 20, 0), (0, 2, 5, 7, 1)]:
        assert got[n * 2 + m, v * 3 + c, t] == x[n, c, t, v, m]


def test_graph_convolution_matches_a_loop():
    torch.manual_seed(1)
    gcn = ConvTemporalGraphical(2, 3, 3)
    x, A = torch.randn(2, 2, 4, 5), torch.randn(3, 5, 5)
    got = gcn(x, A)
    h = gcn.conv(x).view(2, 3, 3, 4, 5)  # (n, k, c, t, v)
    want = torch.zeros(2, 3, 4, 5)
    for k in range(3):
        for v in range(5):
            for w in range(5):
                want[:, :, :, w] += h[:, k, :, :, v] * A[k, v, w]
    torch.testing.assert_close(got, want)


def test_absent_zero_body_still_contributes_to_the_mean():
    torch.manual_seed(2)
    net = stgcn(hidden_channels=4, hidden_dim=8).eval()  # default torch init: biases non-zero
    body = torch.randn(2, 3, 10, 25, 1)
    zero = torch.zeros_like(body)
    f_zero = net(zero)
    assert f_zero.abs().max() > 1e-4
    f = net(torch.cat([body, zero], dim=4))
    torch.testing.assert_close(f, (net(body) + f_zero) / 2)


def test_edge_importance_is_ones_and_learns(backbone):
    assert all(torch.equal(e, torch.ones(3, 25, 25)) for e in backbone.edge_importance)
    net = stgcn(hidden_channels=4, hidden_dim=8)
    net(torch.randn(2, 3, 10, 25, 2)).sum().backward()
    assert all(e.grad is not None and e.grad.abs().sum() > 0 for e in net.edge_importance)


def test_weights_init():
    torch.manual_seed(3)
    net = weights_init(nn.Sequential(stgcn(), ProjectionHead(256, 256, 128, False)))
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    w = torch.cat([m.weight.flatten() for m in convs])
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3
    assert all(torch.all(m.bias == 0) for m in convs)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    g = torch.cat([m.weight for m in bns])
    assert abs(g.mean() - 1) < 5e-3 and 0.01 < g.std() < 0.03
    assert all(torch.all(m.bias == 0) for m in bns)
    assert all(torch.equal(e, torch.ones_like(e)) for e in net[0].edge_importance)


@pytest.mark.parametrize("shape", [(2, 3, 50, 25), (2, 4, 50, 25, 2), (2, 3, 50, 20, 2)])
def test_bad_input_shapes_are_clear_errors(backbone, shape):
    with pytest.raises(ValueError, match=r"\(N, C, T, V, M\)"):
        backbone(torch.zeros(shape))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_channels"):
        stgcn(hidden_channels=0)
    with pytest.raises(ValueError, match="t_kernel"):
        stgcn(t_kernel=4)
    with pytest.raises(ValueError, match="dropout"):
        stgcn(dropout=1.5)


def test_kinect_v1_backbone_has_the_20_joint_graph():
    """Only data_bn (2 * 3 * V) and the edge importance (10 * 3 * V * V) depend on V."""
    net = stgcn(layout="kinect-v1-20")
    assert n_params(net.data_bn) == 2 * 3 * 20
    assert sum(p.numel() for p in net.edge_importance) == 10 * 3 * 20 * 20
    assert n_params(net) == 821_380 - 150 - 18_750 + 120 + 12_000
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 50, 20, 1)).shape == (2, 256)
    with pytest.raises(ValueError, match="25 joints"):
        stgcn()(torch.randn(1, 3, 50, 20, 1))
