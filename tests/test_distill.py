"""Teacher–student distillation: losses vs numpy twins, frozen teacher, exact resume,
wrong teachers, student linear evaluation, export and ``Student.load``, parameter count."""

from __future__ import annotations

import json
from pathlib import Path

import naive_losses as naive
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_data import make_cache

from cli.ikemtrain_cli import main
from ikemtrain import Student
from ikemtrain.config import DistillConfig, LinearEvalConfig, PretrainConfig, load_preset
from ikemtrain.engine import distill, linear_eval, pretrain
from ikemtrain.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ikemtrain.engine.linear_eval import build_encoders
from ikemtrain.engine.loop import build_model
from ikemtrain.errors import OutputExistsError
from ikemtrain.losses import distill_loss, topk_indices
from ikemtrain.methods.distill import STUDENT_MODALITIES, DistillModel
from ikemtrain.student import describe_student, export_student
from skelmod.cache import CacheReader
from skelmod.layout import MODALITY_NAMES

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TAU = 0.07
BACKBONE = {"hidden_channels": 4, "hidden_dim": 16, "dropout": 0.5}


def unit(*shape, dim, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=dim)


def np_(t):
    return t.detach().double().numpy()


# --- losses -------------------------------------------------------------------------------


def _pair(dtype, b=5, d=12, k=30):
    s_u, q_v = unit(b, d, dim=1, seed=1).to(dtype), unit(b, 4, dim=1, seed=2).to(dtype)
    t = unit(b, d, dim=1, seed=3).to(dtype)
    bank_t, bank_v = unit(d, k, dim=0, seed=4).to(dtype), unit(4, k, dim=0, seed=5).to(dtype)
    return s_u, t, s_u @ bank_t, q_v @ bank_v


@pytest.mark.parametrize("context", [True, False])
@pytest.mark.parametrize("topk", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_implemented_loss_matches_twin(context, topk, dtype):
    s_u, t, sim_u, sim_v = _pair(dtype)
    got = distill_loss(s_u, t, sim_u, sim_v, TAU, topk, context, "implemented").item()
    want = naive.distill_implemented(np_(s_u), np_(t), np_(sim_u), np_(sim_v), TAU, topk, context)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    if dtype == torch.float64:
        assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("topk", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_paper_loss_matches_twin(topk, dtype):
    s_u, t, sim_u, sim_v = _pair(dtype)
    got = distill_loss(s_u, t, sim_u, sim_v, TAU, topk, True, "paper").item()
    want = naive.distill_paper(np_(s_u), np_(t), np_(sim_u), np_(sim_v), TAU, topk)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    if dtype == torch.float64:
        assert got == pytest.approx(want, rel=1e-12)


def test_mined_negatives_are_the_teachers_nearest_neighbours():
    _, _, _, sim_v = _pair(torch.float64)
    assert topk_indices(sim_v, 3).tolist() == naive.mined_negatives(np_(sim_v), 3)
    # moving the teacher's nearest neighbour moves the positive, hence the loss
    s_u, t, sim_u, _ = _pair(torch.float64)
    other = sim_v.clone()
    other[:, 0] = 2.0  # now j_v = 0 for every row
    for form in ("implemented", "paper"):
        a = distill_loss(s_u, t, sim_u, sim_v, TAU, 1, True, form)
        b = distill_loss(s_u, t, sim_u, other, TAU, 1, True, form)
        assert not torch.isclose(a, b)
    with pytest.raises(ValueError, match="form must be one of"):
        distill_loss(s_u, t, sim_u, sim_v, TAU, 1, True, "eq7")


def _tiny_model(**kwargs) -> DistillModel:
    torch.manual_seed(0)
    return DistillModel(
        MODALITY_NAMES,
        STUDENT_MODALITIES,
        backbone=BACKBONE,
        feature_dim=4,
        head_bn=False,
        **{**DistillConfig(queue_size=16).model_kwargs(), **kwargs},
    )


def _views(n=3, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, 3, t, 25, 2, generator=g) for m in MODALITY_NAMES}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"reference_compat": True}, {"loss_form": "paper"}, {"context": False, "topk": 2}],
)
def test_model_loss_matches_twin(kwargs):
    model = _tiny_model(tau=0.1, **kwargs).train()
    for bank in [*model.banks.values(), model.bank_teacher]:  # distinct past entries
        bank.enqueue(F.normalize(torch.randn(16, bank.dim), dim=1))
    out = model(_views(seed=1), _views(seed=2), return_details=True)
    d = out["details"]
    banks = {v: np_(b) for v, b in d["banks"].items()}
    compat = kwargs.get("reference_compat", False)
    per, total = naive.distill_total(
        {u: np_(s) for u, s in d["s"].items()},
        {v: np_(q) for v, q in d["q"].items()},
        banks,
        banks["teacher"],
        0.1,
        kwargs.get("topk", 1),
        kwargs.get("context", True),
        kwargs.get("loss_form", "implemented"),
        sim_banks={"angular_velocity": "bone"} if compat else None,
    )
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    for u in STUDENT_MODALITIES:
        assert out[f"loss/{u}"].item() == pytest.approx(per[u], rel=1e-5)
    assert model.student_dim == len(MODALITY_NAMES) * 4  # 768 at the paper's width
    # t is the normalised concatenation of the teacher's embeddings, and it was enqueued
    t = F.normalize(torch.cat([d["q"][v] for v in MODALITY_NAMES], dim=1), dim=1)
    assert torch.allclose(d["t"], t)
    assert torch.equal(model.bank_teacher.bank[:, :3], t.T)
    assert torch.equal(model.banks["bone"].bank[:, :3], d["q"]["bone"].T)


