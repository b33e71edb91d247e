"""One vocabulary of options across ``skelmod`` and ``ikemtrain``: a walk over the click tree
checks that a name means one thing everywhere (``cli/options.py``, the README's glossary), and a
few runs show the shared spellings and ``--set`` at work, today's spellings included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from test_data import make_cache

from cli import ikemtrain_cli, skelmod_cli
from cli.options import MODALITIES_HELP
from ikemtrain.config import MODALITY_SETS

GROUPS = {"skelmod": skelmod_cli.main, "ikemtrain": ikemtrain_cli.main}
#: Commands that write something, and so take -o/--out.
WRITERS = {
    "skelmod": {"convert", "import", "synth"},
    "ikemtrain": {
        "pretrain", "distill", "linear-eval", "knn-eval", "finetune", "report", "export", "demo",
    },
}  # fmt: skip
README = Path(__file__).resolve().parent.parent / "README.md"


def _commands():
    for tool, group in GROUPS.items():
        for name, command in group.commands.items():
            yield f"{tool} {name}", command


def _option(command: click.Command, name: str) -> click.Option | None:
    found = [p for p in command.params if isinstance(p, click.Option) and p.name == name]
    return found[0] if found else None


def _parse(command: click.Command, name: str, value: str):
    """The value the command's function receives for ``--name value``."""
    ctx = click.Context(command)
    return _option(command, name).process_value(ctx, value)


def test_every_writer_takes_o_and_out_and_nothing_else_does() -> None:
    for label, command in _commands():
        tool, name = label.split()
        out = _option(command, "out")
        if name in WRITERS[tool]:
            assert out is not None and out.opts == ["-o", "--out"], label
        else:
            assert out is None, label


def test_modalities_accept_names_or_3_6_all_everywhere() -> None:
    commands = [(label, c) for label, c in _commands() if _option(c, "modalities")]
    assert {label for label, _ in commands} >= {
        "skelmod convert", "skelmod import", "skelmod features", "ikemtrain pretrain",
        "ikemtrain linear-eval", "ikemtrain knn-eval", "ikemtrain finetune", "ikemtrain describe",
    }  # fmt: skip
    for label, command in commands:
        assert _parse(command, "modalities", "3") == MODALITY_SETS[3], label
        assert _parse(command, "modalities", "6") == MODALITY_SETS[6], label
        assert _parse(command, "modalities", "all") == MODALITY_SETS[6], label
        assert _parse(command, "modalities", "bone,joint") == ("joint", "bone"), label
        assert _option(command, "modalities").help.startswith(MODALITIES_HELP), label
        for bad in ("4", "speed"):
            with pytest.raises(click.BadParameter):
                _parse(command, "modalities", bad)


def test_streams_are_a_list_everywhere() -> None:
    commands = [(label, c) for label, c in _commands() if _option(c, "streams")]
    assert {label for label, _ in commands} == {
        "ikemtrain linear-eval", "ikemtrain knn-eval", "ikemtrain finetune",
    }  # fmt: skip
    for label, command in commands:
        assert _parse(command, "streams", "6s") == ["6s"], label
        assert _parse(command, "streams", "joint, 3s,joint") == ["joint", "3s"], label
        with pytest.raises(click.BadParameter, match="'9s'"):
            _parse(command, "streams", "joint,9s")


def _signature(option: click.Option) -> tuple:
    """What must be identical across commands: spellings, type, metavar, and the help up to
    its default (which a command may set)."""
    help = re.sub(r"\s*\[default: [^]]*\]\.?$", "", option.help or "").rstrip(".")
    return tuple(option.opts), repr(option.type), option.metavar, help


@pytest.mark.parametrize(
    "name",
    ["device", "seed", "preset", "assignments", "epochs", "batch_size", "lr", "bn_recalibration",
     "frames", "yaw", "no_centre", "bones", "unit_axis", "quiet"],
)  # fmt: skip
def test_shared_options_are_identical_across_commands(name: str) -> None:
    seen = {label: _signature(_option(c, name)) for label, c in _commands() if _option(c, name)}
    assert len(seen) >= 2 and len(set(seen.values())) == 1, seen


def test_set_goes_with_every_preset() -> None:
    for label, command in _commands():
        assert (_option(command, "preset") is None) == (_option(command, "assignments") is None)
        if _option(command, "assignments") is not None:
            assert _option(command, "assignments").opts == ["--set"], label
            assert _option(command, "assignments").multiple, label


