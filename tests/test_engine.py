"""ikemtrain.engine: schedule, stages, exact resume, checkpoints, metrics, config, DDP."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_data import make_cache

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ikemtrain import augment
from ikemtrain.config import (
    PRESET_DIR,
    ConfigError,
    DistillConfig,
    FinetuneConfig,
    LinearEvalConfig,
    PretrainConfig,
    _Settings,
    load_preset,
    lr_at,
    modality_set,
    preset_names,
    scheduled_lr,
    setting,
    stream_modalities,
    warmup_factor,
)
from ikemtrain.data import PretrainDataset
from ikemtrain.engine import linear_eval, pretrain
from ikemtrain.engine.checkpoint import (
    CheckpointError,
    CheckpointExistsError,
    load_checkpoint,
    save_checkpoint,
)
from ikemtrain.engine.distributed import resolve_device
from ikemtrain.engine.finite import check_finite_features, non_finite_loss
from ikemtrain.engine.loop import build_model, seed_everything
from ikemtrain.errors import NonFiniteLossError
from ikemtrain.losses import distill_loss, ekem_loss
from ikemtrain.methods.branch import ModalityBranch
from ikemtrain.methods.distill import DistillModel, Stream
from ikemtrain.methods.pretrain import PretrainModel
from ikemtrain.nn.heads import ProjectionHead
from ikemtrain.nn.stgcn import STGCN
from skelmod.cache import CacheError, CacheReader


@pytest.fixture(autouse=True, scope="module")
def deterministic():
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # the tiny model gains nothing from threads
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("engine") / "c.h5", n=16, t=24)


def tiny(**changes) -> PretrainConfig:
    base = PretrainConfig(
        modalities=("joint", "velocity"),
        epochs=3,
        cross_epoch=1,
        lr=0.1,
        steps=(2,),
        batch_size=4,
        queue_size=8,
        momentum=0.9,
        hidden_channels=4,
        hidden_dim=16,
        feature_dim=8,
        workers=0,
        seed=1,
    )
    return base.replace(**changes)


def _states_equal(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def _read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- config -----------------------------------------------------------------------------------


def test_lr_schedule_is_the_step_rule() -> None:
    assert [lr_at(0.1, [250], e) for e in (1, 250, 251, 300)] == [0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1]
    assert lr_at(3.0, [2, 4], 5) == pytest.approx(0.03)
    assert lr_at(3.0, [], 99) == 3.0


def test_warmup_rises_linearly_over_its_epochs_then_stops() -> None:
    got = [warmup_factor(2, e, i, 5) for e in (1, 2, 3) for i in range(5)]
    assert got == pytest.approx([k / 10 for k in range(1, 11)] + [1.0] * 5)
    assert {warmup_factor(0, e, i, 5) for e in (1, 2) for i in range(5)} == {1.0}
    assert PretrainConfig().warmup_epochs == 0 and DistillConfig().warmup_epochs == 0  # paper


def test_warmup_sets_each_steps_lr_and_resumes_exactly(cache: Path, tmp_path: Path) -> None:
    """The optimiser sees the warmed-up lr at every step (steps 1-6 of 2 epochs of 3 steps:
    lr/6 ... lr), and a run stopped inside the warm-up resumes to the uninterrupted weights."""
    seen: list[float] = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    cfg = tiny(warmup_epochs=2)
    whole = tmp_path / "whole"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", spy)
        pretrain(cfg, cache, whole, device="cpu", echo=None, tensorboard=False)
    steps = len(seen) // 3
    want = [0.1 * (k + 1) / (2 * steps) for k in range(2 * steps)] + [0.01] * steps
    assert seen == pytest.approx(want)  # epoch 3 is after the step at 2: 0.1 * 0.1
    part = tmp_path / "part"
    pretrain(cfg.replace(epochs=1), cache, part, device="cpu", echo=None, tensorboard=False)
    pretrain(cfg, cache, part, resume=True, device="cpu", echo=None, tensorboard=False)
    assert _states_equal(load_checkpoint(part)["model"], load_checkpoint(whole)["model"]) == []
    plain = tmp_path / "plain"
    pretrain(tiny(), cache, plain, device="cpu", echo=None, tensorboard=False)
    assert _states_equal(load_checkpoint(plain)["model"], load_checkpoint(whole)["model"])


def test_cosine_schedule_warms_up_then_decays_to_zero_over_the_run() -> None:
    """``schedule = "cosine"``: 2 warm-up epochs of 5 steps rise linearly to lr, then the
    remaining 20 steps follow 0.5 (1 + cos(pi k / 20)); ``steps`` plays no part. The step
    schedule is unchanged: lr_at for the epoch times the warm-up factor."""
    cfg = PretrainConfig(epochs=6, lr=0.4, steps=(1,), warmup_epochs=2, schedule="cosine")
    got = [scheduled_lr(cfg, e, i, 5) for e in range(1, 7) for i in range(5)]
    want = [0.4 * (k + 1) / 10 for k in range(10)]
    want += [0.4 * 0.5 * (1 + np.cos(np.pi * k / 20)) for k in range(20)]
    assert got == pytest.approx(want)
    assert got[9] == pytest.approx(0.4) and got[10] == pytest.approx(0.4)  # no jump after warm-up
    assert got[-1] > 0 and got[-1] < 0.4 * 0.01  # decays towards 0 by the last step
    plain = cfg.replace(schedule="cosine", warmup_epochs=0)
    assert scheduled_lr(plain, 1, 0, 5) == pytest.approx(0.4)
    assert scheduled_lr(plain, 4, 0, 5) == pytest.approx(0.2)  # half way: half the lr
    step = cfg.replace(schedule="step")
    assert [scheduled_lr(step, e, 4, 5) for e in (1, 2, 3)] == pytest.approx([0.2, 0.04, 0.04])
    assert PretrainConfig().schedule == DistillConfig().schedule == "step"  # the paper's
    assert FinetuneConfig(schedule="cosine").schedule == "cosine"
    with pytest.raises(ConfigError, match=r"\[pretrain\] schedule: expected one of step, cosine"):
        PretrainConfig(schedule="linear")


def test_cosine_schedule_sets_each_steps_lr_and_resumes_exactly(
    cache: Path, tmp_path: Path
) -> None:
    """The optimiser sees the cosine lr at every step, and a run stopped after epoch 1 of 3
    resumes to the weights of the uninterrupted run (a different run than the step schedule)."""
    seen: list[float] = []
    original = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    cfg = tiny(schedule="cosine", warmup_epochs=1)
    whole = tmp_path / "whole"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", spy)
        pretrain(cfg, cache, whole, device="cpu", echo=None, tensorboard=False)
    n = len(seen) // 3
    want = [0.1 * (k + 1) / n for k in range(n)]
    want += [0.1 * 0.5 * (1 + np.cos(np.pi * k / (2 * n))) for k in range(2 * n)]
    assert seen == pytest.approx(want)
    assert [r["lr"] for r in _read_metrics(whole)] == pytest.approx(want[n - 1 :: n])
    part = tmp_path / "part"
    pretrain(cfg.replace(epochs=1), cache, part, device="cpu", echo=None, tensorboard=False)
    # resuming with the other schedule is refused: it would be another run
    with pytest.raises(ConfigError, match="schedule"):
        pretrain(tiny(), cache, part, resume=True, device="cpu", echo=None, tensorboard=False)
    pretrain(cfg, cache, part, resume=True, device="cpu", echo=None, tensorboard=False)
    assert _states_equal(load_checkpoint(part)["model"], load_checkpoint(whole)["model"]) == []
    step = tmp_path / "step"
    pretrain(tiny(warmup_epochs=1), cache, step, device="cpu", echo=None, tensorboard=False)
    assert _states_equal(load_checkpoint(step)["model"], load_checkpoint(whole)["model"])


def test_presets_load_and_match_the_paper() -> None:
    paper = load_preset("paper-ntu60")
    p, le = paper.pretrain, paper.linear_eval
    assert (p.epochs, p.cross_epoch, p.lr, p.steps, p.batch_size) == (300, 150, 0.1, (250,), 128)
    assert (p.queue_size, p.momentum, p.tau, p.topk, p.context) == (32768, 0.999, 0.07, 1, True)
    assert (p.hidden_channels, p.hidden_dim, p.feature_dim, p.weight_decay) == (16, 256, 128, 1e-4)
    assert (p.crop_ratio, p.shear, p.modalities) == (6, 0.5, modality_set(6))
    assert (le.epochs, le.lr, le.steps, le.batch_size, le.eval_interval) == (
        100,
        3.0,
        (80,),
        128,
        5,
    )
    assert le.weight_decay == 0.0
    # the authors' path: no departure switched on
    assert (p.head_bn, p.reference_compat, le.standardize) == (False, False, False)
    cpu = load_preset("nucla-cpu")
    assert cpu.pretrain.modalities == modality_set(6) and cpu.pretrain.ekem and cpu.pretrain.ikem
    assert cpu.pretrain.head_bn and cpu.linear_eval.standardize
    assert cpu.pretrain.hidden_dim < p.hidden_dim and cpu.pretrain.queue_size < 1020
    t = load_preset("tiny").pretrain
    assert t.modalities == modality_set(6) and t.hidden_dim < p.hidden_dim
    assert t.queue_size < p.queue_size and 2 <= t.epochs <= 10 and 0 < t.cross_epoch < t.epochs


def test_bad_settings_name_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[pretrain\] lr: expected a number > 0.0, got -1"):
        PretrainConfig(lr=-1)
    with pytest.raises(ConfigError, match=r"\[pretrain\] context: expected true or false"):
        PretrainConfig(context=1)
    with pytest.raises(ConfigError, match=r"\[linear_eval\] steps: expected increasing"):
        LinearEvalConfig(steps=(80, 20))
    with pytest.raises(ConfigError, match=r"\[pretrain\] modalities: unknown modalities speed"):
        PretrainConfig(modalities=("joint", "speed"))
    with pytest.raises(ConfigError, match=r"bones: expected one of 6v, 3v"):
        tiny(bones="9v")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pretrain]\nepochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: \[pretrain\] unknown key 'learning_rate'"):
        load_preset(bad)
    bad.write_text("[pretrain]\nepochs = 'ten'\n")
    with pytest.raises(ConfigError, match=r"bad.toml: \[pretrain\] epochs: expected an integer"):
        load_preset(str(bad))
    bad.write_text("[pretrain\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_preset(bad)
    bad.write_text("[linear-eval]\n")
    with pytest.raises(ConfigError, match="unknown table 'linear-eval'"):
        load_preset(bad)
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*paper-ntu60, tiny"):
        load_preset("huge")
    good = tmp_path / "good.toml"
    good.write_text("[pretrain]\nepochs = 7\nmodalities = 3\n[linear_eval]\nlr = 1\n")
    preset = load_preset(good)
    assert preset.pretrain.epochs == 7 and preset.pretrain.modalities == modality_set(3)
    assert preset.linear_eval.lr == 1.0 and preset.pretrain.lr == 0.1
    assert stream_modalities("3s") == ("joint", "velocity", "bone")
    with pytest.raises(ConfigError, match="unknown 'both'"):
        stream_modalities("both")


@pytest.mark.parametrize(
    ("table", "key", "value", "limit"),
    [
        ("pretrain", "hidden_dim", 10**9, 8192),
        ("pretrain", "feature_dim", 10**6, 8192),
        ("pretrain", "hidden_channels", 4 * 10**6, 256),
        ("pretrain", "queue_size", 10**12, 1 << 20),
        ("distill", "queue_size", 10**12, 1 << 20),
        ("linear_eval", "batch_size", 10**9, 1 << 16),
    ],
)
def test_sizes_are_bounded_before_anything_is_built(tmp_path, table, key, value, limit) -> None:
    """Issue 24.4: a preset (or a checkpoint's config, read with the same checks) cannot ask
    for a model or queue that exhausts the machine."""
    bad = tmp_path / "big.toml"
    bad.write_text(f"[{table}]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"\[{table}\] {key}: expected an integer <= {limit}"):
        load_preset(bad)


def test_batchnorm_heads_need_two_samples_per_batch() -> None:
    with pytest.raises(ConfigError, match=r"\[pretrain\] batch_size: BatchNorm heads"):
        PretrainConfig(head_bn=True, batch_size=1)
    assert PretrainConfig(head_bn=False, batch_size=1).batch_size == 1


def test_every_setting_carries_its_check() -> None:
    """Each field of each settings table is declared with its check (``setting``): a value of
    the wrong kind is refused naming the table and the field, and a field declared without a
    check cannot be constructed at all."""
    tables = {c._TABLE: c for c in _Settings.__subclasses__() if c.__module__ == "ikemtrain.config"}
    assert {"pretrain", "distill", "linear_eval", "finetune"} <= set(tables)
    for table, cls in tables.items():
        for f in dataclasses.fields(cls):
            assert callable(f.metadata.get("check")), f"{cls.__name__}.{f.name}"
            with pytest.raises(ConfigError, match=rf"^\[{table}\] {f.name}: "):
                cls(**{f.name: {"not": "a setting"}})

    @dataclasses.dataclass(frozen=True)
    class Unchecked(_Settings):
        epochs: int = setting(3, lambda v: v)
        width: int = 8

        _TABLE = "unchecked"

    with pytest.raises(TypeError, match="Unchecked.width has no check"):
        Unchecked()


def test_the_paper_run_is_the_defaults_and_presets_state_only_departures() -> None:
    """The paper's values live once, as the defaults; ``paper-ntu60`` adds only the
    reference's modality options and more workers, and no built-in preset repeats a default."""
    paper = load_preset("paper-ntu60")
    assert paper.pretrain == PretrainConfig(unit_axis=False, bones="6v", workers=4)
    assert paper.linear_eval == LinearEvalConfig()
    assert paper.distill == DistillConfig(workers=4)
    assert paper.finetune == FinetuneConfig(workers=4)
    for name in preset_names():
        preset = load_preset(name)
        data = tomllib.loads((PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8"))
        for table, values in data.items():
            default = type(getattr(preset, table))()
            for key in values:
                assert getattr(getattr(preset, table), key) != getattr(default, key), (
                    f"{name}.toml [{table}] {key} restates the default"
                )


def test_models_and_augmentations_take_settings_without_defaults_of_their_own() -> None:
    """The paper's values are stated only as the settings' defaults: a model, dataset,
    augmentation or loss keeps a default only for what is no setting (the ST-GCN constants,
    the joint layout and T of the cache) or for None (the cache's modality options)."""
    not_settings = {"in_channels", "edge_importance", "t_kernel", "layout", "t_target"}
    takers = [
        STGCN,
        ProjectionHead,
        ModalityBranch,
        PretrainModel,
        Stream,
        DistillModel,
        PretrainDataset,
        augment.augment,
        augment.temporal_crop,
        augment.shear,
        augment.shear_matrix,
        augment.rotate,
        ekem_loss,
        distill_loss,
    ]
    for taker in takers:
        own = {
            name: p.default
            for name, p in inspect.signature(taker).parameters.items()
            if p.default not in (inspect.Parameter.empty, None) and name not in not_settings
        }
        assert not own, f"{taker.__qualname__} has defaults of its own: {own}"


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


# --- training ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(cache: Path, tmp_path_factory) -> Path:
    """Three uninterrupted epochs (stage 1, then 2; lr step after epoch 2)."""
    run = tmp_path_factory.mktemp("full")
    lines: list[str] = []
    pretrain(tiny(), cache, run, device="cpu", echo=lines.append, tensorboard=False)
    (run / "stdout.txt").write_text("\n".join(lines))
    return run


def test_epoch_records_stages_and_lr(full_run: Path) -> None:
    records = _read_metrics(full_run)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["stage"] for r in records] == [1, 2, 2]
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.1, 0.01])
    assert all(r["iterations"] == 2 for r in records)  # 8 training samples, batches of 4
    assert set(records[0]["losses"]) == {"joint", "velocity"}
    assert not records[0]["terms"]
    assert set(records[1]["terms"]) == {
        "ekem/joint",
        "ekem/velocity",
        "ikem/joint",
        "ikem/velocity",
    }
    for r in records:
        assert r["loss"] == pytest.approx(sum(r["losses"].values()), rel=1e-5)
    printed = (full_run / "stdout.txt").read_text().splitlines()
    lines = [ln for ln in printed if ln.startswith("epoch ")]
    assert lines[0].startswith("epoch 1/3 stage 1 loss ")
    assert "[joint " in lines[0] and "velocity " in lines[0] and "lr 0.1000" in lines[0]
    assert "samples/s" in lines[2] and "lr 0.0100" in lines[2]


