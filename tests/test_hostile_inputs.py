# ruff: noqa: E501 (the table keeps one hostile input per line, to be read as a table)
"""Hostile inputs across every command (issue 24 point 6): each row is one input a new user or
an attacker could give, and the command must answer with exactly one ``Error:`` line (no
traceback), the right exit code (1: a failed run or a refused input; 2: a usage error), the
texts that name the file, field and expectation, and leave every input byte for byte as it was.

The fixture :func:`hostile` builds the inputs once (caches that point outside themselves or
declare absurd sizes, arrays files whose headers lie, checkpoints and result folders with
wrong values, run folders of every kind). Commands run in-process with
``catch_exceptions=False``, so an exception that is not one of the project's own errors fails
the row with its traceback.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_data import make_cache

from cli.ikemtrain_cli import main as ikemtrain_main
from cli.skelmod_cli import main as skelmod_main
from ikemtrain.runfolder import open_run_folder
from skelmod.synth import generate

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MAINS = {"skelmod": skelmod_main, "ikemtrain": ikemtrain_main}


def _copy(src: Path, dst: Path, change=None) -> Path:
    dst.write_bytes(src.read_bytes())
    if change is not None:
        with h5py.File(dst, "r+") as f:
            change(f)
    return dst


def _replace_dataset(key: str, **create):
    def change(f):
        shape, dtype = f[key].shape, f[key].dtype
        del f[key]
        f.create_dataset(key, **{"shape": shape, "dtype": dtype, **create})

    return change


def _external(target: Path, key: str = "modalities/joint"):
    def change(f):
        shape, dtype = f[key].shape, f[key].dtype
        del f[key]
        size = int(np.prod(shape)) * dtype.itemsize
        f.create_dataset(key, shape=shape, dtype=dtype, external=[(str(target), 0, size)])

    return change


def _link(key: str, make):
    def change(f):
        f[key + "-real"] = f[key]
        del f[key]
        f[key] = make(key + "-real")

    return change


def _virtual(key: str):
    def change(f):
        shape, dtype = f[key].shape, f[key].dtype
        lay = h5py.VirtualLayout(shape=shape, dtype=dtype)
        lay[:] = h5py.VirtualSource("/etc/passwd", "x", shape=shape)
        del f[key]
        f.create_virtual_dataset(key, lay)

    return change


def _attr(key, value):
    def change(f):
        f.attrs[key] = value

    return change


def _row(key, row, value):
    def change(f):
        sample = f[key][row]
        if sample.ndim:
            sample[0, 2, 3, 0] = value
        else:
            sample = value
        f[key][row] = sample

    return change


def _retype(dtype, modalities=("joint",)):
    def change(f):
        for m in modalities:
            data = f[f"modalities/{m}"][:]
            del f[f"modalities/{m}"]
            f[f"modalities/{m}"] = data.astype(dtype)

    return change


def _no_bodies(f):
    for m in list(f["modalities"]):
        shape = f[f"modalities/{m}"].shape
        del f[f"modalities/{m}"]
        f.create_dataset(f"modalities/{m}", shape=(*shape[:-1], 0), dtype=np.float32)


def _good_arrays(n: int = 3, t: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "joints": 0.3 * rng.normal(size=(n * t, 20, 3)),
        "offsets": np.arange(0, n * t + 1, t),
        "label": np.arange(n) % 2,
        "train_xview": np.arange(n) % 2 == 0,
    }


def _ckpt_copy(run: Path, dst: Path, edit=None, **changes) -> Path:
    """A copy of a run folder whose checkpoint has ``changes`` (``config=...`` and
    ``model=...`` merge); ``edit(state)`` changes it in place."""
    dst.mkdir()
    for p in run.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    state = torch.load(dst / "checkpoint.pt", weights_only=True)
    for key in ("config", "model"):
        if key in changes:
            changes[key] = {**state[key], **changes[key]}
    state = {**state, **changes}
    if edit is not None:
        edit(state)
    torch.save(state, dst / "checkpoint.pt")
    return dst


def _momentum(shape):
    def edit(state):
        state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(shape)

    return edit


def _result(folder: Path, base: dict, **changes) -> Path:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({**base, **changes}))
    return folder


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """Inputs under ``IN`` (checked untouched after every row); outputs go under ``OUT``."""
    root = tmp_path_factory.mktemp("hostile")
    d = root / "in"
    d.mkdir()
    (root / "out").mkdir()
    f: dict[str, Path] = {"IN": d, "OUT": root / "out"}
    cache = make_cache(d / "good.h5", n=24, t=24, classes=3)
    f["cache"] = cache
    f["preset"] = d / "mini.toml"
    f["preset"].write_text(
        "[pretrain]\nepochs = 1\ncross_epoch = 1\nbatch_size = 4\nqueue_size = 8\n"
        "hidden_channels = 4\nhidden_dim = 16\nfeature_dim = 4\nworkers = 0\n"
        "[distill]\nepochs = 1\nbatch_size = 4\nqueue_size = 8\nworkers = 0\n"
        "[linear_eval]\nepochs = 1\nbatch_size = 4\n"
        "[finetune]\nepochs = 1\nbatch_size = 4\nworkers = 0\n"
    )
    for name, text in {
        "big_hidden": "[pretrain]\nhidden_dim = 1000000000\n",
        "big_queue": "[pretrain]\nqueue_size = 1000000000000\n",
        "big_channels": "[pretrain]\nhidden_channels = 4000000\n",
        "bn_batch_1": "[pretrain]\nhead_bn = true\nbatch_size = 1\n",
        "string_lr": "[pretrain]\nlr = 'fast'\n",
    }.items():
        f[name] = d / f"{name}.toml"
        f[name].write_text(text)

    # caches: pointers, absurd declared sizes, implausible values, wrong types
    f["passwd_cache"] = _copy(cache, d / "passwd.h5", _external(Path("/etc/passwd")))
    os.mkfifo(d / "fifo")
    f["fifo_cache"] = _copy(cache, d / "fifo.h5", _external(d / "fifo"))
    f["soft_cache"] = _copy(cache, d / "soft.h5", _link("meta/label", h5py.SoftLink))
    f["extlink_cache"] = _copy(
        cache, d / "extlink.h5",
        _link("modalities/joint", lambda p: h5py.ExternalLink(str(d / "good.h5"), "/" + p)),
    )  # fmt: skip
    f["virtual_cache"] = _copy(cache, d / "virtual.h5", _virtual("modalities/velocity"))
    f["t_cache"] = _copy(cache, d / "t.h5", _attr("t_frames", 10**6))
    f["classes_cache"] = _copy(cache, d / "classes.h5", _attr("num_class", 10**10))
    f["huge_joint_cache"] = _copy(cache, d / "huge.h5", _row("modalities/joint", 6, 1e30))
    f["far_joint_cache"] = _copy(cache, d / "far.h5", _row("modalities/joint", 2, 1e3))
    f["fc_cache"] = _copy(cache, d / "fc.h5", _row("meta/frame_count", 3, 2**31 - 1))
    f["fc0_cache"] = _copy(cache, d / "fc0.h5", _row("meta/frame_count", 5, 0))
    f["vl_cache"] = _copy(cache, d / "vl.h5", _row("meta/valid_length", 1, 10**4))
    f["f16_cache"] = _copy(cache, d / "f16.h5", _retype(np.float16))
    f["i8_cache"] = _copy(cache, d / "i8.h5", _retype(np.int8))
    f["c64_cache"] = _copy(cache, d / "c64.h5", _retype(np.complex64))
    f["m0_cache"] = _copy(cache, d / "m0.h5", _no_bodies)
    f["label_cache"] = _copy(cache, d / "label.h5", _row("meta/label", 0, -1))
    f["text"] = d / "notes.txt"
    f["text"].write_text("my notes\n")

    # raw files and arrays files
    f["raw"] = d / "raw"
    f["raw_file"] = generate(f["raw"], 1, 2, 0)[0]
    f["empty_dir"] = d / "empty-dir"
    f["empty_dir"].mkdir()
    f["truncated_dir"] = d / "truncated"
    f["truncated_dir"].mkdir()
    (f["truncated_dir"] / "S001C001P001R001A001.skeleton").write_text("3\n1\n")
    f["bomb_dir"] = d / "bomb"
    f["bomb_dir"].mkdir()
    (f["bomb_dir"] / "S001C001P001R001A001.skeleton").write_text("1000000000000\n")
    for key, number in (("nucla_400", "9" * 400), ("nucla_5001", "1" * 5001 + ".5")):
        f[key] = d / key.replace("_", "-")
        f[key].mkdir()
        frames = [[[0.1, 0.2, 3.0]] * 20] * 3
        text = json.dumps({"file_name": "a01_s01_e00_v01", "skeletons": frames, "label": 1})
        (f[key] / "a01_s01_e00_v01.json").write_text(text.replace("0.2", number, 1))
    f["npz"] = d / "a.npz"
    np.savez(f["npz"], **_good_arrays())
    f["empty_npz"] = d / "empty.npz"
    with zipfile.ZipFile(f["empty_npz"], "w"):
        pass
    f["txt_member"] = d / "txt-member.npz"
    with zipfile.ZipFile(f["txt_member"], "w") as z:
        z.writestr("joints.txt", "not an array")
    raw = bytearray(f["npz"].read_bytes())
    k = raw.index(b"'shape': (18, 20, 3)")
    raw[k : k + 20] = b"'shape':(999999999,)"
    f["lying_npz"] = d / "lying.npz"
    f["lying_npz"].write_bytes(bytes(raw))
    bodies = _good_arrays()
    bodies["joints"] = np.zeros((18, 7, 20, 3))
    np.savez(d / "bodies.npz", **bodies)
    f["bodies_npz"] = d / "bodies.npz"
    np.savez(d / "long.npz", **_good_arrays(n=1, t=10_001))
    f["long_npz"] = d / "long.npz"
    np.savez(d / "label.npz", **{**_good_arrays(), "label": np.array([0, 32767, 1])})
    f["label_npz"] = d / "label.npz"
    np.savez(d / "object.npz", **{**_good_arrays(), "name": np.array([{"a": 1}, 2, 3], object)})
    f["object_npz"] = d / "object.npz"
    np.savez(d / "complex.npz", **{**_good_arrays(), "joints": np.zeros((18, 20, 3), complex)})
    f["complex_npz"] = d / "complex.npz"
    np.savez(d / "nan.npz", **{**_good_arrays(), "joints": np.full((18, 20, 3), np.nan)})
    f["nan_npz"] = d / "nan.npz"
    np.savez(d / "all-train.npz", **{**_good_arrays(), "train_xview": np.ones(3, bool)})
    f["all_train_npz"] = d / "all-train.npz"
    np.savez(d / "no-train.npz", **{**_good_arrays(), "train_xsub": np.zeros(3, bool)})
    f["no_train_npz"] = d / "no-train.npz"
    f["import_cache"] = d / "imported.h5"
    result = CliRunner().invoke(skelmod_main, ["import", str(f["npz"]), "--layout",
                                               "kinect-v1-20", "-o", str(f["import_cache"])])  # fmt: skip
    assert result.exit_code == 0, result.output

    # runs: a real pre-training run and a linear evaluation of it, then damaged copies
    common = ["--preset", str(f["preset"]), "--device", "cpu"]
    f["run"] = d / "run"
    for args in (
        ["pretrain", str(cache), "--split", "xsub", "--out", str(f["run"]), *common],
        ["linear-eval", str(cache), "--split", "xsub", "--checkpoint", str(f["run"]),
         "--streams", "joint", "--out", str(d / "le"), *common],
    ):  # fmt: skip
        result = CliRunner().invoke(ikemtrain_main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    f["le"] = d / "le"
    f["epoch_big"] = _ckpt_copy(f["run"], d / "epoch-big", epoch=10**9)
    f["epoch_neg"] = _ckpt_copy(f["run"], d / "epoch-neg", epoch=-3)
    f["epoch_str"] = _ckpt_copy(f["run"], d / "epoch-str", epoch="3")
    f["wide_ckpt"] = _ckpt_copy(f["run"], d / "wide", config={"hidden_dim": 10**9})
    f["queue_ckpt"] = _ckpt_copy(f["run"], d / "queue", config={"queue_size": 10**12})
    f["says_distill"] = _ckpt_copy(f["run"], d / "says-distill", kind="distill")
    f["says_distill_records"] = _ckpt_copy(
        f["run"], d / "says-distill-records", kind="distill", teacher={}, student={}
    )
    f["kind_int"] = _ckpt_copy(f["run"], d / "kind-int", kind=5)
    f["shape_ckpt"] = _ckpt_copy(
        f["run"], d / "shape", model={"branches.joint.encoder_q.A": torch.zeros(3, 3)}
    )
    f["extra_ckpt"] = _ckpt_copy(
        f["run"], d / "extra", model={"branches.joint.spare": torch.ones(10**3)}
    )
    f["momentum_ckpt"] = _ckpt_copy(f["run"], d / "momentum", edit=_momentum((7,)))
    result = CliRunner().invoke(ikemtrain_main, ["distill", str(cache), "--split", "xsub", "--teacher",
                                                 str(f["run"]), "--out", str(d / "dist"), *common])  # fmt: skip
    assert result.exit_code == 0, result.output
    f["dist"] = d / "dist"
    f["dist_student_str"] = _ckpt_copy(f["dist"], d / "dist-student-str", student="x")
    f["dist_shape"] = _ckpt_copy(
        f["dist"], d / "dist-shape", model={"students.joint.encoder.A": torch.zeros(2)}
    )
    f["knn_folder"] = d / "knn"
    with open_run_folder(f["knn_folder"], "knn-eval") as folder:
        (folder.path / "results.json").write_text("{}")
    f["held"] = d / "held"
    with open_run_folder(f["held"], "pretrain"):  # held by another process in some rows
        pass

    # result folders for the report, each with one wrong field
    base = json.loads((f["le"] / "results.json").read_text())
    for name, changes in {
        "r_top1_str": {"top1_final": "high"},
        "r_top1_null": {"top1_best": None},
        "r_top1_list": {"top1_final": [1, 2]},
        "r_top1_big": {"top1_final": 250.0},
        "r_fraction_null": {"protocol": "finetune", "label_fraction": None},
        "r_num_class_half": {"num_class": 0.5},
        "r_split_number": {"split": 3},
        "r_config_list": {"config": [1, 2]},
        "r_protocol_list": {"protocol": ["knn"]},
        "r_knn_k_str": {"protocol": "knn", "streams": {"joint": {"top1": {"1": 50.0}}},
                        "k": ["1"]},
        "r_knn_streams_list": {"protocol": "knn", "streams": ["joint"], "k": [1]},
    }.items():  # fmt: skip
        f[name] = _result(d / name, base, **changes)
    f["r_label_minus_1"] = d / "r-label"
    f["r_label_minus_1"].mkdir()
    (f["r_label_minus_1"] / "results.json").write_text(json.dumps(base))
    with np.load(f["le"] / "predictions.npz") as p:
        pred = dict(p)
    pred["labels"] = pred["labels"].copy()
    pred["labels"][0] = -1
    np.savez(f["r_label_minus_1"] / "predictions.npz", **pred)
    f["r_metrics_str"] = d / "r-metrics"
    f["r_metrics_str"].mkdir()
    (f["r_metrics_str"] / "metrics.jsonl").write_text('{"epoch": 1, "loss": "x"}\n')
    f["student_out"] = d / "student.pt"
    f["student_out"].write_bytes(b"an existing file")
    return f


#: (id, program, arguments, exit code, texts the one Error line holds). ``{name}`` is a path of
#: :func:`hostile`; ``{out}`` a fresh output path; ``{P}`` the common ikemtrain options.
CASES = [
    # skelmod convert: the output rule
    ("convert-onto-input", "skelmod", "convert {raw} -o {raw_file} --overwrite", 2, ["{raw_file}", "is one of the input files"]),
    ("convert-onto-text", "skelmod", "convert {raw} -o {text} --overwrite", 2, ["{text}", "not a skelmod cache"]),
    ("convert-onto-cache", "skelmod", "convert {raw} -o {cache}", 2, ["{cache}", "set overwrite"]),
    ("convert-onto-folder", "skelmod", "convert {raw} -o {empty_dir}", 2, ["{empty_dir}", "is a directory"]),
    ("convert-trailing-slash", "skelmod", "convert {raw} -o {out}/", 2, ["is a directory"]),
    ("convert-empty-dir", "skelmod", "convert {empty_dir} -o {out}.h5", 1, ["{empty_dir}", "no .skeleton files"]),
    ("convert-truncated", "skelmod", "convert {truncated_dir} -o {out}.h5", 1, ["none of the 1 files converted"]),
    ("convert-nucla-400-digits", "skelmod", "convert {nucla_400} -o {out}.h5", 1, ["{nucla_400}/a01_s01_e00_v01.json", "field 'skeletons[0][0]': a number of 400 characters", "more than the 64"]),
    ("convert-nucla-5001-digits", "skelmod", "convert {nucla_5001} -o {out}.h5", 1, ["{nucla_5001}/a01_s01_e00_v01.json", "field 'skeletons[0][0]': a number of 5003 characters", "more than the 64"]),
    ("convert-frame-bomb", "skelmod", "convert {bomb_dir} -o {out}.h5", 1, ["none of the 1 files converted", "10000"]),
    # skelmod import: the same output rule, and arrays files that lie
    ("import-onto-input", "skelmod", "import {npz} --layout kinect-v1-20 -o {npz} --overwrite", 2, ["{npz}", "is one of the input files"]),
    ("import-onto-cache", "skelmod", "import {npz} --layout kinect-v1-20 -o {import_cache}", 2, ["{import_cache}", "set overwrite"]),
    ("import-onto-text", "skelmod", "import {npz} --layout kinect-v1-20 -o {text} --overwrite", 2, ["{text}", "not a skelmod cache"]),
    ("import-onto-folder", "skelmod", "import {npz} --layout kinect-v1-20 -o {empty_dir}", 2, ["is a directory"]),
    ("import-trailing-slash", "skelmod", "import {npz} --layout kinect-v1-20 -o {out}/", 2, ["is a directory"]),
    ("import-empty-npz", "skelmod", "import {empty_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{empty_npz}", "missing array 'joints'"]),
    ("import-txt-member", "skelmod", "import {txt_member} --layout kinect-v1-20 -o {out}.h5", 1, ["{txt_member}", "found joints.txt"]),
    ("import-header-lies", "skelmod", "import {lying_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{lying_npz}", "'joints' declares shape (999999999,)"]),
    ("import-too-many-bodies", "skelmod", "import {bodies_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{bodies_npz}", "7 bodies (M)", "limit of 6"]),
    ("import-endless-sequence", "skelmod", "import {long_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{long_npz}", "10001 frames", "limit of 10000"]),
    ("import-label-int16", "skelmod", "import {label_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{label_npz}", "'label' values must lie in 0 .. 32766"]),
    ("import-pickle", "skelmod", "import {object_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{object_npz}", "without pickle"]),
    ("import-complex", "skelmod", "import {complex_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{complex_npz}", "'joints' must be a float array"]),
    ("import-all-nan", "skelmod", "import {nan_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{nan_npz}", "none of the 3 sequences converted"]),
    ("import-mask-all-true", "skelmod", "import {all_train_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{all_train_npz}", "'train_xview' marks all 3 sequences as training", "xview-val would be empty"]),
    ("import-mask-all-false", "skelmod", "import {no_train_npz} --layout kinect-v1-20 -o {out}.h5", 1, ["{no_train_npz}", "'train_xsub' marks all 3 sequences as validation", "xsub-train would be empty"]),
    ("import-not-a-zip", "skelmod", "import {text} --layout kinect-v1-20 -o {out}.h5", 1, ["{text}", "not a readable .npz"]),
    # skelmod info / features: caches that point elsewhere or declare absurd sizes
    ("info-external-storage", "skelmod", "info {passwd_cache}", 1, ["{passwd_cache}", "external file /etc/passwd"]),
    ("info-fifo", "skelmod", "info {fifo_cache}", 1, ["{fifo_cache}", "external file"]),
    ("info-soft-link", "skelmod", "info {soft_cache}", 1, ["{soft_cache}", "/meta/label is a soft link"]),
    ("info-text", "skelmod", "info {text}", 1, ["{text}", "not an HDF5 file"]),
    ("info-valid-length", "skelmod", "info {vl_cache}", 1, ["{vl_cache}", "valid_length must lie in 1 .. frame_count", "row 1"]),
    ("info-frames-declared", "skelmod", "info {t_cache}", 1, ["{t_cache}", "'t_frames' is 1000000", "limit of 1000"]),
    ("info-classes-declared", "skelmod", "info {classes_cache}", 1, ["{classes_cache}", "'num_class' is 10000000000"]),
    ("info-label-negative", "skelmod", "info {label_cache}", 1, ["{label_cache}", "meta/label must lie in 0 .. 59"]),
    ("features-external-link", "skelmod", "features {extlink_cache} --modalities velocity", 1, ["{extlink_cache}", "/modalities/joint is an external link"]),
    ("features-float16", "skelmod", "features {f16_cache} --modalities velocity", 1, ["{f16_cache}", "modalities/joint holds float16, expected float32"]),
    ("features-virtual", "skelmod", "features {virtual_cache} --modalities bone", 1, ["{virtual_cache}", "virtual dataset"]),
    ("features-no-bodies", "skelmod", "features {m0_cache} --modalities bone", 1, ["{m0_cache}", "M = 0"]),
    ("synth-onto-file", "skelmod", "synth {text}", 2, ["{text}", "is a file"]),
    # ikemtrain pretrain
    ("pretrain-external-storage", "ikemtrain", "pretrain {passwd_cache} --split xsub {P}", 1, ["{passwd_cache}", "external file /etc/passwd"]),
    ("pretrain-fifo", "ikemtrain", "pretrain {fifo_cache} --split xsub {P}", 1, ["{fifo_cache}", "external file"]),
    ("pretrain-joints-1e30", "ikemtrain", "pretrain {huge_joint_cache} --split xsub {P}", 1, ["{huge_joint_cache}", "row 6", "1e+30", "100 m"]),
    ("pretrain-joints-1km", "ikemtrain", "pretrain {far_joint_cache} --split xsub {P}", 1, ["{far_joint_cache}", "row 2", "100 m"]),
    ("pretrain-frame-count-max", "ikemtrain", "pretrain {fc_cache} --split xsub {P}", 1, ["{fc_cache}", "frame_count must lie in 1 .. 10000", "row 3"]),
    ("pretrain-no-bodies", "ikemtrain", "pretrain {m0_cache} --split xsub {P}", 1, ["{m0_cache}", "M = 0"]),
    ("pretrain-int8-joints", "ikemtrain", "pretrain {i8_cache} --split xsub {P}", 1, ["{i8_cache}", "holds int8, expected float32"]),
    ("pretrain-complex-joints", "ikemtrain", "pretrain {c64_cache} --split xsub {P}", 1, ["{c64_cache}", "expected float32"]),
    ("pretrain-preset-hidden-1e9", "ikemtrain", "pretrain {cache} --split xsub --preset {big_hidden} --out {out}", 2, ["hidden_dim", "<= 8192"]),
    ("pretrain-preset-queue-1e12", "ikemtrain", "pretrain {cache} --split xsub --preset {big_queue} --out {out}", 2, ["queue_size", "<= 1048576"]),
    ("pretrain-preset-channels-4e6", "ikemtrain", "pretrain {cache} --split xsub --preset {big_channels} --out {out}", 2, ["hidden_channels", "<= 256"]),
    ("pretrain-preset-bn-batch-1", "ikemtrain", "pretrain {cache} --split xsub --preset {bn_batch_1} --out {out}", 2, ["batch_size", "BatchNorm heads"]),
    ("pretrain-preset-string-lr", "ikemtrain", "pretrain {cache} --split xsub --preset {string_lr} --out {out}", 2, ["lr", "expected a number"]),
    ("pretrain-into-another-kind", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {le}", 2, ["{le}", "a linear-eval run"]),
    ("pretrain-into-a-held-folder", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {held}", 1, ["{held}", "another process is writing it"]),
    ("pretrain-resume-epoch-1e9", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {epoch_big} --resume", 1, ["{epoch_big}/checkpoint.pt", "'epoch' is 1000000000"]),
    ("pretrain-resume-epoch-negative", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {epoch_neg} --resume", 1, ["{epoch_neg}/checkpoint.pt", "'epoch' is -3"]),
    ("pretrain-resume-epoch-string", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {epoch_str} --resume", 1, ["{epoch_str}/checkpoint.pt", "'epoch' is a str"]),
    ("pretrain-resume-tensor-shape", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {shape_ckpt} --resume", 1, ["{shape_ckpt}/checkpoint.pt", "checkpoint tensor 'branches.joint.encoder_q.A' has shape (3, 3)", "(3, 25, 25)"]),
    ("pretrain-resume-extra-tensor", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {extra_ckpt} --resume", 1, ["{extra_ckpt}/checkpoint.pt", "'branches.joint.spare' is not part of the model"]),
    ("pretrain-resume-momentum-shape", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {momentum_ckpt} --resume", 1, ["{momentum_ckpt}/checkpoint.pt", "momentum buffer of parameter 0 has shape (7,)"]),
    ("pretrain-resume-and-overwrite", "ikemtrain", "pretrain {cache} --split xsub {Pnoout} --out {run} --resume --overwrite", 2, ["--resume and --overwrite"]),
    # ikemtrain distill
    ("distill-teacher-is-evaluation", "ikemtrain", "distill {cache} --split xsub --teacher {le} {P}", 1, ["{le}", "linear-evaluation run"]),
    ("distill-teacher-too-wide", "ikemtrain", "distill {cache} --split xsub --teacher {wide_ckpt} {P}", 1, ["{wide_ckpt}/checkpoint.pt", "hidden_dim", "<= 8192"]),
    ("distill-teacher-tensor-shape", "ikemtrain", "distill {cache} --split xsub --teacher {shape_ckpt} {P}", 1, ["{shape_ckpt}/checkpoint.pt", "checkpoint tensor 'branches.joint.encoder_q.A' has shape (3, 3)"]),
    ("distill-into-another-kind", "ikemtrain", "distill {cache} --split xsub --teacher {run} {Pnoout} --out {knn_folder}", 2, ["{knn_folder}", "a knn-eval run"]),
    ("distill-classes-declared", "ikemtrain", "distill {classes_cache} --split xsub --teacher {run} {P}", 1, ["{classes_cache}", "'num_class' is 10000000000"]),
    # ikemtrain linear-eval
    ("linear-eval-external-link", "ikemtrain", "linear-eval {extlink_cache} --split xsub --checkpoint {run} --streams joint {P}", 1, ["{extlink_cache}", "external link"]),
    ("linear-eval-into-another-kind", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {run} --streams joint {Pnoout} --out {knn_folder}", 2, ["{knn_folder}", "a knn-eval run"]),
    ("linear-eval-into-itself-again", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {run} --streams joint {Pnoout} --out {le}", 2, ["{le} is not empty", "overwrite to replace it"]),
    ("linear-eval-checkpoint-queue-1e12", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {queue_ckpt} --streams joint {P}", 1, ["{queue_ckpt}/checkpoint.pt", "queue_size"]),
    ("linear-eval-kind-says-distill", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {says_distill} --streams joint {P}", 1, ["{says_distill}/checkpoint.pt", "distill checkpoint has no"]),
    ("linear-eval-tensor-shape", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {shape_ckpt} --streams joint {P}", 1, ["{shape_ckpt}/checkpoint.pt", "checkpoint tensor 'branches.joint.encoder_q.A' has shape (3, 3)"]),
    ("linear-eval-says-distill-with-records", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {says_distill_records} --streams student-joint {P}", 1, ["{says_distill_records}/checkpoint.pt", "distill checkpoint 'teacher.config' is absent, expected a dict"]),
    ("linear-eval-student-record-string", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {dist_student_str} --streams student-joint {P}", 1, ["{dist_student_str}/checkpoint.pt", "distill checkpoint 'student' is a str, expected a dict"]),
    ("linear-eval-distill-run-as-pretrain", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {dist} --streams joint {P}", 1, ["{dist}/checkpoint.pt is a student run; its streams are student-joint"]),
    ("linear-eval-kind-not-a-string", "ikemtrain", "linear-eval {cache} --split xsub --checkpoint {kind_int} --streams joint {P}", 1, ["{kind_int}/checkpoint.pt", "'kind' is a int"]),
    # ikemtrain knn-eval
    ("knn-eval-tensor-shape", "ikemtrain", "knn-eval {cache} --split xsub --checkpoint {shape_ckpt} --streams joint --k 1 {P}", 1, ["{shape_ckpt}/checkpoint.pt", "'branches.joint.encoder_q.A' has shape (3, 3)"]),
    ("knn-eval-soft-link", "ikemtrain", "knn-eval {soft_cache} --split xsub --checkpoint {run} --streams joint --k 1 {P}", 1, ["{soft_cache}", "soft link"]),
    ("knn-eval-virtual", "ikemtrain", "knn-eval {virtual_cache} --split xsub --checkpoint {run} --streams joint --k 1 {P}", 1, ["{virtual_cache}", "virtual dataset"]),
    ("knn-eval-into-a-held-folder", "ikemtrain", "knn-eval {cache} --split xsub --checkpoint {run} --streams joint --k 1 {Pnoout} --out {held}", 1, ["{held}", "another process is writing it"]),
    ("knn-eval-into-a-run", "ikemtrain", "knn-eval {cache} --split xsub --checkpoint {run} --streams joint --k 1 {Pnoout} --out {run}", 2, ["{run}", "a pretrain run"]),
    # ikemtrain finetune
    ("finetune-frame-count-zero", "ikemtrain", "finetune {fc0_cache} --split xsub --checkpoint {run} --streams joint {P}", 1, ["{fc0_cache}", "frame_count must lie in 1 .. 10000", "row 5"]),
    ("finetune-into-another-kind", "ikemtrain", "finetune {cache} --split xsub --checkpoint {run} --streams joint {Pnoout} --out {le} --overwrite", 2, ["{le}", "not a finetune run"]),
    ("finetune-resume-and-overwrite", "ikemtrain", "finetune {cache} --split xsub --checkpoint {run} --streams joint {P} --resume --overwrite", 2, ["--resume and --overwrite"]),
    # ikemtrain report: every field it reads is checked
    ("report-top1-string", "ikemtrain", "report {r_top1_str} --out {out}", 1, ["{r_top1_str}/results.json", "'top1_final' must be a percentage", '"high"']),
    ("report-top1-null", "ikemtrain", "report {r_top1_null} --out {out}", 1, ["{r_top1_null}/results.json", "'top1_best' must be a percentage", "null"]),
    ("report-top1-list", "ikemtrain", "report {r_top1_list} --out {out}", 1, ["{r_top1_list}/results.json", "'top1_final'"]),
    ("report-top1-250", "ikemtrain", "report {r_top1_big} --out {out}", 1, ["{r_top1_big}/results.json", "(0 .. 100)", "250.0"]),
    ("report-fraction-null", "ikemtrain", "report {r_fraction_null} --out {out}", 1, ["{r_fraction_null}/results.json", "'label_fraction' must be a number in (0, 1]"]),
    ("report-num-class-half", "ikemtrain", "report {r_num_class_half} --out {out}", 1, ["{r_num_class_half}/results.json", "'num_class' must be an integer"]),
    ("report-split-number", "ikemtrain", "report {r_split_number} --out {out}", 1, ["{r_split_number}/results.json", "'split' must be a string"]),
    ("report-config-list", "ikemtrain", "report {r_config_list} --out {out}", 1, ["{r_config_list}/results.json", "'config' must be an object"]),
    ("report-protocol-list", "ikemtrain", "report {r_protocol_list} --out {out}", 1, ["{r_protocol_list}/results.json", "unknown protocol"]),
    ("report-knn-k-string", "ikemtrain", "report {r_knn_k_str} --out {out}", 1, ["{r_knn_k_str}/results.json", "'k' must be a list of positive integers"]),
    ("report-knn-streams-list", "ikemtrain", "report {r_knn_streams_list} --out {out}", 1, ["{r_knn_streams_list}/results.json", "'streams' must be"]),
    ("report-label-minus-1", "ikemtrain", "report {r_label_minus_1} --out {out} --no-figures", 1, ["{r_label_minus_1}/predictions.npz", "'labels' must lie in 0 .. 59", "-1"]),
    ("report-metrics-string-loss", "ikemtrain", "report {r_metrics_str} --out {out}", 1, ["{r_metrics_str}/metrics.jsonl", "line 1: 'loss' must be a number"]),
    ("report-into-another-kind", "ikemtrain", "report {le} --out {run} --no-figures", 2, ["{run}", "a pretrain run"]),
    # ikemtrain export, demo, describe
    ("export-a-pretrain-run", "ikemtrain", "export {run} --out {out}.pt", 1, ["a pretrain run; export needs a student run"]),
    ("export-kind-says-distill", "ikemtrain", "export {says_distill} --out {out}.pt", 1, ["{says_distill}/checkpoint.pt", "distill checkpoint has no"]),
    ("export-says-distill-with-records", "ikemtrain", "export {says_distill_records} --out {out}.pt", 1, ["{says_distill_records}/checkpoint.pt", "distill checkpoint 'student.backbone' is absent, expected a dict"]),
    ("export-student-record-string", "ikemtrain", "export {dist_student_str} --out {out}.pt", 1, ["{dist_student_str}/checkpoint.pt", "distill checkpoint 'student' is a str, expected a dict"]),
    ("export-student-tensor-shape", "ikemtrain", "export {dist_shape} --out {out}.pt", 1, ["{dist_shape}/checkpoint.pt", "checkpoint tensor 'students.joint.encoder.A' has shape (2,)", "(3, 25, 25)"]),
    ("export-onto-a-file", "ikemtrain", "export {run} --out {student_out}", 2, ["{student_out} exists", "--overwrite"]),
    ("demo-into-a-run", "ikemtrain", "demo {run} --preset {preset}", 2, ["{run} is not empty", "a pretrain run"]),
    ("demo-into-a-held-folder", "ikemtrain", "demo {held} --preset {preset}", 1, ["{held}", "another process is writing it"]),
    ("describe-preset-hidden-1e9", "ikemtrain", "describe --preset {big_hidden}", 2, ["hidden_dim", "<= 8192"]),
]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file below ``folder`` (bytes, mtime) and every folder: what untouched
    means. FIFOs are listed, never opened."""
    out: dict[str, tuple[bytes, int]] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_fifo():
            out[key] = (b"fifo", 0)
        elif p.is_file():
            out[key] = (p.read_bytes(), p.stat().st_mtime_ns)
        else:
            out[key + "/"] = (b"", 0)
    return out


