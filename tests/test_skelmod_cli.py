"""The `skelmod` command line: exit codes, summary, info, features, synth, help and README."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.ikemtrain_cli import main as ikemtrain_main
from cli.skelmod_cli import main
from skelmod.cache import CacheReader, partial_path
from skelmod.convert import ConvertError, ConvertOptions, OutputError, convert
from skelmod.errors import SkelmodError
from skelmod.features import add_features
from skelmod.modalities import compute_modalities

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth") / "raw"
    result = CliRunner().invoke(main, ["synth", str(d), "--classes", "3", "--per-class", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote 12 files" in result.output
    return d


def test_convert_success_summary_and_info(raw_dir, tmp_path):
    out = tmp_path / "c.h5"
    r = CliRunner().invoke(
        main, ["convert", str(raw_dir), "-o", str(out), "--workers", "1", "--modalities", "all"]
    )
    assert r.exit_code == 0, r.output
    assert "converted 12 of 12 files (ntu60)" in r.output
    assert "rejected: 0" in r.output
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0, info.output
    assert "schema v1" in info.output and "xsub-train" in info.output
    assert "angular_velocity" in info.output
    js = json.loads(CliRunner().invoke(main, ["info", str(out), "--json"]).output)
    assert js["samples"] == 12 and sum(js["classes"].values()) == 12
    assert js["splits"]["xview-train"] + js["splits"]["xview-val"] == 12
    assert sum(js["frame_count_histogram"]["counts"]) == 12
    assert js["options"]["bodies"] == "reference"


def test_convert_partial_failure_exits_1_and_names_the_file(raw_dir, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for p in sorted(raw_dir.glob("*.skeleton"))[:3]:
        (raw / p.name).write_bytes(p.read_bytes())
    (raw / "S001C001P001R001A009.skeleton").write_text("5\n1\n")
    r = CliRunner().invoke(main, ["convert", str(raw), "-o", str(tmp_path / "c.h5"), "--quiet"])
    assert r.exit_code == 1, r.output
    assert "rejected: 1" in r.output and "S001C001P001R001A009" in r.output


def test_usage_errors_exit_2(raw_dir, tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["convert", str(tmp_path / "nope"), "-o", "x.h5"]).exit_code == 2
    r = runner.invoke(main, ["convert", str(raw_dir), "-o", "x.h5", "--bodies", "tall"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["convert", str(raw_dir), "-o", "x.h5", "--modalities", "speed"])
    assert r.exit_code == 2 and "unknown modalities speed" in r.output
    not_cache = tmp_path / "x.h5"
    with h5py.File(not_cache, "w") as f:
        f["a"] = 1
    r = runner.invoke(main, ["info", str(not_cache)])
    assert r.exit_code == 1 and "not a skelmod cache" in r.output


def test_library_errors_name_parameters_and_the_cli_adds_the_option(raw_dir, tmp_path):
    with pytest.raises(ConvertError, match="^frames must be between 2 and") as e:
        ConvertOptions(frames=1)
    assert e.value.param == "frames" and isinstance(e.value, SkelmodError)
    cache = tmp_path / "c.h5"
    convert(raw_dir, cache, workers=1)
    with pytest.raises(OutputError, match="set overwrite to replace it") as e:
        convert(raw_dir, cache, workers=1)
    assert e.value.param == "overwrite"
    r = CliRunner().invoke(main, ["convert", str(raw_dir), "-o", str(cache)])
    assert r.exit_code == 2 and "set overwrite to replace it (--overwrite)" in r.output


def test_an_error_that_is_not_skelmod_s_own_is_a_bug_with_its_traceback(
    raw_dir, tmp_path, monkeypatch
):
    import skelmod.features

    def broken(*args, **kwargs):
        raise ValueError("an internal slip")

    monkeypatch.setattr(skelmod.features, "add_features", broken)
    cache = tmp_path / "c.h5"
    convert(raw_dir, cache, workers=1)
    r = CliRunner().invoke(main, ["features", str(cache), "--modalities", "bone"])
    assert r.exit_code == 1 and isinstance(r.exception, ValueError)  # not a SystemExit
    assert "Error:" not in r.output


def test_features_adds_modalities_atomically(raw_dir, tmp_path):
    out = tmp_path / "c.h5"
    assert CliRunner().invoke(main, ["convert", str(raw_dir), "-o", str(out)]).exit_code == 0
    before = CacheReader(out).read("joint", slice(None))

    def boom(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_features(out, ["velocity"], block=4, progress=boom)
    r = CacheReader(out)
    assert r.modalities == ("joint",) and not partial_path(out).exists()

    res = CliRunner().invoke(main, ["features", str(out), "--modalities", "velocity,bone"])
    assert res.exit_code == 0, res.output
    r = CacheReader(out)
    assert r.modalities == ("joint", "velocity", "bone")
    np.testing.assert_array_equal(r.read("joint", slice(None)), before)
    assert r.options["features"][-1]["modalities"] == ["velocity", "bone"]
    res = CliRunner().invoke(main, ["features", str(out), "--modalities", "bone", "--unit-axis"])
    assert res.exit_code == 0
    assert CacheReader(out).modality_options["bone"]["unit_axis"] is True
    assert CacheReader(out).feature_options.to_json() == {"bones": "6v", "unit_axis": True}
    # other bone options recompute every bone-derived modality held, never a mix
    res = CliRunner().invoke(
        main, ["features", str(out), "--modalities", "rotation_axis", "--bones", "3v"]
    )
    assert res.exit_code == 0, res.output
    r = CacheReader(out)
    assert r.options["features"][-1]["modalities"] == ["bone", "rotation_axis"]
    assert r.feature_options.to_json() == {"bones": "3v", "unit_axis": True}  # unit_axis kept
    for m in ("bone", "rotation_axis"):
        assert r.modality_options[m] == {"bones": "3v", "unit_axis": True, "t_target": 50}
    expect = compute_modalities(
        r.read("joint", slice(None)), r.meta["frame_count"], modalities=["bone"], bones="3v"
    )["bone"]
    np.testing.assert_array_equal(r.read("bone", slice(None)), expect)


def _commands(group):
    return {name: cmd for name, cmd in group.commands.items()}


@pytest.mark.parametrize("group,prog", [(main, "skelmod"), (ikemtrain_main, "ikemtrain")])
def test_every_command_has_help_and_is_in_the_readme(group, prog):
    readme = (REPO / "README.md").read_text()
    for name, cmd in _commands(group).items():
        assert cmd.help and cmd.help.strip(), f"{prog} {name} has no help text"
        result = CliRunner().invoke(group, [name, "--help"])
        assert result.exit_code == 0
        assert re.search(rf"\b{prog} {name}\b", readme), f"`{prog} {name}` missing from README"


def test_console_script_runs():
    r = subprocess.run(
        [sys.executable, "-m", "cli.skelmod_cli", "--help"], cwd=REPO, capture_output=True
    )
    assert r.returncode == 0 and b"convert" in r.stdout


def test_synth_never_writes_into_someone_s_folder(tmp_path: Path) -> None:
    """A non-empty folder (here: one recording under an NTU name synth would also write) is
    refused and left byte for byte as it was; ``overwrite`` writes into it, keeping the rest."""
    from skelmod.convert import OutputError
    from skelmod.synth import generate

    folder = tmp_path / "nturgb+d_skeletons"
    folder.mkdir()
    names = [p.name for p in generate(tmp_path / "fresh", 1, 2, seed=0)]
    (folder / names[0]).write_text("a real recording\n")
    (folder / "notes.txt").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OutputError, match="is not empty; give a new folder, or set overwrite") as e:
        generate(folder, 1, 2, seed=0)
    assert e.value.param == "overwrite"
    r = CliRunner().invoke(main, ["synth", "-o", str(folder), "--classes", "1", "--per-class", "2"])
    assert r.exit_code == 2 and "set overwrite to write into it" in r.output
    assert "(--overwrite)" in r.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    r = CliRunner().invoke(
        main, ["synth", "-o", str(folder), "--classes", "1", "--per-class", "2", "--overwrite"]
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, "notes.txt"])
    assert (folder / names[0]).read_bytes() == (tmp_path / "fresh" / names[0]).read_bytes()