def test_epoch_records_the_collapse_signal(full_run: Path) -> None:
    records = _read_metrics(full_run)
    printed = (full_run / "stdout.txt").read_text().splitlines()
    warnings = [ln for ln in printed if ln.startswith("warning: ") and "projection head" in ln]
    for r in records:
        assert set(r["collapse"]) == {"joint", "velocity"}
        for stats in r["collapse"].values():
            assert set(stats) == {"std", "alignment", "uniformity"}
            assert 0.0 <= stats["std"] <= 2.0 and 0.0 <= stats["alignment"] <= 4.0
            assert -4.0 <= stats["uniformity"] <= 1e-6
        assert r["collapsed"] == [m for m in r["collapse"] if r["collapse"][m]["std"] < 0.1]
        for m in r["collapsed"]:
            assert any(f"epoch {r['epoch']}: the {m} projection head" in w for w in warnings)
    assert len(warnings) == sum(len(r["collapsed"]) for r in records)


def test_checkpoint_holds_everything(full_run: Path) -> None:
    state = load_checkpoint(full_run)
    # the modality options and the layout come from the cache (tiny() leaves them to it)
    resolved = tiny(bones="6v", unit_axis=False).to_dict()
    assert state["epoch"] == 3 and state["config"] == resolved
    assert state["layout"] == "ntu25" and state["num_class"] == 60
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    seed_everything(1)
    initial = build_model(tiny(bones="6v", unit_axis=False)).state_dict()  # as pretrain builds it
    for m in ("joint", "velocity"):  # one queue per modality: K=8 keys of dim 8, unit columns
        bank, ptr = (state["model"][f"branches.{m}.queue.{k}"] for k in ("bank", "ptr"))
        assert bank.shape == (8, 8) and int(ptr) == 3 * 2 * 4 % 8  # epochs * iterations * batch
        torch.testing.assert_close(bank.norm(dim=0), torch.ones(8))
        # 24 keys went through: every column was overwritten
        initial_bank = initial[f"branches.{m}.queue.bank"]
        assert not torch.isclose(bank, initial_bank).all(dim=0).any()
    assert state["optimizer"]["state"]  # momentum buffers
    assert not list(full_run.glob("*.tmp"))


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_continues_exactly(cache: Path, full_run: Path, tmp_path: Path, workers) -> None:
    run = tmp_path / "run"
    cfg = tiny(workers=workers)
    pretrain(cfg.replace(epochs=2), cache, run, device="cpu", echo=None, tensorboard=False)
    assert load_checkpoint(run)["epoch"] == 2
    with pytest.raises(CheckpointExistsError, match="exists; resume to continue") as e:
        pretrain(cfg, cache, run, device="cpu", echo=None, tensorboard=False)
    assert e.value.param == "resume"  # the CLI adds (--resume)
    with pytest.raises(ConfigError, match=r"lr: 0.1 -> 0.2"):
        pretrain(cfg.replace(lr=0.2), cache, run, resume=True, device="cpu", echo=None)
    pretrain(cfg, cache, run, resume=True, device="cpu", echo=None, tensorboard=False)
    resumed, whole = load_checkpoint(run), load_checkpoint(full_run)
    assert resumed["epoch"] == 3
    assert _states_equal(resumed["model"], whole["model"]) == []
    for a, b in zip(
        resumed["optimizer"]["state"].values(), whole["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert [r["epoch"] for r in _read_metrics(run)] == [1, 2, 3]
    assert [r["loss"] for r in _read_metrics(run)] == [r["loss"] for r in _read_metrics(full_run)]


def _as_version_1(path: Path) -> None:
    """Rewrite a checkpoint as the previous ikemtrain wrote it: version 1, numpy's RNG state
    as its ``np.random.get_state()`` tuple (an ndarray) and Python's as its tuple."""
    state = torch.load(path, weights_only=True)
    npy, py = state["rng"]["numpy"], state["rng"]["python"]
    keys = np.asarray(npy["keys"], dtype=np.uint32)
    state["rng"]["numpy"] = ("MT19937", keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    state["rng"]["python"] = (py["version"], tuple(py["state"]), py["gauss_next"])
    torch.save({**state, "version": 1}, path)


def test_resume_from_a_version_1_checkpoint(cache: Path, full_run: Path, tmp_path: Path) -> None:
    """Checkpoints of the previous version (numpy arrays inside) are still read, weights-only
    with numpy's array globals allowed, and resume exactly (past a torn metrics line)."""
    cfg = tiny()
    pretrain(cfg.replace(epochs=2), cache, tmp_path, device="cpu", echo=None, tensorboard=False)
    _as_version_1(tmp_path / "checkpoint.pt")
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "lo')  # a record torn by a kill mid-write is dropped on resume
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    pretrain(cfg, cache, tmp_path, resume=True, device="cpu", echo=None, tensorboard=False)
    resumed, whole = load_checkpoint(tmp_path), load_checkpoint(full_run)
    assert resumed["version"] == 2 and resumed["epoch"] == 3
    assert _states_equal(resumed["model"], whole["model"]) == []
    assert [r["loss"] for r in _read_metrics(tmp_path)] == [
        r["loss"] for r in _read_metrics(full_run)
    ]


def test_resume_needs_a_checkpoint(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        pretrain(tiny(), cache, tmp_path, resume=True, device="cpu", echo=None)


def test_stage_one_leaves_ikem_heads_untouched(cache: Path, tmp_path: Path) -> None:
    cfg = tiny(epochs=1)
    pretrain(cfg, cache, tmp_path, device="cpu", echo=None, tensorboard=False)
    after = load_checkpoint(tmp_path)["model"]
    seed_everything(cfg.seed)
    before = build_model(cfg).state_dict()
    changed = set(_states_equal(before, after))
    assert not any(".ikem_head." in k for k in changed)  # no gradient in stage 1: SGD skips them
    assert any(".encoder_q." in k for k in changed)
    assert any(".encoder_k." in k for k in changed)  # momentum update


def test_a_split_smaller_than_a_batch_is_an_error(cache: Path, tmp_path: Path) -> None:
    from skelmod.cache import CacheError

    with pytest.raises(CacheError, match="fewer than one batch of 32"):
        pretrain(tiny(batch_size=32), cache, tmp_path, device="cpu", echo=None)


def _corrupt(cache: Path, path: Path, row: int, value: float, modality: str = "joint") -> Path:
    """A copy of ``cache`` whose sample ``row`` has ``value`` in ``modality`` (as a damaged or
    old cache would; the converter refuses to write such samples)."""
    path.write_bytes(cache.read_bytes())
    with h5py.File(path, "a") as f:
        joints = f[f"modalities/{modality}"]
        sample = joints[row]
        sample[:, 3:9, 4] = value
        joints[row] = sample
    return path


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), r"inputs not finite: row 4 \(S001C002P001R001A001\): joint, velocity"),
        # 1e300 in a raw file is inf in float32
        (float("inf"), r"inputs not finite: row 4 \(S001C002P001R001A001\): joint"),
    ],
    ids=["nan", "inf"],
)
def test_a_non_finite_loss_names_the_batch_and_the_check(
    cache: Path, tmp_path: Path, value: float, expected: str
) -> None:
    bad = _corrupt(cache, tmp_path / "bad.h5", 4, value)
    run = tmp_path / "run"
    # a cache is checked when it is opened (issue 24.5): the row is named before any training
    shown = {"nan": "nan", "inf": "inf"}[str(value)]
    with pytest.raises(CacheError, match=rf"row 4 \(S001C002P001R001A001\): .*{shown} at"):
        pretrain(tiny(epochs=1), bad, run, device="cpu", echo=None, tensorboard=False)
    assert not run.exists()
    # the loss is still checked before every step (a cache changed after it was opened, or
    # values the check cannot see): a reader marked as checked gets that far
    reader = CacheReader(bad)
    reader._values_checked = True
    with pytest.raises(NonFiniteLossError) as e:
        pretrain(tiny(epochs=1, monitor_every=0), reader, run, device="cpu", echo=None,
                 tensorboard=False)  # fmt: skip
    message = str(e.value)
    assert "\n" not in message
    assert re.search(r"^epoch 1, batch \d: the training loss is (nan|inf)", message), message
    assert re.search(r"\((joint|velocity) (nan|inf)", message), message  # the broken modality
    rows = [int(r) for r in re.search(r"cache rows ([\d, ]+);", message)[1].split(", ")]
    assert 4 in rows and len(rows) == 4 and all(r % 2 == 0 for r in rows)  # xsub-train rows
    assert re.search(expected, message), message
    assert "largest |input|" not in message  # only said when every input is finite
    assert f"check those samples of {bad}, or re-create the cache with `skelmod convert`" in message
    assert message.endswith("if the data are sound, lower the learning rate (now 0.1)")
    assert not (run / "checkpoint.pt").exists()  # stopped before a step or a save


