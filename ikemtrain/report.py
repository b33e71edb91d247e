"""``ikemtrain report``: one page to look at, from training runs and evaluation results.

Inputs are folders that ``ikemtrain`` wrote: training runs (``pretrain``, ``distill``,
``finetune``: ``metrics.jsonl`` and ``checkpoint.pt``) and evaluation results
(``linear-eval``, ``knn-eval``, ``finetune``: ``results.json``). A folder that is neither is
searched below for them.

``OUT/report.md`` holds:

1. **Table 1** in the layout of the paper's: one row per stream (each modality, ``3s``,
   ``6s``, the student's) and encoders (a pre-training run, a student run, random init);
   columns: linear evaluation final and best top-1, kNN top-1 for each ``k``, fine-tuning
   final and best top-1 for each label fraction. Each number cites its source ``[n]``.
2. **Training runs**: per run, the last epoch's loss and collapse signal per modality
   (:mod:`ikemtrain.collapse`) and the epochs where a head collapsed; figures of the loss and
   of the collapse signal per modality over the epochs.
3. **The best linear evaluation** (highest final top-1): its confusion matrix on the
   validation split (``confusion.csv``, and a figure) and a 2-D PCA embedding of its
   validation features coloured by class (from the run's ``predictions.npz``).
4. **Sources**: for every ``[n]``, the file, the equivalent command and every setting it ran
   with (the settings of the pre-training behind it too).

Figures are PNG files beside ``report.md``, drawn with matplotlib, which the ``train``
extra installs (``pip install 'ikem-toolkit[train]'``); without it the report is written with
its tables only and says so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skelmod.layout import MODALITY_NAMES
from skelmod.limits import MAX_CLASSES

from .baseline import random_baseline
from .collapse import COLLAPSE_STD
from .config import MODALITY_SETS, STUDENT_STREAMS
from .engine.checkpoint import CHECKPOINT_NAME, load_run
from .engine.linear_eval import PREDICTIONS_NAME
from .errors import CheckpointError, OutputError, ReportError
from .runfolder import RUN_JSON, open_run_folder, read_run_json

__all__ = ["collect", "confusion_matrix", "matplotlib_figure", "table1", "write_report"]

RESULTS_NAME = "results.json"
METRICS_NAME = "metrics.jsonl"
REPORT_NAME = "report.md"
NO_MATPLOTLIB = (
    "Figures not drawn: matplotlib is not installed (`pip install 'ikem-toolkit[train]'`); "
    "the tables below hold the same numbers."
)
#: Row order of Table 1: the modalities, the fusions, the student's streams.
STREAM_ORDER = (*MODALITY_NAMES, "3s", "6s", *(s for s in STUDENT_STREAMS if s != "3s"))
_GROUP_ORDER = {"pretrain": 0, "distill": 1, "finetune": 2, "random-init": 3}


@dataclass
class Result:
    """One ``results.json``: its folder, its content and its citation number."""

    path: Path
    data: dict[str, Any]
    ref: int = 0

    @property
    def protocol(self) -> str:
        return self.data.get("protocol", "linear-eval")  # older linear evaluations


@dataclass
class Run:
    """One training run's folder, its per-epoch records and its checkpoint's settings."""

    path: Path
    records: list[dict[str, Any]]
    state: dict[str, Any] = field(default_factory=dict)
    ref: int = 0

    @property
    def kind(self) -> str:
        return self.state.get("kind", "pretrain")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# --- what the report reads, checked (issue 24.5): every field, its type and range ------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _percent(v: Any) -> bool:
    return _is_number(v) and 0.0 <= v <= 100.0


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _opt(check):
    return lambda v: v is None or check(v)


def _dict(v: Any) -> bool:
    return isinstance(v, dict)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _ks(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_is_int(k) and k >= 1 for k in v)


def _knn_streams(v: Any) -> bool:
    def table(t: Any) -> bool:
        return isinstance(t, dict) and all(
            isinstance(k, str) and k.isdigit() and _percent(x) for k, x in t.items()
        )

    return (
        isinstance(v, dict)
        and bool(v)
        and all(
            isinstance(name, str) and isinstance(s, dict) and table(s.get("top1"))
            and table(s.get("top5", {}))
            for name, s in v.items()
        )
    )  # fmt: skip


#: Each field of ``results.json`` the report reads: its check and what it must be.
_FIELDS: dict[str, tuple[Any, str]] = {
    "protocol": (_str, "a string"),
    "split": (_str, "a string"),
    "stream": (_str, "a string"),
    "top1_final": (_percent, "a percentage (0 .. 100)"),
    "top1_best": (_percent, "a percentage (0 .. 100)"),
    "top5_final": (_percent, "a percentage (0 .. 100)"),
    "top5_best": (_percent, "a percentage (0 .. 100)"),
    "label_fraction": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "num_class": (lambda v: _is_int(v) and 1 <= v <= MAX_CLASSES, f"an integer 1 .. {MAX_CLASSES}"),
    "streams": (_knn_streams, "{stream: {top1: {k: percentage}, top5: ...}}"),
    "k": (_ks, "a list of positive integers"),
    "train_samples": (lambda v: _is_int(v) and v >= 0, "a count"),
    "val_samples": (lambda v: _is_int(v) and v >= 0, "a count"),
    "cache": (_str, "a string"),
    "checkpoint": (_opt(_str), "a string or null"),
    "encoders": (_str, "a string"),
    "random_init": (lambda v: isinstance(v, bool), "true or false"),
    "standardized": (lambda v: isinstance(v, bool), "true or false"),
    "bn_recalibrated": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "modalities": (_str_list, "a list of strings"),
    "config": (_opt(_dict), "an object"),
    "pretrain_config": (_opt(_dict), "an object"),
    "distill_config": (_opt(_dict), "an object"),
    "backbone": (_opt(_dict), "an object"),
}


def check_fields(path: Path, data: dict[str, Any], required: Sequence[str] = ()) -> None:
    """ReportError naming ``path`` and the first field of ``data`` that is missing (of
    ``required``) or not what :data:`_FIELDS` says."""
    missing = [k for k in required if k not in data]
    if missing:
        raise ReportError(f"{path}: no {', '.join(map(repr, missing))}")
    for key, (check, what) in _FIELDS.items():
        if key in data and not check(data[key]):
            raise ReportError(f"{path}: {key!r} must be {what}, found {_show(data[key])}")


def _show(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_result(folder: Path) -> Result:
    path = folder / RESULTS_NAME
    data = _read_json(path)
    protocol = data.get("protocol", "linear-eval")
    needed = {
        "linear-eval": ("stream", "top1_final", "top1_best", "split"),
        "finetune": ("stream", "top1_final", "top1_best", "label_fraction", "split"),
        "knn": ("streams", "k", "split"),
    }.get(protocol) if isinstance(protocol, str) else None  # fmt: skip
    if needed is None:
        raise ReportError(f"{path}: unknown protocol {_show(protocol)}")
    missing = [k for k in needed if k not in data]
    if missing:
        raise ReportError(
            f"{path}: not an ikemtrain {protocol} result (no {', '.join(map(repr, missing))})"
        )
    check_fields(path, data)
    return Result(folder, data)


def _read_run(folder: Path) -> Run:
    path = folder / METRICS_NAME
    records = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ReportError(f"{path}: line {i} is not JSON") from None
        if not isinstance(record, dict) or not _is_int(record.get("epoch")):
            raise ReportError(f"{path}: line {i} is not an epoch record (no integer 'epoch')")
        for key in ("loss", "lr", "top1"):
            if key in record and not (_is_number(record[key]) or record[key] is None):
                raise ReportError(
                    f"{path}: line {i}: {key!r} must be a number, found {_show(record[key])}"
                )
        for key in ("losses", "collapse"):
            if key in record and not isinstance(record[key], dict):
                raise ReportError(
                    f"{path}: line {i}: {key!r} must be an object, found {_show(record[key])}"
                )
        records.append(record)
    state: dict[str, Any] = {}
    if (folder / CHECKPOINT_NAME).exists():
        try:
            _, full = load_run(folder)
        except CheckpointError as e:
            raise ReportError(str(e)) from None
        keep = ("kind", "config", "cache", "layout", "num_class", "teacher_run", "finetune")
        state = {k: full[k] for k in keep if k in full}
    return Run(folder, records, state)


def collect(paths: Sequence[str | os.PathLike]) -> tuple[list[Result], list[Run]]:
    """The results and training runs in ``paths`` (folders; searched below where a folder is
    neither), each once, in the order given.

    Raises ReportError for a path that holds neither, or an unreadable file."""
    results: dict[Path, Result] = {}
    runs: dict[Path, Run] = {}
    for given in map(Path, paths):
        if not given.is_dir():
            raise ReportError(f"{given}: not a folder (give run or result folders)")
        folders = [given]
        if not any((given / n).is_file() for n in (RESULTS_NAME, METRICS_NAME)):
            found = {p.parent for n in (RESULTS_NAME, METRICS_NAME) for p in given.rglob(n)}
            folders = sorted(found)
        if not folders:
            raise ReportError(
                f"{given}: no {RESULTS_NAME} or {METRICS_NAME} in it or below (expected folders "
                "written by ikemtrain pretrain, distill, finetune, linear-eval or knn-eval)"
            )
        for folder in folders:
            key = folder.resolve()
            if (folder / RESULTS_NAME).is_file() and key not in results:
                results[key] = _read_result(folder)
            if (folder / METRICS_NAME).is_file() and key not in runs:
                runs[key] = _read_run(folder)
    for n, item in enumerate([*results.values(), *runs.values()], 1):
        item.ref = n
    return list(results.values()), list(runs.values())


# --- Table 1 ----------------------------------------------------------------------------------


def _run_name(checkpoint: str | None) -> str:
    if checkpoint is None:
        return ""
    path = Path(checkpoint)
    return str(path.parent if path.name == CHECKPOINT_NAME else path)


def _group(data: dict[str, Any]) -> tuple[int, str]:
    kind = data.get("encoders", "random-init" if data.get("random_init") else "pretrain")
    label = {
        "pretrain": "pre-trained",
        "distill": "student",
        "finetune": "fine-tuned",
        "random-init": "random init",
    }.get(kind, kind)
    if kind == "random-init" and "bn_recalibrated" in data:  # the two random baselines
        label += ", BN re-estimated" if data["bn_recalibrated"] else ", raw BN"
    name = _run_name(data.get("checkpoint"))
    return _GROUP_ORDER.get(kind, 9), f"{label} {name}".strip()


def _row_label(stream: str, kind: str) -> str:
    return "3s-Student" if (stream == "3s" and kind == "student") else stream


def _fmt(value: float, ref: int) -> str:
    return f"{value:.2f} [{ref}]"


def table1(results: Sequence[Result]) -> list[str]:
    """Markdown lines of the paper's Table 1 layout over ``results`` (see the module
    docstring); cells hold ``value [ref]``, several results of one cell are joined by ``;``."""
    cells: dict[tuple, dict[str, list[str]]] = {}
    columns: dict[str, tuple] = {}

    def put(group, stream, column, order, text):
        columns.setdefault(column, order)
        cells.setdefault((*group, stream), {}).setdefault(column, []).append(text)

    for r in results:
        d, group = r.data, _group(r.data)
        if r.protocol == "linear-eval":
            put(group, d["stream"], "linear top-1", (0, 0), _fmt(d["top1_final"], r.ref))
            put(group, d["stream"], "linear best", (0, 1), _fmt(d["top1_best"], r.ref))
        elif r.protocol == "knn":
            for stream, s in d["streams"].items():
                for k, value in s["top1"].items():
                    put(group, stream, f"kNN k={k}", (1, int(k)), _fmt(value, r.ref))
        else:
            pct = f"{100 * d['label_fraction']:g} %"
            f = d["label_fraction"]
            put(group, d["stream"], f"FT {pct} top-1", (2, f, 0), _fmt(d["top1_final"], r.ref))
            put(group, d["stream"], f"FT {pct} best", (2, f, 1), _fmt(d["top1_best"], r.ref))
    if not cells:
        return ["No evaluation results were given."]
    cols = sorted(columns, key=columns.get)
    order = {s: i for i, s in enumerate(STREAM_ORDER)}
    lines = [
        "| encoders | stream | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for key in sorted(cells, key=lambda k: (k[0], k[1], order.get(k[2], len(order)), k[2])):
        _, label, stream = key
        row = cells[key]
        kind = label.split()[0]
        values = ["; ".join(row.get(c, [])) or "–" for c in cols]
        lines.append(f"| {label} | {_row_label(stream, kind)} | " + " | ".join(values) + " |")
    return lines


def gain_table(results: Sequence[Result]) -> list[str]:
    """Markdown lines: per stream and probe, each pre-trained result's gain over the *stronger*
    random-init result of that stream and probe (:func:`ikemtrain.baseline.random_baseline`;
    none when the results hold no random row of that stream)."""
    pre: dict[tuple[str, str], list[tuple[float, int]]] = {}
    rand: dict[tuple[str, str], dict[bool, tuple[float, int]]] = {}
    for r in results:
        d = r.data
        if r.protocol == "linear-eval":
            scores = {("linear", d["stream"]): d["top1_final"]}
        elif r.protocol == "knn":
            scores = {(f"kNN k={k}", st): v for st, s in d["streams"].items()
                      for k, v in s["top1"].items()}  # fmt: skip
        else:
            continue
        kind = d.get("encoders", "random-init" if d.get("random_init") else "pretrain")
        for key, value in scores.items():
            if kind == "random-init":
                rand.setdefault(key, {})[bool(d.get("bn_recalibrated", True))] = (value, r.ref)
            elif kind == "pretrain":
                pre.setdefault(key, []).append((value, r.ref))
    lines = []
    for key in sorted(set(pre) & set(rand)):
        probe, stream = key
        fair, raw = rand[key].get(True), rand[key].get(False)
        base = random_baseline(0.0, fair[0] if fair else -1.0, raw[0] if raw else -1.0)
        ref = (raw if base["strongest_row"] == "raw_bn" else fair)[1]
        row = "raw BN" if base["strongest_row"] == "raw_bn" else "BN re-estimated"
        for value, vref in pre[key]:
            lines.append(f"| {stream} | {probe} | {value:.2f} [{vref}] | "
                         f"{base['strongest']:.2f} [{ref}] ({row}) | "
                         f"**{value - base['strongest']:+.2f}** |")  # fmt: skip
    if not lines:
        return []
    return ["| stream | probe | pre-trained | stronger random | gain |", "|---|---|---|---|---|",
            *lines]  # fmt: skip


# --- training runs ----------------------------------------------------------------------------


def _series(records: Sequence[dict[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    """``{modality: [(epoch, value)]}`` of ``records[i][key][m]`` (``key`` "losses"), or of
    ``records[i]["collapse"][m]["std"]`` for ``key`` "collapse"."""
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        for m, v in (rec.get(key) or {}).items():
            value = v.get("std") if key == "collapse" and isinstance(v, dict) else v
            if isinstance(value, (int, float)):
                out.setdefault(m, []).append((rec["epoch"], float(value)))
    return out


def _run_table(run: Run) -> list[str]:
    records = run.records
    if not records:
        return ["(no epoch finished yet)"]
    losses, collapse = _series(records, "losses"), _series(records, "collapse")
    last, n = records[-1], len(records)
    lines = [
        f"{n} epoch{'s' if n != 1 else ''}; last: loss {last.get('loss', float('nan')):.4g}, "
        f"lr {last.get('lr', float('nan')):.4g}"
        + (f", val top-1 {last['top1']:.2f}" if "top1" in last else "")
        + f" [{run.ref}]",
        "",
    ]
    names = list(dict.fromkeys([*losses, *collapse]))
    if names:
        lines += [
            "| modality | last loss | last collapse std | lowest std (epoch) | collapsed epochs |",
            "|---|---|---|---|---|",
        ]
        for m in names:
            loss = f"{losses[m][-1][1]:.4g}" if m in losses else "–"
            stds = collapse.get(m, [])
            low = min(stds, key=lambda p: p[1]) if stds else None
            bad = [e for e, s in stds if s < COLLAPSE_STD]
            lines.append(
                f"| {m} | {loss} | {f'{stds[-1][1]:.3g}' if stds else '–'} | "
                f"{f'{low[1]:.3g} ({low[0]})' if low else '–'} | "
                f"{', '.join(map(str, bad)) or 'none'} |"
            )
    return lines


# --- the best linear evaluation ---------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_class: int) -> np.ndarray:
    """``(num_class, num_class)`` int64 counts: row = true class, column = predicted."""
    cm = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return cm


def _predictions(result: Result) -> dict[str, np.ndarray] | None:
    path = result.path / PREDICTIONS_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in ("labels", "predicted", "embedding")}
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise ReportError(f"{path}: not readable predictions ({e})") from None
    num_class = result.data.get("num_class")
    if not _is_int(num_class):
        raise ReportError(f"{result.path / RESULTS_NAME}: no integer 'num_class' for {path}")
    for key in ("labels", "predicted"):
        a = data[key]
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ReportError(f"{path}: {key!r} must be 1-D integers, found {a.dtype} {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= num_class):
            raise ReportError(
                f"{path}: {key!r} must lie in 0 .. {num_class - 1} (num_class), found "
                f"{a.min()} .. {a.max()}"
            )
    n = len(data["labels"])
    emb = data["embedding"]
    if len(data["predicted"]) != n or emb.shape != (n, 2):
        raise ReportError(f"{path}: labels, predicted and embedding differ in length")
    if emb.dtype.kind != "f" or not np.isfinite(emb).all():
        raise ReportError(f"{path}: 'embedding' must hold finite floats, found {emb.dtype}")
    return data


# --- figures (matplotlib, optional) -----------------------------------------------------------


def matplotlib_figure():
    """matplotlib's ``Figure`` class, or None when matplotlib is not installed. Figures are
    drawn without pyplot (no global state, no display needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _wrap(title: str, width: int = 56) -> str:
    """A figure title broken into lines that fit the figure (long run paths otherwise overflow)."""
    return textwrap.fill(title, width=width, break_long_words=True, break_on_hyphens=False)


def _line_figure(Figure, series, title: str, ylabel: str, path: Path, hline=None) -> None:
    fig = Figure(figsize=(6.4, 4.0), tight_layout=True)
    ax = fig.add_subplot()
    for name, points in series.items():
        epochs, values = zip(*points, strict=True)
        ax.plot(epochs, values, marker="o", markersize=3, label=name)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1, label=f"collapse < {hline}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(title))
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def _confusion_figure(Figure, cm: np.ndarray, classes: np.ndarray, title: str, path: Path):
    fig = Figure(figsize=(6.0, 5.2), tight_layout=True)
    ax = fig.add_subplot()
    rows = cm.sum(1, keepdims=True)
    im = ax.imshow(cm / np.maximum(rows, 1), vmin=0.0, vmax=1.0, cmap="Blues")
    ticks = np.arange(len(classes))
    step = max(1, len(classes) // 20)
    ax.set_xticks(ticks[::step], [str(c) for c in classes[::step]], fontsize="small")
    ax.set_yticks(ticks[::step], [str(c) for c in classes[::step]], fontsize="small")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(_wrap(title), fontsize="medium")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.savefig(path, dpi=100)


def _embedding_figure(Figure, xy: np.ndarray, labels: np.ndarray, title: str, path: Path):
    fig = Figure(figsize=(6.0, 5.2), tight_layout=True)
    ax = fig.add_subplot()
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab20" if labels.max() < 20 else "hsv",
                    s=8)  # fmt: skip
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(_wrap(title), fontsize="medium")
    fig.colorbar(sc, ax=ax, label="class")
    fig.savefig(path, dpi=100)


# --- sources ----------------------------------------------------------------------------------


def _settings(config: dict[str, Any] | None) -> str:
    if not config:
        return "–"
    return ", ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in config.items()
    )


