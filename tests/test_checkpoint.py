"""Checkpoints hold data, never code: weights-only loading, plain RNG states, clear refusals."""

from __future__ import annotations

import errno
import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ikemtrain.engine import checkpoint
from ikemtrain.engine.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from ikemtrain.errors import OutputError


class _Payload:
    """Unpickling this calls ``os.system`` (harmless: it creates the marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, marker: Path, zip_format: bool = True) -> Path:
    """A file shaped like an ikemtrain checkpoint whose ``config`` runs a command when
    unpickled without ``weights_only`` (both torch file formats)."""
    state = {
        "format": "ikemtrain-pretrain",
        "version": 2,
        "epoch": 1,
        "model": {},
        "config": _Payload(marker),
    }
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    return path


def draws() -> tuple:
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),  # noqa: NPY002 (the legacy global state is the point)
        np.random.randn(),  # noqa: NPY002 (a cached Gaussian)
        random.random(),
        random.gauss(0, 1),
    )


def test_rng_states_are_plain_data_and_restore_exactly(tmp_path: Path) -> None:
    np.random.randn()  # noqa: NPY002 (leaves a cached Gaussian in the state)
    random.gauss(0, 1)
    state = capture_rng()
    expected = draws()
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "config": {}, "rng": state})
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["rng"]  # no numpy objects inside
    draws()
    restore_rng(loaded)
    assert draws() == expected


def test_save_refuses_anything_but_tensors_and_plain_types(tmp_path: Path) -> None:
    for bad, where in (
        ({"rng": {"numpy": np.zeros(3)}}, r"\['rng'\]\['numpy'\] is a numpy.ndarray"),
        ({"epoch": np.int64(3)}, r"\['epoch'\] is a numpy.int64"),
        ({"config": {"path": tmp_path}}, r"\['path'\] is a pathlib"),
        ({"model": {(1, 2): torch.zeros(1)}}, r"key \(1, 2\) is a tuple"),
    ):
        with pytest.raises(TypeError, match=where):
            save_checkpoint(tmp_path / "c.pt", bad)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-torch-format"])
def test_a_malicious_checkpoint_runs_no_code(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "MARKER"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker, zip_format)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: refused: loading it would call ")
    assert "system" in message and "\n" not in message
    assert not marker.exists()
    # the payload is real: the unsafe loader would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_raw_pickle_is_not_a_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"format": "ikemtrain-pretrain", "x": _Payload(marker)}))
    with pytest.raises(CheckpointError, match=f"^{path}: ") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and not marker.exists()


def test_version_1_files_may_hold_numpy_arrays_and_nothing_else(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    legacy = {"format": "ikemtrain-pretrain", "model": {}, "config": {}}
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}  # noqa: NPY002
    torch.save({**legacy, "version": 1, "rng": rng}, tmp_path / "v1.pt")
    loaded = load_checkpoint(tmp_path / "v1.pt")["rng"]["numpy"]
    assert loaded["keys"] == np.random.get_state()[1].tolist()  # noqa: NPY002
    # numpy arrays in a file that claims the current version: refused
    torch.save({**legacy, "version": 2, "rng": rng}, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match="only version-1 checkpoints may hold"):
        load_checkpoint(tmp_path / "v2.pt")
    # a version-1 file that also asks for code: refused, and names what it asked for
    torch.save({**legacy, "version": 1, "rng": rng, "x": _Payload(marker)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"refused: loading it would call .*system"):
        load_checkpoint(tmp_path / "bad.pt")
    assert not marker.exists()


def test_required_keys_and_their_types(tmp_path: Path) -> None:
    def write(**state) -> Path:
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.pt"
        torch.save({"format": "ikemtrain-pretrain", "version": 2, **state}, path)
        return path

    cases = [
        (write(config={}), "has no 'model'"),
        (write(model={}), "has no 'config'"),
        (write(model=[1], config={}), "'model' is a list, expected a dict of tensors"),
        (write(model={"w": 1}, config={}), "'model' entry 'w' is not a tensor"),
        (write(model={}, config={}, epoch="3"), "'epoch' is a str, expected an integer"),
        (write(model={}, config={}, version=99), "checkpoint version 99"),
    ]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path, required=("model", "config"))
    with pytest.raises(CheckpointError, match="has no 'optimizer'"):
        load_checkpoint(write(model={}, config={}), required=("model", "optimizer"))
    assert load_checkpoint(write(heads={}))["heads"] == {}  # nothing required by default


def test_every_torch_load_in_the_repository_is_weights_only() -> None:
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for folder in ("ikemtrain", "cli", "benchmarks", "skelmod"):
        for path in (root / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if "torch.load(" in line and "weights_only=True" not in line:
                    offenders.append(f"{path.relative_to(root)}:{n}")
    assert offenders == []


def test_a_checkpoint_without_resolved_modality_options_migrates_on_load() -> None:
    """Checkpoints made before the options were resolved recorded None for the reference's."""
    from ikemtrain.config import PretrainConfig
    from ikemtrain.engine.checkpoint import pretrain_config

    old = {**PretrainConfig().to_dict(), "bones": None, "unit_axis": None}
    cfg = pretrain_config({"config": old}, "old.pt")
    assert (cfg.bones, cfg.unit_axis) == ("6v", False)
    new = {**old, "bones": "3v", "unit_axis": True}
    assert pretrain_config({"config": new}, "new.pt").modality_options.to_json() == {
        "bones": "3v",
        "unit_axis": True,
    }


