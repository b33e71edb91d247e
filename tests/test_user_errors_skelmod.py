"""Every user error of `skelmod convert|info|features|synth` is one line, names the file or field,
exits with the right code (1 error, 2 usage), and never shows a traceback (issue 8 point 11).

Each row of ``CASES`` builds one bad input in a fresh folder and says what must come out.
The ikemtrain half of the table is in ``test_user_errors_ikemtrain.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.skelmod_cli import main
from skelmod.cache import OutputLock, partial_path
from skelmod.convert import ConvertOptions, convert
from skelmod.synth import generate


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    """A folder of 4 raw files and a valid cache made from it."""
    root = tmp_path_factory.mktemp("base")
    raw = root / "raw"
    generate(raw, 2, 2, seed=3)
    cache = root / "c.h5"
    convert(raw, cache, workers=1)
    return raw, cache


def _copy_cache(tmp: Path, cache: Path, edit: Callable[[h5py.File], None]) -> str:
    out = tmp / "bad.h5"
    shutil.copy(cache, out)
    with h5py.File(out, "r+") as f:
        edit(f)
    return str(out)


def _raw_copy(tmp: Path, raw: Path) -> Path:
    d = tmp / "raw"
    shutil.copytree(raw, d)
    return d


def _set_attr(name, value):
    def edit(f):
        f.attrs[name] = value

    return edit


def _shorten(key):
    def edit(f):
        data = f["meta"][key][:-1]
        del f["meta"][key]
        f["meta"].create_dataset(key, data=data)

    return edit


def _empty(f):
    for group in ("modalities", "meta"):
        for k in f[group]:
            f[group][k].resize(0, axis=0)


def _huge_joints(f):
    j = f["modalities/joint"][:]
    j[0, :, :, ::2] = 3e38  # finite, but a bone between neighbours overflows float32
    j[0, :, :, 1::2] = -3e38
    f["modalities/joint"][:] = j


def _npz(tmp):
    """A valid arrays file for ``skelmod import`` (two kinect-v1-20 sequences)."""
    joints = np.random.default_rng(0).normal(0, 0.3, (40, 20, 3)) + [0, 0, 3]
    np.savez(tmp / "a.npz", joints=joints, offsets=[0, 20, 40], label=[0, 1], name=["a", "b"])


def _partial_from(tmp, raw, *, frames=50, other_dir=False):
    """A killed run's partial file for ``-o tmp/out.h5``, with the given options/folder."""
    src = _raw_copy(tmp, raw) if other_dir else raw
    out = tmp / "out.h5"

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(src, out, workers=1, block=1, options=ConvertOptions(frames=frames), progress=stop)
    assert partial_path(out).exists()
    return str(out)


_HELD: list[OutputLock] = []


@pytest.fixture(autouse=True)
def _release_held_locks():
    yield
    while _HELD:
        _HELD.pop().release()


def _locked(tmp, target):
    """Hold ``target``'s lock, as a running convert or features would, for this test."""
    _HELD.append(OutputLock(target).acquire())
    return _HELD[-1]


