"""ST-GCN backbone exactly as the reference uses it (docs/method.md, "Backbone").

Input ``x`` is ``(N, C, T, V, M)`` (C coordinates or modality channels, T frames, V joints of
the ``layout``, 25 for the default ``ntu25``, M bodies); the output is the pooled feature ``f``
of shape ``(N, hidden_dim)``, the global average over (T', V) followed by the mean over the M
bodies (an all-zero absent body still contributes its bias-driven features: the
absent-body mean, kept). There is no ``fc`` inside:
heads live in :mod:`ikemtrain.nn.heads`.

Submodule names follow the reference (``data_bn``, ``st_gcn_networks``, ``edge_importance``,
``gcn.conv``, ``tcn``, ``residual``), so the authors' checkpoints map onto ours by a prefix rename.
"""

from __future__ import annotations

import torch
from torch import nn

from ikemtrain.nn.graph import layout_partition

__all__ = ["STGCN", "STGCNBlock", "ConvTemporalGraphical"]


class ConvTemporalGraphical(nn.Module):
    """Graph convolution: 1x1 conv to ``K*out`` channels, then ``sum_k h_k @ A_k``.

    ``x`` ``(n, in, t, v)`` and ``A`` ``(K, v, w)`` give ``(n, out, t, w)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=1)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        n, kc, t, v = h.shape
        h = h.view(n, self.kernel_size, kc // self.kernel_size, t, v)
        return torch.einsum("nkctv,kvw->nctw", h, A).contiguous()


class STGCNBlock(nn.Module):
    """One ``st_gcn`` block: ``ReLU(TCN(GCN(x, A)) + residual(x))``.

    TCN = BN -> ReLU -> Conv(t_kernel x 1, stride (stride, 1)) -> BN -> Dropout.
    ``residual`` is ``"none"``, ``"identity"`` or ``"conv"`` (1x1 conv with the stride, then BN).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_kernel: int,
        t_kernel: int = 9,
        stride: int = 1,
        dropout: float = 0.0,
        residual: bool = True,
    ):
        super().__init__()
        if t_kernel % 2 != 1:
            raise ValueError(f"t_kernel must be odd, got {t_kernel}")
        self.gcn = ConvTemporalGraphical(in_channels, out_channels, spatial_kernel)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(
                out_channels, out_channels, (t_kernel, 1), (stride, 1), ((t_kernel - 1) // 2, 0)
            ),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True),
        )
        if not residual:
            self.residual_kind = "none"
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual_kind = "identity"
            self.residual = None
        else:
            self.residual_kind = "conv"
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        if self.residual_kind == "none":
            return self.relu(self.tcn(self.gcn(x, A)))
        res = x if self.residual is None else self.residual(x)
        return self.relu(self.tcn(self.gcn(x, A)) + res)


class STGCN(nn.Module):
    """The ST-GCN encoder without its ``fc``: ``(N, C, T, V, M) -> (N, hidden_dim)``.

    Widths: ``hidden_channels`` (blocks 1-4), ``2*hidden_channels`` (5-7), ``4*hidden_channels``
    (8-9), ``hidden_dim`` (10); temporal strides 2 at blocks 5 and 8 (T 50 -> 25 -> 13).
    Block 1 has no residual and no dropout. At the paper's width (``hidden_channels=16``,
    ``hidden_dim=256``, the ``PretrainConfig`` defaults; ``dropout`` adds no parameters) it has
    821,380 parameters; the width and dropout are required, since the settings
    (:mod:`ikemtrain.config`) are their one home.
    ``A`` (the spatial partition of ``layout``'s graph, ``(3, V, V)``; ``ntu25`` by default)
    is a buffer; with ``edge_importance`` each block multiplies it by its own learnable
    ``(3, V, V)`` mask initialised to ones.
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        hidden_channels: int,
        hidden_dim: int,
        dropout: float,
        edge_importance: bool = True,
        t_kernel: int = 9,
        layout: str = "ntu25",
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("hidden_channels", hidden_channels),
            ("hidden_dim", hidden_dim),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.hidden_dim = hidden_dim
        self.layout = layout
        A = torch.tensor(layout_partition(layout), dtype=torch.float32)
        self.register_buffer("A", A)
        k, v = A.shape[0], A.shape[1]
        self.num_node = v
        self.data_bn = nn.BatchNorm1d(in_channels * v)
        h = hidden_channels
        # (in, out, stride, dropout, residual) of each block
        plan = [(in_channels, h, 1, 0.0, False)]
        plan += [(h, h, 1, dropout, True)] * 3
        plan += [(h, 2 * h, 2, dropout, True)] + [(2 * h, 2 * h, 1, dropout, True)] * 2
        plan += [(2 * h, 4 * h, 2, dropout, True), (4 * h, 4 * h, 1, dropout, True)]
        plan += [(4 * h, hidden_dim, 1, dropout, True)]
        self.st_gcn_networks = nn.ModuleList(
            STGCNBlock(i, o, k, t_kernel, s, d, r) for i, o, s, d, r in plan
        )
        if edge_importance:
            self.edge_importance = nn.ParameterList(
                nn.Parameter(torch.ones(A.shape)) for _ in self.st_gcn_networks
            )
        else:
            self.edge_importance = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature ``f`` ``(N, hidden_dim)`` of ``x`` ``(N, C, T, V, M)``."""
        if x.dim() != 5:
            raise ValueError(f"expected input (N, C, T, V, M), got shape {tuple(x.shape)}")
        n, c, t, v, m = x.shape
        if c != self.in_channels or v != self.num_node:
            raise ValueError(
                f"expected {self.in_channels} channels and {self.num_node} joints "
                f"(N, C, T, V, M), got shape {tuple(x.shape)}"
            )
        # data_bn over V*C channels, index v*C + c, shared by the M bodies
        x = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        for i, block in enumerate(self.st_gcn_networks):
            A = self.A if self.edge_importance is None else self.A * self.edge_importance[i]
            x = block(x, A)
        return x.mean(dim=(2, 3)).view(n, m, -1).mean(dim=1)
