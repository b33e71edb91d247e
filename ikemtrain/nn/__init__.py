"""Building blocks: the NTU graph, ST-GCN, heads, memory bank, momentum update, init."""

from ikemtrain.nn.heads import ProjectionHead
from ikemtrain.nn.init import weights_init
from ikemtrain.nn.momentum import copy_params, momentum_update
from ikemtrain.nn.queue import MemoryBank
from ikemtrain.nn.stgcn import STGCN

__all__ = [
    "STGCN",
    "MemoryBank",
    "ProjectionHead",
    "copy_params",
    "momentum_update",
    "weights_init",
]
