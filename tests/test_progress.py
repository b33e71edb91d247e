"""Progress users can see (``ikemtrain.progress``): a bar with rate and ETA on a terminal, a
plain line every N steps elsewhere, in every long phase: pre-training's steps, the feature
passes of linear and kNN evaluation."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from test_data import make_cache

from ikemtrain.config import LinearEvalConfig, PretrainConfig
from ikemtrain.engine import linear_eval, pretrain
from ikemtrain.engine.knn import knn_eval
from ikemtrain.progress import Progress, format_duration, tracked

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_n_steps_with_rate_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("epoch 1/3", 20, stream=out, clock=clock) as bar:
        for _ in range(20):
            clock.now += 0.5  # 2 batches per second
            bar.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # every ceil(20 / 10) = 2 steps, the last included
    assert lines[0] == "epoch 1/3: 2/20 (10%), 2 batch/s, ETA 9 s"
    assert lines[4] == "epoch 1/3: 10/20 (50%), 2 batch/s, ETA 5 s"
    assert lines[-1] == "epoch 1/3: 20/20 (100%), 2 batch/s, 10 s"  # the time it took
    assert "\r" not in out.getvalue()


def test_every_and_a_total_that_is_not_a_multiple() -> None:
    out, clock = io.StringIO(), Clock()
    bar = Progress("features xview-train", 7, unit="batch", stream=out, every=3, clock=clock)
    for _ in range(7):
        clock.now += 2.0
        bar.update()
    bar.close()
    done = [int(re.search(r": (\d+)/7", line).group(1)) for line in out.getvalue().splitlines()]
    assert done == [3, 6, 7]


def test_a_terminal_gets_one_bar_redrawn_in_place_and_cleared() -> None:
    out, clock = Terminal(), Clock()
    bar = Progress("epoch 2/8", 40, stream=out, clock=clock)
    for _ in range(10):
        clock.now += 0.25
        bar.update()
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") == 10  # one redraw per 0.25 s step
    last = text.split("\r")[-1]
    assert last.startswith("epoch 2/8 [#####...............] 10/40 4 batch/s ETA 8 s")
    bar.close()
    assert out.getvalue().endswith("\r" + " " * len(last.rstrip()) + "\r")


def test_disabled_or_empty_shows_nothing_and_tracked_keeps_the_loader() -> None:
    out = io.StringIO()
    bar = Progress("x", 5, stream=out, enabled=False)
    bar.update(5)
    bar.close()
    Progress("x", 0, stream=out).update()
    assert out.getvalue() == ""

    class Loader(list):
        dataset = "the dataset"

    loader = tracked(Loader([1, 2, 3]), "epoch 1/1", enabled=False)
    assert len(loader) == 3 and loader.dataset == "the dataset" and list(loader) == [1, 2, 3]
    assert [format_duration(s) for s in (9.4, 125, 3725, float("nan"))] == [
        "9 s", "2:05", "1:02:05", "?",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("progress") / "c.h5", n=24, t=24, classes=3)


def _lines(text: str, label: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(label + ":")]


def test_pretraining_shows_its_steps_within_each_epoch(cache: Path, tmp_path: Path, capsys):
    cfg = PretrainConfig(
        modalities=("joint", "velocity"), split="xview", epochs=2, cross_epoch=1, batch_size=4,
        queue_size=8, hidden_channels=4, hidden_dim=16, feature_dim=8, workers=0,
    )  # fmt: skip
    pretrain(cfg, cache, tmp_path / "run", device="cpu", tensorboard=False)
    err = capsys.readouterr().err
    for epoch in (1, 2):
        lines = _lines(err, f"epoch {epoch}/2")
        assert lines, err
        assert re.fullmatch(r"epoch \d/2: (\d+)/\1 \(100%\), [\d.]+ batch/s, \d+ s", lines[-1])
        assert all("batch/s" in line for line in lines)
    quiet = tmp_path / "quiet"
    pretrain(cfg, cache, quiet, device="cpu", tensorboard=False, echo=None)
    assert capsys.readouterr().err == ""


def test_linear_and_knn_evaluation_show_their_feature_passes(cache: Path, tmp_path: Path, capsys):
    backbone = {"hidden_channels": 4, "hidden_dim": 16, "dropout": 0.0}
    encoders = {"random_init": True, "backbone": backbone, "modalities": ("joint",)}
    cfg = LinearEvalConfig(epochs=1, batch_size=4, eval_batch_size=4)
    linear_eval(cfg, cache, tmp_path / "le", "xview", "joint", device="cpu", **encoders)
    err = capsys.readouterr().err
    for label in ("BatchNorm statistics xview-train", "features xview-train",
                  "features xview-val"):  # fmt: skip
        assert _lines(err, label) and "batch/s" in _lines(err, label)[-1], (label, err)
    knn_eval(cache, tmp_path / "knn", "xview", ["joint"], ks=(1,), batch_size=4, device="cpu",
             **encoders)  # fmt: skip
    err = capsys.readouterr().err
    assert _lines(err, "features xview-train") and _lines(err, "features xview-val"), err


def test_skelmod_commands_show_plain_lines_off_a_terminal(tmp_path: Path) -> None:
    """``skelmod synth`` and ``convert`` go through the same helper: CliRunner's stderr is not
    a terminal, so each prints plain lines with a rate, the last at 100 %."""
    from click.testing import CliRunner

    from cli.skelmod_cli import main

    run = CliRunner().invoke
    synth = run(main, ["synth", "-o", str(tmp_path / "raw"), "--classes", "2", "--per-class", "3"])
    assert synth.exit_code == 0, synth.output
    assert re.search(r"^generating: 6/6 \(100%\), [\d.]+ file/s", synth.stderr, re.M), synth.stderr
    convert = run(main, ["convert", str(tmp_path / "raw"), "-o", str(tmp_path / "c.h5"),
                         "--workers", "1"])  # fmt: skip
    assert convert.exit_code == 0, convert.output
    lines = _lines(convert.stderr, "converting")
    assert lines and lines[-1].startswith("converting: 6/6 (100%)"), convert.stderr
