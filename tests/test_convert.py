"""skelmod.convert end to end: fidelity on real files, bad input, atomic writes and resume."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from naive_pipeline import naive_process  # tests/ is on sys.path under pytest

from skelmod.cache import CacheReader, partial_path
from skelmod.convert import ConvertError, ConvertOptions, convert, list_inputs
from skelmod.modalities import compute_modalities
from skelmod.names import parse_sample_name
from skelmod.synth import generate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_cache(ntu_real_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "real.h5"
    report = convert(ntu_real_dir, out, workers=2, options=ConvertOptions(modalities=("joint",)))
    return out, report


def test_real_files_match_the_plain_reference_pipeline(real_cache, ntu_real_files):
    out, report = real_cache
    assert report.ok and report.converted == len(ntu_real_files) == 46
    r = CacheReader(out)
    assert r.dataset == "ntu60" and r.t == 50
    assert list(r.meta["name"]) == [p.stem for p in ntu_real_files]  # sorted order
    joints = r.read("joint", slice(None))
    for i, path in enumerate(ntu_real_files):
        x, length, frame_count = naive_process(path)
        np.testing.assert_allclose(joints[i], x, atol=1e-5, rtol=0, err_msg=path.name)
        assert r.meta["valid_length"][i] == length
        assert r.meta["frame_count"][i] == frame_count
        sid = parse_sample_name(path.name)
        for key in ("setup", "camera", "subject", "replication", "action"):
            assert r.meta[key][i] == getattr(sid, key), (path.name, key)
        assert r.meta["label"][i] == sid.action - 1
    # the noise-body files are two-body in the raw file; reference keeps listing order
    assert r.meta["bodies_kept"].max() == 2


def _synth(tmp_path, classes=4, per_class=5, seed=1):
    d = tmp_path / "raw"
    generate(d, classes, per_class, seed)
    return d


def test_all_modalities_are_stored_and_equal_the_library(tmp_path):
    raw = _synth(tmp_path)
    out = tmp_path / "c.h5"
    report = convert(raw, out, workers=1, options=ConvertOptions(modalities=("velocity", "bone")))
    assert report.ok
    r = CacheReader(out)
    assert r.modalities == ("joint", "velocity", "bone")
    joints = r.read("joint", slice(None))
    ref = compute_modalities(joints, r.meta["frame_count"], modalities=["velocity", "bone"])
    np.testing.assert_allclose(r.read("velocity", slice(None)), ref["velocity"], atol=1e-6)
    np.testing.assert_allclose(r.read("bone", slice(None)), ref["bone"], atol=1e-6)


BAD_FILES = {
    # name -> (content transform on a good file's bytes, fragment expected in the reason)
    "truncated": (lambda b: b[: len(b) // 2], ":"),
    "empty": (lambda b: b"", "empty"),
    "binary": (lambda b: bytes(range(256)) * 4, ":"),
    "zero_frames": (lambda b: b"0\n", "frame"),
    "junk_token": (lambda b: _edit_joint_line(b, lambda tok: [b"abc", *tok[1:]]), "abc"),
    "wrong_joint_count": (lambda b: b.replace(b"\n25\n", b"\n24\n", 1), "25"),
    "extra_value": (lambda b: _edit_joint_line(b, lambda tok: [*tok, b"7"]), "12"),
    "header_too_big": (lambda b: _bump_header(b, +5), "frame"),
    "header_too_small": (lambda b: _bump_header(b, -5), "frame"),
}


def _edit_joint_line(b: bytes, edit) -> bytes:
    """Apply ``edit`` to the tokens of the first joint line (line 5)."""
    lines = b.split(b"\n")
    lines[4] = b" ".join(edit(lines[4].split()))
    return b"\n".join(lines)


def _bump_header(b: bytes, delta: int) -> bytes:
    first, rest = b.split(b"\n", 1)
    return str(int(first) + delta).encode() + b"\n" + rest


def test_each_bad_file_is_rejected_with_a_reason_and_the_good_ones_convert(tmp_path):
    raw = _synth(tmp_path, classes=2, per_class=3)
    good = sorted(raw.glob("*.skeleton"))
    template = good[0].read_bytes()
    bad_names = {}
    for k, (kind, (transform, _)) in enumerate(BAD_FILES.items()):
        name = f"S001C001P001R002A{10 + k:03d}"
        (raw / f"{name}.skeleton").write_bytes(transform(template))
        bad_names[name] = kind
    (raw / "not_a_sample_name.skeleton").write_bytes(template)
    out = tmp_path / "c.h5"
    report = convert(raw, out, workers=2)
    assert not report.ok
    assert report.converted == len(good)
    reasons = dict(report.rejected)
    assert set(reasons) == set(bad_names) | {"not_a_sample_name"}
    for name, kind in bad_names.items():
        fragment = BAD_FILES[kind][1]
        assert name in reasons[name] and fragment in reasons[name], (kind, reasons[name])
    assert "SsssCcccPpppRrrrAaaa" in reasons["not_a_sample_name"]
    r = CacheReader(out)
    assert list(r.meta["name"]) == [p.stem for p in good]
    summary = report.summary()
    assert f"rejected: {len(reasons)}" in summary and "S001C001P001R002A010" in summary


def test_missing_list_skips_and_nothing_converted_is_an_error(tmp_path):
    raw = _synth(tmp_path, classes=2, per_class=2)
    names = sorted(p.stem for p in raw.glob("*.skeleton"))
    lst = tmp_path / "missing.txt"
    lst.write_text("header line one\nheader line two\n\n" + "\n".join(names[:2]) + "\n")
    files, skipped = list_inputs(raw, set(names[:2]))
    assert sorted(skipped) == names[:2] and len(files) == len(names) - 2
    report = convert(raw, tmp_path / "c.h5", workers=1, missing_list=lst)
    assert report.converted == len(names) - 2 and len(report.skipped_missing) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "S001C001P001R001A001.skeleton").write_bytes(b"")
    with pytest.raises(ConvertError, match="none of the 1 files converted"):
        convert(empty, tmp_path / "none.h5", workers=1)
    assert not (tmp_path / "none.h5").exists()
    assert not partial_path(tmp_path / "none.h5").exists()


def _cache_content(path: Path) -> dict:
    with h5py.File(path) as f:
        out = {f"modalities/{k}": f["modalities"][k][:] for k in f["modalities"]}
        out.update({f"meta/{k}": f["meta"][k][:] for k in f["meta"]})
        out["options"] = f.attrs["options"]
        out["summary"] = f.attrs["summary"]
    return out


def test_interrupted_run_leaves_no_cache_and_resume_equals_a_clean_run(tmp_path):
    raw = _synth(tmp_path, classes=3, per_class=6)
    (raw / "S001C001P001R002A001.skeleton").write_bytes(b"3\n1\n")  # one rejected file
    clean = tmp_path / "clean.h5"
    convert(raw, clean, workers=1, block=4)

    out = tmp_path / "killed.h5"

    def stop_after_11(done, total):
        if done == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(raw, out, workers=1, block=4, progress=stop_after_11)
    assert not out.exists() and partial_path(out).exists()
    report = convert(raw, out, workers=2, block=4, resume=True)
    assert 0 < report.resumed_from <= 11  # the last block written before the interruption
    assert len(report.rejected) == 1
    a, b = _cache_content(clean), _cache_content(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sigkill_mid_run_then_resume(tmp_path):
    raw = _synth(tmp_path, classes=3, per_class=8)
    out = tmp_path / "k.h5"
    script = textwrap.dedent(
        f"""
        import os, signal
        from skelmod.convert import convert
        def progress(done, total):
            if done == 13:
                os.kill(os.getpid(), signal.SIGKILL)
        convert({str(raw)!r}, {str(out)!r}, workers=1, block=5, progress=progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert proc.returncode == -9
    assert not out.exists() and partial_path(out).exists()
    report = convert(raw, out, workers=1, block=5, resume=True)
    assert 0 < report.resumed_from <= 13 and report.ok
    clean = tmp_path / "clean.h5"
    convert(raw, clean, workers=1)
    a, b = _cache_content(clean), _cache_content(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_options_are_recorded_and_checked(tmp_path):
    raw = _synth(tmp_path, classes=2, per_class=2)
    out = tmp_path / "c.h5"
    opts = ConvertOptions(frames=32, bodies="energy", yaw="frame", modalities=("bone",))
    convert(raw, out, workers=1, options=opts)
    r = CacheReader(out)
    assert r.t == 32
    assert r.options["bodies"] == "energy" and r.options["yaw"] == "frame"
    assert r.options["modalities"] == ["joint", "bone"]
    with pytest.raises(ConvertError, match="bodies must be one of"):
        ConvertOptions(bodies="tallest")
    with pytest.raises(ConvertError, match="unknown modalities speed"):
        ConvertOptions(modalities=("speed",))
    with pytest.raises(ConvertError, match="not a directory"):
        convert(tmp_path / "nope", out)


def test_skelmod_never_imports_torch():
    code = (
        "import sys, skelmod, skelmod.convert, skelmod.cache, skelmod.synth, skelmod.features, "
        "skelmod.modalities, cli.skelmod_cli; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_convert_path_is_lean(tmp_path):
    """Start-up (issue 22): the command's main process loads no numba (the workers do), and a
    conversion the command runs in its own process never imports SciPy."""
    code = "import sys, cli.skelmod_cli, skelmod.convert; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    raw = _synth(tmp_path, classes=1, per_class=2)
    code = textwrap.dedent(f"""
        import sys
        from cli.skelmod_cli import main
        try:
            main(["convert", {str(raw)!r}, "-o", {str(tmp_path / "c.h5")!r}, "--quiet",
                  "--modalities", "all"])
        except SystemExit as e:
            assert e.code == 0, e.code
        print(sorted(m for m in ("numba", "scipy") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['numba']"
    assert CacheReader(tmp_path / "c.h5").n == 2


def test_a_stale_partial_file_is_replaced(tmp_path):
    # a stale partial file from an unrelated run is replaced by a clean run without --resume
    raw = _synth(tmp_path, classes=2, per_class=2)
    out = tmp_path / "c.h5"
    partial_path(out).write_bytes(b"garbage")
    report = convert(raw, out, workers=1, resume=True)
    assert report.resumed_from == 0 and report.ok and out.exists()
    assert not partial_path(out).exists()
    assert os.path.getsize(out) > 0


def test_denoise_run_reports_what_each_rule_dropped(ntu_real_dir, tmp_path):
    noisy = tmp_path / "raw"
    noisy.mkdir()
    for name in ("S001C001P001R001A029", "S001C001P001R001A001"):
        (noisy / f"{name}.skeleton").write_bytes((ntu_real_dir / f"{name}.skeleton").read_bytes())
    report = convert(noisy, tmp_path / "c.h5", workers=1, options=ConvertOptions(bodies="denoise"))
    assert report.ok
    # A029 has a noise body (a wide object) beside the actor: the spread rule drops it.
    assert report.bodies_dropped["spread"] == 1
    assert report.bodies_seen == report.bodies_kept + 1
    assert "spread 1" in report.summary()
    r = CacheReader(tmp_path / "c.h5")
    assert list(r.meta["bodies_kept"]) == [1, 1] and list(r.meta["bodies_seen"]) == [1, 2]
