"""Training engine: the training loop, the evaluation protocols, checkpoints, DDP, logging.

``pretrain(cfg, cache, out_dir, resume=..., device=...)``,
``distill(cfg, cache, teacher, out_dir, resume=..., device=...)``,
``linear_eval(cfg, cache, out_dir, split, stream, checkpoint=... | random_init=True, ...)``,
``knn_eval(cache, out_dir, split, streams, ks, checkpoint=... | random_init=True, ...)`` and
``finetune(cfg, cache, out_dir, split, stream, checkpoint=... | random_init=True, ...)``
are the entry points; the CLI (``cli/ikemtrain_cli.py``) is a thin layer over them. The
evaluation protocols share their encoders (:mod:`.encoders`) and the parts of linear
evaluation (:mod:`.linear_eval`).
"""

from .distill import distill
from .finetune import finetune
from .knn import knn_eval
from .linear_eval import linear_eval
from .loop import pretrain

__all__ = ["distill", "finetune", "knn_eval", "linear_eval", "pretrain"]
