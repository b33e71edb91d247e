"""ikemtrain.report: Table 1 of the results, training curves, confusion matrix, embedding;
with and without matplotlib."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from protocol_runs import BACKBONE, THREE, pretrain_run
from test_data import make_cache

from ikemtrain.config import FinetuneConfig, LinearEvalConfig
from ikemtrain.engine import linear_eval
from ikemtrain.engine.finetune import finetune
from ikemtrain.engine.knn import knn_eval
from ikemtrain.engine.linear_eval import PREDICTIONS_NAME, pca_2d
from ikemtrain.errors import ReportError
from ikemtrain.report import (
    NO_MATPLOTLIB,
    confusion_matrix,
    matplotlib_figure,
    write_report,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LE = LinearEvalConfig(epochs=4, lr=0.5, steps=(3,), batch_size=4, eval_interval=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A pre-training run and every kind of result on one tiny cache."""
    d = tmp_path_factory.mktemp("report")
    cache = make_cache(d / "c.h5", n=24, t=24, classes=3)
    f = {"cache": cache, "run": pretrain_run(cache, d / "run")}
    for stream in ("joint", "3s"):
        f[f"le-{stream}"] = d / f"le-{stream}"
        linear_eval(LE, cache, f[f"le-{stream}"], "xsub", stream, checkpoint=f["run"],
                    device="cpu", echo=None)  # fmt: skip
    f["le-random"] = d / "le-random"
    linear_eval(LE, cache, f["le-random"], "xsub", "3s", random_init=True, backbone=BACKBONE,
                modalities=THREE, device="cpu", echo=None)  # fmt: skip
    f["knn"] = d / "knn"
    knn_eval(cache, f["knn"], "xsub", None, (1, 5), checkpoint=f["run"], echo=None)
    f["ft"] = d / "ft"
    cfg = FinetuneConfig(epochs=2, lr=0.05, batch_size=4, workers=0, label_fraction=0.5)
    finetune(cfg, cache, f["ft"], "xsub", "3s", checkpoint=f["run"], device="cpu", echo=None,
             tensorboard=False)  # fmt: skip
    return f