def test_the_knn_monitor_names_a_non_finite_sample_before_the_first_step(
    cache: Path, tmp_path: Path
) -> None:
    bad = _corrupt(cache, tmp_path / "bad.h5", 4, float("nan"))
    reader = CacheReader(bad)
    reader._values_checked = True  # past the check on opening (tested above)
    with pytest.raises(CacheError, match=r"joint \(cached\) holds NaN or inf for \S+ \(row 4\)"):
        pretrain(tiny(epochs=1), reader, tmp_path / "run", device="cpu", echo=None,
                 tensorboard=False)  # fmt: skip
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_divergent_loss_on_finite_inputs_points_at_the_largest_input(cache: Path) -> None:
    reader = CacheReader(cache)
    joint = torch.zeros(2, 3, 24, 25, 2)
    velocity = joint.clone()
    velocity[1, 0, 5, 3, 0] = -5e6
    losses = {
        "loss": torch.tensor(float("inf")),
        "loss/joint": torch.tensor(1.5),
        "loss/velocity": torch.tensor(float("inf")),
    }
    rows = np.array([6, 10])
    message = str(
        non_finite_loss(losses, [{"joint": joint, "velocity": velocity}], rows, reader, 3, 0, 0.01)
    )
    assert message.startswith("epoch 3, batch 1: the training loss is inf (velocity inf); ")
    assert "at cache rows 6, 10;" in message and "inputs not finite" not in message
    assert f"largest |input| 5e+06 in velocity of row 10 ({reader.meta['name'][10]})" in message
    assert message.endswith("lower the learning rate (now 0.01)")


