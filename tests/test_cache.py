"""Cache schema v1: round trip, splits, reader errors, atomic partial writes and resume."""

from __future__ import annotations

import json
import os
import pickle
import re

import h5py
import numpy as np
import pytest

from skelmod import layout
from skelmod.cache import (
    SCHEMA_VERSION,
    CacheError,
    CacheReader,
    CacheWriter,
    ResumeRefused,
    cache_report,
    open_cache,
    partial_path,
    write_cache,
)


def _fake(n=12, t=50, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "joint": rng.standard_normal((n, 3, t, 25, 2)).astype(np.float32),
        "velocity": rng.standard_normal((n, 3, t, 25, 2)).astype(np.float32),
    }
    subject = rng.integers(1, 41, n)
    camera = rng.integers(1, 4, n)
    setup = rng.integers(1, 18, n)
    action = rng.integers(1, 61, n)
    names = [
        f"S{s:03d}C{c:03d}P{p:03d}R001A{a:03d}"
        for s, c, p, a in zip(setup, camera, subject, action, strict=True)
    ]
    meta = {
        "name": np.array(names),
        "setup": setup,
        "camera": camera,
        "subject": subject,
        "replication": np.ones(n, int),
        "action": action,
        "label": action - 1,
        "frame_count": rng.integers(30, 300, n),
        "valid_length": rng.integers(20, 30, n),
        "bodies_seen": np.ones(n, int),
        "bodies_kept": np.ones(n, int),
    }
    return arrays, meta


def test_round_trip_and_splits(tmp_path):
    arrays, meta = _fake()
    path = write_cache(tmp_path / "c.h5", arrays, meta, "ntu60", {"frames": 50})
    assert not partial_path(path).exists()
    r = open_cache(path)
    assert r.n == 12 and r.t == 50 and r.dataset == "ntu60"
    assert r.modalities == ("joint", "velocity")
    assert r.options == {"frames": 50}
    assert list(r.meta["name"]) == list(meta["name"])
    np.testing.assert_array_equal(r.read("joint", slice(None)), arrays["joint"])
    np.testing.assert_array_equal(r.read("velocity", 3), arrays["velocity"][3])
    idx = np.array([5, 1, 5, 0])
    np.testing.assert_array_equal(r.read("joint", idx), arrays["joint"][idx])
    train = r.split_indices("xsub-train")
    val = r.split_indices("xsub-val")
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(12))
    assert all(meta["subject"][i] in layout.XSUB60_TRAIN_SUBJECTS for i in train)
    assert all(meta["camera"][i] == 1 for i in r.split_indices("xview-val"))
    np.testing.assert_array_equal(r.read("joint", "xsub-val"), arrays["joint"][val])
    with h5py.File(path) as f:
        assert f["modalities/joint"].chunks == (1, 3, 50, 25, 2)
        assert f.attrs["schema_version"] == SCHEMA_VERSION


def test_cache_report_counts_what_the_file_holds(tmp_path):
    arrays, meta = _fake()
    meta["frame_count"][:] = [30] * 6 + [300] * 5 + [450]  # one sequence longer than NTU's 300
    report = cache_report(open_cache(write_cache(tmp_path / "c.h5", arrays, meta, "ntu60", {})))
    assert report["schema_version"] == SCHEMA_VERSION and report["samples"] == 12
    assert (report["dataset"], report["layout"], report["joints"]) == ("ntu60", "ntu25", 25)
    labels, counts = np.unique(meta["label"], return_counts=True)
    assert report["classes"] == dict(zip(labels.tolist(), counts.tolist(), strict=True))
    xsub_train = sum(int(s) in layout.XSUB60_TRAIN_SUBJECTS for s in meta["subject"])
    assert report["splits"]["xsub-train"] == xsub_train
    assert report["splits"]["xsub-val"] == 12 - xsub_train
    hist = report["frame_count_histogram"]
    assert hist["edges"] == list(range(0, 451, 45))  # ten bins up to the longest sequence
    assert hist["counts"] == [6, 0, 0, 0, 0, 0, 5, 0, 0, 1]
    json.dumps(report)  # plain JSON types (numpy integers would raise)


def test_layout_options_and_class_count_are_recorded(tmp_path):
    arrays, meta = _fake()
    meta["label"] = meta["label"] % 7  # labels are always below the class count
    path = write_cache(
        tmp_path / "c.h5", arrays, meta, "ntu60", modality_options={"bones": "3v"}, num_class=64
    )
    r = open_cache(path)
    assert (r.layout.name, r.num_class, r.bodies, r.sample_shape) == (
        "ntu25",
        64,
        2,
        (3, 50, 25, 2),
    )
    assert r.feature_options == layout.ModalityOptions(bones="3v", unit_axis=False)
    with h5py.File(path, "r") as f:
        assert f.attrs["layout"] == "ntu25" and f.attrs["num_class"] == 64
        assert json.loads(f.attrs["modality_options"]) == {"bones": "3v", "unit_axis": False}


