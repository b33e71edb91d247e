"""The kernel tests once more with ``NUMBA_DISABLE_JIT=1``: the kernels run as plain Python, so
coverage sees them and Python semantics (bounds, division) check them. Only the tests of
tests/test_modalities.py whose name contains ``small`` run, on small inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.nojit
def test_small_kernel_tests_pass_without_jit():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "small"]
    cmd.append(str(ROOT / "tests" / "test_modalities.py"))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "deselected" in proc.stdout