# name: (build(tmp, raw, cache) -> argv, exit code, fragments the message must hold)
CASES: dict[str, tuple[Callable, int, tuple[str, ...]]] = {
    # --- convert: arguments and -o --------------------------------------------------------
    "convert: RAW_DIR missing": (
        lambda t, r, c: ["convert", str(t / "nope"), "-o", str(t / "o.h5")], 2, ("nope",)),
    "convert: RAW_DIR is a file": (
        lambda t, r, c: ["convert", str(c), "-o", str(t / "o.h5")], 2, ("is a file",)),
    "convert: -o with a trailing slash": (
        lambda t, r, c: ["convert", str(r), "-o", str(t / "newdir") + "/"], 2,
        ("newdir/", "is a directory")),
    "convert: -o an existing directory": (
        lambda t, r, c: ["convert", str(r), "-o", str(t)], 2, ("is a directory",)),
    "convert: -o one of the inputs": (
        lambda t, r, c: ["convert", str(r), "-o", str(sorted(r.glob("*.skeleton"))[0])], 2,
        ("is one of the input files",)),
    "convert: -o a file that is not a cache": (
        lambda t, r, c: [(t / "notes.txt").write_text("keep me"), "convert", str(r), "-o",
                         str(t / "notes.txt")][1:], 2, ("notes.txt", "not a skelmod cache")),
    "convert: -o an existing cache without --overwrite": (
        lambda t, r, c: ["convert", str(r), "-o", str(c)], 2, ("c.h5", "--overwrite")),
    "convert: -o below a regular file": (
        lambda t, r, c: ["convert", str(r), "-o", str(c / "x.h5")], 1,
        ("x.h5", "cannot create its folder")),
    "convert: --frames above the bound": (
        lambda t, r, c: ["convert", str(r), "-o", str(t / "o.h5"), "--frames", "5000"], 2,
        ("--frames", "1000")),
    "convert: --frames 1": (
        lambda t, r, c: ["convert", str(r), "-o", str(t / "o.h5"), "--frames", "1"], 2,
        ("--frames",)),
    "convert: --workers 0": (
        lambda t, r, c: ["convert", str(r), "-o", str(t / "o.h5"), "--workers", "0"], 2,
        ("--workers",)),
    "convert: unknown modality": (
        lambda t, r, c: ["convert", str(r), "-o", str(t / "o.h5"), "--modalities", "speed"], 2,
        ("speed", "joint")),
    # --- convert: inputs ------------------------------------------------------------------
    "convert: --missing-list not UTF-8": (
        lambda t, r, c: [(t / "m.txt").write_bytes(b"\xff\xfe\x00bad"), "convert", str(r), "-o",
                         str(t / "o.h5"), "--missing-list", str(t / "m.txt")][1:], 1,
        ("m.txt", "not a UTF-8 text file")),
    "convert: --missing-list with a bad line": (
        lambda t, r, c: [(t / "m.txt").write_text("head\nS001C001P001R001A001\nnot a name\n"),
                         "convert", str(r), "-o", str(t / "o.h5"), "--missing-list",
                         str(t / "m.txt")][1:], 1, ("m.txt:3", "not a name")),
    "convert: --missing-list is a folder": (
        lambda t, r, c: ["convert", str(r), "-o", str(t / "o.h5"), "--missing-list", str(t)], 2,
        ("--missing-list", "is a directory")),
    "convert: no .skeleton files": (
        lambda t, r, c: [(t / "empty").mkdir(), "convert", str(t / "empty"), "-o",
                         str(t / "o.h5")][1:], 1, ("empty", "no .skeleton files")),
    "convert: nothing converts": (
        lambda t, r, c: [(t / "bad").mkdir(), (t / "bad" / "S001C001P001R001A001.skeleton")
                         .write_bytes(b"2\n0\n"), "convert", str(t / "bad"), "-o",
                         str(t / "o.h5")][2:], 1,
        ("none of the 1 files converted", "S001C001P001R001A001")),
    "convert: --resume with other options": (
        lambda t, r, c: ["convert", str(r), "-o", _partial_from(t, r, frames=40), "--resume"], 1,
        ("out.h5.partial", "other settings", "frames")),
    "convert: --resume from another folder": (
        lambda t, r, c: ["convert", str(r), "-o", _partial_from(t, r, other_dir=True),
                         "--resume"], 1, ("out.h5.partial", "was started from")),
    "convert: another convert holds the output": (
        lambda t, r, c: [_locked(t, t / "o.h5"), "convert", str(r), "-o", str(t / "o.h5")][1:],
        1, ("o.h5", "another process is writing it")),
    # --- info: every header field and the metadata ---------------------------------------
    "info: missing file": (lambda t, r, c: ["info", str(t / "no.h5")], 2, ("no.h5",)),
    "info: not HDF5": (
        lambda t, r, c: [(t / "x.h5").write_text("hello"), "info", str(t / "x.h5")][1:], 1,
        ("x.h5", "not an HDF5 file")),
    "info: HDF5 but not a cache": (
        lambda t, r, c: ["info", _copy_cache(t, c, _set_attr("format", "other"))], 1,
        ("bad.h5", "not a skelmod cache", "'format'")),
    "info: schema_version a string": (
        lambda t, r, c: ["info", _copy_cache(t, c, _set_attr("schema_version", "1"))], 1,
        ("bad.h5", "'schema_version'", "expected an integer")),
    "info: schema_version unsupported": (
        lambda t, r, c: ["info", _copy_cache(t, c, _set_attr("schema_version", 7))], 1,
        ("bad.h5", "schema version 7")),
    "info: t_frames a float": (
        lambda t, r, c: ["info", _copy_cache(t, c, _set_attr("t_frames", 50.5))], 1,
        ("bad.h5", "'t_frames'", "expected an integer")),
    "info: unknown dataset": (
        lambda t, r, c: ["info", _copy_cache(t, c, _set_attr("dataset", "ntu999"))], 1,
        ("bad.h5", "'dataset'", "ntu999")),
    "info: options not JSON": (
        lambda t, r, c: ["info", _copy_cache(t, c, _set_attr("options", "{frames: 50"))], 1,
        ("bad.h5", "'options' is not valid JSON")),
    "info: options not an object": (
        lambda t, r, c: ["info", _copy_cache(t, c, _set_attr("options", "[1, 2]"))], 1,
        ("bad.h5", "'options'", "expected a JSON object")),
    "info: metadata of unequal length": (
        lambda t, r, c: ["info", _copy_cache(t, c, _shorten("subject"))], 1,
        ("bad.h5", "differ in length", "meta/subject 3")),
    "info: zero rows": (
        lambda t, r, c: ["info", _copy_cache(t, c, _empty)], 1, ("bad.h5", "no samples")),
    "info: a metadata field missing": (
        lambda t, r, c: ["info", _copy_cache(t, c, lambda f: f["meta"].pop("label"))], 1,
        ("bad.h5", "missing meta/label")),
    "info: a partial file": (
        lambda t, r, c: ["info", _partial_from(t, r) + ".partial"], 1,
        ("out.h5.partial", "unfinished conversion")),
    # --- features -------------------------------------------------------------------------
    "features: not a cache": (
        lambda t, r, c: [(t / "x.h5").write_text("hello"), "features", str(t / "x.h5")][1:], 1,
        ("x.h5", "not an HDF5 file")),
    "features: unknown modality": (
        lambda t, r, c: ["features", _copy_cache(t, c, lambda f: None), "--modalities", "speed"],
        2, ("unknown modalities speed", "--modalities")),
    "features: options not JSON": (
        lambda t, r, c: ["features", _copy_cache(t, c, _set_attr("options", "nope"))], 1,
        ("bad.h5", "'options' is not valid JSON")),
    "features: joints that overflow float32": (
        lambda t, r, c: ["features", _copy_cache(t, c, _huge_joints), "--modalities", "bone"], 1,
        ("bad.h5", "bone of sample 0 is not finite", "unchanged")),
    "features: another process holds the cache": (
        lambda t, r, c: [_locked(t, t / "bad.h5"), "features",
                         _copy_cache(t, c, lambda f: None)][1:], 1,
        ("bad.h5", "another process is writing it")),
    # --- import -----------------------------------------------------------------------------
    "import: another process holds the output": (
        lambda t, r, c: [_locked(t, t / "o.h5"), _npz(t), "import", str(t / "a.npz"), "--layout",
                         "kinect-v1-20", "-o", str(t / "o.h5")][2:], 1,
        ("o.h5", "another process is writing it")),
    # --- synth ----------------------------------------------------------------------------
    "synth: OUT_DIR is a file": (lambda t, r, c: ["synth", str(c)], 2, ("c.h5", "is a file")),
    "synth: OUT_DIR below a file": (
        lambda t, r, c: ["synth", str(c / "sub"), "--classes", "1", "--per-class", "1"], 1,
        ("c.h5", "cannot write")),
    "synth: too many classes": (
        lambda t, r, c: ["synth", str(t / "s"), "--classes", "500"], 1, ("500",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_without_traceback(case, base, tmp_path):
    build, code, fragments = CASES[case]
    raw, cache = base
    argv = build(tmp_path, raw, cache)
    before = {p: p.stat().st_mtime_ns for p in (cache, *raw.iterdir())}
    result = CliRunner().invoke(main, argv)
    message = result.output
    assert result.exit_code == code, (case, message)
    assert isinstance(result.exception, SystemExit), (case, result.exception)
    assert "Traceback" not in message
    errors = [line for line in message.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, message
    error = errors[0] if code == 1 else message  # usage errors add a usage line
    for fragment in fragments:
        assert fragment in error, (case, message)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # inputs never touched


def test_the_table_is_large_enough():
    commands = {name.split(":")[0] for name in CASES}
    assert commands == {"convert", "info", "features", "import", "synth"} and len(CASES) >= 18


def test_reader_rejects_each_bad_field_by_name(base, tmp_path):
    # the same checks, through the library: a CacheError, never a KeyError or TypeError
    from skelmod.cache import CacheError, CacheReader

    _, cache = base
    bad = _copy_cache(tmp_path, cache, _set_attr("schema_version", np.float64(1.0)))
    with pytest.raises(CacheError, match="'schema_version' is 1.0, expected an integer"):
        CacheReader(bad)