def test_linear_eval_names_samples_with_non_finite_inputs_or_features(
    cache: Path, tmp_path: Path
) -> None:
    cfg = LinearEvalConfig(epochs=1, batch_size=4, eval_batch_size=4)
    bad = _corrupt(cache, tmp_path / "bad.h5", 5, float("nan"))
    reader = CacheReader(bad)
    name = reader.meta["name"][5]
    with pytest.raises(CacheError) as e:  # joints: checked when the cache is opened
        linear_eval(
            cfg, bad, tmp_path / "le", "xsub", "joint", random_init=True,
            backbone=tiny().backbone, modalities=("joint",), device="cpu", echo=None,
        )  # fmt: skip
    assert str(e.value).startswith(f"{bad}: row 5 ({name}): modality 'joint' holds a value")
    velocity = _corrupt(cache, tmp_path / "bad-velocity.h5", 5, float("nan"), "velocity")
    with pytest.raises(CacheError) as e:  # other cached modalities: when they are read
        linear_eval(
            cfg, velocity, tmp_path / "le", "xsub", "velocity", random_init=True,
            backbone=tiny().backbone, modalities=("velocity",), device="cpu", echo=None,
        )  # fmt: skip
    assert str(e.value).startswith(
        f"{velocity}: velocity (cached) holds NaN or inf for {name} (row 5);"
    )
    # finite inputs whose features overflow: the features are checked before the heads train
    features = {"joint": torch.ones(3, 16), "bone": torch.ones(3, 16)}
    features["bone"][2, 7] = float("inf")
    check_finite_features({"joint": features["joint"]}, np.array([1, 3, 5]), reader, "xsub-val")
    with pytest.raises(NonFiniteLossError) as e:
        check_finite_features(features, np.array([1, 3, 5]), reader, "xsub-val")
    assert str(e.value).startswith(
        f"{bad}: bone features of xsub-val are not finite for 1 sample(s) at cache rows 5 ({name})"
    )


