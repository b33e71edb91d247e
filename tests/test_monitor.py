"""The kNN monitor of pre-training (ikemtrain.engine.monitor): what it measures, the random
baseline printed at the start, the records and the progress line, and that it leaves the run's
random streams alone."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_data import make_cache

from ikemtrain.config import PretrainConfig
from ikemtrain.engine.loop import build_model, pretrain
from ikemtrain.engine.monitor import KnnMonitor
from skelmod.cache import CacheReader

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MODS = ("joint", "velocity")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("monitor") / "c.h5", n=48, t=24)


def cfg(**changes):
    base = PretrainConfig(
        modalities=MODS, epochs=2, cross_epoch=1, batch_size=4, queue_size=8, momentum=0.9,
        hidden_channels=4, hidden_dim=16, feature_dim=8, workers=0, split="xsub", dropout=0.0,
        monitor_samples=16,
    )  # fmt: skip
    return base.replace(**changes)


def test_top1_is_the_weighted_knn_of_held_training_samples(cache):
    reader = CacheReader(cache)
    monitor = KnnMonitor(reader, "xsub", MODS, None, None, 16, 3, 8, torch.device("cpu"))
    assert len(monitor.dataset) == 16 and set(monitor.dataset.indices) <= set(
        reader.split_indices("xsub-train")
    )  # training samples only
    assert monitor.queries.sum() == 4 and monitor.k == 12
    torch.manual_seed(0)
    model = build_model(cfg(), reader.layout.name)
    encoders = {m: b.encoder_q for m, b in model.branches.items()}
    got = monitor.top1(encoders)
    # the same by hand: features of each chosen sample, cosine similarity averaged over the
    # modalities, the 12 nearest memory samples vote with weight exp(s / 0.07)
    x = {m: torch.from_numpy(reader.read(m, monitor.dataset.indices)) for m in MODS}
    with torch.no_grad():
        for enc in encoders.values():
            enc.eval()
        f = {m: F.normalize(encoders[m](x[m]), dim=1) for m in MODS}
    sim = sum(f[m] @ f[m].T for m in MODS) / len(MODS)
    q, labels = monitor.queries, monitor.dataset.labels
    hits = 0
    for i in np.flatnonzero(q):
        s = sim[i, torch.from_numpy(~q)]
        top = torch.topk(s, 12)
        votes = np.zeros(reader.num_class)
        for w, j in zip(top.values, np.flatnonzero(~q)[top.indices.numpy()], strict=True):
            votes[labels[j]] += float(torch.exp(w / 0.07))
        hits += votes.argmax() == labels[i]
    assert got == pytest.approx(100 * hits / q.sum(), abs=1e-9)
    assert all(enc.training is False for enc in encoders.values())  # mode kept (eval here)


def test_each_epoch_records_the_signal_beside_the_random_baseline(cache, tmp_path):
    lines = []
    pretrain(cfg(), cache, tmp_path / "run", device="cpu", echo=lines.append, tensorboard=False)
    assert lines[0].startswith("kNN monitor: 16 training samples, k 12; random encoders")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")
               if x]  # fmt: skip
    base = records[0]["monitor"]["random"]
    assert base["strongest"] == max(base["raw_bn"], base["bn_estimated"])
    for record in records:
        assert 0 <= record["monitor"]["knn_top1"] <= 100
        assert record["monitor"]["random"] == base
    epoch_lines = [x for x in lines if x.startswith("epoch ")]
    want = f"knn {records[-1]['monitor']['knn_top1']:.1f} (random {base['strongest']:.1f})"
    assert len(epoch_lines) == 2 and want in epoch_lines[-1]


def test_the_monitor_changes_nothing_in_the_run(cache, tmp_path):
    on = pretrain(cfg(), cache, tmp_path / "on", device="cpu", echo=None, tensorboard=False)
    off = pretrain(cfg(monitor_every=0), cache, tmp_path / "off", device="cpu", echo=None,
                   tensorboard=False)  # fmt: skip
    a = torch.load(on["checkpoint"], weights_only=True)["model"]
    b = torch.load(off["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "monitor" not in off["metrics"] and "monitor" in on["metrics"]


def test_trim_heap_gives_free_memory_back_and_is_harmless() -> None:
    """``trim_heap`` (called around the monitor's passes) returns freed heap pages: after
    freeing 100 MiB of small blocks below a pinned top, trimming lowers the resident size by
    at least half of it; where glibc's malloc_trim is missing it is a no-op."""
    import ctypes

    from ikemtrain.engine.loop import trim_heap

    def rss_kb() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4

    try:
        malloc = ctypes.CDLL(None).malloc
        free = ctypes.CDLL(None).free
        ctypes.CDLL(None).malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        trim_heap()  # nothing to give back: a no-op
        pytest.skip("no glibc malloc_trim here")
    malloc.restype = ctypes.c_void_p
    free.argtypes = [ctypes.c_void_p]
    blocks = [malloc(64 << 10) for _ in range(1600)]  # 100 MiB in the heap, below mmap's cut
    for b in blocks:
        ctypes.memset(b, 1, 64 << 10)
    for b in blocks[:-1]:  # the last one pins the heap's top: only a trim releases the rest
        free(b)
    before = rss_kb()
    trim_heap()
    after = rss_kb()
    free(blocks[-1])
    assert after < before - 50 * 1024, (before, after)
