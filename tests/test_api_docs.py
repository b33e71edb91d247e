"""The examples of ``docs/api.md`` run: every python block, in order, in one namespace, in a
fresh folder (they build their own synthetic data there, with tiny sizes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    """The ``python`` fenced blocks of a Markdown text, in order."""
    return BLOCK.findall(text)


def test_the_blocks_are_found() -> None:
    blocks = python_blocks("a\n```python\nx = 1\n```\n```\nnot python\n```\n```python\ny\n```\n")
    assert blocks == ["x = 1\n", "y\n"]


def test_every_example_of_docs_api_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    headings = re.findall(r"^## (.+)$", DOC.read_text(encoding="utf-8"), re.M)
    assert headings == [
        "Convert or import", "Read modalities", "Pre-train", "Evaluate",
        "Load a student and predict",
    ]  # fmt: skip
    assert len(blocks) == len(headings)
    for block in blocks:  # "a ten-line notebook example" (issue 21), give or take a few
        assert len(block.strip().splitlines()) <= 16, block
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_api"}
    for heading, block in zip(headings, blocks, strict=True):
        try:
            exec(compile(block, f"{DOC.name}: {heading}", "exec"), namespace)
        except Exception as e:  # name the example that failed
            pytest.fail(f"docs/api.md, {heading!r}: {type(e).__name__}: {e}")
    out = capsys.readouterr().out
    assert "samples in ntu.h5" in out and "student top-1" in out
    # what the examples promise they wrote
    for path in (
        "ntu.h5",
        "mine.h5",
        "runs/pretrain/checkpoint.pt",
        "runs/linear/6s/results.json",
        "runs/linear/joint/results.json",
        "runs/knn/results.json",
        "student.pt",
    ):
        assert (tmp_path / path).is_file(), path
    linear = namespace["linear"]
    assert set(linear) == {"joint", "6s"} and 0 <= linear["6s"]["top1_final"] <= 100
    assert namespace["encoders"].kind == "pretrain"
    assert namespace["student"].classifier is not None
