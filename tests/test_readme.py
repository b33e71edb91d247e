"""The README is a guide that still works: its sections come in the guide's order (issue 21),
its length stays readable, every ``skelmod`` / ``ikemtrain`` command in it and in ``docs/``
parses against today's command line, and its Python example calls today's API with arguments
the signatures accept. (The demo and the test command are run by ``test_ikemtrain_cli`` and
the suite itself; ``docs/api.md``'s examples run in ``test_api_docs``.)"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import shlex
from pathlib import Path

import click
import pytest

import ikemtrain
import skelmod
from cli import ikemtrain_cli, skelmod_cli
from ikemtrain.config import TABLES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GROUPS = {"skelmod": skelmod_cli.main, "ikemtrain": ikemtrain_cli.main}
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(path: Path, language: str) -> list[str]:
    return [
        body for lang, body in BLOCK.findall(path.read_text(encoding="utf-8")) if lang == language
    ]


def command_lines(text: str) -> list[list[str]]:
    """The ``skelmod ...`` / ``ikemtrain ...`` commands of a bash block, continuations joined,
    comments dropped, one per ``&&``-separated part."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] in GROUPS:
                found.append(words)
    return found


def test_command_lines_are_found() -> None:
    text = "# x\nskelmod info a.h5  # comment\npip install x && ikemtrain demo d \\\n  --seed 1\n"
    assert command_lines(text) == [
        ["skelmod", "info", "a.h5"],
        ["ikemtrain", "demo", "d", "--seed", "1"],
    ]


def _check_parses(words: list[str]) -> None:
    """Options and argument counts as the command declares them; values are not converted
    (the files named need not exist)."""
    group = GROUPS[words[0]]
    assert words[1] in group.commands, f"no command {words[1]!r} in {words[0]}"
    command = group.commands[words[1]]
    ctx = click.Context(command, info_name=words[1])
    parser = command.make_parser(ctx)
    _, extra, _ = parser.parse_args(list(words[2:]))  # the declared arguments are consumed
    assert not extra, f"{shlex.join(words)}: extra arguments {extra}"


@pytest.mark.parametrize("doc", ["README.md", "docs/data.md", "docs/training.md"])
def test_every_command_in_the_docs_parses(doc: str) -> None:
    lines = [words for block in _blocks(ROOT / doc, "bash") for words in command_lines(block)]
    assert len(lines) >= 3, doc
    for words in lines:
        try:
            _check_parses(words)
        except click.ClickException as e:
            pytest.fail(f"{doc}: `{shlex.join(words)}`: {e.format_message()}")


def _resolve(node: ast.expr, names: dict):
    """The object an attribute chain such as ``ikemtrain.Encoders.from_run`` names, or None."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        return getattr(owner, node.attr) if owner is not None else None
    return None


def test_the_readme_python_example_calls_the_api_as_it_is() -> None:
    (block,) = _blocks(README, "python")[-1:]  # the API example (the first is the arrays one)
    tree = ast.parse(block)
    # variables the example makes, typed by what made them
    names = {"skelmod": skelmod, "ikemtrain": ikemtrain}
    made = {"cache": skelmod.CacheReader, "student": ikemtrain.Student}
    checked = 0
    for call in [n for n in ast.walk(tree) if isinstance(n, ast.Call)]:
        target = _resolve(call.func, {**names, **made})
        if target is None:
            continue
        if (
            isinstance(call.func, ast.Attribute)
            and _resolve(call.func.value, made) in made.values()
        ):
            target = getattr(_resolve(call.func.value, made), call.func.attr)
            args = [None, *call.args]  # an instance method: self
        else:
            args = list(call.args)
        kwargs = {k.arg: None for k in call.keywords if k.arg}
        signature = inspect.signature(target)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            pytest.fail(f"README: `{ast.unparse(call)}`: {e}")
        # ``**overrides`` of an entry point are keys of its settings table
        table = TABLES.get(getattr(target, "__name__", ""))
        if table is not None and any(
            p.kind is p.VAR_KEYWORD for p in signature.parameters.values()
        ):
            keys = {f.name for f in dataclasses.fields(table)}
            for key in set(kwargs) - set(signature.parameters):
                assert key in keys, f"README: `{ast.unparse(call)}`: {key!r} is no {table} key"
        checked += 1
    assert checked >= 8, checked


def test_the_readme_is_a_guide_in_the_guide_s_order() -> None:
    text = README.read_text(encoding="utf-8")
    assert 150 <= len(text.splitlines()) <= 210
    sections = re.findall(r"^## (.+)$", text, re.M)
    order = ["Install", "Get data", "demo", "first real run", "run folder", "Python API",
             "read more"]  # fmt: skip
    positions = [next(i for i, s in enumerate(sections) if key in s) for key in order]
    assert positions == sorted(positions), sections