def _encoder_args(d: dict[str, Any]) -> list[str]:
    if d.get("checkpoint"):
        return ["--checkpoint", str(d["checkpoint"])]
    mods = d.get("modalities") or []
    n = 3 if set(mods) <= set(MODALITY_SETS[3]) else 6
    flags = ["--random-init", "--modalities", str(n)]
    if d.get("protocol") != "finetune" and d.get("bn_recalibrated") is False:
        flags.append("--no-bn-recalibration")
    return flags


def _command(result: Result) -> list[str]:
    """The arguments of a command equivalent to the one that wrote ``result`` (for folders
    written before ``run.json``, which records the real one)."""
    d, out = result.data, str(result.path)
    head = [str(d.get("cache", "CACHE")), "--split", str(d["split"]), *_encoder_args(d)]
    if result.protocol == "knn":
        streams = ",".join(map(str, d["streams"]))
        k = ",".join(map(str, d["k"]))
        return ["ikemtrain", "knn-eval", *head, "--streams", streams, "--k", k, "--out", out]
    if result.protocol == "finetune":
        fraction = f"{d['label_fraction']:g}"
        return ["ikemtrain", "finetune", *head, "--streams", str(d["stream"]),
                "--label-fraction", fraction, "--out", out]  # fmt: skip
    std = ["--standardize"] if d.get("standardized") else []
    return ["ikemtrain", "linear-eval", *head, "--streams", str(d["stream"]), *std, "--out", out]


