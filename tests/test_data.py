"""ikemtrain.data: two augmented views with recomputed modalities, lazy HDF5, seeded streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from ikemtrain.augment import augment
from ikemtrain.data import (
    EpochSampler,
    LinearEvalDataset,
    PretrainDataset,
    sample_generator,
    worker_context,
)
from skelmod.cache import CacheError, CacheReader, write_cache
from skelmod.layout import MODALITY_NAMES
from skelmod.modalities import compute_modalities


def make_cache(
    path: Path,
    n: int = 16,
    t: int = 50,
    modalities=MODALITY_NAMES,
    seed: int = 0,
    classes: int = 4,
    joints: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    layout: str = "ntu25",
    num_class: int | None = None,
) -> Path:
    """A small NTU-60 cache: even samples are xsub-train (subject 1), odd ones xsub-val
    (subject 3); cameras cycle 1, 2, 3 (xview-train is cameras 2 and 3). With ``layout=
    "kinect-v1-20"`` an N-UCLA-like cache (20 joints, one body; xview-train is views 1, 2).
    ``num_class``: the cache's class count (default: the data set's, 60 or 10)."""
    rng = np.random.default_rng(seed)
    v, m = (25, 2) if layout == "ntu25" else (20, 1)
    if joints is None:
        joints = (0.3 * rng.standard_normal((n, 3, t, v, m))).astype(np.float32)
        joints[: n // 4, ..., 1:] = 0.0  # some samples with one body
    if labels is None:
        labels = np.arange(n) % classes
    frame_count = rng.integers(t // 2, 4 * t, n)
    arrays = compute_modalities(
        joints, frame_count, t_target=t, modalities=modalities, layout=layout
    )
    i = np.arange(n)
    camera = i % 3 + 1
    subject = np.where(i % 2 == 0, 1, 3)
    meta = {
        "name": np.array(
            [
                f"S001C{camera[k]:03d}P{subject[k]:03d}R{k // 6 + 1:03d}A{labels[k] + 1:03d}"
                for k in i
            ]
        ),
        "setup": np.ones(n),
        "camera": camera,
        "subject": subject,
        "replication": i // 6 + 1,
        "action": labels + 1,
        "label": labels,
        "frame_count": frame_count,
        "valid_length": frame_count,
        "bodies_seen": np.full(n, 2),
        "bodies_kept": np.full(n, 2),
    }
    dataset = "ntu60" if layout == "ntu25" else "nucla"
    return write_cache(
        path, arrays, meta, dataset, {"test": True}, layout=layout, num_class=num_class
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("data") / "c.h5")


MODS = ("joint", "velocity", "bone", "angular_velocity")
#: The reference's augmentations (crop ratio 6, shear amplitude 0.5, no rotation)
REFERENCE_AUG = {"crop_ratio": 6, "shear": 0.5, "rotation": 0.0}


def pretrain_views(cache, split, modalities, seed=0, **changes) -> PretrainDataset:
    """A PretrainDataset with the reference's augmentations unless ``changes`` says otherwise."""
    return PretrainDataset(cache, split, modalities, **{**REFERENCE_AUG, "seed": seed, **changes})


def test_item_is_two_views_of_recomputed_modalities(cache: Path) -> None:
    ds = pretrain_views(cache, "xsub-train", MODS, seed=7)
    ds.set_epoch(3)
    reader = CacheReader(cache)
    assert len(ds) == 8
    np.testing.assert_array_equal(ds.indices, np.arange(0, 16, 2))
    view1, view2, label, frame_count = ds[2]
    index = int(ds.indices[2])
    assert label == reader.meta["label"][index] and frame_count == reader.meta["frame_count"][index]
    assert set(view1) == set(view2) == set(MODS)
    # Exactly: two augmentations drawn in turn from the sample's stream, then the modalities of
    # each augmented view with gamma = frame_count / 50.
    joints = reader.read("joint", index)
    rng = sample_generator(7, 3, index)
    for view in (view1, view2):
        x = augment(joints, rng, 6, 0.5, 0.0)
        expected = compute_modalities(x, frame_count, t_target=50, modalities=MODS)
        for m in MODS:
            assert view[m].dtype == torch.float32 and view[m].shape == (3, 50, 25, 2)
            np.testing.assert_array_equal(view[m].numpy(), expected[m])
    assert not torch.equal(view1["joint"], view2["joint"])  # independent augmentations


def test_rotation_is_drawn_after_crop_and_shear_for_each_view(cache: Path) -> None:
    ds = pretrain_views(cache, "xsub-train", ("joint", "bone"), seed=7, rotation=40.0)
    ds.set_epoch(1)
    view1, view2, _, frame_count = ds[1]
    joints = CacheReader(cache).read("joint", int(ds.indices[1]))
    rng = sample_generator(7, 1, int(ds.indices[1]))
    for view in (view1, view2):
        x = augment(joints, rng, 6, 0.5, 40.0)
        np.testing.assert_array_equal(view["joint"].numpy(), x)
        expected = compute_modalities(x, frame_count, t_target=50, modalities=("bone",))
        np.testing.assert_array_equal(view["bone"].numpy(), expected["bone"])
    plain = pretrain_views(cache, "xsub-train", ("joint",), seed=7)
    plain.set_epoch(1)
    assert not torch.allclose(plain[1][0]["joint"], view1["joint"])


