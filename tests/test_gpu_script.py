"""benchmarks/gpu.py, the prepared GPU run (issue 23), works end to end at toy size on a CPU,
and refuses at once, in one line, to run on a machine without CUDA."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_every_step_runs_at_toy_size_on_a_cpu(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in range(1, 7):
        assert f"[{step}/6]" in proc.stdout
    r = json.loads((tmp_path / "gpu-results.json").read_text())
    assert r["cache"]["files"] == 32 and r["cache"]["ntu60_convert_projected_s"] > 0
    for precision in ("fp32", "bf16"):
        for stage in ("stage1", "stage2"):
            assert r["throughput"][precision][stage]["samples_per_s"] > 0
    assert r["loader"]["samples_per_s"] > 0
    assert r["torchrun"]["rc"] == 0 and r["linear_eval"]["rc"] == 0
    table = (tmp_path / "gpu-results.md").read_text()
    assert "| bf16 | 2 |" in table and "torchrun: rc 0" in table
    assert not (tmp_path / "work").exists()  # the cache and runs are cleaned up


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_stops_at_once_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: no CUDA device here")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "gpu-results.json").exists()
