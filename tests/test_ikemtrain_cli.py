"""The ``ikemtrain`` command line: help everywhere, describe, end-to-end runs, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from test_data import make_cache

from cli.ikemtrain_cli import main

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cli") / "c.h5", n=24, t=24, classes=3)


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "mini.toml"
    path.write_text(
        "[pretrain]\nepochs = 2\ncross_epoch = 1\nbatch_size = 4\nqueue_size = 8\n"
        "hidden_channels = 4\nhidden_dim = 16\nfeature_dim = 8\nworkers = 0\n"
        "[linear_eval]\nepochs = 3\nlr = 0.5\nsteps = [2]\nbatch_size = 4\neval_interval = 2\n"
    )
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_every_command_has_help() -> None:
    assert main.help
    for name, command in main.commands.items():
        assert command.help and len(command.help.strip()) > 20, name
        assert "Example: ikemtrain " + name in command.help, name
        result = invoke(name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


def test_describe_counts_the_paper_model() -> None:
    result = invoke("describe", "--modalities", "6")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[1].split()[-1] == "821,380"  # one backbone
    assert lines[-1].split() == ["total", "15,768,624"]
    assert "branches.angular_velocity.ikem_head" in result.output
    three = invoke("describe", "--modalities", "3").output
    assert "branches.acceleration" not in three and "branches.bone.encoder_q" in three


def test_pretrain_then_linear_eval(cache: Path, preset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke(
        "pretrain", cache, "--split", "xsub", "--preset", preset, "--modalities", "3",
        "--out", run, "--epochs", "1", "--device", "cpu", "--no-ikem", "--seed", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 1/1 stage 1 loss" in result.output
    cfg = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert cfg["epochs"] == 1
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["config"]
    assert saved["modalities"] == ["joint", "velocity", "bone"] and saved["ikem"] is False
    assert saved["seed"] == 3 and saved["batch_size"] == 4
    # resume extends the run to the preset's two epochs (stage 2 with EKEM only)
    result = invoke(
        "pretrain", cache, "--split", "xsub", "--preset", preset, "--modalities", "3",
        "--out", run, "--device", "cpu", "--no-ikem", "--seed", "3", "--resume",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 2/2 stage 2" in result.output and "epoch 1/2" not in result.output

    out = tmp_path / "le"
    result = invoke(
        "linear-eval", cache, "--split", "xsub", "--checkpoint", run, "--streams", "3s",
        "--preset", preset, "--out", out, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["stream"] == "3s" and len(results["history"]) == 3
    assert f"top-1 {results['top1_final']:.2f}" in result.output
    assert results["standardized"] is False  # the preset's default: the paper's probe

    result = invoke(
        "linear-eval", cache, "--split", "xsub", "--checkpoint", run, "--streams", "joint",
        "--preset", preset, "--out", tmp_path / "le-std", "--device", "cpu", "--standardize",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "le-std" / "results.json").read_text())["standardized"]

    result = invoke(
        "linear-eval", cache, "--split", "xsub", "--checkpoint", run, "--streams", "6s",
        "--preset", preset, "--out", out, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 1 and "needs acceleration" in result.output


def test_random_init_linear_eval(cache: Path, preset: Path, tmp_path: Path) -> None:
    result = invoke(
        "linear-eval", cache, "--split", "xview", "--random-init", "--modalities", "6",
        "--streams", "angular_velocity", "--preset", preset, "--out", tmp_path, "--epochs", "2",
        "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["random_init"] and len(results["history"]) == 2
    assert results["backbone"]["hidden_dim"] == 16


def test_usage_errors_exit_2(cache: Path, preset: Path, tmp_path: Path) -> None:
    common = ("--split", "xsub", "--out", tmp_path / "x")
    cases = [
        (("pretrain", cache, *common, "--preset", "nonesuch"), "unknown preset 'nonesuch'"),
        (("pretrain", cache, *common, "--modalities", "4"), "expected 3, 6, all or names"),
        (("pretrain", cache, *common, "--epochs", "0"), "0 is not in the range x>=1"),
        (("pretrain", cache, "--out", tmp_path), "Missing option '--split'"),
        (("pretrain", tmp_path / "none.h5", *common), "does not exist"),
        (("linear-eval", cache, *common), "exactly one of --checkpoint RUN or --random-init"),
        (("linear-eval", cache, *common, "--random-init", "--streams", "9s"), "unknown stream"),
        (
            ("linear-eval", cache, *common, "--checkpoint", tmp_path, "--random-init"),
            "exactly one",
        ),
        (("demo", cache.parent), "not empty"),
        (("pretrain", cache, *common, "--device", "gpu"), "expected auto, cpu, cuda or cuda:N"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    bad = tmp_path / "bad.toml"
    bad.write_text("[pretrain]\nqueue = 5\n")
    result = invoke("pretrain", cache, *common, "--preset", bad)
    assert result.exit_code == 2 and "unknown key 'queue'" in result.output


def test_library_errors_exit_1(cache: Path, preset: Path, tmp_path: Path) -> None:
    small = make_cache(tmp_path / "small.h5", n=8, t=24, modalities=("joint", "velocity"))
    base = ("--preset", preset, "--out", tmp_path / "o", "--device", "cpu")
    cases = [
        (("pretrain", cache, "--split", "xset", *base), "unknown split 'xset-train'"),
        (("pretrain", cache, "--split", "xsub", *base, "--resume"), "no checkpoint"),
        (("pretrain", cache, "--split", "xsub", *base, "--batch-size", "64"), "fewer than one"),
        (
            ("linear-eval", small, "--split", "xsub", "--checkpoint", tmp_path, *base),
            "no checkpoint at",
        ),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Error: " in result.output and message in result.output, (args, result.output)


def test_demo_runs_the_whole_pipeline(preset: Path, tmp_path: Path, monkeypatch) -> None:
    """The command prints what the library function ``run_demo`` returns (and writes)."""
    import ikemtrain.demo

    returned = []

    def spy(*args, **kwargs):
        returned.append(run_demo(*args, **kwargs))
        return returned[-1]

    run_demo = ikemtrain.demo.run_demo
    monkeypatch.setattr(ikemtrain.demo, "run_demo", spy)
    out = tmp_path / "demo"
    result = invoke(
        "demo", out, "--classes", "3", "--per-class", "12", "--preset", preset,
        "--workers", "0", "--device", "cpu", "--seed", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert returned == [json.loads((out / "summary.json").read_text())]
    assert returned[0]["seed"] == 2 and returned[0]["pretrain_config"]["seed"] == 2
    assert returned[0]["linear_eval_config"]["seed"] == 2 and returned[0]["split"] == "xview"
    assert sorted(p.name for p in out.iterdir()) == [
        "cache.h5", "le-pretrained", "le-random-(raw-BN)", "le-random-init", "pretrain", "raw",
        "run.json", "summary.json",
    ]  # fmt: skip
    record = json.loads((out / "run.json").read_text())
    assert record["kind"] == "demo" and record["status"] == "finished"
    assert record["argv"][:3] == ["ikemtrain", "demo", str(out)]
    assert json.loads((out / "pretrain" / "run.json").read_text())["kind"] == "pretrain"
    for step in ("[1/4] synth: 36 files", "[2/4] convert: 36 samples", "[3/4] pretrain", "[4/4]"):
        assert step in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_samples"] + summary["val_samples"] == 36
    for row in ("pretrained", "random_init", "random_init_raw_bn"):
        assert set(summary[row]) == {"top1_final", "top1_best", "top5_final", "top5_best"}
        assert f"{summary[row]['top1_final']:7.2f}" in result.output
    assert summary["pretrain_config"]["modalities"] == [
        "joint", "velocity", "acceleration", "bone", "rotation_axis", "angular_velocity",
    ]  # fmt: skip
    assert (out / "pretrain" / "checkpoint.pt").is_file()
    assert "chance: 33.33% top-1 (3 classes" in result.output
    base = summary["baseline"]  # the gain is over the stronger random row
    randoms = {"bn_estimated": "random_init", "raw_bn": "random_init_raw_bn"}
    strongest = max(summary[k]["top1_final"] for k in randoms.values())
    assert summary[randoms[base["strongest_row"]]]["top1_final"] == base["strongest"] == strongest
    assert base["gain"] == summary["pretrained"]["top1_final"] - strongest
    assert f"{base['gain']:+.2f} top-1" in result.output


def test_an_error_that_is_not_ikemtrain_s_own_is_a_bug_with_its_traceback(
    cache: Path, preset: Path, tmp_path: Path, monkeypatch
) -> None:
    """Only ``ikemtrain.errors.USER_ERRORS`` become one ``Error:`` line; a plain ValueError
    (or any other exception) escapes with its traceback."""
    import ikemtrain.engine

    def broken(*args, **kwargs):
        raise ValueError("an internal slip")

    monkeypatch.setattr(ikemtrain.engine, "pretrain", broken)
    result = CliRunner().invoke(
        main,
        ["pretrain", str(cache), "--split", "xsub", "--preset", str(preset), "--out",
         str(tmp_path / "run"), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, ValueError), result.output
    assert "Error:" not in result.output


def test_knn_eval_finetune_and_report(cache: Path, preset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke(
        "pretrain", cache, "--split", "xsub", "--preset", preset, "--modalities", "3",
        "--out", run, "--epochs", "1", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    result = invoke(
        "knn-eval", cache, "--split", "xsub", "--checkpoint", run, "--streams", "joint,3s",
        "--k", "1,3", "--preset", preset, "--out", tmp_path / "knn", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    knn = json.loads((tmp_path / "knn" / "results.json").read_text())
    assert list(knn["streams"]) == ["joint", "3s"] and knn["k"] == [1, 3]
    assert f"3s: top-1 k=1 {knn['streams']['3s']['top1']['1']:.2f}" in result.output

    ft = ("--preset", preset, "--batch-size", "4", "--workers", "0", "--device", "cpu")
    result = invoke(
        "finetune", cache, "--split", "xsub", "--checkpoint", run, "--streams", "3s",
        "--label-fraction", "0.5", "--out", tmp_path / "ft", "--epochs", "2", *ft,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 2/2 loss" in result.output and "samples/s" in result.output
    saved = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert saved["label_fraction"] == 0.5 and saved["subset_size"] == 6
    assert f"3s: top-1 {saved['top1_final']:.2f}" in result.output
    # --resume extends the run; the results cover every epoch
    result = invoke(
        "finetune", cache, "--split", "xsub", "--checkpoint", run, "--streams", "3s",
        "--label-fraction", "0.5", "--out", tmp_path / "ft", "--epochs", "3", *ft, "--resume",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 3/3" in result.output and "epoch 2/" not in result.output
    assert len(json.loads((tmp_path / "ft" / "results.json").read_text())["history"]) == 3

    result = invoke(
        "finetune", cache, "--split", "xsub", "--random-init", "--modalities", "3",
        "--streams", "bone", "--out", tmp_path / "scratch", "--epochs", "2", *ft,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scratch = json.loads((tmp_path / "scratch" / "results.json").read_text())
    assert scratch["random_init"] and scratch["backbone"]["hidden_dim"] == 16

    result = invoke("report", tmp_path, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert f"report: {tmp_path / 'report' / 'report.md'}" in result.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| pre-trained {run} | 3s |" in report
    assert f"| random init | bone | – | – | – | – | {scratch['top1_final']:.2f}" in report
