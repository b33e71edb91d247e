"""Packaging: the installed top-level packages are skelmod, ikemtrain and ikem_toolkit_cli.

The checkout's ``cli/`` folder is installed as ``ikem_toolkit_cli`` (a top-level ``cli`` would
clash with any other package of that name), so the package list in ``pyproject.toml`` is
explicit: these tests check it lists every package folder, that the console scripts point
into it, that ``cli/`` modules import each other relatively (an absolute ``cli.`` import
breaks once installed), and what a built wheel holds.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
INSTALLED_CLI = "ikem_toolkit_cli"


def _package_folders() -> set[str]:
    """Dotted names of every folder with an ``__init__.py`` in the two libraries."""
    return {
        ".".join(init.parent.relative_to(ROOT).parts)
        for lib in ("skelmod", "ikemtrain")
        for init in (ROOT / lib).rglob("__init__.py")
    }


def test_pyproject_installs_every_package_and_cli_under_its_own_name() -> None:
    tool = PYPROJECT["tool"]["setuptools"]
    assert tool["package-dir"] == {INSTALLED_CLI: "cli"}
    assert sorted(tool["packages"]) == sorted(_package_folders() | {INSTALLED_CLI})
    assert not any(p == "cli" or p.startswith("cli.") for p in tool["packages"])


def test_the_train_extra_brings_what_the_readme_test_command_needs() -> None:
    """The README installs ``.[train,test]`` and runs the suite: the report's figure tests need
    matplotlib, so it comes with ``train`` (a skipped report test would hide a broken figure)."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in extras["train"]}
    assert {"torch", "matplotlib"} <= names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[train,test]" && python -m pytest' in readme


def test_console_scripts_point_at_the_click_groups() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"skelmod", "ikemtrain"}
    for name, target in scripts.items():
        module, attr = target.split(":")
        package, _, rest = module.partition(".")
        assert package == INSTALLED_CLI and rest == f"{name}_cli", target
        assert isinstance(getattr(importlib.import_module(f"cli.{rest}"), attr), click.Group)


def test_cli_modules_import_each_other_relatively() -> None:
    for path in sorted((ROOT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert name != "cli" and not name.startswith("cli."), (path.name, node.lineno)


def _can_build_wheels() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.mark.skipif(
    not _can_build_wheels(),
    reason="building a wheel needs setuptools >= 70.1 (or the wheel package) in this environment",
)
def test_the_wheel_has_no_top_level_cli(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("skelmod", "ikemtrain", "cli"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")],
        cwd=src,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = tmp_path / "dist" / proc.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"skelmod", "ikemtrain", INSTALLED_CLI}
    assert {f"{INSTALLED_CLI}/{p.name}" for p in (ROOT / "cli").glob("*.py")} <= set(names)
    assert {"skelmod/synth/sample.py", "ikemtrain/presets/tiny.toml"} <= set(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert f"skelmod = {INSTALLED_CLI}.skelmod_cli:main" in text
    assert f"ikemtrain = {INSTALLED_CLI}.ikemtrain_cli:main" in text


def test_no_skelmod_module_is_over_500_lines() -> None:
    """One job per file (issue 22): the private parser kernel ``_tokenize.py`` aside."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "skelmod").rglob("*.py")
        if p.name != "_tokenize.py" and (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long
