"""Benchmark split sizes (docs/data.md, "NTU files, names and splits") from a directory of
empty placeholder files.

The placeholder directory holds one empty ``<name>.skeleton`` per sample of the complete
NTU name space (``tests/ntu_namespace.py``). It goes through the project's own code path,
``convert.list_inputs`` with the official missing list, ``names.parse_sample_name``,
``names.detect_dataset`` and ``layout.train_mask``, and must give the sizes of that
table exactly, before and after removing the missing-skeleton samples.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from ntu_namespace import SETUP_SUBJECTS, all_names  # tests/ is on sys.path under pytest

from skelmod import layout
from skelmod.convert import list_inputs
from skelmod.names import detect_dataset, parse_sample_name, read_missing_list

#: Published sample counts of the two datasets.
DATASET_SIZES = {"ntu60": 56_880, "ntu120": 114_480}

#: Official missing-skeleton lists in the shared data folder, and their lengths.
MISSING_LISTS = {
    "ntu60": ("NTU_RGBD_samples_with_missing_skeletons.txt", 302),
    "ntu120": ("NTU_RGBD120_samples_with_missing_skeletons.txt", 535),
}

#: The split table: (raw train, train samples in the missing list), (raw val, val missing).
SPLIT_TABLE = {
    ("ntu60", "xsub"): ((40_320, 229), (16_560, 73)),
    ("ntu60", "xview"): ((37_920, 274), (18_960, 28)),
    ("ntu120", "xsub"): ((63_360, 334), (51_120, 201)),
    ("ntu120", "xset"): ((54_720, 252), (59_760, 283)),
}


def _split_counts(dataset: str, ids: list) -> dict[str, tuple[int, int]]:
    """``{benchmark: (train, val)}`` of the parsed sample ids, through ``layout.train_mask``."""
    setup = np.array([i.setup for i in ids])
    camera = np.array([i.camera for i in ids])
    subject = np.array([i.subject for i in ids])
    out = {}
    for benchmark in layout.BENCHMARKS[dataset]:
        train = layout.train_mask(dataset, benchmark, setup, camera, subject)
        out[benchmark] = (int(train.sum()), int((~train).sum()))
    return out


@pytest.fixture
def placeholder_dir(tmp_path):
    """Factory: a folder with one empty ``<name>.skeleton`` per name; removed afterwards
    (up to 114,480 files, too many to leave to pytest's retention of old tmp folders)."""
    root = tmp_path / "raw"

    def make(names: list[str]) -> Path:
        root.mkdir()
        for name in names:  # os.open: no buffered file object per file, for 10^5 files
            os.close(os.open(root / f"{name}.skeleton", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return root

    yield make
    shutil.rmtree(root, ignore_errors=True)


# --- the name space itself (needs no data) ---------------------------------------------------


@pytest.mark.parametrize("dataset", ["ntu60", "ntu120"])
def test_name_space_has_the_published_size_and_parses(dataset):
    names = all_names(dataset)
    assert len(names) == len(set(names)) == DATASET_SIZES[dataset]
    ids = [parse_sample_name(n) for n in names]
    assert [i.name for i in ids] == names  # every name parses and round-trips
    assert detect_dataset(ids) == dataset
    assert {i.camera for i in ids} == {1, 2, 3} and {i.replication for i in ids} == {1, 2}
    n_actions = layout.NUM_ACTIONS[dataset]
    assert {i.action for i in ids} == set(range(1, n_actions + 1))
    assert {i.setup for i in ids} == set(range(1, layout.NUM_SETUPS[dataset] + 1))


def test_ntu60_is_the_first_seventeen_setups_of_ntu120():
    ntu120 = all_names("ntu120")
    assert all_names("ntu60") == [n for n in ntu120 if int(n[1:4]) <= 17]
    # The datasets' published subject counts: 40 for NTU-60, 106 for NTU-120.
    assert {p for s in range(1, 18) for p in SETUP_SUBJECTS[s]} == set(range(1, 41))
    assert {p for ps in SETUP_SUBJECTS.values() for p in ps} == set(range(1, 107))


def test_all_names_rejects_an_unknown_dataset():
    with pytest.raises(ValueError, match="ntu90"):
        all_names("ntu90")


# --- against the official missing lists ------------------------------------------------------


@pytest.mark.parametrize("dataset", ["ntu60", "ntu120"])
def test_missing_list_lies_inside_the_name_space(dataset, shared_data):
    filename, length = MISSING_LISTS[dataset]
    missing = read_missing_list(shared_data / filename)
    assert len(missing) == length
    assert missing <= set(all_names(dataset))


def test_ntu60_missing_list_is_the_first_seventeen_setups_of_ntu120s(shared_data):
    m60 = read_missing_list(shared_data / MISSING_LISTS["ntu60"][0])
    m120 = read_missing_list(shared_data / MISSING_LISTS["ntu120"][0])
    assert m60 == {n for n in m120 if parse_sample_name(n).setup <= 17}


@pytest.mark.parametrize("dataset", ["ntu60", "ntu120"])
def test_placeholder_directory_reproduces_the_split_table(dataset, shared_data, placeholder_dir):
    filename, n_missing = MISSING_LISTS[dataset]
    missing = read_missing_list(shared_data / filename)
    raw_dir = placeholder_dir(all_names(dataset))

    kept, skipped = list_inputs(raw_dir, missing)
    assert len(skipped) == n_missing and set(skipped) == missing
    assert [p.stem for p in kept] == [n for n in all_names(dataset) if n not in missing]
    assert all(p.parent == raw_dir and p.suffix == ".skeleton" for p in kept)
    kept_ids = [parse_sample_name(p.name) for p in kept]
    all_ids = kept_ids + [parse_sample_name(n) for n in skipped]  # the raw directory
    assert detect_dataset(all_ids) == dataset
    raw = _split_counts(dataset, all_ids)
    clean = _split_counts(dataset, kept_ids)

    for benchmark in layout.BENCHMARKS[dataset]:
        (train_raw, train_missing), (val_raw, val_missing) = SPLIT_TABLE[dataset, benchmark]
        assert train_missing + val_missing == n_missing  # the table is self-consistent
        assert raw[benchmark] == (train_raw, val_raw), benchmark
        assert clean[benchmark] == (train_raw - train_missing, val_raw - val_missing), benchmark