def test_omega_similarity_uses_the_omega_bank_unless_compat():
    assert _tiny_model().similarity_bank["angular_velocity"] == "angular_velocity"
    assert _tiny_model(reference_compat=True).similarity_bank["angular_velocity"] == "bone"
    a, b = _tiny_model(), _tiny_model(reference_compat=True)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()  # same teacher behaviour, so only the bank differs
    assert not torch.isclose(
        a(_views(), _views(seed=3))["loss"], b(_views(), _views(seed=3))["loss"]
    )


# --- frozen teacher -----------------------------------------------------------------------


def _teacher_state() -> dict:
    torch.manual_seed(5)
    cfg = PretrainConfig(queue_size=8, feature_dim=4, **BACKBONE)
    return build_model(cfg).state_dict()


@pytest.mark.parametrize("compat", [False, True])
def test_teacher_is_frozen(compat):
    pre = _teacher_state()
    model = _tiny_model(reference_compat=compat)
    model.load_teacher(pre)
    assert torch.equal(
        model.teacher["velocity"].encoder.data_bn.weight,
        pre["branches.velocity.encoder_q.data_bn.weight"],
    )
    assert torch.equal(
        model.teacher["bone"].head.layers[2].weight, pre["branches.bone.head_q.layers.2.weight"]
    )
    params_before = {k: v.clone() for k, v in model.teacher.named_parameters()}
    buffers_before = {k: v.clone() for k, v in model.teacher.named_buffers()}
    students_before = {k: v.clone() for k, v in model.students.named_parameters()}
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.5, momentum=0.9, weight_decay=1e-4
    )
    model.train()
    for step in range(3):
        out = model(_views(seed=step), _views(seed=10 + step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert all(m.training == compat for m in model.teacher.modules())  # the teacher mode bug
    assert all(m.training for m in model.students.modules())
    for k, v in model.teacher.named_parameters():
        assert torch.equal(v, params_before[k]), k
    moved = [k for k, v in model.teacher.named_buffers() if not torch.equal(v, buffers_before[k])]
    # eval mode keeps the BN running statistics; the reference's train mode drifts them
    assert bool(moved) == compat and all("running" in k or "num_batches" in k for k in moved)
    assert any(not torch.equal(v, students_before[k]) for k, v in model.students.named_parameters())


@pytest.mark.parametrize("init", ["random", "teacher"])
def test_student_init_copies_the_teachers_encoders_only_when_asked(init):
    pre = _teacher_state()
    model = _tiny_model(student_init=init)
    model.load_teacher(pre)
    for u in STUDENT_MODALITIES:
        teacher_enc = model.teacher[u].encoder.state_dict()
        student_enc = model.students[u].encoder.state_dict()
        same = [torch.equal(v, teacher_enc[k]) for k, v in student_enc.items()]
        # copied: every weight and BN statistic is the teacher's own modality's
        assert all(same) if init == "teacher" else not all(same), u
        w, wt = model.students[u].encoder.data_bn.weight, model.teacher[u].encoder.data_bn.weight
        assert w.requires_grad and w.data_ptr() != wt.data_ptr()  # a copy, trainable
    assert model.students["joint"].head.layers[0].out_features == 6 * 4  # heads stay fresh
    if init == "teacher":  # each student gets its own modality's encoder, not another one's
        key = "st_gcn_networks.0.gcn.conv.weight"
        for u in STUDENT_MODALITIES:
            w = model.students[u].encoder.state_dict()[key]
            assert torch.equal(w, pre[f"branches.{u}.encoder_q.{key}"])
            others = [v for v in MODALITY_NAMES if v != u]
            assert not any(torch.equal(w, pre[f"branches.{v}.encoder_q.{key}"]) for v in others)
    with pytest.raises(ValueError, match="student_init"):
        _tiny_model(student_init="imagenet")


# --- runs: fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("distill") / "c.h5", n=24, t=24, classes=3)


def _pretrain_cfg(**changes) -> PretrainConfig:
    base = PretrainConfig(
        epochs=1,
        cross_epoch=1,
        batch_size=4,
        queue_size=8,
        feature_dim=4,
        workers=0,
        seed=2,
        **BACKBONE,
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def teacher(cache: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    pretrain(_pretrain_cfg(), cache, out, device="cpu", echo=None, tensorboard=False)
    return out


def dcfg(**changes) -> DistillConfig:
    base = DistillConfig(
        epochs=3, lr=0.1, steps=(2,), batch_size=4, queue_size=8, workers=0, seed=1
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def student(cache: Path, teacher: Path, tmp_path_factory) -> Path:
    """Three uninterrupted epochs (lr step after epoch 2)."""
    out = tmp_path_factory.mktemp("student")
    lines: list[str] = []
    distill(dcfg(), cache, teacher, out, device="cpu", echo=lines.append, tensorboard=False)
    (out / "stdout.txt").write_text("\n".join(lines))
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- runs: distillation -------------------------------------------------------------------


def test_distill_run_records_progress_and_plain_settings(student: Path, teacher: Path) -> None:
    records = _metrics(student)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.1, 0.01])
    assert all(set(r["losses"]) == set(STUDENT_MODALITIES) and "stage" not in r for r in records)
    for r in records:
        assert r["loss"] == pytest.approx(sum(r["losses"].values()), rel=1e-5)
        assert r["samples_per_s"] > 0 and r["iterations"] == 3
    lines = (student / "stdout.txt").read_text().splitlines()
    assert lines[0].startswith("epoch 1/3 loss ") and "[joint " in lines[0]
    assert "lr 0.1000" in lines[0] and "samples/s" in lines[0]
    state = load_checkpoint(student)
    assert state["kind"] == "distill" and state["epoch"] == 3
    assert state["config"] == dcfg().to_dict()
    assert state["teacher"]["config"] == load_checkpoint(teacher)["config"]
    assert state["student"]["head_dim"] == 6 * 4 and state["student"]["t_target"] == 24
    json.dumps({k: state[k] for k in ("config", "teacher", "student", "teacher_run")})  # plain
    # the checkpoint's teacher is the pre-training run's query side, untouched
    pre = load_checkpoint(teacher)["model"]
    for v in MODALITY_NAMES:
        assert torch.equal(
            state["model"][f"teacher.{v}.encoder.data_bn.running_mean"],
            pre[f"branches.{v}.encoder_q.data_bn.running_mean"],
        )
        assert torch.equal(
            state["model"][f"teacher.{v}.head.layers.0.weight"],
            pre[f"branches.{v}.head_q.layers.0.weight"],
        )


def test_distill_resume_continues_exactly(cache: Path, teacher: Path, student: Path, tmp_path):
    run = tmp_path / "run"
    distill(dcfg(epochs=2), cache, teacher, run, device="cpu", echo=None, tensorboard=False)
    with pytest.raises(FileExistsError, match="exists; resume to continue"):
        distill(dcfg(), cache, teacher, run, device="cpu", echo=None, tensorboard=False)
    with pytest.raises(ValueError, match=r"tau: 0.07 -> 0.2"):
        distill(dcfg(tau=0.2), cache, teacher, run, resume=True, device="cpu", echo=None)
    distill(dcfg(), cache, teacher, run, resume=True, device="cpu", echo=None, tensorboard=False)
    resumed, whole = load_checkpoint(run), load_checkpoint(student)
    assert resumed["epoch"] == 3
    assert [
        k for k in whole["model"] if not torch.equal(resumed["model"][k], whole["model"][k])
    ] == []
    assert [r["loss"] for r in _metrics(run)] == [r["loss"] for r in _metrics(student)]


def test_resume_refuses_another_teacher_or_kind(cache: Path, teacher: Path, tmp_path) -> None:
    run = tmp_path / "run"
    distill(dcfg(epochs=1), cache, teacher, run, device="cpu", echo=None, tensorboard=False)
    other = tmp_path / "other-teacher"
    pretrain(_pretrain_cfg(seed=9), cache, other, device="cpu", echo=None, tensorboard=False)
    with pytest.raises(ValueError, match="different teacher"):
        distill(dcfg(), cache, other, run, resume=True, device="cpu", echo=None)
    # the run folder says what it is (run.json), before its checkpoint is read
    with pytest.raises(OutputExistsError, match="holds a pretrain run, not a distill run"):
        distill(dcfg(), cache, teacher, teacher, resume=True, device="cpu", echo=None)
    (teacher / "run.json").rename(tmp_path / "teacher-run.json")  # a folder of before run.json
    try:
        with pytest.raises(CheckpointError, match="a pretrain checkpoint; cannot resume it as"):
            distill(dcfg(), cache, teacher, teacher, resume=True, device="cpu", echo=None)
    finally:
        (tmp_path / "teacher-run.json").rename(teacher / "run.json")


# --- wrong teachers -----------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def teacher_le(cache: Path, teacher: Path, tmp_path_factory) -> Path:
    """A linear evaluation of the teacher's joint encoder."""
    out = tmp_path_factory.mktemp("teacher-le")
    cfg = LinearEvalConfig(epochs=1, batch_size=4)
    linear_eval(cfg, cache, out, "xsub", "joint", checkpoint=teacher, device="cpu", echo=None)
    return out


def test_wrong_teachers_are_one_line_errors(cache, teacher, student, teacher_le, tmp_path):
    three = tmp_path / "three"
    pretrain(
        _pretrain_cfg(modalities=("joint", "velocity", "bone")),
        cache,
        three,
        device="cpu",
        echo=None,
        tensorboard=False,
    )
    state = {**load_checkpoint(teacher), "layout": "kinect-v1-20"}
    layout = save_checkpoint(tmp_path / "layout" / "checkpoint.pt", state)
    cases = [
        (
            three,
            "pre-trained on 3 modalities (joint, velocity, bone); the teacher must be a "
            "six-modality run (pre-trained with modalities 6) (--teacher)",
        ),
        (student, "a student (distillation) run, not a pre-training run"),
        (student, "`ikemtrain pretrain` run (--teacher)"),
        (teacher_le, "is a linear-evaluation run"),
        (teacher_le / "heads.pt", "linear-eval heads, not a pre-training run"),
        (layout.parent, "joint layout ntu25, but checkpoint"),
    ]
    for bad, message in cases:
        result = invoke("distill", cache, "--split", "xsub", "--teacher", bad,
                        "--out", tmp_path / "o", "--device", "cpu")  # fmt: skip
        assert result.exit_code == 1, (bad, result.output)
        assert result.output.startswith("Error: ") and message in result.output, result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output


# --- student linear evaluation, export, Student -------------------------------------------


@pytest.fixture(scope="module")
def student_le(cache: Path, student: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student-le")
    cfg = LinearEvalConfig(epochs=4, lr=0.5, steps=(3,), batch_size=4, eval_interval=2)
    linear_eval(cfg, cache, out, "xsub", "3s", checkpoint=student, device="cpu", echo=None)
    return out


def test_student_linear_eval_streams(
    cache: Path, teacher: Path, student: Path, student_le, tmp_path
):
    results = json.loads((student_le / "results.json").read_text())
    assert results["encoders"] == "distill" and results["modalities"] == list(STUDENT_MODALITIES)
    assert results["distill_config"] == dcfg().to_dict()
    heads = torch.load(student_le / "heads.pt", weights_only=True)
    assert heads["kind"] == "linear-eval" and set(heads["heads"]) == {
        f"{m}.{p}" for m in STUDENT_MODALITIES for p in ("weight", "bias")
    }
    cfg = LinearEvalConfig(epochs=1, batch_size=4)
    one = linear_eval(
        cfg,
        cache,
        tmp_path / "j",
        "xsub",
        "student-bone",
        checkpoint=student,
        device="cpu",
        echo=None,
    )
    assert one["modalities"] == ["bone"]
    with pytest.raises(ValueError, match="student run; its streams are student-joint"):
        linear_eval(cfg, cache, tmp_path / "x", "xsub", "6s", checkpoint=student, device="cpu")
    with pytest.raises(ValueError, match="'student-joint' needs a student run"):
        linear_eval(
            cfg, cache, tmp_path / "x", "xsub", "student-joint", checkpoint=teacher, device="cpu"
        )


def test_export_refuses_an_existing_file_in_each_front_end_s_words(tmp_path: Path) -> None:
    """The library names its keyword (``overwrite=True``), the command line its flag; the
    existing file is checked first and left as it was."""
    from ikemtrain import api

    out = tmp_path / "student.pt"
    out.write_bytes(b"someone's student")
    with pytest.raises(OutputExistsError) as e:
        api.export(tmp_path / "no-run", out)
    assert str(e.value) == f"{out} exists; set overwrite to replace it"
    assert e.value.param == "overwrite"
    result = invoke("export", tmp_path, "--out", out)
    assert result.exit_code == 2
    assert f"{out} exists; set overwrite to replace it (--overwrite)" in result.output
    assert out.read_bytes() == b"someone's student"


def test_export_overwrites_only_a_student_file(tmp_path: Path) -> None:
    """As a run folder is replaced only by a run of its kind: ``--overwrite`` never replaces a
    checkpoint, a folder or any other file, and leaves it as it was."""
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"kind": "pretrain", "model": {}}, checkpoint)
    folder = tmp_path / "runs"
    (folder / "pretrain").mkdir(parents=True)
    text = tmp_path / "notes.txt"
    text.write_text("precious")
    cases = [(checkpoint, "a pretrain file, not a student file", "refusing to overwrite it"),
             (folder, "a folder", "is a directory"),  # the command line's -o takes a file
             (text, "not a student file", "refusing to overwrite it")]  # fmt: skip
    for out, found, says in cases:
        before = out.read_bytes() if out.is_file() else sorted(out.rglob("*"))
        with pytest.raises(OutputExistsError, match="refusing to overwrite it") as e:
            export_student(tmp_path / "no-run", out, overwrite=True)
        assert f"{out}: {found};" in str(e.value)
        result = invoke("export", tmp_path, "--out", out, "--overwrite")
        assert result.exit_code == 2 and says in result.output, result.output
        assert before == (out.read_bytes() if out.is_file() else sorted(out.rglob("*")))


def test_export_round_trip_gives_the_trained_features(cache, student, student_le, tmp_path):
    path = tmp_path / "student.pt"
    export_student(student, path, classifier=student_le)
    raw = torch.load(path, weights_only=True)  # tensors and plain types only
    assert raw["kind"] == "student" and raw["config"]["num_class"] == 60
    loaded = Student.load(path)
    reader = CacheReader(cache)
    idx = reader.split_indices("xsub-val")
    joints, frames = reader.read("joint", idx), reader.meta["frame_count"][idx]
    feats = loaded.features(joints, frames)
    # the trained students, in eval mode, on the cached modalities (what linear-eval used)
    state = load_checkpoint(student)
    encoders = build_encoders(
        STUDENT_MODALITIES, state["student"]["backbone"], state["model"], "students.{m}.encoder."
    )
    heads = torch.load(student_le / "heads.pt", weights_only=True)["heads"]
    with torch.no_grad():
        logits = 0
        for m in STUDENT_MODALITIES:
            want = encoders[m](torch.from_numpy(reader.read(m, idx)))
            np.testing.assert_allclose(feats[m], want.numpy(), rtol=1e-5, atol=1e-6)
            logits = logits + F.linear(want, heads[f"{m}.weight"], heads[f"{m}.bias"])
    np.testing.assert_allclose(loaded.logits(joints, frames), (logits / 3).numpy(), atol=1e-5)
    np.testing.assert_array_equal(loaded.predict(joints, frames), (logits / 3).argmax(1).numpy())
    assert loaded.predict(torch.from_numpy(joints[:2]), frames[:2]).shape == (2,)
    with pytest.raises(ValueError, match="T=10 frames; this student was trained on T=24"):
        loaded.features(joints[:, :, :10], frames)
    # implausible inputs are refused, never labelled (issue 24.5)
    for value, shown in ((np.nan, "nan"), (np.inf, "inf"), (1e30, r"1e\+30")):
        bad = joints[:3].copy()
        bad[1, 2, 5, 7, 0] = value
        with pytest.raises(ValueError, match=rf"joints\[1\] holds {shown} at frame 6, joint 8"):
            loaded.predict(bad, frames[:3])
    with pytest.raises(ValueError, match="frame_count must lie in 1 .. 10000"):
        loaded.predict(joints[:3], [0, 50, 50])
    with pytest.raises(ValueError, match="frame_count must be an integer"):
        loaded.predict(joints[:3], [0.5, 50, 50])
    # a student file whose sizes are beyond the limits is refused before anything is built
    for key, value in (("hidden_dim", 10**9), ("hidden_channels", 4 * 10**6)):
        big = {**raw, "config": {**raw["config"], "backbone": {**raw["config"]["backbone"],
                                                               key: value}}}  # fmt: skip
        torch.save(big, tmp_path / "big.pt")
        with pytest.raises(CheckpointError, match=f"backbone {key} must be an integer in 1 .."):
            Student.load(tmp_path / "big.pt")
    torch.save({**raw, "config": {**raw["config"], "num_class": 10**10}}, tmp_path / "big.pt")
    with pytest.raises(CheckpointError, match="num_class must be an integer in 1 .. 32767"):
        Student.load(tmp_path / "big.pt")


def test_export_without_classifier_refuses_to_predict(
    cache, teacher, student, teacher_le, tmp_path
):
    bare = export_student(student, tmp_path / "bare.pt")
    reader = CacheReader(cache)
    joints = reader.read("joint", np.arange(2))
    assert Student.load(tmp_path / "bare.pt").features(joints, 60)["joint"].shape == (2, 16)
    with pytest.raises(RuntimeError, match="without a classifier.*classifier=LE_RUN"):
        bare.predict(joints, 60)
    with pytest.raises(CheckpointError, match="a pretrain run; export needs a student run"):
        export_student(teacher, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not on the students of"):
        export_student(student, tmp_path / "x.pt", classifier=teacher_le)
    with pytest.raises(CheckpointError, match="not a student file"):
        Student.load(teacher_le / "heads.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable student file"):
        Student.load(tmp_path / "junk.pt")
    # a student file whose tensor does not fit the model its config describes
    state = torch.load(tmp_path / "bare.pt", weights_only=True)
    state["encoders"]["joint"]["A"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError) as e:
        Student.load(tmp_path / "shape.pt")
    assert str(e.value) == (
        f"{tmp_path / 'shape.pt'}: checkpoint tensor 'encoders joint.A' has shape (2, 2), but "
        "the model its settings describe has (3, 25, 25)"
    )
    state["encoders"]["joint"] = "weights"
    torch.save(state, tmp_path / "str.pt")
    with pytest.raises(CheckpointError, match="student file encoders joint: not a dict"):
        Student.load(tmp_path / "str.pt")


def test_cli_distill_linear_eval_export(cache: Path, teacher: Path, tmp_path: Path) -> None:
    preset = tmp_path / "mini.toml"
    preset.write_text(
        "[distill]\nepochs = 2\nsteps = [1]\nbatch_size = 4\nqueue_size = 8\nworkers = 0\n"
        "[linear_eval]\nepochs = 2\nlr = 0.5\nbatch_size = 4\neval_interval = 1\n"
    )
    run = tmp_path / "run"
    common = ("--split", "xsub", "--teacher", teacher, "--preset", preset, "--out", run,
              "--device", "cpu", "--precision", "bf16", "--stream-threads", "1")  # fmt: skip
    result = invoke(
        "distill", cache, *common, "--epochs", "1", "--loss-form", "paper",
        "--student-init", "teacher",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 1/1 loss" in result.output and "samples/s" in result.output
    result = invoke(
        "distill", cache, *common, "--loss-form", "paper", "--student-init", "teacher", "--resume"
    )
    assert result.exit_code == 0 and "epoch 2/2 loss" in result.output, result.output
    saved = load_checkpoint(run)["config"]
    assert (saved["loss_form"], saved["student_init"]) == ("paper", "teacher")
    assert (saved["precision"], saved["stream_threads"]) == ("bf16", 1)  # as pretrain's
    le = tmp_path / "le"
    result = invoke(
        "linear-eval", cache, "--split", "xsub", "--checkpoint", run,
        "--streams", "student-velocity", "--preset", preset, "--out", le, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0 and "student-velocity: top-1" in result.output, result.output
    result = invoke("export", run, "--classifier", le, "--out", tmp_path / "s.pt")
    assert result.exit_code == 0, result.output
    assert "classifier velocity (60 classes)" in result.output
    result = invoke("export", run, "--out", tmp_path / "s.pt")
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert invoke("export", run, "--out", tmp_path / "s.pt", "--overwrite").exit_code == 0
    assert Student.load(tmp_path / "s.pt").classifier is None
    result = invoke("export", run, "--classifier", le, "--out", tmp_path / "s.pt", "--overwrite")
    assert result.exit_code == 0, result.output
    assert Student.load(tmp_path / "s.pt").config()["classifier_modalities"] == ["velocity"]


def test_describe_counts_the_deployed_student() -> None:
    result = invoke("describe", "--student", "--num-class", "60")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1].split() == ["total", "2,510,400"]  # 3 x 836,800, the paper's 2.510M
    assert ["encoders.joint", "821,380"] in [ln.split() for ln in lines]
    assert ["classifier.bone", "15,420"] in [ln.split() for ln in lines]
    rows = dict(
        describe_student(STUDENT_MODALITIES, load_preset("paper-ntu60").pretrain.backbone, 120)
    )
    assert rows["total"] == 3 * 852_220


def test_presets_have_the_paper_distillation() -> None:
    d = load_preset("paper-ntu60").distill
    assert (d.epochs, d.lr, d.steps, d.sgd_momentum, d.weight_decay) == (
        150,
        0.1,
        (125,),
        0.9,
        1e-4,
    )
    assert (d.batch_size, d.tau, d.queue_size, d.topk, d.context) == (128, 0.07, 32768, 1, True)
    assert (d.loss_form, d.reference_compat) == ("implemented", False)
    t = load_preset("tiny").distill
    assert t.queue_size < d.queue_size and t.epochs < d.epochs


def test_distill_on_another_joint_layout(tmp_path: Path) -> None:
    """An N-UCLA-like cache (kinect-v1-20: 20 joints, one body): teacher, students and the
    exported student all take the layout from the data."""
    cache = make_cache(tmp_path / "k.h5", n=16, t=24, classes=3, layout="kinect-v1-20")
    cfg = _pretrain_cfg(split="xview")
    pretrain(cfg, cache, tmp_path / "t", device="cpu", echo=None, tensorboard=False)
    d = dcfg(epochs=1, split="xview")
    distill(d, cache, tmp_path / "t", tmp_path / "s", device="cpu", echo=None, tensorboard=False)
    state = load_checkpoint(tmp_path / "s")
    assert (
        state["layout"] == "kinect-v1-20"
        and state["student"]["backbone"]["layout"] == state["layout"]
    )
    student = export_student(tmp_path / "s", tmp_path / "s.pt")
    reader = CacheReader(cache)
    joints = reader.read("joint", np.arange(3))
    feats = Student.load(tmp_path / "s.pt").features(joints, reader.meta["frame_count"][:3])
    assert feats["bone"].shape == (3, 16) and student.layout == "kinect-v1-20"
    with pytest.raises(ValueError, match="V=20"):
        student.features(np.zeros((1, 3, 24, 25, 2), np.float32), 24)


def test_a_head_bn_teacher_gives_head_bn_students(cache: Path, tmp_path: Path) -> None:
    pretrain(_pretrain_cfg(head_bn=True), cache, tmp_path / "t", device="cpu", echo=None,
             tensorboard=False)  # fmt: skip
    distill(dcfg(epochs=1), cache, tmp_path / "t", tmp_path / "s", device="cpu", echo=None,
            tensorboard=False)  # fmt: skip
    state = load_checkpoint(tmp_path / "s")
    assert state["student"]["head_bn"] is True
    assert "students.joint.head.layers.1.running_mean" in state["model"]  # BatchNorm1d
    assert "teacher.bone.head.layers.4.running_var" in state["model"]
    record = _metrics(tmp_path / "s")[0]
    assert set(record["collapse"]) == set(STUDENT_MODALITIES)
    assert load_preset("nucla-cpu").distill.batch_size == 32