def test_streams_are_per_sample_per_epoch(cache: Path) -> None:
    ds = pretrain_views(cache, "xsub-train", ("joint",), seed=0)
    ds.set_epoch(1)
    a = ds[0][0]["joint"]
    again = ds[0][0]["joint"]
    other_sample = ds[1][0]["joint"]
    ds.set_epoch(2)
    next_epoch = ds[0][0]["joint"]
    torch.testing.assert_close(a, again, rtol=0, atol=0)
    assert not torch.equal(a, next_epoch)  # no worker-seed bug: no repeat each epoch
    assert not torch.equal(a, other_sample)
    ds2 = pretrain_views(cache, "xsub-train", ("joint",), seed=1)
    ds2.set_epoch(1)
    assert not torch.equal(a, ds2[0][0]["joint"])


def _collect(ds, workers: int, epoch: int):
    sampler = EpochSampler(len(ds), seed=0, shuffle=True)
    sampler.set_epoch(epoch)
    loader = DataLoader(
        ds,
        batch_size=3,
        sampler=sampler,
        num_workers=workers,
        multiprocessing_context=worker_context(workers),
    )
    return list(loader)


def test_batches_are_the_same_for_any_worker_count(cache: Path) -> None:
    ds = pretrain_views(cache, "xview-train", ("joint", "velocity"), seed=3)
    assert ds.reader._h5 is None  # nothing but metadata read in the main process
    ds.reader.read("joint", 0)  # the handle is never handed to workers even when open here
    b0 = _collect(ds, 0, epoch=5)
    b2 = _collect(ds, 2, epoch=5)
    assert len(b0) == len(b2) == 4  # 10 samples (cameras 2, 3) in batches of 3
    for (v1, v2, label, frame), (w1, w2, label2, frame2) in zip(b0, b2, strict=True):
        assert v1["joint"].shape[1:] == (3, 50, 25, 2) and v1["joint"].shape[0] in (1, 3)
        for m in v1:
            assert torch.equal(v1[m], w1[m]) and torch.equal(v2[m], w2[m])
        assert torch.equal(label, label2) and torch.equal(frame, frame2)
    # (epoch, i) keys: the same items as set_epoch + plain indices
    ds.set_epoch(5)
    first = int(next(iter(_epoch_sampler(len(ds), 5)))[1])
    assert torch.equal(ds[first][0]["joint"], b0[0][0]["joint"][0])


@pytest.mark.parametrize(
    "aug",
    [
        REFERENCE_AUG,
        {"crop_ratio": 6, "shear": 0.3, "rotation": 45.0},
        {"crop_ratio": 0, "shear": 0.0, "rotation": 0.0},
    ],
)
def test_a_batch_is_its_samples_collated_bit_for_bit(cache: Path, aug) -> None:
    """The batch-wise loader draws each sample's augmentations from the sample's own stream
    and computes the same values as the per-sample path (the reference's order, per-sample
    streams)."""
    ds = pretrain_views(cache, "xsub-train", MODALITY_NAMES, seed=4, **aug)
    keys = [(2, 5), (3, 0), (2, 7), (2, 5)]  # mixed epochs, a repeated key, any order
    one_by_one = default_collate([ds[k] for k in keys])
    batched = ds.batch(keys)
    for a, b in zip(one_by_one[:2], batched[:2], strict=True):
        assert set(a) == set(b) == set(MODALITY_NAMES)
        for m in a:
            assert b[m].dtype == torch.float32 and b[m].shape == (4, 3, 50, 25, 2)
            torch.testing.assert_close(b[m], a[m], rtol=0, atol=0, msg=m)
    for a, b in zip(one_by_one[2:], batched[2:], strict=True):
        assert b.dtype == torch.int64 and torch.equal(a, b)
    ds.set_epoch(3)  # plain int keys take the epoch last set
    torch.testing.assert_close(ds.batch([0])[0]["bone"], batched[0]["bone"][1:2], rtol=0, atol=0)