def test_the_table_covers_every_command() -> None:
    assert len(CASES) >= 60
    used = {(prog, args.split()[0]) for _, prog, args, _, _ in CASES}
    for prog, main in MAINS.items():
        assert {c for p, c in used if p == prog} == set(main.commands), prog
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def before(hostile) -> dict[str, tuple[bytes, int]]:
    return _snapshot(hostile["IN"])


@pytest.mark.parametrize(("program", "template", "code", "texts"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_hostile_input(hostile, before, request, program, template, code, texts) -> None:
    out = hostile["OUT"] / request.node.callspec.id
    common = f"--preset {hostile['preset']} --device cpu"
    fields = {k: str(v) for k, v in hostile.items()}
    fields.update(out=str(out), P=f"{common} --out {out}", Pnoout=common)
    args = template.format(**fields).split()
    if "{held}" in template:  # another process holds the folder's lock
        with open_run_folder(hostile["held"], "pretrain", "resume"):  # writes nothing
            snapshot = _snapshot(hostile["IN"])
            result = CliRunner().invoke(MAINS[program], args, catch_exceptions=False)
            assert _snapshot(hostile["IN"]) == snapshot, "an input was changed"
    else:
        result = CliRunner().invoke(MAINS[program], args, catch_exceptions=False)
    output = result.output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    assert result.exit_code == code, output
    line = errors[0] if code == 1 else output  # usage errors put the hint on the line before
    for text in texts:
        assert text.format(**fields) in line, (text, output)
    assert _snapshot(hostile["IN"]) == before, "an input was changed"


def test_the_guarantees_cite_tests_that_exist() -> None:
    """docs/guarantees.md names, for each promise, the tests that show it: they must exist."""
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "guarantees.md").read_text()
    current, cited = None, 0
    for m in re.finditer(r"`(test_\w+\.py)(?:::(\w+))?`|`::(\w+)`", text):
        current = m.group(1) or current
        name = m.group(2) or m.group(3)
        if name:
            source = (Path(__file__).parent / current).read_text()
            assert f"def {name}(" in source, f"{current}::{name}"
            cited += 1
    assert cited >= 20
