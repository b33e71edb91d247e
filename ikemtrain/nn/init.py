"""Weight initialisation of the reference processors (docs/method.md, "Backbone")."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["weights_init"]

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Linear)


@torch.no_grad()
def weights_init(module: nn.Module) -> nn.Module:
    """Initialise ``module`` and all its submodules in place, and return it.

    Conv1d/Conv2d/Linear: weight ~ N(0, 0.02), bias 0. BatchNorm: weight ~ N(1, 0.02), bias 0.
    Other parameters (edge importance: ones) are left alone. Call it once on the whole model;
    it already recurses, so ``model.apply(weights_init)`` is not needed (though harmless).
    """
    for m in module.modules():
        if isinstance(m, _CONV_LINEAR):
            m.weight.normal_(0.0, 0.02)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                m.weight.normal_(1.0, 0.02)
            if m.bias is not None:
                m.bias.zero_()
    return module
