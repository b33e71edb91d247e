"""benchmarks/learning.py (issue 19, points 5 and 6) works end to end at toy size: two run
lengths per seed, random rows evaluated once per seed and shared, every gain over the stronger
random row, the per-seed table and the accuracy-against-time curve written."""

import json
import subprocess
import sys
from pathlib import Path

from tests.test_data import make_cache

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "learning.py"
TOY = [
    "pretrain.hidden_channels=4", "pretrain.hidden_dim=16", "pretrain.feature_dim=8",
    "pretrain.batch_size=8", "pretrain.epochs=2", "pretrain.cross_epoch=1", "pretrain.steps=[2]",
    "pretrain.warmup_epochs=0", "pretrain.total_steps=0", "pretrain.monitor_every=0",
    "linear_eval.epochs=2", "linear_eval.eval_interval=1", "linear_eval.steps=[2]",
    "linear_eval.batch_size=8",
]  # fmt: skip


def test_two_run_lengths_share_the_random_rows_and_give_a_curve(tmp_path):
    cache = make_cache(tmp_path / "toy.h5", n=36, t=16, layout="kinect-v1-20", num_class=10)
    out = tmp_path / "out"
    args = [sys.executable, str(SCRIPT), "--data", f"toy={cache}:xview", "--preset", "cpu",
            "--seeds", "0", "--steps", "0,12", "--threads", "1", "--out", str(out)]  # fmt: skip
    for s in TOY:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    result = json.loads((out / "learning.json").read_text())
    runs = result["data"]["toy"]["seeds"]["0"]
    assert set(runs) == {"6-modalities", "6-modalities-12-steps"}
    assert runs["6-modalities-12-steps"]["pretrain"]["steps"] == 12
    assert runs["6-modalities"]["pretrain"]["steps"] == 6  # the preset's: 2 epochs of 3
    for run in runs.values():
        for probes in run["streams"].values():
            for b in probes.values():
                assert b["strongest"] == max(b["bn_estimated"], b["raw_bn"])
                assert abs(b["gain"] - (b["pretrained"] - b["strongest"])) < 1e-9
    # the random rows are the same evaluation for both lengths (evaluated once)
    a, b = (runs[r]["streams"]["6s"]["linear"] for r in runs)
    assert (a["bn_estimated"], a["raw_bn"]) == (b["bn_estimated"], b["raw_bn"])
    seed_dir = out / "toy" / "seed0"
    assert not list((seed_dir / "6-modalities-12-steps").glob("raw_bn-*"))
    md = (out / "learning.md").read_text()
    assert "| 0 | 6-modalities-12-steps |" in md
    assert "Accuracy against pre-training time (6s; seeds 0)" in md
    assert "| 6-modalities-12-steps | 12 |" in md


_WRITER = """
import sys
sys.path.insert(0, {bench!r})
from pathlib import Path
from learning import save
for i in range(30):
    save(Path({path!r}), {{"writer": {w}}}, ("toy", {{"seeds": {{}}}}, {w}, f"run{{i}}", i))
"""


def test_runs_side_by_side_sharing_an_out_folder_keep_each_others_results(tmp_path):
    """Two learning.py processes on one ``--out`` (seeds side by side) each merge their runs
    into learning.json under a lock; each used to write back the file it had read at its start,
    so the one that finished last dropped the other's runs."""
    path = tmp_path / "learning.json"
    code = [_WRITER.format(bench=str(SCRIPT.parent), path=str(path), w=w) for w in (0, 1)]
    procs = [subprocess.Popen([sys.executable, "-c", c]) for c in code]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    seeds = json.loads(path.read_text())["data"]["toy"]["seeds"]
    assert {s: len(runs) for s, runs in seeds.items()} == {"0": 30, "1": 30}
