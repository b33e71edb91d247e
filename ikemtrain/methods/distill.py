"""Teacher–student relational distillation into three students (docs/method.md, "Distillation").

* **Teacher**: one :class:`Stream` per teacher modality v (the six of a pre-training run): the
  query encoder ``f_v`` and its head ``g_v`` (``hidden_dim -> hidden_dim -> feature_dim``),
  loaded from the run's ``branches.<v>.encoder_q`` / ``head_q``, frozen, and always run under
  ``no_grad``. In eval mode by default (a consistent teacher, fixing the teacher mode bug); with
  ``reference_compat`` in train mode like the reference (dropout on, batch-statistics BN whose
  running statistics drift).
* **Students**: one :class:`Stream` per student modality u (joint, velocity, bone), a fresh
  ST-GCN with the teacher's backbone (or, with ``student_init="teacher"``, a copy of the
  teacher's encoder of modality u) and a fresh head ``hidden_dim -> D -> D``, where
  ``D = n_teacher_modalities * feature_dim`` (768 at the paper's width; never a literal).
* **Banks** (:class:`~ikemtrain.nn.queue.MemoryBank`, restarted from random as the reference does):
  ``Q_v`` ``(feature_dim, K)`` per teacher modality, filled with ``q_v``, and ``Q_T``
  ``(D, K)`` filled with ``t``; the similarities use the banks as they were before this
  batch's enqueue.

Per iteration, view 1 goes to the teacher and view 2 to the students (``Feeder_dual``):
``q_v = normalize(g_v(f_v(view1_v)))``, ``t = normalize([q_v]_v)``,
``s_u = normalize(student_u(view2_u))``, ``S^u = s_u . Q_T``, ``S^v = q_v . Q_v`` (for
Omega the bone bank under ``reference_compat``: the Ω bank bug), and
``L = sum_u L_u`` with ``L_u = mean_v l_{v->u}`` (``"implemented"``) or ``sum_v l_{v->u}``
(``"paper"``); ``l`` is :func:`ikemtrain.losses.distill_loss`. There are no key encoders and no
momentum update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ikemtrain.config import DISTILL_LOSS_FORMS, MODALITY_SETS, STUDENT_INITS
from ikemtrain.losses import distill_loss
from ikemtrain.nn.heads import ProjectionHead
from ikemtrain.nn.init import weights_init
from ikemtrain.nn.queue import MemoryBank
from ikemtrain.nn.stgcn import STGCN
from ikemtrain.nn.streams import StreamRunner

__all__ = ["STUDENT_INITS", "STUDENT_MODALITIES", "DistillModel", "Stream", "teacher_state_dict"]

#: The students: joint, velocity and bone (the 3s set of :mod:`ikemtrain.config`).
STUDENT_MODALITIES = MODALITY_SETS[3]
#: The Omega bank bug (``crossclr_6views.py:804``): the reference computes S^Omega with the bone
#: bank.
_COMPAT_SIMILARITY_BANK = {"angular_velocity": "bone"}


class Stream(nn.Module):
    """An encoder and its projection head: ``x (N, C, T, V, M) -> (f (N, hidden_dim),
    z = normalize(head(f)) (N, out))``. The teacher's are ``hidden -> hidden -> feature_dim``
    (the query side of a :class:`~ikemtrain.methods.branch.ModalityBranch`), the students'
    ``hidden -> D -> D``."""

    def __init__(
        self,
        backbone: Mapping[str, Any],
        head_hidden: int | None,
        out: int,
        head_bn: bool,
    ):
        super().__init__()
        self.encoder = STGCN(**dict(backbone))
        hidden = self.encoder.hidden_dim
        self.head = ProjectionHead(hidden, head_hidden or hidden, out, head_bn)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encoder(x)
        return f, F.normalize(self.head(f), dim=1)


def teacher_state_dict(
    pretrain_state: Mapping[str, torch.Tensor], modalities: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The teacher's weights in a pre-training state dict, renamed for ``DistillModel.teacher``:
    ``branches.<v>.encoder_q.* -> <v>.encoder.*`` and ``branches.<v>.head_q.* -> <v>.head.*``.

    Raises KeyError naming the first modality whose query encoder or head is absent.
    """
    out = {}
    for v in modalities:
        for src, dst in (("encoder_q", "encoder"), ("head_q", "head")):
            prefix = f"branches.{v}.{src}."
            part = {
                f"{v}.{dst}.{k[len(prefix) :]}": w
                for k, w in pretrain_state.items()
                if k.startswith(prefix)
            }
            if not part:
                raise KeyError(f"no weights under {prefix!r}")
            out.update(part)
    return out


