"""Pre-training methods built from :mod:`ikemtrain.nn` blocks."""

from ikemtrain.methods.branch import ModalityBranch
from ikemtrain.methods.pretrain import PretrainModel, describe

__all__ = ["ModalityBranch", "PretrainModel", "describe"]