def test_the_training_loader_loads_whole_batches(cache: Path) -> None:
    """make_loader hands the batch sampler's keys to PretrainDataset.batch: the same batches
    as the per-sample DataLoader of the same sampler, with 0 and 2 workers."""
    from ikemtrain.config import PretrainConfig
    from ikemtrain.engine.distributed import DistInfo
    from ikemtrain.engine.loop import make_loader

    ds = pretrain_views(cache, "xview-train", ("joint", "velocity"), seed=3)
    for workers in (0, 2):
        cfg = PretrainConfig(seed=0, workers=workers)  # the order _collect's sampler gives
        loader, sampler = make_loader(ds, cfg, 3, DistInfo(0, 1, 0), pin=False)
        sampler.set_epoch(5)
        got = list(loader)
        assert len(got) == len(loader) == 3  # 10 samples, drop_last
        per_sample = _collect(ds, 0, epoch=5)
        for (v1, v2, label, frame), (w1, w2, label2, frame2) in zip(
            got, per_sample[:3], strict=True
        ):
            for m in v1:
                assert torch.equal(v1[m], w1[m]) and torch.equal(v2[m], w2[m])
            assert torch.equal(label, label2) and torch.equal(frame, frame2)


def _epoch_sampler(n: int, epoch: int, **kw) -> EpochSampler:
    s = EpochSampler(n, seed=0, **kw)
    s.set_epoch(epoch)
    return s


def test_epoch_sampler_orders_and_shards() -> None:
    keys = list(_epoch_sampler(10, 1))
    assert [e for e, _ in keys] == [1] * 10 and sorted(i for _, i in keys) == list(range(10))
    assert keys == list(_epoch_sampler(10, 1))
    assert keys != list(_epoch_sampler(10, 2))
    assert [i for _, i in _epoch_sampler(5, 1, shuffle=False)] == [0, 1, 2, 3, 4]
    shards = [list(_epoch_sampler(11, 3, rank=r, world_size=2)) for r in range(2)]
    assert [len(s) for s in shards] == [5, 5] and len(_epoch_sampler(11, 3, world_size=2)) == 5
    assert not set(shards[0]) & set(shards[1])
    whole = [i for _, i in _epoch_sampler(11, 3)][:10]
    assert [i for _, i in shards[0]] == whole[0::2] and [i for _, i in shards[1]] == whole[1::2]


def test_linear_eval_dataset_reads_cached_modalities(cache: Path) -> None:
    ds = LinearEvalDataset(cache, "xsub-val", ("bone", "rotation_axis"))
    reader = CacheReader(cache)
    x, label, frame = ds[1]
    np.testing.assert_array_equal(x["bone"].numpy(), reader.read("bone", 3))
    np.testing.assert_array_equal(x["rotation_axis"].numpy(), reader.read("rotation_axis", 3))
    assert label == reader.meta["label"][3] and frame == reader.meta["frame_count"][3]
    block = ds.read_block(2, 5)
    np.testing.assert_array_equal(block["bone"].numpy(), reader.read("bone", np.array([5, 7, 9])))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch[0]["bone"].shape == (4, 3, 50, 25, 2) and batch[1].shape == (4,)


def test_a_modality_missing_from_the_cache_is_computed_from_its_joints(tmp_path: Path) -> None:
    full = make_cache(tmp_path / "full.h5", n=8)
    path = make_cache(tmp_path / "joint_only.h5", n=8, modalities=("joint", "velocity"))
    ds = LinearEvalDataset(path, "xsub-train", ("joint", "bone", "angular_velocity"))
    assert ds.computed == ("bone", "angular_velocity")
    stored = LinearEvalDataset(full, "xsub-train", ("bone", "angular_velocity"))
    assert stored.computed == ()
    for m in ("bone", "angular_velocity"):
        np.testing.assert_array_equal(ds.read_block(0, 4)[m], stored.read_block(0, 4)[m])
        np.testing.assert_array_equal(ds[1][0][m], stored[1][0][m])
    # a cached bone-derived modality with other options than asked for is recomputed too
    other = LinearEvalDataset(full, "xsub-train", ("velocity", "bone"), bones="3v")
    assert other.computed == ("bone",)
    expect = compute_modalities(
        CacheReader(full).read("joint", 0), CacheReader(full).meta["frame_count"][0],
        modalities=["bone"], bones="3v",
    )["bone"]  # fmt: skip
    np.testing.assert_array_equal(other[0][0]["bone"], expect)


def test_bad_split_and_modality_names_are_clear(tmp_path: Path) -> None:
    path = make_cache(tmp_path / "joint_only.h5", n=8, modalities=("joint", "velocity"))
    with pytest.raises(CacheError, match="unknown split 'xset-train'"):
        LinearEvalDataset(path, "xset-train", ("joint",))
    with pytest.raises(CacheError, match="unknown split"):
        pretrain_views(path, "xsub", ("joint",))
    with pytest.raises(ValueError, match="unknown modalities"):
        pretrain_views(path, "xsub-train", ("joint", "speed"))
    with pytest.raises(ValueError, match="t_target=64"):
        pretrain_views(path, "xsub-train", ("joint",), t_target=64)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    path = make_cache(tmp_path / "one.h5", n=1, modalities=("joint",))
    with pytest.raises(CacheError, match="holds no samples"):
        pretrain_views(path, "xsub-val", ("joint",))
