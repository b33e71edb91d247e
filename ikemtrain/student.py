"""The deployable three-stream student (docs/method.md, "Distillation";
"Backbone", "Linear evaluation").

A student file (``ikemtrain export RUN --out student.pt``) holds tensors and plain types only,
so ``torch.load(path, weights_only=True)`` reads it:

* ``kind = "student"``; ``config``: ``modalities`` (joint, velocity, bone), ``backbone``
  (:class:`~ikemtrain.nn.stgcn.STGCN` kwargs, with the joint ``layout``), the modality
  options the students were trained on (``t_target``: T of the cache, γ = frame_count /
  t_target; ``unit_axis``; ``bones``), ``dataset``, and, with a classifier, ``num_class``
  and ``classifier_modalities``;
* ``encoders``: ``{modality: STGCN state dict}`` (the students' encoders; the 768-d
  distillation heads are training-only and are not exported);
* ``classifier``: ``{modality: Linear state dict}`` from a linear evaluation of the student, or
  None.

:class:`Student` rebuilds it and runs it on joints ``(N, 3, T, V, M)``: velocity and bone are
computed with :func:`skelmod.compute_modalities` with the recorded options and layout. With
the paper's width and a 60-class classifier it has 3 × 836,800 = 2,510,400 parameters
(docs/method.md, "Backbone").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skelmod import limits
from skelmod.modalities import compute_modalities

from .config import check_backbone
from .engine.checkpoint import (
    CheckpointError,
    check_record,
    load_run,
    load_weights,
    save_checkpoint,
)
from .engine.encoders import ENCODER_PREFIX
from .engine.linear_eval import HEADS_NAME
from .errors import OutputExistsError
from .methods.pretrain import count_parameters
from .nn.stgcn import STGCN

__all__ = ["Student", "describe_student", "export_student"]

KIND = "student"
STUDENT_VERSION = 1


class Student(nn.Module):
    """Student encoders (and optionally linear heads) with the options that feed them.

    Args:
        modalities: the student streams, e.g. ``("joint", "velocity", "bone")``.
        backbone: STGCN kwargs. t_target, unit_axis, bones: the modality options (see the
            module docstring). num_class, classifier_modalities: the linear heads, if any
            (``classifier_modalities`` defaults to ``modalities``). dataset: for the record.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        backbone: Mapping[str, Any],
        *,
        t_target: int,
        unit_axis: bool = False,
        bones: str = "6v",
        num_class: int | None = None,
        classifier_modalities: Sequence[str] | None = None,
        dataset: str | None = None,
    ):
        super().__init__()
        _check_sizes(backbone, t_target, num_class)
        self.modalities = tuple(modalities)
        self.backbone = dict(backbone)
        self.t_target, self.unit_axis, self.bones = int(t_target), bool(unit_axis), bones
        self.dataset = dataset
        self.layout = self.backbone.get("layout", "ntu25")
        self.encoders = nn.ModuleDict({m: STGCN(**self.backbone) for m in self.modalities})
        self.num_class = num_class
        self.classifier: nn.ModuleDict | None = None
        if num_class is not None:
            heads = tuple(classifier_modalities or self.modalities)
            stray = [m for m in heads if m not in self.modalities]
            if stray:
                raise ValueError(f"classifier modalities {stray} are not student modalities")
            hidden = next(iter(self.encoders.values())).hidden_dim
            self.classifier = nn.ModuleDict({m: nn.Linear(hidden, num_class) for m in heads})
        self.requires_grad_(False)
        self.eval()

    def config(self) -> dict[str, Any]:
        """Plain settings that rebuild this student (with ``Student(**config)``)."""
        return {
            "modalities": list(self.modalities),
            "backbone": dict(self.backbone),
            "t_target": self.t_target,
            "unit_axis": self.unit_axis,
            "bones": self.bones,
            "num_class": self.num_class,
            "classifier_modalities": list(self.classifier) if self.classifier else None,
            "dataset": self.dataset,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the student file atomically (tensors and plain types only)."""
        return save_checkpoint(
            path,
            {
                "kind": KIND,
                "student_version": STUDENT_VERSION,
                "config": self.config(),
                "encoders": {m: _plain(enc.state_dict()) for m, enc in self.encoders.items()},
                "classifier": (
                    {m: _plain(h.state_dict()) for m, h in self.classifier.items()}
                    if self.classifier is not None
                    else None
                ),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Student:
        """Read a student file written by ``ikemtrain export`` (``weights_only=True``).

        Raises CheckpointError for a file that is not a student file or does not fit.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds for a corrupt or unsafe file
            raise CheckpointError(f"{path}: not a readable student file ({e})") from None
        if not isinstance(state, dict) or state.get("kind") != KIND:
            raise CheckpointError(f"{path}: not a student file (write one with ikemtrain export)")
        if state.get("student_version") != STUDENT_VERSION:
            raise CheckpointError(
                f"{path}: student file version {state.get('student_version')}, "
                f"this ikemtrain reads {STUDENT_VERSION}"
            )
        try:
            student = cls(**state["config"])
            encoders, classifier = state["encoders"], state["classifier"]
            weights = [(enc, encoders[m], f"encoders {m}") for m, enc in student.encoders.items()]
            if student.classifier is not None:
                weights += [
                    (h, classifier[m], f"classifier {m}") for m, h in student.classifier.items()
                ]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: student file does not fit ({e})") from None
        for module, found, name in weights:
            if not isinstance(found, Mapping):
                raise CheckpointError(f"{path}: student file {name}: not a dict of tensors")
            load_weights(module, found, path, file_key=lambda k, name=name: f"{name}.{k}")
        return student.to(device)

    def _inputs(self, joints, frame_count) -> dict[str, np.ndarray]:
        x = joints.detach().cpu().numpy() if isinstance(joints, torch.Tensor) else joints
        x = np.asarray(x)
        v = next(iter(self.encoders.values())).num_node
        if x.ndim != 5 or x.shape[3] != v:
            raise ValueError(
                f"joints must be (N, 3, T, V={v}, M) for the {self.layout} layout, "
                f"got shape {x.shape}"
            )
        if x.shape[2] != self.t_target:
            raise ValueError(
                f"joints have T={x.shape[2]} frames; this student was trained on T="
                f"{self.t_target} (resize with skelmod's normalisation first)"
            )
        if x.dtype not in (np.float32, np.float64):
            raise ValueError(f"joints must be float32 or float64, got {x.dtype}")
        _check_plausible(x, frame_count)
        return compute_modalities(
            x.astype(np.float32, copy=False),
            np.asarray(frame_count),
            t_target=self.t_target,
            modalities=self.modalities,
            unit_axis=self.unit_axis,
            bones=self.bones,
            layout=self.layout,
        )

    @torch.no_grad()
    def _run(self, inputs: Mapping[str, np.ndarray], batch_size: int) -> dict[str, torch.Tensor]:
        self.eval()
        dev = next(self.parameters()).device
        n = len(next(iter(inputs.values())))
        out: dict[str, list[torch.Tensor]] = {m: [] for m in self.modalities}
        for lo in range(0, n, batch_size):
            for m, enc in self.encoders.items():
                out[m].append(enc(torch.from_numpy(inputs[m][lo : lo + batch_size]).to(dev)))
        return {m: torch.cat(v).float().cpu() for m, v in out.items()}

    def features(self, joints, frame_count, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Pooled features ``{modality: (N, hidden_dim)}`` of joints ``(N, 3, T, V, M)``.

        ``joints``: normalised like the cache the student was trained on (centred, resized to
        ``t_target`` frames, yaw-aligned; e.g. a cache's ``joint`` dataset), numpy or torch.
        ``frame_count``: header frame counts, an int or ``(N,)`` (γ = frame_count / t_target).
        """
        feats = self._run(self._inputs(joints, frame_count), batch_size)
        return {m: f.numpy() for m, f in feats.items()}

    def logits(self, joints, frame_count, batch_size: int = 256) -> np.ndarray:
        """Class scores ``(N, num_class)``: the mean of the heads' logits
        (the linear-evaluation fusion)."""
        if self.classifier is None:
            raise RuntimeError(
                "this student was exported without a classifier, so it cannot predict; use "
                "features(), or export it again with classifier=LE_RUN (a linear evaluation "
                "of the student)"
            )
        feats = self._run(self._inputs(joints, frame_count), batch_size)
        with torch.no_grad():
            dev = next(self.classifier.parameters()).device
            scores = [head(feats[m].to(dev)) for m, head in self.classifier.items()]
            return torch.stack(scores).mean(0).cpu().numpy()

    def predict(self, joints, frame_count, batch_size: int = 256) -> np.ndarray:
        """Predicted labels ``(N,)`` int64 (0-based: action − 1). Needs a classifier."""
        return self.logits(joints, frame_count, batch_size).argmax(axis=1)


def _check_sizes(backbone: Mapping[str, Any], t_target: Any, num_class: Any) -> None:
    """ValueError for a size beyond the limits (:mod:`ikemtrain.config`,
    :mod:`skelmod.limits`), before a module of that size is built."""
    check_backbone(backbone)
    bounds = (
        ("t_target", t_target, limits.MAX_TARGET_FRAMES),
        ("num_class", 1 if num_class is None else num_class, limits.MAX_CLASSES),
    )
    for what, value, limit in bounds:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"{what} must be an integer in 1 .. {limit}, found {value!r}")


def _check_plausible(x: np.ndarray, frame_count: Any) -> None:
    """ValueError naming the first sample with non-finite or implausible joints (beyond
    :data:`skelmod.limits.MAX_COORDINATE_M`), or a frame count outside 1 .. MAX_RAW_FRAMES."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(x) <= limits.MAX_COORDINATE_M)  # NaN compares false: caught too
    if bad.any():
        i, c, t, v, m = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(
            f"joints[{i}] holds {float(x[i, c, t, v, m]):g} at frame {t + 1}, joint {v + 1}, "
            f"body {m + 1}: expected finite coordinates within {limits.MAX_COORDINATE_M:g} m"
        )
    fc = np.asarray(frame_count)
    if fc.dtype.kind not in "iu" or fc.ndim > 1 or (fc.ndim == 1 and len(fc) != len(x)):
        raise ValueError(
            f"frame_count must be an integer or ({len(x)},) integers, got {fc.dtype} {fc.shape}"
        )
    if fc.size and (fc.min() < 1 or fc.max() > limits.MAX_RAW_FRAMES):
        raise ValueError(
            f"frame_count must lie in 1 .. {limits.MAX_RAW_FRAMES}, found {fc.min()} .. {fc.max()}"
        )


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def export_student(
    run: str | os.PathLike,
    out: str | os.PathLike,
    classifier: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Student:
    """Pack the students of a distillation ``run`` (and a linear evaluation of them) into a
    student file at ``out``; return the :class:`Student`.

    ``classifier``: a ``ikemtrain linear-eval --checkpoint RUN`` output folder (or its
    ``heads.pt``); its heads must come from this run's students.

    Raises OutputExistsError: ``out`` exists and not ``overwrite``, or it is not a student
    file (``overwrite`` replaces only a student file, as a run folder only a run of its kind;
    both checked first, before the run is read); CheckpointError: ``run`` is not a student
    run, or ``classifier`` does not belong to it.
    """
    _check_student_out(Path(out), overwrite)
    path, state = load_run(run)
    if state["kind"] != "distill":
        raise CheckpointError(
            f"{path}: a {state['kind']} run; export needs a student run (`ikemtrain distill`)"
        )
    info = check_record(state, "student", path, {"backbone": Mapping, "modalities": (list, tuple)})
    num_class, heads, head_mods = None, None, None
    if classifier is not None:
        heads_path = Path(classifier)
        heads_path = heads_path / HEADS_NAME if heads_path.is_dir() else heads_path
        if not heads_path.is_file():
            raise CheckpointError(f"no linear-evaluation heads at {heads_path}")
        _, le = load_run(heads_path)
        if le["kind"] != "linear-eval":
            raise CheckpointError(f"{heads_path}: not linear-evaluation heads")
        if le.get("checkpoint") != str(path.resolve()):
            raise CheckpointError(
                f"{heads_path}: heads trained on {le.get('checkpoint')}, not on the students of "
                f"{path}"
            )
        num_class, head_mods = int(le["num_class"]), tuple(le["modalities"])
        heads = {
            m: {k[len(m) + 1 :]: v for k, v in le["heads"].items() if k.startswith(m + ".")}
            for m in head_mods
        }
    try:
        student = Student(
            info["modalities"],
            info["backbone"],
            t_target=info["t_target"],
            unit_axis=info["unit_axis"],
            bones=info["bones"],
            num_class=num_class,
            classifier_modalities=head_mods,
            dataset=info.get("dataset"),
        )
    except (KeyError, TypeError, ValueError) as e:  # a record of another shape
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(
            f"{path}: distill checkpoint 'student' record does not fit ({type(e).__name__}: {e})"
        ) from None
    template = ENCODER_PREFIX["distill"]
    for m, enc in student.encoders.items():
        prefix = template.format(m=m)
        weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
        load_weights(enc, weights, path, file_key=lambda k, prefix=prefix: prefix + k)
    if heads is not None:
        for m, head in student.classifier.items():
            load_weights(head, heads[m], heads_path, file_key=lambda k, m=m: f"heads {m}.{k}")
    student.save(out)
    return student


def _check_student_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless ``overwrite`` and it is a student file."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise OutputExistsError(f"{out} exists; set overwrite to replace it", param="overwrite")
    found = "a folder" if out.is_dir() else "not a student file"
    if out.is_file():
        try:
            state = torch.load(out, map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and state.get("kind") == KIND:
                return
            if isinstance(state, Mapping) and isinstance(state.get("kind"), str):
                found = f"a {state['kind']} file, not a student file"
        except Exception:  # any unreadable file is simply not a student file
            pass
    raise OutputExistsError(f"{out}: {found}; refusing to overwrite it (give another path)")


def describe_student(
    modalities: Sequence[str], backbone: Mapping[str, Any], num_class: int
) -> list[tuple[str, int]]:
    """Parameter counts of the deployed student: ``encoders.<m>``, ``classifier.<m>`` rows
    (they sum to the total), then ``"total"``. Built on the meta device (no weights)."""
    with torch.device("meta"):
        student = Student(modalities, backbone, t_target=1, num_class=num_class)
    rows = []
    for m in student.modalities:
        rows.append((f"encoders.{m}", count_parameters(student.encoders[m])))
        rows.append((f"classifier.{m}", count_parameters(student.classifier[m])))
    rows.append(("total", count_parameters(student)))
    return rows