def test_checkpoint_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an ikemtrain-pretrain checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    save_checkpoint(tmp_path / "ok.pt", {"epoch": 1, "model": {}, "config": {}})
    assert load_checkpoint(tmp_path / "ok.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt", "ok.pt", "other.pt"]
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")


# --- DDP --------------------------------------------------------------------------------------


def _ddp_worker(rank: int, cache: str, out: str) -> None:
    from ikemtrain.engine.distributed import shutdown_distributed

    try:
        pretrain(tiny(epochs=2), cache, out, device="cpu", echo=None, tensorboard=False)
    finally:
        shutdown_distributed()


def _refused_worker(rank: int, cache: str, out: str) -> None:
    import faulthandler

    from ikemtrain.engine.distributed import shutdown_distributed

    faulthandler.dump_traceback_later(120, exit=True)  # a rank left waiting fails, not hangs
    try:
        pretrain(tiny(epochs=1), cache, out, device="cpu", echo=None, tensorboard=False)
        outcome = "trained"
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
    finally:
        shutdown_distributed()
        faulthandler.cancel_dump_traceback_later()
    (Path(out).parent / f"rank{rank}.txt").write_text(outcome)


def test_ddp_ranks_share_rank_0_refusing_the_folder(
    cache: Path, tmp_path: Path, spawn_gloo
) -> None:
    """Rank 0 refuses an output folder that holds another file; rank 1, which never opens
    the folder, gets the same error instead of waiting for rank 0 in a collective."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    spawn_gloo(_refused_worker, 2, str(cache), str(out))
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0].startswith(f"OutputExistsError: {out} is not empty"), outcomes
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_ddp_two_gloo_processes(cache: Path, tmp_path: Path, spawn_gloo) -> None:
    spawn_gloo(_ddp_worker, 2, str(cache), str(tmp_path))
    records = _read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2] and [r["stage"] for r in records] == [1, 2]
    assert all(r["iterations"] == 2 for r in records)  # 8 samples / 2 ranks / batch 2 each
    assert load_checkpoint(tmp_path)["epoch"] == 2


def test_pretraining_takes_the_modality_options_and_layout_from_the_cache(tmp_path: Path) -> None:
    import h5py

    path = make_cache(tmp_path / "v1.h5", n=16, t=24, layout="kinect-v1-20")
    with h5py.File(path, "r+") as f:  # a cache whose bone-derived modalities are 3v
        f.attrs["modality_options"] = json.dumps({"bones": "3v", "unit_axis": True})
    mods, split = ("joint", "bone"), "xview"
    with pytest.raises(ConfigError, match=r"the cache's modalities use bones='3v'.*bones='6v'"):
        pretrain(tiny(modalities=mods, split=split, bones="6v"), path, tmp_path / "a", echo=None)
    assert not (tmp_path / "a" / "checkpoint.pt").exists()  # refused before the first epoch
    pretrain(
        tiny(modalities=mods, split=split, epochs=1),
        path,
        tmp_path / "b",
        echo=None,
        tensorboard=False,
    )
    state = load_checkpoint(tmp_path / "b")
    assert (state["config"]["bones"], state["config"]["unit_axis"]) == ("3v", True)
    assert (state["layout"], state["num_class"]) == ("kinect-v1-20", 10)
    assert state["model"]["branches.bone.encoder_q.A"].shape == (3, 20, 20)
    # resuming on a cache of another layout is refused with one line
    other = make_cache(tmp_path / "ntu.h5", n=16, t=24)
    with pytest.raises(
        CheckpointError, match=r"joint layout ntu25, but checkpoint .* kinect-v1-20"
    ):
        pretrain(
            tiny(modalities=mods, split=split, epochs=2),
            other,
            tmp_path / "b",
            resume=True,
            echo=None,
        )
