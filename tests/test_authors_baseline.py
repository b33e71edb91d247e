"""benchmarks/authors_pipeline.py, the speed baseline of bench_convert: it must compute what
the authors' pipeline computes (our conversion, itself checked against the reference pipeline
of tests/naive_pipeline.py, within float32 rounding), or its timings would not be theirs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from authors_pipeline import STAGES, Baseline  # noqa: E402

from skelmod.pipeline import ConvertOptions, convert_file  # noqa: E402


def test_the_baseline_computes_the_reference_positions(ntu_real_files, tmp_path):
    files = ntu_real_files[:6]
    base = Baseline(tmp_path, len(files), motion=True)
    for i, p in enumerate(files):
        base.gendata(i, p)
    for i in range(len(files)):
        base.preprocess(i)
    base.flush()
    for i, p in enumerate(files):
        ours = convert_file(p, ConvertOptions(), "ntu60")
        np.testing.assert_allclose(base.position[i], ours["arrays"]["joint"], atol=2e-6)
        assert base.frames[i] == ours["meta"]["frame_count"]
        # the unused motion stream: forward differences of the uncentred row, resized
        assert np.abs(base.moved[i]).sum() > 0
    assert set(base.clock) == set(STAGES) and all(v > 0 for v in base.clock.values())
    assert base.as_run() > base.total() > 0
