"""Kernel tests once more with ``NUMBA_DISABLE_JIT=1``: the kernels run as plain Python, so
coverage sees them and Python semantics check them (indexing is bounds-checked, so the parser's
unchecked reads are shown to stay inside the data; division by zero raises).

Each run is a subset that stays small, since plain Python is ~1000x slower: the tests of
tests/test_modalities.py whose name contains ``small``, and the parser tests of tests/test_ntu.py
except the two that parse many files (all 46 real files; 60 random files), which leaves a few
real files, every malformed input and the number-grammar cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SUBSETS = {
    "modalities": ("test_modalities.py", "small"),
    "parser": (
        "test_ntu.py",
        "not test_real_files_equal_naive_reader and not test_random_files_round_trip_to_float",
    ),
}


@pytest.mark.nojit
@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_kernel_tests_pass_without_jit(subset, request):
    module, select = SUBSETS[subset]
    if subset == "parser":
        request.getfixturevalue("ntu_real_dir")  # skips, saying why, without the real files
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select]
    cmd.append(str(ROOT / "tests" / module))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "deselected" in proc.stdout
    assert " skipped" not in proc.stdout, proc.stdout[-4000:]