def no_matplotlib(monkeypatch) -> None:
    """Make ``import matplotlib`` fail as it does where it is not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


def cell(report: str, encoders: str, stream: str) -> list[str]:
    rows = [line for line in report.splitlines() if line.startswith(f"| {encoders}")]
    row = next(r for r in rows if r.split("|")[2].strip() == stream)
    return [c.strip() for c in row.strip("|").split("|")][2:]


def test_pca_2d_is_the_principal_projection() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g) * torch.tensor([5.0, 0.2, 2.0, 0.1, 0.1]) + 3.0
    xy = pca_2d(x).double()
    assert xy.shape == (200, 2)
    # the two largest-variance directions, in order: axes 0 then 2 of this data, each signed
    # so that its largest loading is positive
    centred = (x - x.mean(0)).double()
    for i, axis in enumerate((0, 2)):
        assert float(torch.corrcoef(torch.stack([xy[:, i], centred[:, axis]]))[0, 1]) > 0.99
    assert xy[:, 0].var() > xy[:, 1].var()
    assert pca_2d(torch.ones(1, 4)).abs().sum() == 0  # one sample: no component


def test_confusion_matrix_counts_pairs() -> None:
    labels, predicted = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(labels, predicted, 4)
    expect = np.zeros((4, 4), int)
    for t, p in zip(labels, predicted, strict=True):
        expect[t, p] += 1
    assert np.array_equal(cm, expect) and cm.sum() == 6


def test_linear_eval_saves_the_predictions_of_its_final_heads(runs) -> None:
    results = json.loads((runs["le-3s"] / "results.json").read_text())
    with np.load(runs["le-3s"] / PREDICTIONS_NAME) as f:
        labels, predicted, embedding, rows = (f[k] for k in ("labels", "predicted", "embedding",
                                                             "rows"))  # fmt: skip
    assert len(labels) == results["val_samples"] == 12 and embedding.shape == (12, 2)
    assert 100 * np.mean(labels == predicted) == pytest.approx(results["top1_final"])
    assert np.all(rows % 2 == 1)  # xsub-val: the odd rows of the test cache


def test_report_without_matplotlib(runs, tmp_path: Path, monkeypatch) -> None:
    no_matplotlib(monkeypatch)
    assert matplotlib_figure() is None
    out = tmp_path / "report"
    path = write_report([runs[k] for k in ("run", "le-joint", "le-3s", "le-random", "knn",
                                           "ft")], out)  # fmt: skip
    report = path.read_text()
    assert path == out / "report.md" and NO_MATPLOTLIB in report
    assert not list(out.glob("*.png")) and "![" not in report

    header = next(line for line in report.splitlines() if line.startswith("| encoders"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["encoders", "stream", "linear top-1", "linear best", "kNN k=1", "kNN k=5",
                       "FT 50 % top-1", "FT 50 % best"]  # fmt: skip
    # every number cites its source, and the source names its file, command and settings
    refs = {}
    for m in re.finditer(r"- \*\*\[(\d+)\]\*\* `([^`]+)/results.json`", report):
        refs[Path(m.group(2))] = m.group(1)
    assert set(refs) >= {runs[k] for k in ("le-joint", "le-3s", "le-random", "knn", "ft")}
    pre = f"pre-trained {runs['run']}"
    le3 = json.loads((runs["le-3s"] / "results.json").read_text())
    knn = json.loads((runs["knn"] / "results.json").read_text())
    ft = json.loads((runs["ft"] / "results.json").read_text())
    row = cell(report, pre, "3s")
    assert row[0] == f"{le3['top1_final']:.2f} [{refs[runs['le-3s']]}]"
    assert row[1] == f"{le3['top1_best']:.2f} [{refs[runs['le-3s']]}]"
    assert row[3] == f"{knn['streams']['3s']['top1']['5']:.2f} [{refs[runs['knn']]}]"
    assert row[4] == f"{ft['top1_final']:.2f} [{refs[runs['ft']]}]"
    assert cell(report, pre, "joint")[4] == "–"  # no fine-tuning of the joint stream
    assert cell(report, "random init", "3s")[0].endswith(f"[{refs[runs['le-random']]}]")
    # rows in the paper's order: modalities, then the fusion
    streams = [line.split("|")[2].strip() for line in report.splitlines()
               if line.startswith(f"| {pre}")]  # fmt: skip
    assert streams == ["joint", "velocity", "bone", "3s"]
    command = (
        f"`ikemtrain linear-eval {runs['cache']} --split xsub --checkpoint "
        f"{runs['run']}/checkpoint.pt --streams 3s --out {runs['le-3s']}`"
    )
    assert command in report and "settings: epochs=4, lr=0.5, steps=3" in report
    assert f"--random-init --modalities 3 --streams 3s --out {runs['le-random']}" in report
    assert f"--label-fraction 0.5 --out {runs['ft']}" in report
    assert f"`ikemtrain pretrain {runs['cache']} --split xsub --modalities 3" in report

    # the training run's table: the last loss and collapse signal per modality
    metrics = [json.loads(x) for x in (runs["run"] / "metrics.jsonl").read_text().splitlines()]
    last = metrics[-1]
    for m in THREE:
        line = next(x for x in report.splitlines() if x.startswith(f"| {m} | "))
        assert line.split("|")[2].strip() == f"{last['losses'][m]:.4g}"
        assert line.split("|")[3].strip() == f"{last['collapse'][m]['std']:.3g}"

    # the best linear evaluation's confusion matrix, read back from the CSV
    best_top1 = max(
        json.loads((runs[k] / "results.json").read_text())["top1_final"]
        for k in ("le-joint", "le-3s", "le-random")
    )
    csv = (out / "confusion.csv").read_text().splitlines()
    cm = np.array([[int(v) for v in line.split(",")[1:]] for line in csv[1:]])
    assert cm.sum() == 12 and 100 * np.trace(cm) / cm.sum() == pytest.approx(best_top1)
    assert f"final top-1 {best_top1:.2f}" in report


def test_a_folder_of_runs_is_searched(runs, tmp_path: Path, monkeypatch) -> None:
    no_matplotlib(monkeypatch)
    report = write_report([runs["run"].parent], tmp_path, figures=False).read_text()
    assert NO_MATPLOTLIB not in report  # figures were not asked for
    assert f"### {runs['run']} (pretrain)" in report and f"### {runs['ft']} (finetune)" in report
    assert report.count("- **[") == 7  # 5 results + the pre-training and fine-tuning runs


def test_unusable_inputs_are_clear_errors(runs, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=f"{empty}: no results.json or metrics.jsonl in it"):
        write_report([empty], tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    with pytest.raises(ReportError, match=f"{bad}/results.json: not readable as JSON"):
        write_report([bad], tmp_path / "out")
    (bad / "results.json").write_text(json.dumps({"protocol": "knn", "split": "xsub"}))
    with pytest.raises(ReportError, match="not an ikemtrain knn result \\(no 'streams', 'k'\\)"):
        write_report([bad], tmp_path / "out")


@pytest.mark.skipif(
    matplotlib_figure() is None, reason="matplotlib is not installed (the [train] extra brings it)"
)
def test_report_with_figures(runs, tmp_path: Path) -> None:
    report = write_report([runs["run"], runs["le-3s"], runs["ft"]], tmp_path).read_text()
    assert NO_MATPLOTLIB not in report
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"confusion.png", "embedding.png"} <= set(pngs)
    assert any(p.startswith("loss-") for p in pngs) and any(p.startswith("collapse-") for p in pngs)
    for name in pngs:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report


class StandInFigure:
    """Records what the report draws, where matplotlib is not installed; ``savefig`` writes
    a file so that the report's links can be checked."""

    drawn: list = []

    def __init__(self, **kwargs):
        from unittest.mock import MagicMock

        self.ax = MagicMock()
        StandInFigure.drawn.append(self)

    def add_subplot(self):
        return self.ax

    def colorbar(self, *args, **kwargs):
        pass

    def savefig(self, path, dpi):
        self.path = Path(path)
        self.path.write_bytes(b"stand-in")


