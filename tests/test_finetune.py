"""ikemtrain.engine.finetune: end-to-end fine-tuning on a label fraction; transfer between
caches of one joint layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from protocol_runs import BACKBONE, THREE, pretrain_run
from test_data import make_cache

from ikemtrain.config import FinetuneConfig, LinearEvalConfig
from ikemtrain.data import LinearEvalDataset
from ikemtrain.engine import linear_eval
from ikemtrain.engine.checkpoint import CheckpointError, load_checkpoint
from ikemtrain.engine.finetune import finetune, label_subset
from ikemtrain.engine.knn import knn_eval
from ikemtrain.engine.linear_eval import build_encoders
from ikemtrain.methods.finetune import Classifier
from skelmod.cache import CacheError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("ft") / "c.h5", n=24, t=24, classes=3)


@pytest.fixture(scope="module")
def run(cache: Path, tmp_path_factory) -> Path:
    return pretrain_run(cache, tmp_path_factory.mktemp("ft-run"))


def ft_cfg(**changes) -> FinetuneConfig:
    return FinetuneConfig(
        epochs=3, lr=0.05, steps=(2,), batch_size=4, eval_interval=2, workers=0
    ).replace(**changes)


def tune(cache, out, stream="3s", cfg=None, **kwargs) -> dict:
    kwargs.setdefault("echo", None)
    return finetune(cfg or ft_cfg(), cache, out, "xsub", stream, device="cpu", tensorboard=False,
                    **kwargs)  # fmt: skip


def encoder_weights(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The trainable weights (no BatchNorm statistics) under ``prefix``."""
    return {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix)
        and not k.endswith(("running_mean", "running_var", "batches_tracked"))
    }


def test_label_subset_is_seeded_class_balanced_and_keeps_every_class() -> None:
    labels = np.repeat(np.arange(5), [40, 20, 10, 3, 1])
    np.random.default_rng(0).shuffle(labels)
    for fraction, per_class in ((0.1, [4, 2, 1, 1, 1]), (0.5, [20, 10, 5, 2, 1]), (1.0, None)):
        picked = label_subset(labels, fraction, seed=0)
        assert np.all(np.diff(picked) > 0)  # sorted positions, no repeat
        counts = np.bincount(labels[picked], minlength=5)
        assert counts.tolist() == (per_class or np.bincount(labels).tolist())
        assert np.array_equal(picked, label_subset(labels, fraction, seed=0))
    assert not np.array_equal(label_subset(labels, 0.5, 0), label_subset(labels, 0.5, 1))
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]"):
        label_subset(labels, 0.0, 0)


def test_results_and_the_checkpoint(cache: Path, run: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    results = tune(cache, tmp_path, checkpoint=run, echo=lines.append,
                   cfg=ft_cfg(label_fraction=0.5))  # fmt: skip
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["protocol"] == "finetune" and saved["stream"] == "3s"
    assert saved["label_fraction"] == 0.5 and saved["subset_size"] == 6  # 2 of each class
    assert saved["train_samples"] == 12 and saved["encoders"] == "pretrain"
    history = saved["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["epoch"] for h in history if "top1" in h] == [2, 3]  # every 2 epochs and the last
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.05, 0.005])
    assert all(h["samples_per_s"] > 0 for h in history)
    evaluated = [h for h in history if "top1" in h]
    assert saved["top1_final"] == evaluated[-1]["top1"]
    assert saved["top1_best"] == max(h["top1"] for h in evaluated)
    # the printed lines carry loss, lr and throughput, and top-1 where evaluated
    assert lines[0].startswith("epoch 1/3 loss ") and "samples/s" in lines[0]
    assert "top1 " in lines[1]

    state = load_checkpoint(tmp_path)
    assert state["kind"] == "finetune" and state["epoch"] == 3 and state["num_class"] == 60
    info = state["finetune"]
    assert info["modalities"] == list(THREE) and info["source"] == "pretrain"
    rows = LinearEvalDataset(cache, "xsub-train", THREE).indices
    assert set(info["subset_rows"]) <= set(rows.tolist()) and len(info["subset_rows"]) == 6
    # the final top-1 is the checkpoint's classifier on xsub-val
    model = Classifier(build_encoders(THREE, {**BACKBONE, "layout": "ntu25"}), 60)
    model.load_state_dict(state["model"])
    model.eval()
    val = LinearEvalDataset(cache, "xsub-val", THREE)
    with torch.no_grad():
        predicted = model.logits(val.read_block(0, len(val))).argmax(1).numpy()
    assert saved["top1_final"] == pytest.approx(100 * np.mean(predicted == val.labels))


def test_the_whole_encoder_trains_from_the_checkpoint(cache: Path, run: Path, tmp_path) -> None:
    pre = load_checkpoint(run)["model"]
    for lr, moved in ((1e-9, False), (0.05, True)):
        tune(cache, tmp_path / str(lr), checkpoint=run, cfg=ft_cfg(lr=lr, epochs=2))
        after = load_checkpoint(tmp_path / str(lr))["model"]
        for m in THREE:
            start = encoder_weights(pre, f"branches.{m}.encoder_q.")
            end = encoder_weights(after, f"encoders.{m}.")
            assert start.keys() == end.keys()
            gap = max(float((start[k] - end[k]).abs().max()) for k in start)
            assert (gap > 1e-3) is moved, (lr, m, gap)


