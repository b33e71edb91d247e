"""Training engine: the pre-training loop, linear evaluation, checkpoints, DDP, logging.

``pretrain(cfg, cache, out_dir, resume=..., device=...)`` and
``distill(cfg, cache, teacher, out_dir, resume=..., device=...)`` and
``linear_eval(cfg, cache, out_dir, split, stream, checkpoint=... | random_init=True, ...)``
are the entry points; the CLI (``cli/ikemtrain_cli.py``) is a thin layer over them.
"""

from .distill import distill
from .linear_eval import linear_eval
from .loop import pretrain

__all__ = ["distill", "linear_eval", "pretrain"]
