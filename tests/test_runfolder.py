"""One run-folder rule (:mod:`ikemtrain.runfolder`): new / resume / overwrite, one writer at a
time, ``run.json``; and for every command that writes a folder, a folder of another kind, or one
another process holds, is refused in one line and left untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_data import make_cache

from cli.ikemtrain_cli import main
from ikemtrain.errors import CheckpointExistsError, OutputError, OutputExistsError
from ikemtrain.runfolder import (
    LOCK_NAME,
    RUN_JSON,
    folder_kind,
    invocation,
    open_run_folder,
    read_run_json,
)
from skelmod.cache import OutputBusyError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parent.parent

#: Every command that writes a folder.
KINDS = ("pretrain", "distill", "finetune", "linear-eval", "knn-eval", "report", "demo")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``folder``: its bytes and mtime (what "untouched" means)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(folder)) + "/": (b"", 0) for p in folder.rglob("*") if p.is_dir()}


def one_error(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    return errors[0]


# --- the library ------------------------------------------------------------------------------


def test_new_folder_records_the_run(tmp_path: Path) -> None:
    cache = make_cache(tmp_path / "c.h5", n=8, t=24)
    out = tmp_path / "a" / "run"  # parents are created
    with invocation(["ikemtrain", "pretrain", "x; touch y"], preset="tiny"):
        with open_run_folder(out, "pretrain", settings={"lr": 0.1}, cache=cache) as folder:
            assert (out / LOCK_NAME).is_file()
            running = read_run_json(out)
            assert running["status"] == "running" and running["ended"] is None
            (folder.path / "metrics.jsonl").write_text("")
    record = read_run_json(out)
    assert record["kind"] == "pretrain" and record["status"] == "finished"
    assert record["argv"] == ["ikemtrain", "pretrain", "x; touch y"]
    assert record["preset"] == "tiny" and record["settings"] == {"lr": 0.1}
    data = cache.read_bytes()
    assert record["cache"] == {
        "path": str(cache),
        "size": len(data),
        "blake2b": hashlib.blake2b(data, digest_size=32).hexdigest(),
    }
    from ikemtrain import __version__

    assert record["package_version"] == __version__
    assert record["git_commit"] is None or len(record["git_commit"]) == 40
    assert record["started"] <= record["ended"]
    assert not (out / LOCK_NAME).exists()  # released with the folder


def test_new_refuses_any_non_empty_folder(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    before = snapshot(user)
    with pytest.raises(OutputExistsError, match="is not empty: it holds files that are not"):
        open_run_folder(user, "linear-eval")
    with pytest.raises(OutputExistsError, match="refusing to overwrite it"):
        open_run_folder(user, "linear-eval", "overwrite")  # never deletes a stranger's files
    with pytest.raises(OutputExistsError, match="refusing to resume it"):
        open_run_folder(user, "pretrain", "resume")
    assert snapshot(user) == before


def test_new_run_of_the_same_kind_with_a_checkpoint_suggests_resume(tmp_path: Path) -> None:
    with open_run_folder(tmp_path / "r", "pretrain") as folder:
        (folder.path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(CheckpointExistsError, match="checkpoint.pt exists; resume to continue"):
        open_run_folder(tmp_path / "r", "pretrain")


def test_overwrite_replaces_only_a_run_of_the_same_kind(tmp_path: Path) -> None:
    out = tmp_path / "le"
    with open_run_folder(out, "linear-eval") as folder:
        (folder.path / "heads.pt").write_bytes(b"old")
        (folder.path / "sub").mkdir()
    before = snapshot(out)
    with pytest.raises(OutputExistsError) as e:  # the library names its parameter, not a flag
        open_run_folder(out, "linear-eval")
    assert str(e.value).endswith("give a new folder; set overwrite to replace it")
    assert e.value.param == "overwrite" and "--" not in str(e.value)
    for kind in ("knn-eval", "pretrain", "report", "demo"):
        with pytest.raises(OutputExistsError, match=f"holds a linear-eval run, not a {kind}"):
            open_run_folder(out, kind, "overwrite")
    assert snapshot(out) == before
    with open_run_folder(out, "linear-eval", "overwrite"):
        assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, RUN_JSON])
    assert sorted(p.name for p in out.iterdir()) == [RUN_JSON]


def test_folders_of_before_run_json_keep_their_kind(tmp_path: Path) -> None:
    knn = tmp_path / "knn"
    knn.mkdir()
    (knn / "results.json").write_text(json.dumps({"protocol": "knn"}))
    assert folder_kind(knn) == "knn-eval"
    with pytest.raises(OutputExistsError, match="holds a knn-eval run, not a linear-eval run"):
        open_run_folder(knn, "linear-eval", "overwrite")
    with open_run_folder(knn, "knn-eval", "overwrite"):
        pass
    assert not (knn / "results.json").exists()


def test_a_failed_new_run_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(RuntimeError), open_run_folder(out, "knn-eval"):
        raise RuntimeError("failed before writing a result")
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError), open_run_folder(empty, "knn-eval"):
        raise RuntimeError("failed")
    assert empty.is_dir() and not any(empty.iterdir())


def test_a_resume_touches_nothing_until_it_is_validated(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with open_run_folder(out, "pretrain") as folder:
        (folder.path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = snapshot(out)
    with pytest.raises(ValueError), open_run_folder(out, "pretrain", "resume"):
        raise ValueError("bad checkpoint")
    assert snapshot(out) == before
    with open_run_folder(out, "pretrain", "resume") as folder:
        folder.resumed()
    record = read_run_json(out)
    assert record["status"] == "finished" and len(record["resumed"]) == 1
    assert record["resumed"][0]["status"] == "finished"


def test_one_writer_per_folder(tmp_path: Path) -> None:
    out = tmp_path / "r"
    with open_run_folder(out, "pretrain"):
        before = snapshot(out)
        for mode in ("new", "resume", "overwrite"):
            with pytest.raises(OutputBusyError, match="another process is writing it"):
                open_run_folder(out, "pretrain", mode)
        assert snapshot(out) == before
    with open_run_folder(out, "pretrain", "overwrite"):
        pass


def test_an_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        open_run_folder(f, "report")
    assert f.read_text() == "x"


# --- every command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A cache, a preset, a six-modality pre-training run (the teacher) and one folder of each
    kind (real runs where cheap, else a folder with the ``run.json`` of that kind)."""
    d = tmp_path_factory.mktemp("runfolder")
    w = {"dir": d, "cache": make_cache(d / "c.h5", n=24, t=24, classes=3)}
    w["preset"] = d / "mini.toml"
    w["preset"].write_text(
        "[pretrain]\nepochs = 1\ncross_epoch = 1\nbatch_size = 4\nqueue_size = 8\n"
        "hidden_channels = 4\nhidden_dim = 16\nfeature_dim = 4\nworkers = 0\n"
        "[distill]\nepochs = 1\nbatch_size = 4\nqueue_size = 8\nworkers = 0\n"
        "[linear_eval]\nepochs = 1\nbatch_size = 4\n"
        "[finetune]\nepochs = 1\nbatch_size = 4\nworkers = 0\n"
    )
    w["pretrain"] = d / "pretrain"
    common = ("--preset", w["preset"], "--device", "cpu")
    result = invoke("pretrain", w["cache"], "--split", "xsub", "--out", w["pretrain"], *common)
    assert result.exit_code == 0, result.output
    w["linear-eval"] = d / "linear-eval"
    result = invoke(
        "linear-eval", w["cache"], "--split", "xsub", "--checkpoint", w["pretrain"],
        "--streams", "joint", "--out", w["linear-eval"], *common,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for kind in ("distill", "finetune", "knn-eval", "report", "demo"):
        w[kind] = d / kind
        with open_run_folder(w[kind], kind) as folder:
            (folder.path / "results.json").write_text("{}")
    return w


def command(kind: str, w: dict[str, Path], out: Path, *extra: str) -> list:
    """The command line of ``kind`` writing ``out``."""
    common = ["--preset", w["preset"], "--device", "cpu"]
    enc = ["--checkpoint", w["pretrain"], "--streams", "joint"]
    return {
        "pretrain": ["pretrain", w["cache"], "--split", "xsub", "--out", out, *common],
        "distill": ["distill", w["cache"], "--split", "xsub", "--teacher", w["pretrain"],
                    "--out", out, *common],
        "finetune": ["finetune", w["cache"], "--split", "xsub", *enc, "--out", out, *common],
        "linear-eval": ["linear-eval", w["cache"], "--split", "xsub", *enc, "--out", out,
                        *common],
        "knn-eval": ["knn-eval", w["cache"], "--split", "xsub", "--checkpoint", w["pretrain"],
                     "--streams", "joint", "--k", "1", "--out", out, "--preset", w["preset"],
                     "--device", "cpu"],
        "report": ["report", w["linear-eval"], "--out", out, "--no-figures"],
        "demo": ["demo", out, "--classes", "2", "--per-class", "4", "--preset", w["preset"],
                 "--device", "cpu"],
    }[kind] + list(extra)  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_another_kind_of_folder_is_refused_and_untouched(world, kind: str) -> None:
    other = "linear-eval" if kind != "linear-eval" else "pretrain"
    target = world[other]
    before = snapshot(target)
    for extra in ((), ("--overwrite",)):
        result = invoke(*command(kind, world, target, *extra))
        assert result.exit_code == 2, result.output
        line = one_error(result.output)
        assert str(target) in line and f"a {other} run" in line, line
    assert snapshot(target) == before


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_another_process_writes_is_refused(world, kind: str) -> None:
    target = world["dir"] / f"busy-{kind}"
    with open_run_folder(target, kind):
        before = snapshot(target)
        result = invoke(*command(kind, world, target))
        assert result.exit_code == 1, result.output
        assert "another process is writing it" in one_error(result.output)
        assert snapshot(target) == before


def test_two_processes_one_folder(world) -> None:
    """A real second process: it holds the folder, the command line is refused."""
    target = world["dir"] / "held"
    code = textwrap.dedent(
        f"""
        import sys, time
        from ikemtrain.runfolder import open_run_folder
        with open_run_folder({str(target)!r}, "pretrain"):
            print("held", flush=True)
            sys.stdin.read()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        for extra in ((), ("--resume",), ("--overwrite",)):
            result = invoke(*command("pretrain", world, target, *extra))
            assert result.exit_code == 1, result.output
            assert "another process is writing it" in one_error(result.output)
        assert not (target / "checkpoint.pt").exists()
    finally:
        proc.communicate("")
    assert proc.returncode == 0
    assert read_run_json(target)["status"] == "finished"


def test_evaluations_refuse_their_own_kind_without_overwrite(world) -> None:
    """What lost a result silently before: a second evaluation into the same folder."""
    target = world["linear-eval"]
    before = snapshot(target)
    result = invoke(*command("linear-eval", world, target))
    assert result.exit_code == 2
    message = one_error(result.output)
    assert "give a new folder; set overwrite to replace it (--overwrite)" in message
    assert snapshot(target) == before


def test_overwrite_reruns_into_the_same_folder(world) -> None:
    out = world["dir"] / "knn-twice"
    for extra in ((), ("--overwrite",)):
        result = invoke(*command("knn-eval", world, out, *extra))
        assert result.exit_code == 0, result.output
    record = read_run_json(out)
    assert record["kind"] == "knn-eval" and record["argv"][-1] == "--overwrite"
    assert record["settings"]["k"] == [1] and record["cache"]["path"] == str(world["cache"])
    assert sorted(p.name for p in out.iterdir()) == ["results.json", RUN_JSON]


def _resume_copy(world, name: str, **changes) -> Path:
    """A copy of the pre-training run whose checkpoint has ``changes``."""
    run = world["dir"] / name
    run.mkdir()
    for p in world["pretrain"].iterdir():
        if p.is_file():
            (run / p.name).write_bytes(p.read_bytes())
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**state, **changes}, run / "checkpoint.pt")
    return run


@pytest.mark.parametrize("epoch", [0, -3, 10**9])
def test_a_failed_resume_keeps_everything(world, epoch: int) -> None:
    run = _resume_copy(world, f"bad-epoch-{epoch}", epoch=epoch)
    before = snapshot(run)
    assert (run / "metrics.jsonl").stat().st_size > 0
    result = invoke(*command("pretrain", world, run, "--resume"))
    assert result.exit_code == 1, result.output
    assert f"checkpoint 'epoch' is {epoch}, expected 1 .. epochs (1)" in one_error(result.output)
    assert snapshot(run) == before


def test_a_resume_is_recorded(world) -> None:
    run = _resume_copy(world, "extend")
    result = invoke(*command("pretrain", world, run, "--resume", "--epochs", "2"))
    assert result.exit_code == 0, result.output
    record = read_run_json(run)
    assert record["status"] == "finished" and record["argv"][1] == "pretrain"
    assert record["resumed"][0]["argv"][-2:] == ["--epochs", "2"]
    assert record["resumed"][0]["status"] == "finished"
    epochs = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
