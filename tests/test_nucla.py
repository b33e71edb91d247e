"""N-UCLA: the shared ``all_sqe`` JSON files converted natively in ``kinect-v1-20``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from naive_pipeline import naive_normalize

from cli.skelmod_cli import main as skelmod_main
from skelmod.cache import CacheReader
from skelmod.convert import convert
from skelmod.nucla import NuclaFormatError, parse_nucla_name, read_nucla

# Written from SOURCES.md: 1,484 files; views 1+2 train (1,020), view 3 val (464); ten
# actions a01-a06, a08, a09, a11, a12 labelled 1-10 in that order.
ACTION_OF_LABEL = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 8, 7: 9, 8: 11, 9: 12}
# Kinect v1 joints (0-based) by the rules in skelmod/layout.py: ShoulderCenter plays NTU's
# joint 21, the shoulders are ShoulderLeft / ShoulderRight, the valid length is HipCenter's.
V1_CENTER, V1_SHOULDERS, V1_LENGTH_JOINT = 2, (4, 8), 0


@pytest.fixture(scope="module")
def nucla_cache(nucla_dir: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("nucla-cache") / "nucla.h5"
    report = convert(nucla_dir, out, dataset="nucla", workers=2)
    return out, report


def test_every_shared_file_converts(nucla_dir: Path, nucla_cache) -> None:
    out, report = nucla_cache
    assert (report.total, report.converted, report.rejected) == (1484, 1484, [])
    r = CacheReader(out)
    assert (r.dataset, r.layout.name, r.num_class, r.bodies) == ("nucla", "kinect-v1-20", 10, 1)
    assert r.feature_options.to_json() == {"bones": "6v", "unit_axis": False}
    assert r.split_names == ("xview-train", "xview-val")
    train, val = r.split_indices("xview-train"), r.split_indices("xview-val")
    assert (train.size, val.size) == (1020, 464)
    assert set(r.meta["camera"][train]) == {1, 2} and set(r.meta["camera"][val]) == {3}
    assert np.bincount(r.meta["label"]).tolist() == [
        150,
        152,
        141,
        173,
        148,
        149,
        142,
        142,
        145,
        142,
    ]
    for label, action in ACTION_OF_LABEL.items():
        assert set(r.meta["action"][r.meta["label"] == label]) == {action}
    assert r.h5["modalities/joint"].shape == (1484, 3, 50, 20, 1)
    assert int(r.meta["frame_count"].sum()) == 58534  # SOURCES.md: 58,534 frames in all


def test_samples_match_a_plain_reading_of_the_json(nucla_dir: Path, nucla_cache) -> None:
    """The cache's joints are the JSON joints put through the plain normalisation twin with v1's
    joints."""
    out, _ = nucla_cache
    r = CacheReader(out)
    names = list(r.meta["name"])
    for name in ("a01_s01_e00_v01", "a06_s03_e02_v02", "a12_s10_e04_v03", names[777]):
        data = json.loads((nucla_dir / f"{name}.json").read_text())
        xyz = np.array(data["skeletons"], dtype=np.float64)  # (T, 20, 3)
        raw = xyz.transpose(2, 0, 1)[..., None]
        expect, length = naive_normalize(
            raw, 50, center=V1_CENTER, shoulders=V1_SHOULDERS, length_joint=V1_LENGTH_JOINT
        )
        i = names.index(name)
        np.testing.assert_allclose(r.read("joint", i), expect, atol=1e-5, rtol=0)
        a, s, e, v = (int(name[k : k + 2]) for k in (1, 5, 9, 13))
        meta = {k: int(r.meta[k][i]) for k in ("action", "subject", "replication", "camera")}
        assert meta == {"action": a, "subject": s, "replication": e, "camera": v}
        assert int(r.meta["label"][i]) == data["label"] - 1
        assert int(r.meta["frame_count"][i]) == len(data["skeletons"])
        assert int(r.meta["valid_length"][i]) == length
        assert not r.read("joint", i)[:, :, V1_CENTER].any()  # centred on ShoulderCenter


def _write(path: Path, obj) -> None:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def test_bad_files_are_named_and_the_others_convert(nucla_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    good = ("a01_s01_e00_v01", "a02_s01_e00_v03", "a08_s02_e01_v02")
    for name in good:
        shutil.copy(nucla_dir / f"{name}.json", raw)
    base = json.loads((nucla_dir / "a03_s01_e00_v01.json").read_text())
    frames = base["skeletons"]

    def variant(name, **changes):
        return {**base, "file_name": name, **changes}

    bad = {
        "a03_s01_e00_v01": ('{"file_name": "a03_s01_e00_v01", "label": 3,', "line 1 column"),
        "a03_s01_e01_v01": ({"file_name": "a03_s01_e01_v01", "label": 3}, "'skeletons'"),
        "a03_s01_e02_v01": (variant("a03_s01_e02_v01", label=4), "field 'label': expected 3"),
        "a03_s01_e03_v01": (variant("x"), "field 'file_name'"),
        "a03_s01_e04_v01": (
            variant("a03_s01_e04_v01", skeletons=[frames[0], frames[1][:19]]),
            r"field 'skeletons\[1\]': expected 20 joints, found 19",
        ),
        "a03_s02_e00_v01": (
            variant(
                "a03_s02_e00_v01",
                skeletons=[frames[0], [*frames[1][:5], ["1", 2, 3], *frames[1][6:]]],
            ),
            r"skeletons\[1\]\[5\]': expected 3 finite numbers",
        ),
        "a03_s02_e01_v01": (
            variant("a03_s02_e01_v01", skeletons=[[[float("nan"), 0, 0]] * 20]),
            r"skeletons\[0\]\[0\]': expected 3 finite numbers",
        ),
        "a03_s02_e02_v01": (variant("a03_s02_e02_v01", skeletons=[]), "non-empty list"),
        "a07_s01_e00_v01": (variant("a07_s01_e00_v01"), "a07 is not one of"),
        "a03_s02_e03_v01": ([1, 2], "expected a JSON object"),
    }
    for name, (content, _) in bad.items():
        _write(raw / f"{name}.json", content)
    result = CliRunner().invoke(skelmod_main, ["convert", str(raw), "-o", str(tmp_path / "c.h5")])
    assert result.exit_code == 1, result.output
    assert f"converted {len(good)} of {len(good) + len(bad)} files (nucla)" in result.output
    assert f"rejected: {len(bad)}" in result.output
    lines = result.output.splitlines()
    for name, (_, reason) in bad.items():
        (line,) = [s for s in lines if s.startswith(f"  {name}: ")]
        assert f"{name}.json" in line or name in line
        assert re.search(reason, line), (name, line)
    assert list(CacheReader(tmp_path / "c.h5").meta["name"]) == sorted(good)


def nucla_text(name: str = "a01_s01_e00_v01", frames: int = 4, label: str = "1") -> str:
    """An N-UCLA file's text: ``frames`` frames of 20 joints, every y written ``0.25``."""
    skeletons = [[[0.1 * j, 0.25, 3.0] for j in range(20)] for _ in range(frames)]
    text = json.dumps({"file_name": name, "skeletons": skeletons, "label": 0})
    return text.replace('"label": 0', f'"label": {label}')