def test_old_caches_read_as_ntu25_with_their_recorded_options(tmp_path):
    arrays, meta = _fake()
    path = write_cache(tmp_path / "c.h5", arrays, meta, "ntu120", {"bone_convention": "3v"})
    with h5py.File(path, "r+") as f:  # as written before layouts existed
        for key in ("layout", "modality_options", "num_class"):
            del f.attrs[key]
    r = open_cache(path)
    assert (r.layout.name, r.num_class) == ("ntu25", 120)
    assert r.feature_options == layout.ModalityOptions(bones="3v", unit_axis=False)
    with h5py.File(path, "r+") as f:
        f.attrs["num_class"] = 5  # labels above it
    with pytest.raises(CacheError, match=r"meta/label must lie in 0 \.\. 4 \(num_class 5\)"):
        open_cache(path)
    with h5py.File(path, "r+") as f:
        f.attrs["layout"] = "kinect-v2-32"
    with pytest.raises(CacheError, match="'layout': unknown joint layout 'kinect-v2-32'"):
        open_cache(path)


def test_reader_is_picklable_before_and_after_open(tmp_path):
    arrays, meta = _fake()
    r = open_cache(write_cache(tmp_path / "c.h5", arrays, meta, "ntu60"))
    r.read("joint", 0)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._h5 is None and r2._datasets == {}  # the copy opens its own handle
    np.testing.assert_array_equal(r2.read("joint", 2), arrays["joint"][2])
    r.close()  # a closed reader opens the file again on the next read
    np.testing.assert_array_equal(r.read("joint", 4), arrays["joint"][4])


def test_index_arrays_read_in_any_order_with_repeats(tmp_path):
    """Random batches, as the training loader asks for them: each sample lands in its place,
    whether indices repeat, run in order or come shuffled."""
    arrays, meta = _fake()
    r = open_cache(write_cache(tmp_path / "c.h5", arrays, meta, "ntu60"))
    rng = np.random.default_rng(3)
    cases = [rng.permutation(12)[:7], rng.integers(0, 12, 9), np.arange(4, 9), np.array([11, 0])]
    for idx in cases:
        np.testing.assert_array_equal(r.read("joint", idx), arrays["joint"][idx])
        np.testing.assert_array_equal(r.read("velocity", idx), arrays["velocity"][idx])


