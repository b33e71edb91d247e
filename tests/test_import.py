"""skelmod import: a documented .npz of arrays -> the same cache skelmod convert writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.skelmod_cli import main
from skelmod.bodies import select_bodies
from skelmod.cache import CacheReader, partial_path
from skelmod.convert import ConvertOptions, OutputError, convert
from skelmod.importer import ArrayImportError, import_arrays
from skelmod.ntu import read_skeleton

MODS = ("joint", "velocity", "bone", "angular_velocity")


def _nucla_arrays(files: list[Path]) -> dict[str, np.ndarray]:
    """The documented format built from N-UCLA JSON files with plain json: one body."""
    seqs, labels, views, subjects, names = [], [], [], [], []
    for f in files:
        data = json.loads(f.read_text())
        seqs.append(np.array(data["skeletons"], dtype=np.float64))  # (T, 20, 3)
        labels.append(data["label"] - 1)
        views.append(int(f.stem[-2:]))
        subjects.append(int(f.stem[5:7]))
        names.append(f.stem)
    views = np.array(views)
    return {
        "joints": np.concatenate(seqs),
        "offsets": np.concatenate([[0], np.cumsum([len(s) for s in seqs])]),
        "label": np.array(labels),
        "subject": np.array(subjects),
        "view": views,
        "name": np.array(names),
        "train_xview": views != 3,
    }


@pytest.fixture(scope="module")
def nucla_subset(nucla_dir: Path, tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("nucla-subset")
    for f in sorted(nucla_dir.glob("*.json"))[::70]:  # 22 files, every view
        shutil.copy(f, raw)
    return raw


def test_import_equals_convert_on_nucla(nucla_subset: Path, tmp_path: Path) -> None:
    opts = ConvertOptions(modalities=MODS)
    ref = convert(nucla_subset, tmp_path / "ref.h5", dataset="nucla", options=opts, workers=1)
    arrays = _nucla_arrays(sorted(nucla_subset.glob("*.json")))
    np.savez(tmp_path / "a.npz", **arrays)
    report = import_arrays(tmp_path / "a.npz", tmp_path / "imp.h5", layout_name="kinect-v1-20",
                           options=opts)  # fmt: skip
    assert report.ok and report.converted == ref.converted == 22
    a, b = CacheReader(ref.out), CacheReader(report.out)
    assert (b.dataset, b.layout.name, b.bodies, b.num_class) == ("custom", "kinect-v1-20", 1, 10)
    assert b.split_names == ("xview-train", "xview-val")
    for split in b.split_names:
        np.testing.assert_array_equal(a.split_indices(split), b.split_indices(split))
    for m in MODS:
        np.testing.assert_array_equal(a.read(m, slice(None)), b.read(m, slice(None)))
    for k in ("name", "camera", "subject", "label", "frame_count", "valid_length"):
        np.testing.assert_array_equal(a.meta[k], b.meta[k])


def test_import_equals_convert_on_two_body_ntu_files(ntu_real_files, tmp_path: Path) -> None:
    files = ntu_real_files[:6]
    raw = tmp_path / "raw"
    raw.mkdir()
    seqs = []
    for f in files:
        shutil.copy(f, raw)
        d, _ = select_bodies(read_skeleton(f))  # (3, F, 25, 2), the reference rule
        seqs.append(d.transpose(1, 3, 2, 0))  # (F, 2, 25, 3)
    arrays = {
        "joints": np.concatenate(seqs),
        "offsets": np.concatenate([[0], np.cumsum([len(s) for s in seqs])]),
        "label": np.array([int(f.stem[-3:]) - 1 for f in files]),
        "name": np.array([f.stem for f in files]),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    ref = convert(raw, tmp_path / "ref.h5", options=ConvertOptions(modalities=MODS), workers=1)
    res = CliRunner().invoke(main, ["import", str(tmp_path / "a.npz"), "--layout", "ntu25",
                                    "-o", str(tmp_path / "imp.h5"), "--modalities",
                                    ",".join(MODS), "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "converted 6 of 6 sequences (custom)" in res.output
    a, b = CacheReader(ref.out), CacheReader(tmp_path / "imp.h5")
    assert b.bodies == 2 and b.split_names == ()
    for m in MODS:
        np.testing.assert_array_equal(a.read(m, slice(None)), b.read(m, slice(None)))
    info = CliRunner().invoke(main, ["info", str(tmp_path / "imp.h5")])
    assert info.exit_code == 0 and "layout ntu25 (25 joints, 2 bodies)" in info.output


def _good(n: int = 3, t: int = 6, v: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "joints": rng.normal(size=(n * t, v, 3)),
        "offsets": np.arange(0, n * t + 1, t),
        "label": np.arange(n) % 2,
        "train_xview": np.arange(n) % 2 == 0,
    }


MALFORMED = [
    (lambda a: a.pop("offsets"), "missing array 'offsets'"),
    (lambda a: a.update(joints=a["joints"].astype(np.int64)), "'joints' must be a float array"),
    (lambda a: a.update(joints=a["joints"][:, :19]), r"\(ΣT, 20, 3\) or \(ΣT, M, 20, 3\)"),
    (lambda a: a.update(joints=a["joints"][..., :2]), r"\(ΣT, 20, 3\)"),
    (lambda a: a.update(joints=a["joints"][:, None, :, :, None]), r"found \(18, 1, 20, 3, 1\)"),
    (lambda a: a.update(offsets=np.array([0, 6, 12, 17])), "end at ΣT = 18"),
    (lambda a: a.update(offsets=np.array([1, 6, 12, 18])), "start at 0"),
    (lambda a: a.update(offsets=np.array([0, 12, 6, 18])), r"offsets\[1\] = 12 >= offsets\[2\]"),
    (lambda a: a.update(offsets=np.array([0, 6, 6, 18])), "every sequence has a frame"),
    (lambda a: a.update(offsets=np.array([0.0, 6, 12, 18])), "'offsets' must be an"),
    (lambda a: a.update(offsets=np.array([18])), "N >= 1"),
    (lambda a: a.update(label=np.array([0, 1])), r"'label' must have shape \(3,\)"),
    (lambda a: a.update(label=np.array([0.0, 1, 0])), "'label' must hold integers"),
    (lambda a: a.update(label=np.array([0, -1, 0])), "'label' values must lie in 0 .. 32766"),
    (lambda a: a.update(subject=np.array([1, 2, 40000])), "'subject' values must lie in"),
    (lambda a: a.update(view=np.array([[1, 2, 3]])), r"'view' must have shape \(3,\)"),
    (lambda a: a.update(name=np.array(["a", "b"])), r"'name' must be an \(3,\) array of strings"),
    (lambda a: a.update(name=np.array([1, 2, 3])), "array of strings"),
    (lambda a: a.update(name=np.array(["a", "b", "a"])), "'name' repeats 'a'"),
    (lambda a: a.update(name=np.array(["a", " ", "c"])), "empty name at index 1"),
    (lambda a: a.update(train_xview=np.array([1, 0, 1])), "'train_xview' must be an \\(3,\\) bool"),
    (lambda a: a.update(train_xview=np.array([True, False])), "'train_xview' must be an"),
    (lambda a: a.update({"train_": np.ones(3, bool)}), "named train_<split>"),
    (
        lambda a: a.update(train_xview=np.ones(3, bool)),
        "'train_xview' marks all 3 sequences as training, so the split xview-val",
    ),
    (
        lambda a: a.update(train_cs=np.zeros(3, bool)),
        "'train_cs' marks all 3 sequences as validation, so the split cs-train",
    ),
    (lambda a: a.update(labels=np.zeros(3, int)), "unknown array 'labels'"),
    (lambda a: a.update(name=np.array([{"a": 1}, 2, 3], dtype=object)), "without pickle"),
]


@pytest.mark.parametrize(("change", "message"), MALFORMED)
def test_malformed_arrays_are_clear_errors(tmp_path: Path, change, message) -> None:
    arrays = _good()
    change(arrays)
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(ArrayImportError, match=message) as e:
        import_arrays(tmp_path / "a.npz", tmp_path / "c.h5", layout_name="kinect-v1-20")
    assert str(tmp_path / "a.npz") in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "c.h5").exists() and not partial_path(tmp_path / "c.h5").exists()


def test_a_split_left_empty_by_rejections_is_refused(tmp_path: Path) -> None:
    """Both validation sequences are rejected: xview-val would be empty, so nothing is written
    and the line names the mask and the rejections."""
    arrays = _good(n=4)
    arrays["joints"][7, 4, 1] = np.nan  # sequence 1 (validation)
    arrays["joints"][18:24, 0] = 0.0  # sequence 3 (validation): L = 0
    np.savez(tmp_path / "a.npz", **arrays)
    res = CliRunner().invoke(main, ["import", str(tmp_path / "a.npz"), "--layout",
                                    "kinect-v1-20", "-o", str(tmp_path / "c.h5")])  # fmt: skip
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("Error")]
    assert f"{tmp_path / 'a.npz'}: 'train_xview' with the 2 rejected sequences left out" in line
    assert "marks all 2 sequences as training, so the split xview-val would be empty" in line
    assert not (tmp_path / "c.h5").exists() and not partial_path(tmp_path / "c.h5").exists()


def test_not_an_npz_and_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "a.npz").write_text("not a zip")
    with pytest.raises(ArrayImportError, match="not a readable .npz"):
        import_arrays(tmp_path / "a.npz", tmp_path / "c.h5", layout_name="ntu25")
    np.save(tmp_path / "b.npy", np.zeros(3))
    with pytest.raises(ArrayImportError, match="expected an .npz archive"):
        import_arrays(tmp_path / "b.npy", tmp_path / "c.h5", layout_name="ntu25")
    res = CliRunner().invoke(main, ["import", str(tmp_path / "b.npy"), "--layout", "kinect",
                                    "-o", str(tmp_path / "c.h5")])  # fmt: skip
    assert res.exit_code == 2 and "kinect-v1-20" in res.output


def test_bad_sequences_are_rejected_and_the_others_convert(tmp_path: Path) -> None:
    arrays = _good(n=4)
    arrays["name"] = np.array(["s0", "s1", "s2", "s3"])
    arrays["joints"][7, 4, 1] = np.nan  # sequence 1, frame 1, joint 5
    arrays["joints"][12:18, 0] = 0.0  # sequence 2: HipCenter never tracked, L = 0
    np.savez(tmp_path / "a.npz", **arrays)
    res = CliRunner().invoke(main, ["import", str(tmp_path / "a.npz"), "--layout",
                                    "kinect-v1-20", "-o", str(tmp_path / "c.h5")])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "converted 2 of 4 sequences (custom)" in res.output
    assert "  s1: 'joints' row 7 (frame 1), body 0, joint 5: not finite" in res.output
    assert "  s2: no valid frame: body 0's joint 1 (hip center)" in res.output
    r = CacheReader(tmp_path / "c.h5")
    assert list(r.meta["name"]) == ["s0", "s3"]
    assert r.split_indices("xview-train").tolist() == [0] and r.num_class == 2
    # nothing converts: an error, and no cache
    arrays["joints"][:] = np.nan
    np.savez(tmp_path / "b.npz", **arrays)
    res = CliRunner().invoke(main, ["import", str(tmp_path / "b.npz"), "--layout",
                                    "kinect-v1-20", "-o", str(tmp_path / "d.h5")])  # fmt: skip
    assert res.exit_code == 1 and "none of the 4 sequences converted" in res.output
    assert not (tmp_path / "d.h5").exists() and not partial_path(tmp_path / "d.h5").exists()


def test_corrupt_and_oversized_arrays_are_refused(tmp_path: Path, monkeypatch) -> None:
    import skelmod.importer as importer

    np.savez(tmp_path / "a.npz", **_good())
    data = bytearray((tmp_path / "a.npz").read_bytes())
    i = data.index(b"joints.npy") + 200  # inside the joints member's data
    data[i : i + 8] = b"\xff" * 8
    (tmp_path / "b.npz").write_bytes(bytes(data))
    with pytest.raises(ArrayImportError, match="an array is corrupt"):
        import_arrays(tmp_path / "b.npz", tmp_path / "c.h5", layout_name="kinect-v1-20")
    monkeypatch.setattr(importer, "_memory_limit", lambda: 1000)  # joints: 18*20*3*8 bytes
    with pytest.raises(
        ArrayImportError, match=r"array 'joints' holds \d+ bytes, more than the 1000"
    ):
        import_arrays(tmp_path / "a.npz", tmp_path / "c.h5", layout_name="kinect-v1-20")


def test_import_follows_converts_output_rule(tmp_path: Path) -> None:
    """One rule for every cache writer (skelmod.convert.check_output): never the input, never
    an existing file without --overwrite, never a non-cache file even with it, a folder or a
    trailing slash is a usage error; inputs untouched in every refused case."""
    np.savez(tmp_path / "a.npz", **_good())
    arrays = tmp_path / "a.npz"
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    folder = tmp_path / "folder"
    folder.mkdir()

    def run(out, *extra):
        return CliRunner().invoke(
            main, ["import", str(arrays), "--layout", "kinect-v1-20", "-o", str(out), *extra]
        )

    good = run(tmp_path / "c.h5")
    assert good.exit_code == 0, good.output
    cache_bytes = (tmp_path / "c.h5").read_bytes()
    before = {p: p.read_bytes() for p in (arrays, notes)}
    cases = [
        (arrays, ("--overwrite",), "is one of the input files"),
        (tmp_path / "c.h5", (), "a cache already exists; set overwrite"),
        (notes, ("--overwrite",), "exists and is not a skelmod cache"),
        (folder, (), "is a directory"),
        (f"{tmp_path}/newdir/", (), "is a directory"),
    ]
    for out, extra, message in cases:
        res = run(out, *extra)
        assert res.exit_code == 2, (out, res.output)
        assert message in res.output and "Traceback" not in res.output, res.output
        assert res.output.count("Error") == 1, res.output
    assert {p: p.read_bytes() for p in (arrays, notes)} == before
    assert (tmp_path / "c.h5").read_bytes() == cache_bytes
    assert not (tmp_path / "newdir").exists() and not any(folder.iterdir())
    # the library refuses before reading a byte of the arrays
    with pytest.raises(OutputError, match="is one of the input files"):
        import_arrays(arrays, arrays, layout_name="kinect-v1-20", overwrite=True)
    assert run(tmp_path / "c.h5", "--overwrite").exit_code == 0
    assert len(CacheReader(tmp_path / "c.h5")) == 3


def test_declared_sizes_are_checked_before_an_array_is_read(tmp_path: Path) -> None:
    """Issue 24.4: a header claiming 10^12 frames, too many bodies or an endless sequence is
    refused from the header, before anything is allocated."""
    np.savez(tmp_path / "lie.npz", **_good())
    raw = (tmp_path / "lie.npz").read_bytes()
    header = raw[raw.index(b"joints.npy") :][:200]
    assert b"'shape': (18, 20, 3)" in header
    data = bytearray(raw)
    k = data.index(b"'shape': (18, 20, 3)")
    data[k : k + 20] = b"'shape':(999999999,)"  # same length: 10^9 float64
    (tmp_path / "lie.npz").write_bytes(bytes(data))
    with pytest.raises(
        ArrayImportError,
        match=r"'joints' declares shape \(999999999,\) float64 \(7999999992 bytes\)",
    ) as e:
        import_arrays(tmp_path / "lie.npz", tmp_path / "c.h5", layout_name="kinect-v1-20")
    assert "but its member holds 8640 bytes of data" in str(e.value)

    bodies = _good()
    bodies["joints"] = np.zeros((18, 7, 20, 3))
    np.savez(tmp_path / "m7.npz", **bodies)
    with pytest.raises(ArrayImportError, match="'joints' declares 7 bodies"):
        import_arrays(tmp_path / "m7.npz", tmp_path / "c.h5", layout_name="kinect-v1-20")

    long = _good(n=1, t=10_001)
    np.savez(tmp_path / "long.npz", **long)
    with pytest.raises(ArrayImportError, match="sequence 0 has 10001 frames, more than the limit"):
        import_arrays(tmp_path / "long.npz", tmp_path / "c.h5", layout_name="kinect-v1-20")
    assert not (tmp_path / "c.h5").exists()