def test_the_figures_drawn_and_linked(runs, tmp_path: Path, monkeypatch) -> None:
    """The figure path with a stand-in for matplotlib's Figure: what each figure plots."""
    import ikemtrain.report as report_module

    monkeypatch.setattr(report_module, "matplotlib_figure", lambda: StandInFigure)
    StandInFigure.drawn = []
    report = write_report([runs["run"], runs["le-3s"], runs["ft"]], tmp_path).read_text()
    figures = {f.path.name: f.ax for f in StandInFigure.drawn}
    for name in figures:
        assert (tmp_path / name).is_file() and f"]({name})" in report
    loss = next(ax for name, ax in figures.items() if name.startswith("loss-") and "run" in name)
    metrics = [json.loads(x) for x in (runs["run"] / "metrics.jsonl").read_text().splitlines()]
    plotted = {c.kwargs["label"]: c.args for c in loss.plot.call_args_list}
    assert list(plotted) == list(THREE)
    assert plotted["bone"] == ((1,), (metrics[0]["losses"]["bone"],))
    collapse = next(ax for name, ax in figures.items() if name.startswith("collapse-"))
    assert collapse.axhline.call_args.args == (0.1,)  # the collapse threshold
    # fine-tuning has one loss (no per-modality losses): its curve is the total loss
    ft_loss = next(ax for name, ax in figures.items() if name.startswith("loss-") and "ft" in name)
    assert [c.kwargs["label"] for c in ft_loss.plot.call_args_list] == ["loss"]
    cm = figures["confusion.png"].imshow.call_args.args[0]
    assert cm.shape == (3, 3) and np.allclose(cm.sum(1), 1.0)  # rows: fractions of a class
    xy = figures["embedding.png"].scatter.call_args.args
    with np.load(runs["le-3s"] / PREDICTIONS_NAME) as f:
        assert np.array_equal(xy[0], f["embedding"][:, 0])