def _run_command(run: Run) -> list[str]:
    """Like :func:`_command`, for a training run."""
    s, cfg = run.state, run.state.get("config") or {}
    cache, split = str(s.get("cache", "CACHE")), str(cfg.get("split", "SPLIT"))
    if run.kind == "distill":
        teacher = str(s.get("teacher_run", "TEACHER"))
        return ["ikemtrain", "distill", cache, "--split", split, "--teacher", teacher,
                "--out", str(run.path)]  # fmt: skip
    mods = cfg.get("modalities") or []
    n = ["--modalities", str(len(mods))] if mods else []
    return ["ikemtrain", "pretrain", cache, "--split", split, *n, "--out", str(run.path)]


def _recorded_argv(folder: Path) -> list[str] | None:
    """The command line ``run.json`` recorded for ``folder`` (None: no usable record)."""
    try:
        record = read_run_json(folder)
    except OutputError:
        return None
    argv = record.get("argv") if record else None
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        return argv
    return None


def _code(text: str) -> str:
    """``text`` as a markdown code span, whatever backticks it holds."""
    fence = "`" * (max((len(m) for m in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def command_line(folder: Path, equivalent: list[str]) -> str:
    """How the report shows the command behind ``folder``: the recorded ``argv``, else the
    ``equivalent`` one, each argument quoted for a POSIX shell (:func:`shlex.join`), so a name
    like ``x.h5; touch y`` is shown as one quoted argument, never as two commands."""
    argv = _recorded_argv(folder)
    if argv is not None:
        return f"{_code(shlex.join(argv))} (recorded in {RUN_JSON})"
    return f"{_code(shlex.join(equivalent))} (equivalent; the settings are those it ran with)"


def _sources(results: Sequence[Result], runs: Sequence[Run]) -> list[str]:
    by_folder = {r.path.resolve(): r.ref for r in results}
    lines = []
    for item in sorted([*results, *runs], key=lambda x: x.ref):
        if isinstance(item, Result):
            d = item.data
            lines += [
                f"- **[{item.ref}]** {_code(str(item.path / RESULTS_NAME))}: {item.protocol}, "
                f"{d['split']}, {d.get('train_samples', '?')} train / "
                f"{d.get('val_samples', '?')} val samples",
                f"  - command: {command_line(item.path, _command(item))}",
                f"  - settings: {_settings(d.get('config'))}",
            ]
            if d.get("pretrain_config"):
                lines.append(f"  - encoders' pre-training: {_settings(d['pretrain_config'])}")
            if d.get("distill_config"):
                lines.append(f"  - students' distillation: {_settings(d['distill_config'])}")
            if d.get("backbone"):
                lines.append(f"  - backbone: {_settings(d['backbone'])}")
            continue
        same = by_folder.get(item.path.resolve())
        command = f"as [{same}]" if same else command_line(item.path, _run_command(item))
        lines += [
            f"- **[{item.ref}]** {_code(str(item.path / METRICS_NAME))}: {item.kind} run",
            f"  - command: {command}",
            f"  - settings: {_settings(item.state.get('config'))}",
        ]
    return lines


# --- the page ---------------------------------------------------------------------------------


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name).strip("-") or "run"


def write_report(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    figures: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/report.md`` (and its figures and ``confusion.csv``) for the runs and
    results in ``paths``; return its path. ``figures=False`` (or no matplotlib) writes the
    tables only. ``out_dir`` must be new unless ``overwrite`` (a previous report there is
    replaced; :mod:`ikemtrain.runfolder`). Raises ReportError for unusable inputs,
    OutputError for ``out_dir``."""
    results, runs = collect(paths)
    settings = {"runs": [str(p) for p in paths], "figures": figures}
    mode = "overwrite" if overwrite else "new"
    with open_run_folder(out_dir, "report", mode, settings=settings) as folder:
        return _write_report(results, runs, folder.path, figures)


def _write_report(results: list[Result], runs: list[Run], out: Path, figures: bool) -> Path:
    Figure = matplotlib_figure() if figures else None
    lines = ["# ikemtrain report", ""]
    if figures and Figure is None:
        lines += [NO_MATPLOTLIB, ""]
    lines += [
        "## Table 1: top-1 accuracy (%) on the validation split",
        "",
        "Layout of the paper's Table 1: a row per stream and encoders. *top-1* is the final "
        "epoch's (the honest number), *best* the best evaluated epoch's (the reference's, "
        "model selection on the test set). kNN: weighted kNN (Wu et al. 2018, T 0.07) on frozen "
        "features; FT: fine-tuning on that fraction of the training labels. [n]: the source "
        "below.",
        "",
        *table1(results),
        "",
    ]
    gains = gain_table(results)
    if gains:
        lines += [
            "## Gain over the stronger random encoder",
            "",
            "Each pre-trained result against the better of the two random-init rows of the same "
            "stream and probe (BatchNorm statistics re-estimated on the training split, or the "
            "untrained encoder's raw ones): the bar a pre-training run has to clear.",
            "",
            *gains,
            "",
        ]

    if runs:
        lines += ["## Training runs", ""]
    for i, run in enumerate(runs, 1):
        lines += [f"### {run.path} ({run.kind})", "", *_run_table(run), ""]
        if Figure is None:
            continue
        slug = f"{i}-{_slug(run.path)}"
        losses = _series(run.records, "losses") or {
            "loss": [(r["epoch"], r["loss"]) for r in run.records if "loss" in r]
        }
        if any(losses.values()):
            name = f"loss-{slug}.png"
            _line_figure(Figure, losses, f"loss per modality: {run.path}", "loss", out / name)
            lines += [f"![loss per modality]({name})", ""]
        collapse = _series(run.records, "collapse")
        if collapse:
            name = f"collapse-{slug}.png"
            _line_figure(
                Figure,
                collapse,
                f"collapse signal: {run.path}",
                "std of the normalised queries across the batch (x sqrt d)",
                out / name,
                hline=COLLAPSE_STD,
            )
            lines += [f"![collapse signal per modality]({name})", ""]

    linear = [r for r in results if r.protocol == "linear-eval"]
    with_predictions = [(r, p) for r in linear if (p := _predictions(r)) is not None]
    if with_predictions:
        best, pred = max(with_predictions, key=lambda rp: rp[0].data["top1_final"])
        d = best.data
        cm = confusion_matrix(pred["labels"], pred["predicted"], int(d["num_class"]))
        classes = np.flatnonzero(cm.sum(0) + cm.sum(1))
        sub = cm[np.ix_(classes, classes)]
        header = "true \\ predicted," + ",".join(map(str, classes))
        body = [f"{c}," + ",".join(map(str, row)) for c, row in zip(classes, sub, strict=True)]
        (out / "confusion.csv").write_text("\n".join([header, *body]) + "\n")
        what = f"{_group(d)[1]}, {d['stream']}, {d['split']}-val, final top-1 {d['top1_final']:.2f}"
        lines += [
            "## The best linear evaluation",
            "",
            f"{what} [{best.ref}]: confusion matrix (rows: true class, columns: predicted, "
            "classes present only) in `confusion.csv`.",
            "",
        ]
        if Figure is not None:
            _confusion_figure(Figure, sub, classes, f"confusion: {what}", out / "confusion.png")
            _embedding_figure(
                Figure,
                pred["embedding"],
                pred["labels"],
                f"PCA of the validation features: {what}",
                out / "embedding.png",
            )
            lines += [
                "![confusion matrix](confusion.png)",
                "",
                "Its validation features, projected on their two principal components "
                "(the stream's modalities concatenated), coloured by class:",
                "",
                "![embedding](embedding.png)",
                "",
            ]
    elif linear:
        lines += [
            "No linear evaluation here saved its predictions (`predictions.npz`, written since "
            "this version): no confusion matrix or embedding.",
            "",
        ]

    lines += ["## Sources", "", *_sources(results, runs), ""]
    path = out / REPORT_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path
