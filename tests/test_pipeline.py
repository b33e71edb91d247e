"""skelmod.pipeline: the one per-sample pipeline (read -> select bodies -> normalise ->
modalities) that convert and import share, and the report both fill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from naive_pipeline import naive_process  # tests/ is on sys.path under pytest

from skelmod import layout
from skelmod.cache import CacheReader, SampleError
from skelmod.convert import convert
from skelmod.features import add_features
from skelmod.importer import _sample, import_arrays
from skelmod.pipeline import (
    ConvertError,
    ConvertOptions,
    Sample,
    convert_file,
    read_file,
    run,
)
from skelmod.report import ConvertReport, sample_counts
from skelmod.synth import generate

MODS = ("joint", "velocity", "bone", "angular_velocity")


def test_run_on_real_files_is_the_reference_and_what_convert_file_gives(ntu_real_files) -> None:
    opts = ConvertOptions(modalities=MODS)
    for path in ntu_real_files[:4]:
        sample = read_file(path, opts, "ntu60")
        assert sample.layout_name == "ntu25" and sample.joints.shape[-1] == 2
        result = run(sample, opts, layout.NUM_CLASSES["ntu60"])
        x, length, frame_count = naive_process(path)
        np.testing.assert_allclose(result["arrays"]["joint"], x, atol=1e-5, err_msg=path.name)
        assert result["meta"]["valid_length"] == length
        assert result["meta"]["frame_count"] == frame_count
        again = convert_file(path, opts, "ntu60")
        for m in MODS:
            np.testing.assert_array_equal(again["arrays"][m], result["arrays"][m])
        assert again["meta"] == result["meta"]


def test_an_imported_sequence_takes_the_same_pipeline(ntu_real_files) -> None:
    """The importer's sample of the same selected bodies gives the same arrays as the file."""
    opts = ConvertOptions(modalities=MODS)
    path = ntu_real_files[0]
    sample = read_file(path, opts)
    data = {"name": ["x"], "view": [3], "subject": [7], "label": [sample.meta["label"]]}
    imported = run(_sample(data, 0, np.ascontiguousarray(sample.joints), "ntu25"), opts)
    direct = run(sample, opts)
    for m in MODS:
        np.testing.assert_array_equal(imported["arrays"][m], direct["arrays"][m])
    assert imported["meta"]["valid_length"] == direct["meta"]["valid_length"]
    assert (imported["meta"]["camera"], imported["meta"]["subject"]) == (3, 7)


def test_run_refuses_what_a_cache_refuses() -> None:
    joints = np.zeros((3, 10, 25, 2))
    joints[:, :, :, 0] = np.random.default_rng(0).normal(size=(3, 10, 25))
    meta = {"name": "s", "label": 60, "frame_count": 10, "bodies_seen": 1, "bodies_kept": 1}
    with pytest.raises(SampleError, match="label 60 is not one of the 60 classes"):
        run(Sample(joints, meta, "ntu25"), ConvertOptions(), num_class=60)
    joints[1, 3, 4, 0] = 1e6  # beyond the physical bound
    with pytest.raises(SampleError, match="physical bound") as e:
        run(Sample(joints, {**meta, "label": 0}, "ntu25"), ConvertOptions(), num_class=60)
    assert e.value.modality == "joint"


def test_read_file_needs_a_known_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1\n")
    with pytest.raises(ConvertError, match="no reader for '.txt' files"):
        read_file(tmp_path / "a.txt", ConvertOptions())


def test_report_counts_a_sample_once_and_again_after_a_resume() -> None:
    result = {
        "meta": {"bodies_seen": 3, "bodies_kept": 2},
        "dropped": {"energy": 1},
        "fallbacks": 0,
    }
    counts = sample_counts(result)
    a, b = ConvertReport(out=None, dataset="ntu60"), ConvertReport(out=None, dataset="ntu60")
    a.count(counts)
    b.count(json.loads(json.dumps(counts)))  # as a resumed run reads it back
    assert a == b
    assert (a.converted, a.bodies_seen, a.bodies_kept, a.bodies_dropped) == (1, 3, 2, {"energy": 1})


def test_convert_and_import_report_the_same_counts(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    generate(raw, 2, 2, 0)
    opts = ConvertOptions(modalities=("joint", "bone"))
    ref = convert(raw, tmp_path / "c.h5", workers=1, options=opts)
    r = CacheReader(ref.out)
    joints = r.read("joint", slice(None))  # normalised already: import re-normalises a copy
    n, _, t, v, m = joints.shape
    arrays = {
        "joints": joints.transpose(0, 2, 4, 3, 1).reshape(n * t, m, v, 3).astype(np.float64),
        "offsets": np.arange(0, n * t + 1, t),
        "label": r.meta["label"].astype(np.int64),
        "train_xsub": np.arange(n) % 2 == 0,
    }
    np.savez(tmp_path / "a.npz", **arrays)
    rep = import_arrays(tmp_path / "a.npz", tmp_path / "i.h5", layout_name="ntu25", options=opts)
    assert rep.converted == ref.converted == n and rep.bodies_kept == 2 * n


def test_features_keeps_the_splits_of_an_imported_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "joints": rng.normal(size=(4 * 8, 20, 3)),
        "offsets": np.arange(0, 33, 8),
        "label": np.array([0, 1, 0, 1]),
        "train_xview": np.array([True, False, True, True]),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    out = tmp_path / "c.h5"
    import_arrays(tmp_path / "a.npz", out, layout_name="kinect-v1-20")
    add_features(out, ["bone"])
    r = CacheReader(out)
    assert r.modalities == ("joint", "bone")
    assert r.split_indices("xview-val").tolist() == [1]