def test_workers_have_one_meaning_per_command() -> None:
    meanings = {
        label: _option(c, "workers").help for label, c in _commands() if _option(c, "workers")
    }
    assert "Processes converting files" in meanings["skelmod convert"]
    for label in ("ikemtrain pretrain", "ikemtrain distill", "ikemtrain finetune"):
        assert meanings[label].startswith("DataLoader worker processes"), label
    demo = GROUPS["ikemtrain"].commands["demo"]
    assert meanings["ikemtrain demo"].startswith("DataLoader worker processes")
    assert "conver" not in meanings["ikemtrain demo"]
    assert "Processes converting" in _option(demo, "convert_workers").help


def test_no_spec_section_or_bug_number_in_any_help() -> None:
    for label, command in [("groups", g) for g in GROUPS.values()] + list(_commands()):
        texts = [command.help or ""] + [p.help or "" for p in command.params if hasattr(p, "help")]
        for text in texts:
            assert "§" not in text, (label, text)
            assert not re.search(r"\bbugs? \d", text), (label, text)


ROOT = README.parent
#: A citation of a shipped document by section name: ``docs/method.md, "Backbone"``.
_CITATION = re.compile(r'(docs/[a-z]+\.md), "([^"]+)"')


def _sources(*folders: str):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))
    yield from sorted((ROOT / "ikemtrain" / "presets").glob("*.toml"))


def test_the_code_cites_shipped_documents_not_spec_numbers() -> None:
    """No source file sends its reader to the unshipped spec (``§N``, ``bug N``, its file
    names), and every ``docs/X.md, "Section"`` citation names a heading of that document."""
    spec = re.compile(r"§|\bbugs? \d|reference-ikem|decisions\.md")
    for path in _sources("skelmod", "ikemtrain", "cli"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not spec.search(line), f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
    cited = set()
    for path in _sources("skelmod", "ikemtrain", "cli", "tests", "benchmarks"):
        # a citation may wrap after its comma: join the lines of comments and docstrings
        text = re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", path.read_text(encoding="utf-8"))
        cited |= {(m.group(1), m.group(2), path.name) for m in _CITATION.finditer(text)}
    assert len({(doc, name) for doc, name, _ in cited}) >= 8, cited
    for doc, name, source in cited:
        headings = re.findall(r"^#+ (.+)$", (ROOT / doc).read_text(encoding="utf-8"), re.M)
        assert name in headings, f"{source} cites {doc}, {name!r}: not a heading of {doc}"


def test_the_docs_do_not_send_readers_to_the_unshipped_spec() -> None:
    docs = [README, *sorted((ROOT / "docs").glob("*.md"))]
    for path in docs:
        text = path.read_text(encoding="utf-8")
        assert "§" not in text and "reference-ikem" not in text, path.name
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    headings = [line for line in results.splitlines() if line.startswith("#")]
    assert not [h for h in headings if "§" in h]


def test_the_reference_code_bugs_code_names_are_listed_in_method_md() -> None:
    """Code names a reference-code bug by its name in docs/method.md's "Reference-code bugs"."""
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    table = method[method.index("## Reference-code bugs") :].split("\n## ")[0]
    names = set(re.findall(r"^\| ([^|]+?) \|", table, re.M)) - {"name", "---"}
    code = " ".join(
        re.sub(r"\s+", " ", p.read_text(encoding="utf-8")) for p in _sources("skelmod", "ikemtrain")
    )
    for cited in ("the key initialisation bug", "the Ω bank bug", "the teacher mode bug",
                  "the yaw sign bug", "the collinear-axis bug", "the worker-seed bug",
                  "the valid-length count", "the truncated hop distance"):  # fmt: skip
        assert cited in names, cited
        assert cited in code or cited.replace("Ω", "Omega") in code, cited


def test_the_readme_glossary_names_every_shared_option() -> None:
    readme = README.read_text(encoding="utf-8")
    glossary = readme[readme.index("### Options") :]
    for spelling in ("-o/--out", "--modalities", "--streams", "--preset", "--set", "--device",
                     "--seed", "--workers", "--convert-workers", "--compile"):  # fmt: skip
        assert f"`{spelling}" in glossary, spelling


# --- the spellings at work --------------------------------------------------------------------


def test_synth_and_demo_take_the_folder_either_way(tmp_path: Path) -> None:
    run = CliRunner().invoke
    positional = run(skelmod_cli.main, ["synth", str(tmp_path / "a"), "--classes", "1",
                                        "--per-class", "1"])  # fmt: skip
    assert positional.exit_code == 0, positional.output
    option = run(skelmod_cli.main, ["synth", "-o", str(tmp_path / "b"), "--classes", "1",
                                    "--per-class", "1"])  # fmt: skip
    assert option.exit_code == 0, option.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        p.name for p in (tmp_path / "b").iterdir()
    )
    neither = run(ikemtrain_cli.main, ["demo"])
    assert neither.exit_code == 2 and "-o/--out" in neither.output
    both = run(ikemtrain_cli.main, ["demo", str(tmp_path / "x"), "-o", str(tmp_path / "y")])
    assert both.exit_code == 2 and "two output folders" in both.output


