"""ikemtrain.engine.knn: the weighted kNN of Wu et al. 2018 on frozen features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from protocol_runs import BACKBONE, THREE, pretrain_run, twin_cache
from test_data import make_cache

from ikemtrain.config import ConfigError
from ikemtrain.data import LinearEvalDataset
from ikemtrain.engine.knn import knn_eval, knn_scores, stream_embedding
from ikemtrain.engine.linear_eval import build_encoders, extract_features, recalibrate_batchnorm
from ikemtrain.engine.loop import seed_everything
from skelmod.cache import CacheError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("knn") / "c.h5", n=24, t=24, classes=3)


@pytest.fixture(scope="module")
def run(cache: Path, tmp_path_factory) -> Path:
    return pretrain_run(cache, tmp_path_factory.mktemp("knn-run"))


def naive_knn(train, train_y, val, modalities, k, t, num_class) -> np.ndarray:
    """Wu et al. 2018 written out: for each query, the mean over modalities of the cosine
    similarity to every memory sample, the k largest, votes exp(s / t) per class."""
    scores = np.zeros((len(val[modalities[0]]), num_class))
    for q in range(len(scores)):
        sims = []
        for j in range(len(train_y)):
            cos = [
                float(val[m][q] @ train[m][j])
                / (np.linalg.norm(val[m][q]) * np.linalg.norm(train[m][j]))
                for m in modalities
            ]
            sims.append(np.mean(cos))
        for j in np.argsort(sims)[::-1][:k]:
            scores[q, train_y[j]] += np.exp(sims[j] / t)
    return scores


def test_knn_scores_match_the_naive_twin() -> None:
    g = torch.Generator().manual_seed(0)
    train = {m: torch.randn(30, 6, generator=g) for m in ("joint", "bone")}
    val = {m: torch.randn(7, 6, generator=g) for m in ("joint", "bone")}
    labels = torch.randint(0, 4, (30,), generator=g)
    for mods in (("joint",), ("joint", "bone")):
        got = knn_scores(stream_embedding(val, mods), stream_embedding(train, mods), labels, 4,
                         (1, 5, 30), temperature=0.07)  # fmt: skip
        np_train = {m: x.double().numpy() for m, x in train.items()}
        np_val = {m: x.double().numpy() for m, x in val.items()}
        for k in (1, 5, 30):
            expect = naive_knn(np_train, labels.numpy(), np_val, mods, k, 0.07, 4)
            np.testing.assert_allclose(got[k].double().numpy(), expect, rtol=1e-4)
    with pytest.raises(ValueError, match="every k must lie in 1 .. 30"):
        knn_scores(val["joint"], train["joint"], labels, 4, (31,))


def test_a_twin_is_its_own_nearest_neighbour(tmp_path: Path) -> None:
    """Every validation sample has a training twin (same joints, same label): with random
    encoders (BN statistics estimated on the training split) the 1-NN finds all of them."""
    twins = twin_cache(tmp_path / "twins.h5")
    results = knn_eval(
        twins, tmp_path / "out", "xsub", ["joint", "bone"], (1, 3), random_init=True,
        backbone=BACKBONE, modalities=THREE, device="cpu", echo=None,
    )  # fmt: skip
    assert results["streams"]["joint"]["top1"]["1"] == 100.0
    assert results["streams"]["bone"]["top1"]["1"] == 100.0
    assert results["bn_recalibrated"] and results["encoders"] == "random-init"


def test_results_json(cache: Path, run: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    results = knn_eval(cache, tmp_path, "xsub", None, (1, 5), checkpoint=run, device="cpu",
                       echo=lines.append)  # fmt: skip
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    # every stream the run gives by default, one printed line each
    assert list(saved["streams"]) == ["joint", "velocity", "bone", "3s"]
    assert [line.split(":")[0] for line in lines] == ["joint", "velocity", "bone", "3s"]
    assert saved["streams"]["3s"]["modalities"] == list(THREE)
    assert saved["protocol"] == "knn" and saved["k"] == [1, 5] and saved["temperature"] == 0.07
    assert saved["checkpoint"].endswith("checkpoint.pt") and saved["random_init"] is False
    assert saved["train_samples"] == 12 and saved["val_samples"] == 12
    assert saved["pretrain_config"]["hidden_dim"] == 16 and saved["encoders"] == "pretrain"
    for stream in saved["streams"].values():  # a count of the 12 validation samples
        for k in ("1", "5"):
            assert stream["top1"][k] * 12 / 100 == pytest.approx(round(stream["top1"][k] * 0.12))


def test_results_match_the_naive_twin_on_the_encoders_features(cache: Path, tmp_path: Path) -> None:
    """The whole protocol against kNN written out on features of the same encoders (random,
    seeded, BN statistics from the training split: their similarities are well apart)."""
    results = knn_eval(
        cache, tmp_path, "xsub", ["bone", "3s"], (1, 5), random_init=True, backbone=BACKBONE,
        modalities=THREE, seed=3, device="cpu", echo=None,
    )  # fmt: skip
    seed_everything(3)
    encoders = build_encoders(THREE, BACKBONE)
    train = LinearEvalDataset(cache, "xsub-train", THREE)
    recalibrate_batchnorm(encoders, train, 128, torch.device("cpu"))
    feats = {}
    for part in ("train", "val"):
        data = LinearEvalDataset(cache, f"xsub-{part}", THREE)
        x = extract_features(encoders, data, 8, torch.device("cpu"))
        feats[part] = ({m: v.double().numpy() for m, v in x.items()}, data.labels)
    for stream, mods in (("bone", ("bone",)), ("3s", THREE)):
        for k in (1, 5):
            scores = naive_knn(feats["train"][0], feats["train"][1], feats["val"][0], mods, k,
                               0.07, 60)  # fmt: skip
            top1 = 100 * np.mean(scores.argmax(1) == feats["val"][1])
            assert results["streams"][stream]["top1"][str(k)] == pytest.approx(top1)


def test_bad_requests_are_clear(cache: Path, run: Path, tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="has 12 samples, fewer than k = 13 neighbours"):
        knn_eval(cache, tmp_path, "xsub", ["joint"], (1, 13), checkpoint=run, device="cpu")
    with pytest.raises(ConfigError, match="needs acceleration.*pre-trained on joint, velocity"):
        knn_eval(cache, tmp_path, "xsub", ["6s"], (1,), checkpoint=run, device="cpu")
    with pytest.raises(ConfigError, match="names a stream twice"):
        knn_eval(cache, tmp_path, "xsub", ["joint", "joint"], (1,), checkpoint=run)
    with pytest.raises(ConfigError, match="k: expected positive"):
        knn_eval(cache, tmp_path, "xsub", ["joint"], (0,), checkpoint=run)
