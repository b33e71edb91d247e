"""Every user error of ``ikemtrain`` is one line, no traceback, the right exit code.

Table-driven: each row is a bad input to ``pretrain``, ``linear-eval``, ``knn-eval``, ``finetune``,
``report``, ``describe`` or ``demo``,
the exit code (1 a failed run, 2 usage) and the texts the message must hold: what is wrong and
the file or field it is about. Runs in-process with ``catch_exceptions=False``, so an error
that is not one of the project's own types fails the test with its traceback; one case also
runs the real console command in a subprocess. The skelmod half lives in
``test_user_errors_skelmod.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_checkpoint import malicious_checkpoint
from test_data import make_cache

from cli.ikemtrain_cli import main
from skelmod.cache import CacheWriter

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs, built once."""
    d = tmp_path_factory.mktemp("user-errors")
    f: dict[str, Path] = {"dir": d}
    f["cache"] = make_cache(d / "c.h5", n=24, t=24, classes=3)
    f["nucla"] = make_cache(d / "nucla.h5", n=12, t=24, classes=3, layout="kinect-v1-20")
    f["text"] = d / "notes.h5"
    f["text"].write_text("not hdf5\n")
    with h5py.File(d / "plain.h5", "w") as h:
        h["x"] = np.zeros(3)
    f["plain"] = d / "plain.h5"
    f["future"] = d / "future.h5"
    f["future"].write_bytes(f["cache"].read_bytes())
    with h5py.File(f["future"], "a") as h:
        h.attrs["schema_version"] = 99
    f["nan"] = d / "nan.h5"
    f["nan"].write_bytes(f["cache"].read_bytes())
    with h5py.File(f["nan"], "a") as h:  # a damaged cache: NaN in sample 4 (xsub-train)
        sample = h["modalities/joint"][4]
        sample[0, 2:5] = np.nan
        h["modalities/joint"][4] = sample
    f["empty"] = CacheWriter(
        d / "empty.h5", dataset="ntu60", t=24, options={}, modalities=("joint",)
    ).commit()

    f["preset"] = d / "mini.toml"
    f["preset"].write_text(
        "[pretrain]\nepochs = 1\ncross_epoch = 1\nbatch_size = 4\nqueue_size = 8\n"
        "hidden_channels = 4\nhidden_dim = 16\nfeature_dim = 8\nworkers = 0\nmodalities = 3\n"
        "[linear_eval]\nepochs = 1\nbatch_size = 4\n"
        "[finetune]\nepochs = 1\nbatch_size = 4\nworkers = 0\n"
    )
    f["bad_toml"] = d / "bad.toml"
    f["bad_toml"].write_text("[pretrain\nepochs = 1\n")
    f["bad_value"] = d / "neg.toml"
    f["bad_value"].write_text("[pretrain]\nlr = -1.0\n")
    f["bad_combo"] = d / "combo.toml"
    f["bad_combo"].write_text("[pretrain]\nekem = false\nikem = false\n")

    def ckpt(name: str, **state) -> Path:
        path = d / name
        torch.save({"format": "ikemtrain-pretrain", "version": 2, **state}, path)
        return path

    f["junk_ckpt"] = d / "junk.pt"
    f["junk_ckpt"].write_bytes(b"PK\x03\x04 not really a zip")
    f["foreign_ckpt"] = d / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, f["foreign_ckpt"])
    f["no_model"] = ckpt("no_model.pt", config={})
    f["no_config"] = ckpt("no_config.pt", model={})
    f["bad_config"] = ckpt("bad_config.pt", model={}, config={"lr": "fast"})
    f["odd_config"] = ckpt("odd_config.pt", model={}, config={"layers": 3})
    f["future_ckpt"] = ckpt("future.pt", model={}, config={}, version=99)
    f["evil"] = malicious_checkpoint(d / "evil.pt", d / "MARKER")
    f["evil_run"] = d / "evil-run"
    f["evil_run"].mkdir()
    malicious_checkpoint(f["evil_run"] / "checkpoint.pt", d / "MARKER")
    f["no_optimizer_run"] = d / "no-optimizer-run"
    f["no_optimizer_run"].mkdir()
    ckpt("no-optimizer-run/checkpoint.pt", model={}, config={}, epoch=1, rng={})

    # a real three-modality run, for checkpoint/stream mismatches and the existing-run case
    f["run"] = d / "run"
    result = invoke(
        "pretrain", f["cache"], "--split", "xsub", "--preset", f["preset"], "--out", f["run"],
        "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    f["a_file"] = d / "a-file"
    f["a_file"].write_text("")

    # evaluation protocols: a fine-tuning run (60 classes), a cache of 5 classes, report inputs
    f["five"] = make_cache(d / "five.h5", n=24, t=24, classes=5, seed=1, num_class=5)
    f["ft_run"] = d / "ft-run"
    result = invoke(
        "finetune", f["cache"], "--split", "xsub", "--checkpoint", f["run"], "--streams", "joint",
        "--preset", f["preset"], "--out", f["ft_run"], "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    f["empty_dir"] = d / "empty-dir"
    f["empty_dir"].mkdir()
    f["bad_results"] = d / "bad-results"
    f["bad_results"].mkdir()
    (f["bad_results"] / "results.json").write_text("{ not json")
    f["knn_dir"] = d / "knn-result"
    f["knn_dir"].mkdir()
    (f["knn_dir"] / "results.json").write_text('{"protocol": "knn"}')
    return f


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# (id, command line with {placeholders} for files, exit code, texts the message must contain)
CASES = [
    # caches
    ("cache-not-hdf5", "pretrain {text} --split xsub {P}", 1, ["{text}", "not an HDF5 file"]),
    ("cache-wrong-schema", "pretrain {plain} --split xsub {P}", 1, ["{plain}", "not a skelmod"]),
    (
        "cache-future-schema",
        "linear-eval {future} --split xsub --random-init --streams joint {L}",
        1,
        ["{future}", "schema version 99"],
    ),
    ("cache-zero-rows", "pretrain {empty} --split xsub {P}", 1, ["{empty}", "holds no samples"]),
    ("cache-missing", "pretrain {dir}/none.h5 --split xsub {P}", 2, ["none.h5", "does not exist"]),
    (
        "cache-of-another-layout",
        "linear-eval {nucla} --split xview --checkpoint {run} --streams 3s {L}",
        1,
        ["{nucla}", "layout kinect-v1-20, but checkpoint {run}/checkpoint.pt"],
    ),
    (
        "unknown-split-pretrain",
        "pretrain {cache} --split xset {P}",
        1,
        ["unknown split 'xset-train'", "ntu60"],
    ),
    (
        "unknown-split-linear-eval",
        "linear-eval {cache} --split xset --random-init --streams joint {L}",
        1,
        ["unknown split 'xset-train'"],
    ),
    (
        "split-smaller-than-batch",
        "pretrain {cache} --split xsub {P} --batch-size 64",
        1,
        ["{cache}", "batch_size"],
    ),
    (
        "non-finite-sample-pretrain",
        "pretrain {nan} --split xsub {P}",
        1,
        ["{nan}: row 4 (S001C002P001R001A002): modality 'joint'", "not finite", "nan at frame"],
    ),
    (
        "non-finite-sample-linear-eval",
        "linear-eval {nan} --split xsub --random-init --streams joint {L}",
        1,
        ["{nan}: row 4 (S001C002P001R001A002): modality 'joint' holds a value that is not"],
    ),
    # checkpoints
    (
        "checkpoint-missing",
        "linear-eval {cache} --split xsub --checkpoint {dir}/no.pt {L}",
        2,
        ["no.pt", "does not exist"],
    ),
    (
        "checkpoint-not-a-checkpoint",
        "linear-eval {cache} --split xsub --checkpoint {junk_ckpt} {L}",
        1,
        ["{junk_ckpt}", "not a readable checkpoint"],
    ),
    (
        "checkpoint-other-format",
        "linear-eval {cache} --split xsub --checkpoint {foreign_ckpt} {L}",
        1,
        ["{foreign_ckpt}", "not an ikemtrain-pretrain checkpoint"],
    ),
    (
        "checkpoint-without-model",
        "linear-eval {cache} --split xsub --checkpoint {no_model} {L}",
        1,
        ["{no_model}", "no 'model'"],
    ),
    (
        "checkpoint-without-config",
        "linear-eval {cache} --split xsub --checkpoint {no_config} {L}",
        1,
        ["{no_config}", "no 'config'"],
    ),
    (
        "checkpoint-bad-config",
        "linear-eval {cache} --split xsub --checkpoint {bad_config} {L}",
        1,
        ["{bad_config}", "lr", "'fast'"],
    ),
    (
        "checkpoint-unknown-config-key",
        "linear-eval {cache} --split xsub --checkpoint {odd_config} {L}",
        1,
        ["{odd_config}", "layers"],
    ),
    (
        "checkpoint-future-version",
        "linear-eval {cache} --split xsub --checkpoint {future_ckpt} {L}",
        1,
        ["{future_ckpt}", "version 99"],
    ),
    (
        "checkpoint-malicious-linear-eval",
        "linear-eval {cache} --split xsub --checkpoint {evil} {L}",
        1,
        ["{evil}", "refused"],
    ),
    (
        "checkpoint-malicious-resume",
        "pretrain {cache} --split xsub {Pnoout} --out {evil_run} --resume",
        1,
        ["{evil_run}/checkpoint.pt", "refused"],
    ),
    (
        "checkpoint-resume-without-optimizer",
        "pretrain {cache} --split xsub {Pnoout} --out {no_optimizer_run} --resume",
        1,
        ["{no_optimizer_run}/checkpoint.pt", "no 'optimizer'"],
    ),
    (
        "checkpoint-resume-missing",
        "pretrain {cache} --split xsub {P} --resume",
        1,
        ["no checkpoint at {dir}/out/checkpoint.pt to resume (--resume)"],
    ),
    (
        "checkpoint-exists-without-resume",
        "pretrain {cache} --split xsub {Pnoout} --out {run}",
        1,
        ["{run}/checkpoint.pt exists; resume to continue that run", "(--resume)"],
    ),
    (
        "stream-not-in-checkpoint",
        "linear-eval {cache} --split xsub --checkpoint {run} --streams acceleration {L}",
        1,
        ["{run}/checkpoint.pt", "needs acceleration"],
    ),
    # evaluation protocols: kNN, fine-tuning, transfer, report
    (
        "knn-k-malformed",
        "knn-eval {cache} --split xsub --checkpoint {run} --k 1,x {L}",
        2,
        ["--k", "'1,x'", "positive integers"],
    ),
    (
        "knn-stream-unknown",
        "knn-eval {cache} --split xsub --checkpoint {run} --streams joint,9s {L}",
        2,
        ["--streams", "'9s'"],
    ),
    (
        "knn-checkpoint-and-random-init",
        "knn-eval {cache} --split xsub --checkpoint {run} --random-init {L}",
        2,
        ["exactly one of --checkpoint RUN or --random-init"],
    ),
    (
        "knn-k-above-the-training-split",
        "knn-eval {cache} --split xsub --checkpoint {run} --k 1,50 {L}",
        1,
        ["{cache}", "xsub-train has 12 samples, fewer than k = 50"],
    ),
    (
        "knn-stream-not-in-checkpoint",
        "knn-eval {cache} --split xsub --checkpoint {run} --streams 6s {L}",
        1,
        ["{run}/checkpoint.pt", "needs acceleration"],
    ),
    (
        "knn-cache-of-another-layout",
        "knn-eval {nucla} --split xview --checkpoint {run} {L}",
        1,
        ["{nucla}", "layout kinect-v1-20, but checkpoint {run}/checkpoint.pt"],
    ),
    (
        "knn-result-as-checkpoint",
        "finetune {cache} --split xsub --checkpoint {knn_dir} --streams joint {F}",
        1,
        ["{knn_dir} is a kNN-evaluation run", "give the training run it evaluated"],
    ),
    (
        "finetune-label-fraction-out-of-range",
        "finetune {cache} --split xsub --checkpoint {run} --streams joint --label-fraction 1.5 {F}",
        2,
        ["--label-fraction", "1.5"],
    ),
    (
        "finetune-label-fraction-below-one-batch",
        "finetune {cache} --split xsub --checkpoint {run} --streams joint --label-fraction 0.1 {F}",
        1,
        ["{cache}", "xsub-train (label_fraction 0.1) has 3 samples", "batch_size"],
    ),
    (
        "finetune-cache-of-another-layout",
        "finetune {nucla} --split xview --checkpoint {run} --streams joint {F}",
        1,
        ["{nucla}", "layout kinect-v1-20, but checkpoint {run}/checkpoint.pt"],
    ),
    (
        "finetune-heads-of-another-class-count",
        "finetune {five} --split xsub --checkpoint {ft_run} --streams joint {F}",
        1,
        ["{five}: 5 classes, but the linear heads of fine-tuning run {ft_run}/checkpoint.pt"],
    ),
    (
        "finetune-exists-without-resume",
        "finetune {cache} --split xsub --checkpoint {run} --streams joint {Fnoout} --out {ft_run}",
        1,
        ["{ft_run}/checkpoint.pt", "exists"],
    ),
    (
        "finetune-resume-another-stream",
        "finetune {cache} --split xsub --checkpoint {run} --streams bone {Fnoout} --out {ft_run} "
        "--resume",
        1,
        ["{ft_run}/checkpoint.pt", "cannot resume with a different finetune"],
    ),
    (
        "report-nothing-to-report",
        "report {empty_dir} --out {dir}/report",
        1,
        ["{empty_dir}", "no results.json or metrics.jsonl"],
    ),
    (
        "report-results-not-json",
        "report {bad_results} --out {dir}/report",
        1,
        ["{bad_results}/results.json", "not readable as JSON"],
    ),
    ("report-folder-missing", "report {dir}/nowhere --out {dir}/report", 2, ["does not exist"]),
    (
        "report-out-under-a-file",
        "report {ft_run} --out {a_file}/report",
        1,
        ["{a_file}/report", "cannot write"],
    ),
    # presets and options
    (
        "preset-unknown",
        "pretrain {cache} --split xsub --preset nonesuch --out {dir}/o",
        2,
        ["--preset", "unknown preset 'nonesuch'"],
    ),
    ("preset-bad-toml", "describe --preset {bad_toml}", 2, ["{bad_toml}", "not valid TOML"]),
    (
        "preset-bad-value",
        "linear-eval {cache} --split xsub --random-init --preset {bad_value} --out {dir}/o",
        2,
        ["{bad_value}", "[pretrain] lr"],
    ),
    (
        "preset-bad-combination",
        "pretrain {cache} --split xsub --preset {bad_combo} --out {dir}/o",
        2,
        ["{bad_combo}", "ekem, ikem"],
    ),
    (
        "no-ekem-no-ikem",
        "pretrain {cache} --split xsub {P} --no-ekem --no-ikem",
        2,
        ["ekem, ikem", "at least one"],
    ),
    (
        "streams-unknown",
        "linear-eval {cache} --split xsub --random-init --streams 9s {L}",
        2,
        ["--streams", "'9s'"],
    ),
    ("modalities-unknown", "describe --modalities 4", 2, ["--modalities", "'4'"]),
    (
        "device-malformed",
        "pretrain {cache} --split xsub {P} --device gpu",
        2,
        ["--device", "'gpu'"],
    ),
    (
        "device-unavailable-pretrain",
        "pretrain {cache} --split xsub {Pnodev} --device cuda:99",
        1,
        ["device", "cuda:99"],
    ),
    (
        "device-unavailable-linear-eval",
        "linear-eval {cache} --split xsub --random-init --streams joint {Lnodev} --device cuda:99",
        1,
        ["device", "cuda:99"],
    ),
    # outputs
    (
        "out-under-a-file-pretrain",
        "pretrain {cache} --split xsub {Pnoout} --out {a_file}/run",
        1,
        ["{a_file}/run", "cannot write"],
    ),
    (
        "out-under-a-file-linear-eval",
        "linear-eval {cache} --split xsub --random-init --streams joint {Lnoout} --out {a_file}/le",
        1,
        ["{a_file}/le", "cannot write"],
    ),
    ("out-is-a-file-demo", "demo {a_file} --preset {preset}", 2, ["{a_file}", "is a file"]),
    ("out-not-empty-demo", "demo {run} --preset {preset}", 2, ["{run} is not empty"]),
    (
        "too-many-classes-demo",
        "demo {dir}/demo-classes --classes 17 --preset {preset}",
        1,
        ["classes must be in 1..16", "got 17 (--classes)"],
    ),
    (
        "out-under-a-file-demo",
        "demo {a_file}/demo --preset {preset}",
        1,
        ["{a_file}/demo", "cannot write"],
    ),
]


def _args(template: str, files: dict[str, Path]) -> list[str]:
    common = f"--preset {files['preset']} --device cpu"
    fields = {k: str(v) for k, v in files.items()}
    fields.update(
        P=f"{common} --out {files['dir']}/out",
        Pnoout=common,
        Pnodev=f"--preset {files['preset']} --out {files['dir']}/out",
        L=f"{common} --out {files['dir']}/le",
        Lnoout=common,
        Lnodev=f"--preset {files['preset']} --out {files['dir']}/le",
        F=f"{common} --out {files['dir']}/ft",
        Fnoout=common,
    )
    return template.format(**fields).split()


#: A plain progress line (``ikemtrain.progress``): the output of a run that failed part-way.
PROGRESS_LINE = re.compile(r"^[\w /.-]+: \d+/\d+ \(\d+%\), \S+ \w+/s, ")


@pytest.mark.parametrize(
    ("template", "code", "texts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_user_error(files: dict[str, Path], template: str, code: int, texts: list[str]) -> None:
    result = invoke(*_args(template, files))
    output = result.output
    assert result.exit_code == code, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    if code == 1:  # the whole output is the one line, after the progress a run showed
        rest = [line for line in output.splitlines() if not PROGRESS_LINE.match(line)]
        assert "\n".join(rest).strip() == errors[0], output
    for text in texts:
        assert text.format(**{k: str(v) for k, v in files.items()}) in errors[0], output
    assert not (files["dir"] / "MARKER").exists()  # no checkpoint ran code


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 14
    commands = {c[1].split()[0] for c in CASES}
    assert commands == {
        "pretrain",
        "linear-eval",
        "knn-eval",
        "finetune",
        "report",
        "describe",
        "demo",
    }


def test_a_malicious_checkpoint_in_a_real_process(files: dict[str, Path]) -> None:
    """The console command itself: exit code 1, one line on stderr naming the file, no code
    run (the unsafe loader would create the marker, see test_checkpoint)."""
    marker = files["dir"] / "MARKER"
    args = _args("linear-eval {cache} --split xsub --checkpoint {evil} {L}", files)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.ikemtrain_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"Error: {files['evil']}: refused: loading it would call ")
    assert not marker.exists()
