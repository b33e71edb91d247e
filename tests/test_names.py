"""Sample names and missing-skeleton lists (skelmod.names;
docs/data.md, "NTU files, names and splits")."""

from __future__ import annotations

from pathlib import Path

import pytest

from skelmod.names import SampleId, detect_dataset, parse_sample_name, read_missing_list


def test_parse_sample_name_forms():
    want = SampleId(setup=17, camera=3, subject=20, replication=2, action=54)
    assert parse_sample_name("S017C003P020R002A054") == want
    assert parse_sample_name("S017C003P020R002A054.skeleton") == want
    assert parse_sample_name("/data/nturgb+d_skeletons/S017C003P020R002A054.skeleton") == want
    assert parse_sample_name(Path("raw") / "S017C003P020R002A054.skeleton") == want
    assert want.label == 53
    assert want.name == "S017C003P020R002A054"
    assert parse_sample_name(want.name) == want


def test_parse_real_file_names(ntu_real_files):
    for path in ntu_real_files:
        sid = parse_sample_name(path)
        assert sid.name == path.stem
        stem = path.stem
        assert (sid.setup, sid.camera, sid.subject, sid.replication, sid.action) == tuple(
            int(stem[i + 1 : i + 4]) for i in range(0, 20, 4)
        )


@pytest.mark.parametrize(
    "bad",
    [
        "S01C001P001R001A001",  # 2 digits
        "S0001C001P001R001A001",  # 4 digits
        "S001C001P001A001R001",  # fields out of order
        "s001c001p001r001a001",  # lower case
        "S001C001P001R001A001.skel",
        "S001C001P001R001A001x",
        "S001C001P001R001A000",  # ids are 1-based
        "",
        "S001C001P001R001A00a",
    ],
)
def test_parse_sample_name_rejects(bad):
    with pytest.raises(ValueError, match="SsssCcccPpppRrrrAaaa") as info:
        parse_sample_name(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("file", "count", "first", "last"),
    [
        ("NTU_RGBD_samples_with_missing_skeletons.txt", 302, "S001C002P005R002A008", None),
        ("NTU_RGBD120_samples_with_missing_skeletons.txt", 535, "S001C002P005R002A008",
         "S032C003P067R002A077"),
    ],
)  # fmt: skip
def test_real_missing_lists(shared_data, file, count, first, last):
    path = shared_data / file
    lines = path.read_text().splitlines()
    assert not lines[0].startswith("S0")  # the 3-line prose header is really there
    names = read_missing_list(path)
    assert len(names) == count
    assert first in names
    if last is not None:
        assert last in names
    assert all(parse_sample_name(n).name == n for n in names)


def test_missing_list_variants(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("S001C001P001R001A001\nS002C002P002R002A002\n")
    assert read_missing_list(plain) == {"S001C001P001R001A001", "S002C002P002R002A002"}

    messy = tmp_path / "messy.txt"
    messy.write_bytes(
        b"2 samples are bad.\r\nIgnore them.\r\n\r\nS001C001P001R001A001\r\n\r\n"
        b"  S002C002P002R002A002.skeleton  \r\n\r\n"
    )
    assert read_missing_list(messy) == {"S001C001P001R001A001", "S002C002P002R002A002"}

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert read_missing_list(empty) == frozenset()

    broken = tmp_path / "broken.txt"
    broken.write_text("header\nS001C001P001R001A001\nS001C001P001R001A0\n")
    with pytest.raises(
        ValueError, match=r"broken\.txt:3: expected a sample name.*'S001C001P001R001A0'"
    ):
        read_missing_list(broken)


def test_detect_dataset():
    s = parse_sample_name
    ntu60 = [s("S001C001P001R001A001"), s("S017C003P040R002A060")]
    assert detect_dataset(ntu60) == "ntu60"
    assert detect_dataset(iter(ntu60)) == "ntu60"
    assert detect_dataset(ntu60 + [s("S018C001P001R001A001")]) == "ntu120"
    assert detect_dataset(ntu60 + [s("S001C001P001R001A061")]) == "ntu120"
    assert detect_dataset([]) == "ntu60"