def teacher_file_key(key: str) -> str:
    """A key of ``DistillModel.teacher`` -> the pre-training state dict's name for it (the
    inverse of :func:`teacher_state_dict`'s renaming), for messages."""
    v, dst, rest = key.split(".", 2)
    return f"branches.{v}.{dict(encoder='encoder_q', head='head_q').get(dst, dst)}.{rest}"


class DistillModel(nn.Module):
    """Frozen teacher, trainable students, teacher banks, and the distillation loss.

    Every argument is required: the paper's values (in brackets) are the defaults of
    :class:`~ikemtrain.config.DistillConfig` and, for the teacher's sizes and ``head_bn``, of
    the teacher's :class:`~ikemtrain.config.PretrainConfig`.

    Args:
        teacher_modalities: the teacher's modalities (six in the paper), the order of ``t``.
        student_modalities: the students' (joint, velocity, bone); each must be a teacher
            modality too, since view 2 carries the same modalities as view 1.
        backbone: :class:`~ikemtrain.nn.stgcn.STGCN` kwargs, shared by teacher and students.
        feature_dim: the teacher's embedding size (128).
        queue_size: K (32768). tau: temperature (0.07). topk: mined negatives j_v (1).
        context: the ``S^u * S^v`` block in the ``"implemented"`` form (True).
        loss_form: ``"implemented"`` (as the authors' code does it) or ``"paper"`` (eq. 7-8).
        reference_compat: replicate the Ω bank bug (Omega similarities from the bone bank) and
            the teacher mode bug (teacher in train mode).
        head_bn: BatchNorm in the heads (:class:`~ikemtrain.nn.heads.ProjectionHead`, the
            CPU presets' departure): the teacher's must be its pre-training's, and the
            students take the same.
        student_init: ``"random"`` (fresh students) or ``"teacher"`` (a departure:
            :meth:`load_teacher` also copies each student modality's teacher encoder into its
            student's encoder; the students' heads stay fresh, being of another size).
    """

    def __init__(
        self,
        teacher_modalities: Sequence[str],
        student_modalities: Sequence[str],
        *,
        backbone: Mapping[str, Any],
        feature_dim: int,
        queue_size: int,
        tau: float,
        topk: int,
        context: bool,
        loss_form: str,
        reference_compat: bool,
        head_bn: bool,
        student_init: str,
    ):
        super().__init__()
        teacher_modalities, student_modalities = (
            tuple(teacher_modalities),
            tuple(student_modalities),
        )
        if not teacher_modalities or not student_modalities:
            raise ValueError("the teacher and the students need at least one modality each")
        for names in (teacher_modalities, student_modalities):
            if len(set(names)) != len(names) or any(not n or "." in n for n in names):
                raise ValueError(f"modalities must be distinct valid names, got {names}")
        stray = [u for u in student_modalities if u not in teacher_modalities]
        if stray:
            raise ValueError(f"student modalities {stray} are not teacher modalities")
        if student_init not in STUDENT_INITS:
            raise ValueError(f"student_init must be one of {STUDENT_INITS}, got {student_init!r}")
        if loss_form not in DISTILL_LOSS_FORMS:
            raise ValueError(f"loss_form must be one of {DISTILL_LOSS_FORMS}, got {loss_form!r}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if not 1 <= topk <= queue_size:
            raise ValueError(f"topk must be in [1, queue_size={queue_size}], got {topk}")
        self.teacher_modalities = teacher_modalities
        self.student_modalities = student_modalities
        self.backbone = dict(backbone)
        self.feature_dim = feature_dim
        self.tau, self.topk, self.context = tau, topk, context
        self.loss_form = loss_form
        self.reference_compat = reference_compat
        self.student_init = student_init
        self.student_dim = len(teacher_modalities) * feature_dim  # no literal 768
        self.teacher = nn.ModuleDict(
            {v: Stream(self.backbone, None, feature_dim, head_bn) for v in teacher_modalities}
        )
        self.students = nn.ModuleDict(
            {
                u: Stream(self.backbone, self.student_dim, self.student_dim, head_bn)
                for u in student_modalities
            }
        )
        self.banks = nn.ModuleDict(
            {v: MemoryBank(feature_dim, queue_size) for v in teacher_modalities}
        )
        self.bank_teacher = MemoryBank(self.student_dim, queue_size)
        #: how the encoders of a step run (``ikemtrain.nn.streams``; set by the training loop)
        self.runner = StreamRunner()
        weights_init(self.teacher)
        weights_init(self.students)
        self.teacher.requires_grad_(False)
        compat = _COMPAT_SIMILARITY_BANK if reference_compat else {}
        #: the bank each teacher modality's similarities S^v are computed against
        self.similarity_bank = {
            v: compat[v] if compat.get(v) in self.banks else v for v in teacher_modalities
        }

    def load_teacher(
        self,
        pretrain_state: Mapping[str, torch.Tensor],
        load: Callable[[nn.Module, Mapping[str, Any], Callable[[str], str]], None] | None = None,
    ) -> None:
        """Load the teacher from a pre-training state dict (strict: every tensor must fit);
        with ``student_init="teacher"`` also start each student's encoder from it.

        ``load(module, weights, file_key)``: how to load (default: strict ``load_state_dict``;
        the engine passes one that checks every key and shape first and names the file).
        """
        weights = teacher_state_dict(pretrain_state, self.teacher_modalities)
        if load is None:
            self.teacher.load_state_dict(weights, strict=True)
        else:
            load(self.teacher, weights, teacher_file_key)
        if self.student_init == "teacher":
            for u, stream in self.students.items():
                stream.encoder.load_state_dict(self.teacher[u].encoder.state_dict(), strict=True)

    def train(self, mode: bool = True) -> DistillModel:
        """Students follow ``mode``; the teacher stays in eval mode unless ``reference_compat``."""
        super().train(mode)
        if not self.reference_compat:
            self.teacher.eval()
        return self

    def _check_view(self, view: Mapping[str, torch.Tensor], names, which: str) -> None:
        missing = [m for m in names if not isinstance(view, Mapping) or m not in view]
        if missing:
            raise ValueError(f"{which} lacks modalities {missing}; it must map {list(names)}")

    def forward(
        self,
        view1: Mapping[str, torch.Tensor],
        view2: Mapping[str, torch.Tensor],
        return_details: bool = False,
    ) -> dict[str, Any]:
        """One iteration's losses; enqueues the teacher's embeddings into the banks.

        ``view1`` maps every teacher modality and ``view2`` every student modality to
        ``(N, C, T, V, M)`` (extra entries are ignored). Returns ``"loss"`` (scalar with
        grad) and detached scalars ``"loss/<u>"`` (``L_u``) per student. With
        ``return_details``, ``"details"`` holds ``q``, ``t``, ``s`` and ``banks`` (the banks
        before this batch's enqueue, ``"teacher"`` for ``Q_T``).
        """
        self._check_view(view1, self.teacher_modalities, "view1")
        self._check_view(view2, self.student_modalities, "view2")
        self.runner.reset()
        with torch.no_grad():
            tf = self.runner.encode({v: st.encoder for v, st in self.teacher.items()}, view1)
            q = {v: F.normalize(st.head(tf[v]), dim=1) for v, st in self.teacher.items()}
            t = F.normalize(torch.cat([q[v] for v in self.teacher_modalities], dim=1), dim=1)
        sf = self.runner.encode({u: st.encoder for u, st in self.students.items()}, view2)
        s = {u: F.normalize(st.head(sf[u]), dim=1) for u, st in self.students.items()}
        banks = {v: bank.snapshot() for v, bank in self.banks.items()}
        bank_t = self.bank_teacher.snapshot()
        sim_v = {v: q[v] @ banks[self.similarity_bank[v]] for v in self.teacher_modalities}
        out: dict[str, Any] = {}
        per_student = {}
        for u in self.student_modalities:
            sim_u = s[u] @ bank_t
            terms = [
                distill_loss(
                    s[u], t, sim_u, sim_v[v], self.tau, self.topk, self.context, self.loss_form
                )
                for v in self.teacher_modalities
            ]
            total = sum(terms)
            per_student[u] = total / len(terms) if self.loss_form == "implemented" else total
        out["loss"] = sum(per_student.values())
        for u, value in per_student.items():
            out[f"loss/{u}"] = value.detach()
        for v, bank in self.banks.items():
            bank.enqueue(q[v])
        self.bank_teacher.enqueue(t)
        if return_details:
            out["details"] = {"q": q, "t": t, "s": s, "banks": {**banks, "teacher": bank_t}}
        return out

    @property
    def stream_count(self) -> int:
        """The most encoders one call of the runner runs (the teacher's)."""
        return max(len(self.teacher), len(self.students))

    def backward(self, loss: torch.Tensor) -> None:
        """Differentiate ``forward``'s ``"loss"`` (the students' encoders through the runner)."""
        self.runner.backward(loss)