class _FillingFile:
    """A file object that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.f.flush()  # the partial bytes reach the temporary file, as on a real disk
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, monkeypatch, torch_one_thread
) -> None:
    """Epoch 1's checkpoint is written; epoch 2's write runs out of space half way: one
    ``Error:`` line naming the file and the reason, exit 1, no traceback, the epoch-1 checkpoint
    byte for byte, no temporary file left; the run then resumes from epoch 1."""
    from click.testing import CliRunner
    from test_data import make_cache

    from cli.ikemtrain_cli import main

    cache = make_cache(tmp_path / "c.h5", n=16, t=24, classes=3)
    preset = tmp_path / "p.toml"
    preset.write_text(
        "[pretrain]\nepochs = 2\ncross_epoch = 1\nbatch_size = 4\nqueue_size = 8\n"
        "hidden_channels = 4\nhidden_dim = 16\nfeature_dim = 4\nworkers = 0\n"
    )
    out = tmp_path / "run"
    real_open, seen = checkpoint._open_for_writing, {"calls": 0}

    def open_for_writing(fd):
        seen["calls"] += 1
        if seen["calls"] == 1:
            return real_open(fd)
        seen["before"] = (out / "checkpoint.pt").read_bytes()
        return _FillingFile(real_open(fd), 4096)

    monkeypatch.setattr(checkpoint, "_open_for_writing", open_for_writing)
    argv = ["pretrain", str(cache), "--split", "xsub", "--preset", str(preset), "--out", str(out)]
    r = CliRunner().invoke(main, [*argv, "--device", "cpu"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    (line,) = [x for x in r.output.splitlines() if x.startswith("Error")]
    assert line.startswith(f"Error: {out / 'checkpoint.pt'}: cannot write the checkpoint")
    assert "No space left on device" in line and "previous checkpoint is kept" in line
    assert seen["calls"] == 2
    assert (out / "checkpoint.pt").read_bytes() == seen["before"]
    assert not list(out.glob("*.tmp")), "a partial checkpoint was left"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1

    monkeypatch.undo()  # space again: the run resumes
    r = CliRunner().invoke(main, [*argv, "--device", "cpu", "--resume"])
    assert r.exit_code == 0, r.output
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_a_checkpoint_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    """A write the file system refuses outright (here: the folder is a file) names the file
    and says nothing was written."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write the checkpoint .*nothing was written"):
        save_checkpoint(blocker / "checkpoint.pt", {"epoch": 1})
    assert blocker.read_text() == "x"


def _tiny_state() -> dict:
    return {"format": "ikemtrain-pretrain", "version": 2, "epoch": 1, "config": {},
            "model": {"w": torch.arange(5.0)}}  # fmt: skip


def test_storage_sizes_are_bounded_by_the_file_before_loading(tmp_path: Path) -> None:
    """A raw-pickle torch file declaring 10^12 elements for a 5-element tensor (torch would
    allocate them before reading a byte), and a zip checkpoint whose central directory
    claims 4 GiB for a 20-byte record: each is refused in one line naming the file, before
    anything is allocated; the honest files load."""
    legacy = tmp_path / "legacy.pt"
    torch.save(_tiny_state(), legacy, _use_new_zipfile_serialization=False)
    assert load_checkpoint(legacy)["model"]["w"].tolist() == [0, 1, 2, 3, 4]
    raw = legacy.read_bytes()
    k = raw.index(b"X\x03\x00\x00\x00cpu") + 8  # the storage's location 'cpu' ...
    k += 2 if raw[k] == ord("q") else 0  # (memoised)
    assert raw[k : k + 2] == b"K\x05"  # ... then its element count, 5 (BININT1)
    bomb = tmp_path / "bomb.pt"
    bomb.write_bytes(raw[:k] + b"\x8a\x08" + (10**12).to_bytes(8, "little") + raw[k + 2 :])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bomb)
    assert str(e.value) == (
        f"{bomb}: its tensors declare 4000000000000 bytes of storage, more than the file's "
        f"{bomb.stat().st_size} bytes could hold (refused before loading)"
    )

    zipped = tmp_path / "zipped.pt"
    torch.save(_tiny_state(), zipped)
    raw = bytearray(zipped.read_bytes())
    with zipfile.ZipFile(zipped) as z:
        (record,) = [m for m in z.infolist() if m.filename.endswith("/data/0")]
    central = raw.index(b"PK\x01\x02")
    while not raw[central + 46 : central + 46 + len(record.filename)] == record.filename.encode():
        central = raw.index(b"PK\x01\x02", central + 4)
    raw[central + 24 : central + 28] = (2**32 - 2).to_bytes(4, "little")  # uncompressed size
    lying = tmp_path / "lying.pt"
    lying.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(lying)
    assert str(e.value) == (
        f"{lying}: member {record.filename!r} declares 4294967294 bytes, more than the 20 this "
        f"{lying.stat().st_size}-byte file can hold (refused before loading)"
    )


def test_the_storage_scan_runs_no_code(tmp_path: Path) -> None:
    """The scan that bounds a raw-pickle file's storages builds nothing the pickle names."""
    marker = tmp_path / "marker"
    path = malicious_checkpoint(tmp_path / "evil.pt", marker, zip_format=False)
    checkpoint._check_declared_sizes(path, zipped=False)
    assert not marker.exists()