def test_resume_continues_exactly(cache: Path, run: Path, tmp_path: Path) -> None:
    straight = tune(cache, tmp_path / "a", checkpoint=run)
    tune(cache, tmp_path / "b", checkpoint=run, cfg=ft_cfg(epochs=2))
    resumed = tune(cache, tmp_path / "b", checkpoint=run, resume=True)
    assert resumed["history"] == [
        {**h, "samples_per_s": r["samples_per_s"], "seconds": r["seconds"]}
        for h, r in zip(straight["history"], resumed["history"], strict=True)
    ]
    a, b = load_checkpoint(tmp_path / "a")["model"], load_checkpoint(tmp_path / "b")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="cannot resume with a different finetune"):
        tune(cache, tmp_path / "b", checkpoint=run, resume=True, cfg=ft_cfg(epochs=4),
             stream="joint")  # fmt: skip


def test_supervised_from_scratch_learns(cache: Path, tmp_path: Path) -> None:
    results = tune(cache, tmp_path, "joint", random_init=True, backbone=BACKBONE,
                   modalities=THREE, cfg=ft_cfg(epochs=6, lr=0.1, steps=(5,)))  # fmt: skip
    assert results["encoders"] == "random-init" and results["checkpoint"] is None
    losses = [h["loss"] for h in results["history"]]
    assert losses[-1] < 0.8 * losses[0]  # the training loss falls (from about ln 60)


def test_a_fraction_smaller_than_a_batch_is_an_error(cache: Path, run: Path, tmp_path) -> None:
    with pytest.raises(CacheError, match=r"xsub-train \(label_fraction 0.1\) has 3 samples"):
        tune(cache, tmp_path, checkpoint=run, cfg=ft_cfg(label_fraction=0.1))


# --- transfer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """Another cache of the same joint layout: other samples, 5 classes instead of 60."""
    d = tmp_path_factory.mktemp("other")
    return make_cache(d / "o.h5", n=30, t=24, classes=5, seed=1, num_class=5)


def test_every_protocol_transfers_to_a_cache_of_the_same_layout(
    run: Path, other: Path, tmp_path: Path
) -> None:
    le = linear_eval(
        LinearEvalConfig(epochs=2, batch_size=4), other, tmp_path / "le", "xsub", "3s",
        checkpoint=run, device="cpu", echo=None,
    )  # fmt: skip
    knn = knn_eval(other, tmp_path / "knn", "xsub", ["3s"], (1,), checkpoint=run, echo=None)
    ft = tune(other, tmp_path / "ft", checkpoint=run)
    for r in (le, knn, ft):
        assert r["num_class"] == 5 and r["cache"] == str(other) and r["train_samples"] == 15
    assert load_checkpoint(tmp_path / "ft")["num_class"] == 5


def test_another_layout_or_class_count_is_a_clear_error(
    cache: Path, run: Path, other: Path, tmp_path: Path
) -> None:
    v1 = make_cache(tmp_path / "v1.h5", n=12, t=24, classes=3, layout="kinect-v1-20")
    layout = rf"{v1}: joint layout kinect-v1-20, but checkpoint {run}/checkpoint.pt was trained"
    with pytest.raises(CheckpointError, match=layout):
        knn_eval(v1, tmp_path / "k", "xview", ["joint"], (1,), checkpoint=run)
    with pytest.raises(CheckpointError, match=layout):
        tune(v1, tmp_path / "f", "joint", checkpoint=run)
    # a fine-tuning run keeps its heads: same class count only; its encoders evaluate anywhere
    first = tmp_path / "first"
    tune(cache, first, checkpoint=run, cfg=ft_cfg(epochs=1))
    with pytest.raises(CheckpointError, match=rf"{other}: 5 classes, but the linear heads of "
                       rf"fine-tuning run {first}/checkpoint.pt have 60"):  # fmt: skip
        tune(other, tmp_path / "again", checkpoint=first)
    knn = knn_eval(other, tmp_path / "k2", "xsub", ["3s"], (1,), checkpoint=first, echo=None)
    assert knn["encoders"] == "finetune" and knn["num_class"] == 5


def test_fine_tuning_a_fine_tuned_run_starts_from_its_heads(
    cache: Path, run: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    tune(cache, first, checkpoint=run, cfg=ft_cfg(epochs=2))
    results = tune(cache, tmp_path / "second", "bone", checkpoint=first, cfg=ft_cfg(lr=1e-9))
    assert results["encoders"] == "finetune" and results["pretrain_config"]["hidden_dim"] == 16
    before, after = load_checkpoint(first)["model"], load_checkpoint(tmp_path / "second")["model"]
    for key in ("heads.bone.weight", "heads.bone.bias", "encoders.bone.data_bn.weight"):
        torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=0)
    assert not any(k.startswith("heads.joint") for k in after)  # the stream's heads only