@pytest.mark.parametrize(
    ("number", "where", "field"),
    [
        ("9" * 400, "skeletons", r"skeletons\[1\]\[0\]"),
        ("9" * 5001, "skeletons", r"skeletons\[1\]\[0\]"),
        ("1" * 400 + ".5", "skeletons", r"skeletons\[1\]\[0\]"),
        ("0." + "0" * 5000 + "1e3", "skeletons", r"skeletons\[1\]\[0\]"),
        ("1" * 65, "skeletons", r"skeletons\[1\]\[0\]"),
        ("1" + "0" * 5000, "label", "label"),
    ],
    ids=["int-400", "int-5001", "float-400", "float-5005", "int-65", "label-5001"],
)
def test_numbers_too_long_are_refused_before_conversion(
    tmp_path: Path, number: str, where: str, field: str
) -> None:
    """A number literal longer than MAX_NUMBER_CHARS is never converted (a 5,001-digit int
    would pass Python's 4,300-digit limit with a ValueError of its own): the error names the
    file, the field and the limit."""
    path = tmp_path / "a01_s01_e00_v01.json"
    if where == "label":
        path.write_text(nucla_text(label=number))
    else:  # frame 1's first joint: y
        text = nucla_text()
        k = text.index("0.25", text.index("]]") + 1)
        path.write_text(text[:k] + number + text[k + 4 :])
    with pytest.raises(NuclaFormatError) as e:
        read_nucla(path)
    message = str(e.value)
    assert message.startswith(f"{path}: field '") and "\n" not in message
    assert re.search(f"field '{field}': a number of {len(number)} characters", message), message
    assert "more than the 64 a number may have" in message