def test_set_changes_a_preset_setting_and_is_checked() -> None:
    run = CliRunner().invoke
    paper = run(ikemtrain_cli.main, ["describe", "--modalities", "3"])
    narrow = run(ikemtrain_cli.main, ["describe", "--modalities", "3",
                                      "--set", "pretrain.hidden_channels=8"])  # fmt: skip
    assert paper.exit_code == 0 and narrow.exit_code == 0, narrow.output
    total = [line.split()[-1] for line in (paper.output, narrow.output)]
    assert total[0] != total[1]
    for bad, says in [
        ("pretrain.hidden_channels=zero", "expected an integer"),
        ("pretrain.nonesuch=1", "unknown key 'nonesuch'"),
        ("training.lr=1", "unknown table 'training'"),
        ("pretrain.lr", "expected SECTION.KEY=VALUE"),
    ]:
        result = run(ikemtrain_cli.main, ["describe", "--set", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "--set" in result.output and says in result.output, result.output


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vocabulary")
    preset = d / "mini.toml"
    preset.write_text(
        "[pretrain]\nepochs = 2\ncross_epoch = 1\nbatch_size = 4\nqueue_size = 8\n"
        "hidden_channels = 4\nhidden_dim = 16\nfeature_dim = 8\nworkers = 0\n"
        "[linear_eval]\nepochs = 2\nlr = 0.5\nsteps = [1]\nbatch_size = 4\neval_interval = 1\n"
    )
    return {"cache": make_cache(d / "c.h5", n=24, t=24, classes=3), "preset": preset}


def test_pretrain_with_set_and_o_records_the_setting(small, tmp_path: Path, monkeypatch) -> None:
    """``--set pretrain.schedule=cosine`` reaches the run (its checkpoint's settings and the lr
    of its epochs), and ``-o`` names the run folder; ``--modalities joint,bone`` by name."""
    monkeypatch.setattr(torch, "get_num_threads", torch.get_num_threads)
    result = CliRunner().invoke(
        ikemtrain_cli.main,
        ["pretrain", str(small["cache"]), "--split", "xview", "--preset", str(small["preset"]),
         "--modalities", "joint,bone", "--set", "pretrain.schedule=cosine", "--set",
         "pretrain.lr=0.2", "-o", str(tmp_path / "run"), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["lr"] for r in records][-1] < 0.2 * 0.5  # cosine: the last step is near 0
    from ikemtrain.engine.checkpoint import load_checkpoint

    config = load_checkpoint(tmp_path / "run")["config"]
    assert config["schedule"] == "cosine" and config["lr"] == 0.2
    assert config["modalities"] == ["joint", "bone"]


def test_linear_eval_with_several_streams_writes_one_folder_each(small, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        ikemtrain_cli.main,
        ["linear-eval", str(small["cache"]), "--split", "xview", "--random-init",
         "--modalities", "3", "--streams", "joint,3s", "--preset", str(small["preset"]),
         "-o", str(tmp_path), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for stream in ("joint", "3s"):
        results = json.loads((tmp_path / stream / "results.json").read_text())
        assert results["stream"] == stream and f"{stream}: top-1" in result.output


def _documented_commands(text: str) -> list[list[str]]:
    """Command lines of the ```bash blocks of a Markdown text (continuations joined, comments
    dropped)."""
    import shlex

    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if " && " in line:
                line = line.split(" && ")[-1]
            if line.startswith(("skelmod ", "ikemtrain ")):
                lines.append(shlex.split(line))
    return lines


@pytest.mark.parametrize("doc", ["README.md", "docs/data.md", "docs/training.md"])
def test_every_documented_command_uses_options_the_command_has(doc: str) -> None:
    root = README.parent
    commands = _documented_commands((root / doc).read_text(encoding="utf-8"))
    assert len(commands) >= 5, doc
    for argv in commands:
        group = GROUPS[argv[0]]
        assert argv[1] in group.commands, argv
        command = group.commands[argv[1]]
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for token in argv[2:]:
            if token.startswith("-") and not re.fullmatch(r"-?\d+(\.\d+)?", token):
                assert token.split("=")[0] in known, (doc, token, argv)
