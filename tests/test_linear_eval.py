"""ikemtrain.engine.linear_eval: frozen encoders, fused heads, precomputed features, results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from protocol_runs import BACKBONE, pretrain_run
from test_data import make_cache
from torch import nn

from ikemtrain.config import ConfigError, LinearEvalConfig, lr_at
from ikemtrain.data import LinearEvalDataset, epoch_generator
from ikemtrain.engine import linear_eval
from ikemtrain.engine.checkpoint import CheckpointError, load_checkpoint
from ikemtrain.engine.linear_eval import (
    build_encoders,
    standardize_features,
    topk_accuracy,
)
from ikemtrain.engine.loop import seed_everything
from ikemtrain.nn.init import weights_init
from skelmod.cache import CacheError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("le") / "c.h5", n=24, t=24, classes=3)


@pytest.fixture(scope="module")
def run(cache: Path, tmp_path_factory) -> Path:
    return pretrain_run(cache, tmp_path_factory.mktemp("run"))


def le_cfg(**changes) -> LinearEvalConfig:
    return LinearEvalConfig(epochs=6, lr=0.5, steps=(4,), batch_size=4, eval_interval=4).replace(
        **changes
    )


def test_topk_accuracy_matches_a_plain_count() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 7, generator=g), torch.randint(0, 7, (50,), generator=g)
    order = logits.argsort(dim=1, descending=True).tolist()
    for k, got in zip((1, 5), topk_accuracy(logits, labels), strict=True):
        expected = 100 * np.mean([labels[i].item() in order[i][:k] for i in range(50)])
        assert got == pytest.approx(expected)
    assert topk_accuracy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))[1] == 100.0


def test_encoders_come_from_the_query_encoders(run: Path) -> None:
    state = load_checkpoint(run)["model"]
    enc = build_encoders(("velocity", "bone"), BACKBONE, state)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    for m in ("velocity", "bone"):
        for k, v in enc[m].state_dict().items():
            assert torch.equal(v, state[f"branches.{m}.encoder_q.{k}"])
    with pytest.raises(Exception, match="branches.acceleration.encoder_q"):
        build_encoders(("acceleration",), BACKBONE, state)


def _naive_linear_eval(cache: Path, cfg: LinearEvalConfig, stream_mods, state) -> list[float]:
    """The linear-evaluation loop run literally: encoders (eval mode) in every step on raw
    inputs."""
    seed_everything(cfg.seed)
    encoders = build_encoders(stream_mods, BACKBONE, state)
    train = LinearEvalDataset(cache, "xsub-train", stream_mods)
    torch.manual_seed(cfg.seed)
    heads = nn.ModuleDict({m: nn.Linear(BACKBONE["hidden_dim"], 60) for m in stream_mods})
    heads.apply(weights_init)
    opt = torch.optim.SGD(heads.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=0.0)
    labels = torch.as_tensor(train.labels)
    losses = []
    for epoch in range(1, cfg.epochs + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg.lr, cfg.steps, epoch)
        order = torch.randperm(len(train), generator=epoch_generator(cfg.seed, epoch))
        total = []
        for b in range(len(train) // cfg.batch_size):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            items = [train[int(i)][0] for i in idx]
            logits = torch.stack(
                [heads[m](encoders[m](torch.stack([x[m] for x in items]))) for m in stream_mods]
            ).mean(0)
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total.append(loss.item())
        losses.append(float(np.mean(total)))
    return losses


def test_precomputed_features_give_the_same_training(cache: Path, run: Path, tmp_path) -> None:
    cfg = le_cfg()
    results = linear_eval(
        cfg, cache, tmp_path, "xsub", "3s", checkpoint=run, device="cpu", echo=None
    )
    naive = _naive_linear_eval(
        cache, cfg, ("joint", "velocity", "bone"), load_checkpoint(run)["model"]
    )
    np.testing.assert_allclose([h["loss"] for h in results["history"]], naive, rtol=1e-4)


def test_results_json(cache: Path, run: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    results = linear_eval(
        le_cfg(),
        cache,
        tmp_path,
        "xsub",
        "velocity",
        checkpoint=run,
        device="cpu",
        echo=lines.append,
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    history = saved["history"]
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert [h["epoch"] for h in history if "top1" in h] == [4, 6]  # every 4 epochs and the last
    assert [h["lr"] for h in history] == pytest.approx([0.5] * 4 + [0.05] * 2)
    evaluated = [h for h in history if "top1" in h]
    assert saved["top1_final"] == evaluated[-1]["top1"]
    assert saved["top1_best"] == max(h["top1"] for h in evaluated) >= saved["top1_final"]
    assert saved["top5_best"] >= saved["top5_final"] >= saved["top1_final"]
    assert saved["checkpoint"].endswith("checkpoint.pt") and saved["random_init"] is False
    assert saved["modalities"] == ["velocity"] and saved["val_samples"] == 12
    assert saved["config"]["lr"] == 0.5 and saved["pretrain_config"]["hidden_dim"] == 16
    assert len(lines) == 2 and lines[0].startswith("epoch 4/6 loss ") and "top1 " in lines[0]


def test_random_init(cache: Path, tmp_path: Path) -> None:
    def run(out: Path) -> dict:
        return linear_eval(
            le_cfg(epochs=2),
            cache,
            out,
            "xview",
            "6s",
            random_init=True,
            backbone=BACKBONE,
            modalities=(
                "joint",
                "velocity",
                "acceleration",
                "bone",
                "rotation_axis",
                "angular_velocity",
            ),
            device="cpu",
            echo=None,
        )

    results = run(tmp_path / "a")
    assert results["random_init"] and results["checkpoint"] is None
    assert len(results["modalities"]) == 6
    # top-1 is a count of the validation samples, and the seeded random encoders reproduce it
    correct = results["top1_final"] * results["val_samples"] / 100
    assert correct == pytest.approx(round(correct))
    again = run(tmp_path / "b")
    assert again["history"] == results["history"] and again["top1_final"] == results["top1_final"]


def test_bad_requests_are_clear(cache: Path, run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs acceleration.*pre-trained on joint, velocity"):
        linear_eval(le_cfg(), cache, tmp_path, "xsub", "6s", checkpoint=run, device="cpu")
    with pytest.raises(ConfigError, match="exactly one"):
        linear_eval(le_cfg(), cache, tmp_path, "xsub", "joint", checkpoint=run, random_init=True)
    with pytest.raises(ConfigError, match="needs the backbone"):
        linear_eval(le_cfg(), cache, tmp_path, "xsub", "joint", random_init=True)
    with pytest.raises(CacheError, match="unknown split 'xset-train'"):
        linear_eval(le_cfg(), cache, tmp_path, "xset", "joint", checkpoint=run, device="cpu")
    small = make_cache(tmp_path / "small.h5", n=8, t=24, modalities=("joint", "velocity"))
    with pytest.raises(CacheError, match="fewer than one batch of 16"):
        linear_eval(le_cfg(batch_size=16), small, tmp_path, "xsub", "joint", checkpoint=run)


def test_modalities_missing_or_cached_with_other_options_are_computed_from_the_joints(
    cache: Path, run: Path, tmp_path: Path
) -> None:
    import h5py

    expect = linear_eval(le_cfg(), cache, tmp_path / "a", "xsub", "3s", checkpoint=run, echo=None)
    assert expect["computed"] == []
    joints_only = make_cache(tmp_path / "j.h5", n=24, t=24, classes=3, modalities=("joint",))
    other = make_cache(tmp_path / "o.h5", n=24, t=24, classes=3)
    with h5py.File(other, "r+") as f:  # a bone of the other convention, as features records it
        f["modalities/bone"][...] = 0.0
        f["modalities/bone"].attrs["options"] = json.dumps({"unit_axis": False, "bones": "3v"})
    for path, computed in ((joints_only, ["velocity", "bone"]), (other, ["bone"])):
        got = linear_eval(
            le_cfg(), path, tmp_path / "b", "xsub", "3s", checkpoint=run, echo=None, overwrite=True
        )
        assert got["computed"] == computed
        assert got["history"] == expect["history"]


def test_a_cache_of_another_layout_is_refused_by_a_checkpoint(run: Path, tmp_path: Path) -> None:
    v1 = make_cache(tmp_path / "v1.h5", n=12, t=24, classes=3, layout="kinect-v1-20")
    with pytest.raises(CheckpointError, match=r"layout kinect-v1-20, but checkpoint .* ntu25"):
        linear_eval(le_cfg(), v1, tmp_path, "xview", "joint", checkpoint=run, device="cpu")
    # random-init encoders take the cache's layout (a 20-joint graph) and its class count
    results = linear_eval(
        le_cfg(epochs=2), v1, tmp_path / "le", "xview", "3s", random_init=True, backbone=BACKBONE,
        modalities=("joint", "velocity", "bone"), echo=None,
    )  # fmt: skip
    assert results["num_class"] == 10 and results["layout"] == "kinect-v1-20"


def test_random_init_features_are_degenerate_without_bn_recalibration(cache: Path) -> None:
    from ikemtrain.engine.linear_eval import extract_features, recalibrate_batchnorm

    seed_everything(0)
    encoders = build_encoders(("joint",), {"hidden_channels": 8, "hidden_dim": 32, "dropout": 0.5})
    data = LinearEvalDataset(cache, "xview-train", ("joint",))
    before = extract_features(encoders, data, 8, torch.device("cpu"))["joint"]
    recalibrate_batchnorm(encoders, data, 8, torch.device("cpu"))
    assert not encoders.training and all(not m.training for m in encoders.modules())
    after = extract_features(encoders, data, 8, torch.device("cpu"))["joint"]
    # weights_init + default BN statistics: features vanish; recalibrated: order one, and they
    # vary across samples (a linear head can use them).
    assert before.abs().max() < 1e-4
    assert after.std(0).mean() > 1e-2
    bn = encoders["joint"].data_bn
    x = data.read_block(0, len(data))["joint"]
    n, c, t, v, m = x.shape
    flat = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
    torch.testing.assert_close(bn.running_mean, flat.mean((0, 2)), rtol=1e-4, atol=1e-5)


def test_standardized_features_match_a_batchnorm_without_affine() -> None:
    g = torch.Generator().manual_seed(0)
    train = {"joint": 3.0 + 0.01 * torch.randn(40, 6, generator=g)}
    val = {"joint": 3.0 + 0.01 * torch.randn(9, 6, generator=g)}
    tx, vx = standardize_features(train, val)
    bn = nn.BatchNorm1d(6, affine=False, eps=1e-12, momentum=None)
    bn.train()
    bn(train["joint"])  # running statistics of the whole training split
    bn.running_var.mul_(39 / 40)  # kept unbiased; the batch is normalised with the biased one
    bn.eval()
    torch.testing.assert_close(tx["joint"], bn(train["joint"]), rtol=0, atol=1e-3)
    torch.testing.assert_close(vx["joint"], bn(val["joint"]), rtol=0, atol=1e-3)
    const = standardize_features({"j": torch.ones(5, 2)}, {"j": torch.ones(2, 2)})
    assert torch.equal(const[0]["j"], torch.zeros(5, 2))  # a constant feature stays finite


def test_standardized_probe_does_not_depend_on_the_feature_scale(
    cache: Path, run: Path, tmp_path: Path, monkeypatch
) -> None:
    """Encoders whose pooled features are 1000x smaller (as a shrunk pre-trained encoder's
    are): the standardised probe trains identically, the raw one does not."""
    import sys

    le = sys.modules["ikemtrain.engine.linear_eval"]  # the package re-exports the function
    extract = le.extract_features
    losses = {}
    for scale in (1.0, 1e-3):
        monkeypatch.setattr(
            le,
            "extract_features",
            lambda *a, s=scale: {m: s * f for m, f in extract(*a).items()},
        )
        for std in (True, False):
            r = linear_eval(
                le_cfg(standardize=std),
                cache,
                tmp_path / f"{scale}-{std}",
                "xsub",
                "velocity",
                checkpoint=run,
                device="cpu",
                echo=None,
            )
            assert r["standardized"] is std
            losses[scale, std] = [h["loss"] for h in r["history"]]
    np.testing.assert_allclose(losses[1.0, True], losses[1e-3, True], rtol=1e-3)
    assert not np.allclose(losses[1.0, False], losses[1e-3, False], rtol=1e-2)


def test_streams_side_by_side_give_the_features_and_statistics_of_one_at_a_time(
    cache: Path,
) -> None:
    """``threads``: the streams of an evaluation pass run on threads (one intra-op thread
    each); the BatchNorm statistics and the features are those of the sequential pass, and
    the caller's intra-op thread count comes back."""
    from ikemtrain.engine.linear_eval import extract_features, recalibrate_batchnorm

    mods = ("joint", "velocity", "bone")
    data = LinearEvalDataset(cache, "xview-train", mods)
    backbone = {"hidden_channels": 8, "hidden_dim": 32, "dropout": 0.0}
    results = []
    for threads in (1, 3):
        seed_everything(0)
        encoders = build_encoders(mods, backbone)
        recalibrate_batchnorm(encoders, data, 8, torch.device("cpu"), threads=threads)
        feats = extract_features(encoders, data, 8, torch.device("cpu"), threads=threads)
        assert torch.get_num_threads() == 1  # the fixture's, restored
        results.append((encoders.state_dict(), feats))
    (state1, feats1), (state3, feats3) = results
    for k in state1:
        torch.testing.assert_close(state3[k], state1[k], rtol=0, atol=0)
    for m in mods:
        torch.testing.assert_close(feats3[m], feats1[m], rtol=0, atol=0)
    assert feats1["joint"].std(0).mean() > 1e-2  # real features, not the degenerate zeros
    torch.set_num_threads(4)
    try:
        extract_features(encoders, data.subset(np.arange(4)), 8, torch.device("cpu"), threads=2)
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(1)