def test_the_report_quotes_the_recorded_command(tmp_path: Path) -> None:
    """Issue 24.7: the command shown is run.json's argv through shlex.join; names made to look
    like shell syntax stay single quoted arguments, and copying the line runs nothing else."""
    import shlex
    import subprocess

    from click.testing import CliRunner

    from cli.ikemtrain_cli import main

    hostile = tmp_path / "x.h5; touch PWNED"
    cache = make_cache(hostile, n=24, t=24, classes=3)
    out = tmp_path / "knn $(touch PWNED2) `id`"
    argv = ["knn-eval", str(cache), "--split", "xsub", "--random-init", "--modalities", "3",
            "--streams", "joint", "--k", "1", "--out", str(out), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "run.json").read_text())["argv"]
    assert recorded == ["ikemtrain", *argv]
    result = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "r"),
                                       "--no-figures"], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = (tmp_path / "r" / "report.md").read_text()
    line = next(ln for ln in report.splitlines() if ln.startswith("  - command:"))
    assert "(recorded in run.json)" in line
    span = re.search(r"(`+) (.*) \1|(`+)(.*?)\3", line)
    shown = span.group(2) or span.group(4)
    assert shown == shlex.join(recorded)
    assert shlex.split(shown) == recorded  # a shell reads back exactly the recorded arguments
    # and a shell given the line runs one command, ``echo`` here, creating nothing
    subprocess.run(["sh", "-c", "echo " + shown.removeprefix("ikemtrain ")], cwd=tmp_path,
                   check=True, capture_output=True)  # fmt: skip
    assert not list(tmp_path.glob("PWNED*"))
    # the report's own run.json records its command too
    assert json.loads((tmp_path / "r" / "run.json").read_text())["kind"] == "report"


def test_the_gain_table_is_over_the_stronger_random_row():
    from ikemtrain.report import Result, gain_table

    def le(stream, top1, ref, **kind):
        return Result(Path(f"r{ref}"), {"protocol": "linear-eval", "stream": stream,
                                         "top1_final": top1, **kind}, ref)  # fmt: skip

    results = [
        le("6s", 76.72, 1, encoders="pretrain"),
        le("6s", 57.97, 2, encoders="random-init", bn_recalibrated=True),
        le("6s", 67.89, 3, encoders="random-init", bn_recalibrated=False),
        le("3s", 69.40, 4, encoders="pretrain"),
        le("3s", 61.00, 5, encoders="random-init", bn_recalibrated=True),
        le("joint", 56.25, 6, encoders="pretrain"),  # no random row: no gain claimed
        Result(
            Path("k"),
            {"protocol": "knn", "encoders": "pretrain", "streams": {"6s": {"top1": {"20": 60.0}}}},
            7,
        ),  # fmt: skip
        Result(
            Path("k2"),
            {
                "protocol": "knn",
                "encoders": "random-init",
                "bn_recalibrated": False,
                "streams": {"6s": {"top1": {"20": 62.5}}},
            },
            8,
        ),  # fmt: skip
    ]
    rows = gain_table(results)[2:]
    assert rows == [
        "| 6s | kNN k=20 | 60.00 [7] | 62.50 [8] (raw BN) | **-2.50** |",
        "| 3s | linear | 69.40 [4] | 61.00 [5] (BN re-estimated) | **+8.40** |",
        "| 6s | linear | 76.72 [1] | 67.89 [3] (raw BN) | **+8.83** |",
    ]