def test_reader_errors(tmp_path):
    arrays, meta = _fake()
    path = write_cache(tmp_path / "c.h5", arrays, meta, "ntu60")
    r = open_cache(path)
    with pytest.raises(CacheError, match="skelmod features .* --modalities bone"):
        r.require(["joint", "bone"])
    with pytest.raises(CacheError, match="unknown split 'xset-train'"):
        r.split_indices("xset-train")
    with pytest.raises(IndexError):
        r.read("joint", 12)
    r.close()

    with pytest.raises(CacheError, match="no such cache"):
        CacheReader(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(CacheError, match="not an HDF5 file"):
        CacheReader(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match="not a skelmod cache"):
        CacheReader(tmp_path / "other.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(CacheError, match="schema version 99"):
        CacheReader(path)
    path2 = write_cache(tmp_path / "d.h5", arrays, meta, "ntu60")
    with h5py.File(path2, "r+") as f:
        del f["meta/valid_length"]
    with pytest.raises(CacheError, match="missing meta/valid_length"):
        CacheReader(path2)


def test_partial_file_is_not_a_cache_and_resumes(tmp_path):
    arrays, meta = _fake(n=10)
    out = tmp_path / "c.h5"
    kw = dict(dataset="ntu60", t=50, options={"a": 1}, modalities=["joint", "velocity"], block=3)
    w = CacheWriter(out, **kw)
    for i in range(7):
        w.append({m: a[i] for m, a in arrays.items()}, {k: v[i] for k, v in meta.items()})
        w.maybe_flush(state={"done": i + 1})
    w.close()  # "killed" after 6 flushed rows; sample 7 was only buffered
    assert not out.exists() and partial_path(out).exists()

    with pytest.raises(ResumeRefused, match=r"other settings \(options: \{'a': 1\} there"):
        CacheWriter.resume(out, **{**kw, "options": {"a": 2}})
    w, resumed = CacheWriter.resume(out, **kw)
    assert resumed.state == {"done": 6} and w.rows == 6 and resumed.note is None
    for i in range(resumed.state["done"], 10):
        w.append({m: a[i] for m, a in arrays.items()}, {k: v[i] for k, v in meta.items()})
        w.maybe_flush(state={"done": i + 1})
    w.commit()
    r = open_cache(out)
    np.testing.assert_array_equal(r.read("joint", slice(None)), arrays["joint"])
    assert list(r.meta["name"]) == list(meta["name"])
    with h5py.File(out) as f:
        assert "progress" not in f.attrs
        assert json.loads(f.attrs["options"]) == {"a": 1}


def _tampered(tmp_path, name, change):
    """A copy of a valid cache, changed by ``change(h5py.File)``."""
    arrays, meta = _fake(n=6, t=10)
    src = write_cache(tmp_path / f"{name}-src.h5", arrays, meta, "ntu60")
    path = tmp_path / f"{name}.h5"
    path.write_bytes(src.read_bytes())
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def _external_storage(target):
    def change(f):
        shape, dtype = f["meta/frame_count"].shape, f["meta/frame_count"].dtype
        del f["meta/frame_count"]
        f.create_dataset("meta/frame_count", shape=shape, dtype=dtype,
                         external=[(str(target), 0, shape[0] * dtype.itemsize)])  # fmt: skip

    return change


def _virtual(f):
    lay = h5py.VirtualLayout(shape=f["meta/label"].shape, dtype=f["meta/label"].dtype)
    lay[:] = h5py.VirtualSource("/etc/passwd", "x", shape=f["meta/label"].shape)
    del f["meta/label"]
    f.create_virtual_dataset("meta/label", lay)


def _replace(key, link):
    def change(f):
        f[key + "-moved"] = f[key]
        del f[key]
        f[key] = link(key + "-moved")

    return change


def _ext_link(path):
    return h5py.ExternalLink("/etc/x.h5", "/a")


POINTERS = [
    ("external-storage", lambda tmp: _external_storage("/etc/passwd"),
     "keeps its data in external file /etc/passwd"),
    ("soft-link", lambda tmp: _replace("meta/subject", h5py.SoftLink),
     "/meta/subject is a soft link"),
    ("external-link", lambda tmp: _replace("meta/camera", _ext_link),
     "/meta/camera is an external link (to /etc/x.h5:/a)"),
    ("virtual", lambda tmp: _virtual, "/meta/label is a virtual dataset"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "message"), POINTERS, ids=[p[0] for p in POINTERS])
def test_a_cache_is_data_never_a_pointer(tmp_path, name, make, message):
    path = _tampered(tmp_path, name, make(tmp_path))
    with pytest.raises(CacheError, match=re.escape(message)) as e:
        CacheReader(path)
    assert str(path) in str(e.value) and "a cache holds its data itself" in str(e.value)


def test_external_storage_on_a_fifo_is_refused_without_reading(tmp_path):
    """Before the check, reading the FIFO blocked training forever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = _tampered(tmp_path, "fifo", _external_storage(fifo))
    with pytest.raises(CacheError, match="keeps its data in external file"):
        CacheReader(path)  # returns at once: the FIFO is never opened


def _set_attr(key, value):
    def change(f):
        f.attrs[key] = value

    return change


def _meta(key, row, value):
    def change(f):
        f[f"meta/{key}"][row] = value

    return change


DECLARED = [
    (_set_attr("t_frames", 10**6),
     "root attribute 't_frames' is 1000000, more than the limit of 1000"),
    (_set_attr("num_class", 10**10),
     "root attribute 'num_class' is 10000000000, more than the limit of 32767"),
    (_meta("frame_count", 2, 2**31 - 1), "meta/frame_count must lie in 1 .. 10000; row 2"),
    (_meta("frame_count", 1, 0), "meta/frame_count must lie in 1 .. 10000; row 1"),
    (_meta("valid_length", 3, 0), "meta/valid_length must lie in 1 .. frame_count; row 3"),
    (_meta("valid_length", 4, 10**4), "meta/valid_length must lie in 1 .. frame_count; row 4"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), DECLARED)
def test_declared_sizes_and_frame_counts_are_bounded(tmp_path, change, message):
    path = _tampered(tmp_path, "declared", change)
    with pytest.raises(CacheError, match=re.escape(message)) as e:
        CacheReader(path)
    assert str(e.value).startswith(str(path))


def test_a_cache_declaring_too_many_bodies_is_refused_before_reading(tmp_path):
    arrays, meta = _fake(n=2, t=4)
    arrays = {m: np.zeros((2, 3, 4, 25, 7), np.float32) for m in arrays}
    path = write_cache(tmp_path / "m7.h5", arrays, meta, "ntu60")
    with pytest.raises(
        CacheError, match=r"modalities/joint bodies \(M\) is 7, more than the limit of 6"
    ):
        CacheReader(path)