def test_numbers_within_the_limit_are_read(tmp_path: Path) -> None:
    path = tmp_path / "a01_s01_e00_v01.json"
    text = nucla_text()
    k = text.index("0.25")
    literal = "0." + "2" * 62  # 64 characters
    path.write_text(text[:k] + literal + text[k + 4 :])
    assert read_nucla(path).joints[1, 0, 0, 0] == float(literal)


def test_names_are_checked() -> None:
    assert parse_nucla_name("a12_s10_e04_v03.json") == (12, 10, 4, 3)
    for name, reason in (
        ("a01_s01_e00_v04.json", "view v04"),
        ("a10_s01_e00_v01.json", "a10 is not one of"),
        ("S001C001P001R001A001.json", "not an N-UCLA sample name"),
    ):
        with pytest.raises(NuclaFormatError, match=reason):
            parse_nucla_name(name)


def test_a_file_is_read_as_its_joints(nucla_dir: Path) -> None:
    sample = read_nucla(nucla_dir / "a01_s01_e00_v01.json")
    data = json.loads((nucla_dir / "a01_s01_e00_v01.json").read_text())
    assert sample.joints.shape == (3, len(data["skeletons"]), 20, 1)
    assert sample.joints[:, 0, 0, 0].tolist() == data["skeletons"][0][0]
    assert (sample.label, sample.view, sample.frame_count) == (0, 1, len(data["skeletons"]))


def test_end_to_end_on_forty_files(nucla_dir: Path, tmp_path: Path) -> None:
    """convert --dataset nucla -> info -> pretrain (tiny, 6 modalities, 1 epoch) -> linear-eval 6s
    from a joints-only cache, through the command lines, as a user would run them."""
    from cli.ikemtrain_cli import main as ikemtrain_main

    raw = tmp_path / "all_sqe"
    raw.mkdir()
    for path in sorted(nucla_dir.glob("*.json"))[::37]:  # 41 files over all actions and views
        shutil.copy(path, raw)
    cache = tmp_path / "nucla.h5"
    runner = CliRunner()

    def run(main, *args):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    out = run(skelmod_main, "convert", raw, "--dataset", "nucla", "-o", cache, "--quiet")
    assert "converted 41 of 41 files (nucla)" in out
    out = run(skelmod_main, "info", cache)
    assert "layout kinect-v1-20 (20 joints, 1 body), 10 classes" in out
    r = CacheReader(cache)
    n_train = r.split_indices("xview-train").size
    assert r.modalities == ("joint",) and 16 <= n_train < 41
    run(
        ikemtrain_main, "pretrain", cache, "--split", "xview", "--preset", "tiny",
        "--modalities", "6", "--epochs", "1", "--workers", "0", "--device", "cpu",
        "--out", tmp_path / "run",
    )  # fmt: skip
    out = run(
        ikemtrain_main, "linear-eval", cache, "--split", "xview", "--checkpoint",
        tmp_path / "run", "--streams", "6s", "--preset", "tiny", "--epochs", "2",
        "--batch-size", "8", "--device", "cpu", "--out", tmp_path / "le",
    )  # fmt: skip
    assert "computing velocity, acceleration, bone, rotation_axis, angular_velocity" in out
    results = json.loads((tmp_path / "le" / "results.json").read_text())
    assert results["num_class"] == 10 and results["layout"] == "kinect-v1-20"
    assert results["train_samples"] == n_train and results["val_samples"] == 41 - n_train
    assert len(results["history"]) == 2 and np.isfinite(results["history"][-1]["loss"])
